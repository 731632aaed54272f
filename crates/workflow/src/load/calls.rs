//! Checks a job that calls a reusable workflow against the workflow it calls.

use crate::diagnostic::Diagnostic;
use crate::model::{CallSecrets, InputType, Job, JobBody, ParsedWorkflow};
use crate::value::Value;

use super::checker::suggest;

/// Checks that `callee` can be called the way `job` (in `caller_file`) calls
/// it: it declares `on: workflow_call`, every required input and secret is
/// given, no input is unknown, and literal inputs have the declared type.
pub fn check_call(caller_file: &str, job: &Job, callee: &ParsedWorkflow) -> Vec<Diagnostic> {
    let JobBody::Call(call) = &job.body else {
        return Vec::new();
    };
    let field = format!("jobs.{}", job.id);
    let error = |pos, message: String| Diagnostic::error(caller_file, pos, message);
    let Some(interface) = &callee.on.workflow_call else {
        return vec![error(
            call.uses.pos,
            format!(
                "{field}.uses: {} does not declare 'on: workflow_call', so it cannot be called",
                call.uses.value
            ),
        )];
    };
    let mut out = Vec::new();
    for (name, value) in &call.with {
        let Some(input) = interface.inputs.get(name) else {
            let hint = suggest(name, interface.inputs.keys().map(String::as_str))
                .map(|s| format!(" (did you mean '{s}'?)"))
                .unwrap_or_default();
            out.push(error(
                value.pos,
                format!(
                    "{field}.with.{name}: {} has no input '{name}'{hint}",
                    call.uses.value
                ),
            ));
            continue;
        };
        let is_expression = matches!(&value.value, Value::String(s) if s.contains("${{"));
        let type_ok = is_expression
            || match (&input.kind, &value.value) {
                (InputType::Boolean, Value::Bool(_)) | (InputType::Number, Value::Number(_)) => {
                    true
                }
                (InputType::String, _) => true,
                (InputType::Boolean | InputType::Number, _) => false,
                _ => true,
            };
        if !type_ok {
            let want = match input.kind {
                InputType::Boolean => "a boolean",
                _ => "a number",
            };
            out.push(error(
                value.pos,
                format!("{field}.with.{name}: input '{name}' expects {want}"),
            ));
        }
    }
    for (name, input) in &interface.inputs {
        if input.required && input.default.is_none() && !call.with.contains_key(name) {
            out.push(error(
                job.pos,
                format!(
                    "{field}: required input '{name}' of {} is not given in 'with'",
                    call.uses.value
                ),
            ));
        }
    }
    if let CallSecrets::Map(given) = &call.secrets {
        for (name, secret) in &interface.secrets {
            if secret.required && !given.contains_key(name) {
                out.push(error(
                    job.pos,
                    format!(
                        "{field}: required secret '{name}' of {} is not given in 'secrets'",
                        call.uses.value
                    ),
                ));
            }
        }
        for (name, value) in given {
            if !interface.secrets.contains_key(name) {
                out.push(error(
                    value.pos,
                    format!(
                        "{field}.secrets.{name}: {} declares no secret '{name}'",
                        call.uses.value
                    ),
                ));
            }
        }
    } else if matches!(call.secrets, CallSecrets::None) {
        for (name, secret) in &interface.secrets {
            if secret.required {
                out.push(error(job.pos, format!("{field}: required secret '{name}' of {} is not given (add 'secrets:' or 'secrets: inherit')", call.uses.value)));
            }
        }
    }
    out
}
