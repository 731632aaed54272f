//! Running one claimed workflow run: the [`RunExecutor`] seam between the
//! worker (queue, leases, reporting) and the engine (jobs in microVMs).

use std::collections::BTreeMap;
use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use firerunner_engine::checkout::{CheckoutSource, GitToken};
use firerunner_engine::environment::EnvironmentGate;
use firerunner_engine::job::JobReport;
use firerunner_engine::logs::{LogHub, LogLine};
use firerunner_engine::orchestrator::{RunLimits, RunReport};
use firerunner_engine::run::{Engine, FinishedInstance, RunEvent, RunObserver, WorkflowRun};
use firerunner_engine::run_context;
use firerunner_engine::stores::artifacts::ArtifactStore;
use firerunner_engine::stores::cache::CacheStore;
use firerunner_vm::session::SessionManager;
use firerunner_vm::{VmBackend, VmSpec};
use firerunner_workflow::load::{parse_workflow, WorkflowSource};
use firerunner_workflow::model::{JobBody, ParsedWorkflow};
use firerunner_workflow::plan::{plan_workflow, PlanContext};
use firerunner_workflow::trigger::Event;
use firerunner_workflow::{Value, WorkflowRef};
use tokio::sync::mpsc::UnboundedSender;
use tokio_util::sync::CancellationToken;

use crate::report::StepRecord;
use crate::store::NewRun;

/// Everything a run needs, gathered by the worker.
#[derive(Debug, Clone)]
pub struct RunRequest {
    /// The queued run.
    pub run: NewRun,
    /// The triggering event's payload.
    pub payload: serde_json::Value,
    /// Every workflow file at the commit, `(path, text)`: the run's own and
    /// the local reusable workflows it may call.
    pub workflows: Vec<(String, String)>,
    /// Where to fetch the repository from (URL or path).
    pub clone_url: String,
    /// The token the host fetches the repository with; it never enters a VM.
    pub fetch_token: Option<String>,
    /// The secrets jobs may read: the store's organization and repository
    /// secrets (none for a pull request from a fork) and `GITHUB_TOKEN` (a
    /// token for this repository alone with the workflow's `permissions:`,
    /// read-only for a fork; absent without a GitHub App).
    pub secrets: BTreeMap<String, String>,
    /// The `vars` context: the organization's and repository's variables
    /// (none for a fork).
    pub vars: BTreeMap<String, String>,
    /// Decides which jobs may enter their `environment:` and adds that
    /// environment's secrets and variables.
    pub environments: Option<Gate>,
    /// Whether the run's code comes from outside the repository.
    pub trust: Trust,
}

/// A run's environment gate, as the executor hands it to the engine.
#[derive(Clone)]
pub struct Gate(pub Arc<dyn EnvironmentGate>);

impl std::fmt::Debug for Gate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Gate")
    }
}

/// Whose code a run executes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trust {
    /// Code pushed to the repository (or the base branch's workflow of a
    /// `pull_request_target`, as on GitHub).
    Repository,
    /// A pull request from a fork: no secrets, a read-only token.
    Fork,
}

impl Trust {
    /// `Fork` for a `pull_request` (or review) event whose head repository
    /// is not the base repository, or was deleted.
    pub fn of_event(event: &str, payload: &serde_json::Value) -> Trust {
        const FROM_HEAD: [&str; 3] = [
            "pull_request",
            "pull_request_review",
            "pull_request_review_comment",
        ];
        if !FROM_HEAD.contains(&event) {
            return Trust::Repository;
        }
        let name = |pointer: &str| payload.pointer(pointer).and_then(|v| v.as_str());
        let base = name("/pull_request/base/repo/full_name").or(name("/repository/full_name"));
        match (name("/pull_request/head/repo/full_name"), base) {
            (Some(head), Some(base)) if head == base => Trust::Repository,
            _ => Trust::Fork,
        }
    }
}

/// What happens to jobs while a run executes.
#[derive(Debug, Clone, PartialEq)]
pub enum JobEvent {
    /// A job instance got its VM and started.
    Started {
        /// Its display name.
        name: String,
    },
    /// A job instance ended.
    Finished {
        /// Its display name.
        name: String,
        /// `success`, `failure`, `cancelled` or `skipped`.
        conclusion: String,
        /// How long it ran.
        duration: Duration,
        /// Its steps.
        steps: Vec<StepRecord>,
        /// Its joined step summaries.
        summary: String,
        /// The last lines of its log.
        log_tail: String,
        /// Its steps as the learning store records them (commands, exit
        /// codes, each failing step's own log tail).
        learned: Vec<firerunner_learning::StepRecord>,
        /// Its evaluated `environment.url`, when it has one.
        environment_url: Option<String>,
    },
}

/// How a run ended.
#[derive(Debug, Clone, PartialEq)]
pub struct RunOutcome {
    /// `success`, `failure` or `cancelled`.
    pub conclusion: String,
    /// Problems that stopped the run or its jobs before they ran.
    pub errors: Vec<String>,
    /// Job instances that never started (skipped or cancelled), with their result.
    pub never_ran: Vec<(String, String)>,
}

/// Runs a claimed run to its end.
pub trait RunExecutor: Send + Sync + 'static {
    /// Executes `request`, telling `events` about each job, until it ends or
    /// `cancel` fires.
    fn execute(
        &self,
        request: RunRequest,
        events: UnboundedSender<JobEvent>,
        cancel: CancellationToken,
    ) -> impl Future<Output = RunOutcome> + Send;
}

/// How many log lines of a failed job are kept for its report.
const LOG_TAIL_LINES: usize = 30;

/// Runs every job in its own microVM, through the engine.
pub struct VmRunExecutor<B: VmBackend> {
    engine: Engine<B>,
    max_parallel_jobs: usize,
}

impl<B: VmBackend> VmRunExecutor<B> {
    /// An executor taking VMs for `spec` from `sessions`.
    pub fn new(
        sessions: SessionManager<B>,
        spec: VmSpec,
        logs: Arc<LogHub>,
        artifacts: Arc<ArtifactStore>,
        cache: Arc<CacheStore>,
        actions_cache_dir: PathBuf,
        max_parallel_jobs: usize,
    ) -> Self {
        Self {
            engine: Engine {
                sessions,
                spec,
                logs,
                artifacts,
                cache,
                actions_cache_dir,
                actions_offline: false,
            },
            max_parallel_jobs: max_parallel_jobs.max(1),
        }
    }

    /// The session manager (for capacity figures).
    pub fn sessions(&self) -> &SessionManager<B> {
        &self.engine.sessions
    }
}

fn failed(errors: Vec<String>) -> RunOutcome {
    RunOutcome {
        conclusion: "failure".into(),
        errors,
        never_ran: Vec::new(),
    }
}

/// The workflow files of the run's commit, as the engine reads them.
struct CommitWorkflows(Vec<(String, String)>);

impl WorkflowSource for CommitWorkflows {
    fn workflow_text(&self, reference: &WorkflowRef) -> Option<String> {
        let (WorkflowRef::Local { path } | WorkflowRef::SelfRepo { path }) = reference else {
            return None;
        };
        let (_, text) = self.0.iter().find(|(p, _)| p == path)?;
        Some(text.clone())
    }
}

/// Parses the run's workflow; the reusable workflows of the repository it
/// calls must be there and parse.
fn load_workflow(request: &RunRequest) -> Result<ParsedWorkflow, Vec<String>> {
    let parse = |path: &str| -> Result<ParsedWorkflow, Vec<String>> {
        let (_, text) = request
            .workflows
            .iter()
            .find(|(p, _)| p == path)
            .ok_or_else(|| vec![format!("{path} is not in the repository at this commit")])?;
        parse_workflow(path, text)
            .map_err(|problems| problems.0.iter().map(ToString::to_string).collect())
    };
    let workflow = parse(&request.run.workflow_file)?;
    for job in workflow.jobs.values() {
        if let JobBody::Call(call) = &job.body {
            if let WorkflowRef::Local { path } | WorkflowRef::SelfRepo { path } = &call.reference {
                parse(path)?;
            }
        }
    }
    Ok(workflow)
}

/// `workflow_dispatch` inputs given in the payload, as text.
fn payload_inputs(payload: &serde_json::Value) -> Vec<(String, String)> {
    let Some(inputs) = payload.get("inputs").and_then(|inputs| inputs.as_object()) else {
        return Vec::new();
    };
    inputs
        .iter()
        .map(|(k, v)| {
            let text = v.as_str().map_or_else(|| v.to_string(), str::to_string);
            (k.clone(), text)
        })
        .collect()
}

/// The refs whose caches the run may restore: its own, the pull request's
/// base, then the default branch.
fn cache_scopes(request: &RunRequest) -> Vec<String> {
    let branch = |pointer: &str| {
        request
            .payload
            .pointer(pointer)
            .and_then(|b| b.as_str())
            .map(|b| format!("refs/heads/{b}"))
    };
    let mut scopes = vec![request.run.git_ref.clone()];
    scopes.extend(branch("/pull_request/base/ref"));
    scopes.extend(branch("/repository/default_branch"));
    scopes.dedup();
    scopes
}

/// The engine's view of a claimed run: its workflow planned, its checkout
/// and cache scopes.
fn workflow_run(request: RunRequest, limits: RunLimits) -> Result<WorkflowRun, Vec<String>> {
    let workflow = load_workflow(&request)?;
    let run = &request.run;
    let event = Event::new(run.event.clone(), request.payload.clone());
    let (inputs, _) = run_context::dispatch_inputs(&workflow, &payload_inputs(&request.payload));
    let mut contexts = run_context::event_contexts(&event, &run.git_ref, &inputs);
    let vars = request
        .vars
        .iter()
        .map(|(k, v)| (k.clone(), Value::from(v.as_str())))
        .collect();
    contexts.insert("vars", Value::Object(vars));
    let plan = plan_workflow(&workflow, &PlanContext { contexts })
        .map_err(|err| vec![format!("{}: {err}", run.workflow_file)])?;
    let cache_scopes = cache_scopes(&request);
    let checkout = CheckoutSource::Commit {
        repository: request.clone_url.clone(),
        commit: run.sha.clone(),
        depth: 1,
        credentials: request.fetch_token.clone().map(GitToken),
    };
    Ok(WorkflowRun {
        run_id: run.id.clone(),
        repository: run.repository.clone(),
        sha: run.sha.clone(),
        git_ref: run.git_ref.clone(),
        workflow_name: run.workflow_name.clone(),
        event,
        workflow: Arc::new(workflow),
        plan,
        inputs,
        secrets: request.secrets,
        vars: request.vars,
        checkout,
        cache_scopes,
        actions_base_url: "https://github.com".into(),
        workflows: Arc::new(CommitWorkflows(request.workflows)),
        limits,
        environments: request.environments.map(|gate| gate.0),
    })
}

/// How a run ended, from the engine's report.
fn outcome(report: RunReport, cancel: &CancellationToken) -> RunOutcome {
    RunOutcome {
        conclusion: if cancel.is_cancelled() {
            "cancelled".into()
        } else {
            report.conclusion.as_str().into()
        },
        never_ran: report
            .instances
            .iter()
            .filter(|instance| instance.started.is_none())
            .map(|instance| (instance.name.clone(), instance.result.as_str().to_string()))
            .collect(),
        errors: report.errors.iter().map(ToString::to_string).collect(),
    }
}

impl<B: VmBackend> RunExecutor for VmRunExecutor<B> {
    async fn execute(
        &self,
        request: RunRequest,
        events: UnboundedSender<JobEvent>,
        cancel: CancellationToken,
    ) -> RunOutcome {
        let limits = RunLimits {
            max_parallel_jobs: self.max_parallel_jobs,
        };
        let run = match workflow_run(request, limits) {
            Ok(run) => run,
            Err(errors) => return failed(errors),
        };
        let report = self
            .engine
            .run(run, JobEvents(events), cancel.clone())
            .await;
        outcome(report, &cancel)
    }
}

/// Turns the engine's job events into the worker's.
struct JobEvents(UnboundedSender<JobEvent>);

impl RunObserver for JobEvents {
    fn event(&self, event: RunEvent) {
        let event = match event {
            RunEvent::Started { name } => JobEvent::Started { name },
            RunEvent::Finished(finished) => finished_event(*finished),
        };
        let _ = self.0.send(event);
    }
}

fn finished_event(finished: FinishedInstance) -> JobEvent {
    let FinishedInstance {
        name,
        result,
        duration,
        job,
        log,
        learned,
    } = finished;
    JobEvent::Finished {
        name,
        conclusion: result.as_str().into(),
        duration,
        steps: job.as_ref().map(step_records).unwrap_or_default(),
        summary: job
            .as_ref()
            .map(|job| job.summary.clone())
            .unwrap_or_default(),
        log_tail: log_tail(&log),
        learned: learned.into_iter().map(|(_, record)| record).collect(),
        environment_url: job.as_ref().and_then(|job| job.environment_url.clone()),
    }
}

/// A job's steps as the worker reports them.
fn step_records(job: &JobReport) -> Vec<StepRecord> {
    job.steps
        .iter()
        .map(|step| StepRecord {
            name: step.name.clone(),
            conclusion: step.conclusion.as_str().into(),
            duration_ms: step.duration.as_millis() as u64,
        })
        .collect()
}

/// The last [`LOG_TAIL_LINES`] lines of a job's log.
fn log_tail(lines: &[LogLine]) -> String {
    let skip = lines.len().saturating_sub(LOG_TAIL_LINES);
    lines[skip..]
        .iter()
        .map(|line| line.text.as_str())
        .collect::<Vec<_>>()
        .join("\n")
}
