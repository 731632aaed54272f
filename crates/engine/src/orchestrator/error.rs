//! What stops a job before its executor sees it: a bad `if:`, a matrix that
//! cannot be expanded, a reusable-workflow call that cannot be prepared. The
//! run goes on without that job and reports the error.

use firerunner_workflow::expr::ExprError;
use firerunner_workflow::plan::{MatrixError, PlanError};
use firerunner_workflow::Pos;

use crate::environment::EnvironmentError;
use crate::reusable::CalleeError;

/// An error of a run that is not a step's: the job it names did not run.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RunError {
    /// A job's `if:` could not be evaluated; the job is skipped.
    #[error("{file}: jobs.{job}.if: {source}")]
    JobIf {
        /// The workflow file.
        file: String,
        /// The job.
        job: String,
        /// What the expression said.
        source: ExprError,
    },
    /// A matrix made from `needs` outputs could not be expanded.
    #[error("{file}:{pos}: jobs.{job}.strategy.matrix: {problem}")]
    Matrix {
        /// The workflow file.
        file: String,
        /// Where the matrix is.
        pos: Pos,
        /// The job.
        job: String,
        /// What is wrong with it.
        problem: MatrixProblem,
    },
    /// A job calling a reusable workflow could not start the call.
    #[error("{job}: {source}")]
    Call {
        /// The calling job's display name.
        job: String,
        /// Why.
        source: CallError,
    },
    /// A job instance may not enter its environment.
    #[error("{job}: {source}")]
    Environment {
        /// The instance's display name.
        job: String,
        /// Why.
        source: EnvironmentError,
    },
    /// A called workflow's `on.workflow_call.outputs` entry failed.
    #[error("{file}: on.workflow_call.outputs.{name}: {source}")]
    CallOutput {
        /// The called workflow's file.
        file: String,
        /// The output.
        name: String,
        /// What the expression said.
        source: ExprError,
    },
    /// A job's task panicked or was aborted (a bug, not a job's doing).
    #[error("a job task ended abnormally: {0}")]
    TaskAborted(String),
}

/// Why a matrix evaluated at run time has no instances.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum MatrixProblem {
    /// Its expression failed.
    #[error(transparent)]
    Expression(ExprError),
    /// It evaluated to something other than a mapping.
    #[error("the matrix must be a mapping")]
    NotAMapping,
    /// Its vectors, `include` or `exclude` are invalid.
    #[error(transparent)]
    Expand(MatrixError),
    /// It expanded to nothing.
    #[error("the matrix has no combinations")]
    Empty,
}

/// Why a reusable-workflow call cannot start.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CallError {
    /// The called workflow is missing, unfetchable or invalid.
    #[error(transparent)]
    Callee(Box<CalleeError>),
    /// A `with:` value failed to evaluate.
    #[error("with.{input}: {source}")]
    Input {
        /// The input.
        input: String,
        /// What the expression said.
        source: ExprError,
    },
    /// A `secrets:` value failed to evaluate.
    #[error("secrets.{secret}: {source}")]
    Secret {
        /// The secret.
        secret: String,
        /// What the expression said.
        source: ExprError,
    },
    /// The called workflow could not be planned with the inputs given.
    #[error(transparent)]
    Plan(#[from] PlanError),
}

impl From<CalleeError> for CallError {
    fn from(error: CalleeError) -> Self {
        Self::Callee(Box::new(error))
    }
}
