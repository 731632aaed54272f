//! The QEMU `microvm` backend (KVM or TCG).
//!
//! Each VM is one `qemu-system-x86_64` process whose files live in its
//! [`VmDir`]: `qmp.sock` (control), `agent.sock` (the agent's virtio-serial
//! port), `console.log` (the guest's serial console) and `disk.qcow2` (a
//! copy-on-write overlay over the image's immutable root filesystem).
//!
//! Snapshots are QEMU migrations, written so that a restore reads as little
//! as possible. The VM is stopped and migrated over a Unix socket into a
//! second, paused QEMU (the "saver") whose guest RAM is the file
//! `<snapshot>/ram`, mapped shared, so the RAM lands in that file page by
//! page. The saver then migrates again with the `x-ignore-shared`
//! capability, which leaves that RAM out: `<snapshot>/state` holds only the
//! devices and vCPUs (a few hundred KiB). The disk overlay is copied beside
//! them. A restore starts a new QEMU whose RAM maps `<snapshot>/ram`
//! privately (copy-on-write: pages are read from the page cache when the
//! guest touches them, and are shared between VMs restored from the same
//! snapshot until written), loads `state` from an inherited file descriptor
//! and resumes. Snapshots of earlier versions (one `<snapshot>/memory`
//! stream with the RAM in it) are still restored by loading that stream.

pub mod qmp;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::process::{Child, Command};

use crate::backend::{
    AgentEndpoint, BackendKind, Network, Snapshot, VmBackend, VmError, VmInstance, VmSpec,
};
use crate::console::{self, ConsoleQuota, CONSOLE_FILE};
use crate::image::GuestImage;
use crate::runtime::{ProcessId, VmDir};
use qmp::Qmp;

/// The virtio-serial port name the guest agent looks for.
pub const AGENT_PORT_NAME: &str = "org.firerunner.agent";

/// The id of microvm's RAM backend when `-m` alone creates it; a file
/// backend given the same id keeps the RAM block's name, so migration
/// streams pass between anonymous and file-backed RAM.
const RAM_ID: &str = "microvm.ram";

/// The file descriptor a restoring QEMU reads the device state from.
const STATE_FD: i32 = 3;

/// How guest RAM is backed.
#[derive(Debug, Clone, Copy)]
enum Ram<'a> {
    /// Anonymous memory (`-m`): cold boots, and restores of a full stream.
    Anonymous,
    /// The file is the RAM, shared: what the guest or a migration writes
    /// lands in the file (the saver).
    SharedFile(&'a Path),
    /// Copy-on-write over the file: pages come from the file when touched,
    /// writes stay private to this VM (restores).
    PrivateFile(&'a Path),
}

/// How a QEMU starts.
#[derive(Debug, Clone, Copy)]
enum Start<'a> {
    /// Boot the guest from its image.
    Boot,
    /// Load a full migration stream (RAM included) from this file.
    Stream(&'a Path),
    /// `-incoming defer`: wait for `migrate-incoming`, with `fd` (if any)
    /// inherited as [`STATE_FD`], and stay paused after loading if `paused`.
    Deferred {
        fd: Option<&'a std::fs::File>,
        paused: bool,
    },
}

/// Which accelerator QEMU uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Accel {
    /// KVM when a tiny guest shows it is usable, else TCG.
    #[default]
    Auto,
    /// Hardware virtualisation through /dev/kvm.
    Kvm,
    /// Software emulation: slow but works everywhere.
    Tcg,
}

/// How to run QEMU.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QemuConfig {
    /// The `qemu-system-x86_64` binary.
    pub binary: PathBuf,
    /// The accelerator.
    pub accel: Accel,
    /// How much of each guest's serial console the host keeps.
    pub console_quota: ConsoleQuota,
}

impl Default for QemuConfig {
    fn default() -> Self {
        Self {
            binary: PathBuf::from("qemu-system-x86_64"),
            accel: Accel::Auto,
            console_quota: ConsoleQuota::default(),
        }
    }
}

/// The QEMU backend with its accelerator decided.
#[derive(Debug, Clone)]
pub struct QemuBackend {
    binary: PathBuf,
    accel: Accel,
    console_quota: ConsoleQuota,
}

impl QemuBackend {
    /// Checks the binary and decides the accelerator (probing KVM for [`Accel::Auto`]).
    pub async fn new(config: QemuConfig) -> Result<Self, VmError> {
        let version = Command::new(&config.binary)
            .arg("--version")
            .output()
            .await
            .map_err(|err| VmError::Unavailable {
                backend: BackendKind::Qemu,
                reason: format!(
                    "{}: {err} (run scripts/setup-vm.sh to install qemu-system-x86)",
                    config.binary.display()
                ),
            })?;
        if !version.status.success() {
            return Err(VmError::Unavailable {
                backend: BackendKind::Qemu,
                reason: format!("{} --version failed", config.binary.display()),
            });
        }
        let accel = match config.accel {
            Accel::Auto => match probe_kvm(&config.binary).await {
                KvmProbe::Usable(_) => Accel::Kvm,
                KvmProbe::Unusable(_) => Accel::Tcg,
            },
            chosen => chosen,
        };
        Ok(Self {
            binary: config.binary,
            accel,
            console_quota: config.console_quota,
        })
    }

    /// The accelerator in use (never [`Accel::Auto`]).
    pub fn accel(&self) -> Accel {
        self.accel
    }

    /// The QEMU command for `spec`. Only a VM that `boots` gets the kernel,
    /// initrd and command line: one that loads a migration never reads them
    /// (reading them costs a restore about a third of QEMU's start-up).
    fn command(&self, spec: &MachineSpec, dir: &VmDir, ram: Ram<'_>, boots: bool) -> Command {
        let mut command = Command::new(&self.binary);
        let (accel, cpu) = match self.accel {
            Accel::Kvm => ("kvm", "host"),
            _ => ("tcg", "max"),
        };
        command.args(["-cpu", cpu]);
        machine_args(&mut command, spec, ram, accel);
        if boots {
            command
                .arg("-kernel")
                .arg(&spec.image.kernel)
                .arg("-initrd")
                .arg(&spec.image.initrd)
                .args(["-append", &self.kernel_cmdline(spec)]);
        }
        device_args(&mut command, spec, dir);
        command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(
                std::fs::File::create(dir.join("qemu.log")).unwrap_or_else(|_| {
                    std::fs::File::create("/dev/null").expect("/dev/null opens")
                }),
            ))
            .kill_on_drop(true);
        die_with_parent(&mut command);
        command
    }

    /// The guest kernel's command line for `spec`.
    fn kernel_cmdline(&self, spec: &MachineSpec) -> String {
        let mut cmdline = String::from("console=ttyS0 panic=-1 reboot=t");
        if self.accel != Accel::Kvm {
            // microvm has no PIT or HPET to calibrate the TSC against; under
            // TCG the kernel otherwise spins forever in calibration.
            // Its PIT calibration also fails now and then (the TSC is then
            // marked unstable and jiffies never advance), so the TSC rate,
            // which under TCG is the host's, is given outright.
            cmdline.push_str(" no_timer_check lpj=2000000 tsc=reliable");
            if let Some(khz) = host_tsc_khz() {
                cmdline.push_str(&format!(" tsc_early_khz={khz}"));
            }
        }
        if spec.image.rootfs.is_some() {
            cmdline.push_str(" firerunner.root=/dev/vda");
        }
        if spec.network == Network::Nat {
            // QEMU's user-mode network: the guest is 10.0.2.15, the host's
            // loopback is reachable as 10.0.2.2, and 10.0.2.3 resolves names.
            cmdline.push_str(" firerunner.net=10.0.2.15/24,10.0.2.2,10.0.2.3");
        }
        if !spec.image.kernel_cmdline.is_empty() {
            cmdline.push(' ');
            cmdline.push_str(&spec.image.kernel_cmdline);
        }
        cmdline
    }

    async fn launch(
        &self,
        spec: &MachineSpec,
        dir: VmDir,
        ram: Ram<'_>,
        start: Start<'_>,
    ) -> Result<QemuVm, VmError> {
        let mut command = self.command(spec, &dir, ram, matches!(start, Start::Boot));
        incoming_args(&mut command, start);
        let mut child = command.spawn().map_err(|source| VmError::Spawn {
            program: self.binary.display().to_string(),
            source,
        })?;
        let pid = child.id().unwrap_or_default();
        dir.record_process("qemu", pid)?;
        if let Some(stdout) = child.stdout.take() {
            let path = dir.join(CONSOLE_FILE);
            console::capture(stdout, &path, self.console_quota)
                .map_err(|err| VmError::io(format!("open {}", path.display()), err))?;
        }
        let mut vm = QemuVm {
            dir,
            child,
            pid,
            qmp: None,
            spec: spec.clone(),
            backend: self.clone(),
        };
        match Qmp::connect(
            &vm.dir.join("qmp.sock"),
            ProcessId::of(pid),
            Duration::from_secs(10),
        )
        .await
        {
            Ok(qmp) => vm.qmp = Some(qmp),
            Err(err) => return Err(vm.exit_error().await.unwrap_or(err)),
        }
        Ok(vm)
    }

    /// Restores a snapshot whose RAM file is mapped privately and whose
    /// device state QEMU reads from [`STATE_FD`].
    async fn restore_state(
        &self,
        machine: &MachineSpec,
        dir: VmDir,
        state: &Path,
        ram: &Path,
        deadline: Instant,
    ) -> Result<QemuVm, VmError> {
        let file = std::fs::File::open(state)
            .map_err(|err| VmError::io(state.display().to_string(), err))?;
        let start = Start::Deferred {
            fd: Some(&file),
            paused: false,
        };
        let mut vm = self
            .launch(machine, dir, Ram::PrivateFile(ram), start)
            .await?;
        drop(file);
        let loaded = async {
            let qmp = vm.qmp()?;
            set_capabilities(qmp, &["x-ignore-shared", "events"]).await?;
            qmp.execute(
                "migrate-incoming",
                Some(json!({ "uri": format!("fd:{STATE_FD}") })),
            )
            .await?;
            wait_incoming(qmp, deadline).await?;
            qmp.execute("cont", None).await.map(drop)
        }
        .await;
        match loaded {
            Ok(()) => Ok(vm),
            Err(err) => {
                let err = vm.exit_error().await.unwrap_or(err);
                let _ = vm.destroy().await;
                Err(err)
            }
        }
    }

    /// Restores a snapshot saved as one migration stream (RAM included).
    async fn restore_stream(
        &self,
        machine: &MachineSpec,
        dir: VmDir,
        snapshot: &Snapshot,
        deadline: Instant,
    ) -> Result<QemuVm, VmError> {
        let memory = snapshot.dir.join("memory");
        let mut vm = self
            .launch(machine, dir, Ram::Anonymous, Start::Stream(&memory))
            .await?;
        loop {
            let status = vm.qmp()?.status().await?;
            match status.as_str() {
                "inmigrate" if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(5)).await
                }
                "running" => return Ok(vm),
                "paused" | "postmigrate" | "prelaunch" => {
                    vm.qmp()?.execute("cont", None).await?;
                    return Ok(vm);
                }
                other => {
                    return Err(VmError::BadSnapshot(
                        snapshot.dir.clone(),
                        format!("QEMU is {other:?} after loading it"),
                    ))
                }
            }
        }
    }
}

/// What identifies a machine so that a snapshot restores into an identical one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct MachineSpec {
    image: GuestImage,
    vcpus: u8,
    memory_mib: u32,
    network: Network,
}

impl MachineSpec {
    fn of(spec: &VmSpec) -> Self {
        Self {
            image: spec.image.clone(),
            vcpus: spec.vcpus,
            memory_mib: spec.memory_mib,
            network: spec.network,
        }
    }
}

impl VmBackend for QemuBackend {
    type Vm = QemuVm;

    fn kind(&self) -> BackendKind {
        BackendKind::Qemu
    }

    async fn boot(&self, spec: &VmSpec, dir: VmDir) -> Result<QemuVm, VmError> {
        if let Some(rootfs) = &spec.image.rootfs {
            create_overlay(rootfs, "raw", &dir.join("disk.qcow2")).await?;
        }
        self.launch(&MachineSpec::of(spec), dir, Ram::Anonymous, Start::Boot)
            .await
    }

    async fn restore(
        &self,
        snapshot: &Snapshot,
        _spec: &VmSpec,
        dir: VmDir,
    ) -> Result<QemuVm, VmError> {
        let machine = read_machine(snapshot)?;
        let disk = snapshot.dir.join("disk.qcow2");
        if machine.image.rootfs.is_some() {
            create_overlay(&disk, "qcow2", &dir.join("disk.qcow2")).await?;
        }
        let deadline = Instant::now() + Duration::from_secs(60);
        let state = snapshot.dir.join("state");
        let ram = snapshot.dir.join("ram");
        if state.is_file() && ram.is_file() {
            return self
                .restore_state(&machine, dir, &state, &ram, deadline)
                .await;
        }
        self.restore_stream(&machine, dir, snapshot, deadline).await
    }
}

/// A running QEMU VM.
pub struct QemuVm {
    dir: VmDir,
    child: Child,
    pid: u32,
    qmp: Option<Qmp>,
    spec: MachineSpec,
    backend: QemuBackend,
}

impl QemuVm {
    fn qmp(&mut self) -> Result<&mut Qmp, VmError> {
        self.qmp.as_mut().ok_or_else(|| VmError::Api {
            api: "QMP",
            request: "connect".into(),
            message: "not connected".into(),
        })
    }

    /// The guest's serial console log.
    pub fn console_log(&self) -> PathBuf {
        self.dir.join(CONSOLE_FILE)
    }

    /// Forwards a free TCP port on the host's loopback to `guest_port` of a
    /// guest with [`Network::Nat`] (QEMU's user-mode network) and returns
    /// the host port. The forward lasts as long as this QEMU.
    pub async fn forward_tcp(&mut self, guest_port: u16) -> Result<u16, VmError> {
        if self.spec.network != Network::Nat {
            return Err(api_error(
                "hostfwd_add",
                "only a guest with the user-mode network has ports to forward",
            ));
        }
        // The port is free now; QEMU binds it a moment later.
        let port = std::net::TcpListener::bind(("127.0.0.1", 0))
            .and_then(|listener| listener.local_addr())
            .map_err(|err| VmError::io("finding a free port", err))?
            .port();
        let command = format!("hostfwd_add net0 tcp:127.0.0.1:{port}-:{guest_port}");
        let answer = self
            .qmp()?
            .execute(
                "human-monitor-command",
                Some(json!({ "command-line": command })),
            )
            .await?;
        match answer.as_str().map(str::trim) {
            Some("") | None => Ok(port),
            Some(error) => Err(api_error("hostfwd_add", error)),
        }
    }

    /// If QEMU has exited, an error saying how, with the console's last lines.
    async fn exit_error(&mut self) -> Option<VmError> {
        let status = match self.child.try_wait() {
            Ok(Some(status)) => status,
            _ => return None,
        };
        let qemu_log = std::fs::read_to_string(self.dir.join("qemu.log")).unwrap_or_default();
        Some(VmError::HypervisorExited {
            status: match qemu_log.trim() {
                "" => status.to_string(),
                log => format!("{status}; {log}"),
            },
            console_tail: crate::runtime::console_tail(&self.console_log(), 20),
        })
    }
}

impl VmInstance for QemuVm {
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
        self.qmp()?.execute("stop", None).await.map(drop)
    }

    async fn resume(&mut self) -> Result<(), VmError> {
        self.qmp()?.execute("cont", None).await.map(drop)
    }

    async fn snapshot(&mut self, dest: PathBuf) -> Result<Snapshot, VmError> {
        std::fs::create_dir_all(&dest)
            .map_err(|err| VmError::io(dest.display().to_string(), err))?;
        self.pause().await?;
        if self.spec.image.rootfs.is_some() {
            let disk = dest.join("disk.qcow2");
            std::fs::copy(self.dir.join("disk.qcow2"), &disk)
                .map_err(|err| VmError::io(disk.display().to_string(), err))?;
        }
        let root = self
            .dir
            .path()
            .parent()
            .and_then(Path::parent)
            .ok_or_else(|| {
                VmError::io(
                    self.dir.path().display().to_string(),
                    std::io::Error::other("a VM directory lies in <root>/vms/<id>"),
                )
            })?
            .to_path_buf();
        let saver_dir = VmDir::create(&root, &format!("{}-save", self.dir.id()))?;
        let saver_path = saver_dir.path().to_path_buf();
        let saved = self.save_through(saver_dir, &dest).await;
        if let Some(dir) = VmDir::open(saver_path) {
            let _ = crate::reaper::destroy_dir(dir);
        }
        saved?;
        let machine = serde_json::to_string_pretty(&self.spec).expect("machine serialises");
        let manifest = dest.join("machine.json");
        std::fs::write(&manifest, machine)
            .map_err(|err| VmError::io(manifest.display().to_string(), err))?;
        Ok(Snapshot {
            backend: BackendKind::Qemu,
            dir: dest,
            memory_mib: self.spec.memory_mib,
            vcpus: self.spec.vcpus,
        })
    }

    async fn destroy(mut self) -> Result<(), VmError> {
        self.stop().await;
        self.dir.clone().remove()?;
        Ok(())
    }
}

impl QemuVm {
    /// Asks QEMU to quit, and kills it if it does not within 2 s.
    async fn stop(&mut self) {
        if let Some(mut qmp) = self.qmp.take() {
            let _ =
                tokio::time::timeout(Duration::from_millis(500), qmp.execute("quit", None)).await;
        }
        if tokio::time::timeout(Duration::from_secs(2), self.child.wait())
            .await
            .is_err()
        {
            let _ = self.child.kill().await;
        }
    }

    /// Moves the paused VM's RAM into `<dest>/ram` and its device state into
    /// `<dest>/state` through a saver QEMU in `saver_dir` (see the module
    /// documentation).
    async fn save_through(&mut self, saver_dir: VmDir, dest: &Path) -> Result<(), VmError> {
        if self.spec.image.rootfs.is_some() {
            create_overlay(
                &dest.join("disk.qcow2"),
                "qcow2",
                &saver_dir.join("disk.qcow2"),
            )
            .await?;
        }
        let ram = dest.join("ram");
        let _ = std::fs::remove_file(&ram);
        let socket = saver_dir.join("migrate.sock");
        let mut saver = self
            .backend
            .launch(
                &self.spec,
                saver_dir,
                Ram::SharedFile(&ram),
                Start::Deferred {
                    fd: None,
                    paused: true,
                },
            )
            .await?;
        let result = self.migrate_through(&mut saver, &socket, dest).await;
        let result = match result {
            Err(err) => Err(saver.exit_error().await.unwrap_or(err)),
            ok => ok,
        };
        saver.stop().await;
        result
    }

    /// Migrates this VM into the paused `saver` over `socket`, then the
    /// saver's device state into `dest/state` (its RAM already lies in
    /// `dest/ram`).
    async fn migrate_through(
        &mut self,
        saver: &mut QemuVm,
        socket: &Path,
        dest: &Path,
    ) -> Result<(), VmError> {
        let uri = format!("unix:{}", socket.display());
        saver
            .qmp()?
            .execute("migrate-incoming", Some(json!({ "uri": uri })))
            .await?;
        self.qmp()?
            .execute("migrate", Some(json!({ "uri": uri })))
            .await?;
        wait_migrated(self.qmp()?).await?;
        let deadline = Instant::now() + Duration::from_secs(60);
        while saver.qmp()?.status().await? == "inmigrate" {
            if Instant::now() >= deadline {
                return Err(api_error(
                    "migrate-incoming",
                    "the saver never finished loading",
                ));
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let qmp = saver.qmp()?;
        set_capabilities(qmp, &["x-ignore-shared"]).await?;
        let uri = format!("exec:cat > {}", shell_quote(&dest.join("state")));
        qmp.execute("migrate", Some(json!({ "uri": uri }))).await?;
        wait_migrated(qmp).await
    }
}

fn api_error(request: &str, message: &str) -> VmError {
    VmError::Api {
        api: "QMP",
        request: request.into(),
        message: message.into(),
    }
}

/// Turns on migration capabilities.
async fn set_capabilities(qmp: &mut Qmp, names: &[&str]) -> Result<(), VmError> {
    let capabilities: Vec<_> = names
        .iter()
        .map(|name| json!({ "capability": name, "state": true }))
        .collect();
    qmp.execute(
        "migrate-set-capabilities",
        Some(json!({ "capabilities": capabilities })),
    )
    .await
    .map(drop)
}

/// Waits for an outgoing migration to complete.
async fn wait_migrated(qmp: &mut Qmp) -> Result<(), VmError> {
    loop {
        let state = qmp.execute("query-migrate", None).await?;
        match state
            .get("status")
            .and_then(|s| s.as_str())
            .unwrap_or_default()
        {
            "completed" => return Ok(()),
            "failed" | "cancelled" => {
                return Err(api_error(
                    "migrate",
                    state
                        .get("error-desc")
                        .and_then(|s| s.as_str())
                        .unwrap_or("migration failed"),
                ))
            }
            _ => tokio::time::sleep(Duration::from_millis(5)).await,
        }
    }
}

/// Waits for an incoming migration (with the `events` capability on) to
/// complete, by its `MIGRATION` events rather than by polling.
async fn wait_incoming(qmp: &mut Qmp, deadline: Instant) -> Result<(), VmError> {
    let wait = async {
        loop {
            let event = qmp.wait_event("MIGRATION").await?;
            match event
                .pointer("/data/status")
                .and_then(|s| s.as_str())
                .unwrap_or_default()
            {
                "completed" => return Ok(()),
                "failed" | "cancelled" => {
                    return Err(api_error("migrate-incoming", "loading the snapshot failed"))
                }
                _ => {}
            }
        }
    };
    tokio::time::timeout_at(deadline.into(), wait)
        .await
        .unwrap_or_else(|_| {
            Err(api_error(
                "migrate-incoming",
                "the snapshot did not load in time",
            ))
        })
}

/// Escapes a value for a QEMU `key=value,...` option (commas are doubled).
fn option_escape(path: &Path) -> String {
    path.display().to_string().replace(',', ",,")
}

/// Creates a qcow2 overlay at `overlay` over the read-only `backing` file.
async fn create_overlay(
    backing: &Path,
    backing_format: &str,
    overlay: &Path,
) -> Result<(), VmError> {
    let output = Command::new("qemu-img")
        .args(["create", "-q", "-f", "qcow2", "-F", backing_format, "-b"])
        .arg(backing)
        .arg(overlay)
        .output()
        .await
        .map_err(|source| VmError::Spawn {
            program: "qemu-img".into(),
            source,
        })?;
    if output.status.success() {
        Ok(())
    } else {
        Err(VmError::Api {
            api: "qemu-img",
            request: format!("create overlay over {}", backing.display()),
            message: String::from_utf8_lossy(&output.stderr).trim().to_string(),
        })
    }
}

/// The machine a QEMU snapshot was taken of, from its `machine.json`.
fn read_machine(snapshot: &Snapshot) -> Result<MachineSpec, VmError> {
    if snapshot.backend != BackendKind::Qemu {
        return Err(VmError::BadSnapshot(
            snapshot.dir.clone(),
            format!("written by {:?}, not QEMU", snapshot.backend),
        ));
    }
    let manifest = snapshot.dir.join("machine.json");
    std::fs::read_to_string(&manifest)
        .ok()
        .and_then(|text| serde_json::from_str(&text).ok())
        .ok_or_else(|| {
            VmError::BadSnapshot(
                snapshot.dir.clone(),
                "machine.json is missing or unreadable".into(),
            )
        })
}

/// Where a restoring VM reads its migration from: a stream, or (deferred)
/// the state file handed over as descriptor [`STATE_FD`].
fn incoming_args(command: &mut Command, start: Start<'_>) {
    match start {
        Start::Boot => {}
        Start::Stream(memory) => {
            command
                .arg("-incoming")
                .arg(format!("exec:cat {}", shell_quote(memory)));
        }
        Start::Deferred { fd, paused } => {
            command.args(["-incoming", "defer"]);
            if paused {
                command.arg("-S");
            }
            if let Some(file) = fd {
                pass_state_fd(command, std::os::fd::AsRawFd::as_raw_fd(file));
            }
        }
    }
}

/// Hands the open descriptor `fd` to QEMU as [`STATE_FD`].
fn pass_state_fd(command: &mut Command, fd: std::os::fd::RawFd) {
    // SAFETY: dup2 and fcntl are async-signal-safe; `fd` is
    // open in the parent until spawn returns.
    unsafe {
        command.pre_exec(move || {
            if fd != STATE_FD && libc::dup2(fd, STATE_FD) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            // dup2 clears close-on-exec, but not when fd is already 3.
            if libc::fcntl(STATE_FD, libc::F_SETFD, 0) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// The machine, its accelerator, CPUs and memory (backed by `ram`'s file
/// when it has one), and QEMU's sandbox and defaults.
fn machine_args(command: &mut Command, spec: &MachineSpec, ram: Ram<'_>, accel: &str) {
    let mut machine = String::from("microvm,isa-serial=on,rtc=on");
    if let Ram::SharedFile(path) | Ram::PrivateFile(path) = ram {
        let share = if matches!(ram, Ram::SharedFile(_)) {
            "on"
        } else {
            "off"
        };
        machine.push_str(&format!(",memory-backend={RAM_ID}"));
        command.arg("-object").arg(format!(
            "memory-backend-file,id={RAM_ID},size={}M,mem-path={},share={share}",
            spec.memory_mib,
            option_escape(path)
        ));
    }
    command
        .args(["-M", &machine, "-accel", accel])
        .args(["-smp", &spec.vcpus.to_string()])
        .args(["-m", &format!("{}M", spec.memory_mib)])
        // seccomp: obsolete system calls and privilege changes refused
        // (spawning stays allowed: restores read memory through `exec:`).
        .args(["-sandbox", "on"])
        .args([
            "-nodefaults",
            "-no-user-config",
            "-display",
            "none",
            "-no-reboot",
        ]);
}

/// The console, QMP and agent sockets in `dir`, the root disk and the network.
fn device_args(command: &mut Command, spec: &MachineSpec, dir: &VmDir) {
    command
        // The console reaches the host through QEMU's stdout, which
        // [`crate::console::capture`] keeps within its quota.
        .args(["-serial", "stdio"])
        .arg("-qmp")
        .arg(format!(
            "unix:{},server=on,wait=off",
            dir.join("qmp.sock").display()
        ))
        .args(["-device", "virtio-serial-device"])
        .arg("-chardev")
        .arg(format!(
            "socket,id=agent,path={},server=on,wait=off",
            dir.join("agent.sock").display()
        ))
        .args([
            "-device",
            &format!("virtserialport,chardev=agent,name={AGENT_PORT_NAME}"),
        ]);
    if spec.image.rootfs.is_some() {
        command
            .arg("-drive")
            .arg(format!(
                "id=root,file={},format=qcow2,if=none,cache=unsafe",
                dir.join("disk.qcow2").display()
            ))
            .args(["-device", "virtio-blk-device,drive=root"]);
    }
    if spec.network == Network::Nat {
        command
            .args(["-netdev", "user,id=net0"])
            .args(["-device", "virtio-net-device,netdev=net0"]);
    }
}

/// Makes the kernel end QEMU when the host process dies without destroying
/// the VM (a crash, a SIGKILL); the reaper then removes the VM's directory
/// at the next start-up.
fn die_with_parent(command: &mut Command) {
    // SAFETY: prctl is async-signal-safe and touches no memory of ours.
    unsafe {
        command.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// The host's TSC rate in kHz, from `/proc/cpuinfo`.
fn host_tsc_khz() -> Option<u64> {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").ok()?;
    let mhz: f64 = cpuinfo
        .lines()
        .find(|line| line.starts_with("cpu MHz"))?
        .split(':')
        .nth(1)?
        .trim()
        .parse()
        .ok()?;
    Some((mhz * 1000.0) as u64)
}

fn shell_quote(path: &Path) -> String {
    format!("'{}'", path.display().to_string().replace('\'', r"'\''"))
}

/// Whether KVM can run guests at a useful speed here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KvmProbe {
    /// A tiny guest finished in this time.
    Usable(Duration),
    /// Why KVM will not be used.
    Unusable(String),
}

/// A 512-byte boot sector: counts `ecx` down from 20 million, then writes 0
/// to port 0xf4 (an `isa-debug-exit` device), which ends QEMU with status 1.
fn probe_boot_sector() -> [u8; 512] {
    let mut sector = [0u8; 512];
    let code: &[u8] = &[
        0x66, 0xB9, 0x00, 0x2D, 0x31, 0x01, // mov ecx, 20_000_000
        0x66, 0x49, // dec ecx
        0x75, 0xFC, // jnz dec
        0xB0, 0x00, // mov al, 0
        0xE6, 0xF4, // out 0xf4, al
        0xF4, // hlt
        0xEB, 0xFD, // jmp hlt
    ];
    sector[..code.len()].copy_from_slice(code);
    sector[510] = 0x55;
    sector[511] = 0xAA;
    sector
}

/// How long the KVM probe guest may take before KVM counts as unusable: on
/// hardware KVM it finishes in well under a second; nested KVM is ~1000x slower.
const KVM_PROBE_LIMIT: Duration = Duration::from_secs(3);

/// Times a tiny guest under KVM to decide whether KVM is usable.
pub async fn probe_kvm(binary: &Path) -> KvmProbe {
    if let Err(err) = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
    {
        return KvmProbe::Unusable(format!("/dev/kvm: {err}"));
    }
    run_probe_guest(binary, "kvm", KVM_PROBE_LIMIT).await
}

/// Runs the probe boot sector under `accel` and times it.
pub async fn run_probe_guest(binary: &Path, accel: &str, limit: Duration) -> KvmProbe {
    let dir = std::env::temp_dir().join(format!("firerunner-probe-{}-{accel}", std::process::id()));
    let _ = std::fs::create_dir_all(&dir);
    let image = dir.join("probe.img");
    if let Err(err) = std::fs::write(&image, probe_boot_sector()) {
        return KvmProbe::Unusable(format!("{}: {err}", image.display()));
    }
    let started = Instant::now();
    let run = Command::new(binary)
        .args([
            "-M",
            "pc",
            "-accel",
            accel,
            "-nodefaults",
            "-no-user-config",
        ])
        .args([
            "-display",
            "none",
            "-device",
            "isa-debug-exit,iobase=0xf4,iosize=4",
        ])
        .arg("-drive")
        .arg(format!("file={},format=raw,if=ide", image.display()))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .output();
    let result = match tokio::time::timeout(limit, run).await {
        Err(_) => KvmProbe::Unusable(format!(
            "a tiny {accel} guest did not finish within {limit:?} (nested or emulated)"
        )),
        Ok(Err(err)) => KvmProbe::Unusable(format!("{}: {err}", binary.display())),
        Ok(Ok(output)) if output.status.code() == Some(1) => KvmProbe::Usable(started.elapsed()),
        Ok(Ok(output)) => KvmProbe::Unusable(format!(
            "the probe guest ended with {}: {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        )),
    };
    let _ = std::fs::remove_dir_all(&dir);
    result
}
