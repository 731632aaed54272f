//! A local stand-in for GitHub's REST API, for tests: [`MockGitHub`] answers the endpoints
//! [`crate::GitHubClient`] calls, in the shapes GitHub documents, and records every request.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, Method, Uri};
use axum::response::Response;
use base64::Engine as _;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::api::encode_component;
use crate::time::{format_rfc3339, unix_now};

/// The login `GET /user` reports for a personal access token (see [`MockGitHub::set_user_login`]).
pub const DEFAULT_USER_LOGIN: &str = "firerunner-ci";
/// The slug `GET /app` reports; the App's comments are by `firerunner[bot]`.
pub const APP_SLUG: &str = "firerunner";

/// The installation id the mock reports for a repository with none set.
pub const DEFAULT_INSTALLATION_ID: u64 = 1;

/// One request the mock received.
#[derive(Debug, Clone, PartialEq)]
pub struct RecordedRequest {
    /// The HTTP method (`GET`, `POST`, ...).
    pub method: String,
    /// The path with its query, as sent (`/repos/o/r/issues/1/comments?per_page=100`).
    pub path: String,
    /// The `Authorization` header, if any.
    pub authorization: Option<String>,
    /// The `Accept` header, if any.
    pub accept: Option<String>,
    /// The `X-GitHub-Api-Version` header, if any.
    pub api_version: Option<String>,
    /// The `User-Agent` header, if any.
    pub user_agent: Option<String>,
    /// The JSON body; `Null` when empty, a string when not JSON.
    pub body: Value,
}

struct Comment {
    id: u64,
    author: String,
    full_name: String,
    number: u64,
    body: String,
    created_at: String,
    updated_at: String,
}

/// Requests still to fail, and how.
#[derive(Clone, Copy)]
struct Failure {
    count: usize,
    status: u16,
    /// For a primary rate limit: when it resets, in Unix seconds.
    rate_limit_reset: Option<i64>,
}

struct IssuedToken {
    token: String,
    expires_at: i64,
    /// The repositories it is limited to (`None`: all of the installation's).
    repositories: Option<Vec<String>>,
    permissions: Value,
}

/// What the mock's installations hold, as GitHub lists an installation's `permissions`.
pub fn installation_permissions() -> Value {
    json!({
        "checks": "write",
        "contents": "write",
        "issues": "write",
        "metadata": "read",
        "pull_requests": "write",
        "statuses": "write",
    })
}

/// One installation token the mock issued, with its scope.
#[derive(Debug, Clone, PartialEq)]
pub struct IssuedScope {
    /// The token.
    pub token: String,
    /// Repository names it is limited to (`None`: every repository of the installation).
    pub repositories: Option<Vec<String>>,
    /// Its permissions, as GitHub answered them.
    pub permissions: Value,
}

#[derive(Default)]
struct MockData {
    requests: Vec<RecordedRequest>,
    files: HashMap<(String, String), BTreeMap<String, String>>,
    pull_request_files: HashMap<(String, u64), Vec<String>>,
    statuses: HashMap<(String, String), Vec<Value>>,
    comments: Vec<Comment>,
    next_id: u64,
    fail_next: Option<Failure>,
    app_key: Option<DecodingKey>,
    comments_page_size: Option<usize>,
    installations: HashMap<String, u64>,
    removed_installations: Vec<u64>,
    tokens: Vec<IssuedToken>,
    token_lifetime: Option<Duration>,
    user_login: Option<String>,
    /// Configuration variables by scope: `org:<owner>`, `repo:<owner/name>`,
    /// `env:<owner/name>:<environment>`, each `(name, value)`.
    variables: HashMap<String, Vec<(String, String)>>,
    /// Repositories whose variables the caller may not read (403).
    variables_denied: Vec<String>,
}

struct MockState {
    base_url: String,
    data: Mutex<MockData>,
}

impl MockState {
    fn data(&self) -> MutexGuard<'_, MockData> {
        self.data
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

struct ServerTask(tokio::task::JoinHandle<()>);

impl Drop for ServerTask {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// A mock GitHub REST API on `127.0.0.1`, stopped when the last clone is dropped.
///
/// It serves commit statuses, issue comments (list with `Link` pagination, create, update,
/// delete), repository contents (folder listings and base64 files), pull request files
/// (paginated), a repository's App installation and installation access tokens. With
/// [`MockGitHub::set_app_public_key`], `/app/...` and `/repos/{o}/{r}/installation` need a valid
/// RS256 App JWT and the other repository endpoints an installation token the mock issued.
#[derive(Clone)]
pub struct MockGitHub {
    state: Arc<MockState>,
    _server: Arc<ServerTask>,
}

impl MockGitHub {
    /// Starts the mock on a free port of 127.0.0.1 (inside a tokio runtime).
    pub async fn start() -> MockGitHub {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the mock GitHub to 127.0.0.1");
        let address = listener.local_addr().expect("the mock's address");
        let state = Arc::new(MockState {
            base_url: format!("http://{address}"),
            data: Mutex::new(MockData {
                next_id: 1_000,
                ..MockData::default()
            }),
        });
        let router = axum::Router::new()
            .fallback(handle)
            .with_state(state.clone());
        let server = tokio::spawn(async move {
            axum::serve(listener, router)
                .await
                .expect("the mock GitHub server");
        });
        MockGitHub {
            state,
            _server: Arc::new(ServerTask(server)),
        }
    }

    /// The API root to put in [`crate::ApiConfig::base_url`].
    pub fn url(&self) -> String {
        self.state.base_url.clone()
    }

    /// Adds a file to the tree of commit `sha` (also usable as a branch name in `?ref=`).
    pub fn add_file(&self, full_name: &str, sha: &str, path: &str, contents: &str) {
        self.state
            .data()
            .files
            .entry((full_name.to_owned(), sha.to_owned()))
            .or_default()
            .insert(path.trim_matches('/').to_owned(), contents.to_owned());
    }

    /// Sets the files pull request `number` changes.
    pub fn set_pull_request_files(&self, full_name: &str, number: u64, files: Vec<String>) {
        self.state
            .data()
            .pull_request_files
            .insert((full_name.to_owned(), number), files);
    }

    /// Every request received so far, in order.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.state.data().requests.clone()
    }

    /// The commit statuses created on `sha`, in the order received, as GitHub answered them.
    pub fn statuses(&self, full_name: &str, sha: &str) -> Vec<Value> {
        self.state
            .data()
            .statuses
            .get(&(full_name.to_owned(), sha.to_owned()))
            .cloned()
            .unwrap_or_default()
    }

    /// The current comments of pull request (issue) `number`, oldest first, as (id, body).
    pub fn comments(&self, full_name: &str, number: u64) -> Vec<(u64, String)> {
        self.state
            .data()
            .comments
            .iter()
            .filter(|c| c.full_name == full_name && c.number == number)
            .map(|c| (c.id, c.body.clone()))
            .collect()
    }

    /// Adds a comment as if the personal access token's user wrote it; returns its id.
    pub fn add_comment(&self, full_name: &str, number: u64, body: &str) -> u64 {
        let mut data = self.state.data();
        let author = user_login(&data);
        add_comment(&mut data, full_name, number, &author, body)
    }

    /// Adds a comment written by `author` (any login); returns its id.
    pub fn add_comment_by(&self, full_name: &str, number: u64, author: &str, body: &str) -> u64 {
        let mut data = self.state.data();
        add_comment(&mut data, full_name, number, author, body)
    }

    /// The login `GET /user` reports and personal access tokens write comments as
    /// (else [`DEFAULT_USER_LOGIN`]).
    pub fn set_user_login(&self, login: &str) {
        self.state.data().user_login = Some(login.to_owned());
    }

    /// Deletes a comment as if someone removed it; false when there is no such comment.
    pub fn delete_comment(&self, id: u64) -> bool {
        let mut data = self.state.data();
        let before = data.comments.len();
        data.comments.retain(|c| c.id != id);
        data.comments.len() != before
    }

    /// The next `count` requests are answered with `status` (with `Retry-After: 1` for 403 and
    /// 429, as GitHub's rate limits do).
    pub fn fail_next(&self, count: usize, status: u16) {
        self.state.data().fail_next = (count > 0).then_some(Failure {
            count,
            status,
            rate_limit_reset: None,
        });
    }

    /// The next `count` requests hit the primary rate limit: 403 with
    /// `x-ratelimit-remaining: 0` and `x-ratelimit-reset` `reset_after` from now (no `Retry-After`).
    pub fn rate_limit_next(&self, count: usize, reset_after: Duration) {
        self.state.data().fail_next = (count > 0).then_some(Failure {
            count,
            status: 403,
            rate_limit_reset: Some(unix_now() + reset_after.as_secs() as i64),
        });
    }

    /// Requires App JWTs signed by the key whose public half is `pem` (see the type's docs).
    pub fn set_app_public_key(&self, pem: &str) {
        let key = DecodingKey::from_rsa_pem(pem.as_bytes()).expect("an RSA public key in PEM");
        self.state.data().app_key = Some(key);
    }

    /// Answers issue comment lists `n` comments a page, whatever `per_page` asks.
    pub fn set_comments_page_size(&self, n: usize) {
        self.state.data().comments_page_size = Some(n.max(1));
    }

    /// The installation id `GET /repos/{full_name}/installation` reports
    /// (else [`DEFAULT_INSTALLATION_ID`]). A different id set later stands for a reinstall:
    /// the previous id is gone and its token requests answer 404.
    pub fn set_installation(&self, full_name: &str, installation_id: u64) {
        let mut data = self.state.data();
        if let Some(previous) = data
            .installations
            .insert(full_name.to_owned(), installation_id)
        {
            if previous != installation_id {
                data.removed_installations.push(previous);
            }
        }
    }

    /// How long issued installation tokens last (GitHub: one hour, the default).
    pub fn set_token_lifetime(&self, lifetime: Duration) {
        self.state.data().token_lifetime = Some(lifetime);
    }

    /// Sets a repository's configuration variable (names upper-cased, as GitHub keeps them).
    pub fn set_repository_variable(&self, full_name: &str, name: &str, value: &str) {
        self.set_variable(format!("repo:{full_name}"), name, value);
    }

    /// Sets an organization variable, shared with all of its repositories.
    pub fn set_organization_variable(&self, owner: &str, name: &str, value: &str) {
        self.set_variable(format!("org:{owner}"), name, value);
    }

    /// Sets an environment's configuration variable.
    pub fn set_environment_variable(
        &self,
        full_name: &str,
        environment: &str,
        name: &str,
        value: &str,
    ) {
        self.set_variable(format!("env:{full_name}:{environment}"), name, value);
    }

    /// Answers 403 to every variables listing of `full_name` (the App lacks *Variables: read*).
    pub fn deny_variables(&self, full_name: &str) {
        self.state
            .data()
            .variables_denied
            .push(full_name.to_owned());
    }

    fn set_variable(&self, scope: String, name: &str, value: &str) {
        let mut data = self.state.data();
        let list = data.variables.entry(scope).or_default();
        let name = name.to_ascii_uppercase();
        list.retain(|(existing, _)| *existing != name);
        list.push((name, value.to_owned()));
        list.sort();
    }

    /// The installation tokens issued so far, with the repositories and permissions of each.
    pub fn issued_scopes(&self) -> Vec<IssuedScope> {
        self.state
            .data()
            .tokens
            .iter()
            .map(|t| IssuedScope {
                token: t.token.clone(),
                repositories: t.repositories.clone(),
                permissions: t.permissions.clone(),
            })
            .collect()
    }

    /// The installation tokens issued so far.
    pub fn issued_tokens(&self) -> Vec<String> {
        self.state
            .data()
            .tokens
            .iter()
            .map(|t| t.token.clone())
            .collect()
    }
}

fn user_login(data: &MockData) -> String {
    data.user_login
        .clone()
        .unwrap_or_else(|| DEFAULT_USER_LOGIN.to_owned())
}

/// Who a request is from: the App's bot for an installation token the mock issued, the
/// token's user otherwise.
fn caller_login(data: &MockData, authorization: Option<&str>) -> String {
    let token = authorization.and_then(|a| a.strip_prefix("Bearer ").or(a.strip_prefix("token ")));
    if token.is_some_and(|t| data.tokens.iter().any(|issued| issued.token == t)) {
        format!("{APP_SLUG}[bot]")
    } else {
        user_login(data)
    }
}

fn add_comment(data: &mut MockData, full_name: &str, number: u64, author: &str, body: &str) -> u64 {
    data.next_id += 1;
    let id = data.next_id;
    let now = format_rfc3339(unix_now());
    data.comments.push(Comment {
        id,
        author: author.to_owned(),
        full_name: full_name.to_owned(),
        number,
        body: body.to_owned(),
        created_at: now.clone(),
        updated_at: now,
    });
    id
}

/// An answer: status, extra headers, JSON body (`Null` = empty).
struct Answer {
    status: u16,
    headers: Vec<(&'static str, String)>,
    body: Value,
}

impl Answer {
    fn json(status: u16, body: Value) -> Answer {
        Answer {
            status,
            headers: Vec::new(),
            body,
        }
    }

    fn error(status: u16, message: &str) -> Answer {
        Answer::json(
            status,
            json!({
                "message": message,
                "documentation_url": "https://docs.github.com/rest",
                "status": status.to_string(),
            }),
        )
    }

    fn not_found() -> Answer {
        Answer::error(404, "Not Found")
    }
}

async fn handle(
    State(state): State<Arc<MockState>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let answer = answer(&state, &method, &uri, &headers, &body);
    let mut response = Response::builder().status(answer.status);
    for (name, value) in answer.headers {
        response = response.header(name, value);
    }
    let body = if answer.body.is_null() {
        Body::empty()
    } else {
        response = response.header("content-type", "application/json; charset=utf-8");
        Body::from(answer.body.to_string())
    };
    response.body(body).expect("a valid mock response")
}

fn answer(
    state: &MockState,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: &[u8],
) -> Answer {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let authorization = header("authorization");
    let json_body = if body.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(body)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(body).into_owned()))
    };
    let mut data = state.data();
    data.requests.push(RecordedRequest {
        method: method.to_string(),
        path: uri
            .path_and_query()
            .map_or_else(|| uri.path().to_owned(), |pq| pq.to_string()),
        authorization: authorization.clone(),
        accept: header("accept"),
        api_version: header("x-github-api-version"),
        user_agent: header("user-agent"),
        body: json_body.clone(),
    });
    if let Some(failure) = data.fail_next {
        data.fail_next = (failure.count > 1).then_some(Failure {
            count: failure.count - 1,
            ..failure
        });
        return failed(failure);
    }
    if headers
        .get("accept")
        .and_then(|v| v.to_str().ok())
        .is_none_or(|accept| {
            !accept.contains("application/vnd.github+json") && !accept.contains("*/*")
        })
    {
        return Answer::error(415, "Unsupported 'Accept' header");
    }
    if header("x-github-api-version").is_some_and(|v| v != "2022-11-28") {
        return Answer::error(400, "Unsupported API version");
    }
    if headers.get("user-agent").is_none() {
        return Answer::error(
            403,
            "Request forbidden by administrative rules. Please make sure your request has a User-Agent header",
        );
    }
    let segments: Vec<String> = uri
        .path()
        .trim_matches('/')
        .split('/')
        .map(percent_decode)
        .collect();
    let segments: Vec<&str> = segments.iter().map(String::as_str).collect();
    let query = parse_query(uri.query().unwrap_or(""));
    let ctx = Ctx {
        base: &state.base_url,
        method,
        query: &query,
        authorization: authorization.as_deref(),
        body: &json_body,
    };
    match segments.as_slice() {
        ["app", "installations", id, "access_tokens"] if method == Method::POST => {
            match id.parse::<u64>() {
                Ok(id) => access_token(&mut data, &ctx, id),
                Err(_) => Answer::not_found(),
            }
        }
        ["user"] if method == Method::GET => {
            if caller_login(&data, ctx.authorization).ends_with("[bot]") {
                return Answer::error(403, "Resource not accessible by integration");
            }
            Answer::json(
                200,
                json!({ "login": user_login(&data), "id": 583231, "type": "User" }),
            )
        }
        ["app"] if method == Method::GET => match check_app_jwt(&data, ctx.authorization) {
            Ok(id) => Answer::json(
                200,
                json!({ "id": id, "slug": APP_SLUG, "name": "firerunner", "owner": { "login": "octo-org" } }),
            ),
            Err(answer) => answer,
        },
        ["repos", owner, repo, rest @ ..] => {
            let full_name = format!("{owner}/{repo}");
            if let ["installation"] = rest {
                return installation(&data, &ctx, &full_name, owner);
            }
            if let Some(denied) = check_installation_token(&data, &ctx, repo) {
                return denied;
            }
            repo_endpoint(&mut data, &ctx, &full_name, rest)
        }
        _ => Answer::not_found(),
    }
}

struct Ctx<'a> {
    base: &'a str,
    method: &'a Method,
    query: &'a HashMap<String, String>,
    authorization: Option<&'a str>,
    body: &'a Value,
}

impl Ctx<'_> {
    fn page(&self) -> usize {
        self.query
            .get("page")
            .and_then(|p| p.parse().ok())
            .filter(|p| *p > 0)
            .unwrap_or(1)
    }

    fn per_page(&self) -> usize {
        self.query
            .get("per_page")
            .and_then(|p| p.parse().ok())
            .filter(|p| *p > 0)
            .unwrap_or(30)
            .min(100)
    }
}

fn failed(failure: Failure) -> Answer {
    if let Some(reset) = failure.rate_limit_reset {
        let mut answer = Answer::error(
            failure.status,
            &format!("API rate limit exceeded for installation ID {DEFAULT_INSTALLATION_ID}."),
        );
        answer.headers.extend([
            ("x-ratelimit-limit", "5000".to_owned()),
            ("x-ratelimit-remaining", "0".to_owned()),
            ("x-ratelimit-used", "5000".to_owned()),
            ("x-ratelimit-reset", reset.to_string()),
            ("x-ratelimit-resource", "core".to_owned()),
        ]);
        return answer;
    }
    let status = failure.status;
    let mut answer = match status {
        429 | 403 => Answer::error(
            status,
            "You have exceeded a secondary rate limit. Please wait a few minutes before you try again.",
        ),
        404 => Answer::not_found(),
        422 => Answer::error(422, "Validation Failed"),
        401 => Answer::error(401, "Bad credentials"),
        s if s >= 500 => Answer::error(s, "Server Error"),
        s => Answer::error(s, "Mock failure"),
    };
    if matches!(status, 403 | 429) {
        answer.headers.push(("retry-after", "1".to_owned()));
    }
    answer
}

fn repo_endpoint(data: &mut MockData, ctx: &Ctx<'_>, full_name: &str, rest: &[&str]) -> Answer {
    let method = ctx.method;
    match rest {
        ["statuses", sha] if method == Method::POST => create_status(data, ctx, full_name, sha),
        ["issues", "comments", id] => match id.parse::<u64>() {
            Ok(id) => comment_by_id(data, ctx, full_name, id),
            Err(_) => Answer::not_found(),
        },
        ["issues", number, "comments"] => match number.parse::<u64>() {
            Ok(number) if method == Method::GET => list_comments(data, ctx, full_name, number),
            Ok(number) if method == Method::POST => {
                let Some(body) = ctx.body["body"].as_str() else {
                    return validation_failed("IssueComment", "body", "missing_field");
                };
                let author = caller_login(data, ctx.authorization);
                let id = add_comment(data, full_name, number, &author, body);
                let comment = data
                    .comments
                    .iter()
                    .find(|c| c.id == id)
                    .expect("just added");
                Answer::json(201, comment_json(ctx.base, comment))
            }
            _ => Answer::not_found(),
        },
        ["contents", path @ ..] if method == Method::GET => contents(data, ctx, full_name, path),
        ["pulls", number, "files"] if method == Method::GET => match number.parse::<u64>() {
            Ok(number) => pull_request_files(data, ctx, full_name, number),
            Err(_) => Answer::not_found(),
        },
        ["actions", "variables"] if method == Method::GET => {
            variables(data, ctx, full_name, &format!("repo:{full_name}"), rest)
        }
        ["actions", "organization-variables"] if method == Method::GET => {
            let owner = full_name.split('/').next().unwrap_or_default();
            variables(data, ctx, full_name, &format!("org:{owner}"), rest)
        }
        ["environments", environment, "variables"] if method == Method::GET => {
            let scope = format!("env:{full_name}:{environment}");
            variables(data, ctx, full_name, &scope, rest)
        }
        _ => Answer::not_found(),
    }
}

/// A page of a variables listing, in GitHub's shape: `{"total_count",
/// "variables": [{"name", "value", "created_at", "updated_at"}]}`, with
/// GitHub's `Link` header.
fn variables(
    data: &MockData,
    ctx: &Ctx<'_>,
    full_name: &str,
    scope: &str,
    rest: &[&str],
) -> Answer {
    if data
        .variables_denied
        .iter()
        .any(|denied| denied == full_name)
    {
        return Answer::error(403, "Resource not accessible by integration");
    }
    let items: Vec<Value> = data
        .variables
        .get(scope)
        .map(|list| {
            list.iter()
                .map(|(name, value)| {
                    json!({
                        "name": name,
                        "value": value,
                        "created_at": "2024-01-10T14:59:22Z",
                        "updated_at": "2024-01-11T14:59:22Z",
                    })
                })
                .collect()
        })
        .unwrap_or_default();
    let total = items.len();
    let path = format!("/repos/{full_name}/{}", rest.join("/"));
    let mut page = paginate(ctx, &path, items, ctx.per_page());
    let listed = std::mem::take(&mut page.body);
    page.body = json!({ "total_count": total, "variables": listed });
    page
}

fn validation_failed(resource: &str, field: &str, code: &str) -> Answer {
    Answer::json(
        422,
        json!({
            "message": "Validation Failed",
            "errors": [{ "resource": resource, "field": field, "code": code }],
            "documentation_url": "https://docs.github.com/rest",
            "status": "422",
        }),
    )
}

fn create_status(data: &mut MockData, ctx: &Ctx<'_>, full_name: &str, sha: &str) -> Answer {
    let state = ctx.body["state"].as_str().unwrap_or("");
    if !["pending", "success", "failure", "error"].contains(&state) {
        return validation_failed("Status", "state", "custom");
    }
    let description = &ctx.body["description"];
    if description
        .as_str()
        .is_some_and(|d| d.chars().count() > 140)
    {
        return validation_failed("Status", "description", "custom");
    }
    data.next_id += 1;
    let id = data.next_id;
    let now = format_rfc3339(unix_now());
    let status = json!({
        "url": format!("{}/repos/{full_name}/statuses/{sha}", ctx.base),
        "avatar_url": "https://avatars.githubusercontent.com/u/9919?v=4",
        "id": id,
        "node_id": format!("SC_mock{id}"),
        "state": state,
        "description": description,
        "target_url": ctx.body["target_url"],
        "context": ctx.body["context"].as_str().unwrap_or("default"),
        "created_at": now,
        "updated_at": now,
        "creator": { "login": "firerunner[bot]", "id": 9919, "type": "Bot" },
    });
    data.statuses
        .entry((full_name.to_owned(), sha.to_owned()))
        .or_default()
        .push(status.clone());
    Answer::json(201, status)
}

fn comment_json(base: &str, c: &Comment) -> Value {
    let (owner_repo, number) = (&c.full_name, c.number);
    json!({
        "id": c.id,
        "node_id": format!("IC_mock{}", c.id),
        "url": format!("{base}/repos/{owner_repo}/issues/comments/{}", c.id),
        "html_url": format!("https://github.com/{owner_repo}/pull/{number}#issuecomment-{}", c.id),
        "issue_url": format!("{base}/repos/{owner_repo}/issues/{number}"),
        "body": c.body,
        "user": {
            "login": c.author,
            "id": 9919,
            "type": if c.author.ends_with("[bot]") { "Bot" } else { "User" },
        },
        "created_at": c.created_at,
        "updated_at": c.updated_at,
        "author_association": "NONE",
    })
}

fn comment_by_id(data: &mut MockData, ctx: &Ctx<'_>, full_name: &str, id: u64) -> Answer {
    let Some(index) = data
        .comments
        .iter()
        .position(|c| c.id == id && c.full_name == full_name)
    else {
        return Answer::not_found();
    };
    match *ctx.method {
        Method::GET => Answer::json(200, comment_json(ctx.base, &data.comments[index])),
        Method::PATCH => {
            let Some(body) = ctx.body["body"].as_str() else {
                return validation_failed("IssueComment", "body", "missing_field");
            };
            let comment = &mut data.comments[index];
            comment.body = body.to_owned();
            comment.updated_at = format_rfc3339(unix_now());
            Answer::json(200, comment_json(ctx.base, comment))
        }
        Method::DELETE => {
            data.comments.remove(index);
            Answer::json(204, Value::Null)
        }
        _ => Answer::not_found(),
    }
}

/// A page of `items` with GitHub's `Link` header for `path`.
fn paginate(ctx: &Ctx<'_>, path: &str, items: Vec<Value>, per_page: usize) -> Answer {
    let page = ctx.page();
    let last = items.len().div_ceil(per_page).max(1);
    let chunk: Vec<Value> = items
        .into_iter()
        .skip((page - 1).saturating_mul(per_page))
        .take(per_page)
        .collect();
    let link = |n: usize, rel: &str| {
        format!(
            "<{}{path}?per_page={per_page}&page={n}>; rel=\"{rel}\"",
            ctx.base
        )
    };
    let mut links = Vec::new();
    if page > 1 {
        links.push(link(page - 1, "prev"));
    }
    if page < last {
        links.push(link(page + 1, "next"));
        links.push(link(last, "last"));
    }
    if page > 1 {
        links.push(link(1, "first"));
    }
    let mut answer = Answer::json(200, Value::Array(chunk));
    if !links.is_empty() {
        answer.headers.push(("link", links.join(", ")));
    }
    answer
}

fn list_comments(data: &MockData, ctx: &Ctx<'_>, full_name: &str, number: u64) -> Answer {
    let items = data
        .comments
        .iter()
        .filter(|c| c.full_name == full_name && c.number == number)
        .map(|c| comment_json(ctx.base, c))
        .collect();
    let per_page = data.comments_page_size.unwrap_or_else(|| ctx.per_page());
    paginate(
        ctx,
        &format!("/repos/{full_name}/issues/{number}/comments"),
        items,
        per_page,
    )
}

fn pull_request_files(data: &MockData, ctx: &Ctx<'_>, full_name: &str, number: u64) -> Answer {
    let Some(files) = data.pull_request_files.get(&(full_name.to_owned(), number)) else {
        return Answer::not_found();
    };
    let items = files
        .iter()
        .take(crate::api::MAX_PULL_REQUEST_FILES)
        .map(|name| {
            let encoded: Vec<String> = name.split('/').map(encode_component).collect();
            let encoded = encoded.join("/");
            json!({
                "sha": blob_sha(name),
                "filename": name,
                "status": "modified",
                "additions": 1,
                "deletions": 1,
                "changes": 2,
                "blob_url": format!("https://github.com/{full_name}/blob/HEAD/{encoded}"),
                "raw_url": format!("https://github.com/{full_name}/raw/HEAD/{encoded}"),
                "contents_url": format!("{}/repos/{full_name}/contents/{encoded}", ctx.base),
                "patch": "@@ -1 +1 @@\n-old\n+new",
            })
        })
        .collect();
    paginate(
        ctx,
        &format!("/repos/{full_name}/pulls/{number}/files"),
        items,
        ctx.per_page(),
    )
}

fn blob_sha(contents: &str) -> String {
    hex::encode(&Sha256::digest(contents.as_bytes())[..20])
}

fn content_entry(
    ctx: &Ctx<'_>,
    full_name: &str,
    git_ref: &str,
    path: &str,
    kind: &str,
    contents: &str,
) -> Value {
    let name = path.rsplit('/').next().unwrap_or(path);
    let encoded: Vec<String> = path.split('/').map(encode_component).collect();
    let encoded = encoded.join("/");
    let url = format!(
        "{}/repos/{full_name}/contents/{encoded}?ref={git_ref}",
        ctx.base
    );
    let git_url = format!(
        "{}/repos/{full_name}/git/{}s/{}",
        ctx.base,
        if kind == "dir" { "tree" } else { "blob" },
        blob_sha(path)
    );
    let html_url = format!(
        "https://github.com/{full_name}/{}/{git_ref}/{encoded}",
        if kind == "dir" { "tree" } else { "blob" }
    );
    json!({
        "type": kind,
        "size": if kind == "dir" { 0 } else { contents.len() },
        "name": name,
        "path": path,
        "sha": blob_sha(if kind == "dir" { path } else { contents }),
        "url": url,
        "git_url": git_url,
        "html_url": html_url,
        "download_url": if kind == "dir" { Value::Null } else {
            Value::String(format!("https://raw.githubusercontent.com/{full_name}/{git_ref}/{encoded}"))
        },
        "_links": { "self": url, "git": git_url, "html": html_url },
    })
}

fn contents(data: &MockData, ctx: &Ctx<'_>, full_name: &str, path: &[&str]) -> Answer {
    let git_ref = ctx.query.get("ref").map_or("main", String::as_str);
    let Some(tree) = data.files.get(&(full_name.to_owned(), git_ref.to_owned())) else {
        return Answer::not_found();
    };
    let path = path.join("/");
    if let Some(text) = tree.get(&path) {
        let encoded = base64::engine::general_purpose::STANDARD.encode(text.as_bytes());
        let wrapped: Vec<&str> = encoded
            .as_bytes()
            .chunks(60)
            .map(|chunk| std::str::from_utf8(chunk).expect("base64 is ASCII"))
            .collect();
        let mut file = content_entry(ctx, full_name, git_ref, &path, "file", text);
        file["encoding"] = json!("base64");
        file["content"] = json!(format!("{}\n", wrapped.join("\n")));
        return Answer::json(200, file);
    }
    let prefix = if path.is_empty() {
        String::new()
    } else {
        format!("{path}/")
    };
    let mut entries: BTreeMap<String, Value> = BTreeMap::new();
    for (file, text) in tree.range(prefix.clone()..) {
        let Some(rest) = file.strip_prefix(&prefix) else {
            break;
        };
        let entry = match rest.split_once('/') {
            Some((dir, _)) => {
                let dir_path = format!("{prefix}{dir}");
                content_entry(ctx, full_name, git_ref, &dir_path, "dir", "")
            }
            None => content_entry(ctx, full_name, git_ref, file, "file", text),
        };
        let key = entry["name"].as_str().unwrap_or_default().to_owned();
        entries.entry(key).or_insert(entry);
    }
    if entries.is_empty() {
        return Answer::not_found();
    }
    Answer::json(200, Value::Array(entries.into_values().collect()))
}

#[derive(serde::Deserialize)]
struct AppClaims {
    iat: i64,
    exp: i64,
    iss: Value,
}

/// The App id of a valid App JWT in `authorization`, or the 401 answer; any bearer passes
/// (App id 1) while no public key is set.
fn check_app_jwt(data: &MockData, authorization: Option<&str>) -> Result<u64, Answer> {
    let Some(key) = &data.app_key else {
        return Ok(1);
    };
    let refuse = || Answer::error(401, "A JSON web token could not be decoded");
    let token = authorization
        .and_then(|a| a.strip_prefix("Bearer "))
        .ok_or_else(refuse)?;
    let mut validation = Validation::new(Algorithm::RS256);
    validation.set_required_spec_claims(&["exp", "iat", "iss"]);
    let claims = jsonwebtoken::decode::<AppClaims>(token, key, &validation)
        .map_err(|_| refuse())?
        .claims;
    if claims.exp - claims.iat > 600 || claims.iat > unix_now() + 60 {
        return Err(Answer::error(
            401,
            "'Expiration time' claim ('exp') is too far in the future",
        ));
    }
    match &claims.iss {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => s.parse().ok(),
        _ => None,
    }
    .ok_or_else(refuse)
}

fn installation(data: &MockData, ctx: &Ctx<'_>, full_name: &str, owner: &str) -> Answer {
    if *ctx.method != Method::GET {
        return Answer::not_found();
    }
    let app_id = match check_app_jwt(data, ctx.authorization) {
        Ok(id) => id,
        Err(answer) => return answer,
    };
    let id = data
        .installations
        .get(full_name)
        .copied()
        .unwrap_or(DEFAULT_INSTALLATION_ID);
    Answer::json(
        200,
        json!({
            "id": id,
            "account": { "login": owner, "id": 6811672, "type": "Organization" },
            "repository_selection": "selected",
            "access_tokens_url": format!("{}/app/installations/{id}/access_tokens", ctx.base),
            "repositories_url": format!("{}/installation/repositories", ctx.base),
            "html_url": format!("https://github.com/organizations/{owner}/settings/installations/{id}"),
            "app_id": app_id,
            "app_slug": "firerunner",
            "target_id": 6811672,
            "target_type": "Organization",
            "permissions": installation_permissions(),
            "events": ["push", "pull_request"],
            "created_at": "2026-01-01T00:00:00Z",
            "updated_at": "2026-01-01T00:00:00Z",
            "single_file_name": null,
        }),
    )
}

fn access_token(data: &mut MockData, ctx: &Ctx<'_>, installation: u64) -> Answer {
    if let Err(answer) = check_app_jwt(data, ctx.authorization) {
        return answer;
    }
    if data.removed_installations.contains(&installation) {
        return Answer::not_found();
    }
    let granted = installation_permissions();
    let permissions = match ctx.body.get("permissions") {
        Some(Value::Object(asked)) => {
            let rank = |level: &Value| match level.as_str() {
                Some("read") => 1,
                Some("write") => 2,
                _ => 0,
            };
            if asked
                .iter()
                .any(|(name, level)| rank(level) == 0 || rank(level) > rank(&granted[name]))
            {
                return Answer::error(
                    422,
                    "The permissions requested are not granted to this installation.",
                );
            }
            Value::Object(asked.clone())
        }
        _ => granted,
    };
    let repositories = ctx.body.get("repositories").and_then(|r| {
        r.as_array().map(|names| {
            names
                .iter()
                .filter_map(|n| n.as_str().map(str::to_owned))
                .collect()
        })
    });
    let lifetime = data
        .token_lifetime
        .unwrap_or(Duration::from_secs(3600))
        .as_secs() as i64;
    let expires_at = unix_now() + lifetime;
    let token = format!("ghs_mock{installation}x{}", data.tokens.len() + 1);
    data.tokens.push(IssuedToken {
        token: token.clone(),
        expires_at,
        repositories: repositories.clone(),
        permissions: permissions.clone(),
    });
    let mut answer = json!({
        "token": token,
        "expires_at": format_rfc3339(expires_at),
        "permissions": permissions,
        "repository_selection": if repositories.is_some() { "selected" } else { "all" },
    });
    if let Some(names) = repositories {
        answer["repositories"] = names.iter().map(|name| json!({ "name": name })).collect();
    }
    Answer::json(201, answer)
}

/// With an App key set, repository endpoints need a live installation token the mock issued.
fn check_installation_token(data: &MockData, ctx: &Ctx<'_>, name: &str) -> Option<Answer> {
    data.app_key.as_ref()?;
    let token = ctx.authorization.and_then(|a| {
        a.strip_prefix("Bearer ")
            .or_else(|| a.strip_prefix("token "))
    });
    let now = unix_now();
    let live = token.is_some_and(|t| {
        data.tokens.iter().any(|issued| {
            issued.token == t
                && issued.expires_at > now
                && issued
                    .repositories
                    .as_ref()
                    .is_none_or(|names| names.iter().any(|n| n == name))
        })
    });
    (!live).then(|| Answer::error(401, "Bad credentials"))
}

fn parse_query(query: &str) -> HashMap<String, String> {
    query
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            (
                percent_decode(&key.replace('+', " ")),
                percent_decode(&value.replace('+', " ")),
            )
        })
        .collect()
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            if let Some(byte) = text
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
            {
                out.push(byte);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}
