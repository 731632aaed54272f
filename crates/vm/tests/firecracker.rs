//! The Firecracker backend against real artefacts.
//!
//! - Debian's cloud kernel (downloaded with `apt-get download` into a
//!   temporary directory): `extract_vmlinux` must yield an x86-64 ELF.
//! - A real `firecracker` binary named by `FIRECRACKER_BIN`: the API layer as
//!   far as this machine's KVM allows. Without the variable these tests print
//!   `skipped: FIRECRACKER_BIN is not set` and return.
//! - `FIRECRACKER_JAILER` additionally runs one boot under the jailer.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use firerunner_vm::firecracker::vmlinux::{compression_of, extract_vmlinux, is_elf, payload};
use firerunner_vm::firecracker::{probe, FirecrackerBackend, JailerConfig};
use firerunner_vm::{
    BackendKind, GuestImage, Network, VmBackend, VmDir, VmError, VmInstance, VmSpec,
};

fn firecracker_bin() -> Option<PathBuf> {
    match std::env::var_os("FIRECRACKER_BIN") {
        Some(bin) => Some(PathBuf::from(bin)),
        None => {
            eprintln!("skipped: FIRECRACKER_BIN is not set");
            None
        }
    }
}

/// Debian's cloud kernel (bzImage), downloaded once into the temp dir, or
/// `None` after printing why not. Tests of this binary share one attempt;
/// other processes see the directory only once it is complete.
fn debian_kernel() -> Option<PathBuf> {
    static KERNEL: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    match KERNEL.get_or_init(download_debian_kernel) {
        Ok(path) => Some(path.clone()),
        Err(why) => {
            eprintln!("skipped: Debian kernel unavailable: {why}");
            None
        }
    }
}

fn download_debian_kernel() -> Result<PathBuf, String> {
    let dir = std::env::temp_dir().join("firerunner-test-debian-kernel");
    if let Some(found) = find_vmlinuz(&dir) {
        return Ok(found);
    }
    let partial = std::env::temp_dir().join(format!(
        "firerunner-test-debian-kernel.{}.partial",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&partial);
    std::fs::create_dir_all(&partial)
        .map_err(|err| format!("cannot create {}: {err}", partial.display()))?;
    let unpacked = unpack_debian_kernel(&partial);
    let result = unpacked.and_then(|()| match std::fs::rename(&partial, &dir) {
        Ok(()) => Ok(()),
        // Another process finished first: use its copy.
        Err(_) if find_vmlinuz(&dir).is_some() => Ok(()),
        Err(err) => Err(format!("cannot rename to {}: {err}", dir.display())),
    });
    let _ = std::fs::remove_dir_all(&partial);
    result?;
    find_vmlinuz(&dir).ok_or_else(|| "the package holds no /boot/vmlinuz-*".into())
}

/// `apt-get download`s the kernel package `linux-image-cloud-amd64` depends
/// on into `dir` and unpacks it into `dir/root`.
fn unpack_debian_kernel(dir: &Path) -> Result<(), String> {
    let depends = run(Command::new("apt-cache").args(["depends", "linux-image-cloud-amd64"]))?;
    let package = depends
        .lines()
        .find_map(|line| {
            line.trim()
                .strip_prefix("Depends: ")
                .filter(|name| name.starts_with("linux-image-"))
                .map(str::to_string)
        })
        .ok_or("linux-image-cloud-amd64 names no kernel package")?;
    run(Command::new("apt-get")
        .args(["download", &package])
        .current_dir(dir))?;
    let deb = std::fs::read_dir(dir)
        .map_err(|err| err.to_string())?
        .filter_map(|entry| Some(entry.ok()?.path()))
        .find(|path| path.extension().is_some_and(|ext| ext == "deb"))
        .ok_or("apt-get download left no .deb")?;
    run(Command::new("dpkg-deb")
        .arg("-x")
        .arg(&deb)
        .arg(dir.join("root")))?;
    std::fs::remove_file(&deb).map_err(|err| err.to_string())
}

fn run(command: &mut Command) -> Result<String, String> {
    let name = format!("{command:?}");
    match command.output() {
        Ok(out) if out.status.success() => Ok(String::from_utf8_lossy(&out.stdout).into_owned()),
        Ok(out) => Err(format!(
            "{name} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )),
        Err(err) => Err(format!("{name}: {err}")),
    }
}

fn find_vmlinuz(dir: &Path) -> Option<PathBuf> {
    std::fs::read_dir(dir.join("root/boot"))
        .ok()?
        .filter_map(|entry| Some(entry.ok()?.path()))
        .find(|path| {
            path.file_name()
                .and_then(|name| name.to_str())
                .is_some_and(|name| name.starts_with("vmlinuz-"))
        })
}

#[test]
fn extracts_the_vmlinux_of_debians_cloud_kernel() {
    let Some(vmlinuz) = debian_kernel() else {
        return;
    };
    let bzimage = std::fs::read(&vmlinuz).unwrap();
    assert_eq!(compression_of(payload(&bzimage).unwrap()), Some("lz4"));
    let vmlinux = extract_vmlinux(&bzimage).unwrap();
    assert!(is_elf(&vmlinux));
    // ELFCLASS64, little-endian, ET_EXEC, EM_X86_64.
    assert_eq!((vmlinux[4], vmlinux[5]), (2, 1));
    assert_eq!(u16::from_le_bytes([vmlinux[16], vmlinux[17]]), 2);
    assert_eq!(u16::from_le_bytes([vmlinux[18], vmlinux[19]]), 62);
    assert!(vmlinux.len() > 2 * bzimage.len(), "{} bytes", vmlinux.len());
}

struct Fixture {
    root: tempfile::TempDir,
    backend: FirecrackerBackend,
}

impl Fixture {
    fn new(binary: PathBuf) -> Self {
        let root = tempfile::tempdir().unwrap();
        let mut backend = FirecrackerBackend::new(binary);
        backend.kernel_cache = root.path().join("kernels");
        backend.start_timeout = Duration::from_secs(60);
        Self { root, backend }
    }

    fn file(&self, name: &str, contents: &[u8]) -> PathBuf {
        let path = self.root.path().join(name);
        std::fs::write(&path, contents).unwrap();
        path
    }

    fn spec(&self, kernel: PathBuf, rootfs: Option<PathBuf>, vcpus: u8) -> VmSpec {
        VmSpec {
            image: GuestImage {
                kernel,
                initrd: self.file("initrd", b"not really an initramfs"),
                rootfs,
                // The initramfs is junk: on a host where the guest really
                // boots, `panic=0` keeps the panicked guest (and so
                // Firecracker) up for pause, snapshot and restore.
                kernel_cmdline: "no_timer_check panic=0".into(),
            },
            vcpus,
            memory_mib: 128,
            network: Network::None,
            boot_timeout: Duration::from_secs(5),
        }
    }

    fn vm_dir(&self, id: &str) -> VmDir {
        VmDir::create(self.root.path(), id).unwrap()
    }
}

fn api_request(err: &VmError) -> Option<&str> {
    match err {
        VmError::Api { request, .. } => Some(request),
        _ => None,
    }
}

#[tokio::test]
async fn probe_reports_the_version_and_kvm() {
    let Some(binary) = firecracker_bin() else {
        return;
    };
    let report = probe(&binary).await;
    eprintln!("{report}");
    let version = report.version.expect("firecracker --version runs");
    assert!(version.starts_with("Firecracker v"), "{version}");
}

#[tokio::test]
async fn a_refused_configuration_names_its_request_and_cleans_up() {
    let Some(binary) = firecracker_bin() else {
        return;
    };
    let fixture = Fixture::new(binary);
    let kernel = fixture.file("vmlinux", b"\x7fELF but no kernel");
    let mut spec = fixture.spec(kernel, None, 1);
    spec.image.initrd = fixture.root.path().join("no-such-initrd");
    let err = fixture
        .backend
        .boot(&spec, fixture.vm_dir("missing-initrd"))
        .await
        .unwrap_err();
    eprintln!("missing initrd: {err}");
    assert_eq!(api_request(&err), Some("PUT /boot-source"), "{err}");
    assert!(err.to_string().contains("(HTTP 400)"), "{err}");
    assert!(VmDir::list(fixture.root.path()).unwrap().is_empty());
}

#[tokio::test]
async fn configuration_succeeds_and_a_non_kernel_is_refused_at_start() {
    let Some(binary) = firecracker_bin() else {
        return;
    };
    let fixture = Fixture::new(binary);
    let kernel = fixture.file("vmlinux", b"\x7fELF but no kernel");
    let rootfs = fixture.file("rootfs.ext4", &vec![0u8; 1 << 20]);
    let spec = fixture.spec(kernel, Some(rootfs), 1);
    let err = fixture
        .backend
        .boot(&spec, fixture.vm_dir("bad-kernel"))
        .await
        .unwrap_err();
    eprintln!("InstanceStart with a non-kernel: {err}");
    // Every configuration request was accepted; only the start failed.
    assert_eq!(api_request(&err), Some("PUT /actions"), "{err}");
    assert!(err.to_string().contains("elf"), "{err}");
    assert!(VmDir::list(fixture.root.path()).unwrap().is_empty());
}

/// Boots Debian's kernel and, if `InstanceStart` succeeds, pauses, resumes,
/// snapshots, restores and destroys. On this project's machines KVM is
/// nested and the guest never gets far, but the VMM side still works.
#[tokio::test]
async fn boots_debians_kernel_as_far_as_kvm_allows() {
    let Some(binary) = firecracker_bin() else {
        return;
    };
    let Some(bzimage) = debian_kernel() else {
        return;
    };
    let fixture = Fixture::new(binary);
    let rootfs = fixture.file("rootfs.ext4", &vec![0u8; 1 << 20]);
    let spec = fixture.spec(bzimage, Some(rootfs), 1);
    exercise(&fixture.backend, &spec, fixture.root.path(), "debian").await;
}

/// The same under the jailer, when `FIRECRACKER_JAILER` names one.
#[tokio::test]
async fn boots_under_the_jailer_when_given_one() {
    let Some(binary) = firecracker_bin() else {
        return;
    };
    let Some(jailer) = std::env::var_os("FIRECRACKER_JAILER") else {
        eprintln!("skipped: FIRECRACKER_JAILER is not set");
        return;
    };
    let Some(bzimage) = debian_kernel() else {
        return;
    };
    let mut fixture = Fixture::new(binary);
    let mut config = JailerConfig::new(jailer, 10000, 10000);
    config.chroot_base = fixture.root.path().join("jails");
    fixture.backend.jailer = Some(config);
    let rootfs = fixture.file("rootfs.ext4", &vec![0u8; 1 << 20]);
    let spec = fixture.spec(bzimage, Some(rootfs), 1);
    exercise(&fixture.backend, &spec, fixture.root.path(), "jailed").await;
    assert!(
        std::fs::read_dir(fixture.root.path().join("jails/firecracker"))
            .map(|entries| entries.count())
            .unwrap_or(0)
            == 0,
        "a jail was left behind"
    );
}

async fn exercise(backend: &FirecrackerBackend, spec: &VmSpec, root: &Path, id: &str) {
    let started = Instant::now();
    let mut vm = match backend.boot(spec, VmDir::create(root, id).unwrap()).await {
        Ok(vm) => vm,
        Err(err) => {
            eprintln!("InstanceStart failed after {:?}: {err}", started.elapsed());
            // Configuration must have been accepted: only the start may fail
            // (a Firecracker that exited earlier never got configured).
            assert_eq!(api_request(&err), Some("PUT /actions"), "{err}");
            assert!(VmDir::list(root).unwrap().is_empty());
            return;
        }
    };
    eprintln!("InstanceStart answered after {:?}", started.elapsed());
    let info = vm.api().instance_info().await.unwrap();
    eprintln!(
        "GET /: state {:?}, version {}",
        info.state, info.vmm_version
    );
    assert_eq!(info.state, "Running");
    assert!(
        vm.agent_endpoint_exists(),
        "the vsock socket was not created"
    );

    // The vsock bridge is there, but no guest agent answers on this machine:
    // the agent link must give up with a boot timeout, not hang or misreport.
    let asked = Instant::now();
    let link = tokio::time::timeout(
        Duration::from_secs(30),
        firerunner_vm::agent_link::connect(&vm, Duration::from_secs(3)),
    )
    .await
    .expect("agent_link::connect stayed within its bound");
    match link {
        Err(VmError::BootTimeout { .. }) => {
            eprintln!(
                "agent link: no agent after {:?} (expected here)",
                asked.elapsed()
            )
        }
        Err(other) => panic!("agent link failed otherwise: {other}"),
        Ok(_) => eprintln!("agent link: the guest agent answered"),
    }

    vm.pause().await.unwrap();
    assert_eq!(vm.api().instance_info().await.unwrap().state, "Paused");
    vm.resume().await.unwrap();
    assert_eq!(vm.api().instance_info().await.unwrap().state, "Running");

    let snapshot_dir = root.join(format!("snapshot-{id}"));
    let taken = Instant::now();
    let snapshot = vm.snapshot(snapshot_dir.clone()).await.unwrap();
    eprintln!(
        "snapshot of {} MiB taken in {:?}",
        spec.memory_mib,
        taken.elapsed()
    );
    assert_eq!(snapshot.backend, BackendKind::Firecracker);
    assert_eq!(vm.api().instance_info().await.unwrap().state, "Paused");
    for name in [
        "vmstate",
        "memory",
        "rootfs.ext4",
        "firerunner-firecracker.json",
    ] {
        assert!(
            snapshot_dir.join(name).is_file(),
            "{name} missing from the snapshot"
        );
    }
    let pid = vm.pid();
    vm.destroy().await.unwrap();
    assert!(
        !Path::new(&format!("/proc/{pid}")).exists(),
        "firecracker {pid} survived destroy"
    );

    let restored_at = Instant::now();
    let restored = backend
        .restore(
            &snapshot,
            spec,
            VmDir::create(root, &format!("{id}-restored")).unwrap(),
        )
        .await;
    match restored {
        Ok(vm) => {
            eprintln!("restored and resumed in {:?}", restored_at.elapsed());
            assert_eq!(vm.api().instance_info().await.unwrap().state, "Running");
            assert!(
                vm.agent_endpoint_exists(),
                "the restored vsock socket was not created"
            );
            // The snapshot named the disk relative to the workspace: the
            // restored process must have opened its own fresh copy.
            let own_disk = vm.workspace_root().join("rootfs.ext4");
            assert!(
                holds_open(vm.pid(), &own_disk),
                "restored firecracker does not hold {}",
                own_disk.display()
            );
            vm.destroy().await.unwrap();
        }
        Err(err) => panic!("restore failed after {:?}: {err}", restored_at.elapsed()),
    }
    assert!(VmDir::list(root).unwrap().is_empty());
}

/// Whether process `pid` holds `file` open (compared by device and inode, so
/// that a jailed process, whose descriptors name paths inside its chroot, is
/// judged the same way).
fn holds_open(pid: u32, file: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    let Ok(wanted) = std::fs::metadata(file) else {
        return false;
    };
    let Ok(entries) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return false;
    };
    entries.filter_map(Result::ok).any(|entry| {
        std::fs::metadata(entry.path())
            .is_ok_and(|meta| meta.dev() == wanted.dev() && meta.ino() == wanted.ino())
    })
}

/// A VM with `Network::Nat` gets a tap device (in 198.18.0.0/15, the range
/// reserved for network tests; no traffic is sent), keeps a tap across
/// snapshot and restore, and destroy removes every tap.
#[tokio::test]
async fn a_networked_vm_gets_a_tap_that_destroy_removes() {
    let Some(binary) = firecracker_bin() else {
        return;
    };
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipped: creating tap devices needs root");
        return;
    }
    let Some(bzimage) = debian_kernel() else {
        return;
    };
    let mut fixture = Fixture::new(binary);
    fixture.backend.nat.subnet = std::net::Ipv4Addr::new(198, 18, 0, 0);
    let rootfs = fixture.file("rootfs.ext4", &vec![0u8; 1 << 20]);
    let mut spec = fixture.spec(bzimage, Some(rootfs), 1);
    spec.network = Network::Nat;
    let root = fixture.root.path();
    let mut vm = match fixture.backend.boot(&spec, fixture.vm_dir("net")).await {
        Ok(vm) => vm,
        Err(err) => {
            eprintln!("networked InstanceStart failed: {err}");
            assert_eq!(api_request(&err), Some("PUT /actions"), "{err}");
            assert!(VmDir::list(root).unwrap().is_empty());
            return;
        }
    };
    let tap = vm.tap().expect("a networked VM has a tap").clone();
    eprintln!(
        "tap {} host {} guest {}",
        tap.name, tap.host_ip, tap.guest_ip
    );
    assert!(Path::new("/sys/class/net").join(&tap.name).exists());
    assert_eq!(vm.dir().taps(), vec![tap.name.clone()]);
    let snapshot = vm.snapshot(root.join("net-snapshot")).await.unwrap();
    vm.destroy().await.unwrap();
    assert!(
        !Path::new("/sys/class/net").join(&tap.name).exists(),
        "tap survived destroy"
    );

    let restored = fixture
        .backend
        .restore(&snapshot, &spec, fixture.vm_dir("net-restored"))
        .await
        .unwrap();
    let new_tap = restored.tap().expect("the restored VM has a tap").clone();
    eprintln!("restored onto tap {}", new_tap.name);
    assert!(Path::new("/sys/class/net").join(&new_tap.name).exists());
    restored.destroy().await.unwrap();
    assert!(!Path::new("/sys/class/net").join(&new_tap.name).exists());
    assert!(VmDir::list(root).unwrap().is_empty());
}

trait EndpointExists {
    fn agent_endpoint_exists(&self) -> bool;
}

impl<T: VmInstance> EndpointExists for T {
    fn agent_endpoint_exists(&self) -> bool {
        match self.agent_endpoint() {
            firerunner_vm::AgentEndpoint::FirecrackerVsock { uds, .. } => uds.exists(),
            firerunner_vm::AgentEndpoint::Unix(path) => path.exists(),
        }
    }
}
