//! The [`JobExecutor`] that gives every job instance its own microVM, taken
//! from a [`SessionManager`] (a warm pool when it has one, else a fresh boot)
//! and released (destroyed) when the job ends.

use std::sync::{Arc, Mutex};

use firerunner_vm::session::SessionManager;
use firerunner_vm::{VmBackend, VmSpec};
use firerunner_workflow::Conclusion;
use firerunner_workflow::Object;
use tokio_util::sync::CancellationToken;

use crate::job::{run_job, JobEnvironment, JobReport, JobToRun};
use crate::logs::{LogHub, LogLine, LogStream};
use crate::orchestrator::{InstanceOutcome, JobExecutor, JobInstance};
use crate::sandbox::Sandbox;

/// Runs each job instance in its own VM from a session manager.
pub struct VmJobExecutor<B: VmBackend> {
    sessions: SessionManager<B>,
    spec: VmSpec,
    environment: JobEnvironment,
    logs: Arc<LogHub>,
    reports: Mutex<Vec<(String, JobReport)>>,
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
            reports: Mutex::new(Vec::new()),
        }
    }

    /// The step-level reports of every finished instance, by display name.
    pub fn reports(&self) -> Vec<(String, JobReport)> {
        self.reports.lock().expect("reports").clone()
    }
}

/// Tries at starting a job's VM when the failure is transient.
const VM_ATTEMPTS: u32 = 3;
/// Pause before the second try; it doubles before each further one.
const VM_RETRY_PAUSE: std::time::Duration = std::time::Duration::from_secs(1);

impl<B: VmBackend> JobExecutor for VmJobExecutor<B> {
    async fn run(&self, instance: JobInstance, cancel: CancellationToken) -> InstanceOutcome {
        let failure = InstanceOutcome {
            result: Conclusion::Failure,
            outputs: Object::new(),
        };
        let run_id = &self.environment.run_id;
        let mut log = match self.logs.job_writer(run_id, &instance.name) {
            Ok(log) => log,
            Err(_) => return failure,
        };
        let note = |log: &mut crate::logs::JobLogWriter, text: String| {
            let _ = log.write(LogLine::now(
                run_id,
                &instance.name,
                0,
                LogStream::Runner,
                text,
            ));
        };
        let mut attempt = 1;
        let mut session = loop {
            let acquired = tokio::select! {
                acquired = self.sessions.acquire(&self.spec) => acquired,
                _ = cancel.cancelled() => {
                    return InstanceOutcome { result: Conclusion::Cancelled, outputs: Object::new() };
                }
            };
            match acquired {
                Ok(session) => break session,
                Err(err) if err.is_transient() && attempt < VM_ATTEMPTS => {
                    let pause = VM_RETRY_PAUSE * 2u32.pow(attempt - 1);
                    note(
                        &mut log,
                        format!(
                            "warning: starting the VM failed ({err}); trying again in {pause:?}"
                        ),
                    );
                    tokio::select! {
                        _ = tokio::time::sleep(pause) => {}
                        _ = cancel.cancelled() => {
                            return InstanceOutcome { result: Conclusion::Cancelled, outputs: Object::new() };
                        }
                    }
                    attempt += 1;
                }
                Err(err) => {
                    note(&mut log, format!("error: no VM for this job: {err}"));
                    return failure;
                }
            }
        };
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
            &mut log,
            &cancel,
        )
        .await;
        drop(sandbox);
        let _ = if report.result == Conclusion::Success {
            session.mark_complete()
        } else {
            session.mark_failed()
        };
        if let Err(err) = session.release().await {
            note(&mut log, format!("warning: releasing the VM: {err}"));
        }
        let outcome = InstanceOutcome {
            result: report.result,
            outputs: report.outputs.clone(),
        };
        self.reports
            .lock()
            .expect("reports")
            .push((instance.name, report));
        outcome
    }
}
