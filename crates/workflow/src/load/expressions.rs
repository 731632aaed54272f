//! Checks the `${{ }}` expressions of each field against the contexts GitHub
//! makes available there (the "context availability" table of GitHub's docs).

use crate::diagnostic::Pos;
use crate::expr::{self, ExprError};

use super::checker::Checker;
use super::yaml::{Node, NodeKind, Style};

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
