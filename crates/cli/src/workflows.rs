//! Finding and loading workflow files from the local disk.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use firerunner_workflow::{load, Diagnostic, ParsedWorkflow};

/// The folder GitHub reads workflows from, relative to a repository root.
pub const DEFAULT_DIR: &str = ".github/workflows";

/// One workflow file read from disk: the model or its problems.
pub struct LoadedFile {
    /// The parsed workflow when it has no errors.
    pub workflow: Option<ParsedWorkflow>,
    /// Every problem found, errors and warnings, in source order.
    pub diagnostics: Vec<Diagnostic>,
}

/// Expands files and folders into the `.yml`/`.yaml` files they name, sorted.
pub fn collect(paths: &[PathBuf]) -> Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for path in paths {
        let meta =
            std::fs::metadata(path).with_context(|| format!("cannot read {}", path.display()))?;
        if meta.is_dir() {
            let mut found: Vec<PathBuf> = std::fs::read_dir(path)
                .with_context(|| format!("cannot list {}", path.display()))?
                .filter_map(|entry| entry.ok().map(|e| e.path()))
                .filter(|p| is_workflow_file(p))
                .collect();
            found.sort();
            files.extend(found);
        } else {
            files.push(path.clone());
        }
    }
    Ok(files)
}

fn is_workflow_file(path: &Path) -> bool {
    path.is_file()
        && matches!(
            path.extension().and_then(|e| e.to_str()),
            Some("yml") | Some("yaml")
        )
}

/// Reads and validates one file (syntax, schema, expressions and the `needs` graph).
/// Bytes that are not UTF-8 are replaced, so the YAML parser reports them in place.
pub fn load_file(path: &Path) -> Result<LoadedFile> {
    let label = path.display().to_string();
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {label}"))?;
    let source = String::from_utf8_lossy(&bytes);
    Ok(match load::parse_workflow(&label, &source) {
        Ok(workflow) => LoadedFile {
            workflow: Some(workflow),
            diagnostics: Vec::new(),
        },
        Err(problems) => LoadedFile {
            workflow: None,
            diagnostics: problems.0,
        },
    })
}
