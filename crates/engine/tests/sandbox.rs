//! The sandbox against the real guest agent, run on the host over a socket pair.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use firerunner_agent_proto::Client;
use firerunner_engine::logs::LogStream;
use firerunner_engine::sandbox::{ProcessEnd, ProcessSpec, Sandbox};
use firerunner_vm::testing::host_agent;
use tokio_util::sync::CancellationToken;

async fn sandbox() -> (std::process::Child, Sandbox) {
    let (child, host) = host_agent();
    let client = Client::connect(host).await.unwrap();
    let sandbox =
        Sandbox::new(client).with_grace(Duration::from_millis(300), Duration::from_millis(300));
    (child, sandbox)
}

fn bash(script: &str, timeout: Option<Duration>) -> ProcessSpec {
    ProcessSpec {
        argv: vec!["bash".into(), "-c".into(), script.into()],
        env: BTreeMap::from([
            ("PATH".to_string(), "/usr/bin:/bin".to_string()),
            ("GREETING".to_string(), "hi".to_string()),
        ]),
        cwd: Some("/".into()),
        timeout,
    }
}

#[tokio::test]
async fn lines_arrive_in_order_with_their_stream_and_only_the_given_env() {
    let (mut child, sandbox) = sandbox().await;
    let mut lines = Vec::new();
    let end = sandbox
        .run(
            bash(
                "echo $GREETING; echo oops >&2; printf 'no newline'; test -z \"$HOME\"; exit 4",
                None,
            ),
            &CancellationToken::new(),
            &mut |stream, line| lines.push((stream, line)),
        )
        .await
        .unwrap();
    assert_eq!(end, ProcessEnd::Exited(4));
    assert!(lines.contains(&(LogStream::Stdout, "hi".to_string())));
    assert!(lines.contains(&(LogStream::Stderr, "oops".to_string())));
    assert!(lines.contains(&(LogStream::Stdout, "no newline".to_string())));
    drop(sandbox);
    let _ = child.kill();
}

#[tokio::test]
async fn a_timeout_escalates_to_sigterm_when_sigint_is_ignored() {
    let (mut child, sandbox) = sandbox().await;
    let started = Instant::now();
    let mut lines = Vec::new();
    let end = sandbox
        .run(
            bash(
                "trap 'echo got INT' INT; for i in $(seq 100); do sleep 0.1; done",
                Some(Duration::from_millis(300)),
            ),
            &CancellationToken::new(),
            &mut |_, line| lines.push(line),
        )
        .await
        .unwrap();
    assert_eq!(end, ProcessEnd::TimedOut);
    // Well before the 10 s the loop runs when nothing ends it.
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "{:?}",
        started.elapsed()
    );
    assert!(
        lines.iter().any(|l| l == "got INT"),
        "SIGINT came first: {lines:?}"
    );
    let _ = child.kill();
}

#[tokio::test]
async fn cancellation_reaches_the_process() {
    let (mut child, sandbox) = sandbox().await;
    let cancel = CancellationToken::new();
    let trigger = cancel.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(200)).await;
        trigger.cancel();
    });
    let started = Instant::now();
    let end = sandbox
        .run(bash("sleep 30", None), &cancel, &mut |_, _| {})
        .await
        .unwrap();
    assert_eq!(end, ProcessEnd::Cancelled);
    // Far below the 30 s the command runs when nothing ends it.
    assert!(started.elapsed() < Duration::from_secs(15));
    let _ = child.kill();
}

#[tokio::test]
async fn files_and_directories() {
    let (mut child, sandbox) = sandbox().await;
    let dir = tempfile::tempdir().unwrap();
    let nested = dir.path().join("a/b");
    sandbox
        .create_dirs(&[nested.to_str().unwrap()])
        .await
        .unwrap();
    let file = nested.join("f.txt");
    sandbox
        .write_file(file.to_str().unwrap(), 0o644, b"content")
        .await
        .unwrap();
    assert_eq!(
        sandbox
            .read_file(file.to_str().unwrap(), 1 << 20)
            .await
            .unwrap(),
        Some(b"content".to_vec())
    );
    assert_eq!(
        sandbox
            .read_file(nested.join("missing").to_str().unwrap(), 1 << 20)
            .await
            .unwrap(),
        None
    );
    let _ = child.kill();
}
