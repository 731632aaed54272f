//! The one shared state every handler and background task works with.

use std::sync::{Arc, Mutex, OnceLock};
use std::time::Instant;

use firerunner_engine::logs::{parse_log, LogHub, LogLine};
use firerunner_github::api::{ApiConfig, ApiError, Auth, GitHubClient, RepoRef, RetryPolicy};
use firerunner_learning::llm::FailureToExplain;
use firerunner_learning::{
    LearningConfig, LearningCoordinator, LearningStore, LlmClient, LlmConfig,
};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tokio::sync::Notify;

use crate::config::Config;
use crate::live::{Capacity, LiveEvent, LiveHub};
use crate::secrets::Settings;
use crate::store::Store;
use crate::variables::GitHubVariables;
use crate::vault::Keyring;
use crate::vm_ops::VmOperations;

/// Everything the service shares, cheap to clone.
#[derive(Clone)]
pub struct AppState {
    /// The configuration it started with.
    pub config: Arc<Config>,
    /// Deliveries, runs, jobs, workers.
    pub store: Store,
    /// Live events for the dashboard.
    pub live: LiveHub,
    /// GitHub's API, when credentials are configured.
    pub github: Option<GitHubClient>,
    /// Job logs (stored per run and job, streamed live).
    pub logs: Arc<LogHub>,
    /// Wakes the dispatcher when a delivery arrives.
    pub wake_dispatcher: Arc<Notify>,
    /// Wakes the workers when a run is queued.
    pub wake_workers: Arc<Notify>,
    /// This host's VM and session use.
    capacity: Arc<Mutex<Capacity>>,
    /// When the service started.
    pub started: Instant,
    /// VMs operators drive through the API (when this process runs VMs).
    pub vms: Option<Arc<dyn VmOperations>>,
    /// Workflow files by repository and commit (a commit never changes).
    workflow_files: Arc<Mutex<WorkflowFilesCache>>,
    /// What is learned from every step, when learning is on.
    pub learning: Option<Arc<LearningCoordinator>>,
    /// The language model that explains failures, when one is set up.
    pub llm: Option<Arc<LlmClient>>,
    /// Webhook requests in progress (`limits.webhook_concurrency` permits).
    pub webhook_slots: Arc<tokio::sync::Semaphore>,
    /// The secret and variable stores.
    pub settings: Settings,
    /// GitHub's configuration variables, kept for a while.
    pub github_variables: Arc<GitHubVariables>,
    /// Wakes the jobs waiting for an approval when one is decided here.
    pub wake_approvals: Arc<Notify>,
}

/// The workflow files of recent commits, oldest forgotten first: one push
/// often brings several deliveries for the same commit (push, pull request,
/// the worker's own look), and the files at a commit never change.
#[derive(Default)]
struct WorkflowFilesCache {
    files: std::collections::HashMap<CommitKey, Arc<Vec<(String, String)>>>,
    order: std::collections::VecDeque<CommitKey>,
}

/// `owner/name` and a commit id.
type CommitKey = (String, String);

/// Commits whose workflow files are remembered.
const CACHED_COMMITS: usize = 256;

/// Why the workflow files of a commit could not be had.
#[derive(Debug, thiserror::Error)]
pub enum WorkflowFilesError {
    /// Neither a token nor a GitHub App is configured.
    #[error("no GitHub credentials are configured (github.token or github.app_id)")]
    NoCredentials,
    /// GitHub answered with an error.
    #[error(transparent)]
    Api(#[from] ApiError),
}

impl WorkflowFilesError {
    /// Whether trying again later may succeed.
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::Api(err) if err.is_transient())
    }
}

/// Errors building the state.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// The store could not be opened.
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    /// The GitHub client could not be built.
    #[error("GitHub client: {0}")]
    GitHub(String),
    /// The secrets key is unusable.
    #[error(transparent)]
    Vault(#[from] crate::vault::VaultError),
    /// The data directory could not be created.
    #[error("data directory {path}: {source}")]
    DataDir {
        /// The directory.
        path: String,
        /// Why.
        source: std::io::Error,
    },
}

impl AppState {
    /// Opens the store and builds the GitHub client from `config`.
    pub async fn open(config: Config) -> Result<Self, StateError> {
        // Metrics recorded from here on are exported at /metrics.
        prometheus();
        std::fs::create_dir_all(&config.data_dir).map_err(|source| StateError::DataDir {
            path: config.data_dir.display().to_string(),
            source,
        })?;
        let store = Store::connect(&config.database_url).await?;
        let github = github_client(&config)?;
        let logs = Arc::new(LogHub::new(&config.data_dir.join("logs")));
        let learning = open_learning(&config).await;
        let llm = llm_client(&config);
        let capacity = Capacity {
            max_vms: config.limits.max_vms,
            max_sessions: config.limits.max_sessions,
            max_runs: config.limits.concurrent_runs,
            ..Capacity::default()
        };
        let config_limits = config.limits.clone();
        let settings = Settings::new(store.clone(), keyring(&config)?);
        let github_variables = Arc::new(GitHubVariables::new(
            config.variables.from_github,
            std::time::Duration::from_secs(config.variables.ttl_seconds),
        ));
        Ok(Self {
            config: Arc::new(config),
            store,
            live: LiveHub::default(),
            github,
            logs,
            wake_dispatcher: Arc::new(Notify::new()),
            wake_workers: Arc::new(Notify::new()),
            capacity: Arc::new(Mutex::new(capacity)),
            started: Instant::now(),
            vms: None,
            workflow_files: Arc::default(),
            learning,
            llm,
            webhook_slots: Arc::new(tokio::sync::Semaphore::new(
                config_limits.webhook_concurrency,
            )),
            settings,
            github_variables,
            wake_approvals: Arc::new(Notify::new()),
        })
    }

    /// The same state with VM operations for the API.
    pub fn with_vm_operations(mut self, vms: Arc<dyn VmOperations>) -> Self {
        self.vms = Some(vms);
        self
    }

    /// This host's VM and session use now.
    pub fn capacity(&self) -> Capacity {
        *self.capacity.lock().expect("capacity")
    }

    /// Updates this host's use and tells the dashboard when it changed.
    pub fn update_capacity(&self, update: impl FnOnce(&mut Capacity)) {
        let changed = {
            let mut capacity = self.capacity.lock().expect("capacity");
            let before = *capacity;
            update(&mut capacity);
            (*capacity != before).then_some(*capacity)
        };
        if let Some(capacity) = changed {
            metrics::gauge!("firerunner_vms_running").set(capacity.vms_running as f64);
            metrics::gauge!("firerunner_sessions").set(capacity.sessions as f64);
            self.live.publish(LiveEvent::Capacity(capacity));
        }
    }

    /// A job's log: from this host's log files while or after it ran here,
    /// else as the host that ran it saved it in the store. `None` when
    /// neither has it (yet).
    pub async fn job_log(&self, run_id: &str, job: &str) -> Result<Option<Vec<LogLine>>, String> {
        match self.logs.read(run_id, job) {
            Ok(lines) => return Ok(Some(lines)),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
            Err(err) => return Err(err.to_string()),
        }
        let Some(text) = self
            .store
            .job_log(run_id, job)
            .await
            .map_err(|e| e.to_string())?
        else {
            return Ok(None);
        };
        parse_log(&text)
            .map(Some)
            .map_err(|e| format!("stored log of {job}: {e}"))
    }

    /// The workflow files at commit `sha` of `repo`, from GitHub the first
    /// time and remembered after (only for full commit ids, which name
    /// content that never changes).
    pub async fn workflow_files(
        &self,
        repo: &RepoRef,
        sha: &str,
    ) -> Result<Arc<Vec<(String, String)>>, WorkflowFilesError> {
        let github = self
            .github
            .as_ref()
            .ok_or(WorkflowFilesError::NoCredentials)?;
        let key = (format!("{}/{}", repo.owner, repo.name), sha.to_string());
        let immutable = sha.len() == 40 && sha.bytes().all(|b| b.is_ascii_hexdigit());
        if immutable {
            if let Some(files) = self.workflow_files.lock().expect("cache").files.get(&key) {
                return Ok(files.clone());
            }
        }
        let files = Arc::new(github.workflow_files(repo, sha).await?);
        if immutable {
            let mut cache = self.workflow_files.lock().expect("cache");
            if cache.files.insert(key.clone(), files.clone()).is_none() {
                cache.order.push_back(key);
                while cache.order.len() > CACHED_COMMITS {
                    if let Some(oldest) = cache.order.pop_front() {
                        cache.files.remove(&oldest);
                    }
                }
            }
        }
        Ok(files)
    }

    /// The language model's short explanation of a failed step, or `None`
    /// without a model or when it fails or is slow (that is only logged).
    pub async fn explain_failure(&self, step: &firerunner_learning::StepRecord) -> Option<String> {
        let llm = self.llm.as_ref()?;
        let failure = FailureToExplain {
            step_name: step.step_name.clone(),
            command: step.command.clone(),
            log_tail: step.log_tail.clone(),
        };
        match llm.explain_failure(&failure).await {
            Ok(explanation) => Some(explanation),
            Err(err) => {
                tracing::warn!(
                    "the language model did not explain {}: {err}",
                    step.step_name
                );
                None
            }
        }
    }

    /// Records an error in the store (for the dashboard) and the log.
    pub async fn report_error(&self, source: &str, message: &str) {
        tracing::error!(source, "{message}");
        metrics::counter!("firerunner_errors_total", "source" => source.to_string()).increment(1);
        if let Err(err) = self.store.record_error(source, message).await {
            tracing::error!("could not record an error: {err}");
        }
        self.live
            .publish(LiveEvent::Error(crate::store::ErrorRecord {
                at: crate::store::now_ms(),
                source: source.into(),
                message: message.into(),
            }));
    }
}

/// The secrets keyring when `secrets.key` is set.
fn keyring(config: &Config) -> Result<Option<Keyring>, StateError> {
    let secrets = &config.secrets;
    if secrets.key.is_empty() {
        return Ok(None);
    }
    let previous = Some(secrets.previous_key.as_str());
    Ok(Some(Keyring::new(&secrets.key, previous)?))
}

fn github_client(config: &Config) -> Result<Option<GitHubClient>, StateError> {
    let github = &config.github;
    let auth = if github.app_id != 0 {
        Auth::App {
            app_id: github.app_id,
            private_key_pem: github.private_key.clone(),
        }
    } else if !github.token.is_empty() {
        Auth::Token(github.token.clone())
    } else {
        return Ok(None);
    };
    GitHubClient::new(ApiConfig {
        base_url: github.api_url.clone(),
        auth,
        user_agent: format!("firerunner/{}", env!("CARGO_PKG_VERSION")),
        retry: RetryPolicy::default(),
    })
    .map(Some)
    .map_err(|err| StateError::GitHub(err.to_string()))
}

/// The process-wide Prometheus recorder (installed on first use).
pub fn prometheus() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let builder = PrometheusBuilder::new()
            .set_buckets(&[
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                10.0, 30.0, 60.0, 300.0, 1800.0,
            ])
            .expect("bucket list is not empty");
        let recorder = builder.build_recorder();
        let handle = recorder.handle();
        // Another recorder may already be installed (a test harness); then
        // this handle still renders, just without the others' metrics.
        let _ = metrics::set_global_recorder(recorder);
        handle
    })
}

/// Opens the learning store in the service's database; a failure only turns
/// learning off (it is logged), it never stops the service.
async fn open_learning(config: &Config) -> Option<Arc<LearningCoordinator>> {
    if !config.learning.enabled {
        return None;
    }
    let opened = async {
        let store = LearningStore::connect(&config.database_url).await?;
        let settings = LearningConfig {
            lesson_threshold: config.learning.lesson_threshold,
            hint_scope: config.learning.hint_scope,
            ..LearningConfig::default()
        };
        LearningCoordinator::open(store, settings).await
    };
    match opened.await {
        Ok(learning) => Some(Arc::new(learning)),
        Err(err) => {
            tracing::error!("learning is off: {err}");
            None
        }
    }
}

/// The language model client when `[llm]` names one.
fn llm_client(config: &Config) -> Option<Arc<LlmClient>> {
    let settings = &config.llm;
    if settings.url.is_empty() {
        return None;
    }
    let mut llm = LlmConfig::new(settings.url.clone(), settings.model.clone());
    llm.api_key = (!settings.api_key.is_empty()).then(|| settings.api_key.clone());
    llm.timeout = std::time::Duration::from_secs(settings.timeout_seconds.max(1));
    match LlmClient::new(llm) {
        Ok(client) => Some(Arc::new(client)),
        Err(err) => {
            tracing::error!("the language model is off: {err}");
            None
        }
    }
}
