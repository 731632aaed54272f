//! The [`JobExecutor`] that gives every job instance its own microVM, taken
//! from a [`SessionManager`] (a warm pool when it has one, else a fresh boot)
//! and released (destroyed) when the job ends.

use std::sync::Arc;

use firerunner_vm::session::{Session, SessionManager};
use firerunner_vm::{VmBackend, VmSpec};
use firerunner_workflow::Conclusion;
use firerunner_workflow::Object;
use tokio_util::sync::CancellationToken;

use crate::job::{run_job, JobEnvironment, JobToRun};
use crate::logs::{JobLogWriter, LogHub, LogLine, LogStream};
use crate::orchestrator::{InstanceOutcome, JobExecutor, JobInstance};
use crate::sandbox::Sandbox;

/// Runs each job instance in its own VM from a session manager.
pub struct VmJobExecutor<B: VmBackend> {
    sessions: SessionManager<B>,
    spec: VmSpec,
    environment: JobEnvironment,
    logs: Arc<LogHub>,
}

impl<B: VmBackend> VmJobExecutor<B> {
    /// An executor running jobs in VMs for `spec` from `sessions`.
    pub fn new(
        sessions: SessionManager<B>,
        spec: VmSpec,
        environment: JobEnvironment,
        logs: Arc<LogHub>,
    ) -> Self {
        Self {
            sessions,
            spec,
            environment,
            logs,
        }
    }

    /// A session for one job: retried while starting the VM fails in a
    /// transient way; `Err` is how the job ends otherwise.
    async fn acquire(
        &self,
        log: &mut InstanceLog<'_>,
        cancel: &CancellationToken,
    ) -> Result<Session<B>, InstanceOutcome> {
        let cancelled = || InstanceOutcome::new(Conclusion::Cancelled, Object::new());
        let mut attempt = 1;
        loop {
            let acquired = tokio::select! {
                acquired = self.sessions.acquire(&self.spec) => acquired,
                _ = cancel.cancelled() => return Err(cancelled()),
            };
            match acquired {
                Ok(session) => return Ok(session),
                Err(err) if err.is_transient() && attempt < VM_ATTEMPTS => {
                    let pause = VM_RETRY_PAUSE * 2u32.pow(attempt - 1);
                    log.note(format!(
                        "warning: starting the VM failed ({err}); trying again in {pause:?}"
                    ));
                    tokio::select! {
                        _ = tokio::time::sleep(pause) => {}
                        _ = cancel.cancelled() => return Err(cancelled()),
                    }
                    attempt += 1;
                }
                Err(err) => {
                    log.note(format!("error: no VM for this job: {err}"));
                    return Err(InstanceOutcome::new(Conclusion::Failure, Object::new()));
                }
            }
        }
    }

    /// Runs the job's steps in `session`'s VM, then releases the VM.
    async fn run_in(
        &self,
        mut session: Session<B>,
        instance: &JobInstance,
        log: &mut InstanceLog<'_>,
        cancel: &CancellationToken,
    ) -> InstanceOutcome {
        let _ = session.mark_executing();
        let sandbox = Sandbox::new(session.client().clone());
        let secrets = instance
            .secrets
            .clone()
            .unwrap_or_else(|| Arc::new(self.environment.secrets.clone()));
        let to_run = JobToRun {
            workflow: &instance.workflow,
            secrets: &secrets,
        };
        let report = run_job(
            &sandbox,
            &self.environment,
            to_run,
            &instance.job_id,
            &instance.name,
            &instance.contexts,
            &mut log.writer,
            cancel,
        )
        .await;
        drop(sandbox);
        let _ = if report.result == Conclusion::Success {
            session.mark_complete()
        } else {
            session.mark_failed()
        };
        if let Err(err) = session.release().await {
            log.note(format!("warning: releasing the VM: {err}"));
        }
        InstanceOutcome {
            result: report.result,
            outputs: report.outputs.clone(),
            job: Some(report),
        }
    }
}

/// A job instance's log, with the runner's own notes.
struct InstanceLog<'a> {
    writer: JobLogWriter,
    run_id: &'a str,
    name: &'a str,
}

impl InstanceLog<'_> {
    fn note(&mut self, text: String) {
        let line = LogLine::now(self.run_id, self.name, 0, LogStream::Runner, text);
        let _ = self.writer.write(line);
    }
}

/// Tries at starting a job's VM when the failure is transient.
const VM_ATTEMPTS: u32 = 3;
/// Pause before the second try; it doubles before each further one.
const VM_RETRY_PAUSE: std::time::Duration = std::time::Duration::from_secs(1);

impl<B: VmBackend> JobExecutor for VmJobExecutor<B> {
    async fn run(&self, instance: JobInstance, cancel: CancellationToken) -> InstanceOutcome {
        let run_id = &self.environment.run_id;
        let Ok(writer) = self.logs.job_writer(run_id, &instance.name) else {
            return InstanceOutcome::new(Conclusion::Failure, Object::new());
        };
        let mut log = InstanceLog {
            writer,
            run_id,
            name: &instance.name,
        };
        for note in &instance.notes {
            log.note(note.clone());
        }
        match self.acquire(&mut log, &cancel).await {
            Ok(session) => self.run_in(session, &instance, &mut log, &cancel).await,
            Err(outcome) => outcome,
        }
    }
}
