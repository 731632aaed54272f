//! Secrets, variables and environments as a team's service serves them,
//! end to end over loopback HTTP with the mock GitHub: the API (values
//! never returned, bad names refused with the field), each scope's secrets
//! and variables reaching the right jobs, a fork's pull request getting
//! none, branch rules, and approvals from the API and a PR comment.

#[path = "support/service.rs"]
mod service;

use std::time::{Duration, Instant};

use firerunner_server::Config;
use serde_json::{json, Value};
use service::{fixture, Service, API_TOKEN, REPO};

const KEY: &str = "0f1e2d3c4b5a69788796a5b4c3d2e1f00f1e2d3c4b5a69788796a5b4c3d2e1f0";
const SHA: &str = "7777777777777777777777777777777777777777";

const DEPLOY: &str = "name: Deploy
on: [push, pull_request]
jobs:
  build:
    runs-on: ubuntu-latest
    steps:
      - run: echo ${{ secrets.TOKEN }} ${{ vars.COLOR }}
  deploy:
    needs: build
    runs-on: ubuntu-latest
    environment:
      name: production
      url: https://app.example.com
    steps:
      - run: ./deploy ${{ secrets.TOKEN }}
  stage:
    needs: build
    runs-on: ubuntu-latest
    environment: staging
    steps:
      - run: ./stage ${{ secrets.TOKEN }}
";

fn with_key(config: &mut Config) {
    config.secrets.key = KEY.into();
}

async fn service() -> Service {
    Service::start(with_key).await
}

/// An API call with the operator's token; the status and the JSON answer.
async fn api(service: &Service, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
    let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
    let mut request = reqwest::Client::new()
        .request(method, format!("{}/api{path}", service.url))
        .bearer_auth(API_TOKEN);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

async fn set_secret(service: &Service, name: &str, query: &str, value: &str) {
    let path = format!("/secrets/{name}?{query}");
    let (status, answer) = api(service, "PUT", &path, Some(json!({ "value": value }))).await;
    assert_eq!(status, 200, "{answer}");
}

async fn set_environment(service: &Service, name: &str, rules: Value) {
    let path = format!("/environments/{name}?repository={REPO}");
    let (status, answer) = api(service, "PUT", &path, Some(rules)).await;
    assert_eq!(status, 200, "{answer}");
}

fn push_to(branch: &str) -> Value {
    let mut payload = fixture("push");
    payload["after"] = json!(SHA);
    payload["ref"] = json!(format!("refs/heads/{branch}"));
    payload
}

/// A pull request into octo-org/widgets from `head_repo`, at `SHA`.
fn pull_request(head_repo: &str) -> Value {
    let mut payload = fixture("pull_request-opened");
    payload["pull_request"]["head"]["sha"] = json!(SHA);
    payload["pull_request"]["head"]["repo"]["full_name"] = json!(head_repo);
    payload
}

/// Sends a delivery and returns the id of the one run it queues.
async fn start_run(service: &Service, event: &str, delivery: &str, payload: &Value) -> String {
    let (status, _) = service.webhook(event, delivery, payload).await;
    assert_eq!(status, 202);
    let (state, note) = service.settled(delivery).await;
    assert_eq!(state, "dispatched", "{note}");
    let runs = service
        .wait_for_runs("the run", |runs| {
            runs.values().any(|r| r.run.delivery_id == delivery)
        })
        .await;
    runs.values()
        .find(|r| r.run.delivery_id == delivery)
        .unwrap()
        .run
        .id
        .clone()
}

async fn finished(service: &Service, run_id: &str) -> firerunner_server::RunRecord {
    let runs = service
        .wait_for_runs("the run to finish", |runs| {
            runs.get(run_id).is_some_and(|r| r.state == "completed")
        })
        .await;
    runs[run_id].clone()
}

fn job_secrets(service: &Service, job: &str) -> Option<std::collections::BTreeMap<String, String>> {
    service
        .executor
        .job_secrets
        .lock()
        .unwrap()
        .get(job)
        .cloned()
}

fn job_vars(service: &Service, job: &str) -> std::collections::BTreeMap<String, String> {
    service
        .executor
        .job_vars
        .lock()
        .unwrap()
        .get(job)
        .cloned()
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_never_returns_a_value_and_names_the_field_it_refuses() {
    let service = service().await;
    let secret = "s3cr3t-value-never-shown";
    set_secret(
        &service,
        "deploy_key",
        "repository=octo-org/widgets",
        secret,
    )
    .await;
    let (status, list) = api(&service, "GET", "/secrets", None).await;
    assert_eq!(status, 200);
    assert_eq!(list[0]["name"], "DEPLOY_KEY");
    assert_eq!(list[0]["scope"], "repo:octo-org/widgets");
    assert!(!list.to_string().contains(secret), "{list}");
    let (_, page) = service.get("/settings", Some(API_TOKEN)).await;
    assert!(page.contains("DEPLOY_KEY") && !page.contains(secret));

    let cases = [
        (
            "/secrets/GITHUB_PAT?repository=o/r",
            json!({"value": "v"}),
            "field name",
        ),
        (
            "/secrets/1ST?repository=o/r",
            json!({"value": "v"}),
            "field name",
        ),
        (
            "/secrets/BAD-NAME?repository=o/r",
            json!({"value": "v"}),
            "field name",
        ),
        ("/secrets/OK?repository=o/r", json!({"valeu": "v"}), "value"),
        (
            "/secrets/OK?repository=o/r",
            json!({"value": ""}),
            "field value",
        ),
        (
            "/secrets/OK?organization=o&repository=o/r",
            json!({"value": "v"}),
            "scope",
        ),
        (
            "/secrets/OK?repository=nope",
            json!({"value": "v"}),
            "scope",
        ),
        ("/secrets/OK?repo=o/r", json!({"value": "v"}), "repo"),
    ];
    for (path, body, field) in cases {
        let (status, answer) = api(&service, "PUT", path, Some(body)).await;
        assert_eq!(status, 400, "{path}: {answer}");
        let message = answer["error"].as_str().unwrap_or_default();
        assert!(message.contains(field), "{path}: {message}");
    }
    let (status, _) = api(
        &service,
        "DELETE",
        "/secrets/DEPLOY_KEY?repository=octo-org/widgets",
        None,
    )
    .await;
    assert_eq!(status, 204);
    let (status, answer) = api(
        &service,
        "DELETE",
        "/secrets/DEPLOY_KEY?repository=octo-org/widgets",
        None,
    )
    .await;
    assert_eq!(status, 404, "{answer}");
    let unauthorized = reqwest::Client::new()
        .put(format!("{}/api/secrets/X?repository=o/r", service.url))
        .json(&json!({"value": "v"}))
        .send()
        .await
        .unwrap();
    assert_eq!(unauthorized.status(), 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_key_setting_a_secret_says_how_to_configure_one() {
    let service = Service::start(|_| {}).await;
    let (status, answer) = api(
        &service,
        "PUT",
        "/secrets/X?repository=o/r",
        Some(json!({"value": "v"})),
    )
    .await;
    assert_eq!(status, 409);
    assert!(
        answer["error"].as_str().unwrap().contains("secrets.key"),
        "{answer}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_scopes_secrets_and_variables_reach_the_right_jobs() {
    let service = service().await;
    service
        .github
        .add_file(REPO, SHA, ".github/workflows/deploy.yml", DEPLOY);
    set_secret(&service, "TOKEN", "organization=octo-org", "org-token").await;
    set_secret(
        &service,
        "ORG_ONLY",
        "organization=octo-org",
        "org-only-value",
    )
    .await;
    set_secret(
        &service,
        "TOKEN",
        "repository=octo-org/widgets",
        "repo-token",
    )
    .await;
    set_secret(
        &service,
        "TOKEN",
        "repository=octo-org/widgets&environment=production",
        "prod-token",
    )
    .await;
    set_secret(
        &service,
        "TOKEN",
        "repository=octo-org/other&environment=staging",
        "other-repo",
    )
    .await;
    set_secret(&service, "TOKEN", "organization=someone-else", "other-org").await;
    service
        .github
        .set_organization_variable("octo-org", "COLOR", "org-blue");
    service
        .github
        .set_repository_variable(REPO, "SIZE", "github-large");
    service
        .github
        .set_environment_variable(REPO, "production", "REGION", "eu-github");
    let (status, _) = api(
        &service,
        "PUT",
        "/variables/size?repository=octo-org/widgets",
        Some(json!({"value": "firerunner-small"})),
    )
    .await;
    assert_eq!(status, 200);

    let run = start_run(&service, "push", "d-scopes", &push_to("main")).await;
    let record = finished(&service, &run).await;
    assert_eq!(
        record.conclusion.as_deref(),
        Some("success"),
        "{:?}",
        record.note
    );
    let build = job_secrets(&service, "build").unwrap();
    assert_eq!(build["TOKEN"], "repo-token");
    assert_eq!(build["ORG_ONLY"], "org-only-value");
    assert_eq!(
        job_secrets(&service, "deploy").unwrap()["TOKEN"],
        "prod-token"
    );
    assert_eq!(
        job_secrets(&service, "stage").unwrap()["TOKEN"],
        "repo-token"
    );
    let vars = job_vars(&service, "build");
    assert_eq!(vars["COLOR"], "org-blue");
    assert_eq!(
        vars["SIZE"], "firerunner-small",
        "firerunner's store wins at the same scope"
    );
    assert!(!vars.contains_key("REGION"));
    assert_eq!(job_vars(&service, "deploy")["REGION"], "eu-github");
    // The job records name their environment.
    let (_, run_json) = api(&service, "GET", &format!("/runs/{run}"), None).await;
    let deploy = run_json["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|j| j["name"] == "deploy")
        .unwrap();
    assert_eq!(deploy["environment"], "production");
    // GitHub was asked for each listing once (the cache serves the rest).
    let asked = service
        .github
        .requests()
        .iter()
        .filter(|r| r.path.contains("/actions/variables"))
        .count();
    assert_eq!(asked, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pull_request_from_a_fork_gets_no_secret_of_any_scope() {
    let service = service().await;
    service
        .github
        .add_file(REPO, SHA, ".github/workflows/deploy.yml", DEPLOY);
    set_secret(&service, "TOKEN", "organization=octo-org", "org-token").await;
    set_secret(
        &service,
        "TOKEN",
        "repository=octo-org/widgets",
        "repo-token",
    )
    .await;
    set_secret(
        &service,
        "TOKEN",
        "repository=octo-org/widgets&environment=production",
        "prod-token",
    )
    .await;
    service
        .github
        .set_repository_variable(REPO, "COLOR", "blue");
    let run = start_run(
        &service,
        "pull_request",
        "d-fork",
        &pull_request("mona/widgets"),
    )
    .await;
    finished(&service, &run).await;
    for job in ["build", "deploy", "stage"] {
        let secrets = job_secrets(&service, job).unwrap();
        assert!(secrets.is_empty(), "{job} got {secrets:?}");
        assert!(job_vars(&service, job).is_empty(), "{job} got variables");
    }
    // The same pull request from a branch of the repository gets them.
    let run = start_run(&service, "pull_request", "d-same", &pull_request(REPO)).await;
    finished(&service, &run).await;
    assert_eq!(
        job_secrets(&service, "deploy").unwrap()["TOKEN"],
        "prod-token"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_branch_rule_refuses_a_run_from_another_branch_with_a_clear_failure() {
    let service = service().await;
    service
        .github
        .add_file(REPO, SHA, ".github/workflows/deploy.yml", DEPLOY);
    set_environment(
        &service,
        "production",
        json!({"branches": ["main", "release/*"]}),
    )
    .await;
    set_secret(
        &service,
        "TOKEN",
        "repository=octo-org/widgets&environment=production",
        "prod-token",
    )
    .await;
    let run = start_run(&service, "push", "d-feature", &push_to("feature/login")).await;
    let record = finished(&service, &run).await;
    assert_eq!(record.conclusion.as_deref(), Some("failure"));
    let note = record.note.unwrap_or_default();
    assert!(
        note.contains("deploy: branch feature/login may not deploy to environment production (its branches: main, release/*)"),
        "{note}"
    );
    assert!(
        job_secrets(&service, "deploy").is_none(),
        "the refused job never ran"
    );
    assert!(
        job_secrets(&service, "stage").is_some(),
        "staging has no rules"
    );
    let (_, run_json) = api(&service, "GET", &format!("/runs/{run}"), None).await;
    let deploy = run_json["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|j| j["name"] == "deploy")
        .unwrap();
    assert_eq!(deploy["conclusion"], "failure");
    // A release branch may.
    let run = start_run(&service, "push", "d-release", &push_to("release/2.0")).await;
    assert_eq!(
        finished(&service, &run).await.conclusion.as_deref(),
        Some("success")
    );
}

/// Waits until the job `name` of `run` is in `state` (through the API).
async fn wait_for_job(service: &Service, run: &str, name: &str, state: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (_, answer) = api(service, "GET", &format!("/runs/{run}"), None).await;
        let job = answer["jobs"]
            .as_array()
            .and_then(|jobs| jobs.iter().find(|j| j["name"] == name).cloned());
        if let Some(job) = job.filter(|j| j["state"] == state) {
            return job;
        }
        assert!(
            Instant::now() < deadline,
            "job {name} never {state}: {answer}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deployment_waits_until_a_reviewer_approves_it_from_the_api() {
    let service = service().await;
    service
        .github
        .add_file(REPO, SHA, ".github/workflows/deploy.yml", DEPLOY);
    set_environment(&service, "production", json!({"reviewers": ["alice"]})).await;
    let run = start_run(&service, "push", "d-approve", &push_to("main")).await;
    let waiting = wait_for_job(&service, &run, "deploy", "waiting").await;
    assert_eq!(waiting["environment"], "production");
    let (_, approvals) = api(&service, "GET", "/approvals", None).await;
    assert_eq!(approvals[0]["run_id"], run);
    assert_eq!(approvals[0]["jobs"], json!(["deploy"]));
    assert_eq!(approvals[0]["reviewers"], json!(["alice"]));
    let (_, page) = service.get(&format!("/runs/{run}"), Some(API_TOKEN)).await;
    assert!(
        page.contains("Deployments") && page.contains("waiting"),
        "{page}"
    );
    assert!(
        job_secrets(&service, "deploy").is_none(),
        "it has not started"
    );
    let body = json!({"environment": "Production", "decision": "approve"});
    let (status, answer) = api(
        &service,
        "POST",
        &format!("/runs/{run}/approvals"),
        Some(body.clone()),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    let record = finished(&service, &run).await;
    assert_eq!(
        record.conclusion.as_deref(),
        Some("success"),
        "{:?}",
        record.note
    );
    assert!(job_secrets(&service, "deploy").is_some());
    let (status, _) = api(
        &service,
        "POST",
        &format!("/runs/{run}/approvals"),
        Some(body),
    )
    .await;
    assert_eq!(status, 409, "a decided request is not decided again");
    let (_, approvals) = api(&service, "GET", &format!("/runs/{run}/approvals"), None).await;
    assert_eq!(approvals[0]["state"], "approved");
    assert_eq!(approvals[0]["decided_by"], "operator (API)");
}

/// Waits until the delivery's note says `wanted` (the comment's workflows
/// may still be retried: the test's git URL resolves no ref).
async fn delivery_note(service: &Service, delivery: &str, wanted: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let record = service.state.store.delivery(delivery).await.unwrap();
        let note = record.and_then(|d| d.note).unwrap_or_default();
        if note.contains(wanted) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "delivery {delivery}: {note:?} never said {wanted:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn comment(body: &str, login: &str, action: &str) -> Value {
    json!({
        "action": action,
        "issue": {"number": 42, "pull_request": {"url": "https://api.github.com/repos/octo-org/widgets/pulls/42"}},
        "comment": {"id": 9, "body": body, "user": {"login": login, "type": "User"}},
        "repository": fixture("push")["repository"].clone(),
        "sender": {"login": login},
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_named_reviewer_approves_with_a_pull_request_comment_and_others_cannot() {
    let service = service().await;
    service
        .github
        .add_file(REPO, SHA, ".github/workflows/deploy.yml", DEPLOY);
    set_environment(&service, "production", json!({"reviewers": ["Alice"]})).await;
    let run = start_run(&service, "pull_request", "d-pr", &pull_request(REPO)).await;
    wait_for_job(&service, &run, "deploy", "waiting").await;

    let (status, _) = service
        .webhook(
            "issue_comment",
            "c-1",
            &comment("/firerunner approve", "mallory", "created"),
        )
        .await;
    assert_eq!(status, 202);
    delivery_note(&service, "c-1", "mallory is not a reviewer of production").await;
    let edited = comment("/firerunner approve", "alice", "edited");
    service.webhook("issue_comment", "c-2", &edited).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    wait_for_job(&service, &run, "deploy", "waiting").await;
    let (_, approvals) = api(&service, "GET", &format!("/runs/{run}/approvals"), None).await;
    assert_eq!(
        approvals[0]["state"], "waiting",
        "neither mallory nor an edit decided"
    );

    service
        .webhook(
            "issue_comment",
            "c-3",
            &comment(
                "Ship it\n/firerunner approve production",
                "alice",
                "created",
            ),
        )
        .await;
    delivery_note(
        &service,
        "c-3",
        &format!("production of run {run} approved by alice"),
    )
    .await;
    let record = finished(&service, &run).await;
    assert_eq!(
        record.conclusion.as_deref(),
        Some("success"),
        "{:?}",
        record.note
    );
    let (_, approvals) = api(&service, "GET", &format!("/runs/{run}/approvals"), None).await;
    assert_eq!(approvals[0]["decided_by"], "alice (pull request comment)");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rejected_deployment_fails_its_job_and_the_dashboard_needs_the_forms_token() {
    let service = service().await;
    service
        .github
        .add_file(REPO, SHA, ".github/workflows/deploy.yml", DEPLOY);
    set_environment(&service, "production", json!({"reviewers": ["alice"]})).await;
    let run = start_run(&service, "push", "d-reject", &push_to("main")).await;
    wait_for_job(&service, &run, "deploy", "waiting").await;
    // A dashboard form without the session's token is refused.
    let forged = reqwest::Client::new()
        .post(format!("{}/runs/{run}/approvals", service.url))
        .bearer_auth(API_TOKEN)
        .header("content-type", "application/x-www-form-urlencoded")
        .body("environment=production&decision=approve")
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), 403);
    let body = json!({"environment": "production", "decision": "reject"});
    let (status, _) = api(
        &service,
        "POST",
        &format!("/runs/{run}/approvals"),
        Some(body),
    )
    .await;
    assert_eq!(status, 200);
    let record = finished(&service, &run).await;
    assert_eq!(record.conclusion.as_deref(), Some("failure"));
    let note = record.note.unwrap_or_default();
    assert!(
        note.contains("deploy: operator (API) rejected the deployment to environment production"),
        "{note}"
    );
    assert!(job_secrets(&service, "deploy").is_none());
}
