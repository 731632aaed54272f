//! The REST client against the mock GitHub: every endpoint, App authentication, retries, errors.

use std::time::{Duration, Instant};

use firerunner_github::testing::{MockGitHub, RecordedRequest};
use firerunner_github::{
    ApiConfig, ApiError, Auth, CommitStatus, GitHubClient, RepoRef, RetryPolicy, StatusState,
};

const REPO: &str = "octo-org/widgets";
const SHA: &str = "6dcb09b5b57875f334f61aebed695e2e4193db5e";
const MARKER: &str = "<!-- firerunner -->";

fn testdata(name: &str) -> String {
    let path = format!("{}/testdata/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn fast_retry() -> RetryPolicy {
    RetryPolicy {
        attempts: 4,
        first_delay: Duration::from_millis(5),
        max_delay: Duration::from_secs(5),
    }
}

fn client_with(mock: &MockGitHub, auth: Auth) -> GitHubClient {
    let mut config = ApiConfig::new(mock.url(), auth);
    config.retry = fast_retry();
    GitHubClient::new(config).unwrap()
}

fn token_client(mock: &MockGitHub) -> GitHubClient {
    client_with(mock, Auth::Token("ghp_test".into()))
}

fn app_auth(key_file: &str) -> Auth {
    Auth::App {
        app_id: 12345,
        private_key_pem: testdata(key_file),
    }
}

fn repo() -> RepoRef {
    RepoRef::parse(REPO, None).unwrap()
}

fn status(state: StatusState, description: &str) -> CommitStatus {
    CommitStatus {
        state,
        context: "firerunner/ci.yml/build".into(),
        description: description.into(),
        target_url: Some("https://ci.example.com/runs/7".into()),
    }
}

fn requests_matching(mock: &MockGitHub, method: &str, path_start: &str) -> Vec<RecordedRequest> {
    mock.requests()
        .into_iter()
        .filter(|r| r.method == method && r.path.starts_with(path_start))
        .collect()
}

#[tokio::test]
async fn commit_statuses_are_posted_in_order_with_githubs_headers() {
    let mock = MockGitHub::start().await;
    let client = token_client(&mock);
    client
        .create_commit_status(&repo(), SHA, &status(StatusState::Pending, "Running"))
        .await
        .unwrap();
    let mut done = status(StatusState::Success, &"x".repeat(300));
    done.target_url = None;
    client
        .create_commit_status(&repo(), SHA, &done)
        .await
        .unwrap();

    let statuses = mock.statuses(REPO, SHA);
    assert_eq!(statuses.len(), 2);
    assert_eq!(statuses[0]["state"], "pending");
    assert_eq!(statuses[0]["context"], "firerunner/ci.yml/build");
    assert_eq!(statuses[0]["description"], "Running");
    assert_eq!(statuses[0]["target_url"], "https://ci.example.com/runs/7");
    assert_eq!(statuses[1]["state"], "success");
    assert_eq!(
        statuses[1]["description"].as_str().unwrap().chars().count(),
        140
    );
    assert!(statuses[1]["target_url"].is_null());

    let requests = mock.requests();
    assert_eq!(requests.len(), 2);
    let first = &requests[0];
    assert_eq!(first.method, "POST");
    assert_eq!(first.path, format!("/repos/{REPO}/statuses/{SHA}"));
    assert_eq!(first.authorization.as_deref(), Some("Bearer ghp_test"));
    assert_eq!(first.accept.as_deref(), Some("application/vnd.github+json"));
    assert_eq!(first.api_version.as_deref(), Some("2022-11-28"));
    assert!(first
        .user_agent
        .as_deref()
        .unwrap()
        .starts_with("firerunner/"));
    assert_eq!(first.body["state"], "pending");
}

#[tokio::test]
async fn the_pull_request_comment_is_created_once_then_edited_in_place() {
    let mock = MockGitHub::start().await;
    let client = token_client(&mock);
    let first = client
        .upsert_pull_request_comment(&repo(), 42, MARKER, "**build**: running")
        .await
        .unwrap();
    let second = client
        .upsert_pull_request_comment(&repo(), 42, MARKER, "**build**: passed")
        .await
        .unwrap();
    assert_eq!(first, second);
    assert_eq!(
        mock.comments(REPO, 42),
        vec![(first, format!("{MARKER}\n**build**: passed"))]
    );
    assert_eq!(requests_matching(&mock, "POST", "/repos").len(), 1);
    let patches = requests_matching(&mock, "PATCH", "/repos");
    assert_eq!(patches.len(), 1);
    assert_eq!(
        patches[0].path,
        format!("/repos/{REPO}/issues/comments/{first}")
    );
    assert_eq!(
        requests_matching(&mock, "GET", "/repos").len(),
        1,
        "the second call uses the remembered id without listing"
    );

    let body_with_marker = format!("Results\n{MARKER}\nall green");
    let restarted = token_client(&mock);
    let third = restarted
        .upsert_pull_request_comment(&repo(), 42, MARKER, &body_with_marker)
        .await
        .unwrap();
    assert_eq!(
        third, first,
        "a fresh client finds the comment by its marker"
    );
    assert_eq!(mock.comments(REPO, 42), vec![(first, body_with_marker)]);
    assert_eq!(requests_matching(&mock, "POST", "/repos").len(), 1);
}

#[tokio::test]
async fn the_marked_comment_is_found_on_a_later_page() {
    let mock = MockGitHub::start().await;
    mock.set_comments_page_size(2);
    for n in 0..5 {
        mock.add_comment(REPO, 7, &format!("review remark {n}"));
    }
    let ours = mock.add_comment(REPO, 7, &format!("{MARKER}\nold results"));
    mock.add_comment(REPO, 7, "thanks!");
    mock.add_comment(REPO, 8, &format!("{MARKER}\nanother pull request"));

    let client = token_client(&mock);
    let id = client
        .upsert_pull_request_comment(&repo(), 7, MARKER, "new results")
        .await
        .unwrap();
    assert_eq!(id, ours);
    let lists = requests_matching(&mock, "GET", &format!("/repos/{REPO}/issues/7/comments"));
    assert_eq!(lists.len(), 3, "{lists:#?}");
    assert!(lists[2].path.contains("page=3"), "{}", lists[2].path);
    assert!(requests_matching(&mock, "POST", "/repos").is_empty());
    let comments = mock.comments(REPO, 7);
    assert_eq!(comments.len(), 7);
    assert_eq!(comments[5], (ours, format!("{MARKER}\nnew results")));
    assert_eq!(
        mock.comments(REPO, 8)[0].1,
        format!("{MARKER}\nanother pull request")
    );
}

#[tokio::test]
async fn concurrent_updates_of_one_pull_request_make_one_comment() {
    let mock = MockGitHub::start().await;
    let client = token_client(&mock);
    let calls: Vec<_> = (0..5)
        .map(|n| {
            let client = client.clone();
            tokio::spawn(async move {
                client
                    .upsert_pull_request_comment(&repo(), 11, MARKER, &format!("update {n}"))
                    .await
                    .unwrap()
            })
        })
        .collect();
    let mut ids = Vec::new();
    for call in calls {
        ids.push(call.await.unwrap());
    }
    ids.dedup();
    assert_eq!(ids.len(), 1, "{ids:?}");
    assert_eq!(mock.comments(REPO, 11).len(), 1);
    assert_eq!(requests_matching(&mock, "POST", "/repos").len(), 1);
}

#[tokio::test]
async fn a_deleted_comment_is_replaced() {
    let mock = MockGitHub::start().await;
    let client = token_client(&mock);
    let first = client
        .upsert_pull_request_comment(&repo(), 3, MARKER, "one")
        .await
        .unwrap();
    assert!(mock.delete_comment(first));
    let second = client
        .upsert_pull_request_comment(&repo(), 3, MARKER, "two")
        .await
        .unwrap();
    assert_ne!(first, second);
    assert_eq!(
        mock.comments(REPO, 3),
        vec![(second, format!("{MARKER}\ntwo"))]
    );
    let third = client
        .upsert_pull_request_comment(&repo(), 3, MARKER, "three")
        .await
        .unwrap();
    assert_eq!(third, second);
    assert_eq!(mock.comments(REPO, 3).len(), 1);
}

#[tokio::test]
async fn workflow_files_at_a_commit() {
    let mock = MockGitHub::start().await;
    let ci = "on: push\njobs:\n  build:\n    runs-on: ubuntu-latest\n    steps:\n      - run: echo \"héllo ✓\"\n";
    let long = format!("on: push\n# {}\n", "padding ".repeat(40));
    mock.add_file(REPO, SHA, ".github/workflows/ci.yml", ci);
    mock.add_file(REPO, SHA, ".github/workflows/release.yaml", &long);
    mock.add_file(REPO, SHA, ".github/workflows/README.md", "not a workflow");
    mock.add_file(REPO, SHA, ".github/workflows/templates/x.yml", "nested");
    mock.add_file(REPO, SHA, "src/main.rs", "fn main() {}");
    mock.add_file(
        REPO,
        "other",
        ".github/workflows/ci.yml",
        "on: pull_request",
    );

    let client = token_client(&mock);
    let files = client.workflow_files(&repo(), SHA).await.unwrap();
    assert_eq!(
        files,
        vec![
            (".github/workflows/ci.yml".to_owned(), ci.to_owned()),
            (".github/workflows/release.yaml".to_owned(), long),
        ]
    );
    let gets = requests_matching(&mock, "GET", "/repos");
    assert_eq!(
        gets[0].path,
        format!("/repos/{REPO}/contents/.github/workflows?ref={SHA}")
    );
    assert_eq!(gets.len(), 3);
}

#[tokio::test]
async fn no_workflow_folder_means_no_workflows() {
    let mock = MockGitHub::start().await;
    mock.add_file(REPO, SHA, "README.md", "hello");
    let client = token_client(&mock);
    assert_eq!(client.workflow_files(&repo(), SHA).await.unwrap(), vec![]);
    assert_eq!(
        client.workflow_files(&repo(), "unknown-sha").await.unwrap(),
        vec![]
    );
}

#[tokio::test]
async fn pull_request_files_follow_pagination_up_to_githubs_limit() {
    let mock = MockGitHub::start().await;
    let files: Vec<String> = (0..250).map(|n| format!("src/module_{n}.rs")).collect();
    mock.set_pull_request_files(REPO, 42, files.clone());
    let client = token_client(&mock);
    assert_eq!(client.pull_request_files(&repo(), 42).await.unwrap(), files);
    let pages = requests_matching(&mock, "GET", &format!("/repos/{REPO}/pulls/42/files"));
    assert_eq!(pages.len(), 3);
    assert!(pages[0].path.contains("per_page=100"));

    let many: Vec<String> = (0..3500).map(|n| format!("f{n}")).collect();
    mock.set_pull_request_files(REPO, 43, many.clone());
    let listed = client.pull_request_files(&repo(), 43).await.unwrap();
    assert_eq!(listed.len(), 3000);
    assert_eq!(listed[..], many[..3000]);

    let err = client.pull_request_files(&repo(), 44).await.unwrap_err();
    assert_eq!(err.status(), Some(404));
}

#[tokio::test]
async fn app_installation_token_is_fetched_once_and_reused() {
    let mock = MockGitHub::start().await;
    mock.set_app_public_key(&testdata("app-public-key.pem"));
    mock.set_installation(REPO, 77);
    mock.add_file(REPO, SHA, ".github/workflows/ci.yml", "on: push");
    let client = client_with(&mock, app_auth("app-private-key.pem"));

    client
        .create_commit_status(&repo(), SHA, &status(StatusState::Pending, "Queued"))
        .await
        .unwrap();
    client
        .create_commit_status(&repo(), SHA, &status(StatusState::Success, "Passed"))
        .await
        .unwrap();
    assert_eq!(client.workflow_files(&repo(), SHA).await.unwrap().len(), 1);
    let credentials = client.clone().git_credentials(&repo()).await.unwrap();

    assert_eq!(mock.issued_tokens(), vec!["ghs_mock77x1".to_owned()]);
    assert_eq!(credentials.as_deref(), Some("ghs_mock77x1"));
    assert_eq!(
        requests_matching(&mock, "GET", &format!("/repos/{REPO}/installation")).len(),
        1
    );
    let token_requests = requests_matching(&mock, "POST", "/app/installations/77/access_tokens");
    assert_eq!(token_requests.len(), 1);
    assert!(token_requests[0]
        .authorization
        .as_deref()
        .unwrap()
        .starts_with("Bearer ey"));
    for request in requests_matching(&mock, "POST", "/repos") {
        assert_eq!(
            request.authorization.as_deref(),
            Some("Bearer ghs_mock77x1")
        );
    }
}

#[tokio::test]
async fn app_with_installation_id_from_the_webhook_skips_the_lookup() {
    let mock = MockGitHub::start().await;
    mock.set_app_public_key(&testdata("app-public-key.pem"));
    let client = client_with(&mock, app_auth("app-private-key.pem"));
    let repo = RepoRef::parse(REPO, Some(51234567)).unwrap();
    let token = client.git_credentials(&repo).await.unwrap().unwrap();
    assert_eq!(token, "ghs_mock51234567x1");
    assert!(requests_matching(&mock, "GET", "/repos").is_empty());
}

#[tokio::test]
async fn installation_tokens_near_expiry_are_renewed() {
    let mock = MockGitHub::start().await;
    mock.set_app_public_key(&testdata("app-public-key.pem"));
    mock.set_token_lifetime(Duration::from_secs(4 * 60));
    let client = client_with(&mock, app_auth("app-private-key.pem"));
    let repo = RepoRef::parse(REPO, Some(9)).unwrap();
    let first = client.git_credentials(&repo).await.unwrap();
    let second = client.git_credentials(&repo).await.unwrap();
    assert_ne!(first, second);
    assert_eq!(mock.issued_tokens().len(), 2);
}

#[tokio::test]
async fn a_reinstalled_app_is_looked_up_again() {
    let mock = MockGitHub::start().await;
    mock.set_app_public_key(&testdata("app-public-key.pem"));
    mock.set_token_lifetime(Duration::from_secs(4 * 60));
    mock.set_installation(REPO, 5);
    let client = client_with(&mock, app_auth("app-private-key.pem"));
    let first = client.git_credentials(&repo()).await.unwrap().unwrap();
    assert_eq!(first, "ghs_mock5x1");
    mock.set_installation(REPO, 6);
    let second = client.git_credentials(&repo()).await.unwrap().unwrap();
    assert_eq!(second, "ghs_mock6x2");
    assert_eq!(
        requests_matching(&mock, "GET", &format!("/repos/{REPO}/installation")).len(),
        2
    );
    assert_eq!(
        requests_matching(&mock, "POST", "/app/installations/5/access_tokens").len(),
        2
    );
}

#[tokio::test]
async fn a_jwt_signed_with_the_wrong_key_is_refused_with_githubs_message() {
    let mock = MockGitHub::start().await;
    mock.set_app_public_key(&testdata("app-public-key.pem"));
    let client = client_with(&mock, app_auth("other-private-key.pem"));
    let repo = RepoRef::parse(REPO, Some(7)).unwrap();
    let err = client
        .create_commit_status(&repo, SHA, &status(StatusState::Pending, "x"))
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "GitHub API POST /app/installations/7/access_tokens answered 401: A JSON web token could not be decoded"
    );
    assert!(!err.is_transient());
    assert_eq!(mock.requests().len(), 1);
}

#[test]
fn an_invalid_app_key_is_an_auth_error() {
    let err = GitHubClient::new(ApiConfig::new(
        "https://api.github.com",
        Auth::App {
            app_id: 5,
            private_key_pem: "not a key".into(),
        },
    ))
    .unwrap_err();
    assert!(matches!(err, ApiError::Auth(_)), "{err:?}");
    assert!(err.to_string().contains("GitHub App 5"), "{err}");
    assert!(GitHubClient::new(ApiConfig::new(
        "https://github.example.com/api/v3/",
        Auth::Token("t".into())
    ))
    .is_ok());
    let err =
        GitHubClient::new(ApiConfig::new("api.github.com", Auth::Token("t".into()))).unwrap_err();
    assert!(err.to_string().contains("api.github.com"), "{err}");
}

#[tokio::test]
async fn server_errors_are_retried_until_success() {
    let mock = MockGitHub::start().await;
    mock.fail_next(2, 502);
    let client = token_client(&mock);
    client
        .create_commit_status(&repo(), SHA, &status(StatusState::Pending, "x"))
        .await
        .unwrap();
    assert_eq!(mock.requests().len(), 3);
    assert_eq!(mock.statuses(REPO, SHA).len(), 1);
}

#[tokio::test]
async fn rate_limits_are_retried_after_the_wait_github_asks_for() {
    let mock = MockGitHub::start().await;
    mock.fail_next(1, 429);
    let client = token_client(&mock);
    let started = Instant::now();
    let id = client
        .upsert_pull_request_comment(&repo(), 1, MARKER, "hi")
        .await
        .unwrap();
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "Retry-After: 1 was not honoured"
    );
    assert_eq!(mock.comments(REPO, 1), vec![(id, format!("{MARKER}\nhi"))]);
}

#[tokio::test]
async fn the_primary_rate_limit_is_waited_out_until_its_reset() {
    let mock = MockGitHub::start().await;
    mock.add_file(REPO, SHA, ".github/workflows/ci.yml", "on: push");
    mock.rate_limit_next(1, Duration::from_secs(2));
    let client = token_client(&mock);
    let started = Instant::now();
    let files = client.workflow_files(&repo(), SHA).await.unwrap();
    assert_eq!(files.len(), 1);
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "x-ratelimit-reset was not honoured: {:?}",
        started.elapsed()
    );

    mock.rate_limit_next(1, Duration::from_secs(600));
    let err = client.workflow_files(&repo(), SHA).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "GitHub API GET /repos/{REPO}/contents/.github/workflows?ref={SHA} answered 403: \
             API rate limit exceeded for installation ID 1."
        )
    );
}

#[tokio::test]
async fn a_wait_longer_than_the_policy_allows_fails_at_once() {
    let mock = MockGitHub::start().await;
    mock.fail_next(1, 403);
    let mut config = ApiConfig::new(mock.url(), Auth::Token("t".into()));
    config.retry.max_delay = Duration::from_millis(100);
    let client = GitHubClient::new(config).unwrap();
    let err = client.pull_request_files(&repo(), 1).await.unwrap_err();
    assert_eq!(err.status(), Some(403));
    assert!(err.is_transient());
    assert!(err.to_string().contains("secondary rate limit"), "{err}");
    assert_eq!(mock.requests().len(), 1);
}

#[tokio::test]
async fn retries_stop_after_the_configured_attempts() {
    let mock = MockGitHub::start().await;
    mock.fail_next(10, 503);
    let client = token_client(&mock);
    let err = client
        .create_commit_status(&repo(), SHA, &status(StatusState::Error, "x"))
        .await
        .unwrap_err();
    assert_eq!(mock.requests().len(), 4);
    assert_eq!(
        err.to_string(),
        format!("GitHub API POST /repos/{REPO}/statuses/{SHA} answered 503: Server Error")
    );
}

#[tokio::test]
async fn client_errors_are_not_retried() {
    for status_code in [404, 422] {
        let mock = MockGitHub::start().await;
        mock.fail_next(1, status_code);
        let client = token_client(&mock);
        let err = client
            .create_commit_status(&repo(), SHA, &status(StatusState::Failure, "x"))
            .await
            .unwrap_err();
        assert_eq!(err.status(), Some(status_code));
        assert!(!err.is_transient());
        assert_eq!(mock.requests().len(), 1, "{status_code} was retried");
    }
}

#[tokio::test]
async fn errors_name_method_path_and_githubs_message() {
    let mock = MockGitHub::start().await;
    let client = token_client(&mock);
    mock.fail_next(1, 422);
    let err = client.pull_request_files(&repo(), 9).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        format!("GitHub API GET /repos/{REPO}/pulls/9/files?per_page=100 answered 422: Validation Failed")
    );
    assert!(matches!(
        err,
        ApiError::Http { ref method, status: 422, .. } if method == "GET"
    ));
}

#[tokio::test]
async fn unreachable_api_is_a_transport_error_after_retries() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap();
    drop(listener);
    let mut config = ApiConfig::new(format!("http://{address}"), Auth::Token("t".into()));
    config.retry = RetryPolicy {
        attempts: 2,
        first_delay: Duration::from_millis(5),
        max_delay: Duration::from_millis(50),
    };
    let client = GitHubClient::new(config).unwrap();
    let err = client.pull_request_files(&repo(), 1).await.unwrap_err();
    assert!(matches!(err, ApiError::Transport { .. }), "{err:?}");
    assert!(err.is_transient());
    assert!(
        err.to_string().starts_with(&format!(
            "GitHub API GET /repos/{REPO}/pulls/1/files?per_page=100 failed: "
        )),
        "{err}"
    );
}

#[tokio::test]
async fn without_credentials_no_authorization_is_sent() {
    let mock = MockGitHub::start().await;
    let client = client_with(&mock, Auth::Token(String::new()));
    assert_eq!(client.git_credentials(&repo()).await.unwrap(), None);
    client
        .create_commit_status(&repo(), SHA, &status(StatusState::Pending, "x"))
        .await
        .unwrap();
    assert_eq!(mock.requests()[0].authorization, None);
    let token = token_client(&mock);
    assert_eq!(
        token.git_credentials(&repo()).await.unwrap().as_deref(),
        Some("ghp_test")
    );
}

#[tokio::test]
async fn a_job_token_is_for_one_repository_with_the_asked_permissions_within_the_installation() {
    use firerunner_github::permissions::{Level, TokenPermissions};
    let mock = MockGitHub::start().await;
    mock.set_app_public_key(&testdata("app-public-key.pem"));
    mock.add_file(REPO, SHA, ".github/workflows/ci.yml", "on: push");
    mock.add_file(
        "octo-org/other",
        SHA,
        ".github/workflows/ci.yml",
        "on: push",
    );
    let client = client_with(&mock, app_auth("app-private-key.pem"));
    let mut wanted = TokenPermissions::all(Level::Write);
    wanted.0.insert("contents".into(), Level::Read);
    let token = client.job_token(&repo(), &wanted).await.unwrap().unwrap();
    let scope = mock
        .issued_scopes()
        .into_iter()
        .find(|s| s.token == token)
        .unwrap();
    assert_eq!(scope.repositories, Some(vec!["widgets".to_owned()]));
    assert_eq!(
        scope.permissions,
        serde_json::json!({
            "checks": "write", "contents": "read", "issues": "write",
            "pull_requests": "write", "statuses": "write",
        }),
        "actions, packages, ... are not the installation's: left out, not refused"
    );
    let service_token = client.git_credentials(&repo()).await.unwrap().unwrap();
    assert_ne!(
        token, service_token,
        "the service's own token is never the job's"
    );

    // The token opens its repository and no other.
    let bearer = |t: &str| {
        let mut config = ApiConfig::new(mock.url(), Auth::Token(t.to_owned()));
        config.retry = fast_retry();
        GitHubClient::new(config).unwrap()
    };
    let other = RepoRef::parse("octo-org/other", None).unwrap();
    assert!(bearer(&token).workflow_files(&repo(), SHA).await.is_ok());
    let err = bearer(&token)
        .workflow_files(&other, SHA)
        .await
        .unwrap_err();
    assert_eq!(err.status(), Some(401), "{err}");

    // Nothing left after the cut: metadata only, never the installation's whole set.
    let none = client
        .job_token(&repo(), &TokenPermissions::default())
        .await
        .unwrap()
        .unwrap();
    let scope = mock
        .issued_scopes()
        .into_iter()
        .find(|s| s.token == none)
        .unwrap();
    assert_eq!(scope.permissions, serde_json::json!({"metadata": "read"}));
}

#[tokio::test]
async fn a_personal_access_token_is_never_a_job_token() {
    use firerunner_github::permissions::{Level, TokenPermissions};
    let mock = MockGitHub::start().await;
    let client = token_client(&mock);
    let token = client
        .job_token(&repo(), &TokenPermissions::all(Level::Write))
        .await
        .unwrap();
    assert_eq!(token, None);
    assert!(mock.requests().is_empty());
}

#[tokio::test]
async fn a_marker_planted_by_someone_else_is_not_taken_for_the_comment() {
    let mock = MockGitHub::start().await;
    let planted = mock.add_comment_by(REPO, 7, "mallory", &format!("{MARKER}\nall green!"));
    let client = token_client(&mock);
    let id = client
        .upsert_pull_request_comment(&repo(), 7, MARKER, "1 failed")
        .await
        .unwrap();
    assert_ne!(id, planted);
    let comments = mock.comments(REPO, 7);
    assert_eq!(
        comments[0],
        (planted, format!("{MARKER}\nall green!")),
        "untouched"
    );
    assert_eq!(comments[1], (id, format!("{MARKER}\n1 failed")));
    assert_eq!(client.own_login().await.unwrap(), "firerunner-ci");
    assert_eq!(
        requests_matching(&mock, "GET", "/user").len(),
        1,
        "asked once"
    );
}

#[tokio::test]
async fn an_app_finds_the_comment_of_its_own_bot() {
    let mock = MockGitHub::start().await;
    mock.set_app_public_key(&testdata("app-public-key.pem"));
    mock.add_comment_by(REPO, 7, "firerunner-ci", &format!("{MARKER}\nby a user"));
    let ours = mock.add_comment_by(REPO, 7, "firerunner[bot]", &format!("{MARKER}\nold"));
    let client = client_with(&mock, app_auth("app-private-key.pem"));
    let id = client
        .upsert_pull_request_comment(&repo(), 7, MARKER, "new")
        .await
        .unwrap();
    assert_eq!(id, ours);
    assert_eq!(mock.comments(REPO, 7)[1].1, format!("{MARKER}\nnew"));
}

#[tokio::test]
async fn variables_are_read_from_every_page_of_each_listing() {
    let mock = MockGitHub::start().await;
    for n in 0..35 {
        mock.set_repository_variable(REPO, &format!("var_{n:02}"), &format!("value {n}"));
    }
    mock.set_organization_variable("octo-org", "ORG_COLOR", "blue");
    mock.set_environment_variable(REPO, "production", "REGION", "eu");
    let client = token_client(&mock);
    let repo_vars = client.repository_variables(&repo()).await.unwrap();
    assert_eq!(repo_vars.len(), 35, "both pages");
    assert_eq!(repo_vars[0].name, "VAR_00");
    assert_eq!(repo_vars[34].value, "value 34");
    let pages = requests_matching(&mock, "GET", "/repos/octo-org/widgets/actions/variables");
    assert_eq!(pages.len(), 2);
    let org = client.organization_variables(&repo()).await.unwrap();
    assert_eq!(
        (org[0].name.as_str(), org[0].value.as_str()),
        ("ORG_COLOR", "blue")
    );
    let env = client
        .environment_variables(&repo(), "production")
        .await
        .unwrap();
    assert_eq!(env[0].name, "REGION");
    assert!(client
        .environment_variables(&repo(), "staging")
        .await
        .unwrap()
        .is_empty());
    mock.deny_variables(REPO);
    let err = client.repository_variables(&repo()).await.unwrap_err();
    assert_eq!(err.status(), Some(403));
}
