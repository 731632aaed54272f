//! The store on SQLite and on PostgreSQL (a throw-away server started by the
//! test): deliveries once, runs claimed once, leases.

#[path = "support/postgres.rs"]
mod postgres;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use firerunner_server::{Concurrency, DeliveryState, JobRecord, JobState, NewRun, Store};

async fn store() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let url = format!(
        "sqlite://{}?mode=rwc",
        dir.path().join("store.db").display()
    );
    let store = Store::connect(&url).await.unwrap();
    (dir, store)
}

fn run(id: usize) -> NewRun {
    NewRun {
        id: format!("run-{id:05}"),
        delivery_id: format!("d-{id}"),
        repository: "octo/app".into(),
        sha: "0".repeat(40),
        git_ref: "refs/heads/main".into(),
        workflow_file: ".github/workflows/ci.yml".into(),
        ..NewRun::default()
    }
}

#[tokio::test]
async fn a_repeated_delivery_is_recorded_once_and_survives_reopening() {
    let (dir, store) = store().await;
    assert!(store
        .record_delivery("abc", "push", Some("octo/app"), "{}")
        .await
        .unwrap());
    assert!(!store
        .record_delivery("abc", "push", Some("octo/app"), "{}")
        .await
        .unwrap());
    drop(store);
    let url = format!(
        "sqlite://{}?mode=rwc",
        dir.path().join("store.db").display()
    );
    let reopened = Store::connect(&url).await.unwrap();
    assert!(!reopened
        .record_delivery("abc", "push", None, "{}")
        .await
        .unwrap());
}

#[tokio::test]
async fn runs_are_claimed_oldest_first_and_a_lost_lease_is_taken_over() {
    let (_dir, store) = store().await;
    claims_and_leases(&store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_postgres_too() {
    let server = postgres::TempPostgres::start();
    let store = Store::connect(&server.url()).await.unwrap();
    assert!(store
        .record_delivery("abc", "push", None, "{}")
        .await
        .unwrap());
    assert!(!store
        .record_delivery("abc", "push", None, "{}")
        .await
        .unwrap());
    claims_and_leases(&store).await;
    service_queries(&store).await;
    let store = Arc::new(Store::connect(&server.url()).await.unwrap());
    exactly_once(store, 1000, 3).await;
}

async fn claims_and_leases(store: &Store) {
    store.enqueue(&run(1)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(5)).await;
    store.enqueue(&run(2)).await.unwrap();
    let first = store
        .claim("w1", Duration::from_millis(200))
        .await
        .unwrap()
        .unwrap();
    assert_eq!((first.run.id.as_str(), first.attempt), ("run-00001", 1));
    let second = store
        .claim("w2", Duration::from_secs(60))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(second.run.id, "run-00002");
    assert!(store
        .claim("w3", Duration::from_secs(60))
        .await
        .unwrap()
        .is_none());
    // w1 stops heartbeating: after its lease, w3 takes the run over.
    tokio::time::sleep(Duration::from_millis(250)).await;
    let taken = store
        .claim("w3", Duration::from_secs(60))
        .await
        .unwrap()
        .unwrap();
    assert_eq!((taken.run.id.as_str(), taken.attempt), ("run-00001", 2));
    assert!(!store
        .heartbeat("run-00001", "w1", Duration::from_secs(60))
        .await
        .unwrap());
    assert!(
        !store.finish("run-00001", "w1", "success").await.unwrap(),
        "the old worker cannot write"
    );
    assert!(store.finish("run-00001", "w3", "failure").await.unwrap());
    assert!(
        !store.finish("run-00001", "w3", "success").await.unwrap(),
        "written once"
    );
    assert_eq!(
        store.conclusion("run-00001").await.unwrap().as_deref(),
        Some("failure")
    );
    assert!(store
        .heartbeat("run-00002", "w2", Duration::from_secs(60))
        .await
        .unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_workers_claim_every_run_exactly_once() {
    let (_dir, store) = store().await;
    exactly_once(Arc::new(store), 200, 4).await;
}

async fn exactly_once(store: Arc<Store>, runs: usize, worker_count: usize) {
    let before = store.counts().await.unwrap().completed;
    for id in 0..runs {
        store.enqueue(&run(10_000 + id)).await.unwrap();
    }
    let mut workers = Vec::new();
    for worker in 0..worker_count {
        let store = store.clone();
        workers.push(tokio::spawn(async move {
            let name = format!("w{worker}");
            let mut mine = Vec::new();
            while let Some(claimed) = store.claim(&name, Duration::from_secs(60)).await.unwrap() {
                assert!(store
                    .finish(&claimed.run.id, &name, "success")
                    .await
                    .unwrap());
                mine.push(claimed.run.id);
            }
            mine
        }));
    }
    let mut all = Vec::new();
    for worker in workers {
        all.extend(worker.await.unwrap());
    }
    let unique: HashSet<&String> = all.iter().collect();
    assert_eq!(all.len(), runs, "none lost");
    assert_eq!(unique.len(), runs, "none twice");
    assert_eq!(
        store.counts().await.unwrap().completed - before,
        runs as i64
    );
}

#[tokio::test]
async fn groups_deliveries_jobs_and_restarts_on_sqlite() {
    let (_dir, store) = store().await;
    service_queries(&store).await;
}

fn grouped(id: usize, cancel_in_progress: bool) -> NewRun {
    NewRun {
        concurrency: Some(Concurrency {
            group: "pr-7".into(),
            cancel_in_progress,
        }),
        pr_number: Some(7),
        ..run(id)
    }
}

/// Everything beyond the bare queue, on whichever database `store` is.
async fn service_queries(store: &Store) {
    // Deliveries: pending until settled; a retry waits for its time.
    assert!(store
        .record_delivery("d-a", "push", Some("octo/app"), "{\"a\":1}")
        .await
        .unwrap());
    assert!(store
        .record_delivery("d-b", "push", None, "{}")
        .await
        .unwrap());
    let pending = store.pending_deliveries(10).await.unwrap();
    let ids: Vec<&str> = pending.iter().map(|d| d.delivery_id.as_str()).collect();
    assert!(ids.contains(&"d-a") && ids.contains(&"d-b"), "{ids:?}");
    store
        .retry_delivery("d-a", Duration::from_secs(60), "GitHub answered 502")
        .await
        .unwrap();
    store
        .settle_delivery("d-b", DeliveryState::Ignored, "no workflow runs for push")
        .await
        .unwrap();
    let pending = store.pending_deliveries(10).await.unwrap();
    assert!(pending
        .iter()
        .all(|d| d.delivery_id != "d-a" && d.delivery_id != "d-b"));
    let recent = store.recent_deliveries(50).await.unwrap();
    let b = recent.iter().find(|d| d.delivery_id == "d-b").unwrap();
    assert_eq!(
        (b.state.as_str(), b.note.as_deref()),
        ("ignored", Some("no workflow runs for push"))
    );
    assert_eq!(
        store.delivery_payload("d-a").await.unwrap().as_deref(),
        Some("{\"a\":1}")
    );

    // Concurrency: a newer run supersedes the queued one, and waits for the running one.
    assert!(store.enqueue(&grouped(501, false)).await.unwrap().inserted);
    let running = loop {
        let claimed = store
            .claim("wg", Duration::from_secs(60))
            .await
            .unwrap()
            .unwrap();
        if claimed.run.id == "run-00501" {
            break claimed;
        }
        store
            .finish(&claimed.run.id, "wg", "success")
            .await
            .unwrap();
    };
    assert_eq!(running.run.concurrency.unwrap().group, "pr-7");
    assert!(store.enqueue(&grouped(502, false)).await.unwrap().inserted);
    let third = store.enqueue(&grouped(503, false)).await.unwrap();
    assert_eq!(third.superseded, vec!["run-00502".to_string()]);
    assert!(
        !store.enqueue(&grouped(503, false)).await.unwrap().inserted,
        "once"
    );
    assert_eq!(
        store.conclusion("run-00502").await.unwrap().as_deref(),
        Some("cancelled")
    );
    assert!(
        store
            .claim("wg", Duration::from_secs(60))
            .await
            .unwrap()
            .is_none(),
        "503 waits while 501 runs"
    );
    let fourth = store.enqueue(&grouped(504, true)).await.unwrap();
    assert_eq!(fourth.superseded, vec!["run-00503".to_string()]);
    assert_eq!(fourth.cancel_requested, vec!["run-00501".to_string()]);
    assert!(store.cancel_requested("run-00501").await.unwrap());
    assert!(store.finish("run-00501", "wg", "cancelled").await.unwrap());
    let next = store
        .claim("wg", Duration::from_secs(60))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(next.run.id, "run-00504");

    // Jobs are saved, replaced and listed.
    let mut job = JobRecord {
        run_id: "run-00504".into(),
        name: "build (linux)".into(),
        state: JobState::Running,
        conclusion: None,
        worker: Some("wg".into()),
        started_at: Some(1),
        finished_at: None,
        steps: "[]".into(),
        summary: String::new(),
        log_tail: String::new(),
        hints: String::new(),
        environment: None,
        environment_url: None,
    };
    store.save_job(&job).await.unwrap();
    assert_eq!(store.running_jobs().await.unwrap().len(), 1);
    job.state = JobState::Completed;
    job.conclusion = Some("failure".into());
    job.log_tail = "error: boom".into();
    store.save_job(&job).await.unwrap();
    let jobs = store.jobs("run-00504").await.unwrap();
    assert_eq!(jobs, vec![job]);
    assert!(store.running_jobs().await.unwrap().is_empty());

    // A restarted worker puts back what it held.
    assert_eq!(
        store.requeue_interrupted("wg").await.unwrap(),
        vec!["run-00504".to_string()]
    );
    let again = store
        .claim("wg2", Duration::from_secs(60))
        .await
        .unwrap()
        .unwrap();
    assert_eq!((again.run.id.as_str(), again.attempt), ("run-00504", 2));
    let record = store.run("run-00504").await.unwrap().unwrap();
    assert!(record.note.unwrap().contains("queued again"));
    store.clear_jobs("run-00504").await.unwrap();
    assert!(store.jobs("run-00504").await.unwrap().is_empty());
    assert!(store.finish("run-00504", "wg2", "success").await.unwrap());
    let of_pr = store
        .runs_of_pull_request("octo/app", 7, &"0".repeat(40))
        .await
        .unwrap();
    assert_eq!(of_pr.len(), 4);

    store
        .record_error("dispatch", "GitHub answered 502")
        .await
        .unwrap();
    assert_eq!(
        store.recent_errors(5).await.unwrap()[0].message,
        "GitHub answered 502"
    );
}
