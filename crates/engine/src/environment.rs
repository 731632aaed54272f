//! A job's `environment:`: its name is evaluated for each job instance
//! before the instance asks for a slot or a VM, and an [`EnvironmentGate`]
//! (the service's: branch rules, required reviewers, the environment's
//! secrets and variables) decides whether it may start. A job waiting for
//! approval holds nothing. Without a gate (`firerunner run`) the key only
//! names the environment. The `url` is evaluated after the job's steps.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;

use firerunner_workflow::expr::{self, EvalContext, ExprError};
use firerunner_workflow::model::Job;
use firerunner_workflow::{Object, Value};
use tokio_util::sync::CancellationToken;

/// A boxed future, for the object-safe [`EnvironmentGate`].
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Contexts an environment's `name` may read (GitHub's for `jobs.<id>.environment`).
const NAME_CONTEXTS: &[&str] = &["github", "needs", "strategy", "matrix", "vars", "inputs"];

/// Contexts its `url` may read (it is evaluated after the steps).
const URL_CONTEXTS: &[&str] = &[
    "github", "needs", "strategy", "matrix", "job", "runner", "env", "vars", "steps", "inputs",
];

/// A job instance that asks to enter an environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnvironmentRequest {
    /// The job's id.
    pub job_id: String,
    /// The instance's display name.
    pub job_name: String,
    /// The environment's evaluated name.
    pub environment: String,
}

/// What a job gets in an environment it may enter.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EnvironmentGrant {
    /// The environment's secrets; they win over the run's of the same name.
    pub secrets: BTreeMap<String, String>,
    /// The environment's variables; they win over the run's.
    pub vars: BTreeMap<String, String>,
    /// Lines for the job's log (who approved, after how long).
    pub notes: Vec<String>,
}

/// Why a job may not enter its environment (it fails without running).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EnvironmentError {
    /// A protection rule refuses it (its branch, a reviewer's rejection).
    #[error("{0}")]
    Refused(String),
    /// The run was cancelled while the job waited for approval.
    #[error("cancelled while waiting for approval to deploy to {0}")]
    Cancelled(String),
    /// The environment's settings or secrets could not be read.
    #[error("environment {environment}: {message}")]
    Unavailable {
        /// The environment.
        environment: String,
        /// What went wrong.
        message: String,
    },
    /// Its name did not evaluate.
    #[error("jobs.{job}.environment: {source}")]
    Name {
        /// The job's id.
        job: String,
        /// The expression's error.
        source: ExprError,
    },
}

/// Decides whether a job instance may enter an environment, and with what.
pub trait EnvironmentGate: Send + Sync + 'static {
    /// Waits (while a reviewer has not decided) until the job may enter or
    /// is refused, or `cancel` fires.
    fn enter<'a>(
        &'a self,
        request: EnvironmentRequest,
        cancel: &'a CancellationToken,
    ) -> BoxFuture<'a, Result<EnvironmentGrant, EnvironmentError>>;
}

/// The evaluated `environment:` name of `job` for one instance's
/// `contexts`; `None` when the job names none (or an empty one).
pub fn environment_name(job: &Job, contexts: &Object) -> Result<Option<String>, EnvironmentError> {
    let Some(environment) = &job.environment else {
        return Ok(None);
    };
    let source = match &environment.value {
        Value::String(name) => name.as_str(),
        Value::Object(map) => match map.get("name") {
            Some(Value::String(name)) => name.as_str(),
            _ => return Ok(None),
        },
        _ => return Ok(None),
    };
    let eval = EvalContext {
        contexts: contexts.clone(),
        ..EvalContext::default()
    };
    let name = expr::parse_template(source, NAME_CONTEXTS)
        .and_then(|template| template.evaluate_string(&eval))
        .map_err(|source| EnvironmentError::Name {
            job: job.id.clone(),
            source,
        })?;
    let name = name.trim().to_string();
    Ok((!name.is_empty()).then_some(name))
}

/// The `environment.url` of `job` evaluated with `eval` (its steps done);
/// `None` when it has none, `Err` when it does not evaluate.
pub fn environment_url(job: &Job, eval: &EvalContext) -> Option<Result<String, ExprError>> {
    let Value::Object(map) = &job.environment.as_ref()?.value else {
        return None;
    };
    let Some(Value::String(source)) = map.get("url") else {
        return None;
    };
    Some(expr::parse_template(source, URL_CONTEXTS).and_then(|t| t.evaluate_string(eval)))
}

/// `base` with `grant`'s entries over it.
pub fn overlay(
    base: &BTreeMap<String, String>,
    grant: &BTreeMap<String, String>,
) -> BTreeMap<String, String> {
    let mut merged = base.clone();
    for (name, value) in grant {
        // Names are case-insensitive: the grant's spelling replaces the run's.
        merged.retain(|existing, _| !existing.eq_ignore_ascii_case(name));
        merged.insert(name.clone(), value.clone());
    }
    merged
}

/// `contexts` with `vars` laid over its `vars` context.
pub fn with_vars(contexts: &Object, vars: &BTreeMap<String, String>) -> Object {
    if vars.is_empty() {
        return contexts.clone();
    }
    let mut merged = match contexts.get("vars") {
        Some(Value::Object(existing)) => existing.clone(),
        _ => Object::new(),
    };
    for (name, value) in vars {
        merged.insert(name.clone(), Value::from(value.as_str()));
    }
    let mut contexts = contexts.clone();
    contexts.insert("vars", Value::Object(merged));
    contexts
}

#[cfg(test)]
mod tests {
    use super::*;
    use firerunner_workflow::load::parse_workflow;

    fn job(yaml_environment: &str) -> Job {
        let yaml = format!(
            "on: push\njobs:\n  deploy:\n    runs-on: ubuntu-latest\n    environment: {yaml_environment}\n    strategy:\n      matrix:\n        target: [staging]\n    steps:\n      - run: make\n"
        );
        parse_workflow("ci.yml", &yaml).unwrap().jobs["deploy"].clone()
    }

    fn contexts() -> Object {
        let mut matrix = Object::new();
        matrix.insert("target", Value::from("staging"));
        let mut contexts = Object::new();
        contexts.insert("matrix", Value::Object(matrix));
        contexts
    }

    #[test]
    fn a_name_is_a_string_or_the_name_of_a_mapping_and_may_use_the_matrix() {
        let plain = job("production");
        assert_eq!(
            environment_name(&plain, &contexts()).unwrap().as_deref(),
            Some("production")
        );
        let mapped = job("{name: '${{ matrix.target }}', url: 'https://x'}");
        assert_eq!(
            environment_name(&mapped, &contexts()).unwrap().as_deref(),
            Some("staging")
        );
        let none = parse_workflow(
            "ci.yml",
            "on: push\njobs:\n  b:\n    runs-on: x\n    steps:\n      - run: make\n",
        )
        .unwrap()
        .jobs["b"]
            .clone();
        assert_eq!(environment_name(&none, &contexts()).unwrap(), None);
    }

    #[test]
    fn the_url_is_evaluated_with_the_steps() {
        let mapped = job("{name: prod, url: '${{ steps.deploy.outputs.url }}'}");
        let mut deploy = Object::new();
        let mut outputs = Object::new();
        outputs.insert("url", Value::from("https://app.example.com"));
        deploy.insert("outputs", Value::Object(outputs));
        let mut steps = Object::new();
        steps.insert("deploy", Value::Object(deploy));
        let mut eval = EvalContext::default();
        eval.contexts.insert("steps", Value::Object(steps));
        assert_eq!(
            environment_url(&mapped, &eval).unwrap().unwrap(),
            "https://app.example.com"
        );
        assert!(environment_url(&job("prod"), &eval).is_none());
    }

    #[test]
    fn an_overlay_replaces_names_whatever_their_case() {
        let base = BTreeMap::from([
            ("token".to_string(), "repo".to_string()),
            ("A".into(), "1".into()),
        ]);
        let grant = BTreeMap::from([("TOKEN".to_string(), "env".to_string())]);
        let merged = overlay(&base, &grant);
        assert_eq!(merged.len(), 2);
        assert_eq!(merged["TOKEN"], "env");
    }
}
