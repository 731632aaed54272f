//! The engine's workflow suite: every case under `testdata/workflows/`
//! (a tiny repository plus `expect.json`, see its README) runs in real
//! QEMU/TCG guests and is checked against what a correct runner gives.
//! Prints `workflow suite: N passed, M failed` and fails if any case fails.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use firerunner_engine::actions::native::CacheScope;
use firerunner_engine::actions::remote::ActionSource;
use firerunner_engine::checkout::CheckoutSource;
use firerunner_engine::job::{GuestLayout, JobEnvironment};
use firerunner_engine::logs::LogHub;
use firerunner_engine::orchestrator::{run_workflow, RunLimits, RunScope};
use firerunner_engine::run_context;
use firerunner_engine::stores::artifacts::ArtifactStore;
use firerunner_engine::stores::cache::{CacheLimits, CacheStore};
use firerunner_engine::vm_executor::VmJobExecutor;
use firerunner_vm::qemu::QemuBackend;
use firerunner_vm::session::SessionManager;
use firerunner_vm::testing::{self, git_repo};
use firerunner_workflow::load::parse_workflow;
use firerunner_workflow::model::{JobBody, ParsedWorkflow};
use firerunner_workflow::plan::{plan_workflow, PlanContext};
use firerunner_workflow::trigger::{decide, Event, TriggerDecision};
use firerunner_workflow::{Object, Value};
use serde::Deserialize;
use tokio_util::sync::CancellationToken;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Expect {
    event: String,
    #[serde(rename = "ref", default = "main_ref")]
    git_ref: String,
    #[serde(default)]
    payload: Option<serde_json::Value>,
    #[serde(default)]
    inputs: BTreeMap<String, serde_json::Value>,
    #[serde(default)]
    secrets: BTreeMap<String, String>,
    #[serde(default)]
    vars: BTreeMap<String, String>,
    result: String,
    #[serde(default)]
    jobs: BTreeMap<String, String>,
    #[serde(default)]
    log_contains: Vec<String>,
    #[serde(default)]
    log_excludes: Vec<String>,
    #[serde(default)]
    summary_contains: Vec<String>,
    #[serde(default)]
    summary_excludes: Vec<String>,
    /// Host folders made empty before the run that must still be empty after it (hostile
    /// cases point links at them).
    #[serde(default)]
    host_dirs_stay_empty: Vec<String>,
    #[serde(default)]
    run_name: Option<String>,
    #[serde(default)]
    needs: Vec<String>,
}

fn main_ref() -> String {
    "refs/heads/main".into()
}

fn suite_dir() -> PathBuf {
    std::env::var_os("FIRERUNNER_SUITE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../testdata/workflows")
        })
}

fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_tree(&entry.path(), &target);
        } else if entry.file_name() != "expect.json" {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

/// Runs one case; returns what went wrong, if anything.
async fn run_case(
    case: &Path,
    image_spec: &firerunner_vm::VmSpec,
    sessions: &SessionManager<QemuBackend>,
) -> Result<(), String> {
    let expect: Expect = serde_json::from_str(
        &std::fs::read_to_string(case.join("expect.json"))
            .map_err(|e| format!("expect.json: {e}"))?,
    )
    .map_err(|e| format!("expect.json: {e}"))?;
    if let Some(need) = expect.needs.iter().find(|n| {
        ![
            "bash",
            "coreutils",
            "git",
            "curl",
            "node",
            "python",
            "python3",
            "artifact-service",
            "cache-service",
            "gcc",
            "make",
        ]
        .contains(&n.as_str())
    }) {
        return Err(format!(
            "needs '{need}', which the suite's guest does not have"
        ));
    }
    let repo = tempfile::tempdir().unwrap();
    copy_tree(case, repo.path());
    let sha = git_repo(repo.path(), "case");

    let workflows_dir = repo.path().join(".github/workflows");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&workflows_dir)
        .map_err(|e| format!("{}: {e}", workflows_dir.display()))?
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "yml" || x == "yaml"))
        .collect();
    files.sort();
    let mut parsed: Vec<(String, Arc<ParsedWorkflow>)> = Vec::new();
    for file in &files {
        let name = file.file_name().unwrap().to_string_lossy().into_owned();
        let text = std::fs::read_to_string(file).unwrap();
        let workflow = parse_workflow(&name, &text).map_err(|d| format!("{d}"))?;
        parsed.push((name, Arc::new(workflow)));
    }
    let payload = expect
        .payload
        .clone()
        .unwrap_or_else(|| serde_json::json!({ "ref": expect.git_ref }));
    let event = Event::new(expect.event.clone(), payload);
    let triggered: Vec<&(String, Arc<ParsedWorkflow>)> = parsed
        .iter()
        .filter(|(_, w)| decide(w, &event) == TriggerDecision::Run)
        .collect();
    if expect.result == "skipped" {
        return match triggered.first() {
            None => Ok(()),
            Some((name, _)) => Err(format!("{name} ran, but the event should not trigger it")),
        };
    }
    if triggered.is_empty() {
        return Err("no workflow was triggered".into());
    }

    for dir in &expect.host_dirs_stay_empty {
        let _ = std::fs::remove_dir_all(dir);
        std::fs::create_dir_all(dir).map_err(|e| format!("{dir}: {e}"))?;
    }
    let stores = tempfile::tempdir().unwrap();
    let logs = Arc::new(LogHub::new(&stores.path().join("logs")));
    let repository = "octo/suite";
    let layout = GuestLayout::for_repository(repository);
    let mut failures = Vec::new();
    let mut seen_jobs: BTreeMap<String, String> = BTreeMap::new();
    let mut all_lines = Vec::new();
    let mut conclusions = Vec::new();
    let mut summaries = String::new();
    let mut secrets = expect.secrets.clone();
    secrets
        .entry("GITHUB_TOKEN".into())
        .or_insert_with(run_context::placeholder_token);
    for (file, workflow) in triggered {
        let given: Vec<(String, String)> = expect
            .inputs
            .iter()
            .map(|(name, value)| {
                let text = match value {
                    serde_json::Value::String(text) => text.clone(),
                    other => other.to_string(),
                };
                (name.clone(), text)
            })
            .collect();
        let (inputs, input_strings) = run_context::dispatch_inputs(workflow, &given);
        let mut event = event.clone();
        if expect.event == "workflow_dispatch" && expect.payload.is_none() {
            event.payload["inputs"] = serde_json::Value::Object(input_strings);
        }
        // GITHUB_WORKFLOW: the workflow's name, else its path in the repository.
        let title = workflow
            .name
            .as_ref()
            .map(|n| n.value.clone())
            .unwrap_or_else(|| format!(".github/workflows/{file}"));
        let git_ref = event
            .payload
            .get("ref")
            .and_then(|r| r.as_str())
            .unwrap_or(&expect.git_ref)
            .to_string();
        let mut github = Object::new();
        github.insert("event_name", Value::from(expect.event.as_str()));
        github.insert("event", Value::from(event.payload.clone()));
        github.insert("ref", Value::from(git_ref.as_str()));
        let ref_name = git_ref.rsplit('/').next().unwrap_or_default().to_string();
        github.insert("ref_name", Value::from(ref_name.as_str()));
        let mut contexts = Object::new();
        contexts.insert("github", Value::Object(github));
        let github = run_context::github_context(&contexts, repository, &sha, "1", &title, &layout);
        contexts.insert("github", Value::Object(github.clone()));
        contexts.insert("inputs", Value::Object(inputs));
        contexts.insert(
            "vars",
            Value::Object(
                expect
                    .vars
                    .iter()
                    .map(|(k, v)| (k.clone(), Value::from(v.as_str())))
                    .collect(),
            ),
        );
        if let (Some(expected), Some(template)) = (&expect.run_name, &workflow.run_name) {
            let eval = firerunner_workflow::expr::EvalContext {
                contexts: contexts.clone(),
                ..Default::default()
            };
            match firerunner_workflow::expr::parse_template(
                &template.value,
                &["github", "inputs", "vars"],
            )
            .and_then(|t| t.evaluate_string(&eval))
            {
                Ok(rendered) if &rendered == expected => {}
                Ok(rendered) => {
                    failures.push(format!("run-name {rendered:?}, expected {expected:?}"))
                }
                Err(err) => failures.push(format!("run-name: {err}")),
            }
        }
        let plan = plan_workflow(
            workflow,
            &PlanContext {
                contexts: contexts.clone(),
            },
        )
        .map_err(|e| e.to_string())?;
        let mut callees = std::collections::HashMap::new();
        for job in workflow.jobs.values() {
            if let JobBody::Call(call) = &job.body {
                let target = call.uses.value.trim_start_matches("./.github/workflows/");
                if let Some((_, callee)) = parsed.iter().find(|(name, _)| name == target) {
                    let key = firerunner_engine::reusable::callee_key(&call.reference, None);
                    callees.insert(key, Ok(callee.clone()));
                }
            }
        }
        let environment = JobEnvironment {
            run_id: format!(
                "suite-{}-{}",
                case.file_name().unwrap().to_string_lossy(),
                file.replace('.', "_")
            ),
            secrets: secrets.clone(),
            layout: layout.clone(),
            default_env: run_context::default_env(&github, &layout),
            checkout: Some(CheckoutSource::Commit {
                repository: format!("file://{}", repo.path().display()),
                commit: sha.clone(),
                depth: 1,
                credentials: None,
            }),
            artifacts: Some(Arc::new(
                ArtifactStore::open(&stores.path().join("artifacts")).unwrap(),
            )),
            cache: Some((
                Arc::new(
                    CacheStore::open(&stores.path().join("cache"), CacheLimits::default()).unwrap(),
                ),
                CacheScope {
                    repository: repository.into(),
                    scopes: vec![git_ref.clone()],
                },
            )),
            actions: ActionSource {
                base_url: "https://github.com".into(),
                cache_dir: firerunner_vm::image::default_cache_dir().join("actions"),
                offline: false,
            },
        };
        let executor = Arc::new(VmJobExecutor::new(
            sessions.clone(),
            image_spec.clone(),
            environment.clone(),
            logs.clone(),
        ));
        let scope = RunScope::new(callees, Some(Arc::new(secrets.clone())));
        let report = run_workflow(
            workflow.clone(),
            &plan,
            &contexts,
            executor.clone(),
            RunLimits {
                max_parallel_jobs: 2,
            },
            scope,
            CancellationToken::new(),
        )
        .await;
        failures.extend(report.errors.iter().map(|e| format!("run error: {e}")));
        conclusions.push(report.conclusion.as_str().to_string());
        for job in report.instances.iter().filter_map(|i| i.job.as_ref()) {
            summaries.push_str(&job.summary);
            // What reports carry (the final summary, the service) is held to log_excludes too.
            all_lines.extend(
                job.steps
                    .iter()
                    .map(|s| format!("report: {} | {}", s.name, s.command)),
            );
            all_lines.extend(
                job.outputs
                    .iter()
                    .map(|(k, v)| format!("output: {k}={v:?}")),
            );
        }
        for instance in &report.instances {
            seen_jobs.insert(instance.name.clone(), instance.result.as_str().to_string());
            all_lines.extend(
                logs.read(&environment.run_id, &instance.name)
                    .unwrap_or_default()
                    .into_iter()
                    .map(|l| l.text),
            );
        }
    }
    let conclusion = if conclusions.iter().any(|c| c == "failure") {
        "failure"
    } else if conclusions.iter().any(|c| c == "cancelled") {
        "cancelled"
    } else {
        "success"
    };
    if conclusion != expect.result {
        failures.push(format!("result {conclusion}, expected {}", expect.result));
    }
    // A job that calls a reusable workflow shows only through its callee's
    // jobs (`caller / job`), as on GitHub.
    let callers: Vec<String> = seen_jobs
        .keys()
        .filter(|name| {
            seen_jobs
                .keys()
                .any(|other| other.starts_with(&format!("{name} / ")))
        })
        .cloned()
        .collect();
    for caller in callers {
        seen_jobs.remove(&caller);
    }
    for job in seen_jobs.keys() {
        if !expect.jobs.contains_key(job) {
            failures.push(format!("job '{job}' ran but the case does not list it"));
        }
    }
    for (job, expected) in &expect.jobs {
        match seen_jobs.get(job) {
            Some(actual) if actual == expected => {}
            Some(actual) => failures.push(format!("job '{job}': {actual}, expected {expected}")),
            None => failures.push(format!(
                "job '{job}' missing (jobs: {:?})",
                seen_jobs.keys().collect::<Vec<_>>()
            )),
        }
    }
    let text = all_lines.join("\n");
    for needle in &expect.log_contains {
        if !text.contains(needle.as_str()) {
            failures.push(format!("the logs lack {needle:?}"));
        }
    }
    for needle in &expect.summary_contains {
        if !summaries.contains(needle.as_str()) {
            failures.push(format!("the step summaries lack {needle:?}"));
        }
    }
    for needle in &expect.log_excludes {
        if text.contains(needle.as_str()) {
            failures.push(format!("the logs contain {needle:?}"));
        }
    }
    for needle in &expect.summary_excludes {
        if summaries.contains(needle.as_str()) {
            failures.push(format!("the step summaries contain {needle:?}"));
        }
    }
    for dir in &expect.host_dirs_stay_empty {
        let entries: Vec<_> = std::fs::read_dir(dir)
            .map(|d| d.flatten().map(|e| e.file_name()).collect())
            .unwrap_or_default();
        if !entries.is_empty() {
            failures.push(format!("the host folder {dir} was written: {entries:?}"));
        }
        let _ = std::fs::remove_dir_all(dir);
    }
    if failures.is_empty() {
        Ok(())
    } else {
        let tail: Vec<&str> = all_lines
            .iter()
            .rev()
            .take(25)
            .map(String::as_str)
            .collect();
        Err(format!(
            "{}\n      last log lines:\n        {}",
            failures.join("\n      "),
            tail.into_iter()
                .rev()
                .collect::<Vec<_>>()
                .join("\n        ")
        ))
    }
}

/// Runs `cases`, `jobs` at a time, printing each as it ends; returns how
/// many passed and failed.
async fn run_cases(
    cases: Vec<PathBuf>,
    spec: firerunner_vm::VmSpec,
    sessions: &SessionManager<QemuBackend>,
    jobs: usize,
) -> (usize, usize) {
    let slots = Arc::new(tokio::sync::Semaphore::new(jobs));
    let mut running = tokio::task::JoinSet::new();
    for case in cases {
        let (spec, sessions, slots) = (spec.clone(), sessions.clone(), slots.clone());
        running.spawn(async move {
            let _slot = slots.acquire_owned().await.expect("never closed");
            let started = Instant::now();
            let result = run_case(&case, &spec, &sessions).await;
            let name = case.file_name().unwrap().to_string_lossy().into_owned();
            (name, result, started.elapsed())
        });
    }
    let (mut passed, mut failed) = (0, 0);
    while let Some(ended) = running.join_next().await {
        match ended.expect("a case panicked") {
            (name, Ok(()), took) => {
                passed += 1;
                eprintln!("  ok   {name} ({:.1}s)", took.as_secs_f64());
            }
            (name, Err(why), _) => {
                failed += 1;
                eprintln!("  FAIL {name}: {why}");
            }
        }
    }
    (passed, failed)
}

fn main() {
    let dir = suite_dir();
    let mut cases: Vec<PathBuf> = match std::fs::read_dir(&dir) {
        Ok(entries) => entries
            .map(|e| e.unwrap().path())
            .filter(|p| p.join("expect.json").is_file())
            .collect(),
        Err(err) => {
            eprintln!("workflow suite: cannot read {}: {err}", dir.display());
            std::process::exit(1);
        }
    };
    cases.sort();
    if let Ok(filter) = std::env::var("FIRERUNNER_SUITE_FILTER") {
        cases.retain(|c| {
            c.file_name()
                .is_some_and(|n| n.to_string_lossy().contains(&filter))
        });
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let spec = match std::env::var_os("FIRERUNNER_SUITE_IMAGE") {
        Some(dir) => {
            let mut spec = testing::test_spec();
            spec.image = firerunner_vm::image::GuestImage::load(Path::new(&dir))
                .expect("FIRERUNNER_SUITE_IMAGE is an image directory");
            spec
        }
        None => testing::suite_spec(),
    };
    // One warm pool for the whole suite, as a service keeps one; cases run
    // FIRERUNNER_SUITE_JOBS at a time (default 2) and print as they end.
    let vm_root = tempfile::tempdir().unwrap();
    let sessions = runtime.block_on(testing::sessions(vm_root.path(), &spec, 2));
    let jobs = std::env::var("FIRERUNNER_SUITE_JOBS")
        .ok()
        .and_then(|jobs| jobs.parse().ok())
        .unwrap_or(2usize)
        .max(1);
    let started = Instant::now();
    let (passed, mut failed) = runtime.block_on(run_cases(cases.clone(), spec, &sessions, jobs));
    runtime.block_on(sessions.shutdown());
    let left = firerunner_vm::VmDir::list(vm_root.path()).unwrap();
    if !left.is_empty() {
        eprintln!("  FAIL VMs left behind: {left:?}");
        failed += 1;
    }
    println!(
        "workflow suite: {passed} passed, {failed} failed ({} cases in {:.0}s)",
        cases.len(),
        started.elapsed().as_secs_f64()
    );
    if failed > 0 || cases.is_empty() {
        std::process::exit(1);
    }
}
