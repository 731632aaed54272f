//! Running commands: spawning a child, feeding its stdin, pumping its output under
//! the host's credit, enforcing its timeout and reporting its exit.

use super::wire::{send, send_error, Sink};
use firerunner_agent_proto::message::{
    Body, Command, ErrorKind, ExecRequest, Stream, INITIAL_OUTPUT_CREDIT, MAX_CHUNK,
};
use std::collections::HashMap;
use std::io::{Read, Write};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::PathBuf;
use std::process::{Child, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Pids of the exec children the agent waits for itself (so a PID 1 reaper leaves them alone).
pub type OwnChildren = Arc<Mutex<std::collections::HashSet<i32>>>;

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

/// What the dispatch loop can still reach of a running exec.
struct RunningExec {
    pgid: i32,
    stdin: Option<SyncSender<Option<Vec<u8>>>>,
    credit: Arc<Credit>,
}

type ExecTable = Arc<Mutex<HashMap<u32, RunningExec>>>;

/// The execs of one connection, by request id.
pub(super) struct Execs {
    sink: Sink,
    table: ExecTable,
    own_children: OwnChildren,
}

impl Execs {
    pub(super) fn new(sink: Sink, own_children: OwnChildren) -> Self {
        Execs {
            sink,
            table: ExecTable::default(),
            own_children,
        }
    }

    /// Applies a stdin, stdin-close, credit or kill request to exec `id`; unknown ids are ignored.
    pub(super) fn control(&self, id: u32, body: Body) {
        let mut table = self.table.lock().expect("exec table");
        let Some(exec) = table.get_mut(&id) else {
            return;
        };
        match body {
            Body::Stdin(data) => {
                if let Some(tx) = &exec.stdin {
                    let _ = tx.send(Some(data));
                }
            }
            Body::StdinClose => {
                if let Some(tx) = exec.stdin.take() {
                    let _ = tx.send(None);
                }
            }
            Body::Credit(amount) => exec.credit.grant(amount),
            Body::Kill { signal } => {
                // SAFETY: kill takes no pointers.
                unsafe { libc::kill(-exec.pgid, signal) };
            }
            _ => {}
        }
    }

    /// Starts the command of `request`; its output and exit are sent under `id`.
    pub(super) fn start(&self, id: u32, request: ExecRequest) {
        let (mut command, script) = match prepare(id, &request.command) {
            Ok(prepared) => prepared,
            Err(Unprepared::Io(err)) => return send_error(&self.sink, id, &err),
            Err(Unprepared::EmptyArgv) => {
                let message = "empty argv".into();
                let kind = ErrorKind::BadRequest;
                return send(&self.sink, id, Body::Error { kind, message });
            }
        };
        apply_request(&mut command, &request);
        let started = Instant::now();
        let mut child = match self.spawn(&mut command) {
            Ok(child) => child,
            Err(err) => return send_error(&self.sink, id, &err),
        };
        let pgid = child.id() as i32;
        send(&self.sink, id, Body::Started { pid: child.id() });
        let credit = Arc::new(Credit::default());
        credit.grant(INITIAL_OUTPUT_CREDIT);
        let (stdin_tx, stdin_rx) = sync_channel::<Option<Vec<u8>>>(16);
        feed_stdin(&mut child, request.stdin, request.stdin_streamed, stdin_rx);
        self.table.lock().expect("exec table").insert(
            id,
            RunningExec {
                pgid,
                stdin: Some(stdin_tx),
                credit: credit.clone(),
            },
        );
        let ending = Ending {
            id,
            pgid,
            started,
            script,
            pumps: self.pump_output(id, &mut child, &credit),
            watchdog: Watchdog::start(pgid, started, request.timeout_ms),
        };
        self.wait_in_background(child, ending);
    }

    /// Spawns the child and records it as the agent's own before a reaper can see it exit.
    fn spawn(&self, command: &mut std::process::Command) -> std::io::Result<Child> {
        let mut own = self.own_children.lock().expect("own children");
        let child = command.spawn()?;
        own.insert(child.id() as i32);
        Ok(child)
    }

    fn pump_output(&self, id: u32, child: &mut Child, credit: &Arc<Credit>) -> Vec<JoinHandle<()>> {
        let stdout = child
            .stdout
            .take()
            .map(|p| (Box::new(p) as Box<dyn Read + Send>, Stream::Stdout));
        let stderr = child
            .stderr
            .take()
            .map(|p| (Box::new(p) as Box<dyn Read + Send>, Stream::Stderr));
        [stdout, stderr]
            .into_iter()
            .flatten()
            .map(|(pipe, stream)| {
                let (sink, credit) = (self.sink.clone(), credit.clone());
                std::thread::spawn(move || pump(pipe, stream, &sink, id, &credit))
            })
            .collect()
    }

    /// Waits for the child on its own thread, then cleans up and sends its exit.
    fn wait_in_background(&self, mut child: Child, ending: Ending) {
        let sink = self.sink.clone();
        let table = self.table.clone();
        let own_children = self.own_children.clone();
        std::thread::spawn(move || {
            let status = child.wait();
            own_children
                .lock()
                .expect("own children")
                .remove(&ending.pgid);
            ending.conclude(status, &sink, &table);
        });
    }
}

/// Why a request names no command that can be spawned.
enum Unprepared {
    Io(std::io::Error),
    EmptyArgv,
}

/// Resolves the argv of `command` (writing a script to a temp file) into a process command.
fn prepare(
    id: u32,
    command: &Command,
) -> Result<(std::process::Command, Option<PathBuf>), Unprepared> {
    let mut script_path = None;
    let argv = match command {
        Command::Argv(argv) => argv.clone(),
        Command::Script {
            interpreter,
            source,
        } => {
            let path =
                std::env::temp_dir().join(format!("firerunner-script-{}-{id}", std::process::id()));
            std::fs::write(&path, source).map_err(Unprepared::Io)?;
            let mut argv = interpreter.clone();
            argv.push(path.to_string_lossy().into_owned());
            script_path = Some(path);
            argv
        }
    };
    let Some((program, args)) = argv.split_first() else {
        return Err(Unprepared::EmptyArgv);
    };
    let mut process = std::process::Command::new(program);
    process
        .args(args)
        .process_group(0)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    Ok((process, script_path))
}

fn apply_request(command: &mut std::process::Command, request: &ExecRequest) {
    if request.clear_env {
        command.env_clear();
    }
    command.envs(&request.env);
    if let Some(cwd) = &request.cwd {
        command.current_dir(cwd);
    }
}

/// Writes the initial stdin, then (when streamed) every chunk until `None`.
fn feed_stdin(
    child: &mut Child,
    initial: Vec<u8>,
    streamed: bool,
    chunks: Receiver<Option<Vec<u8>>>,
) {
    let mut stdin = child.stdin.take();
    std::thread::spawn(move || {
        if let Some(pipe) = stdin.as_mut() {
            if pipe.write_all(&initial).is_err() {
                return;
            }
            if !streamed {
                return;
            }
            while let Ok(Some(data)) = chunks.recv() {
                if pipe.write_all(&data).is_err() {
                    return;
                }
            }
        }
    });
}

/// Sends what `pipe` yields as `Output` frames, each paid for with credit first.
fn pump(mut pipe: Box<dyn Read + Send>, stream: Stream, sink: &Sink, id: u32, credit: &Credit) {
    let mut chunk = vec![0u8; MAX_CHUNK];
    while let Ok(n) = pipe.read(&mut chunk) {
        if n == 0 {
            break;
        }
        credit.take(n as u64);
        send(
            sink,
            id,
            Body::Output {
                stream,
                timestamp_ns: now_ns(),
                data: chunk[..n].to_vec(),
            },
        );
    }
}

fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

/// Kills an exec's process group once its time limit passes, unless it finished first.
#[derive(Clone, Default)]
struct Watchdog {
    finished: Arc<AtomicBool>,
    timed_out: Arc<AtomicBool>,
}

impl Watchdog {
    fn start(pgid: i32, started: Instant, limit_ms: Option<u64>) -> Self {
        let watchdog = Watchdog::default();
        if let Some(limit) = limit_ms {
            let watching = watchdog.clone();
            std::thread::spawn(move || {
                let deadline = started + Duration::from_millis(limit);
                while !watching.finished.load(Ordering::SeqCst) {
                    if Instant::now() >= deadline {
                        watching.timed_out.store(true, Ordering::SeqCst);
                        // SAFETY: kill takes no pointers.
                        unsafe { libc::kill(-pgid, libc::SIGKILL) };
                        return;
                    }
                    std::thread::sleep(Duration::from_millis(10));
                }
            });
        }
        watchdog
    }
}

/// What is left to do once an exec's child has exited.
struct Ending {
    id: u32,
    pgid: i32,
    started: Instant,
    script: Option<PathBuf>,
    pumps: Vec<JoinHandle<()>>,
    watchdog: Watchdog,
}

impl Ending {
    /// Stops the watchdog, lets the output drain, forgets the exec and sends its exit.
    fn conclude(
        self,
        status: std::io::Result<std::process::ExitStatus>,
        sink: &Sink,
        table: &ExecTable,
    ) {
        self.watchdog.finished.store(true, Ordering::SeqCst);
        for pump in self.pumps {
            let _ = pump.join();
        }
        table.lock().expect("exec table").remove(&self.id);
        if let Some(path) = self.script {
            let _ = std::fs::remove_file(path);
        }
        match status {
            Ok(status) => send(
                sink,
                self.id,
                Body::Exit {
                    code: status.code(),
                    signal: status.signal(),
                    duration_ms: self.started.elapsed().as_millis() as u64,
                    timed_out: self.watchdog.timed_out.load(Ordering::SeqCst),
                },
            ),
            Err(err) => send_error(sink, self.id, &err),
        }
    }
}
