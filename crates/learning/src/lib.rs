//! Learning from every CI step firerunner runs.
//!
//! - [`normalize`] turns a step's command into a stable key (volatile parts abstracted) and
//!   [`concepts`] tags it with command concepts (test, install, ...).
//! - [`signature`] reduces a failing step's log tail to a stable error signature.
//! - [`graph`] holds the in-memory [`CommandKnowledgeGraph`].
//! - [`store`] persists everything in `learning_*` tables through sqlx's `Any` driver.
//! - [`coordinator`] is the entry point: [`LearningCoordinator::record_step`], lessons, flaky
//!   steps and hints.

#![warn(missing_docs)]

pub mod concepts;
pub mod coordinator;
pub mod error;
pub mod graph;
pub mod normalize;
pub mod signature;
pub mod store;

pub use concepts::{concepts_of, Concept};
pub use coordinator::{
    FixedBy, FlakyStep, Hint, LearningConfig, LearningCoordinator, LearningStats, Lesson,
    RecordedStep, StepLocation, StepOutcome, StepRecord,
};
pub use error::LearningError;
pub use graph::{
    CommandKnowledgeGraph, EvidenceLevel, FailingSignature, NodeStats, Prediction,
    PredictionContext, RelatedCommand,
};
pub use normalize::normalize_command;
pub use signature::{signature_from_log, ErrorSignature};
pub use store::LearningStore;
