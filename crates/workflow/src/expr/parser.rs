//! Builds the syntax tree, checking names, arity and depth as GitHub does.
//!
//! The tree lives in one arena ([`Tree`]): nodes refer to their children by
//! index and to names by byte ranges of the kept source, so a parse costs a few
//! allocations rather than one per node.

use super::functions::Function;
use super::lexer::{located, string_value, tokenize, BinaryOp, Token, TokenKind};
use super::{ExprError, ExprErrorKind};
use crate::value::Value;

/// GitHub's limit on the depth of an expression tree.
pub const MAX_DEPTH: usize = 50;
/// Nesting the parser follows before it gives up (protects the stack).
const MAX_RECURSION: usize = MAX_DEPTH + 10;

/// Index of a node in its [`Tree`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NodeId(u32);

/// The children of an n-ary node: a range of the tree's child lists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Children {
    start: u32,
    len: u32,
}

/// A name: a byte range of the expression source.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span {
    start: u32,
    end: u32,
}

/// A node of the syntax tree.
#[derive(Debug, Clone, PartialEq)]
pub enum Node {
    /// A literal value.
    Literal(Value),
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
}

/// A parsed expression: its nodes, their child lists and the source text.
#[derive(Debug, Clone, PartialEq)]
pub struct Tree {
    source: Box<str>,
    nodes: Vec<Node>,
    lists: Vec<NodeId>,
    root: NodeId,
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

    /// The ids of an n-ary node's children.
    pub fn children(&self, c: Children) -> &[NodeId] {
        &self.lists[c.start as usize..(c.start + c.len) as usize]
    }

    /// The text of a name.
    pub fn name(&self, span: Span) -> &str {
        &self.source[span.start as usize..span.end as usize]
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

struct Parser<'a> {
    expr: &'a str,
    tokens: Vec<Token<'a>>,
    pos: usize,
    options: ParseOptions<'a>,
    recursion: usize,
    nodes: Vec<Node>,
    heights: Vec<u32>,
    lists: Vec<NodeId>,
    scratch: Vec<NodeId>,
}

/// A parser step's result; the error is boxed so that the result fits in two
/// registers on the hot, successful path.
type Parsed<T> = Result<T, Box<ExprError>>;

/// Parses one expression.
pub fn parse(expr: &str, options: ParseOptions<'_>) -> Result<Tree, ExprError> {
    let tokens = tokenize(expr)?;
    let capacity = tokens.len();
    let mut p = Parser {
        expr,
        tokens,
        pos: 0,
        options,
        recursion: 0,
        nodes: Vec::with_capacity(capacity),
        heights: Vec::with_capacity(capacity),
        lists: Vec::new(),
        scratch: Vec::new(),
    };
    let root = if p.tokens.is_empty() {
        p.push(Node::Literal(Value::Null))
    } else {
        let root = p.or().map_err(|e| *e)?;
        if let Some(token) = p.tokens.get(p.pos) {
            return Err(p.unexpected(token));
        }
        root
    };
    if p.heights[root.0 as usize] as usize > MAX_DEPTH {
        return Err(depth_error());
    }
    Ok(Tree {
        source: expr.into(),
        nodes: p.nodes,
        lists: p.lists,
        root,
    })
}

fn depth_error() -> ExprError {
    ExprError {
        kind: ExprErrorKind::Parsing,
        message: format!("Exceeded max expression depth {MAX_DEPTH}"),
        offset: 0,
    }
}

impl<'a> Parser<'a> {
    fn height(&self, id: NodeId) -> u32 {
        self.heights[id.0 as usize]
    }

    /// Adds a node whose children are already in the arena.
    fn push(&mut self, node: Node) -> NodeId {
        let below = match &node {
            Node::Literal(_) | Node::Context(_) => 0,
            Node::Property(x, _) | Node::Wildcard(x) | Node::Not(x) => self.height(*x),
            Node::Index(a, b) | Node::Compare(_, a, b) => self.height(*a).max(self.height(*b)),
            Node::And(c) | Node::Or(c) | Node::Call(_, c) => {
                let (start, len) = (c.start as usize, c.len as usize);
                self.lists[start..start + len]
                    .iter()
                    .map(|id| self.heights[id.0 as usize])
                    .max()
                    .unwrap_or(0)
            }
        };
        let id = NodeId(self.nodes.len() as u32);
        self.nodes.push(node);
        self.heights.push(below + 1);
        id
    }

    /// Moves the ids pushed on the scratch stack since `mark` into the child lists.
    fn children_since(&mut self, mark: usize) -> Children {
        let start = self.lists.len() as u32;
        self.lists.extend(self.scratch.drain(mark..));
        Children {
            start,
            len: self.lists.len() as u32 - start,
        }
    }

    fn span(token: &Token) -> Span {
        Span {
            start: token.offset as u32,
            end: (token.offset + token.raw.len()) as u32,
        }
    }

    fn error(&self, token: &Token, what: &str) -> ExprError {
        ExprError {
            kind: ExprErrorKind::Parsing,
            message: format!(
                "{what}: '{}'. {}",
                token.raw,
                located(self.expr, token.offset)
            ),
            offset: token.offset,
        }
    }

    fn unexpected(&self, token: &Token) -> ExprError {
        self.error(token, "Unexpected symbol")
    }

    fn end_error(&self) -> ExprError {
        let last = self.tokens.last().expect("at least one token");
        self.error(last, "Unexpected end of expression")
    }

    fn peek(&self) -> Option<&TokenKind<'a>> {
        self.tokens.get(self.pos).map(|t| &t.kind)
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

    fn or(&mut self) -> Parsed<NodeId> {
        self.enter()?;
        let first = self.and()?;
        let result = if self.peek() == Some(&TokenKind::Op(BinaryOp::Or)) {
            let mark = self.scratch.len();
            self.scratch.push(first);
            while self.peek() == Some(&TokenKind::Op(BinaryOp::Or)) {
                self.pos += 1;
                let next = self.and()?;
                self.scratch.push(next);
            }
            let children = self.children_since(mark);
            self.push(Node::Or(children))
        } else {
            first
        };
        self.recursion -= 1;
        Ok(result)
    }

    fn and(&mut self) -> Parsed<NodeId> {
        let first = self.equality()?;
        if self.peek() != Some(&TokenKind::Op(BinaryOp::And)) {
            return Ok(first);
        }
        let mark = self.scratch.len();
        self.scratch.push(first);
        while self.peek() == Some(&TokenKind::Op(BinaryOp::And)) {
            self.pos += 1;
            let next = self.equality()?;
            self.scratch.push(next);
        }
        let children = self.children_since(mark);
        Ok(self.push(Node::And(children)))
    }

    fn equality(&mut self) -> Parsed<NodeId> {
        let mut left = self.comparison()?;
        while let Some(&TokenKind::Op(op @ (BinaryOp::Eq | BinaryOp::Ne))) = self.peek() {
            self.pos += 1;
            let right = self.comparison()?;
            left = self.push(Node::Compare(op, left, right));
        }
        Ok(left)
    }

    fn comparison(&mut self) -> Parsed<NodeId> {
        let mut left = self.unary()?;
        while let Some(&TokenKind::Op(
            op @ (BinaryOp::Lt | BinaryOp::Le | BinaryOp::Gt | BinaryOp::Ge),
        )) = self.peek()
        {
            self.pos += 1;
            let right = self.unary()?;
            left = self.push(Node::Compare(op, left, right));
        }
        Ok(left)
    }

    fn unary(&mut self) -> Parsed<NodeId> {
        if self.peek() == Some(&TokenKind::Not) {
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
                Some(TokenKind::Dot) => {
                    self.pos += 1;
                    let at = self.next()?;
                    node = match &self.tokens[at].kind {
                        TokenKind::Wildcard => self.push(Node::Wildcard(node)),
                        TokenKind::Word(_) => {
                            let span = Self::span(&self.tokens[at]);
                            self.push(Node::Property(node, span))
                        }
                        _ => return Err(self.unexpected(&self.tokens[at]).into()),
                    };
                }
                Some(TokenKind::OpenBracket) => {
                    self.pos += 1;
                    if self.peek() == Some(&TokenKind::Wildcard) {
                        self.pos += 1;
                        node = self.push(Node::Wildcard(node));
                    } else {
                        let index = self.or()?;
                        node = self.push(Node::Index(node, index));
                    }
                    let close = self.next()?;
                    if self.tokens[close].kind != TokenKind::CloseBracket {
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
        let literal = match &self.tokens[at].kind {
            TokenKind::Number(n) => Value::Number(*n),
            TokenKind::String(escaped) => {
                Value::String(string_value(self.tokens[at].raw, *escaped))
            }
            TokenKind::OpenParen => {
                let inner = self.or()?;
                let close = self.next()?;
                if self.tokens[close].kind != TokenKind::CloseParen {
                    return Err(self.unexpected(&self.tokens[close]).into());
                }
                return Ok(inner);
            }
            &TokenKind::Word(word) => {
                if self.peek() == Some(&TokenKind::OpenParen) {
                    return self.call(at, word);
                }
                match word {
                    "true" => Value::Bool(true),
                    "false" => Value::Bool(false),
                    "null" => Value::Null,
                    "NaN" => Value::Number(f64::NAN),
                    "Infinity" => Value::Number(f64::INFINITY),
                    _ => {
                        let known = self
                            .options
                            .named_values
                            .iter()
                            .any(|n| n.eq_ignore_ascii_case(word));
                        if !known {
                            return Err(self
                                .error(&self.tokens[at], "Unrecognized named-value")
                                .into());
                        }
                        let span = Self::span(&self.tokens[at]);
                        return Ok(self.push(Node::Context(span)));
                    }
                }
            }
            _ => return Err(self.unexpected(&self.tokens[at]).into()),
        };
        Ok(self.push(Node::Literal(literal)))
    }

    fn call(&mut self, name_at: usize, name: &str) -> Parsed<NodeId> {
        let function = Function::lookup(name)
            .filter(|f| self.options.status_functions || !f.is_status())
            .ok_or_else(|| self.error(&self.tokens[name_at], "Unrecognized function"))?;
        self.pos += 1;
        let mark = self.scratch.len();
        if self.peek() == Some(&TokenKind::CloseParen) {
            self.pos += 1;
        } else {
            loop {
                let arg = self.or()?;
                self.scratch.push(arg);
                let at = self.next()?;
                match self.tokens[at].kind {
                    TokenKind::Comma => continue,
                    TokenKind::CloseParen => break,
                    _ => return Err(self.unexpected(&self.tokens[at]).into()),
                }
            }
        }
        let count = self.scratch.len() - mark;
        let (min, max) = function.arity();
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
                    located(self.expr, name_token.offset)
                ),
                offset: name_token.offset,
            }));
        }
        let children = self.children_since(mark);
        Ok(self.push(Node::Call(function, children)))
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
