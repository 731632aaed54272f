//! Builds the syntax tree, checking names, arity and depth as GitHub does.

use super::functions::Function;
use super::lexer::{located, tokenize, BinaryOp, Token, TokenKind};
use super::{ExprError, ExprErrorKind};
use crate::value::Value;

/// GitHub's limit on the depth of an expression tree.
pub const MAX_DEPTH: usize = 50;
/// Nesting the parser follows before it gives up (protects the stack).
const MAX_RECURSION: usize = MAX_DEPTH + 10;

/// A node of the syntax tree.
#[derive(Debug, Clone, PartialEq)]
pub enum Node {
    /// A literal value.
    Literal(Value),
    /// A named value (context), as written.
    Context(Box<str>),
    /// `x.name`.
    Property(Box<Node>, Box<str>),
    /// `x[i]`.
    Index(Box<Node>, Box<Node>),
    /// `x.*` or `x[*]`.
    Wildcard(Box<Node>),
    /// `!x`.
    Not(Box<Node>),
    /// A comparison.
    Compare(BinaryOp, Box<Node>, Box<Node>),
    /// `a && b && ...` (flattened).
    And(Vec<Node>),
    /// `a || b || ...` (flattened).
    Or(Vec<Node>),
    /// A function call.
    Call(Function, Vec<Node>),
}

impl Node {
    /// Height of the tree (a leaf is 1).
    pub fn height(&self) -> usize {
        1 + match self {
            Node::Literal(_) | Node::Context(_) => 0,
            Node::Property(x, _) | Node::Wildcard(x) | Node::Not(x) => x.height(),
            Node::Index(a, b) | Node::Compare(_, a, b) => a.height().max(b.height()),
            Node::And(xs) | Node::Or(xs) | Node::Call(_, xs) => {
                xs.iter().map(Node::height).max().unwrap_or(0)
            }
        }
    }

    /// Calls `f` on every node of the tree.
    pub fn walk(&self, f: &mut impl FnMut(&Node)) {
        f(self);
        match self {
            Node::Literal(_) | Node::Context(_) => {}
            Node::Property(x, _) | Node::Wildcard(x) | Node::Not(x) => x.walk(f),
            Node::Index(a, b) | Node::Compare(_, a, b) => {
                a.walk(f);
                b.walk(f);
            }
            Node::And(xs) | Node::Or(xs) | Node::Call(_, xs) => xs.iter().for_each(|x| x.walk(f)),
        }
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
}

/// Parses one expression.
pub fn parse(expr: &str, options: ParseOptions<'_>) -> Result<Node, ExprError> {
    let tokens = tokenize(expr)?;
    if tokens.is_empty() {
        return Ok(Node::Literal(Value::Null));
    }
    let mut p = Parser {
        expr,
        tokens,
        pos: 0,
        options,
        recursion: 0,
    };
    let node = p.or()?;
    if let Some(token) = p.tokens.get(p.pos) {
        return Err(p.unexpected(token));
    }
    if node.height() > MAX_DEPTH {
        return Err(depth_error());
    }
    Ok(node)
}

fn depth_error() -> ExprError {
    ExprError {
        kind: ExprErrorKind::Parsing,
        message: format!("Exceeded max expression depth {MAX_DEPTH}"),
        offset: 0,
    }
}

impl<'a> Parser<'a> {
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
    fn next(&mut self) -> Result<usize, ExprError> {
        if self.pos >= self.tokens.len() {
            return Err(self.end_error());
        }
        self.pos += 1;
        Ok(self.pos - 1)
    }

    fn enter(&mut self) -> Result<(), ExprError> {
        self.recursion += 1;
        if self.recursion > MAX_RECURSION {
            return Err(depth_error());
        }
        Ok(())
    }

    fn or(&mut self) -> Result<Node, ExprError> {
        self.enter()?;
        let mut items = vec![self.and()?];
        while self.peek() == Some(&TokenKind::Op(BinaryOp::Or)) {
            self.pos += 1;
            items.push(self.and()?);
        }
        self.recursion -= 1;
        Ok(if items.len() == 1 {
            items.pop().expect("one")
        } else {
            Node::Or(items)
        })
    }

    fn and(&mut self) -> Result<Node, ExprError> {
        let mut items = vec![self.equality()?];
        while self.peek() == Some(&TokenKind::Op(BinaryOp::And)) {
            self.pos += 1;
            items.push(self.equality()?);
        }
        Ok(if items.len() == 1 {
            items.pop().expect("one")
        } else {
            Node::And(items)
        })
    }

    fn equality(&mut self) -> Result<Node, ExprError> {
        let mut left = self.comparison()?;
        while let Some(&TokenKind::Op(op @ (BinaryOp::Eq | BinaryOp::Ne))) = self.peek() {
            self.pos += 1;
            let right = self.comparison()?;
            left = Node::Compare(op, Box::new(left), Box::new(right));
        }
        Ok(left)
    }

    fn comparison(&mut self) -> Result<Node, ExprError> {
        let mut left = self.unary()?;
        while let Some(TokenKind::Op(
            op @ (BinaryOp::Lt | BinaryOp::Le | BinaryOp::Gt | BinaryOp::Ge),
        )) = self.peek().cloned()
        {
            self.pos += 1;
            let right = self.unary()?;
            left = Node::Compare(op, Box::new(left), Box::new(right));
        }
        Ok(left)
    }

    fn unary(&mut self) -> Result<Node, ExprError> {
        if self.peek() == Some(&TokenKind::Not) {
            self.pos += 1;
            self.enter()?;
            let inner = self.unary()?;
            self.recursion -= 1;
            return Ok(Node::Not(Box::new(inner)));
        }
        self.postfix()
    }

    fn postfix(&mut self) -> Result<Node, ExprError> {
        let mut node = self.primary()?;
        let mut chain = 0;
        loop {
            match self.peek() {
                Some(TokenKind::Dot) => {
                    self.pos += 1;
                    let at = self.next()?;
                    node = match &self.tokens[at].kind {
                        TokenKind::Wildcard => Node::Wildcard(Box::new(node)),
                        TokenKind::Word(name) => Node::Property(Box::new(node), (*name).into()),
                        _ => return Err(self.unexpected(&self.tokens[at])),
                    };
                }
                Some(TokenKind::OpenBracket) => {
                    self.pos += 1;
                    if self.peek() == Some(&TokenKind::Wildcard) {
                        self.pos += 1;
                        node = Node::Wildcard(Box::new(node));
                    } else {
                        let index = self.or()?;
                        node = Node::Index(Box::new(node), Box::new(index));
                    }
                    let close = self.next()?;
                    if self.tokens[close].kind != TokenKind::CloseBracket {
                        return Err(self.unexpected(&self.tokens[close]));
                    }
                }
                _ => return Ok(node),
            }
            chain += 1;
            if chain > MAX_DEPTH {
                return Err(depth_error());
            }
        }
    }

    fn primary(&mut self) -> Result<Node, ExprError> {
        let at = self.next()?;
        match &self.tokens[at].kind {
            TokenKind::Number(n) => Ok(Node::Literal(Value::Number(*n))),
            TokenKind::String(s) => Ok(Node::Literal(Value::String(s.to_string()))),
            TokenKind::OpenParen => {
                let inner = self.or()?;
                let close = self.next()?;
                if self.tokens[close].kind != TokenKind::CloseParen {
                    return Err(self.unexpected(&self.tokens[close]));
                }
                Ok(inner)
            }
            &TokenKind::Word(word) => {
                if self.peek() == Some(&TokenKind::OpenParen) {
                    return self.call(at, word);
                }
                Ok(match word {
                    "true" => Node::Literal(Value::Bool(true)),
                    "false" => Node::Literal(Value::Bool(false)),
                    "null" => Node::Literal(Value::Null),
                    "NaN" => Node::Literal(Value::Number(f64::NAN)),
                    "Infinity" => Node::Literal(Value::Number(f64::INFINITY)),
                    _ => {
                        if !self
                            .options
                            .named_values
                            .iter()
                            .any(|n| n.eq_ignore_ascii_case(word))
                        {
                            return Err(self.error(&self.tokens[at], "Unrecognized named-value"));
                        }
                        Node::Context(word.into())
                    }
                })
            }
            _ => Err(self.unexpected(&self.tokens[at])),
        }
    }

    fn call(&mut self, name_at: usize, name: &str) -> Result<Node, ExprError> {
        let function = Function::lookup(name)
            .filter(|f| self.options.status_functions || !f.is_status())
            .ok_or_else(|| self.error(&self.tokens[name_at], "Unrecognized function"))?;
        self.pos += 1;
        let mut args = Vec::new();
        if self.peek() == Some(&TokenKind::CloseParen) {
            self.pos += 1;
        } else {
            loop {
                args.push(self.or()?);
                let at = self.next()?;
                match self.tokens[at].kind {
                    TokenKind::Comma => continue,
                    TokenKind::CloseParen => break,
                    _ => return Err(self.unexpected(&self.tokens[at])),
                }
            }
        }
        let (min, max) = function.arity();
        let name = function.name();
        let name_token = &self.tokens[name_at];
        if args.len() < min {
            return Err(self
                .error(name_token, "Too few parameters supplied")
                .with_name(name));
        }
        if args.len() > max {
            return Err(self
                .error(name_token, "Too many parameters supplied")
                .with_name(name));
        }
        if function == Function::Case && args.len() % 2 == 0 {
            return Err(ExprError {
                kind: ExprErrorKind::Parsing,
                message: format!(
                    "Even number of parameters supplied, requires an odd number of parameters: 'case'. {}",
                    located(self.expr, name_token.offset)
                ),
                offset: name_token.offset,
            });
        }
        Ok(Node::Call(function, args))
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
