//! "Set up job": every action a job uses, found before its first step runs,
//! as GitHub's runner prepares them. Remote actions are resolved to commits
//! and fetched (or taken from the action cache), the composite ones opened
//! and their own `uses:` followed down to GitHub's nesting limit, cycles
//! reported; `$/` actions are read from the run's own repository. Local
//! `./` actions live in the workspace, which only a step checks out: their
//! actions are followed when the step runs. What cannot be had is collected
//! as [`MissingAction`]s, so a job can fail before any step and name them all.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use firerunner_workflow::load::{parse_action, ActionRuns, ParsedAction};
use firerunner_workflow::model::{Step, StepAction};
use firerunner_workflow::{ActionRef, RemoteRef};

use super::native::HostServed;
use super::remote::{
    fetch_repository, repository_of, ActionSource, FetchError, FetchedRepo, Obtained,
};
use super::store::read_plain_file;
use crate::guest_input::ACTION_METADATA_LIMIT;

/// The deepest an action may be nested in composite actions: GitHub's
/// runner refuses depth 10 (a job's own step is depth 0), so actions nest
/// ten levels in all.
pub const MAX_COMPOSITE_DEPTH: usize = 9;

/// Why one action cannot be used.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ActionProblem {
    /// Its repository could not be had.
    #[error("{0}")]
    Fetch(Arc<FetchError>),
    /// The folder has no metadata file.
    #[error("{0} has no action.yml or action.yaml")]
    NoMetadata(String),
    /// A reusable workflow's file is not in its repository.
    #[error("{0}: the workflow file is not in its repository at that ref")]
    NoWorkflowFile(String),
    /// Its metadata does not load.
    #[error("{0}")]
    Invalid(String),
    /// It is among the composite actions that use it.
    #[error("it uses itself: {0}")]
    Cycle(String),
    /// It is nested deeper than GitHub allows.
    #[error("composite actions nest it deeper than GitHub's limit of {} levels", MAX_COMPOSITE_DEPTH + 1)]
    TooDeep,
}

/// An action a job uses that cannot be had.
#[derive(Debug, Clone)]
pub struct MissingAction {
    /// Its `uses:` as written (`octo/tool@v1`).
    pub uses: String,
    /// The composite actions it is nested in, outermost first.
    pub used_by: Vec<String>,
    /// Why.
    pub problem: ActionProblem,
}

impl fmt::Display for MissingAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.uses)?;
        if !self.used_by.is_empty() {
            write!(f, " (used by {})", self.used_by.join(" < "))?;
        }
        write!(f, ": {}", self.problem)
    }
}

/// The actions of one job (or one `actions pull`), found so far.
pub struct Resolver {
    source: ActionSource,
    self_repo: Option<PathBuf>,
    /// Where `./` actions are read from when they are known before a step
    /// checks them out (`actions pull` reads the repository on disk).
    local_root: Option<PathBuf>,
    repos: HashMap<String, Result<FetchedRepo, Arc<FetchError>>>,
    /// Actions whose steps were followed, with the depth they were followed at.
    walked: HashMap<String, usize>,
    served: HashSet<String>,
    notes: Vec<String>,
    missing: Vec<MissingAction>,
}

/// The key of an action or repository: GitHub ignores the case of owner
/// and repository.
fn key(remote: &RemoteRef) -> String {
    let mut remote = remote.clone();
    remote.owner.make_ascii_lowercase();
    remote.repo.make_ascii_lowercase();
    remote.to_string()
}

impl Resolver {
    /// A resolver fetching from `source`; `self_repo` holds the run's own
    /// repository for `$/` actions, when it is prepared.
    pub fn new(source: ActionSource, self_repo: Option<PathBuf>) -> Self {
        Self {
            source,
            self_repo,
            local_root: None,
            repos: HashMap::new(),
            walked: HashMap::new(),
            served: HashSet::new(),
            notes: Vec::new(),
            missing: Vec::new(),
        }
    }

    /// Where actions come from.
    pub fn source(&self) -> &ActionSource {
        &self.source
    }

    /// Reads `./` actions from `dir` (a repository on disk).
    pub fn set_local_root(&mut self, dir: PathBuf) {
        self.local_root = Some(dir);
    }

    /// Uses `dir` as the run's own repository for `$/` actions.
    pub fn set_self_repo(&mut self, dir: PathBuf) {
        self.self_repo = Some(dir);
    }

    /// Follows the steps of the composite action `label` (nested in `chain`,
    /// outermost first), as a step about to run it needs.
    pub fn follow(&mut self, label: &str, action: &ParsedAction, chain: &[String]) {
        self.walk_composite(label, action, chain);
    }

    /// Follows every `uses:` of `steps`, nested in the composite actions
    /// `chain` (outermost first). Blocking: runs git.
    pub fn walk(&mut self, steps: &[Step], chain: &[String]) {
        for step in steps {
            if let StepAction::Uses {
                uses, reference, ..
            } = &step.action
            {
                self.walk_reference(reference, &uses.value, chain);
            }
        }
    }

    /// Follows one `uses:` (`uses` as written), nested in `chain`.
    pub fn walk_reference(&mut self, reference: &ActionRef, uses: &str, chain: &[String]) {
        let (label, folder) = match reference {
            ActionRef::Remote(remote) if HostServed::of(remote).is_some() => {
                return self.note_served(remote);
            }
            ActionRef::Remote(remote) => (key(remote), None),
            ActionRef::SelfRepo { path } => match &self.self_repo {
                Some(root) => (format!("$/{path}"), Some((root.clone(), path))),
                None => return,
            },
            ActionRef::Local { path } => match &self.local_root {
                Some(root) => (format!("./{path}"), Some((root.clone(), path))),
                None => return,
            },
            ActionRef::Docker { .. } => return,
        };
        if let Some(problem) = nesting_problem(&label, chain) {
            return self.note_missing(uses, chain, problem);
        }
        let loaded = match (folder, reference) {
            (Some((root, path)), _) => read_action(&root, path, &label),
            (None, ActionRef::Remote(remote)) => self.action(remote).map(|(_, action)| action),
            (None, _) => return,
        };
        match loaded {
            Ok(action) => self.walk_composite(&label, &action, chain),
            Err(problem) => self.note_missing(uses, chain, problem),
        }
    }

    /// Notes (once) that the host serves `remote` itself.
    fn note_served(&mut self, remote: &RemoteRef) {
        let shown = format!("{}/{}@{}", remote.owner, remote.repo, remote.git_ref);
        if self.served.insert(shown.to_ascii_lowercase()) {
            self.notes
                .push(format!("Action '{shown}' is served by firerunner itself"));
        }
    }

    /// Follows the steps of a composite action found at depth `chain.len()`.
    fn walk_composite(&mut self, label: &str, action: &ParsedAction, chain: &[String]) {
        let ActionRuns::Composite(steps) = &action.runs else {
            return;
        };
        let depth = chain.len();
        if self
            .walked
            .get(label)
            .is_some_and(|&walked| walked >= depth)
        {
            return;
        }
        self.walked.insert(label.to_owned(), depth);
        let mut inner = chain.to_vec();
        inner.push(label.to_owned());
        self.walk(steps, &inner);
    }

    /// Records that `uses` (nested in `chain`) cannot be had.
    pub fn note_missing(&mut self, uses: &str, chain: &[String], problem: ActionProblem) {
        self.missing.push(MissingAction {
            uses: uses.to_owned(),
            used_by: chain.iter().rev().cloned().collect(),
            problem,
        });
    }

    /// The repository of `remote` at the commit its ref names, fetched or
    /// from the cache the first time it is asked for (noted for the log).
    pub fn repository(&mut self, remote: &RemoteRef) -> Result<FetchedRepo, ActionProblem> {
        let repository = repository_of(remote);
        let repo_key = key(&repository);
        if !self.repos.contains_key(&repo_key) {
            let fetched = fetch_repository(&self.source, &repository).map_err(Arc::new);
            if let Ok(fetched) = &fetched {
                self.notes.push(self.note(&repository, fetched));
            }
            self.repos.insert(repo_key.clone(), fetched);
        }
        match &self.repos[&repo_key] {
            Ok(fetched) => Ok(fetched.clone()),
            Err(err) => Err(ActionProblem::Fetch(err.clone())),
        }
    }

    /// The log line telling where `repository`'s files came from.
    fn note(&self, repository: &RemoteRef, fetched: &FetchedRepo) -> String {
        let (name, sha) = (repository.to_string(), &fetched.sha);
        match &fetched.obtained {
            Obtained::Downloaded => format!("Download action repository '{name}' (SHA:{sha})"),
            Obtained::Cached | Obtained::CachedOffline => {
                format!("Use action repository '{name}' (SHA:{sha}) from the action cache")
            }
            Obtained::CachedStale { reason } => format!(
                "warning: '{name}' could not be resolved at {} ({reason}); using SHA:{sha}, which it named before, from the action cache",
                self.source.base_url
            ),
        }
    }

    /// The remote action `remote`: its repository and its parsed metadata.
    pub fn action(
        &mut self,
        remote: &RemoteRef,
    ) -> Result<(FetchedRepo, ParsedAction), ActionProblem> {
        let repository = self.repository(remote)?;
        let action = read_action(&repository.dir, &remote.path, &remote.to_string())?;
        Ok((repository, action))
    }

    /// What was noted for the log since the last call.
    pub fn take_notes(&mut self) -> Vec<String> {
        std::mem::take(&mut self.notes)
    }

    /// What could not be had since the last call.
    pub fn take_missing(&mut self) -> Vec<MissingAction> {
        std::mem::take(&mut self.missing)
    }

    /// The ways to provide missing actions, for the log.
    pub fn how_to_provide(&self) -> Vec<String> {
        how_to_provide(&self.source)
    }
}

/// The problem with running the action `label` inside the composite actions
/// `chain` (outermost first): it is among them, or nested too deep.
pub fn nesting_problem(label: &str, chain: &[String]) -> Option<ActionProblem> {
    if let Some(at) = chain.iter().position(|outer| outer == label) {
        let mut path: Vec<&str> = chain[at..].iter().map(String::as_str).collect();
        path.push(label);
        return Some(ActionProblem::Cycle(path.join(" -> ")));
    }
    (chain.len() > MAX_COMPOSITE_DEPTH).then_some(ActionProblem::TooDeep)
}

/// The ways to provide actions `source` could not give, one per line.
pub fn how_to_provide(source: &ActionSource) -> Vec<String> {
    let cache = source.cache_dir.display();
    vec![
        "Provide them in one of these ways:".to_owned(),
        format!(
            "  - point the actions URL (--actions-url; now {}) at a git host or mirror that has them",
            source.base_url
        ),
        "  - a mirror is a folder of <owner>/<repo> git repositories, given as --actions-url file:///path/to/mirror".to_owned(),
        format!(
            "  - fill the action cache {cache}: run `firerunner actions pull -W .github/workflows` where they can be fetched and copy the folder here (layout: docs/engine.md)"
        ),
    ]
}

/// The metadata of the action in folder `path` of the repository at `root`
/// (read without following links, under [`ACTION_METADATA_LIMIT`]).
pub fn read_action(root: &Path, path: &str, label: &str) -> Result<ParsedAction, ActionProblem> {
    for name in ["action.yml", "action.yaml"] {
        let file = if path.is_empty() {
            name.to_owned()
        } else {
            format!("{path}/{name}")
        };
        if let Some(bytes) = read_plain_file(root, &file, ACTION_METADATA_LIMIT) {
            let text = String::from_utf8_lossy(&bytes);
            return parse_action(&format!("{label}/{name}"), &text)
                .map_err(|d| ActionProblem::Invalid(d.to_string()));
        }
    }
    Err(ActionProblem::NoMetadata(label.to_owned()))
}
