//! The reaper frees the VMs of dead owners, and only theirs.

use std::os::unix::process::ExitStatusExt;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use firerunner_vm::pool::remove_abandoned_snapshots;
use firerunner_vm::reaper::{destroy_dir, is_orphan, reap_orphans, FreedVm, TERM_GRACE};
use firerunner_vm::runtime::ProcessId;
use firerunner_vm::VmDir;

fn spawn(script: &str) -> Child {
    Command::new("sh").args(["-c", script]).spawn().unwrap()
}

/// An owner that has exited: a real pid that no longer runs, with a start time it never had.
fn dead_owner() -> String {
    let mut child = Command::new("true").spawn().unwrap();
    let pid = child.id();
    child.wait().unwrap();
    format!("{pid} 1\n")
}

#[test]
fn orphans_are_freed_and_vms_of_live_owners_are_kept() {
    let root = tempfile::tempdir().unwrap();
    let orphan = VmDir::create(root.path(), "orphan").unwrap();
    let mut hypervisor = spawn("exec sleep 60");
    orphan.record_process("qemu", hypervisor.id()).unwrap();
    orphan.record_tap("frtestabsent0").unwrap();
    std::fs::write(orphan.join("owner"), dead_owner()).unwrap();
    assert!(is_orphan(&orphan));

    let alive = VmDir::create(root.path(), "alive").unwrap();
    let mut kept = spawn("exec sleep 60");
    alive.record_process("qemu", kept.id()).unwrap();
    assert!(!is_orphan(&alive));

    let report = reap_orphans(root.path());
    assert!(report.failures.is_empty(), "{:?}", report.failures);
    assert_eq!(
        report.freed,
        vec![FreedVm {
            id: "orphan".into(),
            killed: vec![("qemu".into(), hypervisor.id())],
            taps: vec![],
        }]
    );
    assert_eq!(report.kept, vec!["alive".to_string()]);
    assert_eq!(hypervisor.wait().unwrap().signal(), Some(libc::SIGTERM));
    assert!(!orphan.path().exists());
    assert!(alive.path().exists());
    assert!(
        kept.try_wait().unwrap().is_none(),
        "a live owner's VM is untouched"
    );

    let freed = destroy_dir(alive.clone()).unwrap();
    assert_eq!(freed.killed, vec![("qemu".to_string(), kept.id())]);
    assert_eq!(kept.wait().unwrap().signal(), Some(libc::SIGTERM));
    assert!(VmDir::list(root.path()).unwrap().is_empty());
}

#[test]
fn a_process_ignoring_sigterm_is_killed_after_the_grace_period() {
    let root = tempfile::tempdir().unwrap();
    let dir = VmDir::create(root.path(), "stubborn").unwrap();
    let mut stubborn = spawn("trap '' TERM; exec sleep 60");
    // Let the shell install its trap before the reaper signals it.
    std::thread::sleep(Duration::from_millis(200));
    dir.record_process("qemu", stubborn.id()).unwrap();
    std::fs::write(dir.join("owner"), dead_owner()).unwrap();
    let started = Instant::now();
    let report = reap_orphans(root.path());
    assert!(report.failures.is_empty(), "{:?}", report.failures);
    assert!(started.elapsed() >= TERM_GRACE);
    assert_eq!(stubborn.wait().unwrap().signal(), Some(libc::SIGKILL));
    assert!(!dir.path().exists());
}

#[test]
fn a_recycled_pid_is_never_signalled() {
    let root = tempfile::tempdir().unwrap();
    let dir = VmDir::create(root.path(), "recycled").unwrap();
    // This test process, recorded with a start time it does not have, stands
    // for a hypervisor whose pid now belongs to someone else.
    let me = ProcessId::current();
    std::fs::write(
        dir.join("proc.qemu"),
        format!("{} {}\n", me.pid, me.start_time + 1),
    )
    .unwrap();
    std::fs::write(dir.join("owner"), dead_owner()).unwrap();
    let report = reap_orphans(root.path());
    assert_eq!(report.freed.len(), 1);
    assert!(report.freed[0].killed.is_empty());
    assert!(!dir.path().exists());
}

#[test]
fn a_fresh_directory_without_an_owner_file_is_left_alone() {
    let root = tempfile::tempdir().unwrap();
    let dir = VmDir::create(root.path(), "being-created").unwrap();
    std::fs::remove_file(dir.join("owner")).unwrap();
    let report = reap_orphans(root.path());
    assert_eq!(report.kept, vec!["being-created".to_string()]);
    assert!(dir.path().exists());
}

#[test]
fn half_written_snapshots_of_dead_makers_are_removed() {
    let snapshots = tempfile::tempdir().unwrap();
    let me = ProcessId::current();
    let dead = dead_owner();
    let dead_pid = dead.split_whitespace().next().unwrap();
    let abandoned = snapshots.path().join(format!(".base-{dead_pid}-1-1.tmp"));
    let in_progress = snapshots
        .path()
        .join(format!(".base-{}-{}-2.tmp", me.pid, me.start_time));
    let complete = snapshots.path().join("0123abcd");
    for dir in [&abandoned, &in_progress, &complete] {
        std::fs::create_dir_all(dir).unwrap();
        std::fs::write(dir.join("memory"), "state").unwrap();
    }
    assert_eq!(
        remove_abandoned_snapshots(snapshots.path()),
        vec![abandoned.clone()]
    );
    assert!(!abandoned.exists() && in_progress.exists() && complete.exists());
}
