//! The actions the host serves itself: `actions/checkout` (the files are
//! prepared with git on the host and streamed in), upload/download-artifact
//! and `actions/cache` (from the host's stores).

use std::collections::BTreeMap;

use firerunner_workflow::expr;
use firerunner_workflow::{Conclusion, Value};

use super::actions::{prepare_on_host, ActionCall};
use super::process::StepEnd;
use super::runner::JobRunner;
use super::StepError;
use crate::actions::native::{self, ActionGuest, HostServed};
use crate::checkout::CheckoutSource;

impl JobRunner<'_> {
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
    pub(super) async fn checkout(&mut self, call: &ActionCall<'_>) -> Result<(), StepError> {
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
    pub(super) async fn native_action(
        &mut self,
        kind: HostServed,
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
        kind: HostServed,
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
            HostServed::UploadArtifact => {
                native::upload_artifact(&guest, artifacts()?, run_id, inputs).await?
            }
            HostServed::DownloadArtifact => {
                native::download_artifact(&guest, artifacts()?, run_id, inputs).await?
            }
            HostServed::Cache => {
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
            HostServed::Checkout => unreachable!("checkout is served by JobRunner::checkout"),
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
