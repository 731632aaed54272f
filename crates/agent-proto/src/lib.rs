//! Versioned wire protocol shared by the firerunner host and its guest agent.
//!
//! Layers: [`frame`] turns byte streams (serial lines with kernel noise, virtio ports, vsock)
//! into checksummed frames and back; [`message`] defines the typed, versioned messages carried
//! in those frames. See `docs/agent-protocol.md`.
#![warn(missing_docs)]

pub mod frame;
pub mod message;

pub use frame::{encode_frame, FrameDecoder, FrameError, MAX_PAYLOAD};
pub use message::{
    check_version, Body, Command, ErrorKind, ExecRequest, Message, ProtoError, Stream,
    PROTOCOL_VERSION,
};
