//! Helpers for tests that boot real guests (feature `testing`): the static
//! agent built by `scripts/build-agent.sh` (also run on the host over a socket
//! pair), the small test image, built once per process into the shared cache
//! outside the checkout, and git repositories for jobs to check out.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use crate::image::{self, GuestImage, ImageRecipe};
use crate::qemu::{Accel, QemuBackend, QemuConfig};
use crate::{Network, VmSpec};

/// The workspace root.
pub fn workspace() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The static agent: `$FIRERUNNER_AGENT_BIN` when set, else built by
/// `scripts/build-agent.sh` once per process.
pub fn agent_binary() -> PathBuf {
    static AGENT: OnceLock<PathBuf> = OnceLock::new();
    AGENT
        .get_or_init(|| {
            if let Some(path) = std::env::var_os("FIRERUNNER_AGENT_BIN") {
                return PathBuf::from(path);
            }
            let output = Command::new("bash")
                .arg(workspace().join("scripts/build-agent.sh"))
                .output()
                .expect("run scripts/build-agent.sh");
            assert!(
                output.status.success(),
                "building the agent failed:\n{}",
                String::from_utf8_lossy(&output.stderr)
            );
            PathBuf::from(String::from_utf8(output.stdout).expect("UTF-8 path").trim())
        })
        .clone()
}

/// The agent of [`agent_binary`] on the host, on one end of a socket pair: the
/// process and the host's end (see
/// [`firerunner_agent_proto::testing::agent_on_socket_pair`]).
pub fn host_agent() -> (std::process::Child, tokio::net::UnixStream) {
    firerunner_agent_proto::testing::agent_on_socket_pair(&agent_binary())
}

/// Runs `git` with a test identity in `dir`; its standard output, trimmed.
/// Panics when git fails.
pub fn git(dir: &Path, args: &[&str]) -> String {
    let output = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(["-c", "user.name=t", "-c", "user.email=t@example.com"])
        .args(args)
        .output()
        .expect("run git");
    assert!(output.status.success(), "git {args:?}: {output:?}");
    String::from_utf8(output.stdout)
        .expect("UTF-8 git output")
        .trim()
        .to_string()
}

/// Makes `dir` a git repository on branch `main` with one commit (`message`)
/// of every file in it; returns the commit id.
pub fn git_repo(dir: &Path, message: &str) -> String {
    git(dir, &["init", "-q", "-b", "main"]);
    git(dir, &["add", "."]);
    git(dir, &["commit", "-q", "-m", message]);
    git(dir, &["rev-parse", "HEAD"])
}

/// The small busybox test image.
pub fn test_image() -> GuestImage {
    static IMAGE: OnceLock<GuestImage> = OnceLock::new();
    IMAGE
        .get_or_init(|| {
            let recipe = ImageRecipe::test(agent_binary());
            let (image, _) = image::build(&recipe, &image::default_cache_dir(), &mut |_| {})
                .unwrap_or_else(|err| {
                    panic!("building the test image failed: {err} (run scripts/setup-vm.sh)")
                });
            image
        })
        .clone()
}

/// The test image with Dropbear beside the agent (see [`crate::image::ssh`]),
/// built once per process into the shared cache.
pub fn ssh_test_image() -> GuestImage {
    static IMAGE: OnceLock<GuestImage> = OnceLock::new();
    IMAGE
        .get_or_init(|| {
            let recipe = ImageRecipe::test_ssh(agent_binary());
            let (image, _) = image::build(&recipe, &image::default_cache_dir(), &mut |_| {})
                .unwrap_or_else(|err| {
                    panic!("building the SSH test image failed: {err} (run scripts/setup-vm.sh)")
                });
            image
        })
        .clone()
}

/// A spec for the test image: 1 vCPU, 256 MiB, no network.
pub fn test_spec() -> VmSpec {
    VmSpec {
        image: test_image(),
        vcpus: 1,
        memory_mib: 256,
        network: Network::None,
        boot_timeout: Duration::from_secs(60),
    }
}

/// QEMU under TCG: KVM on these machines is nested and unusable.
pub async fn qemu_tcg() -> QemuBackend {
    QemuBackend::new(QemuConfig {
        accel: Accel::Tcg,
        ..QemuConfig::default()
    })
    .await
    .expect("QEMU is installed (scripts/setup-vm.sh)")
}

/// The default Debian job image (bash, coreutils, git, curl, node, python3,
/// build-essential), built once into the shared cache (about a minute, as root).
pub fn debian_image() -> GuestImage {
    static IMAGE: OnceLock<GuestImage> = OnceLock::new();
    IMAGE
        .get_or_init(|| {
            let recipe = ImageRecipe::debian(agent_binary());
            let (image, _) = image::build(&recipe, &image::default_cache_dir(), &mut |_| {})
                .unwrap_or_else(|err| {
                    panic!("building the Debian image failed: {err} (run scripts/setup-vm.sh and scripts/setup-rootfs-tools.sh)")
                });
            image
        })
        .clone()
}

/// The spec the engine's workflow suite runs in: the Debian image, 512 MiB.
pub fn suite_spec() -> VmSpec {
    VmSpec {
        image: debian_image(),
        memory_mib: 512,
        ..test_spec()
    }
}

/// A session manager over QEMU/TCG with VM directories under `root`: with a
/// warm pool of `pool` VMs for `spec` (base snapshots kept in the shared
/// cache), or booting every VM when `pool` is 0.
pub async fn sessions(
    root: &std::path::Path,
    spec: &VmSpec,
    pool: usize,
) -> crate::session::SessionManager<QemuBackend> {
    let config = crate::session::SessionConfig {
        root: root.to_path_buf(),
        max_vms: pool + 2,
        max_sessions: 4,
        acquire_timeout: None,
    };
    let backend = qemu_tcg().await;
    if pool == 0 {
        crate::session::SessionManager::new(backend, config)
    } else {
        crate::session::SessionManager::with_pool(
            backend,
            config,
            spec.clone(),
            crate::pool::PoolConfig {
                size: pool,
                refill: true,
                snapshot_dir: image::default_cache_dir().join("snapshots"),
            },
        )
    }
}
