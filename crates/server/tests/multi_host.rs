//! Several runner hosts sharing one PostgreSQL queue and store: one host
//! takes webhooks, three workers take runs. Each worker lives on its own
//! Tokio runtime, so killing one drops every task it has at once (no
//! graceful hand-back, heartbeats stop mid-run), as a crashed host would.

#[path = "support/postgres.rs"]
mod postgres;
#[path = "support/service.rs"]
mod service;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use firerunner_server::{serve, AppState, Config, Roles, RunRecord};
use postgres::TempPostgres;
use serde_json::{json, Value};
use service::{fixture, test_config, ScriptedExecutor, Service, API_TOKEN, REPO};
use tokio_util::sync::CancellationToken;

/// A worker host: its own runtime, store pool and executor.
struct WorkerHost {
    id: String,
    dir: tempfile::TempDir,
    executor: Arc<ScriptedExecutor>,
    runtime: Option<tokio::runtime::Runtime>,
    shutdown: CancellationToken,
}

impl WorkerHost {
    fn start(id: &str, mut config: Config) -> Self {
        let dir = tempfile::tempdir().unwrap();
        config.data_dir = dir.path().to_path_buf();
        config.worker.id = id.to_string();
        config.worker.enabled = true;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let executor = Arc::new(ScriptedExecutor {
            log_root: Some(config.data_dir.join("logs")),
            ..ScriptedExecutor::default()
        });
        let shutdown = CancellationToken::new();
        let (run_with, stop) = (executor.clone(), shutdown.clone());
        runtime.spawn(async move {
            let state = AppState::open(config).await.unwrap();
            let roles = Roles {
                http: false,
                worker: true,
            };
            serve(state, roles, None, Some(run_with), stop).await
        });
        Self {
            id: id.to_string(),
            dir,
            executor,
            runtime: Some(runtime),
            shutdown,
        }
    }

    /// Stops the host at once: every task of its runtime is dropped.
    fn kill(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

impl Drop for WorkerHost {
    fn drop(&mut self) {
        self.shutdown.cancel();
        self.kill();
    }
}

/// The webhook host (no worker) and three workers on one PostgreSQL server.
async fn cluster(pg: &TempPostgres, lease_seconds: u64) -> (Service, Vec<WorkerHost>) {
    let url = pg.url();
    let web = Service::start(|config| {
        config.database_url = url.clone();
        config.worker.enabled = false;
    })
    .await;
    let dir = web.dir.path().to_path_buf();
    let github = web.github.url();
    let workers = (1..=3)
        .map(|n| {
            let mut config = test_config(&web.url, &dir, &github);
            config.database_url = url.clone();
            config.worker.lease_seconds = lease_seconds;
            config.limits.concurrent_runs = 4;
            WorkerHost::start(&format!("host-{n}"), config)
        })
        .collect();
    (web, workers)
}

fn push(sha: &str) -> Value {
    let mut payload = fixture("push");
    payload["after"] = json!(sha);
    payload
}

async fn runs(service: &Service) -> HashMap<String, RunRecord> {
    service
        .state
        .store
        .recent_runs(5000)
        .await
        .unwrap()
        .into_iter()
        .map(|run| (run.run.id.clone(), run))
        .collect()
}

async fn wait_until(
    service: &Service,
    what: &str,
    limit: Duration,
    done: impl Fn(&HashMap<String, RunRecord>) -> bool,
) -> HashMap<String, RunRecord> {
    let deadline = Instant::now() + limit;
    loop {
        let runs = runs(service).await;
        if done(&runs) {
            return runs;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_whose_worker_dies_mid_job_finishes_once_on_another_host() {
    let pg = TempPostgres::start();
    let (web, mut workers) = cluster(&pg, 2).await;
    let sha = "7777777777777777777777777777777777777777";
    web.github.add_file(
        REPO,
        sha,
        ".github/workflows/ci.yml",
        "name: CI\non: push\njobs:\n  slow:\n    runs-on: ubuntu-latest\n    steps:\n      - run: make\n",
    );
    let (status, answer) = web.webhook("push", "d-kill", &push(sha)).await;
    assert_eq!(status, 202, "{answer}");

    let deadline = Instant::now() + Duration::from_secs(30);
    let victim = loop {
        if let Some(index) = workers
            .iter()
            .position(|w| !w.executor.running.lock().unwrap().is_empty())
        {
            break index;
        }
        assert!(Instant::now() < deadline, "no worker started the run");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let victim_id = workers[victim].id.clone();
    workers[victim].kill();
    println!("killed {victim_id} while it ran the job");

    let runs = wait_until(
        &web,
        "the run to finish elsewhere",
        Duration::from_secs(60),
        |runs| runs.values().any(|r| r.state == "completed"),
    )
    .await;
    let run = runs.values().next().unwrap();
    assert_eq!(runs.len(), 1);
    assert_eq!(run.conclusion.as_deref(), Some("success"));
    assert_eq!(run.attempts, 2, "taken over once after the lease ran out");
    let executions: Vec<(String, usize)> = workers
        .iter()
        .map(|w| (w.id.clone(), w.executor.executed.lock().unwrap().len()))
        .collect();
    println!("executions per host: {executions:?}");
    let others: Vec<&(String, usize)> = executions
        .iter()
        .filter(|(id, n)| *id != victim_id && *n > 0)
        .collect();
    assert_eq!(
        others.len(),
        1,
        "exactly one other host ran it: {executions:?}"
    );
    assert_eq!(others[0].1, 1, "once: {executions:?}");

    // Its one job's status went out as success once, from the host that finished it.
    let statuses = web.github.statuses(REPO, sha);
    let finals: Vec<_> = statuses
        .iter()
        .filter(|s| s["state"] == "success")
        .collect();
    assert_eq!(finals.len(), 1, "{statuses:#?}");

    // The webhook host shows the log the other host kept in the store.
    let (code, body) = web
        .get(
            &format!("/api/runs/{}/jobs/slow/log", run.run.id),
            Some(API_TOKEN),
        )
        .await;
    assert_eq!(code, 200, "{body}");
    let root_of = |w: &WorkerHost| w.dir.path().display().to_string();
    let finisher = workers.iter().find(|w| w.id == others[0].0).unwrap();
    assert!(body.contains(&root_of(finisher)), "{body}");
    assert!(
        !body.contains(&root_of(&workers[victim])),
        "only the finished attempt's log: {body}"
    );

    // The operator API lists every host with its capacity.
    let (code, body) = web.get("/api/workers", Some(API_TOKEN)).await;
    assert_eq!(code, 200, "{body}");
    let listed: Value = serde_json::from_str(&body).unwrap();
    let ids: HashSet<String> = listed
        .as_array()
        .or_else(|| listed["workers"].as_array())
        .unwrap()
        .iter()
        .map(|w| w["id"].as_str().unwrap().to_string())
        .collect();
    for worker in &workers {
        assert!(ids.contains(&worker.id), "{body}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_queued_runs_spread_over_three_workers_none_lost_none_twice() {
    const RUNS: usize = 1000;
    let pg = TempPostgres::start();
    let (web, workers) = cluster(&pg, 10).await;
    let sha = "8888888888888888888888888888888888888888";
    for n in 0..10 {
        web.github.add_file(
            REPO,
            sha,
            &format!(".github/workflows/w{n}.yml"),
            &format!(
                "name: W{n}\non: push\njobs:\n  build:\n    runs-on: ubuntu-latest\n    steps:\n      - run: make\n"
            ),
        );
    }
    let started = Instant::now();
    for n in 0..RUNS / 10 {
        // Each a push of its own (the same body twice would be a replay).
        let mut payload = push(sha);
        payload["before"] = json!(format!("{n:040x}"));
        let (status, answer) = web.webhook("push", &format!("d-{n}"), &payload).await;
        assert_eq!(status, 202, "{answer}");
    }
    let accepted = started.elapsed();
    let runs = wait_until(
        &web,
        "every run to complete",
        Duration::from_secs(240),
        |runs| runs.len() == RUNS && runs.values().all(|r| r.state == "completed"),
    )
    .await;
    let elapsed = started.elapsed();
    let first_start = runs.values().filter_map(|r| r.started_at).min().unwrap();
    let last_finish = runs.values().filter_map(|r| r.finished_at).max().unwrap();
    let queue_seconds = (last_finish - first_start) as f64 / 1000.0;

    let mut all = Vec::new();
    let mut per_host = Vec::new();
    for worker in &workers {
        let executed = worker.executor.executed.lock().unwrap().clone();
        per_host.push((worker.id.clone(), executed.len()));
        all.extend(executed);
    }
    let unique: HashSet<&String> = all.iter().collect();
    println!(
        "{RUNS} runs: webhooks accepted in {:.1} s; all completed {:.1} s after the first webhook; \
         {:.0} runs/s through the queue (first claim to last result); per host: {per_host:?}",
        accepted.as_secs_f64(),
        elapsed.as_secs_f64(),
        RUNS as f64 / queue_seconds
    );
    assert_eq!(all.len(), RUNS, "every run executed once, none twice");
    assert_eq!(unique.len(), RUNS, "no run executed twice");
    assert!(
        runs.values()
            .all(|r| r.attempts == 1 && r.conclusion.as_deref() == Some("success")),
        "one attempt each, each a success"
    );
    for (host, count) in &per_host {
        assert!(*count > 0, "{host} took no run: {per_host:?}");
    }
}
