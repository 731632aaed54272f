//! Async host-side client: handshake, then multiplexed operations over one stream.

use crate::frame::FrameDecoder;
use crate::message::{check_version, Body, ErrorKind, ExecRequest, Message, ProtoError, Stream};
use crate::message::{MAX_CHUNK, PROTOCOL_VERSION};
use crate::tar::{Limits, TarError, UnpackOptions, Unpacked};
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
    /// A tar stream from the agent was refused.
    #[error(transparent)]
    Tar(#[from] TarError),
    /// The agent sent more than the limit for this transfer.
    #[error("{what} exceeds the limit of {limit} bytes")]
    TooLarge {
        /// What was being read.
        what: String,
        /// The limit in bytes.
        limit: u64,
    },
    /// The agent sent bytes that are not a valid frame or message after the handshake;
    /// the connection was dropped.
    #[error("agent sent garbage ({0}); connection dropped")]
    Garbage(String),
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
/// Where replies go, by operation id; `None` once the connection is gone (an operation
/// opened after that sees its reply channel closed at once).
type Routes = Arc<Mutex<Option<HashMap<u32, mpsc::UnboundedSender<Body>>>>>;

/// A connected, handshaken agent; cheap to clone and usable from many tasks at once.
#[derive(Clone)]
pub struct Client {
    writer: Arc<Writer>,
    routes: Routes,
    next_id: Arc<AtomicU32>,
    peer: PeerInfo,
    violation: Violation,
}

/// Why the connection was dropped for garbage, once it was.
type Violation = Arc<Mutex<Option<String>>>;

/// Reads until the agent's hello, checking its protocol version; frames
/// before it are passed over, and what follows it stays in `decoder`.
async fn read_hello<R: AsyncRead + Unpin>(
    reader: &mut R,
    decoder: &mut FrameDecoder,
) -> Result<PeerInfo, ClientError> {
    let mut buffer = vec![0u8; 64 * 1024];
    loop {
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
                return Ok(PeerInfo {
                    software_version,
                    capabilities,
                });
            }
            continue;
        }
        let n = reader.read(&mut buffer).await?;
        if n == 0 {
            return Err(ClientError::Closed);
        }
        decoder.push(&buffer[..n]);
    }
}

/// Routes each reply to its operation. After the handshake the link carries nothing but
/// frames, so any skipped byte, bad checksum, oversize frame or undecodable message is an
/// attack or a broken agent: the connection is dropped and every operation fails.
async fn route_replies<R: AsyncRead + Unpin>(
    mut reader: R,
    mut decoder: FrameDecoder,
    routes: Routes,
    violation: Violation,
) {
    let mut buffer = vec![0u8; 64 * 1024];
    let garbage = |d: &FrameDecoder| d.skipped_bytes() + d.bad_checksums() + d.oversize_frames();
    let baseline = garbage(&decoder);
    let reason = 'read: loop {
        while let Some(payload) = decoder.next_payload() {
            if garbage(&decoder) > baseline {
                break 'read Some(garbage_report(&decoder));
            }
            let message = match Message::from_payload(&payload) {
                Ok(message) => message,
                Err(err) => break 'read Some(format!("undecodable message: {err}")),
            };
            let route = routes
                .lock()
                .expect("routes")
                .as_ref()
                .and_then(|r| r.get(&message.id).cloned());
            if let Some(route) = route {
                let _ = route.send(message.body);
            }
        }
        if garbage(&decoder) > baseline {
            break Some(garbage_report(&decoder));
        }
        match reader.read(&mut buffer).await {
            Ok(0) | Err(_) => break None,
            Ok(n) => decoder.push(&buffer[..n]),
        }
    };
    *violation.lock().expect("violation") = reason;
    *routes.lock().expect("routes") = None;
}

fn garbage_report(decoder: &FrameDecoder) -> String {
    format!(
        "{} stray bytes, {} bad checksums, {} oversize frames",
        decoder.skipped_bytes(),
        decoder.bad_checksums(),
        decoder.oversize_frames()
    )
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
        let peer = read_hello(&mut reader, &mut decoder).await?;
        let routes: Routes = Arc::new(Mutex::new(Some(HashMap::new())));
        let violation: Violation = Arc::default();
        tokio::spawn(route_replies(
            reader,
            decoder,
            routes.clone(),
            violation.clone(),
        ));
        Ok(Self {
            writer: Arc::new(tokio::sync::Mutex::new(Box::new(writer))),
            routes,
            next_id: Arc::new(AtomicU32::new(1)),
            peer,
            violation,
        })
    }

    /// Why the connection was dropped for garbage, if it was.
    pub fn violation(&self) -> Option<String> {
        self.violation.lock().expect("violation").clone()
    }

    /// The error for a reply that will never come.
    fn closed(&self) -> ClientError {
        match self.violation() {
            Some(reason) => ClientError::Garbage(reason),
            None => ClientError::Closed,
        }
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
        if let Some(routes) = self.routes.lock().expect("routes").as_mut() {
            routes.insert(id, tx);
        }
        (id, rx)
    }

    fn close(&self, id: u32) {
        if let Some(routes) = self.routes.lock().expect("routes").as_mut() {
            routes.remove(&id);
        }
    }

    async fn request(&self, body: Body) -> Result<Body, ClientError> {
        let (id, mut rx) = self.open();
        self.send(id, body).await?;
        let reply = rx.recv().await.ok_or_else(|| self.closed());
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
                into_result(rx.recv().await.ok_or_else(|| self.closed())?)?,
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

    /// Fetches the guest directory `guest_dir` as a tar stream and unpacks it beneath
    /// `local_dir` as it arrives, under `options` and the rules of [`crate::tar::unpack`];
    /// the stream is never held whole in memory.
    pub async fn get_tar(
        &self,
        guest_dir: &str,
        local_dir: &std::path::Path,
        options: UnpackOptions,
    ) -> Result<Unpacked, ClientError> {
        let (id, mut rx) = self.open();
        let (tx, chunks) = mpsc::channel::<Vec<u8>>(16);
        let dir = local_dir.to_owned();
        let unpacker = tokio::task::spawn_blocking(move || {
            let mut input = ChannelReader::new(chunks);
            crate::tar::unpack(&mut input, &dir, &options)
        });
        let request = Body::GetTar {
            path: guest_dir.into(),
        };
        let received = match self.send(id, request).await {
            Ok(()) => {
                self.forward_stream(&mut rx, tx, stream_cap(options.limits))
                    .await
            }
            Err(err) => Err(err),
        };
        self.close(id);
        let unpacked = unpacker
            .await
            .map_err(|err| ClientError::Io(std::io::Error::other(err)))?;
        match (unpacked, received) {
            (Err(TarError::Read(_)), Err(err)) => Err(err),
            (Err(err), _) => Err(err.into()),
            (Ok(_), Err(err)) => Err(err),
            (Ok(done), Ok(())) => Ok(done),
        }
    }

    /// Reads a guest file of at most `max_bytes`; returns its bytes and permission bits.
    /// A larger file (declared or sent) is refused as soon as that shows.
    pub async fn get_file(
        &self,
        path: &str,
        max_bytes: u64,
    ) -> Result<(Vec<u8>, u32), ClientError> {
        let (id, mut rx) = self.open();
        let too_large = || ClientError::TooLarge {
            what: path.to_string(),
            limit: max_bytes,
        };
        let result = async {
            self.send(id, Body::GetFile { path: path.into() }).await?;
            let mut data = Vec::new();
            let mut mode = 0;
            loop {
                match into_result(rx.recv().await.ok_or_else(|| self.closed())?)? {
                    Body::FileInfo { size, .. } if size > max_bytes => return Err(too_large()),
                    Body::FileInfo { size, mode: m } => {
                        mode = m;
                        data.reserve(size as usize);
                    }
                    Body::Data(chunk) if (data.len() + chunk.len()) as u64 > max_bytes => {
                        return Err(too_large());
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

/// Bytes a tar stream within `limits` can take on the wire: the file bytes, plus per entry
/// a header, a long name and a long link with their headers, and padding.
fn stream_cap(limits: Limits) -> u64 {
    let per_entry = 512 * 5 + 2 * 4096;
    limits
        .max_bytes
        .saturating_add(limits.max_entries.saturating_mul(per_entry))
        .saturating_add(1024)
}

impl Client {
    /// Hands the data of a stream to `tx` until its end, refusing more than `cap` bytes.
    async fn forward_stream(
        &self,
        rx: &mut mpsc::UnboundedReceiver<Body>,
        tx: mpsc::Sender<Vec<u8>>,
        cap: u64,
    ) -> Result<(), ClientError> {
        let mut total: u64 = 0;
        loop {
            match into_result(rx.recv().await.ok_or_else(|| self.closed())?)? {
                Body::Data(chunk) => {
                    total += chunk.len() as u64;
                    if total > cap {
                        return Err(ClientError::TooLarge {
                            what: "tar stream".into(),
                            limit: cap,
                        });
                    }
                    if tx.send(chunk).await.is_err() {
                        // The unpacker has stopped, at the end of the archive or at an
                        // error it reports: nothing more is read from this stream.
                        return Ok(());
                    }
                }
                Body::End => return Ok(()),
                other => return Err(ClientError::Unexpected(format!("{other:?}"))),
            }
        }
    }
}

/// A blocking reader over chunks sent from async code; ends when the sender is dropped.
struct ChannelReader {
    rx: mpsc::Receiver<Vec<u8>>,
    current: Vec<u8>,
    offset: usize,
}

impl ChannelReader {
    fn new(rx: mpsc::Receiver<Vec<u8>>) -> Self {
        Self {
            rx,
            current: Vec::new(),
            offset: 0,
        }
    }
}

impl std::io::Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.offset == self.current.len() {
            match self.rx.blocking_recv() {
                Some(chunk) => {
                    self.current = chunk;
                    self.offset = 0;
                }
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.current.len() - self.offset);
        buf[..n].copy_from_slice(&self.current[self.offset..self.offset + n]);
        self.offset += n;
        Ok(n)
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
            return match self.client.violation() {
                Some(reason) => Err(ClientError::Garbage(reason)),
                None => Ok(None),
            };
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
        Err(self.client.closed())
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
