//! The host-side store behind `actions/upload-artifact` and
//! `actions/download-artifact` (v4 semantics).
//!
//! An artifact belongs to a workflow run and is named uniquely within it:
//! uploading a name that exists fails unless the upload asks to overwrite.
//! Names may not contain `" : < > | * ? \ /` or line breaks. Each artifact
//! expires after its retention period (1 to 90 days, default 90), after
//! which [`ArtifactStore::expire`] removes it.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};

use super::files::{now_secs, read_json, sha256_hex, subdirs, tree_size, write_json};

/// Default and longest retention, in days.
pub const MAX_RETENTION_DAYS: u32 = 90;

/// Errors of the artifact store.
#[derive(Debug, thiserror::Error)]
pub enum ArtifactError {
    /// A file operation failed.
    #[error("artifact store {path}: {source}")]
    Io {
        /// The path involved.
        path: PathBuf,
        /// The operating system's error.
        source: io::Error,
    },
    /// The name is not allowed.
    #[error("invalid artifact name {name:?}: {reason}")]
    InvalidName {
        /// The name.
        name: String,
        /// Why.
        reason: String,
    },
    /// An artifact of this name exists in the run and overwrite was not asked.
    #[error("an artifact named {0:?} already exists in this workflow run (set overwrite: true to replace it)")]
    Exists(String),
    /// Retention outside 1..=90 days.
    #[error("retention-days must be between 1 and {MAX_RETENTION_DAYS}, not {0}")]
    Retention(u32),
    /// No such artifact.
    #[error("no artifact named {0:?} in this workflow run")]
    NotFound(String),
}

fn io_at(path: &Path) -> impl FnOnce(io::Error) -> ArtifactError + '_ {
    move |source| ArtifactError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// What is recorded about a stored artifact.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArtifactInfo {
    /// The workflow run it belongs to.
    pub run_id: String,
    /// Its name, unique within the run.
    pub name: String,
    /// Total size of its files in bytes.
    pub size: u64,
    /// Upload time, seconds since the epoch.
    pub created: u64,
    /// When it expires, seconds since the epoch.
    pub expires: u64,
}

/// Checks an artifact name as upload-artifact does.
pub fn check_name(name: &str) -> Result<(), ArtifactError> {
    const FORBIDDEN: &[char] = &['"', ':', '<', '>', '|', '*', '?', '\\', '/', '\r', '\n'];
    let reason = if name.trim().is_empty() {
        "it is empty".to_string()
    } else if let Some(bad) = name.chars().find(|c| FORBIDDEN.contains(c)) {
        format!("it contains {bad:?}")
    } else {
        return Ok(());
    };
    Err(ArtifactError::InvalidName {
        name: name.to_string(),
        reason,
    })
}

/// The artifact store on the host's disk: `<root>/runs/<run>/<artifact>/{meta.json,files/}`.
#[derive(Debug)]
pub struct ArtifactStore {
    root: PathBuf,
    sequence: AtomicU64,
}

/// An upload in progress: fill [`ArtifactWriter::files`], then [`ArtifactWriter::commit`].
#[derive(Debug)]
pub struct ArtifactWriter<'a> {
    store: &'a ArtifactStore,
    staging: PathBuf,
    overwrite: bool,
    info: ArtifactInfo,
}

impl ArtifactStore {
    /// Opens (creating) a store at `root`.
    pub fn open(root: &Path) -> Result<Self, ArtifactError> {
        for dir in ["runs", "staging"] {
            let path = root.join(dir);
            fs::create_dir_all(&path).map_err(io_at(&path))?;
        }
        Ok(Self {
            root: root.to_path_buf(),
            sequence: AtomicU64::new(0),
        })
    }

    fn run_dir(&self, run_id: &str) -> PathBuf {
        self.root
            .join("runs")
            .join(&sha256_hex(run_id.as_bytes())[..24])
    }

    fn artifact_dir(&self, run_id: &str, name: &str) -> PathBuf {
        self.run_dir(run_id)
            .join(&sha256_hex(name.as_bytes())[..24])
    }

    /// Starts an upload of `name` to run `run_id`.
    pub fn begin_upload(
        &self,
        run_id: &str,
        name: &str,
        retention_days: Option<u32>,
        overwrite: bool,
    ) -> Result<ArtifactWriter<'_>, ArtifactError> {
        check_name(name)?;
        let days = retention_days.unwrap_or(MAX_RETENTION_DAYS);
        if !(1..=MAX_RETENTION_DAYS).contains(&days) {
            return Err(ArtifactError::Retention(days));
        }
        if !overwrite && self.artifact_dir(run_id, name).exists() {
            return Err(ArtifactError::Exists(name.to_string()));
        }
        let sequence = self.sequence.fetch_add(1, Ordering::Relaxed);
        let staging = self
            .root
            .join("staging")
            .join(format!("{}-{sequence}", std::process::id()));
        let files = staging.join("files");
        fs::create_dir_all(&files).map_err(io_at(&files))?;
        let now = now_secs();
        Ok(ArtifactWriter {
            store: self,
            staging,
            overwrite,
            info: ArtifactInfo {
                run_id: run_id.to_string(),
                name: name.to_string(),
                size: 0,
                created: now,
                expires: now + u64::from(days) * 24 * 3600,
            },
        })
    }

    /// The artifacts of a run, by name.
    pub fn list(&self, run_id: &str) -> Result<Vec<ArtifactInfo>, ArtifactError> {
        let dir = self.run_dir(run_id);
        let mut found: Vec<ArtifactInfo> = subdirs(&dir)
            .map_err(io_at(&dir))?
            .into_iter()
            .filter_map(|path| read_json(&path.join("meta.json")))
            .collect();
        found.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(found)
    }

    /// The files of artifact `name` of run `run_id`.
    pub fn files(
        &self,
        run_id: &str,
        name: &str,
    ) -> Result<(PathBuf, ArtifactInfo), ArtifactError> {
        let dir = self.artifact_dir(run_id, name);
        let info = read_json(&dir.join("meta.json"))
            .ok_or_else(|| ArtifactError::NotFound(name.to_string()))?;
        Ok((dir.join("files"), info))
    }

    /// Removes every expired artifact; returns what was removed.
    pub fn expire(&self) -> Result<Vec<ArtifactInfo>, ArtifactError> {
        let now = now_secs();
        let runs = self.root.join("runs");
        let mut removed = Vec::new();
        for run in subdirs(&runs).map_err(io_at(&runs))? {
            for artifact in subdirs(&run).map_err(io_at(&run))? {
                let Some(info) = read_json::<ArtifactInfo>(&artifact.join("meta.json")) else {
                    continue;
                };
                if info.expires <= now {
                    fs::remove_dir_all(&artifact).map_err(io_at(&artifact))?;
                    removed.push(info);
                }
            }
            let _ = fs::remove_dir(&run);
        }
        Ok(removed)
    }
}

impl ArtifactWriter<'_> {
    /// Where the artifact's files go, relative to its root directory.
    pub fn files(&self) -> PathBuf {
        self.staging.join("files")
    }

    /// Publishes the artifact, replacing an existing one only if overwrite was asked.
    pub fn commit(mut self) -> Result<ArtifactInfo, ArtifactError> {
        let files = self.files();
        self.info.size = tree_size(&files).map_err(io_at(&files))?;
        let meta = self.staging.join("meta.json");
        write_json(&meta, &self.info).map_err(io_at(&meta))?;
        let target = self.store.artifact_dir(&self.info.run_id, &self.info.name);
        let parent = target.parent().expect("artifact dirs have a parent");
        fs::create_dir_all(parent).map_err(io_at(parent))?;
        if target.exists() {
            if !self.overwrite {
                return Err(ArtifactError::Exists(self.info.name.clone()));
            }
            fs::remove_dir_all(&target).map_err(io_at(&target))?;
        }
        match fs::rename(&self.staging, &target) {
            Ok(()) => Ok(self.info.clone()),
            Err(_) if target.exists() => Err(ArtifactError::Exists(self.info.name.clone())),
            Err(err) => Err(io_at(&target)(err)),
        }
    }
}

impl Drop for ArtifactWriter<'_> {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.staging);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn upload(
        store: &ArtifactStore,
        run: &str,
        name: &str,
        content: &str,
        overwrite: bool,
    ) -> Result<ArtifactInfo, ArtifactError> {
        let writer = store.begin_upload(run, name, None, overwrite)?;
        fs::write(writer.files().join("out.txt"), content).unwrap();
        writer.commit()
    }

    #[test]
    fn names_are_unique_per_run_unless_overwritten() {
        let dir = tempfile::tempdir().unwrap();
        let store = ArtifactStore::open(dir.path()).unwrap();
        upload(&store, "run-1", "dist", "v1", false).unwrap();
        assert!(matches!(
            upload(&store, "run-1", "dist", "v2", false),
            Err(ArtifactError::Exists(_))
        ));
        upload(&store, "run-2", "dist", "other run", false).unwrap();
        upload(&store, "run-1", "dist", "v3", true).unwrap();
        let (files, info) = store.files("run-1", "dist").unwrap();
        assert_eq!(fs::read_to_string(files.join("out.txt")).unwrap(), "v3");
        assert_eq!(info.size, 2);
        assert_eq!(store.list("run-1").unwrap().len(), 1);
        assert!(matches!(
            store.files("run-1", "nope"),
            Err(ArtifactError::NotFound(_))
        ));
    }

    #[test]
    fn names_and_retention_are_checked() {
        let dir = tempfile::tempdir().unwrap();
        let store = ArtifactStore::open(dir.path()).unwrap();
        for bad in ["a/b", "a:b", "x*", "", "line\nbreak"] {
            assert!(
                matches!(
                    store.begin_upload("r", bad, None, false),
                    Err(ArtifactError::InvalidName { .. })
                ),
                "{bad:?}"
            );
        }
        assert!(matches!(
            store.begin_upload("r", "ok", Some(0), false),
            Err(ArtifactError::Retention(0))
        ));
        assert!(matches!(
            store.begin_upload("r", "ok", Some(91), false),
            Err(ArtifactError::Retention(91))
        ));
        let info = upload(&store, "r", "my artifact (1)", "x", false).unwrap();
        assert_eq!(info.expires - info.created, 90 * 24 * 3600);
    }

    #[test]
    fn expired_artifacts_are_removed() {
        let dir = tempfile::tempdir().unwrap();
        let store = ArtifactStore::open(dir.path()).unwrap();
        upload(&store, "r", "keep", "x", false).unwrap();
        let (files, mut info) = store.files("r", "keep").unwrap();
        assert!(files.exists());
        upload(&store, "r", "old", "x", false).unwrap();
        let (old_files, _) = store.files("r", "old").unwrap();
        info.name = "old".into();
        info.expires = now_secs() - 1;
        write_json(&old_files.parent().unwrap().join("meta.json"), &info).unwrap();
        let removed = store.expire().unwrap();
        assert_eq!(removed.len(), 1);
        assert_eq!(
            store
                .list("r")
                .unwrap()
                .iter()
                .map(|a| a.name.as_str())
                .collect::<Vec<_>>(),
            ["keep"]
        );
    }
}
