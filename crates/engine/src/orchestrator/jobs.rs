//! Job-level decisions of a run: the `needs` context, whether a job runs,
//! its matrix instances, their names, and its strategy.

use std::collections::{HashMap, HashSet};

use firerunner_workflow::expr::{self, EvalContext, ExprError, JobStatus};
use firerunner_workflow::model::{Job, ParsedWorkflow};
use firerunner_workflow::plan::{expand_matrix, matrix, MatrixState, WorkflowPlan};
use firerunner_workflow::Conclusion;
use firerunner_workflow::{Object, Value};

use super::error::{MatrixProblem, RunError};

pub(super) fn needs_context(
    needs: &[String],
    finished: &HashMap<String, (Conclusion, Object)>,
    visible: &HashMap<String, Conclusion>,
) -> Object {
    let mut context = Object::new();
    for need in needs {
        let Some((_, outputs)) = finished.get(need) else {
            continue;
        };
        let mut entry = Object::new();
        let result = visible.get(need).copied().unwrap_or(Conclusion::Skipped);
        entry.insert("result", Value::String(result.as_str().to_string()));
        entry.insert("outputs", Value::Object(outputs.clone()));
        context.insert(need.clone(), Value::Object(entry));
    }
    context
}

/// Every job `id` depends on, directly or not.
pub(super) fn ancestors(plan: &WorkflowPlan, id: &str) -> HashSet<String> {
    let mut seen = HashSet::new();
    let mut stack = vec![id.to_string()];
    while let Some(current) = stack.pop() {
        if let Some(job) = plan.jobs.iter().find(|j| j.id == current) {
            for need in &job.needs {
                if seen.insert(need.clone()) {
                    stack.push(need.clone());
                }
            }
        }
    }
    seen
}

/// Whether a job runs: its `if:` (implicitly `success()`) against the needs.
pub(super) fn decide_job(
    condition: Option<&str>,
    contexts: &Object,
    status: JobStatus,
    needs_all_succeeded: bool,
) -> Result<bool, ExprError> {
    let Some(source) = condition else {
        return Ok(status == JobStatus::Success && needs_all_succeeded);
    };
    let parsed = expr::parse_condition(source, &["github", "needs", "vars", "inputs"])?;
    if !parsed.has_status_function() && !needs_all_succeeded {
        return Ok(false);
    }
    let eval = EvalContext {
        contexts: contexts.clone(),
        status,
        hash_files: None,
    };
    parsed.evaluate(&eval)
}

/// A job's matrix combinations (one empty one without a matrix); a matrix
/// made from `needs` outputs is expanded now.
pub(super) fn instances_of(
    workflow: &ParsedWorkflow,
    planned: &firerunner_workflow::plan::PlannedJob,
    contexts: &Object,
) -> Result<Vec<Object>, RunError> {
    match &planned.matrix {
        MatrixState::None => Ok(vec![Object::new()]),
        MatrixState::Expanded(combos) => Ok(combos.clone()),
        MatrixState::Deferred => {
            let job = &workflow.jobs[&planned.id];
            let strategy = job
                .strategy
                .as_ref()
                .and_then(|s| s.matrix.as_ref())
                .expect("deferred matrix exists");
            deferred_matrix(&strategy.value, contexts).map_err(|problem| RunError::Matrix {
                file: workflow.file.clone(),
                pos: strategy.pos,
                job: planned.id.clone(),
                problem,
            })
        }
    }
}

/// Evaluates and expands a matrix that needed the outputs of other jobs.
fn deferred_matrix(
    matrix: &firerunner_workflow::Value,
    contexts: &Object,
) -> Result<Vec<Object>, MatrixProblem> {
    let eval = EvalContext {
        contexts: contexts.clone(),
        ..EvalContext::default()
    };
    let value = expr::evaluate_matrix(matrix, &eval).map_err(MatrixProblem::Expression)?;
    let Value::Object(object) = value else {
        return Err(MatrixProblem::NotAMapping);
    };
    let combos = expand_matrix(&object).map_err(MatrixProblem::Expand)?;
    if combos.is_empty() {
        return Err(MatrixProblem::Empty);
    }
    Ok(combos)
}

pub(super) fn instance_name(
    planned: &firerunner_workflow::plan::PlannedJob,
    combo: &Object,
    contexts: &Object,
) -> String {
    if planned.name.contains("${{") {
        let mut with_matrix = contexts.clone();
        with_matrix.insert("matrix", Value::Object(combo.clone()));
        let eval = EvalContext {
            contexts: with_matrix,
            ..EvalContext::default()
        };
        return expr::parse_template(
            &planned.name,
            &["github", "needs", "vars", "inputs", "matrix", "strategy"],
        )
        .and_then(|t| t.evaluate_string(&eval))
        .unwrap_or_else(|_| planned.name.clone());
    }
    if combo.is_empty() {
        planned.name.clone()
    } else {
        matrix::display_name(&planned.name, combo)
    }
}

pub(super) struct StrategyValues {
    pub(super) fail_fast: bool,
    pub(super) max_parallel: Option<usize>,
}

pub(super) fn evaluate_strategy(
    workflow: &ParsedWorkflow,
    id: &str,
    planned: &firerunner_workflow::plan::PlannedJob,
    contexts: &Object,
) -> StrategyValues {
    let strategy = workflow.jobs[id].strategy.as_ref();
    let eval = EvalContext {
        contexts: contexts.clone(),
        ..EvalContext::default()
    };
    let fail_fast = planned.fail_fast.unwrap_or_else(|| {
        strategy
            .and_then(|s| s.fail_fast.as_ref())
            .and_then(|v| expr::evaluate_value(&v.value, &eval).ok())
            .map(|v| expr::truthy(&v))
            .unwrap_or(true)
    });
    let max_parallel = planned.max_parallel.map(|n| n as usize).or_else(|| {
        strategy
            .and_then(|s| s.max_parallel.as_ref())
            .and_then(|v| expr::evaluate_value(&v.value, &eval).ok())
            .map(|v| expr::to_number(&v))
            .filter(|n| *n >= 1.0)
            .map(|n| n as usize)
    });
    StrategyValues {
        fail_fast,
        max_parallel,
    }
}

/// The contexts of one instance: the job's, with its `matrix` and `strategy`.
pub(super) fn instance_contexts(
    job_contexts: &Object,
    combo: Object,
    index: usize,
    total: usize,
    strategy: &StrategyValues,
) -> Object {
    let mut contexts = job_contexts.clone();
    let mut strategy_ctx = Object::new();
    strategy_ctx.insert("fail-fast", Value::Bool(strategy.fail_fast));
    strategy_ctx.insert("job-index", Value::Number(index as f64));
    strategy_ctx.insert("job-total", Value::Number(total as f64));
    strategy_ctx.insert(
        "max-parallel",
        Value::Number(strategy.max_parallel.unwrap_or(total) as f64),
    );
    contexts.insert("matrix", Value::Object(combo));
    contexts.insert("strategy", Value::Object(strategy_ctx));
    contexts
}

/// The job's `continue-on-error` for one instance (false when it does not evaluate).
pub(super) fn continue_on_error(job: &Job, contexts: &Object) -> bool {
    job.continue_on_error
        .as_ref()
        .map(|v| {
            let eval = EvalContext {
                contexts: contexts.clone(),
                ..EvalContext::default()
            };
            expr::evaluate_value(&v.value, &eval)
                .map(|v| expr::truthy(&v))
                .unwrap_or(false)
        })
        .unwrap_or(false)
}
