//! Checks the `${{ }}` expressions of each field against the contexts GitHub
//! makes available there (the "context availability" table of GitHub's docs).

use crate::diagnostic::Pos;
use crate::expr::{self, ExprError};

use super::checker::Checker;
use super::yaml::{Node, NodeKind, Style};

/// Contexts for `run-name`.
pub const RUN_NAME: &[&str] = &["github", "inputs", "vars"];
/// Contexts for workflow-level `env`.
pub const WORKFLOW_ENV: &[&str] = &["github", "secrets", "inputs", "vars"];
/// Contexts for workflow-level `concurrency`.
pub const WORKFLOW_CONCURRENCY: &[&str] = &["github", "inputs", "vars"];
/// Contexts for `jobs.<id>.if` and `jobs.<id>.strategy`; in `if:` the
/// status functions `success` and `failure` may name needed jobs.
pub const JOB_IF: &[&str] = &[
    "github",
    "needs",
    "vars",
    "inputs",
    crate::expr::JOB_STATUS_ARGUMENTS,
];
/// Contexts for job fields evaluated before the job runs (`name`, `runs-on`, `container`, ...).
pub const JOB_SETUP: &[&str] = &["github", "needs", "strategy", "matrix", "vars", "inputs"];
/// Contexts for `jobs.<id>.env` and a reusable workflow call's `secrets`.
pub const JOB_ENV: &[&str] = &[
    "github", "needs", "strategy", "matrix", "vars", "secrets", "inputs",
];
/// Contexts for `container.credentials` and `services.<id>.credentials`.
pub const CREDENTIALS: &[&str] = &["github", "inputs", "vars", "secrets", "env"];
/// Contexts for `jobs.<id>.defaults.run`.
pub const JOB_DEFAULTS: &[&str] = &[
    "github", "needs", "strategy", "matrix", "env", "vars", "inputs",
];
/// Contexts for `jobs.<id>.outputs`.
pub const JOB_OUTPUTS: &[&str] = &[
    "github", "needs", "strategy", "matrix", "job", "runner", "env", "vars", "secrets", "steps",
    "inputs",
];
/// Contexts for step fields (`run`, `with`, `env`, `name`, ...).
pub const STEP: &[&str] = JOB_OUTPUTS;
/// Contexts for `steps.if` (no `secrets`).
pub const STEP_IF: &[&str] = &[
    "github", "needs", "strategy", "matrix", "job", "runner", "env", "vars", "steps", "inputs",
];
/// Contexts for `on.workflow_call.outputs.<id>.value`.
pub const CALL_OUTPUT: &[&str] = &["github", "jobs", "vars", "inputs"];
/// Contexts for input defaults of `workflow_call`.
pub const CALL_INPUT_DEFAULT: &[&str] = &["github", "inputs", "vars"];

impl Checker<'_> {
    /// Checks a string that may hold `${{ }}` expressions.
    pub fn template(&mut self, node: &Node, field: &str, contexts: &[&str]) {
        if let Some(text) = node.as_str() {
            if text.contains("${{") {
                if let Err(err) = expr::parse_template(text, contexts) {
                    self.expression_error(node, field, &err);
                }
            }
        }
    }

    /// Checks every string leaf of a node (used for `with:`, `matrix:`, `services:`, ...).
    pub fn templates_in(&mut self, node: &Node, field: &str, contexts: &[&str]) {
        match &node.kind {
            NodeKind::Scalar(..) => self.template(node, field, contexts),
            NodeKind::Seq(items) => {
                for item in items {
                    self.templates_in(item, field, contexts);
                }
            }
            NodeKind::Map(entries) => {
                for (key, value) in entries {
                    // `${{ insert }}` merges a mapping in; other keys may be
                    // expressions where values may be.
                    if !key.as_str().is_some_and(expr::is_insert_directive) {
                        self.template(key, field, contexts);
                    }
                    self.templates_in(value, field, contexts);
                }
            }
        }
    }

    /// Checks an `if:` condition, written bare or inside `${{ }}`.
    pub fn condition(&mut self, node: &Node, field: &str, contexts: &[&str]) {
        let Some(text) = node.as_str() else { return };
        if let Err(err) = expr::parse_condition(text, contexts) {
            self.expression_error(node, field, &err);
        }
    }

    /// Reports `${{` in a field that GitHub does not evaluate.
    pub fn forbid_expression(&mut self, node: &Node, field: &str) {
        if let Some(text) = node.as_str() {
            if let Some(offset) = text.find("${{") {
                let pos = offset_pos(node, offset);
                self.error(pos, format!("{field}: expressions are not allowed here"));
            }
        }
    }

    fn expression_error(&mut self, node: &Node, field: &str, err: &ExprError) {
        let pos = offset_pos(node, err.offset);
        self.error(pos, format!("{field}: {}", err.message));
    }
}

/// Maps a byte offset inside a scalar's text to a file position: exact for
/// single-line plain and quoted scalars, the scalar's start otherwise.
fn offset_pos(node: &Node, offset: usize) -> Pos {
    let NodeKind::Scalar(text, style) = &node.kind else {
        return node.pos;
    };
    if text.contains('\n') || *style == Style::Block {
        return node.pos;
    }
    let chars = text[..offset.min(text.len())].chars().count() as u32;
    let quote = u32::from(*style == Style::Quoted);
    Pos::new(node.pos.line, node.pos.col + quote + chars)
}
