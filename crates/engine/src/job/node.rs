//! JavaScript actions (`using: node20` and the like): `node <script>` in the
//! guest with the action's inputs as `INPUT_<NAME>` variables, as GitHub's
//! runner runs them. An action's `pre:` script runs before the job's first
//! step (in step order, under `pre-if:`), its main script as its step, its
//! `post:` after the job's steps (last first, under `post-if:`); each later
//! script gets what the earlier ones saved through `GITHUB_STATE` as
//! `STATE_<name>` variables.

use std::collections::BTreeMap;

use firerunner_workflow::expr::{self, ALL_CONTEXTS};
use firerunner_workflow::load::{ActionRuns, ParsedAction};
use firerunner_workflow::model::{Step, StepAction};
use firerunner_workflow::{ActionRef, Conclusion, RemoteRef};
use tokio_util::sync::CancellationToken;

use super::actions::{join_guest, ActionCall};
use super::process::StepEnd;
use super::runner::JobRunner;
use super::setup::{ActionInstance, PostStep};
use super::StepError;
use crate::actions::native::HostServed;
use crate::sandbox::ProcessSpec;

/// A `pre:` script to run: the job's step it belongs to, its action, and
/// where the action's files are on the host and in the guest.
struct PreScript {
    number: usize,
    action: ParsedAction,
    host_dir: std::path::PathBuf,
    guest_root: String,
    guest_dir: String,
    identity: (String, String),
}

impl JobRunner<'_> {
    /// A JavaScript action's main script, as its step.
    pub(super) async fn run_node_main(
        &mut self,
        call: &ActionCall<'_>,
        action: &ParsedAction,
        dir: &str,
        cancel: &CancellationToken,
    ) -> Result<StepEnd, StepError> {
        let ActionRuns::Node { main, .. } = &action.runs else {
            unreachable!("run_node_main runs node actions")
        };
        let instance = self.actions.instance(self.step_index);
        let env = self.node_env(call, action, dir, instance)?;
        let timeout = self.step_timeout(call.step);
        let done = self
            .run_node_script(
                action,
                &format!("{dir}/{main}"),
                env.clone(),
                timeout,
                cancel,
            )
            .await;
        let saved = std::mem::take(&mut self.last_state);
        self.actions.save_state(instance, saved);
        self.register_post(action, dir, call.display, env, instance);
        done
    }

    /// The env of one of the action's scripts: the step's, its inputs as
    /// `INPUT_<NAME>`, its folder, and what it saved so far as `STATE_<name>`.
    fn node_env(
        &self,
        call: &ActionCall<'_>,
        action: &ParsedAction,
        dir: &str,
        instance: ActionInstance,
    ) -> Result<BTreeMap<String, String>, StepError> {
        let mut env = call.env.clone();
        for (name, value) in self.action_inputs(call, action)? {
            let variable = format!("INPUT_{}", name.replace(' ', "_").to_ascii_uppercase());
            env.insert(variable, value);
        }
        env.insert("GITHUB_ACTION_PATH".into(), dir.to_string());
        for (name, value) in self.actions.state.get(&instance).into_iter().flatten() {
            env.insert(format!("STATE_{name}"), value.clone());
        }
        Ok(env)
    }

    /// Runs `node <script>` (the guest must have node).
    async fn run_node_script(
        &mut self,
        action: &ParsedAction,
        script: &str,
        env: BTreeMap<String, String>,
        timeout: Option<std::time::Duration>,
        cancel: &CancellationToken,
    ) -> Result<StepEnd, StepError> {
        if !self.guest_has("node").await? {
            let using = match &action.runs {
                ActionRuns::Node { using, .. } => using.clone(),
                _ => "node".into(),
            };
            return Err(StepError::NoNode(using));
        }
        let spec = ProcessSpec {
            argv: vec!["node".to_string(), script.to_owned()],
            env,
            cwd: Some(self.environment.layout.workspace.clone()),
            timeout,
        };
        self.run_process(spec, cancel).await
    }

    /// Registers the action's `post:` script for `instance` (once).
    fn register_post(
        &mut self,
        action: &ParsedAction,
        dir: &str,
        display: &str,
        env: BTreeMap<String, String>,
        instance: ActionInstance,
    ) {
        let ActionRuns::Node {
            post: Some(post),
            post_if,
            ..
        } = &action.runs
        else {
            return;
        };
        let display = display.strip_prefix("Pre ").unwrap_or(display);
        self.actions.register_post(PostStep {
            name: format!("Post {display}"),
            script: format!("{dir}/{post}"),
            condition: post_if.clone().unwrap_or_else(|| "always()".into()),
            env,
            instance,
        });
    }

    /// The `pre:` scripts of the job's JavaScript actions, in step order,
    /// each under its `pre-if:` (default `always()`). `names` are the steps'
    /// context names.
    pub(super) async fn run_pre_steps(
        &mut self,
        steps: &[Step],
        names: &[String],
        cancel: &CancellationToken,
    ) {
        for (index, (step, name)) in steps.iter().zip(names).enumerate() {
            let pre = match self.pre_script(index + 1, step).await {
                Ok(Some(pre)) => pre,
                Ok(None) => continue,
                Err(error) => {
                    self.runner_line(&format!("error: pre: {error}"));
                    self.failed = true;
                    continue;
                }
            };
            if let Err(error) = self.run_pre(&pre, step, name, cancel).await {
                self.runner_line(&format!("error: {error}"));
                self.failed = true;
            }
        }
    }

    /// The `pre:` script of step `number`, when its action has one (remote
    /// and `$/` actions; GitHub does not run those of local `./` actions).
    async fn pre_script(
        &mut self,
        number: usize,
        step: &Step,
    ) -> Result<Option<PreScript>, StepError> {
        let StepAction::Uses { reference, .. } = &step.action else {
            return Ok(None);
        };
        let pre = match reference {
            ActionRef::Remote(remote) if HostServed::of(remote).is_none() => {
                self.remote_pre(number, remote).await?
            }
            ActionRef::SelfRepo { path } => self.self_repo_pre(number, path).await?,
            _ => return Ok(None),
        };
        let has_pre = matches!(&pre.action.runs, ActionRuns::Node { pre: Some(_), .. });
        Ok(has_pre.then_some(pre))
    }

    /// The remote action of step `number`, as a possible `pre:` script.
    async fn remote_pre(
        &mut self,
        number: usize,
        remote: &RemoteRef,
    ) -> Result<PreScript, StepError> {
        let wanted = remote.clone();
        let (repository, action) = self.with_resolver(move |r| r.action(&wanted)).await?;
        let root = self.environment.layout.workspace_root();
        let (owner, repo, git_ref) = (&remote.owner, &remote.repo, &remote.git_ref);
        let guest_root = format!("{root}/_actions/{owner}/{repo}/{git_ref}");
        Ok(PreScript {
            number,
            action,
            host_dir: repository.dir,
            guest_dir: join_guest(&guest_root, &remote.path),
            guest_root,
            identity: (format!("{owner}/{repo}"), git_ref.clone()),
        })
    }

    /// The `$/path` action of step `number`, as a possible `pre:` script.
    async fn self_repo_pre(&mut self, number: usize, path: &str) -> Result<PreScript, StepError> {
        let (host_dir, action) = self.self_action(path).await?;
        let guest_root = format!(
            "{}/_actions/_self",
            self.environment.layout.workspace_root()
        );
        Ok(PreScript {
            number,
            action,
            host_dir,
            guest_dir: join_guest(&guest_root, path),
            guest_root,
            identity: (String::new(), String::new()),
        })
    }

    /// Runs one `pre:` script (when its `pre-if:` holds) and registers the
    /// action's `post:`.
    async fn run_pre(
        &mut self,
        pre: &PreScript,
        step: &Step,
        name: &str,
        cancel: &CancellationToken,
    ) -> Result<(), StepError> {
        let ActionRuns::Node {
            pre: Some(script),
            pre_if,
            ..
        } = &pre.action.runs
        else {
            return Ok(());
        };
        let StepAction::Uses { uses, with, .. } = &step.action else {
            return Ok(());
        };
        let (repository, git_ref) = &pre.identity;
        self.set_github(&[
            ("action", name),
            ("action_repository", repository),
            ("action_ref", git_ref),
        ]);
        let status = self.status(cancel);
        let env = self.step_env(step, status)?;
        let ctx = self.eval_context(&env, status);
        let condition = pre_if.as_deref().unwrap_or("always()");
        if !expr::parse_condition(condition, ALL_CONTEXTS).and_then(|c| c.evaluate(&ctx))? {
            return Ok(());
        }
        let display = format!("Pre {}", self.step_name(step, &ctx));
        self.runner_line(&format!("##[step] {display}"));
        self.upload_action(&pre.host_dir, &pre.guest_root).await?;
        let call = ActionCall {
            step,
            uses: &uses.value,
            display: &display,
            with,
            ctx: &ctx,
            env: &env,
        };
        self.run_pre_script(pre, &call, script, cancel).await
    }

    /// Runs a `pre:` script, keeps what it saved and registers the `post:`.
    async fn run_pre_script(
        &mut self,
        pre: &PreScript,
        call: &ActionCall<'_>,
        script: &str,
        cancel: &CancellationToken,
    ) -> Result<(), StepError> {
        let instance = ActionInstance::Top(pre.number);
        let env = self.node_env(call, &pre.action, &pre.guest_dir, instance)?;
        let path = format!("{}/{script}", pre.guest_dir);
        let end = self
            .run_node_script(&pre.action, &path, env.clone(), None, cancel)
            .await;
        let saved = std::mem::take(&mut self.last_state);
        self.actions.save_state(instance, saved);
        self.register_post(&pre.action, &pre.guest_dir, call.display, env, instance);
        if end?.conclusion != Conclusion::Success {
            self.failed = true;
        }
        Ok(())
    }

    /// The `post:` scripts of the job's JavaScript actions, last first, each
    /// under its `post-if:` (default `always()`), with the `STATE_<name>`
    /// variables its earlier scripts saved.
    pub(super) async fn run_post_steps(&mut self, cancel: &CancellationToken) {
        while let Some(post) = self.actions.posts.pop() {
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
            for (name, value) in self.actions.state.get(&post.instance).into_iter().flatten() {
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
}
