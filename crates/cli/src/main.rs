//! The `firerunner` command line.

use clap::Parser;

/// Self-hosted GitHub Actions-compatible runner: every job in its own microVM.
#[derive(Parser)]
#[command(name = "firerunner", version)]
struct Cli {}

fn main() {
    Cli::parse();
}
