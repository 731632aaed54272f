//! What reaches a job: secrets and `GITHUB_TOKEN` for pull requests from
//! forks, `pull_request_target`, the workflow's `permissions:`, and the
//! operator's own token (which never reaches one). Driven end to end through
//! signed webhooks, the mock GitHub and the scripted executor.

#[path = "support/service.rs"]
mod service;

use firerunner_github::testing::IssuedScope;
use firerunner_server::executor::{RunRequest, Trust};
use firerunner_server::Config;
use serde_json::{json, Value};
use service::{fixture, Service, REPO};

const HEAD: &str = "5555555555555555555555555555555555555555";

/// Asks for everything a job could want.
const GREEDY: &str = "name: Greedy
on: [push, pull_request, pull_request_target]
permissions: write-all
jobs:
  build:
    runs-on: ubuntu-latest
    steps:
      - run: echo ${{ secrets.DEPLOY_KEY }} ${{ secrets.GITHUB_TOKEN }}
";

const PLAIN: &str = "name: Plain
on: [push, pull_request]
jobs:
  build:
    runs-on: ubuntu-latest
    steps:
      - run: make
";

fn app(config: &mut Config) {
    let key = format!(
        "{}/../github/testdata/app-private-key.pem",
        env!("CARGO_MANIFEST_DIR")
    );
    config.github.token = String::new();
    config.github.app_id = 12345;
    config.github.private_key = std::fs::read_to_string(key).unwrap();
}

async fn app_service() -> Service {
    let service = Service::start(app).await;
    let public = format!(
        "{}/../github/testdata/app-public-key.pem",
        env!("CARGO_MANIFEST_DIR")
    );
    service
        .github
        .set_app_public_key(&std::fs::read_to_string(public).unwrap());
    service
}

/// A pull request from `head_repo` into octo-org/widgets, at `HEAD`.
fn pull_request(head_repo: &str) -> Value {
    let mut payload = fixture("pull_request-opened");
    payload["pull_request"]["head"]["sha"] = json!(HEAD);
    payload["pull_request"]["head"]["repo"]["full_name"] = json!(head_repo);
    payload
}

/// Sends `event` and returns the request of the one run it makes.
async fn run_of(service: &Service, event: &str, payload: &Value) -> RunRequest {
    let delivery = format!(
        "d-{event}-{}",
        service.executor.requests.lock().unwrap().len()
    );
    let (status, _) = service.webhook(event, &delivery, payload).await;
    assert_eq!(status, 202);
    let (state, note) = service.settled(&delivery).await;
    assert_eq!(state, "dispatched", "{note}");
    service
        .wait_for_runs("the run", |runs| {
            runs.values()
                .any(|r| r.delivery_id == delivery && r.state == "completed")
        })
        .await;
    let requests = service.executor.requests.lock().unwrap();
    requests
        .iter()
        .find(|r| r.run.delivery_id == delivery)
        .cloned()
        .expect("the run was executed")
}

fn scope_of(service: &Service, token: &str) -> IssuedScope {
    service
        .github
        .issued_scopes()
        .into_iter()
        .find(|scope| scope.token == token)
        .expect("the job token was issued by GitHub")
}

/// The installation tokens the service itself holds (every token issued
/// without a repository list).
fn service_tokens(service: &Service) -> Vec<String> {
    service
        .github
        .issued_scopes()
        .into_iter()
        .filter(|scope| scope.repositories.is_none())
        .map(|scope| scope.token)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fork_pull_request_gets_no_secrets_and_a_read_only_token_for_its_repository() {
    let service = app_service().await;
    service
        .github
        .add_file(REPO, HEAD, ".github/workflows/greedy.yml", GREEDY);
    let request = run_of(&service, "pull_request", &pull_request("mona/widgets")).await;
    assert_eq!(request.trust, Trust::Fork);
    let names: Vec<&String> = request.secrets.keys().collect();
    assert_eq!(names, ["GITHUB_TOKEN"], "no other secret reaches a fork");
    let token = &request.secrets["GITHUB_TOKEN"];
    let scope = scope_of(&service, token);
    assert_eq!(scope.repositories, Some(vec!["widgets".to_string()]));
    assert_eq!(
        scope.permissions,
        json!({"checks": "read", "contents": "read", "issues": "read",
               "pull_requests": "read", "statuses": "read"}),
        "write-all asked by a fork's workflow is read-only"
    );
    let own = service_tokens(&service);
    assert!(!own.is_empty());
    assert!(
        !own.contains(token),
        "the service's installation token leaked"
    );
    assert!(
        request
            .fetch_token
            .as_ref()
            .is_some_and(|t| own.contains(t)),
        "the host fetches with the service's token, which stays out of the VM"
    );
    service.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pull_request_from_the_repository_itself_gets_what_its_workflow_asks() {
    let service = app_service().await;
    service
        .github
        .add_file(REPO, HEAD, ".github/workflows/greedy.yml", GREEDY);
    let request = run_of(&service, "pull_request", &pull_request(REPO)).await;
    assert_eq!(request.trust, Trust::Repository);
    let scope = scope_of(&service, &request.secrets["GITHUB_TOKEN"]);
    assert_eq!(scope.repositories, Some(vec!["widgets".to_string()]));
    assert_eq!(scope.permissions["contents"], "write");
    assert_eq!(scope.permissions["pull_requests"], "write");
    assert!(
        scope.permissions.get("metadata").is_none() && scope.permissions.get("actions").is_none(),
        "only what was asked and the installation holds: {}",
        scope.permissions
    );
    service.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_permissions_a_workflow_gets_githubs_restricted_default() {
    let service = app_service().await;
    let sha = fixture("push")["after"].as_str().unwrap().to_string();
    service
        .github
        .add_file(REPO, &sha, ".github/workflows/plain.yml", PLAIN);
    let request = run_of(&service, "push", &fixture("push")).await;
    let scope = scope_of(&service, &request.secrets["GITHUB_TOKEN"]);
    assert_eq!(
        scope.permissions,
        json!({"contents": "read"}),
        "contents and packages read, cut to what the installation holds"
    );
    service.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pull_request_target_runs_the_base_branch_workflow_with_the_base_token() {
    let service = app_service().await;
    let payload = pull_request("mona/widgets");
    let base_sha = payload["pull_request"]["base"]["sha"].as_str().unwrap();
    // The fork's head carries a workflow of its own; it must not be the one run.
    service
        .github
        .add_file(REPO, HEAD, ".github/workflows/greedy.yml", PLAIN);
    service
        .github
        .add_file(REPO, base_sha, ".github/workflows/greedy.yml", GREEDY);
    let request = run_of(&service, "pull_request_target", &payload).await;
    assert_eq!(request.run.sha, base_sha);
    assert_eq!(request.run.git_ref, "refs/heads/main");
    assert_eq!(request.run.pr_number, payload["number"].as_i64());
    let (_, text) = &request.workflows[0];
    assert_eq!(text, GREEDY, "the base branch's workflow file");
    assert_eq!(request.trust, Trust::Repository);
    let scope = scope_of(&service, &request.secrets["GITHUB_TOKEN"]);
    assert_eq!(scope.permissions["contents"], "write", "as on GitHub");
    service.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_operators_personal_access_token_never_reaches_a_job() {
    let service = Service::start(|_| {}).await;
    let operator = service.state.config.github.token.clone();
    assert!(!operator.is_empty());
    service
        .github
        .add_file(REPO, HEAD, ".github/workflows/greedy.yml", GREEDY);
    let sha = fixture("push")["after"].as_str().unwrap().to_string();
    service
        .github
        .add_file(REPO, &sha, ".github/workflows/greedy.yml", GREEDY);
    for (event, payload) in [
        ("pull_request", pull_request("mona/widgets")),
        ("pull_request", pull_request(REPO)),
        ("push", fixture("push")),
    ] {
        let request = run_of(&service, event, &payload).await;
        assert!(
            request.secrets.is_empty(),
            "{event}: {:?}",
            request.secrets.keys()
        );
        assert_eq!(
            request.fetch_token.as_deref(),
            Some(operator.as_str()),
            "the host still fetches with it"
        );
        let seen = format!("{:?}", request.secrets);
        assert!(!seen.contains(&operator), "{event}: the token leaked");
    }
    service.stop().await;
}
