//! `firerunner run` end to end: a repository with a workflow, run in QEMU/TCG
//! guests by the real binary; exit codes, live output, Ctrl-C.

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

fn repo_with(workflow: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join(".github/workflows")).unwrap();
    std::fs::write(dir.path().join(".github/workflows/ci.yml"), workflow).unwrap();
    std::fs::write(dir.path().join(".secrets"), "TOKEN=hunter22\n").unwrap();
    std::fs::write(dir.path().join(".gitignore"), ".secrets\n").unwrap();
    firerunner_vm::testing::git_repo(dir.path(), "init");
    dir
}

fn firerunner(repo: &Path, runtime: &Path, args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_firerunner"));
    command
        .args(args)
        .current_dir(repo)
        .env("FIRERUNNER_AGENT", firerunner_vm::testing::agent_binary())
        .env("FIRERUNNER_RUNTIME_DIR", runtime)
        .args(["--accel", "tcg", "--image", "test"]);
    command
}

fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

const WORKFLOW: &str = r#"
on:
  push:
    branches: [main]
jobs:
  hello:
    runs-on: ubuntu-latest
    steps:
      - uses: actions/checkout@v4
      - run: echo "hello from $(uname -s) with ${{ secrets.TOKEN }}"
      - run: test -f .github/workflows/ci.yml
  broken:
    needs: hello
    runs-on: ubuntu-latest
    steps:
      - run: exit 7
"#;

#[test]
fn run_reports_live_output_masks_secrets_and_fails_with_the_workflow() {
    let repo = repo_with(WORKFLOW);
    let runtime = tempfile::tempdir().unwrap();
    let output = firerunner(repo.path(), runtime.path(), &["run"])
        .output()
        .unwrap();
    let all = text(&output);
    assert_eq!(output.status.code(), Some(1), "{all}");
    assert!(all.contains("[hello] | hello from Linux with ***"), "{all}");
    assert!(!all.contains("hunter22"), "{all}");
    assert!(all.contains("Process completed with exit code 7"), "{all}");
    assert!(firerunner_vm::VmDir::list(runtime.path())
        .unwrap()
        .is_empty());

    let only_hello = firerunner(repo.path(), runtime.path(), &["run", "-j", "hello"])
        .output()
        .unwrap();
    assert_eq!(only_hello.status.code(), Some(0), "{}", text(&only_hello));

    let other_branch = firerunner(repo.path(), runtime.path(), &["run", "-e", "/dev/null"])
        .output()
        .unwrap();
    assert_ne!(
        other_branch.status.code(),
        Some(0),
        "an unreadable payload is an error"
    );

    let listed = firerunner(repo.path(), runtime.path(), &["run", "-l"])
        .output()
        .unwrap();
    let listed = text(&listed);
    assert!(
        listed.contains("hello") && listed.contains("broken"),
        "{listed}"
    );
}

#[test]
fn ctrl_c_cancels_the_run_and_leaves_no_vm() {
    let repo = repo_with(
        "on: push\njobs:\n  long:\n    runs-on: ubuntu-latest\n    steps:\n      - run: echo started; sleep 300\n",
    );
    let runtime = tempfile::tempdir().unwrap();
    let mut child = firerunner(repo.path(), runtime.path(), &["run"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Press Ctrl-C once the step's first line arrives from the guest.
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || {
        use std::io::BufRead;
        let mut seen = Vec::new();
        for line in std::io::BufReader::new(stdout).lines() {
            let line = line.unwrap_or_default();
            if line.contains("[long] | started") {
                let _ = tx.send(());
            }
            seen.push(line);
        }
        seen.join("\n")
    });
    if rx.recv_timeout(Duration::from_secs(120)).is_err() {
        let _ = child.kill();
        let output = child.wait_with_output().unwrap();
        panic!(
            "the step never started in its guest:\n{}\n{}",
            reader.join().unwrap(),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    assert!(!firerunner_vm::VmDir::list(runtime.path())
        .unwrap()
        .is_empty());
    // SAFETY: kill with a valid pid and signal number.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let cancelled_at = Instant::now();
    let output = child.wait_with_output().unwrap();
    let stdout = reader.join().unwrap();
    let all = format!("{stdout}\n{}", String::from_utf8_lossy(&output.stderr));
    assert_eq!(output.status.code(), Some(130), "{all}");
    assert!(cancelled_at.elapsed() < Duration::from_secs(20), "{all}");
    assert!(all.contains("cancelled  long"), "{all}");
    assert!(
        firerunner_vm::VmDir::list(runtime.path())
            .unwrap()
            .is_empty(),
        "no VM left behind"
    );
}

/// Processes whose command line mentions `needle`.
fn processes_mentioning(needle: &str) -> Vec<u32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|entry| {
            let pid: u32 = entry.ok()?.file_name().to_str()?.parse().ok()?;
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
            String::from_utf8_lossy(&cmdline)
                .contains(needle)
                .then_some(pid)
        })
        .collect()
}

#[test]
fn a_killed_run_leaves_no_hypervisor_behind() {
    let repo = repo_with(
        "on: push\njobs:\n  long:\n    runs-on: ubuntu-latest\n    steps:\n      - run: sleep 300\n",
    );
    let runtime = tempfile::tempdir().unwrap();
    let needle = runtime.path().to_string_lossy().into_owned();
    let mut child = firerunner(repo.path(), runtime.path(), &["run"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let started = Instant::now();
    while processes_mentioning(&needle).is_empty() && started.elapsed() < Duration::from_secs(60) {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(!processes_mentioning(&needle).is_empty(), "QEMU started");
    std::thread::sleep(Duration::from_secs(2));
    child.kill().unwrap();
    child.wait().unwrap();
    let killed = Instant::now();
    while !processes_mentioning(&needle).is_empty() && killed.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        processes_mentioning(&needle).is_empty(),
        "QEMU outlived the killed firerunner"
    );
}

#[test]
fn a_remote_reusable_workflow_that_cannot_be_fetched_fails_its_job_with_the_reason() {
    let repo =
        repo_with("on: push\njobs:\n  call:\n    uses: octo/absent/.github/workflows/x.yml@v1\n");
    let runtime = tempfile::tempdir().unwrap();
    let missing = tempfile::tempdir().unwrap();
    let actions_url = format!("file://{}", missing.path().display());
    let output = firerunner(
        repo.path(),
        runtime.path(),
        &[
            "run",
            "--warm",
            "0",
            "--no-learn",
            "--actions-url",
            &actions_url,
        ],
    )
    .output()
    .unwrap();
    let all = text(&output);
    assert_eq!(output.status.code(), Some(1), "{all}");
    assert!(
        all.contains(
            "error: call: octo/absent/.github/workflows/x.yml@v1: cannot fetch the reusable workflow: cannot fetch file://"
        ),
        "{all}"
    );
    assert!(all.contains("failure    call"), "{all}");
}

#[test]
fn a_pulled_cache_runs_jobs_offline_with_a_pull_request_event_made_from_git() {
    let mirror = firerunner_engine::testing::ActionMirror::new();
    let action = "runs:\n  using: composite\n  steps:\n    - shell: sh\n      run: echo \"hello from the cache at $GITHUB_ACTION_PATH\"\n";
    let sha = mirror.publish("octo/hello", "v1", &[("action.yml", action)]);
    let workflow = r#"
on: [push, pull_request]
jobs:
  offline:
    runs-on: ubuntu-latest
    steps:
      - uses: actions/checkout@v4
      - uses: octo/hello@v1
      - run: test "${{ github.event.pull_request.number }}" = 5
      - run: test "${{ github.ref }}" = refs/pull/5/merge && test "$GITHUB_REF" = refs/pull/5/merge
      - run: test "${{ github.head_ref }}" = feature && test "${{ github.base_ref }}" = main
      - run: test "${{ github.event.pull_request.head.sha }}" = "$(cat head.txt)"
      - run: test "${{ github.event.repository.full_name }}" = "$GITHUB_REPOSITORY"
      - run: |
          grep -q '"number": 5' "$GITHUB_EVENT_PATH"
"#;
    let repo = repo_with(workflow);
    let git = |args: &[&str]| firerunner_vm::testing::git(repo.path(), args);
    git(&["checkout", "-q", "-b", "feature"]);
    std::fs::create_dir_all(repo.path().join("other")).unwrap();
    let missing = "on: push\njobs:\n  broken:\n    runs-on: ubuntu-latest\n    steps:\n      - run: echo never-runs\n      - uses: octo/absent@v1\n";
    std::fs::write(repo.path().join("other/missing.yml"), missing).unwrap();
    git(&["add", "."]);
    git(&["commit", "-q", "-m", "feature work"]);
    std::fs::write(repo.path().join("head.txt"), git(&["rev-parse", "HEAD"])).unwrap();
    let runtime = tempfile::tempdir().unwrap();
    let cache = tempfile::tempdir().unwrap();
    let cache_arg = cache.path().display().to_string();

    let pull = Command::new(env!("CARGO_BIN_EXE_firerunner"))
        .args([
            "actions",
            "pull",
            "--actions-url",
            &mirror.url(),
            "--actions-cache",
            &cache_arg,
        ])
        .current_dir(repo.path())
        .output()
        .unwrap();
    assert_eq!(pull.status.code(), Some(0), "{}", text(&pull));
    drop(mirror);

    let offline = [
        "--warm",
        "0",
        "--no-learn",
        "--actions-offline",
        "--actions-url",
        "file:///nonexistent",
        "--actions-cache",
        &cache_arg,
    ];
    let mut args = vec!["run", "pull_request", "--pr-number", "5"];
    args.extend(offline);
    let output = firerunner(repo.path(), runtime.path(), &args)
        .output()
        .unwrap();
    let all = text(&output);
    assert_eq!(output.status.code(), Some(0), "{all}");
    let used = format!("Use action repository 'octo/hello@v1' (SHA:{sha}) from the action cache");
    assert!(all.contains(&used), "{all}");
    assert!(
        all.contains("hello from the cache at /home/runner/work/_actions/octo/hello/v1"),
        "{all}"
    );

    let mut args = vec!["run", "-W", "other/missing.yml"];
    args.extend(offline);
    let output = firerunner(repo.path(), runtime.path(), &args)
        .output()
        .unwrap();
    let all = text(&output);
    assert_eq!(output.status.code(), Some(1), "{all}");
    assert!(
        all.contains("error: 1 action cannot be had, so none of its steps ran:"),
        "{all}"
    );
    assert!(
        all.contains("octo/absent@v1: it is not in the action cache"),
        "{all}"
    );
    assert!(!all.contains("[broken] | never-runs"), "{all}");
}
