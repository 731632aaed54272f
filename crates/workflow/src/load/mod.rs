//! Loading a workflow file: YAML with positions, then the typed model and its validation.
//!
//! [`parse_workflow`] reports every problem of a file at once, each with its
//! `file:line:col`, following the rules of GitHub's workflow schema.

mod action;
mod calls;
mod checker;
mod expressions;
mod jobs;
mod resolve;
mod triggers;
pub mod yaml;

use indexmap::IndexMap;

use crate::diagnostic::{Diagnostic, Diagnostics, Pos, Severity, Spanned};
use crate::model::{Access, Concurrency, Defaults, EnvMap, ParsedWorkflow, Permissions};

use checker::{get, Checker};

use crate::expr::contexts as ctx;
pub use action::{parse_action, ActionInput, ActionRuns, ParsedAction};
pub use calls::check_call;
pub use checker::suggest as suggest_name;
pub use resolve::{check_calls, WorkflowSource, MAX_CALL_DEPTH};
use yaml::Node;

/// Keys allowed at the top of a workflow file.
const WORKFLOW_KEYS: &[&str] = &[
    "name",
    "description",
    "run-name",
    "on",
    "env",
    "defaults",
    "permissions",
    "concurrency",
    "jobs",
];

/// Permission scopes GitHub knows.
const PERMISSION_SCOPES: &[&str] = &[
    "actions",
    "artifact-metadata",
    "attestations",
    "checks",
    "code-quality",
    "contents",
    "copilot-requests",
    "deployments",
    "discussions",
    "drives",
    "id-token",
    "issues",
    "models",
    "packages",
    "pages",
    "pull-requests",
    "repository-projects",
    "security-events",
    "statuses",
    "vulnerability-alerts",
];

/// The access levels a scope may have when GitHub restricts them.
fn scope_levels(scope: &str) -> Option<&'static [&'static str]> {
    match scope {
        "id-token" | "copilot-requests" => Some(&["write", "none"]),
        "models" | "vulnerability-alerts" => Some(&["read", "none"]),
        _ => None,
    }
}

/// Parses and validates one workflow file. `file` is the label used in diagnostics.
///
/// Returns the model, or every error found (in source order), including
/// `needs` that name no job and dependency cycles.
pub fn parse_workflow(file: &str, source: &str) -> Result<ParsedWorkflow, Diagnostics> {
    check_size(file, source)?;
    let root = parse_root(
        file,
        source,
        "the file is empty: a workflow needs 'on' and 'jobs'",
    )?;
    let mut c = Checker::new(file);
    let mut workflow = build_workflow(&mut c, &root);
    let mut diagnostics = c.diagnostics;
    diagnostics.extend(crate::plan::check_needs(&workflow));
    diagnostics.sort_by_key(|d| d.pos);
    diagnostics.dedup();
    if diagnostics.iter().any(|d| d.severity == Severity::Error) {
        Err(Diagnostics(diagnostics))
    } else {
        workflow.warnings = diagnostics;
        Ok(workflow)
    }
}

/// Most characters (UTF-16 units) GitHub reads from a workflow file.
pub const MAX_FILE_CHARS: usize = 1024 * 1024;

/// Refuses a file longer than GitHub reads.
fn check_size(file: &str, source: &str) -> Result<(), Diagnostics> {
    // A text of fewer bytes than the limit has no more UTF-16 units.
    if source.len() > MAX_FILE_CHARS && source.encode_utf16().count() > MAX_FILE_CHARS {
        return Err(Diagnostics(vec![Diagnostic::error(
            file,
            Pos::new(1, 1),
            format!("the file is larger than GitHub's limit of {MAX_FILE_CHARS} characters"),
        )]));
    }
    Ok(())
}

/// The YAML tree of a file, or its syntax errors (`when_empty` for an empty file).
fn parse_root(file: &str, source: &str, when_empty: &str) -> Result<Node, Diagnostics> {
    match yaml::parse(source) {
        Ok(Some(root)) => Ok(root),
        Ok(None) => Err(Diagnostics(vec![Diagnostic::error(
            file,
            Pos::new(1, 1),
            when_empty,
        )])),
        Err(errors) => Err(Diagnostics(
            errors
                .into_iter()
                .map(|e| Diagnostic::error(file, e.pos, e.message))
                .collect(),
        )),
    }
}

fn build_workflow(c: &mut Checker, root: &Node) -> ParsedWorkflow {
    let mut wf = ParsedWorkflow {
        file: c.file.to_owned(),
        ..ParsedWorkflow::default()
    };
    let Some(entries) = c.map_with_keys(root, "workflow", WORKFLOW_KEYS) else {
        return wf;
    };
    c.require(entries, root.pos, "workflow", &["on", "jobs"]);
    for (key, value) in entries {
        match key.as_str().unwrap_or_default() {
            "name" => {
                c.forbid_expression(value, "name");
                wf.name = c.string(value, "name");
            }
            "description" => {
                c.forbid_expression(value, "description");
                c.string(value, "description");
            }
            "run-name" => {
                c.template(value, "run-name", ctx::RUN_NAME);
                wf.run_name = c.string(value, "run-name");
            }
            "on" => wf.on = triggers::build(c, value),
            "env" => wf.env = env(c, value, "env", ctx::WORKFLOW_ENV),
            "defaults" => wf.defaults = defaults(c, value, "defaults", ctx::WORKFLOW_ENV),
            "permissions" => wf.permissions = permissions(c, value, "permissions"),
            "concurrency" => {
                wf.concurrency = concurrency(c, value, "concurrency", ctx::WORKFLOW_CONCURRENCY)
            }
            "jobs" => wf.jobs = jobs::build(c, value),
            _ => {}
        }
    }
    wf
}

/// An `env:` mapping; values are strings (numbers and booleans keep their spelling).
fn env(c: &mut Checker, node: &Node, field: &str, contexts: &[&str]) -> EnvMap {
    let mut map = IndexMap::new();
    let Some(entries) = c.map(node, field) else {
        return map;
    };
    for (key, value) in entries {
        let name = key.as_str().unwrap_or_default();
        let field = format!("{field}.{name}");
        if value.is_null() {
            map.insert(name.to_owned(), Spanned::new(String::new(), value.pos));
            continue;
        }
        c.template(value, &field, contexts);
        if let Some(text) = c.string(value, &field) {
            map.insert(name.to_owned(), text);
        }
    }
    map
}

fn defaults(c: &mut Checker, node: &Node, field: &str, contexts: &[&str]) -> Defaults {
    let mut out = Defaults::default();
    let Some(entries) = c.map_with_keys(node, field, &["run"]) else {
        return out;
    };
    if let Some(run) = get(entries, "run") {
        let field = format!("{field}.run");
        if let Some(entries) = c.map_with_keys(run, &field, &["shell", "working-directory"]) {
            if let Some(shell) = get(entries, "shell") {
                let f = format!("{field}.shell");
                // GitHub evaluates a job's default shell (with `env` and
                // `matrix`), not the workflow's.
                if field.starts_with("jobs.") {
                    c.template(shell, &f, contexts);
                } else {
                    c.forbid_expression(shell, &f);
                }
                out.shell = c.string(shell, &f);
            }
            if let Some(dir) = get(entries, "working-directory") {
                let f = format!("{field}.working-directory");
                c.template(dir, &f, contexts);
                out.working_directory = c.string(dir, &f);
            }
        }
    }
    out
}

fn permissions(c: &mut Checker, node: &Node, field: &str) -> Option<Permissions> {
    if let Some(text) = node.as_str() {
        return match text {
            "read-all" => Some(Permissions::ReadAll),
            "write-all" => Some(Permissions::WriteAll),
            _ => {
                c.error(
                    node.pos,
                    format!("{field}: expected 'read-all', 'write-all' or a mapping of scopes, found '{text}'"),
                );
                None
            }
        };
    }
    let entries = c.map_with_keys(node, field, PERMISSION_SCOPES)?;
    let mut scopes = IndexMap::new();
    for (key, value) in entries {
        let scope = key.as_str().unwrap_or_default();
        if let Some(access) = scope_access(c, scope, value, field) {
            scopes.insert(scope.to_owned(), access);
        }
    }
    Some(Permissions::Scopes(scopes))
}

/// The access one permission `scope` grants, if its level is valid for it.
fn scope_access(c: &mut Checker, scope: &str, value: &Node, field: &str) -> Option<Access> {
    if let (Some(levels), Some(level)) = (scope_levels(scope), value.as_str()) {
        if !levels.contains(&level) {
            let expected = levels
                .iter()
                .map(|l| format!("'{l}'"))
                .collect::<Vec<_>>()
                .join(" or ");
            c.error(value.pos, format!("{field}.{scope}: expected {expected}"));
            return None;
        }
    }
    match value.as_str() {
        Some("read") => Some(Access::Read),
        Some("write") => Some(Access::Write),
        Some("none") => Some(Access::None),
        _ => {
            c.error(
                value.pos,
                format!("{field}.{scope}: expected 'read', 'write' or 'none'"),
            );
            None
        }
    }
}

fn concurrency(
    c: &mut Checker,
    node: &Node,
    field: &str,
    contexts: &[&str],
) -> Option<Concurrency> {
    if node.as_str().is_some() {
        c.template(node, field, contexts);
        return c.string(node, field).map(|group| Concurrency {
            group,
            cancel_in_progress: None,
        });
    }
    let entries = c.map_with_keys(node, field, &["group", "cancel-in-progress", "queue"])?;
    if let Some(queue) = get(entries, "queue") {
        let f = format!("{field}.queue");
        if let Some(text) = c.string(queue, &f) {
            if !matches!(text.as_str(), "single" | "max") {
                c.error(
                    text.pos,
                    format!("{f}: expected 'single' or 'max', found '{}'", text.value),
                );
            }
        }
    }
    c.require(entries, node.pos, field, &["group"]);
    let group_node = get(entries, "group")?;
    let group_field = format!("{field}.group");
    c.template(group_node, &group_field, contexts);
    let group = c.string(group_node, &group_field)?;
    let cancel_in_progress = get(entries, "cancel-in-progress").and_then(|v| {
        let f = format!("{field}.cancel-in-progress");
        c.template(v, &f, contexts);
        c.bool_or_expr(v, &f)
    });
    Some(Concurrency {
        group,
        cancel_in_progress,
    })
}
