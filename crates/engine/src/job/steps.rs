//! One step: its env and name, its `if:`, what it runs, and its report with
//! `continue-on-error` and `steps.<id>` applied.

use std::collections::BTreeMap;
use std::time::Instant;

use firerunner_workflow::expr::{self, EvalContext, ALL_CONTEXTS};
use firerunner_workflow::model::{Step, StepAction};
use firerunner_workflow::{Conclusion, Object, Value};
use tokio_util::sync::CancellationToken;

use super::process::{Script, StepEnd};
use super::runner::JobRunner;
use super::{StepError, StepReport};

impl JobRunner<'_> {
    /// The step's display name, secrets masked (it reaches logs, reports and summaries).
    pub(super) fn step_name(&mut self, step: &Step, ctx: &EvalContext) -> String {
        if let Some(name) = &step.name {
            if let Ok(text) = self.template(&name.value, ctx) {
                return self.masker.mask(&text);
            }
        }
        match &step.action {
            StepAction::Run { script, .. } => {
                let first = script.value.lines().next().unwrap_or_default();
                format!("Run {first}")
            }
            StepAction::Uses { uses, .. } => format!("Run {}", uses.value),
            StepAction::Control(_) => "Run background step control".to_owned(),
        }
    }

    /// Resets the per-step state, names the step (`github.action`) and takes
    /// the `hashFiles` snapshot the step needs.
    async fn begin_step(&mut self, step: &Step, name: &str) {
        // The step's `if:` and `env:` see the action being run around it (the
        // composite action it is in); its own is set once it runs.
        let (repository, git_ref) = self.actions.enclosing.clone();
        self.set_github(&[
            ("action", name),
            ("action_repository", &repository),
            ("action_ref", &git_ref),
        ]);
        self.step_command = match &step.action {
            StepAction::Run { script, .. } => script.value.clone(),
            StepAction::Uses { uses, .. } => format!("uses: {}", uses.value),
            StepAction::Control(_) => String::new(),
        };
        self.step_exit_code = None;
        self.hash_snapshot = None;
        if mentions_hash_files(step) {
            // hashFiles reads the workspace as it is now: a host copy of it.
            match self.snapshot_workspace().await {
                Ok(dir) => self.hash_snapshot = Some(dir),
                Err(message) => self.runner_line(&format!("warning: hashFiles: {message}")),
            }
        }
    }

    /// Runs one step; `name` is its context name (`GITHUB_ACTION`).
    pub(super) async fn run_step(
        &mut self,
        step: &Step,
        name: &str,
        cancel: &CancellationToken,
    ) -> StepReport {
        let started = Instant::now();
        self.begin_step(step, name).await;
        let status = self.status(cancel);
        let env = match self.step_env(step, status) {
            Ok(env) => env,
            Err(message) => {
                let ctx = self.eval_context(&BTreeMap::new(), status);
                let name = self.step_name(step, &ctx);
                self.runner_line(&format!("error: {name}: env: {message}"));
                self.failed = true;
                let end = StepEnd::bare(Conclusion::Failure);
                return self.finish_step(step, name, end, started);
            }
        };
        let ctx = self.eval_context(&env, status);
        let name = self.step_name(step, &ctx);
        let condition = step
            .if_cond
            .as_ref()
            .map(|c| c.value.as_str())
            .unwrap_or("success()");
        let run_it = expr::parse_condition(condition, ALL_CONTEXTS).and_then(|c| c.evaluate(&ctx));
        let end = match run_it {
            Ok(false) => StepEnd::bare(Conclusion::Skipped),
            Err(message) => {
                self.runner_line(&format!("error: {name}: if: {message}"));
                self.failed = true;
                StepEnd::bare(Conclusion::Failure)
            }
            Ok(true) => {
                self.runner_line(&format!("##[step] {name}"));
                self.run_step_action(step, &name, &ctx, env, cancel).await
            }
        };
        self.finish_step(step, name, end, started)
    }

    /// Runs what the step runs; a failure to run it is logged and fails the step.
    async fn run_step_action(
        &mut self,
        step: &Step,
        display: &str,
        ctx: &EvalContext,
        mut env: BTreeMap<String, String>,
        cancel: &CancellationToken,
    ) -> StepEnd {
        match &step.action {
            StepAction::Run {
                script,
                shell,
                working_directory,
            } => {
                self.set_github(&[("action_repository", ""), ("action_ref", "")]);
                env.insert("GITHUB_ACTION_REPOSITORY".into(), String::new());
                env.insert("GITHUB_ACTION_REF".into(), String::new());
                let script = Script {
                    step,
                    script,
                    shell: shell.as_ref(),
                    working_directory: working_directory.as_ref(),
                };
                let run = self.run_script(&script, ctx, env, cancel).await;
                self.failed_to_run(run, "")
            }
            StepAction::Uses { .. } => self.run_uses(step, display, env, cancel).await,
            StepAction::Control(_) => {
                self.runner_line(
                    "error: wait, wait-all, cancel and parallel steps are not supported by firerunner",
                );
                StepEnd::bare(Conclusion::Failure)
            }
        }
    }

    /// The step's end, or a failure with `error: <prefix><error>` logged.
    pub(super) fn failed_to_run(
        &mut self,
        run: Result<StepEnd, StepError>,
        prefix: &str,
    ) -> StepEnd {
        run.unwrap_or_else(|error| {
            self.runner_line(&format!("error: {prefix}{error}"));
            StepEnd::bare(Conclusion::Failure)
        })
    }

    fn finish_step(
        &mut self,
        step: &Step,
        name: String,
        end: StepEnd,
        started: Instant,
    ) -> StepReport {
        let outcome = end.conclusion;
        let continue_on_error = step
            .continue_on_error
            .as_ref()
            .and_then(|v| self.evaluate_value(&v.value).ok())
            .map(|v| expr::truthy(&v))
            .unwrap_or(false);
        let conclusion = if outcome == Conclusion::Failure && continue_on_error {
            Conclusion::Success
        } else {
            outcome
        };
        if conclusion == Conclusion::Failure || conclusion == Conclusion::Cancelled {
            self.failed = true;
        }
        if let Some(id) = &step.id {
            let mut entry = Object::new();
            entry.insert("outputs", Value::Object(end.outputs));
            entry.insert("outcome", Value::String(outcome.as_str().into()));
            entry.insert("conclusion", Value::String(conclusion.as_str().into()));
            self.steps_context
                .insert(id.value.clone(), Value::Object(entry));
        }
        StepReport {
            name,
            outcome,
            conclusion,
            duration: started.elapsed(),
            command_duration: std::mem::take(&mut self.command_time),
            command: std::mem::take(&mut self.step_command),
            exit_code: self.step_exit_code.take(),
        }
    }
}

/// Whether any expression of `step` may call `hashFiles`.
fn mentions_hash_files(step: &Step) -> bool {
    let mut texts: Vec<&str> = Vec::new();
    texts.extend(step.name.iter().map(|t| t.value.as_str()));
    texts.extend(step.if_cond.iter().map(|t| t.value.as_str()));
    texts.extend(step.env.values().map(|t| t.value.as_str()));
    match &step.action {
        StepAction::Run {
            script,
            working_directory,
            ..
        } => {
            texts.push(&script.value);
            texts.extend(working_directory.iter().map(|t| t.value.as_str()));
        }
        StepAction::Uses { with, .. } => {
            if with
                .values()
                .any(|v| matches!(&v.value, Value::String(s) if s.contains("hashFiles")))
            {
                return true;
            }
        }
        StepAction::Control(_) => {}
    }
    texts.iter().any(|t| t.contains("hashFiles"))
}
