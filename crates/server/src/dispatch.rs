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
use firerunner_workflow::expr::{self, EvalContext};
use firerunner_workflow::load::parse_workflow;
use firerunner_workflow::model::ParsedWorkflow;
use firerunner_workflow::plan::{plan_workflow, PlanContext};
use firerunner_workflow::trigger::{decide, TriggerDecision};
use firerunner_workflow::{Object, Value};
use sha2::{Digest, Sha256};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::live::LiveEvent;
use crate::report::{post_job_status, update_pull_request_comment};
use crate::state::AppState;
use crate::store::{Concurrency, DeliveryState, NewRun, PendingDelivery};

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
    let mut tasks = JoinSet::new();
    loop {
        let pending = match state.store.pending_deliveries(64).await {
            Ok(pending) => pending,
            Err(err) => {
                state.report_error("dispatch", &err.to_string()).await;
                Vec::new()
            }
        };
        let found = !pending.is_empty();
        for delivery in pending {
            if shutdown.is_cancelled() {
                break;
            }
            while tasks.len() >= PARALLEL_DISPATCH {
                tasks.join_next().await;
            }
            match state
                .store
                .claim_delivery(&delivery.delivery_id, &me, DISPATCH_LEASE)
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

async fn dispatch_and_settle(state: &AppState, delivery: PendingDelivery) {
    let id = delivery.delivery_id.clone();
    let attempts = delivery.attempts;
    let outcome = dispatch(state, &delivery).await;
    let (label, result) = match &outcome {
        Dispatch::Dispatched(note) => (
            "dispatched",
            state
                .store
                .settle_delivery(&id, DeliveryState::Dispatched, note)
                .await,
        ),
        Dispatch::Ignored(note) => (
            "ignored",
            state
                .store
                .settle_delivery(&id, DeliveryState::Ignored, note)
                .await,
        ),
        Dispatch::Failed(note) => {
            state
                .report_error("dispatch", &format!("delivery {id}: {note}"))
                .await;
            (
                "failed",
                state
                    .store
                    .settle_delivery(&id, DeliveryState::Failed, note)
                    .await,
            )
        }
        Dispatch::Retry(note) => {
            let max = i64::from(state.config.limits.dispatch_attempts);
            if attempts + 1 >= max {
                let note = format!("gave up after {max} attempts: {note}");
                state
                    .report_error("dispatch", &format!("delivery {id}: {note}"))
                    .await;
                (
                    "failed",
                    state
                        .store
                        .settle_delivery(&id, DeliveryState::Failed, &note)
                        .await,
                )
            } else {
                let delay = Duration::from_secs(2u64.pow(attempts.clamp(0, 9) as u32))
                    .min(Duration::from_secs(600));
                (
                    "retried",
                    state.store.retry_delivery(&id, delay, note).await,
                )
            }
        }
    };
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

/// A stable run id for one workflow of one delivery, so that dispatching a
/// delivery twice (after a crash) queues nothing twice.
pub fn run_id(delivery_id: &str, workflow_file: &str) -> String {
    let digest = Sha256::digest(format!("{delivery_id}\n{workflow_file}"));
    digest[..10].iter().map(|b| format!("{b:02x}")).collect()
}

/// Decides what a delivery runs and queues it.
pub async fn dispatch(state: &AppState, delivery: &PendingDelivery) -> Dispatch {
    let event = match WebhookEvent::parse(&delivery.event, delivery.payload.as_bytes()) {
        Ok(event) => event,
        Err(err) => return Dispatch::Failed(err.to_string()),
    };
    let (repository, default_branch) = match (&event, event.repository()) {
        (WebhookEvent::Ping(ping), _) => {
            return Dispatch::Ignored(format!("ping from GitHub: {}", ping.zen));
        }
        (_, None) => return Dispatch::Ignored("the event names no repository".into()),
        (_, Some(repository)) => (
            repository.full_name.clone(),
            repository.default_branch.clone(),
        ),
    };
    if !state.config.repository_allowed(&repository) {
        return Dispatch::Ignored(format!("{repository} is not in allow.repositories"));
    }
    if let WebhookEvent::Push(push) = &event {
        if push.deleted {
            return Dispatch::Ignored("a deleted branch or tag runs no workflows".into());
        }
    }
    let Some(github) = &state.github else {
        return Dispatch::Failed(
            "no GitHub credentials are configured (github.token or github.app_id)".into(),
        );
    };
    let installation = event.installation_id();
    let Some(repo) = RepoRef::parse(&repository, installation) else {
        return Dispatch::Failed(format!("{repository} is not owner/name"));
    };
    let git_ref = event
        .git_ref()
        .unwrap_or_else(|| format!("refs/heads/{default_branch}"));
    let sha = match event.head_sha() {
        Some(sha) => sha.to_string(),
        None => match resolve_sha(state, &repo, &repository, &git_ref).await {
            Ok(sha) => sha,
            Err(outcome) => return outcome,
        },
    };
    let files = match state.workflow_files(&repo, &sha).await {
        Ok(files) => files,
        Err(err) if err.is_transient() => return Dispatch::Retry(err.to_string()),
        Err(err) => return Dispatch::Failed(err.to_string()),
    };
    let mut trigger = event.to_trigger_event();
    let mut queued = Vec::new();
    let mut skipped = Vec::new();
    let mut runs = Vec::new();
    for (path, text) in files.iter() {
        if !state.config.workflow_allowed(path) {
            skipped.push(format!("{path}: not in allow.workflows"));
            continue;
        }
        let workflow = match parse_workflow(path, text) {
            Ok(workflow) => workflow,
            Err(problems) => {
                let first = problems
                    .0
                    .first()
                    .map(ToString::to_string)
                    .unwrap_or_default();
                skipped.push(format!(
                    "{path}: invalid ({} problem(s)): {first}",
                    problems.0.len()
                ));
                invalid_workflow_status(state, &repo, &sha, path, &first).await;
                continue;
            }
        };
        let mut decision = decide(&workflow, &trigger);
        if decision == TriggerDecision::NeedsChangedFiles {
            if let Some(number) = event.pull_request_number() {
                match github.pull_request_files(&repo, number).await {
                    Ok(changed) => trigger = trigger.with_changed_files(changed),
                    Err(err) if err.is_transient() => return Dispatch::Retry(err.to_string()),
                    Err(err) => return Dispatch::Failed(err.to_string()),
                }
                decision = decide(&workflow, &trigger);
            }
        }
        if let TriggerDecision::Skip { reason } = decision {
            skipped.push(format!("{path}: {reason}"));
            continue;
        }
        let contexts = run_context::event_contexts(
            &trigger,
            &git_ref,
            &dispatch_inputs(&workflow, &trigger.payload),
        );
        let name = workflow
            .name
            .as_ref()
            .map(|n| n.value.clone())
            .unwrap_or_else(|| path.rsplit('/').next().unwrap_or(path).to_string());
        let planned: Vec<String> = match plan_workflow(
            &workflow,
            &PlanContext {
                contexts: contexts.clone(),
            },
        ) {
            Ok(plan) => plan
                .jobs
                .iter()
                .flat_map(|job| job.instance_names())
                .collect(),
            Err(err) => {
                skipped.push(format!("{path}: cannot be planned: {err}"));
                invalid_workflow_status(state, &repo, &sha, path, &err.to_string()).await;
                continue;
            }
        };
        let run = NewRun {
            id: run_id(&delivery.delivery_id, path),
            delivery_id: delivery.delivery_id.clone(),
            repository: repository.clone(),
            sha: sha.clone(),
            git_ref: git_ref.clone(),
            workflow_file: path.clone(),
            workflow_name: name.clone(),
            event: delivery.event.clone(),
            pr_number: event.pull_request_number().map(|n| n as i64),
            installation_id: installation.map(|id| id as i64),
            concurrency: concurrency(&repository, &workflow, &contexts),
        };
        match state.store.enqueue(&run).await {
            Ok(enqueued) => {
                if enqueued.inserted {
                    queued.push(format!("{name} ({} job(s))", planned.len()));
                    runs.push((run, planned));
                } else {
                    // Queued by an earlier attempt that stopped before settling.
                    queued.push(format!("{name} (queued before)"));
                }
                for superseded in enqueued.superseded.iter().chain(&enqueued.cancel_requested) {
                    tracing::info!(
                        run = superseded,
                        "superseded by run {}",
                        run_id(&delivery.delivery_id, path)
                    );
                }
            }
            Err(err) => return Dispatch::Retry(format!("queueing {path}: {err}")),
        }
    }
    for (run, planned) in &runs {
        let Ok(Some(record)) = state.store.run(&run.id).await else {
            continue;
        };
        for job in planned {
            post_job_status(state, &record, run.installation_id, job, None, None).await;
        }
        state.live.publish(LiveEvent::Run(record));
    }
    if let Some((run, _)) = runs.first() {
        if let Ok(Some(record)) = state.store.run(&run.id).await {
            update_pull_request_comment(state, &record, run.installation_id).await;
        }
        state.wake_workers.notify_waiters();
    }
    let skipped = if skipped.is_empty() {
        String::new()
    } else {
        format!("; not run: {}", skipped.join("; "))
    };
    if queued.is_empty() {
        if files.is_empty() {
            Dispatch::Ignored(format!("no workflow files at {sha}"))
        } else {
            Dispatch::Ignored(format!("no workflow runs for {}{skipped}", delivery.event))
        }
    } else {
        Dispatch::Dispatched(format!("queued {}{skipped}", queued.join(", ")))
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
