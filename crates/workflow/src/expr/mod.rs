//! Expressions: `${{ }}` templates and bare `if:` conditions (lexer, parser, evaluator).
//!
//! PLACEHOLDER API (replaced by the real implementation before issue 2 closes):
//! the signatures here are the contract the loader and planner code against.

use crate::value::Value;

/// Which stage rejected an expression.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExprErrorKind {
    /// Bad characters or tokens.
    Lexing,
    /// Tokens in a bad order, unknown named values or functions, wrong arity.
    Parsing,
    /// A runtime problem (e.g. bad JSON in `fromJSON`).
    Evaluation,
}

/// An expression error with the byte offset (0-based) in the source text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ExprError {
    /// Which stage failed.
    pub kind: ExprErrorKind,
    /// GitHub-style message.
    pub message: String,
    /// Byte offset in the source text given to the parser.
    pub offset: usize,
}

/// A parsed expression.
#[derive(Debug, Clone, PartialEq)]
pub struct Expr {
    source: String,
}

/// A parsed template: literal text with `${{ }}` expressions inside.
#[derive(Debug, Clone, PartialEq)]
pub struct TemplateExpr {
    source: String,
}

/// Parses one expression (without `${{ }}`); `named_values` lists the contexts
/// it may name (case-insensitive).
pub fn parse(source: &str, named_values: &[&str]) -> Result<Expr, ExprError> {
    let _ = named_values;
    Ok(Expr {
        source: source.to_owned(),
    })
}

/// Parses a string that may contain `${{ }}` expressions.
pub fn parse_template(source: &str, named_values: &[&str]) -> Result<TemplateExpr, ExprError> {
    let _ = named_values;
    Ok(TemplateExpr {
        source: source.to_owned(),
    })
}

/// Values of the contexts and the job status an expression is evaluated against.
#[derive(Debug, Clone, Default)]
pub struct EvalContext {
    /// Named contexts (`github`, `env`, `matrix`, ...).
    pub contexts: crate::value::Object,
}

/// Evaluates a parsed expression.
pub fn evaluate(expr: &Expr, ctx: &EvalContext) -> Result<Value, ExprError> {
    let _ = ctx;
    Ok(Value::String(expr.source.clone()))
}

impl TemplateExpr {
    /// Evaluates the template: a lone `${{ x }}` gives x's value, anything else a string.
    pub fn evaluate(&self, ctx: &EvalContext) -> Result<Value, ExprError> {
        let _ = ctx;
        Ok(Value::String(self.source.clone()))
    }
}
