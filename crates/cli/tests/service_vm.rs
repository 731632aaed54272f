//! The whole service path with a real microVM: `firerunner serve` (the
//! binary) takes a signed pull_request webhook, finds the workflow through
//! the (mock) GitHub API, runs its job in a QEMU/TCG guest that checks out
//! the commit from a git remote, and reports a commit status and the pull
//! request comment; the job's log is served by the API.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use firerunner_github::testing::MockGitHub;
use firerunner_vm::testing::{git, git_repo};
use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use sha2::Sha256;

const SECRET: &str = "vm-test-secret";
const TOKEN: &str = "vm-test-api-token";
const REPO: &str = "octo-org/widgets";
const WORKFLOW: &str = r#"name: CI
on: pull_request
jobs:
  build:
    runs-on: ubuntu-latest
    steps:
      - uses: actions/checkout@v4
      - name: read the checkout
        run: cat greeting.txt
      - run: test "$(cat greeting.txt)" = "hello from the repo"
"#;

/// The server process, killed when dropped (also when the test fails).
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn sign(body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(SECRET.as_bytes()).unwrap();
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pull_request_runs_in_a_microvm_and_gets_its_status_and_comment() {
    // The repository, served over git from a local "GitHub".
    let remotes = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    std::fs::write(work.path().join("greeting.txt"), "hello from the repo\n").unwrap();
    let sha = git_repo(work.path(), "greeting");
    let bare = remotes.path().join(format!("{REPO}.git"));
    std::fs::create_dir_all(bare.parent().unwrap()).unwrap();
    git(
        work.path(),
        &["clone", "-q", "--bare", ".", bare.to_str().unwrap()],
    );

    let github = MockGitHub::start().await;
    github.add_file(REPO, &sha, ".github/workflows/ci.yml", WORKFLOW);
    let dir = tempfile::tempdir().unwrap();
    let runtime = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("http://127.0.0.1:{port}");
    let config = dir.path().join("firerunner.toml");
    std::fs::write(
        &config,
        format!(
            "listen = \"127.0.0.1:{port}\"\npublic_url = \"{url}\"\n\
             data_dir = \"{data}\"\ndatabase_url = \"sqlite://{data}/store.db?mode=rwc\"\n\
             webhook_secret = \"{SECRET}\"\napi_token = \"{TOKEN}\"\n\
             [github]\napi_url = \"{api}\"\ngit_url = \"file://{git}\"\ntoken = \"ghs_vm\"\n\
             [limits]\nconcurrent_runs = 1\nmax_sessions = 1\nmax_vms = 1\nwarm_vms = 0\n\
             [vm]\nimage = \"test\"\naccel = \"tcg\"\nmemory_mib = 256\n",
            data = dir.path().display(),
            api = github.url(),
            git = remotes.path().display(),
        ),
    )
    .unwrap();
    let _server = Server(
        Command::new(env!("CARGO_BIN_EXE_firerunner"))
            .args(["serve", "--config"])
            .arg(&config)
            .env("FIRERUNNER_AGENT", firerunner_vm::testing::agent_binary())
            .env("FIRERUNNER_RUNTIME_DIR", runtime.path())
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap(),
    );
    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(300);
    while client.get(format!("{url}/health")).send().await.is_err() {
        assert!(Instant::now() < deadline, "the server never answered");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let payload_path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../github/testdata/payloads/pull_request-opened.json");
    let mut payload: Value =
        serde_json::from_str(&std::fs::read_to_string(payload_path).unwrap()).unwrap();
    payload["pull_request"]["head"]["sha"] = json!(sha);
    let number = payload["number"].as_u64().unwrap();
    let body = serde_json::to_vec(&payload).unwrap();
    let answer = client
        .post(format!("{url}/webhook"))
        .header("X-GitHub-Event", "pull_request")
        .header("X-GitHub-Delivery", "d-vm-1")
        .header("X-Hub-Signature-256", sign(&body))
        .header("Content-Type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status().as_u16(), 202);

    // The job's final status: success, linking to its log page.
    let context = "firerunner/CI/build";
    let status = loop {
        let statuses = github.statuses(REPO, &sha);
        if let Some(done) = statuses
            .iter()
            .find(|s| s["context"] == context && s["state"] != "pending")
        {
            break done.clone();
        }
        assert!(
            Instant::now() < deadline,
            "no final status for {context}: {statuses:#?}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    assert_eq!(status["state"], "success", "{status:#}");
    let target = status["target_url"].as_str().unwrap();
    assert!(target.starts_with(&format!("{url}/runs/")), "{target}");

    let comments = github.comments(REPO, number);
    assert_eq!(comments.len(), 1, "{comments:?}");
    assert!(comments[0].1.contains("✅ 1 passed"), "{}", comments[0].1);

    let runs: Value = client
        .get(format!("{url}/api/runs"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let run_id = runs
        .as_array()
        .or_else(|| runs["runs"].as_array())
        .and_then(|runs| runs.first())
        .and_then(|run| run["id"].as_str())
        .unwrap_or_else(|| panic!("{runs:#}"))
        .to_string();
    let log = client
        .get(format!("{url}/api/runs/{run_id}/jobs/build/log"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(log.contains("hello from the repo"), "{log}");
}
