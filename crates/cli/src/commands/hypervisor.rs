//! The hypervisor that `run`, `vm run` and `serve` start VMs with: the values of
//! `--backend` and `--accel` (and of the service's `vm.backend` and `vm.accel`).

use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Result};
use clap::ValueEnum;
use firerunner_server::config::JailerSettings;
use firerunner_vm::firecracker::{FirecrackerBackend, JailerConfig};
use firerunner_vm::qemu::{Accel, QemuBackend, QemuConfig};

/// Which hypervisor runs the VMs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Backend {
    /// QEMU's microvm machine, under TCG or KVM.
    Qemu,
    /// Firecracker (needs hardware KVM; the binary from $FIRECRACKER_BIN or PATH).
    Firecracker,
}

/// Which accelerator QEMU uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum AccelChoice {
    /// KVM when a tiny guest shows it is usable, else TCG.
    Auto,
    /// Hardware virtualisation through /dev/kvm.
    Kvm,
    /// Software emulation: slow but works everywhere.
    Tcg,
}

impl From<AccelChoice> for Accel {
    fn from(choice: AccelChoice) -> Self {
        match choice {
            AccelChoice::Auto => Accel::Auto,
            AccelChoice::Kvm => Accel::Kvm,
            AccelChoice::Tcg => Accel::Tcg,
        }
    }
}

/// `value` of the configuration key `key` as one of `T`'s values.
pub fn from_config<T: ValueEnum>(key: &str, value: &str) -> Result<T> {
    T::from_str(value, false).map_err(|error| anyhow!("{key}: {error}"))
}

/// QEMU with the accelerator `accel`.
pub async fn qemu(accel: AccelChoice) -> Result<QemuBackend> {
    Ok(QemuBackend::new(QemuConfig {
        accel: accel.into(),
        ..QemuConfig::default()
    })
    .await?)
}

/// Firecracker from `$FIRECRACKER_BIN`, else `firecracker` on the PATH,
/// under the jailer `jailer` describes, checked to run.
pub async fn firecracker(jailer: Option<JailerConfig>) -> Result<FirecrackerBackend> {
    let binary = std::env::var_os("FIRECRACKER_BIN").unwrap_or_else(|| "firecracker".into());
    let mut backend = FirecrackerBackend::new(binary);
    backend.jailer = jailer;
    backend.check().await?;
    Ok(backend)
}

/// The jailer the service runs Firecracker under: `None` when the operator
/// turned it off, an error saying what to do when it is on but cannot work
/// (no binary, not root). `env_binary` is `$FIRECRACKER_JAILER`.
pub fn service_jailer(
    settings: &JailerSettings,
    env_binary: Option<PathBuf>,
    is_root: bool,
) -> Result<Option<JailerConfig>> {
    if !settings.enabled {
        return Ok(None);
    }
    let wanted = env_binary.unwrap_or_else(|| PathBuf::from(&settings.binary));
    let binary = find_program(&wanted).ok_or_else(|| {
        anyhow!(
            "vm.backend = \"firecracker\" runs every VM under Firecracker's jailer, but the \
             jailer '{}' was not found: install the jailer of the same release as firecracker \
             (set [vm.jailer] binary or $FIRECRACKER_JAILER), or set [vm.jailer] enabled = false \
             to run Firecracker unjailed as the service's user (see docs/security.md)",
            wanted.display()
        )
    })?;
    if !is_root {
        bail!(
            "[vm.jailer] needs root (it builds a chroot and drops to uid {}): start the service \
             as root, or set [vm.jailer] enabled = false",
            settings.uid
        );
    }
    let mut jailer = JailerConfig::new(binary, settings.uid, settings.gid);
    jailer.chroot_base = settings.chroot_base.clone();
    Ok(Some(jailer))
}

/// `program` itself when it names a path, else the first match on `PATH`.
fn find_program(program: &Path) -> Option<PathBuf> {
    if program.components().count() > 1 {
        return program.is_file().then(|| program.to_path_buf());
    }
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|dir| dir.join(program))
        .find(|candidate| candidate.is_file())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_service_jailer_is_on_by_default_and_says_how_to_go_without() {
        let settings = JailerSettings {
            binary: "/nonexistent/jailer".into(),
            ..JailerSettings::default()
        };
        assert!(settings.enabled);
        let error = service_jailer(&settings, None, true)
            .unwrap_err()
            .to_string();
        assert!(error.contains("/nonexistent/jailer"), "{error}");
        assert!(error.contains("enabled = false"), "{error}");

        let off = JailerSettings {
            enabled: false,
            ..settings
        };
        assert_eq!(service_jailer(&off, None, true).unwrap(), None);
    }

    #[test]
    fn the_service_jailer_comes_from_the_environment_or_path_and_needs_root() {
        let dir = tempfile::tempdir().unwrap();
        let binary = dir.path().join("jailer");
        std::fs::write(&binary, "").unwrap();
        let settings = JailerSettings {
            uid: 4242,
            gid: 4343,
            chroot_base: dir.path().join("jails"),
            ..JailerSettings::default()
        };
        let jailer = service_jailer(&settings, Some(binary.clone()), true)
            .unwrap()
            .unwrap();
        assert_eq!(
            (jailer.binary, jailer.uid, jailer.gid, jailer.chroot_base),
            (binary.clone(), 4242, 4343, dir.path().join("jails"))
        );
        let error = service_jailer(&settings, Some(binary), false).unwrap_err();
        assert!(error.to_string().contains("needs root"), "{error}");
        // A bare name is looked up on PATH: `sh` is there on every machine.
        let sh = JailerSettings {
            binary: "sh".into(),
            ..JailerSettings::default()
        };
        let found = service_jailer(&sh, None, true).unwrap().unwrap();
        assert!(found.binary.is_absolute(), "{}", found.binary.display());
    }
}
