//! The reusable workflows a run calls, found before it starts and keyed by
//! [`WorkflowRef`]: files of the run's own repository (`./` and `$/`, both at
//! the running commit) come from a [`WorkflowSource`] the caller gives;
//! remote ones (`owner/repo/.github/workflows/x.yml@ref`) are fetched with
//! git like remote actions ([`crate::actions::remote`]), parsed, and checked
//! against the job calling them. A callee that cannot be had is kept as a
//! [`CalleeError`]: the job calling it fails with that message.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use firerunner_workflow::load::{check_call, parse_workflow, WorkflowSource, MAX_CALL_DEPTH};
use firerunner_workflow::model::JobBody;
use firerunner_workflow::{ParsedWorkflow, RemoteRef, Severity, WorkflowRef};

use crate::actions::remote::{fetch_repository, ActionSource};
use crate::actions::store::read_plain_file;

/// Why a called workflow cannot run.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CalleeError {
    /// The run's repository has no such file at the running commit.
    #[error("{0}: no such workflow file in the repository at this commit")]
    Missing(WorkflowRef),
    /// A remote workflow could not be fetched.
    #[error("{reference}: cannot fetch the reusable workflow: {message}")]
    Fetch {
        /// The remote workflow.
        reference: WorkflowRef,
        /// What git or the file system said.
        message: String,
    },
    /// The file is not a workflow that can be called this way.
    #[error("{reference} has errors: {message}")]
    Invalid {
        /// The called workflow.
        reference: WorkflowRef,
        /// Its first problems.
        message: String,
    },
    /// The workflow was never looked for (called deeper than GitHub allows).
    #[error(
        "{0}: this reusable workflow was not loaded (nested deeper than {MAX_CALL_DEPTH} levels?)"
    )]
    NotLoaded(WorkflowRef),
}

/// A called workflow, or why it cannot run.
pub type Callee = Result<Arc<ParsedWorkflow>, CalleeError>;

/// The reusable workflows of a run, by [`callee_key`].
pub type Callees = HashMap<WorkflowRef, Callee>;

/// The key a call is looked up by: `$/` names the same file as `./` (the
/// run's repository at its commit); inside a workflow of a remote
/// repository (`from`), both name a file of that repository at its ref.
pub fn callee_key(reference: &WorkflowRef, from: Option<&RemoteRef>) -> WorkflowRef {
    match (reference, from) {
        (WorkflowRef::Local { path } | WorkflowRef::SelfRepo { path }, Some(remote)) => {
            WorkflowRef::Remote(RemoteRef {
                path: path.clone(),
                ..remote.clone()
            })
        }
        (WorkflowRef::SelfRepo { path }, None) => WorkflowRef::Local { path: path.clone() },
        _ => reference.clone(),
    }
}

/// The most bytes of a reusable workflow file read.
const WORKFLOW_FILE_LIMIT: u64 = 4 << 20;

/// Where remote workflows are fetched from, and kept (the action cache).
#[derive(Debug, Clone)]
pub struct RemoteWorkflows {
    /// The actions URL and cache.
    pub source: ActionSource,
}

impl RemoteWorkflows {
    /// The text of the remote workflow `remote` names, fetching its
    /// repository at its ref the first time.
    pub fn text(&self, remote: &RemoteRef) -> Result<String, CalleeError> {
        let reference = WorkflowRef::Remote(remote.clone());
        let fail = |message: String| CalleeError::Fetch {
            reference: reference.clone(),
            message,
        };
        let repository = RemoteRef {
            path: String::new(),
            ..remote.clone()
        };
        if remote
            .path
            .split('/')
            .any(|part| part.is_empty() || part == "." || part == "..")
        {
            return Err(fail(format!("'{}' is not a plain path", remote.path)));
        }
        let fetched = fetch_repository(&self.source, &repository).map_err(|e| {
            fail(format!(
                "{e}; provide it with --actions-url, a mirror or the action cache {} (docs/engine.md)",
                self.source.cache_dir.display()
            ))
        })?;
        let bytes =
            read_plain_file(&fetched.dir, &remote.path, WORKFLOW_FILE_LIMIT).ok_or_else(|| {
                fail(format!(
                    "{} is not a file of {}/{} at {} (SHA:{})",
                    remote.path, remote.owner, remote.repo, remote.git_ref, fetched.sha
                ))
            })?;
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    }
}

/// One workflow whose calls are still to be followed.
struct Pending {
    workflow: Arc<ParsedWorkflow>,
    from: Option<RemoteRef>,
    depth: usize,
}

/// Finds every workflow `workflow` calls, nested calls included (down to
/// GitHub's [`MAX_CALL_DEPTH`] levels). Blocking: remote ones are fetched
/// with git.
pub fn resolve_callees(
    workflow: &Arc<ParsedWorkflow>,
    local: &dyn WorkflowSource,
    remote: &RemoteWorkflows,
) -> Callees {
    let mut callees = Callees::new();
    let mut pending = VecDeque::from([Pending {
        workflow: workflow.clone(),
        from: None,
        depth: 1,
    }]);
    while let Some(caller) = pending.pop_front() {
        if caller.depth >= MAX_CALL_DEPTH {
            continue;
        }
        for job in caller.workflow.jobs.values() {
            let JobBody::Call(call) = &job.body else {
                continue;
            };
            let key = callee_key(&call.reference, caller.from.as_ref());
            if callees.contains_key(&key) {
                continue;
            }
            let callee = load(&key, local, remote).and_then(|callee| {
                check(&key, &caller.workflow.file, job, &callee)?;
                Ok(Arc::new(callee))
            });
            if let Ok(callee) = &callee {
                pending.push_back(Pending {
                    workflow: callee.clone(),
                    from: remote_of(&key).or(caller.from.clone()),
                    depth: caller.depth + 1,
                });
            }
            callees.insert(key, callee);
        }
    }
    callees
}

fn remote_of(key: &WorkflowRef) -> Option<RemoteRef> {
    match key {
        WorkflowRef::Remote(remote) => Some(remote.clone()),
        _ => None,
    }
}

/// Reads and parses the workflow `key` names.
fn load(
    key: &WorkflowRef,
    local: &dyn WorkflowSource,
    remote: &RemoteWorkflows,
) -> Result<ParsedWorkflow, CalleeError> {
    let text = match key {
        WorkflowRef::Remote(r) => remote.text(r)?,
        _ => local
            .workflow_text(key)
            .ok_or_else(|| CalleeError::Missing(key.clone()))?,
    };
    parse_workflow(&key.to_string(), &text).map_err(|problems| CalleeError::Invalid {
        reference: key.clone(),
        message: first_problems(problems.0.iter().map(ToString::to_string)),
    })
}

/// Checks a remote callee against the job calling it (inputs, secrets,
/// `on: workflow_call`); files of the run's repository were checked when
/// the run's workflows were loaded.
fn check(
    key: &WorkflowRef,
    caller_file: &str,
    job: &firerunner_workflow::model::Job,
    callee: &ParsedWorkflow,
) -> Result<(), CalleeError> {
    if key.is_same_repository() {
        return Ok(());
    }
    let errors: Vec<String> = check_call(caller_file, job, callee)
        .into_iter()
        .filter(|d| d.severity == Severity::Error)
        .map(|d| d.to_string())
        .collect();
    if errors.is_empty() {
        return Ok(());
    }
    Err(CalleeError::Invalid {
        reference: key.clone(),
        message: first_problems(errors.into_iter()),
    })
}

fn first_problems(problems: impl Iterator<Item = String>) -> String {
    problems.take(3).collect::<Vec<_>>().join("; ")
}
