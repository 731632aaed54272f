//! The service end to end over loopback HTTP: signed webhooks in, runs
//! queued by the trigger filters, jobs executed (by a scripted executor),
//! statuses and one pull request comment out, concurrency, restarts, the API,
//! the dashboard's pages and the metrics.

#[path = "support/service.rs"]
mod service;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use service::{fixture, sign, Service, API_TOKEN, REPO, SECRET};

const CI: &str = "name: CI
on:
  push:
    branches: [main]
  pull_request:
jobs:
  build:
    runs-on: ubuntu-latest
    steps:
      - run: make
  test-fail:
    needs: build
    runs-on: ubuntu-latest
    steps:
      - run: make test
";

const DOCS: &str = "name: Docs
on:
  push:
    paths: ['docs/**']
jobs:
  docs:
    runs-on: ubuntu-latest
    steps:
      - run: mkdocs build
";

const SLOW: &str = "name: Slow
on: [pull_request, workflow_dispatch]
concurrency:
  group: pr-${{ github.event.pull_request.number }}
  cancel-in-progress: true
jobs:
  wait:
    runs-on: ubuntu-latest
    steps:
      - run: sleep 600
";

fn push_payload(sha: &str, files: &[&str]) -> Value {
    let mut payload = fixture("push");
    payload["after"] = json!(sha);
    for commit in payload["commits"].as_array_mut().unwrap() {
        commit["added"] = json!([]);
        commit["removed"] = json!([]);
        commit["modified"] = json!(files);
    }
    payload
}

fn pull_request_payload(action: &str, sha: &str) -> Value {
    let mut payload = fixture(&format!("pull_request-{action}"));
    payload["pull_request"]["head"]["sha"] = json!(sha);
    payload
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_runs_the_workflows_its_filters_select_and_reports_every_job() {
    let service = Service::start(|_| {}).await;
    let sha = "1111111111111111111111111111111111111111";
    service
        .github
        .add_file(REPO, sha, ".github/workflows/ci.yml", CI);
    service
        .github
        .add_file(REPO, sha, ".github/workflows/docs.yml", DOCS);

    let (status, answer) = service
        .webhook("push", "d-push-1", &push_payload(sha, &["src/main.rs"]))
        .await;
    assert_eq!(
        (status, answer["result"].as_str()),
        (202, Some("accepted")),
        "{answer}"
    );
    let runs = service
        .wait_for_runs("the CI run to complete", |runs| {
            runs.values().any(|r| r.state == "completed")
        })
        .await;
    assert_eq!(
        runs.len(),
        1,
        "only CI: Docs' path filter excludes src/main.rs"
    );
    let run = runs.values().next().unwrap();
    assert_eq!(
        (run.run.workflow_name.as_str(), run.conclusion.as_deref()),
        ("CI", Some("failure"))
    );
    assert_eq!(run.run.git_ref, "refs/heads/main");
    let (state, note) = service.settled("d-push-1").await;
    assert_eq!(state, "dispatched");
    assert!(note.contains("queued CI (2 job(s))"), "{note}");
    assert!(note.contains(".github/workflows/docs.yml"), "{note}");

    // One status per job: pending, then the result, linking to the job's log page.
    let statuses = service.github.statuses(REPO, sha);
    let of = |context: &str| -> Vec<String> {
        statuses
            .iter()
            .filter(|s| s["context"] == context)
            .map(|s| s["state"].as_str().unwrap().to_string())
            .collect()
    };
    let build = of("firerunner/CI/build");
    assert_eq!(
        build.first().map(String::as_str),
        Some("pending"),
        "{statuses:#?}"
    );
    assert_eq!(
        build.last().map(String::as_str),
        Some("success"),
        "{statuses:#?}"
    );
    assert_eq!(
        of("firerunner/CI/test-fail").last().map(String::as_str),
        Some("failure")
    );
    let link = statuses
        .iter()
        .rev()
        .find(|s| s["context"] == "firerunner/CI/test-fail")
        .unwrap()["target_url"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(
        link,
        format!("{}/runs/{}/jobs/test-fail", service.url, run.run.id)
    );
    assert_eq!(
        *service.executor.executed.lock().unwrap(),
        vec![run.run.id.clone()]
    );

    // The same delivery again changes nothing.
    let (status, answer) = service
        .webhook("push", "d-push-1", &push_payload(sha, &["src/main.rs"]))
        .await;
    assert_eq!(
        (status, answer["result"].as_str()),
        (200, Some("duplicate"))
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(service.state.store.recent_runs(10).await.unwrap().len(), 1);

    // The API, behind its token.
    let (status, _) = service
        .get(&format!("/api/runs/{}", run.run.id), None)
        .await;
    assert_eq!(status, 401);
    let (status, body) = service
        .get(&format!("/api/runs/{}", run.run.id), Some("wrong"))
        .await;
    assert_eq!(status, 401, "{body}");
    let (status, body) = service
        .get(&format!("/api/runs/{}", run.run.id), Some(API_TOKEN))
        .await;
    assert_eq!(status, 200, "{body}");
    let detail: Value = serde_json::from_str(&body).unwrap();
    let jobs = detail["jobs"].as_array().unwrap();
    assert_eq!(jobs.len(), 2, "{detail}");
    let failed = jobs.iter().find(|j| j["name"] == "test-fail").unwrap();
    assert!(failed["steps"].as_str().unwrap().contains("Run tests"));
    assert!(failed["log_tail"].as_str().unwrap().contains("went wrong"));
    let (status, body) = service.get("/api/status", Some(API_TOKEN)).await;
    assert_eq!(status, 200);
    let status_json: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(status_json["runs"]["completed"], 1);
    assert_eq!(status_json["workers"][0]["id"], "test-worker");

    // The dashboard's pages.
    let (status, html) = service.get("/", Some(API_TOKEN)).await;
    assert_eq!(status, 200);
    assert!(
        html.contains(&format!("href='/runs/{}'", run.run.id)),
        "{html}"
    );
    assert!(html.contains("d-push-1") && html.contains("test-worker"));
    let (status, html) = service
        .get(&format!("/runs/{}", run.run.id), Some(API_TOKEN))
        .await;
    assert_eq!(status, 200);
    assert!(
        html.contains("test-fail") && html.contains("Run tests"),
        "{html}"
    );
    let (status, _) = service.get("/runs/nope", Some(API_TOKEN)).await;
    assert_eq!(status, 404);

    // Health and metrics.
    let (status, body) = service.get("/health", None).await;
    assert_eq!(status, 200);
    assert!(body.contains("\"status\":\"ok\""), "{body}");
    let (_, metrics) = service.get("/metrics", None).await;
    for name in [
        "firerunner_webhooks_total{result=\"accepted\"}",
        "firerunner_webhooks_total{result=\"duplicate\"}",
        "firerunner_runs_total{conclusion=\"failure\"}",
        "firerunner_jobs_total{conclusion=\"success\"}",
        "firerunner_queue_depth",
        "firerunner_webhook_seconds_bucket",
        "firerunner_step_duration_seconds_bucket",
    ] {
        assert!(metrics.contains(name), "{name} missing from:\n{metrics}");
    }
    service.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_webhooks_are_refused_without_effect() {
    let service = Service::start(|config| config.worker.enabled = false).await;
    let body = serde_json::to_vec(&push_payload(
        "2222222222222222222222222222222222222222",
        &["a"],
    ))
    .unwrap();
    /// What is sent, how it is signed, and the answer expected.
    type Case = (&'static str, Vec<u8>, Option<String>, u16, &'static str);
    let cases: Vec<Case> = vec![
        ("unsigned", body.clone(), None, 401, "unauthorized"),
        (
            "wrongly signed",
            body.clone(),
            Some(sign("another secret", &body)),
            401,
            "unauthorized",
        ),
        (
            "malformed signature",
            body.clone(),
            Some("sha256=zz".into()),
            401,
            "unauthorized",
        ),
        (
            "oversized",
            vec![b' '; 300 * 1024],
            Some(sign(SECRET, &vec![b' '; 300 * 1024])),
            413,
            "too_large",
        ),
        (
            "truncated",
            body[..body.len() / 2].to_vec(),
            Some(sign(SECRET, &body[..body.len() / 2])),
            400,
            "malformed",
        ),
        (
            "not JSON",
            b"hello".to_vec(),
            Some(sign(SECRET, b"hello")),
            400,
            "malformed",
        ),
        (
            "missing field",
            br#"{"ref":"refs/heads/main"}"#.to_vec(),
            Some(sign(SECRET, br#"{"ref":"refs/heads/main"}"#)),
            400,
            "malformed",
        ),
    ];
    for (i, (what, body, signature, status, result)) in cases.into_iter().enumerate() {
        let (got, answer) = service
            .post_raw("push", &format!("bad-{i}"), body, signature.as_deref())
            .await;
        assert_eq!(
            (got, answer["result"].as_str()),
            (status, Some(result)),
            "{what}: {answer}"
        );
    }
    let (_, answer) = service
        .post_raw(
            "push",
            "bad-field",
            br#"{"ref":"refs/heads/main"}"#.to_vec(),
            Some(&sign(SECRET, br#"{"ref":"refs/heads/main"}"#)),
        )
        .await;
    assert!(
        answer["message"].as_str().unwrap().contains("field"),
        "names the field: {answer}"
    );
    assert!(
        service
            .state
            .store
            .recent_deliveries(10)
            .await
            .unwrap()
            .is_empty(),
        "nothing stored"
    );
    assert!(
        service.github.requests().is_empty(),
        "nothing asked of GitHub"
    );
    let (_, metrics) = service.get("/metrics", None).await;
    assert!(metrics.contains("firerunner_webhooks_total{result=\"unauthorized\"}"));
    assert!(metrics.contains("firerunner_webhooks_total{result=\"too_large\"}"));
    service.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pull_request_gets_one_comment_edited_as_it_changes() {
    let service = Service::start(|_| {}).await;
    let first = "3333333333333333333333333333333333333333";
    let second = "4444444444444444444444444444444444444444";
    for sha in [first, second] {
        service
            .github
            .add_file(REPO, sha, ".github/workflows/ci.yml", CI);
    }
    let number = fixture("pull_request-opened")["number"].as_u64().unwrap();
    let (status, _) = service.webhook("ping", "d-ping", &fixture("ping")).await;
    assert_eq!(status, 202);
    assert_eq!(service.settled("d-ping").await.0, "ignored");

    let (status, _) = service
        .webhook(
            "pull_request",
            "d-pr-1",
            &pull_request_payload("opened", first),
        )
        .await;
    assert_eq!(status, 202);
    service
        .wait_for_runs("the first run", |runs| {
            runs.values()
                .any(|r| r.run.sha == first && r.state == "completed")
        })
        .await;
    let comments = service.github.comments(REPO, number);
    assert_eq!(comments.len(), 1, "{comments:?}");
    let body = &comments[0].1;
    assert!(
        body.contains("`3333333`") && body.contains("❌ 1 failed, ✅ 1 passed"),
        "{body}"
    );
    assert!(
        body.contains("Failing step: **Run tests**") && body.contains("went wrong"),
        "{body}"
    );
    assert!(body.contains("### build summary"), "{body}");

    let (status, _) = service
        .webhook(
            "pull_request",
            "d-pr-2",
            &pull_request_payload("synchronize", second),
        )
        .await;
    assert_eq!(status, 202);
    let runs = service
        .wait_for_runs("the second run", |runs| {
            runs.values()
                .any(|r| r.run.sha == second && r.state == "completed")
        })
        .await;
    let run = runs.values().find(|r| r.run.sha == second).unwrap();
    assert_eq!(run.run.git_ref, format!("refs/pull/{number}/merge"));
    let comments = service.github.comments(REPO, number);
    assert_eq!(comments.len(), 1, "edited in place, not a second comment");
    assert!(comments[0].1.contains("`4444444`"), "{}", comments[0].1);

    // A closed pull request runs nothing (the default types).
    let (status, _) = service
        .webhook("pull_request", "d-pr-3", &fixture("pull_request-closed"))
        .await;
    assert_eq!(status, 202);
    let (state, note) = service.settled("d-pr-3").await;
    assert_eq!(state, "ignored", "{note}");
    service.stop().await;
}

/// A language model stand-in speaking the chat-completions API; it counts
/// the requests it answers.
async fn fake_language_model() -> (String, Arc<AtomicUsize>) {
    let asked = Arc::new(AtomicUsize::new(0));
    let counter = asked.clone();
    let app = axum::Router::new().route(
        "/v1/chat/completions",
        axum::routing::post(move |axum::Json(request): axum::Json<Value>| {
            let counter = counter.clone();
            async move {
                counter.fetch_add(1, Ordering::SeqCst);
                let asked_about = request.to_string();
                let answer = if asked_about.contains("went wrong") {
                    "The test target fails: make test exits with 2."
                } else {
                    "No idea."
                };
                axum::Json(json!({
                    "id": "chatcmpl-1",
                    "object": "chat.completion",
                    "choices": [{"index": 0, "finish_reason": "stop",
                                 "message": {"role": "assistant", "content": answer}}]
                }))
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/v1", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, asked)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failure_seen_before_is_named_in_the_comment_with_the_models_explanation() {
    let (llm_url, asked) = fake_language_model().await;
    let service = Service::start(|config| {
        config.llm.url = llm_url.clone();
        config.llm.model = "test-model".into();
    })
    .await;
    let number = fixture("pull_request-opened")["number"].as_u64().unwrap();
    let shas: Vec<String> = (1..=4)
        .map(|n| format!("{n}").repeat(40).replace('4', "a"))
        .collect();
    for (n, sha) in shas.iter().enumerate() {
        service
            .github
            .add_file(REPO, sha, ".github/workflows/ci.yml", CI);
        let action = if n == 0 { "opened" } else { "synchronize" };
        let (status, _) = service
            .webhook(
                "pull_request",
                &format!("d-learn-{n}"),
                &pull_request_payload(action, sha),
            )
            .await;
        assert_eq!(status, 202);
        service
            .wait_for_runs("the run", |runs| {
                runs.values()
                    .any(|r| &r.run.sha == sha && r.state == "completed")
            })
            .await;
        let comments = service.github.comments(REPO, number);
        assert_eq!(comments.len(), 1);
        let body = &comments[0].1;
        assert!(
            body.contains("(explained by a language model): The test target fails"),
            "run {n}: {body}"
        );
        if n < 3 {
            assert!(
                !body.contains("known failure"),
                "run {n}: no lesson yet: {body}"
            );
        } else {
            assert!(
                body.contains("💡 What firerunner has seen before:")
                    && body.contains("Run tests: known failure, seen 3 time(s) here"),
                "run {n}: {body}"
            );
        }
    }
    assert_eq!(
        asked.load(Ordering::SeqCst),
        4,
        "one explanation per failing job"
    );
    let stats = service.state.learning.as_ref().unwrap().stats();
    assert_eq!((stats.successes, stats.failures, stats.lessons), (8, 4, 1));
    let (code, page) = service.get("/learning", Some(API_TOKEN)).await;
    assert_eq!(code, 200);
    assert!(
        page.contains("make run tests") && page.contains("test-fail went wrong"),
        "{page}"
    );
    service.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_language_model_that_does_not_answer_changes_nothing_but_the_explanation() {
    // A port nobody listens on, and one that accepts but never answers.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let closed_url = format!("http://{}/v1", closed.local_addr().unwrap());
    drop(closed);
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let silent_url = format!("http://{}/v1", silent.local_addr().unwrap());
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = silent.accept().await {
            held.push(socket);
        }
    });
    for (n, url) in [closed_url, silent_url].into_iter().enumerate() {
        let service = Service::start(|config| {
            config.llm.url = url.clone();
            config.llm.model = "test-model".into();
            config.llm.timeout_seconds = 1;
        })
        .await;
        let sha = format!("{n}").repeat(40);
        service
            .github
            .add_file(REPO, &sha, ".github/workflows/ci.yml", CI);
        let (status, _) = service
            .webhook(
                "pull_request",
                "d-llm",
                &pull_request_payload("opened", &sha),
            )
            .await;
        assert_eq!(status, 202);
        let runs = service
            .wait_for_runs("the run", |runs| {
                runs.values().any(|r| r.state == "completed")
            })
            .await;
        let run = runs.values().next().unwrap();
        assert_eq!(
            run.conclusion.as_deref(),
            Some("failure"),
            "the jobs' own result"
        );
        let number = fixture("pull_request-opened")["number"].as_u64().unwrap();
        let comments = service.github.comments(REPO, number);
        assert_eq!(comments.len(), 1);
        assert!(
            comments[0].1.contains("Failing step: **Run tests**"),
            "{}",
            comments[0].1
        );
        assert!(
            !comments[0].1.contains("language model"),
            "{}",
            comments[0].1
        );
        service.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_push_cancels_the_running_run_of_its_group_and_a_restart_resumes_the_queue() {
    let service = Service::start(|_| {}).await;
    let first = "5555555555555555555555555555555555555555";
    let second = "6666666666666666666666666666666666666666";
    for sha in [first, second] {
        service
            .github
            .add_file(REPO, sha, ".github/workflows/slow.yml", SLOW);
    }
    service
        .webhook(
            "pull_request",
            "d-slow-1",
            &pull_request_payload("opened", first),
        )
        .await;
    let runs = service
        .wait_for_runs("the first run to start", |runs| {
            runs.values()
                .any(|r| r.run.sha == first && r.state == "running")
        })
        .await;
    let first_id = runs
        .values()
        .find(|r| r.run.sha == first)
        .unwrap()
        .run
        .id
        .clone();
    service.wait_for_executions(&first_id, 1).await;
    service
        .webhook(
            "pull_request",
            "d-slow-2",
            &pull_request_payload("synchronize", second),
        )
        .await;
    let runs = service
        .wait_for_runs("the first run cancelled and the second running", |runs| {
            runs.get(&first_id)
                .is_some_and(|r| r.conclusion.as_deref() == Some("cancelled"))
                && runs
                    .values()
                    .any(|r| r.run.sha == second && r.state == "running")
        })
        .await;
    let second_id = runs
        .values()
        .find(|r| r.run.sha == second)
        .unwrap()
        .run
        .id
        .clone();
    assert!(runs[&first_id]
        .note
        .as_deref()
        .unwrap_or("")
        .contains("cancelled in progress"));

    // Stopped mid-run, the service puts the run back; restarted, it runs it again.
    let (github, dir, executor) = service.stop().await;
    let record = {
        let store = firerunner_server::Store::connect(&format!(
            "sqlite://{}?mode=rwc",
            dir.path().join("store.db").display()
        ))
        .await
        .unwrap();
        store.run(&second_id).await.unwrap().unwrap()
    };
    assert_eq!(record.state, "queued");
    assert!(record.note.unwrap().contains("queued again"));
    let service = Service::start_with(github, dir, executor, |_| {}).await;
    let runs = service
        .wait_for_runs("the second run claimed again", |runs| {
            runs.get(&second_id)
                .is_some_and(|r| r.state == "running" && r.attempts == 2)
        })
        .await;
    assert_eq!(runs[&second_id].lease_owner.as_deref(), Some("test-worker"));
    service.wait_for_executions(&second_id, 2).await;
    let executed = service.executor.executed.lock().unwrap().clone();
    assert_eq!(executed.iter().filter(|id| **id == first_id).count(), 1);
    assert_eq!(executed.iter().filter(|id| **id == second_id).count(), 2);
    service.stop().await;
}

/// A lesson that failed again after a fix reads "failing" on the dashboard, as it
/// does in `firerunner learn lessons` (both show `Lesson::status()`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_shows_a_lesson_that_failed_again_after_its_fix_as_failing() {
    let service = Service::start(|_| {}).await;
    let learning = service.state.learning.as_ref().unwrap();
    let step = |commit: &str, failed: bool| firerunner_learning::StepRecord {
        run_id: format!("run-{commit}"),
        repository: REPO.into(),
        commit_sha: commit.into(),
        workflow: "CI".into(),
        job: "test".into(),
        step_name: "unit".into(),
        command: "npm test".into(),
        outcome: if failed {
            firerunner_learning::Conclusion::Failure
        } else {
            firerunner_learning::Conclusion::Success
        },
        exit_code: Some(i32::from(failed)),
        duration: Duration::from_secs(1),
        log_tail: if failed {
            "Error: Cannot find module 'left-pad'".into()
        } else {
            String::new()
        },
        timestamp: std::time::SystemTime::now(),
    };
    for (commit, failed) in [
        ("c1", true),
        ("c2", true),
        ("c3", true),
        ("c4fixed", false),
        ("c5", true),
    ] {
        learning.record_step(step(commit, failed)).await.unwrap();
    }
    let (code, page) = service.get("/learning", Some(API_TOKEN)).await;
    assert_eq!(code, 200);
    assert!(page.contains("<td>4</td><td>failing</td></tr>"), "{page}");
    assert!(!page.contains("fixed in"), "{page}");
    service.stop().await;
}
