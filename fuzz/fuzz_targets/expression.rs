//! Parses and evaluates arbitrary text as an expression, a template and a condition.
#![no_main]

use firerunner_workflow::expr::{self, EvalContext, ALL_CONTEXTS};
use firerunner_workflow::Value;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let mut ctx = EvalContext::default();
    let github = serde_json_like();
    ctx.contexts.insert("github", github);
    if let Ok(e) = expr::parse(text, ALL_CONTEXTS) {
        let _ = expr::evaluate(&e, &ctx);
    }
    if let Ok(t) = expr::parse_template(text, ALL_CONTEXTS) {
        let _ = t.evaluate(&ctx);
    }
    if let Ok(c) = expr::parse_condition(text, ALL_CONTEXTS) {
        let _ = c.evaluate(&ctx);
    }
});

fn serde_json_like() -> Value {
    let mut event = firerunner_workflow::Object::new();
    event.insert("ref", Value::from("refs/heads/main"));
    event.insert("list", Value::Array(vec![Value::from(1.0), Value::from("two"), Value::Null]));
    let mut github = firerunner_workflow::Object::new();
    github.insert("event", Value::Object(event));
    github.insert("ref", Value::from("refs/heads/main"));
    Value::Object(github)
}
