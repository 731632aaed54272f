//! Versioned wire protocol shared by the firerunner host and its guest agent.
//!
//! Layers: [`frame`] turns byte streams (serial lines with kernel noise, virtio ports, vsock)
//! into checksummed frames and back; [`message`] defines the typed, versioned messages carried
//! in those frames. See `docs/agent-protocol.md`.
#![warn(missing_docs)]

#[cfg(feature = "client")]
pub mod client;
pub mod frame;
pub mod message;
pub mod tar;
pub mod testing;

#[cfg(feature = "client")]
pub use client::{Client, ClientError, ExecEvent, ExecHandle, ExitStatus, PeerInfo};
pub use frame::{encode_frame, FrameDecoder, FrameError, MAX_PAYLOAD};
pub use message::{
    check_version, Body, Command, ErrorKind, ExecRequest, Message, ProtoError, Stream,
    PROTOCOL_VERSION,
};
