//! One workflow run from start to end, the way both `firerunner run` and
//! the service execute it: the run's contexts (`github`, `vars`, `inputs`),
//! its guest layout and job environment, its cache scope, the reusable
//! workflows it calls ([`crate::reusable`]), and its jobs, each in its own
//! microVM. Every finished job is turned into learning records once, here,
//! and handed with its steps and log to the caller's [`RunObserver`].

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use firerunner_learning::StepRecord;
use firerunner_vm::session::SessionManager;
use firerunner_vm::{VmBackend, VmSpec};
use firerunner_workflow::load::WorkflowSource;
use firerunner_workflow::plan::WorkflowPlan;
use firerunner_workflow::trigger::Event;
use firerunner_workflow::Conclusion;
use firerunner_workflow::{Object, ParsedWorkflow, Value};
use tokio::sync::mpsc::UnboundedSender;
use tokio_util::sync::CancellationToken;

use crate::actions::native::CacheScope;
use crate::actions::remote::ActionSource;
use crate::checkout::CheckoutSource;
use crate::environment::EnvironmentGate;
use crate::job::{GuestLayout, JobEnvironment, JobReport};
use crate::learn::{indexed_step_records, FinishedJob};
use crate::logs::{LogHub, LogLine};
use crate::orchestrator::{
    run_workflow, InstanceOutcome, JobExecutor, JobInstance, RunLimits, RunReport, RunScope,
};
use crate::reusable::{resolve_callees, Callees, RemoteWorkflows};
use crate::run_context;
use crate::stores::artifacts::ArtifactStore;
use crate::stores::cache::CacheStore;
use crate::vm_executor::VmJobExecutor;

/// What every run of one host shares: VMs, stores and logs.
pub struct Engine<B: VmBackend> {
    /// Where job VMs come from.
    pub sessions: SessionManager<B>,
    /// The guest every job VM boots.
    pub spec: VmSpec,
    /// Every job's log.
    pub logs: Arc<LogHub>,
    /// The store behind `actions/upload-artifact` and `download-artifact`.
    pub artifacts: Arc<ArtifactStore>,
    /// The store behind `actions/cache`.
    pub cache: Arc<CacheStore>,
    /// Where remote actions and reusable workflows are fetched to (the
    /// action cache; layout in [`crate::actions::store`]).
    pub actions_cache_dir: PathBuf,
    /// Never fetch actions: use only what the action cache holds (a host
    /// without network).
    pub actions_offline: bool,
}

/// One run of one workflow: what differs between runs and their callers.
pub struct WorkflowRun {
    /// The run's id (numeric, like GitHub's).
    pub run_id: String,
    /// The repository (`owner/name`).
    pub repository: String,
    /// The commit the run builds.
    pub sha: String,
    /// The ref the run is for (`refs/heads/main`).
    pub git_ref: String,
    /// The workflow's name (or file when it has none).
    pub workflow_name: String,
    /// The triggering event.
    pub event: Event,
    /// The workflow.
    pub workflow: Arc<ParsedWorkflow>,
    /// Its plan (the caller may have left jobs or matrix values out).
    pub plan: WorkflowPlan,
    /// The `inputs` context.
    pub inputs: Object,
    /// The secrets jobs may read.
    pub secrets: BTreeMap<String, String>,
    /// The `vars` context.
    pub vars: BTreeMap<String, String>,
    /// What `actions/checkout` checks out.
    pub checkout: CheckoutSource,
    /// The refs whose caches jobs may restore, the run's own first.
    pub cache_scopes: Vec<String>,
    /// Where remote actions and reusable workflows are fetched from.
    pub actions_base_url: String,
    /// The workflow files of the run's repository at its commit.
    pub workflows: Arc<dyn WorkflowSource + Send + Sync>,
    /// The run's limits.
    pub limits: RunLimits,
    /// Decides which jobs may enter their `environment:` and what they get
    /// there (the service's rules; `None`: the key only names it).
    pub environments: Option<Arc<dyn EnvironmentGate>>,
}

/// What happens to a run's jobs, as it happens.
#[derive(Debug, Clone)]
pub enum RunEvent {
    /// A job instance is handed to its VM.
    Started {
        /// Its display name.
        name: String,
    },
    /// A job instance ended.
    Finished(Box<FinishedInstance>),
}

/// A job instance that ended, with what the learning layer makes of it.
#[derive(Debug, Clone)]
pub struct FinishedInstance {
    /// Its display name.
    pub name: String,
    /// Its result.
    pub result: Conclusion,
    /// How long it ran, VM included.
    pub duration: Duration,
    /// Its steps, when they ran.
    pub job: Option<JobReport>,
    /// Its log lines.
    pub log: Vec<LogLine>,
    /// Its steps as learning records, each with its index in the job's steps.
    pub learned: Vec<(usize, StepRecord)>,
}

/// Told about a run's jobs while it runs.
pub trait RunObserver: Send + Sync + 'static {
    /// Called as each job instance starts and ends.
    fn event(&self, event: RunEvent);
}

impl RunObserver for UnboundedSender<RunEvent> {
    fn event(&self, event: RunEvent) {
        let _ = self.send(event);
    }
}

impl<B: VmBackend> Engine<B> {
    /// Runs `run` until it ends or `cancel` fires, telling `observer` about
    /// each job.
    pub async fn run(
        &self,
        run: WorkflowRun,
        observer: impl RunObserver,
        cancel: CancellationToken,
    ) -> RunReport {
        let layout = GuestLayout::for_repository(&run.repository);
        let (contexts, github) = run_contexts(&run, &layout);
        let environment = self.environment(&run, &github, layout);
        let callees = self.callees(&run).await;
        let executor = Arc::new(ObservedExecutor {
            inner: VmJobExecutor::new(
                self.sessions.clone(),
                self.spec.clone(),
                environment,
                self.logs.clone(),
            ),
            logs: self.logs.clone(),
            run_id: run.run_id.clone(),
            repository: run.repository.clone(),
            sha: run.sha.clone(),
            workflow_name: run.workflow_name.clone(),
            observer,
        });
        let scope = RunScope::new(callees, Some(Arc::new(run.secrets.clone())))
            .with_gate(run.environments.clone());
        let workflow = run.workflow.clone();
        run_workflow(
            workflow, &run.plan, &contexts, executor, run.limits, scope, cancel,
        )
        .await
    }

    /// The job environment of `run`.
    fn environment(
        &self,
        run: &WorkflowRun,
        github: &Object,
        layout: GuestLayout,
    ) -> JobEnvironment {
        JobEnvironment {
            run_id: run.run_id.clone(),
            secrets: run.secrets.clone(),
            default_env: run_context::default_env(github, &layout),
            layout,
            checkout: Some(run.checkout.clone()),
            artifacts: Some(self.artifacts.clone()),
            cache: Some((
                self.cache.clone(),
                CacheScope {
                    repository: run.repository.clone(),
                    scopes: run.cache_scopes.clone(),
                },
            )),
            actions: self.action_source(run),
        }
    }

    /// Where `run`'s actions come from and are kept.
    fn action_source(&self, run: &WorkflowRun) -> ActionSource {
        ActionSource {
            base_url: run.actions_base_url.clone(),
            cache_dir: self.actions_cache_dir.clone(),
            offline: self.actions_offline,
        }
    }

    /// The reusable workflows `run` calls (remote ones fetched off the
    /// runtime's threads).
    async fn callees(&self, run: &WorkflowRun) -> Callees {
        let workflow = run.workflow.clone();
        let local = run.workflows.clone();
        let remote = RemoteWorkflows {
            source: self.action_source(run),
        };
        tokio::task::spawn_blocking(move || resolve_callees(&workflow, local.as_ref(), &remote))
            .await
            .unwrap_or_default()
    }
}

/// The run's contexts (`github`, `vars`, `inputs`), and its `github` alone.
fn run_contexts(run: &WorkflowRun, layout: &GuestLayout) -> (Object, Object) {
    let mut contexts = run_context::event_contexts(&run.event, &run.git_ref, &run.inputs);
    let github = run_context::github_context(
        &contexts,
        &run.repository,
        &run.sha,
        &run.run_id,
        &run.workflow_name,
        layout,
    );
    contexts.insert("github", Value::Object(github.clone()));
    let vars = run
        .vars
        .iter()
        .map(|(k, v)| (k.clone(), Value::from(v.as_str())))
        .collect();
    contexts.insert("vars", Value::Object(vars));
    (contexts, github)
}

/// The VM executor, telling an observer about each job and turning each
/// finished one into learning records.
struct ObservedExecutor<B: VmBackend, O: RunObserver> {
    inner: VmJobExecutor<B>,
    logs: Arc<LogHub>,
    run_id: String,
    repository: String,
    sha: String,
    workflow_name: String,
    observer: O,
}

impl<B: VmBackend, O: RunObserver> ObservedExecutor<B, O> {
    /// The finished instance `name`, with its log and learning records.
    fn finished(
        &self,
        name: String,
        outcome: &InstanceOutcome,
        duration: Duration,
    ) -> FinishedInstance {
        let log = self.logs.read(&self.run_id, &name).unwrap_or_default();
        let learned = outcome
            .job
            .as_ref()
            .map(|report| {
                indexed_step_records(&FinishedJob {
                    run_id: &self.run_id,
                    repository: &self.repository,
                    commit_sha: &self.sha,
                    workflow: &self.workflow_name,
                    job: &name,
                    report,
                    log: &log,
                    finished_at: SystemTime::now(),
                })
            })
            .unwrap_or_default();
        FinishedInstance {
            name,
            result: outcome.result,
            duration,
            job: outcome.job.clone(),
            log,
            learned,
        }
    }
}

impl<B: VmBackend, O: RunObserver> JobExecutor for ObservedExecutor<B, O> {
    async fn run(&self, instance: JobInstance, cancel: CancellationToken) -> InstanceOutcome {
        let name = instance.name.clone();
        self.observer
            .event(RunEvent::Started { name: name.clone() });
        let started = Instant::now();
        let outcome = self.inner.run(instance, cancel).await;
        let finished = self.finished(name, &outcome, started.elapsed());
        self.observer.event(RunEvent::Finished(Box::new(finished)));
        outcome
    }
}
