//! The default guest root filesystem: a Debian tree made with `debootstrap`,
//! holding the guest agent, written to an ext4 image with `mke2fs -d`.
//!
//! No loop mounts are used: `mke2fs -d` copies a directory tree straight into
//! a new file system image, and `debugfs`/`e2fsck` read the image as a file.
//! Only `debootstrap` itself needs root (it creates device nodes and chroots).
//!
//! The initramfs mounts the image (label [`ROOTFS_LABEL`]) and switches root to
//! it, running [`AGENT_GUEST_PATH`] as PID 1; `/sbin/init` points at the agent
//! too, so a plain `switch_root /newroot /sbin/init` works as well.
//!
//! With Debian's `linux-image-6.1.0-*-cloud-amd64`, ext4 (with jbd2, mbcache,
//! crc16 and crc32c) is built in; the initramfs must load, in this order,
//! `virtio_ring`, `virtio`, `virtio_mmio`, `virtio_blk` for the root disk
//! (`/dev/vda`), plus `virtio_console` for the agent's virtio-serial port or
//! `vsock`, `vmw_vsock_virtio_transport_common`, `vmw_vsock_virtio_transport`
//! for vsock.

use std::collections::{BTreeSet, HashSet, VecDeque};
use std::fs;
use std::io::{self, BufRead, BufReader, Read};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::mpsc;

use serde::{Deserialize, Serialize};

/// Mirror used when a recipe names none: Debian's CDN, which this project's
/// machines reach directly.
pub const DEFAULT_MIRROR: &str = "http://deb.debian.org/debian";
/// Debian release the default image is built from.
pub const DEFAULT_SUITE: &str = "bookworm";
/// Packages of the default image (dependencies are pulled in by debootstrap).
pub const DEFAULT_PACKAGES: &[&str] = &[
    "bash",
    "build-essential",
    "ca-certificates",
    "coreutils",
    "curl",
    "git",
    "nodejs",
    "python-is-python3",
    "python3",
];
/// Free space, beyond the installed files, that the default image offers jobs.
pub const DEFAULT_EXTRA_SIZE_MIB: u64 = 512;
/// Host name written into the default image.
pub const DEFAULT_HOSTNAME: &str = "firerunner";
/// File system label of the image, for `root=LABEL=…` or `findfs`.
pub const ROOTFS_LABEL: &str = "firerunner-root";
/// Where the guest agent lives inside the root file system.
pub const AGENT_GUEST_PATH: &str = "/sbin/firerunner-agent";

/// Block size of the images this module writes, in bytes.
const BLOCK_SIZE: u64 = 4096;
const MIB: u64 = 1024 * 1024;
/// Smallest image written, so tiny trees still fit a journal and metadata.
const MIN_IMAGE_BYTES: u64 = 64 * MIB;
/// Bytes of free space per spare inode, as in mke2fs's default `inode_ratio`.
const BYTES_PER_SPARE_INODE: u64 = 16 * 1024;
/// Inodes every image gets beyond what the tree and free space call for.
const SPARE_INODES: u64 = 1024;
/// How many trailing lines of a failed command an error keeps.
const TAIL_LINES: usize = 25;

/// What to build: everything that decides the content of the root file
/// system except the agent binary.
///
/// The serialised form is stable (fields in declaration order, packages
/// sorted and de-duplicated by the set), so it can be hashed as a cache key;
/// the agent binary's own hash must be added to that key by the caller.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RootfsRecipe {
    /// Debian suite (release code name), e.g. `bookworm`.
    pub suite: String,
    /// Debian mirror URL (`http://`, `https://` or `file:/`).
    pub mirror: String,
    /// Packages installed on top of debootstrap's `minbase` variant.
    pub packages: BTreeSet<String>,
    /// Free space left in the image beyond the installed files, in MiB.
    pub extra_size_mib: u64,
    /// Host name of the guest (`/etc/hostname`, `/etc/hosts`).
    pub hostname: String,
}

impl Default for RootfsRecipe {
    fn default() -> Self {
        RootfsRecipe {
            suite: DEFAULT_SUITE.to_string(),
            mirror: DEFAULT_MIRROR.to_string(),
            packages: DEFAULT_PACKAGES.iter().map(|p| p.to_string()).collect(),
            extra_size_mib: DEFAULT_EXTRA_SIZE_MIB,
            hostname: DEFAULT_HOSTNAME.to_string(),
        }
    }
}

impl RootfsRecipe {
    /// Checks every field is well formed, so none can smuggle options into
    /// debootstrap's command line or break the files written from it.
    pub fn validate(&self) -> Result<(), RootfsError> {
        let invalid = |field: &'static str, value: &str, expected: &'static str| {
            Err(RootfsError::InvalidRecipe {
                field,
                value: value.to_string(),
                expected,
            })
        };
        let suite_ok = self.suite.starts_with(|c: char| c.is_ascii_lowercase())
            && self
                .suite
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if !suite_ok {
            return invalid(
                "suite",
                &self.suite,
                "a lower-case letter, then lower-case letters, digits and '-'",
            );
        }
        let mirror_ok = ["http://", "https://", "file:/"]
            .iter()
            .any(|scheme| self.mirror.starts_with(scheme))
            && !self.mirror.bytes().any(|b| b.is_ascii_whitespace());
        if !mirror_ok {
            return invalid(
                "mirror",
                &self.mirror,
                "an http://, https:// or file:/ URL without spaces",
            );
        }
        for package in &self.packages {
            if !is_debian_package_name(package) {
                return invalid(
                    "packages",
                    package,
                    "Debian package names: [a-z0-9][a-z0-9+.-]+",
                );
            }
        }
        if !is_hostname(&self.hostname) {
            return invalid(
                "hostname",
                &self.hostname,
                "1-63 letters, digits or '-', not starting or ending with '-'",
            );
        }
        Ok(())
    }
}

fn is_debian_package_name(name: &str) -> bool {
    let bytes = name.as_bytes();
    bytes.len() >= 2
        && (bytes[0].is_ascii_lowercase() || bytes[0].is_ascii_digit())
        && bytes.iter().all(|&b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'+' | b'-' | b'.')
        })
}

fn is_hostname(name: &str) -> bool {
    (1..=63).contains(&name.len())
        && !name.starts_with('-')
        && !name.ends_with('-')
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

/// The steps of [`build_debian_rootfs`], reported as each begins.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RootfsStage {
    /// debootstrap downloads and installs the packages.
    Bootstrapping,
    /// The agent, host name, hosts, fstab and mount points are written.
    Customising,
    /// Package caches, lists, documentation and logs are removed.
    Cleaning,
    /// The tree's size is measured to size the image.
    Measuring,
    /// `mke2fs -d` writes the image.
    WritingImage,
    /// The image is in place.
    Done,
}

/// Progress of a root file system build, for logs and progress displays.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RootfsProgress {
    /// A step begins.
    Stage(RootfsStage),
    /// A line a tool printed (stdout or stderr), in order of arrival.
    Output {
        /// The tool, e.g. `debootstrap` or `mke2fs`.
        tool: &'static str,
        /// The line, without its line ending.
        line: String,
    },
    /// The tree was measured and the image will have this size.
    Sized {
        /// What the tree occupies.
        usage: TreeUsage,
        /// Size of the image file, in bytes.
        image_bytes: u64,
        /// Inodes the image is created with (at least).
        image_inodes: u64,
    },
}

/// Failures of building or checking a root file system.
#[derive(Debug, thiserror::Error)]
pub enum RootfsError {
    /// The recipe has a malformed field.
    #[error("invalid rootfs recipe: {field} {value:?} is not {expected}")]
    InvalidRecipe {
        /// The field's name.
        field: &'static str,
        /// The rejected value.
        value: String,
        /// What was expected instead.
        expected: &'static str,
    },
    /// debootstrap must run as root (it creates device nodes and chroots).
    #[error("building the Debian rootfs needs root: debootstrap creates device nodes and chroots")]
    NotRoot,
    /// A host tool is not installed.
    #[error("{tool} not found on PATH, /usr/sbin or /sbin: run scripts/setup-rootfs-tools.sh")]
    ToolMissing {
        /// The missing tool.
        tool: &'static str,
    },
    /// The agent binary to install is not a regular file.
    #[error("agent binary {0} is not a readable regular file")]
    AgentMissing(PathBuf),
    /// A tool could not be started.
    #[error("cannot start {command}: {source}")]
    Spawn {
        /// The command line.
        command: String,
        /// Why it failed.
        source: io::Error,
    },
    /// A tool exited unsuccessfully.
    #[error("{command} failed ({status}); last output:\n{output_tail}")]
    CommandFailed {
        /// The command line.
        command: String,
        /// Its exit status.
        status: ExitStatus,
        /// Its last lines of output (stderr for captured commands).
        output_tail: String,
    },
    /// A path inside the tree leads outside it (e.g. an absolute symlink).
    #[error("{0} resolves outside the root file system tree")]
    EscapesTree(PathBuf),
    /// A file operation failed.
    #[error("{action} {path}: {source}")]
    Io {
        /// What was being done.
        action: &'static str,
        /// The path involved.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
    /// An image failed its consistency or content check.
    #[error("image {image} failed its check: {problem}")]
    BadImage {
        /// The image checked.
        image: PathBuf,
        /// What is wrong.
        problem: String,
    },
}

fn io_error(action: &'static str, path: &Path) -> impl FnOnce(io::Error) -> RootfsError {
    let path = path.to_path_buf();
    move |source| RootfsError::Io {
        action,
        path,
        source,
    }
}

/// What a directory tree occupies once copied into an ext4 file system with
/// 4 KiB blocks (hard links counted once).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TreeUsage {
    /// Data and directory blocks, in bytes.
    pub bytes: u64,
    /// Distinct inodes (files, directories, links, device nodes).
    pub inodes: u64,
}

/// Measures `root` without following symlinks or crossing into other files'
/// targets: regular files and directories are rounded up to whole blocks,
/// symlinks short enough to live in their inode take no block.
pub fn measure_tree(root: &Path) -> Result<TreeUsage, RootfsError> {
    let mut usage = TreeUsage::default();
    let mut seen_links: HashSet<(u64, u64)> = HashSet::new();
    let mut pending = vec![root.to_path_buf()];
    while let Some(path) = pending.pop() {
        let meta = fs::symlink_metadata(&path).map_err(io_error("measure", &path))?;
        if meta.nlink() > 1 && !meta.is_dir() && !seen_links.insert((meta.dev(), meta.ino())) {
            continue;
        }
        usage.inodes += 1;
        let file_type = meta.file_type();
        if file_type.is_dir() {
            usage.bytes += round_up(meta.len().max(1), BLOCK_SIZE);
            for entry in fs::read_dir(&path).map_err(io_error("list", &path))? {
                pending.push(entry.map_err(io_error("list", &path))?.path());
            }
        } else if file_type.is_file() {
            usage.bytes += round_up(meta.len(), BLOCK_SIZE);
        } else if file_type.is_symlink() && meta.len() >= 60 {
            usage.bytes += BLOCK_SIZE;
        }
    }
    Ok(usage)
}

fn round_up(value: u64, multiple: u64) -> u64 {
    value.div_ceil(multiple) * multiple
}

/// Size of the image for a tree using `used_bytes`: the used bytes plus 20%
/// for file system metadata (journal, inode tables, bitmaps), plus
/// `extra_size_mib` of free space, rounded up to a whole MiB and at least
/// 64 MiB.
pub fn image_size_bytes(used_bytes: u64, extra_size_mib: u64) -> u64 {
    let wanted = used_bytes + used_bytes / 5 + extra_size_mib * MIB;
    round_up(wanted, MIB).max(MIN_IMAGE_BYTES)
}

/// Inodes the image is created with: the tree's plus 20%, one per 16 KiB of
/// free space (mke2fs's default ratio) and 1024 spare.
pub fn image_inode_count(used_inodes: u64, extra_size_mib: u64) -> u64 {
    used_inodes + used_inodes / 5 + extra_size_mib * MIB / BYTES_PER_SPARE_INODE + SPARE_INODES
}

/// Builds the Debian root file system image `out_image` from `recipe`,
/// installing `agent_binary` at [`AGENT_GUEST_PATH`].
///
/// `work_dir` holds the debootstrap tree (removed after success) and a cache
/// of downloaded packages (kept, so rebuilds download less). The image is
/// written under a temporary name next to `out_image` and renamed into place,
/// so `out_image` is either absent, the old image or the complete new one.
/// Needs root for debootstrap; see `scripts/setup-rootfs-tools.sh` for the
/// host tools.
pub fn build_debian_rootfs(
    recipe: &RootfsRecipe,
    agent_binary: &Path,
    work_dir: &Path,
    out_image: &Path,
    progress: &mut dyn FnMut(RootfsProgress),
) -> Result<(), RootfsError> {
    recipe.validate()?;
    let debootstrap = find_tool("debootstrap")?;
    let mke2fs = find_tool("mke2fs")?;
    check_agent_binary(agent_binary)?;
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        return Err(RootfsError::NotRoot);
    }

    fs::create_dir_all(work_dir).map_err(io_error("create", work_dir))?;
    let work_dir = fs::canonicalize(work_dir).map_err(io_error("resolve", work_dir))?;
    let tree = work_dir.join("tree");
    let package_cache = work_dir.join("debs");
    remove_tree(&tree)?;
    fs::create_dir_all(&package_cache).map_err(io_error("create", &package_cache))?;

    progress(RootfsProgress::Stage(RootfsStage::Bootstrapping));
    let includes: Vec<&str> = recipe.packages.iter().map(String::as_str).collect();
    let mut command = Command::new(&debootstrap);
    command
        .arg("--variant=minbase")
        .arg(format!("--include={}", includes.join(",")))
        .arg(format!("--cache-dir={}", package_cache.display()))
        .arg(&recipe.suite)
        .arg(&tree)
        .arg(&recipe.mirror)
        .env("LC_ALL", "C")
        .env("DEBIAN_FRONTEND", "noninteractive")
        .env("PATH", sbin_path());
    if let Err(err) = run_streaming(&mut command, "debootstrap", progress) {
        unmount_under(&tree)?;
        return Err(with_debootstrap_log(err, &tree));
    }
    unmount_under(&tree)?;

    progress(RootfsProgress::Stage(RootfsStage::Customising));
    customise_tree(&tree, recipe, agent_binary)?;
    progress(RootfsProgress::Stage(RootfsStage::Cleaning));
    clean_tree(&tree)?;
    write_ext4_image_with(&mke2fs, &tree, out_image, recipe.extra_size_mib, progress)?;
    remove_tree(&tree)?;
    progress(RootfsProgress::Stage(RootfsStage::Done));
    Ok(())
}

/// Makes a bootstrapped Debian tree ready to boot with the agent: installs
/// `agent_binary` at [`AGENT_GUEST_PATH`] (mode 0755) with `/sbin/init`
/// pointing at it, writes `/etc/hostname`, `/etc/hosts`, `/etc/fstab` and a
/// placeholder `/etc/resolv.conf`, and creates the mount points the agent and
/// the initramfs use.
pub fn customise_tree(
    tree: &Path,
    recipe: &RootfsRecipe,
    agent_binary: &Path,
) -> Result<(), RootfsError> {
    recipe.validate()?;
    check_agent_binary(agent_binary)?;
    let tree = fs::canonicalize(tree).map_err(io_error("resolve", tree))?;

    for (dir, mode) in [
        ("proc", 0o555),
        ("sys", 0o555),
        ("dev", 0o755),
        ("run", 0o755),
        ("tmp", 0o1777),
        ("etc", 0o755),
        ("root", 0o700),
    ] {
        let path = tree.join(dir);
        match fs::symlink_metadata(&path) {
            Ok(meta) if meta.is_dir() => {}
            Ok(_) => return Err(RootfsError::EscapesTree(path)),
            Err(_) => fs::create_dir(&path).map_err(io_error("create", &path))?,
        }
        fs::set_permissions(&path, fs::Permissions::from_mode(mode))
            .map_err(io_error("set mode of", &path))?;
    }

    let agent = fs::read(agent_binary).map_err(io_error("read", agent_binary))?;
    let agent_name = Path::new(AGENT_GUEST_PATH)
        .file_name()
        .expect("AGENT_GUEST_PATH names a file");
    let agent_path = write_guest_file(&tree, AGENT_GUEST_PATH, &agent, 0o755)?;
    let init_path = guest_path_in_tree(&tree, "/sbin/init")?;
    if init_path.parent() != agent_path.parent() {
        return Err(RootfsError::EscapesTree(init_path));
    }
    remove_if_present(&init_path)?;
    std::os::unix::fs::symlink(agent_name, &init_path).map_err(io_error("link", &init_path))?;

    let hostname = &recipe.hostname;
    write_guest_file(
        &tree,
        "/etc/hostname",
        format!("{hostname}\n").as_bytes(),
        0o644,
    )?;
    let hosts = format!(
        "127.0.0.1\tlocalhost\n127.0.1.1\t{hostname}\n\
         ::1\tlocalhost ip6-localhost ip6-loopback\n\
         ff02::1\tip6-allnodes\nff02::2\tip6-allrouters\n"
    );
    write_guest_file(&tree, "/etc/hosts", hosts.as_bytes(), 0o644)?;
    let fstab = format!(
        "# The initramfs mounts the root file system; the agent mounts /proc, /sys and /dev.\n\
         LABEL={ROOTFS_LABEL}\t/\text4\tdefaults\t0\t1\n"
    );
    write_guest_file(&tree, "/etc/fstab", fstab.as_bytes(), 0o644)?;
    write_guest_file(
        &tree,
        "/etc/resolv.conf",
        b"# Placeholder: the VM backend writes the name servers when it gives the guest a network.\n",
        0o644,
    )?;
    Ok(())
}

/// Removes what a built image does not need: downloaded packages, apt's
/// package lists and caches, documentation (except copyright files), manual
/// pages, translations and log files.
pub fn clean_tree(tree: &Path) -> Result<(), RootfsError> {
    let tree = fs::canonicalize(tree).map_err(io_error("resolve", tree))?;
    for dir in ["var/cache/apt", "var/lib/apt/lists", "var/log"] {
        remove_files_below(&tree.join(dir), &|_| false, false)?;
    }
    remove_files_below(
        &tree.join("var/cache/debconf"),
        &|file: &Path| !file.to_string_lossy().ends_with("-old"),
        false,
    )?;
    for dir in ["usr/share/man", "usr/share/info", "usr/share/locale"] {
        remove_files_below(&tree.join(dir), &|_| false, true)?;
    }
    remove_files_below(
        &tree.join("usr/share/doc"),
        &|file: &Path| file.file_name().is_some_and(|name| name == "copyright"),
        true,
    )?;
    Ok(())
}

/// Removes the files (and symlinks) below `dir` that `keep` does not keep
/// and, with `prune_dirs`, the directories left empty, never `dir` itself.
/// Returns whether `dir` is now empty. A missing `dir` is fine.
fn remove_files_below(
    dir: &Path,
    keep: &dyn Fn(&Path) -> bool,
    prune_dirs: bool,
) -> Result<bool, RootfsError> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(true),
        Err(err) => return Err(io_error("list", dir)(err)),
    };
    let mut emptied = true;
    for entry in entries {
        let path = entry.map_err(io_error("list", dir))?.path();
        let meta = fs::symlink_metadata(&path).map_err(io_error("inspect", &path))?;
        if meta.is_dir() {
            if remove_files_below(&path, keep, prune_dirs)? && prune_dirs {
                fs::remove_dir(&path).map_err(io_error("remove", &path))?;
            } else {
                emptied = false;
            }
        } else if keep(&path) {
            emptied = false;
        } else {
            fs::remove_file(&path).map_err(io_error("remove", &path))?;
        }
    }
    Ok(emptied)
}

/// Writes `tree` into a new ext4 image at `out_image` (label
/// [`ROOTFS_LABEL`], 4 KiB blocks, root owned by 0:0) sized by
/// [`image_size_bytes`] and [`image_inode_count`], atomically: under a
/// temporary name first, then renamed. Needs no root and no loop device.
pub fn write_ext4_image(
    tree: &Path,
    out_image: &Path,
    extra_size_mib: u64,
    progress: &mut dyn FnMut(RootfsProgress),
) -> Result<(), RootfsError> {
    let mke2fs = find_tool("mke2fs")?;
    write_ext4_image_with(&mke2fs, tree, out_image, extra_size_mib, progress)
}

fn write_ext4_image_with(
    mke2fs: &Path,
    tree: &Path,
    out_image: &Path,
    extra_size_mib: u64,
    progress: &mut dyn FnMut(RootfsProgress),
) -> Result<(), RootfsError> {
    progress(RootfsProgress::Stage(RootfsStage::Measuring));
    let usage = measure_tree(tree)?;
    let image_bytes = image_size_bytes(usage.bytes, extra_size_mib);
    let image_inodes = image_inode_count(usage.inodes, extra_size_mib);
    progress(RootfsProgress::Sized {
        usage,
        image_bytes,
        image_inodes,
    });

    progress(RootfsProgress::Stage(RootfsStage::WritingImage));
    let file_name = out_image
        .file_name()
        .ok_or_else(|| RootfsError::Io {
            action: "name",
            path: out_image.to_path_buf(),
            source: io::Error::new(io::ErrorKind::InvalidInput, "image path has no file name"),
        })?
        .to_string_lossy()
        .into_owned();
    let parent = match out_image.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent.to_path_buf(),
        _ => PathBuf::from("."),
    };
    fs::create_dir_all(&parent).map_err(io_error("create", &parent))?;
    let temp = parent.join(format!(".{file_name}.tmp-{}", std::process::id()));
    remove_if_present(&temp)?;

    let result = (|| {
        let file = fs::File::create(&temp).map_err(io_error("create", &temp))?;
        file.set_len(image_bytes).map_err(io_error("size", &temp))?;
        drop(file);
        let mut command = Command::new(mke2fs);
        command
            .args(["-F", "-t", "ext4", "-b", "4096"])
            .arg("-N")
            .arg(image_inodes.to_string())
            .arg("-L")
            .arg(ROOTFS_LABEL)
            .args(["-E", "root_owner=0:0"])
            .arg("-d")
            .arg(tree)
            .arg(&temp)
            .arg(format!("{}k", image_bytes / 1024))
            .env("LC_ALL", "C");
        run_streaming(&mut command, "mke2fs", progress)?;
        fs::rename(&temp, out_image).map_err(io_error("rename into place", out_image))
    })();
    if result.is_err() {
        let _ = fs::remove_file(&temp);
    }
    result
}

/// A file's type, permission bits and size as `debugfs` reports them from
/// inside an image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuestFileInfo {
    /// debugfs's type word: `regular`, `directory`, `symlink`, …
    pub file_type: String,
    /// Permission bits (e.g. `0o755`).
    pub mode: u32,
    /// Size in bytes.
    pub size: u64,
    /// Owner's user id.
    pub uid: u32,
}

/// Looks `guest_path` up inside the ext4 image with `debugfs -R stat`
/// (symlinks in the leading directories are followed, the last one is not).
/// `Ok(None)` when there is no such file.
pub fn stat_in_image(image: &Path, guest_path: &str) -> Result<Option<GuestFileInfo>, RootfsError> {
    if guest_path.contains(['"', '\n']) {
        return Err(RootfsError::BadImage {
            image: image.to_path_buf(),
            problem: format!(
                "cannot look up {guest_path:?}: quotes and newlines are not supported"
            ),
        });
    }
    let debugfs = find_tool("debugfs")?;
    let mut command = Command::new(debugfs);
    command
        .arg("-R")
        .arg(format!("stat \"{guest_path}\""))
        .arg(image)
        .env("LC_ALL", "C");
    let stdout = run_captured(&mut command)?;
    if stdout.trim().is_empty() {
        return Ok(None);
    }
    parse_debugfs_stat(&stdout)
        .map(Some)
        .ok_or_else(|| RootfsError::BadImage {
            image: image.to_path_buf(),
            problem: format!(
                "unexpected debugfs output for {guest_path}: {}",
                tail_of(&stdout)
            ),
        })
}

/// Parses the header of `debugfs -R stat`'s output.
fn parse_debugfs_stat(output: &str) -> Option<GuestFileInfo> {
    let word_after = |key: &str| -> Option<&str> {
        let start = output.find(key)? + key.len();
        output[start..].split_whitespace().next()
    };
    Some(GuestFileInfo {
        file_type: word_after("Type:")?.to_string(),
        mode: u32::from_str_radix(word_after("Mode:")?, 8).ok()?,
        size: word_after("Size:")?.parse().ok()?,
        uid: word_after("User:")?.parse().ok()?,
    })
}

/// Checks a root file system image: `e2fsck -fn` finds it consistent and it
/// holds the agent at [`AGENT_GUEST_PATH`] as a regular file with mode 0755,
/// owned by root. Returns what debugfs reports about the agent.
pub fn check_rootfs_image(image: &Path) -> Result<GuestFileInfo, RootfsError> {
    let e2fsck = find_tool("e2fsck")?;
    let mut command = Command::new(e2fsck);
    command.arg("-fn").arg(image).env("LC_ALL", "C");
    match run_captured(&mut command) {
        Ok(_) => {}
        Err(RootfsError::CommandFailed {
            status,
            output_tail,
            ..
        }) => {
            return Err(RootfsError::BadImage {
                image: image.to_path_buf(),
                problem: format!("e2fsck -fn {status}: {output_tail}"),
            })
        }
        Err(other) => return Err(other),
    }
    let bad = |problem: String| RootfsError::BadImage {
        image: image.to_path_buf(),
        problem,
    };
    let agent = stat_in_image(image, AGENT_GUEST_PATH)?
        .ok_or_else(|| bad(format!("{AGENT_GUEST_PATH} is missing")))?;
    if agent.file_type != "regular" || agent.mode != 0o755 || agent.uid != 0 {
        return Err(bad(format!(
            "{AGENT_GUEST_PATH} is a {} with mode {:o} owned by {}, expected a regular file, 755, root",
            agent.file_type, agent.mode, agent.uid
        )));
    }
    Ok(agent)
}

fn check_agent_binary(agent_binary: &Path) -> Result<(), RootfsError> {
    match fs::metadata(agent_binary) {
        Ok(meta) if meta.is_file() => Ok(()),
        _ => Err(RootfsError::AgentMissing(agent_binary.to_path_buf())),
    }
}

/// Resolves the absolute guest path `guest_path` to a host path inside
/// `tree`, following the symlinks of its parent directories only while they
/// stay inside the tree (Debian's `/sbin -> usr/sbin` is fine, an absolute
/// symlink is resolved against the host and refused).
fn guest_path_in_tree(tree: &Path, guest_path: &str) -> Result<PathBuf, RootfsError> {
    let relative = guest_path.trim_start_matches('/');
    let joined = tree.join(relative);
    let (Some(parent), Some(name)) = (joined.parent(), joined.file_name()) else {
        return Err(RootfsError::EscapesTree(joined));
    };
    let parent = fs::canonicalize(parent).map_err(io_error("resolve", parent))?;
    if !parent.starts_with(tree) {
        return Err(RootfsError::EscapesTree(joined));
    }
    Ok(parent.join(name))
}

/// Replaces the guest file `guest_path` (never writing through a symlink)
/// with `contents` and `mode`; returns its host path.
fn write_guest_file(
    tree: &Path,
    guest_path: &str,
    contents: &[u8],
    mode: u32,
) -> Result<PathBuf, RootfsError> {
    let path = guest_path_in_tree(tree, guest_path)?;
    remove_if_present(&path)?;
    fs::write(&path, contents).map_err(io_error("write", &path))?;
    fs::set_permissions(&path, fs::Permissions::from_mode(mode))
        .map_err(io_error("set mode of", &path))?;
    Ok(path)
}

fn remove_if_present(path: &Path) -> Result<(), RootfsError> {
    match fs::symlink_metadata(path) {
        Ok(meta) if meta.is_dir() => Err(RootfsError::Io {
            action: "replace",
            path: path.to_path_buf(),
            source: io::Error::new(io::ErrorKind::AlreadyExists, "a directory is in the way"),
        }),
        Ok(_) => fs::remove_file(path).map_err(io_error("remove", path)),
        Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(err) => Err(io_error("inspect", path)(err)),
    }
}

/// Removes a previous tree, first detaching anything still mounted below it
/// (a failed debootstrap can leave /proc, /sys or bind-mounted /dev nodes),
/// so the removal never reaches into the host's file systems.
fn remove_tree(tree: &Path) -> Result<(), RootfsError> {
    if fs::symlink_metadata(tree).is_err() {
        return Ok(());
    }
    unmount_under(tree)?;
    fs::remove_dir_all(tree).map_err(io_error("remove", tree))
}

/// Lazily unmounts every mount point at or below `dir`, deepest first.
fn unmount_under(dir: &Path) -> Result<(), RootfsError> {
    let dir = match fs::canonicalize(dir) {
        Ok(dir) => dir,
        Err(_) => return Ok(()),
    };
    let mountinfo = Path::new("/proc/self/mountinfo");
    let table = fs::read_to_string(mountinfo).map_err(io_error("read", mountinfo))?;
    let mut points = mount_points_under(&table, &dir);
    points.sort_by_key(|point| std::cmp::Reverse(point.components().count()));
    for point in points {
        let c_path = std::ffi::CString::new(point.as_os_str().as_encoded_bytes())
            .map_err(|err| io_error("unmount", &point)(io::Error::other(err)))?;
        // SAFETY: c_path is a valid NUL-terminated path that outlives the call.
        if unsafe { libc::umount2(c_path.as_ptr(), libc::MNT_DETACH) } != 0 {
            return Err(io_error("unmount", &point)(io::Error::last_os_error()));
        }
    }
    Ok(())
}

/// Mount points (field 5 of `/proc/self/mountinfo`, octal escapes decoded)
/// at or below `dir`.
fn mount_points_under(mountinfo: &str, dir: &Path) -> Vec<PathBuf> {
    mountinfo
        .lines()
        .filter_map(|line| line.split(' ').nth(4))
        .map(|field| PathBuf::from(unescape_mountinfo(field)))
        .filter(|point| point.starts_with(dir))
        .collect()
}

fn unescape_mountinfo(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\'
            && i + 3 < bytes.len()
            && bytes[i + 1..i + 4]
                .iter()
                .all(|b| (b'0'..=b'7').contains(b))
        {
            let code =
                (bytes[i + 1] - b'0') * 64 + (bytes[i + 2] - b'0') * 8 + (bytes[i + 3] - b'0');
            out.push(code);
            i += 4;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Finds a host tool on `PATH`, then in `/usr/sbin` and `/sbin` (where
/// Debian puts them, often outside a normal user's `PATH`).
fn find_tool(tool: &'static str) -> Result<PathBuf, RootfsError> {
    let path_var = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path_var)
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/sbin")])
        .map(|dir| dir.join(tool))
        .find(|candidate| {
            fs::metadata(candidate)
                .map(|meta| meta.is_file() && meta.permissions().mode() & 0o111 != 0)
                .unwrap_or(false)
        })
        .ok_or(RootfsError::ToolMissing { tool })
}

/// `PATH` for debootstrap, which calls `chroot` and other tools from sbin.
fn sbin_path() -> String {
    let inherited = std::env::var("PATH").unwrap_or_default();
    format!("/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin:{inherited}")
}

fn describe(command: &Command) -> String {
    let mut text = command.get_program().to_string_lossy().into_owned();
    for arg in command.get_args() {
        text.push(' ');
        text.push_str(&arg.to_string_lossy());
    }
    text
}

/// Runs `command`, passing each line of its stdout and stderr to `progress`
/// as it arrives; on failure the error holds the last lines.
fn run_streaming(
    command: &mut Command,
    tool: &'static str,
    progress: &mut dyn FnMut(RootfsProgress),
) -> Result<(), RootfsError> {
    let description = describe(command);
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|source| RootfsError::Spawn {
            command: description.clone(),
            source,
        })?;
    let (sender, receiver) = mpsc::channel::<String>();
    let mut readers = Vec::new();
    let stdout = child
        .stdout
        .take()
        .map(|s| Box::new(s) as Box<dyn Read + Send>);
    let stderr = child
        .stderr
        .take()
        .map(|s| Box::new(s) as Box<dyn Read + Send>);
    for stream in [stdout, stderr].into_iter().flatten() {
        let sender = sender.clone();
        readers.push(std::thread::spawn(move || {
            let mut reader = BufReader::new(stream);
            let mut line = Vec::new();
            while matches!(reader.read_until(b'\n', &mut line), Ok(n) if n > 0) {
                let text = String::from_utf8_lossy(&line).trim_end().to_string();
                line.clear();
                if sender.send(text).is_err() {
                    break;
                }
            }
        }));
    }
    drop(sender);
    let mut tail: VecDeque<String> = VecDeque::with_capacity(TAIL_LINES);
    for line in receiver {
        if tail.len() == TAIL_LINES {
            tail.pop_front();
        }
        tail.push_back(line.clone());
        progress(RootfsProgress::Output { tool, line });
    }
    for reader in readers {
        let _ = reader.join();
    }
    let status = child.wait().map_err(|source| RootfsError::Spawn {
        command: description.clone(),
        source,
    })?;
    if status.success() {
        Ok(())
    } else {
        Err(RootfsError::CommandFailed {
            command: description,
            status,
            output_tail: Vec::from(tail).join("\n"),
        })
    }
}

/// Runs `command` to completion and returns its stdout; on failure the error
/// holds the tail of its stderr (or stdout when stderr is empty).
fn run_captured(command: &mut Command) -> Result<String, RootfsError> {
    let description = describe(command);
    let output = command
        .stdin(Stdio::null())
        .output()
        .map_err(|source| RootfsError::Spawn {
            command: description.clone(),
            source,
        })?;
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    if output.status.success() {
        return Ok(stdout);
    }
    let stderr = String::from_utf8_lossy(&output.stderr);
    let shown = if stderr.trim().is_empty() {
        &stdout
    } else {
        stderr.as_ref()
    };
    Err(RootfsError::CommandFailed {
        command: description,
        status: output.status,
        output_tail: tail_of(shown),
    })
}

fn tail_of(text: &str) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(TAIL_LINES)..].join("\n")
}

/// Adds the end of debootstrap's own log (which names the failing package
/// and its error) to a debootstrap failure.
fn with_debootstrap_log(err: RootfsError, tree: &Path) -> RootfsError {
    match err {
        RootfsError::CommandFailed {
            command,
            status,
            output_tail,
        } => {
            let log =
                fs::read_to_string(tree.join("debootstrap/debootstrap.log")).unwrap_or_default();
            let output_tail = if log.trim().is_empty() {
                output_tail
            } else {
                format!(
                    "{output_tail}\n--- end of debootstrap/debootstrap.log ---\n{}",
                    tail_of(&log)
                )
            };
            RootfsError::CommandFailed {
                command,
                status,
                output_tail,
            }
        }
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_size_adds_a_fifth_and_the_extra_space_rounded_to_mib() {
        let used = 500 * MIB;
        assert_eq!(
            image_size_bytes(used, 512),
            500 * MIB + 100 * MIB + 512 * MIB
        );
        assert_eq!(image_size_bytes(100 * MIB + 1, 0), 121 * MIB);
        assert_eq!(image_size_bytes(0, 0), MIN_IMAGE_BYTES);
        assert_eq!(image_size_bytes(MIB, 100), 102 * MIB);
    }

    #[test]
    fn inode_count_covers_the_tree_and_the_free_space() {
        assert_eq!(image_inode_count(10_000, 0), 12_000 + SPARE_INODES);
        assert_eq!(image_inode_count(0, 16), 1024 + SPARE_INODES);
    }

    #[test]
    fn recipe_serialises_in_a_stable_order_with_sorted_packages() {
        let recipe = RootfsRecipe::default();
        assert_eq!(
            serde_json::to_string(&recipe).unwrap(),
            r#"{"suite":"bookworm","mirror":"http://deb.debian.org/debian","packages":["bash","build-essential","ca-certificates","coreutils","curl","git","nodejs","python-is-python3","python3"],"extra_size_mib":512,"hostname":"firerunner"}"#
        );
        let mut reordered = RootfsRecipe {
            packages: BTreeSet::new(),
            ..RootfsRecipe::default()
        };
        for package in [
            "python3",
            "git",
            "curl",
            "bash",
            "nodejs",
            "python-is-python3",
            "git",
            "coreutils",
            "ca-certificates",
            "build-essential",
        ] {
            reordered.packages.insert(package.to_string());
        }
        assert_eq!(
            serde_json::to_string(&reordered).unwrap(),
            serde_json::to_string(&recipe).unwrap()
        );
        let back: RootfsRecipe =
            serde_json::from_str(&serde_json::to_string(&recipe).unwrap()).unwrap();
        assert_eq!(back, recipe);
    }

    #[test]
    fn validation_rejects_option_like_and_malformed_fields() {
        assert!(RootfsRecipe::default().validate().is_ok());
        let with = |change: &dyn Fn(&mut RootfsRecipe)| {
            let mut recipe = RootfsRecipe::default();
            change(&mut recipe);
            recipe.validate()
        };
        let field_of = |result: Result<(), RootfsError>| match result {
            Err(RootfsError::InvalidRecipe { field, .. }) => field,
            other => panic!("expected InvalidRecipe, got {other:?}"),
        };
        assert_eq!(field_of(with(&|r| r.suite = "--foreign".into())), "suite");
        assert_eq!(field_of(with(&|r| r.mirror = "ftp://x".into())), "mirror");
        assert_eq!(
            field_of(with(&|r| r.mirror = "http://a b".into())),
            "mirror"
        );
        assert_eq!(
            field_of(with(&|r| {
                r.packages.insert("gcc,--no-check-gpg".into());
            })),
            "packages"
        );
        assert_eq!(
            field_of(with(&|r| {
                r.packages.insert("Bash".into());
            })),
            "packages"
        );
        assert_eq!(field_of(with(&|r| r.hostname = "-x".into())), "hostname");
        assert_eq!(field_of(with(&|r| r.hostname = "a.b".into())), "hostname");
        assert!(with(&|r| {
            r.packages.insert("libstdc++6".into());
        })
        .is_ok());
    }

    #[test]
    fn parses_debugfs_stat_header() {
        let output = "Inode: 15   Type: regular    Mode:  0755   Flags: 0x80000\n\
                      Generation: 0    Version: 0x00000000:00000000\n\
                      User:     0   Group:     0   Project:     0   Size: 3\n";
        assert_eq!(
            parse_debugfs_stat(output),
            Some(GuestFileInfo {
                file_type: "regular".into(),
                mode: 0o755,
                size: 3,
                uid: 0
            })
        );
        assert_eq!(parse_debugfs_stat("garbage"), None);
    }

    #[test]
    fn finds_mount_points_below_a_directory_with_escapes() {
        let table = "22 1 0:21 / /proc rw - proc proc rw\n\
                     90 30 0:5 / /work/my\\040tree/proc rw - proc proc rw\n\
                     91 30 0:5 / /work/my\\040tree/dev/null rw - devtmpfs udev rw\n\
                     92 30 0:5 / /work/my\\040treeish rw - tmpfs tmpfs rw\n";
        assert_eq!(
            mount_points_under(table, Path::new("/work/my tree")),
            vec![
                PathBuf::from("/work/my tree/proc"),
                PathBuf::from("/work/my tree/dev/null")
            ]
        );
    }

    #[test]
    fn measures_blocks_and_counts_hard_links_once() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        fs::create_dir(root.join("sub")).unwrap();
        fs::write(root.join("sub/a"), vec![1u8; 5000]).unwrap();
        fs::hard_link(root.join("sub/a"), root.join("b")).unwrap();
        fs::write(root.join("empty"), b"").unwrap();
        std::os::unix::fs::symlink("a", root.join("short-link")).unwrap();
        std::os::unix::fs::symlink("x".repeat(80), root.join("long-link")).unwrap();
        let usage = measure_tree(root).unwrap();
        assert_eq!(usage.inodes, 6);
        let dir_bytes = round_up(fs::metadata(root).unwrap().len(), BLOCK_SIZE)
            + round_up(fs::metadata(root.join("sub")).unwrap().len(), BLOCK_SIZE);
        assert_eq!(usage.bytes, dir_bytes + 2 * BLOCK_SIZE + BLOCK_SIZE);
    }
}
