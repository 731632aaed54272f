//! Helpers for tests of the engine and the crates above it (feature
//! `testing`): an executor that plays scripted job instances instead of
//! running VMs ([`Scripted`]), a mirror of action repositories served over
//! `file://` ([`ActionMirror`]), and one job run against the real guest agent
//! on the host, in a temporary folder laid out like a runner's ([`HostJob`]).

mod scripted;

pub use scripted::{result, script, span, LogEntry, Script, Scripted};

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use firerunner_agent_proto::Client;
use firerunner_vm::testing::{git, git_repo, host_agent};
use firerunner_workflow::{Object, Value};
use tokio_util::sync::CancellationToken;

use crate::actions::remote::ActionSource;
use crate::checkout::CheckoutSource;
use crate::job::{run_job, GuestLayout, JobEnvironment, JobReport, JobToRun};
use crate::logs::LogHub;
use crate::run_context;
use crate::sandbox::Sandbox;
use firerunner_workflow::trigger::Event;

/// A folder of `<owner>/<repo>` git repositories, the way `--actions-url
/// file:///...` takes a mirror.
pub struct ActionMirror {
    dir: tempfile::TempDir,
}

impl Default for ActionMirror {
    fn default() -> Self {
        Self::new()
    }
}

impl ActionMirror {
    /// An empty mirror.
    pub fn new() -> Self {
        Self {
            dir: tempfile::tempdir().expect("a temporary folder"),
        }
    }

    /// Commits `files` (path, text) to `owner/repo` (created on first use)
    /// and points the annotated tag `tag` at the commit; returns its id.
    pub fn publish(&self, repository: &str, tag: &str, files: &[(&str, &str)]) -> String {
        let repo = self.dir.path().join(repository);
        let new = !repo.join(".git").exists();
        for (path, text) in files {
            let file = repo.join(path);
            std::fs::create_dir_all(file.parent().expect("a file has a folder")).unwrap();
            std::fs::write(file, text).unwrap();
        }
        let sha = if new {
            git_repo(&repo, tag)
        } else {
            git(&repo, &["add", "."]);
            git(&repo, &["commit", "-q", "-m", tag]);
            git(&repo, &["rev-parse", "HEAD"])
        };
        git(&repo, &["tag", "-f", "-a", tag, "-m", tag]);
        sha
    }

    /// The mirror's folder.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// `file:///...`: the actions URL of the mirror.
    pub fn url(&self) -> String {
        format!("file://{}", self.dir.path().display())
    }
}

/// One job run on the host's own guest agent: steps run as the current
/// user, in a temporary folder laid out like a runner's work folder.
pub struct HostJob {
    dir: tempfile::TempDir,
    /// What the job runs with (change it before [`HostJob::run`]).
    pub environment: JobEnvironment,
    /// The secrets the job sees.
    pub secrets: BTreeMap<String, String>,
    /// The `vars` context.
    pub vars: BTreeMap<String, String>,
    /// The event (`push` with a ref by default).
    pub event: Event,
}

/// How a [`HostJob`] ended: its report and its log lines' texts.
pub struct HostJobRun {
    /// The job's report.
    pub report: JobReport,
    /// Every line of its log, in order.
    pub log: Vec<String>,
}

impl HostJobRun {
    /// The log as one text.
    pub fn text(&self) -> String {
        self.log.join("\n")
    }

    /// The index of the first log line containing `needle`.
    pub fn line_of(&self, needle: &str) -> Option<usize> {
        self.log.iter().position(|line| line.contains(needle))
    }
}

impl HostJob {
    /// A job fetching actions from `actions_url` into a cache of its own.
    pub fn new(actions_url: &str) -> Self {
        let dir = tempfile::tempdir().expect("a temporary folder");
        let path = |name: &str| dir.path().join(name).display().to_string();
        let layout = GuestLayout {
            home: path("home"),
            workspace: path("work/demo/demo"),
            temp: path("work/_temp"),
            tool_cache: path("tools"),
        };
        let environment = JobEnvironment {
            run_id: "1".into(),
            secrets: BTreeMap::new(),
            default_env: BTreeMap::new(),
            layout,
            checkout: None,
            artifacts: None,
            cache: None,
            actions: ActionSource {
                base_url: actions_url.to_owned(),
                cache_dir: dir.path().join("action-cache"),
                offline: false,
            },
        };
        Self {
            dir,
            environment,
            secrets: BTreeMap::new(),
            vars: BTreeMap::new(),
            event: Event::new("push", serde_json::json!({ "ref": "refs/heads/main" })),
        }
    }

    /// The job checks out (and takes `$/` actions from) the folder `repo`.
    pub fn with_checkout(mut self, repo: &Path) -> Self {
        self.environment.checkout = Some(CheckoutSource::WorkingTree(repo.to_path_buf()));
        self
    }

    /// The action cache folder.
    pub fn action_cache(&self) -> PathBuf {
        self.environment.actions.cache_dir.clone()
    }

    /// The contexts a run gives its jobs (`github`, `vars`, `inputs`).
    fn contexts(&self) -> (Object, Object) {
        let mut contexts =
            run_context::event_contexts(&self.event, "refs/heads/main", &Object::new());
        let layout = &self.environment.layout;
        let github =
            run_context::github_context(&contexts, "octo/demo", &"1".repeat(40), "1", "ci", layout);
        contexts.insert("github", Value::Object(github.clone()));
        let vars = self
            .vars
            .iter()
            .map(|(k, v)| (k.clone(), Value::from(v.as_str())))
            .collect();
        contexts.insert("vars", Value::Object(vars));
        (contexts, github)
    }

    /// Runs the job `job` of `workflow` (YAML) to its end.
    pub async fn run(&mut self, workflow: &str, job: &str) -> HostJobRun {
        let workflow = firerunner_workflow::load::parse_workflow("ci.yml", workflow)
            .unwrap_or_else(|d| panic!("{d}"));
        let (contexts, github) = self.contexts();
        let mut environment = self.environment.clone();
        let mut defaults = run_context::default_env(&github, &environment.layout);
        defaults.extend(environment.default_env.clone());
        environment.default_env = defaults;
        let (mut agent, host) = host_agent();
        let sandbox = Sandbox::new(Client::connect(host).await.expect("the agent answers"));
        let hub = LogHub::new(&self.dir.path().join("logs"));
        let mut writer = hub.job_writer("1", job).expect("a log");
        let to_run = JobToRun {
            workflow: &workflow,
            secrets: &self.secrets,
        };
        let cancel = CancellationToken::new();
        let report = run_job(
            &sandbox,
            &environment,
            to_run,
            job,
            job,
            &contexts,
            &mut writer,
            &cancel,
        )
        .await;
        drop(sandbox);
        drop(writer);
        let _ = agent.kill();
        let _ = agent.wait();
        let log = hub
            .read("1", job)
            .unwrap_or_default()
            .into_iter()
            .map(|l| l.text)
            .collect();
        HostJobRun { report, log }
    }
}
