//! Every message survives encoding, framing over a noisy stream, and decoding.

use firerunner_agent_proto::{
    decode, encode, negotiate, AgentMessage, ErrorKind, ExecRequest, FrameDecoder, HostMessage,
    OutputStream, Program, ProtoError, StdinMode, MAX_CHUNK, MAX_FRAME_PAYLOAD, PROTOCOL_VERSION,
};

fn host_messages() -> Vec<HostMessage> {
    vec![
        HostMessage::Hello {
            protocol_version: PROTOCOL_VERSION,
            host_version: "0.1.0".into(),
        },
        HostMessage::Exec(ExecRequest {
            id: 1,
            program: Program::Script {
                interpreter: vec![
                    "bash".into(),
                    "--noprofile".into(),
                    "--norc".into(),
                    "-eo".into(),
                    "pipefail".into(),
                    "{0}".into(),
                ],
                script: "echo hi\nexit 3\n".into(),
            },
            env: vec![
                ("CI".into(), "true".into()),
                ("EMPTY".into(), String::new()),
            ],
            clear_env: true,
            cwd: Some("/work".into()),
            timeout_ms: Some(60_000),
            stdin: StdinMode::Data(b"input\n".to_vec()),
        }),
        HostMessage::Exec(ExecRequest {
            id: 2,
            program: Program::Argv(vec!["true".into()]),
            env: Vec::new(),
            clear_env: false,
            cwd: None,
            timeout_ms: None,
            stdin: StdinMode::Stream,
        }),
        HostMessage::Stdin {
            id: 2,
            data: vec![0, 1, 2, 255],
        },
        HostMessage::CloseStdin { id: 2 },
        HostMessage::Kill { id: 2, signal: 15 },
        HostMessage::PutFile {
            id: 3,
            path: "/tmp/x".into(),
            mode: 0o755,
        },
        HostMessage::GetFile {
            id: 4,
            path: "/etc/hostname".into(),
        },
        HostMessage::PutTar {
            id: 5,
            dest: "/work/repo".into(),
        },
        HostMessage::GetTar {
            id: 6,
            path: "/work/out".into(),
        },
        HostMessage::Data {
            id: 3,
            data: vec![7; MAX_CHUNK],
        },
        HostMessage::End { id: 3 },
        HostMessage::Credit {
            id: 1,
            bytes: 65_536,
        },
        HostMessage::SetClock {
            id: 7,
            unix_nanos: 1_795_000_000_000_000_000,
        },
        HostMessage::Ping { id: 8 },
        HostMessage::Shutdown { id: 9 },
    ]
}

fn agent_messages() -> Vec<AgentMessage> {
    vec![
        AgentMessage::Welcome {
            protocol_version: 1,
            agent_version: "0.1.0".into(),
            capabilities: vec!["tar".into()],
        },
        AgentMessage::Started { id: 1, pid: 42 },
        AgentMessage::Output {
            id: 1,
            stream: OutputStream::Stderr,
            timestamp_ms: 1_795_000_000_000,
            data: b"line\n".to_vec(),
        },
        AgentMessage::Exited {
            id: 1,
            code: None,
            signal: Some(9),
            duration_ms: 60_001,
            timed_out: true,
        },
        AgentMessage::Data {
            id: 4,
            data: vec![1; MAX_CHUNK],
        },
        AgentMessage::End { id: 4 },
        AgentMessage::Credit { id: 3, bytes: 1 },
        AgentMessage::Done { id: 7 },
        AgentMessage::Pong {
            id: 8,
            uptime_ms: 12,
        },
        AgentMessage::Failed {
            id: 4,
            kind: ErrorKind::NotFound,
            message: "no such file: /etc/hostname".into(),
        },
    ]
}

#[test]
fn every_message_round_trips_through_a_noisy_stream() {
    let mut stream = b"[    1.234567] random: crng init done\r\n".to_vec();
    for m in host_messages() {
        stream.extend(encode(&m).unwrap());
        stream.extend(b"\x1b[0m");
    }
    let mut decoder = FrameDecoder::new();
    let mut got = Vec::new();
    for piece in stream.chunks(7) {
        decoder.feed(piece);
        while let Some(payload) = decoder.next_frame() {
            got.push(decode::<HostMessage>(&payload).unwrap());
        }
    }
    assert_eq!(got, host_messages());

    let mut decoder = FrameDecoder::new();
    for m in agent_messages() {
        decoder.feed(&encode(&m).unwrap());
    }
    let back: Vec<AgentMessage> = std::iter::from_fn(|| decoder.next_frame())
        .map(|p| decode(&p).unwrap())
        .collect();
    assert_eq!(back, agent_messages());
}

#[test]
fn a_full_chunk_fits_in_one_frame_with_room_to_spare() {
    let frame = encode(&AgentMessage::Output {
        id: u64::MAX,
        stream: OutputStream::Stdout,
        timestamp_ms: u64::MAX,
        data: vec![0xAB; MAX_CHUNK],
    })
    .unwrap();
    assert!(frame.len() < MAX_FRAME_PAYLOAD);
    assert!(
        frame.len() < MAX_CHUNK + 64,
        "bytes travel as bytes, not as a list: {}",
        frame.len()
    );
}

#[test]
fn a_message_of_one_side_is_not_taken_for_the_other_kind() {
    let payload = postcard::to_stdvec(&HostMessage::Ping { id: 1 }).unwrap();
    assert!(decode::<HostMessage>(&payload).is_ok());
    assert!(matches!(
        decode::<HostMessage>(&[0xFF, 0xFF]),
        Err(ProtoError::Decode(_))
    ));
}

#[test]
fn versions_must_match() {
    assert_eq!(negotiate(1, 1), Ok(1));
    assert_eq!(
        negotiate(1, 2).unwrap_err().to_string(),
        "protocol version mismatch: host speaks 1, agent speaks 2"
    );
}
