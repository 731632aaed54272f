//! The Firecracker backend: one `firecracker` process per VM, optionally
//! under its jailer, driven through its HTTP API on a Unix socket.
//!
//! # Paths and snapshots
//!
//! Firecracker stores the paths of the disk and of the vsock socket inside a
//! snapshot and reopens exactly those paths on restore, relative to the new
//! process's working directory. So every VM runs with its working directory
//! set to its own *workspace* (its [`VmDir`], or the jail's root under the
//! jailer) and is handed device paths relative to it: `rootfs.ext4` and
//! `vsock.sock`. A VM restored in another workspace then opens its own fresh
//! copy of the disk and binds its own vsock socket, with no path rewriting.

pub mod api;
pub mod http;
pub mod network;
pub mod vmlinux;

use std::fmt;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::process::{Child, Command};
use tokio::time::{sleep, timeout, Instant};

use self::api::{
    ActionType, ApiClient, BootSource, Drive, MachineConfig, MemoryBackend, MemoryBackendType,
    NetworkInterface, NetworkOverride, SnapshotCreate, SnapshotLoad, SnapshotType, VmState, Vsock,
};
use self::network::{NatConfig, TapPlan, GUEST_IFACE};
use crate::backend::{
    AgentEndpoint, BackendKind, Network, Snapshot, VmBackend, VmError, VmInstance, VmSpec,
};
use crate::console::ConsoleQuota;
use crate::runtime::VmDir;

/// The guest vsock port the agent listens on unless configured otherwise.
pub const AGENT_VSOCK_PORT: u32 = 1024;
/// The guest's vsock context id.
pub const GUEST_CID: u32 = 3;
/// Kernel parameters every Firecracker guest needs: serial console, reboot
/// through the keyboard controller (which ends Firecracker), no PCI probing.
pub const FIRECRACKER_BOOT_ARGS: &str = "console=ttyS0 reboot=k panic=1 pci=off";

/// Workspace-relative name of the VM's writable root disk.
pub const ROOTFS_FILE: &str = "rootfs.ext4";
/// Workspace-relative name of the vsock bridge socket.
pub const VSOCK_FILE: &str = "vsock.sock";
/// The drive id of the root disk.
pub const ROOTFS_DRIVE: &str = "rootfs";
/// Name of the API socket in the workspace.
pub const API_SOCKET_FILE: &str = "fc.sock";
/// The guest console (Firecracker's stdout, kept within
/// [`FirecrackerBackend::console_quota`]) in the [`VmDir`].
pub use crate::console::CONSOLE_FILE;
/// Firecracker's own stderr in the [`VmDir`].
pub const STDERR_FILE: &str = "firecracker.stderr";

/// Files of a snapshot directory written by [`FirecrackerVm::snapshot`].
pub mod snapshot_files {
    /// The microVM state.
    pub const STATE: &str = "vmstate";
    /// Guest memory.
    pub const MEMORY: &str = "memory";
    /// The root disk as it was when the VM was paused.
    pub const ROOTFS: &str = super::ROOTFS_FILE;
    /// This backend's metadata (JSON).
    pub const METADATA: &str = "firerunner-firecracker.json";
}

/// Running Firecracker under its jailer (chroot, namespaces, dropped privileges).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JailerConfig {
    /// The `jailer` binary (same version as the Firecracker binary).
    pub binary: PathBuf,
    /// User the jailed Firecracker runs as.
    pub uid: u32,
    /// Group the jailed Firecracker runs as.
    pub gid: u32,
    /// Where jails are built: `<chroot_base>/<exec name>/<id>/root`.
    pub chroot_base: PathBuf,
    /// The cgroup hierarchy version passed as `--cgroup-version`.
    pub cgroup_version: u8,
    /// A network namespace to join (`--netns`), e.g. one holding the VM's tap.
    pub netns: Option<PathBuf>,
}

impl JailerConfig {
    /// A jailer at `binary` running VMs as `uid:gid` under `/srv/jailer`, cgroup v2.
    pub fn new(binary: impl Into<PathBuf>, uid: u32, gid: u32) -> Self {
        Self {
            binary: binary.into(),
            uid,
            gid,
            chroot_base: PathBuf::from("/srv/jailer"),
            cgroup_version: 2,
            netns: None,
        }
    }
}

/// The Firecracker [`VmBackend`].
#[derive(Debug, Clone)]
pub struct FirecrackerBackend {
    /// The `firecracker` binary.
    pub binary: PathBuf,
    /// Run under the jailer when set.
    pub jailer: Option<JailerConfig>,
    /// The guest vsock port the agent listens on.
    pub agent_port: u32,
    /// Where vmlinux files extracted from bzImages are cached.
    pub kernel_cache: PathBuf,
    /// Tap and NAT settings for VMs with [`Network::Nat`].
    pub nat: NatConfig,
    /// Longest wait for the API socket after launch.
    pub api_timeout: Duration,
    /// Longest wait for `InstanceStart` or `PUT /snapshot/load` to answer.
    pub start_timeout: Duration,
    /// How much of each guest's serial console the host keeps.
    pub console_quota: ConsoleQuota,
}

impl FirecrackerBackend {
    /// A backend running `binary` directly (no jailer) with default settings.
    pub fn new(binary: impl Into<PathBuf>) -> Self {
        Self {
            binary: binary.into(),
            jailer: None,
            agent_port: AGENT_VSOCK_PORT,
            kernel_cache: crate::runtime::default_root().join("kernels"),
            nat: NatConfig::default(),
            api_timeout: Duration::from_secs(10),
            start_timeout: Duration::from_secs(60),
            console_quota: ConsoleQuota::default(),
        }
    }

    /// The kernel command line for `spec`: the Firecracker parameters, then
    /// the image's own (which may override them, e.g. `panic=`), then the
    /// agent's vsock transport and, for a networked VM, its `ip=` setting.
    pub fn boot_args(&self, spec: &VmSpec, tap: Option<&TapPlan>) -> String {
        let mut args = vec![FIRECRACKER_BOOT_ARGS.to_string()];
        args.push(spec.image.kernel_cmdline.trim().to_string());
        args.push(format!("firerunner.transport=vsock:{}", self.agent_port));
        if let Some(tap) = tap {
            args.push(tap.kernel_ip_arg());
        }
        args.retain(|arg| !arg.is_empty());
        args.join(" ")
    }

    /// The configuration requests [`VmBackend::boot`] sends before
    /// `InstanceStart`, in order, for a VM whose kernel and initrd are at the
    /// given paths (as Firecracker will see them).
    pub fn boot_requests(
        &self,
        spec: &VmSpec,
        kernel: &str,
        initrd: Option<&str>,
        tap: Option<&TapPlan>,
    ) -> BootRequests {
        BootRequests {
            boot_source: BootSource {
                kernel_image_path: kernel.to_string(),
                initrd_path: initrd.map(str::to_string),
                boot_args: self.boot_args(spec, tap),
            },
            rootfs: spec.image.rootfs.as_ref().map(|_| Drive {
                drive_id: ROOTFS_DRIVE.to_string(),
                path_on_host: ROOTFS_FILE.to_string(),
                is_root_device: true,
                is_read_only: false,
            }),
            machine: MachineConfig {
                vcpu_count: spec.vcpus,
                mem_size_mib: spec.memory_mib,
            },
            vsock: Vsock {
                guest_cid: GUEST_CID,
                uds_path: VSOCK_FILE.to_string(),
            },
            network: tap.map(|tap| NetworkInterface {
                iface_id: GUEST_IFACE.to_string(),
                host_dev_name: tap.name.clone(),
                guest_mac: Some(tap.guest_mac.clone()),
            }),
        }
    }

    /// Checks that the binary runs and `/dev/kvm` is usable.
    pub async fn check(&self) -> Result<(), VmError> {
        let report = probe(&self.binary).await;
        let unavailable = |reason: String| VmError::Unavailable {
            backend: BackendKind::Firecracker,
            reason,
        };
        report.version.map_err(unavailable)?;
        report.kvm.map_err(unavailable)?;
        if let Some(jailer) = &self.jailer {
            if !jailer.binary.is_file() {
                return Err(unavailable(format!(
                    "jailer {} does not exist",
                    jailer.binary.display()
                )));
            }
        }
        Ok(())
    }

    /// The kernel as Firecracker can boot it: the file itself when it is an
    /// ELF vmlinux, else a vmlinux extracted from the bzImage into
    /// [`Self::kernel_cache`] (once per kernel file).
    pub async fn vmlinux_for(&self, kernel: &Path) -> Result<PathBuf, VmError> {
        let kernel = kernel.to_path_buf();
        let cache = self.kernel_cache.clone();
        tokio::task::spawn_blocking(move || cached_vmlinux(&kernel, &cache))
            .await
            .map_err(|err| VmError::io("extract vmlinux", io::Error::other(err.to_string())))?
    }

    fn jail_id(dir: &VmDir) -> String {
        // The jailer accepts letters, digits and hyphens only.
        dir.id().replace('_', "-")
    }

    /// Lays out the workspace for `dir`: where the process runs and finds
    /// its files.
    fn workspace(&self, dir: &VmDir) -> Result<Workspace, VmError> {
        match &self.jailer {
            None => Ok(Workspace {
                root: dir.path().to_path_buf(),
                jail: None,
                api_socket: dir.join(API_SOCKET_FILE),
            }),
            Some(jailer) => {
                let exec_name = self
                    .binary
                    .file_name()
                    .ok_or_else(|| VmError::Unavailable {
                        backend: BackendKind::Firecracker,
                        reason: format!("{} names no file", self.binary.display()),
                    })?;
                let jail = jailer.chroot_base.join(exec_name).join(Self::jail_id(dir));
                let root = jail.join("root");
                fs::create_dir_all(&root)
                    .map_err(|err| VmError::io(format!("create {}", root.display()), err))?;
                fs::write(dir.join("jail"), jail.as_os_str().as_encoded_bytes())
                    .map_err(|err| VmError::io("record the jail", err))?;
                Ok(Workspace {
                    api_socket: root.join(API_SOCKET_FILE),
                    root,
                    jail: Some(jail),
                })
            }
        }
    }

    /// Makes `source` visible to Firecracker: its own path without a jailer,
    /// a hard link (or copy) named `name` inside the jail otherwise.
    fn expose(&self, workspace: &Workspace, source: &Path, name: &str) -> Result<String, VmError> {
        match &self.jailer {
            None => Ok(absolute(source)?.to_string_lossy().into_owned()),
            Some(_) => {
                link_or_copy(source, &workspace.root.join(name))?;
                Ok(name.to_string())
            }
        }
    }

    /// Gives the jailed user the files it must write.
    fn chown_for_jailer(&self, path: &Path) -> Result<(), VmError> {
        if let Some(jailer) = &self.jailer {
            std::os::unix::fs::chown(path, Some(jailer.uid), Some(jailer.gid))
                .map_err(|err| VmError::io(format!("chown {}", path.display()), err))?;
        }
        Ok(())
    }

    /// Starts the (possibly jailed) Firecracker process and waits for its API.
    async fn launch(&self, dir: &VmDir, workspace: &Workspace) -> Result<Child, VmError> {
        let stderr = open_log(&dir.join(STDERR_FILE))?;
        let mut command = match &self.jailer {
            None => {
                let mut command = Command::new(&self.binary);
                command
                    .arg("--api-sock")
                    .arg(&workspace.api_socket)
                    .arg("--id")
                    .arg(Self::jail_id(dir))
                    .current_dir(&workspace.root);
                command
            }
            Some(jailer) => {
                let mut command = Command::new(&jailer.binary);
                command
                    .arg("--id")
                    .arg(Self::jail_id(dir))
                    .arg("--exec-file")
                    .arg(&self.binary)
                    .arg("--uid")
                    .arg(jailer.uid.to_string())
                    .arg("--gid")
                    .arg(jailer.gid.to_string())
                    .arg("--chroot-base-dir")
                    .arg(&jailer.chroot_base)
                    .arg("--cgroup-version")
                    .arg(jailer.cgroup_version.to_string());
                if let Some(netns) = &jailer.netns {
                    command.arg("--netns").arg(netns);
                }
                command
                    .arg("--")
                    .arg("--api-sock")
                    .arg(format!("/{API_SOCKET_FILE}"));
                command
            }
        };
        command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .kill_on_drop(true);
        let program = command
            .as_std()
            .get_program()
            .to_string_lossy()
            .into_owned();
        let mut child = command
            .spawn()
            .map_err(|source| VmError::Spawn { program, source })?;
        let pid = child.id().unwrap_or(0);
        dir.record_process("firecracker", pid)?;
        if let Some(stdout) = child.stdout.take() {
            let path = dir.join(CONSOLE_FILE);
            crate::console::capture(stdout, &path, self.console_quota)
                .map_err(|err| VmError::io(format!("open {}", path.display()), err))?;
        }
        if let Err(err) =
            wait_for_api(&mut child, &workspace.api_socket, self.api_timeout, dir).await
        {
            let _ = child.start_kill();
            let _ = child.wait().await;
            return Err(err);
        }
        Ok(child)
    }

    async fn boot_in(&self, spec: &VmSpec, dir: &VmDir, parts: &mut Parts) -> Result<(), VmError> {
        let workspace = self.workspace(dir)?;
        parts.workspace = Some(workspace.clone());
        let vmlinux = self.vmlinux_for(&spec.image.kernel).await?;
        let kernel = self.expose(&workspace, &vmlinux, "vmlinux")?;
        let initrd = if spec.image.initrd.as_os_str().is_empty() {
            None
        } else {
            Some(self.expose(&workspace, &spec.image.initrd, "initrd")?)
        };
        if let Some(rootfs) = &spec.image.rootfs {
            let copy = workspace.root.join(ROOTFS_FILE);
            copy_file(rootfs, &copy)?;
            self.chown_for_jailer(&copy)?;
        }
        if spec.network == Network::Nat {
            let tap = network::create_tap(&self.nat, self.jailer.as_ref().map(|j| j.uid)).await?;
            dir.record_tap(&tap.name)?;
            parts.tap = Some(tap);
            if self.nat.apply_rules {
                network::apply_nat_rules(&self.nat).await?;
            }
        }
        let requests = self.boot_requests(spec, &kernel, initrd.as_deref(), parts.tap.as_ref());
        let child = self.launch(dir, &workspace).await?;
        let api = ApiClient::new(&workspace.api_socket);
        parts.child = Some(child);
        requests.send(&api).await?;
        self.bounded_start(parts, "PUT /actions", api.action(ActionType::InstanceStart))
            .await
    }

    /// Awaits a request that starts the guest, bounded by `start_timeout`,
    /// reporting an early exit of Firecracker as such.
    async fn bounded_start(
        &self,
        parts: &mut Parts,
        request: &str,
        call: impl std::future::Future<Output = Result<(), VmError>>,
    ) -> Result<(), VmError> {
        match timeout(self.start_timeout, call).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(err)) => {
                if let Some(exited) = parts.exited().await {
                    return Err(exited);
                }
                Err(err)
            }
            Err(_) => Err(VmError::Api {
                api: api::API_NAME,
                request: request.to_string(),
                message: format!("no answer within {:?}", self.start_timeout),
            }),
        }
    }

    async fn restore_in(
        &self,
        snapshot: &Snapshot,
        dir: &VmDir,
        parts: &mut Parts,
    ) -> Result<SnapshotMetadata, VmError> {
        let metadata = SnapshotMetadata::read(&snapshot.dir)?;
        let workspace = self.workspace(dir)?;
        parts.workspace = Some(workspace.clone());
        if metadata.has_rootfs {
            let copy = workspace.root.join(ROOTFS_FILE);
            copy_file(&snapshot.dir.join(snapshot_files::ROOTFS), &copy)?;
            self.chown_for_jailer(&copy)?;
        }
        let state = self.expose(
            &workspace,
            &snapshot.dir.join(snapshot_files::STATE),
            "snapshot.vmstate",
        )?;
        let memory = self.expose(
            &workspace,
            &snapshot.dir.join(snapshot_files::MEMORY),
            "snapshot.mem",
        )?;
        let mut network_overrides = Vec::new();
        if let Some(original) = &metadata.tap {
            let tap = network::create_tap(&self.nat, self.jailer.as_ref().map(|j| j.uid)).await?;
            dir.record_tap(&tap.name)?;
            network_overrides.push(NetworkOverride {
                iface_id: GUEST_IFACE.to_string(),
                host_dev_name: tap.name.clone(),
            });
            // The guest keeps the addresses it had: give this tap the original host side.
            parts.tap = Some(TapPlan {
                slot: tap.slot,
                name: tap.name.clone(),
                ..original.clone()
            });
            if tap.host_ip != original.host_ip {
                network::readdress_tap(&tap.name, original).await?;
            }
        }
        let child = self.launch(dir, &workspace).await?;
        let api = ApiClient::new(&workspace.api_socket);
        parts.child = Some(child);
        let load = SnapshotLoad {
            snapshot_path: state,
            mem_backend: MemoryBackend {
                backend_type: MemoryBackendType::File,
                backend_path: memory,
            },
            resume_vm: true,
            network_overrides,
        };
        self.bounded_start(parts, "PUT /snapshot/load", api.load_snapshot(&load))
            .await?;
        Ok(metadata)
    }
}

/// The configuration requests sent before `InstanceStart`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootRequests {
    /// `PUT /boot-source`.
    pub boot_source: BootSource,
    /// `PUT /drives/rootfs`, when the image has a root filesystem.
    pub rootfs: Option<Drive>,
    /// `PUT /machine-config`.
    pub machine: MachineConfig,
    /// `PUT /vsock`.
    pub vsock: Vsock,
    /// `PUT /network-interfaces/eth0`, for a networked VM.
    pub network: Option<NetworkInterface>,
}

impl BootRequests {
    /// Sends every request in order, stopping at the first refusal.
    pub async fn send(&self, api: &ApiClient) -> Result<(), VmError> {
        api.put_machine_config(&self.machine).await?;
        api.put_boot_source(&self.boot_source).await?;
        if let Some(drive) = &self.rootfs {
            api.put_drive(drive).await?;
        }
        api.put_vsock(&self.vsock).await?;
        if let Some(interface) = &self.network {
            api.put_network_interface(interface).await?;
        }
        Ok(())
    }
}

/// Where one VM's Firecracker runs and finds its files.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Workspace {
    /// Firecracker's working directory (the jail's root under the jailer), on the host.
    root: PathBuf,
    /// The jail directory to remove on destroy (`<base>/<exec>/<id>`).
    jail: Option<PathBuf>,
    /// The API socket, on the host.
    api_socket: PathBuf,
}

/// What a boot or restore has acquired so far, to undo on failure.
#[derive(Debug, Default)]
struct Parts {
    workspace: Option<Workspace>,
    child: Option<Child>,
    tap: Option<TapPlan>,
    console: PathBuf,
    stderr: PathBuf,
}

impl Parts {
    fn new(dir: &VmDir) -> Self {
        Self {
            console: dir.join(CONSOLE_FILE),
            stderr: dir.join(STDERR_FILE),
            ..Self::default()
        }
    }

    /// The [`VmError::HypervisorExited`] if Firecracker has exited.
    async fn exited(&mut self) -> Option<VmError> {
        let child = self.child.as_mut()?;
        // Give a failing process a moment to finish exiting.
        let status = timeout(Duration::from_millis(200), child.wait())
            .await
            .ok()?
            .ok()?;
        Some(exited_error(status, &self.console, &self.stderr))
    }

    /// Kills the process and frees the tap and the jail.
    async fn release(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.start_kill();
            let _ = child.wait().await;
        }
        if let Some(tap) = self.tap.take() {
            let _ = network::delete_tap(&tap.name).await;
        }
        if let Some(jail) = self.workspace.take().and_then(|w| w.jail) {
            let _ = fs::remove_dir_all(jail);
        }
    }
}

/// What [`FirecrackerVm::snapshot`] records beside Firecracker's own files.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
struct SnapshotMetadata {
    memory_mib: u32,
    vcpus: u8,
    agent_port: u32,
    has_rootfs: bool,
    tap: Option<TapPlan>,
}

impl SnapshotMetadata {
    fn read(dir: &Path) -> Result<Self, VmError> {
        let bad = |why: String| VmError::BadSnapshot(dir.to_path_buf(), why);
        let path = dir.join(snapshot_files::METADATA);
        let text = fs::read(&path).map_err(|err| bad(format!("{}: {err}", path.display())))?;
        let metadata: Self = serde_json::from_slice(&text)
            .map_err(|err| bad(format!("{}: {err}", path.display())))?;
        let mut needed = vec![snapshot_files::STATE, snapshot_files::MEMORY];
        if metadata.has_rootfs {
            needed.push(snapshot_files::ROOTFS);
        }
        for name in needed {
            if !dir.join(name).is_file() {
                return Err(bad(format!("{name} is missing")));
            }
        }
        Ok(metadata)
    }
}

/// A VM run by Firecracker.
#[derive(Debug)]
pub struct FirecrackerVm {
    dir: VmDir,
    child: Child,
    pid: u32,
    api: ApiClient,
    workspace: Workspace,
    tap: Option<TapPlan>,
    agent_port: u32,
    memory_mib: u32,
    vcpus: u8,
    has_rootfs: bool,
}

impl FirecrackerVm {
    /// The client for this VM's API socket.
    pub fn api(&self) -> &ApiClient {
        &self.api
    }

    /// The tap device of a networked VM.
    pub fn tap(&self) -> Option<&TapPlan> {
        self.tap.as_ref()
    }

    /// Firecracker's working directory on the host (the VM dir, or the jail's root).
    pub fn workspace_root(&self) -> &Path {
        &self.workspace.root
    }

    /// Asks the guest to reboot (Ctrl+Alt+Del), which ends Firecracker when
    /// the guest runs with `reboot=k`.
    pub async fn send_ctrl_alt_del(&self) -> Result<(), VmError> {
        self.api.action(ActionType::SendCtrlAltDel).await
    }

    fn exited_error(&self, status: std::process::ExitStatus) -> VmError {
        exited_error(
            status,
            &self.dir.join(CONSOLE_FILE),
            &self.dir.join(STDERR_FILE),
        )
    }

    /// Fails with [`VmError::HypervisorExited`] if Firecracker is gone.
    fn ensure_running(&mut self) -> Result<(), VmError> {
        match self.child.try_wait() {
            Ok(Some(status)) => Err(self.exited_error(status)),
            _ => Ok(()),
        }
    }
}

impl VmInstance for FirecrackerVm {
    fn dir(&self) -> &VmDir {
        &self.dir
    }

    fn agent_endpoint(&self) -> AgentEndpoint {
        AgentEndpoint::FirecrackerVsock {
            uds: self.workspace.root.join(VSOCK_FILE),
            port: self.agent_port,
        }
    }

    fn pid(&self) -> u32 {
        self.pid
    }

    async fn pause(&mut self) -> Result<(), VmError> {
        self.ensure_running()?;
        self.api.set_vm_state(VmState::Paused).await
    }

    async fn resume(&mut self) -> Result<(), VmError> {
        self.ensure_running()?;
        self.api.set_vm_state(VmState::Resumed).await
    }

    async fn snapshot(&mut self, dest: PathBuf) -> Result<Snapshot, VmError> {
        self.ensure_running()?;
        create_empty_dir(&dest)?;
        self.api.set_vm_state(VmState::Paused).await?;
        // Firecracker writes inside its workspace (the jail has no other
        // view); the files then move into `dest`.
        let state = self.workspace.root.join("snapshot.vmstate.new");
        let memory = self.workspace.root.join("snapshot.mem.new");
        self.api
            .create_snapshot(&SnapshotCreate {
                snapshot_type: SnapshotType::Full,
                snapshot_path: "snapshot.vmstate.new".into(),
                mem_file_path: "snapshot.mem.new".into(),
            })
            .await?;
        move_file(&state, &dest.join(snapshot_files::STATE))?;
        move_file(&memory, &dest.join(snapshot_files::MEMORY))?;
        if self.has_rootfs {
            copy_file(
                &self.workspace.root.join(ROOTFS_FILE),
                &dest.join(snapshot_files::ROOTFS),
            )?;
        }
        let metadata = SnapshotMetadata {
            memory_mib: self.memory_mib,
            vcpus: self.vcpus,
            agent_port: self.agent_port,
            has_rootfs: self.has_rootfs,
            tap: self.tap.clone(),
        };
        let json = serde_json::to_vec_pretty(&metadata).expect("metadata serializes");
        let path = dest.join(snapshot_files::METADATA);
        fs::write(&path, json)
            .map_err(|err| VmError::io(format!("write {}", path.display()), err))?;
        Ok(Snapshot {
            backend: BackendKind::Firecracker,
            dir: dest,
            memory_mib: self.memory_mib,
            vcpus: self.vcpus,
        })
    }

    async fn destroy(mut self) -> Result<(), VmError> {
        let _ = self.child.start_kill();
        timeout(Duration::from_secs(10), self.child.wait())
            .await
            .map_err(|_| VmError::io("wait for firecracker", io::ErrorKind::TimedOut.into()))?
            .map_err(|err| VmError::io("wait for firecracker", err))?;
        if let Some(tap) = self.tap.take() {
            network::delete_tap(&tap.name).await?;
        }
        if let Some(jail) = &self.workspace.jail {
            match fs::remove_dir_all(jail) {
                Err(err) if err.kind() != io::ErrorKind::NotFound => {
                    return Err(VmError::io(format!("remove {}", jail.display()), err))
                }
                _ => {}
            }
        }
        self.dir.remove()?;
        Ok(())
    }
}

impl VmBackend for FirecrackerBackend {
    type Vm = FirecrackerVm;

    fn kind(&self) -> BackendKind {
        BackendKind::Firecracker
    }

    async fn boot(&self, spec: &VmSpec, dir: VmDir) -> Result<FirecrackerVm, VmError> {
        let mut parts = Parts::new(&dir);
        match self.boot_in(spec, &dir, &mut parts).await {
            Ok(()) => {
                let shape = SnapshotMetadata {
                    memory_mib: spec.memory_mib,
                    vcpus: spec.vcpus,
                    agent_port: self.agent_port,
                    has_rootfs: spec.image.rootfs.is_some(),
                    tap: None,
                };
                Ok(self.assemble(dir, parts, &shape))
            }
            Err(err) => {
                parts.release().await;
                let _ = dir.remove();
                Err(err)
            }
        }
    }

    async fn restore(
        &self,
        snapshot: &Snapshot,
        _spec: &VmSpec,
        dir: VmDir,
    ) -> Result<FirecrackerVm, VmError> {
        if snapshot.backend != BackendKind::Firecracker {
            return Err(VmError::BadSnapshot(
                snapshot.dir.clone(),
                format!("written by {:?}, not Firecracker", snapshot.backend),
            ));
        }
        let mut parts = Parts::new(&dir);
        match self.restore_in(snapshot, &dir, &mut parts).await {
            Ok(metadata) => Ok(self.assemble(dir, parts, &metadata)),
            Err(err) => {
                parts.release().await;
                let _ = dir.remove();
                Err(err)
            }
        }
    }
}

impl FirecrackerBackend {
    /// The VM handle once its process runs; `shape` gives its size, agent
    /// port and whether it has a disk.
    fn assemble(&self, dir: VmDir, mut parts: Parts, shape: &SnapshotMetadata) -> FirecrackerVm {
        let child = parts.child.take().expect("a started VM has a process");
        let workspace = parts
            .workspace
            .take()
            .expect("a started VM has a workspace");
        FirecrackerVm {
            pid: child.id().unwrap_or(0),
            child,
            api: ApiClient::new(&workspace.api_socket),
            workspace,
            tap: parts.tap.take(),
            agent_port: shape.agent_port,
            memory_mib: shape.memory_mib,
            vcpus: shape.vcpus,
            has_rootfs: shape.has_rootfs,
            dir,
        }
    }
}

/// What [`probe`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeReport {
    /// The binary probed.
    pub binary: PathBuf,
    /// `firecracker --version`'s first line, or why it could not run.
    pub version: Result<String, String>,
    /// Whether `/dev/kvm` opens read-write and answers `KVM_GET_API_VERSION`.
    pub kvm: Result<(), String>,
}

impl fmt::Display for ProbeReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.version {
            Ok(version) => writeln!(f, "firecracker: {} ({})", version, self.binary.display())?,
            Err(why) => writeln!(f, "firecracker: unusable: {why}")?,
        }
        match &self.kvm {
            Ok(()) => write!(f, "/dev/kvm: usable"),
            Err(why) => write!(f, "/dev/kvm: unusable: {why}"),
        }
    }
}

/// Checks that `binary` runs (`--version`) and whether `/dev/kvm` is usable.
pub async fn probe(binary: &Path) -> ProbeReport {
    let version = match timeout(
        Duration::from_secs(10),
        Command::new(binary).arg("--version").output(),
    )
    .await
    {
        Err(_) => Err("`--version` did not finish within 10 s".to_string()),
        Ok(Err(err)) => Err(format!("cannot run {}: {err}", binary.display())),
        Ok(Ok(out)) if !out.status.success() => Err(format!(
            "`--version` failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )),
        Ok(Ok(out)) => String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::trim)
            .find(|line| !line.is_empty())
            .map(str::to_string)
            .ok_or_else(|| "`--version` printed nothing".to_string()),
    };
    ProbeReport {
        binary: binary.to_path_buf(),
        version,
        kvm: kvm_usable(Path::new("/dev/kvm")),
    }
}

/// Opens `device` read-write and asks for the KVM API version (12).
pub fn kvm_usable(device: &Path) -> Result<(), String> {
    use std::os::fd::AsRawFd;
    const KVM_GET_API_VERSION: libc::c_ulong = 0xAE00;
    const KVM_API_VERSION: libc::c_int = 12;
    let file = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(device)
        .map_err(|err| format!("cannot open {}: {err}", device.display()))?;
    // SAFETY: KVM_GET_API_VERSION takes no argument and only returns an int;
    // the descriptor is valid for the duration of the call.
    let version = unsafe { libc::ioctl(file.as_raw_fd(), KVM_GET_API_VERSION as _, 0) };
    match version {
        KVM_API_VERSION => Ok(()),
        -1 => Err(format!(
            "{} is not a KVM device: {}",
            device.display(),
            io::Error::last_os_error()
        )),
        other => Err(format!(
            "KVM API version {other}, expected {KVM_API_VERSION}"
        )),
    }
}

/// Polls until the API socket accepts connections, Firecracker exits, or
/// `within` passes.
async fn wait_for_api(
    child: &mut Child,
    socket: &Path,
    within: Duration,
    dir: &VmDir,
) -> Result<(), VmError> {
    let deadline = Instant::now() + within;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Err(exited_error(
                status,
                &dir.join(CONSOLE_FILE),
                &dir.join(STDERR_FILE),
            ));
        }
        if tokio::net::UnixStream::connect(socket).await.is_ok() {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(VmError::Api {
                api: api::API_NAME,
                request: format!("connect {}", socket.display()),
                message: format!("the API socket did not appear within {within:?}"),
            });
        }
        sleep(Duration::from_millis(10)).await;
    }
}

fn exited_error(status: std::process::ExitStatus, console: &Path, stderr: &Path) -> VmError {
    let mut tail = tail_lines(console, 20);
    let errors = tail_lines(stderr, 20);
    if !errors.is_empty() {
        if !tail.is_empty() {
            tail.push('\n');
        }
        tail.push_str(&errors);
    }
    VmError::HypervisorExited {
        status: status.to_string(),
        console_tail: tail,
    }
}

/// The last `count` lines of a file (empty if unreadable).
fn tail_lines(path: &Path, count: usize) -> String {
    let text = fs::read(path).unwrap_or_default();
    let text = String::from_utf8_lossy(&text);
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(count)..].join("\n")
}

fn open_log(path: &Path) -> Result<std::fs::File, VmError> {
    fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|err| VmError::io(format!("open {}", path.display()), err))
}

fn absolute(path: &Path) -> Result<PathBuf, VmError> {
    std::path::absolute(path).map_err(|err| VmError::io(format!("resolve {}", path.display()), err))
}

/// Copies a file; on filesystems that share extents (XFS, btrfs) the kernel's
/// `copy_file_range`, which `std::fs::copy` uses, makes this a cheap reflink.
fn copy_file(from: &Path, to: &Path) -> Result<(), VmError> {
    fs::copy(from, to)
        .map(drop)
        .map_err(|err| VmError::io(format!("copy {} to {}", from.display(), to.display()), err))
}

/// Hard-links `from` to `to`, copying when they are on different filesystems.
fn link_or_copy(from: &Path, to: &Path) -> Result<(), VmError> {
    match fs::hard_link(from, to) {
        Ok(()) => Ok(()),
        Err(_) => copy_file(from, to),
    }
}

/// Renames `from` to `to`, copying across filesystems.
fn move_file(from: &Path, to: &Path) -> Result<(), VmError> {
    if fs::rename(from, to).is_ok() {
        return Ok(());
    }
    copy_file(from, to)?;
    fs::remove_file(from).map_err(|err| VmError::io(format!("remove {}", from.display()), err))
}

/// Creates `dir` if needed and checks it is empty.
fn create_empty_dir(dir: &Path) -> Result<(), VmError> {
    fs::create_dir_all(dir).map_err(|err| VmError::io(format!("create {}", dir.display()), err))?;
    let mut entries =
        fs::read_dir(dir).map_err(|err| VmError::io(format!("read {}", dir.display()), err))?;
    if entries.next().is_some() {
        return Err(VmError::io(
            format!("snapshot into {}", dir.display()),
            io::Error::new(io::ErrorKind::AlreadyExists, "the directory is not empty"),
        ));
    }
    Ok(())
}

/// Returns `kernel` if it is an ELF file, else the cached vmlinux extracted from it.
fn cached_vmlinux(kernel: &Path, cache: &Path) -> Result<PathBuf, VmError> {
    use std::io::Read;
    let context = |what: &str| format!("{what} {}", kernel.display());
    let mut head = [0u8; 4];
    let mut file = fs::File::open(kernel).map_err(|err| VmError::io(context("open"), err))?;
    let read = file
        .read(&mut head)
        .map_err(|err| VmError::io(context("read"), err))?;
    if vmlinux::is_elf(&head[..read]) {
        return Ok(kernel.to_path_buf());
    }
    let meta = file
        .metadata()
        .map_err(|err| VmError::io(context("stat"), err))?;
    let modified = meta
        .modified()
        .ok()
        .and_then(|time| time.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |since| since.as_nanos());
    let stem = kernel.file_name().map_or_else(
        || "kernel".into(),
        |name| name.to_string_lossy().into_owned(),
    );
    let cached = cache.join(format!("{stem}-{}-{modified}.vmlinux", meta.len()));
    if cached.is_file() {
        return Ok(cached);
    }
    let bzimage = fs::read(kernel).map_err(|err| VmError::io(context("read"), err))?;
    let elf = vmlinux::extract_vmlinux(&bzimage).map_err(|err| {
        VmError::io(
            context("extract vmlinux from"),
            io::Error::new(io::ErrorKind::InvalidData, err),
        )
    })?;
    fs::create_dir_all(cache)
        .map_err(|err| VmError::io(format!("create {}", cache.display()), err))?;
    let partial = cache.join(format!(".{stem}.{}.partial", std::process::id()));
    fs::write(&partial, elf)
        .map_err(|err| VmError::io(format!("write {}", partial.display()), err))?;
    fs::rename(&partial, &cached)
        .map_err(|err| VmError::io(format!("rename to {}", cached.display()), err))?;
    Ok(cached)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::GuestImage;
    use std::net::Ipv4Addr;

    fn spec(rootfs: bool, network: Network) -> VmSpec {
        VmSpec {
            image: GuestImage {
                kernel: "/images/abc/vmlinux".into(),
                initrd: "/images/abc/initrd.gz".into(),
                rootfs: rootfs.then(|| "/images/abc/rootfs.ext4".into()),
                kernel_cmdline: "quiet".into(),
            },
            vcpus: 2,
            memory_mib: 256,
            network,
            boot_timeout: Duration::from_secs(30),
        }
    }

    #[test]
    fn boot_args_add_firecracker_and_agent_parameters() {
        let backend = FirecrackerBackend::new("firecracker");
        assert_eq!(
            backend.boot_args(&spec(false, Network::None), None),
            "console=ttyS0 reboot=k panic=1 pci=off quiet firerunner.transport=vsock:1024"
        );
        let tap = TapPlan::for_slot(Ipv4Addr::new(172, 16, 0, 0), 0);
        let mut other_port = backend.clone();
        other_port.agent_port = 52;
        let mut bare = spec(false, Network::Nat);
        bare.image.kernel_cmdline = String::new();
        assert_eq!(
            other_port.boot_args(&bare, Some(&tap)),
            "console=ttyS0 reboot=k panic=1 pci=off firerunner.transport=vsock:52 \
             ip=172.16.0.2::172.16.0.1:255.255.255.252::eth0:off"
        );
    }

    #[test]
    fn boot_requests_use_workspace_relative_device_paths() {
        let backend = FirecrackerBackend::new("firecracker");
        let tap = TapPlan::for_slot(Ipv4Addr::new(172, 16, 0, 0), 3);
        let requests = backend.boot_requests(
            &spec(true, Network::Nat),
            "/cache/vmlinux",
            Some("/images/abc/initrd.gz"),
            Some(&tap),
        );
        assert_eq!(
            serde_json::to_string(&requests.rootfs).unwrap(),
            r#"{"drive_id":"rootfs","path_on_host":"rootfs.ext4","is_root_device":true,"is_read_only":false}"#
        );
        assert_eq!(
            serde_json::to_string(&requests.vsock).unwrap(),
            r#"{"guest_cid":3,"uds_path":"vsock.sock"}"#
        );
        assert_eq!(
            serde_json::to_string(&requests.machine).unwrap(),
            r#"{"vcpu_count":2,"mem_size_mib":256}"#
        );
        assert_eq!(
            serde_json::to_string(&requests.network).unwrap(),
            r#"{"iface_id":"eth0","host_dev_name":"frtap3","guest_mac":"06:00:ac:10:00:0e"}"#
        );
        assert_eq!(requests.boot_source.kernel_image_path, "/cache/vmlinux");
        assert_eq!(
            requests.boot_source.initrd_path.as_deref(),
            Some("/images/abc/initrd.gz")
        );
        let plain = backend.boot_requests(&spec(false, Network::None), "vmlinux", None, None);
        assert_eq!(plain.rootfs, None);
        assert_eq!(plain.network, None);
        assert_eq!(plain.boot_source.initrd_path, None);
    }

    #[test]
    fn an_elf_kernel_is_used_as_is_and_a_bzimage_is_refused_when_broken() {
        let dir = tempfile::tempdir().unwrap();
        let elf = dir.path().join("vmlinux");
        fs::write(&elf, b"\x7fELF rest").unwrap();
        let cache = dir.path().join("cache");
        assert_eq!(cached_vmlinux(&elf, &cache).unwrap(), elf);
        let junk = dir.path().join("vmlinuz");
        fs::write(&junk, vec![0u8; 4096]).unwrap();
        let err = cached_vmlinux(&junk, &cache).unwrap_err();
        assert!(err.to_string().contains("not a bzImage"), "{err}");
        assert!(!cache.join("vmlinuz").exists());
    }

    #[test]
    fn snapshot_metadata_checks_its_files() {
        let dir = tempfile::tempdir().unwrap();
        assert!(matches!(
            SnapshotMetadata::read(dir.path()),
            Err(VmError::BadSnapshot(..))
        ));
        let metadata = SnapshotMetadata {
            memory_mib: 128,
            vcpus: 1,
            agent_port: 1024,
            has_rootfs: true,
            tap: None,
        };
        fs::write(
            dir.path().join(snapshot_files::METADATA),
            serde_json::to_vec(&metadata).unwrap(),
        )
        .unwrap();
        fs::write(dir.path().join(snapshot_files::STATE), b"s").unwrap();
        fs::write(dir.path().join(snapshot_files::MEMORY), b"m").unwrap();
        let err = SnapshotMetadata::read(dir.path()).unwrap_err();
        assert!(err.to_string().contains("rootfs.ext4 is missing"), "{err}");
        fs::write(dir.path().join(snapshot_files::ROOTFS), b"d").unwrap();
        assert_eq!(SnapshotMetadata::read(dir.path()).unwrap(), metadata);
    }

    #[tokio::test]
    async fn restore_refuses_snapshots_of_other_backends() {
        let root = tempfile::tempdir().unwrap();
        let backend = FirecrackerBackend::new("/nonexistent/firecracker");
        let snapshot = Snapshot {
            backend: BackendKind::Qemu,
            dir: root.path().join("snap"),
            memory_mib: 128,
            vcpus: 1,
        };
        let dir = VmDir::create(root.path(), "vm-1").unwrap();
        let err = backend
            .restore(&snapshot, &spec(false, Network::None), dir)
            .await
            .unwrap_err();
        assert!(matches!(err, VmError::BadSnapshot(..)), "{err}");
    }

    #[tokio::test]
    async fn a_missing_binary_fails_boot_and_leaves_nothing_behind() {
        let root = tempfile::tempdir().unwrap();
        let kernel = root.path().join("vmlinux");
        fs::write(&kernel, b"\x7fELF").unwrap();
        let mut image_spec = spec(false, Network::None);
        image_spec.image.kernel = kernel;
        image_spec.image.initrd = PathBuf::new();
        let backend = FirecrackerBackend::new("/nonexistent/firecracker");
        let dir = VmDir::create(root.path(), "vm-1").unwrap();
        let err = backend.boot(&image_spec, dir).await.unwrap_err();
        assert!(matches!(err, VmError::Spawn { .. }), "{err}");
        assert!(VmDir::list(root.path()).unwrap().is_empty());
    }

    #[tokio::test]
    async fn probe_reports_a_missing_binary() {
        let report = probe(Path::new("/nonexistent/firecracker")).await;
        assert!(report.version.is_err());
        assert!(report
            .to_string()
            .starts_with("firecracker: unusable: cannot run"));
    }

    #[test]
    fn kvm_check_refuses_a_non_kvm_device() {
        let err = kvm_usable(Path::new("/dev/null")).unwrap_err();
        assert!(err.contains("not a KVM device"), "{err}");
        assert!(kvm_usable(Path::new("/nonexistent/kvm")).is_err());
    }
}
