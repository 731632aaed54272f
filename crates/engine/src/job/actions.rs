//! `uses:` steps: native checkout, the actions the host serves, and actions
//! with an `action.yml` (local `./PATH`, the workflow's own repository `$/PATH`,
//! remote `owner/repo@ref`) run as composite or JavaScript actions.

use std::collections::BTreeMap;
use std::path::Path;

use firerunner_workflow::expr::{self, EvalContext, JobStatus, ALL_CONTEXTS};
use firerunner_workflow::load::{ActionRuns, ParsedAction};
use firerunner_workflow::model::{Step, StepAction};
use firerunner_workflow::{ActionRef, Conclusion, Object, RemoteRef, Spanned, Value};
use indexmap::IndexMap;
use tokio_util::sync::CancellationToken;

use super::process::StepEnd;
use super::runner::{JobRunner, PostStep};
use super::StepError;
use crate::actions::native::{self, ActionGuest};
use crate::checkout::CheckoutSource;
use crate::sandbox::ProcessSpec;

/// A `uses:` step being run: the step, its `uses:` text and `with:` inputs,
/// and the context its expressions see.
pub(super) struct ActionCall<'a> {
    step: &'a Step,
    uses: &'a str,
    with: &'a IndexMap<String, Spanned<Value>>,
    ctx: &'a EvalContext,
}

/// Whether `remote` is `actions/checkout@REF` (served natively).
fn is_checkout(remote: &RemoteRef) -> bool {
    remote.owner.eq_ignore_ascii_case("actions")
        && remote.repo.eq_ignore_ascii_case("checkout")
        && remote.path.is_empty()
}

/// Actions the host serves from its stores.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum NativeAction {
    UploadArtifact,
    DownloadArtifact,
    Cache,
}

impl NativeAction {
    fn of(remote: &RemoteRef) -> Option<Self> {
        let owner = remote.owner.to_ascii_lowercase();
        let repo = remote.repo.to_ascii_lowercase();
        if owner != "actions" {
            return None;
        }
        match (repo.as_str(), remote.path.to_ascii_lowercase().as_str()) {
            ("upload-artifact", "") => Some(Self::UploadArtifact),
            ("download-artifact", "") => Some(Self::DownloadArtifact),
            ("cache", "" | "restore") => Some(Self::Cache),
            _ => None,
        }
    }
}

/// An action whose files the host holds: they are streamed into the guest
/// at `guest_root`, and the action at `path` under it runs.
struct HostAction<'a> {
    host_root: &'a Path,
    guest_root: String,
    path: &'a str,
}

impl JobRunner<'_> {
    /// Runs a `uses:` step by what its reference names.
    pub(super) async fn run_uses(
        &mut self,
        step: &Step,
        ctx: &EvalContext,
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
        let call = ActionCall {
            step,
            uses: &uses.value,
            with,
            ctx,
        };
        let prefix = format!("{}: ", uses.value);
        let run = match reference {
            ActionRef::Remote(remote) if is_checkout(remote) => {
                let done = self.checkout(&call).await;
                let run = done.map(|()| StepEnd::bare(Conclusion::Success));
                return self.failed_to_run(run, "actions/checkout: ");
            }
            ActionRef::Remote(remote) => match NativeAction::of(remote) {
                Some(kind) => self.native_action(kind, &call).await,
                None => self.remote_action(&call, remote, cancel).await,
            },
            ActionRef::Local { path } => self.local_action(&call, path, cancel).await,
            ActionRef::SelfRepo { path } => self.self_action(&call, path, cancel).await,
            ActionRef::Docker { .. } => Err(StepError::Unsupported(
                "docker actions are not supported by firerunner",
            )),
        };
        self.failed_to_run(run, &prefix)
    }

    /// Evaluates a `with:` input.
    fn input(call: &ActionCall<'_>, name: &str) -> Result<Option<String>, StepError> {
        match call.with.get(name) {
            Some(value) => Ok(Some(
                expr::to_string(&expr::evaluate_value(&value.value, call.ctx)?).into_owned(),
            )),
            None => Ok(None),
        }
    }

    /// The checkout `with:` asks for: the run's repository at `ref` and
    /// `fetch-depth` (1 by default), or the working tree as it is.
    fn checkout_source(
        call: &ActionCall<'_>,
        source: CheckoutSource,
    ) -> Result<CheckoutSource, StepError> {
        let CheckoutSource::Commit {
            repository,
            commit,
            credentials,
            ..
        } = source
        else {
            return Ok(source);
        };
        let depth = Self::input(call, "fetch-depth")?
            .map(|d| {
                d.parse::<u32>().map_err(|_| {
                    StepError::InvalidInput(format!("fetch-depth {d:?} is not a number"))
                })
            })
            .transpose()?
            .unwrap_or(1);
        let commit = Self::input(call, "ref")?
            .filter(|r| !r.is_empty())
            .unwrap_or(commit);
        Ok(CheckoutSource::Commit {
            repository,
            commit,
            depth,
            credentials,
        })
    }

    /// Native `actions/checkout`: the host prepares the files with git and
    /// streams them into the workspace (or `with.path` under it).
    async fn checkout(&mut self, call: &ActionCall<'_>) -> Result<(), StepError> {
        let source = self
            .environment
            .checkout
            .clone()
            .ok_or(StepError::NoRepository)?;
        let source = Self::checkout_source(call, source)?;
        let workspace = &self.environment.layout.workspace;
        let target = match Self::input(call, "path")?.filter(|p| !p.is_empty()) {
            Some(path) => format!("{workspace}/{path}"),
            None => workspace.clone(),
        };
        let host_dir = tempfile::tempdir()?;
        let prepared = prepare_on_host(source, host_dir.path()).await?;
        self.runner_line(&format!("Checked out {prepared} into {target}"));
        self.sandbox.create_dirs(&[&target]).await?;
        self.sandbox
            .client()
            .put_tar(host_dir.path(), &target)
            .await?;
        Ok(())
    }

    /// A local action (`uses: ./path`, `./` for the root): its `action.yml` is read
    /// from the workspace (checked out by an earlier step, as on GitHub); composite
    /// actions run their steps here with their own `inputs` and `steps`.
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
        self.run_action(call, &action, &dir, cancel).await
    }

    /// An action of the workflow's own repository at the running commit
    /// (`uses: $/path`): the host prepares the run's checkout (in `firerunner run`,
    /// the working tree) and streams it to `_actions/_self` in the guest.
    async fn self_action(
        &mut self,
        call: &ActionCall<'_>,
        path: &str,
        cancel: &CancellationToken,
    ) -> Result<StepEnd, StepError> {
        let source = match self
            .environment
            .checkout
            .clone()
            .ok_or(StepError::NoRepository)?
        {
            CheckoutSource::Commit {
                repository,
                commit,
                credentials,
                ..
            } => CheckoutSource::Commit {
                repository,
                commit,
                depth: 1,
                credentials,
            },
            tree => tree,
        };
        let host_dir = tempfile::tempdir()?;
        prepare_on_host(source, host_dir.path()).await?;
        let _ = std::fs::remove_dir_all(host_dir.path().join(".git"));
        let host = HostAction {
            host_root: host_dir.path(),
            guest_root: format!(
                "{}/_actions/_self",
                self.environment.layout.workspace_root()
            ),
            path,
        };
        self.run_host_action(call, host, cancel).await
    }

    /// A remote action (`owner/repo@ref`, `owner/repo/path@ref`): the host
    /// fetches it with git (from `actions_base_url`, GitHub by default) and
    /// streams it to `/home/runner/work/_actions/owner/repo/ref` in the guest.
    async fn remote_action(
        &mut self,
        call: &ActionCall<'_>,
        reference: &RemoteRef,
        cancel: &CancellationToken,
    ) -> Result<StepEnd, StepError> {
        let base = self.environment.actions_base_url.clone();
        let cache = self.environment.actions_cache_dir.clone();
        let host_dir = {
            let reference = reference.clone();
            tokio::task::spawn_blocking(move || {
                crate::actions::remote::fetch(&reference, &base, &cache)
            })
            .await??
        };
        let host = HostAction {
            host_root: &host_dir,
            guest_root: format!(
                "{}/_actions/{}/{}/{}",
                self.environment.layout.workspace_root(),
                reference.owner,
                reference.repo,
                reference.git_ref
            ),
            path: &reference.path,
        };
        self.run_host_action(call, host, cancel).await
    }

    /// Streams an action's files into the guest and runs it.
    async fn run_host_action(
        &mut self,
        call: &ActionCall<'_>,
        host: HostAction<'_>,
        cancel: &CancellationToken,
    ) -> Result<StepEnd, StepError> {
        self.sandbox.create_dirs(&[&host.guest_root]).await?;
        self.sandbox
            .client()
            .put_tar(host.host_root, &host.guest_root)
            .await?;
        let action_dir = host.host_root.join(host.path);
        let uses = call.uses;
        let (label, text) = ["action.yml", "action.yaml"]
            .iter()
            .find_map(|name| {
                let text = std::fs::read_to_string(action_dir.join(name)).ok()?;
                Some((format!("{uses}/{name}"), text))
            })
            .ok_or_else(|| StepError::NoActionFile(uses.to_owned()))?;
        let action = firerunner_workflow::load::parse_action(&label, &text)
            .map_err(|d| StepError::ActionFile(d.to_string()))?;
        let guest_dir = if host.path.is_empty() {
            host.guest_root
        } else {
            format!("{}/{}", host.guest_root, host.path)
        };
        self.run_action(call, &action, &guest_dir, cancel).await
    }

    /// Runs an action whose files are at `action_dir` in the guest: composite
    /// steps here, with the action's own `inputs`, `steps` and outputs, and
    /// `github.action_path` / `GITHUB_ACTION_PATH` pointing at its files.
    async fn run_action(
        &mut self,
        call: &ActionCall<'_>,
        action: &ParsedAction,
        action_dir: &str,
        cancel: &CancellationToken,
    ) -> Result<StepEnd, StepError> {
        match &action.runs {
            ActionRuns::Composite(steps) => {
                self.run_composite(call, action, steps, action_dir, cancel)
                    .await
            }
            ActionRuns::Node {
                using,
                main,
                post,
                post_if,
            } => {
                let node = NodeAction {
                    action,
                    action_dir,
                    using,
                    main,
                };
                let (done, env) = self.run_node_action(call, &node, cancel).await?;
                if let Some(post) = post {
                    let name = action.name.clone();
                    self.post_steps.push(PostStep {
                        name: format!("Post {}", name.unwrap_or_else(|| action_dir.to_string())),
                        script: format!("{action_dir}/{post}"),
                        condition: post_if.clone().unwrap_or_else(|| "always()".into()),
                        env,
                        state: std::mem::take(&mut self.last_state),
                    });
                }
                Ok(done)
            }
            ActionRuns::Docker { .. } => {
                Err(StepError::Unsupported("docker actions are not supported"))
            }
        }
    }

    /// The value of each of the action's inputs: `with:`, else its default.
    fn action_inputs(
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
        action_dir: &str,
        cancel: &CancellationToken,
    ) -> Result<StepEnd, StepError> {
        let inputs = self.action_inputs(call, action)?;
        let scope = self.enter_action(inputs, action_dir);
        for step in steps {
            Box::pin(self.run_step(step, cancel)).await;
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

    /// Gives a composite action's steps their own `inputs`, `steps` and
    /// failure, and its folder; returns what to restore after them.
    fn enter_action(&mut self, inputs: BTreeMap<String, String>, action_dir: &str) -> CallerScope {
        let scope = CallerScope {
            contexts: self.contexts.clone(),
            steps: std::mem::take(&mut self.steps_context),
            failed: std::mem::replace(&mut self.failed, false),
            action_path: self
                .added_env
                .insert("GITHUB_ACTION_PATH".into(), action_dir.to_string()),
        };
        let inputs = inputs
            .into_iter()
            .map(|(k, v)| (k, Value::String(v)))
            .collect();
        self.contexts.insert("inputs", Value::Object(inputs));
        if let Some(Value::Object(github)) = self.contexts.get("github") {
            let mut github = github.clone();
            github.insert("action_path", Value::from(action_dir));
            self.contexts.insert("github", Value::Object(github));
        }
        scope
    }

    /// Restores the caller's scope after a composite action's steps.
    fn leave_action(&mut self, scope: CallerScope) {
        self.contexts = scope.contexts;
        self.steps_context = scope.steps;
        self.failed = scope.failed;
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

    /// A JavaScript action: `node <main>` in the guest with its inputs as
    /// `INPUT_<NAME>` variables, as GitHub's runner passes them. The guest
    /// must have node (the Debian image does); `pre` scripts are not run.
    async fn run_node_action(
        &mut self,
        call: &ActionCall<'_>,
        node: &NodeAction<'_>,
        cancel: &CancellationToken,
    ) -> Result<(StepEnd, BTreeMap<String, String>), StepError> {
        if !self.guest_has("node").await? {
            return Err(StepError::NoNode(node.using.to_owned()));
        }
        let status = self.status(cancel);
        let mut env = self.step_env(call.step, status)?;
        for (name, value) in self.action_inputs(call, node.action)? {
            let variable = format!("INPUT_{}", name.replace(' ', "_").to_ascii_uppercase());
            env.insert(variable, value);
        }
        env.insert("GITHUB_ACTION_PATH".into(), node.action_dir.to_string());
        let spec = ProcessSpec {
            argv: vec![
                "node".to_string(),
                format!("{}/{}", node.action_dir, node.main),
            ],
            env: env.clone(),
            cwd: Some(self.environment.layout.workspace.clone()),
            timeout: self.step_timeout(call.step),
        };
        let done = self.run_process(spec, cancel).await?;
        Ok((done, env))
    }

    /// The `post:` scripts of the job's JavaScript actions, last first, each
    /// under its `post-if:` (default `always()`), with the `STATE_<name>`
    /// variables its main script saved through `GITHUB_STATE`.
    pub(super) async fn run_post_steps(&mut self, cancel: &CancellationToken) {
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
            let spec = ProcessSpec {
                argv: vec!["node".to_string(), post.script.clone()],
                env,
                cwd: Some(self.environment.layout.workspace.clone()),
                timeout: None,
            };
            match self.run_process(spec, cancel).await {
                Ok(end) if end.conclusion == Conclusion::Success => {}
                Ok(_) => self.failed = true,
                Err(message) => {
                    self.runner_line(&format!("error: {}: {message}", post.name));
                    self.failed = true;
                }
            }
        }
    }

    /// The guest the native actions work in.
    fn action_guest(&self) -> ActionGuest<'_> {
        let layout = &self.environment.layout;
        ActionGuest {
            sandbox: self.sandbox,
            workspace: &layout.workspace,
            home: &layout.home,
            temp: &layout.temp,
        }
    }

    /// Runs a natively served action and returns its outputs.
    async fn native_action(
        &mut self,
        kind: NativeAction,
        call: &ActionCall<'_>,
    ) -> Result<StepEnd, StepError> {
        let mut inputs = BTreeMap::new();
        for (name, value) in call.with {
            let value = expr::evaluate_value(&value.value, call.ctx).map_err(|source| {
                StepError::Input {
                    name: name.clone(),
                    source,
                }
            })?;
            inputs.insert(name.clone(), expr::to_string(&value).into_owned());
        }
        let result = self.serve_native(kind, &inputs).await?;
        for line in &result.log {
            self.runner_line(line);
        }
        let outputs = result
            .outputs
            .into_iter()
            .map(|(k, v)| (k, Value::String(v)))
            .collect();
        Ok(StepEnd {
            conclusion: Conclusion::Success,
            outputs,
        })
    }

    /// Serves an upload, download or cache restore from the host's stores.
    async fn serve_native(
        &mut self,
        kind: NativeAction,
        inputs: &native::Inputs,
    ) -> Result<native::ActionResult, StepError> {
        let guest = self.action_guest();
        let run_id = &self.environment.run_id;
        let artifacts = || {
            self.environment
                .artifacts
                .as_deref()
                .ok_or(StepError::NoStore("artifact"))
        };
        let result = match kind {
            NativeAction::UploadArtifact => {
                native::upload_artifact(&guest, artifacts()?, run_id, inputs).await?
            }
            NativeAction::DownloadArtifact => {
                native::download_artifact(&guest, artifacts()?, run_id, inputs).await?
            }
            NativeAction::Cache => {
                let (store, scope) = self
                    .environment
                    .cache
                    .clone()
                    .ok_or(StepError::NoStore("cache"))?;
                let (result, pending) =
                    native::restore_cache(&guest, &store, &scope, inputs).await?;
                self.pending_caches.extend(pending);
                result
            }
        };
        Ok(result)
    }

    /// The post step of actions/cache: saves what the job's caches missed.
    pub(super) async fn save_caches(&mut self) {
        let Some((store, scope)) = self.environment.cache.clone() else {
            return;
        };
        for pending in std::mem::take(&mut self.pending_caches) {
            let saved = native::save_cache(&self.action_guest(), &store, &scope, &pending).await;
            match saved {
                Ok(message) => self.runner_line(&message),
                Err(message) => {
                    self.runner_line(&format!("warning: saving the cache failed: {message}"))
                }
            }
        }
    }
}

/// What a caller's scope held while a composite action's steps ran.
struct CallerScope {
    contexts: Object,
    steps: Object,
    failed: bool,
    action_path: Option<String>,
}

/// A JavaScript action's entry point.
struct NodeAction<'a> {
    action: &'a ParsedAction,
    action_dir: &'a str,
    using: &'a str,
    main: &'a str,
}

/// Prepares `source` in the host folder `dest` with git; returns what was checked out.
async fn prepare_on_host(source: CheckoutSource, dest: &Path) -> Result<String, StepError> {
    let dest = dest.to_path_buf();
    let prepared =
        tokio::task::spawn_blocking(move || crate::checkout::prepare(&source, &dest)).await??;
    Ok(prepared)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn remote(uses: &str) -> RemoteRef {
        match ActionRef::parse(uses) {
            Ok(ActionRef::Remote(remote)) => remote,
            other => panic!("{uses}: {other:?}"),
        }
    }

    #[test]
    fn the_host_serves_checkout_artifacts_and_cache_by_name() {
        assert!(is_checkout(&remote("actions/checkout@v4")));
        assert!(is_checkout(&remote("Actions/Checkout@v4")));
        assert!(!is_checkout(&remote("actions/checkout/sub@v4")));
        assert!(!is_checkout(&remote("octo/checkout@v4")));
        let kinds: Vec<Option<NativeAction>> = [
            "actions/upload-artifact@v4",
            "actions/download-artifact@v4",
            "actions/cache@v4",
            "actions/cache/restore@v4",
            "actions/cache/save@v4",
            "actions/setup-node@v4",
        ]
        .iter()
        .map(|uses| NativeAction::of(&remote(uses)))
        .collect();
        assert_eq!(
            kinds,
            [
                Some(NativeAction::UploadArtifact),
                Some(NativeAction::DownloadArtifact),
                Some(NativeAction::Cache),
                Some(NativeAction::Cache),
                None,
                None,
            ]
        );
    }
}
