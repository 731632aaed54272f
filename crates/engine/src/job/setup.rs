//! A job's actions: "Set up job" finds every action the steps use before
//! the first step (the job fails naming each one that cannot be had and how
//! to provide it), and the job keeps what it learnt for the steps: the
//! resolver with its fetched repositories, the run's own repository for `$/`
//! actions, which action files are already in the guest, each action's
//! saved state and the post steps to run.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;

use firerunner_workflow::load::ParsedAction;
use firerunner_workflow::model::{Step, StepAction};
use firerunner_workflow::ActionRef;

use super::runner::JobRunner;
use super::StepError;
use crate::actions::remote::ActionSource;
use crate::actions::resolve::{read_action, MissingAction, Resolver};
use crate::checkout::CheckoutSource;

/// One run of an action, whose `pre`, main and `post` scripts share the
/// state saved through `GITHUB_STATE`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) enum ActionInstance {
    /// The job's step with this number (from 1).
    Top(usize),
    /// An action run inside a composite action (numbered as they run).
    Nested(usize),
}

/// A JavaScript action's `post:` script, run after the job's steps.
pub(super) struct PostStep {
    pub name: String,
    pub script: String,
    pub condition: String,
    pub env: BTreeMap<String, String>,
    pub instance: ActionInstance,
}

/// What a job knows about its actions while it runs.
pub(super) struct JobActions {
    source: ActionSource,
    /// Taken while it works on a blocking thread.
    resolver: Option<Resolver>,
    /// The run's repository prepared on the host, for `$/` actions.
    self_checkout: Option<tempfile::TempDir>,
    /// Guest folders that already hold an action's files.
    pub uploaded: HashSet<String>,
    /// What each action instance saved (`STATE_<name>` for its later scripts).
    pub state: HashMap<ActionInstance, Vec<(String, String)>>,
    /// `post:` scripts to run after the steps, in the order they were added.
    pub posts: Vec<PostStep>,
    posts_registered: HashSet<ActionInstance>,
    nested_runs: usize,
    /// The composite actions being run, outermost first.
    pub chain: Vec<String>,
    /// The env of the steps calling those composite actions.
    pub caller_env: Vec<BTreeMap<String, String>>,
    /// The repository and ref of the innermost composite action being run
    /// (empty at the job's own steps).
    pub enclosing: (String, String),
}

impl JobActions {
    pub fn new(source: ActionSource) -> Self {
        Self {
            resolver: Some(Resolver::new(source.clone(), None)),
            source,
            self_checkout: None,
            uploaded: HashSet::new(),
            state: HashMap::new(),
            posts: Vec::new(),
            posts_registered: HashSet::new(),
            nested_runs: 0,
            chain: Vec::new(),
            caller_env: Vec::new(),
            enclosing: (String::new(), String::new()),
        }
    }

    /// The instance an action run as the job's step `step` (or nested in a
    /// composite action) is.
    pub fn instance(&mut self, step: usize) -> ActionInstance {
        if self.chain.is_empty() {
            return ActionInstance::Top(step);
        }
        self.nested_runs += 1;
        ActionInstance::Nested(self.nested_runs)
    }

    /// Adds `post` unless one is already registered for its instance (a
    /// `pre:` registers it before the main script runs, as on GitHub).
    pub fn register_post(&mut self, post: PostStep) {
        if self.posts_registered.insert(post.instance) {
            self.posts.push(post);
        }
    }

    /// Merges what `instance` saved into its state (later names win, any case).
    pub fn save_state(&mut self, instance: ActionInstance, saved: Vec<(String, String)>) {
        let state = self.state.entry(instance).or_default();
        for (name, value) in saved {
            match state
                .iter_mut()
                .find(|(n, _)| n.eq_ignore_ascii_case(&name))
            {
                Some(entry) => entry.1 = value,
                None => state.push((name, value)),
            }
        }
    }

    /// The host folder of the run's own repository, once prepared.
    pub fn self_repo(&self) -> Option<PathBuf> {
        self.self_checkout
            .as_ref()
            .map(|dir| dir.path().to_path_buf())
    }
}

/// Whether any step uses an action of the run's own repository (`$/`).
fn uses_self_repository(steps: &[Step]) -> bool {
    steps.iter().any(|step| {
        matches!(
            &step.action,
            StepAction::Uses {
                reference: ActionRef::SelfRepo { .. },
                ..
            }
        )
    })
}

impl JobRunner<'_> {
    /// Finds every action `steps` use, nested ones included; false (with
    /// each missing action and the ways to provide them logged) when one
    /// cannot be had.
    pub(super) async fn set_up_actions(&mut self, steps: &[Step]) -> bool {
        self.runner_line("Prepare all required actions");
        if uses_self_repository(steps) {
            if let Err(error) = self.prepare_self_repo().await {
                self.runner_line(&format!(
                    "error: preparing the repository for '$/' actions: {error}"
                ));
                return false;
            }
        }
        self.runner_line("Getting action download info");
        let owned = steps.to_vec();
        let missing = self
            .with_resolver(move |resolver| {
                resolver.walk(&owned, &[]);
                resolver.take_missing()
            })
            .await;
        if missing.is_empty() {
            return true;
        }
        let headline = "so none of its steps ran";
        for line in missing_report(&missing, &self.actions.source, headline) {
            self.runner_line(&line);
        }
        false
    }

    /// Runs `work` with the job's resolver on a blocking thread (it runs
    /// git), then logs what it noted.
    pub(super) async fn with_resolver<T: Send + 'static>(
        &mut self,
        work: impl FnOnce(&mut Resolver) -> T + Send + 'static,
    ) -> T {
        let mut resolver = self.actions.resolver.take().unwrap_or_else(|| {
            Resolver::new(self.actions.source.clone(), self.actions.self_repo())
        });
        let (mut resolver, value) = tokio::task::spawn_blocking(move || {
            let value = work(&mut resolver);
            (resolver, value)
        })
        .await
        .unwrap_or_else(|panic| std::panic::resume_unwind(panic.into_panic()));
        for note in resolver.take_notes() {
            self.runner_line(&note);
        }
        self.actions.resolver = Some(resolver);
        value
    }

    /// Follows the `uses:` of a composite action about to run (one of the
    /// workspace, which "Set up job" could not see); an error names every
    /// action that cannot be had.
    pub(super) async fn resolve_nested(
        &mut self,
        label: &str,
        action: &ParsedAction,
    ) -> Result<(), StepError> {
        let (owned, action, chain) = (label.to_owned(), action.clone(), self.actions.chain.clone());
        let missing = self
            .with_resolver(move |resolver| {
                resolver.follow(&owned, &action, &chain);
                resolver.take_missing()
            })
            .await;
        if missing.is_empty() {
            return Ok(());
        }
        let headline = format!("which {label} uses");
        let report = missing_report(&missing, &self.actions.source, &headline);
        Err(StepError::MissingActions(report))
    }

    /// Prepares the run's own repository at its commit on the host (once),
    /// for `$/` actions.
    pub(super) async fn prepare_self_repo(&mut self) -> Result<PathBuf, StepError> {
        if let Some(dir) = self.actions.self_repo() {
            return Ok(dir);
        }
        let source = match self
            .environment
            .checkout
            .clone()
            .ok_or(StepError::NoRepository)?
        {
            CheckoutSource::Commit {
                repository,
                commit,
                credentials,
                ..
            } => CheckoutSource::Commit {
                repository,
                commit,
                depth: 1,
                credentials,
            },
            tree => tree,
        };
        let dir = tempfile::tempdir()?;
        super::actions::prepare_on_host(source, dir.path()).await?;
        let _ = std::fs::remove_dir_all(dir.path().join(".git"));
        let path = dir.path().to_path_buf();
        self.actions.self_checkout = Some(dir);
        let for_resolver = path.clone();
        self.with_resolver(move |resolver| resolver.set_self_repo(for_resolver))
            .await;
        Ok(path)
    }

    /// The `$/path` action of the run's repository.
    pub(super) async fn self_action(
        &mut self,
        path: &str,
    ) -> Result<(PathBuf, ParsedAction), StepError> {
        let root = self.prepare_self_repo().await?;
        let action = read_action(&root, path, &format!("$/{path}"))?;
        Ok((root, action))
    }
}

/// The log lines for actions that cannot be had: each one, then the ways to
/// provide them.
fn missing_report(missing: &[MissingAction], source: &ActionSource, headline: &str) -> Vec<String> {
    let count = missing.len();
    let noun = if count == 1 { "action" } else { "actions" };
    let mut lines = vec![format!("error: {count} {noun} cannot be had, {headline}:")];
    lines.extend(missing.iter().map(|m| format!("error:   {m}")));
    lines.extend(crate::actions::resolve::how_to_provide(source));
    lines
}
