//! Helpers for tests that talk to a real agent on the host (feature `testing`).

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
