//! Why a step (or the job's set-up) could not finish: an infrastructure fault
//! (the VM, its agent or the host failed, so the step could not be run) or a
//! failing step (its expressions, inputs, action or files are at fault).

use firerunner_agent_proto::ClientError;
use firerunner_workflow::expr::ExprError;

use crate::actions::native::NativeActionError;
use crate::actions::resolve::ActionProblem;
use crate::checkout::CheckoutError;
use crate::guest_input::ReadError;
use crate::runner_text::ShellError;
use crate::sandbox::SandboxError;

/// Why a step could not finish. Every variant fails the step; the Display text is
/// what the job log shows after `error: `.
#[derive(Debug, thiserror::Error)]
pub enum StepError {
    /// The guest connection failed.
    #[error(transparent)]
    Sandbox(#[from] SandboxError),
    /// Streaming files to or from the guest failed.
    #[error(transparent)]
    Transfer(#[from] ClientError),
    /// The guest sent a file command that could not be read (too large, or the
    /// connection failed).
    #[error(transparent)]
    GuestInput(#[from] ReadError),
    /// A host-side operation (temporary folder, event file) failed.
    #[error(transparent)]
    Host(#[from] std::io::Error),
    /// The event payload could not be written as JSON.
    #[error(transparent)]
    Event(#[from] serde_json::Error),
    /// A host task (git) could not be joined.
    #[error(transparent)]
    Task(#[from] tokio::task::JoinError),
    /// An expression of the step failed to evaluate.
    #[error(transparent)]
    Expression(#[from] ExprError),
    /// A `with:` input failed to evaluate.
    #[error("with.{name}: {source}")]
    Input {
        /// The input.
        name: String,
        /// Why.
        source: ExprError,
    },
    /// A required action input was not given.
    #[error("input '{0}' is required")]
    MissingInput(String),
    /// An input has a value the action does not take.
    #[error("{0}")]
    InvalidInput(String),
    /// An action output failed to evaluate.
    #[error("outputs.{name}: {source}")]
    Output {
        /// The output.
        name: String,
        /// Why.
        source: ExprError,
    },
    /// The step's `shell:` cannot run a script.
    #[error(transparent)]
    Shell(#[from] ShellError),
    /// `actions/checkout` without a repository to check out.
    #[error("no repository is known for this run")]
    NoRepository,
    /// Preparing a checkout on the host failed.
    #[error(transparent)]
    Checkout(#[from] CheckoutError),
    /// An action could not be had (fetched, read, or nested as it is).
    #[error(transparent)]
    Action(#[from] ActionProblem),
    /// Actions a composite action uses cannot be had (the report's lines).
    #[error("{}", .0.join("\n"))]
    MissingActions(Vec<String>),
    /// A local action's folder has no `action.yml`.
    #[error("no action.yml in {0} (is the repository checked out?)")]
    NoLocalActionFile(String),
    /// An `action.yml` that does not load.
    #[error("{0}")]
    ActionFile(String),
    /// A JavaScript action in a guest without node.
    #[error("this '{0}' action needs node, which the guest image does not have")]
    NoNode(String),
    /// A kind of action firerunner does not run.
    #[error("{0}")]
    Unsupported(&'static str),
    /// A natively served action failed.
    #[error(transparent)]
    Native(#[from] NativeActionError),
    /// A natively served action whose store the run did not configure.
    #[error("no {0} store is configured")]
    NoStore(&'static str),
}

impl StepError {
    /// True when the VM, its agent or the host failed (the step could not be
    /// run); false when the step itself failed (its code, inputs or action).
    pub fn is_infrastructure(&self) -> bool {
        match self {
            Self::Sandbox(_) | Self::Transfer(_) | Self::Host(_) | Self::Event(_) => true,
            Self::Task(_) | Self::NoStore(_) | Self::NoRepository => true,
            Self::GuestInput(e) => matches!(e, ReadError::Sandbox(_)),
            Self::Native(e) => e.is_infrastructure(),
            Self::Checkout(e) => matches!(e, CheckoutError::Io { .. }),
            Self::Expression(_) | Self::Input { .. } | Self::MissingInput(_) => false,
            Self::InvalidInput(_) | Self::Output { .. } | Self::Shell(_) => false,
            Self::Action(_) | Self::MissingActions(_) => false,
            Self::NoLocalActionFile(_) => false,
            Self::ActionFile(_) | Self::NoNode(_) | Self::Unsupported(_) => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_log_text_of_step_failures_is_the_runner_s() {
        let cases = [
            (
                StepError::NoLocalActionFile("/w/r/x".into()),
                "no action.yml in /w/r/x (is the repository checked out?)",
            ),
            (
                StepError::MissingInput("who".into()),
                "input 'who' is required",
            ),
            (
                StepError::NoStore("artifact"),
                "no artifact store is configured",
            ),
            (
                StepError::NoNode("node20".into()),
                "this 'node20' action needs node, which the guest image does not have",
            ),
            (
                StepError::Shell(ShellError("zsh".into())),
                "shell \"zsh\" must contain {0}",
            ),
        ];
        for (error, text) in cases {
            assert_eq!(error.to_string(), text);
        }
    }

    #[test]
    fn faults_of_the_vm_or_host_are_told_from_failing_steps() {
        let closed = StepError::Transfer(ClientError::Closed);
        assert!(closed.is_infrastructure());
        assert!(StepError::Host(std::io::Error::other("disk full")).is_infrastructure());
        assert!(!StepError::MissingInput("who".into()).is_infrastructure());
        assert!(!StepError::Unsupported("docker actions are not supported").is_infrastructure());
        let no_files = NativeActionError::NoFiles("no files were found".into());
        assert!(!StepError::Native(no_files).is_infrastructure());
    }
}
