//! Sessions and the warm pool over real QEMU/TCG guests (the test image).

mod common;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use firerunner_agent_proto::message::ExecRequest;
use firerunner_vm::pool::{PoolConfig, VmOrigin};
use firerunner_vm::reaper::is_running;
use firerunner_vm::runtime::ProcessId;
use firerunner_vm::session::{SessionConfig, SessionManager, SessionState};
use firerunner_vm::{VmDir, VmInstance};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pool_of_qemu_guests_hands_out_restored_vms_with_the_hosts_time() {
    let root = tempfile::tempdir().unwrap();
    let snapshots = tempfile::tempdir().unwrap();
    let spec = common::test_spec();
    let manager = SessionManager::with_pool(
        common::qemu().await,
        SessionConfig {
            root: root.path().to_path_buf(),
            max_vms: 2,
            max_sessions: 2,
            acquire_timeout: Some(Duration::from_secs(180)),
        },
        spec.clone(),
        PoolConfig {
            size: 1,
            refill: true,
            snapshot_dir: snapshots.path().to_path_buf(),
        },
    );

    let mut session = manager.acquire(&spec).await.unwrap();
    assert_eq!(session.origin(), VmOrigin::Restored);
    let hypervisor = ProcessId::of(session.vm().pid()).unwrap();
    session.mark_executing().unwrap();
    let (stdout, _, status) = session
        .client()
        .exec(ExecRequest::argv(["/bin/sh", "-c", "date +%s; uname -s"]))
        .await
        .unwrap()
        .wait()
        .await
        .unwrap();
    assert_eq!(status.code, Some(0));
    let text = String::from_utf8(stdout).unwrap();
    let mut lines = text.lines();
    let guest_time: u64 = lines.next().unwrap().parse().unwrap();
    let host_time = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    assert!(
        host_time.abs_diff(guest_time) < 30,
        "the restored guest's clock was set: guest {guest_time}, host {host_time}"
    );
    assert_eq!(lines.next(), Some("Linux"));
    session.mark_complete().unwrap();
    assert_eq!(session.state(), SessionState::Completed);
    session.release().await.unwrap();
    assert!(!is_running(&hypervisor), "QEMU is gone after release");

    let metrics = manager.metrics();
    eprintln!(
        "restore to agent handshake: mean {:?}",
        metrics.restores.mean()
    );
    assert_eq!(metrics.boots.count, 0, "no session VM was cold-booted");
    assert!(metrics.restores.count >= 1);
    manager.shutdown().await;
    assert!(VmDir::list(root.path()).unwrap().is_empty());
}
