//! The event of a run on a local checkout, read from git: the repository,
//! the pushed commits, or a pull request from the current branch, in the
//! payload shapes GitHub delivers ([`firerunner_github::local_event`]).

use std::path::Path;
use std::process::Command;

use firerunner_github::local_event::{
    other_payload, pull_request_payload, push_payload, workflow_dispatch_payload, LocalCommit,
    LocalPullRequest, LocalPush, LocalRepository, Person, MAX_PUSH_COMMITS, ZERO_SHA,
};
use serde_json::Value;

/// What the payload is built for.
pub struct LocalEvent<'a> {
    /// The event name.
    pub name: &'a str,
    /// The ref pushed, or the pull request's head (`refs/heads/feature`).
    pub git_ref: &'a str,
    /// A pull request's base branch (default: the repository's default branch).
    pub base: Option<&'a str>,
    /// A pull request's number.
    pub number: u64,
}

/// The output of `git <args>` in `dir`, trimmed; `None` when git fails or
/// prints nothing.
pub fn git_output(dir: &Path, args: &[&str]) -> Option<String> {
    Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .output()
        .ok()
        .filter(|o| o.status.success())
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
}

/// `owner/name` from the `origin` remote, else `local/<folder>`.
pub fn repository_name(root: &Path) -> String {
    let from_remote = git_output(root, &["remote", "get-url", "origin"]).and_then(|url| {
        let trimmed = url.trim_end_matches('/').trim_end_matches(".git");
        let mut parts = trimmed.rsplit(['/', ':']);
        let name = parts.next()?;
        let owner = parts.next()?;
        Some(format!("{owner}/{name}"))
    });
    from_remote.unwrap_or_else(|| {
        let folder = root
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "repository".into());
        format!("local/{folder}")
    })
}

/// The login the run is by: `$USER`, else `firerunner`.
pub fn actor() -> String {
    std::env::var("USER").unwrap_or_else(|_| "firerunner".into())
}

/// The default branch: `origin`'s, else `main` or `master` if one exists,
/// else `main`.
fn default_branch(root: &Path) -> String {
    if let Some(head) = git_output(
        root,
        &["symbolic-ref", "--short", "refs/remotes/origin/HEAD"],
    ) {
        return head.trim_start_matches("origin/").to_owned();
    }
    for branch in ["main", "master"] {
        let full = format!("refs/heads/{branch}");
        if git_output(root, &["rev-parse", "--verify", "-q", &full]).is_some() {
            return branch.to_owned();
        }
    }
    "main".into()
}

/// The repository of the checkout at `root`.
pub fn local_repository(root: &Path) -> LocalRepository {
    LocalRepository {
        full_name: repository_name(root),
        default_branch: default_branch(root),
        server_url: "https://github.com".into(),
        api_url: "https://api.github.com".into(),
    }
}

/// The payload of `event` for the checkout at `root`.
pub fn local_payload(root: &Path, event: &LocalEvent<'_>) -> Value {
    let repo = local_repository(root);
    match event.name {
        "push" => push_payload(&repo, &local_push(root, event.git_ref)),
        "pull_request" | "pull_request_target" => {
            pull_request_payload(&repo, &local_pull_request(root, &repo, event))
        }
        "workflow_dispatch" => {
            workflow_dispatch_payload(&repo, event.git_ref, "", Default::default(), &actor())
        }
        _ => other_payload(&repo, event.git_ref, &actor()),
    }
}

/// The commit of `rev`, if it names one.
fn commit_of(root: &Path, rev: &str) -> Option<String> {
    git_output(
        root,
        &["rev-parse", "--verify", "-q", &format!("{rev}^{{commit}}")],
    )
}

/// A push of the current commit to `git_ref`: from the upstream branch's
/// commit when it is behind, else from the parent commit.
fn local_push(root: &Path, git_ref: &str) -> LocalPush {
    let after = commit_of(root, "HEAD").unwrap_or_else(|| ZERO_SHA.into());
    let upstream = commit_of(root, "@{upstream}").filter(|up| {
        *up != after
            && Command::new("git")
                .arg("-C")
                .arg(root)
                .args(["merge-base", "--is-ancestor", up, &after])
                .status()
                .is_ok_and(|s| s.success())
    });
    let before = upstream
        .or_else(|| commit_of(root, "HEAD^"))
        .unwrap_or_else(|| ZERO_SHA.into());
    let range = if before == ZERO_SHA {
        after.clone()
    } else {
        format!("{before}..{after}")
    };
    let limit = if before == ZERO_SHA {
        1
    } else {
        MAX_PUSH_COMMITS
    };
    let name = git_output(root, &["config", "user.name"]).unwrap_or_else(actor);
    let email = git_output(root, &["config", "user.email"]).unwrap_or_default();
    LocalPush {
        git_ref: git_ref.to_owned(),
        before,
        commits: commits(root, &range, limit),
        after,
        pusher: Person { name, email },
        sender: actor(),
    }
}

/// Field and record separators of the `git log` format below.
const FIELD: char = '\u{1f}';
const RECORD: char = '\u{1e}';

/// The commits of `range` (at most `limit`, the newest), oldest first.
fn commits(root: &Path, range: &str, limit: usize) -> Vec<LocalCommit> {
    let format = "--format=%H%x1f%T%x1f%an%x1f%ae%x1f%cn%x1f%ce%x1f%aI%x1f%B%x1e";
    let count = format!("-n{limit}");
    let Some(log) = git_output(root, &["log", "--reverse", &count, format, range, "--"]) else {
        return Vec::new();
    };
    log.split(RECORD)
        .filter_map(|record| {
            let fields: Vec<&str> = record.trim_start_matches('\n').split(FIELD).collect();
            let [id, tree, an, ae, cn, ce, date, message] = fields[..] else {
                return None;
            };
            let (added, removed, modified) = changed(root, id);
            Some(LocalCommit {
                id: id.to_owned(),
                tree_id: tree.to_owned(),
                message: message.trim_end().to_owned(),
                timestamp: date.to_owned(),
                author: Person {
                    name: an.to_owned(),
                    email: ae.to_owned(),
                },
                committer: Person {
                    name: cn.to_owned(),
                    email: ce.to_owned(),
                },
                added,
                removed,
                modified,
            })
        })
        .collect()
}

/// The paths commit `id` adds, removes and modifies (relative to `root`).
fn changed(root: &Path, id: &str) -> (Vec<String>, Vec<String>, Vec<String>) {
    let args = [
        "diff-tree",
        "--no-commit-id",
        "--name-status",
        "-r",
        "--root",
        "--no-renames",
        "--relative",
        id,
    ];
    let (mut added, mut removed, mut modified) = (Vec::new(), Vec::new(), Vec::new());
    for line in git_output(root, &args).unwrap_or_default().lines() {
        let Some((status, path)) = line.split_once('\t') else {
            continue;
        };
        match status.chars().next() {
            Some('A') => added.push(path.to_owned()),
            Some('D') => removed.push(path.to_owned()),
            _ => modified.push(path.to_owned()),
        }
    }
    (added, removed, modified)
}

/// A pull request from the current commit (`event.git_ref`) into the base branch.
fn local_pull_request(
    root: &Path,
    repo: &LocalRepository,
    event: &LocalEvent<'_>,
) -> LocalPullRequest {
    let head_sha = commit_of(root, "HEAD").unwrap_or_else(|| ZERO_SHA.into());
    let head = event
        .git_ref
        .strip_prefix("refs/heads/")
        .unwrap_or(event.git_ref);
    let base = event.base.unwrap_or(&repo.default_branch).to_owned();
    let base_sha = commit_of(root, &format!("refs/heads/{base}"))
        .or_else(|| commit_of(root, &format!("refs/remotes/origin/{base}")))
        .unwrap_or_else(|| head_sha.clone());
    let range = format!("{base_sha}..{head_sha}");
    let count = git_output(root, &["rev-list", "--count", &range]).and_then(|n| n.parse().ok());
    let text = |format: &str| git_output(root, &["log", "-1", format, "HEAD"]).unwrap_or_default();
    LocalPullRequest {
        number: event.number,
        action: "opened".into(),
        title: text("--format=%s"),
        body: text("--format=%b"),
        diff: diff_stat(root, &format!("{base_sha}...{head_sha}")),
        head: (head.to_owned(), head_sha),
        base: (base, base_sha),
        commits: count.unwrap_or(0),
        created_at: text("--format=%aI"),
        sender: actor(),
    }
}

/// Lines added, lines deleted and files changed over `range`.
fn diff_stat(root: &Path, range: &str) -> (u64, u64, u64) {
    let numstat = git_output(root, &["diff", "--numstat", "--relative", range]).unwrap_or_default();
    numstat
        .lines()
        .fold((0, 0, 0), |(added, deleted, files), line| {
            let mut parts = line.split('\t');
            let number = |part: Option<&str>| part.and_then(|p| p.parse::<u64>().ok()).unwrap_or(0);
            (
                added + number(parts.next()),
                deleted + number(parts.next()),
                files + 1,
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn git(dir: &Path, args: &[&str]) -> String {
        let out = Command::new("git")
            .arg("-C")
            .arg(dir)
            .args([
                "-c",
                "user.name=Mona Lisa",
                "-c",
                "user.email=mona@example.com",
            ])
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success(), "git {args:?}: {out:?}");
        String::from_utf8(out.stdout).unwrap().trim().to_owned()
    }

    /// main with two commits, then `feature` with one more.
    fn repository() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        git(root, &["init", "-q", "-b", "main"]);
        git(
            root,
            &[
                "remote",
                "add",
                "origin",
                "https://github.com/octo-org/widgets.git",
            ],
        );
        std::fs::write(root.join("README.md"), "widgets\n").unwrap();
        git(root, &["add", "."]);
        git(root, &["commit", "-q", "-m", "First"]);
        std::fs::write(root.join("gear.rs"), "fn gear() {}\n").unwrap();
        std::fs::write(root.join("README.md"), "widgets, with gears\n").unwrap();
        git(root, &["add", "."]);
        git(root, &["commit", "-q", "-m", "Add the gear\n\nIt turns."]);
        git(root, &["checkout", "-q", "-b", "feature"]);
        std::fs::remove_file(root.join("gear.rs")).unwrap();
        git(root, &["commit", "-q", "-am", "Drop the gear"]);
        dir
    }

    #[test]
    fn a_push_lists_the_commit_pushed_from_its_parent_with_its_files() {
        let dir = repository();
        let root = dir.path();
        git(root, &["checkout", "-q", "main"]);
        let event = LocalEvent {
            name: "push",
            git_ref: "refs/heads/main",
            base: None,
            number: 1,
        };
        let payload = local_payload(root, &event);
        assert_eq!(payload["ref"], "refs/heads/main");
        assert_eq!(payload["after"], git(root, &["rev-parse", "HEAD"]));
        assert_eq!(payload["before"], git(root, &["rev-parse", "HEAD^"]));
        assert_eq!(payload["repository"]["full_name"], "octo-org/widgets");
        assert_eq!(payload["repository"]["owner"]["login"], "octo-org");
        assert_eq!(payload["repository"]["default_branch"], "main");
        let commits = payload["commits"].as_array().unwrap();
        assert_eq!(commits.len(), 1);
        assert_eq!(commits[0]["message"], "Add the gear\n\nIt turns.");
        assert_eq!(commits[0]["added"], serde_json::json!(["gear.rs"]));
        assert_eq!(commits[0]["modified"], serde_json::json!(["README.md"]));
        assert_eq!(commits[0]["author"]["email"], "mona@example.com");
        assert_eq!(payload["head_commit"]["id"], payload["after"]);
        assert_eq!(payload["created"], false);
    }

    #[test]
    fn the_first_commit_is_a_new_ref() {
        let dir = tempfile::tempdir().unwrap();
        git(dir.path(), &["init", "-q", "-b", "main"]);
        std::fs::write(dir.path().join("a.txt"), "a\n").unwrap();
        git(dir.path(), &["add", "."]);
        git(dir.path(), &["commit", "-q", "-m", "root"]);
        let event = LocalEvent {
            name: "push",
            git_ref: "refs/heads/main",
            base: None,
            number: 1,
        };
        let payload = local_payload(dir.path(), &event);
        assert_eq!(payload["before"], ZERO_SHA);
        assert_eq!(payload["created"], true);
        assert_eq!(payload["commits"][0]["added"], serde_json::json!(["a.txt"]));
        let folder = dir.path().file_name().unwrap().to_string_lossy();
        assert_eq!(
            payload["repository"]["full_name"],
            format!("local/{folder}")
        );
    }

    #[test]
    fn a_pull_request_goes_from_the_current_branch_into_the_base() {
        let dir = repository();
        let root = dir.path();
        let event = LocalEvent {
            name: "pull_request",
            git_ref: "refs/heads/feature",
            base: None,
            number: 5,
        };
        let payload = local_payload(root, &event);
        let pr = &payload["pull_request"];
        assert_eq!(payload["number"], 5);
        assert_eq!(payload["action"], "opened");
        assert_eq!(pr["head"]["ref"], "feature");
        assert_eq!(pr["head"]["sha"], git(root, &["rev-parse", "HEAD"]));
        assert_eq!(pr["base"]["ref"], "main");
        assert_eq!(pr["base"]["sha"], git(root, &["rev-parse", "main"]));
        assert_eq!(pr["title"], "Drop the gear");
        assert_eq!(
            (
                pr["commits"].as_u64(),
                pr["deletions"].as_u64(),
                pr["changed_files"].as_u64()
            ),
            (Some(1), Some(1), Some(1))
        );
    }
}
