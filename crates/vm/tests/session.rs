//! Sessions, limits, the drop guard and the warm pool, with the real guest
//! agent running as host processes (see `session_support`).

mod session_support;

use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use firerunner_agent_proto::message::ExecRequest;
use firerunner_vm::pool::{PoolConfig, VmOrigin};
use firerunner_vm::reaper::is_running;
use firerunner_vm::runtime::ProcessId;
use firerunner_vm::session::{
    IllegalTransition, SessionConfig, SessionError, SessionManager, SessionState,
};
use firerunner_vm::{VmDir, VmInstance};
use session_support::{eventually, no_vm_dirs, spec, HostAgentBackend};

fn config(root: &std::path::Path, max_vms: usize, max_sessions: usize) -> SessionConfig {
    SessionConfig {
        root: root.to_path_buf(),
        max_vms,
        max_sessions,
        acquire_timeout: None,
    }
}

fn all_dead(backend: &HostAgentBackend) -> bool {
    backend
        .record
        .pids
        .lock()
        .unwrap()
        .iter()
        .all(|pid| !is_running(pid))
}

async fn echo(session: &firerunner_vm::session::Session<HostAgentBackend>, text: &str) -> String {
    let (stdout, _, status) = session
        .client()
        .exec(ExecRequest::argv(["echo", text]))
        .await
        .unwrap()
        .wait()
        .await
        .unwrap();
    assert_eq!(status.code, Some(0));
    String::from_utf8(stdout).unwrap()
}

#[test]
fn the_life_cycle_allows_exactly_the_documented_moves() {
    use SessionState::*;
    let states = [Created, Executing, Completed, Failed, Released];
    let allowed = [
        (Created, Executing),
        (Executing, Completed),
        (Executing, Failed),
        (Created, Released),
        (Completed, Released),
        (Failed, Released),
    ];
    for from in states {
        for to in states {
            let result = from.transition(to);
            if allowed.contains(&(from, to)) {
                assert_eq!(result, Ok(to), "{from:?} -> {to:?}");
            } else {
                assert_eq!(
                    result,
                    Err(IllegalTransition { from, to }),
                    "{from:?} -> {to:?}"
                );
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_released_session_leaves_no_process_and_no_directory() {
    let root = tempfile::tempdir().unwrap();
    let backend = HostAgentBackend::new();
    let manager = SessionManager::new(backend.clone(), config(root.path(), 2, 2));
    let mut session = manager.acquire(&spec(256)).await.unwrap();
    assert_eq!(session.state(), SessionState::Created);
    assert_eq!(session.origin(), VmOrigin::Booted);
    let dir = session.vm().dir().path().to_path_buf();
    let pid = ProcessId::of(session.vm().pid()).unwrap();
    assert!(dir.join("agent.sock").exists());

    session.mark_executing().unwrap();
    assert_eq!(echo(&session, "hello").await, "hello\n");
    assert_eq!(manager.metrics().executing, 1);
    session.mark_complete().unwrap();
    assert_eq!(
        session.mark_executing(),
        Err(IllegalTransition {
            from: SessionState::Completed,
            to: SessionState::Executing
        })
    );
    assert_eq!(
        session.mark_failed().unwrap_err().from,
        SessionState::Completed
    );
    assert_eq!(session.state(), SessionState::Completed);
    assert_eq!(manager.metrics().vms_running, 1);

    manager.release(session).await.unwrap();
    assert!(!is_running(&pid));
    assert!(!dir.exists());
    assert!(no_vm_dirs(root.path()));
    let metrics = manager.metrics();
    assert_eq!(
        (metrics.created, metrics.executing, metrics.completed),
        (0, 0, 0)
    );
    assert_eq!((metrics.released, metrics.total_completed), (1, 1));
    assert_eq!(metrics.boots.count, 1);
    assert_eq!(metrics.vms_running, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn releasing_while_executing_counts_as_failed() {
    let root = tempfile::tempdir().unwrap();
    let manager = SessionManager::new(HostAgentBackend::new(), config(root.path(), 1, 1));
    let mut session = manager.acquire(&spec(256)).await.unwrap();
    session.mark_executing().unwrap();
    session.release().await.unwrap();
    let metrics = manager.metrics();
    assert_eq!((metrics.total_failed, metrics.released), (1, 1));
    assert_eq!(metrics.failed, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_acquire_beyond_max_sessions_waits_until_a_release() {
    let root = tempfile::tempdir().unwrap();
    let manager = SessionManager::new(HostAgentBackend::new(), config(root.path(), 4, 2));
    let first = manager.acquire(&spec(256)).await.unwrap();
    let _second = manager.acquire(&spec(256)).await.unwrap();
    let waiting = tokio::spawn({
        let manager = manager.clone();
        async move { manager.acquire(&spec(256)).await }
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!waiting.is_finished(), "the third session must wait");
    assert_eq!(manager.metrics().created, 2);
    first.release().await.unwrap();
    let third = tokio::time::timeout(Duration::from_secs(20), waiting)
        .await
        .expect("the release lets the third session in")
        .unwrap()
        .unwrap();
    assert_eq!(third.state(), SessionState::Created);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acquire_gives_up_after_its_timeout_on_either_limit() {
    let root = tempfile::tempdir().unwrap();
    let sessions_full = SessionManager::new(
        HostAgentBackend::new(),
        SessionConfig {
            acquire_timeout: Some(Duration::from_millis(300)),
            ..config(root.path(), 4, 1)
        },
    );
    let _held = sessions_full.acquire(&spec(256)).await.unwrap();
    match sessions_full.acquire(&spec(256)).await {
        Err(SessionError::Timeout { slot, waited }) => {
            assert_eq!(slot, "session");
            assert!(waited >= Duration::from_millis(250), "{waited:?}");
        }
        other => panic!("expected a timeout, got {:?}", other.map(|s| s.state())),
    }

    let vms_full = SessionManager::new(
        HostAgentBackend::new(),
        SessionConfig {
            acquire_timeout: Some(Duration::from_millis(300)),
            ..config(root.path(), 1, 4)
        },
    );
    let _vm = vms_full.acquire(&spec(256)).await.unwrap();
    match vms_full.acquire(&spec(256)).await {
        Err(SessionError::Timeout { slot, .. }) => assert_eq!(slot, "VM"),
        other => panic!("expected a timeout, got {:?}", other.map(|s| s.state())),
    }
    assert_eq!(vms_full.metrics().created, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_dropped_without_release_still_destroys_its_vm() {
    let root = tempfile::tempdir().unwrap();
    let backend = HostAgentBackend::new();
    let manager = SessionManager::new(
        backend.clone(),
        SessionConfig {
            acquire_timeout: Some(Duration::from_secs(20)),
            ..config(root.path(), 1, 1)
        },
    );
    let mut session = manager.acquire(&spec(256)).await.unwrap();
    session.mark_executing().unwrap();
    let dir = session.vm().dir().path().to_path_buf();
    drop(session);
    assert!(
        eventually(Duration::from_secs(10), || !dir.exists()
            && all_dead(&backend))
        .await,
        "the dropped session's VM is destroyed"
    );
    let metrics = manager.metrics();
    assert_eq!((metrics.total_failed, metrics.released), (1, 1));
    // Its slots are free again: with max_vms = max_sessions = 1 this only succeeds after the guard ran.
    let next = manager.acquire(&spec(256)).await.unwrap();
    next.release().await.unwrap();
    assert!(no_vm_dirs(root.path()) && all_dead(&backend));
}

fn pool_config(snapshots: &std::path::Path, size: usize) -> PoolConfig {
    PoolConfig {
        size,
        refill: true,
        snapshot_dir: snapshots.to_path_buf(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pool_hands_out_restored_vms_with_their_clock_set_and_refills() {
    let root = tempfile::tempdir().unwrap();
    let snapshots = tempfile::tempdir().unwrap();
    let backend = HostAgentBackend::new();
    let manager = SessionManager::with_pool(
        backend.clone(),
        config(root.path(), 3, 3),
        spec(256),
        pool_config(snapshots.path(), 2),
    );
    let pool = manager.pool().unwrap().clone();
    assert!(eventually(Duration::from_secs(20), || pool.ready() == 2).await);
    // One boot made the base snapshot; both pool VMs were restored from it.
    assert_eq!(backend.record.boots.load(Ordering::SeqCst), 1);
    assert_eq!(backend.record.restores.load(Ordering::SeqCst), 2);
    let snapshot = pool.snapshot().unwrap().unwrap();
    assert!(snapshot.dir.starts_with(snapshots.path()));
    assert_eq!(manager.metrics().restores.count, 2);
    assert_eq!(manager.metrics().pool_ready, 2);
    assert_eq!(manager.metrics().vms_running, 2);
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    {
        let clocks = backend.record.clock_sets.lock().unwrap();
        assert_eq!(clocks.len(), 2, "every restored VM gets the host's time");
        assert!(clocks.iter().all(|&t| now - t < 60_000_000_000));
    }

    let mut session = manager.acquire(&spec(256)).await.unwrap();
    assert_eq!(session.origin(), VmOrigin::Restored);
    session.mark_executing().unwrap();
    assert_eq!(echo(&session, "warm").await, "warm\n");
    session.mark_complete().unwrap();
    assert!(
        eventually(Duration::from_secs(20), || pool.ready() == 2).await,
        "the pool refills after a take"
    );
    assert_eq!(backend.record.restores.load(Ordering::SeqCst), 3);
    assert_eq!(manager.metrics().vms_running, 3);
    session.release().await.unwrap();

    // A session for another machine shape is booted, not taken from the pool.
    let other = manager.acquire(&spec(512)).await.unwrap();
    assert_eq!(other.origin(), VmOrigin::Booted);
    other.release().await.unwrap();

    manager.shutdown().await;
    assert_eq!(pool.ready(), 0);
    assert!(no_vm_dirs(root.path()), "{:?}", VmDir::list(root.path()));
    assert!(all_dead(&backend));
    assert_eq!(manager.metrics().vms_running, 0);

    // A later pool reuses the base snapshot on disk: no boot at all.
    let again = HostAgentBackend::new();
    let manager = SessionManager::with_pool(
        again.clone(),
        config(root.path(), 1, 1),
        spec(256),
        pool_config(snapshots.path(), 1),
    );
    let session = manager.acquire(&spec(256)).await.unwrap();
    assert_eq!(session.origin(), VmOrigin::Restored);
    assert_eq!(again.record.boots.load(Ordering::SeqCst), 0);
    session.release().await.unwrap();
    manager.shutdown().await;
    assert!(no_vm_dirs(root.path()) && all_dead(&again));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pool_vms_count_against_max_vms() {
    let root = tempfile::tempdir().unwrap();
    let snapshots = tempfile::tempdir().unwrap();
    let backend = HostAgentBackend::new();
    let manager = SessionManager::with_pool(
        backend.clone(),
        SessionConfig {
            acquire_timeout: Some(Duration::from_millis(500)),
            ..config(root.path(), 2, 4)
        },
        spec(256),
        pool_config(snapshots.path(), 2),
    );
    let pool = manager.pool().unwrap().clone();
    assert!(eventually(Duration::from_secs(20), || pool.ready() == 2).await);
    // Both VM slots are the pool's: a VM of another shape cannot start.
    match manager.acquire(&spec(512)).await {
        Err(SessionError::Timeout { slot, .. }) => assert_eq!(slot, "VM"),
        other => panic!("expected a timeout, got {:?}", other.map(|s| s.state())),
    }
    let first = manager.acquire(&spec(256)).await.unwrap();
    let second = manager.acquire(&spec(256)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(pool.ready(), 0, "no slot is free to refill");
    assert_eq!(manager.metrics().vms_running, 2);
    first.release().await.unwrap();
    assert!(eventually(Duration::from_secs(20), || pool.ready() == 1).await);
    second.release().await.unwrap();
    manager.shutdown().await;
    assert!(no_vm_dirs(root.path()) && all_dead(&backend));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_snapshots_the_pool_boots_its_vms() {
    let root = tempfile::tempdir().unwrap();
    let snapshots = tempfile::tempdir().unwrap();
    let backend = HostAgentBackend::without_snapshots();
    let manager = SessionManager::with_pool(
        backend.clone(),
        config(root.path(), 2, 2),
        spec(256),
        pool_config(snapshots.path(), 1),
    );
    let pool = manager.pool().unwrap().clone();
    assert!(eventually(Duration::from_secs(20), || pool.ready() == 1).await);
    let why = pool.snapshot().unwrap().unwrap_err();
    assert!(why.contains("without snapshots"), "{why}");
    let session = manager.acquire(&spec(256)).await.unwrap();
    assert_eq!(session.origin(), VmOrigin::Booted);
    assert!(eventually(Duration::from_secs(20), || pool.ready() == 1).await);
    // The base VM, the pool's first VM and its replacement were all booted.
    assert_eq!(backend.record.boots.load(Ordering::SeqCst), 3);
    assert_eq!(backend.record.restores.load(Ordering::SeqCst), 0);
    // No half-written snapshot is left.
    assert_eq!(std::fs::read_dir(snapshots.path()).unwrap().count(), 0);
    session.release().await.unwrap();
    manager.shutdown().await;
    assert!(no_vm_dirs(root.path()) && all_dead(&backend));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pool_dropped_without_shutdown_frees_its_ready_vms() {
    let root = tempfile::tempdir().unwrap();
    let snapshots = tempfile::tempdir().unwrap();
    let backend = HostAgentBackend::new();
    let manager = SessionManager::with_pool(
        backend.clone(),
        config(root.path(), 2, 2),
        spec(256),
        pool_config(snapshots.path(), 2),
    );
    let pool = manager.pool().unwrap().clone();
    assert!(eventually(Duration::from_secs(20), || pool.ready() == 2).await);
    assert_eq!(VmDir::list(root.path()).unwrap().len(), 2);
    drop(pool);
    drop(manager);
    assert!(no_vm_dirs(root.path()));
    assert!(eventually(Duration::from_secs(5), || all_dead(&backend)).await);
}
