//! A YAML document as a tree of nodes that remember where they were written.
//!
//! Built from saphyr-parser's event stream, with limits on nesting depth and on
//! the size that aliases may expand to, so hostile input fails fast instead of
//! exhausting the stack or memory.

use std::collections::HashMap;

use saphyr_parser::{Event, Parser, ScalarStyle, ScanError, Span};

use crate::diagnostic::Pos;
use crate::value::{Object, Value};

/// Most sequences and mappings nested in one another, as in GitHub's parser.
pub const MAX_DEPTH: usize = 50;
/// Most nodes a document may have once aliases are expanded.
pub const MAX_NODES: usize = 200_000;

/// One YAML node with the position where it starts.
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    /// What the node holds.
    pub kind: NodeKind,
    /// Where it starts (1-based line and column).
    pub pos: Pos,
}

/// The three kinds of YAML node.
#[derive(Debug, Clone, PartialEq)]
pub enum NodeKind {
    /// A scalar with its text and how it was quoted.
    Scalar(String, Style),
    /// A sequence.
    Seq(Vec<Node>),
    /// A mapping with its entries in source order.
    Map(Vec<(Node, Node)>),
}

/// How a scalar was written: this decides whether `true` is a boolean or a string.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Style {
    /// Unquoted.
    Plain,
    /// `'...'` or `"..."`.
    Quoted,
    /// `|` or `>`.
    Block,
}

/// A problem found while reading YAML.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct YamlError {
    /// Where it is.
    pub pos: Pos,
    /// What is wrong.
    pub message: String,
}

impl Node {
    /// The scalar text, if this is a scalar.
    pub fn as_str(&self) -> Option<&str> {
        match &self.kind {
            NodeKind::Scalar(s, _) => Some(s),
            _ => None,
        }
    }

    /// A plain `null`, `~` or empty scalar.
    pub fn is_null(&self) -> bool {
        matches!(&self.kind, NodeKind::Scalar(s, Style::Plain) if is_null_text(s))
    }

    /// A short name of the node's kind, for messages.
    pub fn kind_name(&self) -> &'static str {
        match &self.kind {
            NodeKind::Scalar(s, Style::Plain) => match resolve_plain(s) {
                Value::Null => "null",
                Value::Bool(_) => "a boolean",
                Value::Number(_) => "a number",
                _ => "a string",
            },
            NodeKind::Scalar(..) => "a string",
            NodeKind::Seq(_) => "a sequence",
            NodeKind::Map(_) => "a mapping",
        }
    }

    /// Converts the node to a [`Value`], resolving plain scalars with the YAML 1.2 core schema.
    pub fn to_value(&self) -> Value {
        match &self.kind {
            NodeKind::Scalar(s, Style::Plain) => resolve_plain(s),
            NodeKind::Scalar(s, _) => Value::String(s.clone()),
            NodeKind::Seq(items) => Value::Array(items.iter().map(Node::to_value).collect()),
            NodeKind::Map(entries) => {
                let mut obj = Object::new();
                for (k, v) in entries {
                    obj.0
                        .insert(k.as_str().unwrap_or_default().to_owned(), v.to_value());
                }
                Value::Object(obj)
            }
        }
    }
}

fn is_null_text(s: &str) -> bool {
    matches!(s, "" | "~" | "null" | "Null" | "NULL")
}

/// Resolves a plain scalar per the YAML 1.2 core schema.
pub fn resolve_plain(s: &str) -> Value {
    if is_null_text(s) {
        return Value::Null;
    }
    match s {
        "true" | "True" | "TRUE" => return Value::Bool(true),
        "false" | "False" | "FALSE" => return Value::Bool(false),
        ".inf" | ".Inf" | ".INF" | "+.inf" | "+.Inf" | "+.INF" => {
            return Value::Number(f64::INFINITY)
        }
        "-.inf" | "-.Inf" | "-.INF" => return Value::Number(f64::NEG_INFINITY),
        ".nan" | ".NaN" | ".NAN" => return Value::Number(f64::NAN),
        _ => {}
    }
    if let Some(hex) = s.strip_prefix("0x") {
        if let Ok(n) = u64::from_str_radix(hex, 16) {
            return Value::Number(n as f64);
        }
    }
    if let Some(oct) = s.strip_prefix("0o") {
        if let Ok(n) = u64::from_str_radix(oct, 8) {
            return Value::Number(n as f64);
        }
    }
    if looks_numeric(s) {
        if let Ok(n) = s.parse::<f64>() {
            return Value::Number(n);
        }
    }
    Value::String(s.to_owned())
}

/// The core schema's int and float shapes: `[-+]?digits[.digits][e[-+]digits]`.
fn looks_numeric(s: &str) -> bool {
    let body = s.strip_prefix(['-', '+']).unwrap_or(s);
    let mut chars = body.chars().peekable();
    let mut digits = 0;
    while chars.peek().is_some_and(char::is_ascii_digit) {
        chars.next();
        digits += 1;
    }
    if chars.peek() == Some(&'.') {
        chars.next();
        while chars.peek().is_some_and(char::is_ascii_digit) {
            chars.next();
            digits += 1;
        }
    }
    if digits == 0 {
        return false;
    }
    if matches!(chars.peek(), Some('e' | 'E')) {
        chars.next();
        if matches!(chars.peek(), Some('-' | '+')) {
            chars.next();
        }
        if !chars.peek().is_some_and(char::is_ascii_digit) {
            return false;
        }
        while chars.peek().is_some_and(char::is_ascii_digit) {
            chars.next();
        }
    }
    chars.next().is_none()
}

fn pos_of(span: &Span) -> Pos {
    Pos::new(span.start.line() as u32, span.start.col() as u32 + 1)
}

fn scan_error(err: &ScanError) -> YamlError {
    let m = err.marker();
    YamlError {
        pos: Pos::new(m.line() as u32, m.col() as u32 + 1),
        message: format!("invalid YAML: {}", err.info()),
    }
}

struct Builder<'a> {
    parser: Parser<'a, saphyr_parser::StrInput<'a>>,
    anchors: HashMap<usize, Node>,
    nodes: usize,
    errors: Vec<YamlError>,
}

/// How many comments glued to a token (`[a]# note`) one parse forgives.
const MAX_GLUED_COMMENTS: usize = 64;

/// Parses one YAML document. Returns `Ok(None)` for an empty document.
///
/// A `#` right after a flow collection or a quoted scalar (`[one]#, two`)
/// starts a comment, as the YAML reader behind GitHub takes it, although
/// YAML 1.2 wants a space first.
pub fn parse(source: &str) -> Result<Option<Node>, Vec<YamlError>> {
    let mut fixed: Option<String> = None;
    for _ in 0..MAX_GLUED_COMMENTS {
        let text = fixed.as_deref().unwrap_or(source);
        match parse_once(text) {
            Err(errors) => match glued_comment(text, &errors) {
                Some(offset) => {
                    let mut owned = text.to_owned();
                    owned.insert(offset, ' ');
                    fixed = Some(owned);
                }
                None => return Err(errors),
            },
            ok => return ok,
        }
    }
    parse_once(fixed.as_deref().unwrap_or(source))
}

/// The byte offset of a `#` the parser refused only for lacking a space before it.
fn glued_comment(text: &str, errors: &[YamlError]) -> Option<usize> {
    let [error] = errors else { return None };
    if !error.message.contains("comments must be separated") {
        return None;
    }
    let line = text
        .split_inclusive('\n')
        .nth((error.pos.line as usize).checked_sub(1)?)?;
    let line_start = line.as_ptr() as usize - text.as_ptr() as usize;
    let (at, c) = line
        .char_indices()
        .nth((error.pos.col as usize).checked_sub(1)?)?;
    (c == '#').then_some(line_start + at)
}

fn parse_once(source: &str) -> Result<Option<Node>, Vec<YamlError>> {
    let mut b = Builder {
        parser: Parser::new_from_str(source),
        anchors: HashMap::new(),
        nodes: 0,
        errors: Vec::new(),
    };
    let doc = b.document();
    match doc {
        Ok(node) if b.errors.is_empty() => Ok(node),
        Ok(_) => Err(b.errors),
        Err(e) => {
            b.errors.push(e);
            Err(b.errors)
        }
    }
}

impl<'a> Builder<'a> {
    fn next(&mut self) -> Result<(Event<'a>, Span), YamlError> {
        match self.parser.next_event() {
            Some(Ok(ev)) => Ok(ev),
            Some(Err(e)) => Err(scan_error(&e)),
            None => Err(YamlError {
                pos: Pos::new(1, 1),
                message: "invalid YAML: unexpected end of input".into(),
            }),
        }
    }

    fn document(&mut self) -> Result<Option<Node>, YamlError> {
        let mut root = None;
        loop {
            let (ev, span) = self.next()?;
            match ev {
                Event::StreamStart | Event::DocumentEnd | Event::Nothing => {}
                Event::StreamEnd => return Ok(root),
                Event::DocumentStart(_) => {
                    if root.is_some() {
                        return Err(YamlError {
                            pos: pos_of(&span),
                            message: "a workflow file must hold one YAML document, found a second"
                                .into(),
                        });
                    }
                    let (ev, span) = self.next()?;
                    if matches!(ev, Event::DocumentEnd) {
                        continue;
                    }
                    root = Some(self.node(ev, span, 0)?);
                }
                other => {
                    return Err(YamlError {
                        pos: pos_of(&span),
                        message: format!("invalid YAML: unexpected {other:?}"),
                    })
                }
            }
        }
    }

    fn count(&mut self, n: usize, pos: Pos) -> Result<(), YamlError> {
        self.nodes += n;
        if self.nodes > MAX_NODES {
            return Err(YamlError {
                pos,
                message: format!(
                    "document too large: more than {MAX_NODES} nodes once aliases are expanded"
                ),
            });
        }
        Ok(())
    }

    fn node(&mut self, ev: Event<'a>, span: Span, depth: usize) -> Result<Node, YamlError> {
        let pos = pos_of(&span);
        let collection = matches!(ev, Event::SequenceStart(..) | Event::MappingStart(..));
        if collection && depth >= MAX_DEPTH {
            return Err(YamlError {
                pos,
                message: format!(
                    "nesting deeper than {MAX_DEPTH} levels of mappings and sequences"
                ),
            });
        }
        self.count(1, pos)?;
        let (kind, anchor) = match ev {
            Event::Scalar(text, style, anchor, _) => {
                let style = match style {
                    ScalarStyle::Plain => Style::Plain,
                    ScalarStyle::SingleQuoted | ScalarStyle::DoubleQuoted => Style::Quoted,
                    ScalarStyle::Literal | ScalarStyle::Folded => Style::Block,
                };
                (NodeKind::Scalar(text.into_owned(), style), anchor)
            }
            Event::SequenceStart(anchor, _) => (NodeKind::Seq(self.items(depth + 1)?), anchor),
            Event::MappingStart(anchor, _) => (NodeKind::Map(self.entries(depth + 1)?), anchor),
            Event::Alias(id) => return self.alias(id, pos),
            other => {
                return Err(YamlError {
                    pos,
                    message: format!("invalid YAML: unexpected {other:?}"),
                })
            }
        };
        let node = Node { kind, pos };
        if anchor != 0 {
            self.anchors.insert(anchor, node.clone());
        }
        Ok(node)
    }

    /// A copy of the node anchored as `id`, at `pos`.
    fn alias(&mut self, id: usize, pos: Pos) -> Result<Node, YamlError> {
        let Some(target) = self.anchors.get(&id).cloned() else {
            return Err(YamlError {
                pos,
                message: "alias refers to an unknown anchor".into(),
            });
        };
        self.count(count_nodes(&target), pos)?;
        Ok(Node { pos, ..target })
    }

    /// The items of a sequence up to its end, at `depth`.
    fn items(&mut self, depth: usize) -> Result<Vec<Node>, YamlError> {
        let mut items = Vec::new();
        loop {
            let (ev, span) = self.next()?;
            if matches!(ev, Event::SequenceEnd) {
                return Ok(items);
            }
            items.push(self.node(ev, span, depth)?);
        }
    }

    /// The entries of a mapping up to its end, at `depth`; repeated keys are reported.
    fn entries(&mut self, depth: usize) -> Result<Vec<(Node, Node)>, YamlError> {
        let mut entries: Vec<(Node, Node)> = Vec::new();
        loop {
            let (ev, span) = self.next()?;
            if matches!(ev, Event::MappingEnd) {
                return Ok(entries);
            }
            let key = self.node(ev, span, depth)?;
            let (ev, span) = self.next()?;
            let value = self.node(ev, span, depth)?;
            self.check_key(&entries, &key);
            entries.push((key, value));
        }
    }

    fn check_key(&mut self, entries: &[(Node, Node)], key: &Node) {
        let Some(text) = key.as_str() else {
            self.errors.push(YamlError {
                pos: key.pos,
                message: format!("a mapping key must be a string, found {}", key.kind_name()),
            });
            return;
        };
        if let Some((first, _)) = entries.iter().find(|(k, _)| k.as_str() == Some(text)) {
            self.errors.push(YamlError {
                pos: key.pos,
                message: format!(
                    "duplicate key '{text}' (first defined at line {})",
                    first.pos.line
                ),
            });
        }
    }
}

fn count_nodes(node: &Node) -> usize {
    1 + match &node.kind {
        NodeKind::Scalar(..) => 0,
        NodeKind::Seq(items) => items.iter().map(count_nodes).sum(),
        NodeKind::Map(entries) => entries
            .iter()
            .map(|(k, v)| count_nodes(k) + count_nodes(v))
            .sum(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_comment_glued_to_a_flow_sequence_is_read_as_github_reads_it() {
        let node = parse("a: [one]#, two\nb: 'x'#y\nc: 1\n").unwrap().unwrap();
        assert_eq!(
            node.to_value(),
            Value::from(serde_json::json!({"a": ["one"], "b": "x", "c": 1}))
        );
        let NodeKind::Map(entries) = &node.kind else {
            panic!("not a map")
        };
        assert_eq!(entries[2].0.pos, Pos::new(3, 1));
        assert!(parse("a: [one\n").is_err());
    }

    #[test]
    fn keeps_positions_and_order() {
        let node = parse("a: 1\nb:\n  - x\n  - 'y'\n").unwrap().unwrap();
        let NodeKind::Map(entries) = &node.kind else {
            panic!("not a map")
        };
        assert_eq!(entries[0].0.as_str(), Some("a"));
        assert_eq!(entries[1].0.pos, Pos::new(2, 1));
        let NodeKind::Seq(items) = &entries[1].1.kind else {
            panic!("not a seq")
        };
        assert_eq!(items[1].pos, Pos::new(4, 5));
        assert_eq!(items[1].to_value(), Value::String("y".into()));
    }

    #[test]
    fn resolves_core_schema() {
        assert_eq!(resolve_plain("true"), Value::Bool(true));
        assert_eq!(resolve_plain("~"), Value::Null);
        assert_eq!(resolve_plain("0x1F"), Value::Number(31.0));
        assert_eq!(resolve_plain("1.5e3"), Value::Number(1500.0));
        assert_eq!(resolve_plain("-3"), Value::Number(-3.0));
        assert_eq!(resolve_plain("1.2.3"), Value::String("1.2.3".into()));
        assert_eq!(resolve_plain("yes"), Value::String("yes".into()));
        assert_eq!(resolve_plain("e5"), Value::String("e5".into()));
    }

    #[test]
    fn duplicate_keys_are_errors() {
        let errs = parse("a: 1\na: 2\n").unwrap_err();
        assert_eq!(errs[0].pos, Pos::new(2, 1));
        assert!(errs[0].message.contains("duplicate key 'a'"));
    }

    #[test]
    fn github_nests_at_most_fifty_collections() {
        let nested = |n: usize| format!("{}{}", "[".repeat(n), "]".repeat(n));
        assert!(parse(&nested(MAX_DEPTH)).is_ok());
        let errs = parse(&nested(MAX_DEPTH + 1)).unwrap_err();
        assert!(errs[0].message.contains("nesting deeper"), "{errs:?}");
        assert_eq!(errs[0].pos, Pos::new(1, 51));
    }

    #[test]
    fn deep_nesting_is_refused() {
        let deep = "[".repeat(10_000);
        let errs = parse(&deep).unwrap_err();
        let m = &errs[0].message;
        assert!(
            m.contains("nesting deeper") || m.contains("recursion limit"),
            "{errs:?}"
        );
        let block: String = (0..300)
            .map(|i| format!("{}k:\n", "  ".repeat(i)))
            .collect();
        let errs = parse(&block).unwrap_err();
        assert!(errs[0].message.contains("nesting deeper"), "{errs:?}");
    }

    #[test]
    fn alias_bombs_are_refused() {
        let mut doc = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
        for i in 1..12 {
            let prev = i - 1;
            doc.push_str(&format!(
                "a{i}: &a{i} [*a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}]\n"
            ));
        }
        let errs = parse(&doc).unwrap_err();
        assert!(errs[0].message.contains("too large"), "{errs:?}");
    }

    #[test]
    fn aliases_expand() {
        let node = parse("a: &x {k: v}\nb: *x\n").unwrap().unwrap();
        assert_eq!(
            node.to_value(),
            Value::Object(
                [
                    (
                        "a".to_string(),
                        Value::Object([("k".to_string(), "v".into())].into_iter().collect())
                    ),
                    (
                        "b".to_string(),
                        Value::Object([("k".to_string(), "v".into())].into_iter().collect())
                    ),
                ]
                .into_iter()
                .collect()
            )
        );
    }

    #[test]
    fn syntax_errors_have_positions() {
        let errs = parse("a: [1, 2\nb: 3\n").unwrap_err();
        assert!(errs[0].message.starts_with("invalid YAML"), "{errs:?}");
        assert!(errs[0].pos.line >= 1);
    }
}
