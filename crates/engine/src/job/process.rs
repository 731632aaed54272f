//! A step's process: its script and shell, the runner's file commands around
//! it, the workflow commands in its output, and how it ended.

use std::collections::BTreeMap;
use std::time::Duration;

use firerunner_workflow::expr::{self, EvalContext};
use firerunner_workflow::model::{Step, Template};
use firerunner_workflow::{Conclusion, Object, Value};
use tokio_util::sync::CancellationToken;

use super::runner::JobRunner;
use super::StepError;
use crate::guest_input::{read_file_command, FileCommand, ReadError};
use crate::logs::LogStream;
use crate::runner_text::{apply_path_file, parse_env_file, WorkflowCommand};
use crate::sandbox::{ProcessEnd, ProcessSpec, Sandbox};

/// How a step's action ended: its outcome and outputs.
pub(super) struct StepEnd {
    pub conclusion: Conclusion,
    pub outputs: Object,
}

impl StepEnd {
    /// An end without outputs.
    pub fn bare(conclusion: Conclusion) -> Self {
        Self {
            conclusion,
            outputs: Object::new(),
        }
    }
}

/// A `run:` step's script with its shell and folder.
pub(super) struct Script<'a> {
    pub step: &'a Step,
    pub script: &'a Template,
    pub shell: Option<&'a Template>,
    pub working_directory: Option<&'a Template>,
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

/// What a process wrote to its file commands.
struct FileCommandTexts {
    env: String,
    output: String,
    path: String,
    summary: String,
    state: String,
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

    /// Creates the empty files in the guest and points `env` at them.
    async fn create(
        &self,
        sandbox: &Sandbox,
        env: &mut BTreeMap<String, String>,
    ) -> Result<(), StepError> {
        for (name, path) in self.all() {
            sandbox.write_file(path, 0o666, b"").await?;
            env.insert(name.to_string(), path.to_string());
        }
        Ok(())
    }

    /// Reads the files back, each held to its limit.
    async fn read(&self, sandbox: &Sandbox) -> Result<FileCommandTexts, ReadError> {
        Ok(FileCommandTexts {
            env: read_file_command(sandbox, &self.env, FileCommand::Env).await?,
            output: read_file_command(sandbox, &self.output, FileCommand::Output).await?,
            path: read_file_command(sandbox, &self.path, FileCommand::Path).await?,
            summary: read_file_command(sandbox, &self.summary, FileCommand::StepSummary).await?,
            state: read_file_command(sandbox, &self.state, FileCommand::State).await?,
        })
    }
}

impl JobRunner<'_> {
    /// Runs a `run:` step's script with its shell in its folder.
    pub(super) async fn run_script(
        &mut self,
        script: &Script<'_>,
        ctx: &EvalContext,
        env: BTreeMap<String, String>,
        cancel: &CancellationToken,
    ) -> Result<StepEnd, StepError> {
        let source = self.template(&script.script.value, ctx)?;
        self.step_command = self.masker.mask(&source);
        let shell = script.shell.or(self.job.defaults.shell.as_ref()).or(self
            .workflow
            .defaults
            .shell
            .as_ref());
        let shell = match shell {
            Some(template) => Some(self.template(&template.value, ctx)?),
            None => None,
        };
        let temp = &self.environment.layout.temp;
        let (template, extension) =
            crate::runner_text::shell_command(shell.as_deref(), self.has_bash)?;
        let script_path = format!("{temp}/{}.{extension}", unique_name(self.step_index));
        self.sandbox
            .write_file(&script_path, 0o755, source.as_bytes())
            .await?;
        let argv: Vec<String> = template
            .split_whitespace()
            .map(|part| part.replace("{0}", &script_path))
            .collect();
        let directory = self.script_directory(script.working_directory, ctx)?;
        let spec = ProcessSpec {
            argv,
            env,
            cwd: Some(directory),
            timeout: self.step_timeout(script.step),
        };
        self.run_process(spec, cancel).await
    }

    /// The folder a script runs in: its `working-directory` (or the defaults'),
    /// relative to the workspace.
    fn script_directory(
        &self,
        working_directory: Option<&Template>,
        ctx: &EvalContext,
    ) -> Result<String, StepError> {
        let workspace = &self.environment.layout.workspace;
        let template = working_directory
            .or(self.job.defaults.working_directory.as_ref())
            .or(self.workflow.defaults.working_directory.as_ref());
        let Some(template) = template else {
            return Ok(workspace.clone());
        };
        let dir = self.template(&template.value, ctx)?;
        Ok(if dir.starts_with('/') {
            dir
        } else {
            format!("{workspace}/{dir}")
        })
    }

    /// A step's `timeout-minutes`.
    pub(super) fn step_timeout(&self, step: &Step) -> Option<Duration> {
        step.timeout_minutes
            .as_ref()
            .and_then(|v| self.evaluate_value(&v.value).ok())
            .map(|v| expr::to_number(&v))
            .filter(|m| *m > 0.0)
            .map(|m| Duration::from_secs_f64(m * 60.0))
    }

    /// Runs one process for a step with the runner's file commands, acts on
    /// its workflow commands and output, and reads the files back.
    pub(super) async fn run_process(
        &mut self,
        mut spec: ProcessSpec,
        cancel: &CancellationToken,
    ) -> Result<StepEnd, StepError> {
        let files = FileCommands::new(&self.environment.layout.temp, self.step_index);
        files.create(self.sandbox, &mut spec.env).await?;
        let base_path = spec.env.get("PATH").cloned().unwrap_or_else(|| {
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into()
        });
        let mut path = self.added_path.clone();
        path.push(base_path);
        spec.env.insert("PATH".into(), path.join(":"));
        self.reset_commands(&spec.env);
        let sandbox = self.sandbox;
        let (end, ran) = sandbox
            .run_timed(spec, cancel, &mut |stream, text| {
                self.output_line(stream, &text)
            })
            .await?;
        self.command_time += ran;
        self.step_exit_code = match end {
            ProcessEnd::Exited(code) => Some(code),
            _ => None,
        };
        let mut outputs = std::mem::take(&mut self.legacy_outputs);
        let texts = match files.read(sandbox).await {
            Ok(texts) => texts,
            Err(ReadError::Limit(limit)) => {
                self.runner_line(&format!("error: {limit}"));
                return Ok(failure(outputs));
            }
            Err(err) => return Err(err.into()),
        };
        if !self.apply_file_commands(texts, &mut outputs) {
            return Ok(failure(outputs));
        }
        let mut conclusion = self.process_conclusion(end);
        if self.command_failed && conclusion == Conclusion::Success {
            conclusion = Conclusion::Failure;
        }
        Ok(StepEnd {
            conclusion,
            outputs,
        })
    }

    /// Forgets what the last process's workflow commands did; `env` is the
    /// next process's (`ACTIONS_ALLOW_UNSECURE_COMMANDS`).
    fn reset_commands(&mut self, env: &BTreeMap<String, String>) {
        self.legacy_outputs = Object::new();
        self.stopped_commands = None;
        self.last_state = Vec::new();
        self.command_failed = false;
        self.allow_unsecure_commands = allows_unsecure_commands(env);
    }

    /// Applies what a process wrote to its file commands; false (with the
    /// error logged) when `GITHUB_ENV` or `GITHUB_OUTPUT` is malformed.
    fn apply_file_commands(&mut self, texts: FileCommandTexts, outputs: &mut Object) -> bool {
        self.last_state
            .extend(parse_env_file(&texts.state).unwrap_or_default());
        match parse_env_file(&texts.env) {
            Ok(pairs) => self.added_env.extend(pairs),
            Err(message) => {
                self.runner_line(&format!("error: GITHUB_ENV: {message}"));
                return false;
            }
        }
        match parse_env_file(&texts.output) {
            Ok(pairs) => {
                for (name, value) in pairs {
                    outputs.insert(name, Value::String(value));
                }
            }
            Err(message) => {
                self.runner_line(&format!("error: GITHUB_OUTPUT: {message}"));
                return false;
            }
        }
        apply_path_file(&texts.path, &mut self.added_path);
        let summary = self.masker.mask(&texts.summary);
        self.summary.push_str(&summary);
        true
    }

    /// The step's outcome from how its process ended (logged when it failed).
    fn process_conclusion(&mut self, end: ProcessEnd) -> Conclusion {
        let message = match end {
            ProcessEnd::Exited(0) => return Conclusion::Success,
            ProcessEnd::Cancelled => return Conclusion::Cancelled,
            ProcessEnd::Exited(code) => format!("error: Process completed with exit code {code}."),
            ProcessEnd::Signalled(signal) => {
                format!("error: The process was killed by signal {signal}.")
            }
            ProcessEnd::TimedOut => "error: The step exceeded its timeout-minutes.".to_owned(),
        };
        self.runner_line(&message);
        Conclusion::Failure
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
            Some(command) => self.workflow_command(command, text),
            None => self.line(stream, text),
        }
    }

    /// Acts on one workflow command (`line` as the process wrote it).
    fn workflow_command(&mut self, command: WorkflowCommand, line: &str) {
        match command {
            WorkflowCommand::Debug(message) => {
                if self.step_debug {
                    self.runner_line(&format!("##[debug]{message}"));
                }
            }
            WorkflowCommand::SaveState { name, value } => {
                self.runner_line(
                    "warning: The `save-state` command is deprecated; use environment files (GITHUB_STATE).",
                );
                self.last_state.push((name, value));
            }
            WorkflowCommand::SetEnv { .. } | WorkflowCommand::AddPath(_) => {
                self.unsecure_command(command, line)
            }
            WorkflowCommand::AddMask(value) => {
                if !self.masker.add(&value) {
                    let limit = crate::runner_text::MAX_MASKED_VALUES;
                    self.runner_line(&format!(
                        "warning: add-mask ignored: the job already masks {limit} values"
                    ));
                }
            }
            WorkflowCommand::SetOutput { name, value } => {
                self.runner_line(
                    "warning: The `set-output` command is deprecated; use environment files (GITHUB_OUTPUT).",
                );
                self.legacy_outputs.insert(name, Value::String(value));
            }
            WorkflowCommand::Annotation {
                level,
                location,
                message,
            } => {
                let place: Vec<String> = location.iter().map(|(k, v)| format!("{k}={v}")).collect();
                if place.is_empty() {
                    self.runner_line(&format!("##[{level}]{message}"))
                } else {
                    self.runner_line(&format!("##[{level}] {}: {message}", place.join(",")))
                }
            }
            WorkflowCommand::Group(title) => self.runner_line(&format!("##[group]{title}")),
            WorkflowCommand::EndGroup => self.runner_line("##[endgroup]"),
        }
    }
}

impl JobRunner<'_> {
    /// `::set-env::` and `::add-path::`: acted on when the process's env sets
    /// `ACTIONS_ALLOW_UNSECURE_COMMANDS` to true, else they fail the step
    /// with GitHub's message.
    fn unsecure_command(&mut self, command: WorkflowCommand, line: &str) {
        let name = match &command {
            WorkflowCommand::SetEnv { .. } => "set-env",
            _ => "add-path",
        };
        if !self.allow_unsecure_commands {
            self.runner_line(&format!(
                "error: Unable to process command '{}' successfully.",
                line.trim()
            ));
            self.runner_line(&format!("error: The `{name}` command is disabled. Please upgrade to using Environment Files or opt into unsecure command execution by setting the `ACTIONS_ALLOW_UNSECURE_COMMANDS` environment variable to `true`. For more information see: https://github.blog/changelog/2020-10-01-github-actions-deprecating-set-env-and-add-path-commands/"));
            self.command_failed = true;
            return;
        }
        match command {
            WorkflowCommand::SetEnv { name, value } if !name.is_empty() => {
                self.added_env.insert(name, value);
            }
            WorkflowCommand::AddPath(dir) if !dir.is_empty() => {
                self.added_path.retain(|known| *known != dir);
                self.added_path.insert(0, dir);
            }
            _ => {
                self.runner_line(&format!("error: Unable to process command '{}' successfully: it needs a name and a value.", line.trim()));
                self.command_failed = true;
            }
        }
    }
}

/// Whether `env` sets `ACTIONS_ALLOW_UNSECURE_COMMANDS` to true (any case).
fn allows_unsecure_commands(env: &BTreeMap<String, String>) -> bool {
    env.get("ACTIONS_ALLOW_UNSECURE_COMMANDS")
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("true"))
}

/// A failed end that keeps the outputs read so far.
fn failure(outputs: Object) -> StepEnd {
    StepEnd {
        conclusion: Conclusion::Failure,
        outputs,
    }
}

fn unique_name(step: usize) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    format!("step{step}-{nanos:x}")
}
