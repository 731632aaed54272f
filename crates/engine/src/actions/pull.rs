//! `firerunner actions pull`: fills the action cache ahead of time, for
//! hosts that cannot reach the actions URL. From workflows, every action
//! their jobs use (nested composite actions, `./` actions of the repository
//! on disk, and the jobs of called reusable workflows, remote ones fetched
//! too); from a list, each `owner/repo[/path]@ref` line (an action or a
//! reusable workflow) and what it uses in turn. Blocking: runs git.

use std::collections::HashSet;
use std::path::Path;

use firerunner_workflow::load::{parse_workflow, WorkflowSource, MAX_CALL_DEPTH};
use firerunner_workflow::model::JobBody;
use firerunner_workflow::{ActionRef, ParsedWorkflow, RemoteRef, WorkflowRef};

use super::resolve::{ActionProblem, MissingAction, Resolver};
use super::store::read_plain_file;

/// The most bytes of a reusable workflow file read.
const WORKFLOW_FILE_LIMIT: u64 = 4 << 20;

/// What a pull did: the log lines (each repository downloaded or found in
/// the cache) and what could not be had.
#[derive(Debug, Default)]
pub struct PullReport {
    /// One line per repository, as "Set up job" prints them.
    pub notes: Vec<String>,
    /// What could not be had.
    pub missing: Vec<MissingAction>,
}

/// A line of a `--list` file that is not an action or workflow reference.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: '{text}' is not OWNER/REPO[/PATH]@REF")]
pub struct ListError {
    /// Its number, from 1.
    pub line: usize,
    /// The line.
    pub text: String,
}

/// Pulls what `workflows` use; `./` actions and `./`/`$/` reusable
/// workflows are read from `local` and the repository folder `root`.
pub fn pull_workflows(
    resolver: &mut Resolver,
    workflows: &[ParsedWorkflow],
    root: &Path,
    local: &dyn WorkflowSource,
) -> PullReport {
    resolver.set_local_root(root.to_path_buf());
    resolver.set_self_repo(root.to_path_buf());
    let mut seen = HashSet::new();
    for workflow in workflows {
        walk_workflow(resolver, workflow, None, local, &mut seen, 1);
    }
    report(resolver)
}

/// Pulls each reference of a list (one per line; `#` starts a comment).
pub fn pull_list(resolver: &mut Resolver, text: &str) -> Result<PullReport, ListError> {
    let mut references = Vec::new();
    for (index, line) in text.lines().enumerate() {
        let entry = line.split('#').next().unwrap_or_default().trim();
        let entry = entry.strip_prefix("uses:").map(str::trim).unwrap_or(entry);
        if entry.is_empty() {
            continue;
        }
        let error = || ListError {
            line: index + 1,
            text: entry.to_owned(),
        };
        match (WorkflowRef::parse(entry), ActionRef::parse(entry)) {
            (Ok(WorkflowRef::Remote(remote)), _) => references.push((entry, Some(remote), None)),
            (_, Ok(action @ ActionRef::Remote(_))) => references.push((entry, None, Some(action))),
            _ => return Err(error()),
        }
    }
    let mut seen = HashSet::new();
    let none: &dyn WorkflowSource = &std::collections::HashMap::<String, String>::new();
    for (entry, workflow, action) in references {
        if let Some(remote) = workflow {
            pull_remote_workflow(resolver, entry, &remote, none, &mut seen, 1);
        }
        if let Some(action) = action {
            resolver.walk_reference(&action, entry, &[]);
        }
    }
    Ok(report(resolver))
}

fn report(resolver: &mut Resolver) -> PullReport {
    PullReport {
        notes: resolver.take_notes(),
        missing: resolver.take_missing(),
    }
}

/// Walks the jobs of `workflow` (of the remote repository `from`, or the
/// local one), following calls down to GitHub's nesting limit.
fn walk_workflow(
    resolver: &mut Resolver,
    workflow: &ParsedWorkflow,
    from: Option<&RemoteRef>,
    local: &dyn WorkflowSource,
    seen: &mut HashSet<String>,
    depth: usize,
) {
    for job in workflow.jobs.values() {
        match &job.body {
            JobBody::Steps(steps) => resolver.walk(steps, &[]),
            JobBody::Call(call) if depth < MAX_CALL_DEPTH => {
                let key = crate::reusable::callee_key(&call.reference, from);
                match &key {
                    WorkflowRef::Remote(remote) => pull_remote_workflow(
                        resolver,
                        &call.uses.value,
                        remote,
                        local,
                        seen,
                        depth + 1,
                    ),
                    local_ref => {
                        if !seen.insert(local_ref.to_string()) {
                            continue;
                        }
                        let text = local.workflow_text(local_ref);
                        if let Some(callee) =
                            text.and_then(|t| parse_workflow(&local_ref.to_string(), &t).ok())
                        {
                            walk_workflow(resolver, &callee, None, local, seen, depth + 1);
                        }
                    }
                }
            }
            JobBody::Call(_) => {}
        }
    }
}

/// Fetches the repository of a remote reusable workflow and walks its jobs.
fn pull_remote_workflow(
    resolver: &mut Resolver,
    uses: &str,
    remote: &RemoteRef,
    local: &dyn WorkflowSource,
    seen: &mut HashSet<String>,
    depth: usize,
) {
    if !seen.insert(remote.to_string().to_ascii_lowercase()) {
        return;
    }
    let loaded = resolver.repository(remote).and_then(|repository| {
        let bytes = read_plain_file(&repository.dir, &remote.path, WORKFLOW_FILE_LIMIT)
            .ok_or_else(|| ActionProblem::NoWorkflowFile(remote.to_string()))?;
        let text = String::from_utf8_lossy(&bytes);
        parse_workflow(&remote.to_string(), &text)
            .map_err(|d| ActionProblem::Invalid(d.to_string()))
    });
    match loaded {
        Ok(callee) => walk_workflow(resolver, &callee, Some(remote), local, seen, depth),
        Err(problem) => resolver.note_missing(uses, &[], problem),
    }
}
