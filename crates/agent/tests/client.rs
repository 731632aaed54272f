//! The async host client against the real agent binary over a socketpair.

use firerunner_agent_proto::message::{Body, ExecRequest, Message};
use firerunner_agent_proto::testing::agent_on_socket_pair;
use firerunner_agent_proto::{Client, ClientError, ExecEvent, ProtoError};
use std::path::Path;
use std::process::Child;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn spawn_agent() -> (Child, tokio::net::UnixStream) {
    agent_on_socket_pair(Path::new(env!("CARGO_BIN_EXE_firerunner-agent")))
}

fn sh(script: &str) -> ExecRequest {
    ExecRequest::script(["sh", "-e"], script)
}

#[tokio::test]
async fn client_runs_concurrent_execs_files_and_ping() {
    let (mut child, stream) = spawn_agent();
    let client = Client::connect(stream).await.unwrap();
    assert!(client.peer().capabilities.iter().any(|c| c == "file"));
    client.ping().await.unwrap();

    let mut handles = Vec::new();
    for i in 0..20 {
        handles.push(
            client
                .exec(sh(&format!("sleep 0.1; echo {i}; exit {}", i % 3)))
                .await
                .unwrap(),
        );
    }
    for (i, handle) in handles.into_iter().enumerate() {
        let (out, _, status) = handle.wait().await.unwrap();
        assert_eq!(out, format!("{i}\n").into_bytes());
        assert_eq!(status.code, Some((i % 3) as i32));
    }

    let mut cat = client
        .exec(ExecRequest {
            stdin_streamed: true,
            ..sh("cat")
        })
        .await
        .unwrap();
    cat.write_stdin(b"through stdin").await.unwrap();
    cat.close_stdin().await.unwrap();
    let mut seen = Vec::new();
    while let Some(event) = cat.next_event().await.unwrap() {
        if let ExecEvent::Output { data, .. } = event {
            seen.extend(data);
        }
    }
    assert_eq!(seen, b"through stdin");

    let path = std::env::temp_dir().join(format!("firerunner-client-test-{}", std::process::id()));
    let data: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    client
        .put_file(path.to_str().unwrap(), 0o755, &data)
        .await
        .unwrap();
    let (back, mode) = client
        .get_file(path.to_str().unwrap(), 1 << 20)
        .await
        .unwrap();
    assert!(matches!(
        client.get_file(path.to_str().unwrap(), 1000).await,
        Err(ClientError::TooLarge { limit: 1000, .. })
    ));
    std::fs::remove_file(&path).unwrap();
    assert_eq!(mode, 0o755);
    assert!(back == data);
    assert!(matches!(
        client.get_file("/nonexistent/firerunner", 1 << 20).await,
        Err(ClientError::Agent { .. })
    ));

    client.shutdown().await.unwrap();
    assert!(child.wait().unwrap().success());
}

#[tokio::test]
async fn version_mismatch_is_an_error() {
    let (host, mut fake_agent) = tokio::io::duplex(64 * 1024);
    let hello = Message::new(
        0,
        Body::Hello {
            protocol_version: 99,
            software_version: "future".into(),
            capabilities: Vec::new(),
        },
    );
    fake_agent.write_all(b"boot noise\r\n").await.unwrap();
    fake_agent
        .write_all(&hello.to_frame().unwrap())
        .await
        .unwrap();
    let result = Client::connect(host).await;
    assert!(matches!(
        result,
        Err(ClientError::Proto(ProtoError::VersionMismatch {
            theirs: 99,
            ..
        }))
    ));
    let mut sink = Vec::new();
    let _ = fake_agent.read_buf(&mut sink).await;
}

#[tokio::test]
async fn tar_round_trip_through_the_guest() {
    use std::os::unix::fs::PermissionsExt;
    let (mut child, stream) = spawn_agent();
    let client = Client::connect(stream).await.unwrap();
    let base = std::env::temp_dir().join(format!("firerunner-client-tar-{}", std::process::id()));
    let source = base.join("source");
    std::fs::create_dir_all(source.join("nested/deeper")).unwrap();
    std::fs::write(source.join("run.sh"), b"#!/bin/sh\n").unwrap();
    std::fs::set_permissions(
        source.join("run.sh"),
        std::fs::Permissions::from_mode(0o750),
    )
    .unwrap();
    let big: Vec<u8> = (0..1_000_000u32).map(|i| (i % 253) as u8).collect();
    std::fs::write(source.join("nested/deeper/big.bin"), &big).unwrap();
    std::os::unix::fs::symlink("deeper/big.bin", source.join("nested/link")).unwrap();

    let guest = base.join("guest");
    client
        .put_tar(&source, guest.to_str().unwrap())
        .await
        .unwrap();
    let back = base.join("back");
    client
        .get_tar(
            guest.to_str().unwrap(),
            &back,
            firerunner_agent_proto::tar::UnpackOptions::hostile(Default::default()),
        )
        .await
        .unwrap();

    assert_eq!(
        std::fs::read(back.join("nested/deeper/big.bin")).unwrap(),
        big
    );
    let mode = std::fs::metadata(back.join("run.sh"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o750);
    assert_eq!(
        std::fs::read_link(back.join("nested/link")).unwrap(),
        std::path::Path::new("deeper/big.bin")
    );
    std::fs::remove_dir_all(&base).unwrap();
    client.shutdown().await.unwrap();
    child.wait().unwrap();
}
