//! The `firerunner` command line.

mod commands;
mod local_event;
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
    /// Build guest images for the microVMs.
    Image(commands::image::Args),
    /// Run a local checkout's workflows in microVMs (like act).
    Run(Box<commands::run::Args>),
    /// Fill the action cache ahead of time, for hosts without network.
    Actions(commands::actions::Args),
    /// Run a command in a throw-away microVM; list and remove VMs.
    Vm(commands::vm::Args),
    /// Serve webhooks, the dashboard, the API and metrics, and run jobs.
    Serve(commands::serve::Args),
    /// Only run jobs, taken from the store shared with `serve` (several hosts).
    Worker(commands::serve::Args),
    /// Show the service's hosts, capacity, queue and running jobs.
    Status(commands::status::Args),
    /// Set, list and remove the service's secrets (values from standard input or a file).
    Secrets(commands::settings::SecretsArgs),
    /// Set, list and remove the service's configuration variables (`vars`).
    Vars(commands::settings::VarsArgs),
    /// Set environments' deployment rules and reviewers; approve waiting deployments.
    Environments(commands::settings::EnvironmentsArgs),
    /// Ask what firerunner learned from the steps it ran (lessons, flaky steps, predictions).
    Learn(commands::learn::Args),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Validate(args) => commands::validate::run(args),
        Command::Plan(args) => commands::plan::run(args),
        Command::Image(args) => commands::image::run(args),
        Command::Run(args) => commands::run::run(*args),
        Command::Actions(args) => commands::actions::run(args),
        Command::Vm(args) => commands::vm::run(args),
        Command::Serve(args) => commands::serve::run(args, false),
        Command::Worker(args) => commands::serve::run(args, true),
        Command::Status(args) => commands::status::run(args),
        Command::Secrets(args) => commands::settings::run_secrets(args),
        Command::Vars(args) => commands::settings::run_vars(args),
        Command::Environments(args) => commands::settings::run_environments(args),
        Command::Learn(args) => commands::learn::run(args),
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("firerunner: {err:#}");
            ExitCode::from(2)
        }
    }
}
