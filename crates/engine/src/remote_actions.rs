//! Fetching remote actions (`owner/repo@ref`) on the host with git, once per
//! reference, into a cache the engine streams into guests.

use std::path::{Path, PathBuf};
use std::process::Command;

/// A parsed `uses: owner/repo[/path]@ref`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActionRef {
    /// Repository owner.
    pub owner: String,
    /// Repository name.
    pub repo: String,
    /// Folder of the action inside the repository (empty for the root).
    pub path: String,
    /// Tag, branch or commit.
    pub git_ref: String,
}

impl ActionRef {
    /// Parses a `uses:` value.
    pub fn parse(uses: &str) -> Result<Self, String> {
        let (target, git_ref) = uses
            .split_once('@')
            .ok_or_else(|| format!("'{uses}' needs a version after '@'"))?;
        let mut parts = target.splitn(3, '/');
        let owner = parts.next().unwrap_or_default();
        let repo = parts.next().unwrap_or_default();
        let path = parts.next().unwrap_or_default();
        let plain = |s: &str| {
            s != "."
                && s != ".."
                && !s.is_empty()
                && s.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        };
        let path = path.strip_suffix('/').unwrap_or(path);
        if !plain(owner)
            || !plain(repo)
            || !plain(&git_ref.replace('/', "-"))
            || (!path.is_empty() && !path.split('/').all(plain))
        {
            return Err(format!("'{uses}' is not owner/repo[/path]@ref"));
        }
        Ok(Self {
            owner: owner.into(),
            repo: repo.into(),
            path: path.into(),
            git_ref: git_ref.into(),
        })
    }
}

/// Returns the host folder holding the repository of `action` at its ref,
/// fetching it (shallow) from `<base_url>/<owner>/<repo>` the first time.
pub fn fetch(action: &ActionRef, base_url: &str, cache: &Path) -> Result<PathBuf, String> {
    let dir = cache
        .join(&action.owner)
        .join(&action.repo)
        .join(action.git_ref.replace('/', "%2F"));
    if dir.join(".firerunner-complete").exists() {
        return Ok(dir);
    }
    let work = dir.with_extension(format!("fetching{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work).map_err(|e| format!("{}: {e}", work.display()))?;
    let url = format!(
        "{}/{}/{}",
        base_url.trim_end_matches('/'),
        action.owner,
        action.repo
    );
    let git = |args: &[&str]| -> Result<(), String> {
        let output = Command::new("git")
            .arg("-C")
            .arg(&work)
            .args(args)
            .env("GIT_TERMINAL_PROMPT", "0")
            .output()
            .map_err(|e| format!("git: {e}"))?;
        if output.status.success() {
            Ok(())
        } else {
            Err(format!(
                "cannot fetch {url}@{}: {}",
                action.git_ref,
                String::from_utf8_lossy(&output.stderr).trim()
            ))
        }
    };
    let result = (|| {
        git(&["init", "-q"])?;
        git(&[
            "fetch",
            "-q",
            "--depth=1",
            "--end-of-options",
            &url,
            &action.git_ref,
        ])?;
        git(&["checkout", "-q", "--detach", "FETCH_HEAD"])
    })();
    if let Err(err) = result {
        let _ = std::fs::remove_dir_all(&work);
        return Err(err);
    }
    let _ = std::fs::remove_dir_all(work.join(".git"));
    std::fs::write(work.join(".firerunner-complete"), "").map_err(|e| e.to_string())?;
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::rename(&work, &dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    Ok(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_parse_like_github_writes_them() {
        let r = ActionRef::parse("octo/tools/lint@v2").unwrap();
        assert_eq!(
            (
                r.owner.as_str(),
                r.repo.as_str(),
                r.path.as_str(),
                r.git_ref.as_str()
            ),
            ("octo", "tools", "lint", "v2")
        );
        assert_eq!(ActionRef::parse("actions/setup-node@v4").unwrap().path, "");
        assert!(ActionRef::parse("no-version").is_err());
        assert!(ActionRef::parse("a/../b@v1").is_err());
        assert!(ActionRef::parse("a/b/../../etc@v1").is_err());
        assert_eq!(ActionRef::parse("a/b/lint/@v1").unwrap().path, "lint");
        for bad in [
            "a/b//etc@v1",
            "a/b///etc@v1",
            "a/b/lint//x@v1",
            "a/b/./x@v1",
            "a/b/x/..@v1",
            "a/b/x/.@v1",
        ] {
            assert!(ActionRef::parse(bad).is_err(), "{bad}");
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
            &ActionRef::parse("octo/act@--dry-run").unwrap(),
            &format!("file://{}", source.path().display()),
            cache.path(),
        )
        .unwrap_err();
        assert!(err.contains("couldn't find remote ref --dry-run"), "{err}");
    }

    #[test]
    fn an_unreachable_action_is_a_clear_error() {
        let cache = tempfile::tempdir().unwrap();
        let missing = tempfile::tempdir().unwrap();
        let err = fetch(
            &ActionRef::parse("octo/absent@v1").unwrap(),
            &format!("file://{}", missing.path().display()),
            cache.path(),
        )
        .unwrap_err();
        assert!(err.starts_with("cannot fetch file://"), "{err}");
    }
}
