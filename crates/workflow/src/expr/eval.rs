//! Evaluation with GitHub's coercion rules.

use std::borrow::Cow;
use std::cell::Cell;
use std::cmp::Ordering;

use super::functions::Function;
use super::lexer::{parse_number, BinaryOp};
use super::parser::{Args, Node, NodeId, Tree};
use super::{EvalContext, ExprError, ExprErrorKind, JobStatus};
use crate::value::{format_number, Object, Value};

/// Most bytes an evaluation may produce (GitHub's memory limit).
pub const MAX_MEMORY: usize = 1024 * 1024;

/// Starting capacity of the strings `join` and `toJSON` build: most results
/// fit, so they are allocated once instead of regrown from 8 bytes.
const BUILT_STRING_CAPACITY: usize = 64;

/// An intermediate result: scalars inline, strings and context values
/// borrowed where possible.
#[derive(Debug, Clone)]
pub enum Res<'a> {
    /// `null`.
    Null,
    /// A boolean.
    Bool(bool),
    /// A number.
    Number(f64),
    /// A string borrowed from the expression.
    Str(&'a str),
    /// A string made during evaluation.
    String(String),
    /// A value inside the contexts.
    Ref(&'a Value),
    /// An array or object made during evaluation (by `fromJSON`).
    Own(Box<Value>),
    /// The result of a `*` filter.
    Filtered(Vec<Res<'a>>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Null,
    Bool,
    Number,
    String,
    Array,
    Object,
}

fn kind_of(v: &Value) -> Kind {
    match v {
        Value::Null => Kind::Null,
        Value::Bool(_) => Kind::Bool,
        Value::Number(_) => Kind::Number,
        Value::String(_) => Kind::String,
        Value::Array(_) => Kind::Array,
        Value::Object(_) => Kind::Object,
    }
}

impl<'a> Res<'a> {
    /// A result holding `v`: scalars inline, arrays and objects boxed.
    fn from_value(v: Value) -> Res<'a> {
        match v {
            Value::Null => Res::Null,
            Value::Bool(b) => Res::Bool(b),
            Value::Number(n) => Res::Number(n),
            Value::String(s) => Res::String(s),
            v @ (Value::Array(_) | Value::Object(_)) => Res::Own(Box::new(v)),
        }
    }

    fn kind(&self) -> Kind {
        match self {
            Res::Null => Kind::Null,
            Res::Bool(_) => Kind::Bool,
            Res::Number(_) => Kind::Number,
            Res::Str(_) | Res::String(_) => Kind::String,
            Res::Ref(v) => kind_of(v),
            Res::Own(v) => kind_of(v),
            Res::Filtered(_) => Kind::Array,
        }
    }

    /// The boolean, when the result is one.
    fn as_bool(&self) -> Option<bool> {
        match self {
            Res::Bool(b) => Some(*b),
            Res::Ref(Value::Bool(b)) => Some(*b),
            Res::Own(v) => match **v {
                Value::Bool(b) => Some(b),
                _ => None,
            },
            _ => None,
        }
    }

    /// Materialises the result as a value.
    pub fn into_value(self) -> Value {
        match self {
            Res::Null => Value::Null,
            Res::Bool(b) => Value::Bool(b),
            Res::Number(n) => Value::Number(n),
            Res::Str(s) => Value::String(s.to_owned()),
            Res::String(s) => Value::String(s),
            Res::Ref(v) => v.clone(),
            Res::Own(v) => *v,
            Res::Filtered(items) => Value::Array(items.into_iter().map(Res::into_value).collect()),
        }
    }

    fn truthy(&self) -> bool {
        match self {
            Res::Null => false,
            Res::Bool(b) => *b,
            Res::Number(n) => *n != 0.0 && !n.is_nan(),
            Res::Str(s) => !s.is_empty(),
            Res::String(s) => !s.is_empty(),
            Res::Ref(v) => truthy(v),
            Res::Own(v) => truthy(v),
            Res::Filtered(_) => true,
        }
    }

    fn number(&self) -> f64 {
        match self {
            Res::Null => 0.0,
            Res::Bool(b) => f64::from(u8::from(*b)),
            Res::Number(n) => *n,
            Res::Str(s) => str_to_number(s),
            Res::String(s) => str_to_number(s),
            Res::Ref(v) => to_number(v),
            Res::Own(v) => to_number(v),
            Res::Filtered(_) => f64::NAN,
        }
    }

    fn string(&self) -> Cow<'_, str> {
        match self {
            Res::Null => Cow::Borrowed(""),
            Res::Bool(true) => Cow::Borrowed("true"),
            Res::Bool(false) => Cow::Borrowed("false"),
            Res::Number(n) => Cow::Owned(format_number(*n)),
            Res::Str(s) => Cow::Borrowed(s),
            Res::String(s) => Cow::Borrowed(s),
            Res::Ref(v) => to_string(v),
            Res::Own(v) => to_string(v),
            Res::Filtered(_) => Cow::Borrowed("Array"),
        }
    }

    /// Appends the result as a string to `out`.
    fn push_string(&self, out: &mut String) {
        match self {
            Res::Number(n) | Res::Ref(Value::Number(n)) => push_number(*n, out),
            other => out.push_str(&other.string()),
        }
    }

    /// Calls `f` on each item of an array (or filtered array) until it returns true.
    fn any_item(&self, mut f: impl FnMut(&Res<'_>) -> bool) -> bool {
        match self {
            Res::Filtered(items) => items.iter().any(f),
            Res::Ref(Value::Array(a)) => a.iter().any(|v| f(&Res::Ref(v))),
            Res::Own(v) => match &**v {
                Value::Array(a) => a.iter().any(|v| f(&Res::Ref(v))),
                _ => false,
            },
            _ => false,
        }
    }

    fn property(self, key: &str) -> Option<Res<'a>> {
        match self {
            Res::Ref(Value::Object(o)) => o.get(key).map(Res::Ref),
            Res::Own(v) => match *v {
                Value::Object(mut o) => {
                    let found = o.0.keys().position(|k| k.eq_ignore_ascii_case(key))?;
                    o.0.swap_remove_index(found)
                        .map(|(_, v)| Res::from_value(v))
                }
                _ => None,
            },
            _ => None,
        }
    }

    fn element(self, index: usize) -> Option<Res<'a>> {
        match self {
            Res::Ref(Value::Array(a)) => a.get(index).map(Res::Ref),
            Res::Own(v) => match *v {
                Value::Array(mut a) => {
                    (index < a.len()).then(|| Res::from_value(a.swap_remove(index)))
                }
                _ => None,
            },
            Res::Filtered(mut items) => (index < items.len()).then(|| items.swap_remove(index)),
            _ => None,
        }
    }

    fn children(self) -> Vec<Res<'a>> {
        match self {
            Res::Ref(Value::Array(a)) => a.iter().map(Res::Ref).collect(),
            Res::Ref(Value::Object(o)) => o.iter().map(|(_, v)| Res::Ref(v)).collect(),
            Res::Own(v) => match *v {
                Value::Array(a) => a.into_iter().map(Res::from_value).collect(),
                Value::Object(o) => o.0.into_values().map(Res::from_value).collect(),
                _ => Vec::new(),
            },
            Res::Filtered(items) => items,
            _ => Vec::new(),
        }
    }
}

/// Drops a result, without calling the (recursive, out-of-line) drop glue
/// for the usual results that own nothing.
#[inline(always)]
fn release(res: Res) {
    match res {
        Res::String(_) | Res::Own(_) | Res::Filtered(_) => drop(res),
        Res::Null | Res::Bool(_) | Res::Number(_) | Res::Str(_) | Res::Ref(_) => {
            std::mem::forget(res)
        }
    }
}

/// Appends a number as [`format_number`] writes it, without allocating for
/// the usual whole numbers.
fn push_number(n: f64, out: &mut String) {
    if n.fract() == 0.0 && n.abs() < 1e15 {
        use std::fmt::Write;
        // `-0` prints as `0`, as in JavaScript.
        let _ = write!(out, "{}", n as i64);
    } else {
        out.push_str(&format_number(n));
    }
}

/// GitHub's truthiness.
pub fn truthy(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => *n != 0.0 && !n.is_nan(),
        Value::String(s) => !s.is_empty(),
        Value::Array(_) | Value::Object(_) => true,
    }
}

/// GitHub's conversion to a number.
pub fn to_number(v: &Value) -> f64 {
    match v {
        Value::Null => 0.0,
        Value::Bool(b) => f64::from(u8::from(*b)),
        Value::Number(n) => *n,
        Value::String(s) => str_to_number(s),
        Value::Array(_) | Value::Object(_) => f64::NAN,
    }
}

fn str_to_number(s: &str) -> f64 {
    let t = s.trim();
    if t.is_empty() {
        0.0
    } else {
        parse_number(t).unwrap_or(f64::NAN)
    }
}

/// GitHub's conversion to a string.
pub fn to_string(v: &Value) -> Cow<'_, str> {
    match v {
        Value::Null => Cow::Borrowed(""),
        Value::Bool(true) => Cow::Borrowed("true"),
        Value::Bool(false) => Cow::Borrowed("false"),
        Value::Number(n) => Cow::Owned(format_number(*n)),
        Value::String(s) => Cow::Borrowed(s),
        Value::Array(_) => Cow::Borrowed("Array"),
        Value::Object(_) => Cow::Borrowed("Object"),
    }
}

/// One UTF-16 code unit upper-cased as .NET's `OrdinalIgnoreCase` does: a
/// one-to-one simple mapping (so `ß` stays `ß`), leaving surrogates and the
/// dotless `ı` alone (it does not equal `I`).
fn fold_unit(unit: u16) -> u16 {
    if unit < 0x80 {
        return (unit as u8).to_ascii_uppercase() as u16;
    }
    if (0xD800..0xE000).contains(&unit) || unit == 0x0131 || unit == 0x017F {
        return unit;
    }
    let Some(c) = char::from_u32(unit as u32) else {
        return unit;
    };
    let mut upper = c.to_uppercase();
    match (upper.next(), upper.next()) {
        (Some(u), None) if (u as u32) < 0x10000 => u as u16,
        _ => unit,
    }
}

fn upper(s: &str) -> impl Iterator<Item = u16> + '_ {
    s.encode_utf16().map(fold_unit)
}

/// Compares as `OrdinalIgnoreCase`; for ASCII text without decoding characters.
fn str_cmp(a: &str, b: &str) -> Ordering {
    if a.is_ascii() && b.is_ascii() {
        return a
            .bytes()
            .map(|c| c.to_ascii_uppercase())
            .cmp(b.bytes().map(|c| c.to_ascii_uppercase()));
    }
    upper(a).cmp(upper(b))
}

fn str_eq(a: &str, b: &str) -> bool {
    if a.len() == b.len() && a.eq_ignore_ascii_case(b) {
        return true;
    }
    // Two ASCII strings that differ ignoring ASCII case also differ upper-cased.
    !(a.is_ascii() && b.is_ascii()) && str_cmp(a, b) == Ordering::Equal
}

fn loose_eq(a: &Res, b: &Res) -> bool {
    let (ka, kb) = (a.kind(), b.kind());
    if ka != kb {
        return a.number() == b.number();
    }
    match ka {
        Kind::Null => true,
        Kind::Bool | Kind::Number => a.number() == b.number(),
        Kind::String => str_eq(&a.string(), &b.string()),
        Kind::Array | Kind::Object => match (a, b) {
            (Res::Ref(x), Res::Ref(y)) => std::ptr::eq(*x, *y),
            _ => false,
        },
    }
}

/// `Some(ordering)` when a and b are comparable under GitHub's rules.
fn loose_cmp(a: &Res, b: &Res) -> Option<Ordering> {
    let (ka, kb) = (a.kind(), b.kind());
    if ka != kb || matches!(ka, Kind::Bool | Kind::Number) {
        return a.number().partial_cmp(&b.number());
    }
    match ka {
        Kind::String => Some(str_cmp(&a.string(), &b.string())),
        _ => None,
    }
}

/// Evaluates one syntax tree against one context.
pub struct Evaluator<'a> {
    ctx: &'a EvalContext,
    tree: &'a Tree,
    memory: Cell<usize>,
}

/// An evaluation step's result; the error is boxed to keep the result small.
type Evaled<T> = Result<T, Box<ExprError>>;

#[cold]
fn eval_error(message: impl Into<String>) -> Box<ExprError> {
    Box::new(ExprError {
        kind: ExprErrorKind::Evaluation,
        message: message.into(),
        offset: 0,
    })
}

impl<'a> Evaluator<'a> {
    /// An evaluator of `tree` over `ctx`.
    pub fn new(ctx: &'a EvalContext, tree: &'a Tree) -> Self {
        Self {
            ctx,
            tree,
            memory: Cell::new(0),
        }
    }

    /// Evaluates the whole tree.
    pub fn run(&self) -> Result<Value, ExprError> {
        match self.eval(self.tree.root()) {
            Ok(res) => Ok(res.into_value()),
            Err(e) => Err(*e),
        }
    }

    fn charge(&self, bytes: usize) -> Evaled<()> {
        let used = self.memory.get() + bytes;
        self.memory.set(used);
        if used > MAX_MEMORY {
            return Err(eval_error("The maximum allowed memory size was exceeded"));
        }
        Ok(())
    }

    fn own_string(&self, s: String) -> Evaled<Res<'a>> {
        self.charge(s.len() * 2)?;
        Ok(Res::String(s))
    }

    /// [`Evaluator::eval`] with literals and context names handled in line:
    /// most operands are one of those, and they need no call.
    #[inline(always)]
    fn operand(&self, id: NodeId) -> Evaled<Res<'a>> {
        let tree = self.tree;
        match *tree.node(id) {
            Node::Null => Ok(Res::Null),
            Node::Bool(b) => Ok(Res::Bool(b)),
            Node::Number(n) => Ok(Res::Number(n)),
            Node::String(span) => Ok(Res::Str(tree.name(span))),
            Node::Context(name) => Ok(self.context(tree.name(name))),
            _ => self.eval(id),
        }
    }

    /// `needs.<job>.result` (job ids ignore case), or "" when unknown.
    fn needs_result(&self, job: &str) -> String {
        let Some(Value::Object(needs)) = self.ctx.contexts.get("needs") else {
            return String::new();
        };
        match needs.get(job) {
            Some(Value::Object(o)) => match o.get("result") {
                Some(Value::String(r)) => r.to_string(),
                _ => String::new(),
            },
            _ => String::new(),
        }
    }

    /// The value of the context named `name`, or null.
    #[inline(always)]
    fn context(&self, name: &str) -> Res<'a> {
        match self.ctx.contexts.get(name) {
            Some(v) => Res::Ref(v),
            None => Res::Null,
        }
    }

    /// Evaluates one node; literals and context values are borrowed, not copied.
    fn eval(&self, id: NodeId) -> Evaled<Res<'a>> {
        let tree = self.tree;
        Ok(match *tree.node(id) {
            Node::Null => Res::Null,
            Node::Bool(b) => Res::Bool(b),
            Node::Number(n) => Res::Number(n),
            Node::String(span) => Res::Str(tree.name(span)),
            Node::Context(name) => self.context(tree.name(name)),
            Node::Property(target, key) => self.member(target, tree.name(key))?,
            Node::Index(target, index) => {
                let target = self.eval(target)?;
                let index = self.eval(index)?;
                let result = self.index(target, &index);
                release(index);
                result
            }
            Node::Wildcard(target) => match self.eval(target)? {
                Res::Filtered(items) => {
                    Res::Filtered(items.into_iter().flat_map(Res::children).collect())
                }
                other if matches!(other.kind(), Kind::Array | Kind::Object) => {
                    Res::Filtered(other.children())
                }
                _ => Res::Filtered(Vec::new()),
            },
            Node::Not(inner) => {
                let inner = self.eval(inner)?;
                let truthy = inner.truthy();
                release(inner);
                Res::Bool(!truthy)
            }
            Node::Compare(op, a, b) => self.compare(op, a, b)?,
            Node::And(items) => self.logical(tree.children(items), false)?,
            Node::Or(items) => self.logical(tree.children(items), true)?,
            Node::Call(function, args) => self.call(function, tree.children(args))?,
            Node::Item(_) => unreachable!("items are reached through their list"),
        })
    }

    /// `target.key`; a borrowed mapping's member is borrowed too.
    #[inline(always)]
    fn member(&self, target: NodeId, key: &str) -> Evaled<Res<'a>> {
        let target = self.operand(target)?;
        let Res::Ref(v) = target else {
            return Ok(self.property(target, key));
        };
        release(target);
        Ok(match v {
            Value::Object(o) => match o.get(key) {
                Some(v) => Res::Ref(v),
                None => Res::Null,
            },
            _ => Res::Null,
        })
    }

    /// `a op b` for a comparison operator.
    fn compare(&self, op: BinaryOp, a: NodeId, b: NodeId) -> Evaled<Res<'a>> {
        let (a, b) = (self.operand(a)?, self.operand(b)?);
        let order = || loose_cmp(&a, &b);
        let result = match op {
            BinaryOp::Eq => loose_eq(&a, &b),
            BinaryOp::Ne => !loose_eq(&a, &b),
            BinaryOp::Lt => order() == Some(Ordering::Less),
            BinaryOp::Le => matches!(order(), Some(Ordering::Less | Ordering::Equal)),
            BinaryOp::Gt => order() == Some(Ordering::Greater),
            BinaryOp::Ge => matches!(order(), Some(Ordering::Greater | Ordering::Equal)),
            BinaryOp::And | BinaryOp::Or => unreachable!("logical operators are n-ary nodes"),
        };
        release(a);
        release(b);
        Ok(Res::Bool(result))
    }

    /// `a && b && ...` (`stop_on` false) or `a || b || ...` (`stop_on` true):
    /// the first operand whose truthiness is `stop_on`, else the last.
    fn logical(&self, items: Args<'a>, stop_on: bool) -> Evaled<Res<'a>> {
        let last = items.len() - 1;
        for i in 0..last {
            let res = self.operand(items.get(i))?;
            if res.truthy() == stop_on {
                return Ok(res);
            }
            release(res);
        }
        self.operand(items.get(last))
    }

    fn property(&self, target: Res<'a>, key: &str) -> Res<'a> {
        match target {
            Res::Filtered(items) => {
                Res::Filtered(items.into_iter().filter_map(|i| i.property(key)).collect())
            }
            other => match other.property(key) {
                Some(res) => res,
                None => Res::Null,
            },
        }
    }

    fn index(&self, target: Res<'a>, index: &Res) -> Res<'a> {
        if let Res::Filtered(items) = target {
            return Res::Filtered(
                items
                    .into_iter()
                    .filter_map(|i| self.index_one(i, index))
                    .collect(),
            );
        }
        match self.index_one(target, index) {
            Some(res) => res,
            None => Res::Null,
        }
    }

    fn index_one(&self, target: Res<'a>, index: &Res) -> Option<Res<'a>> {
        match target.kind() {
            Kind::Array => {
                if matches!(index.kind(), Kind::Array | Kind::Object) {
                    return None;
                }
                let n = index.number();
                if !n.is_finite() || n < 0.0 {
                    return None;
                }
                target.element(n.trunc() as usize)
            }
            Kind::Object => {
                if matches!(index.kind(), Kind::Array | Kind::Object) {
                    return None;
                }
                target.property(&index.string())
            }
            _ => None,
        }
    }

    /// Calls the built-in `function` with `args`.
    fn call(&self, function: Function, args: Args<'a>) -> Evaled<Res<'a>> {
        match function {
            Function::Success | Function::Always | Function::Cancelled | Function::Failure => {
                self.status(function, args)
            }
            Function::Contains => self.contains(args),
            Function::StartsWith | Function::EndsWith => {
                self.affix(args, function == Function::StartsWith)
            }
            Function::Format => self.formatted(args),
            Function::Join => self.join(args),
            Function::ToJson => self.to_json(args),
            Function::FromJson => self.parse_json(args),
            Function::HashFiles => self.hash_files(args),
            Function::Case => self.case(args),
        }
    }

    /// The status functions `success()`, `always()`, `cancelled()` and
    /// `failure()`, and `success(jobs...)`/`failure(jobs...)` over needed jobs.
    fn status(&self, function: Function, args: Args<'a>) -> Evaled<Res<'a>> {
        let status = self.ctx.status;
        Ok(Res::Bool(match function {
            Function::Success | Function::Failure if args.len() > 0 => {
                let mut results = Vec::with_capacity(args.len());
                for i in 0..args.len() {
                    let job = self.operand(args.get(i))?;
                    results.push(self.needs_result(&job.string()));
                    release(job);
                }
                if function == Function::Success {
                    results.iter().all(|r| r == "success")
                } else {
                    results.iter().any(|r| r == "failure")
                }
            }
            Function::Success => status == JobStatus::Success,
            Function::Cancelled => status == JobStatus::Cancelled,
            Function::Failure => status == JobStatus::Failure,
            _ => true,
        }))
    }

    /// `contains(search, item)`: an array element or a substring, ignoring case.
    fn contains(&self, args: Args<'a>) -> Evaled<Res<'a>> {
        let (search, item) = (self.operand(args.get(0))?, self.operand(args.get(1))?);
        let found = if search.kind() == Kind::Array {
            search.any_item(|x| loose_eq(x, &item))
        } else {
            contains_ignore_case(&search.string(), &item.string())
        };
        release(search);
        release(item);
        Ok(Res::Bool(found))
    }

    /// `startsWith(text, part)` (`prefix`) or `endsWith(text, part)`.
    fn affix(&self, args: Args<'a>, prefix: bool) -> Evaled<Res<'a>> {
        let (text, part) = (self.operand(args.get(0))?, self.operand(args.get(1))?);
        let found = affix_ignore_case(&text.string(), &part.string(), prefix);
        release(text);
        release(part);
        Ok(Res::Bool(found))
    }

    /// `format(fmt, values...)`.
    fn formatted(&self, args: Args<'a>) -> Evaled<Res<'a>> {
        let fmt = self.operand(args.get(0))?;
        let mut values = Vec::with_capacity(args.len() - 1);
        for i in 1..args.len() {
            values.push(self.operand(args.get(i))?);
        }
        let out = format(&fmt.string(), &values, self)?;
        self.own_string(out)
    }

    /// `join(array, separator)`, the separator `,` by default.
    fn join(&self, args: Args<'a>) -> Evaled<Res<'a>> {
        let array = self.eval(args.get(0))?;
        let sep = match args.len() {
            2 => self.eval(args.get(1))?,
            _ => Res::Str(","),
        };
        match array.kind() {
            Kind::Array => {}
            // GitHub joins nothing out of a mapping.
            Kind::Object => return self.own_string(String::new()),
            _ => {
                let s = array.string().into_owned();
                return self.own_string(s);
            }
        }
        // A separator that is an array or a mapping counts as ','.
        let sep = match sep.kind() {
            Kind::Array | Kind::Object => Cow::Borrowed(","),
            _ => sep.string(),
        };
        let mut out = String::with_capacity(BUILT_STRING_CAPACITY);
        let mut first = true;
        array.any_item(|item| {
            if !first {
                out.push_str(&sep);
            }
            first = false;
            item.push_string(&mut out);
            false
        });
        self.own_string(out)
    }

    /// `toJSON(value)`.
    fn to_json(&self, args: Args<'a>) -> Evaled<Res<'a>> {
        let value = self.eval(args.get(0))?;
        let mut out = String::with_capacity(BUILT_STRING_CAPACITY);
        write_json_res(&value, 0, &mut out);
        self.own_string(out)
    }

    /// `fromJSON(text)`.
    fn parse_json(&self, args: Args<'a>) -> Evaled<Res<'a>> {
        let text = self.eval(args.get(0))?;
        let text = text.string();
        let parsed: Value = serde_json::from_str(text.trim())
            .map_err(|e| eval_error(format!("Error parsing fromJson: Unexpected input: {e}")))?;
        self.charge(text.len() * 2)?;
        Ok(Res::from_value(parsed))
    }

    /// `hashFiles(patterns...)`, through the context's host function.
    fn hash_files(&self, args: Args<'a>) -> Evaled<Res<'a>> {
        let patterns = args
            .iter()
            .map(|a| self.eval(a).map(|r| r.string().into_owned()))
            .collect::<Result<Vec<_>, _>>()?;
        let host =
            self.ctx.hash_files.as_ref().ok_or_else(|| {
                eval_error("hashFiles is not available here: no workspace to hash")
            })?;
        let hash = host(&patterns)
            .map_err(|e| eval_error(format!("hashFiles({}) failed: {e}", patterns.join(", "))))?;
        self.own_string(hash)
    }

    /// `case(predicate, value, ..., default)`: the value after the first
    /// true predicate, else the default.
    fn case(&self, args: Args<'a>) -> Evaled<Res<'a>> {
        let mut i = 0;
        while i + 1 < args.len() {
            let predicate = self.eval(args.get(i))?;
            let value = predicate.as_bool();
            release(predicate);
            match value {
                Some(true) => return self.eval(args.get(i + 1)),
                Some(false) => {}
                None => {
                    return Err(eval_error(
                        "case predicate must evaluate to a boolean value",
                    ))
                }
            }
            i += 2;
        }
        self.eval(args.get(args.len() - 1))
    }
}

/// Case-insensitive substring test; byte-wise for ASCII, by folded UTF-16 units otherwise.
fn contains_ignore_case(haystack: &str, needle: &str) -> bool {
    if haystack.is_ascii() && needle.is_ascii() {
        let (h, n) = (haystack.as_bytes(), needle.as_bytes());
        return n.is_empty() || h.windows(n.len()).any(|w| w.eq_ignore_ascii_case(n));
    }
    let (h, n): (Vec<u16>, Vec<u16>) = (upper(haystack).collect(), upper(needle).collect());
    n.is_empty() || h.windows(n.len()).any(|w| w == n.as_slice())
}

/// Case-insensitive `startsWith` (`prefix` true) or `endsWith`.
fn affix_ignore_case(text: &str, part: &str, prefix: bool) -> bool {
    if text.is_ascii() && part.is_ascii() {
        let (t, p) = (text.as_bytes(), part.as_bytes());
        if p.len() > t.len() {
            return false;
        }
        let slice = if prefix {
            &t[..p.len()]
        } else {
            &t[t.len() - p.len()..]
        };
        return slice.eq_ignore_ascii_case(p);
    }
    let text: Vec<u16> = upper(text).collect();
    let part: Vec<u16> = upper(part).collect();
    if prefix {
        text.starts_with(&part)
    } else {
        text.ends_with(&part)
    }
}

fn format(fmt: &str, args: &[Res], ev: &Evaluator) -> Evaled<String> {
    let invalid = || eval_error(format!("The following format string is invalid: {fmt}"));
    let bytes = fmt.as_bytes();
    let mut out = String::with_capacity(fmt.len() + 16);
    let mut literal_start = 0;
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'{' | b'}' if bytes.get(i + 1) == Some(&bytes[i]) => {
                out.push_str(&fmt[literal_start..=i]);
                i += 2;
                literal_start = i;
            }
            b'}' => return Err(invalid()),
            b'{' => {
                out.push_str(&fmt[literal_start..i]);
                let close = bytes[i + 1..]
                    .iter()
                    .position(|b| *b == b'}')
                    .ok_or_else(invalid)?
                    + i
                    + 1;
                let index: usize = fmt[i + 1..close].parse().map_err(|_| invalid())?;
                let arg = args.get(index).ok_or_else(|| {
                    eval_error(format!(
                        "The following format string references more arguments than were supplied: {fmt}"
                    ))
                })?;
                arg.push_string(&mut out);
                i = close + 1;
                literal_start = i;
            }
            _ => i += 1,
        }
    }
    out.push_str(&fmt[literal_start..]);
    ev.charge(0)?;
    Ok(out)
}

/// Writes `value` as JSON with two-space indentation, as GitHub's `toJSON` does.
pub fn write_json(value: &Value, indent: usize, out: &mut String) {
    match value {
        Value::Null => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) => push_number(*n, out),
        Value::String(s) => write_json_string(s, out),
        Value::Array(items) if items.is_empty() => out.push_str("[]"),
        Value::Object(o) if o.is_empty() => out.push_str("{}"),
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                out.push_str(if i == 0 { "\n" } else { ",\n" });
                push_indent(indent + 1, out);
                write_json(item, indent + 1, out);
            }
            out.push('\n');
            push_indent(indent, out);
            out.push(']');
        }
        Value::Object(o) => {
            out.push('{');
            for (i, (k, v)) in o.iter().enumerate() {
                out.push_str(if i == 0 { "\n" } else { ",\n" });
                push_indent(indent + 1, out);
                write_json_string(k, out);
                out.push_str(": ");
                write_json(v, indent + 1, out);
            }
            out.push('\n');
            push_indent(indent, out);
            out.push('}');
        }
    }
}

/// [`write_json`] for an intermediate result.
fn write_json_res(res: &Res, indent: usize, out: &mut String) {
    match res {
        Res::Null => out.push_str("null"),
        Res::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Res::Number(n) => push_number(*n, out),
        Res::Str(s) => write_json_string(s, out),
        Res::String(s) => write_json_string(s, out),
        Res::Ref(v) => write_json(v, indent, out),
        Res::Own(v) => write_json(v, indent, out),
        Res::Filtered(items) if items.is_empty() => out.push_str("[]"),
        Res::Filtered(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                out.push_str(if i == 0 { "\n" } else { ",\n" });
                push_indent(indent + 1, out);
                write_json_res(item, indent + 1, out);
            }
            out.push('\n');
            push_indent(indent, out);
            out.push(']');
        }
    }
}

fn push_indent(level: usize, out: &mut String) {
    for _ in 0..level {
        out.push_str("  ");
    }
}

fn write_json_string(s: &str, out: &mut String) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
}

/// Evaluates templates in every string leaf of `value`; mapping keys may be
/// expressions, and a `${{ insert }}` key merges in the mapping its value gives.
pub fn evaluate_value(value: &Value, ctx: &EvalContext) -> Result<Value, ExprError> {
    evaluate_tree(value, ctx, false)
}

/// Like [`evaluate_value`], and an item of a list that is one whole
/// expression giving an array contributes that array's items (a matrix).
pub fn evaluate_matrix(value: &Value, ctx: &EvalContext) -> Result<Value, ExprError> {
    evaluate_tree(value, ctx, true)
}

fn template(s: &str, ctx: &EvalContext) -> Result<Value, ExprError> {
    super::parse_template(s, super::ALL_CONTEXTS)?.evaluate(ctx)
}

/// True when `s` is exactly one `${{ }}` with nothing around it.
fn is_whole_expression(s: &str) -> bool {
    let t = s.trim();
    t.starts_with("${{") && t.ends_with("}}") && t.matches("${{").count() == 1
}

fn evaluate_tree(value: &Value, ctx: &EvalContext, spread: bool) -> Result<Value, ExprError> {
    Ok(match value {
        Value::String(s) if s.contains("${{") => template(s, ctx)?,
        Value::Array(items) => {
            let mut out = Vec::with_capacity(items.len());
            for item in items {
                let evaluated = evaluate_tree(item, ctx, spread)?;
                match (evaluated, item) {
                    (Value::Array(inner), Value::String(s)) if spread && is_whole_expression(s) => {
                        out.extend(inner)
                    }
                    (v, _) => out.push(v),
                }
            }
            Value::Array(out)
        }
        Value::Object(o) => {
            let mut out = Object::new();
            for (k, v) in o.iter() {
                let evaluated = evaluate_tree(v, ctx, spread)?;
                if super::is_insert_directive(k) {
                    if let Value::Object(inserted) = evaluated {
                        out.0.extend(inserted.0);
                        continue;
                    }
                    return Err(ExprError {
                        offset: 0,
                        kind: ExprErrorKind::Evaluation,
                        message: "${{ insert }} needs a mapping".into(),
                    });
                }
                let key = if k.contains("${{") {
                    to_string(&template(k, ctx)?).into_owned()
                } else {
                    k.clone()
                };
                out.0.insert(key, evaluated);
            }
            Value::Object(out)
        }
        other => other.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn string_comparison_ignores_case_beyond_ascii() {
        assert!(str_eq("Main", "mAIN"));
        assert!(!str_eq("main", "mains"));
        assert!(!str_eq("straße", "STRASSE"), "no multi-character mappings");
        assert!(str_eq("straße", "STRAßE"));
        assert!(!str_eq("ı", "I"), "ordinal rules leave the dotless i alone");
        assert!(str_eq("éa", "ÉA"));
        assert_eq!(str_cmp("abc", "ABD"), Ordering::Less);
        assert_eq!(str_cmp("b", "A"), Ordering::Greater);
        assert_eq!(
            str_cmp("_", "a"),
            Ordering::Greater,
            "against upper-cased 'A'"
        );
        assert_eq!(str_cmp("ß", "ST"), Ordering::Greater);
        assert!(!affix_ignore_case("ıx", "I", true));
        assert!(affix_ignore_case("xÉ", "é", false));
    }
}
