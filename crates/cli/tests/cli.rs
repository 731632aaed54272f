//! The `firerunner` binary's validate and plan commands, its hypervisor
//! options and its logs, run as a user would.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn firerunner(args: &[&str], dir: &Path) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_firerunner"))
        .args(args)
        .current_dir(dir)
        .output()
        .expect("runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn repo() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."))
}

#[test]
fn validate_prints_file_line_col_and_fails() {
    let (code, stdout, stderr) = firerunner(
        &[
            "validate",
            "crates/workflow/tests/fixtures/invalid/cycle.yml",
        ],
        repo(),
    );
    assert_eq!(code, 1);
    assert_eq!(
        stdout,
        "crates/workflow/tests/fixtures/invalid/cycle.yml:8:12: jobs.b.needs: dependency cycle: a -> c -> b -> a\n"
    );
    assert!(
        stderr.contains("1 file checked: 1 error, 0 warnings"),
        "{stderr}"
    );
}

#[test]
fn validate_defaults_to_github_workflows_and_passes_the_example() {
    let (code, stdout, stderr) = firerunner(&["validate"], &repo().join("examples/demo"));
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(stdout.is_empty());
}

#[test]
fn validate_without_files_is_an_error() {
    let dir = std::env::temp_dir().join(format!("firerunner-empty-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (code, _, stderr) = firerunner(&["validate", "."], &dir);
    assert_eq!(code, 2);
    assert!(stderr.contains("no workflow files"), "{stderr}");
}

#[test]
fn plan_lists_jobs_in_order_with_matrix_values() {
    let (code, stdout, stderr) = firerunner(
        &[
            "plan",
            "-e",
            "push",
            "--ref",
            "refs/heads/main",
            "--changed-file",
            "src/numbers.txt",
        ],
        &repo().join("examples/demo"),
    );
    assert_eq!(code, 0, "{stderr}");
    let expected = "\
.github/workflows/ci.yml (Demo CI): runs
  prepare      prepare
  test         test (bash, small)  (needs prepare)
               test (bash, large)
               test (sh, small)
               test (bash, huge)
  package      package  (needs prepare, test)
";
    assert_eq!(stdout, expected);
    assert!(
        stderr.contains("1 of 1 workflow runs on 'push', 6 jobs"),
        "{stderr}"
    );
}

#[test]
fn plan_explains_skipped_workflows() {
    let demo = repo().join("examples/demo");
    let (_, stdout, _) = firerunner(
        &[
            "plan",
            "-e",
            "push",
            "--ref",
            "refs/heads/feature",
            "--changed-file",
            "src/x",
        ],
        &demo,
    );
    assert_eq!(stdout, ".github/workflows/ci.yml (Demo CI): skipped: branch 'feature' matches no pattern in on.push.branches\n");
    let (_, stdout, _) = firerunner(
        &[
            "plan",
            "-e",
            "push",
            "--ref",
            "refs/heads/main",
            "--changed-file",
            "docs/x.md",
        ],
        &demo,
    );
    assert_eq!(stdout, ".github/workflows/ci.yml (Demo CI): skipped: every changed file matches on.push.paths-ignore\n");
    let (_, stdout, _) = firerunner(&["plan", "-e", "push", "--ref", "refs/heads/main"], &demo);
    assert!(
        stdout.contains("undecided: a path filter applies"),
        "{stdout}"
    );
}

#[test]
fn plan_reads_a_payload_file() {
    let dir = std::env::temp_dir().join(format!("firerunner-payload-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let payload = dir.join("event.json");
    std::fs::write(
        &payload,
        r#"{"action":"opened","pull_request":{"base":{"ref":"main"},"head":{"ref":"x"}}}"#,
    )
    .unwrap();
    let (code, stdout, stderr) = firerunner(
        &[
            "plan",
            "-e",
            "pull_request",
            "--payload",
            payload.to_str().unwrap(),
        ],
        &repo().join("examples/demo"),
    );
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stdout.starts_with(".github/workflows/ci.yml (Demo CI): runs"),
        "{stdout}"
    );
    std::fs::write(&payload, "{not json").unwrap();
    let (code, _, stderr) = firerunner(
        &["plan", "-e", "push", "--payload", payload.to_str().unwrap()],
        &repo().join("examples/demo"),
    );
    assert_eq!(code, 2);
    assert!(stderr.contains("is not valid JSON"), "{stderr}");
}

#[test]
fn local_reusable_workflows_are_checked_and_planned() {
    let repo = std::env::temp_dir().join(format!("firerunner-calls-{}", std::process::id()));
    let workflows = repo.join(".github/workflows");
    std::fs::create_dir_all(&workflows).unwrap();
    std::fs::write(
        workflows.join("build.yml"),
        "on:\n  workflow_call:\n    inputs:\n      targets: {type: string, required: true}\njobs:\n  compile:\n    runs-on: x\n    strategy:\n      matrix:\n        target: ${{ fromJSON(inputs.targets) }}\n    steps: [{run: \"true\"}]\n",
    )
    .unwrap();
    std::fs::write(
        workflows.join("main.yml"),
        "on: push\njobs:\n  build:\n    uses: ./.github/workflows/build.yml\n    with:\n      targets: '[\"linux\", \"mac\"]'\n",
    )
    .unwrap();
    let (code, stdout, stderr) =
        firerunner(&["plan", "-e", "push", "--ref", "refs/heads/main"], &repo);
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stdout.contains("  build        build  (calls ./.github/workflows/build.yml)\n                 build / compile (linux)\n                 build / compile (mac)\n"),
        "{stdout}"
    );
    std::fs::write(
        workflows.join("main.yml"),
        "on: push\njobs:\n  build:\n    uses: ./.github/workflows/build.yml\n  gone:\n    uses: ./.github/workflows/gone.yml\n",
    )
    .unwrap();
    let (code, stdout, _) = firerunner(&["validate"], &repo);
    assert_eq!(code, 1);
    assert_eq!(
        stdout,
        ".github/workflows/main.yml:3:3: jobs.build: required input 'targets' of ./.github/workflows/build.yml is not given in 'with'\n\
         .github/workflows/main.yml:6:11: jobs.gone.uses: ./.github/workflows/gone.yml does not exist\n"
    );
}

#[test]
fn plan_checks_dispatch_inputs_and_job_conditions() {
    let repo = std::env::temp_dir().join(format!("firerunner-dispatch-{}", std::process::id()));
    let workflows = repo.join(".github/workflows");
    std::fs::create_dir_all(&workflows).unwrap();
    std::fs::write(
        workflows.join("ci.yml"),
        "on:\n  push:\n  workflow_dispatch:\n    inputs:\n      env: {type: choice, options: [dev, prod], required: true}\njobs:\n  deploy:\n    name: deploy to ${{ inputs.env }}\n    if: github.event_name == 'workflow_dispatch'\n    runs-on: x\n    steps: [{run: 'true'}]\n",
    )
    .unwrap();
    let plan = |args: &[&str]| {
        let mut all = vec!["plan", "--ref", "refs/heads/main"];
        all.extend_from_slice(args);
        firerunner(&all, &repo)
    };
    let (code, stdout, _) = plan(&["-e", "workflow_dispatch", "--input", "env=qa"]);
    assert_eq!(code, 1);
    assert!(
        stdout.contains("not started: input 'env': 'qa' is not one of the options (dev, prod)"),
        "{stdout}"
    );
    let (code, stdout, stderr) = plan(&["-e", "workflow_dispatch", "--input", "env=prod"]);
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stdout.contains("  deploy       deploy to prod\n"),
        "{stdout}"
    );
    let (_, stdout, _) = plan(&["-e", "push"]);
    assert!(stdout.contains("(skipped: its if: is false)"), "{stdout}");
    std::fs::remove_dir_all(&repo).ok();
}

#[test]
fn backend_and_accel_take_only_their_values() {
    let dir = tempfile::tempdir().unwrap();
    for args in [
        &["vm", "run", "--backend", "vmware", "--", "true"][..],
        &["vm", "run", "--accel", "hvf", "--", "true"][..],
        &["run", "--backend", "vmware"][..],
        &["run", "--accel", "hvf"][..],
    ] {
        let (code, _, stderr) = firerunner(args, dir.path());
        assert_eq!(code, 2, "{args:?}: {stderr}");
        assert!(stderr.contains("invalid value"), "{args:?}: {stderr}");
        let expected = if args.contains(&"--backend") {
            "[possible values: qemu, firecracker]"
        } else {
            "[possible values: auto, kvm, tcg]"
        };
        assert!(stderr.contains(expected), "{args:?}: {stderr}");
    }
}

/// Logs that go to a pipe (journald, a file) carry no ANSI colour codes.
#[test]
fn serve_logs_to_a_pipe_without_colour_codes() {
    let data = tempfile::tempdir().unwrap();
    let mut server = Command::new(env!("CARGO_BIN_EXE_firerunner"))
        .arg("serve")
        .env("FIRERUNNER_DATA_DIR", data.path())
        .env(
            "FIRERUNNER_DATABASE_URL",
            format!("sqlite://{}?mode=rwc", data.path().join("db").display()),
        )
        .env("FIRERUNNER_LISTEN", "127.0.0.1:0")
        .env("FIRERUNNER_WORKER_ENABLED", "false")
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = server.stderr.take().unwrap();
    let (lines, received) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if lines.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut log = String::new();
    while !log.contains("listening on") {
        let left = deadline.saturating_duration_since(Instant::now());
        match received.recv_timeout(left) {
            Ok(line) => log.push_str(&(line + "\n")),
            Err(_) => break,
        }
    }
    let _ = server.kill();
    let _ = server.wait();
    assert!(log.contains("listening on"), "{log}");
    assert!(log.contains("WARN"), "the webhook secret warning: {log}");
    assert!(!log.contains('\x1b'), "{log:?}");
}

/// `serve` runs Firecracker under its jailer unless told otherwise, and a
/// missing jailer stops it with a message saying both ways out.
#[test]
fn serve_with_firecracker_wants_the_jailer_or_an_explicit_no() {
    use std::os::unix::fs::PermissionsExt;
    let data = tempfile::tempdir().unwrap();
    let fake = data.path().join("firecracker");
    std::fs::write(&fake, "#!/bin/sh\necho 'Firecracker v1.7.0'\n").unwrap();
    std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
    let serve = |jailer: &str| {
        let config = data.path().join("firerunner.toml");
        std::fs::write(
            &config,
            format!(
                "listen = \"127.0.0.1:0\"\ndata_dir = \"{0}\"\n\
                 database_url = \"sqlite://{0}/db?mode=rwc\"\n\
                 [vm]\nbackend = \"firecracker\"\n[vm.jailer]\n{jailer}\n",
                data.path().display()
            ),
        )
        .unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_firerunner"))
            .args(["serve", "--config"])
            .arg(&config)
            .env("FIRECRACKER_BIN", &fake)
            .env_remove("FIRECRACKER_JAILER")
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // It either stops with an error or (unjailed, where /dev/kvm exists)
        // goes on to prepare its guest image, and is stopped then.
        let mut log = String::new();
        for line in BufReader::new(child.stderr.take().unwrap()).lines() {
            let line = line.unwrap();
            log.push_str(&line);
            log.push('\n');
            if line.contains("guest image") {
                break;
            }
        }
        let _ = child.kill();
        let _ = child.wait();
        log
    };
    let refused = serve("binary = \"/nonexistent/jailer\"");
    assert!(
        refused.contains("jailer '/nonexistent/jailer' was not found"),
        "{refused}"
    );
    assert!(refused.contains("enabled = false"), "{refused}");
    let unjailed = serve("enabled = false\nbinary = \"/nonexistent/jailer\"");
    assert!(!unjailed.contains("jailer"), "{unjailed}");
}
