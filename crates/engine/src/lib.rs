//! Runs planned GitHub Actions workflows in firerunner's microVMs.
//!
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
//! - [`actions`]: checkout, upload/download-artifact and cache served by the
//!   host; every other action found in "Set up job", fetched with git into
//!   the action cache.
//! - [`run_context`]: the `github` context and default variables of a run.
//! - [`reusable`]: the reusable workflows a run calls (`./`, `$/` and remote).
//! - [`run`]: one workflow run from start to end, the entry `firerunner run`
//!   and the service share.
//! - `testing` (feature `testing`): fixtures for tests: a scripted job
//!   executor, an action mirror and a job run on the host's own agent.
//! - [`stores`]: the host-side stores behind `actions/upload-artifact`,
//!   `actions/download-artifact` (with retention) and `actions/cache` (with
//!   GitHub's key matching, branch scopes, immutability and eviction).
#![warn(missing_docs)]

pub mod actions;
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
pub mod stores;
#[cfg(feature = "testing")]
pub mod testing;
pub mod vm_executor;
