//! The dispatcher: turns stored deliveries into queued runs. For each
//! delivery it finds the workflow files at the event's commit, decides which
//! the event triggers (every `on:` filter), and queues one run per
//! triggered workflow, with pending statuses and the pull request comment.
//! Transient GitHub errors are retried with exponential backoff; a delivery
//! is settled exactly once (`dispatched`, `ignored` or `failed`, with a note).

use std::time::Duration;

use firerunner_engine::checkout::{resolve_ref, GitToken};
use firerunner_engine::run_context;
use firerunner_github::api::RepoRef;
use firerunner_github::webhook::WebhookEvent;
use firerunner_github::GitHubClient;
use firerunner_workflow::expr::{self, EvalContext};
use firerunner_workflow::load::parse_workflow;
use firerunner_workflow::model::ParsedWorkflow;
use firerunner_workflow::plan::{plan_workflow, PlanContext};
use firerunner_workflow::trigger::{decide, Event as TriggerEvent, TriggerDecision};
use firerunner_workflow::{Object, Value};
use sha2::{Digest, Sha256};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::environments::comment_command;
use crate::live::LiveEvent;
use crate::report::{post_job_status, update_pull_request_comment};
use crate::state::AppState;
use crate::store::{Concurrency, DeliveryState, NewRun, PendingDelivery, StoreError};

/// Deliveries dispatched at once.
const PARALLEL_DISPATCH: usize = 8;
/// How long a dispatcher holds a delivery before another may take it.
const DISPATCH_LEASE: Duration = Duration::from_secs(120);

/// What became of a delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Dispatch {
    /// Runs were queued.
    Dispatched(String),
    /// Nothing to run, and why.
    Ignored(String),
    /// It cannot be dispatched, and why.
    Failed(String),
    /// A transient error: try again later.
    Retry(String),
}

/// Dispatches deliveries until `shutdown` fires.
pub async fn run_dispatcher(state: AppState, shutdown: CancellationToken) {
    let me = state.config.worker.id.clone();
    match state.store.release_dispatching(&me).await {
        Ok(0) => {}
        Ok(n) => {
            tracing::warn!("{n} delivery(ies) interrupted by the last stop are dispatched again")
        }
        Err(err) => state.report_error("dispatch", &err.to_string()).await,
    }
    loop {
        let found = dispatch_pending(&state, &me, &shutdown).await;
        if shutdown.is_cancelled() {
            return;
        }
        if found {
            continue;
        }
        tokio::select! {
            _ = state.wake_dispatcher.notified() => {}
            _ = tokio::time::sleep(Duration::from_secs(2)) => {}
            _ = shutdown.cancelled() => return,
        }
    }
}

/// Dispatches the deliveries pending now, [`PARALLEL_DISPATCH`] at once;
/// `false` when there were none.
async fn dispatch_pending(state: &AppState, me: &str, shutdown: &CancellationToken) -> bool {
    let pending = match state.store.pending_deliveries(64).await {
        Ok(pending) => pending,
        Err(err) => {
            state.report_error("dispatch", &err.to_string()).await;
            Vec::new()
        }
    };
    let found = !pending.is_empty();
    let mut tasks = JoinSet::new();
    for delivery in pending {
        if shutdown.is_cancelled() {
            break;
        }
        while tasks.len() >= PARALLEL_DISPATCH {
            tasks.join_next().await;
        }
        match state
            .store
            .claim_delivery(&delivery.delivery_id, me, DISPATCH_LEASE)
            .await
        {
            Ok(true) => {
                let state = state.clone();
                tasks.spawn(async move { dispatch_and_settle(&state, delivery).await });
            }
            Ok(false) => {}
            Err(err) => state.report_error("dispatch", &err.to_string()).await,
        }
    }
    while tasks.join_next().await.is_some() {}
    found
}

async fn dispatch_and_settle(state: &AppState, delivery: PendingDelivery) {
    let id = delivery.delivery_id.clone();
    let outcome = dispatch(state, &delivery).await;
    let (label, result) = settle(state, &id, delivery.attempts, &outcome).await;
    metrics::counter!("firerunner_deliveries_total", "outcome" => label).increment(1);
    if let Err(err) = result {
        state
            .report_error("dispatch", &format!("settling delivery {id}: {err}"))
            .await;
    }
    if let Ok(Some(record)) = state.store.delivery(&id).await {
        state.live.publish(LiveEvent::Delivery(record));
    }
}

/// Writes what became of a delivery (after `attempts` earlier tries);
/// returns the outcome's metric label with the store's answer.
async fn settle(
    state: &AppState,
    id: &str,
    attempts: i64,
    outcome: &Dispatch,
) -> (&'static str, Result<(), StoreError>) {
    let (settled, note) = match outcome {
        Dispatch::Dispatched(note) => (DeliveryState::Dispatched, note.clone()),
        Dispatch::Ignored(note) => (DeliveryState::Ignored, note.clone()),
        Dispatch::Failed(note) => (DeliveryState::Failed, note.clone()),
        Dispatch::Retry(note) => {
            let max = i64::from(state.config.limits.dispatch_attempts);
            if attempts + 1 < max {
                let delay = Duration::from_secs(2u64.pow(attempts.clamp(0, 9) as u32))
                    .min(Duration::from_secs(600));
                let result = state.store.retry_delivery(id, delay, note).await;
                return ("retried", result);
            }
            let note = format!("gave up after {max} attempts: {note}");
            (DeliveryState::Failed, note)
        }
    };
    if settled == DeliveryState::Failed {
        state
            .report_error("dispatch", &format!("delivery {id}: {note}"))
            .await;
    }
    let result = state.store.settle_delivery(id, settled, &note).await;
    (settled.as_str(), result)
}

/// A stable run id for one workflow of one delivery, so that dispatching a
/// delivery twice (after a crash) queues nothing twice.
pub fn run_id(delivery_id: &str, workflow_file: &str) -> String {
    let digest = Sha256::digest(format!("{delivery_id}\n{workflow_file}"));
    digest[..10].iter().map(|b| format!("{b:02x}")).collect()
}

/// Decides what a delivery runs and queues it; a pull request comment
/// with a `/firerunner approve|reject` command also decides the
/// deployments it names (see [`crate::environments::comment_command`]).
pub async fn dispatch(state: &AppState, delivery: &PendingDelivery) -> Dispatch {
    let payload = serde_json::from_str(&delivery.payload).unwrap_or_default();
    let command = comment_command(state, &delivery.event, &payload).await;
    let outcome = dispatch_workflows(state, delivery).await;
    match (command, outcome) {
        (None, outcome) => outcome,
        (Some(done), Dispatch::Ignored(_)) => Dispatch::Dispatched(done),
        (Some(done), Dispatch::Dispatched(note)) => Dispatch::Dispatched(format!("{done}; {note}")),
        (Some(done), Dispatch::Failed(note)) => Dispatch::Failed(format!("{done}; {note}")),
        (Some(done), Dispatch::Retry(note)) => Dispatch::Retry(format!("{done}; {note}")),
    }
}

/// Decides which workflows a delivery runs and queues them.
async fn dispatch_workflows(state: &AppState, delivery: &PendingDelivery) -> Dispatch {
    let mut dispatching = match Dispatching::start(state, delivery).await {
        Ok(dispatching) => dispatching,
        Err(outcome) => return outcome,
    };
    let files = match state
        .workflow_files(&dispatching.repo, &dispatching.sha)
        .await
    {
        Ok(files) => files,
        Err(err) if err.is_transient() => return Dispatch::Retry(err.to_string()),
        Err(err) => return Dispatch::Failed(err.to_string()),
    };
    for (path, text) in files.iter() {
        if let Err(outcome) = dispatching.workflow(path, text).await {
            return outcome;
        }
    }
    dispatching.announce().await;
    dispatching.outcome(files.is_empty())
}

/// The repository and default branch an event runs in, or why it runs
/// nothing (no repository, one not allowed, a deleted branch).
fn repository_of(state: &AppState, event: &WebhookEvent) -> Result<(String, String), Dispatch> {
    let (repository, default_branch) = named_repository(event)?;
    if !state.config.repository_allowed(&repository) {
        let note = format!("{repository} is not in allow.repositories");
        return Err(Dispatch::Ignored(note));
    }
    if let WebhookEvent::Push(push) = event {
        if push.deleted {
            let note = "a deleted branch or tag runs no workflows";
            return Err(Dispatch::Ignored(note.into()));
        }
    }
    Ok((repository, default_branch))
}

fn named_repository(event: &WebhookEvent) -> Result<(String, String), Dispatch> {
    match (event, event.repository()) {
        (WebhookEvent::Ping(ping), _) => {
            Err(Dispatch::Ignored(format!("ping from GitHub: {}", ping.zen)))
        }
        (_, None) => Err(Dispatch::Ignored("the event names no repository".into())),
        (_, Some(repository)) => Ok((
            repository.full_name.clone(),
            repository.default_branch.clone(),
        )),
    }
}

/// One delivery being dispatched: its event, where it runs, and what its
/// workflows came to so far.
struct Dispatching<'a> {
    state: &'a AppState,
    delivery: &'a PendingDelivery,
    github: &'a GitHubClient,
    event: WebhookEvent,
    /// The event as the `on:` filters see it (with the changed files once asked for).
    trigger: TriggerEvent,
    repository: String,
    repo: RepoRef,
    git_ref: String,
    sha: String,
    /// What was queued, for the note.
    queued: Vec<String>,
    /// What was not run and why, for the note.
    skipped: Vec<String>,
    /// Runs queued now, with their planned job names.
    runs: Vec<(NewRun, Vec<String>)>,
}

impl<'a> Dispatching<'a> {
    /// Reads the delivery's event and finds its repository and commit.
    async fn start(
        state: &'a AppState,
        delivery: &'a PendingDelivery,
    ) -> Result<Dispatching<'a>, Dispatch> {
        let event = WebhookEvent::parse(&delivery.event, delivery.payload.as_bytes())
            .map_err(|err| Dispatch::Failed(err.to_string()))?;
        let (repository, default_branch) = repository_of(state, &event)?;
        let github = state.github.as_ref().ok_or_else(|| {
            Dispatch::Failed(
                "no GitHub credentials are configured (github.token or github.app_id)".into(),
            )
        })?;
        let repo = RepoRef::parse(&repository, event.installation_id())
            .ok_or_else(|| Dispatch::Failed(format!("{repository} is not owner/name")))?;
        let git_ref = event
            .git_ref()
            .unwrap_or_else(|| format!("refs/heads/{default_branch}"));
        let sha = match event.head_sha() {
            Some(sha) => sha.to_string(),
            None => resolve_sha(state, &repo, &repository, &git_ref).await?,
        };
        Ok(Dispatching {
            state,
            delivery,
            github,
            trigger: event.to_trigger_event(),
            event,
            repository,
            repo,
            git_ref,
            sha,
            queued: Vec::new(),
            skipped: Vec::new(),
            runs: Vec::new(),
        })
    }

    /// Queues the run of one workflow file if the event triggers it.
    async fn workflow(&mut self, path: &str, text: &str) -> Result<(), Dispatch> {
        if !self.state.config.workflow_allowed(path) {
            self.skipped.push(format!("{path}: not in allow.workflows"));
            return Ok(());
        }
        let Some(workflow) = self.parse(path, text).await else {
            return Ok(());
        };
        if let TriggerDecision::Skip { reason } = self.decide(&workflow).await? {
            self.skipped.push(format!("{path}: {reason}"));
            return Ok(());
        }
        let contexts = run_context::event_contexts(
            &self.trigger,
            &self.git_ref,
            &dispatch_inputs(&workflow, &self.trigger.payload),
        );
        let Some(planned) = self.plan(path, &workflow, &contexts).await else {
            return Ok(());
        };
        let run = self.new_run(path, &workflow, &contexts);
        self.enqueue(run, planned).await
    }

    /// The workflow in `text`; an invalid one is skipped with a failed status.
    async fn parse(&mut self, path: &str, text: &str) -> Option<ParsedWorkflow> {
        let problems = match parse_workflow(path, text) {
            Ok(workflow) => return Some(workflow),
            Err(problems) => problems,
        };
        let first = problems
            .0
            .first()
            .map(ToString::to_string)
            .unwrap_or_default();
        self.skipped.push(format!(
            "{path}: invalid ({} problem(s)): {first}",
            problems.0.len()
        ));
        invalid_workflow_status(self.state, &self.repo, &self.sha, path, &first).await;
        None
    }

    /// Whether the event triggers `workflow`, asking GitHub for the pull
    /// request's changed files when a `paths:` filter needs them.
    async fn decide(&mut self, workflow: &ParsedWorkflow) -> Result<TriggerDecision, Dispatch> {
        let decision = decide(workflow, &self.trigger);
        let number = self.event.pull_request_number();
        let (TriggerDecision::NeedsChangedFiles, Some(number)) = (&decision, number) else {
            return Ok(decision);
        };
        match self.github.pull_request_files(&self.repo, number).await {
            Ok(changed) => self.trigger = self.trigger.clone().with_changed_files(changed),
            Err(err) if err.is_transient() => return Err(Dispatch::Retry(err.to_string())),
            Err(err) => return Err(Dispatch::Failed(err.to_string())),
        }
        Ok(decide(workflow, &self.trigger))
    }

    /// The names of the workflow's job instances; one that cannot be
    /// planned is skipped with a failed status.
    async fn plan(
        &mut self,
        path: &str,
        workflow: &ParsedWorkflow,
        contexts: &Object,
    ) -> Option<Vec<String>> {
        let context = PlanContext {
            contexts: contexts.clone(),
        };
        match plan_workflow(workflow, &context) {
            Ok(plan) => Some(
                plan.jobs
                    .iter()
                    .flat_map(|job| job.instance_names())
                    .collect(),
            ),
            Err(err) => {
                self.skipped
                    .push(format!("{path}: cannot be planned: {err}"));
                invalid_workflow_status(self.state, &self.repo, &self.sha, path, &err.to_string())
                    .await;
                None
            }
        }
    }

    fn new_run(&self, path: &str, workflow: &ParsedWorkflow, contexts: &Object) -> NewRun {
        let name = workflow
            .name
            .as_ref()
            .map(|n| n.value.clone())
            .unwrap_or_else(|| path.rsplit('/').next().unwrap_or(path).to_string());
        NewRun {
            id: run_id(&self.delivery.delivery_id, path),
            delivery_id: self.delivery.delivery_id.clone(),
            repository: self.repository.clone(),
            sha: self.sha.clone(),
            git_ref: self.git_ref.clone(),
            workflow_file: path.to_string(),
            workflow_name: name,
            event: self.delivery.event.clone(),
            pr_number: self.event.pull_request_number().map(|n| n as i64),
            installation_id: self.event.installation_id().map(|id| id as i64),
            concurrency: concurrency(&self.repository, workflow, contexts),
        }
    }

    async fn enqueue(&mut self, run: NewRun, planned: Vec<String>) -> Result<(), Dispatch> {
        let enqueued = match self.state.store.enqueue(&run).await {
            Ok(enqueued) => enqueued,
            Err(err) => {
                let note = format!("queueing {}: {err}", run.workflow_file);
                return Err(Dispatch::Retry(note));
            }
        };
        for superseded in enqueued.superseded.iter().chain(&enqueued.cancel_requested) {
            tracing::info!(run = superseded, "superseded by run {}", run.id);
        }
        if enqueued.inserted {
            let name = &run.workflow_name;
            self.queued
                .push(format!("{name} ({} job(s))", planned.len()));
            self.runs.push((run, planned));
        } else {
            // Queued by an earlier attempt that stopped before settling.
            self.queued
                .push(format!("{} (queued before)", run.workflow_name));
        }
        Ok(())
    }

    /// Posts the pending statuses and the pull request comment of the runs
    /// queued now, and wakes the workers.
    async fn announce(&self) {
        let state = self.state;
        for (run, planned) in &self.runs {
            let Ok(Some(record)) = state.store.run(&run.id).await else {
                continue;
            };
            for job in planned {
                post_job_status(state, &record, run.installation_id, job, None, None).await;
            }
            state.live.publish(LiveEvent::Run(record));
        }
        if let Some((run, _)) = self.runs.first() {
            if let Ok(Some(record)) = state.store.run(&run.id).await {
                update_pull_request_comment(state, &record, run.installation_id).await;
            }
            state.wake_workers.notify_waiters();
        }
    }

    /// What became of the delivery (`no_files` when the commit has no workflows).
    fn outcome(self, no_files: bool) -> Dispatch {
        let skipped = if self.skipped.is_empty() {
            String::new()
        } else {
            format!("; not run: {}", self.skipped.join("; "))
        };
        if !self.queued.is_empty() {
            Dispatch::Dispatched(format!("queued {}{skipped}", self.queued.join(", ")))
        } else if no_files {
            Dispatch::Ignored(format!("no workflow files at {}", self.sha))
        } else {
            let event = &self.delivery.event;
            Dispatch::Ignored(format!("no workflow runs for {event}{skipped}"))
        }
    }
}

/// The commit a ref points at, for events without one (workflow_dispatch).
async fn resolve_sha(
    state: &AppState,
    repo: &RepoRef,
    repository: &str,
    git_ref: &str,
) -> Result<String, Dispatch> {
    let github = state
        .github
        .as_ref()
        .ok_or_else(|| Dispatch::Failed("no GitHub client".into()))?;
    let token = match github.git_credentials(repo).await {
        Ok(token) => token.map(GitToken),
        Err(err) if err.is_transient() => return Err(Dispatch::Retry(err.to_string())),
        Err(err) => return Err(Dispatch::Failed(err.to_string())),
    };
    let url = format!(
        "{}/{repository}.git",
        state.config.github.git_url.trim_end_matches('/')
    );
    let git_ref = git_ref.to_string();
    tokio::task::spawn_blocking(move || resolve_ref(&url, &git_ref, token.as_ref()))
        .await
        .map_err(|err| Dispatch::Failed(err.to_string()))?
        .map_err(|err| Dispatch::Retry(format!("resolving the ref: {err}")))
}

fn dispatch_inputs(workflow: &ParsedWorkflow, payload: &serde_json::Value) -> Object {
    let given: Vec<(String, String)> = payload
        .get("inputs")
        .and_then(|inputs| inputs.as_object())
        .map(|inputs| {
            inputs
                .iter()
                .map(|(k, v)| {
                    (
                        k.clone(),
                        v.as_str().map_or_else(|| v.to_string(), str::to_string),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    run_context::dispatch_inputs(workflow, &given).0
}

/// The workflow's `concurrency:` evaluated for this event (`None` when it
/// has none or its group cannot be evaluated yet). Groups are per
/// repository, shared by its workflows, as on GitHub.
fn concurrency(
    repository: &str,
    workflow: &ParsedWorkflow,
    contexts: &Object,
) -> Option<Concurrency> {
    let declared = workflow.concurrency.as_ref()?;
    let ctx = EvalContext {
        contexts: contexts.clone(),
        ..EvalContext::default()
    };
    let names = ["github", "inputs", "vars"];
    let group = expr::parse_template(&declared.group.value, &names)
        .ok()?
        .evaluate_string(&ctx)
        .ok()?;
    let cancel_in_progress = declared
        .cancel_in_progress
        .as_ref()
        .map(|value| match &value.value {
            Value::Bool(b) => *b,
            other => expr::evaluate_value(other, &ctx)
                .map(|v| expr::truthy(&v))
                .unwrap_or(false),
        })
        .unwrap_or(false);
    Some(Concurrency {
        group: format!("{repository}:{group}"),
        cancel_in_progress,
    })
}

async fn invalid_workflow_status(
    state: &AppState,
    repo: &RepoRef,
    sha: &str,
    path: &str,
    problem: &str,
) {
    let Some(github) = &state.github else { return };
    let status = firerunner_github::api::CommitStatus {
        state: firerunner_github::api::StatusState::Failure,
        context: format!("{}/{path}", state.config.github.status_context),
        description: problem.chars().take(140).collect(),
        target_url: None,
    };
    if let Err(err) = github.create_commit_status(repo, sha, &status).await {
        state
            .report_error("status", &format!("{}: {err}", repo.full_name()))
            .await;
    }
}
