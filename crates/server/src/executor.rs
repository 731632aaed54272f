//! Running one claimed workflow run: the [`RunExecutor`] seam between the
//! worker (queue, leases, reporting) and the engine (jobs in microVMs).

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use firerunner_engine::actions::native::CacheScope;
use firerunner_engine::artifacts::ArtifactStore;
use firerunner_engine::cache::CacheStore;
use firerunner_engine::checkout::{CheckoutSource, GitToken};
use firerunner_engine::job::{GuestLayout, JobEnvironment};
use firerunner_engine::learn::{step_records, FinishedJob};
use firerunner_engine::logs::LogHub;
use firerunner_engine::orchestrator::{
    run_workflow, InstanceOutcome, JobExecutor, JobInstance, RunLimits, RunScope,
};
use firerunner_engine::run_context;
use firerunner_engine::vm_executor::VmJobExecutor;
use firerunner_vm::session::SessionManager;
use firerunner_vm::{VmBackend, VmSpec};
use firerunner_workflow::load::parse_workflow;
use firerunner_workflow::model::{JobBody, ParsedWorkflow};
use firerunner_workflow::plan::{plan_workflow, PlanContext};
use firerunner_workflow::trigger::Event;
use firerunner_workflow::Conclusion;
use firerunner_workflow::Value;
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
    /// The secrets jobs may read (`secrets.GITHUB_TOKEN`: a token for this
    /// repository alone with the workflow's `permissions:`, read-only for a
    /// pull request from a fork; absent without a GitHub App).
    pub secrets: BTreeMap<String, String>,
    /// Whether the run's code comes from outside the repository.
    pub trust: Trust,
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

/// The word GitHub uses for a result.
pub fn conclusion_word(result: Conclusion) -> &'static str {
    match result {
        Conclusion::Success => "success",
        Conclusion::Failure => "failure",
        Conclusion::Cancelled => "cancelled",
        Conclusion::Skipped => "skipped",
    }
}

/// How many log lines of a failed job are kept for its report.
const LOG_TAIL_LINES: usize = 30;

/// Runs every job in its own microVM, through the engine.
pub struct VmRunExecutor<B: VmBackend> {
    sessions: SessionManager<B>,
    spec: VmSpec,
    logs: Arc<LogHub>,
    artifacts: Arc<ArtifactStore>,
    cache: Arc<CacheStore>,
    actions_cache_dir: PathBuf,
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
            sessions,
            spec,
            logs,
            artifacts,
            cache,
            actions_cache_dir,
            max_parallel_jobs: max_parallel_jobs.max(1),
        }
    }

    /// The session manager (for capacity figures).
    pub fn sessions(&self) -> &SessionManager<B> {
        &self.sessions
    }
}

fn failed(errors: Vec<String>) -> RunOutcome {
    RunOutcome {
        conclusion: "failure".into(),
        errors,
        never_ran: Vec::new(),
    }
}

/// Local reusable workflows, by the `uses:` path that names them.
type Callees = HashMap<String, Arc<ParsedWorkflow>>;

/// Parses the run's workflow and the local reusable workflows it calls.
fn load_workflows(request: &RunRequest) -> Result<(ParsedWorkflow, Callees), Vec<String>> {
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
    let mut callees = HashMap::new();
    for job in workflow.jobs.values() {
        if let JobBody::Call(call) = &job.body {
            if let Some(path) = call.uses.value.strip_prefix("./") {
                callees.insert(call.uses.value.clone(), Arc::new(parse(path)?));
            }
        }
    }
    Ok((workflow, callees))
}

impl<B: VmBackend> RunExecutor for VmRunExecutor<B> {
    async fn execute(
        &self,
        request: RunRequest,
        events: UnboundedSender<JobEvent>,
        cancel: CancellationToken,
    ) -> RunOutcome {
        let (workflow, callees) = match load_workflows(&request) {
            Ok(loaded) => loaded,
            Err(errors) => return failed(errors),
        };
        let run = &request.run;
        let event = Event::new(run.event.clone(), request.payload.clone());
        let given: Vec<(String, String)> = request
            .payload
            .get("inputs")
            .and_then(|inputs| inputs.as_object())
            .map(|inputs| {
                inputs
                    .iter()
                    .map(|(k, v)| {
                        let text = v.as_str().map_or_else(|| v.to_string(), str::to_string);
                        (k.clone(), text)
                    })
                    .collect()
            })
            .unwrap_or_default();
        let (inputs, _) = run_context::dispatch_inputs(&workflow, &given);
        let mut contexts = run_context::event_contexts(&event, &run.git_ref, &inputs);
        let plan = match plan_workflow(
            &workflow,
            &PlanContext {
                contexts: contexts.clone(),
            },
        ) {
            Ok(plan) => plan,
            Err(err) => return failed(vec![format!("{}: {err}", run.workflow_file)]),
        };
        let layout = GuestLayout::for_repository(&run.repository);
        let github = run_context::github_context(
            &contexts,
            &run.repository,
            &run.sha,
            &run.id,
            &run.workflow_name,
            &layout,
        );
        contexts.insert("github", Value::Object(github.clone()));
        let secrets = request.secrets.clone();
        let default_branch = request
            .payload
            .pointer("/repository/default_branch")
            .and_then(|b| b.as_str())
            .map(|b| format!("refs/heads/{b}"));
        let base_ref = request
            .payload
            .pointer("/pull_request/base/ref")
            .and_then(|b| b.as_str())
            .map(|b| format!("refs/heads/{b}"));
        let mut scopes = vec![run.git_ref.clone()];
        scopes.extend(base_ref);
        scopes.extend(default_branch);
        scopes.dedup();
        let environment = JobEnvironment {
            run_id: run.id.clone(),
            secrets: secrets.clone(),
            default_env: run_context::default_env(&github, &layout),
            layout,
            checkout: Some(CheckoutSource::Commit {
                repository: request.clone_url.clone(),
                commit: run.sha.clone(),
                depth: 1,
                credentials: request.fetch_token.clone().map(GitToken),
            }),
            artifacts: Some(self.artifacts.clone()),
            cache: Some((
                self.cache.clone(),
                CacheScope {
                    repository: run.repository.clone(),
                    scopes,
                },
            )),
            actions_base_url: "https://github.com".into(),
            actions_cache_dir: self.actions_cache_dir.clone(),
        };
        let executor = Arc::new(ObservedExecutor {
            inner: VmJobExecutor::new(
                self.sessions.clone(),
                self.spec.clone(),
                environment,
                self.logs.clone(),
            ),
            logs: self.logs.clone(),
            run_id: run.id.clone(),
            repository: run.repository.clone(),
            commit_sha: run.sha.clone(),
            workflow: run.workflow_name.clone(),
            events,
        });
        let report = run_workflow(
            Arc::new(workflow),
            &plan,
            &contexts,
            executor,
            RunLimits {
                max_parallel_jobs: self.max_parallel_jobs,
            },
            RunScope::new(callees, Some(Arc::new(secrets))),
            cancel.clone(),
        )
        .await;
        RunOutcome {
            conclusion: if cancel.is_cancelled() {
                "cancelled".into()
            } else {
                conclusion_word(report.conclusion).into()
            },
            never_ran: report
                .instances
                .iter()
                .filter(|instance| instance.started.is_none())
                .map(|instance| {
                    (
                        instance.name.clone(),
                        conclusion_word(instance.result).to_string(),
                    )
                })
                .collect(),
            errors: report.errors,
        }
    }
}

/// Wraps the engine's VM executor to report each job as it starts and ends.
struct ObservedExecutor<B: VmBackend> {
    inner: VmJobExecutor<B>,
    logs: Arc<LogHub>,
    run_id: String,
    repository: String,
    commit_sha: String,
    workflow: String,
    events: UnboundedSender<JobEvent>,
}

impl<B: VmBackend> JobExecutor for ObservedExecutor<B> {
    async fn run(&self, instance: JobInstance, cancel: CancellationToken) -> InstanceOutcome {
        let name = instance.name.clone();
        let _ = self.events.send(JobEvent::Started { name: name.clone() });
        let started = Instant::now();
        let outcome = self.inner.run(instance, cancel).await;
        let report = self
            .inner
            .reports()
            .into_iter()
            .rev()
            .find(|(reported, _)| *reported == name)
            .map(|(_, report)| report);
        let steps = report
            .as_ref()
            .map(|report| {
                report
                    .steps
                    .iter()
                    .map(|step| StepRecord {
                        name: step.name.clone(),
                        conclusion: match step.conclusion {
                            Conclusion::Success => "success",
                            Conclusion::Failure => "failure",
                            Conclusion::Cancelled => "cancelled",
                            Conclusion::Skipped => "skipped",
                        }
                        .into(),
                        duration_ms: step.duration.as_millis() as u64,
                    })
                    .collect()
            })
            .unwrap_or_default();
        let lines = self.logs.read(&self.run_id, &name).unwrap_or_default();
        let skip = lines.len().saturating_sub(LOG_TAIL_LINES);
        let log_tail = lines[skip..]
            .iter()
            .map(|line| line.text.as_str())
            .collect::<Vec<_>>()
            .join("\n");
        let learned = report
            .as_ref()
            .map(|report| {
                step_records(&FinishedJob {
                    run_id: &self.run_id,
                    repository: &self.repository,
                    commit_sha: &self.commit_sha,
                    workflow: &self.workflow,
                    job: &name,
                    report,
                    log: &lines,
                    finished_at: std::time::SystemTime::now(),
                })
            })
            .unwrap_or_default();
        let _ = self.events.send(JobEvent::Finished {
            name,
            conclusion: conclusion_word(outcome.result).into(),
            duration: started.elapsed(),
            steps,
            summary: report.map(|r| r.summary).unwrap_or_default(),
            log_tail,
            learned,
        });
        outcome
    }
}
