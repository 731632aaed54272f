//! `firerunner run`: run a local checkout's workflows in microVMs, like act.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use firerunner_engine::actions::native::CacheScope;
use firerunner_engine::artifacts::ArtifactStore;
use firerunner_engine::cache::{CacheLimits, CacheStore};
use firerunner_engine::checkout::CheckoutSource;
use firerunner_engine::job::{GuestLayout, JobEnvironment};
use firerunner_engine::logs::{LogHub, LogStream};
use firerunner_engine::orchestrator::{run_workflow, RunLimits, RunScope};
use firerunner_engine::vm_executor::VmJobExecutor;
use firerunner_engine::{dotenv, orchestrator, run_context};
use firerunner_vm::image;
use firerunner_vm::pool::PoolConfig;
use firerunner_vm::session::{SessionConfig, SessionManager};
use firerunner_vm::VmSpec;
use firerunner_workflow::model::{JobBody, ParsedWorkflow};
use firerunner_workflow::plan::{plan_workflow, MatrixState, WorkflowPlan};
use firerunner_workflow::trigger::{decide, Event, TriggerDecision};
use firerunner_workflow::Conclusion;
use firerunner_workflow::Value;
use tokio_util::sync::CancellationToken;

use super::hypervisor::{self, AccelChoice, Backend};
use super::plan::{current_ref, default_payload, dispatch_inputs, parse_key_value, plan_context};
use crate::workflows;

/// Local reusable workflows a workflow calls, by `uses:` path.
type Callees = std::collections::HashMap<String, Arc<ParsedWorkflow>>;

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
    /// The event payload as a JSON file.
    #[arg(short = 'e', long = "eventpath")]
    event_path: Option<PathBuf>,
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
    /// Where remote actions (`owner/repo@ref`) are fetched from.
    #[arg(long, default_value = "https://github.com")]
    actions_url: String,
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

fn parse_matrix_filter(s: &str) -> Result<(String, String), String> {
    s.split_once(':')
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .ok_or_else(|| format!("expected KEY:VALUE, got '{s}'"))
}

fn git_output(dir: &Path, args: &[&str]) -> Option<String> {
    Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .output()
        .ok()
        .filter(|o| o.status.success())
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
}

/// `owner/name` from the `origin` remote, else `local/<folder>`.
fn repository_name(root: &Path) -> String {
    let from_remote = git_output(root, &["remote", "get-url", "origin"]).and_then(|url| {
        let trimmed = url.trim_end_matches('/').trim_end_matches(".git");
        let mut parts = trimmed.rsplit(['/', ':']);
        let name = parts.next()?;
        let owner = parts.next()?;
        Some(format!("{owner}/{name}"))
    });
    from_remote.unwrap_or_else(|| {
        let folder = root
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "repository".into());
        format!("local/{folder}")
    })
}

/// Runs `firerunner run`.
pub fn run(args: Args) -> Result<ExitCode> {
    // Like act, the current directory is the repository the jobs check out.
    let root = std::env::current_dir().context("the current directory")?;
    let git_ref = current_ref();
    let payload = match &args.event_path {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read {}", path.display()))?;
            serde_json::from_str(&text)
                .with_context(|| format!("{} is not valid JSON", path.display()))?
        }
        None => default_payload(&args.event, &git_ref, "main"),
    };
    let mut event = Event::new(args.event.clone(), payload);

    let mut chosen: Vec<(ParsedWorkflow, WorkflowPlan, Callees)> = Vec::new();
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
        let callees: Callees = file
            .callees
            .into_iter()
            .filter_map(|(job_id, callee)| match &workflow.jobs.get(&job_id)?.body {
                JobBody::Call(call) => Some((call.uses.value.clone(), Arc::new(callee))),
                JobBody::Steps(_) => None,
            })
            .collect();
        let mut decision = decide(&workflow, &event);
        if decision == TriggerDecision::NeedsChangedFiles {
            event = event.with_changed_files(changed_files(&root));
            decision = decide(&workflow, &event);
        }
        if let TriggerDecision::Skip { reason } = &decision {
            if !args.list {
                eprintln!("{}: skipped: {reason}", workflow.file);
                continue;
            }
        }
        let inputs = dispatch_inputs(&workflow, &args.inputs);
        let ctx = plan_context(&event, &git_ref, &inputs);
        let mut plan = plan_workflow(&workflow, &ctx).map_err(|e| anyhow::anyhow!("{e}"))?;
        if let Some(job) = &args.job {
            keep_job_and_needs(&mut plan, job);
        }
        filter_matrix(&mut plan, &args.matrix);
        if !plan.jobs.is_empty() {
            chosen.push((workflow, plan, callees));
        }
    }
    if problems {
        return Ok(ExitCode::FAILURE);
    }
    if let Some(job) = &args.job {
        if chosen.is_empty() {
            bail!(
                "no workflow that runs on '{}' has a job '{job}'",
                args.event
            );
        }
    }
    if args.list || args.dry_run {
        for (workflow, plan, _) in &chosen {
            let title = workflow
                .name
                .as_ref()
                .map_or(workflow.file.clone(), |n| n.value.clone());
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
        return Ok(ExitCode::SUCCESS);
    }
    if chosen.is_empty() {
        eprintln!("no workflow runs on '{}'", args.event);
        return Ok(ExitCode::SUCCESS);
    }

    let secrets = load_secrets(&args)?;
    let vars = load_vars(&args)?;
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(run_all(
        &args, &root, &event, &git_ref, chosen, secrets, vars,
    ))
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

#[allow(clippy::too_many_arguments)]
async fn run_all(
    args: &Args,
    root: &Path,
    event: &Event,
    git_ref: &str,
    chosen: Vec<(ParsedWorkflow, WorkflowPlan, Callees)>,
    secrets: BTreeMap<String, String>,
    vars: BTreeMap<String, String>,
) -> Result<ExitCode> {
    match args.backend {
        Backend::Qemu => {
            let backend = hypervisor::qemu(args.accel).await?;
            run_with(backend, args, root, event, git_ref, chosen, secrets, vars).await
        }
        Backend::Firecracker => {
            let backend = hypervisor::firecracker(None).await?;
            run_with(backend, args, root, event, git_ref, chosen, secrets, vars).await
        }
    }
}

#[allow(clippy::too_many_arguments)]
async fn run_with<B: firerunner_vm::VmBackend>(
    backend: B,
    args: &Args,
    root: &Path,
    event: &Event,
    git_ref: &str,
    chosen: Vec<(ParsedWorkflow, WorkflowPlan, Callees)>,
    secrets: BTreeMap<String, String>,
    vars: BTreeMap<String, String>,
) -> Result<ExitCode> {
    let spec = guest_spec(args).await?;
    let repository = repository_name(root);
    let sha = git_output(root, &["rev-parse", "HEAD"]).unwrap_or_else(|| "0".repeat(40));
    // Numeric like GitHub's run ids: milliseconds since the epoch.
    let run_id = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or_default()
        .to_string();
    let state = image::default_cache_dir().join("runs").join(&run_id);
    let logs = Arc::new(LogHub::new(&state.join("logs")));
    let runtime_root = firerunner_vm::runtime::default_root();
    // VMs whose owner died (a crash, a SIGKILL) are freed before new ones start.
    let reaped = firerunner_vm::reaper::reap_orphans(&runtime_root);
    if !reaped.freed.is_empty() {
        eprintln!(
            "firerunner: freed {} VM(s) left by processes that died",
            reaped.freed.len()
        );
    }
    let config = SessionConfig {
        root: runtime_root.clone(),
        max_vms: args.parallel.max(1) + args.warm,
        max_sessions: args.parallel.max(1),
        acquire_timeout: None,
    };
    let sessions = if args.warm == 0 {
        SessionManager::new(backend, config)
    } else {
        SessionManager::with_pool(
            backend,
            config,
            spec.clone(),
            PoolConfig {
                size: args.warm,
                refill: true,
                snapshot_dir: image::default_cache_dir().join("snapshots"),
            },
        )
    };
    let artifacts = Arc::new(ArtifactStore::open(
        &image::default_cache_dir().join("artifacts"),
    )?);
    let actions_cache = Arc::new(CacheStore::open(
        &image::default_cache_dir().join("actions-cache"),
        CacheLimits::default(),
    )?);
    // Retention: expired artifacts and idle or over-limit caches go first.
    let expired = artifacts.expire()?.len();
    let evicted = actions_cache.evict()?.len();
    if expired + evicted > 0 {
        eprintln!(
            "firerunner: removed {expired} expired artifact(s) and {evicted} cache entr(ies)"
        );
    }
    let cancel = CancellationToken::new();
    {
        let cancel = cancel.clone();
        tokio::spawn(async move {
            if tokio::signal::ctrl_c().await.is_ok() {
                eprintln!("firerunner: cancelling (Ctrl-C)");
                cancel.cancel();
            }
        });
    }
    let learning = if args.no_learn {
        None
    } else {
        super::learn::Recorder::open(None).await
    };
    let mut live = logs.subscribe();
    let printer = tokio::spawn(async move {
        while let Ok(line) = live.recv().await {
            let marker = match line.stream {
                LogStream::Runner => "*",
                LogStream::Stderr => "!",
                LogStream::Stdout => "|",
            };
            println!("[{}] {marker} {}", line.job, line.text);
        }
    });
    let mut all_ok = true;
    for (workflow, plan, callees) in chosen {
        let title = workflow
            .name
            .as_ref()
            .map_or(workflow.file.clone(), |n| n.value.clone());
        let (inputs, input_strings) = run_context::dispatch_inputs(&workflow, &args.inputs);
        let mut event = event.clone();
        if event.name == "workflow_dispatch" && args.event_path.is_none() {
            event.payload["inputs"] = serde_json::Value::Object(input_strings);
        }
        let mut contexts = plan_context(&event, git_ref, &inputs).contexts;
        let layout = GuestLayout::for_repository(&repository);
        let github =
            run_context::github_context(&contexts, &repository, &sha, &run_id, &title, &layout);
        contexts.insert("github", Value::Object(github.clone()));
        contexts.insert(
            "vars",
            Value::Object(
                vars.iter()
                    .map(|(k, v)| (k.clone(), Value::from(v.as_str())))
                    .collect(),
            ),
        );
        let environment = JobEnvironment {
            run_id: run_id.clone(),
            secrets: secrets.clone(),
            default_env: run_context::default_env(&github, &layout),
            layout,
            checkout: Some(CheckoutSource::WorkingTree(root.to_path_buf())),
            artifacts: Some(artifacts.clone()),
            cache: Some((
                actions_cache.clone(),
                CacheScope {
                    repository: repository.clone(),
                    scopes: vec![git_ref.to_string()],
                },
            )),
            actions_base_url: args.actions_url.clone(),
            actions_cache_dir: image::default_cache_dir().join("actions"),
        };
        let executor = Arc::new(VmJobExecutor::new(
            sessions.clone(),
            spec.clone(),
            environment,
            logs.clone(),
        ));
        eprintln!(
            "firerunner: {title}: {} job(s) on '{}'",
            plan.jobs.len(),
            event.name
        );
        let scope = RunScope::new(callees, Some(Arc::new(secrets.clone())));
        let report = run_workflow(
            Arc::new(workflow),
            &plan,
            &contexts,
            executor.clone(),
            RunLimits {
                max_parallel_jobs: args.parallel.max(1),
            },
            scope,
            cancel.clone(),
        )
        .await;
        tokio::time::sleep(Duration::from_millis(50)).await;
        let jobs = executor.reports();
        let hints = match &learning {
            Some(learning) => {
                let run = super::learn::RunInfo {
                    run_id: &run_id,
                    repository: &repository,
                    commit_sha: &sha,
                    workflow: &title,
                };
                learning.record_jobs(&run, &jobs, &logs).await
            }
            None => super::learn::StepHints::new(),
        };
        print_summary(&title, &report, &jobs, &hints);
        if report.conclusion != Conclusion::Success {
            all_ok = false;
        }
    }
    sessions.shutdown().await;
    printer.abort();
    if let Some(learning) = learning {
        learning.close().await;
    }
    eprintln!("firerunner: logs in {}", state.join("logs").display());
    for artifact in artifacts.list(&run_id)? {
        let (files, _) = artifacts.files(&run_id, &artifact.name)?;
        eprintln!(
            "firerunner: artifact '{}' ({} bytes) in {}",
            artifact.name,
            artifact.size,
            files.display()
        );
    }
    Ok(if cancel.is_cancelled() {
        ExitCode::from(130)
    } else if all_ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn print_summary(
    title: &str,
    report: &orchestrator::RunReport,
    details: &[(String, firerunner_engine::job::JobReport)],
    hints: &super::learn::StepHints,
) {
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
        if let Some((_, job)) = details.iter().find(|(name, _)| *name == instance.name) {
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
                for hint in hints
                    .get(&(instance.name.clone(), index))
                    .into_iter()
                    .flatten()
                {
                    println!("          {hint}");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
