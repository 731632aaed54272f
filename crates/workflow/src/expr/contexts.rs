//! Which named contexts GitHub makes available in each workflow field (the
//! "context availability" table of GitHub's documentation), shared by the
//! loader's checks and the planner.

/// Contexts for `run-name`.
pub const RUN_NAME: &[&str] = &["github", "inputs", "vars"];
/// Contexts for workflow-level `env`.
pub const WORKFLOW_ENV: &[&str] = &["github", "secrets", "inputs", "vars"];
/// Contexts for workflow-level `concurrency`.
pub const WORKFLOW_CONCURRENCY: &[&str] = &["github", "inputs", "vars"];
/// Contexts for `jobs.<id>.if` and `jobs.<id>.strategy`; in `if:` the
/// status functions `success` and `failure` may name needed jobs.
pub const JOB_IF: &[&str] = &[
    "github",
    "needs",
    "vars",
    "inputs",
    super::JOB_STATUS_ARGUMENTS,
];
/// Contexts for job fields evaluated before the job runs (`name`, `runs-on`, `container`, ...).
pub const JOB_SETUP: &[&str] = &["github", "needs", "strategy", "matrix", "vars", "inputs"];
/// Contexts for `jobs.<id>.env` and a reusable workflow call's `secrets`.
pub const JOB_ENV: &[&str] = &[
    "github", "needs", "strategy", "matrix", "vars", "secrets", "inputs",
];
/// Contexts for `container.credentials` and `services.<id>.credentials`.
pub const CREDENTIALS: &[&str] = &["github", "inputs", "vars", "secrets", "env"];
/// Contexts for `jobs.<id>.defaults.run`.
pub const JOB_DEFAULTS: &[&str] = &[
    "github", "needs", "strategy", "matrix", "env", "vars", "inputs",
];
/// Contexts for `jobs.<id>.outputs`.
pub const JOB_OUTPUTS: &[&str] = &[
    "github", "needs", "strategy", "matrix", "job", "runner", "env", "vars", "secrets", "steps",
    "inputs",
];
/// Contexts for step fields (`run`, `with`, `env`, `name`, ...).
pub const STEP: &[&str] = JOB_OUTPUTS;
/// Contexts for `steps.if` (no `secrets`).
pub const STEP_IF: &[&str] = &[
    "github", "needs", "strategy", "matrix", "job", "runner", "env", "vars", "steps", "inputs",
];
/// Contexts for `on.workflow_call.outputs.<id>.value`.
pub const CALL_OUTPUT: &[&str] = &["github", "jobs", "vars", "inputs"];
/// Contexts for input defaults of `workflow_call`.
pub const CALL_INPUT_DEFAULT: &[&str] = &["github", "inputs", "vars"];
