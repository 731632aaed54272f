//! Typed protocol messages, encoded with bincode inside frames.
//!
//! Every message carries a request id: the host picks ids for the operations it starts and the
//! agent tags every reply, output chunk and exit with the id of the operation it belongs to, so
//! several operations run at once on one connection. Id 0 is reserved for the handshake.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use thiserror::Error;

use crate::frame::{encode_frame, FrameError};

/// Version of this protocol; host and agent must agree on it in the handshake.
pub const PROTOCOL_VERSION: u32 = 1;

/// Largest data chunk (stdout, stdin, file or tar bytes) carried by one message.
pub const MAX_CHUNK: usize = 64 * 1024;

/// Output bytes the agent may send for one exec before the host grants more credit.
pub const INITIAL_OUTPUT_CREDIT: u64 = 1024 * 1024;

/// Capability names an agent of this version announces.
pub const CAPABILITIES: &[&str] = &[
    "exec", "kill", "stdin", "file", "tar", "clock", "shutdown", "entropy",
];

/// Largest seed [`Body::AddEntropy`] carries.
pub const MAX_ENTROPY_SEED: usize = 512;

/// One protocol message: the operation it belongs to and what it says.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Message {
    /// Request id chosen by the host for the operation (0 for the handshake).
    pub id: u32,
    /// The content.
    pub body: Body,
}

/// Which output stream a chunk came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Stream {
    /// Standard output.
    Stdout,
    /// Standard error.
    Stderr,
}

/// What to run for an exec.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    /// A program and its arguments, looked up in `PATH` when the first is not a path.
    Argv(Vec<String>),
    /// A script run by an interpreter (e.g. `["bash", "-e"]`); the script is written to a
    /// temporary file whose path is appended to the interpreter's argv.
    Script {
        /// Interpreter argv.
        interpreter: Vec<String>,
        /// Script text.
        source: String,
    },
}

/// Request to start a process.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecRequest {
    /// What to run.
    pub command: Command,
    /// Environment variables set on top of the agent's own (when `clear_env` is false).
    pub env: BTreeMap<String, String>,
    /// Start from an empty environment instead of the agent's.
    pub clear_env: bool,
    /// Working directory.
    pub cwd: Option<String>,
    /// Wall-clock limit in milliseconds after which the whole process group is killed.
    pub timeout_ms: Option<u64>,
    /// Bytes written to stdin at start.
    pub stdin: Vec<u8>,
    /// Whether more stdin follows in [`Body::Stdin`] messages; when false stdin is closed after
    /// the initial bytes.
    pub stdin_streamed: bool,
}

impl ExecRequest {
    /// Runs `argv` with the agent's environment, no limits and no stdin.
    pub fn argv<S: Into<String>>(argv: impl IntoIterator<Item = S>) -> Self {
        Self::new(Command::Argv(argv.into_iter().map(Into::into).collect()))
    }

    /// Runs `source` with `interpreter` (the script's path is appended).
    pub fn script<S: Into<String>>(
        interpreter: impl IntoIterator<Item = S>,
        source: impl Into<String>,
    ) -> Self {
        Self::new(Command::Script {
            interpreter: interpreter.into_iter().map(Into::into).collect(),
            source: source.into(),
        })
    }

    fn new(command: Command) -> Self {
        Self {
            command,
            env: BTreeMap::new(),
            clear_env: false,
            cwd: None,
            timeout_ms: None,
            stdin: Vec::new(),
            stdin_streamed: false,
        }
    }
}

/// Kinds of errors the agent reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ErrorKind {
    /// The request was malformed or arrived in the wrong state.
    BadRequest,
    /// A file or program was not found.
    NotFound,
    /// Permission denied.
    PermissionDenied,
    /// Any other I/O failure.
    Io,
    /// The request id is unknown or already in use.
    UnknownId,
    /// The agent does not support the operation.
    Unsupported,
}

/// Message contents.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Body {
    /// Handshake, sent by both sides first.
    Hello {
        /// [`PROTOCOL_VERSION`] of the sender.
        protocol_version: u32,
        /// Software version of the sender.
        software_version: String,
        /// Capabilities the sender supports.
        capabilities: Vec<String>,
    },
    /// Start a process (host → agent).
    Exec(ExecRequest),
    /// The process started (agent → host).
    Started {
        /// Its process id (also its process group id).
        pid: u32,
    },
    /// More stdin bytes for a running exec (host → agent).
    Stdin(Vec<u8>),
    /// Close the stdin of a running exec (host → agent).
    StdinClose,
    /// A chunk of output (agent → host).
    Output {
        /// Source stream.
        stream: Stream,
        /// Nanoseconds since the Unix epoch on the guest when the chunk was read.
        timestamp_ns: u64,
        /// Bytes, at most [`MAX_CHUNK`].
        data: Vec<u8>,
    },
    /// Flow control: the host has consumed output and grants this many more bytes.
    Credit(u64),
    /// The process ended (agent → host); last message for an exec.
    Exit {
        /// Exit code when it exited normally.
        code: Option<i32>,
        /// Signal number when it was killed by a signal.
        signal: Option<i32>,
        /// Run time in milliseconds.
        duration_ms: u64,
        /// Whether the agent killed it for exceeding its timeout.
        timed_out: bool,
    },
    /// Send a signal to the process group of a running exec (host → agent).
    Kill {
        /// Signal number.
        signal: i32,
    },
    /// Start writing a file (host → agent); followed by [`Body::Data`] and [`Body::End`].
    PutFile {
        /// Guest path.
        path: String,
        /// Permission bits.
        mode: u32,
    },
    /// Ask for a file (host → agent); answered by [`Body::FileInfo`], data and end.
    GetFile {
        /// Guest path.
        path: String,
    },
    /// Size and mode of a file about to be sent (agent → host).
    FileInfo {
        /// Size in bytes.
        size: u64,
        /// Permission bits.
        mode: u32,
    },
    /// Start unpacking a tar stream into a guest directory (host → agent).
    PutTar {
        /// Guest directory, created if missing.
        path: String,
    },
    /// Ask for a tar stream of a guest directory (host → agent).
    GetTar {
        /// Guest directory.
        path: String,
    },
    /// A chunk of file or tar bytes (either direction), at most [`MAX_CHUNK`].
    Data(Vec<u8>),
    /// End of a file or tar transfer (either direction).
    End,
    /// Set the guest's realtime clock (host → agent).
    SetClock {
        /// Nanoseconds since the Unix epoch.
        unix_ns: u64,
    },
    /// Liveness check (host → agent).
    Ping,
    /// Answer to [`Body::Ping`] (agent → host).
    Pong,
    /// Sync filesystems and power the VM off (host → agent).
    Shutdown,
    /// The operation succeeded (agent → host).
    Done,
    /// The operation failed (agent → host).
    Error {
        /// Category.
        kind: ErrorKind,
        /// Human-readable detail.
        message: String,
    },
    /// Random bytes from the host for the guest's kernel RNG, credited and
    /// followed by a reseed (host → agent): VMs restored from one snapshot
    /// share its RNG state until they get a seed of their own.
    AddEntropy {
        /// The seed, at most [`MAX_ENTROPY_SEED`] bytes.
        seed: Vec<u8>,
    },
}

/// Errors of the message layer.
#[derive(Debug, Error)]
pub enum ProtoError {
    /// A frame could not be built.
    #[error(transparent)]
    Frame(#[from] FrameError),
    /// A payload did not decode as a message.
    #[error("malformed message: {0}")]
    Malformed(#[from] bincode::Error),
    /// The peer speaks another protocol version.
    #[error("protocol version mismatch: ours {ours}, peer's {theirs}")]
    VersionMismatch {
        /// Our version.
        ours: u32,
        /// The peer's version.
        theirs: u32,
    },
}

impl Message {
    /// Creates a message.
    pub fn new(id: u32, body: Body) -> Self {
        Self { id, body }
    }

    /// Serialises the message into one frame.
    pub fn to_frame(&self) -> Result<Vec<u8>, ProtoError> {
        let payload = bincode::serialize(self)?;
        Ok(encode_frame(&payload)?)
    }

    /// Decodes a frame payload.
    pub fn from_payload(payload: &[u8]) -> Result<Self, ProtoError> {
        Ok(bincode::deserialize(payload)?)
    }

    /// The handshake message of this implementation.
    pub fn hello(software_version: &str) -> Self {
        Self::new(
            0,
            Body::Hello {
                protocol_version: PROTOCOL_VERSION,
                software_version: software_version.to_owned(),
                capabilities: CAPABILITIES.iter().map(|c| (*c).to_owned()).collect(),
            },
        )
    }
}

/// Checks a peer's handshake version against ours.
pub fn check_version(theirs: u32) -> Result<(), ProtoError> {
    if theirs == PROTOCOL_VERSION {
        Ok(())
    } else {
        Err(ProtoError::VersionMismatch {
            ours: PROTOCOL_VERSION,
            theirs,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::FrameDecoder;

    fn round_trip(message: Message) {
        let frame = message.to_frame().unwrap();
        let mut decoder = FrameDecoder::new();
        decoder.push(&frame);
        let payload = decoder.next_payload().unwrap();
        assert_eq!(Message::from_payload(&payload).unwrap(), message);
    }

    #[test]
    fn every_kind_of_message_round_trips() {
        round_trip(Message::hello("1.2.3"));
        round_trip(Message::new(
            7,
            Body::Exec(ExecRequest {
                command: Command::Script {
                    interpreter: vec!["bash".into(), "-e".into()],
                    source: "echo hi\n".into(),
                },
                env: BTreeMap::from([("A".into(), "b".into())]),
                clear_env: false,
                cwd: Some("/tmp".into()),
                timeout_ms: Some(1000),
                stdin: b"in".to_vec(),
                stdin_streamed: true,
            }),
        ));
        round_trip(Message::new(
            7,
            Body::Output {
                stream: Stream::Stderr,
                timestamp_ns: 42,
                data: vec![0, 255, 10],
            },
        ));
        round_trip(Message::new(
            7,
            Body::Exit {
                code: None,
                signal: Some(9),
                duration_ms: 12,
                timed_out: true,
            },
        ));
        round_trip(Message::new(
            9,
            Body::Error {
                kind: ErrorKind::NotFound,
                message: "no such file".into(),
            },
        ));
        round_trip(Message::new(3, Body::SetClock { unix_ns: u64::MAX }));
        round_trip(Message::new(
            3,
            Body::AddEntropy {
                seed: vec![7; MAX_ENTROPY_SEED],
            },
        ));
    }

    #[test]
    fn a_full_chunk_fits_in_a_frame() {
        let message = Message::new(1, Body::Data(vec![1; MAX_CHUNK]));
        assert!(message.to_frame().is_ok());
    }

    #[test]
    fn garbage_payload_is_a_typed_error() {
        assert!(matches!(
            Message::from_payload(&[0xFF; 3]),
            Err(ProtoError::Malformed(_))
        ));
    }

    #[test]
    fn version_mismatch_is_reported() {
        assert!(check_version(PROTOCOL_VERSION).is_ok());
        assert!(matches!(
            check_version(PROTOCOL_VERSION + 1),
            Err(ProtoError::VersionMismatch { theirs, .. }) if theirs == PROTOCOL_VERSION + 1
        ));
    }
}
