//! The guest's serial console, kept on the host with a quota.
//!
//! The console is written by the guest, and the guest runs strangers' code:
//! a job that writes to `/dev/ttyS0` in a loop would fill the host's disk if
//! the hypervisor wrote the console to a file itself. Both backends therefore
//! hand the console to the host through a pipe (the hypervisor's standard
//! output), and [`capture`] copies at most [`ConsoleQuota::bytes`] of it into
//! `console.log`, then one line saying the rest was dropped, and drains (and
//! discards) whatever follows so the guest is never blocked on a full pipe.
//! The head is what is kept because it holds the boot messages that explain a
//! guest that never came up.

use std::path::Path;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::task::JoinHandle;

/// The file in a VM's directory that holds its console.
pub const CONSOLE_FILE: &str = "console.log";

/// How much of a guest's console the host keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConsoleQuota {
    /// Bytes written to `console.log` before the rest is dropped.
    pub bytes: u64,
}

impl Default for ConsoleQuota {
    /// 1 MiB: a full boot log is about 50 KiB.
    fn default() -> Self {
        Self { bytes: 1 << 20 }
    }
}

/// The line written once the quota is reached.
pub fn dropped_line(quota: ConsoleQuota) -> String {
    format!(
        "\n[firerunner: console output beyond {} bytes dropped]\n",
        quota.bytes
    )
}

/// Copies `source` (the hypervisor's standard output) into `path` within the
/// quota, until the hypervisor closes it. The file is created anew, without
/// following a link planted at its name, readable by its owner only.
pub fn capture<R>(source: R, path: &Path, quota: ConsoleQuota) -> std::io::Result<JoinHandle<()>>
where
    R: AsyncRead + Unpin + Send + 'static,
{
    use std::os::unix::fs::OpenOptionsExt;
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)?;
    let file = tokio::fs::File::from_std(file);
    Ok(tokio::spawn(copy_within(source, file, quota)))
}

async fn copy_within<R, W>(mut source: R, mut sink: W, quota: ConsoleQuota)
where
    R: AsyncRead + Unpin,
    W: tokio::io::AsyncWrite + Unpin,
{
    let mut buffer = vec![0u8; 16 * 1024];
    let mut kept = 0u64;
    let mut full = false;
    loop {
        let n = match source.read(&mut buffer).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if full {
            continue;
        }
        let room = usize::try_from(quota.bytes - kept).unwrap_or(usize::MAX);
        let take = n.min(room);
        // A console file that cannot be written is not worth stopping the
        // guest for: keep draining so its serial line never blocks.
        let _ = sink.write_all(&buffer[..take]).await;
        kept += take as u64;
        if take < n {
            full = true;
            let _ = sink.write_all(dropped_line(quota).as_bytes()).await;
        }
        let _ = sink.flush().await;
    }
    let _ = sink.flush().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn captured(input: Vec<u8>, quota: u64) -> Vec<u8> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(CONSOLE_FILE);
        let (mut writer, reader) = tokio::io::duplex(4096);
        let task = capture(reader, &path, ConsoleQuota { bytes: quota }).unwrap();
        writer.write_all(&input).await.unwrap();
        drop(writer);
        task.await.unwrap();
        std::fs::read(&path).unwrap()
    }

    #[tokio::test]
    async fn output_within_the_quota_is_kept_whole() {
        let input = b"Linux version 6.1\nfirerunner-agent: ready\n".to_vec();
        assert_eq!(captured(input.clone(), 1024).await, input);
        // Exactly the quota is not "beyond" it.
        assert_eq!(captured(vec![b'x'; 1024], 1024).await, vec![b'x'; 1024]);
    }

    #[tokio::test]
    async fn output_beyond_the_quota_is_dropped_after_one_line_saying_so() {
        let quota = ConsoleQuota { bytes: 1000 };
        let kept = captured(vec![b'y'; 5 * 1024 * 1024], quota.bytes).await;
        let mut expected = vec![b'y'; 1000];
        expected.extend_from_slice(dropped_line(quota).as_bytes());
        assert_eq!(kept, expected);
    }

    #[tokio::test]
    async fn a_link_planted_at_the_console_name_is_not_followed() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("elsewhere");
        std::fs::write(&target, "untouched").unwrap();
        let path = dir.path().join(CONSOLE_FILE);
        std::os::unix::fs::symlink(&target, &path).unwrap();
        let (_writer, reader) = tokio::io::duplex(64);
        assert!(capture(reader, &path, ConsoleQuota::default()).is_err());
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "untouched");
    }
}
