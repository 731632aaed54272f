//! Drives the real agent binary over `--stdio` with a small blocking client.

use firerunner_agent_proto::message::{Body, Command, ExecRequest, Message, Stream, MAX_CHUNK};
use firerunner_agent_proto::{FrameDecoder, PROTOCOL_VERSION};
use std::io::{Read, Write};
use std::process::{Child, ChildStdin, ChildStdout, Stdio};
use std::time::{Duration, Instant};

struct Agent {
    child: Child,
    stdin: ChildStdin,
    stdout: ChildStdout,
    decoder: FrameDecoder,
}

impl Agent {
    fn start() -> Self {
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_firerunner-agent"))
            .arg("--stdio")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut agent = Agent {
            stdin: child.stdin.take().unwrap(),
            stdout: child.stdout.take().unwrap(),
            child,
            decoder: FrameDecoder::new(),
        };
        match agent.recv().body {
            Body::Hello {
                protocol_version,
                capabilities,
                ..
            } => {
                assert_eq!(protocol_version, PROTOCOL_VERSION);
                assert!(capabilities.iter().any(|c| c == "exec"));
            }
            other => panic!("expected hello, got {other:?}"),
        }
        agent
    }

    fn send(&mut self, id: u32, body: Body) {
        self.stdin
            .write_all(&Message::new(id, body).to_frame().unwrap())
            .unwrap();
    }

    fn recv(&mut self) -> Message {
        let mut buffer = [0u8; 65536];
        loop {
            if let Some(payload) = self.decoder.next_payload() {
                return Message::from_payload(&payload).unwrap();
            }
            let n = self.stdout.read(&mut buffer).unwrap();
            assert!(n > 0, "agent closed its output");
            self.decoder.push(&buffer[..n]);
        }
    }

    /// Collects (stdout, stderr, exit body) of exec `id`, granting credit as output arrives.
    fn collect(&mut self, id: u32) -> (Vec<u8>, Vec<u8>, Body) {
        let (mut out, mut err) = (Vec::new(), Vec::new());
        loop {
            let message = self.recv();
            assert_eq!(message.id, id);
            match message.body {
                Body::Started { .. } => {}
                Body::Output { stream, data, .. } => {
                    self.send(id, Body::Credit(data.len() as u64));
                    match stream {
                        Stream::Stdout => out.extend(data),
                        Stream::Stderr => err.extend(data),
                    }
                }
                exit @ Body::Exit { .. } => return (out, err, exit),
                other => panic!("unexpected {other:?}"),
            }
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn argv(args: &[&str]) -> ExecRequest {
    ExecRequest::argv(args.iter().copied())
}

fn exit_of(body: &Body) -> (Option<i32>, Option<i32>, bool) {
    match body {
        Body::Exit {
            code,
            signal,
            timed_out,
            ..
        } => (*code, *signal, *timed_out),
        other => panic!("not an exit: {other:?}"),
    }
}

#[test]
fn ping_after_injected_garbage() {
    let mut agent = Agent::start();
    agent
        .stdin
        .write_all(b"\x00garbage\xF1\x7EAG\xFF\xFF\xFF\xFF noise")
        .unwrap();
    agent.send(5, Body::Ping);
    assert_eq!(agent.recv(), Message::new(5, Body::Pong));
}

#[test]
fn exec_argv_exit_code_and_stderr() {
    let mut agent = Agent::start();
    agent.send(
        1,
        Body::Exec(argv(&["sh", "-c", "echo out; echo err >&2; exit 3"])),
    );
    let (out, err, exit) = agent.collect(1);
    assert_eq!(out, b"out\n");
    assert_eq!(err, b"err\n");
    assert_eq!(exit_of(&exit), (Some(3), None, false));
}

#[test]
fn script_with_env_and_cwd() {
    let mut agent = Agent::start();
    let dir = std::env::temp_dir();
    let mut request = argv(&[]);
    request.command = Command::Script {
        interpreter: vec!["sh".into(), "-e".into()],
        source: "echo \"$GREETING\"\npwd\n".into(),
    };
    request.env.insert("GREETING".into(), "hello there".into());
    request.cwd = Some(dir.to_string_lossy().into_owned());
    agent.send(2, Body::Exec(request));
    let (out, _, exit) = agent.collect(2);
    let canonical = dir.canonicalize().unwrap();
    assert_eq!(
        String::from_utf8(out).unwrap(),
        format!("hello there\n{}\n", canonical.display())
    );
    assert_eq!(exit_of(&exit), (Some(0), None, false));
}

#[test]
fn output_streams_before_exit() {
    let mut agent = Agent::start();
    // The command cannot end before the test writes to its stdin, so the
    // first line arriving first proves output streams while it runs,
    // however slow the machine is.
    let mut request = argv(&["sh", "-c", "echo one; read go; echo two"]);
    request.stdin_streamed = true;
    agent.send(1, Body::Exec(request));
    loop {
        match agent.recv().body {
            Body::Output { data, .. } => {
                assert_eq!(data, b"one\n");
                break;
            }
            Body::Exit { .. } => panic!("the command ended before its first line arrived"),
            _ => {}
        }
    }
    agent.send(1, Body::Stdin(b"go\n".to_vec()));
    agent.send(1, Body::StdinClose);
    let (out, _, exit) = agent.collect(1);
    assert_eq!(out, b"two\n");
    assert_eq!(exit_of(&exit).0, Some(0));
}

#[test]
fn timeout_kills_the_process_group() {
    let mut agent = Agent::start();
    let mut request = argv(&["sh", "-c", "sleep 30 & sleep 30; echo never"]);
    request.timeout_ms = Some(300);
    agent.send(1, Body::Exec(request));
    let start = Instant::now();
    let (out, _, exit) = agent.collect(1);
    assert!(out.is_empty());
    assert_eq!(exit_of(&exit), (None, Some(9), true));
    // Far below the 30 s the command would run if the timeout did not kill it.
    assert!(start.elapsed() < Duration::from_secs(20));
}

#[test]
fn kill_and_streamed_stdin() {
    let mut agent = Agent::start();
    let mut cat = argv(&["cat"]);
    cat.stdin = b"first ".to_vec();
    cat.stdin_streamed = true;
    agent.send(1, Body::Exec(cat));
    agent.send(1, Body::Stdin(b"second".to_vec()));
    agent.send(1, Body::StdinClose);
    let (out, _, exit) = agent.collect(1);
    assert_eq!(out, b"first second");
    assert_eq!(exit_of(&exit).0, Some(0));

    agent.send(2, Body::Exec(argv(&["sleep", "30"])));
    assert!(matches!(agent.recv().body, Body::Started { .. }));
    agent.send(2, Body::Kill { signal: 15 });
    let (_, _, exit) = agent.collect(2);
    assert_eq!(exit_of(&exit), (None, Some(15), false));
}

#[test]
fn twenty_concurrent_execs() {
    let mut agent = Agent::start();
    for id in 1..=20 {
        agent.send(
            id,
            Body::Exec(argv(&["sh", "-c", &format!("sleep 1; echo {id}")])),
        );
    }
    let start = Instant::now();
    let mut exits = 0;
    while exits < 20 {
        let message = agent.recv();
        match message.body {
            Body::Output { data, .. } => assert_eq!(data, format!("{}\n", message.id).into_bytes()),
            Body::Exit { code, .. } => {
                assert_eq!(code, Some(0));
                exits += 1;
            }
            _ => {}
        }
    }
    // One after another they would take 20 s.
    assert!(
        start.elapsed() < Duration::from_secs(10),
        "execs did not overlap: {:?}",
        start.elapsed()
    );
}

#[test]
fn binary_file_round_trip_of_ten_mib() {
    let mut agent = Agent::start();
    let path = std::env::temp_dir().join(format!("firerunner-agent-test-{}", std::process::id()));
    let data: Vec<u8> = (0..10 * 1024 * 1024u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    let path_text = path.to_string_lossy().into_owned();
    agent.send(
        1,
        Body::PutFile {
            path: path_text.clone(),
            mode: 0o640,
        },
    );
    for chunk in data.chunks(MAX_CHUNK) {
        agent.send(1, Body::Data(chunk.to_vec()));
    }
    agent.send(1, Body::End);
    assert_eq!(agent.recv(), Message::new(1, Body::Done));
    agent.send(2, Body::GetFile { path: path_text });
    assert_eq!(
        agent.recv().body,
        Body::FileInfo {
            size: data.len() as u64,
            mode: 0o640
        }
    );
    let mut back = Vec::new();
    loop {
        match agent.recv().body {
            Body::Data(chunk) => back.extend(chunk),
            Body::End => break,
            other => panic!("unexpected {other:?}"),
        }
    }
    std::fs::remove_file(&path).unwrap();
    assert!(back == data, "file differs after round trip");
}

fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next())
        .unwrap()
        .parse()
        .unwrap()
}

#[test]
fn chatty_process_keeps_agent_memory_bounded() {
    let mut agent = Agent::start();
    agent.send(
        1,
        Body::Exec(argv(&["head", "-c", "104857600", "/dev/zero"])),
    );
    let pid = agent.child.id();
    let mut total = 0u64;
    loop {
        match agent.recv().body {
            Body::Output { data, .. } => {
                total += data.len() as u64;
                if total < 4 * 1024 * 1024 {
                    std::thread::sleep(Duration::from_millis(1));
                }
                agent.send(1, Body::Credit(data.len() as u64));
            }
            Body::Exit { code, .. } => {
                assert_eq!(code, Some(0));
                break;
            }
            _ => {}
        }
    }
    assert_eq!(total, 100 * 1024 * 1024);
    let peak = peak_rss_kib(pid);
    assert!(peak < 32 * 1024, "agent peak RSS {peak} KiB");
}
