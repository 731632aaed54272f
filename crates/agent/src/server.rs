//! Request dispatch: one reader loop, a shared frame writer, a thread per running exec stream.

use firerunner_agent_proto::message::{
    Body, Command, ErrorKind, ExecRequest, Message, Stream, INITIAL_OUTPUT_CREDIT, MAX_CHUNK,
};
use firerunner_agent_proto::{tar, FrameDecoder};
use std::collections::HashMap;
use std::fs::File;
use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Receiver;
use std::sync::mpsc::{sync_channel, SyncSender};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

type Sink = Arc<Mutex<Box<dyn Write + Send>>>;

/// Pids of the exec children the agent waits for itself (so a PID 1 reaper leaves them alone).
pub type OwnChildren = Arc<Mutex<std::collections::HashSet<i32>>>;

fn send(sink: &Sink, id: u32, body: Body) {
    if let Ok(frame) = Message::new(id, body).to_frame() {
        let mut out = sink.lock().expect("writer lock");
        let _ = out.write_all(&frame).and_then(|_| out.flush());
    }
}

fn send_error(sink: &Sink, id: u32, err: &std::io::Error) {
    let kind = match err.kind() {
        std::io::ErrorKind::NotFound => ErrorKind::NotFound,
        std::io::ErrorKind::PermissionDenied => ErrorKind::PermissionDenied,
        _ => ErrorKind::Io,
    };
    send(
        sink,
        id,
        Body::Error {
            kind,
            message: err.to_string(),
        },
    );
}

/// Output credit shared by an exec's pipe readers and the dispatch loop.
#[derive(Default)]
struct Credit {
    available: Mutex<u64>,
    changed: Condvar,
}

impl Credit {
    fn take(&self, amount: u64) {
        let mut available = self.available.lock().expect("credit lock");
        while *available < amount {
            available = self.changed.wait(available).expect("credit lock");
        }
        *available -= amount;
    }

    fn grant(&self, amount: u64) {
        *self.available.lock().expect("credit lock") += amount;
        self.changed.notify_all();
    }
}

struct RunningExec {
    pgid: i32,
    stdin: Option<SyncSender<Option<Vec<u8>>>>,
    credit: Arc<Credit>,
}

/// Serves requests until the stream ends or a shutdown is requested; returns true on shutdown.
pub fn serve(
    mut reader: Box<dyn Read + Send>,
    writer: Box<dyn Write + Send>,
    own_children: OwnChildren,
) -> bool {
    let sink: Sink = Arc::new(Mutex::new(writer));
    send(&sink, 0, Message::hello(env!("CARGO_PKG_VERSION")).body);
    let execs: Arc<Mutex<HashMap<u32, RunningExec>>> = Arc::default();
    let mut uploads: HashMap<u32, File> = HashMap::new();
    let mut tar_uploads: HashMap<u32, SyncSender<Option<Vec<u8>>>> = HashMap::new();
    let mut decoder = FrameDecoder::new();
    let mut buffer = vec![0u8; 64 * 1024];
    loop {
        let read = match reader.read(&mut buffer) {
            Ok(0) | Err(_) => return false,
            Ok(n) => n,
        };
        decoder.push(&buffer[..read]);
        while let Some(payload) = decoder.next_payload() {
            let Ok(message) = Message::from_payload(&payload) else {
                continue;
            };
            let id = message.id;
            match message.body {
                // Answered, because the greeting sent when serving began may
                // have gone nowhere (a virtio port drops writes while no host
                // is attached).
                Body::Hello { .. } => {
                    send(&sink, id, Message::hello(env!("CARGO_PKG_VERSION")).body)
                }
                Body::Ping => send(&sink, id, Body::Pong),
                Body::Exec(request) => start_exec(&sink, &execs, &own_children, id, request),
                Body::Stdin(data) => with_exec(&execs, id, |e| {
                    if let Some(tx) = &e.stdin {
                        let _ = tx.send(Some(data));
                    }
                }),
                Body::StdinClose => with_exec(&execs, id, |e| {
                    if let Some(tx) = e.stdin.take() {
                        let _ = tx.send(None);
                    }
                }),
                Body::Credit(amount) => with_exec(&execs, id, |e| e.credit.grant(amount)),
                Body::Kill { signal } => with_exec(&execs, id, |e| {
                    // SAFETY: kill takes no pointers.
                    unsafe { libc::kill(-e.pgid, signal) };
                }),
                Body::SetClock { unix_ns } => {
                    let ts = libc::timespec {
                        tv_sec: (unix_ns / 1_000_000_000) as libc::time_t,
                        tv_nsec: (unix_ns % 1_000_000_000) as libc::c_long,
                    };
                    // SAFETY: ts is a valid timespec.
                    if unsafe { libc::clock_settime(libc::CLOCK_REALTIME, &ts) } == 0 {
                        send(&sink, id, Body::Done);
                    } else {
                        send_error(&sink, id, &std::io::Error::last_os_error());
                    }
                }
                Body::PutFile { path, mode } => {
                    let opened = File::create(&path).and_then(|f| {
                        f.set_permissions(std::fs::Permissions::from_mode(mode))?;
                        Ok(f)
                    });
                    match opened {
                        Ok(file) => {
                            uploads.insert(id, file);
                        }
                        Err(err) => send_error(&sink, id, &err),
                    }
                }
                Body::PutTar { path } => {
                    let (tx, rx) = sync_channel::<Option<Vec<u8>>>(16);
                    tar_uploads.insert(id, tx);
                    let sink = sink.clone();
                    std::thread::spawn(move || {
                        let mut input = ChunkReader {
                            rx,
                            current: Vec::new(),
                            offset: 0,
                        };
                        let options = tar::UnpackOptions::replacing(tar::Limits::default());
                        let result = tar::unpack(&mut input, std::path::Path::new(&path), &options)
                            .map(|_| ())
                            .map_err(std::io::Error::from);
                        input.drain();
                        match result {
                            Ok(()) => send(&sink, id, Body::Done),
                            Err(err) => send_error(&sink, id, &err),
                        }
                    });
                }
                Body::GetTar { path } => {
                    let sink = sink.clone();
                    std::thread::spawn(move || {
                        let mut out = ChunkWriter {
                            sink: sink.clone(),
                            id,
                            buffer: Vec::new(),
                        };
                        match tar::pack(std::path::Path::new(&path), &mut out)
                            .and_then(|_| out.flush())
                        {
                            Ok(()) => send(&sink, id, Body::End),
                            Err(err) => send_error(&sink, id, &err),
                        }
                    });
                }
                Body::Data(data) if tar_uploads.contains_key(&id) => {
                    if tar_uploads[&id].send(Some(data)).is_err() {
                        tar_uploads.remove(&id);
                    }
                }
                Body::End if tar_uploads.contains_key(&id) => {
                    if let Some(tx) = tar_uploads.remove(&id) {
                        let _ = tx.send(None);
                    }
                }
                Body::Data(data) => {
                    if let Some(file) = uploads.get_mut(&id) {
                        if let Err(err) = file.write_all(&data) {
                            uploads.remove(&id);
                            send_error(&sink, id, &err);
                        }
                    }
                }
                Body::End => {
                    if let Some(file) = uploads.remove(&id) {
                        match file.sync_all() {
                            Ok(()) => send(&sink, id, Body::Done),
                            Err(err) => send_error(&sink, id, &err),
                        }
                    }
                }
                Body::GetFile { path } => {
                    let sink = sink.clone();
                    std::thread::spawn(move || send_file(&sink, id, &path));
                }
                Body::Shutdown => {
                    send(&sink, id, Body::Done);
                    return true;
                }
                _ => send(
                    &sink,
                    id,
                    Body::Error {
                        kind: ErrorKind::Unsupported,
                        message: "operation not supported by this agent".into(),
                    },
                ),
            }
        }
    }
}

fn with_exec(
    execs: &Arc<Mutex<HashMap<u32, RunningExec>>>,
    id: u32,
    action: impl FnOnce(&mut RunningExec),
) {
    if let Some(exec) = execs.lock().expect("exec table").get_mut(&id) {
        action(exec);
    }
}

fn send_file(sink: &Sink, id: u32, path: &str) {
    let mut file = match File::open(path) {
        Ok(f) => f,
        Err(err) => return send_error(sink, id, &err),
    };
    let meta = match file.metadata() {
        Ok(m) => m,
        Err(err) => return send_error(sink, id, &err),
    };
    send(
        sink,
        id,
        Body::FileInfo {
            size: meta.len(),
            mode: meta.permissions().mode() & 0o7777,
        },
    );
    let mut chunk = vec![0u8; MAX_CHUNK];
    loop {
        match file.read(&mut chunk) {
            Ok(0) => return send(sink, id, Body::End),
            Ok(n) => send(sink, id, Body::Data(chunk[..n].to_vec())),
            Err(err) => return send_error(sink, id, &err),
        }
    }
}

fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

fn start_exec(
    sink: &Sink,
    execs: &Arc<Mutex<HashMap<u32, RunningExec>>>,
    own_children: &OwnChildren,
    id: u32,
    request: ExecRequest,
) {
    let mut script_path = None;
    let argv = match &request.command {
        Command::Argv(argv) => argv.clone(),
        Command::Script {
            interpreter,
            source,
        } => {
            let path =
                std::env::temp_dir().join(format!("firerunner-script-{}-{id}", std::process::id()));
            if let Err(err) = std::fs::write(&path, source) {
                return send_error(sink, id, &err);
            }
            let mut argv = interpreter.clone();
            argv.push(path.to_string_lossy().into_owned());
            script_path = Some(path);
            argv
        }
    };
    let Some((program, args)) = argv.split_first() else {
        return send(
            sink,
            id,
            Body::Error {
                kind: ErrorKind::BadRequest,
                message: "empty argv".into(),
            },
        );
    };
    let mut command = std::process::Command::new(program);
    command
        .args(args)
        .process_group(0)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if request.clear_env {
        command.env_clear();
    }
    command.envs(&request.env);
    if let Some(cwd) = &request.cwd {
        command.current_dir(cwd);
    }
    let started = Instant::now();
    let mut own = own_children.lock().expect("own children");
    let mut child = match command.spawn() {
        Ok(child) => child,
        Err(err) => return send_error(sink, id, &err),
    };
    own.insert(child.id() as i32);
    drop(own);
    let pgid = child.id() as i32;
    send(sink, id, Body::Started { pid: child.id() });
    let credit = Arc::new(Credit::default());
    credit.grant(INITIAL_OUTPUT_CREDIT);
    let (stdin_tx, stdin_rx) = sync_channel::<Option<Vec<u8>>>(16);
    let mut stdin = child.stdin.take();
    let initial = request.stdin.clone();
    let streamed = request.stdin_streamed;
    std::thread::spawn(move || {
        if let Some(pipe) = stdin.as_mut() {
            if pipe.write_all(&initial).is_err() {
                return;
            }
            if !streamed {
                return;
            }
            while let Ok(Some(data)) = stdin_rx.recv() {
                if pipe.write_all(&data).is_err() {
                    return;
                }
            }
        }
    });
    execs.lock().expect("exec table").insert(
        id,
        RunningExec {
            pgid,
            stdin: Some(stdin_tx),
            credit: credit.clone(),
        },
    );
    let pumps: Vec<_> = [
        (
            child
                .stdout
                .take()
                .map(|p| Box::new(p) as Box<dyn Read + Send>),
            Stream::Stdout,
        ),
        (
            child
                .stderr
                .take()
                .map(|p| Box::new(p) as Box<dyn Read + Send>),
            Stream::Stderr,
        ),
    ]
    .into_iter()
    .filter_map(|(pipe, stream)| pipe.map(|p| (p, stream)))
    .map(|(mut pipe, stream)| {
        let sink = sink.clone();
        let credit = credit.clone();
        std::thread::spawn(move || {
            let mut chunk = vec![0u8; MAX_CHUNK];
            while let Ok(n) = pipe.read(&mut chunk) {
                if n == 0 {
                    break;
                }
                credit.take(n as u64);
                send(
                    &sink,
                    id,
                    Body::Output {
                        stream,
                        timestamp_ns: now_ns(),
                        data: chunk[..n].to_vec(),
                    },
                );
            }
        })
    })
    .collect();
    let finished = Arc::new(AtomicBool::new(false));
    let timed_out = Arc::new(AtomicBool::new(false));
    if let Some(limit) = request.timeout_ms {
        let (finished, timed_out) = (finished.clone(), timed_out.clone());
        std::thread::spawn(move || {
            let deadline = started + Duration::from_millis(limit);
            while !finished.load(Ordering::SeqCst) {
                if Instant::now() >= deadline {
                    timed_out.store(true, Ordering::SeqCst);
                    // SAFETY: kill takes no pointers.
                    unsafe { libc::kill(-pgid, libc::SIGKILL) };
                    return;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        });
    }
    let sink = sink.clone();
    let execs = execs.clone();
    let own_children = own_children.clone();
    std::thread::spawn(move || {
        let status = child.wait();
        own_children.lock().expect("own children").remove(&pgid);
        finished.store(true, Ordering::SeqCst);
        for pump in pumps {
            let _ = pump.join();
        }
        execs.lock().expect("exec table").remove(&id);
        if let Some(path) = script_path {
            let _ = std::fs::remove_file(path);
        }
        match status {
            Ok(status) => send(
                &sink,
                id,
                Body::Exit {
                    code: status.code(),
                    signal: status.signal(),
                    duration_ms: started.elapsed().as_millis() as u64,
                    timed_out: timed_out.load(Ordering::SeqCst),
                },
            ),
            Err(err) => send_error(&sink, id, &err),
        }
    });
}

/// Reads the chunks of a tar upload as one stream; `None` marks its end.
struct ChunkReader {
    rx: Receiver<Option<Vec<u8>>>,
    current: Vec<u8>,
    offset: usize,
}

impl ChunkReader {
    /// Consumes what is left so the sender never blocks on an abandoned upload.
    fn drain(&mut self) {
        while let Ok(Some(_)) = self.rx.recv() {}
    }
}

impl Read for ChunkReader {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        while self.offset == self.current.len() {
            match self.rx.recv() {
                Ok(Some(chunk)) => {
                    self.current = chunk;
                    self.offset = 0;
                }
                Ok(None) | Err(_) => return Ok(0),
            }
        }
        let n = out.len().min(self.current.len() - self.offset);
        out[..n].copy_from_slice(&self.current[self.offset..self.offset + n]);
        self.offset += n;
        Ok(n)
    }
}

/// Sends written bytes as `Data` chunks of at most `MAX_CHUNK`.
struct ChunkWriter {
    sink: Sink,
    id: u32,
    buffer: Vec<u8>,
}

impl Write for ChunkWriter {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        let n = data.len().min(MAX_CHUNK - self.buffer.len());
        self.buffer.extend_from_slice(&data[..n]);
        if self.buffer.len() == MAX_CHUNK {
            self.flush()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        if !self.buffer.is_empty() {
            send(
                &self.sink,
                self.id,
                Body::Data(std::mem::take(&mut self.buffer)),
            );
        }
        Ok(())
    }
}
