//! microVM sandboxes for firerunner.
//!
//! The flow of data through this crate:
//!
//! - [`image`]: guest images (kernel, initramfs, optional root filesystem) built
//!   from a recipe and cached by the recipe's hash; [`image::rootfs`] builds the
//!   Debian root filesystem (debootstrap, `mke2fs -d`).
//! - [`backend`]: the [`VmBackend`] trait every hypervisor backend implements
//!   (QEMU `microvm`, Firecracker), and the values they share.
//! - [`firecracker`]: the Firecracker backend.
//! - [`runtime`]: the per-VM runtime directory that records every process,
//!   socket, tap device and disk a VM owns, so nothing outlives its owner.
//! - [`qemu`] (with [`qemu::qmp`]): the QEMU `microvm` backend.
//! - [`agent_link`]: connecting to the guest agent behind an [`AgentEndpoint`].
//! - [`session`] (with [`pool`]): sessions of one VM each under limits, and a
//!   warm pool of VMs restored from a snapshot; [`lifecycle`] holds a session's
//!   states and [`metrics`] the counters the manager, its sessions and pool share.
//! - [`console`]: the guest's serial console, kept within a quota.
//! - [`reaper`]: freeing the VMs of owners that died.
#![warn(missing_docs)]

pub mod agent_link;
pub mod backend;
pub mod console;
pub mod firecracker;
pub mod image;
pub mod lifecycle;
pub mod metrics;
pub mod pool;
pub mod qemu;
pub mod reaper;
pub mod runtime;
pub mod session;
#[cfg(feature = "testing")]
pub mod testing;

pub use backend::{
    AgentEndpoint, BackendKind, Network, Snapshot, VmBackend, VmError, VmInstance, VmSpec,
};
pub use image::GuestImage;
pub use runtime::{VmDir, VmDirError};
