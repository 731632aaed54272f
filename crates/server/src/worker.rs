//! The worker: claims queued runs (a lease, renewed while it works), runs
//! them through a [`RunExecutor`] within this host's limits, and reports
//! every job to the store, the dashboard and GitHub.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use firerunner_github::api::RepoRef;
use firerunner_github::permissions::TokenPermissions;
use firerunner_workflow::load::parse_workflow;
use tokio::sync::{mpsc, Semaphore};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::environments::{EnteredEnvironments, RunGate};
use crate::executor::{Gate, JobEvent, RunExecutor, RunOutcome, RunRequest, Trust};
use crate::live::LiveEvent;
use crate::masking::ReportMasker;
use crate::report::{post_job_status, update_pull_request_comment, StepRecord};
use crate::state::AppState;
use crate::store::{now_ms, JobRecord, JobState, NewRun, RunRecord, WorkerRecord};
use crate::variables::VariableSources;
use crate::vault::Scope;

/// Runs the worker until `shutdown` fires. Runs still executing then are
/// stopped and put back in the queue (another worker, or this one after a
/// restart, runs them again).
pub async fn run_worker<E: RunExecutor>(
    state: AppState,
    executor: Arc<E>,
    shutdown: CancellationToken,
) {
    let worker = Worker {
        id: state.config.worker.id.clone(),
        lease: Duration::from_secs(state.config.worker.lease_seconds),
        slots: Arc::new(Semaphore::new(state.config.limits.concurrent_runs)),
        started_at: now_ms(),
        state,
    };
    match worker.state.store.requeue_interrupted(&worker.id).await {
        Ok(requeued) if !requeued.is_empty() => {
            tracing::warn!(
                "worker {}: {} run(s) interrupted by the last stop are queued again",
                worker.id,
                requeued.len()
            );
        }
        Ok(_) => {}
        Err(err) => {
            let message = format!("requeue: {err}");
            worker.state.report_error("worker", &message).await
        }
    }
    let host_beat = tokio::spawn(worker.clone().host_heartbeats(shutdown.clone()));
    worker.claim_until(executor, &shutdown).await;
    host_beat.abort();
    if let Ok(requeued) = worker.state.store.requeue_interrupted(&worker.id).await {
        if !requeued.is_empty() {
            let (id, n) = (&worker.id, requeued.len());
            tracing::info!("worker {id}: {n} run(s) put back in the queue");
        }
    }
}

/// This host's worker: its id, lease and run slots.
#[derive(Clone)]
struct Worker {
    state: AppState,
    id: String,
    lease: Duration,
    /// One permit a run, `limits.concurrent_runs` in all.
    slots: Arc<Semaphore>,
    /// Milliseconds since the epoch.
    started_at: i64,
}

impl Worker {
    /// Tells the store every quarter lease that this host is alive, with
    /// its capacity and load, until `shutdown` fires.
    async fn host_heartbeats(self, shutdown: CancellationToken) {
        let state = &self.state;
        loop {
            let max_runs = state.config.limits.concurrent_runs;
            let running = max_runs - self.slots.available_permits();
            let record = WorkerRecord {
                id: self.id.clone(),
                host: crate::config::host_name(),
                started_at: self.started_at,
                heartbeat_at: now_ms(),
                max_runs: max_runs as i64,
                max_vms: state.config.limits.max_vms as i64,
                running: running as i64,
            };
            if let Err(err) = state.store.worker_heartbeat(&record).await {
                tracing::warn!("worker heartbeat: {err}");
            }
            state.update_capacity(|c| c.runs = running);
            tokio::select! {
                _ = tokio::time::sleep(self.lease / 4) => {}
                _ = shutdown.cancelled() => return,
            }
        }
    }

    /// Claims and executes runs while slots are free, until `shutdown`
    /// fires; then waits for the runs it started.
    async fn claim_until<E: RunExecutor>(&self, executor: Arc<E>, shutdown: &CancellationToken) {
        let mut running = tokio::task::JoinSet::new();
        loop {
            while running.try_join_next().is_some() {}
            let permit = tokio::select! {
                permit = self.slots.clone().acquire_owned() => permit.expect("the semaphore is never closed"),
                _ = shutdown.cancelled() => break,
            };
            let claimed = match self.state.store.claim(&self.id, self.lease).await {
                Ok(Some(claimed)) => claimed,
                Ok(None) => {
                    drop(permit);
                    tokio::select! {
                        _ = self.state.wake_workers.notified() => {}
                        _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                        _ = shutdown.cancelled() => break,
                    }
                    continue;
                }
                Err(err) => {
                    drop(permit);
                    let message = format!("claim: {err}");
                    self.state.report_error("worker", &message).await;
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            };
            let execution = Execution::new(self, claimed.run);
            let (executor, lease, stop) = (executor.clone(), self.lease, shutdown.child_token());
            running.spawn(async move {
                execution
                    .execute(executor.as_ref(), claimed.attempt, lease, stop)
                    .await;
                drop(permit);
            });
        }
        while running.join_next().await.is_some() {}
    }
}

/// Why a run stopped early.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stop {
    /// The service is shutting down: the run goes back to the queue.
    Shutdown,
    /// Another worker took the run over (this one stopped heartbeating in time).
    LeaseLost,
    /// A newer run of its concurrency group cancelled it.
    Superseded,
}

/// Why a run stopped early, once it did, shared with its lease watcher.
type StopCell = Arc<std::sync::Mutex<Option<Stop>>>;

/// One claimed run on this worker, and where its results go.
#[derive(Clone)]
struct Execution {
    state: AppState,
    run: NewRun,
    /// The worker holding its lease.
    worker: String,
    /// The environment each job entered, for its record.
    entered: EnteredEnvironments,
}

impl Execution {
    fn new(worker: &Worker, run: NewRun) -> Self {
        Execution {
            state: worker.state.clone(),
            run,
            worker: worker.id.clone(),
            entered: EnteredEnvironments::default(),
        }
    }

    /// Runs the claimed run (its `attempt`-th claim) through `executor`
    /// while holding its lease, and writes its conclusion unless it stopped
    /// for a shutdown or lost its lease.
    async fn execute<E: RunExecutor>(
        &self,
        executor: &E,
        attempt: i64,
        lease: Duration,
        shutdown: CancellationToken,
    ) {
        let (state, run) = (&self.state, &self.run);
        tracing::info!(
            run = run.id,
            attempt,
            "running {} of {}",
            run.workflow_file,
            run.repository
        );
        if let Some(note) = self.too_many_attempts(attempt) {
            return self.fail(&note).await;
        }
        let _ = state.store.clear_jobs(&run.id).await;
        if let Ok(Some(record)) = state.store.run(&run.id).await {
            state.live.publish(LiveEvent::Run(record));
        }
        let cancel = CancellationToken::new();
        let stop = StopCell::default();
        let watch = self
            .clone()
            .watch_lease(lease, shutdown, cancel.clone(), stop.clone());
        let beat = tokio::spawn(watch);
        let mut request = match gather(state, run).await {
            Ok(request) => request,
            Err(message) => {
                beat.abort();
                return self.fail(&message).await;
            }
        };
        let masker = self.guard(&mut request);
        let (events, reporter) = self.clone().report_events(masker);
        let outcome = executor.execute(request, events, cancel).await;
        let _ = reporter.await;
        beat.abort();
        let stopped = *stop.lock().expect("stop");
        self.settle(stopped, outcome).await;
    }

    /// Gives `request` the run's environment gate; returns the masker of
    /// everything its jobs report, which learns each environment's secrets
    /// as the gate hands them out.
    fn guard(&self, request: &mut RunRequest) -> ReportMasker {
        let masker = ReportMasker::new(request.secrets.values().chain(&request.fetch_token));
        let gate = RunGate::new(
            self.state.clone(),
            self.run.clone(),
            &request.payload,
            request.trust,
            masker.clone(),
            self.entered.clone(),
        );
        request.environments = Some(Gate(Arc::new(gate)));
        masker
    }

    /// Why the run's `attempt`-th claim must not start it, if it must not.
    fn too_many_attempts(&self, attempt: i64) -> Option<String> {
        let max_attempts = i64::from(self.state.config.limits.run_attempts);
        (attempt > max_attempts).then(|| {
            format!(
                "started {} times without finishing (the process stopped each time); \
                 not started again (limits.run_attempts = {max_attempts})",
                attempt - 1
            )
        })
    }

    /// Ends the run as failed before it ran, for `note`.
    async fn fail(&self, note: &str) {
        let message = format!("run {}: {note}", self.run.id);
        self.state.report_error("worker", &message).await;
        self.conclude("failure", Some(note), &[]).await;
    }

    /// Renews the run's lease every quarter lease; on a shutdown, a lost
    /// lease or a cancel request, says why in `stop` and fires `cancel`.
    async fn watch_lease(
        self,
        lease: Duration,
        shutdown: CancellationToken,
        cancel: CancellationToken,
        stop: StopCell,
    ) {
        let why = self.until_stopped(lease, &shutdown).await;
        stop.lock().expect("stop").get_or_insert(why);
        cancel.cancel();
    }

    async fn until_stopped(&self, lease: Duration, shutdown: &CancellationToken) -> Stop {
        let (store, run_id) = (&self.state.store, &self.run.id);
        loop {
            tokio::select! {
                _ = tokio::time::sleep(lease / 4) => {}
                _ = shutdown.cancelled() => return Stop::Shutdown,
            }
            match store.heartbeat(run_id, &self.worker, lease).await {
                Ok(true) => {}
                Ok(false) => return Stop::LeaseLost,
                Err(err) => tracing::warn!(run = run_id, "heartbeat: {err}"),
            }
            if store.cancel_requested(run_id).await.unwrap_or(false) {
                return Stop::Superseded;
            }
        }
    }

    /// A channel for the executor's job events, and the task that reports
    /// them (masked) until the channel closes.
    fn report_events(
        self,
        masker: ReportMasker,
    ) -> (mpsc::UnboundedSender<JobEvent>, JoinHandle<()>) {
        let (events, mut received) = mpsc::unbounded_channel();
        let reporter = tokio::spawn(async move {
            while let Some(event) = received.recv().await {
                self.on_job_event(masked_event(&masker, event)).await;
            }
        });
        (events, reporter)
    }

    /// Writes the run's end as the executor reported it, or leaves it when
    /// it was `stopped` by a shutdown or a lost lease.
    async fn settle(&self, stopped: Option<Stop>, outcome: RunOutcome) {
        let run_id = &self.run.id;
        let conclusion = match stopped {
            Some(Stop::Shutdown) => {
                tracing::info!(run = run_id, "stopped by shutdown; it will run again");
                return;
            }
            Some(Stop::LeaseLost) => {
                let message = "lease lost to another worker; its result is theirs";
                tracing::warn!(run = run_id, "{message}");
                return;
            }
            Some(Stop::Superseded) => "cancelled",
            None => outcome.conclusion.as_str(),
        };
        let note = (!outcome.errors.is_empty()).then(|| outcome.errors.join("; "));
        self.conclude(conclusion, note.as_deref(), &outcome.never_ran)
            .await;
    }
}

/// Collects what the executor needs: payload, workflow files, clone URL, token.
async fn gather(state: &AppState, run: &NewRun) -> Result<RunRequest, String> {
    let payload = state
        .store
        .delivery_payload(&run.delivery_id)
        .await
        .map_err(|err| err.to_string())?
        .ok_or_else(|| format!("delivery {} is not in the store", run.delivery_id))?;
    let payload: serde_json::Value =
        serde_json::from_str(&payload).map_err(|err| format!("stored payload: {err}"))?;
    let github = state
        .github
        .as_ref()
        .ok_or("no GitHub credentials are configured (github.token or github.app_id)")?;
    let repo = RepoRef::parse(&run.repository, run.installation_id.map(|id| id as u64))
        .ok_or_else(|| format!("{} is not owner/name", run.repository))?;
    let workflows = state
        .workflow_files(&repo, &run.sha)
        .await
        .map_err(|err| format!("workflow files at {}: {err}", run.sha))?
        .as_ref()
        .clone();
    let fetch_token = github
        .git_credentials(&repo)
        .await
        .map_err(|err| format!("git credentials: {err}"))?;
    let trust = Trust::of_event(&run.event, &payload);
    let secrets = job_secrets(state, github, &repo, run, &workflows, trust).await?;
    let vars = run_variables(state, github, &repo, trust).await?;
    Ok(RunRequest {
        run: run.clone(),
        payload,
        workflows,
        clone_url: format!(
            "{}/{}.git",
            state.config.github.git_url.trim_end_matches('/'),
            run.repository
        ),
        fetch_token,
        secrets,
        vars,
        environments: None,
        trust,
    })
}

/// The `vars` of a run: the organization's and repository's variables,
/// GitHub's under firerunner's own; none for a pull request from a fork
/// (GitHub passes it none either).
async fn run_variables(
    state: &AppState,
    github: &firerunner_github::GitHubClient,
    repo: &RepoRef,
    trust: Trust,
) -> Result<BTreeMap<String, String>, String> {
    if trust == Trust::Fork {
        return Ok(BTreeMap::new());
    }
    let sources = VariableSources {
        settings: &state.settings,
        github: Some((github, state.github_variables.as_ref())),
    };
    sources
        .of_run(repo)
        .await
        .map_err(|err| format!("variables: {err}"))
}

/// The secrets of a run's jobs: the store's organization and repository
/// secrets (the repository's win), none for a fork, and `GITHUB_TOKEN`
/// scoped to the repository and the workflow's `permissions:`, read-only
/// for a fork. Environment secrets are added per job by its gate.
async fn job_secrets(
    state: &AppState,
    github: &firerunner_github::GitHubClient,
    repo: &RepoRef,
    run: &NewRun,
    workflows: &[(String, String)],
    trust: Trust,
) -> Result<BTreeMap<String, String>, String> {
    let text = workflows
        .iter()
        .find(|(path, _)| *path == run.workflow_file)
        .map(|(_, text)| text.as_str())
        .unwrap_or_default();
    let defaults = state.config.github.default_permissions;
    let mut wanted = match parse_workflow(&run.workflow_file, text) {
        Ok(workflow) => TokenPermissions::for_workflow(&workflow, defaults),
        Err(_) => TokenPermissions::defaults(defaults),
    };
    if trust == Trust::Fork {
        wanted = wanted.read_only();
    }
    let token = github
        .job_token(repo, &wanted)
        .await
        .map_err(|err| format!("job token: {err}"))?;
    let mut secrets = if trust == Trust::Fork {
        BTreeMap::new()
    } else {
        stored_secrets(state, run).await?
    };
    if let Some(token) = token {
        secrets.insert("GITHUB_TOKEN".to_string(), token);
    }
    Ok(secrets)
}

/// The store's organization and repository secrets of `run`, opened.
async fn stored_secrets(
    state: &AppState,
    run: &NewRun,
) -> Result<BTreeMap<String, String>, String> {
    let scopes = Scope::of_run(&run.repository).map_err(|err| format!("secrets: {err}"))?;
    state
        .settings
        .secrets_of(&scopes)
        .await
        .map_err(|err| format!("secrets: {err}"))
}

/// Masks a job event's names, summaries, log tails and learned steps.
fn masked_event(masker: &ReportMasker, mut event: JobEvent) -> JobEvent {
    match &mut event {
        JobEvent::Started { name } => masker.mask_in(name),
        JobEvent::Finished {
            name,
            steps,
            summary,
            log_tail,
            learned,
            environment_url,
            ..
        } => {
            masker.mask_in(name);
            masker.mask_in(summary);
            masker.mask_in(log_tail);
            if let Some(url) = environment_url {
                masker.mask_in(url);
            }
            for step in steps {
                masker.mask_in(&mut step.name);
            }
            for step in learned {
                masker.mask_in(&mut step.job);
                masker.mask_in(&mut step.step_name);
                masker.mask_in(&mut step.command);
                masker.mask_in(&mut step.log_tail);
            }
        }
    }
    event
}

impl Execution {
    async fn on_job_event(&self, event: JobEvent) {
        let Ok(Some(run)) = self.state.store.run(&self.run.id).await else {
            return;
        };
        match event {
            JobEvent::Started { name } => {
                save(&self.state, &self.job(&name, JobState::Running)).await;
                let installation = self.run.installation_id;
                post_job_status(&self.state, &run, installation, &name, None, None).await;
            }
            JobEvent::Finished {
                name,
                conclusion,
                duration,
                steps,
                summary,
                log_tail,
                learned,
                environment_url,
            } => {
                let finished = now_ms();
                keep_log_for_every_host(&self.state, &self.run.id, &name).await;
                let hints = learn_from(&self.state, learned).await;
                job_metrics(&conclusion, &steps);
                let job = JobRecord {
                    conclusion: Some(conclusion.clone()),
                    started_at: Some(finished - duration.as_millis() as i64),
                    finished_at: Some(finished),
                    steps: serde_json::to_string(&steps).unwrap_or_else(|_| "[]".into()),
                    summary,
                    log_tail: if conclusion == "success" {
                        String::new()
                    } else {
                        log_tail
                    },
                    hints: hints.join("\n"),
                    environment_url,
                    ..self.job(&name, JobState::Completed)
                };
                self.job_finished(&run, &job, duration).await;
            }
        }
    }

    /// A job of this run as this worker runs it, nothing known yet.
    fn job(&self, name: &str, state: JobState) -> JobRecord {
        JobRecord {
            worker: Some(self.worker.clone()),
            started_at: (state == JobState::Running).then(now_ms),
            environment: self.entered.of(name),
            ..never_ran_job(&self.run.id, name, state)
        }
    }

    /// Saves a finished job and reports it (status, comment).
    async fn job_finished(&self, run: &RunRecord, job: &JobRecord, duration: Duration) {
        save(&self.state, job).await;
        let installation = self.run.installation_id;
        let conclusion = job.conclusion.as_deref();
        post_job_status(
            &self.state,
            run,
            installation,
            &job.name,
            conclusion,
            Some(duration),
        )
        .await;
        update_pull_request_comment(&self.state, run, installation).await;
    }

    /// Writes the run's conclusion once and reports the jobs that never ran.
    async fn conclude(&self, conclusion: &str, note: Option<&str>, never_ran: &[(String, String)]) {
        let (state, run_id) = (&self.state, &self.run.id);
        match state
            .store
            .finish_with_note(run_id, &self.worker, conclusion, note)
            .await
        {
            Ok(true) => {}
            Ok(false) => {
                let message = "another worker holds this run now; its result is kept";
                tracing::warn!(run = run_id, "{message}");
                return;
            }
            Err(err) => {
                let message = format!("finishing run {run_id}: {err}");
                state.report_error("worker", &message).await;
                return;
            }
        }
        metrics::counter!("firerunner_runs_total", "conclusion" => conclusion.to_string())
            .increment(1);
        let Ok(Some(run)) = state.store.run(run_id).await else {
            return;
        };
        let installation = self.run.installation_id;
        for (name, result) in never_ran {
            let job = JobRecord {
                conclusion: Some(result.clone()),
                ..never_ran_job(run_id, name, JobState::Completed)
            };
            save(state, &job).await;
            post_job_status(state, &run, installation, name, Some(result), None).await;
        }
        update_pull_request_comment(state, &run, installation).await;
        state.live.publish(LiveEvent::Run(run));
    }
}

/// A job record with nothing known but its run, name and state.
fn never_ran_job(run_id: &str, name: &str, state: JobState) -> JobRecord {
    JobRecord {
        run_id: run_id.into(),
        name: name.into(),
        state,
        conclusion: None,
        worker: None,
        started_at: None,
        finished_at: None,
        steps: "[]".into(),
        summary: String::new(),
        log_tail: String::new(),
        hints: String::new(),
        environment: None,
        environment_url: None,
    }
}

fn job_metrics(conclusion: &str, steps: &[StepRecord]) {
    for step in steps {
        metrics::histogram!("firerunner_step_duration_seconds", "conclusion" => step.conclusion.clone())
            .record(step.duration_ms as f64 / 1000.0);
    }
    metrics::counter!("firerunner_jobs_total", "conclusion" => conclusion.to_string()).increment(1);
}

/// Records a finished job's steps in the learning store and returns what it
/// knew about the failing ones beforehand (known failures, flaky steps), and
/// the language model's explanation of the first failure when one is set up.
/// Learning never fails a job: problems are reported and skipped.
async fn learn_from(state: &AppState, steps: Vec<firerunner_learning::StepRecord>) -> Vec<String> {
    let mut hints = Vec::new();
    let mut explained = false;
    for step in steps {
        let failed = step.outcome == firerunner_learning::Conclusion::Failure;
        if failed {
            if let Some(learning) = &state.learning {
                hints.extend(
                    learning
                        .hints_for_failure(&step)
                        .iter()
                        .map(|hint| format!("{}: {hint}", step.step_name)),
                );
            }
            if !explained {
                explained = true;
                if let Some(explanation) = state.explain_failure(&step).await {
                    hints.push(format!(
                        "{} (explained by a language model): {explanation}",
                        step.step_name
                    ));
                }
            }
        }
        if let Some(learning) = &state.learning {
            if let Err(err) = learning.record_step(step).await {
                state
                    .report_error("learning", &format!("recording a step: {err}"))
                    .await;
            }
        }
    }
    hints
}

/// Copies a finished job's log file into the store, where the dashboard and
/// API of every host find it.
async fn keep_log_for_every_host(state: &AppState, run_id: &str, job: &str) {
    let path = state.logs.job_log_path(run_id, job);
    let read = tokio::task::spawn_blocking(move || last_lines(&path, MAX_SHARED_LOG_BYTES)).await;
    let lines = match read.unwrap_or_else(|err| Err(std::io::Error::other(err))) {
        Ok(lines) => lines,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return,
        Err(err) => {
            state
                .report_error("worker", &format!("reading the log of {job}: {err}"))
                .await;
            return;
        }
    };
    if let Err(err) = state.store.save_job_log(run_id, job, &lines).await {
        state
            .report_error("worker", &format!("saving the log of {job}: {err}"))
            .await;
    }
}

/// The most of a job's log kept in the store; a longer log keeps its end
/// there (the whole log stays on the host that ran the job).
const MAX_SHARED_LOG_BYTES: u64 = 16 * 1024 * 1024;

/// The whole lines in the last `max` bytes of the file at `path`.
fn last_lines(path: &std::path::Path, max: u64) -> std::io::Result<String> {
    use std::io::{Read, Seek, SeekFrom};
    let mut file = std::fs::File::open(path)?;
    let len = file.metadata()?.len();
    if len <= max {
        let mut text = String::new();
        file.read_to_string(&mut text)?;
        return Ok(text);
    }
    file.seek(SeekFrom::Start(len - max))?;
    let mut bytes = Vec::with_capacity(max as usize);
    file.read_to_end(&mut bytes)?;
    let start = bytes
        .iter()
        .position(|&b| b == b'\n')
        .map_or(bytes.len(), |i| i + 1);
    Ok(String::from_utf8_lossy(&bytes[start..]).into_owned())
}

async fn save(state: &AppState, job: &JobRecord) {
    if let Err(err) = state.store.save_job(job).await {
        state
            .report_error("worker", &format!("saving job {}: {err}", job.name))
            .await;
    }
    state.live.publish(LiveEvent::Job(job.clone()));
}

#[cfg(test)]
mod tests {
    use super::last_lines;

    #[test]
    fn a_long_log_keeps_its_last_whole_lines() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("job.jsonl");
        let text: String = (0..100).map(|n| format!("{{\"line\":{n}}}\n")).collect();
        std::fs::write(&path, &text).unwrap();
        assert_eq!(last_lines(&path, 10_000).unwrap(), text);
        let tail = last_lines(&path, 40).unwrap();
        assert_eq!(tail, "{\"line\":97}\n{\"line\":98}\n{\"line\":99}\n");
        assert!(last_lines(&dir.path().join("none"), 40).is_err());
    }
}
