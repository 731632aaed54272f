//! Remote action repositories (`owner/repo@ref`) on the host, as GitHub's
//! "Set up job" gets them: each ref resolved to a commit at the actions URL,
//! the commit's files taken from the action cache ([`super::store`]) or
//! fetched into it with git. Without the actions URL (offline, or it cannot
//! be reached) the commit the ref named last time is used from the cache.

use std::path::PathBuf;

use firerunner_workflow::RemoteRef;

use super::git::{self, is_commit_sha, GitError, RemoteCommit};
use super::store::{ActionStore, CachedCommit, StoreError};

/// Where remote actions come from and are kept.
#[derive(Debug, Clone)]
pub struct ActionSource {
    /// The git host actions are fetched from: `https://github.com`, a GitHub
    /// Enterprise Server, or a mirror (`file:///srv/mirror`) holding
    /// `<owner>/<repo>` repositories.
    pub base_url: String,
    /// The action cache folder.
    pub cache_dir: PathBuf,
    /// Never ask the actions URL: only what the cache holds is used.
    pub offline: bool,
}

impl ActionSource {
    /// The action cache.
    pub fn store(&self) -> ActionStore {
        ActionStore::new(&self.cache_dir)
    }

    /// The URL of the repository `owner/repo`.
    pub fn repository_url(&self, owner: &str, repo: &str) -> String {
        format!("{}/{owner}/{repo}", self.base_url.trim_end_matches('/'))
    }
}

/// How a repository's files were had.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Obtained {
    /// Fetched from the actions URL now.
    Downloaded,
    /// The ref still names this commit, whose files the cache had.
    Cached,
    /// The actions URL was not asked (offline, or a commit id, which never
    /// changes): the cache had the files.
    CachedOffline,
    /// The actions URL could not be asked or did not know the ref; the
    /// commit the ref named last time was used from the cache.
    CachedStale {
        /// What went wrong asking the actions URL.
        reason: String,
    },
}

/// An action repository at the commit its ref names, on the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchedRepo {
    /// The commit.
    pub sha: String,
    /// Its files (no `.git`).
    pub dir: PathBuf,
    /// Where they came from.
    pub obtained: Obtained,
}

/// Why an action repository could not be had.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// The cache could not be read or written.
    #[error(transparent)]
    Store(StoreError),
    /// Offline, and the cache does not hold the ref.
    #[error("it is not in the action cache ({}) and fetching is turned off", cache.display())]
    NotCached {
        /// The cache folder.
        cache: PathBuf,
    },
    /// The actions URL was asked and has no such ref.
    #[error("{url} has no ref '{git_ref}'")]
    NoSuchRef {
        /// The repository asked.
        url: String,
        /// The ref.
        git_ref: String,
    },
    /// git could not ask or fetch.
    #[error("cannot fetch {url}@{git_ref}: {source}")]
    Git {
        /// The repository.
        url: String,
        /// The ref.
        git_ref: String,
        /// What git said.
        source: GitError,
    },
}

/// `owner/repo@ref` of `action` (its path left out): what one fetch gets.
pub fn repository_of(action: &RemoteRef) -> RemoteRef {
    RemoteRef {
        path: String::new(),
        ..action.clone()
    }
}

/// The files of `action`'s repository at the commit its ref names
/// (blocking: runs git).
pub fn fetch_repository(
    source: &ActionSource,
    action: &RemoteRef,
) -> Result<FetchedRepo, FetchError> {
    let store = source.store();
    let (owner, repo, git_ref) = (&action.owner, &action.repo, &action.git_ref);
    let cached = store.by_ref(owner, repo, git_ref);
    if source.offline || (is_commit_sha(git_ref) && cached.is_some()) {
        return match cached {
            Some(hit) => Ok(found(hit, Obtained::CachedOffline)),
            None => Err(FetchError::NotCached {
                cache: store.root().to_path_buf(),
            }),
        };
    }
    let url = source.repository_url(owner, repo);
    let asked = if is_commit_sha(git_ref) {
        Ok(Some(RemoteCommit {
            full_ref: git_ref.clone(),
            sha: git_ref.to_ascii_lowercase(),
        }))
    } else {
        git::ls_remote(&url, git_ref)
    };
    let remote = match (asked, cached) {
        (Ok(Some(remote)), _) => remote,
        (Ok(None), Some(hit)) => {
            let reason = format!("{url} has no ref '{git_ref}'");
            return Ok(found(hit, Obtained::CachedStale { reason }));
        }
        (Err(err), Some(hit)) => {
            let reason = err.to_string();
            return Ok(found(hit, Obtained::CachedStale { reason }));
        }
        (Ok(None), None) => {
            return Err(FetchError::NoSuchRef {
                url,
                git_ref: git_ref.clone(),
            })
        }
        (Err(source), None) => return Err(git_error(&url, git_ref, source)),
    };
    fetch_commit(&store, action, &url, &remote)
}

/// The files of the commit `remote` names: from the cache, else fetched into it.
fn fetch_commit(
    store: &ActionStore,
    action: &RemoteRef,
    url: &str,
    remote: &RemoteCommit,
) -> Result<FetchedRepo, FetchError> {
    let (owner, repo, git_ref) = (&action.owner, &action.repo, &action.git_ref);
    let (hit, obtained) = match store.commit(owner, repo, &remote.sha) {
        Some(hit) => (hit, Obtained::Cached),
        None => {
            let added = store.add(owner, repo, |work| {
                git::shallow_fetch(url, &remote.full_ref, work)
            });
            let added = added.map_err(|err| match err {
                StoreError::Git(source) => git_error(url, git_ref, source),
                other => FetchError::Store(other),
            })?;
            (added, Obtained::Downloaded)
        }
    };
    store
        .record_ref(owner, repo, git_ref, &hit.sha)
        .map_err(FetchError::Store)?;
    Ok(found(hit, obtained))
}

fn found(hit: CachedCommit, obtained: Obtained) -> FetchedRepo {
    FetchedRepo {
        sha: hit.sha,
        dir: hit.dir,
        obtained,
    }
}

fn git_error(url: &str, git_ref: &str, source: GitError) -> FetchError {
    FetchError::Git {
        url: url.to_owned(),
        git_ref: git_ref.to_owned(),
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use firerunner_vm::testing::{git as run_git, git_repo};

    fn remote(text: &str) -> RemoteRef {
        match firerunner_workflow::ActionRef::parse(text) {
            Ok(firerunner_workflow::ActionRef::Remote(r)) => r,
            other => panic!("{text}: {other:?}"),
        }
    }

    /// A mirror folder with `octo/act` tagged v1, and a cache folder.
    struct Mirror {
        mirror: tempfile::TempDir,
        cache: tempfile::TempDir,
    }

    impl Mirror {
        fn new() -> Self {
            let mirror = tempfile::tempdir().unwrap();
            let repo = mirror.path().join("octo/act");
            std::fs::create_dir_all(&repo).unwrap();
            std::fs::write(
                repo.join("action.yml"),
                "runs:\n  using: composite\n  steps: []\n",
            )
            .unwrap();
            git_repo(&repo, "v1");
            run_git(&repo, &["tag", "-a", "v1", "-m", "v1"]);
            Self {
                mirror,
                cache: tempfile::tempdir().unwrap(),
            }
        }

        fn source(&self, offline: bool) -> ActionSource {
            ActionSource {
                base_url: format!("file://{}", self.mirror.path().display()),
                cache_dir: self.cache.path().to_path_buf(),
                offline,
            }
        }

        fn head(&self) -> String {
            run_git(&self.mirror.path().join("octo/act"), &["rev-parse", "HEAD"])
        }
    }

    #[test]
    fn a_ref_is_resolved_to_its_commit_fetched_once_then_found_in_the_cache() {
        let m = Mirror::new();
        let first = fetch_repository(&m.source(false), &remote("octo/act@v1")).unwrap();
        assert_eq!(first.obtained, Obtained::Downloaded);
        assert_eq!(first.sha, m.head(), "the tag's commit, not the tag object");
        assert!(first.dir.join("action.yml").is_file());
        assert!(!first.dir.join(".git").exists());
        let again = fetch_repository(&m.source(false), &remote("octo/act/sub@v1")).unwrap();
        assert_eq!(
            (again.obtained, again.dir),
            (Obtained::Cached, first.dir.clone())
        );
        // GitHub ignores the case of owner and repository; so does the cache.
        let other_case = fetch_repository(&m.source(true), &remote("Octo/ACT@v1")).unwrap();
        assert_eq!(other_case.dir, first.dir);
        let by_sha = format!("octo/act@{}", m.head());
        let pinned = fetch_repository(&m.source(false), &remote(&by_sha)).unwrap();
        assert_eq!(pinned.obtained, Obtained::CachedOffline);
    }

    #[test]
    fn a_moved_tag_is_fetched_anew_and_the_old_commit_stays() {
        let m = Mirror::new();
        let first = fetch_repository(&m.source(false), &remote("octo/act@v1")).unwrap();
        let repo = m.mirror.path().join("octo/act");
        std::fs::write(repo.join("new.txt"), "v1.1\n").unwrap();
        run_git(&repo, &["add", "."]);
        run_git(&repo, &["commit", "-q", "-m", "v1.1"]);
        run_git(&repo, &["tag", "-f", "-a", "v1", "-m", "v1.1"]);
        let moved = fetch_repository(&m.source(false), &remote("octo/act@v1")).unwrap();
        assert_eq!(moved.obtained, Obtained::Downloaded);
        assert_ne!(moved.sha, first.sha);
        assert!(moved.dir.join("new.txt").is_file());
        assert!(first.dir.is_dir(), "a running job may still stream it");
    }

    #[test]
    fn without_the_actions_url_the_cache_serves_and_says_so() {
        let m = Mirror::new();
        let first = fetch_repository(&m.source(false), &remote("octo/act@v1")).unwrap();
        let offline = fetch_repository(&m.source(true), &remote("octo/act@v1")).unwrap();
        assert_eq!(
            (offline.obtained, offline.sha),
            (Obtained::CachedOffline, first.sha.clone())
        );
        std::fs::remove_dir_all(m.mirror.path().join("octo")).unwrap();
        let stale = fetch_repository(&m.source(false), &remote("octo/act@v1")).unwrap();
        assert!(
            matches!(stale.obtained, Obtained::CachedStale { .. }),
            "{stale:?}"
        );
        assert_eq!(stale.sha, first.sha);
        let err = fetch_repository(&m.source(true), &remote("octo/other@v1")).unwrap_err();
        assert!(err.to_string().contains("not in the action cache"), "{err}");
    }

    #[test]
    fn a_missing_ref_or_repository_is_a_clear_error() {
        let m = Mirror::new();
        let err = fetch_repository(&m.source(false), &remote("octo/act@v9")).unwrap_err();
        assert!(
            err.to_string().ends_with("/octo/act has no ref 'v9'"),
            "{err}"
        );
        let err = fetch_repository(&m.source(false), &remote("octo/absent@v1")).unwrap_err();
        assert!(err.to_string().starts_with("cannot fetch file://"), "{err}");
        // A version that looks like an option is only a version.
        let err = fetch_repository(&m.source(false), &remote("octo/act@--dry-run")).unwrap_err();
        assert!(err.to_string().contains("has no ref '--dry-run'"), "{err}");
    }
}
