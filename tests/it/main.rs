//! Integration tests: one binary, one module per area, so the test build links once.

mod cli;
mod common;
mod lake;
mod s3;
