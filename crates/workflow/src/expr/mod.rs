//! Expressions: `${{ }}` templates and bare `if:` conditions.
//!
//! The lexer, parser and evaluator follow GitHub's own implementation: the
//! same operator precedence, loose-equality coercion, case-insensitive names,
//! error messages, depth limit (50) and memory limit. The conformance suite in
//! `tests/conformance.rs` checks them against GitHub's own test cases.

pub mod contexts;
mod eval;
mod functions;
mod lexer;
mod parser;

use std::fmt;
use std::sync::Arc;

pub use eval::{to_number, to_string, truthy, write_json, MAX_MEMORY};
pub use functions::Function;
pub use lexer::is_identifier;
pub use parser::MAX_DEPTH;

use crate::value::{Object, Value};
use parser::{Node, ParseOptions, Tree};

/// Every context GitHub defines.
pub const ALL_CONTEXTS: &[&str] = &[
    "github", "env", "vars", "job", "jobs", "steps", "runner", "secrets", "strategy", "matrix",
    "needs", "inputs",
];

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
    tree: Tree,
}

/// True for a mapping key `${{ insert }}`, which merges the mapping its
/// value evaluates to into the enclosing one.
pub fn is_insert_directive(key: &str) -> bool {
    key.strip_prefix("${{")
        .and_then(|k| k.strip_suffix("}}"))
        .is_some_and(|inner| inner.trim() == "insert")
}

/// Listed among the named values of a job's `if:`: there `success(...)` and
/// `failure(...)` may name the needed jobs they look at, as GitHub allows.
pub const JOB_STATUS_ARGUMENTS: &str = "<success and failure take job ids>";

/// Computes `hashFiles(patterns)` for the evaluator (this crate does no I/O);
/// its error's text becomes the evaluation error's.
pub type HashFiles = Arc<dyn Fn(&[String]) -> Result<String, HashFilesError> + Send + Sync>;

/// Why the host could not hash the files `hashFiles` names.
pub type HashFilesError = Box<dyn std::error::Error + Send + Sync>;

/// The status the status functions (`success()`, `failure()`, ...) report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum JobStatus {
    /// Everything so far succeeded.
    #[default]
    Success,
    /// A step (or a needed job) failed.
    Failure,
    /// The run was cancelled.
    Cancelled,
}

/// Values of the contexts and the job status an expression is evaluated against.
#[derive(Clone, Default)]
pub struct EvalContext {
    /// Named contexts (`github`, `env`, `matrix`, ...), looked up ignoring case.
    pub contexts: Object,
    /// What the status functions report.
    pub status: JobStatus,
    /// The host's `hashFiles` implementation, when a workspace exists.
    pub hash_files: Option<HashFiles>,
}

impl fmt::Debug for EvalContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EvalContext")
            .field("contexts", &self.contexts)
            .field("status", &self.status)
            .field("hash_files", &self.hash_files.is_some())
            .finish()
    }
}

impl Expr {
    /// True when the expression names context `name` (ignoring case).
    pub fn references(&self, name: &str) -> bool {
        references(&self.tree, name)
    }
}

fn references(tree: &Tree, name: &str) -> bool {
    tree.nodes()
        .iter()
        .any(|n| matches!(n, Node::Context(c) if tree.name(*c).eq_ignore_ascii_case(name)))
}

fn uses_status_function(tree: &Tree) -> bool {
    tree.nodes()
        .iter()
        .any(|n| matches!(n, Node::Call(f, _) if f.is_status()))
}

/// Parses one expression (without `${{ }}`); `named_values` lists the contexts
/// it may name (case-insensitive). Status functions are not allowed.
pub fn parse(source: &str, named_values: &[&str]) -> Result<Expr, ExprError> {
    let options = ParseOptions {
        named_values,
        status_functions: false,
    };
    parser::parse(source, options).map(|tree| Expr { tree })
}

/// Evaluates a parsed expression.
pub fn evaluate(expr: &Expr, ctx: &EvalContext) -> Result<Value, ExprError> {
    eval::Evaluator::new(ctx, &expr.tree).run()
}

/// Evaluates templates in every string leaf of a value tree (matrices, `with:`).
pub fn evaluate_value(value: &Value, ctx: &EvalContext) -> Result<Value, ExprError> {
    eval::evaluate_value(value, ctx)
}

/// Evaluates a `strategy.matrix`: as [`evaluate_value`], and a list item that
/// is one expression giving an array adds that array's items to the list.
pub fn evaluate_matrix(value: &Value, ctx: &EvalContext) -> Result<Value, ExprError> {
    eval::evaluate_matrix(value, ctx)
}

#[derive(Debug, Clone, PartialEq)]
enum Segment {
    Text(String),
    Expr(Tree),
}

/// A parsed template: literal text with `${{ }}` expressions inside.
#[derive(Debug, Clone, PartialEq)]
pub struct TemplateExpr {
    segments: Vec<Segment>,
}

/// Parses a string that may contain `${{ }}` expressions.
pub fn parse_template(source: &str, named_values: &[&str]) -> Result<TemplateExpr, ExprError> {
    parse_template_with(source, named_values, false)
}

fn parse_template_with(
    source: &str,
    named_values: &[&str],
    status_functions: bool,
) -> Result<TemplateExpr, ExprError> {
    let options = ParseOptions {
        named_values,
        status_functions,
    };
    let mut segments = Vec::new();
    let mut rest = 0;
    while let Some(found) = source[rest..].find("${{") {
        let open = rest + found;
        if open > rest {
            segments.push(Segment::Text(source[rest..open].to_owned()));
        }
        let inner_start = open + 3;
        let close = find_close(source, inner_start).ok_or_else(|| ExprError {
            kind: ExprErrorKind::Parsing,
            message: "The expression is not closed. An unescaped ${{ sequence was found, but the closing }} sequence was not found.".into(),
            offset: open,
        })?;
        let inner = &source[inner_start..close];
        if inner.trim().is_empty() {
            return Err(ExprError {
                kind: ExprErrorKind::Parsing,
                message: "An expression was expected".into(),
                offset: open,
            });
        }
        let node = parser::parse(inner, options).map_err(|e| ExprError {
            offset: e.offset + inner_start,
            ..e
        })?;
        segments.push(Segment::Expr(node));
        rest = close + 2;
    }
    if rest < source.len() || segments.is_empty() {
        segments.push(Segment::Text(source[rest..].to_owned()));
    }
    Ok(TemplateExpr { segments })
}

/// Finds the `}}` that closes an expression starting at `from`, skipping string literals.
fn find_close(source: &str, from: usize) -> Option<usize> {
    let bytes = source.as_bytes();
    let mut i = from;
    let mut in_string = false;
    while i < bytes.len() {
        match bytes[i] {
            b'\'' if in_string && bytes.get(i + 1) == Some(&b'\'') => i += 1,
            b'\'' => in_string = !in_string,
            b'}' if !in_string && bytes.get(i + 1) == Some(&b'}') => return Some(i),
            _ => {}
        }
        i += 1;
    }
    None
}

impl TemplateExpr {
    /// Evaluates the template: a lone `${{ x }}` gives x's value, anything else a string.
    pub fn evaluate(&self, ctx: &EvalContext) -> Result<Value, ExprError> {
        if let [Segment::Expr(tree)] = self.segments.as_slice() {
            return eval::Evaluator::new(ctx, tree).run();
        }
        let mut out = String::new();
        for segment in &self.segments {
            match segment {
                Segment::Text(t) => out.push_str(t),
                Segment::Expr(tree) => {
                    out.push_str(&to_string(&eval::Evaluator::new(ctx, tree).run()?))
                }
            }
        }
        Ok(Value::String(out))
    }

    /// Evaluates the template to a string.
    pub fn evaluate_string(&self, ctx: &EvalContext) -> Result<String, ExprError> {
        self.evaluate(ctx).map(|v| to_string(&v).into_owned())
    }

    /// True when the template has no `${{ }}` at all.
    pub fn is_literal(&self) -> bool {
        self.segments.iter().all(|s| matches!(s, Segment::Text(_)))
    }

    /// True when an expression of the template names context `name` (ignoring case).
    pub fn references(&self, name: &str) -> bool {
        self.segments
            .iter()
            .any(|s| matches!(s, Segment::Expr(n) if references(n, name)))
    }
}

/// A parsed `if:` condition.
#[derive(Debug, Clone, PartialEq)]
pub struct Condition {
    template: TemplateExpr,
    has_status_function: bool,
}

/// Parses an `if:` condition, written bare or wrapped in `${{ }}`. Without a
/// status function it means `success() && (condition)`, as on GitHub.
pub fn parse_condition(source: &str, named_values: &[&str]) -> Result<Condition, ExprError> {
    let trimmed_start = source.len() - source.trim_start().len();
    let trimmed = source.trim();
    let template = if trimmed.contains("${{") {
        parse_template_with(source, named_values, true)?
    } else {
        let options = ParseOptions {
            named_values,
            status_functions: true,
        };
        let node = parser::parse(trimmed, options).map_err(|e| ExprError {
            offset: e.offset + trimmed_start,
            ..e
        })?;
        TemplateExpr {
            segments: vec![Segment::Expr(node)],
        }
    };
    let template = match template.segments.as_slice() {
        [Segment::Text(a), Segment::Expr(_), Segment::Text(b)]
            if a.trim().is_empty() && b.trim().is_empty() =>
        {
            TemplateExpr {
                segments: vec![template.segments[1].clone()],
            }
        }
        [Segment::Text(a), Segment::Expr(_)] if a.trim().is_empty() => TemplateExpr {
            segments: vec![template.segments[1].clone()],
        },
        [Segment::Expr(_), Segment::Text(b)] if b.trim().is_empty() => TemplateExpr {
            segments: vec![template.segments[0].clone()],
        },
        _ => template,
    };
    let has_status_function = template
        .segments
        .iter()
        .any(|s| matches!(s, Segment::Expr(n) if uses_status_function(n)));
    Ok(Condition {
        template,
        has_status_function,
    })
}

impl Condition {
    /// Evaluates the condition to a boolean.
    pub fn evaluate(&self, ctx: &EvalContext) -> Result<bool, ExprError> {
        if !self.has_status_function && ctx.status != JobStatus::Success {
            return Ok(false);
        }
        self.template.evaluate(ctx).map(|v| truthy(&v))
    }

    /// True when the condition calls `success()`, `failure()`, `always()` or `cancelled()`.
    pub fn has_status_function(&self) -> bool {
        self.has_status_function
    }

    /// True when an expression of the condition names context `name`.
    pub fn references(&self, name: &str) -> bool {
        self.template.references(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx(json: serde_json::Value) -> EvalContext {
        let Value::Object(contexts) = Value::from(json) else {
            panic!()
        };
        EvalContext {
            contexts,
            ..EvalContext::default()
        }
    }

    #[test]
    fn templates_keep_type_when_alone() {
        let c = ctx(serde_json::json!({"matrix": {"n": 3}}));
        let t = parse_template("${{ matrix.n }}", ALL_CONTEXTS).unwrap();
        assert_eq!(t.evaluate(&c).unwrap(), Value::Number(3.0));
        let t = parse_template("n=${{ matrix.n }}!", ALL_CONTEXTS).unwrap();
        assert_eq!(t.evaluate(&c).unwrap(), Value::String("n=3!".into()));
        let t = parse_template("${{ '}}' }}", ALL_CONTEXTS).unwrap();
        assert_eq!(t.evaluate(&c).unwrap(), Value::String("}}".into()));
    }

    #[test]
    fn template_errors_point_into_the_string() {
        let err = parse_template("a ${{ nope.x }}", &["github"]).unwrap_err();
        assert_eq!(err.offset, 6);
        assert!(err.message.contains("Unrecognized named-value: 'nope'"));
        let err = parse_template("a ${{ 1 ", &["github"]).unwrap_err();
        assert_eq!(err.offset, 2);
    }

    #[test]
    fn conditions_imply_success() {
        let cond = parse_condition("github.ref == 'x'", ALL_CONTEXTS).unwrap();
        let mut c = ctx(serde_json::json!({"github": {"ref": "x"}}));
        assert!(cond.evaluate(&c).unwrap());
        c.status = JobStatus::Failure;
        assert!(!cond.evaluate(&c).unwrap());
        let cond = parse_condition("${{ failure() && github.ref == 'x' }}", ALL_CONTEXTS).unwrap();
        assert!(cond.has_status_function());
        assert!(cond.evaluate(&c).unwrap());
        let always = parse_condition("always()", ALL_CONTEXTS).unwrap();
        c.status = JobStatus::Cancelled;
        assert!(always.evaluate(&c).unwrap());
        assert!(
            parse("success()", ALL_CONTEXTS).is_err(),
            "status functions only in if:"
        );
    }

    #[test]
    fn a_job_if_may_name_the_needed_jobs_of_success_and_failure() {
        let job_if = &["needs", JOB_STATUS_ARGUMENTS];
        let c = ctx(serde_json::json!({"needs": {
            "a": {"result": "success"}, "b": {"result": "failure"}
        }}));
        let check = |text: &str| parse_condition(text, job_if).unwrap().evaluate(&c).unwrap();
        assert!(check("success('a')"));
        assert!(!check("success('a', 'B')"));
        assert!(check("failure('a', 'b')"));
        assert!(!check("failure('a')"));
        let err = parse_condition("success('a')", &["needs", "steps"]).unwrap_err();
        assert!(
            err.message.contains("Too many parameters"),
            "{}",
            err.message
        );
    }

    fn text_of(source: &str) -> String {
        let e = parse(source, &[]).unwrap();
        match evaluate(&e, &ctx(serde_json::json!({}))).unwrap() {
            Value::String(s) => s,
            other => panic!("{source}: {other:?}"),
        }
    }

    #[test]
    fn numbers_print_with_fifteen_significant_digits_as_on_github() {
        for (source, want) in [
            ("format('{0}', 0.84551240822557006)", "0.84551240822557"),
            ("format('{0}', 1.5)", "1.5"),
            ("format('{0}', 100)", "100"),
            ("format('{0}', -0.000012)", "-1.2E-05"),
            ("format('{0}', 0.0001)", "0.0001"),
            ("format('{0}', 123456789012345)", "123456789012345"),
            ("format('{0}', 1234567890123456)", "1.23456789012346E+15"),
            ("format('{0}', 1e21)", "1E+21"),
            ("format('{0}', 0.30000000000000004)", "0.3"),
            ("format('{0}', -0)", "0"),
        ] {
            assert_eq!(text_of(source), want, "{source}");
        }
    }

    #[test]
    fn join_follows_github_for_nested_values_and_odd_separators() {
        for (source, want) in [
            ("join(fromJSON('[1, [2], {\"a\": 3}]'))", "1,Array,Object"),
            (
                "join(fromJSON('[\"a\", \"b\"]'), fromJSON('[\"-\"]'))",
                "a,b",
            ),
            ("join(fromJSON('[\"a\", \"b\"]'), 1)", "a1b"),
            ("join(fromJSON('[\"a\", \"b\"]'), true)", "atrueb"),
            ("join(fromJSON('{\"a\": 1}'))", ""),
            ("join('x', '-')", "x"),
            ("join(fromJSON('[]'), '-')", ""),
        ] {
            assert_eq!(text_of(source), want, "{source}");
        }
        assert_eq!(text_of("format('{0}', 'ı' == 'I')"), "false");
        assert_eq!(text_of("format('{0}', 'É' == 'é')"), "true");
    }

    #[test]
    fn hash_files_uses_the_host() {
        let mut c = ctx(serde_json::json!({}));
        let e = parse("hashFiles('**/Cargo.lock', 'x')", &[]).unwrap();
        assert!(evaluate(&e, &c)
            .unwrap_err()
            .message
            .contains("not available"));
        c.hash_files = Some(Arc::new(|p: &[String]| Ok(format!("h{}", p.len()))));
        assert_eq!(evaluate(&e, &c).unwrap(), Value::String("h2".into()));
    }

    #[test]
    fn a_matrix_takes_inserted_mappings_expression_keys_and_spread_items() {
        let c = ctx(serde_json::json!({"inputs": {"dim": "arch", "more": "[\"mac\",\"win\"]"}}));
        let v = Value::from(serde_json::json!({
            "${{ insert }}": "${{ fromJSON('{\"x\":[1,2]}') }}",
            "${{ inputs.dim }}": ["arm"],
            "os": ["linux", "${{ fromJSON(inputs.more) }}"],
            "nested": [["a"], "${{ fromJSON('[[1]]') }}"],
        }));
        assert_eq!(
            evaluate_matrix(&v, &c).unwrap(),
            Value::from(serde_json::json!({
                "x": [1, 2], "arch": ["arm"], "os": ["linux", "mac", "win"], "nested": [["a"], [1]]
            }))
        );
        let Value::Object(plain) = evaluate_value(&v, &c).unwrap() else {
            panic!("not a mapping")
        };
        assert_eq!(
            plain.get("os"),
            Some(&Value::from(serde_json::json!(["linux", ["mac", "win"]])))
        );
        let bad = Value::from(serde_json::json!({"${{ insert }}": "x"}));
        assert!(evaluate_matrix(&bad, &c).is_err());
    }

    #[test]
    fn evaluate_value_walks_leaves() {
        let c = ctx(serde_json::json!({"inputs": {"list": "[1,2]"}}));
        let v = Value::from(
            serde_json::json!({"os": "${{ fromJSON(inputs.list) }}", "x": ["a${{ 1 }}"]}),
        );
        assert_eq!(
            evaluate_value(&v, &c).unwrap(),
            Value::from(serde_json::json!({"os": [1, 2], "x": ["a1"]}))
        );
    }

    #[test]
    fn references_contexts() {
        let t = parse_template("${{ fromJSON(NEEDS.setup.outputs.m) }}", ALL_CONTEXTS).unwrap();
        assert!(t.references("needs"));
        assert!(!t.references("github"));
    }

    #[test]
    fn precedence_and_associativity() {
        let c = ctx(serde_json::json!({}));
        let eval = |source: &str| evaluate(&parse(source, &[]).unwrap(), &c).unwrap();
        assert_eq!(eval("true || false && false"), Value::Bool(true));
        assert_eq!(eval("false && true || true"), Value::Bool(true));
        assert_eq!(eval("2 == 1 < 3"), Value::Bool(false));
        assert_eq!(eval("3 > 2 > 1"), Value::Bool(false));
        assert_eq!(eval("1 < 2 == 2 < 3"), Value::Bool(true));
        assert_eq!(
            eval("!0 == !1 || 'a' && 'b' && ''"),
            Value::String(String::new())
        );
        assert_eq!(eval("'it''s' == 'IT''S'"), Value::Bool(true));
    }

    #[test]
    fn deep_input_is_an_error_not_a_crash() {
        for input in [
            "(".repeat(100_000),
            "!".repeat(100_000),
            "a.".repeat(50_000) + "b",
            "[".repeat(10_000),
        ] {
            assert!(parse(&input, &["a"]).is_err());
        }
    }
}
