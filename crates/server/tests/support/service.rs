//! A whole service on loopback for tests: a temporary store, a mock GitHub
//! recording what it is sent, and a scripted executor standing in for the
//! microVMs (the engine has its own VM tests), driven through real HTTP.

#![allow(dead_code)] // each test binary uses its own part of the harness

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use firerunner_engine::logs::{LogHub, LogLine, LogStream};
use firerunner_github::testing::MockGitHub;
use firerunner_server::executor::{JobEvent, RunExecutor, RunOutcome, RunRequest};
use firerunner_server::report::StepRecord;
use firerunner_server::{serve, AppState, Config, DeliveryState, Roles};
use firerunner_workflow::load::parse_workflow;
use firerunner_workflow::plan::{plan_workflow, PlanContext};
use firerunner_workflow::trigger::Event;
use hmac::{Hmac, Mac};
use serde_json::Value;
use sha2::Sha256;
use tokio::sync::mpsc::UnboundedSender;
use tokio_util::sync::CancellationToken;

/// The webhook secret of test services.
pub const SECRET: &str = "it's a secret to everybody";
/// The API token of test services.
pub const API_TOKEN: &str = "operator-token";
/// The repository of the fixtures.
pub const REPO: &str = "octo-org/widgets";

/// `sha256=<hex>` of `body` with `secret`.
pub fn sign(secret: &str, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// A fixture payload from crates/github/testdata/payloads, as JSON.
pub fn fixture(name: &str) -> Value {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../github/testdata/payloads")
        .join(format!("{name}.json"));
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
}

/// A job runner that plans the workflow for real and then pretends: a job
/// whose name contains `fail` fails, one containing `wait` runs until
/// cancelled, one containing `slow` takes three seconds, others succeed.
#[derive(Default)]
pub struct ScriptedExecutor {
    /// Every run executed, in order (a run twice means it ran twice).
    pub executed: Mutex<Vec<String>>,
    /// Runs executing now.
    pub running: Mutex<Vec<String>>,
    /// Where to write each job's log as a worker host would (none: no logs).
    pub log_root: Option<PathBuf>,
    /// Every request executed, in order.
    pub requests: Mutex<Vec<RunRequest>>,
    /// The secrets each job ran with (the run's, with its environment's
    /// over them), by job name.
    pub job_secrets: Mutex<HashMap<String, BTreeMap<String, String>>>,
    /// The `vars` each job ran with, by job name.
    pub job_vars: Mutex<HashMap<String, BTreeMap<String, String>>>,
}

/// What a job's environment gate said, as the engine would apply it.
enum Entered {
    /// It may run with these secrets and vars.
    Run(BTreeMap<String, String>, BTreeMap<String, String>),
    /// It may not run: failed (with the reason) or cancelled.
    Refused(String, String),
}

/// Asks the request's gate about `job`'s `environment:`, as the engine's
/// orchestrator does before a job takes a slot.
async fn enter(
    request: &RunRequest,
    workflow: &firerunner_workflow::ParsedWorkflow,
    job_id: &str,
    name: &str,
    contexts: &firerunner_workflow::Object,
    cancel: &CancellationToken,
) -> Entered {
    use firerunner_engine::environment::{
        environment_name, overlay, EnvironmentError, EnvironmentRequest,
    };
    let job = &workflow.jobs[job_id];
    let (secrets, vars) = (request.secrets.clone(), request.vars.clone());
    let environment = match environment_name(job, contexts) {
        Ok(Some(environment)) => environment,
        Ok(None) => return Entered::Run(secrets, vars),
        Err(err) => return Entered::Refused("failure".into(), err.to_string()),
    };
    let Some(gate) = &request.environments else {
        return Entered::Run(secrets, vars);
    };
    let asked = EnvironmentRequest {
        job_id: job_id.to_string(),
        job_name: name.to_string(),
        environment,
    };
    match gate.0.enter(asked, cancel).await {
        Ok(grant) => Entered::Run(
            overlay(&secrets, &grant.secrets),
            overlay(&vars, &grant.vars),
        ),
        Err(err @ EnvironmentError::Cancelled(_)) => {
            Entered::Refused("cancelled".into(), err.to_string())
        }
        Err(err) => Entered::Refused("failure".into(), format!("{name}: {err}")),
    }
}

impl RunExecutor for ScriptedExecutor {
    async fn execute(
        &self,
        request: RunRequest,
        events: UnboundedSender<JobEvent>,
        cancel: CancellationToken,
    ) -> RunOutcome {
        let run_id = request.run.id.clone();
        self.executed.lock().unwrap().push(run_id.clone());
        self.requests.lock().unwrap().push(request.clone());
        self.running.lock().unwrap().push(run_id.clone());
        let (_, text) = request
            .workflows
            .iter()
            .find(|(path, _)| *path == request.run.workflow_file)
            .expect("the run's workflow is among the files");
        let workflow = parse_workflow(&request.run.workflow_file, text).unwrap();
        let event = Event::new(request.run.event.clone(), request.payload.clone());
        let contexts = firerunner_engine::run_context::event_contexts(
            &event,
            &request.run.git_ref,
            &Default::default(),
        );
        let plan = plan_workflow(
            &workflow,
            &PlanContext {
                contexts: contexts.clone(),
            },
        )
        .unwrap();
        let mut conclusion = "success";
        let (mut errors, mut never_ran) = (Vec::new(), Vec::new());
        for job in &plan.jobs {
            for name in job.instance_names() {
                let (job_secrets, job_vars) =
                    match enter(&request, &workflow, &job.id, &name, &contexts, &cancel).await {
                        Entered::Run(secrets, vars) => (secrets, vars),
                        Entered::Refused(result, error) => {
                            conclusion = if result == "cancelled" {
                                "cancelled"
                            } else {
                                "failure"
                            };
                            if result == "failure" {
                                errors.push(error);
                            }
                            never_ran.push((name.clone(), result));
                            continue;
                        }
                    };
                self.job_secrets
                    .lock()
                    .unwrap()
                    .insert(name.clone(), job_secrets.clone());
                self.job_vars.lock().unwrap().insert(name.clone(), job_vars);
                let _ = events.send(JobEvent::Started { name: name.clone() });
                let started = Instant::now();
                if let Some(root) = &self.log_root {
                    let mut writer = LogHub::new(root).job_writer(&run_id, &name).unwrap();
                    let line = format!("{name} ran on {}", root.display());
                    writer
                        .write(LogLine::now(&run_id, &name, 1, LogStream::Stdout, line))
                        .unwrap();
                }
                if name.contains("slow") {
                    tokio::time::sleep(Duration::from_secs(3)).await;
                }
                let (result, steps) = if name.contains("wait") {
                    tokio::select! {
                        _ = cancel.cancelled() => {}
                        _ = tokio::time::sleep(Duration::from_secs(60)) => {}
                    }
                    ("cancelled", vec![])
                } else if name.contains("fail") {
                    (
                        "failure",
                        vec![
                            StepRecord {
                                name: "Set up job".into(),
                                conclusion: "success".into(),
                                duration_ms: 3,
                            },
                            StepRecord {
                                name: "Run tests".into(),
                                conclusion: "failure".into(),
                                duration_ms: 40,
                            },
                        ],
                    )
                } else {
                    (
                        "success",
                        vec![StepRecord {
                            name: "Run build".into(),
                            conclusion: "success".into(),
                            duration_ms: 12,
                        }],
                    )
                };
                if result != "success" {
                    conclusion = if result == "cancelled" {
                        "cancelled"
                    } else {
                        "failure"
                    };
                }
                let learned: Vec<firerunner_learning::StepRecord> = steps
                    .iter()
                    .filter(|step| step.conclusion != "skipped")
                    .map(|step| {
                        let failed = step.conclusion == "failure";
                        firerunner_learning::StepRecord {
                            run_id: run_id.clone(),
                            repository: request.run.repository.clone(),
                            commit_sha: request.run.sha.clone(),
                            workflow: request.run.workflow_name.clone(),
                            job: name.clone(),
                            step_name: step.name.clone(),
                            command: format!("make {}", step.name.to_lowercase()),
                            outcome: if failed {
                                firerunner_learning::Conclusion::Failure
                            } else {
                                firerunner_learning::Conclusion::Success
                            },
                            exit_code: Some(if failed { 2 } else { 0 }),
                            duration: Duration::from_millis(step.duration_ms),
                            log_tail: if failed {
                                format!("error: {name} went wrong\nmake: *** [test] Error 2")
                            } else {
                                String::new()
                            },
                            timestamp: std::time::SystemTime::now(),
                        }
                    })
                    .collect();
                // A job named `leak` prints every secret it was given.
                let leaked: String = if name.contains("leak") {
                    job_secrets.values().cloned().collect::<Vec<_>>().join(" ")
                } else {
                    String::new()
                };
                let learned: Vec<firerunner_learning::StepRecord> = learned
                    .into_iter()
                    .map(|mut step: firerunner_learning::StepRecord| {
                        if !leaked.is_empty() {
                            step.command = format!("deploy --token {leaked}");
                            step.log_tail.push_str(&format!("\ntoken was {leaked}"));
                        }
                        step
                    })
                    .collect();
                let _ = events.send(JobEvent::Finished {
                    name: name.clone(),
                    conclusion: result.into(),
                    duration: started.elapsed(),
                    steps,
                    summary: format!("### {name} summary {leaked}"),
                    log_tail: format!("error: {name} went wrong {leaked}\nexit 1"),
                    learned,
                    environment_url: None,
                });
                if cancel.is_cancelled() {
                    break;
                }
            }
        }
        self.running.lock().unwrap().retain(|id| *id != run_id);
        RunOutcome {
            conclusion: if cancel.is_cancelled() {
                "cancelled".into()
            } else {
                conclusion.into()
            },
            errors,
            never_ran,
        }
    }
}

/// The configuration of a test service at `url` keeping its data in `dir`
/// (SQLite there unless changed) and talking to the mock GitHub at `github`.
pub fn test_config(url: &str, dir: &std::path::Path, github: &str) -> Config {
    let mut config = Config::from_parts("test", "", Vec::new()).unwrap();
    config.public_url = url.to_string();
    config.data_dir = dir.to_path_buf();
    config.database_url = format!("sqlite://{}?mode=rwc", dir.join("store.db").display());
    config.webhook_secret = SECRET.into();
    config.api_token = API_TOKEN.into();
    config.max_body_bytes = 256 * 1024;
    config.github.api_url = github.to_string();
    config.github.token = "ghs_testtoken".into();
    config.github.git_url = "file:///nonexistent".into();
    config.worker.id = "test-worker".into();
    config.worker.lease_seconds = 5;
    config.limits.concurrent_runs = 4;
    config
}

/// A running test service.
pub struct Service {
    /// Its base URL.
    pub url: String,
    /// The mock GitHub it talks to.
    pub github: MockGitHub,
    /// Its shared state (store included).
    pub state: AppState,
    /// The executor standing in for VMs.
    pub executor: Arc<ScriptedExecutor>,
    /// Its data directory (store, logs).
    pub dir: Arc<tempfile::TempDir>,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl Service {
    /// Starts a service with a worker; `tweak` adjusts its configuration.
    pub async fn start(tweak: impl FnOnce(&mut Config)) -> Self {
        let github = MockGitHub::start().await;
        Self::start_with(
            github,
            Arc::new(tempfile::tempdir().unwrap()),
            Arc::new(ScriptedExecutor::default()),
            tweak,
        )
        .await
    }

    /// Starts a service on an existing data directory and mock GitHub (a restart).
    pub async fn start_with(
        github: MockGitHub,
        dir: Arc<tempfile::TempDir>,
        executor: Arc<ScriptedExecutor>,
        tweak: impl FnOnce(&mut Config),
    ) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let mut config = test_config(&url, dir.path(), &github.url());
        tweak(&mut config);
        let roles = Roles {
            http: true,
            worker: config.worker.enabled,
        };
        let state = AppState::open(config).await.unwrap();
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(serve(
            state.clone(),
            roles,
            Some(listener),
            roles.worker.then(|| executor.clone()),
            shutdown.clone(),
        ));
        Self {
            url,
            github,
            state,
            executor,
            dir,
            shutdown,
            task,
        }
    }

    /// Stops it (runs executing go back to the queue) and returns what a
    /// restart needs.
    pub async fn stop(self) -> (MockGitHub, Arc<tempfile::TempDir>, Arc<ScriptedExecutor>) {
        self.shutdown.cancel();
        self.task.await.unwrap().unwrap();
        (self.github, self.dir, self.executor)
    }

    /// Posts a signed webhook; returns the status code and the JSON answer.
    pub async fn webhook(&self, event: &str, delivery: &str, payload: &Value) -> (u16, Value) {
        let body = serde_json::to_vec(payload).unwrap();
        let signature = sign(SECRET, &body);
        self.post_raw(event, delivery, body, Some(&signature)).await
    }

    /// Posts any body with any signature.
    pub async fn post_raw(
        &self,
        event: &str,
        delivery: &str,
        body: Vec<u8>,
        signature: Option<&str>,
    ) -> (u16, Value) {
        let mut request = reqwest::Client::new()
            .post(format!("{}/webhook", self.url))
            .header("X-GitHub-Event", event)
            .header("X-GitHub-Delivery", delivery)
            .header("Content-Type", "application/json")
            .body(body);
        if let Some(signature) = signature {
            request = request.header("X-Hub-Signature-256", signature);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    /// GETs a path with the API token; returns the status and the body text.
    pub async fn get(&self, path: &str, token: Option<&str>) -> (u16, String) {
        let mut request = reqwest::Client::new().get(format!("{}{path}", self.url));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.unwrap();
        (response.status().as_u16(), response.text().await.unwrap())
    }

    /// Waits until the executor has started run `id` `times` times: a run
    /// shows as running in the store once claimed, a moment before the
    /// executor is called, and a loaded machine makes that moment long.
    pub async fn wait_for_executions(&self, id: &str, times: usize) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let executed = self.executor.executed.lock().unwrap().clone();
            if executed.iter().filter(|run| *run == id).count() >= times {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for run {id} to be executed {times} times: {executed:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits until `check` holds for the store's runs, by id.
    pub async fn wait_for_runs(
        &self,
        what: &str,
        check: impl Fn(&HashMap<String, firerunner_server::RunRecord>) -> bool,
    ) -> HashMap<String, firerunner_server::RunRecord> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let runs: HashMap<_, _> = self
                .state
                .store
                .recent_runs(1000)
                .await
                .unwrap()
                .into_iter()
                .map(|run| (run.run.id.clone(), run))
                .collect();
            if check(&runs) {
                return runs;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}: {runs:#?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits until the delivery is settled and returns (state, note).
    pub async fn settled(&self, delivery: &str) -> (DeliveryState, String) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let found = self
                .state
                .store
                .recent_deliveries(1000)
                .await
                .unwrap()
                .into_iter()
                .find(|d| d.delivery_id == delivery);
            if let Some(d) = found.filter(|d| !d.state.is_pending()) {
                return (d.state, d.note.unwrap_or_default());
            }
            assert!(
                Instant::now() < deadline,
                "delivery {delivery} was never settled"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}
