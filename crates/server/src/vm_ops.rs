//! The VMs an operator can hold through the API ([`VmOperations`]), and
//! their implementation over a session manager: operators' VMs are
//! sessions like jobs' and count against the same limits.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Mutex;
use std::time::Duration;

use axum::http::StatusCode;
use firerunner_agent_proto::client::ClientError;
use firerunner_agent_proto::message::ExecRequest;
use firerunner_vm::session::{IllegalTransition, Session, SessionError, SessionManager};
use firerunner_vm::{VmBackend, VmSpec};
use serde::{Deserialize, Serialize};

/// How long `create` waits for a VM to become free.
const CREATE_WAIT: Duration = Duration::from_secs(300);

/// A boxed future, for the object-safe [`VmOperations`].
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A VM an operator holds, as listed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VmInfo {
    /// Its id.
    pub id: String,
    /// Who holds it: `operator` or `job`.
    pub holder: String,
}

/// A command to run in an operator's VM.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExecInput {
    /// Program and arguments.
    pub argv: Vec<String>,
    /// Extra environment.
    #[serde(default)]
    pub env: std::collections::BTreeMap<String, String>,
    /// Working directory.
    #[serde(default)]
    pub cwd: Option<String>,
    /// Kill after this many seconds.
    #[serde(default)]
    pub timeout_seconds: Option<u64>,
}

/// What a command printed and how it ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ExecOutput {
    /// Its standard output (lossy UTF-8).
    pub stdout: String,
    /// Its standard error (lossy UTF-8).
    pub stderr: String,
    /// Exit code, when it exited.
    pub exit_code: Option<i32>,
    /// Signal, when it was killed.
    pub signal: Option<i32>,
    /// Run time.
    pub duration_ms: u64,
}

/// VM operations the API offers operators (implemented over the worker's
/// session manager, so operator VMs count against the same limits).
pub trait VmOperations: Send + Sync + 'static {
    /// VMs held through the API.
    fn list(&self) -> Vec<VmInfo>;
    /// Boots (or takes from the warm pool) a VM and holds it.
    fn create(&self) -> BoxFuture<'_, Result<VmInfo, VmOpError>>;
    /// Runs a command in a held VM.
    fn exec<'a>(
        &'a self,
        id: &'a str,
        input: ExecInput,
    ) -> BoxFuture<'a, Result<ExecOutput, VmOpError>>;
    /// Destroys a held VM.
    fn remove<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<(), VmOpError>>;
}

/// Why an operator's VM operation failed.
#[derive(Debug, thiserror::Error)]
pub enum VmOpError {
    /// Every VM the limits allow is in use.
    #[error("no VM became free within {} minutes", CREATE_WAIT.as_secs() / 60)]
    Busy,
    /// The session manager could not start or release the VM.
    #[error(transparent)]
    Session(#[from] SessionError),
    /// The session was not in a state to be used.
    #[error(transparent)]
    Transition(#[from] IllegalTransition),
    /// The id names no VM held through the API.
    #[error("no VM {0} is held through the API")]
    NotHeld(String),
    /// The guest agent failed the command.
    #[error(transparent)]
    Agent(#[from] ClientError),
}

impl VmOpError {
    /// The HTTP status the API answers this error with.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::Busy | Self::Session(_) | Self::Transition(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::NotHeld(_) => StatusCode::NOT_FOUND,
            Self::Agent(_) => StatusCode::BAD_GATEWAY,
        }
    }
}

/// Operator VMs taken from a session manager.
pub struct SessionVmOperations<B: VmBackend> {
    sessions: SessionManager<B>,
    spec: VmSpec,
    held: Mutex<HashMap<String, Session<B>>>,
}

impl<B: VmBackend> SessionVmOperations<B> {
    /// Operations on VMs for `spec` from `sessions`.
    pub fn new(sessions: SessionManager<B>, spec: VmSpec) -> Self {
        Self {
            sessions,
            spec,
            held: Mutex::new(HashMap::new()),
        }
    }
}

impl<B: VmBackend> VmOperations for SessionVmOperations<B> {
    fn list(&self) -> Vec<VmInfo> {
        let mut list: Vec<VmInfo> = self
            .held
            .lock()
            .expect("held VMs")
            .keys()
            .map(|id| VmInfo {
                id: id.clone(),
                holder: "operator".into(),
            })
            .collect();
        list.sort_by(|a, b| a.id.cmp(&b.id));
        list
    }

    fn create(&self) -> BoxFuture<'_, Result<VmInfo, VmOpError>> {
        Box::pin(async move {
            let mut session = tokio::time::timeout(CREATE_WAIT, self.sessions.acquire(&self.spec))
                .await
                .map_err(|_| VmOpError::Busy)??;
            session.mark_executing()?;
            let id = session.id().to_string();
            self.held
                .lock()
                .expect("held VMs")
                .insert(id.clone(), session);
            Ok(VmInfo {
                id,
                holder: "operator".into(),
            })
        })
    }

    fn exec<'a>(
        &'a self,
        id: &'a str,
        input: ExecInput,
    ) -> BoxFuture<'a, Result<ExecOutput, VmOpError>> {
        Box::pin(async move {
            let client = self
                .held
                .lock()
                .expect("held VMs")
                .get(id)
                .map(|session| session.client().clone())
                .ok_or_else(|| VmOpError::NotHeld(id.to_string()))?;
            let mut request = ExecRequest::argv(input.argv);
            request.env = input.env;
            request.cwd = input.cwd;
            request.timeout_ms = input.timeout_seconds.map(|s| s * 1000);
            let handle = client.exec(request).await?;
            let (stdout, stderr, status) = handle.wait().await?;
            Ok(ExecOutput {
                stdout: String::from_utf8_lossy(&stdout).into_owned(),
                stderr: String::from_utf8_lossy(&stderr).into_owned(),
                exit_code: status.code,
                signal: status.signal,
                duration_ms: status.duration_ms,
            })
        })
    }

    fn remove<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<(), VmOpError>> {
        Box::pin(async move {
            let mut session = self
                .held
                .lock()
                .expect("held VMs")
                .remove(id)
                .ok_or_else(|| VmOpError::NotHeld(id.to_string()))?;
            let _ = session.mark_complete();
            Ok(self.sessions.release(session).await?)
        })
    }
}
