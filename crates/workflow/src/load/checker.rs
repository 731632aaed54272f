//! Typed reads of YAML nodes that record a diagnostic instead of failing.

use crate::diagnostic::{Diagnostic, Pos, Spanned};
use crate::model::Template;
use crate::value::Value;

use super::yaml::{Node, NodeKind, Style};

/// Collects the diagnostics of one file while the model is built.
pub struct Checker<'f> {
    /// The file label used in every diagnostic.
    pub file: &'f str,
    /// Everything found so far.
    pub diagnostics: Vec<Diagnostic>,
}

impl<'f> Checker<'f> {
    /// A checker for `file`.
    pub fn new(file: &'f str) -> Self {
        Self {
            file,
            diagnostics: Vec::new(),
        }
    }

    /// Records an error at `pos`.
    pub fn error(&mut self, pos: Pos, message: impl Into<String>) {
        self.diagnostics
            .push(Diagnostic::error(self.file, pos, message));
    }

    /// Records a warning at `pos`: GitHub runs the file, but something is off.
    pub fn warning(&mut self, pos: Pos, message: impl Into<String>) {
        self.diagnostics
            .push(Diagnostic::warning(self.file, pos, message));
    }

    fn expected(&mut self, node: &Node, what: &str, field: &str) {
        self.error(
            node.pos,
            format!("{field}: expected {what}, found {}", node.kind_name()),
        );
    }

    /// The entries of a mapping; reports other kinds. A null counts as empty.
    pub fn map<'n>(&mut self, node: &'n Node, field: &str) -> Option<&'n [(Node, Node)]> {
        match &node.kind {
            NodeKind::Map(entries) => Some(entries),
            _ if node.is_null() => Some(&[]),
            _ => {
                self.expected(node, "a mapping", field);
                None
            }
        }
    }

    /// Like [`Checker::map`], and also reports keys outside `allowed`.
    pub fn map_with_keys<'n>(
        &mut self,
        node: &'n Node,
        field: &str,
        allowed: &[&str],
    ) -> Option<&'n [(Node, Node)]> {
        let entries = self.map(node, field)?;
        for (key, _) in entries {
            let name = key.as_str().unwrap_or_default();
            if !allowed.contains(&name) {
                let hint = suggest(name, allowed.iter().copied())
                    .map(|s| format!(" (did you mean '{s}'?)"))
                    .unwrap_or_default();
                let allowed_list = allowed.join(", ");
                self.error(
                    key.pos,
                    format!(
                        "{field}: unknown key '{name}'{hint}; allowed keys are: {allowed_list}"
                    ),
                );
            }
        }
        Some(entries)
    }

    /// Reports keys of `entries` that `required` lists but the mapping lacks.
    pub fn require(&mut self, entries: &[(Node, Node)], at: Pos, field: &str, required: &[&str]) {
        for name in required {
            if get(entries, name).is_none() {
                self.error(at, format!("{field}: missing required key '{name}'"));
            }
        }
    }

    /// A scalar as text (numbers and booleans keep their source spelling).
    pub fn string(&mut self, node: &Node, field: &str) -> Option<Template> {
        match &node.kind {
            NodeKind::Scalar(s, _) => Some(Spanned::new(s.clone(), node.pos)),
            _ => {
                self.expected(node, "a string", field);
                None
            }
        }
    }

    /// A string, or a sequence of strings.
    pub fn string_list(&mut self, node: &Node, field: &str) -> Vec<Template> {
        match &node.kind {
            NodeKind::Seq(items) => items
                .iter()
                .filter_map(|item| self.string(item, field))
                .collect(),
            NodeKind::Scalar(..) => self.string(node, field).into_iter().collect(),
            NodeKind::Map(_) => {
                self.expected(node, "a string or a sequence of strings", field);
                Vec::new()
            }
        }
    }

    /// A sequence's items; reports other kinds.
    pub fn seq<'n>(&mut self, node: &'n Node, field: &str) -> &'n [Node] {
        match &node.kind {
            NodeKind::Seq(items) => items,
            _ if node.is_null() => &[],
            _ => {
                self.expected(node, "a sequence", field);
                &[]
            }
        }
    }

    /// A boolean literal or an expression string.
    pub fn bool_or_expr(&mut self, node: &Node, field: &str) -> Option<Spanned<Value>> {
        self.literal_or_expr(node, field, "a boolean", |v| matches!(v, Value::Bool(_)))
    }

    /// A number literal or an expression string.
    pub fn number_or_expr(&mut self, node: &Node, field: &str) -> Option<Spanned<Value>> {
        self.literal_or_expr(node, field, "a number", |v| matches!(v, Value::Number(_)))
    }

    fn literal_or_expr(
        &mut self,
        node: &Node,
        field: &str,
        what: &str,
        ok: impl Fn(&Value) -> bool,
    ) -> Option<Spanned<Value>> {
        let value = node.to_value();
        if ok(&value) {
            return Some(Spanned::new(value, node.pos));
        }
        if let NodeKind::Scalar(s, _) = &node.kind {
            if s.contains("${{") {
                return Some(Spanned::new(Value::String(s.clone()), node.pos));
            }
        }
        self.expected(node, &format!("{what} or an expression"), field);
        None
    }

    /// A plain `true`/`false`.
    pub fn bool(&mut self, node: &Node, field: &str) -> Option<bool> {
        match node.to_value() {
            Value::Bool(b) if matches!(node.kind, NodeKind::Scalar(_, Style::Plain)) => Some(b),
            _ => {
                self.expected(node, "a boolean", field);
                None
            }
        }
    }
}

/// The value under `key` in a mapping's entries.
pub fn get<'n>(entries: &'n [(Node, Node)], key: &str) -> Option<&'n Node> {
    entries
        .iter()
        .find(|(k, _)| k.as_str() == Some(key))
        .map(|(_, v)| v)
}

/// The closest candidate to `name` when it is a likely typo.
pub fn suggest<'a>(name: &str, candidates: impl Iterator<Item = &'a str>) -> Option<&'a str> {
    let limit = (name.chars().count() / 3).max(1);
    candidates
        .map(|c| {
            (
                edit_distance(&name.to_ascii_lowercase(), &c.to_ascii_lowercase()),
                c,
            )
        })
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

/// Edit distance counting insertions, deletions, substitutions and swaps of
/// neighbouring characters (so `biuld` is one edit from `build`).
fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let mut d = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in d.iter_mut().enumerate() {
        row[0] = i;
    }
    d[0] = (0..=b.len()).collect();
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            d[i][j] = (d[i - 1][j] + 1)
                .min(d[i][j - 1] + 1)
                .min(d[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                d[i][j] = d[i][j].min(d[i - 2][j - 2] + 1);
            }
        }
    }
    d[a.len()][b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggests_near_misses_only() {
        let keys = ["runs-on", "steps", "needs"];
        assert_eq!(suggest("runs_on", keys.iter().copied()), Some("runs-on"));
        assert_eq!(suggest("step", keys.iter().copied()), Some("steps"));
        assert_eq!(suggest("banana", keys.iter().copied()), None);
        assert_eq!(suggest("nedes", keys.iter().copied()), Some("needs"));
    }
}
