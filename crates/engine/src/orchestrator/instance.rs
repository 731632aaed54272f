//! One spawned job instance: it waits for its turn and its slots, runs in
//! the executor (or runs the workflow it calls), and reports how it ended.

use std::sync::Arc;
use std::time::{Duration, Instant};

use firerunner_workflow::model::WorkflowCallJob;
use firerunner_workflow::Conclusion;
use firerunner_workflow::Object;
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;

use super::call::call_workflow;
use super::error::RunError;
use super::{InstanceOutcome, InstanceReport, JobExecutor, JobInstance, RunLimits, RunScope};
use crate::environment::{
    environment_name, overlay, with_vars, EnvironmentError, EnvironmentRequest,
};

/// What every instance of one job shares.
#[derive(Clone)]
pub(super) struct JobSlots {
    /// Slots of the job (`max-parallel`).
    pub(super) per_job: Arc<Semaphore>,
    /// Slots of the whole run.
    pub(super) global: Arc<Semaphore>,
    /// The index of the instance whose turn it is to ask for slots.
    pub(super) turn: Arc<watch::Sender<usize>>,
    /// Cancels the job's instances (fail-fast, or the run's cancellation).
    pub(super) cancel: CancellationToken,
    /// Whether a failing instance cancels the others.
    pub(super) fail_fast: bool,
}

/// The end of one instance task.
pub(super) struct TaskEnd {
    /// The job's id.
    pub(super) job_id: String,
    /// The instance's own report.
    pub(super) report: InstanceReport,
    /// Whether it may fail without failing its job's dependents.
    pub(super) continue_on_error: bool,
    /// The reports of a called workflow's jobs.
    pub(super) nested: Vec<InstanceReport>,
    /// The errors of a called workflow.
    pub(super) errors: Vec<RunError>,
}

/// One job instance waiting to run.
pub(super) struct InstanceTask<E: JobExecutor> {
    pub(super) executor: Arc<E>,
    pub(super) limits: RunLimits,
    /// The scope a called workflow runs in.
    pub(super) scope: RunScope,
    pub(super) instance: JobInstance,
    /// The workflow the job calls, if it calls one.
    pub(super) call: Option<WorkflowCallJob>,
    /// Its place among the job's instances (matrix order).
    pub(super) index: usize,
    pub(super) continue_on_error: bool,
    pub(super) slots: JobSlots,
    /// When the run started.
    pub(super) run_started: Instant,
}

impl<E: JobExecutor> InstanceTask<E> {
    /// Runs the instance to its end.
    pub(super) async fn run(mut self) -> TaskEnd {
        if let Some(call) = self.call.take() {
            return self.run_call(call).await;
        }
        if let Err(error) = self.enter_environment().await {
            return self.refused(error);
        }
        let permits = self.wait_for_slots().await;
        if permits.is_none() || self.slots.cancel.is_cancelled() {
            return self.end(self.cancelled(), Vec::new(), Vec::new());
        }
        let started = Instant::now();
        let instance = self.instance.clone();
        let outcome = self.executor.run(instance, self.slots.cancel.clone()).await;
        if outcome.result == Conclusion::Failure && !self.continue_on_error && self.slots.fail_fast
        {
            // Before this instance's slot frees, so no later instance starts in it.
            self.slots.cancel.cancel();
        }
        drop(permits);
        let report = self.report(outcome, started);
        self.end(report, Vec::new(), Vec::new())
    }

    /// Asks the scope's gate to let the instance into its `environment:`
    /// (before it holds a slot: waiting for approval takes none), and adds
    /// what it grants to the instance's secrets, `vars` and log.
    async fn enter_environment(&mut self) -> Result<(), EnvironmentError> {
        let job = &self.instance.workflow.jobs[&self.instance.job_id];
        let Some(environment) = environment_name(job, &self.instance.contexts)? else {
            return Ok(());
        };
        let Some(gate) = self.scope.gate.clone() else {
            return Ok(());
        };
        let request = EnvironmentRequest {
            job_id: self.instance.job_id.clone(),
            job_name: self.instance.name.clone(),
            environment,
        };
        let grant = gate.enter(request, &self.slots.cancel).await?;
        let base = self
            .instance
            .secrets
            .as_deref()
            .cloned()
            .unwrap_or_default();
        self.instance.secrets = Some(Arc::new(overlay(&base, &grant.secrets)));
        self.instance.contexts = with_vars(&self.instance.contexts, &grant.vars);
        self.instance.notes = grant.notes;
        Ok(())
    }

    /// The end of an instance its environment did not let in: cancelled
    /// when the run was, else failed with the reason among the run's errors.
    fn refused(&self, error: EnvironmentError) -> TaskEnd {
        let mut report = self.cancelled();
        if matches!(error, EnvironmentError::Cancelled(_)) {
            return self.end(report, Vec::new(), Vec::new());
        }
        report.result = Conclusion::Failure;
        let error = RunError::Environment {
            job: self.instance.name.clone(),
            source: error,
        };
        self.end(report, Vec::new(), vec![error])
    }

    /// A call holds no slot itself: its jobs take them.
    async fn run_call(self, call: WorkflowCallJob) -> TaskEnd {
        let started = Instant::now();
        let called = Box::pin(call_workflow(
            self.executor.clone(),
            self.limits,
            self.scope.clone(),
            self.instance.clone(),
            call,
            self.slots.cancel.clone(),
        ))
        .await;
        let report = self.report(called.outcome, started);
        self.end(report, called.nested, called.errors)
    }

    /// Instances queue for slots in matrix order, as on GitHub: instance n
    /// waits its turn before it asks for a slot. `None` when cancelled.
    async fn wait_for_slots(&self) -> Option<(OwnedSemaphorePermit, OwnedSemaphorePermit)> {
        let slots = &self.slots;
        let index = self.index;
        let permits = tokio::select! {
            _ = slots.cancel.cancelled() => None,
            permits = async {
                let mut my_turn = slots.turn.subscribe();
                my_turn.wait_for(|next| *next >= index).await.ok()?;
                let job = slots.per_job.clone().acquire_owned().await.ok()?;
                let all = slots.global.clone().acquire_owned().await.ok()?;
                Some((job, all))
            } => permits,
        };
        slots
            .turn
            .send_modify(|next| *next = (*next).max(index + 1));
        permits
    }

    fn report(&self, outcome: InstanceOutcome, started: Instant) -> InstanceReport {
        InstanceReport {
            job_id: self.instance.job_id.clone(),
            name: self.instance.name.clone(),
            result: outcome.result,
            outputs: outcome.outputs,
            started: Some(started.duration_since(self.run_started)),
            duration: started.elapsed(),
            job: outcome.job,
        }
    }

    fn cancelled(&self) -> InstanceReport {
        InstanceReport {
            job_id: self.instance.job_id.clone(),
            name: self.instance.name.clone(),
            result: Conclusion::Cancelled,
            outputs: Object::new(),
            started: None,
            duration: Duration::ZERO,
            job: None,
        }
    }

    fn end(
        &self,
        report: InstanceReport,
        nested: Vec<InstanceReport>,
        errors: Vec<RunError>,
    ) -> TaskEnd {
        TaskEnd {
            job_id: self.instance.job_id.clone(),
            report,
            continue_on_error: self.continue_on_error,
            nested,
            errors,
        }
    }
}
