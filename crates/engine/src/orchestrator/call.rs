//! A job that calls a reusable workflow: its inputs from `with:` (or the
//! declared defaults), its secrets (`inherit`, a mapping, or none), its jobs
//! under the calling run's limits, and its outputs from `jobs.<id>.outputs`.

use std::collections::BTreeMap;
use std::sync::Arc;

use firerunner_workflow::expr::{self, EvalContext};
use firerunner_workflow::model::{CallSecrets, ParsedWorkflow, WorkflowCall, WorkflowCallJob};
use firerunner_workflow::plan::{plan_workflow, PlanContext, WorkflowPlan};
use firerunner_workflow::Conclusion;
use firerunner_workflow::{Object, Value, WorkflowRef};
use tokio_util::sync::CancellationToken;

use super::error::{CallError, RunError};
use super::{run_workflow, InstanceOutcome, InstanceReport, JobExecutor, JobInstance};
use super::{RunLimits, RunReport, RunScope};
use crate::reusable::{callee_key, CalleeError};

/// The end of a reusable-workflow call.
pub(super) struct CallEnd {
    pub(super) outcome: InstanceOutcome,
    pub(super) nested: Vec<InstanceReport>,
    pub(super) errors: Vec<RunError>,
}

impl CallEnd {
    fn failed(error: RunError) -> Self {
        Self {
            outcome: InstanceOutcome::new(Conclusion::Failure, Object::new()),
            nested: Vec::new(),
            errors: vec![error],
        }
    }
}

/// The secrets a called workflow sees (`None`: the executor's own).
type Secrets = Option<Arc<BTreeMap<String, String>>>;

/// Runs `instance`, a job calling the reusable workflow `call` names.
pub(super) async fn call_workflow<E: JobExecutor>(
    executor: Arc<E>,
    limits: RunLimits,
    scope: RunScope,
    instance: JobInstance,
    call: WorkflowCallJob,
    cancel: CancellationToken,
) -> CallEnd {
    let ready = match ReadyCall::prepare(&scope, &instance, &call) {
        Ok(ready) => ready,
        Err(source) => {
            return CallEnd::failed(RunError::Call {
                job: instance.name.clone(),
                source,
            })
        }
    };
    let report = run_workflow(
        ready.callee.clone(),
        &ready.plan,
        &ready.contexts,
        executor,
        limits,
        ready.scope,
        cancel,
    )
    .await;
    call_end(&ready.callee, &ready.declared, report, ready.contexts)
}

/// A call ready to run: its callee planned with the inputs and secrets given.
struct ReadyCall {
    callee: Arc<ParsedWorkflow>,
    declared: WorkflowCall,
    contexts: Object,
    plan: WorkflowPlan,
    scope: RunScope,
}

impl ReadyCall {
    /// Finds the callee and evaluates what the call gives it.
    fn prepare(
        scope: &RunScope,
        instance: &JobInstance,
        call: &WorkflowCallJob,
    ) -> Result<Self, CallError> {
        let key = callee_key(&call.reference, scope.from.as_ref());
        let callee = match scope.callees.get(&key) {
            Some(Ok(callee)) => callee.clone(),
            Some(Err(err)) => return Err(err.clone().into()),
            None => return Err(CalleeError::NotLoaded(key).into()),
        };
        let declared = callee.on.workflow_call.clone().unwrap_or_default();
        let eval = caller_eval(instance, &scope.secrets);
        let inputs = call_inputs(&declared, call, &eval)?;
        let secrets = call_secrets(call, &scope.secrets, &eval)?;
        let contexts = callee_contexts(instance, inputs);
        let plan_context = PlanContext {
            contexts: contexts.clone(),
        };
        let plan = plan_workflow(&callee, &plan_context)?;
        let from = match &key {
            WorkflowRef::Remote(remote) => Some(remote.clone()),
            _ => scope.from.clone(),
        };
        let scope = RunScope {
            callees: scope.callees.clone(),
            secrets,
            gate: scope.gate.clone(),
            name_prefix: format!("{} / ", instance.name),
            slots: scope.slots.clone(),
            from,
        };
        Ok(Self {
            callee,
            declared,
            contexts,
            plan,
            scope,
        })
    }
}

/// The caller's contexts with its secrets, to evaluate `with:` and `secrets:`.
fn caller_eval(instance: &JobInstance, secrets: &Secrets) -> EvalContext {
    let secrets: Object = secrets
        .as_ref()
        .map(|s| {
            s.iter()
                .map(|(k, v)| (k.clone(), Value::from(v.as_str())))
                .collect()
        })
        .unwrap_or_default();
    let mut contexts = instance.contexts.clone();
    contexts.insert("secrets", Value::Object(secrets));
    EvalContext {
        contexts,
        ..EvalContext::default()
    }
}

/// The callee's `inputs`: each declared one from `with:`, else its default.
fn call_inputs(
    declared: &WorkflowCall,
    call: &WorkflowCallJob,
    eval: &EvalContext,
) -> Result<Object, CallError> {
    let mut inputs = Object::new();
    for (input_name, input) in &declared.inputs {
        let given = call
            .with
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(input_name));
        let value = match given {
            Some((_, value)) => {
                expr::evaluate_value(&value.value, eval).map_err(|source| CallError::Input {
                    input: input_name.clone(),
                    source,
                })?
            }
            None => input.default.clone().unwrap_or(Value::Null),
        };
        inputs.insert(input_name.clone(), value);
    }
    Ok(inputs)
}

/// The callee's secrets: the caller's (`inherit`), none, or a mapping.
fn call_secrets(
    call: &WorkflowCallJob,
    own: &Secrets,
    eval: &EvalContext,
) -> Result<Secrets, CallError> {
    let map = match &call.secrets {
        CallSecrets::Inherit => return Ok(own.clone()),
        CallSecrets::None => return Ok(Some(Arc::new(BTreeMap::new()))),
        CallSecrets::Map(map) => map,
    };
    let contexts = [
        "github", "needs", "vars", "inputs", "matrix", "strategy", "secrets",
    ];
    let mut given = BTreeMap::new();
    for (secret, template) in map {
        let value = expr::parse_template(&template.value, &contexts)
            .and_then(|t| t.evaluate_string(eval))
            .map_err(|source| CallError::Secret {
                secret: secret.clone(),
                source,
            })?;
        given.insert(secret.clone(), value);
    }
    Ok(Some(Arc::new(given)))
}

/// The contexts the callee runs with: the caller's `github` and `vars`, its inputs.
fn callee_contexts(instance: &JobInstance, inputs: Object) -> Object {
    let mut contexts = Object::new();
    for name in ["github", "vars"] {
        if let Some(value) = instance.contexts.get(name) {
            contexts.insert(name, value.clone());
        }
    }
    contexts.insert("inputs", Value::Object(inputs));
    contexts
}

/// The call's end: the callee's conclusion and its declared outputs.
fn call_end(
    callee: &ParsedWorkflow,
    declared: &WorkflowCall,
    report: RunReport,
    contexts: Object,
) -> CallEnd {
    let mut jobs = Object::new();
    for (id, result) in &report.jobs {
        let mut entry = Object::new();
        entry.insert("result", Value::from(result.as_str()));
        entry.insert(
            "outputs",
            Value::Object(report.job_outputs.get(id).cloned().unwrap_or_default()),
        );
        jobs.insert(id.clone(), Value::Object(entry));
    }
    let mut output_contexts = contexts;
    output_contexts.insert("jobs", Value::Object(jobs));
    let output_eval = EvalContext {
        contexts: output_contexts,
        ..EvalContext::default()
    };
    let mut outputs = Object::new();
    let mut errors = report.errors;
    for (name, output) in &declared.outputs {
        match expr::parse_template(&output.value.value, &["github", "inputs", "vars", "jobs"])
            .and_then(|t| t.evaluate(&output_eval))
        {
            Ok(value) => {
                outputs.insert(name.clone(), Value::from(expr::to_string(&value).as_ref()))
            }
            Err(source) => errors.push(RunError::CallOutput {
                file: callee.file.clone(),
                name: name.clone(),
                source,
            }),
        }
    }
    CallEnd {
        outcome: InstanceOutcome::new(report.conclusion, outputs),
        nested: report.instances,
        errors,
    }
}
