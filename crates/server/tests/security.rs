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
    app_service_with(|_| {}).await
}

/// A service set up as a GitHub App, with `tweak` on top, whose mock GitHub
/// checks the app's tokens.
async fn app_service_with(tweak: impl FnOnce(&mut Config)) -> Service {
    let service = Service::start(|config| {
        app(config);
        tweak(config);
    })
    .await;
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
                .any(|r| r.run.delivery_id == delivery && r.state == "completed")
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signed_body_replayed_under_a_new_delivery_id_is_recognised() {
    let service = Service::start(|_| {}).await;
    let body = serde_json::to_vec(&fixture("push")).unwrap();
    let signature = service::sign(service::SECRET, &body);
    let (status, _) = service
        .post_raw("push", "d-original", body.clone(), Some(&signature))
        .await;
    assert_eq!(status, 202);
    let (status, answer) = service
        .post_raw("push", "d-original", body.clone(), Some(&signature))
        .await;
    assert_eq!(
        (status, answer["result"].as_str()),
        (200, Some("duplicate"))
    );
    let (status, answer) = service
        .post_raw("push", "d-replayed", body, Some(&signature))
        .await;
    assert_eq!((status, answer["result"].as_str()), (409, Some("replay")));
    let stored = service.state.store.recent_deliveries(10).await.unwrap();
    assert_eq!(stored.len(), 1, "{stored:?}");
    service.stop().await;
}

/// Opens a webhook request whose body never finishes arriving.
async fn stalled_webhook(url: &str) -> tokio::net::TcpStream {
    use tokio::io::AsyncWriteExt;
    let address = url.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
    let head = format!(
        "POST /webhook HTTP/1.1\r\nHost: {address}\r\nX-GitHub-Event: push\r\n\
         X-GitHub-Delivery: d-slow\r\nContent-Type: application/json\r\n\
         Content-Length: 1000\r\n\r\n{{\"ref\":"
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    stream
}

async fn response_status(stream: &mut tokio::net::TcpStream) -> String {
    use tokio::io::AsyncReadExt;
    let mut buffer = vec![0; 4096];
    let n = tokio::time::timeout(std::time::Duration::from_secs(10), stream.read(&mut buffer))
        .await
        .expect("an answer in time")
        .unwrap();
    String::from_utf8_lossy(&buffer[..n])
        .lines()
        .next()
        .unwrap_or_default()
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_webhook_times_out_and_too_many_at_once_are_turned_away() {
    let service = Service::start(|config| {
        config.limits.webhook_concurrency = 1;
        config.limits.webhook_timeout_seconds = 1;
    })
    .await;
    let mut slow = stalled_webhook(&service.url).await;
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let (status, answer) = service.webhook("push", "d-fast", &fixture("push")).await;
    assert_eq!((status, answer["result"].as_str()), (503, Some("busy")));
    assert_eq!(
        response_status(&mut slow).await,
        "HTTP/1.1 408 Request Timeout"
    );
    let (status, _) = service.webhook("push", "d-after", &fixture("push")).await;
    assert_eq!(status, 202, "the slot is free again");
    service.stop().await;
}

const WAITING: &str = "name: Waiting
on: push
jobs:
  wait:
    runs-on: ubuntu-latest
    steps:
      - run: sleep 600
";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_interrupted_too_often_is_failed_instead_of_started_again() {
    let cap = |config: &mut Config| config.limits.run_attempts = 2;
    let mut service = Service::start(cap).await;
    let sha = fixture("push")["after"].as_str().unwrap().to_string();
    service
        .github
        .add_file(REPO, &sha, ".github/workflows/waiting.yml", WAITING);
    let (status, _) = service.webhook("push", "d-loop", &fixture("push")).await;
    assert_eq!(status, 202);
    for started in 1..=2 {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while service.executor.running.lock().unwrap().is_empty() {
            assert!(std::time::Instant::now() < deadline, "never started");
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        assert_eq!(service.executor.executed.lock().unwrap().len(), started);
        // Stands for a crash: the run goes back to the queue unfinished.
        let (github, dir, executor) = service.stop().await;
        service = Service::start_with(github, dir, executor, cap).await;
    }
    let runs = service
        .wait_for_runs("the run to be failed", |runs| {
            runs.values().any(|r| r.state == "completed")
        })
        .await;
    let run = runs.values().next().unwrap();
    assert_eq!(run.conclusion.as_deref(), Some("failure"));
    let note = run.note.clone().unwrap_or_default();
    assert!(note.contains("started 2 times without finishing"), "{note}");
    assert_eq!(
        service.executor.executed.lock().unwrap().len(),
        2,
        "not started a third time"
    );
    service.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_and_live_stream_need_a_signed_in_viewer() {
    let service = Service::start(|_| {}).await;
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let get = |path: &str, cookie: Option<&str>| {
        let mut request = client
            .get(format!("{}{path}", service.url))
            .header("Accept", "text/html");
        if let Some(cookie) = cookie {
            request = request.header("Cookie", cookie);
        }
        request.send()
    };
    let page = get("/", None).await.unwrap();
    assert_eq!(page.status().as_u16(), 303);
    assert_eq!(page.headers()["location"], "/login");
    for path in ["/events", "/fragments/runs", "/runs/x", "/learning"] {
        let answer = client
            .get(format!("{}{path}", service.url))
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status().as_u16(), 401, "{path}");
    }
    let login = |token: &str| {
        client
            .post(format!("{}/login", service.url))
            .header("Content-Type", "application/x-www-form-urlencoded")
            .body(format!("token={token}"))
            .send()
    };
    let wrong = login("guess").await.unwrap();
    assert_eq!(wrong.status().as_u16(), 401);
    assert!(wrong.headers().get("set-cookie").is_none());
    let right = login(service::API_TOKEN).await.unwrap();
    assert_eq!(right.status().as_u16(), 303);
    let cookie = right.headers()["set-cookie"].to_str().unwrap().to_string();
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
        "{cookie}"
    );
    assert!(
        !cookie.contains(service::API_TOKEN),
        "the cookie is not the token"
    );
    let session = cookie.split(';').next().unwrap();
    let page = get("/", Some(session)).await.unwrap();
    assert_eq!(page.status().as_u16(), 200);
    let headers = page.headers().clone();
    let csp = headers["content-security-policy"].to_str().unwrap();
    assert!(
        csp.contains("script-src 'self'") && !csp.contains("unsafe-inline"),
        "{csp}"
    );
    assert_eq!(headers["x-frame-options"], "DENY");
    assert_eq!(headers["x-content-type-options"], "nosniff");
    let html = page.text().await.unwrap();
    assert!(!html.contains("<script>"), "no inline script");
    let forged = get("/", Some("firerunner_session=00")).await.unwrap();
    assert_eq!(forged.status().as_u16(), 303);
    let (status, _) = service.get("/health", None).await;
    assert_eq!(status, 200, "health stays open");
    service.stop().await;
}

const LEAKY: &str = "name: Leaky
on: [push, pull_request]
permissions:
  contents: read
jobs:
  leak-fail:
    runs-on: ubuntu-latest
    steps:
      - run: echo ${{ secrets.GITHUB_TOKEN }}
";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_a_job_prints_is_masked_in_the_comment_statuses_store_api_and_learning() {
    let service = app_service_with(|config| config.learning.lesson_threshold = 1).await;
    service
        .github
        .add_file(REPO, HEAD, ".github/workflows/leaky.yml", LEAKY);
    let request = run_of(&service, "pull_request", &pull_request(REPO)).await;
    let token = request.secrets["GITHUB_TOKEN"].clone();
    let number = fixture("pull_request-opened")["number"].as_u64().unwrap();
    let comments = service.github.comments(REPO, number);
    assert!(!comments.is_empty());
    let mut seen = format!("{comments:?}");
    seen.push_str(&format!("{:?}", service.github.statuses(REPO, HEAD)));
    let jobs = service.state.store.jobs(&request.run.id).await.unwrap();
    seen.push_str(&format!("{jobs:?}"));
    let (_, api) = service
        .get(
            &format!("/api/runs/{}", request.run.id),
            Some(service::API_TOKEN),
        )
        .await;
    seen.push_str(&api);
    let learning = service.state.learning.as_ref().expect("learning is on");
    learning.flush().await.unwrap();
    seen.push_str(&format!("{:?}", learning.lessons()));
    let graph = learning.with_graph(|graph| format!("{graph:?}"));
    assert!(graph.contains("deploy"), "the step was learned: {graph}");
    seen.push_str(&graph);
    let (_, page) = service.get("/learning", Some(service::API_TOKEN)).await;
    seen.push_str(&page);
    assert!(
        seen.contains("went wrong ***"),
        "the masked text is there: {seen}"
    );
    assert!(!seen.contains(&token), "the token leaked: {seen}");
    service.stop().await;
}
