//! firerunner's link to GitHub: verifying and parsing webhook deliveries ([`webhook`]),
//! payloads of GitHub's shape for runs on a local checkout ([`local_event`]), and
//! calling GitHub's REST API ([`api`]). With the `testing` feature, `testing::MockGitHub`
//! serves the same endpoints locally for tests.
#![warn(missing_docs)]

pub mod api;
pub mod local_event;
pub mod permissions;
#[cfg(feature = "testing")]
pub mod testing;
mod time;
pub mod webhook;

pub use api::{
    ApiConfig, ApiError, Auth, CommitStatus, GitHubClient, RepoRef, RetryPolicy, StatusState,
    Variable,
};
pub use webhook::{
    verify_signature, PayloadError, PingEvent, PullRequestEvent, PushCommit, PushEvent, Repository,
    SignatureError, WebhookEvent, WorkflowDispatchEvent,
};
