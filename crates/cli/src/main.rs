//! The `firerunner` command line.

mod commands;
mod workflows;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// mimalloc: the workflow engine allocates many small, short-lived nodes, where
/// it is markedly faster than glibc's allocator.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Self-hosted GitHub Actions-compatible runner: every job in its own microVM.
#[derive(Parser)]
#[command(name = "firerunner", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Check workflow files and print each problem as `file:line:col: message`.
    Validate(commands::validate::Args),
    /// Show which workflows and jobs an event would run, in order, with matrix values.
    Plan(commands::plan::Args),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Validate(args) => commands::validate::run(args),
        Command::Plan(args) => commands::plan::run(args),
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("firerunner: {err:#}");
            ExitCode::from(2)
        }
    }
}
