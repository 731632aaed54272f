//! The hypervisor that `run`, `vm run` and `serve` start VMs with: the values of
//! `--backend` and `--accel` (and of the service's `vm.backend` and `vm.accel`).

use anyhow::{anyhow, Result};
use clap::ValueEnum;
use firerunner_vm::firecracker::FirecrackerBackend;
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

/// Firecracker from `$FIRECRACKER_BIN`, else `firecracker` on the PATH, checked to run.
pub async fn firecracker() -> Result<FirecrackerBackend> {
    let binary = std::env::var_os("FIRECRACKER_BIN").unwrap_or_else(|| "firecracker".into());
    let backend = FirecrackerBackend::new(binary);
    backend.check().await?;
    Ok(backend)
}
