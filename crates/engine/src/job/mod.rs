//! Runs the steps of one job instance in its sandbox, as GitHub's runner
//! does: step `if:` with status functions, env layering (workflow < job <
//! step), the runner's file commands, outputs, `continue-on-error`,
//! `timeout-minutes`, cancellation, and secrets masked in every line.
//!
//! The parts: `runner` holds a job's state (contexts, env, masking, failure)
//! and runs its steps; `setup` is "Set up job" (every action found before
//! the first step) and the job's knowledge of its actions; `steps` runs one
//! step; `process` runs a step's process with the file and workflow
//! commands; `actions` runs `uses:` steps, `served` the actions the host
//! serves, `node` JavaScript actions with their `pre:` and `post:`;
//! [`StepError`] says why a step could not finish.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use firerunner_workflow::model::ParsedWorkflow;
use firerunner_workflow::{Conclusion, Object};
use tokio_util::sync::CancellationToken;

use crate::actions::native;
use crate::logs::JobLogWriter;
use crate::sandbox::Sandbox;

mod actions;
mod error;
mod node;
mod process;
mod runner;
mod served;
mod setup;
mod steps;

pub use error::StepError;

/// Where things live in the guest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuestLayout {
    /// `$HOME` of the runner user.
    pub home: String,
    /// `GITHUB_WORKSPACE`.
    pub workspace: String,
    /// `RUNNER_TEMP`.
    pub temp: String,
    /// `RUNNER_TOOL_CACHE`.
    pub tool_cache: String,
}

impl GuestLayout {
    /// The folder holding the workspace and `_actions` (`/home/runner/work`).
    pub fn workspace_root(&self) -> String {
        self.temp
            .rsplit_once('/')
            .map(|(root, _)| root.to_string())
            .unwrap_or_else(|| "/home/runner/work".into())
    }

    /// GitHub's layout for repository `owner/name`.
    pub fn for_repository(repository: &str) -> Self {
        let name = repository.rsplit('/').next().unwrap_or(repository);
        Self {
            home: "/home/runner".into(),
            workspace: format!("/home/runner/work/{name}/{name}"),
            temp: "/home/runner/work/_temp".into(),
            tool_cache: "/opt/hostedtoolcache".into(),
        }
    }
}

/// What every job of a run shares.
#[derive(Debug, Clone)]
pub struct JobEnvironment {
    /// The run's id (for logs).
    pub run_id: String,
    /// The run's secrets by name (a called workflow may see fewer).
    pub secrets: BTreeMap<String, String>,
    /// Guest paths.
    pub layout: GuestLayout,
    /// Extra default variables (`GITHUB_*`, `RUNNER_*`) for every step.
    pub default_env: BTreeMap<String, String>,
    /// What `actions/checkout` checks out, when known.
    pub checkout: Option<crate::checkout::CheckoutSource>,
    /// The store behind upload/download-artifact.
    pub artifacts: Option<Arc<crate::stores::artifacts::ArtifactStore>>,
    /// The store behind actions/cache, with the run's scopes.
    pub cache: Option<(Arc<crate::stores::cache::CacheStore>, native::CacheScope)>,
    /// Where remote actions are fetched from (`https://github.com`, a
    /// GitHub Enterprise Server, or a mirror) and kept (the action cache).
    pub actions: crate::actions::remote::ActionSource,
}

/// The end of one step.
#[derive(Debug, Clone, PartialEq)]
pub struct StepReport {
    /// Its display name.
    pub name: String,
    /// Result before `continue-on-error`.
    pub outcome: Conclusion,
    /// Result after `continue-on-error`.
    pub conclusion: Conclusion,
    /// How long it ran.
    pub duration: Duration,
    /// How long its command ran as the guest measured it (zero for steps
    /// without a process, such as skipped or natively served ones).
    pub command_duration: Duration,
    /// What the step ran: its evaluated `run:` script (secrets masked; the
    /// unevaluated script when evaluation failed or the step did not run), or
    /// `uses: owner/repo@ref` for an action step.
    pub command: String,
    /// Exit code of the step's last process, when one exited (`None` for
    /// steps without a process and for processes killed by a signal, a
    /// timeout or cancellation).
    pub exit_code: Option<i32>,
}

/// The end of one job instance.
#[derive(Debug, Clone, PartialEq)]
pub struct JobReport {
    /// The job's result.
    pub result: Conclusion,
    /// Its evaluated `outputs:`.
    pub outputs: Object,
    /// Each step.
    pub steps: Vec<StepReport>,
    /// The joined step summaries (`GITHUB_STEP_SUMMARY`).
    pub summary: String,
    /// Its `environment.url`, evaluated after its steps, when it has one.
    pub environment_url: Option<String>,
}

/// The job a [`run_job`] call runs: which workflow, which job, with what.
#[derive(Debug, Clone, Copy)]
pub struct JobToRun<'a> {
    /// The workflow the job belongs to.
    pub workflow: &'a ParsedWorkflow,
    /// The secrets it sees.
    pub secrets: &'a BTreeMap<String, String>,
}

/// Runs one job instance in `sandbox`.
#[allow(clippy::too_many_arguments)]
pub async fn run_job(
    sandbox: &Sandbox,
    environment: &JobEnvironment,
    to_run: JobToRun<'_>,
    job_id: &str,
    job_name: &str,
    contexts: &Object,
    log: &mut JobLogWriter,
    cancel: &CancellationToken,
) -> JobReport {
    let place = runner::JobPlace {
        sandbox,
        environment,
        job_id,
        job_name,
    };
    let mut runner = runner::JobRunner::new(place, to_run, contexts, log);
    match runner.runnable_steps() {
        Some(steps) => runner.run(&steps, cancel).await,
        None => JobReport {
            result: Conclusion::Failure,
            outputs: Object::new(),
            steps: Vec::new(),
            summary: String::new(),
            environment_url: None,
        },
    }
}
