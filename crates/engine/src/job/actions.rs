//! `uses:` steps: the actions the host serves ([`super::served`]), and
//! actions with an `action.yml` (local `./PATH`, the workflow's own
//! repository `$/PATH`, remote `owner/repo@ref`) run as composite actions
//! here or as JavaScript actions ([`super::node`]).

use std::collections::BTreeMap;
use std::path::Path;

use firerunner_workflow::expr::{self, EvalContext, JobStatus, ALL_CONTEXTS};
use firerunner_workflow::load::{ActionRuns, ParsedAction};
use firerunner_workflow::model::{Step, StepAction};
use firerunner_workflow::{ActionRef, Conclusion, Object, RemoteRef, Spanned, Value};
use indexmap::IndexMap;
use tokio_util::sync::CancellationToken;

use super::process::StepEnd;
use super::runner::JobRunner;
use super::StepError;
use crate::actions::native::HostServed;
use crate::actions::resolve::nesting_problem;
use crate::checkout::CheckoutSource;

/// A `uses:` step being run: the step, its `uses:` text and `with:` inputs,
/// its display name, and the env and context its expressions see.
pub(super) struct ActionCall<'a> {
    pub step: &'a Step,
    pub uses: &'a str,
    pub display: &'a str,
    pub with: &'a IndexMap<String, Spanned<Value>>,
    pub ctx: &'a EvalContext,
    pub env: &'a BTreeMap<String, String>,
}

/// Where an action's files are in the guest, and its name in nesting chains.
pub(super) struct ActionPlace<'a> {
    pub dir: &'a str,
    pub label: &'a str,
}

/// `owner/repo` and the ref of a remote action (empty for other actions):
/// `github.action_repository` and `github.action_ref` while it runs.
fn identity(reference: &ActionRef) -> (String, String) {
    match reference {
        ActionRef::Remote(remote) => (
            format!("{}/{}", remote.owner, remote.repo),
            remote.git_ref.clone(),
        ),
        _ => (String::new(), String::new()),
    }
}

impl JobRunner<'_> {
    /// Runs a `uses:` step by what its reference names.
    pub(super) async fn run_uses(
        &mut self,
        step: &Step,
        display: &str,
        mut env: BTreeMap<String, String>,
        cancel: &CancellationToken,
    ) -> StepEnd {
        let StepAction::Uses {
            uses,
            reference,
            with,
        } = &step.action
        else {
            unreachable!("run_uses runs uses: steps")
        };
        // Its inputs and its process see the action's own repository and ref.
        let (repository, git_ref) = identity(reference);
        self.set_github(&[("action_repository", &repository), ("action_ref", &git_ref)]);
        self.add_action_variables(&mut env);
        let ctx = self.eval_context(&env, self.status(cancel));
        let call = ActionCall {
            step,
            uses: &uses.value,
            display,
            with,
            ctx: &ctx,
            env: &env,
        };
        let prefix = format!("{}: ", uses.value);
        let run = match reference {
            ActionRef::Remote(remote) => match HostServed::of(remote) {
                Some(HostServed::Checkout) => {
                    let done = self.checkout(&call).await;
                    let run = done.map(|()| StepEnd::bare(Conclusion::Success));
                    return self.failed_to_run(run, "actions/checkout: ");
                }
                Some(kind) => self.native_action(kind, &call).await,
                None => self.remote_action(&call, remote, cancel).await,
            },
            ActionRef::Local { path } => self.local_action(&call, path, cancel).await,
            ActionRef::SelfRepo { path } => self.self_repo_action(&call, path, cancel).await,
            ActionRef::Docker { .. } => Err(StepError::Unsupported(
                "docker actions are not supported by firerunner",
            )),
        };
        self.failed_to_run(run, &prefix)
    }

    /// Evaluates a `with:` input.
    pub(super) fn input(call: &ActionCall<'_>, name: &str) -> Result<Option<String>, StepError> {
        match call.with.get(name) {
            Some(value) => Ok(Some(
                expr::to_string(&expr::evaluate_value(&value.value, call.ctx)?).into_owned(),
            )),
            None => Ok(None),
        }
    }

    /// A local action (`uses: ./path`, `./` for the root): its `action.yml` is read
    /// from the workspace (checked out by an earlier step, as on GitHub).
    async fn local_action(
        &mut self,
        call: &ActionCall<'_>,
        path: &str,
        cancel: &CancellationToken,
    ) -> Result<StepEnd, StepError> {
        let workspace = &self.environment.layout.workspace;
        let dir = if path.is_empty() {
            workspace.clone()
        } else {
            format!("{workspace}/{path}")
        };
        let mut found = None;
        for name in ["action.yml", "action.yaml"] {
            let file = format!("{dir}/{name}");
            let limit = crate::guest_input::ACTION_METADATA_LIMIT;
            if let Some(bytes) = self.sandbox.read_file(&file, limit).await? {
                found = Some((name, bytes));
                break;
            }
        }
        let Some((name, bytes)) = found else {
            return Err(StepError::NoLocalActionFile(dir));
        };
        let label = format!("{}/{name}", call.uses.trim_end_matches('/'));
        let text = String::from_utf8_lossy(&bytes);
        let action = firerunner_workflow::load::parse_action(&label, &text)
            .map_err(|d| StepError::ActionFile(d.to_string()))?;
        if let ActionRuns::Node { pre: Some(_), .. } = &action.runs {
            let warning = format!(
                "warning: `pre` execution is not supported for local action from '{}'",
                call.uses
            );
            self.runner_line(&warning);
        }
        let label = format!("./{path}");
        self.resolve_nested(&label, &action).await?;
        let place = ActionPlace {
            dir: &dir,
            label: &label,
        };
        self.run_action(call, &action, place, cancel).await
    }

    /// An action of the workflow's own repository at the running commit
    /// (`uses: $/path`): the host prepares the run's checkout (in `firerunner run`,
    /// the working tree) once and streams it to `_actions/_self` in the guest.
    async fn self_repo_action(
        &mut self,
        call: &ActionCall<'_>,
        path: &str,
        cancel: &CancellationToken,
    ) -> Result<StepEnd, StepError> {
        let (root, action) = self.self_action(path).await?;
        let guest_root = format!(
            "{}/_actions/_self",
            self.environment.layout.workspace_root()
        );
        self.upload_action(&root, &guest_root).await?;
        let dir = join_guest(&guest_root, path);
        let label = format!("$/{path}");
        let place = ActionPlace {
            dir: &dir,
            label: &label,
        };
        self.run_action(call, &action, place, cancel).await
    }

    /// A remote action (`owner/repo@ref`, `owner/repo/path@ref`), found in
    /// "Set up job" (or now, when a composite action of the workspace uses
    /// it) and streamed to `/home/runner/work/_actions/owner/repo/ref`.
    async fn remote_action(
        &mut self,
        call: &ActionCall<'_>,
        reference: &RemoteRef,
        cancel: &CancellationToken,
    ) -> Result<StepEnd, StepError> {
        let wanted = reference.clone();
        let (repository, action) = self.with_resolver(move |r| r.action(&wanted)).await?;
        let guest_root = format!(
            "{}/_actions/{}/{}/{}",
            self.environment.layout.workspace_root(),
            reference.owner,
            reference.repo,
            reference.git_ref
        );
        self.upload_action(&repository.dir, &guest_root).await?;
        let dir = join_guest(&guest_root, &reference.path);
        let label = reference.to_string().to_ascii_lowercase();
        let place = ActionPlace {
            dir: &dir,
            label: &label,
        };
        self.run_action(call, &action, place, cancel).await
    }

    /// Streams an action's files from the host folder `host_dir` to
    /// `guest_root`, unless they are there already.
    pub(super) async fn upload_action(
        &mut self,
        host_dir: &Path,
        guest_root: &str,
    ) -> Result<(), StepError> {
        if self.actions.uploaded.contains(guest_root) {
            return Ok(());
        }
        self.sandbox.create_dirs(&[guest_root]).await?;
        self.sandbox.client().put_tar(host_dir, guest_root).await?;
        self.actions.uploaded.insert(guest_root.to_owned());
        Ok(())
    }

    /// Runs an action whose files are at `place.dir` in the guest: composite
    /// steps here, JavaScript ones with node.
    async fn run_action(
        &mut self,
        call: &ActionCall<'_>,
        action: &ParsedAction,
        place: ActionPlace<'_>,
        cancel: &CancellationToken,
    ) -> Result<StepEnd, StepError> {
        match &action.runs {
            ActionRuns::Composite(steps) => {
                self.run_composite(call, action, steps, place, cancel).await
            }
            ActionRuns::Node { .. } => self.run_node_main(call, action, place.dir, cancel).await,
            ActionRuns::Docker { .. } => {
                Err(StepError::Unsupported("docker actions are not supported"))
            }
        }
    }

    /// The value of each of the action's inputs: `with:`, else its default.
    pub(super) fn action_inputs(
        &self,
        call: &ActionCall<'_>,
        action: &ParsedAction,
    ) -> Result<BTreeMap<String, String>, StepError> {
        let mut inputs = BTreeMap::new();
        for (name, input) in &action.inputs {
            let value = match call.with.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)) {
                Some((_, value)) => {
                    expr::to_string(&expr::evaluate_value(&value.value, call.ctx).map_err(
                        |source| StepError::Input {
                            name: name.clone(),
                            source,
                        },
                    )?)
                    .into_owned()
                }
                None => match &input.default {
                    Some(default) => self.template(&default.value, call.ctx)?,
                    None if input.required => return Err(StepError::MissingInput(name.clone())),
                    None => String::new(),
                },
            };
            inputs.insert(name.clone(), value);
        }
        Ok(inputs)
    }

    /// A composite action's steps, in a scope of their own.
    async fn run_composite(
        &mut self,
        call: &ActionCall<'_>,
        action: &ParsedAction,
        steps: &[Step],
        place: ActionPlace<'_>,
        cancel: &CancellationToken,
    ) -> Result<StepEnd, StepError> {
        if let Some(problem) = nesting_problem(place.label, &self.actions.chain) {
            return Err(problem.into());
        }
        let inputs = self.action_inputs(call, action)?;
        let names = firerunner_workflow::step_context_names(steps);
        let parent = self.github_text("action");
        let scope = self.enter_action(call, inputs, &place);
        for (step, name) in steps.iter().zip(&names) {
            let qualified = format!("{parent}.{name}");
            Box::pin(self.run_step(step, &qualified, cancel)).await;
        }
        let failed = self.failed;
        let outputs = self.action_outputs(action, failed);
        self.leave_action(scope);
        let outputs = outputs?;
        let conclusion = if cancel.is_cancelled() {
            Conclusion::Cancelled
        } else if failed {
            Conclusion::Failure
        } else {
            Conclusion::Success
        };
        Ok(StepEnd {
            conclusion,
            outputs,
        })
    }

    /// Gives a composite action's steps their own `inputs`, `steps`,
    /// failure and folder, the calling step's env, and the action as the
    /// one around them; returns what to restore after them.
    fn enter_action(
        &mut self,
        call: &ActionCall<'_>,
        inputs: BTreeMap<String, String>,
        place: &ActionPlace<'_>,
    ) -> CallerScope {
        let identity = (
            self.github_text("action_repository"),
            self.github_text("action_ref"),
        );
        let caller_env = call
            .env
            .iter()
            .filter(|(k, v)| self.defaults.get(*k) != Some(v) && !k.starts_with("GITHUB_ACTION"))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        self.actions.caller_env.push(caller_env);
        self.actions.chain.push(place.label.to_owned());
        let scope = CallerScope {
            contexts: self.contexts.clone(),
            steps: std::mem::take(&mut self.steps_context),
            failed: std::mem::replace(&mut self.failed, false),
            action_path: self
                .added_env
                .insert("GITHUB_ACTION_PATH".into(), place.dir.to_string()),
            enclosing: std::mem::replace(&mut self.actions.enclosing, identity),
        };
        let inputs = inputs
            .into_iter()
            .map(|(k, v)| (k, Value::String(v)))
            .collect();
        self.contexts.insert("inputs", Value::Object(inputs));
        self.set_github(&[("action_path", place.dir)]);
        scope
    }

    /// Restores the caller's scope after a composite action's steps.
    fn leave_action(&mut self, scope: CallerScope) {
        self.contexts = scope.contexts;
        self.steps_context = scope.steps;
        self.failed = scope.failed;
        self.actions.enclosing = scope.enclosing;
        self.actions.chain.pop();
        self.actions.caller_env.pop();
        match scope.action_path {
            Some(path) => self.added_env.insert("GITHUB_ACTION_PATH".into(), path),
            None => self.added_env.remove("GITHUB_ACTION_PATH"),
        };
    }

    /// A composite action's evaluated `outputs:` (the last failing one is the error).
    fn action_outputs(&self, action: &ParsedAction, failed: bool) -> Result<Object, StepError> {
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
                let value = expr::parse_template(&template.value, ALL_CONTEXTS)
                    .and_then(|t| t.evaluate_string(&output_ctx));
                match value {
                    Ok(value) => outputs.insert(name.clone(), Value::String(value)),
                    Err(source) => {
                        output_error = Some(StepError::Output {
                            name: name.clone(),
                            source,
                        })
                    }
                }
            }
        }
        match output_error {
            Some(error) => Err(error),
            None => Ok(outputs),
        }
    }
}

/// `root/path` in the guest (`root` alone for the repository's root).
pub(super) fn join_guest(root: &str, path: &str) -> String {
    if path.is_empty() {
        root.to_owned()
    } else {
        format!("{root}/{path}")
    }
}

/// What a caller's scope held while a composite action's steps ran.
struct CallerScope {
    contexts: Object,
    steps: Object,
    failed: bool,
    action_path: Option<String>,
    enclosing: (String, String),
}

/// Prepares `source` in the host folder `dest` with git; returns what was checked out.
pub(super) async fn prepare_on_host(
    source: CheckoutSource,
    dest: &Path,
) -> Result<String, StepError> {
    let dest = dest.to_path_buf();
    let prepared =
        tokio::task::spawn_blocking(move || crate::checkout::prepare(&source, &dest)).await??;
    Ok(prepared)
}
