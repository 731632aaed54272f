//! A built image as backends see it: its files and kernel command line, and its manifest.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::error::ImageError;

/// A built, immutable guest image: the files a backend boots from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GuestImage {
    /// Kernel image (bzImage for QEMU; Firecracker extracts a vmlinux from it).
    pub kernel: PathBuf,
    /// Initramfs (uncompressed `newc` cpio) that loads the virtio modules.
    pub initrd: PathBuf,
    /// Root filesystem (ext4) the initramfs hands over to; `None` when the
    /// initramfs itself is the whole userland (the small test image).
    pub rootfs: Option<PathBuf>,
    /// Kernel command line the image needs, before backend-specific additions.
    pub kernel_cmdline: String,
}

impl GuestImage {
    /// Loads the image described by `<dir>/image.json`.
    pub fn load(dir: &Path) -> Result<Self, ImageError> {
        let manifest = dir.join("image.json");
        let text =
            std::fs::read_to_string(&manifest).map_err(|err| ImageError::io(&manifest, err))?;
        serde_json::from_str(&text).map_err(|err| ImageError::Manifest {
            path: manifest,
            reason: err.to_string(),
        })
    }
}
