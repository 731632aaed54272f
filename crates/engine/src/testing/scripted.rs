//! An executor that plays scripted job instances instead of running VMs, for
//! the orchestrator's tests.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use firerunner_workflow::{Conclusion, Object, Value};
use tokio_util::sync::CancellationToken;

use crate::orchestrator::{InstanceOutcome, JobExecutor, JobInstance, RunReport};

/// What a scripted instance does: sleep, then end with a result and outputs.
#[derive(Clone)]
pub struct Script {
    /// How long it runs.
    pub millis: u64,
    /// How it ends.
    pub result: Conclusion,
    /// The outputs it sets.
    pub outputs: Vec<(&'static str, &'static str)>,
}

/// One instance run: its name, start, end and result.
pub type LogEntry = (String, Instant, Instant, Conclusion);

/// An executor that runs each instance by its [`Script`] (looked up by
/// instance name, then job id; else 20 ms and success), recording when it
/// ran and the contexts it was given.
#[derive(Default)]
pub struct Scripted {
    /// Scripts by instance name or job id.
    pub scripts: HashMap<String, Script>,
    /// Every instance run, in the order they ended.
    pub log: Mutex<Vec<LogEntry>>,
    /// The contexts each instance was given, by name.
    pub seen: Mutex<HashMap<String, Object>>,
    /// The secrets each instance was given, by name.
    pub secrets: Mutex<HashMap<String, BTreeMap<String, String>>>,
    /// The notes (log lines from before the job) each instance was given, by name.
    pub notes: Mutex<HashMap<String, Vec<String>>>,
}

impl JobExecutor for Scripted {
    async fn run(&self, instance: JobInstance, cancel: CancellationToken) -> InstanceOutcome {
        let script = self
            .scripts
            .get(&instance.name)
            .or_else(|| self.scripts.get(&instance.job_id))
            .cloned()
            .unwrap_or_else(|| script(20, Conclusion::Success));
        self.seen
            .lock()
            .unwrap()
            .insert(instance.name.clone(), instance.contexts.clone());
        let secrets = instance.secrets.as_deref().cloned().unwrap_or_default();
        self.secrets
            .lock()
            .unwrap()
            .insert(instance.name.clone(), secrets);
        self.notes
            .lock()
            .unwrap()
            .insert(instance.name.clone(), instance.notes.clone());
        let start = Instant::now();
        let result = tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(script.millis)) => script.result,
            _ = cancel.cancelled() => Conclusion::Cancelled,
        };
        self.log
            .lock()
            .unwrap()
            .push((instance.name.clone(), start, Instant::now(), result));
        let outputs = script
            .outputs
            .iter()
            .map(|(k, v)| (k.to_string(), Value::String(v.to_string())))
            .collect();
        InstanceOutcome::new(result, outputs)
    }
}

/// A script without outputs.
pub fn script(millis: u64, result: Conclusion) -> Script {
    Script {
        millis,
        result,
        outputs: vec![],
    }
}

/// When the instance `name` started and ended.
pub fn span(executor: &Scripted, name: &str) -> (Instant, Instant) {
    let log = executor.log.lock().unwrap();
    let entry = log
        .iter()
        .find(|e| e.0 == name)
        .unwrap_or_else(|| panic!("{name} did not run"));
    (entry.1, entry.2)
}

/// The result of the instance `name` in a run's report.
pub fn result(report: &RunReport, name: &str) -> Conclusion {
    report
        .instances
        .iter()
        .find(|i| i.name == name)
        .unwrap_or_else(|| panic!("no instance {name}: {:?}", report.instances))
        .result
}
