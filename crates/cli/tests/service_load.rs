//! Load and fault test of `firerunner serve` (the real binary, loopback only):
//! 20,000 signed webhooks sent as fast as the server takes them, the server
//! killed (SIGKILL) and restarted once in the middle, and bad requests mixed
//! in. Every accepted delivery must be recorded and dispatched exactly once
//! (one queued run each), none lost, none doubled; every bad request refused
//! without a trace. `FIRERUNNER_LOAD_WEBHOOKS` changes the count.

use std::collections::{HashMap, HashSet};
use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use firerunner_github::testing::MockGitHub;
use hmac::{Hmac, Mac};
use serde_json::json;
use sha2::Sha256;

const SECRET: &str = "load-test-secret";
const REPO: &str = "octo-org/widgets";
const SHA: &str = "7777777777777777777777777777777777777777";
const WORKFLOW: &str = "name: CI
on:
  push:
    branches: [main]
jobs:
  build:
    runs-on: ubuntu-latest
    steps:
      - run: make
";

fn sign(secret: &str, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The server process, killed when dropped (also when the test fails).
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_server(config: &Path) -> Server {
    Server(
        Command::new(env!("CARGO_BIN_EXE_firerunner"))
            .args(["serve", "--config"])
            .arg(config)
            .env("RUST_LOG", "error")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    )
}

async fn wait_healthy(client: &reqwest::Client, url: &str) {
    let deadline = Instant::now() + Duration::from_secs(120);
    while Instant::now() < deadline {
        if let Ok(response) = client.get(format!("{url}/health")).send().await {
            if response.status().is_success() {
                return;
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("the server did not become healthy");
}

fn payload(n: usize) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "ref": "refs/heads/main",
        "before": "0000000000000000000000000000000000000000",
        "after": SHA,
        "created": false,
        "deleted": false,
        "forced": false,
        "base_ref": null,
        "compare": format!("https://github.com/{REPO}/compare/{n}"),
        "commits": [{
            "id": SHA, "tree_id": SHA, "distinct": true, "message": format!("change {n}"),
            "timestamp": "2026-11-22T10:00:00Z", "url": format!("https://github.com/{REPO}/commit/{SHA}"),
            "author": {"name": "Octo Cat", "email": "octo@example.com", "username": "octocat"},
            "committer": {"name": "Octo Cat", "email": "octo@example.com", "username": "octocat"},
            "added": [], "removed": [], "modified": ["src/lib.rs"]
        }],
        "head_commit": null,
        "repository": {
            "id": 1296269, "node_id": "R_1", "name": "widgets", "full_name": REPO, "private": false,
            "owner": {"login": "octo-org", "id": 1, "type": "Organization"},
            "html_url": format!("https://github.com/{REPO}"),
            "clone_url": format!("https://github.com/{REPO}.git"),
            "default_branch": "main"
        },
        "pusher": {"name": "octocat", "email": "octo@example.com"},
        "sender": {"login": "octocat", "id": 583231, "type": "User"}
    }))
    .unwrap()
}

/// One bad request of five kinds; none may leave a trace.
fn bad_request(kind: usize, body: &[u8]) -> (Vec<u8>, Option<String>) {
    match kind % 5 {
        0 => (body.to_vec(), None),
        1 => (body.to_vec(), Some(sign("not the secret", body))),
        2 => {
            let big = vec![b'{'; 2 * 1024 * 1024];
            let signature = sign(SECRET, &big);
            (big, Some(signature))
        }
        3 => {
            let cut = body[..body.len() / 3].to_vec();
            let signature = sign(SECRET, &cut);
            (cut, Some(signature))
        }
        _ => {
            let junk = b"{\"ref\": refs/heads/main}".to_vec();
            let signature = sign(SECRET, &junk);
            (junk, Some(signature))
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_accepted_webhook_is_dispatched_exactly_once_across_a_kill() {
    let total: usize = std::env::var("FIRERUNNER_LOAD_WEBHOOKS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(20_000);
    let github = MockGitHub::start().await;
    github.add_file(REPO, SHA, ".github/workflows/ci.yml", WORKFLOW);
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}");
    let database = format!(
        "sqlite://{}?mode=rwc",
        dir.path().join("store.db").display()
    );
    let config = dir.path().join("firerunner.toml");
    std::fs::write(
        &config,
        format!(
            "listen = \"127.0.0.1:{port}\"\npublic_url = \"{url}\"\ndatabase_url = \"{database}\"\n\
             data_dir = \"{}\"\nwebhook_secret = \"{SECRET}\"\nmax_body_bytes = 1048576\n\
             [github]\napi_url = \"{}\"\ntoken = \"ghs_load\"\n[worker]\nenabled = false\n",
            dir.path().display(),
            github.url()
        ),
    )
    .unwrap();
    let server = Arc::new(Mutex::new(start_server(&config)));
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(64)
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    wait_healthy(&client, &url).await;

    let next = Arc::new(AtomicUsize::new(0));
    let accepted = Arc::new(AtomicUsize::new(0));
    let retries = Arc::new(AtomicUsize::new(0));
    let killed = Arc::new(AtomicBool::new(false));
    let refused_bad = Arc::new(AtomicUsize::new(0));
    let latencies = Arc::new(Mutex::new(Vec::with_capacity(total)));
    let started = Instant::now();
    let mut senders = Vec::new();
    for _ in 0..64 {
        let (client, url, next, accepted, retries, refused_bad, latencies) = (
            client.clone(),
            url.clone(),
            next.clone(),
            accepted.clone(),
            retries.clone(),
            refused_bad.clone(),
            latencies.clone(),
        );
        senders.push(tokio::spawn(async move {
            loop {
                let n = next.fetch_add(1, Ordering::SeqCst);
                if n >= total {
                    return;
                }
                let body = payload(n);
                if n % 100 == 0 {
                    let (bad, signature) = bad_request(n / 100, &body);
                    let mut request = client
                        .post(format!("{url}/webhook"))
                        .header("X-GitHub-Event", "push")
                        .header("X-GitHub-Delivery", format!("bad-{n}"))
                        .body(bad);
                    if let Some(signature) = signature {
                        request = request.header("X-Hub-Signature-256", signature);
                    }
                    // A kill may drop this request; a refusal is all that may come back.
                    if let Ok(response) = request.send().await {
                        assert!(
                            response.status().is_client_error(),
                            "bad-{n}: {}",
                            response.status()
                        );
                        refused_bad.fetch_add(1, Ordering::Relaxed);
                    }
                }
                let signature = sign(SECRET, &body);
                // Redeliver (same delivery id) until the server answers: a kill in
                // the middle of a request must lose nothing and double nothing.
                loop {
                    let sent = Instant::now();
                    let answer = client
                        .post(format!("{url}/webhook"))
                        .header("X-GitHub-Event", "push")
                        .header("X-GitHub-Delivery", format!("load-{n:06}"))
                        .header("X-Hub-Signature-256", &signature)
                        .header("Content-Type", "application/json")
                        .body(body.clone())
                        .send()
                        .await;
                    match answer.map(|r| r.status().as_u16()) {
                        Ok(202) | Ok(200) => {
                            latencies.lock().unwrap().push(sent.elapsed());
                            accepted.fetch_add(1, Ordering::Relaxed);
                            break;
                        }
                        Ok(status) if status != 503 => panic!("load-{n}: status {status}"),
                        _ => {
                            retries.fetch_add(1, Ordering::Relaxed);
                            tokio::time::sleep(Duration::from_millis(50)).await;
                        }
                    }
                }
            }
        }));
    }
    // Kill the server once, mid-load, and start it again on the same port.
    {
        let (server, accepted, killed, config) = (
            server.clone(),
            accepted.clone(),
            killed.clone(),
            config.clone(),
        );
        let (client, url) = (client.clone(), url.clone());
        tokio::spawn(async move {
            while accepted.load(Ordering::Relaxed) < total / 2 {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            {
                let mut server = server.lock().unwrap();
                server.0.kill().unwrap();
                server.0.wait().unwrap();
            }
            killed.store(true, Ordering::SeqCst);
            *server.lock().unwrap() = start_server(&config);
            wait_healthy(&client, &url).await;
        });
    }
    for sender in senders {
        sender.await.unwrap();
    }
    let send_time = started.elapsed();
    assert!(
        killed.load(Ordering::SeqCst),
        "the server was killed during the load"
    );

    // Wait for the dispatcher to settle every delivery. A loaded machine may
    // dispatch slowly; what may not happen is that dispatching stops, so the
    // wait ends when every delivery is settled or nothing moved for a minute.
    let store = firerunner_server::Store::connect(&database).await.unwrap();
    let stall_limit = Duration::from_secs(60);
    let (mut last_settled, mut last_progress) = (0, Instant::now());
    loop {
        let counts = store.delivery_counts().await.unwrap();
        let settled = counts
            .iter()
            .find(|(state, _)| state == "dispatched")
            .map_or(0, |(_, n)| *n as usize);
        if settled > last_settled {
            (last_settled, last_progress) = (settled, Instant::now());
        }
        if settled == total || last_progress.elapsed() > stall_limit {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let deliveries = store.recent_deliveries(total as i64 + 1000).await.unwrap();
    let dispatch_time = started.elapsed();
    let ids: HashSet<&str> = deliveries.iter().map(|d| d.delivery_id.as_str()).collect();
    assert_eq!(ids.len(), deliveries.len(), "a delivery recorded twice");
    assert!(
        deliveries
            .iter()
            .all(|d| d.delivery_id.starts_with("load-")),
        "a bad request left a trace"
    );
    assert_eq!(deliveries.len(), total, "deliveries lost");
    let states = store.delivery_counts().await.unwrap();
    let not_dispatched: Vec<_> = deliveries
        .iter()
        .filter(|d| d.state != "dispatched")
        .map(|d| (&d.delivery_id, &d.state, &d.note))
        .take(5)
        .collect();
    assert!(not_dispatched.is_empty(), "{states:?}: {not_dispatched:?}");
    let runs = store.recent_runs(total as i64 + 1000).await.unwrap();
    let mut per_delivery: HashMap<&str, usize> = HashMap::new();
    for run in &runs {
        *per_delivery
            .entry(run.run.delivery_id.as_str())
            .or_default() += 1;
    }
    assert_eq!(per_delivery.len(), total, "a delivery without its run");
    assert!(
        per_delivery.values().all(|&n| n == 1),
        "a delivery queued twice"
    );

    let mut latencies = latencies.lock().unwrap().clone();
    latencies.sort();
    let p = |q: f64| latencies[((latencies.len() as f64 * q) as usize).min(latencies.len() - 1)];
    println!(
        "load: {total} webhooks accepted in {:.1}s ({:.0}/s incl. a kill and restart), p50 {:?}, p99 {:?}; \
         {} redeliveries after the kill; {} bad requests refused; all {total} dispatched to exactly one run after {:.1}s",
        send_time.as_secs_f64(),
        total as f64 / send_time.as_secs_f64(),
        p(0.5),
        p(0.99),
        retries.load(Ordering::Relaxed),
        refused_bad.load(Ordering::Relaxed),
        dispatch_time.as_secs_f64()
    );
}
