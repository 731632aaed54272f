//! The host-side store behind `actions/cache`.
//!
//! Semantics follow GitHub's documentation of cache matching:
//!
//! - A cache entry belongs to a repository, a scope (the git ref of the run
//!   that saved it) and a *version* (a hash of the cached paths), and is
//!   named by its key. Entries are immutable: saving an existing key in the
//!   same scope and version is refused, not overwritten.
//! - A lookup searches each scope in order (the run's ref, then the pull
//!   request's base ref, then the default branch): first an exact match of
//!   `key`, then the newest entry whose key starts with `key`, then for each
//!   restore key in order the newest entry whose key starts with it. Only the
//!   exact match is a "cache hit".
//! - Entries not used for `max_idle` are evicted, and the least recently used
//!   ones go first when the repository's entries exceed `max_bytes`.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::files::{now_secs, read_json, sha256_hex, subdirs, tree_size, write_json};

/// Limits of a cache store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheLimits {
    /// Most bytes kept per repository (GitHub: 10 GB).
    pub max_bytes: u64,
    /// Entries unused for this long are evicted (GitHub: 7 days).
    pub max_idle: Duration,
}

impl Default for CacheLimits {
    fn default() -> Self {
        Self {
            max_bytes: 10 * 1024 * 1024 * 1024,
            max_idle: Duration::from_secs(7 * 24 * 3600),
        }
    }
}

/// Errors of the cache store.
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    /// A file operation failed.
    #[error("cache store {path}: {source}")]
    Io {
        /// The path involved.
        path: PathBuf,
        /// The operating system's error.
        source: io::Error,
    },
    /// A key that GitHub would refuse.
    #[error("invalid cache key {key:?}: {reason}")]
    InvalidKey {
        /// The key.
        key: String,
        /// Why.
        reason: &'static str,
    },
}

fn io_at(path: &Path) -> impl FnOnce(io::Error) -> CacheError + '_ {
    move |source| CacheError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// What is recorded about an entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CacheEntryInfo {
    /// Repository (`owner/name`).
    pub repository: String,
    /// The ref of the run that saved it.
    pub scope: String,
    /// The cache key.
    pub key: String,
    /// Hash of the cached paths.
    pub version: String,
    /// Creation time, seconds since the epoch.
    pub created: u64,
    /// Last restore (or creation), seconds since the epoch.
    pub last_used: u64,
    /// Size of the stored files in bytes.
    pub size: u64,
    /// Order of creation, to break ties between entries made in one second.
    #[serde(default)]
    pub sequence: u64,
}

/// A found entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheMatch {
    /// Directory holding the cached files (one subdirectory per cached path, see [`path_slot`]).
    pub data: PathBuf,
    /// The entry.
    pub info: CacheEntryInfo,
    /// Whether `key` matched exactly (the action's `cache-hit` output).
    pub exact: bool,
}

/// The subdirectory of an entry's data that holds the `index`th cached path.
pub fn path_slot(data: &Path, index: usize) -> PathBuf {
    data.join(index.to_string())
}

/// The version of a cache: a hash of its paths (as GitHub versions caches by
/// paths, so the same key with other paths is another cache).
pub fn cache_version(paths: &[String]) -> String {
    sha256_hex(paths.join("\n").as_bytes())
}

/// Checks a key as GitHub does: at most 512 characters and no commas.
pub fn check_key(key: &str) -> Result<(), CacheError> {
    let reason = if key.is_empty() {
        "it is empty"
    } else if key.chars().count() > 512 {
        "it is longer than 512 characters"
    } else if key.contains(',') {
        "it contains a comma"
    } else {
        return Ok(());
    };
    Err(CacheError::InvalidKey {
        key: key.to_string(),
        reason,
    })
}

/// The cache store on the host's disk.
#[derive(Debug)]
pub struct CacheStore {
    root: PathBuf,
    limits: CacheLimits,
    sequence: AtomicU64,
}

/// A save in progress: fill [`CacheWriter::data`], then [`CacheWriter::commit`].
#[derive(Debug)]
pub struct CacheWriter<'a> {
    store: &'a CacheStore,
    staging: PathBuf,
    info: CacheEntryInfo,
}

/// How a save ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SaveOutcome {
    /// The entry was stored.
    Saved(CacheEntryInfo),
    /// An entry with this key and version already exists in the scope.
    AlreadyExists,
}

impl CacheStore {
    /// Opens (creating) a store at `root`.
    pub fn open(root: &Path, limits: CacheLimits) -> Result<Self, CacheError> {
        for dir in ["entries", "staging"] {
            let path = root.join(dir);
            fs::create_dir_all(&path).map_err(io_at(&path))?;
        }
        let sequence = Self::entries_in(root)?
            .iter()
            .map(|(_, info)| info.sequence)
            .max()
            .unwrap_or_default();
        Ok(Self {
            root: root.to_path_buf(),
            limits,
            sequence: AtomicU64::new(sequence + 1),
        })
    }

    fn entry_dir(&self, repository: &str, scope: &str, key: &str, version: &str) -> PathBuf {
        let id = sha256_hex(format!("{repository}\0{scope}\0{key}\0{version}").as_bytes());
        self.root.join("entries").join(&id[..32])
    }

    fn entries_in(root: &Path) -> Result<Vec<(PathBuf, CacheEntryInfo)>, CacheError> {
        let dir = root.join("entries");
        Ok(subdirs(&dir)
            .map_err(io_at(&dir))?
            .into_iter()
            .filter_map(|path| {
                let info = read_json(&path.join("meta.json"))?;
                Some((path, info))
            })
            .collect())
    }

    /// Every entry of `repository`.
    pub fn entries(&self, repository: &str) -> Result<Vec<CacheEntryInfo>, CacheError> {
        Ok(Self::entries_in(&self.root)?
            .into_iter()
            .filter(|(_, info)| info.repository == repository)
            .map(|(_, info)| info)
            .collect())
    }

    /// Finds the entry a restore uses, searching `scopes` in order, and marks it used.
    pub fn lookup(
        &self,
        repository: &str,
        scopes: &[&str],
        key: &str,
        restore_keys: &[String],
        version: &str,
    ) -> Result<Option<CacheMatch>, CacheError> {
        check_key(key)?;
        let candidates: Vec<(PathBuf, CacheEntryInfo)> = Self::entries_in(&self.root)?
            .into_iter()
            .filter(|(_, info)| info.repository == repository && info.version == version)
            .collect();
        for scope in scopes {
            let in_scope: Vec<&(PathBuf, CacheEntryInfo)> = candidates
                .iter()
                .filter(|(_, info)| info.scope == *scope)
                .collect();
            if let Some(found) = in_scope.iter().find(|(_, info)| info.key == key) {
                return self.touch(found, true).map(Some);
            }
            for prefix in std::iter::once(key).chain(restore_keys.iter().map(String::as_str)) {
                let newest = in_scope
                    .iter()
                    .filter(|(_, info)| info.key.starts_with(prefix))
                    .max_by_key(|(_, info)| (info.created, info.sequence));
                if let Some(found) = newest {
                    return self.touch(found, false).map(Some);
                }
            }
        }
        Ok(None)
    }

    fn touch(
        &self,
        (path, info): &(PathBuf, CacheEntryInfo),
        exact: bool,
    ) -> Result<CacheMatch, CacheError> {
        let mut info = info.clone();
        info.last_used = now_secs();
        let meta = path.join("meta.json");
        write_json(&meta, &info).map_err(io_at(&meta))?;
        Ok(CacheMatch {
            data: path.join("data"),
            info,
            exact,
        })
    }

    /// Starts saving `key`; `None` when the entry already exists (entries are immutable).
    pub fn begin_save(
        &self,
        repository: &str,
        scope: &str,
        key: &str,
        version: &str,
    ) -> Result<Option<CacheWriter<'_>>, CacheError> {
        check_key(key)?;
        if self.entry_dir(repository, scope, key, version).exists() {
            return Ok(None);
        }
        let sequence = self.sequence.fetch_add(1, Ordering::Relaxed);
        let staging = self
            .root
            .join("staging")
            .join(format!("{}-{sequence}", std::process::id()));
        let data = staging.join("data");
        fs::create_dir_all(&data).map_err(io_at(&data))?;
        let now = now_secs();
        Ok(Some(CacheWriter {
            store: self,
            staging,
            info: CacheEntryInfo {
                repository: repository.to_string(),
                scope: scope.to_string(),
                key: key.to_string(),
                version: version.to_string(),
                created: now,
                last_used: now,
                size: 0,
                sequence,
            },
        }))
    }

    /// Removes idle entries, then the least recently used ones of each
    /// repository over the size limit; returns the removed entries.
    pub fn evict(&self) -> Result<Vec<CacheEntryInfo>, CacheError> {
        let now = now_secs();
        let mut removed = Vec::new();
        let mut kept: Vec<(PathBuf, CacheEntryInfo)> = Vec::new();
        for (path, info) in Self::entries_in(&self.root)? {
            if now.saturating_sub(info.last_used) > self.limits.max_idle.as_secs() {
                fs::remove_dir_all(&path).map_err(io_at(&path))?;
                removed.push(info);
            } else {
                kept.push((path, info));
            }
        }
        kept.sort_by_key(|(_, info)| {
            (
                info.repository.clone(),
                std::cmp::Reverse((info.last_used, info.sequence)),
            )
        });
        let mut used: std::collections::HashMap<String, u64> = std::collections::HashMap::new();
        for (path, info) in kept {
            let total = used.entry(info.repository.clone()).or_default();
            if *total + info.size > self.limits.max_bytes {
                fs::remove_dir_all(&path).map_err(io_at(&path))?;
                removed.push(info);
            } else {
                *total += info.size;
            }
        }
        Ok(removed)
    }
}

impl CacheWriter<'_> {
    /// Where the cached files go: [`path_slot`]`(data, i)` for the `i`th path.
    pub fn data(&self) -> PathBuf {
        self.staging.join("data")
    }

    /// Publishes the entry (atomically: it appears whole or not at all).
    pub fn commit(mut self) -> Result<SaveOutcome, CacheError> {
        let data = self.data();
        self.info.size = tree_size(&data).map_err(io_at(&data))?;
        let meta = self.staging.join("meta.json");
        write_json(&meta, &self.info).map_err(io_at(&meta))?;
        let target = self.store.entry_dir(
            &self.info.repository,
            &self.info.scope,
            &self.info.key,
            &self.info.version,
        );
        match fs::rename(&self.staging, &target) {
            Ok(()) => Ok(SaveOutcome::Saved(self.info.clone())),
            // Another save of the same entry won the race: entries are immutable.
            Err(_) if target.exists() => {
                let _ = fs::remove_dir_all(&self.staging);
                Ok(SaveOutcome::AlreadyExists)
            }
            Err(err) => Err(io_at(&target)(err)),
        }
    }
}

impl Drop for CacheWriter<'_> {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.staging);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const REPO: &str = "octo/app";

    fn save(
        store: &CacheStore,
        scope: &str,
        key: &str,
        version: &str,
        content: &str,
    ) -> SaveOutcome {
        match store.begin_save(REPO, scope, key, version).unwrap() {
            None => SaveOutcome::AlreadyExists,
            Some(writer) => {
                let slot = path_slot(&writer.data(), 0);
                fs::create_dir_all(&slot).unwrap();
                fs::write(slot.join("file"), content).unwrap();
                writer.commit().unwrap()
            }
        }
    }

    fn restored(found: &Option<CacheMatch>) -> Option<(String, bool)> {
        found.as_ref().map(|m| {
            (
                fs::read_to_string(path_slot(&m.data, 0).join("file")).unwrap(),
                m.exact,
            )
        })
    }

    fn store() -> (tempfile::TempDir, CacheStore) {
        let dir = tempfile::tempdir().unwrap();
        let store = CacheStore::open(dir.path(), CacheLimits::default()).unwrap();
        (dir, store)
    }

    #[test]
    fn exact_key_is_a_hit_and_entries_are_immutable() {
        let (_dir, store) = store();
        let v = cache_version(&["~/.npm".into()]);
        assert!(matches!(
            save(&store, "refs/heads/main", "npm-abc", &v, "one"),
            SaveOutcome::Saved(_)
        ));
        assert_eq!(
            save(&store, "refs/heads/main", "npm-abc", &v, "two"),
            SaveOutcome::AlreadyExists
        );
        let found = store
            .lookup(REPO, &["refs/heads/main"], "npm-abc", &[], &v)
            .unwrap();
        assert_eq!(restored(&found), Some(("one".into(), true)));
    }

    #[test]
    fn key_prefix_then_restore_keys_in_order_newest_first() {
        let (_dir, store) = store();
        let v = cache_version(&["target".into()]);
        save(&store, "refs/heads/main", "linux-cargo-1", &v, "old");
        save(&store, "refs/heads/main", "linux-cargo-2", &v, "new");
        save(&store, "refs/heads/main", "linux-other", &v, "other");
        // The key itself is tried as a prefix before the restore keys.
        let found = store
            .lookup(REPO, &["refs/heads/main"], "linux-cargo-", &[], &v)
            .unwrap();
        assert_eq!(restored(&found), Some(("new".into(), false)));
        let keys = vec!["linux-other".to_string(), "linux-".to_string()];
        let found = store
            .lookup(REPO, &["refs/heads/main"], "linux-cargo-9", &keys, &v)
            .unwrap();
        assert_eq!(
            restored(&found),
            Some(("other".into(), false)),
            "restore keys in order"
        );
        let found = store
            .lookup(
                REPO,
                &["refs/heads/main"],
                "windows-1",
                &["mac-".into()],
                &v,
            )
            .unwrap();
        assert_eq!(found, None);
    }

    #[test]
    fn scopes_are_searched_in_order_and_siblings_are_invisible() {
        let (_dir, store) = store();
        let v = cache_version(&["deps".into()]);
        save(&store, "refs/heads/main", "deps-1", &v, "main");
        save(&store, "refs/heads/feature-a", "deps-1", &v, "feature-a");
        let from_b = store
            .lookup(
                REPO,
                &["refs/heads/feature-b", "refs/heads/main"],
                "deps-1",
                &[],
                &v,
            )
            .unwrap();
        assert_eq!(
            restored(&from_b),
            Some(("main".into(), true)),
            "falls back to the default branch"
        );
        let from_a = store
            .lookup(
                REPO,
                &["refs/heads/feature-a", "refs/heads/main"],
                "deps-1",
                &[],
                &v,
            )
            .unwrap();
        assert_eq!(restored(&from_a), Some(("feature-a".into(), true)));
        let only_b = store
            .lookup(REPO, &["refs/heads/feature-b"], "deps-1", &[], &v)
            .unwrap();
        assert_eq!(only_b, None, "a sibling branch's cache is not visible");
    }

    #[test]
    fn other_paths_are_another_cache() {
        let (_dir, store) = store();
        save(
            &store,
            "refs/heads/main",
            "k",
            &cache_version(&["a".into()]),
            "a",
        );
        let found = store
            .lookup(
                REPO,
                &["refs/heads/main"],
                "k",
                &[],
                &cache_version(&["b".into()]),
            )
            .unwrap();
        assert_eq!(found, None);
    }

    #[test]
    fn keys_are_checked_like_github() {
        assert!(check_key("ok-key").is_ok());
        assert!(check_key("a,b").is_err());
        assert!(check_key(&"x".repeat(513)).is_err());
        assert!(check_key("").is_err());
    }

    #[test]
    fn eviction_keeps_the_most_recently_used_within_the_size_limit() {
        let dir = tempfile::tempdir().unwrap();
        let limits = CacheLimits {
            max_bytes: 10,
            max_idle: Duration::from_secs(3600),
        };
        let store = CacheStore::open(dir.path(), limits).unwrap();
        let v = cache_version(&["p".into()]);
        save(&store, "refs/heads/main", "first", &v, "123456");
        save(&store, "refs/heads/main", "second", &v, "abcdef");
        let removed = store.evict().unwrap();
        assert_eq!(
            removed.iter().map(|i| i.key.as_str()).collect::<Vec<_>>(),
            ["first"]
        );
        assert_eq!(store.entries(REPO).unwrap().len(), 1);
    }

    #[test]
    fn an_abandoned_save_leaves_nothing() {
        let (dir, store) = store();
        let writer = store
            .begin_save(REPO, "refs/heads/main", "k", "v")
            .unwrap()
            .unwrap();
        fs::write(writer.data().join("x"), "x").unwrap();
        drop(writer);
        assert!(subdirs(&dir.path().join("staging")).unwrap().is_empty());
        assert!(store.entries(REPO).unwrap().is_empty());
    }
}
