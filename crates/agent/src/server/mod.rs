//! Request dispatch: one reader loop, a shared frame writer, a thread per running exec stream.
//!
//! The state the loop keeps is split by what it serves: [`exec`] holds the running
//! commands, [`transfer`] the file and tar uploads in progress; [`wire`] writes the answers.

mod exec;
mod transfer;
mod wire;

use exec::Execs;
pub use exec::OwnChildren;
use firerunner_agent_proto::message::{Body, ErrorKind, Message};
use firerunner_agent_proto::FrameDecoder;
use std::io::{Read, Write};
use std::sync::{Arc, Mutex};
use transfer::Uploads;
use wire::{send, send_error, Sink};

/// Serves requests until the stream ends or a shutdown is requested; returns true on shutdown.
pub fn serve(
    mut reader: Box<dyn Read + Send>,
    writer: Box<dyn Write + Send>,
    own_children: OwnChildren,
) -> bool {
    let mut connection = Connection::new(Arc::new(Mutex::new(writer)), own_children);
    send(
        &connection.sink,
        0,
        Message::hello(env!("CARGO_PKG_VERSION")).body,
    );
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
            if connection.handle(message.id, message.body) == Flow::Shutdown {
                return true;
            }
        }
    }
}

/// Whether the connection goes on after a request.
#[derive(Debug, PartialEq, Eq)]
enum Flow {
    Continue,
    Shutdown,
}

/// What one host connection has under way: its writer, running execs and uploads.
struct Connection {
    sink: Sink,
    execs: Execs,
    uploads: Uploads,
}

impl Connection {
    fn new(sink: Sink, own_children: OwnChildren) -> Self {
        Connection {
            execs: Execs::new(sink.clone(), own_children),
            uploads: Uploads::new(sink.clone()),
            sink,
        }
    }

    /// Serves one request.
    fn handle(&mut self, id: u32, body: Body) -> Flow {
        match body {
            // Answered, because the greeting sent when serving began may
            // have gone nowhere (a virtio port drops writes while no host
            // is attached).
            Body::Hello { .. } => send(
                &self.sink,
                id,
                Message::hello(env!("CARGO_PKG_VERSION")).body,
            ),
            Body::Ping => send(&self.sink, id, Body::Pong),
            Body::SetClock { unix_ns } => set_clock(&self.sink, id, unix_ns),
            Body::AddEntropy { seed } => match crate::entropy::add(&seed) {
                Ok(()) => send(&self.sink, id, Body::Done),
                Err(err) => send_error(&self.sink, id, &err),
            },
            Body::Shutdown => {
                send(&self.sink, id, Body::Done);
                return Flow::Shutdown;
            }
            Body::Exec(request) => self.execs.start(id, request),
            Body::Stdin(_) | Body::StdinClose | Body::Credit(_) | Body::Kill { .. } => {
                self.execs.control(id, body)
            }
            Body::PutFile { .. }
            | Body::PutTar { .. }
            | Body::GetTar { .. }
            | Body::GetFile { .. }
            | Body::Data(_)
            | Body::End => self.uploads.handle(id, body),
            _ => send(
                &self.sink,
                id,
                Body::Error {
                    kind: ErrorKind::Unsupported,
                    message: "operation not supported by this agent".into(),
                },
            ),
        }
        Flow::Continue
    }
}

fn set_clock(sink: &Sink, id: u32, unix_ns: u64) {
    let ts = libc::timespec {
        tv_sec: (unix_ns / 1_000_000_000) as libc::time_t,
        tv_nsec: (unix_ns % 1_000_000_000) as libc::c_long,
    };
    // SAFETY: ts is a valid timespec.
    if unsafe { libc::clock_settime(libc::CLOCK_REALTIME, &ts) } == 0 {
        send(sink, id, Body::Done);
    } else {
        send_error(sink, id, &std::io::Error::last_os_error());
    }
}
