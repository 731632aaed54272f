//! [`VmOperations`] over a session manager: operators' VMs are sessions
//! like jobs' and count against the same limits.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use firerunner_agent_proto::message::ExecRequest;
use firerunner_vm::session::{Session, SessionManager};
use firerunner_vm::{VmBackend, VmSpec};

use crate::http::{BoxFuture, ExecInput, ExecOutput, VmInfo, VmOperations};

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

    fn create(&self) -> BoxFuture<'_, Result<VmInfo, String>> {
        Box::pin(async move {
            let mut session =
                tokio::time::timeout(Duration::from_secs(300), self.sessions.acquire(&self.spec))
                    .await
                    .map_err(|_| "no VM became free within 5 minutes".to_string())?
                    .map_err(|err| err.to_string())?;
            session.mark_executing().map_err(|err| err.to_string())?;
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
    ) -> BoxFuture<'a, Result<ExecOutput, String>> {
        Box::pin(async move {
            let client = self
                .held
                .lock()
                .expect("held VMs")
                .get(id)
                .map(|session| session.client().clone())
                .ok_or_else(|| format!("no VM {id} is held through the API"))?;
            let mut request = ExecRequest::argv(input.argv);
            request.env = input.env;
            request.cwd = input.cwd;
            request.timeout_ms = input.timeout_seconds.map(|s| s * 1000);
            let handle = client.exec(request).await.map_err(|err| err.to_string())?;
            let (stdout, stderr, status) = handle.wait().await.map_err(|err| err.to_string())?;
            Ok(ExecOutput {
                stdout: String::from_utf8_lossy(&stdout).into_owned(),
                stderr: String::from_utf8_lossy(&stderr).into_owned(),
                exit_code: status.code,
                signal: status.signal,
                duration_ms: status.duration_ms,
            })
        })
    }

    fn remove<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<(), String>> {
        Box::pin(async move {
            let mut session = self
                .held
                .lock()
                .expect("held VMs")
                .remove(id)
                .ok_or_else(|| format!("no VM {id} is held through the API"))?;
            let _ = session.mark_complete();
            self.sessions
                .release(session)
                .await
                .map_err(|err| err.to_string())
        })
    }
}
