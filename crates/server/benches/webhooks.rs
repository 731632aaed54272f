//! Webhook intake, side by side in one run: firerunner's `/webhook` (verify,
//! parse, store durably in SQLite, answer 202; the dispatcher running
//! beside it) against a bare axum handler that only verifies the HMAC (the
//! ceiling). Prints accepted webhooks per second and the latency to the
//! answer, for the same signed bodies over the same loopback client.
//!
//! `cargo bench -p firerunner-server --bench webhooks -- [COUNT] [CONNECTIONS]`

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::Router;
use firerunner_github::testing::MockGitHub;
use firerunner_github::webhook::verify_signature;
use firerunner_server::{serve, AppState, Config, Roles, VmRunExecutor};
use hmac::{Hmac, Mac};
use sha2::Sha256;
use tokio_util::sync::CancellationToken;

const SECRET: &str = "bench-secret";

fn sign(body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(SECRET.as_bytes()).unwrap();
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

fn body(n: usize) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "ref": "refs/heads/main",
        "before": "0000000000000000000000000000000000000000",
        "after": format!("{n:040x}"),
        "created": false, "deleted": false, "forced": false,
        "commits": [{"id": format!("{n:040x}"), "message": "bench", "timestamp": "2026-11-22T10:00:00Z",
                     "url": "https://github.com/octo-org/widgets/commit/x",
                     "author": {"name": "Octo", "email": "o@example.com"},
                     "committer": {"name": "Octo", "email": "o@example.com"},
                     "added": [], "removed": [], "modified": ["src/lib.rs"]}],
        "head_commit": null,
        "repository": {"id": 1, "name": "widgets", "full_name": "octo-org/widgets", "private": false,
                       "owner": {"login": "octo-org", "id": 1},
                       "clone_url": "https://github.com/octo-org/widgets.git", "default_branch": "main"},
        "pusher": {"name": "octocat", "email": "o@example.com"},
        "sender": {"login": "octocat", "id": 1}
    }))
    .unwrap()
}

struct Outcome {
    elapsed: Duration,
    latencies: Vec<Duration>,
    accepted: usize,
}

/// Sends bodies `first..first + count` (each body once: a body sent again
/// under another delivery id is refused as a replay).
async fn load(url: &str, first: usize, count: usize, connections: usize, prefix: &str) -> Outcome {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(connections)
        .build()
        .unwrap();
    let bodies: Arc<Vec<(Vec<u8>, String)>> = Arc::new(
        (first..first + count)
            .map(|n| {
                let b = body(n);
                let s = sign(&b);
                (b, s)
            })
            .collect(),
    );
    let next = Arc::new(AtomicUsize::new(0));
    let accepted = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..connections {
        let (client, bodies, next, accepted) = (
            client.clone(),
            bodies.clone(),
            next.clone(),
            accepted.clone(),
        );
        let url = url.to_string();
        let prefix = prefix.to_string();
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                if n >= bodies.len() {
                    return latencies;
                }
                let (body, signature) = &bodies[n];
                let sent = Instant::now();
                let response = client
                    .post(&url)
                    .header("X-GitHub-Event", "push")
                    .header("X-GitHub-Delivery", format!("{prefix}-{n}"))
                    .header("X-Hub-Signature-256", signature)
                    .header("Content-Type", "application/json")
                    .body(body.clone())
                    .send()
                    .await
                    .unwrap();
                let status = response.status();
                let _ = response.bytes().await;
                latencies.push(sent.elapsed());
                if status == StatusCode::ACCEPTED || status == StatusCode::OK {
                    accepted.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    let mut latencies = Vec::new();
    for task in tasks {
        latencies.extend(task.await.unwrap());
    }
    let elapsed = started.elapsed();
    latencies.sort();
    Outcome {
        elapsed,
        latencies,
        accepted: accepted.load(Ordering::Relaxed),
    }
}

fn quantile(sorted: &[Duration], q: f64) -> f64 {
    sorted[((sorted.len() as f64 * q) as usize).min(sorted.len() - 1)].as_secs_f64() * 1000.0
}

async fn bare_handler(headers: HeaderMap, body: Bytes) -> StatusCode {
    let signature = headers
        .get("x-hub-signature-256")
        .and_then(|v| v.to_str().ok());
    match verify_signature(SECRET.as_bytes(), &body, signature) {
        Ok(()) => StatusCode::ACCEPTED,
        Err(_) => StatusCode::UNAUTHORIZED,
    }
}

fn main() {
    let mut args = std::env::args().skip(1).filter(|a| !a.starts_with('-'));
    let count: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(20_000);
    let connections: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(32);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async move {
        // The ceiling: verify the HMAC and answer.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let bare_url = format!("http://{}/webhook", listener.local_addr().unwrap());
        tokio::spawn(async move {
            axum::serve(listener, Router::new().route("/webhook", post(bare_handler)))
                .await
                .unwrap()
        });
        // The service: SQLite in a temporary directory, the dispatcher running
        // against a mock GitHub with no workflows (each delivery is looked up
        // and settled as it would be), no worker.
        let github = MockGitHub::start().await;
        let dir = tempfile::tempdir().unwrap();
        let mut config = Config::from_parts("bench", "", Vec::new()).unwrap();
        config.data_dir = dir.path().to_path_buf();
        config.database_url = format!("sqlite://{}?mode=rwc", dir.path().join("store.db").display());
        config.webhook_secret = SECRET.into();
        config.github.api_url = github.url();
        config.github.token = "ghs_bench".into();
        config.worker.enabled = false;
        config.limits.webhook_concurrency = connections.max(128);
        let state = AppState::open(config).await.unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let service_url = format!("http://{}/webhook", listener.local_addr().unwrap());
        let shutdown = CancellationToken::new();
        tokio::spawn(serve::<VmRunExecutor<firerunner_vm::qemu::QemuBackend>>(
            state.clone(),
            Roles { http: true, worker: false },
            Some(listener),
            None,
            shutdown.clone(),
        ));
        // Warm both up with bodies of their own, then measure each with the same bodies.
        load(&bare_url, count, 500, connections, "warm").await;
        load(&service_url, count, 500, connections, "warm").await;
        let bare = load(&bare_url, 0, count, connections, "bare").await;
        let full = load(&service_url, 0, count, connections, "bench").await;
        let stored = state.store.recent_deliveries(count as i64 * 2).await.unwrap().len();
        println!(
            "webhook intake: {count} signed push webhooks ({} bytes each), {connections} connections, loopback, one run",
            body(0).len()
        );
        println!("| handler | accepted | webhooks/s | p50 to answer | p99 to answer | max |");
        println!("| --- | ---: | ---: | ---: | ---: | ---: |");
        for (name, outcome) in [
            ("bare axum, HMAC check only (ceiling)", &bare),
            ("firerunner /webhook (verify, parse, SQLite, 202)", &full),
        ] {
            println!(
                "| {name} | {} | {:.0} | {:.2} ms | {:.2} ms | {:.2} ms |",
                outcome.accepted,
                outcome.accepted as f64 / outcome.elapsed.as_secs_f64(),
                quantile(&outcome.latencies, 0.5),
                quantile(&outcome.latencies, 0.99),
                quantile(&outcome.latencies, 1.0),
            );
        }
        println!(
            "firerunner reached {:.0}% of the ceiling's rate; deliveries stored: {stored}",
            100.0 * (full.accepted as f64 / full.elapsed.as_secs_f64())
                / (bare.accepted as f64 / bare.elapsed.as_secs_f64())
        );
        shutdown.cancel();
    });
}
