//! What a request asks for, read from its words: triggers, matrices and steps.

/// When a step runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Condition {
    Success,
    Failure,
    Always,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Ecosystem {
    Rust,
    Node,
    Python,
    Go,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Step {
    pub(super) name: Option<String>,
    pub(super) run: String,
    pub(super) condition: Condition,
}

#[derive(Debug, Default)]
pub(super) struct Triggers {
    pub(super) push: Option<Vec<String>>,
    pub(super) pull_request: Option<Vec<String>>,
    pub(super) tags: bool,
    pub(super) schedule: Vec<String>,
    pub(super) dispatch: bool,
}

impl Triggers {
    pub(super) fn is_empty(&self) -> bool {
        self.push.is_none()
            && self.pull_request.is_none()
            && !self.tags
            && self.schedule.is_empty()
            && !self.dispatch
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Matrix {
    /// `node`, `python`, `go`, `java`, `ruby`, `rust` or `os`.
    pub(super) key: &'static str,
    pub(super) values: Vec<String>,
}
