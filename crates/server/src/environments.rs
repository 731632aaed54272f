//! Environments as a team protects them: which branches and tags may deploy
//! to one, and who must approve a run's jobs before they start. The
//! [`RunGate`] is what the engine asks when a job names `environment:`; a
//! job waiting for approval shows as `waiting` on the dashboard until a
//! reviewer approves from the dashboard, the API, or a pull request comment
//! (`/firerunner approve [environment]`).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use firerunner_engine::environment::{
    BoxFuture, EnvironmentError, EnvironmentGate, EnvironmentGrant, EnvironmentRequest,
};
use firerunner_github::api::RepoRef;
use tokio_util::sync::CancellationToken;

use crate::executor::Trust;
use crate::live::LiveEvent;
use crate::masking::ReportMasker;
use crate::state::AppState;
use crate::store::{Approval, ApprovalState, EnvironmentRules, JobRecord, JobState, NewRun};
use crate::variables::VariableSources;
use crate::vault::Scope;

/// The ref a run deploys from, as deployment rules see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeployRef {
    /// A branch: the pushed branch, or a pull request's head branch.
    Branch(String),
    /// A tag.
    Tag(String),
    /// Anything else (a bare commit, `refs/pull/...` without a head).
    Other(String),
}

impl DeployRef {
    /// The ref of `run`: for pull request events the head branch (GitHub
    /// checks a pull request's own branch), else its `GITHUB_REF`.
    pub fn of_run(run: &NewRun, payload: &serde_json::Value) -> DeployRef {
        if run.event.starts_with("pull_request") {
            if let Some(head) = payload
                .pointer("/pull_request/head/ref")
                .and_then(|v| v.as_str())
            {
                return DeployRef::Branch(head.to_string());
            }
        }
        if let Some(branch) = run.git_ref.strip_prefix("refs/heads/") {
            DeployRef::Branch(branch.to_string())
        } else if let Some(tag) = run.git_ref.strip_prefix("refs/tags/") {
            DeployRef::Tag(tag.to_string())
        } else {
            DeployRef::Other(run.git_ref.clone())
        }
    }
}

/// Why a run may not deploy from its ref, or `None` when it may.
/// Patterns follow GitHub's `File.fnmatch` rules: `*` and `?` stop at `/`,
/// `**/` spans folders, `[abc]` is a class.
pub fn ref_refusal(rules: &EnvironmentRules, deploy: &DeployRef, trust: Trust) -> Option<String> {
    if rules.branches.is_empty() && rules.tags.is_empty() {
        return None;
    }
    let env = &rules.name;
    let allowed = |patterns: &[String], name: &str| patterns.iter().any(|p| fnmatch(p, name));
    let list = |patterns: &[String]| {
        if patterns.is_empty() {
            "none".to_string()
        } else {
            patterns.join(", ")
        }
    };
    if trust == Trust::Fork {
        return Some(format!(
            "a pull request from a fork may not deploy to environment {env}, which allows only some branches"
        ));
    }
    match deploy {
        DeployRef::Branch(branch) if allowed(&rules.branches, branch) => None,
        DeployRef::Branch(branch) => Some(format!(
            "branch {branch} may not deploy to environment {env} (its branches: {})",
            list(&rules.branches)
        )),
        DeployRef::Tag(tag) if allowed(&rules.tags, tag) => None,
        DeployRef::Tag(tag) => Some(format!(
            "tag {tag} may not deploy to environment {env} (its tags: {})",
            list(&rules.tags)
        )),
        DeployRef::Other(name) => Some(format!(
            "{name} is neither a branch nor a tag, and environment {env} allows only some"
        )),
    }
}

/// `File.fnmatch` with `FNM_PATHNAME`: `*` and `?` do not match `/`,
/// `**/` matches any number of folders, `[...]` a class (`[!...]` negated).
pub fn fnmatch(pattern: &str, name: &str) -> bool {
    fn go(p: &[u8], s: &[u8]) -> bool {
        match p {
            [] => s.is_empty(),
            [b'*', b'*', b'/', rest @ ..] => {
                go(rest, s)
                    || s.iter()
                        .enumerate()
                        .any(|(i, b)| *b == b'/' && go(rest, &s[i + 1..]))
            }
            [b'*', rest @ ..] => (0..=s.len())
                .take_while(|&i| i == 0 || s[i - 1] != b'/')
                .any(|i| go(rest, &s[i..])),
            [b'?', rest @ ..] => s.first().is_some_and(|c| *c != b'/') && go(rest, &s[1..]),
            [b'[', rest @ ..] => match (class(rest, s.first().copied()), s.first()) {
                (Some((true, after)), Some(_)) => go(after, &s[1..]),
                _ => false,
            },
            [c, rest @ ..] => s.first() == Some(c) && go(rest, &s[1..]),
        }
    }
    go(pattern.as_bytes(), name.as_bytes())
}

/// Whether `c` is in the class opening `p` (after its `[`), and the
/// pattern after the class; `None` for an unclosed class or a `/`.
fn class(p: &[u8], c: Option<u8>) -> Option<(bool, &[u8])> {
    let c = c.filter(|c| *c != b'/')?;
    let (negated, mut i) = match p.first() {
        Some(b'!' | b'^') => (true, 1),
        _ => (false, 0),
    };
    let mut matched = false;
    let mut first = true;
    while i < p.len() && (p[i] != b']' || first) {
        first = false;
        if i + 2 < p.len() && p[i + 1] == b'-' && p[i + 2] != b']' {
            matched |= (p[i]..=p[i + 2]).contains(&c);
            i += 3;
        } else {
            matched |= p[i] == c;
            i += 1;
        }
    }
    (i < p.len()).then(|| (matched != negated, &p[i + 1..]))
}

/// Which environment each job of a run entered, for its job record.
#[derive(Debug, Clone, Default)]
pub struct EnteredEnvironments(Arc<Mutex<HashMap<String, String>>>);

impl EnteredEnvironments {
    /// The environment job `name` entered (or waits for).
    pub fn of(&self, name: &str) -> Option<String> {
        self.0.lock().expect("environments").get(name).cloned()
    }

    fn record(&self, name: &str, environment: &str) {
        let mut entered = self.0.lock().expect("environments");
        entered.insert(name.to_string(), environment.to_string());
    }
}

/// How often a waiting job looks at the store (approvals on other hosts).
const APPROVAL_POLL: Duration = Duration::from_secs(2);

/// The gate of one run: its repository's environment rules, approvals,
/// and the environments' secrets and variables (none for a fork).
pub struct RunGate {
    state: AppState,
    run: NewRun,
    trust: Trust,
    deploy: DeployRef,
    masker: ReportMasker,
    entered: EnteredEnvironments,
}

impl RunGate {
    /// The gate of `run` (triggered with `payload`); secrets it hands out are
    /// added to `masker`, environments entered to `entered`.
    pub fn new(
        state: AppState,
        run: NewRun,
        payload: &serde_json::Value,
        trust: Trust,
        masker: ReportMasker,
        entered: EnteredEnvironments,
    ) -> Self {
        let deploy = DeployRef::of_run(&run, payload);
        Self {
            state,
            run,
            trust,
            deploy,
            masker,
            entered,
        }
    }

    fn unavailable(&self, environment: &str, message: impl ToString) -> EnvironmentError {
        EnvironmentError::Unavailable {
            environment: environment.to_string(),
            message: message.to_string(),
        }
    }

    /// The rules of `environment` of the run's repository, if it has any.
    async fn rules(&self, environment: &str) -> Result<Option<EnvironmentRules>, EnvironmentError> {
        let repository = self.run.repository.to_ascii_lowercase();
        let name = environment.to_lowercase();
        let all = self
            .state
            .store
            .environments(Some(&repository))
            .await
            .map_err(|err| self.unavailable(environment, err))?;
        Ok(all.into_iter().find(|rules| rules.name == name))
    }

    async fn enter_environment(
        &self,
        request: EnvironmentRequest,
        cancel: &CancellationToken,
    ) -> Result<EnvironmentGrant, EnvironmentError> {
        let environment = request.environment.clone();
        self.entered.record(&request.job_name, &environment);
        let mut notes = Vec::new();
        if let Some(rules) = self.rules(&environment).await? {
            if let Some(refusal) = ref_refusal(&rules, &self.deploy, self.trust) {
                return Err(EnvironmentError::Refused(refusal));
            }
            if !rules.reviewers.is_empty() {
                notes.push(self.wait_for_approval(&rules, &request, cancel).await?);
            }
        }
        if self.trust == Trust::Fork {
            notes.push(format!(
                "environment {environment}: a pull request from a fork gets none of its secrets or variables"
            ));
            return Ok(EnvironmentGrant {
                notes,
                ..EnvironmentGrant::default()
            });
        }
        let (secrets, vars) = self.contents(&environment).await?;
        self.masker.add(secrets.values());
        notes.push(format!(
            "environment {environment}: {} secret(s) and {} variable(s)",
            secrets.len(),
            vars.len()
        ));
        Ok(EnvironmentGrant {
            secrets,
            vars,
            notes,
        })
    }

    /// The environment's secrets and variables.
    async fn contents(
        &self,
        environment: &str,
    ) -> Result<(BTreeMap<String, String>, BTreeMap<String, String>), EnvironmentError> {
        let scope = Scope::from_parts(None, Some(&self.run.repository), Some(environment))
            .map_err(|err| self.unavailable(environment, err))?;
        let secrets = self
            .state
            .settings
            .secrets_of(&[scope])
            .await
            .map_err(|err| self.unavailable(environment, err))?;
        let repo = RepoRef::parse(
            &self.run.repository,
            self.run.installation_id.map(|i| i as u64),
        )
        .ok_or_else(|| self.unavailable(environment, "the repository is not owner/name"))?;
        let sources = VariableSources {
            settings: &self.state.settings,
            github: self
                .state
                .github
                .as_ref()
                .map(|g| (g, self.state.github_variables.as_ref())),
        };
        let vars = sources
            .of_environment(&repo, environment)
            .await
            .map_err(|err| self.unavailable(environment, err))?;
        Ok((secrets, vars))
    }

    /// Waits until a reviewer of `rules` decides the run's request for the
    /// environment; the note for the job's log when it was approved.
    async fn wait_for_approval(
        &self,
        rules: &EnvironmentRules,
        request: &EnvironmentRequest,
        cancel: &CancellationToken,
    ) -> Result<String, EnvironmentError> {
        let environment = &request.environment;
        let store = &self.state.store;
        let unavailable = |err: crate::store::StoreError| self.unavailable(environment, err);
        let mut approval = store
            .request_approval(
                &self.run.id,
                &rules.name,
                &rules.repository,
                &request.job_name,
                &rules.reviewers,
            )
            .await
            .map_err(unavailable)?;
        let asked = Instant::now();
        if approval.state == ApprovalState::Waiting {
            self.show_waiting(&request.job_name, environment).await;
        }
        loop {
            match approval.state {
                ApprovalState::Approved => return Ok(approved_note(&approval, asked.elapsed())),
                ApprovalState::Rejected => {
                    let by = approval.decided_by.as_deref().unwrap_or("a reviewer");
                    let message =
                        format!("{by} rejected the deployment to environment {environment}");
                    return Err(EnvironmentError::Refused(message));
                }
                ApprovalState::Waiting => {}
            }
            approval = self.reread(&rules.name, environment, cancel).await?;
        }
    }

    /// The run's request for `name` after the next decision here, or the
    /// next poll of the store (another host may have recorded it).
    async fn reread(
        &self,
        name: &str,
        environment: &str,
        cancel: &CancellationToken,
    ) -> Result<Approval, EnvironmentError> {
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return Err(EnvironmentError::Cancelled(environment.to_string())),
                _ = self.state.wake_approvals.notified() => {}
                _ = tokio::time::sleep(APPROVAL_POLL) => {}
            }
            match self.state.store.approval(&self.run.id, name).await {
                Ok(Some(approval)) => return Ok(approval),
                Ok(None) => {
                    return Err(self.unavailable(environment, "the approval request is gone"))
                }
                Err(err) => tracing::warn!(run = self.run.id, "reading an approval: {err}"),
            }
        }
    }

    /// Marks the job `waiting` for the dashboard and the API.
    async fn show_waiting(&self, job: &str, environment: &str) {
        let record = JobRecord {
            run_id: self.run.id.clone(),
            name: job.to_string(),
            state: JobState::Waiting,
            conclusion: None,
            worker: None,
            started_at: None,
            finished_at: None,
            steps: "[]".into(),
            summary: String::new(),
            log_tail: String::new(),
            hints: String::new(),
            environment: Some(environment.to_string()),
            environment_url: None,
        };
        if let Err(err) = self.state.store.save_job(&record).await {
            tracing::warn!(run = self.run.id, "saving a waiting job: {err}");
        }
        self.state.live.publish(LiveEvent::Job(record));
    }
}

fn approved_note(approval: &Approval, waited: Duration) -> String {
    let by = approval.decided_by.as_deref().unwrap_or("a reviewer");
    format!(
        "environment {}: deployment approved by {by} (waited {}s)",
        approval.environment,
        waited.as_secs()
    )
}

impl EnvironmentGate for RunGate {
    fn enter<'a>(
        &'a self,
        request: EnvironmentRequest,
        cancel: &'a CancellationToken,
    ) -> BoxFuture<'a, Result<EnvironmentGrant, EnvironmentError>> {
        Box::pin(self.enter_environment(request, cancel))
    }
}

/// Why a decision was not recorded.
#[derive(Debug, thiserror::Error)]
pub enum DecisionError {
    /// No waiting request of that run for that environment.
    #[error("run {run_id} is not waiting for approval to deploy to {environment}")]
    NotWaiting {
        /// The run.
        run_id: String,
        /// The environment.
        environment: String,
    },
    /// The store failed.
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
}

/// Records a reviewer's decision on a run's waiting request and wakes the
/// jobs that wait for it.
pub async fn decide(
    state: &AppState,
    run_id: &str,
    environment: &str,
    decision: ApprovalState,
    by: &str,
) -> Result<(), DecisionError> {
    let environment = environment.to_lowercase();
    if !state
        .store
        .decide_approval(run_id, &environment, decision, by)
        .await?
    {
        let run_id = run_id.to_string();
        return Err(DecisionError::NotWaiting {
            run_id,
            environment,
        });
    }
    tracing::info!(run = run_id, environment, by, "deployment {decision}");
    state.wake_approvals.notify_waiters();
    if let Ok(Some(run)) = state.store.run(run_id).await {
        state.live.publish(LiveEvent::Run(run));
    }
    Ok(())
}

/// A `/firerunner approve|reject [environment]` command on its own line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Command {
    /// Approve or reject.
    pub decision: ApprovalState,
    /// The environment named, if one was.
    pub environment: Option<String>,
}

/// The command in a comment's body, if it holds one.
pub fn parse_command(body: &str) -> Option<Command> {
    body.lines().find_map(|line| {
        let mut words = line.split_whitespace();
        if words.next() != Some("/firerunner") {
            return None;
        }
        let decision = match words.next()? {
            "approve" => ApprovalState::Approved,
            "reject" => ApprovalState::Rejected,
            _ => return None,
        };
        let environment = words.next().map(str::to_lowercase);
        Some(Command {
            decision,
            environment,
        })
    })
}

/// Acts on an `issue_comment` delivery that holds a command: a new
/// comment (not an edit) on a pull request, by a user (not a bot) named
/// among the environment's reviewers, decides the waiting requests of that
/// pull request's runs. Returns what was done, for the delivery's note.
pub async fn comment_command(
    state: &AppState,
    event: &str,
    payload: &serde_json::Value,
) -> Option<String> {
    if event != "issue_comment" || payload["action"] != "created" {
        return None;
    }
    payload["issue"].get("pull_request")?;
    let command = parse_command(payload["comment"]["body"].as_str()?)?;
    let login = payload["comment"]["user"]["login"].as_str()?;
    if payload["comment"]["user"]["type"] == "Bot" {
        return Some(format!(
            "{login} is a bot: its /firerunner commands are ignored"
        ));
    }
    let repository = payload["repository"]["full_name"]
        .as_str()?
        .to_ascii_lowercase();
    let number = payload["issue"]["number"].as_i64()?;
    let waiting = state.store.approvals(None).await.ok()?;
    let mut notes = Vec::new();
    for approval in waiting.iter().filter(|a| a.repository == repository) {
        let wanted = command
            .environment
            .as_ref()
            .is_none_or(|e| *e == approval.environment);
        let run = state.store.run(&approval.run_id).await.ok().flatten();
        if !wanted || run.is_none_or(|run| run.run.pr_number != Some(number)) {
            continue;
        }
        notes.push(decide_by_comment(state, approval, &command, login).await);
    }
    if notes.is_empty() {
        notes.push(format!(
            "/firerunner {}: no run of pull request #{number} waits for approval",
            command.decision
        ));
    }
    Some(notes.join("; "))
}

async fn decide_by_comment(
    state: &AppState,
    approval: &Approval,
    command: &Command,
    login: &str,
) -> String {
    let environment = &approval.environment;
    if !approval
        .reviewers
        .iter()
        .any(|r| r.eq_ignore_ascii_case(login))
    {
        let reviewers = approval.reviewers.join(", ");
        return format!(
            "{login} is not a reviewer of {environment} ({reviewers}); nothing decided"
        );
    }
    let by = format!("{login} (pull request comment)");
    match decide(state, &approval.run_id, environment, command.decision, &by).await {
        Ok(()) => format!(
            "{environment} of run {} {} by {login}",
            approval.run_id, command.decision
        ),
        Err(err) => err.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_follow_fnmatch_with_pathname() {
        assert!(fnmatch("main", "main"));
        assert!(!fnmatch("main", "main2"));
        assert!(fnmatch("release/*", "release/1.0"));
        assert!(!fnmatch("release/*", "release/1.0/hotfix"));
        assert!(fnmatch("release/*/*", "release/1.0/hotfix"));
        assert!(fnmatch("release/**/*", "release/a/b/c"));
        assert!(fnmatch("release/**/*", "release/a"));
        assert!(fnmatch("v[0-9].*", "v1.2"));
        assert!(!fnmatch("v[!0-9]*", "v1"));
        assert!(fnmatch("feature-?", "feature-a"));
        assert!(!fnmatch("*", "a/b"));
    }

    fn rules(branches: &[&str], tags: &[&str]) -> EnvironmentRules {
        EnvironmentRules {
            repository: "octo/app".into(),
            name: "production".into(),
            branches: branches.iter().map(|b| b.to_string()).collect(),
            tags: tags.iter().map(|t| t.to_string()).collect(),
            ..EnvironmentRules::default()
        }
    }

    #[test]
    fn branches_and_tags_are_checked_against_their_own_lists() {
        let main = DeployRef::Branch("main".into());
        let feature = DeployRef::Branch("feature/x".into());
        let tag = DeployRef::Tag("v1.0".into());
        let repo = Trust::Repository;
        assert_eq!(ref_refusal(&rules(&[], &[]), &feature, repo), None);
        assert_eq!(ref_refusal(&rules(&["main"], &[]), &main, repo), None);
        let refusal = ref_refusal(&rules(&["main", "release/*"], &[]), &feature, repo).unwrap();
        assert_eq!(
            refusal,
            "branch feature/x may not deploy to environment production (its branches: main, release/*)"
        );
        assert!(ref_refusal(&rules(&["main"], &[]), &tag, repo).is_some());
        assert_eq!(ref_refusal(&rules(&["main"], &["v*"]), &tag, repo), None);
        assert!(ref_refusal(&rules(&["main"], &[]), &main, Trust::Fork).is_some());
    }

    #[test]
    fn commands_are_found_on_their_own_line() {
        let approve = parse_command("LGTM\n/firerunner approve Production\n").unwrap();
        assert_eq!(approve.decision, ApprovalState::Approved);
        assert_eq!(approve.environment.as_deref(), Some("production"));
        let reject = parse_command("/firerunner reject").unwrap();
        assert_eq!(reject.decision, ApprovalState::Rejected);
        assert_eq!(reject.environment, None);
        assert_eq!(parse_command("please /firerunner approve"), None);
        assert_eq!(parse_command("/firerunner approves"), None);
    }

    #[test]
    fn a_pull_request_deploys_from_its_head_branch() {
        let run = NewRun {
            event: "pull_request".into(),
            git_ref: "refs/pull/7/merge".into(),
            ..NewRun::default()
        };
        let payload = serde_json::json!({"pull_request": {"head": {"ref": "feature/x"}}});
        assert_eq!(
            DeployRef::of_run(&run, &payload),
            DeployRef::Branch("feature/x".into())
        );
        let push = NewRun {
            event: "push".into(),
            git_ref: "refs/tags/v2".into(),
            ..NewRun::default()
        };
        assert_eq!(
            DeployRef::of_run(&push, &serde_json::json!({})),
            DeployRef::Tag("v2".into())
        );
    }
}
