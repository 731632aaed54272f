//! Learning from every CI step firerunner runs.
//!
//! - [`normalize`] turns a step's command into a stable key (volatile parts abstracted) and
//!   [`concepts`] tags it with command concepts (test, install, ...).
//! - [`signature`] reduces a failing step's log tail to a stable error signature.
//! - [`graph`] holds the in-memory [`CommandKnowledgeGraph`].
//! - [`model`] holds the values the coordinator keeps and the store persists (lessons, flaky
//!   steps, where a step runs); they serialize to the JSON the CLI prints.
//! - [`store`] persists everything in `learning_*` tables through sqlx's `Any` driver.
//! - [`coordinator`] is the entry point: [`LearningCoordinator::record_step`], lessons, flaky
//!   steps and hints.
//! - [`compose`] turns common plain-English requests into a workflow without any model;
//!   [`llm`] is an optional OpenAI-compatible client that writes workflows and explains failures.

#![warn(missing_docs)]

pub mod compose;
pub mod concepts;
pub mod coordinator;
pub mod error;
pub mod graph;
pub mod llm;
pub mod model;
pub mod normalize;
pub mod signature;
pub mod store;

pub use compose::{workflow_from_text, ComposeError};
pub use concepts::{concepts_of, Concept};
pub use coordinator::{Hint, HintScope, LearningConfig, LearningCoordinator, RecordedStep};
pub use error::LearningError;
/// How a recorded step ended: the workflow crate's outcome of steps and jobs.
pub use firerunner_workflow::Conclusion;
pub use graph::{
    CommandKnowledgeGraph, EvidenceLevel, FailingSignature, NodeStats, Prediction,
    PredictionContext, RelatedCommand,
};
pub use llm::{FailureToExplain, GeneratedWorkflow, LlmClient, LlmConfig, LlmError};
pub use model::{
    one_line, short_sha, FixedBy, FlakyStep, LearningStats, Lesson, LessonStatus, StepLocation,
    StepRecord,
};
pub use normalize::normalize_command;
pub use signature::{signature_from_log, ErrorSignature};
pub use store::LearningStore;
