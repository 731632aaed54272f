//! A test-only [`VmBackend`] whose "VMs" are the real guest agent running as
//! host processes, for testing sessions, the pool and the reaper without a
//! hypervisor.
//!
//! - boot: spawns `firerunner-agent --stdio` (built with `cargo build -p
//!   firerunner-agent`), records it in the VM directory as `proc.agent`, and
//!   relays frames between its stdin/stdout and a Unix socket `agent.sock`
//!   in the directory (the endpoint, like QEMU's virtio-serial socket).
//! - pause/resume: SIGSTOP/SIGCONT to the agent process.
//! - snapshot: pauses the agent and writes `host-agent.json` (vCPUs, memory)
//!   into the destination; a host process's memory cannot be saved, so this
//!   is the whole state.
//! - restore: checks that manifest and starts a fresh agent, as boot does.
//! - destroy: kills the agent, waits for it and removes the directory.
//!
//! The host's clock is shared with these "guests", so the relay answers
//! `SetClock` itself and records the time asked for instead of letting the
//! agent set the machine's clock.
//!
//! The backend reports itself as [`BackendKind::Qemu`], whose endpoint kind
//! it copies: the trait has no kind for test doubles.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use firerunner_agent_proto::message::{Body, Message};
use firerunner_agent_proto::{encode_frame, FrameDecoder};
use firerunner_vm::runtime::ProcessId;
use firerunner_vm::{
    AgentEndpoint, BackendKind, GuestImage, Network, Snapshot, VmBackend, VmDir, VmError,
    VmInstance, VmSpec,
};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::UnixListener;
use tokio::process::{Child, ChildStdin, ChildStdout};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

pub use firerunner_vm::testing::agent_binary;

const MANIFEST: &str = "host-agent.json";

/// A spec the double accepts (it boots no image; the paths only identify it).
pub fn spec(memory_mib: u32) -> VmSpec {
    VmSpec {
        image: GuestImage {
            kernel: PathBuf::from("/nonexistent/host-agent/kernel"),
            initrd: PathBuf::from("/nonexistent/host-agent/initrd"),
            rootfs: None,
            kernel_cmdline: String::new(),
        },
        vcpus: 1,
        memory_mib,
        network: Network::None,
        boot_timeout: Duration::from_secs(20),
    }
}

/// What the backend did, for assertions.
#[derive(Debug, Default)]
pub struct Record {
    /// Cold boots.
    pub boots: AtomicUsize,
    /// Restores.
    pub restores: AtomicUsize,
    /// Every agent process started.
    pub pids: Mutex<Vec<ProcessId>>,
    /// Times the host asked the "guests" to set their clocks to (ns since the epoch).
    pub clock_sets: Mutex<Vec<u64>>,
}

/// The double: real agent processes on the host.
#[derive(Clone)]
pub struct HostAgentBackend {
    agent: PathBuf,
    snapshots: Arc<AtomicBool>,
    /// What it did.
    pub record: Arc<Record>,
}

impl HostAgentBackend {
    /// A backend whose snapshots work.
    pub fn new() -> Self {
        Self {
            agent: agent_binary(),
            snapshots: Arc::new(AtomicBool::new(true)),
            record: Arc::default(),
        }
    }

    /// A backend whose `snapshot` always fails.
    pub fn without_snapshots() -> Self {
        let backend = Self::new();
        backend.snapshots.store(false, Ordering::SeqCst);
        backend
    }

    async fn launch(&self, spec: &VmSpec, dir: VmDir) -> Result<HostAgentVm, VmError> {
        let console = std::fs::File::create(dir.join("console.log"))
            .map_err(|err| VmError::io("console.log", err))?;
        let mut child = tokio::process::Command::new(&self.agent)
            .arg("--stdio")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(console))
            .kill_on_drop(true)
            .spawn()
            .map_err(|source| VmError::Spawn {
                program: self.agent.display().to_string(),
                source,
            })?;
        let pid = child.id().expect("just spawned");
        dir.record_process("agent", pid)?;
        if let Some(id) = ProcessId::of(pid) {
            self.record.pids.lock().unwrap().push(id);
        }
        let listener = UnixListener::bind(dir.join("agent.sock"))
            .map_err(|err| VmError::io("bind agent.sock", err))?;
        let relay = tokio::spawn(relay(
            listener,
            child.stdin.take().unwrap(),
            child.stdout.take().unwrap(),
            self.record.clone(),
        ));
        Ok(HostAgentVm {
            dir,
            snapshots: self.snapshots.load(Ordering::SeqCst),
            vcpus: spec.vcpus,
            memory_mib: spec.memory_mib,
            child,
            pid,
            relay,
        })
    }
}

impl VmBackend for HostAgentBackend {
    type Vm = HostAgentVm;

    fn kind(&self) -> BackendKind {
        BackendKind::Qemu
    }

    async fn boot(&self, spec: &VmSpec, dir: VmDir) -> Result<HostAgentVm, VmError> {
        self.record.boots.fetch_add(1, Ordering::SeqCst);
        self.launch(spec, dir).await
    }

    async fn restore(
        &self,
        snapshot: &Snapshot,
        spec: &VmSpec,
        dir: VmDir,
    ) -> Result<HostAgentVm, VmError> {
        let manifest = std::fs::read_to_string(snapshot.dir.join(MANIFEST))
            .map_err(|err| VmError::BadSnapshot(snapshot.dir.clone(), err.to_string()))?;
        let expected = manifest_text(spec.vcpus, spec.memory_mib);
        if manifest != expected {
            return Err(VmError::BadSnapshot(
                snapshot.dir.clone(),
                format!("made for {manifest}, not {expected}"),
            ));
        }
        self.record.restores.fetch_add(1, Ordering::SeqCst);
        self.launch(spec, dir).await
    }
}

fn manifest_text(vcpus: u8, memory_mib: u32) -> String {
    format!("{{\"vcpus\":{vcpus},\"memory_mib\":{memory_mib}}}")
}

/// An agent process standing in for a VM.
pub struct HostAgentVm {
    dir: VmDir,
    snapshots: bool,
    vcpus: u8,
    memory_mib: u32,
    child: Child,
    pid: u32,
    relay: JoinHandle<()>,
}

impl HostAgentVm {
    fn signal(&self, signal: libc::c_int) -> Result<(), VmError> {
        // SAFETY: kill has no memory-safety preconditions; the child is ours and not yet waited for.
        if unsafe { libc::kill(self.pid as libc::pid_t, signal) } == 0 {
            Ok(())
        } else {
            Err(VmError::io("kill", std::io::Error::last_os_error()))
        }
    }
}

impl VmInstance for HostAgentVm {
    fn dir(&self) -> &VmDir {
        &self.dir
    }

    fn agent_endpoint(&self) -> AgentEndpoint {
        AgentEndpoint::Unix(self.dir.join("agent.sock"))
    }

    fn pid(&self) -> u32 {
        self.pid
    }

    async fn pause(&mut self) -> Result<(), VmError> {
        self.signal(libc::SIGSTOP)
    }

    async fn resume(&mut self) -> Result<(), VmError> {
        self.signal(libc::SIGCONT)
    }

    async fn snapshot(&mut self, dest: PathBuf) -> Result<Snapshot, VmError> {
        if !self.snapshots {
            return Err(VmError::Api {
                api: "host-agent",
                request: "snapshot".into(),
                message: "this backend was made without snapshots".into(),
            });
        }
        self.pause().await?;
        std::fs::create_dir_all(&dest).map_err(|err| VmError::io("snapshot dir", err))?;
        std::fs::write(
            dest.join(MANIFEST),
            manifest_text(self.vcpus, self.memory_mib),
        )
        .map_err(|err| VmError::io("snapshot manifest", err))?;
        Ok(Snapshot {
            backend: BackendKind::Qemu,
            dir: dest,
            memory_mib: self.memory_mib,
            vcpus: self.vcpus,
        })
    }

    async fn destroy(mut self) -> Result<(), VmError> {
        self.relay.abort();
        let _ = self.child.kill().await;
        self.dir.clone().remove()?;
        Ok(())
    }
}

/// Relays frames between the first host connection on `listener` and the
/// agent's stdio, answering `SetClock` itself.
async fn relay(
    listener: UnixListener,
    to_agent: ChildStdin,
    from_agent: ChildStdout,
    record: Arc<Record>,
) {
    let Ok((socket, _)) = listener.accept().await else {
        return;
    };
    drop(listener);
    let (host_read, mut host_write) = socket.into_split();
    let (to_host, mut frames) = mpsc::unbounded_channel::<Vec<u8>>();
    let writer = tokio::spawn(async move {
        while let Some(frame) = frames.recv().await {
            if host_write.write_all(&frame).await.is_err() {
                break;
            }
        }
    });
    let upstream = tokio::spawn(forward_frames(from_agent, to_host.clone()));
    downstream(host_read, to_agent, to_host, record).await;
    upstream.abort();
    writer.abort();
}

async fn forward_frames(mut from: impl AsyncRead + Unpin, to: mpsc::UnboundedSender<Vec<u8>>) {
    let mut decoder = FrameDecoder::new();
    let mut buffer = vec![0u8; 64 * 1024];
    loop {
        while let Some(payload) = decoder.next_payload() {
            if to.send(encode_frame(&payload).unwrap()).is_err() {
                return;
            }
        }
        match from.read(&mut buffer).await {
            Ok(0) | Err(_) => return,
            Ok(n) => decoder.push(&buffer[..n]),
        }
    }
}

async fn downstream(
    mut from_host: impl AsyncRead + Unpin,
    mut to_agent: impl AsyncWrite + Unpin,
    to_host: mpsc::UnboundedSender<Vec<u8>>,
    record: Arc<Record>,
) {
    let mut decoder = FrameDecoder::new();
    let mut buffer = vec![0u8; 64 * 1024];
    loop {
        while let Some(payload) = decoder.next_payload() {
            if let Ok(Message {
                id,
                body: Body::SetClock { unix_ns },
            }) = Message::from_payload(&payload)
            {
                record.clock_sets.lock().unwrap().push(unix_ns);
                let _ = to_host.send(Message::new(id, Body::Done).to_frame().unwrap());
                continue;
            }
            let frame = encode_frame(&payload).unwrap();
            if to_agent.write_all(&frame).await.is_err() {
                return;
            }
        }
        match from_host.read(&mut buffer).await {
            Ok(0) | Err(_) => return,
            Ok(n) => decoder.push(&buffer[..n]),
        }
    }
}

/// Waits until `condition` holds, for at most `within`.
pub async fn eventually(within: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if condition() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    condition()
}

/// Whether `dir` has no VM directories left.
pub fn no_vm_dirs(root: &Path) -> bool {
    VmDir::list(root).unwrap().is_empty()
}
