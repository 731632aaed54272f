//! `firerunner plan`: which workflows and jobs an event would run, in order.

use std::path::PathBuf;
use std::process::{Command, ExitCode};

use anyhow::{Context, Result};
use firerunner_workflow::model::{JobBody, ParsedWorkflow};
use firerunner_workflow::plan::{plan_workflow, IfDecision, MatrixState, PlanContext, PlannedJob};
use firerunner_workflow::trigger::{check_dispatch_inputs, decide, Event, TriggerDecision};
use firerunner_workflow::{Object, Value};
use serde_json::json;

use crate::workflows;

/// Arguments of `firerunner plan`.
#[derive(clap::Args)]
pub struct Args {
    /// The event name (push, pull_request, workflow_dispatch, ...).
    #[arg(short = 'e', long, default_value = "push")]
    event: String,
    /// The webhook payload as a JSON file (default: one made from --ref and --base).
    #[arg(long)]
    payload: Option<PathBuf>,
    /// Workflow files or folders.
    #[arg(short = 'W', long = "workflows", default_value = workflows::DEFAULT_DIR)]
    workflows: Vec<PathBuf>,
    /// The git ref pushed or the PR's head (default: the current branch).
    #[arg(long = "ref")]
    git_ref: Option<String>,
    /// The base branch of a pull request when no payload is given.
    #[arg(long, default_value = "main")]
    base: String,
    /// A changed file, for path filters (repeatable).
    #[arg(long = "changed-file")]
    changed_files: Vec<String>,
    /// A workflow_dispatch input as KEY=VALUE (repeatable).
    #[arg(long = "input", value_parser = parse_key_value)]
    inputs: Vec<(String, String)>,
}

pub(crate) fn parse_key_value(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .ok_or_else(|| format!("expected KEY=VALUE, got '{s}'"))
}

pub(crate) fn current_ref() -> String {
    Command::new("git")
        .args(["symbolic-ref", "-q", "HEAD"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "refs/heads/main".to_owned())
}

pub(crate) fn default_payload(event: &str, git_ref: &str, base: &str) -> serde_json::Value {
    let branch = git_ref.strip_prefix("refs/heads/").unwrap_or(git_ref);
    match event {
        "push" => json!({ "ref": git_ref }),
        "pull_request" | "pull_request_target" => json!({
            "action": "opened",
            "pull_request": { "head": { "ref": branch }, "base": { "ref": base } }
        }),
        _ => json!({ "ref": git_ref }),
    }
}

/// Prints the plan; fails when a workflow cannot be loaded or planned.
pub fn run(args: Args) -> Result<ExitCode> {
    let git_ref = args.git_ref.clone().unwrap_or_else(current_ref);
    let event = event_of(&args, &git_ref)?;
    let (loaded, failed) = load(&args)?;
    let mut printer = PlanPrinter {
        args: &args,
        event,
        git_ref,
        failed,
        runs: 0,
        job_count: 0,
    };
    for (workflow, callees) in &loaded {
        printer.workflow(workflow, callees);
    }
    let (runs, job_count) = (printer.runs, printer.job_count);
    eprintln!(
        "{runs} of {} workflow{} run{} on '{}', {job_count} job{}",
        loaded.len(),
        if loaded.len() == 1 { "" } else { "s" },
        if runs == 1 { "s" } else { "" },
        args.event,
        if job_count == 1 { "" } else { "s" }
    );
    Ok(if printer.failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

/// The event to plan for: `--payload`, else one made from `--ref` and `--base`.
fn event_of(args: &Args, git_ref: &str) -> Result<Event> {
    let payload = match &args.payload {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read {}", path.display()))?;
            serde_json::from_str(&text)
                .with_context(|| format!("{} is not valid JSON", path.display()))?
        }
        None => default_payload(&args.event, git_ref, &args.base),
    };
    let mut event = Event::new(args.event.clone(), payload);
    if !args.changed_files.is_empty() {
        event = event.with_changed_files(args.changed_files.clone());
    }
    Ok(event)
}

/// A workflow with the workflows its jobs call, by calling job id.
type Loaded = (ParsedWorkflow, Vec<(String, ParsedWorkflow)>);

/// The workflows that load, and whether any failed to (its problems printed).
fn load(args: &Args) -> Result<(Vec<Loaded>, bool)> {
    let mut failed = false;
    let mut loaded = Vec::new();
    for path in workflows::collect(&args.workflows)? {
        let file = workflows::load_file(&path)?;
        for d in &file.diagnostics {
            eprintln!("{d}");
        }
        match file.workflow {
            Some(w) => loaded.push((w, file.callees)),
            None => failed = true,
        }
    }
    Ok((loaded, failed))
}

/// Prints each workflow's decision and plan, counting what runs.
struct PlanPrinter<'a> {
    args: &'a Args,
    event: Event,
    git_ref: String,
    failed: bool,
    /// Workflows that run.
    runs: usize,
    /// Job instances planned.
    job_count: usize,
}

impl PlanPrinter<'_> {
    fn workflow(&mut self, workflow: &ParsedWorkflow, callees: &[(String, ParsedWorkflow)]) {
        let title = workflow
            .name
            .as_ref()
            .map_or(String::new(), |n| format!(" ({})", n.value));
        let file = &workflow.file;
        match decide(workflow, &self.event) {
            TriggerDecision::Skip { reason } => println!("{file}{title}: skipped: {reason}"),
            TriggerDecision::NeedsChangedFiles => {
                println!("{file}{title}: undecided: a path filter applies; pass the changed files with --changed-file")
            }
            TriggerDecision::Run => {
                let (event, inputs) = (&self.args.event, &self.args.inputs);
                if let Some(problems) = dispatch_problems(workflow, event, inputs) {
                    self.failed = true;
                    println!("{file}{title}: not started: {problems}");
                    return;
                }
                self.runs += 1;
                let inputs = dispatch_inputs(workflow, inputs);
                let ctx = plan_context(&self.event, &self.git_ref, &inputs);
                match plan_workflow(workflow, &ctx) {
                    Ok(plan) => {
                        println!("{file}{title}: runs");
                        for job in &plan.jobs {
                            self.job(workflow, callees, job);
                        }
                    }
                    Err(err) => self.error(err),
                }
            }
        }
    }

    fn error(&mut self, err: impl std::fmt::Display) {
        self.failed = true;
        eprintln!("{err}");
    }

    /// Prints one planned job's instances, then the jobs of the workflow it calls.
    fn job(
        &mut self,
        workflow: &ParsedWorkflow,
        callees: &[(String, ParsedWorkflow)],
        job: &PlannedJob,
    ) {
        let needs = if job.needs.is_empty() {
            String::new()
        } else {
            format!("  (needs {})", job.needs.join(", "))
        };
        let condition = match job.condition {
            IfDecision::False => "  (skipped: its if: is false)",
            IfDecision::AtRunTime => "  (its if: is decided when its needs finish)",
            IfDecision::NoCondition | IfDecision::True => "",
        };
        let extra = match (&job.matrix, &job.calls) {
            (MatrixState::Deferred, _) => "  (matrix expanded when its needs finish)".to_owned(),
            (_, Some(calls)) => format!("  (calls {calls})"),
            _ => String::new(),
        };
        let names = job.instance_names();
        self.job_count += names.len();
        for (i, name) in names.iter().enumerate() {
            let suffix = if i == 0 {
                format!("{needs}{extra}{condition}")
            } else {
                String::new()
            };
            println!(
                "  {:<12} {name}{suffix}",
                if i == 0 { job.id.as_str() } else { "" }
            );
        }
        if let Some((_, callee)) = callees.iter().find(|(id, _)| *id == job.id) {
            self.called(workflow, job, callee);
        }
    }

    /// Prints the jobs of `callee`, which `job` calls.
    fn called(&mut self, workflow: &ParsedWorkflow, job: &PlannedJob, callee: &ParsedWorkflow) {
        let inputs = call_inputs(workflow, &job.id, callee);
        match plan_workflow(callee, &plan_context(&self.event, &self.git_ref, &inputs)) {
            Ok(called) => {
                for called_job in &called.jobs {
                    let names = called_job.instance_names();
                    self.job_count += names.len();
                    for name in names {
                        println!("  {:<12}   {} / {name}", "", job.name);
                    }
                }
            }
            Err(err) => self.error(err),
        }
    }
}

/// What GitHub would refuse in the `--input` values of a `workflow_dispatch`.
fn dispatch_problems(
    workflow: &ParsedWorkflow,
    event: &str,
    given: &[(String, String)],
) -> Option<String> {
    let dispatch = workflow.on.workflow_dispatch.as_ref()?;
    if event != "workflow_dispatch" {
        return None;
    }
    let problems = check_dispatch_inputs(dispatch, given);
    (!problems.is_empty()).then(|| {
        problems
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("; ")
    })
}

/// `workflow_dispatch` inputs: declared defaults, then `--input` values, typed.
pub(crate) fn dispatch_inputs(workflow: &ParsedWorkflow, given: &[(String, String)]) -> Object {
    firerunner_engine::run_context::dispatch_inputs(workflow, given).0
}

/// Inputs of a called workflow: its declared defaults, then the caller's
/// literal `with:` values (expressions are only known when the caller runs).
fn call_inputs(caller: &ParsedWorkflow, job_id: &str, callee: &ParsedWorkflow) -> Object {
    let mut inputs = Object::new();
    if let Some(call) = &callee.on.workflow_call {
        for (name, input) in &call.inputs {
            inputs.insert(name.clone(), input.default.clone().unwrap_or(Value::Null));
        }
    }
    if let Some(JobBody::Call(call)) = caller.jobs.get(job_id).map(|j| &j.body) {
        for (name, value) in &call.with {
            if !matches!(&value.value, Value::String(s) if s.contains("${{")) {
                inputs.insert(name.clone(), value.value.clone());
            }
        }
    }
    inputs
}

/// The contexts known at planning time: `github` from the event, the given
/// `inputs`, and empty `vars`.
pub(crate) fn plan_context(event: &Event, git_ref: &str, inputs: &Object) -> PlanContext {
    PlanContext {
        contexts: firerunner_engine::run_context::event_contexts(event, git_ref, inputs),
    }
}
