//! Per-VM runtime directories: the record of everything a VM owns.
//!
//! Each VM gets `<root>/vms/<id>/`. The directory holds the VM's sockets, its
//! writable disk and console log, and small text files that name its owner
//! and the resources to free:
//!
//! - `owner`: `<pid> <start-time>` of the host process that created the VM;
//! - `proc.<role>`: `<pid> <start-time>` of each process started for it
//!   (the hypervisor, a jailer, a helper);
//! - `tap.<name>`: a tap device created for it.
//!
//! Start times (field 22 of `/proc/<pid>/stat`) guard against a recycled pid
//! being mistaken for the original process.
//!
//! Removing a VM from outside its owner ([`VmDir::retire`]) first renames its
//! directory to `.removing-<id>`, in one step: from then on the owner finds
//! its directory gone ([`VmDir::is_removed`]) and stops using the VM instead
//! of starting a replacement, and nothing the owner records afterwards can
//! land in a directory that is being torn down.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

/// Errors managing runtime directories.
#[derive(Debug, thiserror::Error)]
pub enum VmDirError {
    /// A file or directory operation failed.
    #[error("{path}: {source}")]
    Io {
        /// The path involved.
        path: PathBuf,
        /// The operating system's error.
        source: io::Error,
    },
    /// A VM id that cannot be a directory name.
    #[error("invalid VM id {0:?}: use letters, digits, '-' and '_' only")]
    InvalidId(String),
    /// The directory was taken away while its VM started or ran (`firerunner
    /// vm rm`, or the reaper of another process): the VM is gone for good.
    #[error("VM {0} was removed")]
    Removed(String),
}

fn io_at(path: &Path) -> impl FnOnce(io::Error) -> VmDirError + '_ {
    move |source| VmDirError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// A process identity that survives pid reuse: pid plus kernel start time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcessId {
    /// The process id.
    pub pid: u32,
    /// Start time in clock ticks since boot (`/proc/<pid>/stat` field 22).
    pub start_time: u64,
}

impl ProcessId {
    /// Identifies a live process, or `None` if it does not exist or has
    /// already exited and only waits to be reaped (a zombie).
    pub fn of(pid: u32) -> Option<Self> {
        let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        // The command name (field 2) may hold spaces and parentheses: parse after the last ')'.
        let rest = &stat[stat.rfind(')')? + 2..];
        if rest.starts_with(['Z', 'X']) {
            return None;
        }
        let start_time = rest.split_ascii_whitespace().nth(19)?.parse().ok()?;
        Some(Self { pid, start_time })
    }

    /// The calling process.
    pub fn current() -> Self {
        Self::of(std::process::id()).expect("/proc/self/stat is readable")
    }

    /// Whether this very process (not a later one with the same pid) is still alive.
    pub fn is_alive(&self) -> bool {
        Self::of(self.pid).is_some_and(|now| now.start_time == self.start_time)
    }

    fn parse(text: &str) -> Option<Self> {
        let mut parts = text.split_ascii_whitespace();
        Some(Self {
            pid: parts.next()?.parse().ok()?,
            start_time: parts.next()?.parse().ok()?,
        })
    }

    fn render(&self) -> String {
        format!("{} {}\n", self.pid, self.start_time)
    }
}

/// The default root for runtime directories: `$FIRERUNNER_RUNTIME_DIR`, else
/// `$XDG_RUNTIME_DIR/firerunner`, else `/run/firerunner` for root and
/// `/tmp/firerunner-<uid>` for others.
pub fn default_root() -> PathBuf {
    if let Some(dir) = std::env::var_os("FIRERUNNER_RUNTIME_DIR") {
        return dir.into();
    }
    if let Some(dir) = std::env::var_os("XDG_RUNTIME_DIR") {
        return PathBuf::from(dir).join("firerunner");
    }
    // SAFETY: getuid has no preconditions and cannot fail.
    let uid = unsafe { libc::getuid() };
    if uid == 0 {
        PathBuf::from("/run/firerunner")
    } else {
        PathBuf::from(format!("/tmp/firerunner-{uid}"))
    }
}

/// The name prefix of a directory being torn down by [`VmDir::retire`].
const RETIRED_PREFIX: &str = ".removing-";

/// One VM's runtime directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmDir {
    id: String,
    path: PathBuf,
}

impl VmDir {
    /// Creates `<root>/vms/<id>/` (and `<root>/vms/`) readable by this user
    /// alone (0700: sockets, console and disk are the VM's) and records the
    /// calling process as its owner.
    pub fn create(root: &Path, id: &str) -> Result<Self, VmDirError> {
        if id.is_empty()
            || !id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(VmDirError::InvalidId(id.to_string()));
        }
        let path = root.join("vms").join(id);
        fs::create_dir_all(&path).map_err(io_at(&path))?;
        for private in [root.join("vms"), path.clone()] {
            use std::os::unix::fs::PermissionsExt;
            fs::set_permissions(&private, fs::Permissions::from_mode(0o700))
                .map_err(io_at(&private))?;
        }
        let dir = Self {
            id: id.to_string(),
            path,
        };
        dir.write("owner", &ProcessId::current().render())?;
        Ok(dir)
    }

    /// Opens an existing directory (for listing and reaping).
    pub fn open(path: PathBuf) -> Option<Self> {
        let id = path.file_name()?.to_str()?.to_string();
        path.is_dir().then_some(Self { id, path })
    }

    /// Lists the VM directories under `root`, sorted by id.
    pub fn list(root: &Path) -> Result<Vec<Self>, VmDirError> {
        let vms = root.join("vms");
        let entries = match fs::read_dir(&vms) {
            Ok(entries) => entries,
            Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(err) => return Err(io_at(&vms)(err)),
        };
        let mut dirs: Vec<Self> = entries
            .filter_map(|entry| Self::open(entry.ok()?.path()))
            .collect();
        dirs.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(dirs)
    }

    /// The VM's id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The directory itself.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A path inside the directory.
    pub fn join(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }

    /// The process that owns the VM, if recorded.
    pub fn owner(&self) -> Option<ProcessId> {
        ProcessId::parse(&fs::read_to_string(self.join("owner")).ok()?)
    }

    /// Records a process started for this VM under `role` (e.g. `qemu`).
    pub fn record_process(&self, role: &str, pid: u32) -> Result<(), VmDirError> {
        let id = ProcessId::of(pid).unwrap_or(ProcessId { pid, start_time: 0 });
        self.write(&format!("proc.{role}"), &id.render())
    }

    /// The processes recorded for this VM, by role.
    pub fn processes(&self) -> Vec<(String, ProcessId)> {
        self.records("proc.")
            .into_iter()
            .filter_map(|(role, text)| Some((role, ProcessId::parse(&text)?)))
            .collect()
    }

    /// Records a tap device created for this VM.
    pub fn record_tap(&self, name: &str) -> Result<(), VmDirError> {
        self.write(&format!("tap.{name}"), "")
    }

    /// The tap devices recorded for this VM.
    pub fn taps(&self) -> Vec<String> {
        self.records("tap.")
            .into_iter()
            .map(|(name, _)| name)
            .collect()
    }

    /// Whether the directory is gone: the VM was removed from outside its
    /// owner (or its owner destroyed it).
    pub fn is_removed(&self) -> bool {
        !self.path.is_dir()
    }

    /// The error for a VM whose directory is gone.
    pub fn removed_error(&self) -> VmDirError {
        VmDirError::Removed(self.id.clone())
    }

    /// Renames the directory to `.removing-<id>` beside it, in one atomic
    /// step, and returns the renamed directory for tearing down. A directory
    /// already renamed, or already gone, is returned as it is.
    pub fn retire(self) -> Result<Self, VmDirError> {
        if self.id.starts_with(RETIRED_PREFIX) {
            return Ok(self);
        }
        let id = format!("{RETIRED_PREFIX}{}", self.id);
        let path = self.path.with_file_name(&id);
        match fs::rename(&self.path, &path) {
            Ok(()) => Ok(Self { id, path }),
            Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(Self { id, path }),
            Err(err) => Err(io_at(&self.path)(err)),
        }
    }

    /// Deletes the directory and everything in it.
    pub fn remove(self) -> Result<(), VmDirError> {
        match fs::remove_dir_all(&self.path) {
            Err(err) if err.kind() != io::ErrorKind::NotFound => Err(io_at(&self.path)(err)),
            _ => Ok(()),
        }
    }

    fn write(&self, name: &str, text: &str) -> Result<(), VmDirError> {
        let path = self.join(name);
        fs::write(&path, text).map_err(|err| {
            if err.kind() == io::ErrorKind::NotFound && self.is_removed() {
                self.removed_error()
            } else {
                io_at(&path)(err)
            }
        })
    }

    fn records(&self, prefix: &str) -> Vec<(String, String)> {
        let Ok(entries) = fs::read_dir(&self.path) else {
            return Vec::new();
        };
        let mut found: Vec<(String, String)> = entries
            .filter_map(|entry| {
                let entry = entry.ok()?;
                let name = entry.file_name().into_string().ok()?;
                let key = name.strip_prefix(prefix)?.to_string();
                Some((key, fs::read_to_string(entry.path()).unwrap_or_default()))
            })
            .collect();
        found.sort();
        found
    }
}

/// The last `lines` lines of a console log.
pub fn console_tail(path: &Path, lines: usize) -> String {
    use std::io::{Read, Seek, SeekFrom};
    // The guest writes the console: read its end only, never the whole file.
    const TAIL_BYTES: u64 = 64 * 1024;
    let Ok(mut file) = std::fs::File::open(path) else {
        return String::new();
    };
    let size = file.metadata().map(|m| m.len()).unwrap_or(0);
    let _ = file.seek(SeekFrom::Start(size.saturating_sub(TAIL_BYTES)));
    let mut bytes = Vec::new();
    let _ = file.take(TAIL_BYTES).read_to_end(&mut bytes);
    let text = String::from_utf8_lossy(&bytes);
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_owner_processes_and_taps() {
        let root = tempfile::tempdir().unwrap();
        let dir = VmDir::create(root.path(), "vm-1").unwrap();
        assert_eq!(dir.owner(), Some(ProcessId::current()));
        assert!(dir.owner().unwrap().is_alive());
        dir.record_process("qemu", std::process::id()).unwrap();
        dir.record_tap("frtap0").unwrap();
        assert_eq!(
            dir.processes(),
            vec![("qemu".to_string(), ProcessId::current())]
        );
        assert_eq!(dir.taps(), vec!["frtap0".to_string()]);
        assert_eq!(VmDir::list(root.path()).unwrap(), vec![dir.clone()]);
        dir.remove().unwrap();
        assert!(VmDir::list(root.path()).unwrap().is_empty());
    }

    #[test]
    fn runtime_folders_are_the_users_alone_and_the_console_tail_reads_the_end() {
        use std::os::unix::fs::PermissionsExt;
        let root = tempfile::tempdir().unwrap();
        let dir = VmDir::create(root.path(), "vm-1").unwrap();
        for path in [root.path().join("vms"), dir.path().to_path_buf()] {
            let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o700, "{}", path.display());
        }
        let log = dir.path().join("console.log");
        let mut text = "x".repeat(1 << 20);
        text.push_str("\nsecond to last\nlast\n");
        fs::write(&log, text).unwrap();
        assert_eq!(console_tail(&log, 2), "second to last\nlast");
    }

    #[test]
    fn rejects_ids_that_are_not_plain_names() {
        let root = tempfile::tempdir().unwrap();
        for bad in ["", "../x", "a/b", "a b"] {
            assert!(matches!(
                VmDir::create(root.path(), bad),
                Err(VmDirError::InvalidId(_))
            ));
        }
    }

    #[test]
    fn a_recycled_pid_is_not_the_same_process() {
        let me = ProcessId::current();
        let impostor = ProcessId {
            start_time: me.start_time + 1,
            ..me
        };
        assert!(!impostor.is_alive());
    }
}
