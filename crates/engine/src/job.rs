//! Runs the steps of one job instance in its sandbox, as GitHub's runner
//! does: step `if:` with status functions, env layering (workflow < job <
//! step), the runner's file commands, outputs, `continue-on-error`,
//! `timeout-minutes`, cancellation, and secrets masked in every line.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use firerunner_workflow::expr::{self, EvalContext, JobStatus, ALL_CONTEXTS};
use firerunner_workflow::model::{Job, JobBody, ParsedWorkflow, Step, StepAction};
use firerunner_workflow::Conclusion;
use firerunner_workflow::{Object, Value};
use tokio_util::sync::CancellationToken;

use crate::logs::{JobLogWriter, LogLine, LogStream};
use crate::native_actions;
use crate::runner_text::{apply_path_file, parse_env_file, Masker, WorkflowCommand};
use crate::sandbox::{ProcessEnd, ProcessSpec, Sandbox};

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
    pub artifacts: Option<Arc<crate::artifacts::ArtifactStore>>,
    /// The store behind actions/cache, with the run's scopes.
    pub cache: Option<(Arc<crate::cache::CacheStore>, native_actions::CacheScope)>,
    /// Where remote actions are fetched from (`https://github.com`, or a
    /// GitHub Enterprise Server, or a local mirror).
    pub actions_base_url: String,
    /// Where fetched actions are kept on the host.
    pub actions_cache_dir: std::path::PathBuf,
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
    let workflow = to_run.workflow;
    let job = &workflow.jobs[job_id];
    let mut defaults = environment.default_env.clone();
    defaults.insert("GITHUB_JOB".into(), job_id.to_string());
    let mut contexts = contexts.clone();
    if let Some(Value::Object(github)) = contexts.get("github") {
        let mut github = github.clone();
        github.insert("job", Value::from(job_id));
        contexts.insert("github", Value::Object(github));
    }
    let mut runner = JobRunner {
        defaults,
        sandbox,
        environment,
        job,
        job_name: job_name.to_string(),
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
        post_steps: Vec::new(),
        last_state: Vec::new(),
    };
    if job.container.is_some() || !job.services.is_empty() {
        runner.runner_line(
            "error: this job uses 'container' or 'services', which need a container engine in the guest; firerunner does not run them yet",
        );
        return JobReport {
            result: Conclusion::Failure,
            outputs: Object::new(),
            steps: Vec::new(),
            summary: String::new(),
        };
    }
    let steps = match &job.body {
        JobBody::Steps(steps) => steps.clone(),
        JobBody::Call(_) => {
            runner.runner_line("error: calling a reusable workflow is not supported yet");
            return JobReport {
                result: Conclusion::Failure,
                outputs: Object::new(),
                steps: Vec::new(),
                summary: String::new(),
            };
        }
    };
    let job_timeout = job
        .timeout_minutes
        .as_ref()
        .and_then(|v| runner.evaluate_value(&v.value).ok())
        .map(|v| expr::to_number(&v))
        .filter(|m| *m > 0.0)
        .unwrap_or(360.0);
    let job_cancel = cancel.child_token();
    let timer = {
        let token = job_cancel.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs_f64(job_timeout * 60.0)).await;
            token.cancel();
        })
    };
    let mut reports = Vec::new();
    if let Err(message) = runner.prepare().await {
        runner.runner_line(&format!("error: preparing the job failed: {message}"));
        runner.failed = true;
    } else {
        for step in &steps {
            runner.step_index += 1;
            reports.push(runner.run_step(step, &job_cancel).await);
        }
    }
    runner.run_post_steps(&job_cancel).await;
    if !runner.failed && !job_cancel.is_cancelled() {
        runner.save_caches().await;
    }
    timer.abort();
    let timed_out = job_cancel.is_cancelled() && !cancel.is_cancelled();
    if timed_out {
        runner.runner_line(&format!(
            "error: the job exceeded its timeout of {job_timeout} minutes"
        ));
    }
    let outputs = runner.job_outputs();
    if runner.log.truncated() {
        runner.failed = true;
    }
    let result = if cancel.is_cancelled() {
        Conclusion::Cancelled
    } else if runner.failed || timed_out {
        Conclusion::Failure
    } else {
        Conclusion::Success
    };
    JobReport {
        result,
        outputs,
        steps: reports,
        summary: runner.summary,
    }
}

struct JobRunner<'a> {
    sandbox: &'a Sandbox,
    /// The default variables of this job's steps (the run's, plus
    /// `GITHUB_JOB` and `GITHUB_EVENT_PATH`).
    defaults: BTreeMap<String, String>,
    workflow: &'a ParsedWorkflow,
    secrets: &'a BTreeMap<String, String>,
    environment: &'a JobEnvironment,
    job: &'a Job,
    job_name: String,
    contexts: Object,
    log: &'a mut JobLogWriter,
    masker: Masker,
    steps_context: Object,
    added_env: BTreeMap<String, String>,
    added_path: Vec<String>,
    summary: String,
    failed: bool,
    step_index: usize,
    has_bash: bool,
    /// The token of `::stop-commands::` while workflow commands are stopped.
    stopped_commands: Option<String>,
    /// A host copy of the workspace while a step that uses `hashFiles` is evaluated.
    hash_snapshot: Option<tempfile::TempDir>,
    command_time: Duration,
    /// The running step's command, for its [`StepReport`].
    step_command: String,
    /// The exit code of the running step's last process.
    step_exit_code: Option<i32>,
    legacy_outputs: Object,
    pending_caches: Vec<native_actions::PendingCacheSave>,
    /// `post:` scripts to run after the steps, in the order they were added.
    post_steps: Vec<PostStep>,
    /// What the last process saved through `GITHUB_STATE`.
    last_state: Vec<(String, String)>,
}

/// A JavaScript action's `post:` script, run after the job's steps.
struct PostStep {
    name: String,
    script: String,
    condition: String,
    env: BTreeMap<String, String>,
    state: Vec<(String, String)>,
}

/// Actions the host serves itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum NativeAction {
    UploadArtifact,
    DownloadArtifact,
    Cache,
}

impl NativeAction {
    fn of(uses: &str) -> Option<Self> {
        let (name, _) = uses.split_once('@')?;
        match name {
            "actions/upload-artifact" => Some(Self::UploadArtifact),
            "actions/download-artifact" => Some(Self::DownloadArtifact),
            "actions/cache" | "actions/cache/restore" => Some(Self::Cache),
            _ => None,
        }
    }
}

impl JobRunner<'_> {
    fn line(&mut self, stream: LogStream, text: &str) {
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

    fn runner_line(&mut self, text: &str) {
        self.line(LogStream::Runner, text);
    }

    fn status(&self, cancel: &CancellationToken) -> JobStatus {
        if cancel.is_cancelled() {
            JobStatus::Cancelled
        } else if self.failed {
            JobStatus::Failure
        } else {
            JobStatus::Success
        }
    }

    fn eval_context(&self, env: &BTreeMap<String, String>, status: JobStatus) -> EvalContext {
        let mut contexts = self.contexts.clone();
        contexts.insert("steps", Value::Object(self.steps_context.clone()));
        contexts.insert(
            "env",
            Value::Object(
                env.iter()
                    .map(|(k, v)| (k.clone(), Value::String(v.clone())))
                    .collect(),
            ),
        );
        contexts.insert(
            "secrets",
            Value::Object(
                self.secrets
                    .iter()
                    .map(|(k, v)| (k.clone(), Value::String(v.clone())))
                    .collect(),
            ),
        );
        let mut runner = Object::new();
        runner.insert("os", Value::String("Linux".into()));
        runner.insert("arch", Value::String("X64".into()));
        runner.insert("name", Value::String("firerunner".into()));
        runner.insert("temp", Value::String(self.environment.layout.temp.clone()));
        runner.insert(
            "tool_cache",
            Value::String(self.environment.layout.tool_cache.clone()),
        );
        contexts.insert("runner", Value::Object(runner));
        let mut job = Object::new();
        job.insert(
            "status",
            Value::String(
                match status {
                    JobStatus::Success => "success",
                    JobStatus::Failure => "failure",
                    JobStatus::Cancelled => "cancelled",
                }
                .into(),
            ),
        );
        contexts.insert("job", Value::Object(job));
        EvalContext {
            contexts,
            status,
            hash_files: self.hash_snapshot.as_ref().map(|dir| {
                let root = dir.path().to_path_buf();
                let hash: firerunner_workflow::expr::HashFiles =
                    Arc::new(move |patterns: &[String]| {
                        crate::native_actions::hash_files(&root, patterns)
                    });
                hash
            }),
        }
    }

    fn evaluate_value(&self, value: &Value) -> Result<Value, String> {
        let ctx = self.eval_context(&BTreeMap::new(), JobStatus::Success);
        expr::evaluate_value(value, &ctx).map_err(|e| e.to_string())
    }

    fn template(&self, source: &str, ctx: &EvalContext) -> Result<String, String> {
        expr::parse_template(source, ALL_CONTEXTS)
            .and_then(|t| t.evaluate_string(ctx))
            .map_err(|e| e.to_string())
    }

    /// Creates the guest directories a job needs.
    async fn prepare(&mut self) -> Result<(), String> {
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
            .await
            .map_err(|e| e.to_string())?;
        self.has_bash = self.guest_has("bash").await?;
        let event = match self.contexts.get("github") {
            Some(Value::Object(github)) => github.get("event").cloned().unwrap_or_default(),
            _ => Value::Null,
        };
        let event_dir = format!("{}/_github_workflow", layout.temp);
        let event_path = format!("{event_dir}/event.json");
        self.sandbox
            .create_dirs(&[&event_dir])
            .await
            .map_err(|e| e.to_string())?;
        let json = serde_json::to_vec_pretty(&serde_json::Value::from(&event))
            .map_err(|e| e.to_string())?;
        self.sandbox
            .write_file(&event_path, 0o644, &json)
            .await
            .map_err(|e| e.to_string())?;
        self.defaults.insert("GITHUB_EVENT_PATH".into(), event_path);
        Ok(())
    }

    /// Whether the guest has `program` on its PATH.
    async fn guest_has(&self, program: &str) -> Result<bool, String> {
        let probe = ProcessSpec {
            argv: vec!["sh".into(), "-c".into(), format!("command -v {program}")],
            env: self.environment.default_env.clone(),
            cwd: None,
            timeout: Some(Duration::from_secs(30)),
        };
        let sandbox = self.sandbox;
        let end = sandbox
            .run(probe, &CancellationToken::new(), &mut |_, _| {})
            .await
            .map_err(|e| e.to_string())?;
        Ok(end.succeeded())
    }

    /// The env a step sees: defaults, workflow, job, file-command additions, step.
    fn step_env(
        &mut self,
        step: &Step,
        status: JobStatus,
    ) -> Result<BTreeMap<String, String>, String> {
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
        for (key, template) in &step.env {
            let ctx = self.eval_context(&env, status);
            let value = self.template(&template.value, &ctx)?;
            env.insert(key.clone(), value);
        }
        Ok(env)
    }

    /// The step's display name, secrets masked (it reaches logs, reports and summaries).
    fn step_name(&mut self, step: &Step, ctx: &EvalContext) -> String {
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

    async fn run_step(&mut self, step: &Step, cancel: &CancellationToken) -> StepReport {
        let started = Instant::now();
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
        let status = self.status(cancel);
        let env = match self.step_env(step, status) {
            Ok(env) => env,
            Err(message) => {
                let ctx = self.eval_context(&BTreeMap::new(), status);
                let name = self.step_name(step, &ctx);
                self.runner_line(&format!("error: {name}: env: {message}"));
                self.failed = true;
                return self.finish_step(step, name, Conclusion::Failure, Object::new(), started);
            }
        };
        let ctx = self.eval_context(&env, status);
        let name = self.step_name(step, &ctx);
        let condition = step
            .if_cond
            .as_ref()
            .map(|c| c.value.as_str())
            .unwrap_or("success()");
        let run_it = expr::parse_condition(condition, ALL_CONTEXTS)
            .and_then(|c| c.evaluate(&ctx))
            .map_err(|e| e.to_string());
        match run_it {
            Ok(false) => {
                return self.finish_step(step, name, Conclusion::Skipped, Object::new(), started)
            }
            Err(message) => {
                self.runner_line(&format!("error: {name}: if: {message}"));
                self.failed = true;
                return self.finish_step(step, name, Conclusion::Failure, Object::new(), started);
            }
            Ok(true) => {}
        }
        self.runner_line(&format!("##[step] {name}"));
        let (outcome, outputs) = match &step.action {
            StepAction::Run {
                script,
                shell,
                working_directory,
            } => {
                let run = self
                    .run_script(
                        step,
                        &ctx,
                        env,
                        script,
                        shell.as_ref(),
                        working_directory.as_ref(),
                        cancel,
                    )
                    .await;
                match run {
                    Ok(done) => done,
                    Err(message) => {
                        self.runner_line(&format!("error: {message}"));
                        (Conclusion::Failure, Object::new())
                    }
                }
            }
            StepAction::Uses { uses, with, .. } => {
                let action = uses.value.to_ascii_lowercase();
                if action.starts_with("actions/checkout@") {
                    match self.checkout(with, &ctx).await {
                        Ok(()) => (Conclusion::Success, Object::new()),
                        Err(message) => {
                            self.runner_line(&format!("error: actions/checkout: {message}"));
                            (Conclusion::Failure, Object::new())
                        }
                    }
                } else if uses.value.starts_with("./") {
                    match self
                        .local_action(step, &uses.value, with, &ctx, cancel)
                        .await
                    {
                        Ok(done) => done,
                        Err(message) => {
                            self.runner_line(&format!("error: {}: {message}", uses.value));
                            (Conclusion::Failure, Object::new())
                        }
                    }
                } else if let Some(kind) = NativeAction::of(&action) {
                    match self.native_action(kind, with, &ctx).await {
                        Ok(outputs) => (Conclusion::Success, outputs),
                        Err(message) => {
                            self.runner_line(&format!("error: {}: {message}", uses.value));
                            (Conclusion::Failure, Object::new())
                        }
                    }
                } else if uses.value.starts_with("docker://") {
                    self.runner_line(&format!(
                        "error: {}: docker actions are not supported by firerunner",
                        uses.value
                    ));
                    (Conclusion::Failure, Object::new())
                } else {
                    match self
                        .remote_action(step, &uses.value, with, &ctx, cancel)
                        .await
                    {
                        Ok(done) => done,
                        Err(message) => {
                            self.runner_line(&format!("error: {}: {message}", uses.value));
                            (Conclusion::Failure, Object::new())
                        }
                    }
                }
            }
            StepAction::Control(_) => {
                self.runner_line(
                    "error: wait, wait-all, cancel and parallel steps are not supported by firerunner",
                );
                (Conclusion::Failure, Object::new())
            }
        };
        self.finish_step(step, name, outcome, outputs, started)
    }

    fn finish_step(
        &mut self,
        step: &Step,
        name: String,
        outcome: Conclusion,
        outputs: Object,
        started: Instant,
    ) -> StepReport {
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
            entry.insert("outputs", Value::Object(outputs));
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

    #[allow(clippy::too_many_arguments)]
    async fn run_script(
        &mut self,
        step: &Step,
        ctx: &EvalContext,
        env: BTreeMap<String, String>,
        script: &firerunner_workflow::model::Template,
        shell: Option<&firerunner_workflow::model::Template>,
        working_directory: Option<&firerunner_workflow::model::Template>,
        cancel: &CancellationToken,
    ) -> Result<(Conclusion, Object), String> {
        let source = self.template(&script.value, ctx)?;
        self.step_command = self.masker.mask(&source);
        let shell = match shell.or(self.job.defaults.shell.as_ref()).or(self
            .workflow
            .defaults
            .shell
            .as_ref())
        {
            Some(template) => Some(self.template(&template.value, ctx)?),
            None => None,
        };
        let layout = self.environment.layout.clone();
        let (template, extension) =
            crate::runner_text::shell_command(shell.as_deref(), self.has_bash)?;
        let script_path = format!(
            "{}/{}.{extension}",
            layout.temp,
            unique_name(self.step_index)
        );
        self.sandbox
            .write_file(&script_path, 0o755, source.as_bytes())
            .await
            .map_err(|e| e.to_string())?;
        let argv: Vec<String> = template
            .split_whitespace()
            .map(|part| part.replace("{0}", &script_path))
            .collect();
        let directory = match working_directory
            .or(self.job.defaults.working_directory.as_ref())
            .or(self.workflow.defaults.working_directory.as_ref())
        {
            Some(template) => {
                let dir = self.template(&template.value, ctx)?;
                if dir.starts_with('/') {
                    dir
                } else {
                    format!("{}/{dir}", layout.workspace)
                }
            }
            None => layout.workspace.clone(),
        };
        let timeout = self.step_timeout(step);
        self.run_process(timeout, env, argv, directory, cancel)
            .await
    }

    /// A step's `timeout-minutes`.
    fn step_timeout(&self, step: &Step) -> Option<Duration> {
        step.timeout_minutes
            .as_ref()
            .and_then(|v| self.evaluate_value(&v.value).ok())
            .map(|v| expr::to_number(&v))
            .filter(|m| *m > 0.0)
            .map(|m| Duration::from_secs_f64(m * 60.0))
    }

    /// Runs one process for a step with the runner's file commands, acts on
    /// its workflow commands and output, and reads the files back.
    async fn run_process(
        &mut self,
        timeout: Option<Duration>,
        mut env: BTreeMap<String, String>,
        argv: Vec<String>,
        directory: String,
        cancel: &CancellationToken,
    ) -> Result<(Conclusion, Object), String> {
        let layout = self.environment.layout.clone();
        let files = FileCommands::new(&layout.temp, self.step_index);
        for (name, path) in files.all() {
            self.sandbox
                .write_file(path, 0o666, b"")
                .await
                .map_err(|e| e.to_string())?;
            env.insert(name.to_string(), path.to_string());
        }
        let base_path = env.get("PATH").cloned().unwrap_or_else(|| {
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into()
        });
        let mut path = self.added_path.clone();
        path.push(base_path);
        env.insert("PATH".into(), path.join(":"));
        let spec = ProcessSpec {
            argv,
            env,
            cwd: Some(directory),
            timeout,
        };
        self.legacy_outputs = Object::new();
        self.stopped_commands = None;
        let sandbox = self.sandbox;
        let (end, ran) = sandbox
            .run_timed(spec, cancel, &mut |stream, text| {
                self.output_line(stream, &text)
            })
            .await
            .map_err(|e| e.to_string())?;
        self.command_time += ran;
        self.step_exit_code = match end {
            ProcessEnd::Exited(code) => Some(code),
            _ => None,
        };
        let mut outputs = std::mem::take(&mut self.legacy_outputs);
        use crate::guest_input::{read_file_command, FileCommand, ReadError};
        let mut texts = Vec::new();
        for (path, command) in [
            (&files.env, FileCommand::Env),
            (&files.output, FileCommand::Output),
            (&files.path, FileCommand::Path),
            (&files.summary, FileCommand::StepSummary),
            (&files.state, FileCommand::State),
        ] {
            match read_file_command(sandbox, path, command).await {
                Ok(text) => texts.push(text),
                Err(ReadError::Limit(limit)) => {
                    self.runner_line(&format!("error: {limit}"));
                    return Ok((Conclusion::Failure, outputs));
                }
                Err(err) => return Err(err.to_string()),
            }
        }
        let [env_file, output_file, path_file, summary, state_file] =
            <[String; 5]>::try_from(texts).expect("five file commands");
        self.last_state = parse_env_file(&state_file).unwrap_or_default();
        match parse_env_file(&env_file) {
            Ok(pairs) => self.added_env.extend(pairs),
            Err(message) => {
                self.runner_line(&format!("error: GITHUB_ENV: {message}"));
                return Ok((Conclusion::Failure, outputs));
            }
        }
        match parse_env_file(&output_file) {
            Ok(pairs) => {
                for (name, value) in pairs {
                    outputs.insert(name, Value::String(value));
                }
            }
            Err(message) => {
                self.runner_line(&format!("error: GITHUB_OUTPUT: {message}"));
                return Ok((Conclusion::Failure, outputs));
            }
        }
        apply_path_file(&path_file, &mut self.added_path);
        let summary = self.masker.mask(&summary);
        self.summary.push_str(&summary);
        let result = match end {
            ProcessEnd::Exited(0) => Conclusion::Success,
            ProcessEnd::Exited(code) => {
                self.runner_line(&format!("error: Process completed with exit code {code}."));
                Conclusion::Failure
            }
            ProcessEnd::Signalled(signal) => {
                self.runner_line(&format!(
                    "error: The process was killed by signal {signal}."
                ));
                Conclusion::Failure
            }
            ProcessEnd::TimedOut => {
                self.runner_line("error: The step exceeded its timeout-minutes.");
                Conclusion::Failure
            }
            ProcessEnd::Cancelled => Conclusion::Cancelled,
        };
        Ok((result, outputs))
    }

    /// Native `actions/checkout`: the host prepares the files with git and
    /// streams them into the workspace (or `with.path` under it).
    async fn checkout(
        &mut self,
        with: &indexmap::IndexMap<String, firerunner_workflow::Spanned<Value>>,
        ctx: &EvalContext,
    ) -> Result<(), String> {
        let Some(source) = self.environment.checkout.clone() else {
            return Err("no repository is known for this run".into());
        };
        let input = |name: &str| -> Result<Option<String>, String> {
            match with.get(name) {
                Some(value) => expr::evaluate_value(&value.value, ctx)
                    .map(|v| Some(expr::to_string(&v).into_owned()))
                    .map_err(|e| e.to_string()),
                None => Ok(None),
            }
        };
        let source = match source {
            crate::checkout::CheckoutSource::Commit {
                repository,
                commit,
                credentials,
                ..
            } => {
                let depth = input("fetch-depth")?
                    .map(|d| {
                        d.parse::<u32>()
                            .map_err(|_| format!("fetch-depth {d:?} is not a number"))
                    })
                    .transpose()?
                    .unwrap_or(1);
                let commit = input("ref")?.filter(|r| !r.is_empty()).unwrap_or(commit);
                crate::checkout::CheckoutSource::Commit {
                    repository,
                    commit,
                    depth,
                    credentials,
                }
            }
            working_tree => working_tree,
        };
        let target = match input("path")?.filter(|p| !p.is_empty()) {
            Some(path) => format!("{}/{path}", self.environment.layout.workspace),
            None => self.environment.layout.workspace.clone(),
        };
        let host_dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let prepared = {
            let source = source.clone();
            let dest = host_dir.path().to_path_buf();
            tokio::task::spawn_blocking(move || crate::checkout::prepare(&source, &dest))
                .await
                .map_err(|e| e.to_string())?
                .map_err(|e| e.to_string())?
        };
        self.runner_line(&format!("Checked out {prepared} into {target}"));
        self.sandbox
            .create_dirs(&[&target])
            .await
            .map_err(|e| e.to_string())?;
        self.sandbox
            .client()
            .put_tar(host_dir.path(), &target)
            .await
            .map_err(|e| e.to_string())
    }

    /// A local action (`uses: ./path`): its `action.yml` is read from the
    /// workspace (checked out by an earlier step, as on GitHub); composite
    /// actions run their steps here with their own `inputs` and `steps`.
    async fn local_action(
        &mut self,
        step: &Step,
        uses: &str,
        with: &indexmap::IndexMap<String, firerunner_workflow::Spanned<Value>>,
        ctx: &EvalContext,
        cancel: &CancellationToken,
    ) -> Result<(Conclusion, Object), String> {
        let dir = format!(
            "{}/{}",
            self.environment.layout.workspace,
            uses.trim_start_matches("./").trim_end_matches('/')
        );
        let mut found = None;
        for name in ["action.yml", "action.yaml"] {
            let path = format!("{dir}/{name}");
            if let Some(bytes) = self
                .sandbox
                .read_file(&path, crate::guest_input::ACTION_METADATA_LIMIT)
                .await
                .map_err(|e| e.to_string())?
            {
                found = Some((path, bytes));
                break;
            }
        }
        let Some((path, bytes)) = found else {
            return Err(format!(
                "no action.yml in {dir} (is the repository checked out?)"
            ));
        };
        let label = format!(
            "{}/{}",
            uses.trim_end_matches('/'),
            path.rsplit('/').next().unwrap_or("action.yml")
        );
        let action =
            firerunner_workflow::load::parse_action(&label, &String::from_utf8_lossy(&bytes))
                .map_err(|d| d.to_string())?;
        self.run_action(step, &action, &dir, with, ctx, cancel)
            .await
    }

    /// A remote action (`owner/repo@ref`, `owner/repo/path@ref`): the host
    /// fetches it with git (from `actions_base_url`, GitHub by default) and
    /// streams it to `/home/runner/work/_actions/owner/repo/ref` in the guest.
    async fn remote_action(
        &mut self,
        step: &Step,
        uses: &str,
        with: &indexmap::IndexMap<String, firerunner_workflow::Spanned<Value>>,
        ctx: &EvalContext,
        cancel: &CancellationToken,
    ) -> Result<(Conclusion, Object), String> {
        let reference = crate::remote_actions::ActionRef::parse(uses)?;
        let base = self.environment.actions_base_url.clone();
        let cache = self.environment.actions_cache_dir.clone();
        let host_dir = {
            let reference = reference.clone();
            tokio::task::spawn_blocking(move || {
                crate::remote_actions::fetch(&reference, &base, &cache)
            })
            .await
            .map_err(|e| e.to_string())??
        };
        let guest_root = format!(
            "{}/_actions/{}/{}/{}",
            self.environment.layout.workspace_root(),
            reference.owner,
            reference.repo,
            reference.git_ref
        );
        self.sandbox
            .create_dirs(&[&guest_root])
            .await
            .map_err(|e| e.to_string())?;
        self.sandbox
            .client()
            .put_tar(&host_dir, &guest_root)
            .await
            .map_err(|e| e.to_string())?;
        let action_dir = host_dir.join(&reference.path);
        let (label, text) = ["action.yml", "action.yaml"]
            .iter()
            .find_map(|name| {
                let text = std::fs::read_to_string(action_dir.join(name)).ok()?;
                Some((format!("{uses}/{name}"), text))
            })
            .ok_or_else(|| format!("{uses} has no action.yml"))?;
        let action =
            firerunner_workflow::load::parse_action(&label, &text).map_err(|d| d.to_string())?;
        let guest_dir = if reference.path.is_empty() {
            guest_root
        } else {
            format!("{guest_root}/{}", reference.path)
        };
        self.run_action(step, &action, &guest_dir, with, ctx, cancel)
            .await
    }

    /// Runs an action whose files are at `action_dir` in the guest: composite
    /// steps here, with the action's own `inputs`, `steps` and outputs, and
    /// `github.action_path` / `GITHUB_ACTION_PATH` pointing at its files.
    #[allow(clippy::too_many_arguments)]
    async fn run_action(
        &mut self,
        step: &Step,
        action: &firerunner_workflow::load::ParsedAction,
        action_dir: &str,
        with: &indexmap::IndexMap<String, firerunner_workflow::Spanned<Value>>,
        ctx: &EvalContext,
        cancel: &CancellationToken,
    ) -> Result<(Conclusion, Object), String> {
        let steps = match &action.runs {
            firerunner_workflow::load::ActionRuns::Composite(steps) => steps.clone(),
            firerunner_workflow::load::ActionRuns::Node {
                using,
                main,
                post,
                post_if,
            } => {
                let (done, env) = self
                    .run_node_action(step, action, action_dir, using, main, with, ctx, cancel)
                    .await?;
                if let Some(post) = post {
                    self.post_steps.push(PostStep {
                        name: format!(
                            "Post {}",
                            action
                                .name
                                .clone()
                                .unwrap_or_else(|| action_dir.to_string())
                        ),
                        script: format!("{action_dir}/{post}"),
                        condition: post_if.clone().unwrap_or_else(|| "always()".into()),
                        env,
                        state: std::mem::take(&mut self.last_state),
                    });
                }
                return Ok(done);
            }
            firerunner_workflow::load::ActionRuns::Docker { .. } => {
                return Err("docker actions are not supported".into())
            }
        };
        let mut inputs = Object::new();
        for (name, input) in &action.inputs {
            let value = match with.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)) {
                Some((_, value)) => expr::evaluate_value(&value.value, ctx)
                    .map_err(|e| format!("with.{name}: {e}"))?,
                None => match &input.default {
                    Some(default) => Value::String(self.template(&default.value, ctx)?),
                    None if input.required => return Err(format!("input '{name}' is required")),
                    None => Value::String(String::new()),
                },
            };
            inputs.insert(
                name.clone(),
                Value::String(expr::to_string(&value).into_owned()),
            );
        }
        let saved_contexts = self.contexts.clone();
        let saved_steps = std::mem::take(&mut self.steps_context);
        let saved_failed = std::mem::replace(&mut self.failed, false);
        let saved_action_path = self
            .added_env
            .insert("GITHUB_ACTION_PATH".into(), action_dir.to_string());
        self.contexts.insert("inputs", Value::Object(inputs));
        if let Some(Value::Object(github)) = self.contexts.get("github") {
            let mut github = github.clone();
            github.insert("action_path", Value::from(action_dir));
            self.contexts.insert("github", Value::Object(github));
        }
        for step in &steps {
            Box::pin(self.run_step(step, cancel)).await;
        }
        let failed = self.failed;
        let status = if failed {
            JobStatus::Failure
        } else {
            JobStatus::Success
        };
        let output_ctx = self.eval_context(&BTreeMap::new(), status);
        let mut outputs = Object::new();
        let mut output_error = None;
        for (name, template) in &action.outputs {
            if let Some(template) = template {
                match self.template(&template.value, &output_ctx) {
                    Ok(value) => outputs.insert(name.clone(), Value::String(value)),
                    Err(message) => output_error = Some(format!("outputs.{name}: {message}")),
                }
            }
        }
        self.contexts = saved_contexts;
        self.steps_context = saved_steps;
        self.failed = saved_failed;
        match saved_action_path {
            Some(path) => self.added_env.insert("GITHUB_ACTION_PATH".into(), path),
            None => self.added_env.remove("GITHUB_ACTION_PATH"),
        };
        if let Some(message) = output_error {
            return Err(message);
        }
        let result = if cancel.is_cancelled() {
            Conclusion::Cancelled
        } else if failed {
            Conclusion::Failure
        } else {
            Conclusion::Success
        };
        Ok((result, outputs))
    }

    /// A JavaScript action: `node <main>` in the guest with its inputs as
    /// `INPUT_<NAME>` variables, as GitHub's runner passes them. The guest
    /// must have node (the Debian image does); `pre`/`post` scripts are not run.
    #[allow(clippy::too_many_arguments)]
    async fn run_node_action(
        &mut self,
        step: &Step,
        action: &firerunner_workflow::load::ParsedAction,
        action_dir: &str,
        using: &str,
        main: &str,
        with: &indexmap::IndexMap<String, firerunner_workflow::Spanned<Value>>,
        ctx: &EvalContext,
        cancel: &CancellationToken,
    ) -> Result<((Conclusion, Object), BTreeMap<String, String>), String> {
        if !self.guest_has("node").await? {
            return Err(format!(
                "this '{using}' action needs node, which the guest image does not have"
            ));
        }
        let status = self.status(cancel);
        let mut env = self.step_env(step, status)?;
        for (name, input) in &action.inputs {
            let value = match with.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)) {
                Some((_, value)) => expr::to_string(
                    &expr::evaluate_value(&value.value, ctx)
                        .map_err(|e| format!("with.{name}: {e}"))?,
                )
                .into_owned(),
                None => match &input.default {
                    Some(default) => self.template(&default.value, ctx)?,
                    None if input.required => return Err(format!("input '{name}' is required")),
                    None => String::new(),
                },
            };
            env.insert(
                format!("INPUT_{}", name.replace(' ', "_").to_ascii_uppercase()),
                value,
            );
        }
        env.insert("GITHUB_ACTION_PATH".into(), action_dir.to_string());
        let argv = vec!["node".to_string(), format!("{action_dir}/{main}")];
        let workspace = self.environment.layout.workspace.clone();
        let timeout = self.step_timeout(step);
        let done = self
            .run_process(timeout, env.clone(), argv, workspace, cancel)
            .await?;
        Ok((done, env))
    }

    /// The `post:` scripts of the job's JavaScript actions, last first, each
    /// under its `post-if:` (default `always()`), with the `STATE_<name>`
    /// variables its main script saved through `GITHUB_STATE`.
    async fn run_post_steps(&mut self, cancel: &CancellationToken) {
        while let Some(post) = self.post_steps.pop() {
            self.step_index += 1;
            let status = self.status(cancel);
            let ctx = self.eval_context(&post.env, status);
            let run = expr::parse_condition(&post.condition, ALL_CONTEXTS)
                .and_then(|c| c.evaluate(&ctx))
                .unwrap_or(false);
            if !run {
                continue;
            }
            self.runner_line(&format!("##[step] {}", post.name));
            let mut env = post.env.clone();
            for (name, value) in &post.state {
                env.insert(format!("STATE_{name}"), value.clone());
            }
            let argv = vec!["node".to_string(), post.script.clone()];
            let workspace = self.environment.layout.workspace.clone();
            match self.run_process(None, env, argv, workspace, cancel).await {
                Ok((Conclusion::Success, _)) => {}
                Ok(_) => self.failed = true,
                Err(message) => {
                    self.runner_line(&format!("error: {}: {message}", post.name));
                    self.failed = true;
                }
            }
        }
    }

    /// Runs a natively served action and returns its outputs.
    async fn native_action(
        &mut self,
        kind: NativeAction,
        with: &indexmap::IndexMap<String, firerunner_workflow::Spanned<Value>>,
        ctx: &EvalContext,
    ) -> Result<Object, String> {
        let mut inputs = BTreeMap::new();
        for (name, value) in with {
            let value =
                expr::evaluate_value(&value.value, ctx).map_err(|e| format!("with.{name}: {e}"))?;
            inputs.insert(name.clone(), expr::to_string(&value).into_owned());
        }
        let layout = self.environment.layout.clone();
        let sandbox = self.sandbox;
        let result = match kind {
            NativeAction::UploadArtifact | NativeAction::DownloadArtifact => {
                let store = self
                    .environment
                    .artifacts
                    .clone()
                    .ok_or("no artifact store is configured")?;
                let run_id = &self.environment.run_id;
                if kind == NativeAction::UploadArtifact {
                    native_actions::upload_artifact(
                        sandbox,
                        &store,
                        run_id,
                        &inputs,
                        &layout.workspace,
                        &layout.home,
                        &layout.temp,
                    )
                    .await?
                } else {
                    native_actions::download_artifact(
                        sandbox,
                        &store,
                        run_id,
                        &inputs,
                        &layout.workspace,
                        &layout.home,
                    )
                    .await?
                }
            }
            NativeAction::Cache => {
                let (store, scope) = self
                    .environment
                    .cache
                    .clone()
                    .ok_or("no cache store is configured")?;
                let (result, pending) = native_actions::restore_cache(
                    sandbox,
                    &store,
                    &scope,
                    &inputs,
                    &layout.workspace,
                    &layout.home,
                )
                .await?;
                self.pending_caches.extend(pending);
                result
            }
        };
        for line in &result.log {
            self.runner_line(line);
        }
        Ok(result
            .outputs
            .into_iter()
            .map(|(k, v)| (k, Value::String(v)))
            .collect())
    }

    /// The post step of actions/cache: saves what the job's caches missed.
    async fn save_caches(&mut self) {
        let Some((store, scope)) = self.environment.cache.clone() else {
            return;
        };
        for pending in std::mem::take(&mut self.pending_caches) {
            let sandbox = self.sandbox;
            match native_actions::save_cache(sandbox, &store, &scope, &pending).await {
                Ok(message) => self.runner_line(&message),
                Err(message) => {
                    self.runner_line(&format!("warning: saving the cache failed: {message}"))
                }
            }
        }
    }

    /// A host copy of the guest workspace, for `hashFiles`.
    async fn snapshot_workspace(&self) -> Result<tempfile::TempDir, String> {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        self.sandbox
            .client()
            .get_tar(
                &self.environment.layout.workspace,
                dir.path(),
                crate::guest_input::workspace_snapshot_options(),
            )
            .await
            .map_err(|e| e.to_string())?;
        Ok(dir)
    }

    /// Acts on a workflow command, or logs the line.
    fn output_line(&mut self, stream: LogStream, text: &str) {
        if let Some(token) = &self.stopped_commands {
            // While stopped, only `::<token>::` is a command: it resumes them.
            if text.trim() == format!("::{token}::") {
                self.stopped_commands = None;
            }
            self.line(stream, text);
            return;
        }
        if let Some(token) = text.trim().strip_prefix("::stop-commands::") {
            if !token.is_empty() {
                self.stopped_commands = Some(token.to_string());
            }
            self.line(stream, text);
            return;
        }
        match WorkflowCommand::parse(text) {
            Some(WorkflowCommand::AddMask(value)) => {
                if !self.masker.add(&value) {
                    let limit = crate::runner_text::MAX_MASKED_VALUES;
                    self.runner_line(&format!(
                        "warning: add-mask ignored: the job already masks {limit} values"
                    ));
                }
            }
            Some(WorkflowCommand::SetOutput { name, value }) => {
                self.runner_line(
                    "warning: The `set-output` command is deprecated; use environment files (GITHUB_OUTPUT).",
                );
                self.legacy_outputs.insert(name, Value::String(value));
            }
            Some(WorkflowCommand::Annotation {
                level,
                location,
                message,
            }) => {
                let place: Vec<String> = location.iter().map(|(k, v)| format!("{k}={v}")).collect();
                if place.is_empty() {
                    self.runner_line(&format!("##[{level}]{message}"))
                } else {
                    self.runner_line(&format!("##[{level}] {}: {message}", place.join(",")))
                }
            }
            Some(WorkflowCommand::Group(title)) => self.runner_line(&format!("##[group]{title}")),
            Some(WorkflowCommand::EndGroup) => self.runner_line("##[endgroup]"),
            None => self.line(stream, text),
        }
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

fn unique_name(step: usize) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    format!("step{step}-{nanos:x}")
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

/// The per-step files behind `GITHUB_ENV`, `GITHUB_OUTPUT`, `GITHUB_PATH`,
/// `GITHUB_STATE` and `GITHUB_STEP_SUMMARY`.
struct FileCommands {
    env: String,
    output: String,
    path: String,
    state: String,
    summary: String,
}

impl FileCommands {
    fn new(temp: &str, step: usize) -> Self {
        let dir = format!("{temp}/_runner_file_commands");
        let name = |kind: &str| format!("{dir}/{kind}_{}", unique_name(step));
        Self {
            env: name("set_env"),
            output: name("set_output"),
            path: name("add_path"),
            state: name("save_state"),
            summary: name("step_summary"),
        }
    }

    fn all(&self) -> [(&'static str, &str); 5] {
        [
            ("GITHUB_ENV", &self.env),
            ("GITHUB_OUTPUT", &self.output),
            ("GITHUB_PATH", &self.path),
            ("GITHUB_STATE", &self.state),
            ("GITHUB_STEP_SUMMARY", &self.summary),
        ]
    }
}
