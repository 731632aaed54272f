//! The GitHub Actions workflow language, without I/O.
//!
//! - [`load`] turns the text of a `.github/workflows/*.yml` file into a typed
//!   [`model::ParsedWorkflow`], reporting every problem with `file:line:col`.
//! - [`expr`] parses and evaluates `${{ }}` expressions exactly as GitHub does.
//! - [`trigger`] decides whether an event (and its payload) triggers a workflow.
//! - [`plan`] expands matrices and orders jobs by their `needs` graph.
#![warn(missing_docs)]

pub mod conclusion;
pub mod context_name;
pub mod diagnostic;
pub mod expr;
pub mod load;
pub mod model;
pub mod plan;
pub mod reference;
pub mod secrets_read;
pub mod trigger;
pub mod value;

pub use conclusion::Conclusion;
pub use context_name::step_context_names;
pub use diagnostic::{Diagnostic, Diagnostics, Pos, Severity, Spanned};
pub use model::ParsedWorkflow;
pub use reference::{ActionRef, RemoteRef, WorkflowRef};
pub use value::{Object, Value};
