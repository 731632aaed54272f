//! A job's state while its steps run: contexts, env and PATH additions,
//! masking, summaries, failure, and the job's own set-up, timeout and outputs.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use firerunner_workflow::expr::{self, EvalContext, JobStatus, ALL_CONTEXTS};
use firerunner_workflow::model::{Job, JobBody, ParsedWorkflow, Step};
use firerunner_workflow::{Conclusion, Object, Value};
use tokio_util::sync::CancellationToken;

use super::setup::JobActions;
use super::{JobEnvironment, JobReport, JobToRun, StepError};
use crate::actions::native;
use crate::logs::{JobLogWriter, LogLine, LogStream};
use crate::runner_text::Masker;
use crate::sandbox::{ProcessSpec, Sandbox};

/// Where a job runs and under which names.
pub(super) struct JobPlace<'a> {
    pub sandbox: &'a Sandbox,
    pub environment: &'a JobEnvironment,
    pub job_id: &'a str,
    pub job_name: &'a str,
}

/// One job instance's state while its steps run.
pub(super) struct JobRunner<'a> {
    pub(super) sandbox: &'a Sandbox,
    /// The default variables of this job's steps (the run's, plus
    /// `GITHUB_JOB` and `GITHUB_EVENT_PATH`).
    pub(super) defaults: BTreeMap<String, String>,
    pub(super) workflow: &'a ParsedWorkflow,
    pub(super) secrets: &'a BTreeMap<String, String>,
    pub(super) environment: &'a JobEnvironment,
    pub(super) job: &'a Job,
    pub(super) job_name: String,
    pub(super) contexts: Object,
    pub(super) log: &'a mut JobLogWriter,
    pub(super) masker: Masker,
    pub(super) steps_context: Object,
    pub(super) added_env: BTreeMap<String, String>,
    pub(super) added_path: Vec<String>,
    pub(super) summary: String,
    pub(super) failed: bool,
    pub(super) step_index: usize,
    pub(super) has_bash: bool,
    /// The token of `::stop-commands::` while workflow commands are stopped.
    pub(super) stopped_commands: Option<String>,
    /// A host copy of the workspace while a step that uses `hashFiles` is evaluated.
    pub(super) hash_snapshot: Option<tempfile::TempDir>,
    pub(super) command_time: Duration,
    /// The running step's command, for its [`StepReport`](super::StepReport).
    pub(super) step_command: String,
    /// The exit code of the running step's last process.
    pub(super) step_exit_code: Option<i32>,
    pub(super) legacy_outputs: Object,
    pub(super) pending_caches: Vec<native::PendingCacheSave>,
    /// The job's actions: found in "Set up job", their files, state and post steps.
    pub(super) actions: JobActions,
    /// What the last process saved through `GITHUB_STATE` (or `::save-state::`).
    pub(super) last_state: Vec<(String, String)>,
    /// `ACTIONS_STEP_DEBUG` is true: `::debug::` lines are shown.
    pub(super) step_debug: bool,
    /// The running process may use `::set-env::` and `::add-path::`
    /// (`ACTIONS_ALLOW_UNSECURE_COMMANDS` is true in its env).
    pub(super) allow_unsecure_commands: bool,
    /// A workflow command of the running process failed (it fails the step).
    pub(super) command_failed: bool,
}

/// Cancels the job's token when its `timeout-minutes` pass.
struct JobTimer {
    token: CancellationToken,
    timer: tokio::task::JoinHandle<()>,
}

impl JobTimer {
    fn start(minutes: f64, cancel: &CancellationToken) -> Self {
        let token = cancel.child_token();
        let timer = {
            let token = token.clone();
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_secs_f64(minutes * 60.0)).await;
                token.cancel();
            })
        };
        Self { token, timer }
    }
}

impl Drop for JobTimer {
    fn drop(&mut self) {
        self.timer.abort();
    }
}

impl<'a> JobRunner<'a> {
    pub(super) fn new(
        place: JobPlace<'a>,
        to_run: JobToRun<'a>,
        contexts: &Object,
        log: &'a mut JobLogWriter,
    ) -> Self {
        let workflow = to_run.workflow;
        let mut contexts = contexts.clone();
        if let Some(Value::Object(github)) = contexts.get("github") {
            let mut github = github.clone();
            github.insert("job", Value::from(place.job_id));
            contexts.insert("github", Value::Object(github));
        }
        let step_debug = step_debug(to_run.secrets, &contexts);
        let defaults = job_defaults(place.environment, place.job_id, step_debug);
        Self {
            defaults,
            sandbox: place.sandbox,
            environment: place.environment,
            job: &workflow.jobs[place.job_id],
            job_name: place.job_name.to_string(),
            contexts,
            log,
            masker: Masker::new(to_run.secrets.values()),
            workflow,
            secrets: to_run.secrets,
            steps_context: Object::new(),
            added_env: BTreeMap::new(),
            added_path: Vec::new(),
            summary: String::new(),
            failed: false,
            step_index: 0,
            has_bash: false,
            stopped_commands: None,
            hash_snapshot: None,
            command_time: Duration::ZERO,
            step_command: String::new(),
            step_exit_code: None,
            legacy_outputs: Object::new(),
            pending_caches: Vec::new(),
            actions: JobActions::new(place.environment.actions.clone()),
            last_state: Vec::new(),
            step_debug,
            allow_unsecure_commands: false,
            command_failed: false,
        }
    }

    /// The job's steps, or `None` (with the reason logged) when firerunner
    /// cannot run the job.
    pub(super) fn runnable_steps(&mut self) -> Option<Vec<Step>> {
        if !self.needs_container_engine() {
            return match &self.job.body {
                JobBody::Steps(steps) => Some(steps.clone()),
                JobBody::Call(_) => {
                    self.runner_line("error: calling a reusable workflow is not supported yet");
                    None
                }
            };
        }
        self.runner_line(
            "error: this job uses 'container' or 'services', which need a container engine in the guest; firerunner does not run them yet",
        );
        None
    }

    /// Whether the job has a `container:` or a service with an image. Like
    /// GitHub, a service (or container) whose image is empty once evaluated
    /// is skipped (`image: ${{ matrix.db }}` with no `db` in a leg).
    fn needs_container_engine(&mut self) -> bool {
        let container = self.job.container.as_ref().map(|c| ("container", c));
        let services = self.job.services.iter().map(|(name, s)| (name.as_str(), s));
        let mut skipped = Vec::new();
        let mut needed = false;
        for (name, value) in container.into_iter().chain(services) {
            match self.container_image(&value.value) {
                Some(image) if image.is_empty() => skipped.push(name.to_owned()),
                _ => needed = true,
            }
        }
        for name in skipped {
            let what = if name == "container" {
                "The job container".to_owned()
            } else {
                format!("Service '{name}'")
            };
            self.runner_line(&format!("{what} is skipped: its image is empty"));
        }
        needed
    }

    /// The evaluated image of a `container:` or service (a string, or a
    /// mapping's `image`); `None` when it cannot be evaluated.
    fn container_image(&self, value: &Value) -> Option<String> {
        let image = match value {
            Value::Object(map) => map.get("image").cloned().unwrap_or(Value::Null),
            other => other.clone(),
        };
        let evaluated = self.evaluate_value(&image).ok()?;
        Some(expr::to_string(&evaluated).trim().to_owned())
    }

    /// Runs the job's `steps`, post steps and cache saves under its timeout.
    pub(super) async fn run(mut self, steps: &[Step], cancel: &CancellationToken) -> JobReport {
        let minutes = self.job_timeout_minutes();
        let timer = JobTimer::start(minutes, cancel);
        let job_cancel = &timer.token.clone();
        let mut reports = Vec::new();
        let names = firerunner_workflow::step_context_names(steps);
        if self.set_up(steps, &names, job_cancel).await {
            for (step, name) in steps.iter().zip(&names) {
                self.step_index += 1;
                reports.push(self.run_step(step, name, job_cancel).await);
            }
        }
        self.run_post_steps(job_cancel).await;
        if !self.failed && !job_cancel.is_cancelled() {
            self.save_caches().await;
        }
        drop(timer);
        let timed_out = job_cancel.is_cancelled() && !cancel.is_cancelled();
        if timed_out {
            self.runner_line(&format!(
                "error: the job exceeded its timeout of {minutes} minutes"
            ));
        }
        let environment_url = self.environment_url();
        let outputs = self.job_outputs();
        if self.log.truncated() {
            self.failed = true;
        }
        let result = if cancel.is_cancelled() {
            Conclusion::Cancelled
        } else if self.failed || timed_out {
            Conclusion::Failure
        } else {
            Conclusion::Success
        };
        JobReport {
            result,
            outputs,
            steps: reports,
            summary: self.summary,
            environment_url,
        }
    }

    /// One warning per secret the job names but was not given: it reads as
    /// an empty string, as on GitHub, and the log says which one.
    fn warn_of_missing_secrets(&mut self) {
        let given: std::collections::BTreeSet<String> = self
            .secrets
            .keys()
            .map(|k| k.to_ascii_uppercase())
            .collect();
        let missing: Vec<String> =
            firerunner_workflow::secrets_read::secrets_read(self.workflow, self.job)
                .into_iter()
                .filter(|name| !given.contains(name))
                .collect();
        for name in missing {
            self.runner_line(&format!(
                "warning: secrets.{name} is not set for this job; it reads as an empty string"
            ));
        }
    }

    /// The job's `environment.url`, evaluated now that its steps ran (masked).
    fn environment_url(&mut self) -> Option<String> {
        let ctx = self.eval_context(&BTreeMap::new(), JobStatus::Success);
        match crate::environment::environment_url(self.job, &ctx)? {
            Ok(url) if url.trim().is_empty() => None,
            Ok(url) => Some(self.masker.mask(&url)),
            Err(err) => {
                self.runner_line(&format!("warning: environment.url: {err}"));
                None
            }
        }
    }

    /// "Set up job", as GitHub's runner does it: the guest's folders and
    /// event file, every action the steps use (the job fails before any step
    /// when one cannot be had), then the actions' `pre:` scripts in step order.
    /// False when the steps cannot run.
    async fn set_up(
        &mut self,
        steps: &[Step],
        names: &[String],
        cancel: &CancellationToken,
    ) -> bool {
        self.runner_line("##[step] Set up job");
        self.warn_of_missing_secrets();
        if let Err(error) = self.prepare().await {
            self.runner_line(&format!("error: preparing the job failed: {error}"));
            self.failed = true;
            return false;
        }
        if !self.set_up_actions(steps).await {
            self.failed = true;
            return false;
        }
        self.runner_line(&format!("Complete job name: {}", self.job_name));
        self.run_pre_steps(steps, names, cancel).await;
        true
    }

    /// The job's `timeout-minutes` (360 by default).
    fn job_timeout_minutes(&self) -> f64 {
        self.job
            .timeout_minutes
            .as_ref()
            .and_then(|v| self.evaluate_value(&v.value).ok())
            .map(|v| expr::to_number(&v))
            .filter(|m| *m > 0.0)
            .unwrap_or(360.0)
    }

    pub(super) fn line(&mut self, stream: LogStream, text: &str) {
        let masked = self.masker.mask(text);
        let line = LogLine::now(
            &self.environment.run_id,
            &self.job_name,
            self.step_index,
            stream,
            masked,
        );
        let _ = self.log.write(line);
    }

    pub(super) fn runner_line(&mut self, text: &str) {
        self.line(LogStream::Runner, text);
    }

    pub(super) fn status(&self, cancel: &CancellationToken) -> JobStatus {
        if cancel.is_cancelled() {
            JobStatus::Cancelled
        } else if self.failed {
            JobStatus::Failure
        } else {
            JobStatus::Success
        }
    }

    pub(super) fn eval_context(
        &self,
        env: &BTreeMap<String, String>,
        status: JobStatus,
    ) -> EvalContext {
        let mut contexts = self.contexts.clone();
        contexts.insert("steps", Value::Object(self.steps_context.clone()));
        contexts.insert("env", strings(env));
        contexts.insert("secrets", strings(self.secrets));
        contexts.insert("runner", self.runner_context());
        let mut job = Object::new();
        job.insert("status", Value::String(job_status_name(status).into()));
        contexts.insert("job", Value::Object(job));
        EvalContext {
            contexts,
            status,
            hash_files: self.hash_snapshot.as_ref().map(|dir| {
                let root = dir.path().to_path_buf();
                let hash: expr::HashFiles = Arc::new(move |patterns: &[String]| {
                    native::hash_files(&root, patterns).map_err(|e| e.into())
                });
                hash
            }),
        }
    }

    /// The `runner` context.
    fn runner_context(&self) -> Value {
        let layout = &self.environment.layout;
        let mut runner = Object::new();
        if self.step_debug {
            runner.insert("debug", Value::String("1".into()));
        }
        runner.insert("os", Value::String("Linux".into()));
        runner.insert("arch", Value::String("X64".into()));
        runner.insert("name", Value::String("firerunner".into()));
        runner.insert("temp", Value::String(layout.temp.clone()));
        runner.insert("tool_cache", Value::String(layout.tool_cache.clone()));
        Value::Object(runner)
    }

    pub(super) fn evaluate_value(&self, value: &Value) -> Result<Value, StepError> {
        let ctx = self.eval_context(&BTreeMap::new(), JobStatus::Success);
        Ok(expr::evaluate_value(value, &ctx)?)
    }

    pub(super) fn template(&self, source: &str, ctx: &EvalContext) -> Result<String, StepError> {
        Ok(expr::parse_template(source, ALL_CONTEXTS).and_then(|t| t.evaluate_string(ctx))?)
    }

    /// Creates the guest directories a job needs and writes its event file.
    async fn prepare(&mut self) -> Result<(), StepError> {
        let layout = self.environment.layout.clone();
        let commands_dir = format!("{}/_runner_file_commands", layout.temp);
        self.sandbox
            .create_dirs(&[
                &layout.workspace,
                &layout.temp,
                &layout.home,
                &layout.tool_cache,
                &commands_dir,
            ])
            .await?;
        self.has_bash = self.guest_has("bash").await?;
        let event_path = self.write_event_file(&layout.temp).await?;
        self.defaults.insert("GITHUB_EVENT_PATH".into(), event_path);
        Ok(())
    }

    /// Writes `github.event` where `GITHUB_EVENT_PATH` points and returns that path.
    async fn write_event_file(&self, temp: &str) -> Result<String, StepError> {
        let event = match self.contexts.get("github") {
            Some(Value::Object(github)) => github.get("event").cloned().unwrap_or_default(),
            _ => Value::Null,
        };
        let event_dir = format!("{temp}/_github_workflow");
        let event_path = format!("{event_dir}/event.json");
        self.sandbox.create_dirs(&[&event_dir]).await?;
        let json = serde_json::to_vec_pretty(&serde_json::Value::from(&event))?;
        self.sandbox.write_file(&event_path, 0o644, &json).await?;
        Ok(event_path)
    }

    /// Whether the guest has `program` on its PATH.
    pub(super) async fn guest_has(&self, program: &str) -> Result<bool, StepError> {
        let probe = ProcessSpec {
            argv: vec!["sh".into(), "-c".into(), format!("command -v {program}")],
            env: self.environment.default_env.clone(),
            cwd: None,
            timeout: Some(Duration::from_secs(30)),
        };
        let sandbox = self.sandbox;
        let end = sandbox
            .run(probe, &CancellationToken::new(), &mut |_, _| {})
            .await?;
        Ok(end.succeeded())
    }

    /// The env a step sees: defaults, workflow, job, file-command additions,
    /// the `env` of the steps calling the composite actions it is in, the
    /// step's own; then the runner's `GITHUB_ACTION*` variables.
    pub(super) fn step_env(
        &mut self,
        step: &Step,
        status: JobStatus,
    ) -> Result<BTreeMap<String, String>, StepError> {
        let mut env = self.defaults.clone();
        let layers = [&self.workflow.env, &self.job.env];
        for layer in layers {
            for (key, template) in layer {
                let ctx = self.eval_context(&env, status);
                let value = self.template(&template.value, &ctx)?;
                env.insert(key.clone(), value);
            }
        }
        env.extend(self.added_env.clone());
        for caller in &self.actions.caller_env {
            env.extend(caller.clone());
        }
        for (key, template) in &step.env {
            let ctx = self.eval_context(&env, status);
            let value = self.template(&template.value, &ctx)?;
            env.insert(key.clone(), value);
        }
        self.add_action_variables(&mut env);
        Ok(env)
    }

    /// `GITHUB_ACTION`, `GITHUB_ACTION_REPOSITORY` and `GITHUB_ACTION_REF`
    /// from the `github` context (they cannot be overridden).
    pub(super) fn add_action_variables(&self, env: &mut BTreeMap<String, String>) {
        for (name, key) in [
            ("GITHUB_ACTION", "action"),
            ("GITHUB_ACTION_REPOSITORY", "action_repository"),
            ("GITHUB_ACTION_REF", "action_ref"),
        ] {
            env.insert(name.into(), self.github_text(key));
        }
    }

    /// A string of the `github` context ("" when absent).
    pub(super) fn github_text(&self, key: &str) -> String {
        match self.contexts.get("github") {
            Some(Value::Object(github)) => match github.get(key) {
                Some(Value::String(text)) => text.clone(),
                _ => String::new(),
            },
            _ => String::new(),
        }
    }

    /// Sets strings of the `github` context.
    pub(super) fn set_github(&mut self, entries: &[(&str, &str)]) {
        let mut github = match self.contexts.get("github") {
            Some(Value::Object(github)) => github.clone(),
            _ => Object::new(),
        };
        for (key, value) in entries {
            github.insert(*key, Value::from(*value));
        }
        self.contexts.insert("github", Value::Object(github));
    }

    /// A host copy of the guest workspace, for `hashFiles`.
    pub(super) async fn snapshot_workspace(&self) -> Result<tempfile::TempDir, StepError> {
        let dir = tempfile::tempdir()?;
        self.sandbox
            .client()
            .get_tar(
                &self.environment.layout.workspace,
                dir.path(),
                crate::guest_input::workspace_snapshot_options(),
            )
            .await?;
        Ok(dir)
    }

    /// The evaluated `outputs:`; like GitHub's runner, one that holds a secret is left out,
    /// and outputs over [`JOB_OUTPUTS_LIMIT`](crate::guest_input::JOB_OUTPUTS_LIMIT) in all
    /// fail the job.
    fn job_outputs(&mut self) -> Object {
        let mut outputs = Object::new();
        let ctx = self.eval_context(&BTreeMap::new(), JobStatus::Success);
        let mut total = 0u64;
        for (name, template) in &self.job.outputs {
            match self.template(&template.value, &ctx) {
                Ok(value) if self.masker.contains_secret(&value) => {
                    let line =
                        format!("warning: Skip output '{name}' since it may contain secret.");
                    self.runner_line(&line);
                }
                Ok(value) => {
                    total += (name.len() + value.len()) as u64;
                    outputs.insert(name.clone(), Value::String(value));
                }
                Err(message) => {
                    let line = format!("warning: outputs.{name}: {message}");
                    self.runner_line(&line);
                }
            }
        }
        let limit = crate::guest_input::JOB_OUTPUTS_LIMIT;
        if total > limit {
            let error = crate::guest_input::LimitExceeded::JobOutputs { limit };
            self.runner_line(&format!("error: {error}"));
            self.failed = true;
            return Object::new();
        }
        outputs
    }
}

/// The default variables of a job's steps: the run's, `GITHUB_JOB`, and
/// `RUNNER_DEBUG` when step debug logging is on.
fn job_defaults(
    environment: &JobEnvironment,
    job_id: &str,
    debug: bool,
) -> BTreeMap<String, String> {
    let mut defaults = environment.default_env.clone();
    defaults.insert("GITHUB_JOB".into(), job_id.to_string());
    if debug {
        defaults.insert("RUNNER_DEBUG".into(), "1".into());
    }
    defaults
}

/// Whether `ACTIONS_STEP_DEBUG` is `true` among the secrets or the `vars`
/// (GitHub's switch for `::debug::` lines and `runner.debug`).
fn step_debug(secrets: &BTreeMap<String, String>, contexts: &Object) -> bool {
    let is_true = |text: &str| text.trim().eq_ignore_ascii_case("true");
    if secrets
        .get("ACTIONS_STEP_DEBUG")
        .is_some_and(|v| is_true(v))
    {
        return true;
    }
    match contexts.get("vars") {
        Some(Value::Object(vars)) => {
            matches!(vars.get("ACTIONS_STEP_DEBUG"), Some(Value::String(v)) if is_true(v))
        }
        _ => false,
    }
}

/// A string map as an object of strings.
fn strings(map: &BTreeMap<String, String>) -> Value {
    Value::Object(
        map.iter()
            .map(|(k, v)| (k.clone(), Value::String(v.clone())))
            .collect(),
    )
}

/// `job.status`.
fn job_status_name(status: JobStatus) -> &'static str {
    match status {
        JobStatus::Success => "success",
        JobStatus::Failure => "failure",
        JobStatus::Cancelled => "cancelled",
    }
}
