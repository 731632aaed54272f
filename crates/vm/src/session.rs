//! Sessions: one VM and its agent connection per unit of work, under limits.
//!
//! A [`SessionManager`] hands out [`Session`]s, each owning one VM (booted,
//! or taken from a [`WarmPool`]) and its handshaken agent [`Client`]. A
//! session moves through explicit [`SessionState`]s:
//!
//! ```text
//! Created -> Executing -> Completed | Failed -> Released
//!    \------------------------------------------^
//! ```
//!
//! Any other move is refused with [`IllegalTransition`]. Releasing destroys
//! the VM (no process, socket or disk is left); a session dropped without
//! being released destroys its VM in a spawned task.
//!
//! `max_sessions` bounds the sessions alive at once and `max_vms` the VMs
//! (pool VMs included); [`SessionManager::acquire`] waits for a free slot,
//! for at most [`SessionConfig::acquire_timeout`] when one is set.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use firerunner_agent_proto::client::Client;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

use crate::backend::{VmBackend, VmError, VmInstance, VmSpec};
use crate::metrics::Metrics;
use crate::pool::{self, PoolConfig, ReadyVm, VmOrigin, WarmPool};
use crate::reaper;

pub use crate::lifecycle::{IllegalTransition, SessionState};
pub use crate::metrics::{DurationStats, MetricsSnapshot};

/// Errors of the session manager.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    /// No slot became free within the acquire timeout.
    #[error("no {slot} slot became free within {waited:?}")]
    Timeout {
        /// Which limit was reached: `session` or `VM`.
        slot: &'static str,
        /// How long the caller waited.
        waited: Duration,
    },
    /// Starting or destroying the VM failed.
    #[error(transparent)]
    Vm(#[from] VmError),
    /// A state change the life cycle does not allow.
    #[error(transparent)]
    Transition(#[from] IllegalTransition),
}

impl SessionError {
    /// Whether acquiring again may succeed (see [`VmError::is_transient`]);
    /// a wait for a free slot that timed out already waited its time.
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::Vm(err) if err.is_transient())
    }
}

/// Limits and places of a [`SessionManager`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionConfig {
    /// The runtime root VM directories are created under (see [`crate::runtime::default_root`]).
    pub root: PathBuf,
    /// Most VMs running at once, pool VMs included (at least 1).
    pub max_vms: usize,
    /// Most sessions alive at once (at least 1).
    pub max_sessions: usize,
    /// Longest wait in [`SessionManager::acquire`] for free slots; `None` waits forever.
    pub acquire_timeout: Option<Duration>,
}

struct Inner<B: VmBackend> {
    backend: Arc<B>,
    config: SessionConfig,
    session_slots: Arc<Semaphore>,
    vm_slots: Arc<Semaphore>,
    metrics: Arc<Metrics>,
    pool: Option<WarmPool<B>>,
}

/// Hands out sessions under the configured limits; cheap to clone.
pub struct SessionManager<B: VmBackend> {
    inner: Arc<Inner<B>>,
}

impl<B: VmBackend> Clone for SessionManager<B> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
        }
    }
}

impl<B: VmBackend> SessionManager<B> {
    /// A manager that boots a fresh VM for every session.
    pub fn new(backend: B, config: SessionConfig) -> Self {
        Self::build(Arc::new(backend), config, None)
    }

    /// A manager with a warm pool for `spec` (needs a tokio runtime: the pool
    /// starts filling at once). Sessions for other specs boot fresh VMs.
    pub fn with_pool(backend: B, config: SessionConfig, spec: VmSpec, pool: PoolConfig) -> Self {
        Self::build(Arc::new(backend), config, Some((spec, pool)))
    }

    fn build(backend: Arc<B>, config: SessionConfig, pool: Option<(VmSpec, PoolConfig)>) -> Self {
        let vm_slots = Arc::new(Semaphore::new(config.max_vms.max(1)));
        let metrics = Arc::new(Metrics::default());
        let pool = pool.map(|(spec, pool)| {
            WarmPool::start(
                backend.clone(),
                spec,
                config.root.clone(),
                pool,
                vm_slots.clone(),
                metrics.clone(),
            )
        });
        Self {
            inner: Arc::new(Inner {
                backend,
                session_slots: Arc::new(Semaphore::new(config.max_sessions.max(1))),
                vm_slots,
                metrics,
                pool,
                config,
            }),
        }
    }

    /// The backend VMs are started with.
    pub fn backend(&self) -> &B {
        &self.inner.backend
    }

    /// The manager's limits.
    pub fn config(&self) -> &SessionConfig {
        &self.inner.config
    }

    /// The warm pool, when there is one.
    pub fn pool(&self) -> Option<&WarmPool<B>> {
        self.inner.pool.as_ref()
    }

    /// The counters now.
    pub fn metrics(&self) -> MetricsSnapshot {
        let mut snapshot = self.inner.metrics.snapshot();
        snapshot.vms_running =
            self.inner.config.max_vms.max(1) - self.inner.vm_slots.available_permits();
        snapshot
    }

    /// A new session with a running VM for `spec`: one from the pool when it
    /// serves `spec` and has one ready or coming, else a fresh boot. Waits
    /// for a session slot and a VM (up to the acquire timeout).
    pub async fn acquire(&self, spec: &VmSpec) -> Result<Session<B>, SessionError> {
        let deadline = self
            .inner
            .config
            .acquire_timeout
            .map(|t| Instant::now() + t);
        let session_slot = bounded(
            deadline,
            "session",
            self.inner.session_slots.clone().acquire_owned(),
        )
        .await?
        .expect("the session semaphore is never closed");
        let pooled = match self.pool().filter(|pool| pool.serves(spec)) {
            Some(pool) => bounded(deadline, "VM", pool.take_or_wait()).await?,
            None => None,
        };
        let ready = match pooled {
            Some(ready) => ready,
            None => {
                let slot = bounded(deadline, "VM", self.inner.vm_slots.clone().acquire_owned())
                    .await?
                    .expect("the VM semaphore is never closed");
                self.boot(spec, slot).await?
            }
        };
        self.inner.metrics.moved(None, SessionState::Created);
        Ok(Session {
            state: SessionState::Created,
            ready: Some(ready),
            session_slot: Some(session_slot),
            metrics: self.inner.metrics.clone(),
        })
    }

    async fn boot(&self, spec: &VmSpec, slot: OwnedSemaphorePermit) -> Result<ReadyVm<B>, VmError> {
        let (vm, client) = pool::cold_boot(
            &*self.inner.backend,
            spec,
            &self.inner.config.root,
            &self.inner.metrics,
        )
        .await?;
        Ok(ReadyVm {
            vm,
            client,
            slot,
            origin: VmOrigin::Booted,
        })
    }

    /// Releases `session`: see [`Session::release`].
    pub async fn release(&self, session: Session<B>) -> Result<(), SessionError> {
        session.release().await
    }

    /// Stops the pool (if any) and destroys its ready VMs; sessions still
    /// alive are not touched.
    pub async fn shutdown(&self) {
        if let Some(pool) = &self.inner.pool {
            pool.shutdown().await;
        }
    }
}

/// Waits for `future`, until `deadline` when there is one.
async fn bounded<T>(
    deadline: Option<Instant>,
    slot: &'static str,
    future: impl std::future::Future<Output = T>,
) -> Result<T, SessionError> {
    match deadline {
        None => Ok(future.await),
        Some(deadline) => {
            let started = Instant::now();
            tokio::time::timeout_at(deadline, future)
                .await
                .map_err(|_| SessionError::Timeout {
                    slot,
                    waited: started.elapsed(),
                })
        }
    }
}

/// One VM and its agent connection for one unit of work.
///
/// Dropping a session without [`Session::release`] still destroys its VM,
/// in a task spawned on the current tokio runtime (or right away, killing
/// its recorded processes, when there is none).
pub struct Session<B: VmBackend> {
    state: SessionState,
    /// `Some` until released.
    ready: Option<ReadyVm<B>>,
    session_slot: Option<OwnedSemaphorePermit>,
    metrics: Arc<Metrics>,
}

impl<B: VmBackend> Session<B> {
    fn ready(&self) -> &ReadyVm<B> {
        self.ready
            .as_ref()
            .expect("a session holds its VM until released")
    }

    /// The session's id: its VM's id.
    pub fn id(&self) -> &str {
        self.ready().vm.dir().id()
    }

    /// Where the session is in its life.
    pub fn state(&self) -> SessionState {
        self.state
    }

    /// Whether the VM was booted or restored from the pool's snapshot.
    pub fn origin(&self) -> VmOrigin {
        self.ready().origin
    }

    /// The VM's agent.
    pub fn client(&self) -> &Client {
        &self.ready().client
    }

    /// The VM.
    pub fn vm(&self) -> &B::Vm {
        &self.ready().vm
    }

    fn move_to(&mut self, to: SessionState) -> Result<(), IllegalTransition> {
        let from = self.state;
        self.state = from.transition(to)?;
        self.metrics.moved(Some(from), to);
        Ok(())
    }

    /// Created -> Executing.
    pub fn mark_executing(&mut self) -> Result<(), IllegalTransition> {
        self.move_to(SessionState::Executing)
    }

    /// Executing -> Completed.
    pub fn mark_complete(&mut self) -> Result<(), IllegalTransition> {
        self.move_to(SessionState::Completed)
    }

    /// Executing -> Failed.
    pub fn mark_failed(&mut self) -> Result<(), IllegalTransition> {
        self.move_to(SessionState::Failed)
    }

    /// Destroys the VM and frees the session's slots. A session released
    /// while executing counts as failed first.
    pub async fn release(mut self) -> Result<(), SessionError> {
        if self.state == SessionState::Executing {
            self.move_to(SessionState::Failed)?;
        }
        self.move_to(SessionState::Released)?;
        let ready = self.ready.take().expect("held until released");
        let result = ready.destroy().await;
        self.session_slot.take();
        Ok(result?)
    }
}

impl<B: VmBackend> Drop for Session<B> {
    fn drop(&mut self) {
        let Some(ready) = self.ready.take() else {
            return;
        };
        if self.state == SessionState::Executing {
            self.metrics
                .moved(Some(SessionState::Executing), SessionState::Failed);
            self.state = SessionState::Failed;
        }
        self.metrics.moved(Some(self.state), SessionState::Released);
        self.state = SessionState::Released;
        let session_slot = self.session_slot.take();
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn(async move {
                    let _ = ready.destroy().await;
                    drop(session_slot);
                });
            }
            Err(_) => {
                let dir = ready.vm.dir().clone();
                drop(ready);
                let _ = reaper::destroy_dir(dir);
            }
        }
    }
}
