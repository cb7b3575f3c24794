//! Integration tests: one binary, one module per area, so the test build links once.

mod bad_inputs;
mod cli;
mod common;
mod faults;
mod generate;
mod identity;
mod incremental;
mod lake;
mod publish;
mod run;
mod s3;
