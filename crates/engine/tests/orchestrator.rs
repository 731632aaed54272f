//! The orchestrator against a scripted executor: what starts when, and
//! which results and outputs flow where.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use firerunner_engine::actions::remote::ActionSource;
use firerunner_engine::orchestrator::{run_workflow, RunLimits, RunReport, RunScope};
use firerunner_engine::reusable::{resolve_callees, RemoteWorkflows};
use firerunner_engine::testing::{result, script, span, Script, Scripted};
use firerunner_workflow::load::parse_workflow;
use firerunner_workflow::plan::{plan_workflow, PlanContext};
use firerunner_workflow::Conclusion;
use firerunner_workflow::{Object, Value, WorkflowRef};
use tokio_util::sync::CancellationToken;

async fn run_with(
    yaml: &str,
    contexts: Object,
    executor: Arc<Scripted>,
    limits: RunLimits,
    cancel: CancellationToken,
) -> RunReport {
    let workflow = parse_workflow("w.yml", yaml).unwrap_or_else(|d| panic!("{d}"));
    let plan = plan_workflow(&workflow, &PlanContext::default()).unwrap();
    run_workflow(
        Arc::new(workflow),
        &plan,
        &contexts,
        executor,
        limits,
        RunScope::default(),
        cancel,
    )
    .await
}

async fn run(
    yaml: &str,
    scripts: Vec<(&str, Script)>,
    limits: RunLimits,
) -> (RunReport, Arc<Scripted>) {
    let executor = Arc::new(Scripted {
        scripts: scripts
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect(),
        ..Scripted::default()
    });
    let report = run_with(
        yaml,
        Object::new(),
        executor.clone(),
        limits,
        CancellationToken::new(),
    )
    .await;
    (report, executor)
}

const STEP: &str = "    runs-on: ubuntu-latest\n    steps:\n      - run: true\n";

fn jobs(spec: &[(&str, &str)]) -> String {
    let mut yaml = String::from("on: push\njobs:\n");
    for (id, extra) in spec {
        yaml.push_str(&format!("  {id}:\n{extra}{STEP}"));
    }
    yaml
}

#[tokio::test]
async fn a_job_starts_when_its_own_needs_finish_not_in_stages() {
    let yaml = jobs(&[
        ("slow", ""),
        ("quick", ""),
        ("after_quick", "    needs: quick\n"),
    ]);
    let (report, executor) = run(
        &yaml,
        vec![
            ("slow", script(400, Conclusion::Success)),
            ("quick", script(20, Conclusion::Success)),
        ],
        RunLimits::default(),
    )
    .await;
    assert_eq!(report.conclusion, Conclusion::Success);
    let (_, slow_end) = span(&executor, "slow");
    let (after_start, _) = span(&executor, "after_quick");
    let (_, quick_end) = span(&executor, "quick");
    assert!(after_start >= quick_end);
    assert!(
        after_start < slow_end,
        "after_quick waited for an unrelated job"
    );
}

#[tokio::test]
async fn a_diamond_runs_its_middle_in_parallel_and_joins() {
    let yaml = jobs(&[
        ("a", ""),
        ("b", "    needs: a\n"),
        ("c", "    needs: a\n"),
        ("d", "    needs: [b, c]\n"),
    ]);
    let (report, executor) = run(
        &yaml,
        vec![
            ("b", script(200, Conclusion::Success)),
            ("c", script(200, Conclusion::Success)),
        ],
        RunLimits::default(),
    )
    .await;
    assert_eq!(report.conclusion, Conclusion::Success);
    let (b_start, b_end) = span(&executor, "b");
    let (c_start, c_end) = span(&executor, "c");
    let (d_start, _) = span(&executor, "d");
    assert!(b_start < c_end && c_start < b_end, "b and c overlap");
    assert!(d_start >= b_end && d_start >= c_end);
}

#[tokio::test]
async fn failures_skip_dependents_unless_their_if_asks_for_it() {
    let yaml = jobs(&[
        ("build", ""),
        ("test", "    needs: build\n"),
        ("deploy", "    needs: test\n"),
        ("report_failure", "    needs: test\n    if: failure()\n"),
        ("cleanup", "    needs: deploy\n    if: always()\n"),
        ("on_success", "    needs: build\n    if: success()\n"),
    ]);
    let (report, executor) = run(
        &yaml,
        vec![("build", script(10, Conclusion::Failure))],
        RunLimits::default(),
    )
    .await;
    assert_eq!(report.conclusion, Conclusion::Failure);
    assert_eq!(result(&report, "test"), Conclusion::Skipped);
    assert_eq!(result(&report, "deploy"), Conclusion::Skipped);
    assert_eq!(result(&report, "on_success"), Conclusion::Skipped);
    assert_eq!(
        result(&report, "report_failure"),
        Conclusion::Success,
        "failure() sees an ancestor's failure"
    );
    assert_eq!(result(&report, "cleanup"), Conclusion::Success);
    let seen = executor.seen.lock().unwrap();
    let needs = seen["cleanup"].get("needs").unwrap();
    let expected: Value =
        serde_json::json!({"deploy": {"result": "skipped", "outputs": {}}}).into();
    assert!(needs.same_value(&expected), "{needs:?}");
}

const MATRIX_123: &str = "on: push\njobs:\n  test:\n    strategy:\n      matrix:\n        n: [1, 2, 3]\n    runs-on: ubuntu-latest\n    steps:\n      - run: true\n";

#[tokio::test]
async fn fail_fast_cancels_the_other_instances_of_a_matrix() {
    let (report, _) = run(
        MATRIX_123,
        vec![
            ("test (1)", script(20, Conclusion::Failure)),
            ("test (2)", script(2000, Conclusion::Success)),
            ("test (3)", script(2000, Conclusion::Success)),
        ],
        RunLimits::default(),
    )
    .await;
    assert_eq!(result(&report, "test (1)"), Conclusion::Failure);
    assert_eq!(result(&report, "test (2)"), Conclusion::Cancelled);
    assert_eq!(result(&report, "test (3)"), Conclusion::Cancelled);
    assert_eq!(report.jobs["test"], Conclusion::Failure);
}

/// Instances take slots in matrix order even when the runtime polls their
/// tasks in another order, so a failing first leg cancels the later ones
/// before they start.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn instances_take_slots_in_matrix_order() {
    let yaml = MATRIX_123.replace("[1, 2, 3]", "[1, 2, 3, 4, 5, 6, 7, 8]");
    for _ in 0..20 {
        let (report, executor) = run(
            &yaml,
            vec![],
            RunLimits {
                max_parallel_jobs: 1,
            },
        )
        .await;
        assert_eq!(report.conclusion, Conclusion::Success);
        let order: Vec<String> = executor
            .log
            .lock()
            .unwrap()
            .iter()
            .map(|e| e.0.clone())
            .collect();
        let expected: Vec<String> = (1..=8).map(|n| format!("test ({n})")).collect();
        assert_eq!(order, expected);
    }
    let (report, executor) = run(
        MATRIX_123,
        vec![
            ("test (1)", script(20, Conclusion::Failure)),
            ("test (2)", script(2000, Conclusion::Success)),
            ("test (3)", script(2000, Conclusion::Success)),
        ],
        RunLimits {
            max_parallel_jobs: 2,
        },
    )
    .await;
    assert_eq!(result(&report, "test (1)"), Conclusion::Failure);
    assert_eq!(result(&report, "test (2)"), Conclusion::Cancelled);
    assert_eq!(result(&report, "test (3)"), Conclusion::Cancelled);
    let started: Vec<String> = executor
        .log
        .lock()
        .unwrap()
        .iter()
        .map(|e| e.0.clone())
        .collect();
    assert!(
        !started.contains(&"test (3)".to_string()),
        "test (3) never started: {started:?}"
    );
}

#[tokio::test]
async fn without_fail_fast_the_other_instances_finish() {
    let yaml = MATRIX_123.replace("      matrix:", "      fail-fast: false\n      matrix:");
    let (report, _) = run(
        &yaml,
        vec![
            ("test (1)", script(10, Conclusion::Failure)),
            ("test (2)", script(200, Conclusion::Success)),
        ],
        RunLimits::default(),
    )
    .await;
    assert_eq!(result(&report, "test (2)"), Conclusion::Success);
    assert_eq!(result(&report, "test (3)"), Conclusion::Success);
    assert_eq!(report.conclusion, Conclusion::Failure);
}

#[tokio::test]
async fn max_parallel_and_the_global_limit_bound_concurrency() {
    let mut yaml = MATRIX_123.replace("      matrix:", "      max-parallel: 1\n      matrix:");
    yaml.push_str("  other:\n    strategy:\n      matrix:\n        n: [1, 2, 3, 4]\n");
    yaml.push_str(STEP);
    let (report, executor) = run(
        &yaml,
        vec![],
        RunLimits {
            max_parallel_jobs: 2,
        },
    )
    .await;
    assert_eq!(report.conclusion, Conclusion::Success);
    let log = executor.log.lock().unwrap();
    let overlap = |filter: &dyn Fn(&str) -> bool| {
        let spans: Vec<_> = log
            .iter()
            .filter(|e| filter(&e.0))
            .map(|e| (e.1, e.2))
            .collect();
        spans
            .iter()
            .map(|(start, _)| {
                spans
                    .iter()
                    .filter(|(s, e)| s <= start && start < e)
                    .count()
            })
            .max()
            .unwrap_or(0)
    };
    assert_eq!(overlap(&|n| n.starts_with("test")), 1, "max-parallel: 1");
    assert!(overlap(&|_| true) <= 2, "at most 2 jobs at once");
    assert_eq!(log.len(), 7);
}

#[tokio::test]
async fn outputs_flow_to_needs_and_a_matrix_made_from_them() {
    let yaml = "on: push\njobs:\n  setup:\n    runs-on: ubuntu-latest\n    outputs:\n      list: ${{ steps.x.outputs.list }}\n    steps:\n      - id: x\n        run: true\n  use:\n    needs: setup\n    strategy:\n      matrix:\n        v: ${{ fromJSON(needs.setup.outputs.list) }}\n    runs-on: ubuntu-latest\n    steps:\n      - run: true\n";
    let (report, executor) = run(
        yaml,
        vec![(
            "setup",
            Script {
                millis: 10,
                result: Conclusion::Success,
                outputs: vec![("list", "[\"a\",\"b\"]")],
            },
        )],
        RunLimits::default(),
    )
    .await;
    assert_eq!(
        report.conclusion,
        Conclusion::Success,
        "{:?}",
        report.errors
    );
    assert_eq!(result(&report, "use (a)"), Conclusion::Success);
    assert_eq!(result(&report, "use (b)"), Conclusion::Success);
    let seen = executor.seen.lock().unwrap();
    let strategy = seen["use (b)"].get("strategy").unwrap();
    let expected: Value =
        serde_json::json!({"fail-fast": true, "job-index": 1, "job-total": 2, "max-parallel": 2})
            .into();
    assert!(strategy.same_value(&expected), "{strategy:?}");
}

#[tokio::test]
async fn a_continue_on_error_job_fails_without_failing_the_run() {
    let yaml = jobs(&[
        ("flaky", "    continue-on-error: true\n"),
        ("next", "    needs: flaky\n"),
    ]);
    let (report, _) = run(
        &yaml,
        vec![("flaky", script(10, Conclusion::Failure))],
        RunLimits::default(),
    )
    .await;
    assert_eq!(result(&report, "flaky"), Conclusion::Failure);
    assert_eq!(result(&report, "next"), Conclusion::Success);
    assert_eq!(report.conclusion, Conclusion::Success);
}

#[tokio::test]
async fn a_job_if_reads_github_and_a_bad_matrix_is_an_error_not_a_crash() {
    let yaml = "on: push\njobs:\n  only_pr:\n    if: github.event_name == 'pull_request'\n    runs-on: ubuntu-latest\n    steps:\n      - run: true\n  bad:\n    runs-on: ubuntu-latest\n    steps:\n      - run: true\n  uses_bad:\n    needs: bad\n    strategy:\n      matrix:\n        v: ${{ fromJSON(needs.bad.outputs.missing) }}\n    runs-on: ubuntu-latest\n    steps:\n      - run: true\n";
    let mut contexts = Object::new();
    contexts.insert("github", serde_json::json!({"event_name": "push"}).into());
    let report = run_with(
        yaml,
        contexts,
        Arc::new(Scripted::default()),
        RunLimits::default(),
        CancellationToken::new(),
    )
    .await;
    assert_eq!(result(&report, "only_pr"), Conclusion::Skipped);
    assert_eq!(result(&report, "uses_bad"), Conclusion::Failure);
    assert_eq!(report.errors.len(), 1, "{:?}", report.errors);
    assert!(
        report.errors[0]
            .to_string()
            .contains("jobs.uses_bad.strategy.matrix"),
        "{}",
        report.errors[0]
    );
    assert_eq!(report.conclusion, Conclusion::Failure);
}

#[tokio::test]
async fn cancelling_the_run_cancels_running_jobs_and_skips_the_rest() {
    let yaml = jobs(&[
        ("long", ""),
        ("after", "    needs: long\n"),
        ("always", "    needs: long\n    if: always()\n"),
    ]);
    let executor = Arc::new(Scripted {
        scripts: [("long".to_string(), script(5000, Conclusion::Success))]
            .into_iter()
            .collect(),
        ..Scripted::default()
    });
    let cancel = CancellationToken::new();
    let trigger = cancel.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(100)).await;
        trigger.cancel();
    });
    let started = Instant::now();
    let report = run_with(&yaml, Object::new(), executor, RunLimits::default(), cancel).await;
    // Well before the 5 s the job would take if the cancellation did not reach it.
    assert!(started.elapsed() < Duration::from_secs(4));
    assert_eq!(result(&report, "long"), Conclusion::Cancelled);
    assert_eq!(result(&report, "after"), Conclusion::Skipped);
    assert_eq!(
        result(&report, "always"),
        Conclusion::Cancelled,
        "always() jobs start, but under a cancelled run they are cancelled at once"
    );
    assert_eq!(report.conclusion, Conclusion::Cancelled);
}

#[tokio::test]
async fn a_local_reusable_workflow_runs_its_jobs_with_inputs_secrets_and_outputs() {
    let caller = "on: push\njobs:\n  call:\n    uses: ./.github/workflows/called.yml\n    with:\n      word: hi\n    secrets:\n      token: ${{ secrets.TOKEN }}\n  after:\n    needs: call\n    runs-on: ubuntu-latest\n    steps:\n      - run: true\n";
    let called = "on:\n  workflow_call:\n    inputs:\n      word:\n        type: string\n      count:\n        type: number\n        default: 2\n    secrets:\n      token:\n        required: true\n    outputs:\n      said:\n        value: ${{ jobs.inner.outputs.said }}\njobs:\n  inner:\n    runs-on: ubuntu-latest\n    outputs:\n      said: ${{ steps.x.outputs.said }}\n    steps:\n      - id: x\n        run: true\n";
    let workflow = Arc::new(parse_workflow("caller.yml", caller).unwrap_or_else(|d| panic!("{d}")));
    let callee = Arc::new(parse_workflow("called.yml", called).unwrap_or_else(|d| panic!("{d}")));
    let plan = plan_workflow(&workflow, &PlanContext::default()).unwrap();
    let executor = Arc::new(Scripted {
        scripts: [(
            "call / inner".to_string(),
            Script {
                millis: 10,
                result: Conclusion::Success,
                outputs: vec![("said", "hello")],
            },
        )]
        .into_iter()
        .collect(),
        ..Scripted::default()
    });
    let scope = RunScope::new(
        [(
            WorkflowRef::parse("./.github/workflows/called.yml").unwrap(),
            Ok(callee),
        )]
        .into_iter()
        .collect(),
        Some(Arc::new(
            [("TOKEN".to_string(), "t0k".to_string())]
                .into_iter()
                .collect(),
        )),
    );
    let report = run_workflow(
        workflow,
        &plan,
        &Object::new(),
        executor.clone(),
        RunLimits::default(),
        scope,
        CancellationToken::new(),
    )
    .await;
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    assert_eq!(result(&report, "call / inner"), Conclusion::Success);
    assert_eq!(report.jobs["call"], Conclusion::Success);
    assert_eq!(
        report.job_outputs["call"].get("said"),
        Some(&Value::from("hello"))
    );
    let seen = executor.seen.lock().unwrap();
    let inputs = seen["call / inner"].get("inputs").unwrap();
    let expected: Value = serde_json::json!({"word": "hi", "count": 2}).into();
    assert!(inputs.same_value(&expected), "{inputs:?}");
    let needs = seen["after"].get("needs").unwrap();
    let expected: Value =
        serde_json::json!({"call": {"result": "success", "outputs": {"said": "hello"}}}).into();
    assert!(needs.same_value(&expected), "{needs:?}");
}

/// A called workflow with one input, one output and one job, `inner`.
const CALLED: &str = "on:\n  workflow_call:\n    inputs:\n      word:\n        type: string\n        required: true\n    outputs:\n      said:\n        value: ${{ jobs.inner.outputs.said }}\njobs:\n  inner:\n    runs-on: ubuntu-latest\n    outputs:\n      said: ${{ inputs.word }}\n    steps:\n      - run: true\n";

/// Runs `caller` with the reusable workflows it calls resolved from
/// `local` (the repository's files) and `remote` (git repositories).
async fn run_calling(
    caller: &str,
    local: HashMap<String, String>,
    remote: &RemoteWorkflows,
) -> (RunReport, Arc<Scripted>) {
    let workflow = Arc::new(parse_workflow("caller.yml", caller).unwrap_or_else(|d| panic!("{d}")));
    let plan = plan_workflow(&workflow, &PlanContext::default()).unwrap();
    let callees = resolve_callees(&workflow, &local, remote);
    let executor = Arc::new(Scripted::default());
    let report = run_workflow(
        workflow,
        &plan,
        &Object::new(),
        executor.clone(),
        RunLimits::default(),
        RunScope::new(callees, None),
        CancellationToken::new(),
    )
    .await;
    (report, executor)
}

/// The `inputs` the instance `name` ran with.
fn inputs_seen(executor: &Scripted, name: &str) -> Value {
    executor.seen.lock().unwrap()[name]
        .get("inputs")
        .cloned()
        .unwrap()
}

fn no_remotes(cache: &std::path::Path) -> RemoteWorkflows {
    RemoteWorkflows {
        source: ActionSource {
            base_url: "file:///nonexistent".into(),
            cache_dir: cache.to_path_buf(),
            offline: false,
        },
    }
}

#[tokio::test]
async fn a_self_repository_reusable_workflow_runs_like_a_local_one() {
    let caller = "on: push\njobs:\n  call:\n    uses: $/.github/workflows/called.yml\n    with:\n      word: hi\n";
    let local = HashMap::from([(
        "./.github/workflows/called.yml".to_string(),
        CALLED.to_string(),
    )]);
    let cache = tempfile::tempdir().unwrap();
    let (report, executor) = run_calling(caller, local, &no_remotes(cache.path())).await;
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    assert_eq!(result(&report, "call / inner"), Conclusion::Success);
    assert_eq!(report.jobs["call"], Conclusion::Success);
    let expected: Value = serde_json::json!({"word": "hi"}).into();
    let inputs = inputs_seen(&executor, "call / inner");
    assert!(inputs.same_value(&expected), "{inputs:?}");
}

fn git(dir: &std::path::Path, args: &[&str]) {
    let output = std::process::Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(["-c", "user.name=t", "-c", "user.email=t@example.com"])
        .args(args)
        .output()
        .unwrap();
    assert!(output.status.success(), "git {args:?}: {output:?}");
}

/// A bare repository `octo/shared` under `remotes`, tagged `v1`, holding
/// `files` (path, text).
fn bare_repository(remotes: &std::path::Path, files: &[(&str, &str)]) {
    let work = tempfile::tempdir().unwrap();
    for (path, text) in files {
        let file = work.path().join(path);
        std::fs::create_dir_all(file.parent().unwrap()).unwrap();
        std::fs::write(file, text).unwrap();
    }
    git(work.path(), &["init", "-q", "-b", "main"]);
    git(work.path(), &["add", "."]);
    git(work.path(), &["commit", "-q", "-m", "shared workflows"]);
    git(work.path(), &["tag", "v1"]);
    let bare = remotes.join("octo/shared");
    std::fs::create_dir_all(remotes.join("octo")).unwrap();
    let status = std::process::Command::new("git")
        .args(["clone", "-q", "--bare"])
        .arg(work.path())
        .arg(&bare)
        .status()
        .unwrap();
    assert!(status.success());
}

#[tokio::test]
async fn a_remote_reusable_workflow_is_fetched_checked_and_run_with_its_own_local_calls() {
    let remotes = tempfile::tempdir().unwrap();
    let outer = "on:\n  workflow_call:\n    inputs:\n      word:\n        type: string\n        required: true\njobs:\n  first:\n    runs-on: ubuntu-latest\n    steps:\n      - run: true\n  nested:\n    uses: ./.github/workflows/called.yml\n    with:\n      word: ${{ inputs.word }}\n";
    bare_repository(
        remotes.path(),
        &[
            (".github/workflows/outer.yml", outer),
            (".github/workflows/called.yml", CALLED),
        ],
    );
    let cache = tempfile::tempdir().unwrap();
    let remote = RemoteWorkflows {
        source: ActionSource {
            base_url: format!("file://{}", remotes.path().display()),
            cache_dir: cache.path().to_path_buf(),
            offline: false,
        },
    };
    let caller = "on: push\njobs:\n  call:\n    uses: octo/shared/.github/workflows/outer.yml@v1\n    with:\n      word: hi\n";
    let (report, executor) = run_calling(caller, HashMap::new(), &remote).await;
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    assert_eq!(result(&report, "call / first"), Conclusion::Success);
    assert_eq!(
        result(&report, "call / nested / inner"),
        Conclusion::Success
    );
    assert_eq!(report.conclusion, Conclusion::Success);
    let expected: Value = serde_json::json!({"word": "hi"}).into();
    let inputs = inputs_seen(&executor, "call / nested / inner");
    assert!(inputs.same_value(&expected), "{inputs:?}");

    // Checked against the caller: a required input left out is the job's failure.
    let missing_input =
        "on: push\njobs:\n  call:\n    uses: octo/shared/.github/workflows/outer.yml@v1\n";
    let (report, _) = run_calling(missing_input, HashMap::new(), &remote).await;
    assert_eq!(report.jobs["call"], Conclusion::Failure);
    assert!(
        report.errors.iter().any(|e| e.to_string().contains("word")),
        "{:?}",
        report.errors
    );
}

#[tokio::test]
async fn a_remote_reusable_workflow_that_cannot_be_fetched_fails_its_job_clearly() {
    let caller = "on: push\njobs:\n  call:\n    uses: octo/absent/.github/workflows/x.yml@v1\n  other:\n    runs-on: ubuntu-latest\n    steps:\n      - run: true\n";
    let cache = tempfile::tempdir().unwrap();
    let (report, _) = run_calling(caller, HashMap::new(), &no_remotes(cache.path())).await;
    assert_eq!(report.jobs["call"], Conclusion::Failure);
    assert_eq!(report.jobs["other"], Conclusion::Success);
    assert_eq!(report.conclusion, Conclusion::Failure);
    assert!(
        report.errors.iter().any(|e| e.to_string().starts_with(
            "call: octo/absent/.github/workflows/x.yml@v1: cannot fetch the reusable workflow"
        )),
        "{:?}",
        report.errors
    );
}

/// A gate that lets `production` in with its secret and variable, refuses
/// `forbidden`, and holds `gated` until it is opened.
struct TestGate {
    open: tokio::sync::Notify,
    asked: Mutex<Vec<(String, String)>>,
}

impl firerunner_engine::environment::EnvironmentGate for TestGate {
    fn enter<'a>(
        &'a self,
        request: firerunner_engine::environment::EnvironmentRequest,
        cancel: &'a CancellationToken,
    ) -> firerunner_engine::environment::BoxFuture<
        'a,
        Result<
            firerunner_engine::environment::EnvironmentGrant,
            firerunner_engine::environment::EnvironmentError,
        >,
    > {
        use firerunner_engine::environment::{EnvironmentError, EnvironmentGrant};
        Box::pin(async move {
            let environment = request.environment.clone();
            self.asked
                .lock()
                .unwrap()
                .push((request.job_name.clone(), environment.clone()));
            match environment.as_str() {
                "forbidden" => Err(EnvironmentError::Refused(
                    "branch x may not deploy to forbidden".into(),
                )),
                "gated" => tokio::select! {
                    _ = self.open.notified() => Ok(EnvironmentGrant {
                        notes: vec!["approved by alice".into()],
                        ..EnvironmentGrant::default()
                    }),
                    _ = cancel.cancelled() => Err(EnvironmentError::Cancelled(environment)),
                },
                _ => Ok(EnvironmentGrant {
                    secrets: BTreeMap::from([(
                        "token".to_string(),
                        format!("{environment}-token"),
                    )]),
                    vars: BTreeMap::from([("REGION".to_string(), format!("{environment}-region"))]),
                    notes: Vec::new(),
                }),
            }
        })
    }
}

#[tokio::test]
async fn a_gate_decides_each_instances_environment_before_it_takes_a_slot() {
    let yaml = "on: push
jobs:
  build:
    runs-on: x
    steps: [{run: make}]
  deploy:
    runs-on: x
    strategy:
      fail-fast: false
      matrix:
        target: [production, forbidden]
    environment: ${{ matrix.target }}
    steps: [{run: make}]
  wait:
    runs-on: x
    environment: {name: gated, url: 'https://x'}
    steps: [{run: make}]
  after:
    needs: build
    runs-on: x
    steps: [{run: make}]
";
    let workflow = Arc::new(parse_workflow("w.yml", yaml).unwrap());
    let plan = plan_workflow(&workflow, &PlanContext::default()).unwrap();
    let executor = Arc::new(Scripted::default());
    let gate = Arc::new(TestGate {
        open: tokio::sync::Notify::new(),
        asked: Mutex::default(),
    });
    let base = BTreeMap::from([
        ("TOKEN".to_string(), "repo-token".to_string()),
        ("OTHER".into(), "o".into()),
    ]);
    let scope =
        RunScope::new(Default::default(), Some(Arc::new(base))).with_gate(Some(gate.clone()));
    let limits = RunLimits {
        max_parallel_jobs: 1,
    };
    let contexts = Object::new();
    let running = run_workflow(
        workflow,
        &plan,
        &contexts,
        executor.clone(),
        limits,
        scope,
        CancellationToken::new(),
    );
    let opener = async {
        // Every other job runs in the one slot while `wait` waits.
        while !executor.secrets.lock().unwrap().contains_key("after") {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        gate.open.notify_one();
    };
    let both = async { tokio::join!(running, opener) };
    let (report, ()) = tokio::time::timeout(Duration::from_secs(30), both)
        .await
        .expect("a job waiting at its gate must not hold the run's only slot");
    let secrets = executor.secrets.lock().unwrap().clone();
    let names: Vec<&String> = report.instances.iter().map(|i| &i.name).collect();
    let production = secrets.get("deploy (production)").unwrap_or_else(|| {
        panic!(
            "ran: {secrets:?}, instances: {names:?}, errors: {:?}",
            report.errors
        )
    });
    assert_eq!(
        production["token"], "production-token",
        "the environment's secret wins"
    );
    assert!(
        !production.contains_key("TOKEN"),
        "whatever the name's case"
    );
    assert_eq!(production["OTHER"], "o");
    assert_eq!(secrets["build"]["TOKEN"], "repo-token");
    let seen = executor.seen.lock().unwrap()["deploy (production)"].clone();
    let Some(Value::Object(vars)) = seen.get("vars") else {
        panic!("no vars context: {seen:?}");
    };
    assert_eq!(vars.get("REGION"), Some(&Value::from("production-region")));
    assert!(
        !secrets.contains_key("deploy (forbidden)"),
        "a refused instance never runs"
    );
    assert_eq!(result(&report, "deploy (forbidden)"), Conclusion::Failure);
    assert!(
        report
            .errors
            .iter()
            .any(|e| e.to_string() == "deploy (forbidden): branch x may not deploy to forbidden"),
        "{:?}",
        report.errors
    );
    assert_eq!(result(&report, "wait"), Conclusion::Success);
    assert_eq!(
        executor.notes.lock().unwrap()["wait"],
        ["approved by alice"]
    );
    assert_eq!(report.conclusion, Conclusion::Failure);
}
