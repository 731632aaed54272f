//! The typed model of a workflow file, as produced by [`crate::load`].
//!
//! Fields that GitHub lets a user write as an expression keep their source
//! text (a [`Template`]) or their raw [`Value`]; they are evaluated when a job
//! is planned or run, not here.

use indexmap::IndexMap;

use crate::diagnostic::{Diagnostic, Pos, Spanned};
use crate::reference::{ActionRef, WorkflowRef};
use crate::value::Value;

/// A string that may contain `${{ }}` expressions, with its position.
pub type Template = Spanned<String>;

/// Environment variables in declaration order; values may contain expressions.
pub type EnvMap = IndexMap<String, Template>;

/// One validated workflow file.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ParsedWorkflow {
    /// The file as the user named it (used in diagnostics).
    pub file: String,
    /// `name:`; GitHub shows the file path when absent.
    pub name: Option<Template>,
    /// `run-name:`.
    pub run_name: Option<Template>,
    /// `on:`.
    pub on: Triggers,
    /// `env:`.
    pub env: EnvMap,
    /// `defaults:`.
    pub defaults: Defaults,
    /// `permissions:`.
    pub permissions: Option<Permissions>,
    /// `concurrency:`.
    pub concurrency: Option<Concurrency>,
    /// `jobs:` in declaration order, keyed by job id.
    pub jobs: IndexMap<String, Job>,
    /// Warnings about a file GitHub still runs (in source order).
    pub warnings: Vec<Diagnostic>,
}

/// Everything under `on:`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Triggers {
    /// Every event the workflow listens to, keyed by event name
    /// (`push`, `pull_request`, `issues`, ...), in declaration order.
    pub events: IndexMap<String, EventTrigger>,
    /// `workflow_dispatch:` inputs, when the event is listed.
    pub workflow_dispatch: Option<WorkflowDispatch>,
    /// `schedule:` cron lines.
    pub schedule: Vec<Template>,
    /// `workflow_call:` interface, when this is a reusable workflow.
    pub workflow_call: Option<WorkflowCall>,
}

/// One event under `on:` with its filters.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct EventTrigger {
    /// Where the event name was written.
    pub pos: Pos,
    /// Branch, tag, path and activity-type filters.
    pub filters: EventFilters,
    /// `workflows:` (for `workflow_run`).
    pub workflows: Vec<Template>,
}

/// The filters GitHub applies before a workflow runs.
///
/// `None` means the filter was not written; `Some(vec![])` means it was written
/// empty. Patterns keep their order, which matters for `!` negation.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct EventFilters {
    /// `branches:`.
    pub branches: Option<Vec<Template>>,
    /// `branches-ignore:`.
    pub branches_ignore: Option<Vec<Template>>,
    /// `tags:`.
    pub tags: Option<Vec<Template>>,
    /// `tags-ignore:`.
    pub tags_ignore: Option<Vec<Template>>,
    /// `paths:`.
    pub paths: Option<Vec<Template>>,
    /// `paths-ignore:`.
    pub paths_ignore: Option<Vec<Template>>,
    /// `types:` (activity types).
    pub types: Option<Vec<Template>>,
}

/// `on.workflow_dispatch`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct WorkflowDispatch {
    /// Inputs by name.
    pub inputs: IndexMap<String, Input>,
}

/// `on.workflow_call`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct WorkflowCall {
    /// Inputs by name.
    pub inputs: IndexMap<String, Input>,
    /// Outputs by name: the expression that gives each value.
    pub outputs: IndexMap<String, WorkflowCallOutput>,
    /// Secrets the caller may pass, by name.
    pub secrets: IndexMap<String, WorkflowCallSecret>,
}

/// One output of a reusable workflow.
#[derive(Debug, Clone, PartialEq)]
pub struct WorkflowCallOutput {
    /// `description:`.
    pub description: Option<String>,
    /// `value:` (an expression over `jobs`).
    pub value: Template,
}

/// One secret a reusable workflow accepts.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct WorkflowCallSecret {
    /// `description:`.
    pub description: Option<String>,
    /// `required:`.
    pub required: bool,
}

/// An input of `workflow_dispatch` or `workflow_call`.
#[derive(Debug, Clone, PartialEq)]
pub struct Input {
    /// Where the input name was written.
    pub pos: Pos,
    /// `description:`.
    pub description: Option<String>,
    /// `required:`.
    pub required: bool,
    /// `default:`.
    pub default: Option<Value>,
    /// `type:`.
    pub kind: InputType,
}

/// The declared `type:` of an input.
#[derive(Debug, Clone, PartialEq, Default)]
pub enum InputType {
    /// `string` (the default).
    #[default]
    String,
    /// `boolean`.
    Boolean,
    /// `number`.
    Number,
    /// `choice` with its `options:`.
    Choice(Vec<String>),
    /// `environment`.
    Environment,
}

/// `defaults:` at workflow or job level.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Defaults {
    /// `defaults.run.shell`.
    pub shell: Option<Template>,
    /// `defaults.run.working-directory`.
    pub working_directory: Option<Template>,
}

/// `permissions:`.
#[derive(Debug, Clone, PartialEq)]
pub enum Permissions {
    /// `read-all`.
    ReadAll,
    /// `write-all`.
    WriteAll,
    /// A map of scope to `read`, `write` or `none`.
    Scopes(IndexMap<String, Access>),
}

/// An access level in `permissions:`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// `read`.
    Read,
    /// `write`.
    Write,
    /// `none`.
    None,
}

/// `concurrency:`.
#[derive(Debug, Clone, PartialEq)]
pub struct Concurrency {
    /// `group:` (may contain expressions).
    pub group: Template,
    /// `cancel-in-progress:` (a boolean or an expression).
    pub cancel_in_progress: Option<Spanned<Value>>,
}

/// One job under `jobs:`.
#[derive(Debug, Clone, PartialEq)]
pub struct Job {
    /// The job id (its key under `jobs:`).
    pub id: String,
    /// Where the job id was written.
    pub pos: Pos,
    /// `name:`.
    pub name: Option<Template>,
    /// `needs:` job ids, as written.
    pub needs: Vec<Spanned<String>>,
    /// `if:` as written (with or without `${{ }}`).
    pub if_cond: Option<Template>,
    /// `runs-on:` (string, list, or `{group, labels}` map; may hold expressions).
    pub runs_on: Option<Spanned<Value>>,
    /// `environment:` (a name or `{name, url}`).
    pub environment: Option<Spanned<Value>>,
    /// `outputs:` by name.
    pub outputs: IndexMap<String, Template>,
    /// `env:`.
    pub env: EnvMap,
    /// `defaults:`.
    pub defaults: Defaults,
    /// `permissions:`.
    pub permissions: Option<Permissions>,
    /// `concurrency:`.
    pub concurrency: Option<Concurrency>,
    /// `strategy:`.
    pub strategy: Option<Strategy>,
    /// `continue-on-error:` (boolean or expression).
    pub continue_on_error: Option<Spanned<Value>>,
    /// `timeout-minutes:` (number or expression).
    pub timeout_minutes: Option<Spanned<Value>>,
    /// `services:` by name, as written.
    pub services: IndexMap<String, Spanned<Value>>,
    /// `container:` (an image name or a map), as written.
    pub container: Option<Spanned<Value>>,
    /// Steps, or a call to a reusable workflow.
    pub body: JobBody,
}

/// What a job does.
// A workflow holds a handful of jobs: boxing the call would only cost callers.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum JobBody {
    /// A normal job with `steps:`.
    Steps(Vec<Step>),
    /// `uses:` a reusable workflow.
    Call(WorkflowCallJob),
}

/// A job that calls a reusable workflow.
#[derive(Debug, Clone, PartialEq)]
pub struct WorkflowCallJob {
    /// `uses:` as written (`./.github/workflows/x.yml`, `$/...` or `owner/repo/path@ref`).
    pub uses: Template,
    /// `uses:` parsed.
    pub reference: WorkflowRef,
    /// `with:` inputs.
    pub with: IndexMap<String, Spanned<Value>>,
    /// `secrets:`.
    pub secrets: CallSecrets,
}

/// The `secrets:` of a reusable-workflow call.
#[derive(Debug, Clone, PartialEq, Default)]
pub enum CallSecrets {
    /// Not given.
    #[default]
    None,
    /// `secrets: inherit`.
    Inherit,
    /// Explicit secrets by name.
    Map(IndexMap<String, Template>),
}

/// `strategy:`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Strategy {
    /// `matrix:` as written: an object whose string leaves may hold
    /// expressions, or a single expression string that yields the object.
    pub matrix: Option<Spanned<Value>>,
    /// `fail-fast:` (boolean or expression; GitHub's default is true).
    pub fail_fast: Option<Spanned<Value>>,
    /// `max-parallel:` (number or expression).
    pub max_parallel: Option<Spanned<Value>>,
}

/// One step of a job.
#[derive(Debug, Clone, PartialEq)]
pub struct Step {
    /// Where the step starts.
    pub pos: Pos,
    /// `id:`.
    pub id: Option<Spanned<String>>,
    /// `name:`.
    pub name: Option<Template>,
    /// `if:` as written.
    pub if_cond: Option<Template>,
    /// `run:` or `uses:`.
    pub action: StepAction,
    /// `env:`.
    pub env: EnvMap,
    /// `continue-on-error:` (boolean or expression).
    pub continue_on_error: Option<Spanned<Value>>,
    /// `timeout-minutes:` (number or expression).
    pub timeout_minutes: Option<Spanned<Value>>,
    /// `background: true`: the job goes on to the next step at once.
    pub background: bool,
}

/// A step that coordinates background steps instead of running something.
#[derive(Debug, Clone, PartialEq)]
pub enum ControlStep {
    /// `wait:` the background steps with these ids.
    Wait(Vec<Spanned<String>>),
    /// `wait-all:` every background step.
    WaitAll,
    /// `cancel:` the background step with this id.
    Cancel(Spanned<String>),
    /// `parallel:` these steps run at the same time.
    Parallel(Vec<Step>),
}

/// What a step runs.
#[derive(Debug, Clone, PartialEq)]
pub enum StepAction {
    /// A shell script.
    Run {
        /// `run:` script text.
        script: Template,
        /// `shell:`.
        shell: Option<Template>,
        /// `working-directory:`.
        working_directory: Option<Template>,
    },
    /// An action.
    Uses {
        /// `uses:` as written (`./path`, `$/path`, `owner/repo[/path]@ref`, `docker://image`).
        uses: Template,
        /// `uses:` parsed.
        reference: ActionRef,
        /// `with:` inputs (values may hold expressions).
        with: IndexMap<String, Spanned<Value>>,
    },
    /// `wait`, `wait-all`, `cancel` or `parallel`.
    Control(ControlStep),
}
