//! Writing answers: the shared frame writer and the messages every part sends.

use firerunner_agent_proto::message::{Body, ErrorKind, Message};
use std::io::Write;
use std::sync::{Arc, Mutex};

/// The connection's frame writer, shared by the dispatch loop and the stream threads.
pub(super) type Sink = Arc<Mutex<Box<dyn Write + Send>>>;

/// Sends one message; a write error is left to the read loop to notice.
pub(super) fn send(sink: &Sink, id: u32, body: Body) {
    if let Ok(frame) = Message::new(id, body).to_frame() {
        let mut out = sink.lock().expect("writer lock");
        let _ = out.write_all(&frame).and_then(|_| out.flush());
    }
}

/// Sends the `Error` answer for an I/O failure.
pub(super) fn send_error(sink: &Sink, id: u32, err: &std::io::Error) {
    send(sink, id, io_error_body(err));
}

/// The `Error` answer for an I/O failure, its kind kept where the protocol has one.
fn io_error_body(err: &std::io::Error) -> Body {
    let kind = match err.kind() {
        std::io::ErrorKind::NotFound => ErrorKind::NotFound,
        std::io::ErrorKind::PermissionDenied => ErrorKind::PermissionDenied,
        _ => ErrorKind::Io,
    };
    Body::Error {
        kind,
        message: err.to_string(),
    }
}
