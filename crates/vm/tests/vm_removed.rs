//! A VM removed from outside its owner (`firerunner vm rm`) while it starts
//! stays removed: the owner's start fails at once with "removed" instead of
//! waiting for a boot timeout and starting a replacement.
//!
//! The double here is a "hypervisor" (`sleep`) whose guest never answers, so
//! the only way out of the agent wait is the VM's removal or the timeout.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use firerunner_vm::runtime::VmDirError;
use firerunner_vm::{
    agent_link, reaper, AgentEndpoint, BackendKind, GuestImage, Network, Snapshot, VmBackend,
    VmDir, VmError, VmInstance, VmSpec,
};
use tokio::process::Child;

/// Boots "VMs" that are a `sleep` process and never answer.
#[derive(Clone, Default)]
struct SilentBackend {
    boots: Arc<AtomicUsize>,
}

struct SilentVm {
    dir: VmDir,
    child: Child,
    pid: u32,
}

impl VmBackend for SilentBackend {
    type Vm = SilentVm;

    fn kind(&self) -> BackendKind {
        BackendKind::Qemu
    }

    async fn boot(&self, _spec: &VmSpec, dir: VmDir) -> Result<SilentVm, VmError> {
        self.boots.fetch_add(1, Ordering::SeqCst);
        let child = tokio::process::Command::new("sleep")
            .arg("600")
            .kill_on_drop(true)
            .spawn()
            .map_err(|source| VmError::Spawn {
                program: "sleep".into(),
                source,
            })?;
        let pid = child.id().expect("just spawned");
        dir.record_process("hypervisor", pid)?;
        Ok(SilentVm { dir, child, pid })
    }

    async fn restore(&self, _: &Snapshot, spec: &VmSpec, dir: VmDir) -> Result<SilentVm, VmError> {
        self.boot(spec, dir).await
    }
}

fn unsupported(what: &str) -> VmError {
    VmError::Api {
        api: "silent",
        request: what.into(),
        message: "not supported by this double".into(),
    }
}

impl VmInstance for SilentVm {
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
        Err(unsupported("pause"))
    }

    async fn resume(&mut self) -> Result<(), VmError> {
        Err(unsupported("resume"))
    }

    async fn snapshot(&mut self, _dest: PathBuf) -> Result<Snapshot, VmError> {
        Err(unsupported("snapshot"))
    }

    async fn destroy(mut self) -> Result<(), VmError> {
        let _ = self.child.kill().await;
        self.dir.clone().remove()?;
        Ok(())
    }
}

fn spec(boot_timeout: Duration) -> VmSpec {
    VmSpec {
        image: GuestImage {
            kernel: PathBuf::from("/nonexistent/kernel"),
            initrd: PathBuf::from("/nonexistent/initrd"),
            rootfs: None,
            kernel_cmdline: String::new(),
        },
        vcpus: 1,
        memory_mib: 64,
        network: Network::None,
        boot_timeout,
    }
}

/// Waits until the VM `id` has recorded its hypervisor: the state in which
/// an operator's `vm rm` finds a booting VM.
async fn wait_for_hypervisor(root: &Path, id: &str) -> VmDir {
    let started = Instant::now();
    loop {
        if let Some(dir) = VmDir::open(root.join("vms").join(id)) {
            if !dir.processes().is_empty() {
                return dir;
            }
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the VM never recorded its hypervisor"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Boots VM `id` in the background (3 s boot timeout, 3 attempts), as `vm run` does.
fn start_booting(
    backend: &SilentBackend,
    root: &Path,
    id: &'static str,
) -> tokio::task::JoinHandle<Result<(SilentVm, firerunner_agent_proto::Client), VmError>> {
    let (backend, root) = (backend.clone(), root.to_path_buf());
    tokio::spawn(async move {
        agent_link::boot_and_connect(&backend, &spec(Duration::from_secs(3)), &root, id, 3).await
    })
}

fn assert_removed(result: Result<impl Sized, VmError>) {
    match result {
        Err(VmError::Dir(VmDirError::Removed(_))) => {}
        Err(other) => panic!("expected a 'removed' error, got: {other}"),
        Ok(_) => panic!("expected a 'removed' error, the start succeeded"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vm_removed_by_vm_rm_while_booting_is_not_replaced() {
    let root = tempfile::tempdir().unwrap();
    let backend = SilentBackend::default();
    let boot = start_booting(&backend, root.path(), "vm-1");
    let dir = wait_for_hypervisor(root.path(), "vm-1").await;
    let removed_at = Instant::now();
    let freed = reaper::destroy_dir(dir).unwrap();
    assert_eq!(freed.killed.len(), 1, "{freed:?}");
    assert_removed(boot.await.unwrap());
    assert!(removed_at.elapsed() < Duration::from_secs(2));
    assert_eq!(backend.boots.load(Ordering::SeqCst), 1, "no second VM");
    assert!(VmDir::list(root.path()).unwrap().is_empty());
}

/// The interleaving that let a removed VM come back: `vm rm` read the
/// process list before the owner recorded its hypervisor, then deleted the
/// directory. The hypervisor lives on, the agent socket is gone, and the old
/// owner waited out the boot timeout and booted a replacement.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vm_whose_directory_vanishes_while_booting_is_not_replaced() {
    let root = tempfile::tempdir().unwrap();
    let backend = SilentBackend::default();
    let boot = start_booting(&backend, root.path(), "vm-2");
    let dir = wait_for_hypervisor(root.path(), "vm-2").await;
    let hypervisor = dir.processes()[0].1;
    std::fs::remove_dir_all(dir.path()).unwrap();
    assert_removed(boot.await.unwrap());
    assert_eq!(backend.boots.load(Ordering::SeqCst), 1, "no second VM");
    let started = Instant::now();
    while hypervisor.is_alive() {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the owner left its hypervisor running"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[test]
fn retire_renames_in_one_step_and_the_owner_sees_it() {
    let root = tempfile::tempdir().unwrap();
    let dir = VmDir::create(root.path(), "vm-3").unwrap();
    let owners_view = dir.clone();
    let retired = dir.retire().unwrap();
    assert!(owners_view.is_removed());
    assert!(retired.path().is_dir());
    assert!(retired.id().starts_with(".removing-"));
    // What the owner records after the removal fails, naming the removal.
    match owners_view.record_process("qemu", std::process::id()) {
        Err(VmDirError::Removed(id)) => assert_eq!(id, "vm-3"),
        other => panic!("expected Removed, got {other:?}"),
    }
    retired.remove().unwrap();
}
