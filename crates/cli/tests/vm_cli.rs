//! `firerunner vm run|ls|rm` end to end: the real binary, QEMU/TCG guests
//! from the test image.

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

fn firerunner(runtime: &Path, args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_firerunner"));
    command
        .args(args)
        .env("FIRERUNNER_AGENT", firerunner_vm::testing::agent_binary())
        .env("FIRERUNNER_RUNTIME_DIR", runtime);
    command
}

fn vm_run(runtime: &Path, options: &[&str], command: &[&str]) -> Output {
    let mut args = vec![
        "vm", "run", "--accel", "tcg", "--image", "test", "--memory", "256",
    ];
    args.extend(options);
    args.push("--");
    args.extend(command);
    firerunner(runtime, &args).output().unwrap()
}

fn vm_dirs(runtime: &Path) -> usize {
    std::fs::read_dir(runtime.join("vms")).map_or(0, |entries| entries.count())
}

#[test]
fn vm_run_passes_env_and_workdir_streams_both_streams_and_returns_the_exit_code() {
    let runtime = tempfile::tempdir().unwrap();
    let output = vm_run(
        runtime.path(),
        &["--env", "GREETING=hello", "--workdir", "/tmp"],
        &[
            "/bin/sh",
            "-c",
            "echo $GREETING from $(pwd); echo oops >&2; exit 7",
        ],
    );
    assert_eq!(output.status.code(), Some(7), "{output:?}");
    assert_eq!(String::from_utf8_lossy(&output.stdout), "hello from /tmp\n");
    assert_eq!(String::from_utf8_lossy(&output.stderr), "oops\n");
    assert_eq!(vm_dirs(runtime.path()), 0, "the VM is released");

    let killed = vm_run(runtime.path(), &[], &["/bin/sh", "-c", "kill -TERM $$"]);
    assert_eq!(killed.status.code(), Some(128 + 15), "{killed:?}");

    let timed_out = vm_run(runtime.path(), &["--timeout", "1"], &["sleep", "30"]);
    assert_eq!(timed_out.status.code(), Some(137), "{timed_out:?}");
    assert!(String::from_utf8_lossy(&timed_out.stderr).contains("killed after 1s"));
    assert_eq!(vm_dirs(runtime.path()), 0);

    // Restored from the test image's base snapshot (made on first use, in the shared cache).
    for _ in 0..2 {
        let warm = vm_run(runtime.path(), &["--warm"], &["echo", "warm"]);
        assert_eq!(warm.status.code(), Some(0), "{warm:?}");
        assert_eq!(String::from_utf8_lossy(&warm.stdout), "warm\n");
    }
    assert_eq!(vm_dirs(runtime.path()), 0);
}

#[test]
fn vm_ls_shows_a_running_vm_and_vm_rm_all_destroys_it() {
    let runtime = tempfile::tempdir().unwrap();
    let mut running = firerunner(
        runtime.path(),
        &[
            "vm", "run", "--accel", "tcg", "--image", "test", "--memory", "256", "--", "sleep",
            "60",
        ],
    )
    .stdout(Stdio::null())
    .stderr(Stdio::null())
    .spawn()
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    while vm_dirs(runtime.path()) == 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let ls = firerunner(runtime.path(), &["vm", "ls"]).output().unwrap();
    let table = String::from_utf8_lossy(&ls.stdout).into_owned();
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 2, "{table}");
    assert!(
        lines[1].contains(&format!("{} alive", running.id())),
        "{table}"
    );

    let rm = firerunner(runtime.path(), &["vm", "rm", "--all"])
        .output()
        .unwrap();
    assert!(rm.status.success(), "{rm:?}");
    assert!(String::from_utf8_lossy(&rm.stdout).starts_with("removed vm-"));
    assert_eq!(vm_dirs(runtime.path()), 0);
    // With its VM gone, the command fails rather than hanging.
    let status = running.wait().unwrap();
    assert!(!status.success());
}

#[test]
fn a_vm_removed_while_it_boots_ends_its_run_at_once_instead_of_booting_another() {
    let runtime = tempfile::tempdir().unwrap();
    let started = Instant::now();
    let running = firerunner(
        runtime.path(),
        &[
            "vm", "run", "--accel", "tcg", "--image", "test", "--memory", "256", "--", "sleep",
            "60",
        ],
    )
    .stdout(Stdio::null())
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    while vm_dirs(runtime.path()) == 0 {
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "no VM appeared"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let rm = firerunner(runtime.path(), &["vm", "rm", "--all"])
        .output()
        .unwrap();
    assert!(rm.status.success(), "{rm:?}");
    let removed_at = Instant::now();
    let output = running.wait_with_output().unwrap();
    assert!(!output.status.success(), "{output:?}");
    assert!(
        removed_at.elapsed() < Duration::from_secs(30),
        "the run went on for {:?} after its VM was removed",
        removed_at.elapsed()
    );
    assert_eq!(vm_dirs(runtime.path()), 0);
}
