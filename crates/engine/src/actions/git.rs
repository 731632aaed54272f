//! The git commands behind remote actions, each under a time limit: which
//! commit a ref names on a remote (`git ls-remote`), and one commit's files
//! fetched shallowly into a folder.

use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// How long asking a remote which commit a ref names may take.
pub const LS_REMOTE_TIMEOUT: Duration = Duration::from_secs(60);
/// How long fetching one action repository may take.
pub const FETCH_TIMEOUT: Duration = Duration::from_secs(600);

/// Why a git command did not give what was asked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GitError {
    /// git could not be started.
    #[error("git could not be started: {0}")]
    Start(String),
    /// git did not finish in time and was killed.
    #[error("git {command} did not finish within {} s", timeout.as_secs())]
    Timeout {
        /// The git subcommand.
        command: String,
        /// Its limit.
        timeout: Duration,
    },
    /// git ran and failed.
    #[error("{0}")]
    Failed(String),
}

/// The output of a git command that succeeded.
fn git(dir: Option<&Path>, args: &[&str], timeout: Duration) -> Result<String, GitError> {
    let mut command = Command::new("git");
    if let Some(dir) = dir {
        command.arg("-C").arg(dir);
    }
    let mut child = command
        .args(args)
        .env("GIT_TERMINAL_PROMPT", "0")
        // A transfer slower than 1 KB/s for a minute is given up.
        .env("GIT_HTTP_LOW_SPEED_LIMIT", "1000")
        .env("GIT_HTTP_LOW_SPEED_TIME", "60")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| GitError::Start(e.to_string()))?;
    let stdout = read_in_thread(child.stdout.take());
    let stderr = read_in_thread(child.stderr.take());
    let started = Instant::now();
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if started.elapsed() < timeout => {
                std::thread::sleep(Duration::from_millis(20))
            }
            Ok(None) | Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                let command = args.first().copied().unwrap_or_default().to_owned();
                return Err(GitError::Timeout { command, timeout });
            }
        }
    };
    let stdout = stdout.join().unwrap_or_default();
    let stderr = stderr.join().unwrap_or_default();
    if status.success() {
        Ok(stdout)
    } else {
        Err(GitError::Failed(stderr.trim().to_owned()))
    }
}

/// Reads a pipe to its end (at most 1 MiB kept) on a thread of its own.
fn read_in_thread(pipe: Option<impl Read + Send + 'static>) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut bytes = Vec::new();
        if let Some(pipe) = pipe {
            let _ = pipe.take(1 << 20).read_to_end(&mut bytes);
        }
        String::from_utf8_lossy(&bytes).into_owned()
    })
}

/// The ref `name` found on a remote and the commit it points at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteCommit {
    /// The full ref (`refs/tags/v4`, `refs/heads/main`).
    pub full_ref: String,
    /// The commit (a tag's peeled commit).
    pub sha: String,
}

/// The commit `name` (a tag, branch or full ref) names at `url`, as a fetch
/// of `name` would take it: a tag before a branch. `None` when `url` has no
/// such ref.
pub fn ls_remote(url: &str, name: &str) -> Result<Option<RemoteCommit>, GitError> {
    let peeled = format!("{name}^{{}}");
    let out = git(
        None,
        &["ls-remote", "--end-of-options", url, name, &peeled],
        LS_REMOTE_TIMEOUT,
    )?;
    Ok(pick_ref(&out, name))
}

/// From `ls-remote` lines, the ref git would fetch for `name`.
fn pick_ref(listing: &str, name: &str) -> Option<RemoteCommit> {
    let refs: Vec<(&str, &str)> = listing
        .lines()
        .filter_map(|line| line.split_once('\t'))
        .collect();
    let sha_of = |full: &str| refs.iter().find(|(_, r)| *r == full).map(|(s, _)| *s);
    let candidates = [
        name.to_owned(),
        format!("refs/{name}"),
        format!("refs/tags/{name}"),
        format!("refs/heads/{name}"),
    ];
    candidates.into_iter().find_map(|full| {
        let sha = sha_of(&format!("{full}^{{}}")).or_else(|| sha_of(&full))?;
        Some(RemoteCommit {
            full_ref: full,
            sha: sha.to_owned(),
        })
    })
}

/// Fetches `what` (a full ref or a commit) from `url` into the empty folder
/// `work` (depth 1, no `.git` left) and returns the commit checked out.
pub fn shallow_fetch(url: &str, what: &str, work: &Path) -> Result<String, GitError> {
    let run = |args: &[&str]| git(Some(work), args, FETCH_TIMEOUT);
    run(&["init", "-q"])?;
    run(&["fetch", "-q", "--depth=1", "--end-of-options", url, what])?;
    run(&["checkout", "-q", "--detach", "FETCH_HEAD"])?;
    let sha = run(&["rev-parse", "HEAD"])?.trim().to_owned();
    let _ = std::fs::remove_dir_all(work.join(".git"));
    Ok(sha)
}

/// Whether `text` is a full commit id (40 hex digits).
pub fn is_commit_sha(text: &str) -> bool {
    text.len() == 40 && text.bytes().all(|b| b.is_ascii_hexdigit())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tag_wins_over_a_branch_and_annotated_tags_are_peeled() {
        let listing = "1111111111111111111111111111111111111111\trefs/heads/v1\n\
                       2222222222222222222222222222222222222222\trefs/tags/v1\n\
                       3333333333333333333333333333333333333333\trefs/tags/v1^{}\n";
        assert_eq!(
            pick_ref(listing, "v1"),
            Some(RemoteCommit {
                full_ref: "refs/tags/v1".into(),
                sha: "3333333333333333333333333333333333333333".into(),
            })
        );
        let branch = "4444444444444444444444444444444444444444\trefs/heads/release/v2\n";
        assert_eq!(
            pick_ref(branch, "release/v2").map(|c| c.full_ref),
            Some("refs/heads/release/v2".into())
        );
        // `ls-remote` matches ref tails: `v1` also lists `refs/heads/other/v1`.
        let tail_only = "5555555555555555555555555555555555555555\trefs/heads/other/v1\n";
        assert_eq!(pick_ref(tail_only, "v1"), None);
    }

    #[test]
    fn a_slow_git_is_killed_at_its_limit() {
        let dir = tempfile::tempdir().unwrap();
        // `git -c alias.x=!sleep` runs a shell command as a git subcommand.
        let err = git(
            Some(dir.path()),
            &["-c", "alias.nap=!sleep 5", "nap"],
            Duration::from_millis(300),
        )
        .unwrap_err();
        assert!(matches!(err, GitError::Timeout { .. }), "{err}");
    }

    #[test]
    fn commit_ids_are_forty_hex_digits() {
        assert!(is_commit_sha("b4ffde65f46336ab88eb53be808477a3936bae11"));
        assert!(!is_commit_sha("v4"));
        assert!(!is_commit_sha("b4ffde65f46336ab88eb53be808477a3936bae1g"));
    }
}
