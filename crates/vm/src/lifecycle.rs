//! The life cycle of a session: its states and the moves between them.
//!
//! ```text
//! Created -> Executing -> Completed | Failed -> Released
//!    \------------------------------------------^
//! ```

/// Where a session is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SessionState {
    /// The VM is running and the agent connected; nothing has run yet.
    Created,
    /// Work is running in the VM.
    Executing,
    /// The work finished successfully.
    Completed,
    /// The work failed (or was abandoned while running).
    Failed,
    /// The VM is destroyed; nothing of the session is left.
    Released,
}

/// A state change the session life cycle does not allow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("a session cannot go from {from:?} to {to:?}")]
pub struct IllegalTransition {
    /// The state the session was in.
    pub from: SessionState,
    /// The state asked for.
    pub to: SessionState,
}

impl SessionState {
    /// The state after moving to `to`, if the life cycle allows it.
    pub fn transition(self, to: SessionState) -> Result<SessionState, IllegalTransition> {
        use SessionState::*;
        match (self, to) {
            (Created, Executing)
            | (Executing, Completed)
            | (Executing, Failed)
            | (Created | Completed | Failed, Released) => Ok(to),
            _ => Err(IllegalTransition { from: self, to }),
        }
    }
}
