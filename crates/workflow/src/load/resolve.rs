//! Following reusable-workflow calls through texts the caller supplies.
//!
//! This crate does no I/O: a [`WorkflowSource`] (a map of fetched files, or
//! the engine's and CLI's readers) gives the text of each called workflow.
//! [`check_calls`] then checks every call, nested ones included, as GitHub
//! does: inputs and secrets against the callee's `on.workflow_call`, and the
//! `permissions` a callee asks for against what its caller grants.

use std::collections::HashMap;

use crate::diagnostic::Diagnostic;
use crate::model::{Access, Job, JobBody, ParsedWorkflow, Permissions};
use crate::reference::{RemoteRef, WorkflowRef};

use super::{check_call, parse_workflow, PERMISSION_SCOPES};

/// Most levels of workflows one run may connect (the caller is the first).
pub const MAX_CALL_DEPTH: usize = 10;

/// Gives the text of a called workflow file.
pub trait WorkflowSource {
    /// The text of the file `reference` names, or `None` when it is not known
    /// (then that call is not checked here).
    fn workflow_text(&self, reference: &WorkflowRef) -> Option<String>;
}

/// Texts keyed by the reference as written (`./.github/workflows/a.yml`,
/// `octo/repo/.github/workflows/b.yml@v1`, ...).
impl WorkflowSource for HashMap<String, String> {
    fn workflow_text(&self, reference: &WorkflowRef) -> Option<String> {
        self.get(&reference.to_string()).cloned()
    }
}

/// Checks every reusable-workflow call of `workflow`, and of the workflows it
/// calls, down to [`MAX_CALL_DEPTH`] levels. Problems of a direct call point
/// into `workflow`'s file; those of nested calls at the calling job there.
pub fn check_calls(workflow: &ParsedWorkflow, source: &dyn WorkflowSource) -> Vec<Diagnostic> {
    let mut out = Vec::new();
    for job in workflow.jobs.values() {
        if !matches!(job.body, JobBody::Call(_)) {
            continue;
        }
        let at = Site {
            file: &workflow.file,
            job,
        };
        let call = Call {
            caller: workflow,
            job,
            from: None,
            granted: job.permissions.as_ref().or(workflow.permissions.as_ref()),
            depth: 2,
        };
        follow(&at, &call, source, &mut out);
    }
    out
}

/// Where a top-level call is written: errors of nested calls point here.
struct Site<'a> {
    file: &'a str,
    job: &'a Job,
}

impl Site<'_> {
    fn error(&self, message: String) -> Diagnostic {
        Diagnostic::error(self.file, self.job.pos, message)
    }
}

/// One call being followed.
struct Call<'a> {
    /// The workflow holding the calling job.
    caller: &'a ParsedWorkflow,
    /// The calling job.
    job: &'a Job,
    /// The remote repository the caller lives in, if not the caller's own.
    from: Option<&'a RemoteRef>,
    /// The permissions the caller grants, when written somewhere.
    granted: Option<&'a Permissions>,
    /// Level of the called workflow (the top-level caller is level 1).
    depth: usize,
}

/// Checks one call and the calls inside the workflow it calls.
fn follow(at: &Site, call: &Call, source: &dyn WorkflowSource, out: &mut Vec<Diagnostic>) {
    let JobBody::Call(body) = &call.job.body else {
        return;
    };
    let reference = resolve(&body.reference, call.from);
    let Some((label, callee)) = load_callee(at, call, &reference, source, out) else {
        return;
    };
    check_callee(at, call, &label, &callee, out);
    let here = match &reference {
        WorkflowRef::Remote(remote) => Some(remote),
        _ => call.from,
    };
    for job in callee.jobs.values() {
        let granted = job
            .permissions
            .as_ref()
            .or(callee.permissions.as_ref())
            .or(call.granted);
        let inner = Call {
            caller: &callee,
            job,
            from: here,
            granted,
            depth: call.depth + 1,
        };
        follow(at, &inner, source, out);
    }
}

/// The called workflow, parsed, with its label; `None` (after reporting why,
/// if it is a problem) when it is too deep, not found or has errors.
fn load_callee(
    at: &Site,
    call: &Call,
    reference: &WorkflowRef,
    source: &dyn WorkflowSource,
    out: &mut Vec<Diagnostic>,
) -> Option<(String, ParsedWorkflow)> {
    if call.depth > MAX_CALL_DEPTH {
        out.push(at.error(format!(
            "jobs.{}: calling {reference} nests reusable workflows deeper than GitHub's {MAX_CALL_DEPTH} levels",
            at.job.id
        )));
        return None;
    }
    let text = source.workflow_text(reference)?;
    let label = reference.to_string();
    match parse_workflow(&label, &text) {
        Ok(callee) => Some((label, callee)),
        Err(problems) => {
            out.push(at.error(format!(
                "jobs.{}.uses: {label} has errors: {}",
                at.job.id,
                problems.0.first().map(ToString::to_string).unwrap_or_default()
            )));
            None
        }
    }
}

/// Checks the call against the workflow it calls: inputs, secrets, the
/// outputs its caller reads and the permissions granted.
fn check_callee(
    at: &Site,
    call: &Call,
    label: &str,
    callee: &ParsedWorkflow,
    out: &mut Vec<Diagnostic>,
) {
    let problems = check_call(&call.caller.file, call.job, callee);
    if call.depth == 2 {
        out.extend(problems);
    } else {
        out.extend(
            problems
                .into_iter()
                .map(|p| at.error(format!("jobs.{}: in a nested call: {p}", at.job.id))),
        );
    }
    for (pos, name) in unknown_outputs(call.caller, &call.job.id, callee) {
        let message = format!(
            "needs.{}.outputs.{name}: {label} declares no output '{name}'",
            call.job.id
        );
        if call.depth == 2 {
            out.push(Diagnostic::error(&call.caller.file, pos, message));
        } else {
            out.push(at.error(format!("jobs.{}: in a nested call: {message}", at.job.id)));
        }
    }
    if let Some(granted) = call.granted {
        check_permissions(at, label, callee, granted, out);
    }
}

/// `needs.<call_job>.outputs.<name>` read by the caller's jobs that need
/// the call, where the callee declares no such output.
fn unknown_outputs(
    caller: &ParsedWorkflow,
    call_job: &str,
    callee: &ParsedWorkflow,
) -> Vec<(crate::diagnostic::Pos, String)> {
    let declared = callee
        .on
        .workflow_call
        .as_ref()
        .map(|c| {
            c.outputs
                .keys()
                .map(|k| k.to_lowercase())
                .collect::<Vec<_>>()
        })
        .unwrap_or_default();
    let mut out = Vec::new();
    for job in caller.jobs.values() {
        if !job
            .needs
            .iter()
            .any(|n| n.value.eq_ignore_ascii_case(call_job))
        {
            continue;
        }
        for text in job_texts(job) {
            for name in read_outputs(&text.value, call_job) {
                if !declared.contains(&name.to_lowercase()) {
                    out.push((text.pos, name));
                }
            }
        }
    }
    out
}

/// Every string of a job that may hold expressions.
fn job_texts(job: &Job) -> Vec<crate::model::Template> {
    use crate::model::StepAction;
    let mut texts: Vec<crate::model::Template> = Vec::new();
    let value_texts = |v: &crate::diagnostic::Spanned<crate::value::Value>| match &v.value {
        crate::value::Value::String(s) => Some(crate::diagnostic::Spanned::new(s.clone(), v.pos)),
        _ => None,
    };
    // An `if:` is an expression even without `${{ }}`.
    let condition = |c: &crate::model::Template| {
        if c.value.contains("${{") {
            c.clone()
        } else {
            crate::diagnostic::Spanned::new(format!("${{{{ {} }}}}", c.value), c.pos)
        }
    };
    texts.extend(job.name.iter().cloned());
    texts.extend(job.if_cond.iter().map(condition));
    texts.extend(job.env.values().cloned());
    texts.extend(job.outputs.values().cloned());
    match &job.body {
        JobBody::Call(call) => texts.extend(call.with.values().filter_map(value_texts)),
        JobBody::Steps(steps) => {
            for step in steps {
                texts.extend(step.name.iter().cloned());
                texts.extend(step.if_cond.iter().map(condition));
                texts.extend(step.env.values().cloned());
                match &step.action {
                    StepAction::Run { script, .. } => texts.push(script.clone()),
                    StepAction::Uses { with, .. } => {
                        texts.extend(with.values().filter_map(value_texts))
                    }
                    StepAction::Control(_) => {}
                }
            }
        }
    }
    texts
}

/// The output names the `${{ }}` expressions of `text` read as
/// `needs.<job>.outputs.<name>` (ignoring case).
fn read_outputs(text: &str, job: &str) -> Vec<String> {
    let pattern = format!("needs.{}.outputs.", job.to_ascii_lowercase());
    let mut names = Vec::new();
    let mut rest = text;
    while let Some(open) = rest.find("${{") {
        let inner = &rest[open + 3..];
        let close = inner.find("}}").unwrap_or(inner.len());
        let expression = &inner[..close];
        let lower = expression.to_ascii_lowercase();
        let mut from = 0;
        while let Some(found) = lower[from..].find(&pattern) {
            let start = from + found + pattern.len();
            let end = expression[start..]
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '-'))
                .map_or(expression.len(), |e| start + e);
            if end > start {
                names.push(expression[start..end].to_owned());
            }
            from = end.max(start);
        }
        rest = &inner[close..];
    }
    names
}

/// A `./` or `$/` call inside a remote workflow names a file of that remote
/// repository at the same ref.
fn resolve(reference: &WorkflowRef, from: Option<&RemoteRef>) -> WorkflowRef {
    match (reference, from) {
        (WorkflowRef::Local { path } | WorkflowRef::SelfRepo { path }, Some(remote)) => {
            WorkflowRef::Remote(RemoteRef {
                path: path.clone(),
                ..remote.clone()
            })
        }
        _ => reference.clone(),
    }
}

fn rank(access: Access) -> u8 {
    match access {
        Access::None => 0,
        Access::Read => 1,
        Access::Write => 2,
    }
}

/// The access `permissions` gives `scope` (unnamed scopes of a map get none).
fn level(permissions: &Permissions, scope: &str) -> Access {
    match permissions {
        Permissions::ReadAll => Access::Read,
        Permissions::WriteAll => Access::Write,
        Permissions::Scopes(scopes) => scopes.get(scope).copied().unwrap_or(Access::None),
    }
}

fn access_name(access: Access) -> &'static str {
    match access {
        Access::None => "none",
        Access::Read => "read",
        Access::Write => "write",
    }
}

/// `scope: level` pairs where `requested` asks for more than `granted`.
fn excess(requested: &Permissions, granted: &Permissions) -> Option<(String, String)> {
    let over: Vec<&str> = PERMISSION_SCOPES
        .iter()
        .copied()
        .filter(|scope| rank(level(requested, scope)) > rank(level(granted, scope)))
        .collect();
    if over.is_empty() {
        return None;
    }
    let list = |p: &Permissions| {
        over.iter()
            .map(|s| format!("{s}: {}", access_name(level(p, s))))
            .collect::<Vec<_>>()
            .join(", ")
    };
    Some((list(requested), list(granted)))
}

/// A called workflow, and each of its jobs, may ask for no more than granted.
fn check_permissions(
    at: &Site,
    label: &str,
    callee: &ParsedWorkflow,
    granted: &Permissions,
    out: &mut Vec<Diagnostic>,
) {
    let id = &at.job.id;
    if let Some((asked, allowed)) = callee.permissions.as_ref().and_then(|p| excess(p, granted)) {
        out.push(at.error(format!(
            "jobs.{id}: error calling workflow '{label}': the workflow is requesting '{asked}', but is only allowed '{allowed}'"
        )));
    }
    for job in callee.jobs.values() {
        if let Some((asked, allowed)) = job.permissions.as_ref().and_then(|p| excess(p, granted)) {
            out.push(at.error(format!(
                "jobs.{id}: error calling workflow '{label}': the nested job '{}' is requesting '{asked}', but is only allowed '{allowed}'",
                job.id
            )));
        }
    }
}
