//! Builds the syntax tree, checking names, arity and depth as GitHub does.
//!
//! The tree is one array of 16-byte nodes ([`Tree`]): nodes refer to their
//! children by index, to names and string literals by byte ranges of the kept
//! text, and n-ary nodes to a run of [`Node::Item`] entries, so a parse makes
//! two allocations (the text and the nodes). The tokens and the parser's work
//! stack live in per-thread buffers that are reused from one parse to the next.

use std::cell::Cell;

use super::functions::Function;
use super::lexer::{located, tokenize, BinaryOp, Kind, Token};
use super::{ExprError, ExprErrorKind};
use crate::value::same_exact;

/// GitHub's limit on the depth of an expression tree.
pub const MAX_DEPTH: usize = 50;
/// Longest expression GitHub parses, in UTF-16 units.
pub const MAX_LENGTH: usize = 21_000;
/// Nesting the parser follows before it gives up (protects the stack).
const MAX_RECURSION: usize = MAX_DEPTH + 10;
/// Per-thread buffers larger than this (in elements) are freed after a parse.
const SCRATCH_KEEP: usize = 1 << 14;

/// Index of a node in its [`Tree`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NodeId(u32);

/// The children of an n-ary node: a run of [`Node::Item`] entries of the tree.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Children {
    start: u32,
    len: u32,
}

/// A name or string literal: a byte range of the tree's text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span {
    start: u32,
    end: u32,
}

/// A node of the syntax tree.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Node {
    /// `null` (also the value of an empty expression).
    Null,
    /// `true` or `false`.
    Bool(bool),
    /// A number literal (also `NaN` and `Infinity`).
    Number(f64),
    /// A string literal, unescaped.
    String(Span),
    /// A named value (context), as written.
    Context(Span),
    /// `x.name`.
    Property(NodeId, Span),
    /// `x[i]`.
    Index(NodeId, NodeId),
    /// `x.*` or `x[*]`.
    Wildcard(NodeId),
    /// `!x`.
    Not(NodeId),
    /// A comparison.
    Compare(BinaryOp, NodeId, NodeId),
    /// `a && b && ...` (flattened).
    And(Children),
    /// `a || b || ...` (flattened).
    Or(Children),
    /// A function call.
    Call(Function, Children),
    /// One entry of an n-ary node's child list (not an expression itself).
    Item(NodeId),
}

/// A parsed expression: its nodes and the text its spans point into (the
/// source, followed by the unescaped text of string literals with `''`).
#[derive(Debug, Clone, PartialEq)]
pub struct Tree {
    text: Box<str>,
    nodes: Vec<Node>,
    root: NodeId,
}

/// The child list of an n-ary node.
#[derive(Debug, Clone, Copy)]
pub struct Args<'t> {
    items: &'t [Node],
}

impl<'t> Args<'t> {
    /// Number of children.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// The `i`th child.
    pub fn get(&self, i: usize) -> NodeId {
        match self.items[i] {
            Node::Item(id) => id,
            _ => unreachable!("child lists hold only items"),
        }
    }

    /// The children in order.
    pub fn iter(&self) -> impl Iterator<Item = NodeId> + 't {
        let items = self.items;
        (0..items.len()).map(move |i| Args { items }.get(i))
    }
}

impl Tree {
    /// The root node.
    pub fn root(&self) -> NodeId {
        self.root
    }

    /// The node with id `id`.
    pub fn node(&self, id: NodeId) -> &Node {
        &self.nodes[id.0 as usize]
    }

    /// The children of an n-ary node.
    pub fn children(&self, c: Children) -> Args<'_> {
        Args {
            items: &self.nodes[c.start as usize..(c.start + c.len) as usize],
        }
    }

    /// The text of a name or string literal.
    pub fn name(&self, span: Span) -> &str {
        &self.text[span.start as usize..span.end as usize]
    }

    /// Every node of the tree, in no particular order.
    pub fn nodes(&self) -> &[Node] {
        &self.nodes
    }
}

/// What the parser accepts besides the grammar.
#[derive(Debug, Clone, Copy)]
pub struct ParseOptions<'a> {
    /// Context names that may be used (case-insensitive).
    pub named_values: &'a [&'a str],
    /// Whether `success()`, `failure()`, `always()` and `cancelled()` may be used.
    pub status_functions: bool,
}

/// Buffers a parse needs only while it runs.
#[derive(Default)]
struct Scratch {
    tokens: Vec<Token>,
    stack: Vec<NodeId>,
}

thread_local! {
    static SCRATCH: Cell<Scratch> = const {
        Cell::new(Scratch {
            tokens: Vec::new(),
            stack: Vec::new(),
        })
    };
}

struct Parser<'a> {
    expr: &'a str,
    tokens: &'a [Token],
    pos: usize,
    options: ParseOptions<'a>,
    recursion: usize,
    nodes: Vec<Node>,
    stack: &'a mut Vec<NodeId>,
    /// The source followed by unescaped string literals, once one needs it.
    text: Option<String>,
}

/// A parser step's result; the error is boxed so that the result fits in two
/// registers on the hot, successful path.
type Parsed<T> = Result<T, Box<ExprError>>;

/// Parses one expression.
pub fn parse(expr: &str, options: ParseOptions<'_>) -> Result<Tree, ExprError> {
    // GitHub counts UTF-16 units; a text of fewer bytes has no more units.
    if expr.len() > MAX_LENGTH && expr.encode_utf16().count() > MAX_LENGTH {
        return Err(ExprError {
            kind: ExprErrorKind::Parsing,
            message: format!("Exceeded max expression length {MAX_LENGTH}"),
            offset: 0,
        });
    }
    // The buffers are taken out for the parse and put back after it (a parse
    // that somehow ran meanwhile would find empty ones and allocate).
    let mut scratch = SCRATCH.take();
    let tree = parse_with(expr, options, &mut scratch);
    if scratch.tokens.capacity() <= SCRATCH_KEEP && scratch.stack.capacity() <= SCRATCH_KEEP {
        SCRATCH.set(scratch);
    }
    tree
}

fn parse_with(
    expr: &str,
    options: ParseOptions<'_>,
    scratch: &mut Scratch,
) -> Result<Tree, ExprError> {
    tokenize(expr, &mut scratch.tokens)?;
    scratch.stack.clear();
    let tokens = &scratch.tokens;
    let mut p = Parser {
        expr,
        tokens,
        pos: 0,
        options,
        recursion: 0,
        // Every node but an item takes a token of its own, and every node is
        // an item at most once.
        nodes: Vec::with_capacity(2 * tokens.len() + 1),
        stack: &mut scratch.stack,
        text: None,
    };
    let root = if p.tokens.is_empty() {
        p.push(Node::Null)
    } else {
        let root = p.or().map_err(|e| *e)?;
        if let Some(token) = p.tokens.get(p.pos) {
            return Err(p.unexpected(token));
        }
        root
    };
    // A tree is never higher than it has nodes.
    if p.nodes.len() > MAX_DEPTH && height(&p.nodes, root) > MAX_DEPTH {
        return Err(depth_error());
    }
    Ok(Tree {
        text: match p.text {
            Some(text) => text.into_boxed_str(),
            None => expr.into(),
        },
        nodes: p.nodes,
        root,
    })
}

/// The height of the subtree at `root`; children come before their parents.
fn height(nodes: &[Node], root: NodeId) -> usize {
    let mut heights = vec![0u32; nodes.len()];
    for (i, node) in nodes.iter().enumerate() {
        let h = |id: &NodeId| heights[id.0 as usize];
        let height = match node {
            Node::Null | Node::Bool(_) | Node::Number(_) | Node::String(_) | Node::Context(_) => 1,
            Node::Property(x, _) | Node::Wildcard(x) | Node::Not(x) => h(x) + 1,
            Node::Index(a, b) | Node::Compare(_, a, b) => h(a).max(h(b)) + 1,
            Node::And(c) | Node::Or(c) | Node::Call(_, c) => {
                let (start, len) = (c.start as usize, c.len as usize);
                heights[start..start + len]
                    .iter()
                    .max()
                    .copied()
                    .unwrap_or(0)
                    + 1
            }
            Node::Item(x) => h(x),
        };
        heights[i] = height;
    }
    heights[root.0 as usize] as usize
}

/// How tightly a binary operator binds: `||` least, then `&&`, then `==` and
/// `!=`, then the orderings.
fn precedence(op: BinaryOp) -> u8 {
    match op {
        BinaryOp::Or => 1,
        BinaryOp::And => 2,
        BinaryOp::Eq | BinaryOp::Ne => 3,
        BinaryOp::Lt | BinaryOp::Le | BinaryOp::Gt | BinaryOp::Ge => 4,
    }
}

#[cold]
fn depth_error() -> ExprError {
    ExprError {
        kind: ExprErrorKind::Parsing,
        message: format!("Exceeded max expression depth {MAX_DEPTH}"),
        offset: 0,
    }
}

impl<'a> Parser<'a> {
    /// Adds a node whose children are already in the arena.
    fn push(&mut self, node: Node) -> NodeId {
        let id = NodeId(self.nodes.len() as u32);
        self.nodes.push(node);
        id
    }

    /// Moves the ids pushed on the work stack since `mark` into a child list.
    fn children_since(&mut self, mark: usize) -> Children {
        let start = self.nodes.len() as u32;
        self.nodes.extend(self.stack.drain(mark..).map(Node::Item));
        Children {
            start,
            len: self.nodes.len() as u32 - start,
        }
    }

    fn span(token: &Token) -> Span {
        Span {
            start: token.start,
            end: token.end,
        }
    }

    /// The span of an escaped string literal's value, appended to the text.
    fn unescape(&mut self, token: &Token) -> Span {
        let expr = self.expr;
        let text = self.text.get_or_insert_with(|| {
            let mut text = String::with_capacity(2 * expr.len());
            text.push_str(expr);
            text
        });
        let start = text.len();
        let body = &token.raw(expr)[1..(token.end - token.start) as usize - 1];
        let mut rest = body;
        while let Some(at) = rest.find("''") {
            text.push_str(&rest[..=at]);
            rest = &rest[at + 2..];
        }
        text.push_str(rest);
        Span {
            start: start as u32,
            end: text.len() as u32,
        }
    }

    #[cold]
    fn error(&self, token: &Token, what: &str) -> ExprError {
        ExprError {
            kind: ExprErrorKind::Parsing,
            message: format!(
                "{what}: '{}'. {}",
                token.raw(self.expr),
                located(self.expr, token.start as usize)
            ),
            offset: token.start as usize,
        }
    }

    #[cold]
    fn unexpected(&self, token: &Token) -> ExprError {
        self.error(token, "Unexpected symbol")
    }

    #[cold]
    fn end_error(&self) -> ExprError {
        let last = self.tokens.last().expect("at least one token");
        self.error(last, "Unexpected end of expression")
    }

    fn peek(&self) -> Option<Kind> {
        self.tokens.get(self.pos).map(|t| t.kind)
    }

    /// Moves past the next token and returns its index.
    fn next(&mut self) -> Parsed<usize> {
        if self.pos >= self.tokens.len() {
            return Err(self.end_error().into());
        }
        self.pos += 1;
        Ok(self.pos - 1)
    }

    fn enter(&mut self) -> Parsed<()> {
        self.recursion += 1;
        if self.recursion > MAX_RECURSION {
            return Err(depth_error().into());
        }
        Ok(())
    }

    /// A whole (sub)expression: operands joined by any binary operators.
    fn or(&mut self) -> Parsed<NodeId> {
        self.enter()?;
        let result = self.binary(1)?;
        self.recursion -= 1;
        Ok(result)
    }

    /// Operands joined by operators that bind at least as tightly as `min`
    /// (see [`precedence`]); `&&` and `||` chains become one n-ary node,
    /// comparisons associate to the left.
    fn binary(&mut self, min: u8) -> Parsed<NodeId> {
        let first = self.unary()?;
        self.binary_from(first, min)
    }

    /// [`Parser::binary`] whose first operand, `left`, is already parsed.
    fn binary_from(&mut self, mut left: NodeId, min: u8) -> Parsed<NodeId> {
        while let Some(Kind::Op(op)) = self.peek() {
            let level = precedence(op);
            if level < min {
                break;
            }
            self.pos += 1;
            left = match op {
                BinaryOp::And | BinaryOp::Or => {
                    let mark = self.stack.len();
                    self.stack.push(left);
                    loop {
                        let next = self.operand(level + 1)?;
                        self.stack.push(next);
                        if self.peek() != Some(Kind::Op(op)) {
                            break;
                        }
                        self.pos += 1;
                    }
                    let children = self.children_since(mark);
                    self.push(if op == BinaryOp::And {
                        Node::And(children)
                    } else {
                        Node::Or(children)
                    })
                }
                _ => {
                    let right = self.operand(level + 1)?;
                    self.push(Node::Compare(op, left, right))
                }
            };
        }
        Ok(left)
    }

    /// The right-hand side of an operator: [`Parser::binary`] at level `min`,
    /// without the extra call when no operator that tight follows the first
    /// operand (the usual case).
    #[inline(always)]
    fn operand(&mut self, min: u8) -> Parsed<NodeId> {
        let first = self.unary()?;
        match self.peek() {
            Some(Kind::Op(op)) if precedence(op) >= min => self.binary_from(first, min),
            _ => Ok(first),
        }
    }

    fn unary(&mut self) -> Parsed<NodeId> {
        if self.peek() == Some(Kind::Not) {
            self.pos += 1;
            self.enter()?;
            let inner = self.unary()?;
            self.recursion -= 1;
            return Ok(self.push(Node::Not(inner)));
        }
        self.postfix()
    }

    fn postfix(&mut self) -> Parsed<NodeId> {
        let mut node = self.primary()?;
        let mut chain = 0;
        loop {
            match self.peek() {
                Some(Kind::Member) => {
                    let token = self.tokens[self.pos];
                    self.pos += 1;
                    node = self.push(Node::Property(node, Self::span(&token)));
                }
                Some(Kind::Dot) => {
                    self.pos += 1;
                    let at = self.next()?;
                    let token = self.tokens[at];
                    node = match token.kind {
                        Kind::Wildcard => self.push(Node::Wildcard(node)),
                        Kind::Word => self.push(Node::Property(node, Self::span(&token))),
                        _ => return Err(self.unexpected(&token).into()),
                    };
                }
                Some(Kind::OpenBracket) => {
                    self.pos += 1;
                    if self.peek() == Some(Kind::Wildcard) {
                        self.pos += 1;
                        node = self.push(Node::Wildcard(node));
                    } else {
                        let index = self.or()?;
                        node = self.push(Node::Index(node, index));
                    }
                    let close = self.next()?;
                    if self.tokens[close].kind != Kind::CloseBracket {
                        return Err(self.unexpected(&self.tokens[close]).into());
                    }
                }
                _ => return Ok(node),
            }
            chain += 1;
            if chain > MAX_DEPTH {
                return Err(depth_error().into());
            }
        }
    }

    fn primary(&mut self) -> Parsed<NodeId> {
        let at = self.next()?;
        let token = self.tokens[at];
        let node = match token.kind {
            Kind::Number => Node::Number(token.number),
            Kind::String => Node::String(Span {
                start: token.start + 1,
                end: token.end - 1,
            }),
            Kind::EscapedString => Node::String(self.unescape(&token)),
            Kind::OpenParen => {
                let inner = self.or()?;
                let close = self.next()?;
                if self.tokens[close].kind != Kind::CloseParen {
                    return Err(self.unexpected(&self.tokens[close]).into());
                }
                return Ok(inner);
            }
            Kind::Word => {
                let word = token.raw(self.expr);
                if self.peek() == Some(Kind::OpenParen) {
                    return self.call(at, word);
                }
                match word {
                    "true" => Node::Bool(true),
                    "false" => Node::Bool(false),
                    "null" => Node::Null,
                    "NaN" => Node::Number(f64::NAN),
                    "Infinity" => Node::Number(f64::INFINITY),
                    _ => {
                        // Names are usually written as listed: try that first.
                        let names = self.options.named_values;
                        let known = names.iter().any(|n| same_exact(n, word))
                            || names.iter().any(|n| n.eq_ignore_ascii_case(word));
                        if !known {
                            return Err(self.error(&token, "Unrecognized named-value").into());
                        }
                        Node::Context(Self::span(&token))
                    }
                }
            }
            _ => return Err(self.unexpected(&token).into()),
        };
        Ok(self.push(node))
    }

    fn call(&mut self, name_at: usize, name: &str) -> Parsed<NodeId> {
        let function = Function::lookup(name)
            .filter(|f| self.options.status_functions || !f.is_status())
            .ok_or_else(|| self.error(&self.tokens[name_at], "Unrecognized function"))?;
        self.pos += 1;
        let mark = self.stack.len();
        self.arguments()?;
        self.check_arity(function, self.stack.len() - mark, name_at)?;
        let children = self.children_since(mark);
        Ok(self.push(Node::Call(function, children)))
    }

    /// Parses a call's arguments up to its `)` onto the stack.
    fn arguments(&mut self) -> Parsed<()> {
        if self.peek() == Some(Kind::CloseParen) {
            self.pos += 1;
            return Ok(());
        }
        loop {
            let arg = self.or()?;
            self.stack.push(arg);
            let at = self.next()?;
            match self.tokens[at].kind {
                Kind::Comma => continue,
                Kind::CloseParen => return Ok(()),
                _ => return Err(self.unexpected(&self.tokens[at]).into()),
            }
        }
    }

    /// Checks that `function` takes `count` arguments.
    fn check_arity(&self, function: Function, count: usize, name_at: usize) -> Parsed<()> {
        let (min, mut max) = function.arity();
        if matches!(function, Function::Success | Function::Failure)
            && self
                .options
                .named_values
                .contains(&super::JOB_STATUS_ARGUMENTS)
        {
            max = usize::MAX;
        }
        let name_token = &self.tokens[name_at];
        if count < min {
            return Err(self
                .error(name_token, "Too few parameters supplied")
                .with_name(function.name())
                .into());
        }
        if count > max {
            return Err(self
                .error(name_token, "Too many parameters supplied")
                .with_name(function.name())
                .into());
        }
        if function == Function::Case && count % 2 == 0 {
            return Err(Box::new(ExprError {
                kind: ExprErrorKind::Parsing,
                message: format!(
                    "Even number of parameters supplied, requires an odd number of parameters: 'case'. {}",
                    located(self.expr, name_token.start as usize)
                ),
                offset: name_token.start as usize,
            }));
        }
        Ok(())
    }
}

impl ExprError {
    fn with_name(mut self, name: &str) -> Self {
        if let Some(start) = self.message.find(": '") {
            if let Some(end) = self.message[start + 3..].find('\'') {
                self.message.replace_range(start + 3..start + 3 + end, name);
            }
        }
        self
    }
}
