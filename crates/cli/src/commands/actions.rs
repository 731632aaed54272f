//! `firerunner actions pull`: fill the action cache ahead of time (from a
//! workflow folder or a list), so that a host without network runs jobs
//! from it. The cache's layout is in docs/engine.md.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use firerunner_engine::actions::pull::{pull_list, pull_workflows, PullReport};
use firerunner_engine::actions::remote::ActionSource;
use firerunner_engine::actions::resolve::{how_to_provide, Resolver};
use firerunner_vm::image;

use crate::workflows::{self, RepositoryFiles};

/// Arguments of `firerunner actions`.
#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: ActionsCommand,
}

#[derive(clap::Subcommand)]
enum ActionsCommand {
    /// Fetch every action the workflows (or a list) use into the action cache.
    Pull(PullArgs),
}

/// Arguments of `firerunner actions pull`.
#[derive(clap::Args)]
struct PullArgs {
    /// Workflow files or folders whose actions to pull.
    #[arg(short = 'W', long = "workflows", default_value = workflows::DEFAULT_DIR)]
    workflows: Vec<PathBuf>,
    /// A file of `OWNER/REPO[/PATH]@REF` lines (actions or reusable
    /// workflows; `#` starts a comment) to pull instead of workflows.
    #[arg(long)]
    list: Option<PathBuf>,
    /// Where actions are fetched from: GitHub, a GitHub Enterprise Server,
    /// or a mirror (`file:///srv/mirror`).
    #[arg(long, default_value = "https://github.com")]
    actions_url: String,
    /// The action cache folder (default: `actions` in firerunner's cache).
    #[arg(long)]
    actions_cache: Option<PathBuf>,
}

/// Runs `firerunner actions`.
pub fn run(args: Args) -> Result<ExitCode> {
    match args.command {
        ActionsCommand::Pull(args) => pull(args),
    }
}

fn pull(args: PullArgs) -> Result<ExitCode> {
    let source = ActionSource {
        base_url: args.actions_url.clone(),
        cache_dir: args
            .actions_cache
            .clone()
            .unwrap_or_else(|| image::default_cache_dir().join("actions")),
        offline: false,
    };
    let mut resolver = Resolver::new(source.clone(), None);
    let report = match &args.list {
        Some(list) => {
            let text = std::fs::read_to_string(list)
                .with_context(|| format!("cannot read {}", list.display()))?;
            pull_list(&mut resolver, &text).with_context(|| list.display().to_string())?
        }
        None => match pull_from_workflows(&args, &mut resolver)? {
            Some(report) => report,
            None => return Ok(ExitCode::FAILURE),
        },
    };
    Ok(print_report(&report, &source))
}

/// Pulls what the workflow files use; `None` when one does not load (its
/// problems printed).
fn pull_from_workflows(args: &PullArgs, resolver: &mut Resolver) -> Result<Option<PullReport>> {
    let mut loaded = Vec::new();
    let mut failed = false;
    let mut files = None;
    for path in workflows::collect(&args.workflows)? {
        let file = workflows::load_file(&path)?;
        for d in &file.diagnostics {
            eprintln!("{d}");
        }
        match file.workflow {
            Some(workflow) => loaded.push(workflow),
            None => failed = true,
        }
        files.get_or_insert_with(|| RepositoryFiles::of(&path));
    }
    if failed {
        return Ok(None);
    }
    let files = files.unwrap_or_else(|| RepositoryFiles::of(&PathBuf::from(".")));
    let root = files.root().to_path_buf();
    Ok(Some(pull_workflows(resolver, &loaded, &root, &files)))
}

/// Prints what was pulled and what could not be; failure when something could not.
fn print_report(report: &PullReport, source: &ActionSource) -> ExitCode {
    for note in &report.notes {
        println!("{note}");
    }
    eprintln!(
        "firerunner: the action cache is {}",
        source.cache_dir.display()
    );
    if report.missing.is_empty() {
        return ExitCode::SUCCESS;
    }
    for missing in &report.missing {
        eprintln!("error: {missing}");
    }
    for line in how_to_provide(source) {
        eprintln!("{line}");
    }
    ExitCode::FAILURE
}
