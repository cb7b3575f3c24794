//! The `c360` binary: parses the command line and maps failures to exit codes.

use clap::Parser;

// The identity graph and the aggregates allocate and free millions of small strings; the
// system allocator spent a sixth of a run's time on them.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() {
    let cli = c360::cli::Cli::parse();
    if let Err(e) = c360::cli::run(cli).await {
        eprintln!("Error: {}", c360::redact::redact(&e.to_string()));
        std::process::exit(e.exit_code());
    }
}
