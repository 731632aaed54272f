//! A warm pool: VMs restored from a snapshot of a booted, idle guest, kept
//! ready so a session starts in a restore's time rather than a boot's.
//!
//! The base snapshot is made once per backend, image and machine shape: boot,
//! connect to the agent, ping it, detach, [`VmInstance::snapshot`], destroy.
//! It is kept under [`PoolConfig::snapshot_dir`] in a directory named by the
//! SHA-256 of what it depends on, written under a temporary name and renamed,
//! so later processes reuse it and a crash never leaves half a snapshot.
//! When no snapshot can be made or restored the pool cold-boots instead.
//! Every restored VM gets the host's time and a fresh seed for its kernel
//! RNG ([`agent_link::refresh_restored`]): its clock otherwise resumes at the
//! moment of the snapshot, and its random bytes would repeat those of every
//! other VM restored from the same snapshot.
//!
//! Pool VMs hold a slot of the session manager's `max_vms` like any other VM.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, UNIX_EPOCH};

use firerunner_agent_proto::client::Client;
use sha2::{Digest, Sha256};
use tokio::sync::{Notify, OnceCell, OwnedSemaphorePermit, Semaphore};

use crate::agent_link;
use crate::backend::{Snapshot, VmBackend, VmError, VmInstance, VmSpec};
use crate::metrics::Metrics;
use crate::reaper;
use crate::runtime::{ProcessId, VmDir};

/// How many times a cold boot is tried before giving up (see
/// [`agent_link::boot_and_connect`]).
pub const BOOT_ATTEMPTS: u32 = 3;

/// Pause between detaching from the agent and snapshotting, so the guest
/// agent sees the host leave before its memory is saved.
const DETACH_PAUSE: Duration = Duration::from_millis(100);

/// How a pool behaves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolConfig {
    /// VMs kept ready.
    pub size: usize,
    /// Whether a VM taken from the pool is replaced in the background.
    pub refill: bool,
    /// Where base snapshots are kept, one sub-directory per backend, image
    /// and machine shape.
    pub snapshot_dir: PathBuf,
}

/// How a VM came to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VmOrigin {
    /// Booted from its image.
    Booted,
    /// Restored from the pool's base snapshot.
    Restored,
}

/// A running VM with a handshaken agent and the `max_vms` slot it occupies.
pub(crate) struct ReadyVm<B: VmBackend> {
    pub(crate) vm: B::Vm,
    pub(crate) client: Client,
    pub(crate) slot: OwnedSemaphorePermit,
    pub(crate) origin: VmOrigin,
}

impl<B: VmBackend> ReadyVm<B> {
    /// Destroys the VM, then frees its slot.
    pub(crate) async fn destroy(self) -> Result<(), VmError> {
        drop(self.client);
        let result = self.vm.destroy().await;
        drop(self.slot);
        result
    }
}

/// A VM id unique across processes: prefix, pid, process start time, counter.
pub(crate) fn new_vm_id(prefix: &str) -> String {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    let me = ProcessId::current();
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    format!("{prefix}-{}-{}-{n}", me.pid, me.start_time)
}

/// Boots a VM from its image and connects to its agent; nothing is left
/// behind when that fails.
pub(crate) async fn cold_boot<B: VmBackend>(
    backend: &B,
    spec: &VmSpec,
    root: &Path,
    metrics: &Metrics,
) -> Result<(B::Vm, Client), VmError> {
    let id = new_vm_id("vm");
    let started = Instant::now();
    match agent_link::boot_and_connect(backend, spec, root, &id, BOOT_ATTEMPTS).await {
        Ok(started_vm) => {
            metrics.record_boot(started.elapsed());
            Ok(started_vm)
        }
        Err(err) => {
            metrics.record_start_failure();
            remove_leftovers(root, &id);
            Err(err)
        }
    }
}

/// Restores a VM from `snapshot`, connects to its agent, sets its clock and
/// seeds its RNG;
/// nothing is left behind when that fails.
async fn restore<B: VmBackend>(
    backend: &B,
    snapshot: &Snapshot,
    spec: &VmSpec,
    root: &Path,
    metrics: &Metrics,
) -> Result<(B::Vm, Client), VmError> {
    let id = new_vm_id("vm");
    let started = Instant::now();
    let dir = VmDir::create(root, &id)?;
    let watched = dir.clone();
    let vm = match backend.restore(snapshot, spec, dir).await {
        Ok(vm) => vm,
        Err(err) => {
            metrics.record_start_failure();
            remove_leftovers(root, &id);
            return Err(agent_link::removed_or(err, &watched));
        }
    };
    let connected = async {
        let client = agent_link::connect(&vm, spec.boot_timeout).await?;
        agent_link::refresh_restored(&client).await?;
        Ok::<_, VmError>(client)
    }
    .await;
    match connected {
        Ok(client) => {
            metrics.record_restore(started.elapsed());
            Ok((vm, client))
        }
        Err(err) => {
            metrics.record_start_failure();
            let err = agent_link::removed_or(err, &watched);
            let _ = vm.destroy().await;
            remove_leftovers(root, &id);
            Err(err)
        }
    }
}

/// Frees whatever a failed start left under `<root>/vms/<id>`.
fn remove_leftovers(root: &Path, id: &str) {
    if let Some(dir) = VmDir::open(root.join("vms").join(id)) {
        let _ = reaper::destroy_dir(dir);
    }
}

/// Whether two specs describe the same machine (image, vCPUs, memory, network).
pub fn same_machine(a: &VmSpec, b: &VmSpec) -> bool {
    a.image == b.image
        && a.vcpus == b.vcpus
        && a.memory_mib == b.memory_mib
        && a.network == b.network
}

/// The name of the base snapshot for `spec` under `backend`: the SHA-256 of
/// the backend (and its snapshot layout), the machine shape, and each image
/// file's path, size and modification time (a rebuilt image invalidates the
/// snapshot).
pub fn snapshot_key<B: VmBackend>(backend: &B, spec: &VmSpec) -> String {
    let mut hash = Sha256::new();
    let image = &spec.image;
    hash.update(format!(
        "{:?}\n{}\n{}\n{:?}\n{}\n",
        backend.kind(),
        spec.vcpus,
        spec.memory_mib,
        spec.network,
        image.kernel_cmdline
    ));
    if backend.kind() == crate::BackendKind::Qemu {
        // QEMU snapshots keep RAM in a file restores map (`ram` + `state`);
        // older ones (one `memory` stream) still restore, but slower, so a
        // pool makes a new one rather than reusing them.
        hash.update(b"qemu snapshot layout 2: ram, state\n");
    }
    for file in [
        Some(&image.kernel),
        Some(&image.initrd),
        image.rootfs.as_ref(),
    ]
    .into_iter()
    .flatten()
    {
        let meta = std::fs::metadata(file).ok();
        let modified = meta
            .as_ref()
            .and_then(|m| m.modified().ok())
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        let size = meta.map(|m| m.len()).unwrap_or_default();
        hash.update(format!("{}\n{size}\n{modified}\n", file.display()));
    }
    hash.finalize()
        .iter()
        .take(16)
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The mark a complete base snapshot carries (written before it is renamed
/// into place).
const COMPLETE_MARK: &str = "firerunner-snapshot";

/// Returns the base snapshot for `spec`, making it if it does not exist yet
/// (which boots one VM under `root` for the time it takes).
pub async fn base_snapshot<B: VmBackend>(
    backend: &B,
    spec: &VmSpec,
    root: &Path,
    snapshot_dir: &Path,
) -> Result<Snapshot, VmError> {
    let dir = snapshot_dir.join(snapshot_key(backend, spec));
    let snapshot = Snapshot {
        backend: backend.kind(),
        dir: dir.clone(),
        memory_mib: spec.memory_mib,
        vcpus: spec.vcpus,
    };
    if dir.join(COMPLETE_MARK).is_file() {
        return Ok(snapshot);
    }
    std::fs::create_dir_all(snapshot_dir)
        .map_err(|err| VmError::io(snapshot_dir.display().to_string(), err))?;
    let id = new_vm_id("base");
    let temporary = snapshot_dir.join(format!(".{id}.tmp"));
    let (mut vm, client) =
        agent_link::boot_and_connect(backend, spec, root, &id, BOOT_ATTEMPTS).await?;
    let saved = async {
        client.ping().await?;
        drop(client);
        tokio::time::sleep(DETACH_PAUSE).await;
        vm.snapshot(temporary.clone()).await?;
        std::fs::write(temporary.join(COMPLETE_MARK), "")
            .map_err(|err| VmError::io(temporary.display().to_string(), err))?;
        Ok::<_, VmError>(())
    }
    .await;
    let destroyed = vm.destroy().await;
    if let Err(err) = saved.and(destroyed) {
        let _ = std::fs::remove_dir_all(&temporary);
        return Err(err);
    }
    if std::fs::rename(&temporary, &dir).is_err() {
        // Another process put its snapshot in place first: use that one.
        let _ = std::fs::remove_dir_all(&temporary);
        if !dir.join(COMPLETE_MARK).is_file() {
            return Err(VmError::BadSnapshot(dir, "cannot be put in place".into()));
        }
    }
    Ok(snapshot)
}

/// Removes the half-written base snapshots of processes that died while
/// making them (`.<base id>.tmp` directories, whose id names the process);
/// returns what was removed.
pub fn remove_abandoned_snapshots(snapshot_dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(snapshot_dir) else {
        return Vec::new();
    };
    let mut removed = Vec::new();
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(maker) = name
            .strip_prefix(".base-")
            .and_then(|rest| rest.strip_suffix(".tmp"))
            .and_then(|id| {
                let mut parts = id.split('-');
                Some(ProcessId {
                    pid: parts.next()?.parse().ok()?,
                    start_time: parts.next()?.parse().ok()?,
                })
            })
        else {
            continue;
        };
        if !maker.is_alive() && std::fs::remove_dir_all(entry.path()).is_ok() {
            removed.push(entry.path());
        }
    }
    removed
}

struct PoolState<B: VmBackend> {
    ready: VecDeque<ReadyVm<B>>,
    /// Fill tasks waiting for a `max_vms` slot.
    waiting: usize,
    /// Fill tasks holding a slot and starting a VM.
    starting: usize,
    closed: bool,
    last_error: Option<String>,
}

struct Shared<B: VmBackend> {
    backend: Arc<B>,
    spec: VmSpec,
    root: PathBuf,
    config: PoolConfig,
    vm_slots: Arc<Semaphore>,
    metrics: Arc<Metrics>,
    state: Mutex<PoolState<B>>,
    changed: Notify,
    /// The base snapshot, or why there is none (then the pool cold-boots).
    base: OnceCell<Result<Snapshot, String>>,
}

impl<B: VmBackend> Drop for Shared<B> {
    /// A pool dropped without [`WarmPool::shutdown`] still frees its ready
    /// VMs (no fill task is left once the last reference goes).
    fn drop(&mut self) {
        let state = self.state.get_mut().expect("pool state");
        for ready in state.ready.drain(..) {
            let dir = ready.vm.dir().clone();
            drop(ready);
            let _ = reaper::destroy_dir(dir);
        }
    }
}

/// A pool of ready VMs for one spec.
pub struct WarmPool<B: VmBackend> {
    shared: Arc<Shared<B>>,
}

impl<B: VmBackend> Clone for WarmPool<B> {
    fn clone(&self) -> Self {
        Self {
            shared: self.shared.clone(),
        }
    }
}

impl<B: VmBackend> WarmPool<B> {
    /// Starts filling a pool (needs a tokio runtime); VMs take slots from `vm_slots`.
    pub(crate) fn start(
        backend: Arc<B>,
        spec: VmSpec,
        root: PathBuf,
        config: PoolConfig,
        vm_slots: Arc<Semaphore>,
        metrics: Arc<Metrics>,
    ) -> Self {
        let pool = Self {
            shared: Arc::new(Shared {
                backend,
                spec,
                root,
                config,
                vm_slots,
                metrics,
                state: Mutex::new(PoolState {
                    ready: VecDeque::new(),
                    waiting: 0,
                    starting: 0,
                    closed: false,
                    last_error: None,
                }),
                changed: Notify::new(),
                base: OnceCell::new(),
            }),
        };
        pool.fill();
        pool
    }

    /// The spec this pool's VMs are made from.
    pub fn spec(&self) -> &VmSpec {
        &self.shared.spec
    }

    /// Whether this pool's VMs fit `spec`.
    pub fn serves(&self, spec: &VmSpec) -> bool {
        same_machine(&self.shared.spec, spec)
    }

    /// VMs ready to be taken now.
    pub fn ready(&self) -> usize {
        self.lock().ready.len()
    }

    /// The base snapshot, or why there is none and the pool cold-boots;
    /// `None` until the first VM is started.
    pub fn snapshot(&self) -> Option<Result<Snapshot, String>> {
        self.shared.base.get().cloned()
    }

    /// Why the last VM could not be started, if one failed.
    pub fn last_error(&self) -> Option<String> {
        self.lock().last_error.clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, PoolState<B>> {
        self.shared.state.lock().expect("pool state")
    }

    /// Takes a ready VM if there is one (and starts its replacement).
    pub(crate) fn take(&self) -> Option<ReadyVm<B>> {
        let taken = self.lock().ready.pop_front();
        if taken.is_some() {
            self.shared.metrics.set_pool_ready(self.ready());
            if self.shared.config.refill {
                self.fill();
            }
        }
        taken
    }

    /// Takes a ready VM, waiting for one while the pool is starting VMs;
    /// `None` when it has none ready and none coming.
    pub(crate) async fn take_or_wait(&self) -> Option<ReadyVm<B>> {
        loop {
            let changed = self.shared.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            if let Some(vm) = self.take() {
                return Some(vm);
            }
            {
                let state = self.lock();
                if state.waiting + state.starting == 0 {
                    return None;
                }
            }
            changed.await;
        }
    }

    /// Starts fill tasks until ready, waiting and starting VMs reach the pool size.
    fn fill(&self) {
        let mut state = self.lock();
        while !state.closed
            && state.ready.len() + state.waiting + state.starting < self.shared.config.size
        {
            state.waiting += 1;
            tokio::spawn(fill_one(self.shared.clone()));
        }
    }

    /// Stops refilling, waits for VMs being started and destroys every ready VM.
    pub async fn shutdown(&self) {
        loop {
            let changed = self.shared.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            let ready: Vec<ReadyVm<B>> = {
                let mut state = self.lock();
                state.closed = true;
                if state.starting > 0 {
                    Vec::new()
                } else {
                    state.ready.drain(..).collect()
                }
            };
            let still_starting = self.lock().starting > 0;
            for vm in ready {
                let _ = vm.destroy().await;
            }
            if !still_starting {
                self.shared.metrics.set_pool_ready(0);
                return;
            }
            changed.await;
        }
    }
}

/// Starts one VM for the pool: restored from the base snapshot when there is
/// one, else booted.
async fn fill_one<B: VmBackend>(shared: Arc<Shared<B>>) {
    let slot = shared.vm_slots.clone().acquire_owned().await;
    {
        let mut state = shared.state.lock().expect("pool state");
        state.waiting -= 1;
        if state.closed || slot.is_err() {
            drop(state);
            shared.changed.notify_waiters();
            return;
        }
        state.starting += 1;
    }
    let slot = slot.expect("checked above");
    let result = start_vm(&shared, slot).await;
    let leftover = {
        let mut state = shared.state.lock().expect("pool state");
        state.starting -= 1;
        match result {
            Ok(vm) if !state.closed => {
                state.ready.push_back(vm);
                shared.metrics.set_pool_ready(state.ready.len());
                None
            }
            Ok(vm) => Some(vm),
            Err(err) => {
                state.last_error = Some(err.to_string());
                None
            }
        }
    };
    if let Some(vm) = leftover {
        let _ = vm.destroy().await;
    }
    shared.changed.notify_waiters();
}

async fn start_vm<B: VmBackend>(
    shared: &Shared<B>,
    slot: OwnedSemaphorePermit,
) -> Result<ReadyVm<B>, VmError> {
    let (backend, spec, root) = (&*shared.backend, &shared.spec, &shared.root);
    let base = shared
        .base
        .get_or_init(|| async {
            base_snapshot(backend, spec, root, &shared.config.snapshot_dir)
                .await
                .map_err(|err| err.to_string())
        })
        .await;
    if let Ok(snapshot) = base {
        match restore(backend, snapshot, spec, root, &shared.metrics).await {
            Ok((vm, client)) => {
                return Ok(ReadyVm {
                    vm,
                    client,
                    slot,
                    origin: VmOrigin::Restored,
                })
            }
            Err(err) => shared.state.lock().expect("pool state").last_error = Some(err.to_string()),
        }
    }
    let (vm, client) = cold_boot(backend, spec, root, &shared.metrics).await?;
    Ok(ReadyVm {
        vm,
        client,
        slot,
        origin: VmOrigin::Booted,
    })
}
