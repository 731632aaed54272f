//! Runs the jobs of a planned workflow: each job starts as soon as the jobs
//! it needs have finished (not in stages), matrix instances fan out under
//! `max-parallel` and `fail-fast`, and the whole run stays under a global
//! job limit. Running one job instance is the [`JobExecutor`]'s business.
//!
//! Job-level semantics follow GitHub's documentation:
//!
//! - A job without `if:` runs only when every job it needs succeeded; a job
//!   whose needs failed or were skipped is skipped. With a status function
//!   in `if:`, `failure()` is true when any job it depends on, directly or
//!   not, failed, and `cancelled()` when the run was cancelled.
//! - A matrix job's result, as `needs.<id>.result` shows it, is `failure`
//!   when any instance failed, else `cancelled` when any was cancelled, else
//!   `skipped` when all were skipped, else `success`. Its outputs are merged
//!   from its instances in the order they finished (a later value wins).
//! - `fail-fast` (default true) cancels the other instances of a matrix job
//!   once one fails, unless the failing instance has `continue-on-error`.
//! - A job with `continue-on-error` that fails is reported as failed but
//!   does not fail the run, and the jobs that need it see it as successful.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use firerunner_workflow::expr::{self, EvalContext, JobStatus};
use firerunner_workflow::model::{CallSecrets, JobBody, ParsedWorkflow, WorkflowCallJob};
use firerunner_workflow::plan::{
    expand_matrix, matrix, MatrixState, PlanContext, Scheduler, WorkflowPlan,
};
use firerunner_workflow::{Conclusion, Object, Value};
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// One instance of a job (one matrix combination) handed to the executor.
#[derive(Debug, Clone)]
pub struct JobInstance {
    /// The job's id.
    pub job_id: String,
    /// The name shown for this instance (`build (linux, 1)`).
    pub name: String,
    /// Contexts known before the job starts: `github`, `vars`, `inputs`,
    /// `needs`, `matrix` and `strategy`.
    pub contexts: Object,
    /// The workflow the job belongs to (a called workflow's, for its jobs).
    pub workflow: Arc<ParsedWorkflow>,
    /// The secrets the job sees; `None` means the run's own.
    pub secrets: Option<Arc<BTreeMap<String, String>>>,
}

/// What a (possibly called) workflow runs with besides its plan.
#[derive(Debug, Clone, Default)]
pub struct RunScope {
    /// Local reusable workflows, by the `uses:` path that names them.
    pub callees: HashMap<String, Arc<ParsedWorkflow>>,
    /// The workflow's secrets (`None`: the executor's own).
    pub secrets: Option<Arc<BTreeMap<String, String>>>,
    /// Prefix of the jobs' display names (`caller / ` in a called workflow).
    pub name_prefix: String,
    /// Slots shared with the calling run, so a call does not exceed its limit.
    slots: Option<Arc<Semaphore>>,
}

/// How an instance ended.
#[derive(Debug, Clone, PartialEq)]
pub struct InstanceOutcome {
    /// Its result.
    pub result: Conclusion,
    /// Its evaluated `outputs:`.
    pub outputs: Object,
}

/// Runs one job instance (in a microVM, or anywhere else).
pub trait JobExecutor: Send + Sync + 'static {
    /// Runs `instance` until it ends or `cancel` fires.
    fn run(
        &self,
        instance: JobInstance,
        cancel: CancellationToken,
    ) -> impl Future<Output = InstanceOutcome> + Send;
}

/// Limits of a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunLimits {
    /// Most job instances running at once across the run.
    pub max_parallel_jobs: usize,
}

impl Default for RunLimits {
    fn default() -> Self {
        Self {
            max_parallel_jobs: 4,
        }
    }
}

/// The end of one job instance, as reported.
#[derive(Debug, Clone, PartialEq)]
pub struct InstanceReport {
    /// The job's id.
    pub job_id: String,
    /// The instance's display name.
    pub name: String,
    /// Its result.
    pub result: Conclusion,
    /// Its outputs.
    pub outputs: Object,
    /// When it started, relative to the run's start (`None` if it never ran).
    pub started: Option<Duration>,
    /// How long it ran.
    pub duration: Duration,
}

/// The end of a whole run.
#[derive(Debug, Clone, PartialEq)]
pub struct RunReport {
    /// Every instance, in the order they finished.
    pub instances: Vec<InstanceReport>,
    /// Each job's combined result (`needs.<id>.result`), by id.
    pub jobs: HashMap<String, Conclusion>,
    /// Each job's merged outputs, by id.
    pub job_outputs: HashMap<String, Object>,
    /// The run's conclusion.
    pub conclusion: Conclusion,
    /// Problems that ended jobs before they ran (bad `if:`, bad matrix).
    pub errors: Vec<String>,
}

#[derive(Default)]
struct JobProgress {
    remaining: usize,
    results: Vec<Conclusion>,
    outputs: Object,
    /// An instance failed without `continue-on-error`.
    hard_failure: bool,
}

/// A boxed run, so that called workflows can run inside their caller.
pub type RunFuture<'a> = std::pin::Pin<Box<dyn Future<Output = RunReport> + Send + 'a>>;

impl RunScope {
    /// A scope with these local reusable workflows and secrets.
    pub fn new(
        callees: HashMap<String, Arc<ParsedWorkflow>>,
        secrets: Option<Arc<BTreeMap<String, String>>>,
    ) -> Self {
        Self {
            callees,
            secrets,
            ..Self::default()
        }
    }
}

/// Runs `plan` with `executor`; `contexts` holds `github`, `vars` and `inputs`.
pub fn run_workflow<'a, E: JobExecutor>(
    workflow: Arc<ParsedWorkflow>,
    plan: &'a WorkflowPlan,
    contexts: &'a Object,
    executor: Arc<E>,
    limits: RunLimits,
    scope: RunScope,
    cancel: CancellationToken,
) -> RunFuture<'a> {
    Box::pin(run(
        workflow, plan, contexts, executor, limits, scope, cancel,
    ))
}

async fn run<E: JobExecutor>(
    workflow: Arc<ParsedWorkflow>,
    plan: &WorkflowPlan,
    contexts: &Object,
    executor: Arc<E>,
    limits: RunLimits,
    scope: RunScope,
    cancel: CancellationToken,
) -> RunReport {
    let run_started = Instant::now();
    let global = scope
        .slots
        .clone()
        .unwrap_or_else(|| Arc::new(Semaphore::new(limits.max_parallel_jobs.max(1))));
    let workflow_ref: &ParsedWorkflow = &workflow;
    let workflow_arc = workflow.clone();
    let workflow = workflow_ref;
    let mut scheduler = Scheduler::new(plan.jobs.iter().map(|j| (j.id.clone(), j.needs.clone())));
    let mut progress: HashMap<String, JobProgress> = HashMap::new();
    let mut finished: HashMap<String, (Conclusion, Object)> = HashMap::new();
    let mut visible: HashMap<String, Conclusion> = HashMap::new();
    let mut report = RunReport {
        instances: Vec::new(),
        jobs: HashMap::new(),
        job_outputs: HashMap::new(),
        conclusion: Conclusion::Success,
        errors: Vec::new(),
    };
    let mut tasks: JoinSet<TaskEnd> = JoinSet::new();
    let mut job_cancels: HashMap<String, CancellationToken> = HashMap::new();
    let mut fail_fast: HashMap<String, bool> = HashMap::new();

    loop {
        // Jobs skipped here finish at once and may make others ready.
        loop {
            let ready = scheduler.start_ready();
            if ready.is_empty() {
                break;
            }
            for id in ready {
                let planned = plan.jobs.iter().find(|j| j.id == id).expect("planned job");
                let job = &workflow.jobs[&id];
                let needs = needs_context(&planned.needs, &finished, &visible);
                let mut job_contexts = contexts.clone();
                job_contexts.insert("needs", Value::Object(needs));
                let status = if cancel.is_cancelled() {
                    JobStatus::Cancelled
                } else if ancestors(plan, &id)
                    .iter()
                    .any(|a| visible.get(a) == Some(&Conclusion::Failure))
                {
                    JobStatus::Failure
                } else {
                    JobStatus::Success
                };
                let needs_all_succeeded = planned
                    .needs
                    .iter()
                    .all(|n| visible.get(n) == Some(&Conclusion::Success));
                let decision = decide_job(
                    job.if_cond.as_ref().map(|c| c.value.as_str()),
                    &job_contexts,
                    status,
                    needs_all_succeeded,
                );
                let run_it = match decision {
                    Ok(run) => run,
                    Err(message) => {
                        report
                            .errors
                            .push(format!("{}: jobs.{id}.if: {message}", workflow.file));
                        false
                    }
                };
                let combos = if run_it {
                    match instances_of(workflow, planned, &job_contexts) {
                        Ok(combos) => Some(combos),
                        Err(message) => {
                            report.errors.push(message);
                            None
                        }
                    }
                } else {
                    None
                };
                let Some(combos) = combos else {
                    let result = if run_it {
                        Conclusion::Failure
                    } else {
                        Conclusion::Skipped
                    };
                    report.instances.push(InstanceReport {
                        job_id: id.clone(),
                        name: format!("{}{}", scope.name_prefix, planned.name),
                        result,
                        outputs: Object::new(),
                        started: None,
                        duration: Duration::ZERO,
                    });
                    report.job_outputs.insert(id.clone(), Object::new());
                    finished.insert(id.clone(), (result, Object::new()));
                    visible.insert(id.clone(), result);
                    scheduler.finish(&id, result);
                    continue;
                };
                let strategy = evaluate_strategy(workflow, &id, planned, &job_contexts);
                fail_fast.insert(id.clone(), strategy.fail_fast);
                let per_job = Arc::new(Semaphore::new(
                    strategy.max_parallel.unwrap_or(usize::MAX >> 4).max(1),
                ));
                let job_cancel = cancel.child_token();
                job_cancels.insert(id.clone(), job_cancel.clone());
                // Instances queue for slots in matrix order, as on GitHub:
                // instance n waits its turn before it asks for a slot.
                let turn = Arc::new(watch::Sender::new(0usize));
                progress.insert(
                    id.clone(),
                    JobProgress {
                        remaining: combos.len(),
                        ..JobProgress::default()
                    },
                );
                let total = combos.len();
                for (index, combo) in combos.into_iter().enumerate() {
                    let mut instance_contexts = job_contexts.clone();
                    let name = instance_name(planned, &combo, &instance_contexts);
                    let mut strategy_ctx = Object::new();
                    strategy_ctx.insert("fail-fast", Value::Bool(strategy.fail_fast));
                    strategy_ctx.insert("job-index", Value::Number(index as f64));
                    strategy_ctx.insert("job-total", Value::Number(total as f64));
                    strategy_ctx.insert(
                        "max-parallel",
                        Value::Number(strategy.max_parallel.unwrap_or(total) as f64),
                    );
                    instance_contexts.insert("matrix", Value::Object(combo));
                    instance_contexts.insert("strategy", Value::Object(strategy_ctx));
                    let continue_on_error = job
                        .continue_on_error
                        .as_ref()
                        .map(|v| {
                            let eval = EvalContext {
                                contexts: instance_contexts.clone(),
                                ..EvalContext::default()
                            };
                            expr::evaluate_value(&v.value, &eval)
                                .map(|v| expr::truthy(&v))
                                .unwrap_or(false)
                        })
                        .unwrap_or(false);
                    let instance = JobInstance {
                        job_id: id.clone(),
                        name: format!("{}{name}", scope.name_prefix),
                        contexts: instance_contexts,
                        workflow: workflow_arc.clone(),
                        secrets: scope.secrets.clone(),
                    };
                    let call = match &job.body {
                        JobBody::Call(call) => Some(call.clone()),
                        JobBody::Steps(_) => None,
                    };
                    let call_scope = RunScope {
                        slots: Some(global.clone()),
                        ..scope.clone()
                    };
                    let executor = executor.clone();
                    let fail_fast = strategy.fail_fast;
                    let (global, per_job, job_cancel, turn) = (
                        global.clone(),
                        per_job.clone(),
                        job_cancel.clone(),
                        turn.clone(),
                    );
                    let id = id.clone();
                    tasks.spawn(async move {
                        let name = instance.name.clone();
                        let cancelled = InstanceReport {
                            job_id: id.clone(),
                            name: name.clone(),
                            result: Conclusion::Cancelled,
                            outputs: Object::new(),
                            started: None,
                            duration: Duration::ZERO,
                        };
                        let started = Instant::now();
                        if let Some(call) = call {
                            // A call holds no slot itself: its jobs take them.
                            let called = Box::pin(call_workflow(
                                executor, limits, call_scope, instance, call, job_cancel,
                            ))
                            .await;
                            let report = InstanceReport {
                                job_id: id.clone(),
                                name,
                                result: called.outcome.result,
                                outputs: called.outcome.outputs,
                                started: Some(started.duration_since(run_started)),
                                duration: started.elapsed(),
                            };
                            return (
                                id,
                                index,
                                report,
                                continue_on_error,
                                called.nested,
                                called.errors,
                            );
                        }
                        let permits = tokio::select! {
                            _ = job_cancel.cancelled() => None,
                            permits = async {
                                let mut my_turn = turn.subscribe();
                                my_turn.wait_for(|next| *next >= index).await.ok()?;
                                let job = per_job.acquire_owned().await.ok()?;
                                let all = global.acquire_owned().await.ok()?;
                                Some((job, all))
                            } => permits,
                        };
                        turn.send_modify(|next| *next = (*next).max(index + 1));
                        let Some(_permits) = permits else {
                            return (
                                id,
                                index,
                                cancelled,
                                continue_on_error,
                                Vec::new(),
                                Vec::new(),
                            );
                        };
                        if job_cancel.is_cancelled() {
                            return (
                                id,
                                index,
                                cancelled,
                                continue_on_error,
                                Vec::new(),
                                Vec::new(),
                            );
                        }
                        let started = Instant::now();
                        let outcome = executor.run(instance, job_cancel.clone()).await;
                        if outcome.result == Conclusion::Failure && !continue_on_error && fail_fast
                        {
                            // Before this instance's slot frees, so no later
                            // instance starts in it.
                            job_cancel.cancel();
                        }
                        let report = InstanceReport {
                            job_id: id.clone(),
                            name,
                            result: outcome.result,
                            outputs: outcome.outputs,
                            started: Some(started.duration_since(run_started)),
                            duration: started.elapsed(),
                        };
                        (id, index, report, continue_on_error, Vec::new(), Vec::new())
                    });
                }
            }
        }
        let Some(joined) = tasks.join_next().await else {
            break;
        };
        let (id, _index, instance, continue_on_error, nested, nested_errors) = match joined {
            Ok(done) => done,
            Err(err) => {
                report
                    .errors
                    .push(format!("a job task ended abnormally: {err}"));
                continue;
            }
        };
        report.instances.extend(nested);
        report.errors.extend(nested_errors);
        let job_progress = progress.get_mut(&id).expect("job in progress");
        job_progress.remaining -= 1;
        job_progress.results.push(instance.result);
        for (key, value) in instance.outputs.iter() {
            job_progress.outputs.insert(key.clone(), value.clone());
        }
        if instance.result == Conclusion::Failure && !continue_on_error {
            job_progress.hard_failure = true;
            if fail_fast.get(&id).copied().unwrap_or(true) {
                if let Some(token) = job_cancels.get(&id) {
                    token.cancel();
                }
            }
        }
        report.instances.push(instance);
        if job_progress.remaining == 0 {
            let result = combine(&job_progress.results);
            let tolerated = result == Conclusion::Failure && !job_progress.hard_failure;
            let outputs = std::mem::take(&mut job_progress.outputs);
            report.job_outputs.insert(id.clone(), outputs.clone());
            finished.insert(id.clone(), (result, outputs));
            visible.insert(
                id.clone(),
                if tolerated {
                    Conclusion::Success
                } else {
                    result
                },
            );
            scheduler.finish(&id, result);
        }
    }

    for (id, (result, _)) in &finished {
        report.jobs.insert(id.clone(), *result);
    }
    report.conclusion = if cancel.is_cancelled() {
        Conclusion::Cancelled
    } else if visible.values().any(|r| *r == Conclusion::Failure) {
        Conclusion::Failure
    } else if visible.values().any(|r| *r == Conclusion::Cancelled) {
        Conclusion::Cancelled
    } else {
        Conclusion::Success
    };
    if !report.errors.is_empty() && report.conclusion == Conclusion::Success {
        report.conclusion = Conclusion::Failure;
    }
    report
}

/// What a job task hands back: job id, instance index, its report, whether
/// it may fail, and the reports and errors of a called workflow's jobs.
type TaskEnd = (
    String,
    usize,
    InstanceReport,
    bool,
    Vec<InstanceReport>,
    Vec<String>,
);

/// The end of a reusable-workflow call.
struct CallEnd {
    outcome: InstanceOutcome,
    nested: Vec<InstanceReport>,
    errors: Vec<String>,
}

/// Runs a job that calls a local reusable workflow: its inputs from `with:`
/// (or the declared defaults), its secrets (`inherit`, a mapping, or none),
/// its jobs under this run's limits, and its outputs from `jobs.<id>.outputs`.
async fn call_workflow<E: JobExecutor>(
    executor: Arc<E>,
    limits: RunLimits,
    scope: RunScope,
    instance: JobInstance,
    call: WorkflowCallJob,
    cancel: CancellationToken,
) -> CallEnd {
    let failed = |message: String| CallEnd {
        outcome: InstanceOutcome {
            result: Conclusion::Failure,
            outputs: Object::new(),
        },
        nested: Vec::new(),
        errors: vec![message],
    };
    let uses = call.uses.value.clone();
    let Some(callee) = scope.callees.get(&uses).cloned() else {
        return failed(format!(
            "{}: {uses}: only reusable workflows of the same repository (./.github/workflows/...) can run",
            instance.name
        ));
    };
    let secrets_object = |secrets: &Option<Arc<BTreeMap<String, String>>>| -> Object {
        secrets
            .as_ref()
            .map(|s| {
                s.iter()
                    .map(|(k, v)| (k.clone(), Value::from(v.as_str())))
                    .collect()
            })
            .unwrap_or_default()
    };
    let mut caller_contexts = instance.contexts.clone();
    caller_contexts.insert("secrets", Value::Object(secrets_object(&scope.secrets)));
    let eval = EvalContext {
        contexts: caller_contexts,
        ..EvalContext::default()
    };
    let declared = callee.on.workflow_call.clone().unwrap_or_default();
    let mut inputs = Object::new();
    for (name, input) in &declared.inputs {
        let value = match call.with.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)) {
            Some((_, value)) => match expr::evaluate_value(&value.value, &eval) {
                Ok(value) => value,
                Err(err) => return failed(format!("{}: with.{name}: {err}", instance.name)),
            },
            None => input.default.clone().unwrap_or(Value::Null),
        };
        inputs.insert(name.clone(), value);
    }
    let secrets = match &call.secrets {
        CallSecrets::Inherit => scope.secrets.clone(),
        CallSecrets::None => Some(Arc::new(BTreeMap::new())),
        CallSecrets::Map(map) => {
            let mut given = BTreeMap::new();
            for (name, template) in map {
                let value = expr::parse_template(
                    &template.value,
                    &[
                        "github", "needs", "vars", "inputs", "matrix", "strategy", "secrets",
                    ],
                )
                .and_then(|t| t.evaluate_string(&eval));
                match value {
                    Ok(value) => given.insert(name.clone(), value),
                    Err(err) => return failed(format!("{}: secrets.{name}: {err}", instance.name)),
                };
            }
            Some(Arc::new(given))
        }
    };
    let mut contexts = Object::new();
    for name in ["github", "vars"] {
        if let Some(value) = instance.contexts.get(name) {
            contexts.insert(name, value.clone());
        }
    }
    contexts.insert("inputs", Value::Object(inputs));
    let plan = match firerunner_workflow::plan::plan_workflow(
        &callee,
        &PlanContext {
            contexts: contexts.clone(),
        },
    ) {
        Ok(plan) => plan,
        Err(err) => return failed(err.to_string()),
    };
    let nested_scope = RunScope {
        callees: scope.callees.clone(),
        secrets,
        name_prefix: format!("{} / ", instance.name),
        slots: scope.slots.clone(),
    };
    let report = run_workflow(
        callee.clone(),
        &plan,
        &contexts,
        executor,
        limits,
        nested_scope,
        cancel,
    )
    .await;
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
    let mut errors = report.errors.clone();
    for (name, output) in &declared.outputs {
        match expr::parse_template(&output.value.value, &["github", "inputs", "vars", "jobs"])
            .and_then(|t| t.evaluate(&output_eval))
        {
            Ok(value) => {
                outputs.insert(name.clone(), Value::from(expr::to_string(&value).as_ref()))
            }
            Err(err) => errors.push(format!(
                "{}: on.workflow_call.outputs.{name}: {err}",
                callee.file
            )),
        }
    }
    CallEnd {
        outcome: InstanceOutcome {
            result: report.conclusion,
            outputs,
        },
        nested: report.instances,
        errors,
    }
}

/// `needs.<id>.result` of a job from its instances' results.
pub fn combine(results: &[Conclusion]) -> Conclusion {
    if results.contains(&Conclusion::Failure) {
        Conclusion::Failure
    } else if results.contains(&Conclusion::Cancelled) {
        Conclusion::Cancelled
    } else if !results.is_empty() && results.iter().all(|r| *r == Conclusion::Skipped) {
        Conclusion::Skipped
    } else {
        Conclusion::Success
    }
}

fn needs_context(
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
fn ancestors(plan: &WorkflowPlan, id: &str) -> HashSet<String> {
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
fn decide_job(
    condition: Option<&str>,
    contexts: &Object,
    status: JobStatus,
    needs_all_succeeded: bool,
) -> Result<bool, String> {
    let Some(source) = condition else {
        return Ok(status == JobStatus::Success && needs_all_succeeded);
    };
    let parsed = expr::parse_condition(source, &["github", "needs", "vars", "inputs"])
        .map_err(|e| e.to_string())?;
    if !parsed.has_status_function() && !needs_all_succeeded {
        return Ok(false);
    }
    let eval = EvalContext {
        contexts: contexts.clone(),
        status,
        hash_files: None,
    };
    parsed.evaluate(&eval).map_err(|e| e.to_string())
}

fn instances_of(
    workflow: &ParsedWorkflow,
    planned: &firerunner_workflow::plan::PlannedJob,
    contexts: &Object,
) -> Result<Vec<Object>, String> {
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
            let eval = EvalContext {
                contexts: contexts.clone(),
                ..EvalContext::default()
            };
            let where_ = format!(
                "{}:{}: jobs.{}.strategy.matrix",
                workflow.file, strategy.pos, planned.id
            );
            let value = expr::evaluate_matrix(&strategy.value, &eval)
                .map_err(|e| format!("{where_}: {e}"))?;
            let Value::Object(object) = value else {
                return Err(format!("{where_}: the matrix must be a mapping"));
            };
            let combos = expand_matrix(&object).map_err(|e| format!("{where_}: {e}"))?;
            if combos.is_empty() {
                return Err(format!("{where_}: the matrix has no combinations"));
            }
            Ok(combos)
        }
    }
}

fn instance_name(
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

struct StrategyValues {
    fail_fast: bool,
    max_parallel: Option<usize>,
}

fn evaluate_strategy(
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
