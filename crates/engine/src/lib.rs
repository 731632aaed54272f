//! Runs planned GitHub Actions workflows in firerunner's microVMs.
//!
//! - [`cache`]: the host-side store behind `actions/cache`, with GitHub's
//!   key matching, branch scopes, immutability and eviction.
//! - [`orchestrator`]: runs a planned workflow's jobs as soon as their needs
//!   finish, with matrix fan-out, `max-parallel`, `fail-fast` and limits.
//! - [`logs`]: step output split into stamped lines, stored per job and
//!   streamed live.
//! - [`checkout`]: native `actions/checkout`, prepared on the host with git.
//! - [`dotenv`]: act's `.secrets`/`.vars`/`.env` file format.
//! - [`environment`]: a job's `environment:`, and the gate that lets it in.
//! - [`sandbox`]: a job's view of its VM: processes with live lines,
//!   timeouts and cancellation, files.
//! - [`job`]: runs the steps of one job instance in its sandbox.
//! - [`learn`]: turns a finished job into step records for the learning layer.
//! - [`vm_executor`]: the executor that gives each job instance a fresh microVM.
//! - [`actions`]: upload/download-artifact and cache served by the host, and
//!   `owner/repo@ref` actions fetched on the host with git.
//! - [`run_context`]: the `github` context and default variables of a run.
//! - [`reusable`]: the reusable workflows a run calls (`./`, `$/` and remote).
//! - [`run`]: one workflow run from start to end, the entry `firerunner run`
//!   and the service share.
//! - [`artifacts`]: the host-side store behind `actions/upload-artifact` and
//!   `actions/download-artifact`, with retention.
#![warn(missing_docs)]

pub mod actions;
pub mod artifacts;
pub mod cache;
pub mod checkout;
pub mod dotenv;
pub mod environment;
pub mod guest_input;
pub mod job;
pub mod learn;
pub mod logs;
pub mod orchestrator;
pub mod reusable;
pub mod run;
pub mod run_context;
pub mod runner_text;
pub mod sandbox;
mod store;
pub mod vm_executor;
