//! Fetching remote actions (`owner/repo@ref`) on the host with git, once per
//! reference, into a cache the engine streams into guests.

use std::path::{Path, PathBuf};
use std::process::Command;

use firerunner_workflow::RemoteRef;

/// Why a remote action could not be fetched.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// A host folder of the cache could not be written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The folder or file.
        path: PathBuf,
        /// The operating system's error.
        source: std::io::Error,
    },
    /// git could not be started.
    #[error("git: {0}")]
    Git(std::io::Error),
    /// git ran and failed: the repository or the ref is not there.
    #[error("cannot fetch {url}@{git_ref}: {stderr}")]
    Failed {
        /// Where it was fetched from.
        url: String,
        /// The ref asked for.
        git_ref: String,
        /// git's error output.
        stderr: String,
    },
}

impl FetchError {
    fn io_at(path: &Path) -> impl FnOnce(std::io::Error) -> Self + '_ {
        move |source| Self::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}

/// Returns the host folder holding the repository of `action` at its ref,
/// fetching it (shallow) from `<base_url>/<owner>/<repo>` the first time.
pub fn fetch(action: &RemoteRef, base_url: &str, cache: &Path) -> Result<PathBuf, FetchError> {
    let dir = cache
        .join(&action.owner)
        .join(&action.repo)
        .join(action.git_ref.replace('/', "%2F"));
    if dir.join(".firerunner-complete").exists() {
        return Ok(dir);
    }
    let work = dir.with_extension(format!("fetching{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work).map_err(FetchError::io_at(&work))?;
    let fetch = ShallowFetch {
        work: &work,
        url: format!(
            "{}/{}/{}",
            base_url.trim_end_matches('/'),
            action.owner,
            action.repo
        ),
        git_ref: &action.git_ref,
    };
    if let Err(err) = fetch.run() {
        let _ = std::fs::remove_dir_all(&work);
        return Err(err);
    }
    let _ = std::fs::remove_dir_all(work.join(".git"));
    let complete = work.join(".firerunner-complete");
    std::fs::write(&complete, "").map_err(FetchError::io_at(&complete))?;
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::rename(&work, &dir).map_err(FetchError::io_at(&dir))?;
    Ok(dir)
}

/// One shallow fetch of `url` at `git_ref` into the folder `work`.
struct ShallowFetch<'a> {
    work: &'a Path,
    url: String,
    git_ref: &'a str,
}

impl ShallowFetch<'_> {
    fn run(&self) -> Result<(), FetchError> {
        self.git(&["init", "-q"])?;
        self.git(&[
            "fetch",
            "-q",
            "--depth=1",
            "--end-of-options",
            &self.url,
            self.git_ref,
        ])?;
        self.git(&["checkout", "-q", "--detach", "FETCH_HEAD"])
    }

    fn git(&self, args: &[&str]) -> Result<(), FetchError> {
        let output = Command::new("git")
            .arg("-C")
            .arg(self.work)
            .args(args)
            .env("GIT_TERMINAL_PROMPT", "0")
            .output()
            .map_err(FetchError::Git)?;
        if output.status.success() {
            return Ok(());
        }
        Err(FetchError::Failed {
            url: self.url.clone(),
            git_ref: self.git_ref.to_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn remote(text: &str) -> RemoteRef {
        match firerunner_workflow::ActionRef::parse(text) {
            Ok(firerunner_workflow::ActionRef::Remote(r)) => r,
            other => panic!("{text}: {other:?}"),
        }
    }

    #[test]
    fn a_version_that_looks_like_an_option_is_only_a_version() {
        let cache = tempfile::tempdir().unwrap();
        let source = tempfile::tempdir().unwrap();
        let git = |args: &[&str]| {
            let status = Command::new("git")
                .arg("-C")
                .arg(source.path())
                .args(args)
                .output()
                .unwrap();
            assert!(status.status.success(), "{args:?}: {status:?}");
        };
        std::fs::create_dir_all(source.path().join("octo/act")).unwrap();
        git(&["init", "-q", "octo/act"]);
        let err = fetch(
            &remote("octo/act@--dry-run"),
            &format!("file://{}", source.path().display()),
            cache.path(),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("couldn't find remote ref --dry-run"), "{err}");
    }

    #[test]
    fn an_unreachable_action_is_a_clear_error() {
        let cache = tempfile::tempdir().unwrap();
        let missing = tempfile::tempdir().unwrap();
        let err = fetch(
            &remote("octo/absent@v1"),
            &format!("file://{}", missing.path().display()),
            cache.path(),
        )
        .unwrap_err()
        .to_string();
        assert!(err.starts_with("cannot fetch file://"), "{err}");
    }
}
