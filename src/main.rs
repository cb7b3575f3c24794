//! The `c360` binary: parses the command line and maps failures to exit codes.

use clap::Parser;

#[tokio::main]
async fn main() {
    let cli = c360::cli::Cli::parse();
    if let Err(e) = c360::cli::run(cli).await {
        eprintln!("Error: {}", c360::redact::redact(&e.to_string()));
        std::process::exit(e.exit_code());
    }
}
