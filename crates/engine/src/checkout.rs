//! Native `actions/checkout`: the host prepares the repository at the
//! wanted commit with `git`, and the engine streams that directory into the
//! VM, which therefore needs no credentials and no network.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Where the files come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CheckoutSource {
    /// A local working tree, as it is now: tracked and untracked files that
    /// `.gitignore` does not exclude, uncommitted changes included, plus its
    /// `.git` directory (what `firerunner run` uses, like act).
    WorkingTree(PathBuf),
    /// A repository (URL or path) at a commit, fetched `depth` commits deep
    /// (0: full history), as actions/checkout does with `fetch-depth`.
    Commit {
        /// Clone URL or local path.
        repository: String,
        /// The commit SHA (or a ref the repository resolves).
        commit: String,
        /// History depth; 0 for all of it.
        depth: u32,
        /// A token for fetching over HTTPS (never written to the checkout).
        credentials: Option<GitToken>,
    },
}

/// A token git authenticates with over HTTPS (as GitHub's `x-access-token`
/// user). It is handed to git through its environment only, so it appears
/// neither in `.git/config` (which the VM receives) nor in error messages.
#[derive(Clone, PartialEq, Eq)]
pub struct GitToken(pub String);

impl std::fmt::Debug for GitToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("GitToken(***)")
    }
}

impl GitToken {
    /// The `http.extraHeader` value git sends.
    fn header(&self) -> String {
        const ALPHABET: &[u8; 64] =
            b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        let raw = format!("x-access-token:{}", self.0);
        let mut encoded = String::new();
        for chunk in raw.as_bytes().chunks(3) {
            let bytes = [
                chunk[0],
                *chunk.get(1).unwrap_or(&0),
                *chunk.get(2).unwrap_or(&0),
            ];
            let n = (u32::from(bytes[0]) << 16) | (u32::from(bytes[1]) << 8) | u32::from(bytes[2]);
            for i in 0..4 {
                if i <= chunk.len() {
                    encoded.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
                } else {
                    encoded.push('=');
                }
            }
        }
        format!("Authorization: basic {encoded}")
    }
}

/// Errors preparing a checkout.
#[derive(Debug, thiserror::Error)]
pub enum CheckoutError {
    /// A git command failed.
    #[error("git {args} failed: {stderr}")]
    Git {
        /// The arguments.
        args: String,
        /// Its error output.
        stderr: String,
    },
    /// A file operation failed.
    #[error("{path}: {source}")]
    Io {
        /// The path involved.
        path: PathBuf,
        /// The operating system's error.
        source: io::Error,
    },
}

fn git(dir: &Path, args: &[&str]) -> Result<String, CheckoutError> {
    git_with(dir, args, None)
}

fn git_with(dir: &Path, args: &[&str], token: Option<&GitToken>) -> Result<String, CheckoutError> {
    let mut command = Command::new("git");
    command
        .arg("-C")
        .arg(dir)
        .args(args)
        .env("GIT_TERMINAL_PROMPT", "0");
    if let Some(token) = token {
        command
            .env("GIT_CONFIG_COUNT", "1")
            .env("GIT_CONFIG_KEY_0", "http.extraHeader")
            .env("GIT_CONFIG_VALUE_0", token.header());
    }
    let output = command.output().map_err(|source| CheckoutError::Io {
        path: PathBuf::from("git"),
        source,
    })?;
    if !output.status.success() {
        return Err(CheckoutError::Git {
            args: args.join(" "),
            stderr: String::from_utf8_lossy(&output.stderr).trim().to_string(),
        });
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// Fills the empty directory `dest` with the checkout; returns the commit SHA.
pub fn prepare(source: &CheckoutSource, dest: &Path) -> Result<String, CheckoutError> {
    fs::create_dir_all(dest).map_err(io_at(dest))?;
    match source {
        CheckoutSource::WorkingTree(tree) => copy_working_tree(tree, dest),
        CheckoutSource::Commit {
            repository,
            commit,
            depth,
            credentials,
        } => fetch_commit(repository, commit, *depth, credentials.as_ref(), dest),
    }
}

/// Maps an I/O error at `path` to [`CheckoutError::Io`].
fn io_at(path: &Path) -> impl FnOnce(io::Error) -> CheckoutError {
    let path = path.to_path_buf();
    move |source| CheckoutError::Io { path, source }
}

/// Copies the files of the working tree `tree` that git tracks or does not
/// ignore, and its `.git`, into `dest`; returns its HEAD.
fn copy_working_tree(tree: &Path, dest: &Path) -> Result<String, CheckoutError> {
    let listed = git(
        tree,
        &[
            "ls-files",
            "-z",
            "--cached",
            "--others",
            "--exclude-standard",
        ],
    )?;
    for relative in listed.split('\0').filter(|p| !p.is_empty()) {
        let from = tree.join(relative);
        let to = dest.join(relative);
        let Ok(meta) = fs::symlink_metadata(&from) else {
            continue;
        };
        if let Some(parent) = to.parent() {
            fs::create_dir_all(parent).map_err(io_at(parent))?;
        }
        if meta.file_type().is_symlink() {
            let target = fs::read_link(&from).map_err(io_at(&from))?;
            std::os::unix::fs::symlink(target, &to).map_err(io_at(&to))?;
        } else if meta.is_file() {
            fs::copy(&from, &to).map_err(io_at(&to))?;
        }
    }
    let git_dir = tree.join(".git");
    if git_dir.is_dir() {
        copy_tree(&git_dir, &dest.join(".git"))?;
    }
    Ok(git(tree, &["rev-parse", "HEAD"])?.trim().to_string())
}

/// Fetches `commit` of `repository` (`depth` deep, 0 for all) into `dest`
/// and checks it out; returns its SHA.
fn fetch_commit(
    repository: &str,
    commit: &str,
    depth: u32,
    credentials: Option<&GitToken>,
    dest: &Path,
) -> Result<String, CheckoutError> {
    git(dest, &["init", "-q"])?;
    git(dest, &["remote", "add", "--", "origin", repository])?;
    let mut fetch = vec!["fetch", "-q", "--no-tags"];
    let depth_arg = format!("--depth={depth}");
    if depth > 0 {
        fetch.push(&depth_arg);
    }
    // A ref from a workflow's `with: ref` is never read as an option.
    fetch.extend(["--end-of-options", "origin", commit]);
    git_with(dest, &fetch, credentials)?;
    git(dest, &["checkout", "-q", "--detach", "FETCH_HEAD"])?;
    Ok(git(dest, &["rev-parse", "HEAD"])?.trim().to_string())
}

/// The commit `git_ref` (`refs/heads/main`, a tag, a SHA) names in
/// `repository`, asked of the remote with `git ls-remote`.
pub fn resolve_ref(
    repository: &str,
    git_ref: &str,
    credentials: Option<&GitToken>,
) -> Result<String, CheckoutError> {
    if git_ref.len() == 40 && git_ref.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Ok(git_ref.to_string());
    }
    let listed = git_with(
        Path::new("."),
        &["ls-remote", "--", repository, git_ref],
        credentials,
    )?;
    listed
        .lines()
        .filter_map(|line| line.split_once('\t'))
        .find(|(_, name)| *name == git_ref || name.ends_with(&format!("/{git_ref}")))
        .map(|(sha, _)| sha.to_string())
        .ok_or_else(|| CheckoutError::Git {
            args: format!("ls-remote {git_ref}"),
            stderr: format!("{git_ref} is not a ref of the repository"),
        })
}

fn copy_tree(from: &Path, to: &Path) -> Result<(), CheckoutError> {
    fs::create_dir_all(to).map_err(io_at(to))?;
    for entry in fs::read_dir(from).map_err(io_at(from))? {
        let entry = entry.map_err(io_at(from))?;
        let kind = entry.file_type().map_err(io_at(&entry.path()))?;
        let target = to.join(entry.file_name());
        if kind.is_dir() {
            copy_tree(&entry.path(), &target)?;
        } else if kind.is_symlink() {
            let link = fs::read_link(entry.path()).map_err(io_at(&entry.path()))?;
            std::os::unix::fs::symlink(link, &target).map_err(io_at(&target))?;
        } else {
            fs::copy(entry.path(), &target).map_err(io_at(&target))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn repo() -> (tempfile::TempDir, String, String) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path();
        let run = |args: &[&str]| git(path, args).unwrap();
        run(&["init", "-q", "-b", "main"]);
        run(&["config", "user.email", "t@example.com"]);
        run(&["config", "user.name", "t"]);
        fs::write(path.join(".gitignore"), "target/\n").unwrap();
        fs::write(path.join("a.txt"), "first\n").unwrap();
        run(&["add", "."]);
        run(&["commit", "-q", "-m", "one"]);
        let first = run(&["rev-parse", "HEAD"]).trim().to_string();
        fs::write(path.join("a.txt"), "second\n").unwrap();
        run(&["commit", "-q", "-am", "two"]);
        let second = run(&["rev-parse", "HEAD"]).trim().to_string();
        (dir, first, second)
    }

    #[test]
    fn a_ref_that_looks_like_an_option_is_only_a_ref() {
        let (source, _, _) = repo();
        let dest = tempfile::tempdir().unwrap();
        let marker = dest.path().join("pwned");
        let err = prepare(
            &CheckoutSource::Commit {
                repository: format!("file://{}", source.path().display()),
                commit: format!("--upload-pack=touch {};git-upload-pack", marker.display()),
                depth: 1,
                credentials: None,
            },
            &dest.path().join("checkout"),
        )
        .unwrap_err()
        .to_string();
        assert!(!marker.exists(), "the ref ran as --upload-pack");
        assert!(err.contains("invalid refspec '--upload-pack="), "{err}");
    }

    #[test]
    fn a_commit_is_checked_out_exactly_and_shallow() {
        let (source, first, second) = repo();
        let dest = tempfile::tempdir().unwrap();
        let sha = prepare(
            &CheckoutSource::Commit {
                repository: format!("file://{}", source.path().display()),
                commit: first.clone(),
                depth: 1,
                credentials: None,
            },
            dest.path(),
        )
        .unwrap();
        assert_eq!(sha, first);
        assert_eq!(
            fs::read_to_string(dest.path().join("a.txt")).unwrap(),
            "first\n"
        );
        let count = git(dest.path(), &["rev-list", "--count", "HEAD"]).unwrap();
        assert_eq!(count.trim(), "1", "fetch-depth 1 gives one commit");

        let full = tempfile::tempdir().unwrap();
        let sha = prepare(
            &CheckoutSource::Commit {
                repository: format!("file://{}", source.path().display()),
                commit: second.clone(),
                depth: 0,
                credentials: None,
            },
            full.path(),
        )
        .unwrap();
        assert_eq!(sha, second);
        let count = git(full.path(), &["rev-list", "--count", "HEAD"]).unwrap();
        assert_eq!(count.trim(), "2");
    }

    #[test]
    fn a_working_tree_keeps_uncommitted_changes_and_drops_ignored_files() {
        let (source, _, second) = repo();
        fs::write(source.path().join("a.txt"), "edited\n").unwrap();
        fs::write(source.path().join("new.txt"), "untracked\n").unwrap();
        fs::create_dir_all(source.path().join("target")).unwrap();
        fs::write(source.path().join("target/big"), "ignored").unwrap();
        let dest = tempfile::tempdir().unwrap();
        let sha = prepare(
            &CheckoutSource::WorkingTree(source.path().to_path_buf()),
            dest.path(),
        )
        .unwrap();
        assert_eq!(sha, second);
        assert_eq!(
            fs::read_to_string(dest.path().join("a.txt")).unwrap(),
            "edited\n"
        );
        assert_eq!(
            fs::read_to_string(dest.path().join("new.txt")).unwrap(),
            "untracked\n"
        );
        assert!(!dest.path().join("target").exists());
        assert!(dest.path().join(".git/HEAD").exists());
    }

    #[test]
    fn a_missing_commit_is_a_clear_error() {
        let (source, _, _) = repo();
        let dest = tempfile::tempdir().unwrap();
        let err = prepare(
            &CheckoutSource::Commit {
                repository: format!("file://{}", source.path().display()),
                commit: "0123456789012345678901234567890123456789".into(),
                depth: 1,
                credentials: None,
            },
            dest.path(),
        )
        .unwrap_err();
        assert!(err.to_string().starts_with("git fetch"), "{err}");
    }

    #[test]
    fn a_token_goes_to_git_as_a_header_and_stays_out_of_the_checkout() {
        assert_eq!(
            GitToken("abc".into()).header(),
            "Authorization: basic eC1hY2Nlc3MtdG9rZW46YWJj"
        );
        assert_eq!(
            GitToken("ab".into()).header(),
            "Authorization: basic eC1hY2Nlc3MtdG9rZW46YWI="
        );
        assert_eq!(format!("{:?}", GitToken("abc".into())), "GitToken(***)");
        let (source, first, _) = repo();
        let dest = tempfile::tempdir().unwrap();
        let sha = prepare(
            &CheckoutSource::Commit {
                repository: format!("file://{}", source.path().display()),
                commit: first.clone(),
                depth: 1,
                credentials: Some(GitToken("s3cret-token".into())),
            },
            dest.path(),
        )
        .unwrap();
        assert_eq!(sha, first);
        let config = fs::read_to_string(dest.path().join(".git/config")).unwrap();
        assert!(!config.contains("s3cret"), "{config}");
    }

    #[test]
    fn refs_resolve_to_their_commit() {
        let (source, _, second) = repo();
        let url = format!("file://{}", source.path().display());
        let branch = git(source.path(), &["symbolic-ref", "HEAD"]).unwrap();
        assert_eq!(resolve_ref(&url, branch.trim(), None).unwrap(), second);
        assert_eq!(resolve_ref(&url, &second, None).unwrap(), second);
        let err = resolve_ref(&url, "refs/heads/nope", None)
            .unwrap_err()
            .to_string();
        assert!(err.contains("refs/heads/nope is not a ref"), "{err}");
    }
}
