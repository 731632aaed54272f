//! The hypervisor abstraction: one trait, one error type, shared VM values.

use std::future::Future;
use std::path::PathBuf;
use std::time::Duration;

use crate::image::GuestImage;
use crate::runtime::{VmDir, VmDirError};

/// Which hypervisor runs a VM.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BackendKind {
    /// QEMU's `microvm` machine, under KVM or TCG.
    Qemu,
    /// Firecracker, driven through its HTTP API on a Unix socket.
    Firecracker,
}

/// A VM's network.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Network {
    /// No network device at all (the default).
    #[default]
    None,
    /// NAT'd egress: user-mode networking for QEMU, a tap device for Firecracker.
    Nat,
}

/// What to boot and with which resources.
#[derive(Debug, Clone)]
pub struct VmSpec {
    /// The guest image.
    pub image: GuestImage,
    /// Virtual CPUs.
    pub vcpus: u8,
    /// Guest memory in MiB.
    pub memory_mib: u32,
    /// Network access.
    pub network: Network,
    /// Longest wait from launch until the guest agent answers.
    pub boot_timeout: Duration,
}

/// How the host reaches the guest agent of a running VM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AgentEndpoint {
    /// A Unix socket whose byte stream is the agent's (QEMU virtio-serial port or serial line).
    Unix(PathBuf),
    /// Firecracker's vsock bridge: connect to `uds`, send `CONNECT <port>\n`, read `OK ...\n`.
    FirecrackerVsock {
        /// The Unix socket Firecracker listens on for host-initiated vsock connections.
        uds: PathBuf,
        /// The guest vsock port the agent listens on.
        port: u32,
    },
}

/// A saved, paused VM that new VMs can be restored from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    /// Which backend wrote it (snapshots are not portable between backends).
    pub backend: BackendKind,
    /// Directory holding the snapshot's files (memory, device state, disk).
    pub dir: PathBuf,
    /// Guest memory of the snapshotted VM in MiB.
    pub memory_mib: u32,
    /// vCPUs of the snapshotted VM.
    pub vcpus: u8,
}

/// Errors of the VM layer.
#[derive(Debug, thiserror::Error)]
pub enum VmError {
    /// The hypervisor binary is missing or unusable.
    #[error("{backend:?} is not available: {reason}")]
    Unavailable {
        /// The backend asked for.
        backend: BackendKind,
        /// Why it cannot run here.
        reason: String,
    },
    /// The hypervisor process could not be started.
    #[error("cannot start {program}: {source}")]
    Spawn {
        /// The program launched.
        program: String,
        /// The operating system's error.
        source: std::io::Error,
    },
    /// The guest agent did not answer in time.
    #[error(
        "the guest agent did not answer within {waited:?}; last console lines:\n{console_tail}"
    )]
    BootTimeout {
        /// How long the host waited.
        waited: Duration,
        /// The end of the guest console, to explain why.
        console_tail: String,
    },
    /// The hypervisor exited early.
    #[error("the hypervisor exited before the guest was ready ({status}); last console lines:\n{console_tail}")]
    HypervisorExited {
        /// How it exited.
        status: String,
        /// The end of the guest console, to explain why.
        console_tail: String,
    },
    /// The hypervisor's control API refused a request.
    #[error("{api} request {request} failed: {message}")]
    Api {
        /// Which control API (QMP, Firecracker HTTP).
        api: &'static str,
        /// The request sent.
        request: String,
        /// The error it answered.
        message: String,
    },
    /// The snapshot cannot be restored by this backend or is incomplete.
    #[error("snapshot {0} cannot be used: {1}")]
    BadSnapshot(PathBuf, String),
    /// Talking to the guest agent failed.
    #[error("guest agent: {0}")]
    Agent(#[from] firerunner_agent_proto::client::ClientError),
    /// The runtime directory could not be managed.
    #[error(transparent)]
    Dir(#[from] VmDirError),
    /// Any other I/O error, with what was being done.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The operating system's error.
        source: std::io::Error,
    },
}

impl VmError {
    /// Whether starting a VM again may succeed: the guest was slow or its
    /// hypervisor died, the control API or agent link failed, or the host
    /// was short of a resource. A missing hypervisor or an unusable
    /// snapshot fails the same way every time.
    pub fn is_transient(&self) -> bool {
        match self {
            Self::BootTimeout { .. }
            | Self::HypervisorExited { .. }
            | Self::Api { .. }
            | Self::Agent(_)
            | Self::Spawn { .. }
            | Self::Io { .. } => true,
            Self::Unavailable { .. } | Self::BadSnapshot(..) | Self::Dir(_) => false,
        }
    }

    /// Wraps an I/O error with what was being done.
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Self::Io {
            context: context.into(),
            source,
        }
    }
}

/// A hypervisor that boots and restores VMs.
///
/// Every file a VM uses (sockets, disks, logs, pid files) lives in the
/// [`VmDir`] it is given, which records the processes it starts so a later
/// start-up can reap them if this process dies.
pub trait VmBackend: Send + Sync + 'static {
    /// The running VM this backend hands out.
    type Vm: VmInstance;

    /// Which hypervisor this is.
    fn kind(&self) -> BackendKind;

    /// Boots a fresh VM from `spec` and returns once its agent endpoint exists
    /// (the caller connects with [`crate::agent_link::connect`], bounded by
    /// `spec.boot_timeout`).
    fn boot(
        &self,
        spec: &VmSpec,
        dir: VmDir,
    ) -> impl Future<Output = Result<Self::Vm, VmError>> + Send;

    /// Starts a new VM from `snapshot`, running where the snapshot was taken.
    fn restore(
        &self,
        snapshot: &Snapshot,
        spec: &VmSpec,
        dir: VmDir,
    ) -> impl Future<Output = Result<Self::Vm, VmError>> + Send;
}

/// A running (or paused) VM owned by the caller.
pub trait VmInstance: Send + Sync + 'static {
    /// The VM's runtime directory.
    fn dir(&self) -> &VmDir;

    /// Where the guest agent can be reached.
    fn agent_endpoint(&self) -> AgentEndpoint;

    /// The hypervisor's process id.
    fn pid(&self) -> u32;

    /// Stops the vCPUs.
    fn pause(&mut self) -> impl Future<Output = Result<(), VmError>> + Send;

    /// Resumes the vCPUs.
    fn resume(&mut self) -> impl Future<Output = Result<(), VmError>> + Send;

    /// Pauses the VM and saves it (memory, devices, disk) into `dest`, a new
    /// empty directory; the VM stays paused.
    fn snapshot(&mut self, dest: PathBuf)
        -> impl Future<Output = Result<Snapshot, VmError>> + Send;

    /// Stops the VM for good (kills the hypervisor, waits for it) and removes
    /// its runtime directory: nothing is left behind.
    fn destroy(self) -> impl Future<Output = Result<(), VmError>> + Send;
}
