//! Webhook payloads for a run on a local checkout (`firerunner run`),
//! shaped like the ones GitHub delivers (its webhook documentation, and the
//! samples under `testdata/payloads`): `push`, `pull_request` and
//! `workflow_dispatch` from facts the caller read from git. Ids GitHub would
//! assign are derived from the names, so they are stable from run to run.

use serde_json::{json, Map, Value};

/// The commit id GitHub uses for "no commit" (`before` of a new branch).
pub const ZERO_SHA: &str = "0000000000000000000000000000000000000000";

/// The repository a local run is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalRepository {
    /// `owner/name`.
    pub full_name: String,
    /// Its default branch (`main`).
    pub default_branch: String,
    /// `https://github.com`, or a GitHub Enterprise Server.
    pub server_url: String,
    /// `https://api.github.com`, or the server's `/api/v3`.
    pub api_url: String,
}

/// A person as git records them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Person {
    /// Name.
    pub name: String,
    /// E-mail address.
    pub email: String,
}

/// One commit, as a push payload lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalCommit {
    /// The commit id.
    pub id: String,
    /// Its tree.
    pub tree_id: String,
    /// The whole message.
    pub message: String,
    /// The author date, ISO 8601 with its offset.
    pub timestamp: String,
    /// Who wrote it.
    pub author: Person,
    /// Who committed it.
    pub committer: Person,
    /// Paths it adds.
    pub added: Vec<String>,
    /// Paths it removes.
    pub removed: Vec<String>,
    /// Paths it modifies.
    pub modified: Vec<String>,
}

/// A push of commits to a ref.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalPush {
    /// The full ref (`refs/heads/main`).
    pub git_ref: String,
    /// The ref's commit before the push ([`ZERO_SHA`] when it is new).
    pub before: String,
    /// Its commit after the push.
    pub after: String,
    /// The pushed commits, oldest first (GitHub lists at most 20).
    pub commits: Vec<LocalCommit>,
    /// Who pushed (`pusher`).
    pub pusher: Person,
    /// The login of who triggered the run (`sender`).
    pub sender: String,
}

/// A pull request from a local branch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalPullRequest {
    /// Its number.
    pub number: u64,
    /// The activity (`opened`, `synchronize`, ...).
    pub action: String,
    /// Its title.
    pub title: String,
    /// Its description.
    pub body: String,
    /// The head branch (without `refs/heads/`) and commit.
    pub head: (String, String),
    /// The base branch and commit.
    pub base: (String, String),
    /// Commits on the head not on the base.
    pub commits: u64,
    /// Lines added and deleted, and files changed.
    pub diff: (u64, u64, u64),
    /// When it was opened (ISO 8601).
    pub created_at: String,
    /// The login of who opened it.
    pub sender: String,
}

/// How many commits a push payload lists at most (GitHub's limit).
pub const MAX_PUSH_COMMITS: usize = 20;

/// A stable number for `text` (FNV-1a), standing in for an id GitHub assigns.
fn id_of(text: &str) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in text.bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash % 1_000_000_000
}

/// A user object, as `sender`, `owner` and `user` are given.
fn user(login: &str, repo: &LocalRepository) -> Value {
    let id = id_of(login);
    json!({
        "login": login,
        "id": id,
        "node_id": format!("U_{id}"),
        "avatar_url": format!("https://avatars.githubusercontent.com/u/{id}?v=4"),
        "gravatar_id": "",
        "url": format!("{}/users/{login}", repo.api_url),
        "html_url": format!("{}/{login}", repo.server_url),
        "type": "User",
        "user_view_type": "public",
        "site_admin": false,
    })
}

/// The host part of the server URL (`github.com`).
fn host(repo: &LocalRepository) -> &str {
    let rest = repo
        .server_url
        .split("://")
        .nth(1)
        .unwrap_or(&repo.server_url);
    rest.split('/').next().unwrap_or(rest)
}

/// The `repository` object. Push payloads give its times as Unix seconds,
/// others as ISO 8601, as GitHub does.
fn repository(repo: &LocalRepository, push: bool) -> Value {
    let (owner, name) = repo
        .full_name
        .split_once('/')
        .unwrap_or(("local", &repo.full_name));
    let id = id_of(&repo.full_name);
    let (server, api, full) = (&repo.server_url, &repo.api_url, &repo.full_name);
    let time = if push {
        json!(0)
    } else {
        json!("1970-01-01T00:00:00Z")
    };
    let mut value = json!({
        "id": id,
        "node_id": format!("R_{id}"),
        "name": name,
        "full_name": full,
        "private": false,
        "owner": user(owner, repo),
        "html_url": format!("{server}/{full}"),
        "description": null,
        "fork": false,
        "url": format!("{api}/repos/{full}"),
        "git_url": format!("git://{}/{full}.git", host(repo)),
        "ssh_url": format!("git@{}:{full}.git", host(repo)),
        "clone_url": format!("{server}/{full}.git"),
        "created_at": time,
        "updated_at": "1970-01-01T00:00:00Z",
        "pushed_at": time,
        "size": 0,
        "stargazers_count": 0,
        "watchers_count": 0,
        "language": null,
        "forks_count": 0,
        "archived": false,
        "disabled": false,
        "open_issues_count": 0,
        "visibility": "public",
        "forks": 0,
        "open_issues": 0,
        "watchers": 0,
        "default_branch": repo.default_branch,
    });
    if push {
        // Push payloads also name the owner, and the default branch twice.
        value["owner"]["name"] = json!(owner);
        value["owner"]["email"] = Value::Null;
        value["master_branch"] = json!(repo.default_branch);
    }
    value
}

/// One commit of a push payload.
fn commit(c: &LocalCommit, repo: &LocalRepository) -> Value {
    let person = |p: &Person| json!({ "name": p.name, "email": p.email });
    json!({
        "id": c.id,
        "tree_id": c.tree_id,
        "distinct": true,
        "message": c.message,
        "timestamp": c.timestamp,
        "url": format!("{}/{}/commit/{}", repo.server_url, repo.full_name, c.id),
        "author": person(&c.author),
        "committer": person(&c.committer),
        "added": c.added,
        "removed": c.removed,
        "modified": c.modified,
    })
}

/// A `push` payload.
pub fn push_payload(repo: &LocalRepository, push: &LocalPush) -> Value {
    let shown = push.commits.len().saturating_sub(MAX_PUSH_COMMITS);
    let commits: Vec<Value> = push.commits[shown..]
        .iter()
        .map(|c| commit(c, repo))
        .collect();
    let head_commit = push
        .commits
        .last()
        .map(|c| commit(c, repo))
        .unwrap_or(Value::Null);
    let short = |sha: &str| sha.chars().take(12).collect::<String>();
    json!({
        "ref": push.git_ref,
        "before": push.before,
        "after": push.after,
        "repository": repository(repo, true),
        "pusher": { "name": push.pusher.name, "email": push.pusher.email },
        "sender": user(&push.sender, repo),
        "created": push.before == ZERO_SHA,
        "deleted": false,
        "forced": false,
        "base_ref": null,
        "compare": format!(
            "{}/{}/compare/{}...{}",
            repo.server_url, repo.full_name, short(&push.before), short(&push.after)
        ),
        "commits": commits,
        "head_commit": head_commit,
    })
}

/// One end (`head` or `base`) of a pull request.
fn pull_request_end(repo: &LocalRepository, branch: &(String, String)) -> Value {
    let owner = repo.full_name.split('/').next().unwrap_or("local");
    json!({
        "label": format!("{owner}:{}", branch.0),
        "ref": branch.0,
        "sha": branch.1,
        "user": user(owner, repo),
        "repo": repository(repo, false),
    })
}

/// The `pull_request` object of a pull request payload.
fn pull_request(repo: &LocalRepository, pr: &LocalPullRequest) -> Value {
    let (api, server, full, n) = (&repo.api_url, &repo.server_url, &repo.full_name, pr.number);
    let id = id_of(&format!("{full}#{n}"));
    json!({
        "url": format!("{api}/repos/{full}/pulls/{n}"),
        "id": id,
        "node_id": format!("PR_{id}"),
        "html_url": format!("{server}/{full}/pull/{n}"),
        "diff_url": format!("{server}/{full}/pull/{n}.diff"),
        "patch_url": format!("{server}/{full}/pull/{n}.patch"),
        "issue_url": format!("{api}/repos/{full}/issues/{n}"),
        "number": n,
        "state": "open",
        "locked": false,
        "title": pr.title,
        "user": user(&pr.sender, repo),
        "body": pr.body,
        "created_at": pr.created_at,
        "updated_at": pr.created_at,
        "closed_at": null,
        "merged_at": null,
        "merge_commit_sha": null,
        "assignees": [],
        "requested_reviewers": [],
        "labels": [],
        "draft": false,
        "head": pull_request_end(repo, &pr.head),
        "base": pull_request_end(repo, &pr.base),
        "author_association": "OWNER",
        "auto_merge": null,
        "merged": false,
        "mergeable": null,
        "rebaseable": null,
        "mergeable_state": "unknown",
        "merged_by": null,
        "comments": 0,
        "review_comments": 0,
        "maintainer_can_modify": false,
        "commits": pr.commits,
        "additions": pr.diff.0,
        "deletions": pr.diff.1,
        "changed_files": pr.diff.2,
    })
}

/// A `pull_request` payload (also the shape of `pull_request_target`).
pub fn pull_request_payload(repo: &LocalRepository, pr: &LocalPullRequest) -> Value {
    json!({
        "action": pr.action,
        "number": pr.number,
        "pull_request": pull_request(repo, pr),
        "repository": repository(repo, false),
        "sender": user(&pr.sender, repo),
    })
}

/// A `workflow_dispatch` payload for the workflow file `workflow`
/// (`.github/workflows/ci.yml`) at `git_ref`, its inputs all strings.
pub fn workflow_dispatch_payload(
    repo: &LocalRepository,
    git_ref: &str,
    workflow: &str,
    inputs: Map<String, Value>,
    sender: &str,
) -> Value {
    json!({
        "inputs": inputs,
        "ref": git_ref,
        "repository": repository(repo, false),
        "sender": user(sender, repo),
        "workflow": workflow,
    })
}

/// A payload for any other event: the ref, repository and sender that all
/// of GitHub's repository events carry.
pub fn other_payload(repo: &LocalRepository, git_ref: &str, sender: &str) -> Value {
    json!({
        "ref": git_ref,
        "repository": repository(repo, false),
        "sender": user(sender, repo),
    })
}

/// Merges `overlay` into `base`: objects key by key (recursively), any
/// other value replaced. A user's `-e` payload goes over a generated one.
pub fn merge_payload(base: &mut Value, overlay: Value) {
    match (base, overlay) {
        (Value::Object(base), Value::Object(overlay)) => {
            for (key, value) in overlay {
                match base.get_mut(&key) {
                    Some(existing) => merge_payload(existing, value),
                    None => {
                        base.insert(key, value);
                    }
                }
            }
        }
        (base, overlay) => *base = overlay,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::webhook::WebhookEvent;

    fn repo() -> LocalRepository {
        LocalRepository {
            full_name: "octo-org/widgets".into(),
            default_branch: "main".into(),
            server_url: "https://github.com".into(),
            api_url: "https://api.github.com".into(),
        }
    }

    fn sample(name: &str) -> Value {
        let path = format!("{}/testdata/payloads/{name}", env!("CARGO_MANIFEST_DIR"));
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
    }

    /// Every key GitHub's sample has (at every depth, arrays by their first
    /// element) is in `made`, with a value of the same JSON type; `skip` are
    /// paths a local run has no counterpart for.
    fn same_shape(
        sample: &Value,
        made: &Value,
        path: &str,
        skip: &[&str],
        problems: &mut Vec<String>,
    ) {
        if skip.contains(&path) {
            return;
        }
        match (sample, made) {
            (Value::Object(s), Value::Object(m)) => {
                for (key, value) in s {
                    let at = format!("{path}.{key}");
                    match m.get(key) {
                        Some(mine) => same_shape(value, mine, &at, skip, problems),
                        None if skip.contains(&at.as_str()) => {}
                        None => problems.push(format!("{at} is missing")),
                    }
                }
            }
            (Value::Array(s), Value::Array(m)) => {
                if let (Some(s), Some(m)) = (s.first(), m.first()) {
                    same_shape(s, m, &format!("{path}[0]"), skip, problems);
                }
            }
            (Value::Null, _) | (_, Value::Null) => {}
            (s, m) if std::mem::discriminant(s) == std::mem::discriminant(m) => {}
            (s, m) => problems.push(format!("{path}: {m} where GitHub sends a value like {s}")),
        }
    }

    fn assert_shape(sample: &Value, made: &Value, skip: &[&str]) {
        let mut problems = Vec::new();
        same_shape(sample, made, "", skip, &mut problems);
        assert!(problems.is_empty(), "{problems:#?}");
    }

    fn commit(id: &str, file: &str) -> LocalCommit {
        let mona = Person {
            name: "Mona Lisa".into(),
            email: "mona@example.com".into(),
        };
        LocalCommit {
            id: id.into(),
            tree_id: "4b825dc642cb6eb9a060e54bf8d69288fbee4904".into(),
            message: format!("Change {file}"),
            timestamp: "2026-11-22T09:14:01+01:00".into(),
            author: mona.clone(),
            committer: mona,
            added: vec![file.into()],
            removed: vec![],
            modified: vec!["README.md".into()],
        }
    }

    fn push() -> LocalPush {
        LocalPush {
            git_ref: "refs/heads/main".into(),
            before: "a10867b14bb761a232cd80139fbd4c0d33264240".into(),
            after: "6dcb09b5b57875f334f61aebed695e2e4193db5e".into(),
            commits: vec![
                commit("9f1c2d3e4b5a69788796a5b4c3d2e1f0a9b8c7d6", "src/gear.rs"),
                commit("6dcb09b5b57875f334f61aebed695e2e4193db5e", "src/lib.rs"),
            ],
            pusher: Person {
                name: "mona".into(),
                email: "mona@example.com".into(),
            },
            sender: "mona".into(),
        }
    }

    #[test]
    fn a_push_has_every_field_of_github_s_and_parses_as_one() {
        let made = push_payload(&repo(), &push());
        // An App's installation and an organisation's own fields have no local counterpart.
        let skip = [
            ".installation",
            ".repository.organization",
            ".commits[0].author.username",
            ".commits[0].committer.username",
            ".head_commit.author.username",
            ".head_commit.committer.username",
        ];
        assert_shape(&sample("push.json"), &made, &skip);
        let body = serde_json::to_vec(&made).unwrap();
        let WebhookEvent::Push(event) = WebhookEvent::parse("push", &body).unwrap() else {
            panic!("a push")
        };
        assert_eq!(event.git_ref, "refs/heads/main");
        assert_eq!(event.repository.full_name, "octo-org/widgets");
        assert_eq!(event.repository.owner_login, "octo-org");
        assert_eq!(event.repository.default_branch, "main");
        assert_eq!(event.commits.len(), 2);
        assert_eq!(event.head_commit.unwrap().id, event.after);
        assert_eq!(event.pusher_name, "mona");
        assert!(!event.created);
        assert_eq!(made["sender"]["login"], "mona");
    }

    #[test]
    fn a_new_branch_is_created_and_only_twenty_commits_are_listed() {
        let mut push = push();
        push.before = ZERO_SHA.into();
        push.commits = (0..25)
            .map(|i| commit(&format!("{i:040}"), &format!("f{i}")))
            .collect();
        let made = push_payload(&repo(), &push);
        assert_eq!(made["created"], true);
        let listed = made["commits"].as_array().unwrap();
        assert_eq!(listed.len(), 20);
        assert_eq!(listed[19]["id"], made["head_commit"]["id"]);
    }

    #[test]
    fn a_pull_request_has_every_field_of_github_s_and_parses_as_one() {
        let pr = LocalPullRequest {
            number: 7,
            action: "opened".into(),
            title: "Add the gear module".into(),
            body: "It turns.".into(),
            head: (
                "feature".into(),
                "6dcb09b5b57875f334f61aebed695e2e4193db5e".into(),
            ),
            base: (
                "main".into(),
                "a10867b14bb761a232cd80139fbd4c0d33264240".into(),
            ),
            commits: 2,
            diff: (10, 2, 3),
            created_at: "2026-11-22T09:14:01Z".into(),
            sender: "mona".into(),
        };
        let made = pull_request_payload(&repo(), &pr);
        let skip = [".installation", ".organization", ".pull_request.user.type"];
        assert_shape(&sample("pull_request-opened.json"), &made, &skip);
        let body = serde_json::to_vec(&made).unwrap();
        let event = WebhookEvent::parse("pull_request", &body).unwrap();
        assert_eq!(event.git_ref().as_deref(), Some("refs/pull/7/merge"));
        assert_eq!(
            event.head_sha(),
            Some("6dcb09b5b57875f334f61aebed695e2e4193db5e")
        );
        let WebhookEvent::PullRequest(pr) = event else {
            panic!("a pull request")
        };
        assert_eq!(
            (pr.head_ref.as_str(), pr.base_ref.as_str()),
            ("feature", "main")
        );
        assert_eq!(pr.base_sha, "a10867b14bb761a232cd80139fbd4c0d33264240");
        assert_eq!(pr.head_repo_full_name.as_deref(), Some("octo-org/widgets"));
        assert_eq!(pr.html_url, "https://github.com/octo-org/widgets/pull/7");
    }

    #[test]
    fn a_dispatch_has_every_field_of_github_s_and_parses_as_one() {
        let inputs = Map::from_iter([("greeting".to_string(), json!("hi"))]);
        let made = workflow_dispatch_payload(
            &repo(),
            "refs/heads/main",
            ".github/workflows/deploy.yml",
            inputs,
            "mona",
        );
        assert_shape(
            &sample("workflow_dispatch.json"),
            &made,
            &[".installation", ".organization", ".inputs"],
        );
        let body = serde_json::to_vec(&made).unwrap();
        let WebhookEvent::WorkflowDispatch(event) =
            WebhookEvent::parse("workflow_dispatch", &body).unwrap()
        else {
            panic!("a dispatch")
        };
        assert_eq!(event.workflow, ".github/workflows/deploy.yml");
        assert_eq!(event.inputs["greeting"], "hi");
    }

    #[test]
    fn a_given_payload_goes_over_the_generated_one_key_by_key() {
        let mut base = push_payload(&repo(), &push());
        merge_payload(
            &mut base,
            json!({ "ref": "refs/heads/release", "repository": { "default_branch": "trunk" }, "extra": [1] }),
        );
        assert_eq!(base["ref"], "refs/heads/release");
        assert_eq!(base["repository"]["default_branch"], "trunk");
        assert_eq!(base["repository"]["full_name"], "octo-org/widgets", "kept");
        assert_eq!(base["extra"], json!([1]));
    }
}
