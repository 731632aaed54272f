//! The messages of protocol version 1.

use serde::{Deserialize, Serialize};

/// The protocol version this crate speaks.
pub const PROTOCOL_VERSION: u32 = 1;
/// Largest data chunk in one message (stdin, output, file and tar data).
pub const MAX_CHUNK: usize = 64 * 1024;

/// Identifies one operation (an exec, a transfer, a ping) on a connection.
/// The host chooses it; every answer carries it back.
pub type RequestId = u64;

/// What the host sends to the agent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum HostMessage {
    /// First message on a connection: the versions the host speaks.
    Hello {
        /// The host's protocol version.
        protocol_version: u32,
        /// The host's firerunner version, for logs.
        host_version: String,
    },
    /// Start a process.
    Exec(ExecRequest),
    /// Write to a running exec's standard input (when it was started with [`StdinMode::Stream`]).
    Stdin {
        /// The exec.
        id: RequestId,
        /// The bytes, at most [`MAX_CHUNK`].
        #[serde(with = "serde_bytes")]
        data: Vec<u8>,
    },
    /// Close a running exec's standard input.
    CloseStdin {
        /// The exec.
        id: RequestId,
    },
    /// Send a signal to a running exec's whole process group.
    Kill {
        /// The exec.
        id: RequestId,
        /// The signal number (9 for SIGKILL, 15 for SIGTERM).
        signal: i32,
    },
    /// Create or replace a file; its content follows as [`HostMessage::Data`] then [`HostMessage::End`].
    PutFile {
        /// This transfer.
        id: RequestId,
        /// Absolute path in the guest.
        path: String,
        /// Unix permission bits.
        mode: u32,
    },
    /// Read a file; the agent answers with [`AgentMessage::Data`] chunks then [`AgentMessage::End`].
    GetFile {
        /// This transfer.
        id: RequestId,
        /// Absolute path in the guest.
        path: String,
    },
    /// Unpack a tar stream into a folder; the stream follows as `Data` then `End`.
    PutTar {
        /// This transfer.
        id: RequestId,
        /// Folder in the guest (created if missing).
        dest: String,
    },
    /// Pack a folder as a tar stream, sent back as `Data` then `End`.
    GetTar {
        /// This transfer.
        id: RequestId,
        /// Folder in the guest.
        path: String,
    },
    /// A chunk of an upload (`PutFile`, `PutTar`).
    Data {
        /// The transfer.
        id: RequestId,
        /// At most [`MAX_CHUNK`] bytes.
        #[serde(with = "serde_bytes")]
        data: Vec<u8>,
    },
    /// The end of an upload.
    End {
        /// The transfer.
        id: RequestId,
    },
    /// The host has consumed `bytes` of a stream the agent sends (see [`crate::Window`]).
    Credit {
        /// The exec or download.
        id: RequestId,
        /// Bytes the agent may send in addition.
        bytes: u64,
    },
    /// Set the guest clock (after a snapshot restore the guest's time is stale).
    SetClock {
        /// This request.
        id: RequestId,
        /// Nanoseconds since the Unix epoch.
        unix_nanos: u64,
    },
    /// Ask for a [`AgentMessage::Pong`].
    Ping {
        /// This request.
        id: RequestId,
    },
    /// Sync the disks and power the VM off.
    Shutdown {
        /// This request.
        id: RequestId,
    },
}

/// How to start a process.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExecRequest {
    /// This exec; output and exit carry it.
    pub id: RequestId,
    /// What to run.
    pub program: Program,
    /// Variables set for the process, in order (later ones win).
    pub env: Vec<(String, String)>,
    /// Start from an empty environment instead of the agent's.
    pub clear_env: bool,
    /// Working directory (the agent's when absent).
    pub cwd: Option<String>,
    /// Kill the process group after this many milliseconds.
    pub timeout_ms: Option<u64>,
    /// Where standard input comes from.
    pub stdin: StdinMode,
}

/// What an exec runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Program {
    /// A program and its arguments, run directly.
    Argv(Vec<String>),
    /// A script written to a temporary file and run by `interpreter`, whose
    /// `{0}` argument is replaced by the file's path (as in GitHub's `shell:`),
    /// or to which the path is appended when no argument is `{0}`.
    Script {
        /// For example `["bash", "--noprofile", "--norc", "-eo", "pipefail", "{0}"]`.
        interpreter: Vec<String>,
        /// The script's text.
        script: String,
    },
}

/// Where an exec's standard input comes from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum StdinMode {
    /// Closed at once (reads see end of file).
    Closed,
    /// These bytes, then end of file.
    Data(#[serde(with = "serde_bytes")] Vec<u8>),
    /// Fed with [`HostMessage::Stdin`] until [`HostMessage::CloseStdin`].
    Stream,
}

/// Which output stream a chunk came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum OutputStream {
    /// Standard output.
    Stdout,
    /// Standard error.
    Stderr,
}

/// Why the agent could not do what was asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ErrorKind {
    /// The protocol versions cannot talk to each other.
    Version,
    /// A program, file or folder does not exist.
    NotFound,
    /// The guest refused access.
    PermissionDenied,
    /// The request id is unknown or already in use.
    BadRequestId,
    /// The message was not valid at this point of the conversation.
    Protocol,
    /// Any other failure of the guest (its message says which).
    Io,
}

/// What the agent sends to the host.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum AgentMessage {
    /// Answer to [`HostMessage::Hello`] when the versions match.
    Welcome {
        /// The protocol version both sides will speak.
        protocol_version: u32,
        /// The agent's version, for logs.
        agent_version: String,
        /// Optional features the agent offers (for example `"tar"`).
        capabilities: Vec<String>,
    },
    /// An exec's process started.
    Started {
        /// The exec.
        id: RequestId,
        /// Its process id in the guest.
        pid: u32,
    },
    /// Output of an exec, as it came.
    Output {
        /// The exec.
        id: RequestId,
        /// Which stream.
        stream: OutputStream,
        /// Milliseconds since the Unix epoch on the guest clock when read.
        timestamp_ms: u64,
        /// At most [`MAX_CHUNK`] bytes.
        #[serde(with = "serde_bytes")]
        data: Vec<u8>,
    },
    /// An exec ended; no more output follows for it.
    Exited {
        /// The exec.
        id: RequestId,
        /// Exit code, when it exited normally.
        code: Option<i32>,
        /// The signal that ended it, if any.
        signal: Option<i32>,
        /// Wall time from start to exit.
        duration_ms: u64,
        /// True when the agent killed it for its timeout.
        timed_out: bool,
    },
    /// A chunk of a download (`GetFile`, `GetTar`).
    Data {
        /// The transfer.
        id: RequestId,
        /// At most [`MAX_CHUNK`] bytes.
        #[serde(with = "serde_bytes")]
        data: Vec<u8>,
    },
    /// The end of a download.
    End {
        /// The transfer.
        id: RequestId,
    },
    /// The agent has consumed `bytes` of an upload or stdin stream.
    Credit {
        /// The exec or upload.
        id: RequestId,
        /// Bytes the host may send in addition.
        bytes: u64,
    },
    /// A request without other answer succeeded (`PutFile`, `PutTar`, `SetClock`, `Shutdown`).
    Done {
        /// The request.
        id: RequestId,
    },
    /// Answer to [`HostMessage::Ping`].
    Pong {
        /// The request.
        id: RequestId,
        /// Milliseconds since the agent started.
        uptime_ms: u64,
    },
    /// A request failed; nothing more follows for it.
    Failed {
        /// The request (0 for a failure of the connection itself).
        id: RequestId,
        /// What kind of failure.
        kind: ErrorKind,
        /// A sentence for logs.
        message: String,
    },
}

/// A protocol error on either side.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtoError {
    /// A payload was larger than a frame may carry.
    #[error("frame payload of {0} bytes exceeds the limit of {max}", max = crate::MAX_FRAME_PAYLOAD)]
    FrameTooLarge(usize),
    /// A message could not be encoded.
    #[error("cannot encode message: {0}")]
    Encode(String),
    /// A payload was not a message of this protocol version.
    #[error("cannot decode message: {0}")]
    Decode(String),
    /// The peers speak incompatible versions.
    #[error("protocol version mismatch: host speaks {host}, agent speaks {agent}")]
    VersionMismatch {
        /// The host's version.
        host: u32,
        /// The agent's version.
        agent: u32,
    },
}

/// The version two peers will speak, or why they cannot talk.
///
/// Version 1 has no compatible neighbours: both sides must speak exactly it.
pub fn negotiate(host: u32, agent: u32) -> Result<u32, ProtoError> {
    if host == agent {
        Ok(host)
    } else {
        Err(ProtoError::VersionMismatch { host, agent })
    }
}
