//! Trigger decisions: does an event with its payload start a workflow?
//!
//! Every filter of `on:` is honoured as GitHub documents it: branch and tag
//! filters (ordered, with `!` negation), path filters on the changed files, and
//! activity `types`.

mod dispatch;
mod glob;

use std::collections::HashSet;

pub use dispatch::{check_dispatch_inputs, DispatchInputError};
pub use glob::{validate_pattern, Glob, GlobError, PatternList};

use crate::model::{EventFilters, EventTrigger, ParsedWorkflow, Template};

/// GitHub compares at most this many changed files against path filters.
pub const MAX_DIFF_FILES: usize = 300;
/// A push with more commits than this runs whatever its path filters say.
pub const MAX_DIFF_COMMITS: usize = 1000;
/// Activity types that trigger `pull_request` and `pull_request_target` when `types` is absent.
pub const DEFAULT_PULL_REQUEST_TYPES: [&str; 3] = ["opened", "synchronize", "reopened"];

/// A webhook event as the trigger filters see it.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// The event name (`push`, `pull_request`, ...), as in `X-GitHub-Event`.
    pub name: String,
    /// The webhook payload.
    pub payload: serde_json::Value,
    /// The files the event changes, when known from outside the payload
    /// (a pull request's files come from the API, not from its webhook).
    pub changed_files: Option<Vec<String>>,
}

impl Event {
    /// An event with its payload and no separately supplied file list.
    pub fn new(name: impl Into<String>, payload: serde_json::Value) -> Self {
        Self {
            name: name.into(),
            payload,
            changed_files: None,
        }
    }

    /// The same event with its changed files given.
    pub fn with_changed_files(mut self, files: Vec<String>) -> Self {
        self.changed_files = Some(files);
        self
    }

    fn str_at(&self, pointer: &str) -> Option<&str> {
        self.payload.pointer(pointer).and_then(|v| v.as_str())
    }

    /// The changed files: the supplied list, else those of a push payload's commits.
    /// `None` when neither is known.
    pub fn files(&self) -> Option<Vec<String>> {
        if let Some(files) = &self.changed_files {
            return Some(files.clone());
        }
        let commits = self.payload.get("commits")?.as_array()?;
        let mut seen = HashSet::new();
        let mut files = Vec::new();
        for commit in commits {
            for key in ["added", "modified", "removed"] {
                for file in commit
                    .get(key)
                    .and_then(|v| v.as_array())
                    .into_iter()
                    .flatten()
                {
                    if let Some(f) = file.as_str() {
                        if seen.insert(f.to_owned()) {
                            files.push(f.to_owned());
                        }
                    }
                }
            }
        }
        Some(files)
    }
}

/// Whether a workflow runs for an event, and why not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TriggerDecision {
    /// The workflow runs.
    Run,
    /// The workflow does not run, for the reason given.
    Skip {
        /// A sentence for the user.
        reason: String,
    },
    /// A path filter applies but the changed files are unknown: supply them
    /// ([`Event::with_changed_files`]) and decide again.
    NeedsChangedFiles,
}

impl TriggerDecision {
    fn skip(reason: impl Into<String>) -> Self {
        TriggerDecision::Skip {
            reason: reason.into(),
        }
    }
}

/// A check that passes, or the decision it reaches when it does not.
type Check = Result<(), TriggerDecision>;

/// Decides whether `event` triggers `workflow`.
pub fn decide(workflow: &ParsedWorkflow, event: &Event) -> TriggerDecision {
    match check(workflow, event) {
        Ok(()) => TriggerDecision::Run,
        Err(decision) => decision,
    }
}

fn check(workflow: &ParsedWorkflow, event: &Event) -> Check {
    let Some(trigger) = workflow.on.events.get(&event.name) else {
        return Err(TriggerDecision::skip(format!(
            "the workflow does not run on '{}'",
            event.name
        )));
    };
    let check = EventCheck {
        workflow,
        trigger,
        filters: &trigger.filters,
        event,
        section: format!("on.{}", event.name),
    };
    match event.name.as_str() {
        "push" => check.push(),
        "pull_request" | "pull_request_target" => check.pull_request(),
        "workflow_run" => check.workflow_run(),
        "merge_group" => {
            check.types()?;
            check.branches(base_branch(event, "/merge_group/base_ref"), "base branch")
        }
        "schedule" => check.schedule(),
        _ => check.types(),
    }
}

/// An event checked against the workflow's trigger for it.
struct EventCheck<'a> {
    workflow: &'a ParsedWorkflow,
    trigger: &'a EventTrigger,
    filters: &'a EventFilters,
    event: &'a Event,
    /// `on.<event>`.
    section: String,
}

impl EventCheck<'_> {
    fn pull_request(&self) -> Check {
        let section = &self.section;
        let action = self.event.str_at("/action").unwrap_or("");
        let types_ok = match &self.filters.types {
            Some(types) => types.iter().any(|t| t.value == action),
            None => DEFAULT_PULL_REQUEST_TYPES.contains(&action),
        };
        if !types_ok {
            return Err(TriggerDecision::skip(format!(
                "activity type '{action}' is not in {section}.types"
            )));
        }
        self.branches(
            base_branch(self.event, "/pull_request/base/ref"),
            "base branch",
        )?;
        self.paths()
    }

    fn workflow_run(&self) -> Check {
        let (section, workflows) = (&self.section, &self.trigger.workflows);
        let name = self.event.str_at("/workflow_run/name").unwrap_or("");
        let listed = compile(workflows).is_some_and(|list| list.is_match(name));
        if !workflows.is_empty() && !listed {
            return Err(TriggerDecision::skip(format!(
                "workflow '{name}' matches no name in {section}.workflows"
            )));
        }
        self.types()?;
        let branch = self.event.str_at("/workflow_run/head_branch").unwrap_or("");
        self.branches(branch, "branch")
    }

    fn schedule(&self) -> Check {
        match self.event.str_at("/schedule") {
            Some(cron) if !self.workflow.on.schedule.iter().any(|c| c.value == cron) => {
                Err(TriggerDecision::skip(format!(
                    "schedule '{cron}' is not one of the workflow's on.schedule cron lines"
                )))
            }
            _ => Ok(()),
        }
    }

    /// The event's activity type is one of the filter's `types`.
    fn types(&self) -> Check {
        let Some(types) = &self.filters.types else {
            return Ok(());
        };
        let action = self.event.str_at("/action").unwrap_or("");
        if types.iter().any(|t| t.value == action) {
            Ok(())
        } else {
            Err(TriggerDecision::skip(format!(
                "activity type '{action}' is not in {}.types",
                self.section
            )))
        }
    }

    /// The branch `name` (`what`, for messages) passes `branches` and `branches-ignore`.
    fn branches(&self, name: &str, what: &str) -> Check {
        let filters = self.filters;
        let (include, ignore) = (
            filters.branches.as_deref(),
            filters.branches_ignore.as_deref(),
        );
        self.ref_filter(include, ignore, name, what, "branches")
    }

    /// A pushed tag passes the tag filters, a pushed branch the branch and
    /// path filters.
    fn push(&self) -> Check {
        let (filters, section) = (self.filters, &self.section);
        let git_ref = self.event.str_at("/ref").unwrap_or("");
        let has_branch_filter = filters.branches.is_some() || filters.branches_ignore.is_some();
        let has_tag_filter = filters.tags.is_some() || filters.tags_ignore.is_some();
        if let Some(tag) = git_ref.strip_prefix("refs/tags/") {
            if !has_tag_filter && has_branch_filter {
                return Err(TriggerDecision::skip(format!(
                    "tag '{tag}' was pushed but {section} filters only branches"
                )));
            }
            let (include, ignore) = (filters.tags.as_deref(), filters.tags_ignore.as_deref());
            return self.ref_filter(include, ignore, tag, "tag", "tags");
        }
        let branch = git_ref.strip_prefix("refs/heads/").unwrap_or(git_ref);
        if !has_branch_filter && has_tag_filter {
            return Err(TriggerDecision::skip(format!(
                "branch '{branch}' was pushed but {section} filters only tags"
            )));
        }
        self.branches(branch, "branch")?;
        self.pushed_paths(branch)
    }

    /// The path filters of a push to `branch`.
    fn pushed_paths(&self, branch: &str) -> Check {
        let (filters, payload) = (self.filters, &self.event.payload);
        let deleted = payload.get("deleted").and_then(|d| d.as_bool()) == Some(true);
        if deleted && (filters.paths.is_some() || filters.paths_ignore.is_some()) {
            return Err(TriggerDecision::skip(format!(
                "branch '{branch}' was deleted, which changes no file for {} path filters",
                self.section
            )));
        }
        let commits = payload
            .get("commits")
            .and_then(|c| c.as_array())
            .map_or(0, Vec::len);
        if commits > MAX_DIFF_COMMITS {
            return Ok(());
        }
        self.paths()
    }

    /// `name` matches a pattern of `include` (when given) and none of `ignore`.
    fn ref_filter(
        &self,
        include: Option<&[Template]>,
        ignore: Option<&[Template]>,
        name: &str,
        what: &str,
        key: &str,
    ) -> Check {
        let section = &self.section;
        if let Some(list) = include.and_then(compile) {
            if !list.is_match(name) {
                return Err(TriggerDecision::skip(format!(
                    "{what} '{name}' matches no pattern in {section}.{key}"
                )));
            }
        }
        if let Some(list) = ignore.and_then(compile) {
            if list.is_match(name) {
                return Err(TriggerDecision::skip(format!(
                    "{what} '{name}' matches {section}.{key}-ignore"
                )));
            }
        }
        Ok(())
    }

    /// Some changed file passes `paths` and not every one matches `paths-ignore`.
    fn paths(&self) -> Check {
        let (filters, section) = (self.filters, &self.section);
        if filters.paths.is_none() && filters.paths_ignore.is_none() {
            return Ok(());
        }
        let Some(mut files) = self.event.files() else {
            return Err(TriggerDecision::NeedsChangedFiles);
        };
        if files.is_empty() {
            return Err(TriggerDecision::skip(format!(
                "no file changed, so {section} path filters match nothing"
            )));
        }
        files.truncate(MAX_DIFF_FILES);
        if let Some(list) = filters.paths.as_deref().and_then(compile) {
            if !files.iter().any(|f| list.is_match(f)) {
                return Err(TriggerDecision::skip(format!(
                    "no changed file matches {section}.paths"
                )));
            }
        }
        if let Some(list) = filters.paths_ignore.as_deref().and_then(compile) {
            if files.iter().all(|f| list.is_match(f)) {
                return Err(TriggerDecision::skip(format!(
                    "every changed file matches {section}.paths-ignore"
                )));
            }
        }
        Ok(())
    }
}

/// The branch name at `pointer` in the payload, without `refs/heads/`.
fn base_branch<'e>(event: &'e Event, pointer: &str) -> &'e str {
    let name = event.str_at(pointer).unwrap_or("");
    name.strip_prefix("refs/heads/").unwrap_or(name)
}

fn compile(patterns: &[Template]) -> Option<PatternList> {
    PatternList::new(patterns.iter().map(|p| p.value.as_str())).ok()
}

/// Decides for each workflow, in the order given.
pub fn select<'w>(
    workflows: &'w [ParsedWorkflow],
    event: &Event,
) -> Vec<(&'w ParsedWorkflow, TriggerDecision)> {
    workflows.iter().map(|w| (w, decide(w, event))).collect()
}
