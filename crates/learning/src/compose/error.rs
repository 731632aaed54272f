//! Why a request could not become a workflow.

/// Why a request could not become a workflow.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ComposeError {
    /// The request names no step to run.
    #[error("the request names no command to run (put commands in backticks, e.g. `make test`)")]
    NoSteps,
    /// A phrase is neither a command nor a known kind of work for a known ecosystem.
    #[error("cannot tell which command {phrase:?} means; name it, e.g. in backticks")]
    UnknownStep {
        /// The phrase.
        phrase: String,
    },
    /// A time of day could not be read.
    #[error("cannot read the time {0:?}")]
    BadTime(String),
    /// The generated YAML did not pass validation (a bug in this parser).
    #[error("the generated workflow is invalid:\n{0}")]
    Invalid(String),
}
