//! Connecting to the guest agent behind an [`AgentEndpoint`].

use std::time::Duration;

use firerunner_agent_proto::client::Client;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;
use tokio::time::{sleep, timeout_at, Instant};

use crate::backend::{AgentEndpoint, VmError, VmInstance};
use crate::runtime::{ProcessId, VmDir};

/// How often a refused connection is retried while the guest boots.
const RETRY_INTERVAL: Duration = Duration::from_millis(20);

/// Connects to `vm`'s agent and completes the protocol handshake, retrying
/// until `within` has passed (the guest may still be booting).
///
/// Between attempts the VM is watched: once its hypervisor is gone (crashed,
/// or killed by an operator) or its directory was removed (`firerunner vm
/// rm`), waiting longer is pointless and the matching error comes at once.
/// The guest's console log is quoted when the guest never answers.
pub async fn connect<V: VmInstance>(vm: &V, within: Duration) -> Result<Client, VmError> {
    let deadline = Instant::now() + within;
    let endpoint = vm.agent_endpoint();
    let console = vm.dir().join("console.log");
    // Identified once: a hypervisor that is already gone cannot be watched.
    let hypervisor = ProcessId::of(vm.pid());
    let attempt = async {
        loop {
            match try_connect(&endpoint).await {
                Ok(client) => return Ok(client),
                Err(_) => {
                    if let Some(gone) = gone(vm, hypervisor, &console) {
                        return Err(gone);
                    }
                    sleep(RETRY_INTERVAL).await
                }
            }
        }
    };
    timeout_at(deadline, attempt).await.unwrap_or_else(|_| {
        Err(
            gone(vm, hypervisor, &console).unwrap_or_else(|| VmError::BootTimeout {
                waited: within,
                console_tail: crate::runtime::console_tail(&console, 20),
            }),
        )
    })
}

/// Why `vm` can no longer answer, if it cannot: its directory was removed,
/// or its hypervisor is not running.
fn gone<V: VmInstance>(
    vm: &V,
    hypervisor: Option<ProcessId>,
    console: &std::path::Path,
) -> Option<VmError> {
    if vm.dir().is_removed() {
        return Some(VmError::Dir(vm.dir().removed_error()));
    }
    if hypervisor.is_some_and(|process| process.is_alive()) {
        return None;
    }
    Some(VmError::HypervisorExited {
        status: "it is no longer running".to_string(),
        console_tail: crate::runtime::console_tail(console, 20),
    })
}

/// `err`, unless the VM directory `dir` was removed meanwhile: then that is
/// the reason, and no new attempt may replace the VM.
pub(crate) fn removed_or(err: VmError, dir: &VmDir) -> VmError {
    if dir.is_removed() {
        VmError::Dir(dir.removed_error())
    } else {
        err
    }
}

async fn try_connect(endpoint: &AgentEndpoint) -> Result<Client, VmError> {
    match endpoint {
        AgentEndpoint::Unix(path) => {
            let stream = UnixStream::connect(path)
                .await
                .map_err(|err| VmError::io(format!("connect {}", path.display()), err))?;
            Ok(Client::connect(stream).await?)
        }
        AgentEndpoint::FirecrackerVsock { uds, port } => {
            let stream = UnixStream::connect(uds)
                .await
                .map_err(|err| VmError::io(format!("connect {}", uds.display()), err))?;
            let stream = vsock_handshake(stream, *port).await?;
            Ok(Client::connect(stream).await?)
        }
    }
}

/// Firecracker's host-initiated vsock handshake: `CONNECT <port>\n`, answered
/// by `OK <host port>\n` once the guest accepts (the bridge closes the
/// connection if nothing listens on the port yet).
///
/// The reply is read a byte at a time so that no byte of the agent's own
/// stream is consumed with it.
async fn vsock_handshake(mut stream: UnixStream, port: u32) -> Result<UnixStream, VmError> {
    let request = format!("CONNECT {port}\n");
    stream
        .write_all(request.as_bytes())
        .await
        .map_err(|err| VmError::io("vsock CONNECT", err))?;
    let mut line = Vec::with_capacity(16);
    let mut byte = [0u8; 1];
    while line.last() != Some(&b'\n') && line.len() < 64 {
        let n = stream
            .read(&mut byte)
            .await
            .map_err(|err| VmError::io("vsock CONNECT reply", err))?;
        if n == 0 {
            break;
        }
        line.push(byte[0]);
    }
    if line.starts_with(b"OK ") && line.ends_with(b"\n") {
        Ok(stream)
    } else {
        Err(VmError::Api {
            api: "vsock",
            request: request.trim_end().to_string(),
            message: format!("unexpected reply {:?}", String::from_utf8_lossy(&line)),
        })
    }
}

/// Boots a VM and connects to its agent, trying up to `attempts` times: a
/// cold boot under TCG can still stall now and then, and a fresh VM is
/// cheaper than waiting longer. Only a stall is retried: a hypervisor that
/// died, or a VM removed with `vm rm`, ends the attempt with its error.
/// Failed attempts are destroyed completely.
pub async fn boot_and_connect<B: crate::VmBackend>(
    backend: &B,
    spec: &crate::VmSpec,
    root: &std::path::Path,
    id: &str,
    attempts: u32,
) -> Result<(B::Vm, Client), VmError> {
    let mut last_error = None;
    for _ in 0..attempts.max(1) {
        let dir = VmDir::create(root, id)?;
        let watched = dir.clone();
        let vm = backend
            .boot(spec, dir)
            .await
            .map_err(|err| removed_or(err, &watched))?;
        match connect(&vm, spec.boot_timeout).await {
            Ok(client) => return Ok((vm, client)),
            Err(err @ VmError::BootTimeout { .. }) if !watched.is_removed() => {
                last_error = Some(err);
                vm.destroy().await?;
            }
            Err(err) => {
                let err = removed_or(err, &watched);
                let _ = vm.destroy().await;
                return Err(err);
            }
        }
    }
    Err(last_error.expect("at least one attempt"))
}

/// Brings a guest restored from a snapshot up to date before it runs
/// anything: the host's time (its clock otherwise resumes at the snapshot's
/// moment) and a fresh seed for its kernel RNG (every VM restored from one
/// snapshot otherwise produces the same random bytes).
pub async fn refresh_restored(client: &Client) -> Result<(), VmError> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or_default();
    client.set_clock(now).await?;
    let mut seed = vec![0; 64];
    {
        use std::io::Read;
        std::fs::File::open("/dev/urandom")
            .and_then(|mut random| random.read_exact(&mut seed))
            .map_err(|err| VmError::io("/dev/urandom", err))?;
    }
    client.add_entropy(seed).await?;
    Ok(())
}
