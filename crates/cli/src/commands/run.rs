//! `firerunner run`: run a local checkout's workflows in microVMs, like act.

use std::collections::{BTreeMap, HashSet};
use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use firerunner_engine::checkout::CheckoutSource;
use firerunner_engine::logs::{LogHub, LogLine, LogStream};
use firerunner_engine::orchestrator::{RunLimits, RunReport};
use firerunner_engine::run::{Engine, RunEvent, WorkflowRun};
use firerunner_engine::stores::artifacts::ArtifactStore;
use firerunner_engine::stores::cache::{CacheLimits, CacheStore};
use firerunner_engine::{dotenv, run_context};
use firerunner_github::local_event::merge_payload;
use firerunner_vm::image;
use firerunner_vm::pool::PoolConfig;
use firerunner_vm::session::{SessionConfig, SessionManager};
use firerunner_vm::{VmBackend, VmSpec};
use firerunner_workflow::model::ParsedWorkflow;
use firerunner_workflow::plan::{plan_workflow, MatrixState, WorkflowPlan};
use firerunner_workflow::trigger::{decide, Event, TriggerDecision};
use firerunner_workflow::Conclusion;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

use super::hypervisor::{self, AccelChoice, Backend};
use super::learn::{LearnedJob, Recorder, StepHints};
use super::plan::{current_ref, parse_key_value, plan_context};
use crate::local_event::{git_output, local_payload, repository_name, LocalEvent};
use crate::workflows::{self, RepositoryFiles};

/// A workflow that runs on the event, planned.
struct Chosen {
    workflow: ParsedWorkflow,
    plan: WorkflowPlan,
    /// The workflow files of its repository (for the workflows it calls).
    files: RepositoryFiles,
}

/// Arguments of `firerunner run` (named like act's).
#[derive(clap::Args)]
pub struct Args {
    /// The event to run (push, pull_request, workflow_dispatch, ...).
    #[arg(default_value = "push")]
    event: String,
    /// Workflow files or folders.
    #[arg(short = 'W', long = "workflows", default_value = workflows::DEFAULT_DIR)]
    workflows: Vec<PathBuf>,
    /// Run this job (and the jobs it needs).
    #[arg(short = 'j', long)]
    job: Option<String>,
    /// The event payload as a JSON file, merged over the one made from git.
    #[arg(short = 'e', long = "eventpath")]
    event_path: Option<PathBuf>,
    /// A pull request's base branch (default: the repository's default branch).
    #[arg(long)]
    base: Option<String>,
    /// A pull request's number.
    #[arg(long, default_value_t = 1)]
    pr_number: u64,
    /// A secret as KEY=VALUE, or KEY to take it from the environment (repeatable).
    #[arg(short = 's', long = "secret")]
    secrets: Vec<String>,
    /// Secrets in dotenv format (used when it exists).
    #[arg(long, default_value = ".secrets")]
    secret_file: PathBuf,
    /// A variable (`vars` context) as KEY=VALUE (repeatable).
    #[arg(long = "var", value_parser = parse_key_value)]
    vars: Vec<(String, String)>,
    /// Variables in dotenv format (used when it exists).
    #[arg(long, default_value = ".vars")]
    var_file: PathBuf,
    /// A workflow_dispatch input as KEY=VALUE (repeatable).
    #[arg(long = "input", value_parser = parse_key_value)]
    inputs: Vec<(String, String)>,
    /// Only run matrix combinations with this value, as KEY:VALUE (repeatable).
    #[arg(long = "matrix", value_parser = parse_matrix_filter)]
    matrix: Vec<(String, String)>,
    /// List the workflows' jobs and exit.
    #[arg(short = 'l', long)]
    list: bool,
    /// Show what would run, without running it.
    #[arg(short = 'n', long = "dryrun")]
    dry_run: bool,
    /// Guest image: `debian` (built on first use), `test` (busybox, fast) or
    /// an image directory from `firerunner image build`.
    #[arg(long, default_value = "debian")]
    image: String,
    /// Guest memory in MiB.
    #[arg(long, default_value_t = 512)]
    memory: u32,
    /// Guest vCPUs.
    #[arg(long, default_value_t = 1)]
    vcpus: u8,
    /// Most jobs running at once.
    #[arg(long, default_value_t = 2)]
    parallel: usize,
    /// VMs kept ready by restoring a snapshot of a booted guest (0: boot
    /// every VM). The snapshot is made once per image and kept in the cache.
    #[arg(long, default_value_t = 2)]
    warm: usize,
    /// Where remote actions (`owner/repo@ref`) are fetched from: GitHub, a
    /// GitHub Enterprise Server, or a mirror (`file:///srv/mirror`).
    #[arg(long, default_value = "https://github.com")]
    actions_url: String,
    /// The action cache folder (default: `actions` in firerunner's cache).
    #[arg(long)]
    actions_cache: Option<PathBuf>,
    /// Never fetch actions: use only what the action cache holds.
    #[arg(long)]
    actions_offline: bool,
    /// Hypervisor: `qemu` (microvm; TCG or KVM) or `firecracker` (needs
    /// hardware KVM; the binary from $FIRECRACKER_BIN or PATH).
    #[arg(long, value_enum, default_value_t = Backend::Qemu)]
    backend: Backend,
    /// QEMU accelerator.
    #[arg(long, value_enum, default_value_t = AccelChoice::Auto)]
    accel: AccelChoice,
    /// Do not record the steps in the learning store (see `firerunner learn`).
    #[arg(long)]
    no_learn: bool,
}

impl Args {
    /// The action cache folder.
    fn actions_cache_dir(&self) -> PathBuf {
        self.actions_cache
            .clone()
            .unwrap_or_else(|| image::default_cache_dir().join("actions"))
    }
}

fn parse_matrix_filter(s: &str) -> Result<(String, String), String> {
    s.split_once(':')
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .ok_or_else(|| format!("expected KEY:VALUE, got '{s}'"))
}

/// Runs `firerunner run`.
pub fn run(args: Args) -> Result<ExitCode> {
    // Like act, the current directory is the repository the jobs check out.
    let root = std::env::current_dir().context("the current directory")?;
    let branch = current_ref();
    let mut event = local_event(&args, &root, &branch)?;
    let git_ref = run_ref(&event, &branch);
    let Some(chosen) = choose(&args, &root, &git_ref, &mut event)? else {
        return Ok(ExitCode::FAILURE);
    };
    if let Some(job) = &args.job {
        if chosen.is_empty() {
            bail!(
                "no workflow that runs on '{}' has a job '{job}'",
                args.event
            );
        }
    }
    if args.list || args.dry_run {
        list(&chosen);
        return Ok(ExitCode::SUCCESS);
    }
    if chosen.is_empty() {
        eprintln!("no workflow runs on '{}'", args.event);
        return Ok(ExitCode::SUCCESS);
    }
    let local = LocalRun {
        secrets: load_secrets(&args)?,
        vars: load_vars(&args)?,
        args: &args,
        root: &root,
        event: &event,
        git_ref: &git_ref,
    };
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(local.run_all(chosen))
}

/// The event: its payload made from git like GitHub's, the `--eventpath`
/// file merged over it; the changed files from git (the last commit and
/// uncommitted changes) unless the file lists the pushed commits.
fn local_event(args: &Args, root: &Path, git_ref: &str) -> Result<Event> {
    let shape = LocalEvent {
        name: &args.event,
        git_ref,
        base: args.base.as_deref(),
        number: args.pr_number,
    };
    let mut payload = local_payload(root, &shape);
    let mut given_commits = false;
    if let Some(path) = &args.event_path {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        let given: serde_json::Value = serde_json::from_str(&text)
            .with_context(|| format!("{} is not valid JSON", path.display()))?;
        if !given.is_object() {
            bail!(
                "{}: the event payload must be a JSON object",
                path.display()
            );
        }
        given_commits = given.get("commits").is_some();
        merge_payload(&mut payload, given);
    }
    let event = Event::new(args.event.clone(), payload);
    Ok(if given_commits {
        event
    } else {
        event.with_changed_files(changed_files(root))
    })
}

/// `GITHUB_REF` of the run, as GitHub sets it: a pull request's merge ref,
/// a `pull_request_target`'s base branch, else the payload's `ref` (or the
/// current branch).
fn run_ref(event: &Event, branch: &str) -> String {
    let text = |pointer: &str| event.payload.pointer(pointer).and_then(|v| v.as_str());
    match event.name.as_str() {
        "pull_request" => match event.payload.get("number").and_then(|n| n.as_u64()) {
            Some(number) => format!("refs/pull/{number}/merge"),
            None => branch.to_owned(),
        },
        "pull_request_target" => text("/pull_request/base/ref")
            .map(|base| format!("refs/heads/{base}"))
            .unwrap_or_else(|| branch.to_owned()),
        _ => text("/ref").unwrap_or(branch).to_owned(),
    }
}

/// The refs whose caches a run may restore: its own, a pull request's
/// base, then the default branch (as GitHub scopes caches).
fn cache_scopes(event: &Event, git_ref: &str) -> Vec<String> {
    let branch = |pointer: &str| {
        event
            .payload
            .pointer(pointer)
            .and_then(|b| b.as_str())
            .map(|b| format!("refs/heads/{b}"))
    };
    let mut scopes = vec![git_ref.to_owned()];
    scopes.extend(branch("/pull_request/base/ref"));
    scopes.extend(branch("/repository/default_branch"));
    scopes.dedup();
    scopes
}

/// The inputs given for a `workflow_dispatch` or `workflow_call` run: the
/// payload's `inputs`, then `--input` flags over them.
fn given_inputs(args: &Args, event: &Event) -> Vec<(String, String)> {
    let mut given: Vec<(String, String)> = match event.payload.get("inputs") {
        Some(serde_json::Value::Object(inputs)) => inputs
            .iter()
            .map(|(name, value)| {
                let text = match value {
                    serde_json::Value::String(text) => text.clone(),
                    other => other.to_string(),
                };
                (name.clone(), text)
            })
            .collect(),
        _ => Vec::new(),
    };
    for (name, value) in &args.inputs {
        given.retain(|(known, _)| !known.eq_ignore_ascii_case(name));
        given.push((name.clone(), value.clone()));
    }
    given
}

/// The workflows that run on `event`, planned; `None` when one has errors
/// (every file's problems are printed first).
fn choose(
    args: &Args,
    root: &Path,
    git_ref: &str,
    event: &mut Event,
) -> Result<Option<Vec<Chosen>>> {
    let mut chosen = Vec::new();
    let mut problems = false;
    for path in workflows::collect(&args.workflows)? {
        let file = workflows::load_file(&path)?;
        for d in &file.diagnostics {
            eprintln!("{d}");
        }
        let Some(workflow) = file.workflow else {
            problems = true;
            continue;
        };
        if let Some(plan) = plan_if_triggered(args, root, git_ref, event, &workflow)? {
            let files = RepositoryFiles::of(&path);
            chosen.push(Chosen {
                workflow,
                plan,
                files,
            });
        }
    }
    Ok((!problems).then_some(chosen))
}

/// The plan of `workflow` (its jobs and matrix values as filtered), when
/// the event triggers it (or `--list` asks for every workflow).
fn plan_if_triggered(
    args: &Args,
    root: &Path,
    git_ref: &str,
    event: &mut Event,
    workflow: &ParsedWorkflow,
) -> Result<Option<WorkflowPlan>> {
    let mut decision = decide(workflow, event);
    if decision == TriggerDecision::NeedsChangedFiles {
        *event = event.clone().with_changed_files(changed_files(root));
        decision = decide(workflow, event);
    }
    if let TriggerDecision::Skip { reason } = &decision {
        if !args.list {
            eprintln!("{}: skipped: {reason}", workflow.file);
            return Ok(None);
        }
    }
    let given = given_inputs(args, event);
    let (inputs, _) = run_context::event_inputs(workflow, &event.name, &given);
    let ctx = plan_context(event, git_ref, &inputs);
    let mut plan = plan_workflow(workflow, &ctx).map_err(|e| anyhow::anyhow!("{e}"))?;
    if let Some(job) = &args.job {
        keep_job_and_needs(&mut plan, job);
    }
    filter_matrix(&mut plan, &args.matrix);
    Ok((!plan.jobs.is_empty()).then_some(plan))
}

/// `--list` and `--dryrun`: one line per job instance.
fn list(chosen: &[Chosen]) {
    for Chosen { workflow, plan, .. } in chosen {
        let title = title(workflow);
        for job in &plan.jobs {
            for name in job.instance_names() {
                let needs = if job.needs.is_empty() {
                    String::new()
                } else {
                    format!("  (needs {})", job.needs.join(", "))
                };
                println!("{title:<20} {:<16} {name}{needs}", job.id);
            }
        }
    }
}

/// A workflow's name, else its file.
fn title(workflow: &ParsedWorkflow) -> String {
    workflow
        .name
        .as_ref()
        .map_or(workflow.file.clone(), |n| n.value.clone())
}

/// The files the last commit and the uncommitted changes touch, relative to
/// `root` and only those below it (a repository kept in a sub-folder sees
/// its own changes). The first commit of a repository changes every file.
fn changed_files(root: &Path) -> Vec<String> {
    let mut files: Vec<String> = Vec::new();
    for args in [
        &[
            "diff-tree",
            "--no-commit-id",
            "--name-only",
            "-r",
            "--root",
            "--relative",
            "HEAD",
        ][..],
        &["diff", "--name-only", "--relative", "HEAD"][..],
    ] {
        if let Some(text) = git_output(root, args) {
            files.extend(text.lines().map(str::to_string));
        }
    }
    files.sort();
    files.dedup();
    files
}

/// Keeps `job` and every job it needs, directly or not.
fn keep_job_and_needs(plan: &mut WorkflowPlan, job: &str) {
    let mut keep: HashSet<String> = HashSet::new();
    let mut stack = vec![job.to_string()];
    while let Some(id) = stack.pop() {
        if let Some(planned) = plan.jobs.iter().find(|j| j.id == id) {
            if keep.insert(id) {
                stack.extend(planned.needs.iter().cloned());
            }
        }
    }
    plan.jobs.retain(|j| keep.contains(&j.id));
}

fn filter_matrix(plan: &mut WorkflowPlan, filters: &[(String, String)]) {
    if filters.is_empty() {
        return;
    }
    for job in &mut plan.jobs {
        if let MatrixState::Expanded(combos) = &mut job.matrix {
            combos.retain(|combo| {
                filters.iter().all(|(key, value)| match combo.get(key) {
                    Some(v) => firerunner_workflow::plan::matrix::display_value(v) == *value,
                    None => true,
                })
            });
        }
    }
}

fn load_secrets(args: &Args) -> Result<BTreeMap<String, String>> {
    let mut secrets = BTreeMap::new();
    if args.secret_file.is_file() {
        let text = std::fs::read_to_string(&args.secret_file)?;
        secrets.extend(dotenv::parse(
            &args.secret_file.display().to_string(),
            &text,
        )?);
    }
    for secret in &args.secrets {
        match secret.split_once('=') {
            Some((k, v)) => secrets.insert(k.to_string(), v.to_string()),
            None => {
                let value = std::env::var(secret)
                    .with_context(|| format!("secret {secret} is not set in the environment"))?;
                secrets.insert(secret.clone(), value)
            }
        };
    }
    secrets
        .entry("GITHUB_TOKEN".into())
        .or_insert_with(run_context::placeholder_token);
    Ok(secrets)
}

fn load_vars(args: &Args) -> Result<BTreeMap<String, String>> {
    let mut vars = BTreeMap::new();
    if args.var_file.is_file() {
        let text = std::fs::read_to_string(&args.var_file)?;
        vars.extend(dotenv::parse(&args.var_file.display().to_string(), &text)?);
    }
    vars.extend(args.vars.iter().cloned());
    Ok(vars)
}

async fn guest_spec(args: &Args) -> Result<VmSpec> {
    if args.image == "test" || args.image == "debian" {
        eprintln!(
            "firerunner: preparing the {} guest image (built once, then cached)",
            args.image
        );
    }
    super::image::guest_spec(&args.image, args.memory, args.vcpus).await
}

/// What every workflow of one `firerunner run` shares.
struct LocalRun<'a> {
    args: &'a Args,
    root: &'a Path,
    event: &'a Event,
    git_ref: &'a str,
    secrets: BTreeMap<String, String>,
    vars: BTreeMap<String, String>,
}

/// The engine of one `firerunner run` and the run it makes.
struct Host<B: VmBackend> {
    engine: Engine<B>,
    run_id: String,
    repository: String,
    sha: String,
    /// The run's folder (its logs).
    state: PathBuf,
}

impl LocalRun<'_> {
    async fn run_all(self, chosen: Vec<Chosen>) -> Result<ExitCode> {
        match self.args.backend {
            Backend::Qemu => {
                let backend = hypervisor::qemu(self.args.accel).await?;
                self.run_with(backend, chosen).await
            }
            Backend::Firecracker => {
                let backend = hypervisor::firecracker(None).await?;
                self.run_with(backend, chosen).await
            }
        }
    }

    async fn run_with<B: VmBackend>(&self, backend: B, chosen: Vec<Chosen>) -> Result<ExitCode> {
        let spec = guest_spec(self.args).await?;
        let host = self.open_host(backend, spec)?;
        let cancel = cancel_on_ctrl_c();
        let learning = if self.args.no_learn {
            None
        } else {
            Recorder::open(None).await
        };
        let mut live = host.engine.logs.subscribe();
        let mut all_ok = true;
        for chosen in chosen {
            let conclusion = self
                .run_workflow(&host, chosen, &learning, &mut live, &cancel)
                .await;
            all_ok &= conclusion == Conclusion::Success;
        }
        host.engine.sessions.shutdown().await;
        if let Some(learning) = learning {
            learning.close().await;
        }
        print_kept(&host)?;
        Ok(if cancel.is_cancelled() {
            ExitCode::from(130)
        } else if all_ok {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        })
    }

    /// The engine, after freeing VMs of dead runs and expired stored data.
    fn open_host<B: VmBackend>(&self, backend: B, spec: VmSpec) -> Result<Host<B>> {
        let repository = repository_name(self.root);
        let sha = git_output(self.root, &["rev-parse", "HEAD"]).unwrap_or_else(|| "0".repeat(40));
        // Numeric like GitHub's run ids: milliseconds since the epoch.
        let run_id = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis())
            .unwrap_or_default()
            .to_string();
        let state = image::default_cache_dir().join("runs").join(&run_id);
        let logs = Arc::new(LogHub::new(&state.join("logs")));
        let sessions = sessions(backend, self.args, &spec);
        let (artifacts, cache) = open_stores()?;
        let engine = Engine {
            sessions,
            spec,
            logs,
            artifacts,
            cache,
            actions_cache_dir: self.args.actions_cache_dir(),
            actions_offline: self.args.actions_offline,
        };
        Ok(Host {
            engine,
            run_id,
            repository,
            sha,
            state,
        })
    }

    /// Runs one workflow, printing its jobs' lines live, then its summary.
    async fn run_workflow<B: VmBackend>(
        &self,
        host: &Host<B>,
        chosen: Chosen,
        learning: &Option<Recorder>,
        live: &mut broadcast::Receiver<LogLine>,
        cancel: &CancellationToken,
    ) -> Conclusion {
        let title = title(&chosen.workflow);
        eprintln!(
            "firerunner: {title}: {} job(s) on '{}'",
            chosen.plan.jobs.len(),
            self.event.name
        );
        let run = self.workflow_run(host, chosen, &title);
        let (events, mut finished) = tokio::sync::mpsc::unbounded_channel();
        let report = print_live(live, host.engine.run(run, events, cancel.clone())).await;
        let mut learned: Vec<LearnedJob> = Vec::new();
        while let Ok(event) = finished.try_recv() {
            if let RunEvent::Finished(job) = event {
                learned.push((job.name, job.learned));
            }
        }
        let hints = match learning {
            Some(learning) => learning.record_jobs(&learned).await,
            None => StepHints::new(),
        };
        print_summary(&title, &report, &hints);
        report.conclusion
    }

    /// The engine's view of one workflow of this run.
    fn workflow_run<B: VmBackend>(
        &self,
        host: &Host<B>,
        chosen: Chosen,
        title: &str,
    ) -> WorkflowRun {
        let given = given_inputs(self.args, self.event);
        let (inputs, input_strings) =
            run_context::event_inputs(&chosen.workflow, &self.event.name, &given);
        let mut event = self.event.clone();
        if matches!(event.name.as_str(), "workflow_dispatch" | "workflow_call") {
            event.payload["inputs"] = serde_json::Value::Object(input_strings);
        }
        if event.name == "workflow_dispatch" {
            event.payload["workflow"] = serde_json::Value::from(chosen.workflow.file.as_str());
        }
        WorkflowRun {
            run_id: host.run_id.clone(),
            repository: host.repository.clone(),
            sha: host.sha.clone(),
            git_ref: self.git_ref.to_string(),
            workflow_name: title.to_string(),
            event,
            workflow: Arc::new(chosen.workflow),
            plan: chosen.plan,
            inputs,
            secrets: self.secrets.clone(),
            vars: self.vars.clone(),
            checkout: CheckoutSource::WorkingTree(self.root.to_path_buf()),
            cache_scopes: cache_scopes(self.event, self.git_ref),
            actions_base_url: self.args.actions_url.clone(),
            workflows: Arc::new(chosen.files),
            limits: RunLimits {
                max_parallel_jobs: self.args.parallel.max(1),
            },
            // `environment:` only names the environment here: the secrets
            // and variables come from --secret/--var and their files.
            environments: None,
        }
    }
}

/// The session manager: VMs whose owner died (a crash, a SIGKILL) are
/// freed before new ones start; with `--warm`, a pool of restored VMs.
fn sessions<B: VmBackend>(backend: B, args: &Args, spec: &VmSpec) -> SessionManager<B> {
    let runtime_root = firerunner_vm::runtime::default_root();
    let reaped = firerunner_vm::reaper::reap_orphans(&runtime_root);
    if !reaped.freed.is_empty() {
        eprintln!(
            "firerunner: freed {} VM(s) left by processes that died",
            reaped.freed.len()
        );
    }
    let config = SessionConfig {
        root: runtime_root,
        max_vms: args.parallel.max(1) + args.warm,
        max_sessions: args.parallel.max(1),
        acquire_timeout: None,
    };
    if args.warm == 0 {
        return SessionManager::new(backend, config);
    }
    let pool = PoolConfig {
        size: args.warm,
        refill: true,
        snapshot_dir: image::default_cache_dir().join("snapshots"),
    };
    SessionManager::with_pool(backend, config, spec.clone(), pool)
}

/// The artifact and cache stores; expired artifacts and idle or over-limit
/// caches go first.
fn open_stores() -> Result<(Arc<ArtifactStore>, Arc<CacheStore>)> {
    let artifacts = Arc::new(ArtifactStore::open(
        &image::default_cache_dir().join("artifacts"),
    )?);
    let cache = Arc::new(CacheStore::open(
        &image::default_cache_dir().join("actions-cache"),
        CacheLimits::default(),
    )?);
    let expired = artifacts.expire()?.len();
    let evicted = cache.evict()?.len();
    if expired + evicted > 0 {
        eprintln!(
            "firerunner: removed {expired} expired artifact(s) and {evicted} cache entr(ies)"
        );
    }
    Ok((artifacts, cache))
}

/// A token Ctrl-C cancels.
fn cancel_on_ctrl_c() -> CancellationToken {
    let cancel = CancellationToken::new();
    let on_signal = cancel.clone();
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            eprintln!("firerunner: cancelling (Ctrl-C)");
            on_signal.cancel();
        }
    });
    cancel
}

/// Awaits `run`, printing every job line as it comes, the last ones included.
async fn print_live(
    live: &mut broadcast::Receiver<LogLine>,
    run: impl Future<Output = RunReport>,
) -> RunReport {
    tokio::pin!(run);
    let report = loop {
        tokio::select! {
            report = &mut run => break report,
            line = live.recv() => match line {
                Ok(line) => print_line(&line),
                Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(broadcast::error::RecvError::Closed) => break run.await,
            },
        }
    };
    while let Ok(line) = live.try_recv() {
        print_line(&line);
    }
    report
}

fn print_line(line: &LogLine) {
    let marker = match line.stream {
        LogStream::Runner => "*",
        LogStream::Stderr => "!",
        LogStream::Stdout => "|",
    };
    println!("[{}] {marker} {}", line.job, line.text);
}

/// Where the run's logs and artifacts are kept.
fn print_kept<B: VmBackend>(host: &Host<B>) -> Result<()> {
    eprintln!("firerunner: logs in {}", host.state.join("logs").display());
    let artifacts = &host.engine.artifacts;
    for artifact in artifacts.list(&host.run_id)? {
        let (files, _) = artifacts.files(&host.run_id, &artifact.name)?;
        eprintln!(
            "firerunner: artifact '{}' ({} bytes) in {}",
            artifact.name,
            artifact.size,
            files.display()
        );
    }
    Ok(())
}

fn print_summary(title: &str, report: &RunReport, hints: &StepHints) {
    println!();
    println!("{title}: {}", report.conclusion.as_str());
    for error in &report.errors {
        println!("  error: {error}");
    }
    for instance in &report.instances {
        println!(
            "  {:<10} {:<30} {:>7.1}s",
            instance.result.as_str(),
            instance.name,
            instance.duration.as_secs_f64()
        );
        if let Some(job) = &instance.job {
            print_steps(&instance.name, job, hints);
        }
    }
}

fn print_steps(name: &str, job: &firerunner_engine::job::JobReport, hints: &StepHints) {
    for (index, step) in job.steps.iter().enumerate() {
        let mark = match step.conclusion {
            Conclusion::Success if step.outcome == Conclusion::Failure => {
                "✓ (failed, continue-on-error)"
            }
            Conclusion::Success => "✓",
            Conclusion::Failure => "✗",
            Conclusion::Cancelled => "cancelled",
            Conclusion::Skipped => "skipped",
        };
        println!(
            "      {mark} {} ({:.1}s)",
            step.name,
            step.duration.as_secs_f64()
        );
        let key = (name.to_string(), index);
        for hint in hints.get(&key).into_iter().flatten() {
            println!("          {hint}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    fn git(dir: &Path, args: &[&str]) {
        let status = Command::new("git")
            .arg("-C")
            .arg(dir)
            .args(["-c", "user.name=t", "-c", "user.email=t@example.com"])
            .args(args)
            .status()
            .unwrap();
        assert!(status.success(), "git {args:?}");
    }

    #[derive(clap::Parser)]
    struct Cli {
        #[command(flatten)]
        args: Args,
    }

    fn args(line: &[&str]) -> Args {
        use clap::Parser;
        Cli::parse_from(std::iter::once("run").chain(line.iter().copied())).args
    }

    #[test]
    fn payload_inputs_feed_the_inputs_and_flags_win() {
        let args = args(&["workflow_dispatch", "--input", "Level=debug"]);
        let payload =
            serde_json::json!({ "inputs": { "level": "info", "dry": true, "name": "x" } });
        let event = Event::new("workflow_dispatch", payload);
        let mut given = given_inputs(&args, &event);
        given.sort();
        let expected = [("Level", "debug"), ("dry", "true"), ("name", "x")]
            .map(|(k, v)| (k.to_string(), v.to_string()));
        assert_eq!(given, expected);
    }

    #[test]
    fn the_run_ref_is_github_s_for_each_event() {
        let pr = Event::new(
            "pull_request",
            serde_json::json!({ "number": 5, "pull_request": { "base": { "ref": "main" } } }),
        );
        assert_eq!(run_ref(&pr, "refs/heads/feature"), "refs/pull/5/merge");
        let target = Event::new("pull_request_target", pr.payload.clone());
        assert_eq!(run_ref(&target, "refs/heads/feature"), "refs/heads/main");
        let push = Event::new("push", serde_json::json!({ "ref": "refs/tags/v1" }));
        assert_eq!(run_ref(&push, "refs/heads/main"), "refs/tags/v1");
        let payload = serde_json::json!({ "pull_request": { "base": { "ref": "main" } }, "repository": { "default_branch": "trunk" } });
        let scopes = cache_scopes(&Event::new("pull_request", payload), "refs/pull/5/merge");
        assert_eq!(
            scopes,
            ["refs/pull/5/merge", "refs/heads/main", "refs/heads/trunk"]
        );
    }

    #[test]
    fn changed_files_are_the_last_commits_and_the_uncommitted_ones_below_the_folder() {
        let repo = tempfile::tempdir().unwrap();
        let app = repo.path().join("app");
        std::fs::create_dir_all(app.join("src")).unwrap();
        std::fs::write(app.join("src/main.rs"), "fn main() {}\n").unwrap();
        std::fs::write(app.join("README.md"), "app\n").unwrap();
        std::fs::write(repo.path().join("NOTES.md"), "outside\n").unwrap();
        git(repo.path(), &["init", "-q", "-b", "main"]);
        git(repo.path(), &["add", "."]);
        git(repo.path(), &["commit", "-q", "-m", "first"]);
        assert_eq!(
            changed_files(&app),
            vec!["README.md".to_string(), "src/main.rs".to_string()],
            "the first commit changes every file"
        );

        std::fs::write(repo.path().join("NOTES.md"), "changed outside\n").unwrap();
        git(repo.path(), &["commit", "-q", "-am", "outside only"]);
        assert!(changed_files(&app).is_empty());

        std::fs::write(app.join("README.md"), "edited, not committed\n").unwrap();
        assert_eq!(changed_files(&app), vec!["README.md".to_string()]);
        assert_eq!(
            changed_files(repo.path()),
            vec!["NOTES.md".to_string(), "app/README.md".to_string()]
        );
    }
}
