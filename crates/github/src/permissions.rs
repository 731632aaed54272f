//! The permissions of a job's `GITHUB_TOKEN`: what a workflow's
//! `permissions:` asks for (GitHub's defaults when it says nothing), made
//! read-only for pull requests from forks, and cut to what the GitHub App
//! installation holds before a token is requested for one repository.

use std::collections::BTreeMap;

use firerunner_workflow::model::{Access, ParsedWorkflow, Permissions};
use serde_json::Value;

/// An access level of one permission, ordered `None < Read < Write`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    /// No access.
    None,
    /// Read access.
    Read,
    /// Read and write access.
    Write,
}

impl Level {
    /// The word GitHub's API uses (`read`, `write`); `None` has none.
    pub fn as_str(self) -> Option<&'static str> {
        match self {
            Level::None => None,
            Level::Read => Some("read"),
            Level::Write => Some("write"),
        }
    }

    fn parse(word: &str) -> Option<Level> {
        match word {
            "read" => Some(Level::Read),
            "write" | "admin" => Some(Level::Write),
            _ => None,
        }
    }
}

impl From<Access> for Level {
    fn from(access: Access) -> Level {
        match access {
            Access::Read => Level::Read,
            Access::Write => Level::Write,
            Access::None => Level::None,
        }
    }
}

/// What a repository gives `GITHUB_TOKEN` when a workflow has no `permissions:`
/// (the repository or organization setting "Workflow permissions").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DefaultPermissions {
    /// "Read repository contents and packages permissions" (GitHub's default
    /// for repositories and organizations created since February 2023).
    #[default]
    Restricted,
    /// "Read and write permissions" (the older default).
    Permissive,
}

/// The `permissions:` scopes of a workflow, as GitHub App permission names.
/// `id-token` is not an App permission (OIDC tokens are not supported).
const SCOPES: [(&str, &str); 13] = [
    ("actions", "actions"),
    ("attestations", "attestations"),
    ("checks", "checks"),
    ("contents", "contents"),
    ("deployments", "deployments"),
    ("discussions", "discussions"),
    ("issues", "issues"),
    ("packages", "packages"),
    ("pages", "pages"),
    ("pull-requests", "pull_requests"),
    ("repository-projects", "repository_projects"),
    ("security-events", "security_events"),
    ("statuses", "statuses"),
];

/// Permissions of a token by GitHub App permission name (`contents`,
/// `pull_requests`, ...); a permission absent is `none`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TokenPermissions(pub BTreeMap<String, Level>);

impl TokenPermissions {
    /// Every scope at `level`.
    pub fn all(level: Level) -> TokenPermissions {
        let mut map = BTreeMap::new();
        for (_, name) in SCOPES {
            map.insert(name.to_string(), level);
        }
        TokenPermissions(map).normalized()
    }

    /// What a workflow without `permissions:` gets.
    pub fn defaults(defaults: DefaultPermissions) -> TokenPermissions {
        match defaults {
            DefaultPermissions::Permissive => TokenPermissions::all(Level::Write),
            DefaultPermissions::Restricted => TokenPermissions(BTreeMap::from([
                ("contents".to_string(), Level::Read),
                ("packages".to_string(), Level::Read),
            ]))
            .normalized(),
        }
    }

    /// One `permissions:` value; scopes a map leaves out are `none`.
    pub fn from_declared(declared: &Permissions) -> TokenPermissions {
        match declared {
            Permissions::ReadAll => TokenPermissions::all(Level::Read),
            Permissions::WriteAll => TokenPermissions::all(Level::Write),
            Permissions::Scopes(scopes) => {
                let mut map = BTreeMap::new();
                for (scope, access) in scopes {
                    if let Some((_, name)) = SCOPES.iter().find(|(s, _)| s == scope) {
                        map.insert(name.to_string(), Level::from(*access));
                    }
                }
                TokenPermissions(map).normalized()
            }
        }
    }

    /// The token of a run of `workflow`: the widest level each scope has in
    /// any of its jobs (a job's own `permissions:`, else the workflow's, else
    /// `defaults`). One token serves the whole run.
    pub fn for_workflow(
        workflow: &ParsedWorkflow,
        defaults: DefaultPermissions,
    ) -> TokenPermissions {
        let effective = |declared: Option<&Permissions>| match declared {
            Some(declared) => TokenPermissions::from_declared(declared),
            None => TokenPermissions::defaults(defaults),
        };
        let top = workflow.permissions.as_ref();
        let mut union = TokenPermissions::default();
        for job in workflow.jobs.values() {
            union = union.widest(&effective(job.permissions.as_ref().or(top)));
        }
        if workflow.jobs.is_empty() {
            union = effective(top);
        }
        union
    }

    /// Each permission at the higher of the two levels.
    pub fn widest(&self, other: &TokenPermissions) -> TokenPermissions {
        let mut map = self.0.clone();
        for (name, level) in &other.0 {
            let entry = map.entry(name.clone()).or_insert(Level::None);
            *entry = (*entry).max(*level);
        }
        TokenPermissions(map).normalized()
    }

    /// Every write made read (a pull request from a fork).
    pub fn read_only(&self) -> TokenPermissions {
        TokenPermissions(
            self.0
                .iter()
                .map(|(name, level)| (name.clone(), (*level).min(Level::Read)))
                .collect(),
        )
        .normalized()
    }

    /// Each permission at most what `granted` holds (GitHub refuses a token
    /// asking for more than the installation has).
    pub fn within(&self, granted: &TokenPermissions) -> TokenPermissions {
        TokenPermissions(
            self.0
                .iter()
                .map(|(name, level)| {
                    let held = granted.0.get(name).copied().unwrap_or(Level::None);
                    (name.clone(), (*level).min(held))
                })
                .collect(),
        )
        .normalized()
    }

    /// The level of `name`.
    pub fn level(&self, name: &str) -> Level {
        self.0.get(name).copied().unwrap_or(Level::None)
    }

    /// Whether any permission is `write`.
    pub fn can_write(&self) -> bool {
        self.0.values().any(|level| *level == Level::Write)
    }

    /// Reads GitHub's `{"contents": "read", ...}`; unknown words are skipped.
    pub fn from_json(value: &Value) -> TokenPermissions {
        let map = value
            .as_object()
            .map(|object| {
                object
                    .iter()
                    .filter_map(|(k, v)| Some((k.clone(), Level::parse(v.as_str()?)?)))
                    .collect()
            })
            .unwrap_or_default();
        TokenPermissions(map).normalized()
    }

    /// GitHub's `{"contents": "read", ...}` (`none` left out).
    pub fn to_json(&self) -> Value {
        Value::Object(
            self.0
                .iter()
                .filter_map(|(k, v)| Some((k.clone(), Value::String(v.as_str()?.to_string()))))
                .collect(),
        )
    }

    fn normalized(mut self) -> TokenPermissions {
        self.0.retain(|_, level| *level != Level::None);
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use firerunner_workflow::load::parse_workflow;

    fn workflow(text: &str) -> ParsedWorkflow {
        parse_workflow("ci.yml", text).unwrap()
    }

    const STEPS: &str = "runs-on: ubuntu-latest\n    steps:\n      - run: true\n";

    #[test]
    fn no_permissions_key_gets_the_repository_default() {
        let wf = workflow(&format!("on: push\njobs:\n  a:\n    {STEPS}"));
        let restricted = TokenPermissions::for_workflow(&wf, DefaultPermissions::Restricted);
        assert_eq!(restricted.level("contents"), Level::Read);
        assert_eq!(restricted.level("packages"), Level::Read);
        assert!(!restricted.can_write());
        let permissive = TokenPermissions::for_workflow(&wf, DefaultPermissions::Permissive);
        assert_eq!(permissive.level("contents"), Level::Write);
        assert_eq!(permissive.level("pull_requests"), Level::Write);
    }

    #[test]
    fn a_map_sets_unlisted_scopes_to_none_and_jobs_override_the_workflow() {
        let wf = workflow(&format!(
            "on: push\npermissions:\n  contents: read\njobs:\n  a:\n    {STEPS}  b:\n    permissions:\n      pull-requests: write\n      id-token: write\n    {STEPS}"
        ));
        let token = TokenPermissions::for_workflow(&wf, DefaultPermissions::Permissive);
        assert_eq!(
            token.to_json(),
            serde_json::json!({"contents": "read", "pull_requests": "write"})
        );
        let empty = workflow(&format!(
            "on: push\npermissions: {{}}\njobs:\n  a:\n    {STEPS}"
        ));
        assert_eq!(
            TokenPermissions::for_workflow(&empty, DefaultPermissions::Permissive),
            TokenPermissions::default()
        );
    }

    #[test]
    fn forks_read_and_the_installation_caps() {
        let wf = workflow(&format!(
            "on: push\npermissions: write-all\njobs:\n  a:\n    {STEPS}"
        ));
        let asked = TokenPermissions::for_workflow(&wf, DefaultPermissions::Restricted);
        assert_eq!(asked.level("statuses"), Level::Write);
        let fork = asked.read_only();
        assert!(!fork.can_write());
        assert_eq!(fork.level("contents"), Level::Read);
        let granted = TokenPermissions::from_json(
            &serde_json::json!({"contents": "read", "statuses": "write", "metadata": "read"}),
        );
        assert_eq!(
            asked.within(&granted).to_json(),
            serde_json::json!({"contents": "read", "statuses": "write"})
        );
    }
}
