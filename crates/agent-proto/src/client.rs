//! Async host-side client: handshake, then multiplexed operations over one stream.

use crate::frame::FrameDecoder;
use crate::message::{check_version, Body, ErrorKind, ExecRequest, Message, ProtoError, Stream};
use crate::message::{MAX_CHUNK, PROTOCOL_VERSION};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use thiserror::Error;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;

/// Errors of the host client.
#[derive(Debug, Error)]
pub enum ClientError {
    /// Reading or writing the stream failed.
    #[error("agent connection I/O: {0}")]
    Io(#[from] std::io::Error),
    /// Encoding, decoding or version error.
    #[error(transparent)]
    Proto(#[from] ProtoError),
    /// The connection closed before the operation finished.
    #[error("agent connection closed")]
    Closed,
    /// The agent reported an error.
    #[error("agent error ({kind:?}): {message}")]
    Agent {
        /// Category.
        kind: ErrorKind,
        /// Detail.
        message: String,
    },
    /// The agent sent a message that does not fit the operation.
    #[error("unexpected reply: {0}")]
    Unexpected(String),
}

/// What the agent announced in its handshake.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerInfo {
    /// Agent software version.
    pub software_version: String,
    /// Capabilities.
    pub capabilities: Vec<String>,
}

/// How an exec ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExitStatus {
    /// Exit code when the process exited normally.
    pub code: Option<i32>,
    /// Signal number when it was killed.
    pub signal: Option<i32>,
    /// Run time in milliseconds.
    pub duration_ms: u64,
    /// Whether the agent killed it at its timeout.
    pub timed_out: bool,
}

/// One event of a running exec.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExecEvent {
    /// The process started with this pid.
    Started(u32),
    /// Output bytes with the guest timestamp (ns since the epoch).
    Output {
        /// Source stream.
        stream: Stream,
        /// Guest time of the read.
        timestamp_ns: u64,
        /// Bytes.
        data: Vec<u8>,
    },
    /// The process ended; no event follows.
    Exit(ExitStatus),
}

type Writer = tokio::sync::Mutex<Box<dyn AsyncWrite + Send + Unpin>>;
type Routes = Arc<Mutex<HashMap<u32, mpsc::UnboundedSender<Body>>>>;

/// A connected, handshaken agent; cheap to clone and usable from many tasks at once.
#[derive(Clone)]
pub struct Client {
    writer: Arc<Writer>,
    routes: Routes,
    next_id: Arc<AtomicU32>,
    peer: PeerInfo,
}

impl Client {
    /// Performs the handshake on `stream` and starts routing replies (needs a tokio runtime).
    pub async fn connect<S>(stream: S) -> Result<Self, ClientError>
    where
        S: AsyncRead + AsyncWrite + Send + 'static,
    {
        let (mut reader, mut writer) = tokio::io::split(stream);
        writer
            .write_all(&Message::hello(env!("CARGO_PKG_VERSION")).to_frame()?)
            .await?;
        writer.flush().await?;
        let mut decoder = FrameDecoder::new();
        let mut buffer = vec![0u8; 64 * 1024];
        let peer = loop {
            if let Some(payload) = decoder.next_payload() {
                if let Ok(Message {
                    body:
                        Body::Hello {
                            protocol_version,
                            software_version,
                            capabilities,
                        },
                    ..
                }) = Message::from_payload(&payload)
                {
                    check_version(protocol_version)?;
                    break PeerInfo {
                        software_version,
                        capabilities,
                    };
                }
                continue;
            }
            let n = reader.read(&mut buffer).await?;
            if n == 0 {
                return Err(ClientError::Closed);
            }
            decoder.push(&buffer[..n]);
        };
        let routes: Routes = Arc::default();
        let task_routes = routes.clone();
        tokio::spawn(async move {
            loop {
                while let Some(payload) = decoder.next_payload() {
                    let Ok(message) = Message::from_payload(&payload) else {
                        continue;
                    };
                    let route = task_routes
                        .lock()
                        .expect("routes")
                        .get(&message.id)
                        .cloned();
                    if let Some(route) = route {
                        let _ = route.send(message.body);
                    }
                }
                match reader.read(&mut buffer).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => decoder.push(&buffer[..n]),
                }
            }
            task_routes.lock().expect("routes").clear();
        });
        Ok(Self {
            writer: Arc::new(tokio::sync::Mutex::new(Box::new(writer))),
            routes,
            next_id: Arc::new(AtomicU32::new(1)),
            peer,
        })
    }

    /// The agent's handshake.
    pub fn peer(&self) -> &PeerInfo {
        &self.peer
    }

    /// The protocol version in use.
    pub fn protocol_version(&self) -> u32 {
        PROTOCOL_VERSION
    }

    async fn send(&self, id: u32, body: Body) -> Result<(), ClientError> {
        let frame = Message::new(id, body).to_frame()?;
        let mut writer = self.writer.lock().await;
        writer.write_all(&frame).await?;
        writer.flush().await?;
        Ok(())
    }

    fn open(&self) -> (u32, mpsc::UnboundedReceiver<Body>) {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = mpsc::unbounded_channel();
        self.routes.lock().expect("routes").insert(id, tx);
        (id, rx)
    }

    fn close(&self, id: u32) {
        self.routes.lock().expect("routes").remove(&id);
    }

    async fn request(&self, body: Body) -> Result<Body, ClientError> {
        let (id, mut rx) = self.open();
        self.send(id, body).await?;
        let reply = rx.recv().await.ok_or(ClientError::Closed);
        self.close(id);
        into_result(reply?)
    }

    /// Checks that the agent answers.
    pub async fn ping(&self) -> Result<(), ClientError> {
        expect_body(self.request(Body::Ping).await?, Body::Pong)
    }

    /// Sets the guest's realtime clock.
    pub async fn set_clock(&self, unix_ns: u64) -> Result<(), ClientError> {
        expect_body(self.request(Body::SetClock { unix_ns }).await?, Body::Done)
    }

    /// Gives the guest kernel's RNG `seed` (at most [`crate::message::MAX_ENTROPY_SEED`]
    /// bytes) and has it reseed.
    pub async fn add_entropy(&self, seed: Vec<u8>) -> Result<(), ClientError> {
        expect_body(self.request(Body::AddEntropy { seed }).await?, Body::Done)
    }

    /// Asks the agent to sync and power off the VM.
    pub async fn shutdown(&self) -> Result<(), ClientError> {
        expect_body(self.request(Body::Shutdown).await?, Body::Done)
    }

    /// Starts a process.
    pub async fn exec(&self, request: ExecRequest) -> Result<ExecHandle, ClientError> {
        let (id, rx) = self.open();
        self.send(id, Body::Exec(request)).await?;
        Ok(ExecHandle {
            client: self.clone(),
            id,
            rx,
        })
    }

    /// Writes `data` to a guest file with permission bits `mode`, in chunks.
    pub async fn put_file(&self, path: &str, mode: u32, data: &[u8]) -> Result<(), ClientError> {
        let start = Body::PutFile {
            path: path.into(),
            mode,
        };
        self.upload(start, data).await
    }

    /// Sends `start`, then `data` in chunks, then `End`, and waits for `Done`.
    async fn upload(&self, start: Body, data: &[u8]) -> Result<(), ClientError> {
        let (id, mut rx) = self.open();
        let result = async {
            self.send(id, start).await?;
            for chunk in data.chunks(MAX_CHUNK) {
                self.send(id, Body::Data(chunk.to_vec())).await?;
            }
            self.send(id, Body::End).await?;
            expect_body(
                into_result(rx.recv().await.ok_or(ClientError::Closed)?)?,
                Body::Done,
            )
        }
        .await;
        self.close(id);
        result
    }

    /// Sends the local directory `local_dir` as a tar stream unpacked into `guest_dir`.
    pub async fn put_tar(
        &self,
        local_dir: &std::path::Path,
        guest_dir: &str,
    ) -> Result<(), ClientError> {
        let dir = local_dir.to_owned();
        let stream = tokio::task::spawn_blocking(move || {
            let mut stream = Vec::new();
            crate::tar::pack(&dir, &mut stream).map(|_| stream)
        })
        .await
        .map_err(|err| ClientError::Io(std::io::Error::other(err)))??;
        let start = Body::PutTar {
            path: guest_dir.into(),
        };
        self.upload(start, &stream).await
    }

    /// Fetches the guest directory `guest_dir` as a tar stream and unpacks it into `local_dir`.
    pub async fn get_tar(
        &self,
        guest_dir: &str,
        local_dir: &std::path::Path,
    ) -> Result<(), ClientError> {
        let (id, mut rx) = self.open();
        let received = async {
            self.send(
                id,
                Body::GetTar {
                    path: guest_dir.into(),
                },
            )
            .await?;
            let mut stream = Vec::new();
            loop {
                match into_result(rx.recv().await.ok_or(ClientError::Closed)?)? {
                    Body::Data(chunk) => stream.extend(chunk),
                    Body::End => return Ok(stream),
                    other => return Err(ClientError::Unexpected(format!("{other:?}"))),
                }
            }
        }
        .await;
        self.close(id);
        let stream = received?;
        let dir = local_dir.to_owned();
        tokio::task::spawn_blocking(move || crate::tar::unpack(&mut stream.as_slice(), &dir))
            .await
            .map_err(|err| ClientError::Io(std::io::Error::other(err)))??;
        Ok(())
    }

    /// Reads a guest file; returns its bytes and permission bits.
    pub async fn get_file(&self, path: &str) -> Result<(Vec<u8>, u32), ClientError> {
        let (id, mut rx) = self.open();
        let result = async {
            self.send(id, Body::GetFile { path: path.into() }).await?;
            let mut data = Vec::new();
            let mut mode = 0;
            loop {
                match into_result(rx.recv().await.ok_or(ClientError::Closed)?)? {
                    Body::FileInfo { size, mode: m } => {
                        mode = m;
                        data.reserve(size as usize);
                    }
                    Body::Data(chunk) => data.extend(chunk),
                    Body::End => return Ok((data, mode)),
                    other => return Err(ClientError::Unexpected(format!("{other:?}"))),
                }
            }
        }
        .await;
        self.close(id);
        result
    }
}

fn into_result(body: Body) -> Result<Body, ClientError> {
    match body {
        Body::Error { kind, message } => Err(ClientError::Agent { kind, message }),
        other => Ok(other),
    }
}

fn expect_body(body: Body, expected: Body) -> Result<(), ClientError> {
    if body == expected {
        Ok(())
    } else {
        Err(ClientError::Unexpected(format!("{body:?}")))
    }
}

/// A running exec: its events, stdin and kill.
pub struct ExecHandle {
    client: Client,
    id: u32,
    rx: mpsc::UnboundedReceiver<Body>,
}

impl ExecHandle {
    /// The next event, or `None` after the exit; consuming output grants the agent more credit.
    pub async fn next_event(&mut self) -> Result<Option<ExecEvent>, ClientError> {
        let Some(body) = self.rx.recv().await else {
            return Ok(None);
        };
        match into_result(body)? {
            Body::Started { pid } => Ok(Some(ExecEvent::Started(pid))),
            Body::Output {
                stream,
                timestamp_ns,
                data,
            } => {
                self.client
                    .send(self.id, Body::Credit(data.len() as u64))
                    .await?;
                Ok(Some(ExecEvent::Output {
                    stream,
                    timestamp_ns,
                    data,
                }))
            }
            Body::Exit {
                code,
                signal,
                duration_ms,
                timed_out,
            } => {
                self.client.close(self.id);
                self.rx.close();
                Ok(Some(ExecEvent::Exit(ExitStatus {
                    code,
                    signal,
                    duration_ms,
                    timed_out,
                })))
            }
            other => Err(ClientError::Unexpected(format!("{other:?}"))),
        }
    }

    /// Runs to the end and returns (stdout, stderr, exit status).
    pub async fn wait(mut self) -> Result<(Vec<u8>, Vec<u8>, ExitStatus), ClientError> {
        let (mut out, mut err) = (Vec::new(), Vec::new());
        while let Some(event) = self.next_event().await? {
            match event {
                ExecEvent::Started(_) => {}
                ExecEvent::Output { stream, data, .. } => match stream {
                    Stream::Stdout => out.extend(data),
                    Stream::Stderr => err.extend(data),
                },
                ExecEvent::Exit(status) => return Ok((out, err, status)),
            }
        }
        Err(ClientError::Closed)
    }

    /// Sends more stdin bytes.
    pub async fn write_stdin(&self, data: &[u8]) -> Result<(), ClientError> {
        for chunk in data.chunks(MAX_CHUNK) {
            self.client
                .send(self.id, Body::Stdin(chunk.to_vec()))
                .await?;
        }
        Ok(())
    }

    /// Closes stdin.
    pub async fn close_stdin(&self) -> Result<(), ClientError> {
        self.client.send(self.id, Body::StdinClose).await
    }

    /// Signals the exec's process group.
    pub async fn kill(&self, signal: i32) -> Result<(), ClientError> {
        self.client.send(self.id, Body::Kill { signal }).await
    }
}
