//! A client for the parts of GitHub's REST API firerunner uses: commit statuses, the pull
//! request comment, workflow files at a commit, a pull request's files, and credentials for
//! `git fetch`. It authenticates with a token or as a GitHub App, and retries transient failures.

use std::collections::HashMap;
use std::fmt;
use std::hash::{BuildHasher, Hasher};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use reqwest::header::{HeaderMap, ACCEPT, AUTHORIZATION, USER_AGENT};
use reqwest::Method;
use serde::Serialize;
use serde_json::{json, Value};

use crate::permissions::TokenPermissions;
use crate::time::{parse_rfc3339, unix_now};

mod variables;

pub use variables::Variable;

/// The API root of github.com.
pub const GITHUB_API_URL: &str = "https://api.github.com";
/// The REST API version every request asks for.
pub const API_VERSION: &str = "2022-11-28";
/// GitHub lists at most this many files of a pull request.
pub const MAX_PULL_REQUEST_FILES: usize = 3000;
/// GitHub rejects commit status descriptions longer than this many characters.
pub const MAX_STATUS_DESCRIPTION: usize = 140;
/// An installation token is used until this long before it expires.
pub const TOKEN_REFRESH_MARGIN: Duration = Duration::from_secs(5 * 60);
/// Comment ids remembered before idle ones are forgotten (they are found again by listing).
const MAX_REMEMBERED_COMMENTS: usize = 4096;
/// Pagination stops after this many pages, whatever the `Link` header says.
const MAX_PAGES: usize = 1000;

/// How the client proves who it is.
#[derive(Clone, PartialEq, Eq)]
pub enum Auth {
    /// A personal access token (or any bearer token). An empty token sends no `Authorization`.
    Token(String),
    /// A GitHub App: JWTs signed with its private key buy installation tokens.
    App {
        /// The App's numeric id.
        app_id: u64,
        /// The App's RSA private key, PEM (PKCS#1 as GitHub issues it, or PKCS#8).
        private_key_pem: String,
    },
}

impl fmt::Debug for Auth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Auth::Token(token) if token.is_empty() => f.write_str("Token(none)"),
            Auth::Token(_) => f.write_str("Token(<redacted>)"),
            Auth::App { app_id, .. } => {
                write!(f, "App {{ app_id: {app_id}, private_key_pem: <redacted> }}")
            }
        }
    }
}

/// How often and how patiently transient failures are retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in all, the first included (1 = no retry).
    pub attempts: u32,
    /// The backoff before the second attempt; it doubles for each further attempt.
    pub first_delay: Duration,
    /// The longest wait between attempts. When GitHub asks for a longer wait
    /// (`Retry-After`, rate-limit reset), the error is returned instead.
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            attempts: 4,
            first_delay: Duration::from_millis(500),
            max_delay: Duration::from_secs(30),
        }
    }
}

/// Where the API is and how to talk to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiConfig {
    /// The API root: `https://api.github.com`, or `https://HOST/api/v3` for GitHub Enterprise Server.
    pub base_url: String,
    /// The credentials.
    pub auth: Auth,
    /// The `User-Agent` header GitHub requires.
    pub user_agent: String,
    /// Retries of transient failures.
    pub retry: RetryPolicy,
}

impl ApiConfig {
    /// A configuration for `base_url` with firerunner's user agent and the default retries.
    pub fn new(base_url: impl Into<String>, auth: Auth) -> Self {
        ApiConfig {
            base_url: base_url.into(),
            auth,
            user_agent: format!("firerunner/{}", env!("CARGO_PKG_VERSION")),
            retry: RetryPolicy::default(),
        }
    }
}

/// A repository to call the API about, with the App installation that covers it when known.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RepoRef {
    /// The owning user or organization.
    pub owner: String,
    /// The repository name.
    pub name: String,
    /// The GitHub App installation id (from the webhook), if any.
    pub installation_id: Option<u64>,
}

impl RepoRef {
    /// Splits `owner/name`; `None` unless it is exactly two non-empty parts.
    pub fn parse(full_name: &str, installation_id: Option<u64>) -> Option<RepoRef> {
        let (owner, name) = full_name.split_once('/')?;
        if owner.is_empty() || name.is_empty() || name.contains('/') {
            return None;
        }
        Some(RepoRef {
            owner: owner.to_owned(),
            name: name.to_owned(),
            installation_id,
        })
    }

    /// `owner/name`.
    pub fn full_name(&self) -> String {
        format!("{}/{}", self.owner, self.name)
    }

    fn api_path(&self) -> String {
        format!(
            "/repos/{}/{}",
            encode_component(&self.owner),
            encode_component(&self.name)
        )
    }
}

/// The state of a commit status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum StatusState {
    /// Running or queued.
    Pending,
    /// Passed.
    Success,
    /// Failed.
    Failure,
    /// Could not run.
    Error,
}

impl StatusState {
    /// The name GitHub uses (`pending`, `success`, `failure`, `error`).
    pub fn as_str(self) -> &'static str {
        match self {
            StatusState::Pending => "pending",
            StatusState::Success => "success",
            StatusState::Failure => "failure",
            StatusState::Error => "error",
        }
    }
}

/// A commit status to set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommitStatus {
    /// The state.
    pub state: StatusState,
    /// The label that tells statuses apart (`firerunner/ci.yml/build`).
    pub context: String,
    /// A short sentence; cut to [`MAX_STATUS_DESCRIPTION`] characters.
    pub description: String,
    /// The page with details, if any.
    pub target_url: Option<String>,
}

/// A failed API call.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApiError {
    /// GitHub answered with an error status.
    #[error("GitHub API {method} {path} answered {status}: {message}")]
    Http {
        /// The HTTP method.
        method: String,
        /// The path (and query) below the API root.
        path: String,
        /// The HTTP status.
        status: u16,
        /// GitHub's `message` (with its validation `errors`), or the body's start.
        message: String,
    },
    /// The request did not get an answer (connection, TLS, timeout).
    #[error("GitHub API {method} {path} failed: {message}")]
    Transport {
        /// The HTTP method.
        method: String,
        /// The path (and query) below the API root.
        path: String,
        /// What went wrong.
        message: String,
    },
    /// The answer is not what the endpoint documents.
    #[error("GitHub API {path}: unexpected answer: {message}")]
    Decode {
        /// The path (and query) below the API root.
        path: String,
        /// What is wrong with it.
        message: String,
    },
    /// The configured credentials cannot be used.
    #[error("GitHub authentication: {0}")]
    Auth(String),
}

impl ApiError {
    /// Whether trying again later may succeed: 5xx, 429, a 403 for a rate limit, transport failures.
    pub fn is_transient(&self) -> bool {
        match self {
            ApiError::Http {
                status, message, ..
            } => {
                *status >= 500
                    || *status == 429
                    || (*status == 403 && message.to_ascii_lowercase().contains("rate limit"))
            }
            ApiError::Transport { .. } => true,
            ApiError::Decode { .. } | ApiError::Auth(_) => false,
        }
    }

    /// The HTTP status of an [`ApiError::Http`].
    pub fn status(&self) -> Option<u16> {
        match self {
            ApiError::Http { status, .. } => Some(*status),
            _ => None,
        }
    }
}

/// A GitHub REST API client; clones share one connection pool and caches.
#[derive(Clone)]
pub struct GitHubClient {
    inner: Arc<Inner>,
}

impl fmt::Debug for GitHubClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GitHubClient")
            .field("base_url", &self.inner.base_url)
            .finish_non_exhaustive()
    }
}

enum Credentials {
    Anonymous,
    Token(String),
    App { app_id: u64, key: EncodingKey },
}

struct CachedToken {
    token: String,
    refresh_at: i64,
    /// What the installation holds (the answer's `permissions`).
    granted: TokenPermissions,
}

type CommentSlot = Arc<tokio::sync::Mutex<Option<u64>>>;

struct Inner {
    http: reqwest::Client,
    base_url: String,
    origin: String,
    credentials: Credentials,
    user_agent: String,
    retry: RetryPolicy,
    installation_tokens: tokio::sync::Mutex<HashMap<u64, CachedToken>>,
    installations: Mutex<HashMap<String, u64>>,
    comment_slots: Mutex<HashMap<(String, u64), CommentSlot>>,
    /// The login the client writes as, once asked.
    login: tokio::sync::Mutex<Option<String>>,
}

/// A successful answer.
struct Reply {
    headers: HeaderMap,
    body: Vec<u8>,
    path: String,
}

impl Reply {
    fn json<T: serde::de::DeserializeOwned>(&self) -> Result<T, ApiError> {
        serde_json::from_slice(&self.body).map_err(|e| ApiError::Decode {
            path: self.path.clone(),
            message: e.to_string(),
        })
    }
}

#[derive(Serialize)]
struct AppClaims {
    iat: i64,
    exp: i64,
    iss: String,
}

impl GitHubClient {
    /// A client for `config`; fails on an unusable base URL or App private key.
    pub fn new(config: ApiConfig) -> Result<GitHubClient, ApiError> {
        let base_url = config.base_url.trim_end_matches('/').to_owned();
        let origin = origin_of(&base_url).ok_or_else(|| {
            ApiError::Auth(format!(
                "the API base URL '{}' is not an http(s) URL",
                config.base_url
            ))
        })?;
        let credentials = match config.auth {
            Auth::Token(token) if token.is_empty() => Credentials::Anonymous,
            Auth::Token(token) => Credentials::Token(token),
            Auth::App {
                app_id,
                private_key_pem,
            } => {
                let key = EncodingKey::from_rsa_pem(private_key_pem.as_bytes()).map_err(|e| {
                    ApiError::Auth(format!(
                        "the private key of GitHub App {app_id} is not an RSA PEM key: {e}"
                    ))
                })?;
                Credentials::App { app_id, key }
            }
        };
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .timeout(Duration::from_secs(60))
            .build()
            .map_err(|e| ApiError::Auth(format!("cannot build the HTTP client: {e}")))?;
        Ok(GitHubClient {
            inner: Arc::new(Inner {
                http,
                base_url,
                origin,
                credentials,
                user_agent: config.user_agent,
                retry: config.retry,
                installation_tokens: tokio::sync::Mutex::new(HashMap::new()),
                installations: Mutex::new(HashMap::new()),
                comment_slots: Mutex::new(HashMap::new()),
                login: tokio::sync::Mutex::new(None),
            }),
        })
    }

    /// Sets a commit status on `sha` (`POST /repos/{owner}/{repo}/statuses/{sha}`).
    pub async fn create_commit_status(
        &self,
        repo: &RepoRef,
        sha: &str,
        status: &CommitStatus,
    ) -> Result<(), ApiError> {
        let mut body = json!({
            "state": status.state.as_str(),
            "context": status.context,
            "description": truncate_chars(&status.description, MAX_STATUS_DESCRIPTION),
        });
        if let Some(url) = &status.target_url {
            body["target_url"] = Value::String(url.clone());
        }
        let path = format!("{}/statuses/{}", repo.api_path(), encode_component(sha));
        self.repo_call(repo, Method::POST, &path, Some(&body))
            .await?;
        Ok(())
    }

    /// Keeps one comment per pull request, found by `marker` (an HTML comment such as
    /// `<!-- firerunner -->`) among the comments written by this client's own login (see
    /// [`GitHubClient::own_login`]: a marker planted by anyone else is ignored), and sets its
    /// body: edits it in place when it exists, creates it otherwise. The body written always
    /// contains the marker. Returns the comment id.
    pub async fn upsert_pull_request_comment(
        &self,
        repo: &RepoRef,
        number: u64,
        marker: &str,
        body: &str,
    ) -> Result<u64, ApiError> {
        let body = if body.contains(marker) {
            body.to_owned()
        } else {
            format!("{marker}\n{body}")
        };
        let slot = self.comment_slot(repo, number);
        let mut known_id = slot.lock().await;
        if let Some(id) = *known_id {
            match self.update_comment(repo, id, &body).await {
                Ok(()) => return Ok(id),
                Err(err) if err.status() == Some(404) => {
                    tracing::debug!(repo = %repo.full_name(), number, id, "the pull request comment is gone; looking for another");
                    *known_id = None;
                }
                Err(err) => return Err(err),
            }
        }
        let id = match self.find_comment(repo, number, marker).await? {
            Some(id) => {
                self.update_comment(repo, id, &body).await?;
                id
            }
            None => {
                let path = format!("{}/issues/{number}/comments", repo.api_path());
                let reply = self
                    .repo_call(repo, Method::POST, &path, Some(&json!({ "body": body })))
                    .await?;
                comment_id(&reply)?
            }
        };
        *known_id = Some(id);
        Ok(id)
    }

    /// The workflow files (`.github/workflows/*.yml` and `*.yaml`) at commit `sha`, as
    /// (path, contents) sorted by path; empty when the folder does not exist there.
    pub async fn workflow_files(
        &self,
        repo: &RepoRef,
        sha: &str,
    ) -> Result<Vec<(String, String)>, ApiError> {
        let query = format!("?ref={}", encode_component(sha));
        let folder = format!("{}/contents/.github/workflows{query}", repo.api_path());
        let listing: Value = match self.repo_call(repo, Method::GET, &folder, None).await {
            Ok(reply) => reply.json()?,
            Err(err) if err.status() == Some(404) => return Ok(Vec::new()),
            Err(err) => return Err(err),
        };
        let Some(entries) = listing.as_array() else {
            return Ok(Vec::new());
        };
        let mut paths: Vec<String> = entries
            .iter()
            .filter(|e| e["type"] == "file")
            .filter_map(|e| e["path"].as_str())
            .filter(|p| p.ends_with(".yml") || p.ends_with(".yaml"))
            .map(str::to_owned)
            .collect();
        paths.sort();
        let mut files = Vec::with_capacity(paths.len());
        for path in paths {
            let encoded: Vec<String> = path.split('/').map(encode_component).collect();
            let url = format!("{}/contents/{}{query}", repo.api_path(), encoded.join("/"));
            let reply = self.repo_call(repo, Method::GET, &url, None).await?;
            let contents = decode_file(&reply)?;
            files.push((path, contents));
        }
        Ok(files)
    }

    /// The paths a pull request changes, all pages (GitHub stops at
    /// [`MAX_PULL_REQUEST_FILES`]).
    pub async fn pull_request_files(
        &self,
        repo: &RepoRef,
        number: u64,
    ) -> Result<Vec<String>, ApiError> {
        let path = format!("{}/pulls/{number}/files?per_page=100", repo.api_path());
        let mut files = Vec::new();
        for item in self.all_pages(repo, &path).await? {
            let name = item["filename"].as_str().ok_or_else(|| ApiError::Decode {
                path: path.clone(),
                message: "a pull request file has no 'filename'".into(),
            })?;
            files.push(name.to_owned());
            if files.len() == MAX_PULL_REQUEST_FILES {
                break;
            }
        }
        Ok(files)
    }

    /// The token to fetch `repo` with over HTTPS (as the password with user
    /// `x-access-token`): an installation token for an App, the configured token otherwise;
    /// `None` without credentials.
    pub async fn git_credentials(&self, repo: &RepoRef) -> Result<Option<String>, ApiError> {
        self.token_for(repo).await
    }

    /// A token for the jobs of one run: with a GitHub App, a fresh installation token for
    /// `repo` alone with `wanted` cut to what the installation holds (`metadata: read` when
    /// nothing is left, never the installation's whole set). With a personal access token or
    /// none, `None`: the operator's token is never handed to a job.
    pub async fn job_token(
        &self,
        repo: &RepoRef,
        wanted: &TokenPermissions,
    ) -> Result<Option<String>, ApiError> {
        if !matches!(self.inner.credentials, Credentials::App { .. }) {
            return Ok(None);
        }
        let installation = self.installation_id(repo).await?;
        self.installation_token(installation).await?;
        let granted = self
            .inner
            .installation_tokens
            .lock()
            .await
            .get(&installation)
            .map(|cached| cached.granted.clone())
            .unwrap_or_default();
        let mut scoped = wanted.within(&granted).to_json();
        if scoped.as_object().is_some_and(|m| m.is_empty()) {
            scoped = json!({ "metadata": "read" });
        }
        let jwt = self.app_jwt()?;
        let path = format!("/app/installations/{installation}/access_tokens");
        let body = json!({ "repositories": [repo.name], "permissions": scoped });
        let answer: Value = self
            .call(Method::POST, &path, Some(&jwt), Some(&body))
            .await?
            .json()?;
        let given = TokenPermissions::from_json(&answer["permissions"]);
        if given.within(&TokenPermissions::from_json(&scoped)) != given {
            return Err(ApiError::Auth(format!(
                "GitHub gave a job token more than was asked: {}",
                answer["permissions"]
            )));
        }
        let token = answer["token"].as_str().ok_or_else(|| ApiError::Decode {
            path,
            message: "the installation token answer has no 'token'".into(),
        })?;
        Ok(Some(token.to_owned()))
    }

    fn comment_slot(&self, repo: &RepoRef, number: u64) -> CommentSlot {
        let mut slots = self.inner.comment_slots.lock().expect("comment slots lock");
        if slots.len() >= MAX_REMEMBERED_COMMENTS {
            slots.retain(|_, slot| Arc::strong_count(slot) > 1);
        }
        slots.entry((repo.full_name(), number)).or_default().clone()
    }

    async fn update_comment(&self, repo: &RepoRef, id: u64, body: &str) -> Result<(), ApiError> {
        let path = format!("{}/issues/comments/{id}", repo.api_path());
        self.repo_call(repo, Method::PATCH, &path, Some(&json!({ "body": body })))
            .await?;
        Ok(())
    }

    /// The login this client writes comments as: `<slug>[bot]` for a GitHub App (`GET /app`),
    /// the token's user otherwise (`GET /user`). Asked once.
    pub async fn own_login(&self) -> Result<String, ApiError> {
        let mut known = self.inner.login.lock().await;
        if let Some(login) = known.as_ref() {
            return Ok(login.clone());
        }
        let (path, bearer, field) = match &self.inner.credentials {
            Credentials::Anonymous => {
                return Err(ApiError::Auth(
                    "without credentials nothing is written as anyone".into(),
                ))
            }
            Credentials::Token(token) => ("/user", token.clone(), "login"),
            Credentials::App { .. } => ("/app", self.app_jwt()?, "slug"),
        };
        let answer: Value = self
            .call(Method::GET, path, Some(&bearer), None)
            .await?
            .json()?;
        let name = answer[field].as_str().ok_or_else(|| ApiError::Decode {
            path: path.to_owned(),
            message: format!("the answer has no '{field}'"),
        })?;
        let login = match &self.inner.credentials {
            Credentials::App { .. } => format!("{name}[bot]"),
            _ => name.to_owned(),
        };
        *known = Some(login.clone());
        Ok(login)
    }

    async fn find_comment(
        &self,
        repo: &RepoRef,
        number: u64,
        marker: &str,
    ) -> Result<Option<u64>, ApiError> {
        let login = self.own_login().await?;
        let mut path = Some(format!(
            "{}/issues/{number}/comments?per_page=100",
            repo.api_path()
        ));
        for _ in 0..MAX_PAGES {
            let Some(current) = path.take() else {
                break;
            };
            let (comments, next) = self.page(repo, &current).await?;
            let found = comments.iter().find(|c| {
                c["user"]["login"].as_str() == Some(login.as_str())
                    && c["body"].as_str().is_some_and(|b| b.contains(marker))
            });
            if let Some(comment) = found {
                return Ok(comment["id"].as_u64());
            }
            path = next;
        }
        Ok(None)
    }

    /// Every item of a paginated list.
    async fn all_pages(&self, repo: &RepoRef, first: &str) -> Result<Vec<Value>, ApiError> {
        let mut items = Vec::new();
        let mut path = Some(first.to_owned());
        for _ in 0..MAX_PAGES {
            let Some(current) = path.take() else {
                break;
            };
            let (page, next) = self.page(repo, &current).await?;
            items.extend(page);
            path = next;
        }
        Ok(items)
    }

    /// One page of a list and the path of the next, from `Link: <...>; rel="next"`.
    async fn page(
        &self,
        repo: &RepoRef,
        path: &str,
    ) -> Result<(Vec<Value>, Option<String>), ApiError> {
        let reply = self.repo_call(repo, Method::GET, path, None).await?;
        let items: Vec<Value> = reply.json()?;
        let next = self.next_page(&reply, path)?;
        Ok((items, next))
    }

    /// The path of the page after `reply` (from `Link: <...>; rel="next"`),
    /// refused when it leaves the API.
    fn next_page(&self, reply: &Reply, path: &str) -> Result<Option<String>, ApiError> {
        let Some(next) = next_link(&reply.headers) else {
            return Ok(None);
        };
        self.relative_path(&next)
            .map(Some)
            .ok_or_else(|| ApiError::Decode {
                path: path.to_owned(),
                message: format!(
                    "the next page link '{next}' leaves the API at {}",
                    self.inner.base_url
                ),
            })
    }

    /// `url` below the API root, if it is there.
    fn relative_path(&self, url: &str) -> Option<String> {
        if !url.starts_with(&self.inner.origin) {
            return None;
        }
        url.strip_prefix(&self.inner.base_url)
            .filter(|rest| rest.starts_with('/'))
            .map(str::to_owned)
    }

    /// A call about `repo` with its credentials; an App whose installation token is refused
    /// gets a fresh token and tries once more.
    async fn repo_call(
        &self,
        repo: &RepoRef,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Reply, ApiError> {
        let token = self.token_for(repo).await?;
        let result = self
            .call(method.clone(), path, token.as_deref(), body)
            .await;
        match (&self.inner.credentials, &result) {
            (Credentials::App { .. }, Err(err)) if err.status() == Some(401) => {
                let installation = self.installation_id(repo).await?;
                self.inner
                    .installation_tokens
                    .lock()
                    .await
                    .remove(&installation);
                let token = self.token_for(repo).await?;
                self.call(method, path, token.as_deref(), body).await
            }
            _ => result,
        }
    }

    async fn token_for(&self, repo: &RepoRef) -> Result<Option<String>, ApiError> {
        match &self.inner.credentials {
            Credentials::Anonymous => Ok(None),
            Credentials::Token(token) => Ok(Some(token.clone())),
            Credentials::App { .. } => {
                let installation = self.installation_id(repo).await?;
                match self.installation_token(installation).await {
                    Err(err) if err.status() == Some(404) && repo.installation_id.is_none() => {
                        // The App was reinstalled since the lookup: look it up again.
                        self.inner
                            .installations
                            .lock()
                            .expect("installations lock")
                            .remove(&repo.full_name());
                        let installation = self.installation_id(repo).await?;
                        self.installation_token(installation).await.map(Some)
                    }
                    other => other.map(Some),
                }
            }
        }
    }

    fn app_jwt(&self) -> Result<String, ApiError> {
        let Credentials::App { app_id, key } = &self.inner.credentials else {
            return Err(ApiError::Auth(
                "a GitHub App call needs App credentials".into(),
            ));
        };
        let now = unix_now();
        let claims = AppClaims {
            iat: now - 60,
            exp: now + 9 * 60,
            iss: app_id.to_string(),
        };
        jsonwebtoken::encode(&Header::new(Algorithm::RS256), &claims, key)
            .map_err(|e| ApiError::Auth(format!("cannot sign the JWT of GitHub App {app_id}: {e}")))
    }

    async fn installation_id(&self, repo: &RepoRef) -> Result<u64, ApiError> {
        if let Some(id) = repo.installation_id {
            return Ok(id);
        }
        let full_name = repo.full_name();
        if let Some(id) = self
            .inner
            .installations
            .lock()
            .expect("installations lock")
            .get(&full_name)
        {
            return Ok(*id);
        }
        let jwt = self.app_jwt()?;
        let path = format!("{}/installation", repo.api_path());
        let reply = match self.call(Method::GET, &path, Some(&jwt), None).await {
            Err(err) if err.status() == Some(404) => {
                return Err(ApiError::Auth(format!(
                    "the GitHub App is not installed on {full_name} ({err})"
                )))
            }
            other => other?,
        };
        let id = reply.json::<Value>()?["id"]
            .as_u64()
            .ok_or_else(|| ApiError::Decode {
                path: path.clone(),
                message: "the installation has no numeric 'id'".into(),
            })?;
        self.inner
            .installations
            .lock()
            .expect("installations lock")
            .insert(full_name, id);
        Ok(id)
    }

    async fn installation_token(&self, installation: u64) -> Result<String, ApiError> {
        let mut tokens = self.inner.installation_tokens.lock().await;
        if let Some(cached) = tokens.get(&installation) {
            if unix_now() < cached.refresh_at {
                return Ok(cached.token.clone());
            }
        }
        let jwt = self.app_jwt()?;
        let path = format!("/app/installations/{installation}/access_tokens");
        let reply = self.call(Method::POST, &path, Some(&jwt), None).await?;
        let answer: Value = reply.json()?;
        let decode_error = |message: &str| ApiError::Decode {
            path: path.clone(),
            message: message.to_owned(),
        };
        let token = answer["token"]
            .as_str()
            .ok_or_else(|| decode_error("the installation token answer has no 'token'"))?
            .to_owned();
        let expires_at = answer["expires_at"]
            .as_str()
            .and_then(parse_rfc3339)
            .ok_or_else(|| {
                decode_error("the installation token answer has no valid 'expires_at'")
            })?;
        tracing::debug!(
            installation,
            expires_at,
            "got a GitHub App installation token"
        );
        tokens.insert(
            installation,
            CachedToken {
                token: token.clone(),
                refresh_at: expires_at - TOKEN_REFRESH_MARGIN.as_secs() as i64,
                granted: TokenPermissions::from_json(&answer["permissions"]),
            },
        );
        Ok(token)
    }

    /// One API call with retries of transient failures; `path` is below the API root.
    async fn call(
        &self,
        method: Method,
        path: &str,
        bearer: Option<&str>,
        body: Option<&Value>,
    ) -> Result<Reply, ApiError> {
        let inner = &self.inner;
        let url = format!("{}{path}", inner.base_url);
        let attempts = inner.retry.attempts.max(1);
        let mut attempt = 1;
        loop {
            let (err, headers) = match self.try_call(&method, &url, path, bearer, body).await {
                Ok(reply) => return Ok(reply),
                Err(failure) => failure,
            };
            if !err.is_transient() || attempt >= attempts {
                return Err(err);
            }
            let wait = match requested_wait(&headers) {
                Some(wait) if wait > inner.retry.max_delay => {
                    tracing::warn!(%err, ?wait, "GitHub asks to wait longer than the retry policy allows");
                    return Err(err);
                }
                Some(wait) => wait,
                None => backoff(&inner.retry, attempt),
            };
            tracing::debug!(%err, attempt, ?wait, "retrying a transient GitHub API failure");
            tokio::time::sleep(wait).await;
            attempt += 1;
        }
    }

    /// One try of an API call: the reply, or the error with the headers
    /// that came with it (they may say how long to wait).
    async fn try_call(
        &self,
        method: &Method,
        url: &str,
        path: &str,
        bearer: Option<&str>,
        body: Option<&Value>,
    ) -> Result<Reply, (ApiError, HeaderMap)> {
        let inner = &self.inner;
        let mut request = inner
            .http
            .request(method.clone(), url)
            .header(ACCEPT, "application/vnd.github+json")
            .header("X-GitHub-Api-Version", API_VERSION)
            .header(USER_AGENT, &inner.user_agent);
        if let Some(token) = bearer {
            request = request.header(AUTHORIZATION, format!("Bearer {token}"));
        }
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = match request.send().await {
            Ok(response) => response,
            Err(e) => return Err((transport_error(method, path, &e), HeaderMap::new())),
        };
        let status = response.status();
        let headers = response.headers().clone();
        match response.bytes().await {
            Ok(bytes) if status.is_success() => Ok(Reply {
                headers,
                body: bytes.to_vec(),
                path: path.to_owned(),
            }),
            Ok(bytes) => Err((
                ApiError::Http {
                    method: method.to_string(),
                    path: path.to_owned(),
                    status: status.as_u16(),
                    message: error_message(status, &bytes),
                },
                headers,
            )),
            Err(e) => Err((transport_error(method, path, &e), headers)),
        }
    }
}

fn transport_error(method: &Method, path: &str, err: &reqwest::Error) -> ApiError {
    let mut message = err.to_string();
    let mut source = std::error::Error::source(err);
    while let Some(cause) = source {
        message.push_str(": ");
        message.push_str(&cause.to_string());
        source = cause.source();
    }
    ApiError::Transport {
        method: method.to_string(),
        path: path.to_owned(),
        message,
    }
}

/// GitHub's `message` and validation `errors`, or the start of a non-JSON body.
fn error_message(status: reqwest::StatusCode, body: &[u8]) -> String {
    if let Ok(answer) = serde_json::from_slice::<Value>(body) {
        if let Some(message) = answer["message"].as_str() {
            let details: Vec<String> = answer["errors"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|e| match e {
                    Value::String(s) => s.clone(),
                    _ => e["message"].as_str().map(str::to_owned).unwrap_or_else(|| {
                        let field = e["field"].as_str().unwrap_or("?");
                        let code = e["code"].as_str().unwrap_or("invalid");
                        format!("{field} {code}")
                    }),
                })
                .collect();
            return if details.is_empty() {
                message.to_owned()
            } else {
                format!("{message} ({})", details.join("; "))
            };
        }
    }
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    if text.is_empty() {
        status.canonical_reason().unwrap_or("no message").to_owned()
    } else {
        truncate_chars(text, 200)
    }
}

/// The wait GitHub asks for: `Retry-After` seconds, or until `x-ratelimit-reset` when
/// `x-ratelimit-remaining` is 0.
fn requested_wait(headers: &HeaderMap) -> Option<Duration> {
    let header = |name: &str| headers.get(name)?.to_str().ok().map(str::trim);
    if let Some(seconds) = header("retry-after").and_then(|v| v.parse::<u64>().ok()) {
        return Some(Duration::from_secs(seconds));
    }
    if header("x-ratelimit-remaining") == Some("0") {
        let reset = header("x-ratelimit-reset")?.parse::<i64>().ok()?;
        return Some(Duration::from_secs((reset - unix_now()).max(0) as u64));
    }
    None
}

/// Exponential backoff with jitter: between half and all of `first_delay * 2^(attempt-1)`,
/// capped at `max_delay`.
fn backoff(policy: &RetryPolicy, attempt: u32) -> Duration {
    let factor = 1u32 << (attempt - 1).min(20);
    let full = policy
        .first_delay
        .saturating_mul(factor)
        .min(policy.max_delay);
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u32(attempt);
    let fraction = (hasher.finish() % 1000) as f64 / 1000.0;
    full.mul_f64(0.5 + fraction / 2.0)
}

/// The `rel="next"` URL of a `Link` header.
fn next_link(headers: &HeaderMap) -> Option<String> {
    let link = headers.get("link")?.to_str().ok()?;
    link.split(',').find_map(|part| {
        let (target, params) = part.split_once(';')?;
        let target = target.trim().strip_prefix('<')?.strip_suffix('>')?;
        let is_next = params.split(';').any(|param| {
            param.trim().strip_prefix("rel=").is_some_and(|rel| {
                rel.trim_matches('"')
                    .split_whitespace()
                    .any(|r| r == "next")
            })
        });
        is_next.then(|| target.to_owned())
    })
}

/// `scheme://authority/` of an http(s) URL.
fn origin_of(url: &str) -> Option<String> {
    let (scheme, rest) = url.split_once("://")?;
    if scheme != "http" && scheme != "https" {
        return None;
    }
    let authority = rest.split('/').next().filter(|a| !a.is_empty())?;
    Some(format!("{scheme}://{authority}/"))
}

fn comment_id(reply: &Reply) -> Result<u64, ApiError> {
    reply.json::<Value>()?["id"]
        .as_u64()
        .ok_or_else(|| ApiError::Decode {
            path: reply.path.clone(),
            message: "the comment has no numeric 'id'".into(),
        })
}

/// The text of a contents API file answer (`encoding: base64`).
fn decode_file(reply: &Reply) -> Result<String, ApiError> {
    let answer: Value = reply.json()?;
    let fail = |message: String| ApiError::Decode {
        path: reply.path.clone(),
        message,
    };
    if answer["type"] != "file" {
        return Err(fail(format!(
            "expected a file, got type {}",
            answer["type"]
        )));
    }
    if answer["encoding"] != "base64" {
        return Err(fail(format!(
            "expected base64 content, got encoding {} (files over 1 MB are not inlined)",
            answer["encoding"]
        )));
    }
    let content: String = answer["content"]
        .as_str()
        .unwrap_or("")
        .chars()
        .filter(|c| !c.is_ascii_whitespace())
        .collect();
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(content)
        .map_err(|e| fail(format!("invalid base64 content: {e}")))?;
    String::from_utf8(bytes).map_err(|_| fail("the file is not UTF-8 text".into()))
}

/// Percent-encodes everything but RFC 3986's unreserved characters.
pub(crate) fn encode_component(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

fn truncate_chars(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((end, _)) => {
            let cut = text[..end]
                .char_indices()
                .nth(max - 1)
                .map_or(end, |(i, _)| i);
            format!("{}…", &text[..cut])
        }
        None => text.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repo_ref_parse() {
        let repo = RepoRef::parse("octo-org/widgets", Some(3)).unwrap();
        assert_eq!(
            (repo.owner.as_str(), repo.name.as_str()),
            ("octo-org", "widgets")
        );
        assert_eq!(repo.full_name(), "octo-org/widgets");
        for bad in ["widgets", "/widgets", "octo-org/", "a/b/c", ""] {
            assert_eq!(RepoRef::parse(bad, None), None, "{bad}");
        }
    }

    #[test]
    fn link_header_next() {
        let mut headers = HeaderMap::new();
        headers.insert(
            "link",
            "<https://api.github.com/repositories/1/issues/2/comments?page=1>; rel=\"prev\", \
             <https://api.github.com/repositories/1/issues/2/comments?page=3>; rel=\"next\", \
             <https://api.github.com/repositories/1/issues/2/comments?page=5>; rel=\"last\""
                .parse()
                .unwrap(),
        );
        assert_eq!(
            next_link(&headers).as_deref(),
            Some("https://api.github.com/repositories/1/issues/2/comments?page=3")
        );
        headers.insert(
            "link",
            "<https://x/?page=1>; rel=\"first\"".parse().unwrap(),
        );
        assert_eq!(next_link(&headers), None);
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        let policy = RetryPolicy {
            attempts: 10,
            first_delay: Duration::from_millis(100),
            max_delay: Duration::from_millis(1000),
        };
        let first = backoff(&policy, 1);
        assert!(first >= Duration::from_millis(50) && first <= Duration::from_millis(100));
        let third = backoff(&policy, 3);
        assert!(third >= Duration::from_millis(200) && third <= Duration::from_millis(400));
        assert!(backoff(&policy, 9) <= Duration::from_millis(1000));
        assert!(backoff(&policy, 9) >= Duration::from_millis(500));
    }

    #[test]
    fn waits_github_asks_for() {
        let mut headers = HeaderMap::new();
        assert_eq!(requested_wait(&headers), None);
        headers.insert("x-ratelimit-remaining", "0".parse().unwrap());
        headers.insert(
            "x-ratelimit-reset",
            (unix_now() + 20).to_string().parse().unwrap(),
        );
        let wait = requested_wait(&headers).unwrap();
        assert!(wait >= Duration::from_secs(19) && wait <= Duration::from_secs(20));
        headers.insert("retry-after", "7".parse().unwrap());
        assert_eq!(requested_wait(&headers), Some(Duration::from_secs(7)));
    }

    #[test]
    fn descriptions_are_cut_to_githubs_limit() {
        let long = "é".repeat(200);
        let cut = truncate_chars(&long, MAX_STATUS_DESCRIPTION);
        assert_eq!(cut.chars().count(), MAX_STATUS_DESCRIPTION);
        assert!(cut.ends_with('…'));
        assert_eq!(truncate_chars("short", MAX_STATUS_DESCRIPTION), "short");
    }

    #[test]
    fn components_are_percent_encoded() {
        assert_eq!(encode_component("a b/c?d"), "a%20b%2Fc%3Fd");
        assert_eq!(encode_component("ci-1.yml"), "ci-1.yml");
    }

    #[test]
    fn error_messages_carry_githubs_details() {
        let body = br#"{"message":"Validation Failed","errors":[{"resource":"Status","field":"state","code":"invalid"}]}"#;
        assert_eq!(
            error_message(reqwest::StatusCode::UNPROCESSABLE_ENTITY, body),
            "Validation Failed (state invalid)"
        );
        assert_eq!(
            error_message(reqwest::StatusCode::BAD_GATEWAY, b""),
            "Bad Gateway"
        );
    }

    #[test]
    fn transient_errors() {
        let http = |status: u16, message: &str| ApiError::Http {
            method: "GET".into(),
            path: "/x".into(),
            status,
            message: message.into(),
        };
        assert!(http(502, "Server Error").is_transient());
        assert!(http(429, "Too Many Requests").is_transient());
        assert!(http(403, "You have exceeded a secondary rate limit").is_transient());
        assert!(!http(403, "Resource not accessible by integration").is_transient());
        assert!(!http(404, "Not Found").is_transient());
        assert!(!http(422, "Validation Failed").is_transient());
        assert!(!ApiError::Auth("x".into()).is_transient());
    }
}
