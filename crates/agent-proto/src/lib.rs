//! The wire protocol between the firerunner host and the guest agent.
//!
//! Messages ([`HostMessage`], [`AgentMessage`]) are encoded with postcard and
//! carried in [`frame`]s that survive a noisy byte stream: a serial line may
//! carry kernel output before the agent starts, so the decoder skips garbage
//! and resynchronises on the next valid frame. Every operation carries a
//! request id, so several execs and transfers share one connection; bulk
//! data moves in chunks of at most [`MAX_CHUNK`] bytes under per-stream
//! credit windows ([`Window`]), so neither side buffers without bound.
//!
//! The protocol is described for implementers in `docs/agent-protocol.md`.
#![warn(missing_docs)]

pub mod frame;
mod message;
mod window;

pub use frame::{FrameDecoder, MAX_FRAME_PAYLOAD};
pub use message::{
    negotiate, AgentMessage, ErrorKind, ExecRequest, HostMessage, OutputStream, Program,
    ProtoError, RequestId, StdinMode, MAX_CHUNK, PROTOCOL_VERSION,
};
pub use window::{Window, INITIAL_WINDOW};

/// Encodes a message as one frame, ready to write to the transport.
pub fn encode<M: serde::Serialize>(message: &M) -> Result<Vec<u8>, ProtoError> {
    let payload = postcard::to_stdvec(message).map_err(|e| ProtoError::Encode(e.to_string()))?;
    frame::encode(&payload)
}

/// Decodes a message from a frame's payload (as returned by [`FrameDecoder`]).
pub fn decode<'a, M: serde::Deserialize<'a>>(payload: &'a [u8]) -> Result<M, ProtoError> {
    postcard::from_bytes(payload).map_err(|e| ProtoError::Decode(e.to_string()))
}
