//! Guest images: what a VM boots, built from a recipe and cached by its hash.
//!
//! An image is a kernel (Debian's cloud kernel, from the package registry),
//! an initramfs (busybox, the virtio modules, the guest agent and
//! [`INIT_SCRIPT`]) and, for full images, an ext4 root filesystem the
//! initramfs hands over to. Images are immutable once built; each VM gets its
//! own copy-on-write overlay or copy.
//!
//! The cache lives outside any checkout (see [`default_cache_dir`]); an
//! image's directory is named by the SHA-256 of everything that goes into it
//! (recipe, kernel version, and the bytes of busybox and the agent), so a
//! rebuild happens exactly when an input changes.

mod cpio;
mod error;
mod guest;
mod kernel;
pub mod rootfs;
pub mod ssh;

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

pub use cpio::CpioWriter;
pub use error::ImageError;
pub use guest::GuestImage;
use kernel::unique_suffix;
pub use kernel::Kernel;
pub use ssh::SshRecipe;

/// The initramfs `/init`: loads the modules listed in `/etc/firerunner/modules`,
/// then runs the agent as PID 1, switching to the ext4 root named by
/// `firerunner.root=` on the kernel command line when there is one.
pub const INIT_SCRIPT: &str = include_str!("init.sh");

/// The kernel meta package images are built from by default.
pub const DEFAULT_KERNEL_PACKAGE: &str = "linux-image-cloud-amd64";

/// Modules the initramfs loads, in dependency order (the package has no
/// `modules.dep`): virtio transport, console, block, network, vsock.
pub const DEFAULT_MODULES: &[&str] = &[
    "virtio_ring",
    "virtio",
    "virtio_mmio",
    "virtio_console",
    "virtio_blk",
    "failover",
    "net_failover",
    "virtio_net",
    "vsock",
    "vmw_vsock_virtio_transport_common",
    "vmw_vsock_virtio_transport",
];

/// Which userland an image carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ImageKind {
    /// busybox and the agent in the initramfs only: boots fastest, for tests.
    Test,
    /// A Debian bookworm root filesystem (bash, coreutils, git, curl, node, python3,
    /// ca-certificates, build-essential and the agent): the default for jobs.
    Debian,
}

/// Everything an image is built from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageRecipe {
    /// Which userland.
    pub kind: ImageKind,
    /// The kernel meta package to resolve (e.g. `linux-image-cloud-amd64`).
    pub kernel_package: String,
    /// Kernel modules to load at boot, in order.
    pub modules: Vec<String>,
    /// A statically linked busybox (Debian's `busybox-static`).
    pub busybox: PathBuf,
    /// The statically linked guest agent (`scripts/build-agent.sh`).
    pub agent: PathBuf,
    /// The root filesystem, for [`ImageKind::Debian`].
    pub rootfs: Option<rootfs::RootfsRecipe>,
    /// Dropbear beside the agent (test images only; see [`ssh`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ssh: Option<SshRecipe>,
}

impl ImageRecipe {
    /// The small test image from the given agent binary, with Debian's kernel
    /// and `/bin/busybox`.
    pub fn test(agent: PathBuf) -> Self {
        Self {
            kind: ImageKind::Test,
            kernel_package: DEFAULT_KERNEL_PACKAGE.to_string(),
            modules: DEFAULT_MODULES.iter().map(|m| m.to_string()).collect(),
            busybox: PathBuf::from("/bin/busybox"),
            agent,
            rootfs: None,
            ssh: None,
        }
    }

    /// The test image with an SSH server (Dropbear) beside the agent, for
    /// benchmarks that compare the two.
    pub fn test_ssh(agent: PathBuf) -> Self {
        Self {
            ssh: Some(SshRecipe::default()),
            ..Self::test(agent)
        }
    }

    /// The default job image: Debian bookworm with the default packages.
    pub fn debian(agent: PathBuf) -> Self {
        Self {
            kind: ImageKind::Debian,
            rootfs: Some(rootfs::RootfsRecipe::default()),
            ..Self::test(agent)
        }
    }
}

/// A step of an image build, for progress display.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BuildProgress {
    /// Starting a named stage (`stage` of `of`).
    Stage {
        /// 1-based stage number.
        stage: u32,
        /// Number of stages.
        of: u32,
        /// What it does.
        what: String,
    },
    /// A line of output from a long step (debootstrap, mke2fs).
    Output(String),
    /// The image was already in the cache.
    Cached(PathBuf),
    /// The image is ready in this directory.
    Done(PathBuf),
}

/// The image cache: `$FIRERUNNER_CACHE_DIR`, else `$XDG_CACHE_HOME/firerunner`,
/// else `~/.cache/firerunner` (outside any checkout, so rebuilds of a clone reuse it).
pub fn default_cache_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("FIRERUNNER_CACHE_DIR") {
        return dir.into();
    }
    if let Some(dir) = std::env::var_os("XDG_CACHE_HOME") {
        return PathBuf::from(dir).join("firerunner");
    }
    let home = std::env::var_os("HOME").unwrap_or_else(|| "/root".into());
    PathBuf::from(home).join(".cache/firerunner")
}

/// Builds the image `recipe` describes into `cache`, or returns the cached one.
pub fn build(
    recipe: &ImageRecipe,
    cache: &Path,
    progress: &mut dyn FnMut(BuildProgress),
) -> Result<(GuestImage, PathBuf), ImageError> {
    let mut build = ImageBuild::resolve(recipe, cache, progress)?;
    let dir = cache.join("images").join(&build.name);
    if let Ok(image) = GuestImage::load(&dir) {
        (build.progress)(BuildProgress::Cached(dir.clone()));
        return Ok((image, dir));
    }
    let work = build.work_dir()?;
    let image = build.assemble(&work, &dir)?;
    publish(recipe, &image, &work, &dir)?;
    (build.progress)(BuildProgress::Done(dir.clone()));
    Ok((image, dir))
}

/// An image build under way: the recipe, the inputs resolved for it and
/// where progress goes.
struct ImageBuild<'a> {
    recipe: &'a ImageRecipe,
    cache: &'a Path,
    progress: &'a mut dyn FnMut(BuildProgress),
    stages: u32,
    package: String,
    version: String,
    busybox: Vec<u8>,
    agent: Vec<u8>,
    ssh: Option<ssh::SshBinaries>,
    /// The cache key.
    key: String,
    /// `<kind>-<key prefix>`: the image's folder in the cache.
    name: String,
}

impl<'a> ImageBuild<'a> {
    /// Stage 1: resolves the kernel package, reads the binaries and computes
    /// the cache key.
    fn resolve(
        recipe: &'a ImageRecipe,
        cache: &'a Path,
        progress: &'a mut dyn FnMut(BuildProgress),
    ) -> Result<Self, ImageError> {
        let stages = if recipe.rootfs.is_some() { 4 } else { 3 };
        progress(BuildProgress::Stage {
            stage: 1,
            of: stages,
            what: format!("resolving {}", recipe.kernel_package),
        });
        let (package, version) = kernel::resolve(&recipe.kernel_package)?;
        let busybox = read_static(&recipe.busybox)?;
        let agent = read_static(&recipe.agent)?;
        let ssh = ssh_binaries(recipe)?;
        let mut key = recipe_key(recipe, &package, &version, &busybox, &agent);
        let mut kind = serde_json::to_value(recipe.kind)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default();
        if let Some(binaries) = &ssh {
            key = ssh_key(&key, binaries);
            kind.push_str("-ssh");
        }
        let name = format!("{kind}-{}", &key[..16]);
        Ok(Self {
            recipe,
            cache,
            progress,
            stages,
            package,
            version,
            busybox,
            agent,
            ssh,
            key,
            name,
        })
    }

    fn stage(&mut self, stage: u32, what: String) {
        let of = self.stages;
        (self.progress)(BuildProgress::Stage { stage, of, what });
    }

    /// A fresh folder beside the cached images to build this one in.
    fn work_dir(&self) -> Result<PathBuf, ImageError> {
        let name = format!(".{}.{}", self.name, unique_suffix());
        let work = self.cache.join("images").join(name);
        let _ = std::fs::remove_dir_all(&work);
        std::fs::create_dir_all(&work).map_err(|err| ImageError::io(&work, err))?;
        Ok(work)
    }

    /// Stages 2 to 4: the kernel, the initramfs and the root filesystem, in
    /// `work`; the image as it will be once `work` is `dir`.
    fn assemble(&mut self, work: &Path, dir: &Path) -> Result<GuestImage, ImageError> {
        self.stage(2, format!("fetching {} {}", self.package, self.version));
        let kernel = kernel::fetch(self.cache, &self.package, &self.version)?;
        self.stage(3, "writing the initramfs".into());
        let kernel_path = work.join("vmlinuz");
        std::fs::copy(kernel.bzimage()?, &kernel_path)
            .map_err(|err| ImageError::io(&kernel_path, err))?;
        let ssh = match (&self.recipe.ssh, self.ssh.take()) {
            (Some(ssh_recipe), Some(binaries)) => {
                let (host_key, authorized_key) = ssh::make_keys(ssh_recipe, work)?;
                Some((binaries, host_key, authorized_key))
            }
            _ => None,
        };
        let initrd = work.join("initrd.cpio");
        let modules = &self.recipe.modules;
        write_initramfs(
            &initrd,
            &kernel,
            modules,
            &self.busybox,
            &self.agent,
            ssh.as_ref(),
        )?;
        let rootfs = match &self.recipe.rootfs {
            None => None,
            Some(rootfs_recipe) => {
                self.rootfs(rootfs_recipe, work)?;
                Some(dir.join("rootfs.ext4"))
            }
        };
        Ok(GuestImage {
            kernel: dir.join("vmlinuz"),
            initrd: dir.join("initrd.cpio"),
            rootfs,
            kernel_cmdline: String::new(),
        })
    }

    /// Stage 4: the Debian root filesystem, into `work/rootfs.ext4`.
    fn rootfs(
        &mut self,
        rootfs_recipe: &rootfs::RootfsRecipe,
        work: &Path,
    ) -> Result<(), ImageError> {
        self.stage(
            4,
            format!(
                "building the Debian {} root filesystem (debootstrap)",
                rootfs_recipe.suite
            ),
        );
        let scratch = self.cache.join("rootfs-work").join(&self.key[..16]);
        let progress = &mut *self.progress;
        rootfs::build_debian_rootfs(
            rootfs_recipe,
            &self.recipe.agent,
            &scratch,
            &work.join("rootfs.ext4"),
            &mut |event| {
                if let rootfs::RootfsProgress::Output { tool, line } = event {
                    progress(BuildProgress::Output(format!("{tool}: {line}")));
                }
            },
        )?;
        Ok(())
    }
}

/// The SSH server's binaries, for the test image's SSH variant.
fn ssh_binaries(recipe: &ImageRecipe) -> Result<Option<ssh::SshBinaries>, ImageError> {
    match &recipe.ssh {
        Some(_) if recipe.rootfs.is_some() => Err(ImageError::Command {
            command: "building an image with SSH".into(),
            detail: "only the test image (no root filesystem) has an SSH variant".into(),
        }),
        Some(ssh) => Ok(Some(ssh::SshBinaries::read(ssh)?)),
        None => Ok(None),
    }
}

/// Writes the recipe and manifest into `work` and moves it to `dir`, unless
/// another process has built the same image meanwhile (and may be booting
/// it): then its copy stays.
fn publish(
    recipe: &ImageRecipe,
    image: &GuestImage,
    work: &Path,
    dir: &Path,
) -> Result<(), ImageError> {
    let manifest = serde_json::to_string_pretty(image).expect("image serialises");
    let recipe_json = serde_json::to_string_pretty(recipe).expect("recipe serialises");
    write(&work.join("recipe.json"), recipe_json.as_bytes())?;
    write(&work.join("image.json"), manifest.as_bytes())?;
    if GuestImage::load(dir).is_err() {
        let _ = std::fs::remove_dir_all(dir);
        if let Err(err) = std::fs::rename(work, dir) {
            if GuestImage::load(dir).is_err() {
                let _ = std::fs::remove_dir_all(work);
                return Err(ImageError::io(dir, err));
            }
        }
    }
    let _ = std::fs::remove_dir_all(work);
    Ok(())
}

fn write(path: &Path, bytes: &[u8]) -> Result<(), ImageError> {
    std::fs::write(path, bytes).map_err(|err| ImageError::io(path, err))
}

/// The cache key: SHA-256 over the recipe, the resolved kernel and the bytes
/// of every binary that goes into the image.
fn recipe_key(
    recipe: &ImageRecipe,
    package: &str,
    version: &str,
    busybox: &[u8],
    agent: &[u8],
) -> String {
    let mut hash = Sha256::new();
    hash.update(
        serde_json::to_vec(&(recipe.kind, &recipe.modules, &recipe.rootfs)).expect("serialises"),
    );
    hash.update(INIT_SCRIPT.as_bytes());
    hash.update(format!("{package}={version}").as_bytes());
    hash.update(Sha256::digest(busybox));
    hash.update(Sha256::digest(agent));
    hash.finalize()
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

/// The cache key of an image with SSH: the plain key, the wrapper script
/// and every byte Dropbear brings.
fn ssh_key(plain: &str, binaries: &ssh::SshBinaries) -> String {
    let mut hash = Sha256::new();
    hash.update(plain.as_bytes());
    hash.update(ssh::AGENT_WRAPPER.as_bytes());
    for (path, bytes) in &binaries.files {
        hash.update(path.as_bytes());
        hash.update(Sha256::digest(bytes));
    }
    hash.finalize()
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

/// The directories every initramfs has.
const INITRAMFS_DIRS: &[&str] = &[
    "/bin",
    "/sbin",
    "/dev",
    "/etc",
    "/etc/firerunner",
    "/lib",
    "/lib/modules",
    "/proc",
    "/sys",
    "/run",
    "/tmp",
    "/newroot",
    "/usr",
    "/usr/bin",
    "/usr/sbin",
];

fn write_initramfs(
    path: &Path,
    kernel: &Kernel,
    modules: &[String],
    busybox: &[u8],
    agent: &[u8],
    ssh: Option<&(ssh::SshBinaries, Vec<u8>, Vec<u8>)>,
) -> Result<(), ImageError> {
    let file = std::fs::File::create(path).map_err(|err| ImageError::io(path, err))?;
    let mut cpio = CpioWriter::new(std::io::BufWriter::new(file));
    let io = |err| ImageError::io(path, err);
    for dir in INITRAMFS_DIRS {
        cpio.directory(dir, 0o755).map_err(io)?;
    }
    cpio.char_device("/dev/console", 0o600, 5, 1).map_err(io)?;
    cpio.char_device("/dev/null", 0o666, 1, 3).map_err(io)?;
    cpio.file("/bin/busybox", 0o755, busybox).map_err(io)?;
    cpio.symlink("/bin/sh", "busybox").map_err(io)?;
    match ssh {
        None => cpio
            .file("/sbin/firerunner-agent", 0o755, agent)
            .map_err(io)?,
        Some((binaries, host_key, authorized_key)) => ssh::add_to_initramfs(
            &mut cpio,
            binaries,
            host_key,
            authorized_key,
            agent,
            INITRAMFS_DIRS,
        )
        .map_err(io)?,
    }
    cpio.file("/init", 0o755, INIT_SCRIPT.as_bytes())
        .map_err(io)?;
    add_modules(&mut cpio, kernel, modules, path)?;
    cpio.finish().map_err(io)?;
    Ok(())
}

/// The kernel's `modules`, and the order to load them in, into the
/// initramfs being written to `path`.
fn add_modules<W: std::io::Write>(
    cpio: &mut CpioWriter<W>,
    kernel: &Kernel,
    modules: &[String],
    path: &Path,
) -> Result<(), ImageError> {
    let io = |err| ImageError::io(path, err);
    let mut order = String::new();
    for module in modules {
        let source = kernel.module(module)?;
        let bytes = std::fs::read(&source).map_err(|err| ImageError::io(&source, err))?;
        cpio.file(&format!("/lib/modules/{module}.ko"), 0o644, &bytes)
            .map_err(io)?;
        order.push_str(module);
        order.push('\n');
    }
    cpio.file("/etc/firerunner/modules", 0o644, order.as_bytes())
        .map_err(io)
}

/// Whether the file at `path` is a statically linked ELF executable.
pub fn is_static_binary(path: &Path) -> bool {
    std::fs::read(path).is_ok_and(|bytes| bytes.starts_with(b"\x7fELF") && !has_interpreter(&bytes))
}

/// Reads a binary and checks it has no program interpreter (it is static).
fn read_static(path: &Path) -> Result<Vec<u8>, ImageError> {
    let bytes = std::fs::read(path).map_err(|err| ImageError::io(path, err))?;
    if has_interpreter(&bytes) {
        return Err(ImageError::NotStatic(path.to_path_buf()));
    }
    Ok(bytes)
}

/// Whether a 64-bit little-endian ELF file has a `PT_INTERP` program header.
fn has_interpreter(elf: &[u8]) -> bool {
    let read_u16 = |at: usize| {
        elf.get(at..at + 2)
            .map(|b| u16::from_le_bytes([b[0], b[1]]) as usize)
    };
    let read_u64 = |at: usize| {
        elf.get(at..at + 8)
            .map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes")) as usize)
    };
    if !elf.starts_with(b"\x7fELF") || elf.get(4) != Some(&2) {
        return false;
    }
    let (Some(phoff), Some(entsize), Some(count)) =
        (read_u64(0x20), read_u16(0x36), read_u16(0x38))
    else {
        return false;
    };
    (0..count).any(|i| {
        elf.get(phoff + i * entsize..phoff + i * entsize + 4)
            .is_some_and(|t| u32::from_le_bytes(t.try_into().expect("4 bytes")) == 3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dynamic_binaries_are_told_apart_from_static_ones() {
        let ls = std::fs::read("/bin/ls").unwrap();
        assert!(has_interpreter(&ls), "/bin/ls is dynamically linked");
        assert!(!has_interpreter(b"#!/bin/sh\n"));
    }

    #[test]
    fn the_key_changes_with_every_input() {
        let recipe = ImageRecipe::test(PathBuf::from("/agent"));
        let base = recipe_key(&recipe, "linux-image-x", "1", b"busybox", b"agent");
        assert_eq!(
            base,
            recipe_key(&recipe, "linux-image-x", "1", b"busybox", b"agent")
        );
        assert_ne!(
            base,
            recipe_key(&recipe, "linux-image-x", "2", b"busybox", b"agent")
        );
        assert_ne!(
            base,
            recipe_key(&recipe, "linux-image-x", "1", b"busybox", b"agent2")
        );
        assert_ne!(
            base,
            recipe_key(&recipe, "linux-image-x", "1", b"busybox2", b"agent")
        );
        let mut fewer = recipe.clone();
        fewer.modules.pop();
        assert_ne!(
            base,
            recipe_key(&fewer, "linux-image-x", "1", b"busybox", b"agent")
        );
    }
}
