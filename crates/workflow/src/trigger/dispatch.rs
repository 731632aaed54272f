//! The inputs of a manual `workflow_dispatch` run, checked as GitHub checks
//! them before it starts the run.

use crate::model::{InputType, WorkflowDispatch};
use crate::value::Value;

/// Why GitHub would refuse to start a dispatch with the given inputs.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DispatchInputError {
    /// A required input without a default was not given.
    #[error("required input '{0}' is not given")]
    Missing(String),
    /// A `choice` input got a value outside its options.
    #[error("input '{name}': '{value}' is not one of the options ({options})")]
    NotAnOption {
        /// The input.
        name: String,
        /// The value given.
        value: String,
        /// The options, comma-separated.
        options: String,
    },
    /// A `boolean` input got something other than `true` or `false`.
    #[error("input '{name}': expected 'true' or 'false', found '{value}'")]
    NotABoolean {
        /// The input.
        name: String,
        /// The value given.
        value: String,
    },
    /// A `number` input got something that is not a number.
    #[error("input '{name}': expected a number, found '{value}'")]
    NotANumber {
        /// The input.
        name: String,
        /// The value given.
        value: String,
    },
}

/// Checks `given` (name, text) against the declared inputs: required ones
/// present (or defaulted), `choice` values among the options, booleans and
/// numbers well formed. Names match ignoring case.
pub fn check_dispatch_inputs(
    dispatch: &WorkflowDispatch,
    given: &[(String, String)],
) -> Vec<DispatchInputError> {
    let mut out = Vec::new();
    for (name, input) in &dispatch.inputs {
        let value = given
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.clone())
            .or_else(|| input.default.as_ref().map(default_text));
        let Some(value) = value else {
            if input.required {
                out.push(DispatchInputError::Missing(name.clone()));
            }
            continue;
        };
        let (name, text) = (name.clone(), value);
        match &input.kind {
            InputType::Choice(options) if !options.contains(&text) => {
                out.push(DispatchInputError::NotAnOption {
                    name,
                    value: text,
                    options: options.join(", "),
                })
            }
            InputType::Boolean if !matches!(text.as_str(), "true" | "false") => {
                out.push(DispatchInputError::NotABoolean { name, value: text })
            }
            InputType::Number if text.trim().parse::<f64>().is_err() => {
                out.push(DispatchInputError::NotANumber { name, value: text })
            }
            _ => {}
        }
    }
    out
}

fn default_text(value: &Value) -> String {
    crate::expr::to_string(value).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::load::parse_workflow;

    fn dispatch() -> WorkflowDispatch {
        let text = "on:\n  workflow_dispatch:\n    inputs:\n      env:\n        type: choice\n        options: [dev, prod]\n        required: true\n      dry: {type: boolean, default: false}\n      count: {type: number}\n      note: {required: true}\njobs:\n  a:\n    runs-on: x\n    steps: [{run: 'true'}]\n";
        let wf = parse_workflow("w.yml", text).unwrap_or_else(|d| panic!("{d}"));
        wf.on.workflow_dispatch.unwrap()
    }

    fn given(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn required_choice_boolean_and_number_inputs_are_checked() {
        let d = dispatch();
        assert!(check_dispatch_inputs(&d, &given(&[("ENV", "prod"), ("note", "x")])).is_empty());
        let got: Vec<String> = check_dispatch_inputs(
            &d,
            &given(&[("env", "staging"), ("dry", "yes"), ("count", "two")]),
        )
        .iter()
        .map(ToString::to_string)
        .collect();
        assert_eq!(
            got,
            [
                "input 'env': 'staging' is not one of the options (dev, prod)",
                "input 'dry': expected 'true' or 'false', found 'yes'",
                "input 'count': expected a number, found 'two'",
                "required input 'note' is not given",
            ]
        );
    }
}
