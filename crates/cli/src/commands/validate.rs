//! `firerunner validate`: report every problem in workflow files.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use firerunner_workflow::Severity;

use crate::workflows;

/// Arguments of `firerunner validate`.
#[derive(clap::Args)]
pub struct Args {
    /// Workflow files or folders (default: .github/workflows).
    paths: Vec<PathBuf>,
}

/// Prints `file:line:col: message` for each problem; fails when any is an error.
pub fn run(args: Args) -> Result<ExitCode> {
    let paths = if args.paths.is_empty() {
        vec![PathBuf::from(workflows::DEFAULT_DIR)]
    } else {
        args.paths
    };
    let files = workflows::collect(&paths)?;
    if files.is_empty() {
        anyhow::bail!(
            "no workflow files (*.yml, *.yaml) in {}",
            display_list(&paths)
        );
    }
    let (mut errors, mut warnings) = (0usize, 0usize);
    for path in &files {
        let loaded = workflows::load_file(path)?;
        for diagnostic in &loaded.diagnostics {
            println!("{diagnostic}");
            match diagnostic.severity {
                Severity::Error => errors += 1,
                Severity::Warning => warnings += 1,
            }
        }
    }
    eprintln!(
        "{} file{} checked: {errors} error{}, {warnings} warning{}",
        files.len(),
        plural(files.len()),
        plural(errors),
        plural(warnings)
    );
    Ok(if errors > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

fn plural(n: usize) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
}

fn display_list(paths: &[PathBuf]) -> String {
    paths
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(", ")
}
