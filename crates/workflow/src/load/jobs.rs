//! The `jobs:` section: jobs, strategies and steps.

use std::collections::HashMap;

use indexmap::IndexMap;

use crate::diagnostic::{Pos, Spanned};
use crate::expr::is_identifier;
use crate::model::{
    CallSecrets, ControlStep, Job, JobBody, Step, StepAction, Strategy, Template, WorkflowCallJob,
};
use crate::reference::{ActionRef, WorkflowRef};
use crate::value::Value;

use super::checker::{get, Checker};
use super::yaml::{Node, NodeKind};
use super::{concurrency, defaults, env, permissions};
use crate::expr::contexts as ctx;

const STEP_JOB_KEYS: &[&str] = &[
    "name",
    "needs",
    "permissions",
    "runs-on",
    "environment",
    "concurrency",
    "outputs",
    "env",
    "defaults",
    "if",
    "steps",
    "timeout-minutes",
    "cancel-timeout-minutes",
    "strategy",
    "continue-on-error",
    "container",
    "services",
    "snapshot",
];

const CALL_JOB_KEYS: &[&str] = &[
    "name",
    "uses",
    "with",
    "secrets",
    "needs",
    "if",
    "permissions",
    "concurrency",
    "strategy",
];

const STEP_KEYS: &[&str] = &[
    "id",
    "name",
    "if",
    "uses",
    "run",
    "shell",
    "working-directory",
    "with",
    "env",
    "continue-on-error",
    "timeout-minutes",
    "background",
];

/// Keys of the steps that wait for or cancel background steps, by their kind key.
const CONTROL_STEP_KEYS: &[(&str, &[&str])] = &[
    ("wait", &["name", "id", "continue-on-error", "wait"]),
    ("wait-all", &["name", "id", "continue-on-error", "wait-all"]),
    ("cancel", &["name", "id", "continue-on-error", "cancel"]),
    ("parallel", &["parallel"]),
];

/// Builds every job under `jobs:`.
pub fn build(c: &mut Checker, node: &Node) -> IndexMap<String, Job> {
    let mut jobs = IndexMap::new();
    let Some(entries) = c.map(node, "jobs") else {
        return jobs;
    };
    if entries.is_empty() {
        c.error(node.pos, "jobs: a workflow needs at least one job");
    }
    let mut seen: HashMap<String, Pos> = HashMap::new();
    for (key, value) in entries {
        let id = key.as_str().unwrap_or_default();
        if let Some(problem) = id_problem(id) {
            c.error(key.pos, format!("jobs: invalid job id '{id}': {problem}"));
        } else if let Some(first) = seen.get(&id.to_lowercase()) {
            c.error(
                key.pos,
                format!(
                    "jobs: the job id '{id}' is already used at line {} (job ids ignore case)",
                    first.line
                ),
            );
        } else {
            seen.insert(id.to_lowercase(), key.pos);
        }
        if let Some(job) = job(c, id, key.pos, value) {
            jobs.insert(id.to_owned(), job);
        }
    }
    jobs
}

fn job(c: &mut Checker, id: &str, pos: Pos, node: &Node) -> Option<Job> {
    let field = format!("jobs.{id}");
    let is_call = matches!(&node.kind, NodeKind::Map(e) if get(e, "uses").is_some());
    let allowed = if is_call {
        CALL_JOB_KEYS
    } else {
        STEP_JOB_KEYS
    };
    let entries = c.map_with_keys(node, &field, allowed)?;
    if !is_call {
        // GitHub points at the first property inside the job's mapping.
        c.require(entries, node.pos, &field, &["runs-on", "steps"]);
    }
    let mut loader = JobLoader::new(c, field, empty_job(id, pos));
    for (key, value) in entries {
        loader.key(key.as_str().unwrap_or_default(), value);
    }
    Some(loader.finish())
}

/// A job with `id` at `pos` and nothing set yet.
fn empty_job(id: &str, pos: Pos) -> Job {
    Job {
        id: id.to_owned(),
        pos,
        name: None,
        needs: Vec::new(),
        if_cond: None,
        runs_on: None,
        environment: None,
        outputs: IndexMap::new(),
        env: IndexMap::new(),
        defaults: Default::default(),
        permissions: None,
        concurrency: None,
        strategy: None,
        continue_on_error: None,
        timeout_minutes: None,
        services: IndexMap::new(),
        container: None,
        body: JobBody::Steps(Vec::new()),
    }
}

/// A job being built from its mapping, key by key: the checker, the job's
/// field path and the parts of a reusable-workflow call seen so far.
struct JobLoader<'c, 'f> {
    c: &'c mut Checker<'f>,
    field: String,
    job: Job,
    call_uses: Option<(Template, WorkflowRef)>,
    call_with: IndexMap<String, Spanned<Value>>,
    call_secrets: CallSecrets,
}

impl<'c, 'f> JobLoader<'c, 'f> {
    fn new(c: &'c mut Checker<'f>, field: String, job: Job) -> Self {
        JobLoader {
            c,
            field,
            job,
            call_uses: None,
            call_with: IndexMap::new(),
            call_secrets: CallSecrets::None,
        }
    }

    /// The field path of the job's key `k`.
    fn f(&self, k: &str) -> String {
        format!("{}.{k}", self.field)
    }

    /// Checks one key of the job and stores its value.
    fn key(&mut self, k: &str, value: &Node) {
        match k {
            "name" | "needs" | "if" | "outputs" => self.identity(k, value),
            "runs-on" | "environment" | "container" | "services" | "steps" => {
                self.placement(k, value)
            }
            "env" | "defaults" | "permissions" | "concurrency" | "strategy" => {
                self.settings(k, value)
            }
            "continue-on-error" | "timeout-minutes" | "cancel-timeout-minutes" => {
                self.limits(k, value)
            }
            "uses" | "with" | "secrets" => self.call(k, value),
            _ => {}
        }
    }

    /// `name`, `needs`, `if` and `outputs`.
    fn identity(&mut self, k: &str, value: &Node) {
        let f = self.f(k);
        let c = &mut *self.c;
        match k {
            "name" => {
                c.template(value, &f, ctx::JOB_SETUP);
                self.job.name = c.string(value, &f);
            }
            "needs" => {
                for need in c.string_list(value, &f) {
                    if need.contains("${{") {
                        c.error(need.pos, format!("{f}: expressions are not allowed here"));
                    }
                    self.job.needs.push(need);
                }
            }
            "if" => {
                c.condition(value, &f, ctx::JOB_IF);
                self.job.if_cond = if_text(c, value, &f);
            }
            _ => {
                for (name, output) in c.map(value, &f).unwrap_or_default() {
                    let of = format!("{f}.{}", name.as_str().unwrap_or_default());
                    c.template(output, &of, ctx::JOB_OUTPUTS);
                    if let Some(text) = c.string(output, &of) {
                        let name = name.as_str().unwrap_or_default().to_owned();
                        self.job.outputs.insert(name, text);
                    }
                }
            }
        }
    }

    /// Where the job runs: `runs-on`, `environment`, `container`,
    /// `services` and its `steps`.
    fn placement(&mut self, k: &str, value: &Node) {
        let f = self.f(k);
        let c = &mut *self.c;
        let spanned = || Some(Spanned::new(value.to_value(), value.pos));
        match k {
            "runs-on" => {
                runs_on(c, value, &f);
                self.job.runs_on = spanned();
            }
            "environment" => {
                environment(c, value, &f);
                self.job.environment = spanned();
            }
            "container" => {
                container(c, value, &f);
                self.job.container = spanned();
            }
            "services" => {
                for (name, service) in c.map(value, &f).unwrap_or_default() {
                    let name = name.as_str().unwrap_or_default();
                    container(c, service, &format!("{f}.{name}"));
                    let service = Spanned::new(service.to_value(), service.pos);
                    self.job.services.insert(name.to_owned(), service);
                }
            }
            _ => self.job.body = JobBody::Steps(steps(c, value, &f)),
        }
    }

    /// `env`, `defaults`, `permissions`, `concurrency` and `strategy`.
    fn settings(&mut self, k: &str, value: &Node) {
        let f = self.f(k);
        let (c, job) = (&mut *self.c, &mut self.job);
        match k {
            "env" => job.env = env(c, value, &f, ctx::JOB_ENV),
            "defaults" => job.defaults = defaults(c, value, &f, ctx::JOB_DEFAULTS),
            "permissions" => job.permissions = permissions(c, value, &f),
            "concurrency" => job.concurrency = concurrency(c, value, &f, ctx::JOB_SETUP),
            _ => job.strategy = strategy(c, value, &f),
        }
    }

    /// `continue-on-error`, `timeout-minutes` and `cancel-timeout-minutes`.
    fn limits(&mut self, k: &str, value: &Node) {
        let f = self.f(k);
        let c = &mut *self.c;
        c.template(value, &f, ctx::JOB_SETUP);
        match k {
            "continue-on-error" => self.job.continue_on_error = c.bool_or_expr(value, &f),
            "timeout-minutes" => self.job.timeout_minutes = c.number_or_expr(value, &f),
            _ => {
                c.number_or_expr(value, &f);
            }
        }
    }

    /// A reusable-workflow call's `uses`, `with` and `secrets`.
    fn call(&mut self, k: &str, value: &Node) {
        let f = self.f(k);
        let c = &mut *self.c;
        match k {
            "uses" => {
                c.forbid_expression(value, &f);
                if let Some(uses) = c.string(value, &f) {
                    match WorkflowRef::parse(&uses) {
                        Ok(reference) => self.call_uses = Some((uses, reference)),
                        Err(e) => c.error(uses.pos, format!("{f}: {e}")),
                    }
                }
            }
            "with" => self.call_with = with(c, value, &f, ctx::JOB_SETUP),
            _ => self.call_secrets = call_secrets(c, value, &f),
        }
    }

    /// The job, a call when it has a valid `uses`.
    fn finish(self) -> Job {
        let mut job = self.job;
        if let Some((uses, reference)) = self.call_uses {
            job.body = JobBody::Call(WorkflowCallJob {
                uses,
                reference,
                with: self.call_with,
                secrets: self.call_secrets,
            });
        }
        job
    }
}

/// GitHub's longest job or step id is one character shorter than this.
const MAX_ID_LENGTH: usize = 100;

/// Why GitHub refuses `id` as a job or step id, if it does.
fn id_problem(id: &str) -> Option<String> {
    if !is_identifier(id) {
        Some(
            "it must start with a letter or '_' and contain only letters, digits, '-' and '_'"
                .into(),
        )
    } else if id.starts_with("__") {
        Some("ids starting with '__' are reserved".into())
    } else if id.len() >= MAX_ID_LENGTH {
        Some(format!(
            "ids must be shorter than {MAX_ID_LENGTH} characters"
        ))
    } else {
        None
    }
}

/// A literal runner group with a `/` must be `organization/NAME` or
/// `enterprise/NAME` (or `org/`, `ent/`), as GitHub requires.
fn check_runner_group(c: &mut Checker, group: &Spanned<String>, field: &str) {
    if group.contains("${{") {
        return;
    }
    let parts: Vec<&str> = group.split('/').collect();
    let ok = match parts.as_slice() {
        [_] => true,
        [scope, name] => {
            !name.is_empty() && matches!(*scope, "org" | "organization" | "ent" | "enterprise")
        }
        _ => false,
    };
    if !ok {
        c.error(
            group.pos,
            format!("{field}: invalid runner group '{}': use the 'organization/' or 'enterprise/' prefix to target a single runner group", group.value),
        );
    }
}

/// The text of an `if:` (booleans and numbers keep their spelling).
fn if_text(c: &mut Checker, node: &Node, field: &str) -> Option<Spanned<String>> {
    c.string(node, field)
}

fn runs_on(c: &mut Checker, node: &Node, field: &str) {
    match &node.kind {
        NodeKind::Scalar(..) | NodeKind::Seq(_) => {
            for label in c.string_list(node, field) {
                if label.trim().is_empty() {
                    c.error(
                        label.pos,
                        format!("{field}: a runner label cannot be empty"),
                    );
                }
            }
            c.templates_in(node, field, ctx::JOB_SETUP);
        }
        NodeKind::Map(_) => {
            if let Some(entries) = c.map_with_keys(node, field, &["group", "labels"]) {
                if let Some(g) = get(entries, "group") {
                    let f = format!("{field}.group");
                    if let Some(group) = c.string(g, &f) {
                        check_runner_group(c, &group, &f);
                    }
                }
                if let Some(l) = get(entries, "labels") {
                    c.string_list(l, &format!("{field}.labels"));
                }
            }
            c.templates_in(node, field, ctx::JOB_SETUP);
        }
    }
}

fn environment(c: &mut Checker, node: &Node, field: &str) {
    if node.as_str().is_some() {
        c.template(node, field, ctx::JOB_SETUP);
        return;
    }
    if let Some(entries) = c.map_with_keys(node, field, &["name", "url", "deployment"]) {
        c.require(entries, node.pos, field, &["name"]);
        if let Some(n) = get(entries, "name") {
            c.template(n, &format!("{field}.name"), ctx::JOB_SETUP);
            c.string(n, &format!("{field}.name"));
        }
        if let Some(u) = get(entries, "url") {
            c.template(u, &format!("{field}.url"), ctx::JOB_OUTPUTS);
            c.string(u, &format!("{field}.url"));
        }
    }
}

/// The keys of a job's `container`.
const CONTAINER_KEYS: &[&str] = &["image", "credentials", "env", "ports", "volumes", "options"];

/// The keys of a job's `services` entries.
const SERVICE_KEYS: &[&str] = &[
    "image",
    "credentials",
    "env",
    "ports",
    "volumes",
    "options",
    "entrypoint",
    "command",
];

fn container(c: &mut Checker, node: &Node, field: &str) {
    if node.as_str().is_some() {
        c.template(node, field, ctx::JOB_SETUP);
        return;
    }
    let keys = if field.contains(".services.") {
        SERVICE_KEYS
    } else {
        CONTAINER_KEYS
    };
    if let Some(entries) = c.map_with_keys(node, field, keys) {
        c.require(entries, node.pos, field, &["image"]);
        for (key, value) in entries {
            let k = key.as_str().unwrap_or_default();
            let sub = format!("{field}.{k}");
            match k {
                "image" | "options" | "entrypoint" | "command" => {
                    c.string(value, &sub);
                    c.template(value, &sub, ctx::JOB_SETUP);
                }
                "env" => {
                    env(c, value, &sub, ctx::JOB_OUTPUTS);
                }
                "credentials" => {
                    if let Some(e) = c.map_with_keys(value, &sub, &["username", "password"]) {
                        for (_, v) in e {
                            c.template(v, &sub, ctx::CREDENTIALS);
                        }
                    }
                }
                _ => {
                    c.seq(value, &sub);
                    c.templates_in(value, &sub, ctx::JOB_SETUP);
                }
            }
        }
    }
}

fn strategy(c: &mut Checker, node: &Node, field: &str) -> Option<Strategy> {
    let entries = c.map_with_keys(node, field, &["matrix", "fail-fast", "max-parallel"])?;
    let mut out = Strategy::default();
    for (key, value) in entries {
        let k = key.as_str().unwrap_or_default();
        let sub = format!("{field}.{k}");
        match k {
            "matrix" => {
                matrix(c, value, &sub);
                out.matrix = Some(Spanned::new(value.to_value(), value.pos));
            }
            "fail-fast" => {
                c.template(value, &sub, ctx::JOB_IF);
                out.fail_fast = c.bool_or_expr(value, &sub);
            }
            "max-parallel" => {
                c.template(value, &sub, ctx::JOB_IF);
                out.max_parallel = c.number_or_expr(value, &sub);
                if let Some(Spanned {
                    value: Value::Number(n),
                    pos,
                }) = &out.max_parallel
                {
                    if *n < 1.0 || n.fract() != 0.0 {
                        c.error(
                            *pos,
                            format!("{sub}: expected a whole number of at least 1"),
                        );
                    }
                }
            }
            _ => {}
        }
    }
    Some(out)
}

fn matrix(c: &mut Checker, node: &Node, field: &str) {
    if let Some(text) = node.as_str() {
        if !text.contains("${{") {
            c.error(
                node.pos,
                format!("{field}: expected a mapping or an expression, found a string"),
            );
        }
        c.template(node, field, ctx::JOB_IF);
        return;
    }
    let Some(entries) = c.map(node, field) else {
        return;
    };
    if entries.is_empty() {
        c.error(
            node.pos,
            format!("{field}: a matrix needs at least one dimension or 'include'"),
        );
    }
    for (key, value) in entries {
        let k = key.as_str().unwrap_or_default();
        let sub = format!("{field}.{k}");
        c.templates_in(value, &sub, ctx::JOB_IF);
        matrix_entry(c, k, value, &sub);
    }
}

/// One dimension, or `include`/`exclude`, of a matrix.
fn matrix_entry(c: &mut Checker, k: &str, value: &Node, sub: &str) {
    match (&value.kind, k) {
        (NodeKind::Seq(items), "include" | "exclude") => {
            for item in items {
                if !matches!(item.kind, NodeKind::Map(_))
                    && item.as_str().is_none_or(|s| !s.contains("${{"))
                {
                    c.error(
                        item.pos,
                        format!(
                            "{sub}: each entry must be a mapping, found {}",
                            item.kind_name()
                        ),
                    );
                }
            }
        }
        (NodeKind::Seq(items), _) if items.is_empty() => {
            c.error(
                value.pos,
                format!("{sub}: matrix vector '{k}' does not contain any values"),
            );
        }
        (NodeKind::Seq(_), _) => {}
        (NodeKind::Scalar(s, _), _) if s.contains("${{") => {}
        _ => c.error(
            value.pos,
            format!(
                "{sub}: expected a sequence or an expression, found {}",
                value.kind_name()
            ),
        ),
    }
}

fn with(
    c: &mut Checker,
    node: &Node,
    field: &str,
    contexts: &[&str],
) -> IndexMap<String, Spanned<Value>> {
    let mut out = IndexMap::new();
    for (key, value) in c.map(node, field).unwrap_or_default() {
        let name = key.as_str().unwrap_or_default();
        let sub = format!("{field}.{name}");
        if !matches!(value.kind, NodeKind::Scalar(..)) {
            c.error(
                value.pos,
                format!(
                    "{sub}: expected a string, number or boolean, found {}",
                    value.kind_name()
                ),
            );
            continue;
        }
        c.template(value, &sub, contexts);
        out.insert(name.to_owned(), Spanned::new(value.to_value(), value.pos));
    }
    out
}

fn call_secrets(c: &mut Checker, node: &Node, field: &str) -> CallSecrets {
    if node.as_str() == Some("inherit") {
        return CallSecrets::Inherit;
    }
    if node.as_str().is_some() {
        c.error(
            node.pos,
            format!("{field}: expected 'inherit' or a mapping of secrets"),
        );
        return CallSecrets::None;
    }
    let mut out = IndexMap::new();
    for (key, value) in c.map(node, field).unwrap_or_default() {
        let sub = format!("{field}.{}", key.as_str().unwrap_or_default());
        c.template(value, &sub, ctx::JOB_ENV);
        if let Some(text) = c.string(value, &sub) {
            out.insert(key.as_str().unwrap_or_default().to_owned(), text);
        }
    }
    CallSecrets::Map(out)
}

pub(super) fn steps(c: &mut Checker, node: &Node, field: &str) -> Vec<Step> {
    let mut out = Vec::new();
    let mut ids: HashMap<String, Pos> = HashMap::new();
    let items = c.seq(node, field);
    if items.is_empty() && matches!(node.kind, NodeKind::Seq(_)) {
        c.error(node.pos, format!("{field}: a job needs at least one step"));
    }
    for (index, item) in items.iter().enumerate() {
        let sf = format!("{field}[{index}]");
        if let Some(step) = step(c, item, &sf) {
            if let Some(id) = &step.id {
                let key = id.value.to_ascii_lowercase();
                if let Some(first) = ids.get(&key) {
                    c.error(
                        id.pos,
                        format!(
                            "{sf}.id: the id '{}' is already used by the step at line {}",
                            id.value, first.line
                        ),
                    );
                } else {
                    ids.insert(key, id.pos);
                }
            }
            out.push(step);
        }
    }
    out
}

fn step(c: &mut Checker, node: &Node, field: &str) -> Option<Step> {
    if let NodeKind::Map(entries) = &node.kind {
        for (kind, keys) in CONTROL_STEP_KEYS {
            if get(entries, kind).is_some() {
                return control_step(c, node, field, kind, keys);
            }
        }
    }
    let entries = c.map_with_keys(node, field, STEP_KEYS)?;
    check_step_shape(c, node, field, entries);
    let mut step = empty_step(node.pos);
    for (key, value) in entries {
        step_key(c, &mut step, key.as_str().unwrap_or_default(), value, field);
    }
    step.action = step_action(c, entries, field)?;
    Some(step)
}

/// A step at `pos` with nothing set yet (its action a placeholder).
fn empty_step(pos: Pos) -> Step {
    Step {
        pos,
        id: None,
        name: None,
        if_cond: None,
        action: StepAction::Control(ControlStep::WaitAll),
        env: IndexMap::new(),
        continue_on_error: None,
        timeout_minutes: None,
        background: false,
    }
}

/// Reports a step with both or neither of `run` and `uses`, and keys that
/// belong to the kind of step it is not.
fn check_step_shape(c: &mut Checker, node: &Node, field: &str, entries: &[(Node, Node)]) {
    match (get(entries, "run"), get(entries, "uses")) {
        (Some(_), Some(_)) => c.error(
            node.pos,
            format!("{field}: a step has either 'run' or 'uses', not both"),
        ),
        (None, None) => c.error(node.pos, format!("{field}: a step needs 'run' or 'uses'")),
        _ => {}
    }
    for (key, only_with) in [
        ("shell", "run"),
        ("working-directory", "run"),
        ("with", "uses"),
    ] {
        if let (Some((k, _)), None) = (
            entries.iter().find(|(k, _)| k.as_str() == Some(key)),
            get(entries, only_with),
        ) {
            c.error(
                k.pos,
                format!(
                    "{}: '{key}' is only allowed on a step with '{only_with}'",
                    field
                ),
            );
        }
    }
}

/// Checks one of a step's keys other than its action's and stores its value.
fn step_key(c: &mut Checker, step: &mut Step, k: &str, value: &Node, field: &str) {
    let f = format!("{field}.{k}");
    match k {
        "background" => step.background = c.bool(value, &f).unwrap_or(false),
        "id" => {
            c.forbid_expression(value, &f);
            if let Some(text) = c.string(value, &f) {
                if let Some(problem) = id_problem(&text) {
                    c.error(
                        text.pos,
                        format!("{f}: invalid step id '{}': {problem}", text.value),
                    );
                }
                step.id = Some(text);
            }
        }
        "name" => {
            c.template(value, &f, ctx::STEP);
            step.name = c.string(value, &f);
        }
        "if" => {
            c.condition(value, &f, ctx::STEP_IF);
            step.if_cond = if_text(c, value, &f);
        }
        "env" => step.env = env(c, value, &f, ctx::STEP),
        "continue-on-error" => {
            c.template(value, &f, ctx::STEP);
            step.continue_on_error = c.bool_or_expr(value, &f);
        }
        "timeout-minutes" => {
            c.template(value, &f, ctx::STEP);
            step.timeout_minutes = c.number_or_expr(value, &f);
        }
        _ => {}
    }
}

/// The step's `uses` action or its `run` script.
fn step_action(c: &mut Checker, entries: &[(Node, Node)], field: &str) -> Option<StepAction> {
    let f = |k: &str| format!("{field}.{k}");
    if let Some(uses) = get(entries, "uses") {
        c.forbid_expression(uses, &f("uses"));
        let uses_text = c.string(uses, &f("uses"))?;
        let reference = match ActionRef::parse(&uses_text) {
            Ok(reference) => reference,
            Err(e) => {
                c.error(uses_text.pos, format!("{}: {e}", f("uses")));
                return None;
            }
        };
        let with = get(entries, "with")
            .map(|w| with(c, w, &f("with"), ctx::STEP))
            .unwrap_or_default();
        return Some(StepAction::Uses {
            uses: uses_text,
            reference,
            with,
        });
    }
    let run = get(entries, "run")?;
    c.template(run, &f("run"), ctx::STEP);
    let script = c.string(run, &f("run"))?;
    let shell = get(entries, "shell").and_then(|s| {
        c.forbid_expression(s, &f("shell"));
        c.string(s, &f("shell"))
    });
    let working_directory = get(entries, "working-directory").and_then(|w| {
        c.template(w, &f("working-directory"), ctx::STEP);
        c.string(w, &f("working-directory"))
    });
    Some(StepAction::Run {
        script,
        shell,
        working_directory,
    })
}

/// A `wait`, `wait-all`, `cancel` or `parallel` step.
fn control_step(
    c: &mut Checker,
    node: &Node,
    field: &str,
    kind: &str,
    keys: &[&str],
) -> Option<Step> {
    let entries = c.map_with_keys(node, field, keys)?;
    let f = |k: &str| format!("{field}.{k}");
    let mut step = empty_step(node.pos);
    for (key, value) in entries {
        let k = key.as_str().unwrap_or_default();
        match k {
            "id" => {
                c.forbid_expression(value, &f(k));
                step.id = c.string(value, &f(k));
            }
            "name" => {
                c.template(value, &f(k), ctx::STEP);
                step.name = c.string(value, &f(k));
            }
            "continue-on-error" => {
                c.template(value, &f(k), ctx::STEP);
                step.continue_on_error = c.bool_or_expr(value, &f(k));
            }
            _ => {}
        }
    }
    let value = get(entries, kind)?;
    step.action = StepAction::Control(match kind {
        "wait" => ControlStep::Wait(c.string_list(value, &f(kind))),
        "cancel" => ControlStep::Cancel(c.string(value, &f(kind))?),
        "parallel" => ControlStep::Parallel(steps(c, value, &f(kind))),
        _ => {
            if !value.is_null() {
                c.bool(value, &f(kind));
            }
            ControlStep::WaitAll
        }
    });
    Some(step)
}
