//! The action cache on the host: every action repository fetched so far, by
//! commit, and the commit each ref named when it was last resolved. An
//! operator may fill it ahead of time (`firerunner actions pull`, or by
//! copying the folder from another host). Layout, under the cache folder:
//!
//! ```text
//! <owner>/<repo>/<sha>/        the repository's files at commit <sha> (no .git)
//! <owner>/<repo>/refs/<ref>    one line: the commit <ref> named (a `/` in <ref> as %2F)
//! ```
//!
//! `owner` and `repo` are lower-cased (GitHub ignores their case). A commit
//! folder appears whole or not at all (it is renamed into place), so entries
//! are never changed, only added: runs may share the folder.

use std::path::{Path, PathBuf};

use super::git::{is_commit_sha, GitError};

/// Why the cache could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A folder or file of the cache.
    #[error("{}: {source}", path.display())]
    Io {
        /// The folder or file.
        path: PathBuf,
        /// The operating system's error.
        source: std::io::Error,
    },
    /// Fetching into the cache failed.
    #[error(transparent)]
    Git(#[from] GitError),
}

fn io_at(path: &Path) -> impl FnOnce(std::io::Error) -> StoreError + '_ {
    move |source| StoreError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// An action repository at one commit, in the cache.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CachedCommit {
    /// The commit.
    pub sha: String,
    /// Its files.
    pub dir: PathBuf,
}

/// The action cache folder.
#[derive(Debug, Clone)]
pub struct ActionStore {
    root: PathBuf,
}

impl ActionStore {
    /// The cache kept in `root` (created when first written).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    /// The cache folder.
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn repo_dir(&self, owner: &str, repo: &str) -> PathBuf {
        self.root
            .join(owner.to_ascii_lowercase())
            .join(repo.to_ascii_lowercase())
    }

    fn ref_file(&self, owner: &str, repo: &str, git_ref: &str) -> PathBuf {
        self.repo_dir(owner, repo)
            .join("refs")
            .join(git_ref.replace('/', "%2F"))
    }

    /// The files of `owner/repo` at commit `sha`, when the cache has them.
    pub fn commit(&self, owner: &str, repo: &str, sha: &str) -> Option<CachedCommit> {
        if !is_commit_sha(sha) {
            return None;
        }
        let sha = sha.to_ascii_lowercase();
        let dir = self.repo_dir(owner, repo).join(&sha);
        let meta = std::fs::symlink_metadata(&dir).ok()?;
        meta.is_dir().then_some(CachedCommit { sha, dir })
    }

    /// The commit `git_ref` named when last resolved, when the cache has its files.
    pub fn by_ref(&self, owner: &str, repo: &str, git_ref: &str) -> Option<CachedCommit> {
        if is_commit_sha(git_ref) {
            return self.commit(owner, repo, git_ref);
        }
        let text = std::fs::read_to_string(self.ref_file(owner, repo, git_ref)).ok()?;
        self.commit(owner, repo, text.trim())
    }

    /// Notes that `git_ref` names `sha` (written whole or not at all).
    pub fn record_ref(
        &self,
        owner: &str,
        repo: &str,
        git_ref: &str,
        sha: &str,
    ) -> Result<(), StoreError> {
        if is_commit_sha(git_ref) {
            return Ok(());
        }
        let file = self.ref_file(owner, repo, git_ref);
        let dir = file.parent().expect("a ref file has a folder");
        std::fs::create_dir_all(dir).map_err(io_at(dir))?;
        let temp = file.with_extension(format!("tmp{}", std::process::id()));
        std::fs::write(&temp, format!("{sha}\n")).map_err(io_at(&temp))?;
        std::fs::rename(&temp, &file).map_err(io_at(&file))
    }

    /// Fetches `owner/repo` with `fetch` (which fills an empty folder and
    /// returns the commit it holds) and moves the files into place.
    pub fn add(
        &self,
        owner: &str,
        repo: &str,
        fetch: impl FnOnce(&Path) -> Result<String, GitError>,
    ) -> Result<CachedCommit, StoreError> {
        let repo_dir = self.repo_dir(owner, repo);
        std::fs::create_dir_all(&repo_dir).map_err(io_at(&repo_dir))?;
        let work = tempfile::Builder::new()
            .prefix(".fetching-")
            .tempdir_in(&repo_dir)
            .map_err(io_at(&repo_dir))?;
        let sha = fetch(work.path())?.to_ascii_lowercase();
        if let Some(cached) = self.commit(owner, repo, &sha) {
            // Another run put the same commit in place meanwhile.
            return Ok(cached);
        }
        let dir = repo_dir.join(&sha);
        let work = work.keep();
        if let Err(source) = std::fs::rename(&work, &dir) {
            let _ = std::fs::remove_dir_all(&work);
            if self.commit(owner, repo, &sha).is_none() {
                return Err(StoreError::Io { path: dir, source });
            }
        }
        Ok(CachedCommit { sha, dir })
    }
}

/// Reads the file at `relative` (plain `/`-separated names) under `root`
/// without following a link on the way and without reading more than `limit`
/// bytes; `None` when there is no regular file there or it is larger.
pub fn read_plain_file(root: &Path, relative: &str, limit: u64) -> Option<Vec<u8>> {
    use std::io::Read;
    let mut path = root.to_path_buf();
    for part in relative.split('/').filter(|p| !p.is_empty()) {
        if part == "." || part == ".." {
            return None;
        }
        path.push(part);
        let meta = std::fs::symlink_metadata(&path).ok()?;
        if meta.file_type().is_symlink() {
            return None;
        }
    }
    let meta = std::fs::symlink_metadata(&path).ok()?;
    if !meta.is_file() || meta.len() > limit {
        return None;
    }
    let mut bytes = Vec::new();
    std::fs::File::open(&path)
        .ok()?
        .take(limit + 1)
        .read_to_end(&mut bytes)
        .ok()?;
    (bytes.len() as u64 <= limit).then_some(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHA: &str = "b4ffde65f46336ab88eb53be808477a3936bae11";

    #[test]
    fn a_fetched_commit_is_found_by_ref_and_by_sha_whatever_the_case() {
        let root = tempfile::tempdir().unwrap();
        let store = ActionStore::new(root.path());
        assert!(store.by_ref("Actions", "Checkout", "v4").is_none());
        let added = store
            .add("Actions", "Checkout", |dir| {
                std::fs::write(dir.join("action.yml"), "runs: {}\n").unwrap();
                Ok(SHA.to_uppercase())
            })
            .unwrap();
        assert_eq!(added.dir, root.path().join("actions/checkout").join(SHA));
        store
            .record_ref("actions", "checkout", "release/v4", SHA)
            .unwrap();
        assert!(root
            .path()
            .join("actions/checkout/refs/release%2Fv4")
            .is_file());
        assert_eq!(
            store.by_ref("ACTIONS", "checkout", "release/v4"),
            Some(added.clone())
        );
        assert_eq!(store.by_ref("actions", "checkout", SHA), Some(added));
        assert!(store.by_ref("actions", "checkout", "v4").is_none());
        let leftovers: Vec<_> = std::fs::read_dir(root.path().join("actions/checkout"))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| n.starts_with(".fetching"))
            .collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");
    }

    #[test]
    fn a_failed_fetch_leaves_nothing_behind() {
        let root = tempfile::tempdir().unwrap();
        let store = ActionStore::new(root.path());
        let err = store
            .add("octo", "gone", |_| {
                Err(GitError::Failed("no such repository".into()))
            })
            .unwrap_err();
        assert_eq!(err.to_string(), "no such repository");
        let left = std::fs::read_dir(root.path().join("octo/gone"))
            .unwrap()
            .count();
        assert_eq!(left, 0);
    }

    #[test]
    fn metadata_is_read_without_following_links_and_under_a_limit() {
        let root = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("action.yml"), "secret").unwrap();
        std::os::unix::fs::symlink(outside.path(), root.path().join("linked")).unwrap();
        std::os::unix::fs::symlink(
            outside.path().join("action.yml"),
            root.path().join("action.yaml"),
        )
        .unwrap();
        std::fs::create_dir(root.path().join("sub")).unwrap();
        std::fs::write(root.path().join("sub/action.yml"), "runs: {}\n").unwrap();
        assert_eq!(
            read_plain_file(root.path(), "sub/action.yml", 100).as_deref(),
            Some(&b"runs: {}\n"[..])
        );
        assert_eq!(read_plain_file(root.path(), "linked/action.yml", 100), None);
        assert_eq!(read_plain_file(root.path(), "action.yaml", 100), None);
        assert_eq!(read_plain_file(root.path(), "sub/action.yml", 4), None);
        assert_eq!(read_plain_file(root.path(), "../x", 100), None);
    }
}
