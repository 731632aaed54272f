//! A job's view of its VM: run a step's command with live output,
//! timeouts and cancellation that reach the process, and move files.

use std::collections::BTreeMap;
use std::time::Duration;

use firerunner_agent_proto::message::{Command, ErrorKind, ExecRequest, Stream};
use firerunner_agent_proto::{Client, ClientError, ExecEvent, ExecHandle};
use tokio_util::sync::CancellationToken;

use crate::logs::{LineSplitter, LogStream};

/// How long a cancelled or timed-out process gets after SIGINT before
/// SIGTERM, and after SIGTERM before SIGKILL (as GitHub's runner does).
pub const GRACE_AFTER_SIGINT: Duration = Duration::from_millis(7500);
/// See [`GRACE_AFTER_SIGINT`].
pub const GRACE_AFTER_SIGTERM: Duration = Duration::from_millis(2500);

/// Errors talking to the sandbox.
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    /// The agent connection failed.
    #[error("sandbox: {0}")]
    Agent(#[from] ClientError),
}

/// A process being ended: why, and which signal is due when.
#[derive(Debug, Clone, Copy)]
struct Stopping {
    why: ProcessEnd,
    at: tokio::time::Instant,
    signal: i32,
}

/// A process in the guest with its timeout and, once it is being ended, the
/// signals still due.
struct RunningProcess {
    handle: ExecHandle,
    grace: (Duration, Duration),
    deadline: Option<tokio::time::Instant>,
    stopping: Option<Stopping>,
}

impl RunningProcess {
    /// The process's next event; meanwhile ends it, politely first, on
    /// cancellation or timeout.
    async fn next_event(
        &mut self,
        cancel: &CancellationToken,
    ) -> Result<Option<ExecEvent>, ClientError> {
        loop {
            let next_signal_at = self.stopping.map(|s| s.at);
            let running = self.stopping.is_none();
            tokio::select! {
                event = self.handle.next_event() => return event,
                _ = cancel.cancelled(), if running => self.interrupt(ProcessEnd::Cancelled).await?,
                _ = sleep_until(self.deadline), if running && self.deadline.is_some() => {
                    self.interrupt(ProcessEnd::TimedOut).await?
                }
                _ = sleep_until(next_signal_at), if next_signal_at.is_some() => self.escalate().await?,
            }
        }
    }

    /// Starts ending the process for `why`: SIGINT now, SIGTERM after the first grace.
    async fn interrupt(&mut self, why: ProcessEnd) -> Result<(), ClientError> {
        self.handle.kill(libc_signal::SIGINT).await?;
        self.stopping = Some(Stopping {
            why,
            at: tokio::time::Instant::now() + self.grace.0,
            signal: libc_signal::SIGTERM,
        });
        Ok(())
    }

    /// Sends the due signal (SIGTERM), SIGKILL following after the second grace.
    async fn escalate(&mut self) -> Result<(), ClientError> {
        let stopping = self.stopping.expect("a process being stopped");
        self.handle.kill(stopping.signal).await?;
        self.stopping = Some(Stopping {
            why: stopping.why,
            at: tokio::time::Instant::now() + self.grace.1,
            signal: libc_signal::SIGKILL,
        });
        Ok(())
    }
}

/// A process's stdout and stderr, split into lines.
#[derive(Default)]
struct OutputLines {
    stdout: LineSplitter,
    stderr: LineSplitter,
}

impl OutputLines {
    fn push(
        &mut self,
        stream: Stream,
        data: &[u8],
        on_line: &mut (dyn FnMut(LogStream, String) + Send),
    ) {
        let (splitter, kind) = match stream {
            Stream::Stdout => (&mut self.stdout, LogStream::Stdout),
            Stream::Stderr => (&mut self.stderr, LogStream::Stderr),
        };
        for line in splitter.push(data) {
            on_line(kind, line);
        }
    }

    /// Hands over the partial last lines.
    fn finish(&mut self, on_line: &mut (dyn FnMut(LogStream, String) + Send)) {
        if let Some(line) = self.stdout.finish() {
            on_line(LogStream::Stdout, line);
        }
        if let Some(line) = self.stderr.finish() {
            on_line(LogStream::Stderr, line);
        }
    }
}

/// How a process that exited by itself ended.
fn exit_end(code: Option<i32>, signal: Option<i32>) -> ProcessEnd {
    match (code, signal) {
        (Some(code), _) => ProcessEnd::Exited(code),
        (None, Some(signal)) => ProcessEnd::Signalled(signal),
        (None, None) => ProcessEnd::Exited(-1),
    }
}

/// A command to run in the guest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcessSpec {
    /// Program and arguments.
    pub argv: Vec<String>,
    /// The whole environment of the process.
    pub env: BTreeMap<String, String>,
    /// Working directory.
    pub cwd: Option<String>,
    /// Ends the process (SIGINT, SIGTERM, SIGKILL) after this long.
    pub timeout: Option<Duration>,
}

/// How a process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProcessEnd {
    /// It exited with this code.
    Exited(i32),
    /// A signal it did not ask for ended it.
    Signalled(i32),
    /// Its timeout ended it.
    TimedOut,
    /// Cancellation ended it.
    Cancelled,
}

impl ProcessEnd {
    /// Whether it exited with code 0.
    pub fn succeeded(self) -> bool {
        self == ProcessEnd::Exited(0)
    }
}

/// A connected guest.
#[derive(Clone)]
pub struct Sandbox {
    client: Client,
    grace: (Duration, Duration),
}

impl Sandbox {
    /// Wraps a handshaken agent connection.
    pub fn new(client: Client) -> Self {
        Self {
            client,
            grace: (GRACE_AFTER_SIGINT, GRACE_AFTER_SIGTERM),
        }
    }

    /// Uses other grace periods after SIGINT and after SIGTERM.
    pub fn with_grace(mut self, after_sigint: Duration, after_sigterm: Duration) -> Self {
        self.grace = (after_sigint, after_sigterm);
        self
    }

    /// The agent connection.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Runs a process, handing each output line to `on_line` as it arrives;
    /// ends it on timeout or cancellation, politely first.
    pub async fn run(
        &self,
        spec: ProcessSpec,
        cancel: &CancellationToken,
        on_line: &mut (dyn FnMut(LogStream, String) + Send),
    ) -> Result<ProcessEnd, SandboxError> {
        self.run_timed(spec, cancel, on_line)
            .await
            .map(|(end, _)| end)
    }

    /// [`Sandbox::run`], also returning how long the process ran as the
    /// guest measured it (the command's own time, without the engine's).
    pub async fn run_timed(
        &self,
        spec: ProcessSpec,
        cancel: &CancellationToken,
        on_line: &mut (dyn FnMut(LogStream, String) + Send),
    ) -> Result<(ProcessEnd, Duration), SandboxError> {
        let request = ExecRequest {
            command: Command::Argv(spec.argv),
            env: spec.env,
            clear_env: true,
            cwd: spec.cwd,
            timeout_ms: None,
            stdin: Vec::new(),
            stdin_streamed: false,
        };
        let handle = self.client.exec(request).await?;
        let mut process = RunningProcess {
            handle,
            grace: self.grace,
            deadline: spec.timeout.map(|t| tokio::time::Instant::now() + t),
            stopping: None,
        };
        let mut lines = OutputLines::default();
        loop {
            match process.next_event(cancel).await? {
                Some(ExecEvent::Output { stream, data, .. }) => lines.push(stream, &data, on_line),
                Some(ExecEvent::Exit(status)) => {
                    lines.finish(on_line);
                    let ran = Duration::from_millis(status.duration_ms);
                    let end = match process.stopping {
                        Some(stopping) => stopping.why,
                        None => exit_end(status.code, status.signal),
                    };
                    return Ok((end, ran));
                }
                Some(ExecEvent::Started(_)) => {}
                None => return Err(SandboxError::Agent(ClientError::Closed)),
            }
        }
    }

    /// Writes a guest file (parents must exist).
    pub async fn write_file(&self, path: &str, mode: u32, data: &[u8]) -> Result<(), SandboxError> {
        Ok(self.client.put_file(path, mode, data).await?)
    }

    /// Reads a guest file of at most `max_bytes`; `None` when it does not exist.
    pub async fn read_file(
        &self,
        path: &str,
        max_bytes: u64,
    ) -> Result<Option<Vec<u8>>, SandboxError> {
        match self.client.get_file(path, max_bytes).await {
            Ok((data, _)) => Ok(Some(data)),
            Err(ClientError::Agent {
                kind: ErrorKind::NotFound,
                ..
            }) => Ok(None),
            Err(err) => Err(err.into()),
        }
    }

    /// Creates guest directories (with parents).
    pub async fn create_dirs(&self, paths: &[&str]) -> Result<(), SandboxError> {
        let mut argv = vec!["mkdir".to_string(), "-p".to_string()];
        argv.extend(paths.iter().map(|p| p.to_string()));
        let mut request = ExecRequest::argv(argv);
        request.timeout_ms = Some(30_000);
        let (_, stderr, status) = self.client.exec(request).await?.wait().await?;
        if status.code != Some(0) {
            return Err(SandboxError::Agent(ClientError::Agent {
                kind: ErrorKind::Io,
                message: format!(
                    "mkdir -p {}: {}",
                    paths.join(" "),
                    String::from_utf8_lossy(&stderr).trim()
                ),
            }));
        }
        Ok(())
    }
}

async fn sleep_until(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Signal numbers on Linux guests.
mod libc_signal {
    pub const SIGINT: i32 = 2;
    pub const SIGKILL: i32 = 9;
    pub const SIGTERM: i32 = 15;
}
