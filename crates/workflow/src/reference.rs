//! `uses:` values parsed once into typed references.
//!
//! A step's `uses:` names an action ([`ActionRef`]); a job's `uses:` names a
//! reusable workflow ([`WorkflowRef`]). Callers match on these instead of
//! looking at string prefixes.

use std::fmt;

/// A repository on GitHub at a ref, with a path inside it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RemoteRef {
    /// Repository owner.
    pub owner: String,
    /// Repository name.
    pub repo: String,
    /// Path inside the repository (empty for the root), without a trailing `/`.
    pub path: String,
    /// Tag, branch or commit after `@`.
    pub git_ref: String,
}

impl fmt::Display for RemoteRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.owner, self.repo)?;
        if !self.path.is_empty() {
            write!(f, "/{}", self.path)?;
        }
        write!(f, "@{}", self.git_ref)
    }
}

/// What a step's `uses:` names.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ActionRef {
    /// `./PATH`: a folder of the workspace (the checked-out repository);
    /// `./` alone is its root. `path` has no leading `./` (empty for the root).
    Local {
        /// Folder relative to the workspace.
        path: String,
    },
    /// `$/PATH`: a folder of the workflow's own repository at the running commit.
    SelfRepo {
        /// Folder relative to the repository root (empty for the root).
        path: String,
    },
    /// `docker://IMAGE`.
    Docker {
        /// The image, as written after `docker://`.
        image: String,
    },
    /// `OWNER/REPO[/PATH]@REF`.
    Remote(RemoteRef),
}

/// What a job's `uses:` names: a reusable workflow file.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum WorkflowRef {
    /// `./.github/workflows/FILE.yml`: same repository, same commit as the caller.
    Local {
        /// Path from the repository root (`.github/workflows/FILE.yml`).
        path: String,
    },
    /// `$/.github/workflows/FILE.yml`: the workflow's own repository at the running commit.
    SelfRepo {
        /// Path from the repository root.
        path: String,
    },
    /// `OWNER/REPO/.github/workflows/FILE.yml@REF`.
    Remote(RemoteRef),
}

/// Why a `uses:` value is not a reference.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RefError {
    /// An action reference of none of GitHub's forms.
    #[error("'{0}' is not a valid action reference; expected './PATH', '$/PATH', 'docker://IMAGE' or 'OWNER/REPO[/PATH]@REF'")]
    Action(String),
    /// A workflow reference of none of GitHub's forms.
    #[error("'{0}' is not a reusable workflow reference; expected './.github/workflows/FILE.yml', '$/.github/workflows/FILE.yml' or 'OWNER/REPO/.github/workflows/FILE.yml@REF'")]
    Workflow(String),
}

/// `./x/`, `x`, `./`, `.` -> `x` or `` (a path relative to a root).
fn relative(path: &str) -> String {
    let mut p = path;
    while let Some(rest) = p.strip_prefix("./") {
        p = rest;
    }
    if p == "." {
        p = "";
    }
    p.trim_end_matches('/').to_owned()
}

/// A name git and the host's file system take as written: ASCII letters,
/// digits, `-`, `_` and `.`, and neither `.` nor `..` (no way out of a folder).
fn plain(segment: &str) -> bool {
    segment != "."
        && segment != ".."
        && !segment.is_empty()
        && segment
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
}

/// `OWNER/REPO[/PATH]@REF` with plain owner, repo, path segments and ref
/// (whose `/`-separated parts are plain too); one trailing `/` on the path is dropped.
fn remote(text: &str) -> Option<RemoteRef> {
    let (target, git_ref) = text.split_once('@')?;
    let mut parts = target.splitn(3, '/');
    let owner = parts.next()?;
    let repo = parts.next()?;
    let path = parts.next().unwrap_or_default();
    let path = path.strip_suffix('/').unwrap_or(path);
    let ok = plain(owner)
        && plain(repo)
        && git_ref.split('/').all(plain)
        && (path.is_empty() || path.split('/').all(plain));
    ok.then(|| RemoteRef {
        owner: owner.to_owned(),
        repo: repo.to_owned(),
        path: path.to_owned(),
        git_ref: git_ref.to_owned(),
    })
}

impl ActionRef {
    /// Parses a step's `uses:` as GitHub reads it.
    pub fn parse(text: &str) -> Result<Self, RefError> {
        let error = || RefError::Action(text.to_owned());
        if text.starts_with("./") {
            return Ok(Self::Local {
                path: relative(text),
            });
        }
        if let Some(rest) = text.strip_prefix("$/") {
            return Ok(Self::SelfRepo {
                path: relative(rest),
            });
        }
        if let Some(image) = text.strip_prefix("docker://") {
            if image.trim().is_empty() {
                return Err(error());
            }
            return Ok(Self::Docker {
                image: image.to_owned(),
            });
        }
        remote(text).map(Self::Remote).ok_or_else(error)
    }
}

impl fmt::Display for ActionRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Local { path } => write!(f, "./{path}"),
            Self::SelfRepo { path } => write!(f, "$/{path}"),
            Self::Docker { image } => write!(f, "docker://{image}"),
            Self::Remote(r) => r.fmt(f),
        }
    }
}

fn is_workflow_file(path: &str) -> bool {
    path.ends_with(".yml") || path.ends_with(".yaml")
}

impl WorkflowRef {
    /// Parses a job's `uses:` as GitHub reads it.
    pub fn parse(text: &str) -> Result<Self, RefError> {
        let error = || RefError::Workflow(text.to_owned());
        let parsed = if text.starts_with("./") {
            Self::Local {
                path: relative(text),
            }
        } else if let Some(rest) = text.strip_prefix("$/") {
            Self::SelfRepo {
                path: relative(rest),
            }
        } else {
            Self::Remote(remote(text).ok_or_else(error)?)
        };
        let path = parsed.path();
        if !path.starts_with(".github/workflows/") || !is_workflow_file(path) {
            return Err(error());
        }
        Ok(parsed)
    }

    /// The workflow file's path from its repository's root.
    pub fn path(&self) -> &str {
        match self {
            Self::Local { path } | Self::SelfRepo { path } => path,
            Self::Remote(r) => &r.path,
        }
    }

    /// True when the file is in the caller's own repository (`./` or `$/`).
    pub fn is_same_repository(&self) -> bool {
        !matches!(self, Self::Remote(_))
    }
}

impl fmt::Display for WorkflowRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Local { path } => write!(f, "./{path}"),
            Self::SelfRepo { path } => write!(f, "$/{path}"),
            Self::Remote(r) => r.fmt(f),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn local(path: &str) -> ActionRef {
        ActionRef::Local { path: path.into() }
    }

    #[test]
    fn every_form_of_action_reference_github_accepts() {
        assert_eq!(ActionRef::parse("./"), Ok(local("")));
        assert_eq!(
            ActionRef::parse("./.github/actions/x/"),
            Ok(local(".github/actions/x"))
        );
        assert_eq!(
            ActionRef::parse("$/./actions/foo"),
            Ok(ActionRef::SelfRepo {
                path: "actions/foo".into()
            })
        );
        assert_eq!(
            ActionRef::parse("docker://alpine:3"),
            Ok(ActionRef::Docker {
                image: "alpine:3".into()
            })
        );
        let Ok(ActionRef::Remote(r)) = ActionRef::parse("github/codeql-action/init@v3") else {
            panic!("remote")
        };
        assert_eq!(
            (
                r.owner.as_str(),
                r.repo.as_str(),
                r.path.as_str(),
                r.git_ref.as_str()
            ),
            ("github", "codeql-action", "init", "v3")
        );
        assert_eq!(r.to_string(), "github/codeql-action/init@v3");
    }

    #[test]
    fn malformed_action_references_are_refused() {
        for bad in [
            "not-a-ref",
            "owner@v1",
            "owner/repo",
            "owner/repo@",
            "docker://",
            "/x@v1",
        ] {
            assert!(ActionRef::parse(bad).is_err(), "{bad}");
        }
    }

    fn remote_path(text: &str) -> String {
        match ActionRef::parse(text) {
            Ok(ActionRef::Remote(r)) => r.path,
            other => panic!("{text}: {other:?}"),
        }
    }

    #[test]
    fn remote_references_stay_inside_their_repository() {
        assert_eq!(remote_path("octo/tools/lint@v2"), "lint");
        assert_eq!(remote_path("actions/setup-node@v4"), "");
        assert_eq!(remote_path("a/b/lint/@v1"), "lint");
        for bad in [
            "no-version",
            "a/../b@v1",
            "a/b/../../etc@v1",
            "a/b//etc@v1",
            "a/b///etc@v1",
            "a/b/lint//x@v1",
            "a/b/./x@v1",
            "a/b/x/..@v1",
            "a/b/x/.@v1",
            "a/b@v1 --upload-pack=x",
            "a/b@../v1",
        ] {
            assert!(ActionRef::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_version_that_looks_like_an_option_is_kept_as_a_version() {
        let Ok(ActionRef::Remote(r)) = ActionRef::parse("octo/act@--dry-run") else {
            panic!("an option-like version is a version; the fetch ends git's options")
        };
        assert_eq!(r.git_ref, "--dry-run");
    }

    #[test]
    fn workflow_references_in_all_three_forms() {
        assert_eq!(
            WorkflowRef::parse("./.github/workflows/a.yml"),
            Ok(WorkflowRef::Local {
                path: ".github/workflows/a.yml".into()
            })
        );
        assert_eq!(
            WorkflowRef::parse("$/.github/workflows/b.yaml"),
            Ok(WorkflowRef::SelfRepo {
                path: ".github/workflows/b.yaml".into()
            })
        );
        let r = WorkflowRef::parse("o/r/.github/workflows/c.yml@main").unwrap();
        assert_eq!(r.path(), ".github/workflows/c.yml");
        assert!(!r.is_same_repository());
        for bad in [
            "./ci.yml",
            "o/r/.github/workflows/c.yml",
            "o/r@v1",
            "$/x.txt",
        ] {
            assert!(WorkflowRef::parse(bad).is_err(), "{bad}");
        }
    }
}
