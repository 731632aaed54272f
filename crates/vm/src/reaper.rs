//! Freeing what dead owners left behind, and tearing down one VM directory.
//!
//! A VM directory names its owner and every process and tap device created
//! for it (see [`crate::runtime`]). [`reap_orphans`] runs at start-up and
//! frees the VMs whose owner is gone; [`destroy_dir`] frees one VM
//! regardless of its owner (`firerunner vm rm`).

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use crate::runtime::{ProcessId, VmDir, VmDirError};

/// How long a process gets to exit after SIGTERM before it is sent SIGKILL.
pub const TERM_GRACE: Duration = Duration::from_secs(2);

/// How long a directory without an owner file may exist before it counts as
/// abandoned (its creator may be between creating it and writing the file).
const OWNERLESS_GRACE: Duration = Duration::from_secs(60);

/// What was freed for one VM.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FreedVm {
    /// The VM's id.
    pub id: String,
    /// Processes that were still running and were ended, as (role, pid).
    pub killed: Vec<(String, u32)>,
    /// Tap devices that existed and were deleted.
    pub taps: Vec<String>,
}

/// What [`reap_orphans`] did.
#[derive(Debug, Default)]
pub struct ReapReport {
    /// The orphaned VMs that were freed, by id.
    pub freed: Vec<FreedVm>,
    /// VMs left alone because their owner is alive, by id.
    pub kept: Vec<String>,
    /// Orphans that could not be freed completely.
    pub failures: Vec<(String, ReapError)>,
}

/// Why a VM could not be freed completely.
#[derive(Debug, thiserror::Error)]
pub enum ReapError {
    /// A recorded process survived SIGKILL.
    #[error("process {role} (pid {pid}) is still running after SIGKILL")]
    Unkillable {
        /// The process's role.
        role: String,
        /// Its pid.
        pid: u32,
    },
    /// A tap device exists but `ip link del` failed.
    #[error("cannot delete tap device {name}: {message}")]
    Tap {
        /// The device.
        name: String,
        /// What `ip` said.
        message: String,
    },
    /// The directory could not be removed or listed.
    #[error(transparent)]
    Dir(#[from] VmDirError),
}

/// Whether a VM directory's owner is gone (dead, or its pid reused).
///
/// A directory without a readable owner file counts as orphaned only once it
/// is older than a minute, so a VM being created is never taken.
pub fn is_orphan(dir: &VmDir) -> bool {
    match dir.owner() {
        Some(owner) => !is_running(&owner),
        None => age(dir).is_some_and(|age| age > OWNERLESS_GRACE),
    }
}

/// How long ago the directory was created (its modification time, which
/// recording a process or tap device moves forward).
pub fn age(dir: &VmDir) -> Option<Duration> {
    let modified = std::fs::metadata(dir.path()).ok()?.modified().ok()?;
    SystemTime::now().duration_since(modified).ok()
}

/// Frees every VM under `root` whose owner is gone: ends its recorded
/// processes, deletes its tap devices and removes its directory. VMs whose
/// owner is alive are never touched.
pub fn reap_orphans(root: &Path) -> ReapReport {
    let mut report = ReapReport::default();
    let dirs = match VmDir::list(root) {
        Ok(dirs) => dirs,
        Err(err) => {
            report.failures.push((String::new(), err.into()));
            return report;
        }
    };
    for dir in dirs {
        let id = dir.id().to_string();
        if !is_orphan(&dir) {
            report.kept.push(id);
            continue;
        }
        match destroy_dir(dir) {
            Ok(freed) => report.freed.push(freed),
            Err(err) => report.failures.push((id, err)),
        }
    }
    report
}

/// Frees one VM whatever its owner: ends its recorded processes (SIGTERM,
/// [`TERM_GRACE`], then SIGKILL; only while each pid still has its recorded
/// start time), deletes its tap devices (a missing device is fine) and
/// removes the directory.
pub fn destroy_dir(dir: VmDir) -> Result<FreedVm, ReapError> {
    let mut freed = FreedVm {
        id: dir.id().to_string(),
        ..FreedVm::default()
    };
    // Renamed first, so the owner sees its VM gone and records nothing more
    // here; every process it recorded before the rename is in the list below.
    let dir = dir.retire()?;
    for (role, process) in dir.processes() {
        if end_process(&role, &process)? {
            freed.killed.push((role, process.pid));
        }
    }
    for tap in dir.taps() {
        if delete_tap(&tap)? {
            freed.taps.push(tap);
        }
    }
    dir.remove()?;
    Ok(freed)
}

/// Ends `process` if it is still running; returns whether it was.
fn end_process(role: &str, process: &ProcessId) -> Result<bool, ReapError> {
    // A start time of 0 means the process could not be identified when it was
    // recorded: its pid alone is not proof enough to signal anything.
    if process.start_time == 0 || !is_running(process) {
        return Ok(false);
    }
    signal(process, libc::SIGTERM);
    if wait_for_exit(process, TERM_GRACE) {
        return Ok(true);
    }
    signal(process, libc::SIGKILL);
    if wait_for_exit(process, Duration::from_secs(2)) {
        Ok(true)
    } else {
        Err(ReapError::Unkillable {
            role: role.to_string(),
            pid: process.pid,
        })
    }
}

fn signal(process: &ProcessId, signal: libc::c_int) {
    if is_running(process) {
        // SAFETY: kill has no memory-safety preconditions; the pid was just
        // checked to still belong to the recorded process.
        unsafe { libc::kill(process.pid as libc::pid_t, signal) };
    }
}

fn wait_for_exit(process: &ProcessId, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if !is_running(process) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    !is_running(process)
}

/// Whether this very process is alive and not a zombie (a zombie has
/// finished; only its parent's `wait` is missing).
pub fn is_running(process: &ProcessId) -> bool {
    process.is_alive() && process_state(process.pid).is_some_and(|state| state != 'Z')
}

/// The state letter of `/proc/<pid>/stat` (field 3).
fn process_state(pid: u32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat[stat.rfind(')')? + 1..].trim_start().chars().next()
}

/// Deletes a tap device; returns whether it existed.
fn delete_tap(name: &str) -> Result<bool, ReapError> {
    let exists = || Path::new("/sys/class/net").join(name).exists();
    if !exists() {
        return Ok(false);
    }
    let output = Command::new("ip")
        .args(["link", "del", name])
        .stdin(Stdio::null())
        .output();
    match output {
        Ok(output) if output.status.success() => Ok(true),
        _ if !exists() => Ok(false),
        Ok(output) => Err(ReapError::Tap {
            name: name.to_string(),
            message: String::from_utf8_lossy(&output.stderr).trim().to_string(),
        }),
        Err(err) => Err(ReapError::Tap {
            name: name.to_string(),
            message: err.to_string(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_state_of_this_process_is_running() {
        assert!(is_running(&ProcessId::current()));
        assert!(matches!(process_state(std::process::id()), Some('R' | 'S')));
    }

    #[test]
    fn an_absent_tap_device_is_not_an_error() {
        assert!(!delete_tap("frnonexistent0").unwrap());
    }
}
