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

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use firerunner_workflow::expr::JobStatus;
use firerunner_workflow::model::{JobBody, ParsedWorkflow};
use firerunner_workflow::plan::{PlannedJob, Scheduler, WorkflowPlan};
use firerunner_workflow::Conclusion;
use firerunner_workflow::{Object, RemoteRef, Value};
use tokio::sync::{watch, Semaphore};
use tokio::task::{JoinError, JoinSet};
use tokio_util::sync::CancellationToken;

use crate::environment::EnvironmentGate;
use crate::job::JobReport;
use crate::reusable::Callees;

mod call;
mod error;
mod instance;
mod jobs;

pub use error::{CallError, MatrixProblem, RunError};

use instance::{InstanceTask, JobSlots, TaskEnd};
use jobs::{
    ancestors, continue_on_error, decide_job, evaluate_strategy, instance_contexts, instance_name,
    instances_of, needs_context,
};

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
    /// Lines for the top of the job's log (what its environment's gate said).
    pub notes: Vec<String>,
}

/// What a (possibly called) workflow runs with besides its plan.
#[derive(Clone, Default)]
pub struct RunScope {
    /// The reusable workflows the run may call, by
    /// [`crate::reusable::callee_key`].
    pub callees: Callees,
    /// The workflow's secrets (`None`: the executor's own).
    pub secrets: Option<Arc<BTreeMap<String, String>>>,
    /// Decides which jobs may enter their `environment:` (none: every job,
    /// with no environment secrets).
    pub gate: Option<Arc<dyn EnvironmentGate>>,
    /// Prefix of the jobs' display names (`caller / ` in a called workflow).
    pub name_prefix: String,
    /// Slots shared with the calling run, so a call does not exceed its limit.
    slots: Option<Arc<Semaphore>>,
    /// The remote repository a called workflow comes from (its `./` calls
    /// name files there).
    from: Option<RemoteRef>,
}

/// How an instance ended.
#[derive(Debug, Clone, PartialEq)]
pub struct InstanceOutcome {
    /// Its result.
    pub result: Conclusion,
    /// Its evaluated `outputs:`.
    pub outputs: Object,
    /// Its steps, when they ran (none for a job that calls a workflow, or
    /// one that never got a VM).
    pub job: Option<JobReport>,
}

impl InstanceOutcome {
    /// An outcome without step reports.
    pub fn new(result: Conclusion, outputs: Object) -> Self {
        Self {
            result,
            outputs,
            job: None,
        }
    }
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
    /// Its steps, when they ran (see [`InstanceOutcome::job`]).
    pub job: Option<JobReport>,
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
    pub errors: Vec<RunError>,
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
    /// A scope with these reusable workflows and secrets.
    pub fn new(callees: Callees, secrets: Option<Arc<BTreeMap<String, String>>>) -> Self {
        Self {
            callees,
            secrets,
            ..Self::default()
        }
    }

    /// The same scope with `gate` deciding who enters an environment.
    pub fn with_gate(mut self, gate: Option<Arc<dyn EnvironmentGate>>) -> Self {
        self.gate = gate;
        self
    }
}

impl std::fmt::Debug for RunScope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunScope")
            .field("callees", &self.callees.len())
            .field("secrets", &self.secrets.as_ref().map(|s| s.len()))
            .field("gate", &self.gate.is_some())
            .field("name_prefix", &self.name_prefix)
            .finish()
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
    let global = scope
        .slots
        .clone()
        .unwrap_or_else(|| Arc::new(Semaphore::new(limits.max_parallel_jobs.max(1))));
    let state = RunState {
        scheduler: Scheduler::new(plan.jobs.iter().map(|j| (j.id.clone(), j.needs.clone()))),
        workflow,
        plan,
        contexts,
        executor,
        limits,
        scope,
        cancel,
        started: Instant::now(),
        global,
        progress: HashMap::new(),
        finished: HashMap::new(),
        visible: HashMap::new(),
        report: RunReport {
            instances: Vec::new(),
            jobs: HashMap::new(),
            job_outputs: HashMap::new(),
            conclusion: Conclusion::Success,
            errors: Vec::new(),
        },
        tasks: JoinSet::new(),
        job_cancels: HashMap::new(),
        fail_fast: HashMap::new(),
    };
    Box::pin(state.run())
}

/// The state of one running workflow: which jobs are ready, running and
/// finished, and what they reported.
struct RunState<'a, E: JobExecutor> {
    workflow: Arc<ParsedWorkflow>,
    plan: &'a WorkflowPlan,
    contexts: &'a Object,
    executor: Arc<E>,
    limits: RunLimits,
    scope: RunScope,
    cancel: CancellationToken,
    /// When the run started.
    started: Instant,
    /// Slots of the whole run (shared with the calling run, if any).
    global: Arc<Semaphore>,
    scheduler: Scheduler,
    /// Jobs with instances still running.
    progress: HashMap<String, JobProgress>,
    /// Finished jobs: their combined result and merged outputs.
    finished: HashMap<String, (Conclusion, Object)>,
    /// Finished jobs' results as their dependents see them.
    visible: HashMap<String, Conclusion>,
    report: RunReport,
    tasks: JoinSet<TaskEnd>,
    job_cancels: HashMap<String, CancellationToken>,
    fail_fast: HashMap<String, bool>,
}

impl<'a, E: JobExecutor> RunState<'a, E> {
    async fn run(mut self) -> RunReport {
        loop {
            self.start_ready();
            let Some(joined) = self.tasks.join_next().await else {
                break;
            };
            self.on_instance_end(joined);
        }
        self.conclude()
    }

    /// Starts every ready job; jobs skipped here finish at once and may
    /// make others ready.
    fn start_ready(&mut self) {
        loop {
            let ready = self.scheduler.start_ready();
            if ready.is_empty() {
                return;
            }
            for id in ready {
                self.start_job(&id);
            }
        }
    }

    fn start_job(&mut self, id: &str) {
        let plan: &'a WorkflowPlan = self.plan;
        let planned = plan.jobs.iter().find(|j| j.id == id).expect("planned job");
        let needs = needs_context(&planned.needs, &self.finished, &self.visible);
        let mut job_contexts = self.contexts.clone();
        job_contexts.insert("needs", Value::Object(needs));
        if !self.should_run(planned, &job_contexts) {
            return self.finish_unrun(planned, Conclusion::Skipped);
        }
        match instances_of(&self.workflow, planned, &job_contexts) {
            Ok(combos) => self.spawn_instances(planned, &job_contexts, combos),
            Err(error) => {
                self.report.errors.push(error);
                self.finish_unrun(planned, Conclusion::Failure);
            }
        }
    }

    /// The status functions' view of a job's dependencies.
    fn status(&self, id: &str) -> JobStatus {
        if self.cancel.is_cancelled() {
            JobStatus::Cancelled
        } else if ancestors(self.plan, id)
            .iter()
            .any(|a| self.visible.get(a) == Some(&Conclusion::Failure))
        {
            JobStatus::Failure
        } else {
            JobStatus::Success
        }
    }

    /// Whether a job runs (its `if:`); a bad `if:` is an error and skips it.
    fn should_run(&mut self, planned: &PlannedJob, job_contexts: &Object) -> bool {
        let id = &planned.id;
        let needs_all_succeeded = planned
            .needs
            .iter()
            .all(|n| self.visible.get(n) == Some(&Conclusion::Success));
        let condition = self.workflow.jobs[id].if_cond.as_ref();
        let status = self.status(id);
        match decide_job(
            condition.map(|c| c.value.as_str()),
            job_contexts,
            status,
            needs_all_succeeded,
        ) {
            Ok(run) => run,
            Err(source) => {
                self.report.errors.push(RunError::JobIf {
                    file: self.workflow.file.clone(),
                    job: id.clone(),
                    source,
                });
                false
            }
        }
    }

    /// Ends a job that does not run (skipped, or failed before it started).
    fn finish_unrun(&mut self, planned: &PlannedJob, result: Conclusion) {
        let id = &planned.id;
        self.report.instances.push(InstanceReport {
            job_id: id.clone(),
            name: format!("{}{}", self.scope.name_prefix, planned.name),
            result,
            outputs: Object::new(),
            started: None,
            duration: Duration::ZERO,
            job: None,
        });
        self.report.job_outputs.insert(id.clone(), Object::new());
        self.finished.insert(id.clone(), (result, Object::new()));
        self.visible.insert(id.clone(), result);
        self.scheduler.finish(id, result);
    }

    /// Spawns a task for each matrix combination of a job.
    fn spawn_instances(
        &mut self,
        planned: &PlannedJob,
        job_contexts: &Object,
        combos: Vec<Object>,
    ) {
        let id = &planned.id;
        let strategy = evaluate_strategy(&self.workflow, id, planned, job_contexts);
        self.fail_fast.insert(id.clone(), strategy.fail_fast);
        let slots = JobSlots {
            per_job: Arc::new(Semaphore::new(
                strategy.max_parallel.unwrap_or(usize::MAX >> 4).max(1),
            )),
            global: self.global.clone(),
            turn: Arc::new(watch::Sender::new(0usize)),
            cancel: self.cancel.child_token(),
            fail_fast: strategy.fail_fast,
        };
        self.job_cancels.insert(id.clone(), slots.cancel.clone());
        let total = combos.len();
        self.progress.insert(
            id.clone(),
            JobProgress {
                remaining: total,
                ..JobProgress::default()
            },
        );
        for (index, combo) in combos.into_iter().enumerate() {
            let name = instance_name(planned, &combo, job_contexts);
            let contexts = instance_contexts(job_contexts, combo, index, total, &strategy);
            self.spawn_instance(id, name, contexts, index, slots.clone());
        }
    }

    fn spawn_instance(
        &mut self,
        id: &str,
        name: String,
        contexts: Object,
        index: usize,
        slots: JobSlots,
    ) {
        let job = &self.workflow.jobs[id];
        let call = match &job.body {
            JobBody::Call(call) => Some(call.clone()),
            JobBody::Steps(_) => None,
        };
        let task = InstanceTask {
            executor: self.executor.clone(),
            limits: self.limits,
            scope: RunScope {
                slots: Some(self.global.clone()),
                ..self.scope.clone()
            },
            continue_on_error: continue_on_error(job, &contexts),
            instance: JobInstance {
                job_id: id.to_string(),
                name: format!("{}{name}", self.scope.name_prefix),
                contexts,
                workflow: self.workflow.clone(),
                secrets: self.scope.secrets.clone(),
                notes: Vec::new(),
            },
            call,
            index,
            slots,
            run_started: self.started,
        };
        self.tasks.spawn(task.run());
    }

    /// Records an instance's end; its job finishes with its last instance.
    fn on_instance_end(&mut self, joined: Result<TaskEnd, JoinError>) {
        let end = match joined {
            Ok(end) => end,
            Err(err) => {
                self.report
                    .errors
                    .push(RunError::TaskAborted(err.to_string()));
                return;
            }
        };
        self.report.instances.extend(end.nested);
        self.report.errors.extend(end.errors);
        let id = end.job_id;
        let instance = end.report;
        let progress = self.progress.get_mut(&id).expect("job in progress");
        progress.remaining -= 1;
        progress.results.push(instance.result);
        for (key, value) in instance.outputs.iter() {
            progress.outputs.insert(key.clone(), value.clone());
        }
        if instance.result == Conclusion::Failure && !end.continue_on_error {
            progress.hard_failure = true;
            if self.fail_fast.get(&id).copied().unwrap_or(true) {
                if let Some(token) = self.job_cancels.get(&id) {
                    token.cancel();
                }
            }
        }
        let done = progress.remaining == 0;
        self.report.instances.push(instance);
        if done {
            self.finish_job(&id);
        }
    }

    /// A job whose instances all ended: its combined result and outputs.
    fn finish_job(&mut self, id: &str) {
        let progress = self.progress.get_mut(id).expect("job in progress");
        let result = combine(&progress.results);
        let tolerated = result == Conclusion::Failure && !progress.hard_failure;
        let outputs = std::mem::take(&mut progress.outputs);
        self.report
            .job_outputs
            .insert(id.to_string(), outputs.clone());
        self.finished.insert(id.to_string(), (result, outputs));
        let visible = if tolerated {
            Conclusion::Success
        } else {
            result
        };
        self.visible.insert(id.to_string(), visible);
        self.scheduler.finish(id, result);
    }

    /// The run's report once no job is left to run.
    fn conclude(mut self) -> RunReport {
        for (id, (result, _)) in &self.finished {
            self.report.jobs.insert(id.clone(), *result);
        }
        let any = |wanted: Conclusion| self.visible.values().any(|r| *r == wanted);
        self.report.conclusion = if self.cancel.is_cancelled() {
            Conclusion::Cancelled
        } else if any(Conclusion::Failure) {
            Conclusion::Failure
        } else if any(Conclusion::Cancelled) {
            Conclusion::Cancelled
        } else {
            Conclusion::Success
        };
        if !self.report.errors.is_empty() && self.report.conclusion == Conclusion::Success {
            self.report.conclusion = Conclusion::Failure;
        }
        self.report
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
