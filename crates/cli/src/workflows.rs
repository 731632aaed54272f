//! Finding and loading workflow files from the local disk.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use firerunner_workflow::model::JobBody;
use firerunner_workflow::{load, Diagnostic, ParsedWorkflow, Severity, WorkflowRef};

/// The folder GitHub reads workflows from, relative to a repository root.
pub const DEFAULT_DIR: &str = ".github/workflows";

/// One workflow file read from disk: the model or its problems.
pub struct LoadedFile {
    /// The local reusable workflows its jobs call, by calling job id.
    pub callees: Vec<(String, ParsedWorkflow)>,
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

/// Reads and validates one file (syntax, schema, expressions, the `needs`
/// graph, and calls to local reusable workflows).
/// Bytes that are not UTF-8 are replaced, so the YAML parser reports them in place.
pub fn load_file(path: &Path) -> Result<LoadedFile> {
    let (workflow, mut diagnostics) = parse_file(path)?;
    let Some(workflow) = workflow else {
        return Ok(LoadedFile {
            callees: Vec::new(),
            workflow: None,
            diagnostics,
        });
    };
    let root = repository_root(path);
    let callees = local_callees(&workflow, &root, &mut diagnostics)?;
    // Inputs, secrets and permissions of every call, nested ones included.
    diagnostics.extend(load::check_calls(&workflow, &RepositoryFiles { root }));
    diagnostics.sort_by_key(|d| d.pos);
    let has_errors = diagnostics.iter().any(|d| d.severity == Severity::Error);
    Ok(LoadedFile {
        callees,
        workflow: (!has_errors).then_some(workflow),
        diagnostics,
    })
}

/// The local workflows (`./` and `$/`) the jobs of `workflow` call, by job
/// id; a missing one is reported in `diagnostics`.
fn local_callees(
    workflow: &ParsedWorkflow,
    root: &Path,
    diagnostics: &mut Vec<Diagnostic>,
) -> Result<Vec<(String, ParsedWorkflow)>> {
    let mut callees = Vec::new();
    for (id, job) in &workflow.jobs {
        let JobBody::Call(call) = &job.body else {
            continue;
        };
        // `./` and `$/` both name a file of this repository; remote
        // workflows are not fetched here.
        let (WorkflowRef::Local { path } | WorkflowRef::SelfRepo { path }) = &call.reference else {
            continue;
        };
        let callee_path = root.join(path);
        if !callee_path.is_file() {
            diagnostics.push(Diagnostic::error(
                workflow.file.clone(),
                call.uses.pos,
                format!("jobs.{id}.uses: {} does not exist", callee_path.display()),
            ));
            continue;
        }
        if let (Some(callee), _) = parse_file(&callee_path)? {
            callees.push((id.clone(), callee));
        }
    }
    Ok(callees)
}

/// The workflow files of the local checkout (`./` and `$/` calls); remote
/// workflows are not fetched.
pub struct RepositoryFiles {
    root: PathBuf,
}

impl RepositoryFiles {
    /// The repository's folder.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The files of the repository the workflow file `path` belongs to.
    pub fn of(path: &Path) -> Self {
        Self {
            root: repository_root(path),
        }
    }
}

impl load::WorkflowSource for RepositoryFiles {
    fn workflow_text(&self, reference: &WorkflowRef) -> Option<String> {
        let (WorkflowRef::Local { path } | WorkflowRef::SelfRepo { path }) = reference else {
            return None;
        };
        let bytes = std::fs::read(self.root.join(path)).ok()?;
        Some(String::from_utf8_lossy(&bytes).into_owned())
    }
}

fn parse_file(path: &Path) -> Result<(Option<ParsedWorkflow>, Vec<Diagnostic>)> {
    let label = path.display().to_string();
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {label}"))?;
    let source = String::from_utf8_lossy(&bytes);
    Ok(match load::parse_workflow(&label, &source) {
        Ok(workflow) => {
            let warnings = workflow.warnings.clone();
            (Some(workflow), warnings)
        }
        Err(problems) => (None, problems.0),
    })
}

/// The repository a workflow file belongs to: the folder above
/// `.github/workflows/`, else the current folder.
fn repository_root(path: &Path) -> PathBuf {
    let dir = path.parent().unwrap_or(Path::new("."));
    let is_workflows = dir.file_name().is_some_and(|n| n == "workflows")
        && dir
            .parent()
            .and_then(Path::file_name)
            .is_some_and(|n| n == ".github");
    match dir.parent().and_then(Path::parent) {
        Some(root) if is_workflows => {
            if root.as_os_str().is_empty() {
                PathBuf::from(".")
            } else {
                root.to_path_buf()
            }
        }
        _ => PathBuf::from("."),
    }
}
