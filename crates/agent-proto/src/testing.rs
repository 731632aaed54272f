//! Test fixtures: a tar stream builder that writes what an attacker would, byte for byte
//! (raw names, any link target, declared sizes that lie, any entry kind), a hostile agent
//! double, and (feature `testing`) the real agent on a socket pair.

const BLOCK: usize = 512;

/// Builds a raw ustar stream entry by entry, with no validation at all.
#[derive(Debug, Default, Clone)]
pub struct HostileTar {
    bytes: Vec<u8>,
}

impl HostileTar {
    /// An empty stream.
    pub fn new() -> Self {
        Self::default()
    }

    /// A regular file `name` with `data` and permission bits `mode`.
    pub fn file(self, name: &[u8], mode: u32, data: &[u8]) -> Self {
        self.entry(name, mode, data.len() as u64, b'0', b"")
            .body(data)
    }

    /// A directory.
    pub fn dir(self, name: &[u8], mode: u32) -> Self {
        self.entry(name, mode, 0, b'5', b"")
    }

    /// A symbolic link `name` → `target`.
    pub fn symlink(self, name: &[u8], target: &[u8]) -> Self {
        self.entry(name, 0o777, 0, b'2', target)
    }

    /// A hard link `name` → `target`.
    pub fn hardlink(self, name: &[u8], target: &[u8]) -> Self {
        self.entry(name, 0o644, 0, b'1', target)
    }

    /// A GNU long-name record (kind `L`) whose body is `name` and whose header declares `size`.
    pub fn long_name(self, name: &[u8], declared: u64) -> Self {
        self.entry(b"././@LongLink", 0, declared, b'L', b"")
            .body(name)
    }

    /// A header only: name, mode, declared size, kind byte and link field (names over
    /// 100 bytes are cut); add the body with [`HostileTar::body`].
    pub fn entry(mut self, name: &[u8], mode: u32, size: u64, kind: u8, link: &[u8]) -> Self {
        let mut h = [0u8; BLOCK];
        let n = name.len().min(100);
        h[..n].copy_from_slice(&name[..n]);
        octal(&mut h[100..108], u64::from(mode));
        octal(&mut h[108..116], 0);
        octal(&mut h[116..124], 0);
        octal(&mut h[124..136], size);
        octal(&mut h[136..148], 0);
        h[156] = kind;
        let l = link.len().min(100);
        h[157..157 + l].copy_from_slice(&link[..l]);
        h[257..263].copy_from_slice(b"ustar ");
        h[263..265].copy_from_slice(b" \0");
        h[148..156].copy_from_slice(b"        ");
        let sum: u32 = h.iter().map(|&b| u32::from(b)).sum();
        octal(&mut h[148..155], u64::from(sum));
        h[155] = b' ';
        self.bytes.extend_from_slice(&h);
        self
    }

    /// Body bytes padded to a block.
    pub fn body(mut self, data: &[u8]) -> Self {
        self.bytes.extend_from_slice(data);
        let pad = (BLOCK - data.len() % BLOCK) % BLOCK;
        self.bytes.extend(std::iter::repeat_n(0u8, pad));
        self
    }

    /// Raw bytes, as they are.
    pub fn raw(mut self, data: &[u8]) -> Self {
        self.bytes.extend_from_slice(data);
        self
    }

    /// The stream with its two end-of-archive blocks.
    pub fn finish(mut self) -> Vec<u8> {
        self.bytes.extend_from_slice(&[0u8; BLOCK * 2]);
        self.bytes
    }

    /// The stream without end-of-archive blocks (a truncated archive).
    pub fn unfinished(self) -> Vec<u8> {
        self.bytes
    }
}

fn octal(field: &mut [u8], value: u64) {
    let digits = field.len() - 1;
    let text = format!("{:0width$o}", value, width = digits);
    let text = &text.as_bytes()[text.len().saturating_sub(digits)..];
    field[..digits].copy_from_slice(text);
}

/// A scratch directory under the system temp dir, removed on drop.
#[derive(Debug)]
pub struct ScratchDir(pub std::path::PathBuf);

impl ScratchDir {
    /// Creates `firerunner-<tag>-<pid>-<n>`.
    pub fn new(tag: &str) -> Self {
        use std::sync::atomic::{AtomicU32, Ordering};
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let path =
            std::env::temp_dir().join(format!("firerunner-{tag}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).expect("scratch dir");
        Self(path)
    }

    /// Its path.
    pub fn path(&self) -> &std::path::Path {
        &self.0
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A guest agent double that answers the handshake, then lets a test answer each request
/// with whatever bytes it likes (valid frames, lies, garbage, endless streams).
#[cfg(feature = "client")]
pub mod agent {
    use crate::message::{Body, Message};
    use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};

    /// Bytes to send for one request, chunk by chunk, until the iterator ends or the host
    /// stops reading.
    pub type Reply = Box<dyn Iterator<Item = Vec<u8>> + Send>;

    /// One encoded frame.
    pub fn frame(id: u32, body: Body) -> Vec<u8> {
        Message::new(id, body).to_frame().expect("frame")
    }

    /// A reply of these frames, in order.
    pub fn frames(list: Vec<Vec<u8>>) -> Reply {
        Box::new(list.into_iter())
    }

    /// Starts the double; returns the host end of the link. `respond` gets each request's
    /// id and body.
    pub fn spawn<F>(mut respond: F) -> DuplexStream
    where
        F: FnMut(u32, Body) -> Reply + Send + 'static,
    {
        let (host, mut guest) = tokio::io::duplex(1 << 20);
        tokio::spawn(async move {
            let hello = Message::hello("hostile-double").to_frame().expect("hello");
            if guest.write_all(&hello).await.is_err() {
                return;
            }
            let mut decoder = crate::frame::FrameDecoder::new();
            let mut buffer = vec![0u8; 64 * 1024];
            loop {
                while let Some(payload) = decoder.next_payload() {
                    let Ok(message) = Message::from_payload(&payload) else {
                        continue;
                    };
                    if matches!(message.body, Body::Hello { .. } | Body::Credit(_)) {
                        continue;
                    }
                    for chunk in respond(message.id, message.body) {
                        if guest.write_all(&chunk).await.is_err() {
                            return;
                        }
                    }
                }
                match guest.read(&mut buffer).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => decoder.push(&buffer[..n]),
                }
            }
        });
        host
    }
}

/// The real agent on a socket pair (feature `testing`).
#[cfg(feature = "testing")]
mod socket_pair {
    use std::os::unix::net::UnixStream;
    use std::path::Path;
    use std::process::{Child, Command, Stdio};

    /// Starts the agent `binary` with `--stdio` on one end of a socket pair and returns the
    /// process and the host's end, ready for [`crate::Client::connect`] (needs a tokio runtime).
    pub fn agent_on_socket_pair(binary: &Path) -> (Child, tokio::net::UnixStream) {
        let (host, guest) = UnixStream::pair().expect("a socket pair");
        let child = Command::new(binary)
            .arg("--stdio")
            .stdin(Stdio::from(std::os::fd::OwnedFd::from(
                guest.try_clone().expect("a second handle on the socket"),
            )))
            .stdout(Stdio::from(std::os::fd::OwnedFd::from(guest)))
            .spawn()
            .unwrap_or_else(|err| panic!("cannot start {}: {err}", binary.display()));
        host.set_nonblocking(true).expect("a non-blocking socket");
        let host = tokio::net::UnixStream::from_std(host).expect("a tokio socket");
        (child, host)
    }
}
#[cfg(feature = "testing")]
pub use socket_pair::agent_on_socket_pair;
