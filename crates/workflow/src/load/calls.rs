//! Checks a job that calls a reusable workflow against the workflow it calls.

use crate::diagnostic::{Diagnostic, Pos};
use crate::model::{
    CallSecrets, InputType, Job, JobBody, ParsedWorkflow, WorkflowCall, WorkflowCallJob,
};
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
    let Some(interface) = &callee.on.workflow_call else {
        return vec![Diagnostic::error(
            caller_file,
            call.uses.pos,
            format!(
                "{field}.uses: {} does not declare 'on: workflow_call', so it cannot be called",
                call.uses.value
            ),
        )];
    };
    let mut check = CallCheck {
        caller_file,
        job,
        call,
        interface,
        field: &field,
        out: Vec::new(),
    };
    check.given_inputs();
    check.required_inputs();
    check.secrets();
    check.out
}

/// One call being checked against the callee's interface, and the problems found.
struct CallCheck<'a> {
    caller_file: &'a str,
    job: &'a Job,
    call: &'a WorkflowCallJob,
    interface: &'a WorkflowCall,
    /// `jobs.<id>`.
    field: &'a str,
    out: Vec<Diagnostic>,
}

impl CallCheck<'_> {
    fn error(&mut self, pos: Pos, message: String) {
        self.out
            .push(Diagnostic::error(self.caller_file, pos, message));
    }

    /// Every input in `with` is declared and literal ones have its type.
    fn given_inputs(&mut self) {
        let (field, call, interface) = (self.field, self.call, self.interface);
        let uses = &call.uses.value;
        for (name, value) in &call.with {
            let Some(input) = interface.inputs.get(name) else {
                let hint = suggest(name, interface.inputs.keys().map(String::as_str))
                    .map(|s| format!(" (did you mean '{s}'?)"))
                    .unwrap_or_default();
                let message = format!("{field}.with.{name}: {uses} has no input '{name}'{hint}");
                self.error(value.pos, message);
                continue;
            };
            let is_expression = matches!(&value.value, Value::String(s) if s.contains("${{"));
            let type_ok = is_expression
                || match input.kind {
                    InputType::Boolean => matches!(value.value, Value::Bool(_)),
                    InputType::Number => matches!(value.value, Value::Number(_)),
                    _ => true,
                };
            if !type_ok {
                let want = match input.kind {
                    InputType::Boolean => "a boolean",
                    _ => "a number",
                };
                let message = format!("{field}.with.{name}: input '{name}' expects {want}");
                self.error(value.pos, message);
            }
        }
    }

    /// Every required input without a default is given.
    fn required_inputs(&mut self) {
        let (call, interface) = (self.call, self.interface);
        for (name, input) in &interface.inputs {
            if input.required && input.default.is_none() && !call.with.contains_key(name) {
                let message = format!(
                    "{}: required input '{name}' of {} is not given in 'with'",
                    self.field, call.uses.value
                );
                self.error(self.job.pos, message);
            }
        }
    }

    /// Every required secret is given (or inherited) and every given one declared.
    fn secrets(&mut self) {
        let (field, call) = (self.field, self.call);
        let uses = &call.uses.value;
        let secrets = &self.interface.secrets;
        match &call.secrets {
            CallSecrets::Map(given) => {
                for (name, secret) in secrets {
                    if secret.required && !given.contains_key(name) {
                        let message = format!(
                            "{field}: required secret '{name}' of {uses} is not given in 'secrets'"
                        );
                        self.error(self.job.pos, message);
                    }
                }
                for (name, value) in given {
                    if !secrets.contains_key(name) {
                        let message =
                            format!("{field}.secrets.{name}: {uses} declares no secret '{name}'");
                        self.error(value.pos, message);
                    }
                }
            }
            CallSecrets::None => {
                for (name, secret) in secrets {
                    if secret.required {
                        self.error(self.job.pos, format!("{field}: required secret '{name}' of {uses} is not given (add 'secrets:' or 'secrets: inherit')"));
                    }
                }
            }
            _ => {}
        }
    }
}
