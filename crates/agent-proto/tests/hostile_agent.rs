//! The host client against an agent that lies: absurd declared sizes, more data than
//! declared, hostile tar streams, garbage and undecodable frames after the handshake.

use std::time::{Duration, Instant};

use firerunner_agent_proto::message::Body;
use firerunner_agent_proto::tar::{Limits, TarError, UnpackOptions};
use firerunner_agent_proto::testing::agent::{self, frame, frames, Reply};
use firerunner_agent_proto::testing::{HostileTar, ScratchDir};
use firerunner_agent_proto::{Client, ClientError, MAX_PAYLOAD};

const MIB: u64 = 1 << 20;

/// `count` data frames of 64 KiB for request `id`, made as they are sent.
fn endless_data(id: u32, count: usize) -> Reply {
    Box::new((0..count).map(move |_| frame(id, Body::Data(vec![0u8; 64 * 1024]))))
}

/// A tar stream sent in 64 KiB data frames, then `End`.
fn tar_reply(id: u32, stream: Vec<u8>) -> Reply {
    let mut list: Vec<Vec<u8>> = stream
        .chunks(64 * 1024)
        .map(|c| frame(id, Body::Data(c.to_vec())))
        .collect();
    list.push(frame(id, Body::End));
    frames(list)
}

async fn connect<F>(respond: F) -> Client
where
    F: FnMut(u32, Body) -> Reply + Send + 'static,
{
    Client::connect(agent::spawn(respond)).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_absurd_declared_file_size_is_refused_at_once() {
    let client = connect(|id, _| {
        let info = frame(
            id,
            Body::FileInfo {
                size: 1 << 40,
                mode: 0o644,
            },
        );
        Box::new(std::iter::once(info).chain(endless_data(id, 256)))
    })
    .await;
    let started = Instant::now();
    let err = client.get_file("/out", MIB).await.unwrap_err();
    assert!(
        matches!(err, ClientError::TooLarge { limit, .. } if limit == MIB),
        "{err}"
    );
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn more_data_than_declared_is_refused() {
    let client = connect(|id, _| {
        let info = frame(
            id,
            Body::FileInfo {
                size: 10,
                mode: 0o644,
            },
        );
        Box::new(std::iter::once(info).chain(endless_data(id, 64)))
    })
    .await;
    let err = client.get_file("/out", MIB).await.unwrap_err();
    assert!(matches!(err, ClientError::TooLarge { .. }), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hostile_tar_stream_cannot_escape_through_the_client() {
    let base = ScratchDir::new("client-tar");
    let (dest, outside) = (base.path().join("dest"), base.path().join("outside"));
    std::fs::create_dir_all(&outside).unwrap();
    let target = outside.to_str().unwrap().as_bytes().to_vec();
    let client = connect(move |id, _| {
        let stream = HostileTar::new()
            .symlink(b"d\xfe", &target)
            .file(b"d\xfe/pwned", 0o644, b"x")
            .finish();
        tar_reply(id, stream)
    })
    .await;
    let err = client
        .get_tar("/guest", &dest, UnpackOptions::hostile(Limits::default()))
        .await;
    assert!(matches!(err, Err(ClientError::Tar(_))), "{err:?}");
    assert!(std::fs::read_dir(&outside).unwrap().next().is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tar_quotas_hold_while_the_stream_arrives() {
    let base = ScratchDir::new("client-tar-quota");
    let client = connect(|id, _| {
        let header = HostileTar::new()
            .entry(b"big", 0o644, 64 * MIB, b'0', b"")
            .unfinished();
        let first = frame(id, Body::Data(header));
        Box::new(std::iter::once(first).chain(endless_data(id, 1024)))
    })
    .await;
    let limits = Limits {
        max_bytes: MIB,
        ..Limits::default()
    };
    let err = client
        .get_tar("/guest", base.path(), UnpackOptions::hostile(limits))
        .await
        .unwrap_err();
    assert!(
        matches!(err, ClientError::Tar(TarError::TooManyBytes { .. })),
        "{err}"
    );
    assert!(!base.path().join("big").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_tar_streams_to_disk_without_being_held_in_memory() {
    let base = ScratchDir::new("client-tar-stream");
    let size = 64 * MIB;
    let client = connect(move |id, _| {
        let header = HostileTar::new()
            .entry(b"big", 0o644, size, b'0', b"")
            .unfinished();
        let first = frame(id, Body::Data(header));
        let tail = frame(id, Body::Data(vec![0u8; 1024]));
        let end = frame(id, Body::End);
        let body = endless_data(id, (size / (64 * 1024)) as usize);
        Box::new(std::iter::once(first).chain(body).chain([tail, end]))
    })
    .await;
    let before = peak_rss();
    let done = client
        .get_tar(
            "/guest",
            base.path(),
            UnpackOptions::hostile(Limits::default()),
        )
        .await
        .unwrap();
    assert_eq!(done.bytes, size);
    assert_eq!(
        std::fs::metadata(base.path().join("big")).unwrap().len(),
        size
    );
    let grew = peak_rss().saturating_sub(before);
    assert!(grew < 48 * MIB, "peak memory grew by {} MiB", grew / MIB);
}

/// The process's peak resident memory in bytes.
fn peak_rss() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
    let kib: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    kib * 1024
}

async fn assert_dropped_by(reply: fn(u32) -> Vec<Vec<u8>>) {
    let client = connect(move |id, _| frames(reply(id))).await;
    let err = client.ping().await.unwrap_err();
    assert!(matches!(err, ClientError::Garbage(_)), "{err}");
    assert!(client.violation().is_some());
    let again = client.ping().await.unwrap_err();
    assert!(matches!(again, ClientError::Garbage(_)), "{again}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_after_the_handshake_drops_the_connection() {
    assert_dropped_by(|id| vec![b"\x00garbage\xff".to_vec(), frame(id, Body::Pong)]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_undecodable_message_drops_the_connection() {
    assert_dropped_by(|id| {
        let _ = id;
        vec![firerunner_agent_proto::encode_frame(&[0xFF; 40]).unwrap()]
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversize_or_corrupt_frame_drops_the_connection() {
    assert_dropped_by(|id| {
        let mut header = firerunner_agent_proto::frame::MAGIC.to_vec();
        header.extend_from_slice(&((MAX_PAYLOAD as u32) + 1).to_le_bytes());
        header.extend_from_slice(&[0; 4]);
        vec![header, frame(id, Body::Pong)]
    })
    .await;
    assert_dropped_by(|id| {
        let mut corrupt = frame(id, Body::Pong);
        let last = corrupt.len() - 1;
        corrupt[last] ^= 0xFF;
        vec![corrupt, frame(id, Body::Pong)]
    })
    .await;
}
