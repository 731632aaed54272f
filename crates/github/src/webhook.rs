//! Webhook deliveries: signature verification and typed parsing of the events firerunner acts on.

use std::fmt;

use hmac::{Hmac, KeyInit, Mac};
use serde::Deserialize;
use serde_json::Value;
use sha2::Sha256;

/// Why a delivery's `X-Hub-Signature-256` header does not prove the body came from GitHub.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    /// The delivery carries no `X-Hub-Signature-256` header.
    #[error("the X-Hub-Signature-256 header is missing")]
    Missing,
    /// The header is not `sha256=` followed by 64 hexadecimal digits.
    #[error("the X-Hub-Signature-256 header is not of the form sha256=<64 hex digits>")]
    Malformed,
    /// The header is well formed but the body's HMAC with the secret differs.
    #[error("the X-Hub-Signature-256 signature does not match the body and the webhook secret")]
    Mismatch,
}

/// Checks the `X-Hub-Signature-256` header (`sha256=<hex>`) of a delivery against the HMAC-SHA256
/// of `body` keyed with the webhook `secret`, in constant time.
pub fn verify_signature(
    secret: &[u8],
    body: &[u8],
    header: Option<&str>,
) -> Result<(), SignatureError> {
    let header = header.ok_or(SignatureError::Missing)?.trim();
    let digest_hex = header
        .strip_prefix("sha256=")
        .ok_or(SignatureError::Malformed)?;
    let digest = hex::decode(digest_hex).map_err(|_| SignatureError::Malformed)?;
    if digest.len() != 32 {
        return Err(SignatureError::Malformed);
    }
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC accepts keys of any length");
    mac.update(body);
    mac.verify_slice(&digest)
        .map_err(|_| SignatureError::Mismatch)
}

/// A webhook payload that is not valid JSON or lacks a field firerunner needs.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct PayloadError {
    /// The event name from `X-GitHub-Event`.
    pub event: String,
    /// The JSON path of the offending field (`pull_request.head.sha`); empty for invalid JSON.
    pub path: String,
    /// What is wrong there (for invalid JSON, with its line and column).
    pub message: String,
}

impl fmt::Display for PayloadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            write!(f, "{} payload: {}", self.event, self.message)
        } else {
            write!(
                f,
                "{} payload: field {}: {}",
                self.event, self.path, self.message
            )
        }
    }
}

/// The repository a webhook event is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Repository {
    /// GitHub's numeric repository id.
    pub id: u64,
    /// `owner/name`.
    pub full_name: String,
    /// The repository name without its owner.
    pub name: String,
    /// The login of the owning user or organization.
    pub owner_login: String,
    /// The HTTPS clone URL (empty when the payload gives none).
    pub clone_url: String,
    /// The default branch name (empty when the payload gives none).
    pub default_branch: String,
    /// Whether the repository is private.
    pub private: bool,
}

/// One commit of a push.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushCommit {
    /// The commit SHA.
    pub id: String,
    /// The full commit message.
    pub message: String,
    /// Paths the commit adds.
    pub added: Vec<String>,
    /// Paths the commit removes.
    pub removed: Vec<String>,
    /// Paths the commit modifies.
    pub modified: Vec<String>,
}

/// A `push` event: commits pushed to a branch or tag, or a ref created or deleted.
#[derive(Debug, Clone, PartialEq)]
pub struct PushEvent {
    /// The full ref pushed (`refs/heads/main`, `refs/tags/v1`).
    pub git_ref: String,
    /// The ref's SHA before the push (all zeros when the push created it).
    pub before: String,
    /// The ref's SHA after the push (all zeros when the push deleted it).
    pub after: String,
    /// Whether the push created the ref.
    pub created: bool,
    /// Whether the push deleted the ref.
    pub deleted: bool,
    /// Whether the push was forced.
    pub forced: bool,
    /// The ref a pushed tag points into (`refs/heads/main`), when GitHub gives it.
    pub base_ref: Option<String>,
    /// The pushed commits, oldest first.
    pub commits: Vec<PushCommit>,
    /// The commit at the ref's new head; `None` when the ref was deleted.
    pub head_commit: Option<PushCommit>,
    /// The repository pushed to.
    pub repository: Repository,
    /// The name of the user who pushed.
    pub pusher_name: String,
    /// The whole payload.
    pub payload: Value,
}

/// A `pull_request` event.
#[derive(Debug, Clone, PartialEq)]
pub struct PullRequestEvent {
    /// The activity type (`opened`, `synchronize`, `reopened`, `closed`, ...).
    pub action: String,
    /// The pull request number.
    pub number: u64,
    /// The SHA at the head of the pull request's branch.
    pub head_sha: String,
    /// The head branch name (without `refs/heads/`).
    pub head_ref: String,
    /// `owner/name` of the head repository; `None` when the fork was deleted.
    pub head_repo_full_name: Option<String>,
    /// The base branch name (without `refs/heads/`).
    pub base_ref: String,
    /// The SHA of the base branch the pull request was last compared with.
    pub base_sha: String,
    /// The pull request title.
    pub title: String,
    /// The pull request's page on GitHub.
    pub html_url: String,
    /// Whether the pull request was merged (meaningful for `closed`).
    pub merged: bool,
    /// The base repository.
    pub repository: Repository,
    /// The whole payload.
    pub payload: Value,
}

/// A `workflow_dispatch` event: a workflow run requested by hand or through the API.
#[derive(Debug, Clone, PartialEq)]
pub struct WorkflowDispatchEvent {
    /// The ref the run is for (`refs/heads/main`).
    pub git_ref: String,
    /// The path of the requested workflow file (`.github/workflows/deploy.yml`).
    pub workflow: String,
    /// The inputs given, by name.
    pub inputs: serde_json::Map<String, Value>,
    /// The repository.
    pub repository: Repository,
    /// The whole payload.
    pub payload: Value,
}

/// A `ping` event, sent when a webhook is created.
#[derive(Debug, Clone, PartialEq)]
pub struct PingEvent {
    /// A random line of GitHub zen.
    pub zen: String,
    /// The id of the webhook that pinged.
    pub hook_id: u64,
    /// The repository, for repository webhooks.
    pub repository: Option<Repository>,
    /// The whole payload.
    pub payload: Value,
}

/// A parsed webhook delivery.
#[derive(Debug, Clone, PartialEq)]
pub enum WebhookEvent {
    /// `ping`.
    Ping(PingEvent),
    /// `push`.
    Push(PushEvent),
    /// `pull_request`.
    PullRequest(PullRequestEvent),
    /// `pull_request_target`: the same payload as `pull_request`, but the run is the base
    /// branch's workflow at the base branch's commit, with the base repository's secrets and
    /// token, as on GitHub (the pull request's code runs only if the workflow checks it out).
    PullRequestTarget(PullRequestEvent),
    /// `workflow_dispatch`.
    WorkflowDispatch(WorkflowDispatchEvent),
    /// Any other event, kept as it came.
    Other {
        /// The event name from `X-GitHub-Event`.
        name: String,
        /// The whole payload.
        payload: Value,
    },
}

impl RawPing {
    fn into_event(self, payload: Value) -> PingEvent {
        PingEvent {
            zen: self.zen,
            hook_id: self.hook_id,
            repository: self.repository.map(Repository::from),
            payload,
        }
    }
}

impl RawPush {
    fn into_event(self, payload: Value) -> PushEvent {
        PushEvent {
            git_ref: self.git_ref,
            before: self.before,
            after: self.after,
            created: self.created,
            deleted: self.deleted,
            forced: self.forced,
            base_ref: self.base_ref,
            commits: self.commits.into_iter().map(PushCommit::from).collect(),
            head_commit: self.head_commit.map(PushCommit::from),
            repository: self.repository.into(),
            pusher_name: self.pusher.name,
            payload,
        }
    }
}

impl RawPullRequestEvent {
    fn into_event(self, payload: Value) -> PullRequestEvent {
        let pr = self.pull_request;
        PullRequestEvent {
            action: self.action,
            number: self.number,
            head_sha: pr.head.sha,
            head_ref: pr.head.git_ref,
            head_repo_full_name: pr.head.repo.map(|r| r.full_name),
            base_ref: pr.base.git_ref,
            base_sha: pr.base.sha,
            title: pr.title,
            html_url: pr.html_url,
            merged: pr.merged.unwrap_or(false),
            repository: self.repository.into(),
            payload,
        }
    }
}

impl RawWorkflowDispatch {
    fn into_event(self, payload: Value) -> WorkflowDispatchEvent {
        WorkflowDispatchEvent {
            git_ref: self.git_ref,
            workflow: self.workflow,
            inputs: self.inputs.unwrap_or_default(),
            repository: self.repository.into(),
            payload,
        }
    }
}

const ZERO_SHA: &str = "0000000000000000000000000000000000000000";

impl WebhookEvent {
    /// Parses a delivery's body for the event named in its `X-GitHub-Event` header.
    pub fn parse(event_name: &str, body: &[u8]) -> Result<WebhookEvent, PayloadError> {
        let payload: Value = serde_json::from_slice(body).map_err(|e| PayloadError {
            event: event_name.to_owned(),
            path: String::new(),
            message: format!("invalid JSON: {e}"),
        })?;
        Ok(match event_name {
            "ping" => {
                WebhookEvent::Ping(typed::<RawPing>(event_name, &payload)?.into_event(payload))
            }
            "push" => {
                WebhookEvent::Push(typed::<RawPush>(event_name, &payload)?.into_event(payload))
            }
            "pull_request" => WebhookEvent::PullRequest(
                typed::<RawPullRequestEvent>(event_name, &payload)?.into_event(payload),
            ),
            "pull_request_target" => WebhookEvent::PullRequestTarget(
                typed::<RawPullRequestEvent>(event_name, &payload)?.into_event(payload),
            ),
            "workflow_dispatch" => WebhookEvent::WorkflowDispatch(
                typed::<RawWorkflowDispatch>(event_name, &payload)?.into_event(payload),
            ),
            other => WebhookEvent::Other {
                name: other.to_owned(),
                payload,
            },
        })
    }

    /// The event name, as in `X-GitHub-Event`.
    pub fn name(&self) -> &str {
        match self {
            WebhookEvent::Ping(_) => "ping",
            WebhookEvent::Push(_) => "push",
            WebhookEvent::PullRequest(_) => "pull_request",
            WebhookEvent::PullRequestTarget(_) => "pull_request_target",
            WebhookEvent::WorkflowDispatch(_) => "workflow_dispatch",
            WebhookEvent::Other { name, .. } => name,
        }
    }

    /// The repository the event is about, when it has one.
    pub fn repository(&self) -> Option<&Repository> {
        match self {
            WebhookEvent::Ping(e) => e.repository.as_ref(),
            WebhookEvent::Push(e) => Some(&e.repository),
            WebhookEvent::PullRequest(e) | WebhookEvent::PullRequestTarget(e) => {
                Some(&e.repository)
            }
            WebhookEvent::WorkflowDispatch(e) => Some(&e.repository),
            WebhookEvent::Other { .. } => None,
        }
    }

    /// The GitHub App installation that delivered the event (`installation.id`), if any.
    pub fn installation_id(&self) -> Option<u64> {
        self.payload().pointer("/installation/id")?.as_u64()
    }

    /// The commit the event is about: a push's new head (`None` for a deleted ref), a pull
    /// request's head SHA, and for other events a top-level `sha` when the payload has one.
    pub fn head_sha(&self) -> Option<&str> {
        match self {
            WebhookEvent::Push(e) if e.deleted || e.after == ZERO_SHA => None,
            WebhookEvent::Push(e) => Some(&e.after),
            WebhookEvent::PullRequest(e) => Some(&e.head_sha),
            WebhookEvent::PullRequestTarget(e) => Some(&e.base_sha),
            WebhookEvent::Ping(_) => None,
            WebhookEvent::WorkflowDispatch(_) | WebhookEvent::Other { .. } => {
                self.payload().get("sha")?.as_str()
            }
        }
    }

    /// The ref a run for this event checks out, as GitHub sets `GITHUB_REF`: a push's ref, a
    /// pull request's `refs/pull/<number>/merge`, a `pull_request_target`'s base branch, a
    /// dispatch's ref.
    pub fn git_ref(&self) -> Option<String> {
        match self {
            WebhookEvent::Push(e) => Some(e.git_ref.clone()),
            WebhookEvent::PullRequest(e) => Some(format!("refs/pull/{}/merge", e.number)),
            WebhookEvent::PullRequestTarget(e) => Some(format!("refs/heads/{}", e.base_ref)),
            WebhookEvent::WorkflowDispatch(e) => Some(e.git_ref.clone()),
            WebhookEvent::Ping(_) | WebhookEvent::Other { .. } => None,
        }
    }

    /// The pull request number, for `pull_request` and `pull_request_target` events.
    pub fn pull_request_number(&self) -> Option<u64> {
        match self {
            WebhookEvent::PullRequest(e) | WebhookEvent::PullRequestTarget(e) => Some(e.number),
            _ => None,
        }
    }

    /// The whole payload as delivered.
    pub fn payload(&self) -> &Value {
        match self {
            WebhookEvent::Ping(e) => &e.payload,
            WebhookEvent::Push(e) => &e.payload,
            WebhookEvent::PullRequest(e) | WebhookEvent::PullRequestTarget(e) => &e.payload,
            WebhookEvent::WorkflowDispatch(e) => &e.payload,
            WebhookEvent::Other { payload, .. } => payload,
        }
    }

    /// The event as the workflow trigger filters take it: its name and raw payload.
    pub fn to_trigger_event(&self) -> firerunner_workflow::trigger::Event {
        firerunner_workflow::trigger::Event::new(self.name(), self.payload().clone())
    }
}

/// Deserializes `payload` into `T`, naming the JSON path of the first bad field.
fn typed<T: serde::de::DeserializeOwned>(event: &str, payload: &Value) -> Result<T, PayloadError> {
    serde_path_to_error::deserialize(payload).map_err(|err| {
        let mut path = err.path().to_string();
        if path == "." {
            path.clear();
        }
        let message = err.inner().to_string();
        if let Some(field) = message
            .strip_prefix("missing field `")
            .and_then(|rest| rest.strip_suffix('`'))
        {
            if !path.is_empty() {
                path.push('.');
            }
            path.push_str(field);
        }
        PayloadError {
            event: event.to_owned(),
            path,
            message,
        }
    })
}

#[derive(Deserialize)]
struct RawOwner {
    login: String,
}

#[derive(Deserialize)]
struct RawRepository {
    id: u64,
    full_name: String,
    name: String,
    owner: RawOwner,
    #[serde(default)]
    clone_url: Option<String>,
    #[serde(default)]
    default_branch: Option<String>,
    #[serde(default)]
    private: bool,
}

impl From<RawRepository> for Repository {
    fn from(raw: RawRepository) -> Self {
        Repository {
            id: raw.id,
            full_name: raw.full_name,
            name: raw.name,
            owner_login: raw.owner.login,
            clone_url: raw.clone_url.unwrap_or_default(),
            default_branch: raw.default_branch.unwrap_or_default(),
            private: raw.private,
        }
    }
}

#[derive(Deserialize)]
struct RawCommit {
    id: String,
    message: String,
    #[serde(default)]
    added: Vec<String>,
    #[serde(default)]
    removed: Vec<String>,
    #[serde(default)]
    modified: Vec<String>,
}

impl From<RawCommit> for PushCommit {
    fn from(raw: RawCommit) -> Self {
        PushCommit {
            id: raw.id,
            message: raw.message,
            added: raw.added,
            removed: raw.removed,
            modified: raw.modified,
        }
    }
}

#[derive(Deserialize)]
struct RawPusher {
    name: String,
}

#[derive(Deserialize)]
struct RawPush {
    #[serde(rename = "ref")]
    git_ref: String,
    before: String,
    after: String,
    #[serde(default)]
    created: bool,
    #[serde(default)]
    deleted: bool,
    #[serde(default)]
    forced: bool,
    #[serde(default)]
    base_ref: Option<String>,
    #[serde(default)]
    commits: Vec<RawCommit>,
    #[serde(default)]
    head_commit: Option<RawCommit>,
    repository: RawRepository,
    pusher: RawPusher,
}

#[derive(Deserialize)]
struct RawHeadRepo {
    full_name: String,
}

#[derive(Deserialize)]
struct RawBranch {
    #[serde(rename = "ref")]
    git_ref: String,
    sha: String,
    #[serde(default)]
    repo: Option<RawHeadRepo>,
}

#[derive(Deserialize)]
struct RawPullRequest {
    title: String,
    html_url: String,
    #[serde(default)]
    merged: Option<bool>,
    head: RawBranch,
    base: RawBranch,
}

#[derive(Deserialize)]
struct RawPullRequestEvent {
    action: String,
    number: u64,
    pull_request: RawPullRequest,
    repository: RawRepository,
}

#[derive(Deserialize)]
struct RawWorkflowDispatch {
    #[serde(rename = "ref")]
    git_ref: String,
    workflow: String,
    #[serde(default)]
    inputs: Option<serde_json::Map<String, Value>>,
    repository: RawRepository,
}

#[derive(Deserialize)]
struct RawPing {
    zen: String,
    hook_id: u64,
    #[serde(default)]
    repository: Option<RawRepository>,
}
