//! Job planning: matrix expansion and the `needs` graph.
//!
//! [`plan_workflow`] turns a validated workflow into the jobs it will run, in a
//! stable order where each job comes after the jobs it needs; matrices are
//! expanded now unless they depend on the outputs of other jobs.

pub mod graph;
pub mod matrix;

pub use graph::{check_needs, topological_order, Scheduler};
pub use matrix::{expand_matrix, MatrixError, MAX_COMBINATIONS};

use crate::diagnostic::{Pos, Spanned};
use crate::expr::{self, EvalContext, ExprError};
use crate::model::{JobBody, ParsedWorkflow, Strategy};
use crate::value::{Object, Value};

/// Contexts known when a workflow is planned (`github`, `vars`, `inputs`).
#[derive(Debug, Clone, Default)]
pub struct PlanContext {
    /// Named contexts, e.g. `github` with the event's fields.
    pub contexts: Object,
}

/// Why a workflow cannot be planned.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PlanError {
    /// A job's matrix is invalid.
    #[error("{file}:{pos}: jobs.{job}.strategy.matrix: {source}")]
    Matrix {
        /// The workflow file.
        file: String,
        /// The job.
        job: String,
        /// Where the matrix is.
        pos: Pos,
        /// What is wrong.
        source: MatrixError,
    },
    /// An expression of a job's strategy failed.
    #[error("{file}:{pos}: jobs.{job}.strategy: {source}")]
    Expression {
        /// The workflow file.
        file: String,
        /// The job.
        job: String,
        /// Where the expression is.
        pos: Pos,
        /// What failed.
        source: ExprError,
    },
}

/// A job's matrix at planning time.
#[derive(Debug, Clone, PartialEq)]
pub enum MatrixState {
    /// The job has no matrix: it runs once.
    None,
    /// The combinations, in GitHub's order.
    Expanded(Vec<Object>),
    /// The matrix uses the outputs of other jobs; it is expanded when they finish.
    Deferred,
}

/// One job of the plan.
#[derive(Debug, Clone, PartialEq)]
pub struct PlannedJob {
    /// The job id.
    pub id: String,
    /// The name shown for the job (its `name:` or id).
    pub name: String,
    /// The ids of the jobs it needs.
    pub needs: Vec<String>,
    /// Its matrix.
    pub matrix: MatrixState,
    /// `strategy.fail-fast` (GitHub's default: true); `None` while it is an unevaluated expression.
    pub fail_fast: Option<bool>,
    /// `strategy.max-parallel`, when limited.
    pub max_parallel: Option<u32>,
    /// The reusable workflow it calls, if any.
    pub calls: Option<String>,
    /// What its `if:` says at planning time.
    pub condition: IfDecision,
    /// The display names with `${{ }}` in `name:` evaluated, one per instance,
    /// when they could be evaluated now.
    pub evaluated_names: Option<Vec<String>>,
}

/// A job's `if:` as far as the event decides it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IfDecision {
    /// No `if:`: the job runs when its needs succeed.
    NoCondition,
    /// The event makes the condition true.
    True,
    /// The event makes the condition false: the job is skipped.
    False,
    /// It depends on the results or outputs of needed jobs.
    AtRunTime,
}

impl PlannedJob {
    /// The display name of each instance: `name (v1, v2)` for matrix jobs.
    pub fn instance_names(&self) -> Vec<String> {
        if let Some(names) = &self.evaluated_names {
            return names.clone();
        }
        match &self.matrix {
            MatrixState::Expanded(combos) if !self.name.contains("${{") => combos
                .iter()
                .map(|c| matrix::display_name(&self.name, c))
                .collect(),
            MatrixState::Expanded(combos) => combos.iter().map(|_| self.name.clone()).collect(),
            _ => vec![self.name.clone()],
        }
    }
}

/// The jobs of a workflow in the order they can start.
#[derive(Debug, Clone, PartialEq)]
pub struct WorkflowPlan {
    /// Jobs, each after the jobs it needs, otherwise in declaration order.
    pub jobs: Vec<PlannedJob>,
}

/// Plans `workflow`: orders its jobs and expands the matrices that can be.
pub fn plan_workflow(
    workflow: &ParsedWorkflow,
    ctx: &PlanContext,
) -> Result<WorkflowPlan, PlanError> {
    let planner = Planner {
        workflow,
        eval: EvalContext {
            contexts: ctx.contexts.clone(),
            ..EvalContext::default()
        },
    };
    let jobs = topological_order(&workflow.jobs)
        .into_iter()
        .map(|id| planner.job(id))
        .collect::<Result<_, _>>()?;
    Ok(WorkflowPlan { jobs })
}

/// Plans the jobs of one workflow with the values the event gives.
struct Planner<'w> {
    workflow: &'w ParsedWorkflow,
    eval: EvalContext,
}

impl Planner<'_> {
    /// Plans the job `id`.
    fn job(&self, id: String) -> Result<PlannedJob, PlanError> {
        let job = &self.workflow.jobs[&id];
        let strategy = job.strategy.clone().unwrap_or_default();
        let matrix = self.matrix(&id, &strategy)?;
        let fail_fast = match &strategy.fail_fast {
            None => Some(true),
            Some(v) => match self.value(&id, v)? {
                Value::Bool(b) => Some(b),
                _ => None,
            },
        };
        let max_parallel = match &strategy.max_parallel {
            Some(v) => match self.value(&id, v)? {
                Value::Number(n) if n >= 1.0 => Some(n as u32),
                _ => None,
            },
            None => None,
        };
        let name = job
            .name
            .as_ref()
            .map_or_else(|| id.clone(), |n| n.value.clone());
        Ok(PlannedJob {
            condition: decide_if(job, &self.eval),
            evaluated_names: evaluate_names(&name, &matrix, &self.eval),
            name,
            needs: job.needs.iter().map(|n| n.value.clone()).collect(),
            matrix,
            fail_fast,
            max_parallel,
            calls: match &job.body {
                JobBody::Call(call) => Some(call.uses.value.clone()),
                JobBody::Steps(_) => None,
            },
            id,
        })
    }

    /// The evaluated `v` of the job `id`'s strategy.
    fn value(&self, id: &str, v: &Spanned<Value>) -> Result<Value, PlanError> {
        expr::evaluate_value(&v.value, &self.eval).map_err(|e| self.expr_err(id, v.pos, e))
    }

    /// The job `id`'s matrix: expanded now, or deferred when it reads `needs`.
    fn matrix(&self, id: &str, strategy: &Strategy) -> Result<MatrixState, PlanError> {
        let m = match &strategy.matrix {
            None => return Ok(MatrixState::None),
            Some(m) if references_needs(&m.value) => return Ok(MatrixState::Deferred),
            Some(m) => m,
        };
        let evaluated =
            expr::evaluate_matrix(&m.value, &self.eval).map_err(|e| self.expr_err(id, m.pos, e))?;
        let matrix_err = |source| PlanError::Matrix {
            file: self.workflow.file.clone(),
            job: id.to_owned(),
            pos: m.pos,
            source,
        };
        let object = match evaluated {
            Value::Object(o) => o,
            other => return Err(matrix_err(MatrixError::NotAMapping(type_name(&other)))),
        };
        Ok(MatrixState::Expanded(
            expand_matrix(&object).map_err(matrix_err)?,
        ))
    }

    fn expr_err(&self, id: &str, pos: Pos, source: ExprError) -> PlanError {
        PlanError::Expression {
            file: self.workflow.file.clone(),
            job: id.to_owned(),
            pos,
            source,
        }
    }
}

/// Evaluates a job's `if:` when it depends only on what the event gives.
fn decide_if(job: &crate::model::Job, eval: &EvalContext) -> IfDecision {
    let Some(text) = &job.if_cond else {
        return IfDecision::NoCondition;
    };
    let Ok(condition) = expr::parse_condition(&text.value, expr::contexts::JOB_IF) else {
        return IfDecision::AtRunTime;
    };
    // Status functions look at the needed jobs' results, unknown before they run.
    if condition.references("needs") || (condition.has_status_function() && !job.needs.is_empty()) {
        return IfDecision::AtRunTime;
    }
    match condition.evaluate(eval) {
        Ok(true) => IfDecision::True,
        Ok(false) => IfDecision::False,
        Err(_) => IfDecision::AtRunTime,
    }
}

/// `name:` evaluated for each instance (with its `matrix`), when it holds
/// expressions that need nothing but the event and the matrix.
fn evaluate_names(name: &str, matrix: &MatrixState, eval: &EvalContext) -> Option<Vec<String>> {
    if !name.contains("${{") {
        return None;
    }
    let template = expr::parse_template(name, expr::ALL_CONTEXTS).ok()?;
    if template.references("needs") {
        return None;
    }
    let combos = match matrix {
        MatrixState::Expanded(combos) => combos.clone(),
        MatrixState::None => vec![Object::new()],
        MatrixState::Deferred => return None,
    };
    combos
        .into_iter()
        .map(|combo| {
            let mut ctx = eval.clone();
            ctx.contexts
                .insert("matrix".to_owned(), Value::Object(combo));
            template
                .evaluate(&ctx)
                .ok()
                .map(|v| expr::to_string(&v).into_owned())
        })
        .collect()
}

fn references_needs(value: &Value) -> bool {
    match value {
        Value::String(s) if s.contains("${{") => expr::parse_template(s, expr::ALL_CONTEXTS)
            .map(|t| t.references("needs"))
            .unwrap_or(false),
        Value::Array(items) => items.iter().any(references_needs),
        Value::Object(o) => o.iter().any(|(_, v)| references_needs(v)),
        _ => false,
    }
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a sequence",
        Value::Object(_) => "a mapping",
    }
}
