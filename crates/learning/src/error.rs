//! Typed errors of the learning crate.

/// Errors returned by the learning store and coordinator.
#[derive(Debug, thiserror::Error)]
pub enum LearningError {
    /// The database rejected a statement or could not be reached.
    #[error("learning store: {0}")]
    Database(#[from] sqlx::Error),
    /// The background writer has stopped (closed or failed earlier), so records cannot be persisted.
    #[error("learning store writer is not running")]
    WriterStopped,
    /// The background writer failed to persist a batch.
    #[error("learning store writer failed: {0}")]
    WriterFailed(String),
}
