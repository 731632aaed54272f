//! A whole workflow in real QEMU/TCG guests (the busybox test image).

use std::collections::BTreeMap;
use std::sync::Arc;

use firerunner_engine::actions::native::CacheScope;
use firerunner_engine::actions::remote::ActionSource;
use firerunner_engine::checkout::CheckoutSource;
use firerunner_engine::job::{GuestLayout, JobEnvironment};
use firerunner_engine::logs::LogHub;
use firerunner_engine::orchestrator::{run_workflow, RunLimits, RunScope};
use firerunner_engine::stores::artifacts::ArtifactStore;
use firerunner_engine::stores::cache::{CacheLimits, CacheStore};
use firerunner_engine::vm_executor::VmJobExecutor;
use firerunner_vm::testing::{self, git, git_repo};
use firerunner_workflow::load::parse_workflow;
use firerunner_workflow::plan::{plan_workflow, PlanContext};
use firerunner_workflow::Conclusion;
use firerunner_workflow::Object;
use tokio_util::sync::CancellationToken;

const WORKFLOW: &str = r#"
on: push
env:
  GREETING: hello
jobs:
  setup:
    runs-on: ubuntu-latest
    outputs:
      list: ${{ steps.make.outputs.list }}
      token_length: ${{ steps.secret.outputs.length }}
    steps:
      - uses: actions/checkout@v4
      - name: files from the checkout
        run: test "$(cat data.txt)" = "from the repo"
      - id: greet
        uses: ./.github/actions/greet
        with:
          who: world
      - run: test "${{ steps.greet.outputs.said }}" = "hello world"
      - id: shout
        uses: octo/hello@v1
        with:
          text: quiet
      - run: test "${{ steps.shout.outputs.loud }}" = QUIET
      - id: make
        run: |
          echo 'list=["a","b"]' >> "$GITHUB_OUTPUT"
          echo "FROM_ENV_FILE=yes" >> "$GITHUB_ENV"
          echo "::set-output name=legacy::old way"
      - name: env file applies to later steps
        run: test "$FROM_ENV_FILE" = yes && test "${{ steps.make.outputs.legacy }}" = "old way"
      - name: secret masked
        id: secret
        env:
          TOKEN: ${{ secrets.TOKEN }}
        run: |
          echo "the token is $TOKEN"
          echo "length=${#TOKEN}" >> "$GITHUB_OUTPUT"
      - name: allowed to fail
        id: soft
        continue-on-error: true
        run: exit 3
      - name: outcome and conclusion
        run: test "${{ steps.soft.outcome }}/${{ steps.soft.conclusion }}" = failure/success
      - id: deps
        uses: actions/cache@v4
        with:
          path: deps
          key: deps-${{ runner.os }}-v1
      - run: test "${{ steps.deps.outputs.cache-hit }}" = false && mkdir -p deps && echo cached > deps/file
      - run: mkdir -p out/sub && echo one > out/a.txt && echo two > out/sub/b.txt && echo skip > out/skip.log
      - uses: actions/upload-artifact@v4
        with:
          name: bundle
          path: |
            out/
            !out/*.log
  use:
    needs: setup
    strategy:
      matrix:
        v: ${{ fromJSON(needs.setup.outputs.list) }}
    runs-on: ubuntu-latest
    steps:
      - run: test "${{ matrix.v }}" = a -o "${{ matrix.v }}" = b
      - run: test "$GREETING" = hello
      - run: test "${{ needs.setup.outputs.token_length }}" = 6
      - uses: actions/download-artifact@v4
        with:
          name: bundle
          path: got
      - run: test "$(cat got/a.txt)" = one && test "$(cat got/sub/b.txt)" = two && test ! -e got/skip.log
      - id: deps
        uses: actions/cache@v4
        with:
          path: deps
          key: deps-${{ runner.os }}-v1
      - run: test "${{ steps.deps.outputs.cache-hit }}" = true && test "$(cat deps/file)" = cached
  fails:
    runs-on: ubuntu-latest
    steps:
      - run: echo before; exit 1
      - run: echo never
      - if: failure()
        run: echo recovered
"#;

const REMOTE_ACTION: &str = r#"
name: Shout
inputs:
  text:
    required: true
outputs:
  loud:
    value: ${{ steps.run.outputs.loud }}
runs:
  using: composite
  steps:
    - id: run
      shell: sh
      run: echo "loud=$(sh "$GITHUB_ACTION_PATH/shout.sh" "${{ inputs.text }}")" >> "$GITHUB_OUTPUT"
"#;

const GREET_ACTION: &str = r#"
name: Greet
inputs:
  who:
    required: true
  greeting:
    default: hello
outputs:
  said:
    value: ${{ steps.say.outputs.text }}
runs:
  using: composite
  steps:
    - id: say
      shell: sh
      run: echo "text=${{ inputs.greeting }} ${{ inputs.who }}" >> "$GITHUB_OUTPUT"
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_workflow_runs_in_microvms_with_needs_matrix_outputs_and_masking() {
    let repo = tempfile::tempdir().unwrap();
    std::fs::write(repo.path().join("data.txt"), "from the repo\n").unwrap();
    let action_dir = repo.path().join(".github/actions/greet");
    std::fs::create_dir_all(&action_dir).unwrap();
    std::fs::write(action_dir.join("action.yml"), GREET_ACTION).unwrap();
    git_repo(repo.path(), "init");

    let workflow = Arc::new(parse_workflow("ci.yml", WORKFLOW).unwrap_or_else(|d| panic!("{d}")));
    let plan = plan_workflow(&workflow, &PlanContext::default()).unwrap();
    let stores = tempfile::tempdir().unwrap();
    let remotes = tempfile::tempdir().unwrap();
    let remote = remotes.path().join("octo/hello");
    std::fs::create_dir_all(&remote).unwrap();
    std::fs::write(remote.join("action.yml"), REMOTE_ACTION).unwrap();
    std::fs::write(remote.join("shout.sh"), "echo \"$1\" | tr a-z A-Z\n").unwrap();
    git_repo(&remote, "v1");
    git(&remote, &["tag", "v1"]);
    let layout = GuestLayout::for_repository("octo/demo");
    let default_env = BTreeMap::from([
        ("CI".to_string(), "true".to_string()),
        ("GITHUB_WORKSPACE".to_string(), layout.workspace.clone()),
        ("HOME".to_string(), layout.home.clone()),
    ]);
    let environment = JobEnvironment {
        run_id: "run-1".into(),
        secrets: BTreeMap::from([("TOKEN".to_string(), "s3cret".to_string())]),
        layout,
        default_env,
        checkout: Some(CheckoutSource::WorkingTree(repo.path().to_path_buf())),
        artifacts: Some(Arc::new(
            ArtifactStore::open(&stores.path().join("artifacts")).unwrap(),
        )),
        cache: Some((
            Arc::new(
                CacheStore::open(&stores.path().join("cache"), CacheLimits::default()).unwrap(),
            ),
            CacheScope {
                repository: "octo/demo".into(),
                scopes: vec!["refs/heads/main".into()],
            },
        )),
        actions: ActionSource {
            base_url: format!("file://{}", remotes.path().display()),
            cache_dir: stores.path().join("actions"),
            offline: false,
        },
    };
    let logs_dir = tempfile::tempdir().unwrap();
    let logs = Arc::new(LogHub::new(logs_dir.path()));
    let runtime = tempfile::tempdir().unwrap();
    let spec = testing::test_spec();
    let sessions = testing::sessions(runtime.path(), &spec, 0).await;
    let executor = Arc::new(VmJobExecutor::new(
        sessions,
        spec,
        environment,
        logs.clone(),
    ));
    let report = run_workflow(
        workflow.clone(),
        &plan,
        &Object::new(),
        executor.clone(),
        RunLimits {
            max_parallel_jobs: 2,
        },
        RunScope::default(),
        CancellationToken::new(),
    )
    .await;

    let all_logs: Vec<String> = report
        .instances
        .iter()
        .flat_map(|i| logs.read("run-1", &i.name).unwrap_or_default())
        .map(|l| l.text)
        .collect();
    let dump = all_logs.join("\n");
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    assert_eq!(report.jobs["setup"], Conclusion::Success, "{dump}");
    assert_eq!(report.jobs["use"], Conclusion::Success, "{dump}");
    assert_eq!(report.jobs["fails"], Conclusion::Failure, "{dump}");
    assert_eq!(report.conclusion, Conclusion::Failure);
    assert!(all_logs.iter().any(|l| l == "the token is ***"), "{dump}");
    assert!(!dump.contains("s3cret"), "the secret leaked:\n{dump}");
    assert!(all_logs.iter().any(|l| l == "recovered"), "{dump}");
    assert!(!all_logs.iter().any(|l| l == "never"), "{dump}");

    let fails = report
        .instances
        .iter()
        .find(|i| i.name == "fails")
        .and_then(|i| i.job.as_ref())
        .unwrap();
    let results: Vec<Conclusion> = fails.steps.iter().map(|s| s.conclusion).collect();
    assert_eq!(
        results,
        [
            Conclusion::Failure,
            Conclusion::Skipped,
            Conclusion::Success
        ]
    );
    assert!(
        firerunner_vm::VmDir::list(runtime.path())
            .unwrap()
            .is_empty(),
        "no VM left behind"
    );
}

/// QEMU whose first boot fails as a dying hypervisor would.
struct FirstBootFails {
    qemu: firerunner_vm::qemu::QemuBackend,
    failed: std::sync::atomic::AtomicBool,
}

impl firerunner_vm::VmBackend for FirstBootFails {
    type Vm = <firerunner_vm::qemu::QemuBackend as firerunner_vm::VmBackend>::Vm;

    fn kind(&self) -> firerunner_vm::BackendKind {
        self.qemu.kind()
    }

    async fn boot(
        &self,
        spec: &firerunner_vm::VmSpec,
        dir: firerunner_vm::VmDir,
    ) -> Result<Self::Vm, firerunner_vm::VmError> {
        if !self.failed.swap(true, std::sync::atomic::Ordering::SeqCst) {
            drop(dir);
            return Err(firerunner_vm::VmError::HypervisorExited {
                status: "signal 9 (injected)".into(),
                console_tail: String::new(),
            });
        }
        self.qemu.boot(spec, dir).await
    }

    async fn restore(
        &self,
        snapshot: &firerunner_vm::Snapshot,
        spec: &firerunner_vm::VmSpec,
        dir: firerunner_vm::VmDir,
    ) -> Result<Self::Vm, firerunner_vm::VmError> {
        self.qemu.restore(snapshot, spec, dir).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vm_that_fails_to_start_is_started_again_and_the_job_runs() {
    let workflow = Arc::new(
        parse_workflow(
            "retry.yml",
            "on: push\njobs:\n  one:\n    runs-on: ubuntu-latest\n    steps:\n      - run: echo ran-after-retry\n",
        )
        .unwrap_or_else(|d| panic!("{d}")),
    );
    let plan = plan_workflow(&workflow, &PlanContext::default()).unwrap();
    let layout = GuestLayout::for_repository("octo/demo");
    let environment = JobEnvironment {
        run_id: "run-retry".into(),
        secrets: BTreeMap::new(),
        default_env: BTreeMap::from([("HOME".to_string(), layout.home.clone())]),
        layout,
        checkout: None,
        artifacts: None,
        cache: None,
        actions: ActionSource {
            base_url: "https://github.com".into(),
            cache_dir: std::env::temp_dir().join("firerunner-actions"),
            offline: false,
        },
    };
    let logs_dir = tempfile::tempdir().unwrap();
    let logs = Arc::new(LogHub::new(logs_dir.path()));
    let runtime = tempfile::tempdir().unwrap();
    let backend = FirstBootFails {
        qemu: testing::qemu_tcg().await,
        failed: Default::default(),
    };
    let sessions = firerunner_vm::session::SessionManager::new(
        backend,
        firerunner_vm::session::SessionConfig {
            root: runtime.path().to_path_buf(),
            max_vms: 1,
            max_sessions: 1,
            acquire_timeout: None,
        },
    );
    let executor = Arc::new(VmJobExecutor::new(
        sessions,
        testing::test_spec(),
        environment,
        logs.clone(),
    ));
    let report = run_workflow(
        workflow,
        &plan,
        &Object::new(),
        executor,
        RunLimits::default(),
        RunScope::default(),
        CancellationToken::new(),
    )
    .await;
    let lines: Vec<String> = logs
        .read("run-retry", "one")
        .unwrap()
        .into_iter()
        .map(|l| l.text)
        .collect();
    assert_eq!(report.conclusion, Conclusion::Success, "{lines:#?}");
    assert!(
        lines
            .iter()
            .any(|l| l.contains("starting the VM failed") && l.contains("injected")),
        "{lines:#?}"
    );
    assert!(lines.iter().any(|l| l == "ran-after-retry"), "{lines:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_engine_entry_runs_a_self_repository_call_and_reports_steps_and_learning_once() {
    use firerunner_engine::run::{Engine, RunEvent, WorkflowRun};
    use firerunner_workflow::trigger::Event;

    let caller = "on: push\njobs:\n  call:\n    uses: $/.github/workflows/called.yml\n";
    let called = "on:\n  workflow_call:\njobs:\n  inner:\n    runs-on: ubuntu-latest\n    steps:\n      - run: test \"${{ vars.COLOR }}\" = blue\n      - run: exit 3\n";
    let workflow = Arc::new(parse_workflow("caller.yml", caller).unwrap_or_else(|d| panic!("{d}")));
    let plan = plan_workflow(&workflow, &PlanContext::default()).unwrap();
    let stores = tempfile::tempdir().unwrap();
    let runtime = tempfile::tempdir().unwrap();
    let spec = testing::test_spec();
    let engine = Engine {
        sessions: testing::sessions(runtime.path(), &spec, 0).await,
        spec,
        logs: Arc::new(LogHub::new(&stores.path().join("logs"))),
        artifacts: Arc::new(ArtifactStore::open(&stores.path().join("artifacts")).unwrap()),
        cache: Arc::new(
            CacheStore::open(&stores.path().join("cache"), CacheLimits::default()).unwrap(),
        ),
        actions_cache_dir: stores.path().join("actions"),
        actions_offline: false,
    };
    let files = std::collections::HashMap::from([(
        "./.github/workflows/called.yml".to_string(),
        called.to_string(),
    )]);
    let run = WorkflowRun {
        run_id: "run-entry".into(),
        repository: "octo/demo".into(),
        sha: "0".repeat(40),
        git_ref: "refs/heads/main".into(),
        workflow_name: "entry".into(),
        event: Event::new("push", serde_json::json!({})),
        workflow,
        plan,
        inputs: Object::new(),
        secrets: BTreeMap::new(),
        vars: BTreeMap::from([("COLOR".to_string(), "blue".to_string())]),
        checkout: CheckoutSource::WorkingTree(stores.path().to_path_buf()),
        cache_scopes: vec!["refs/heads/main".into()],
        actions_base_url: "file:///nonexistent".into(),
        workflows: Arc::new(files),
        limits: RunLimits::default(),
        environments: None,
    };
    let (events, mut received) = tokio::sync::mpsc::unbounded_channel();
    let report = engine.run(run, events, CancellationToken::new()).await;
    engine.sessions.shutdown().await;

    assert!(report.errors.is_empty(), "{:?}", report.errors);
    assert_eq!(report.jobs["call"], Conclusion::Failure);
    let inner = report
        .instances
        .iter()
        .find(|i| i.name == "call / inner")
        .unwrap();
    let steps: Vec<Conclusion> = inner
        .job
        .as_ref()
        .unwrap()
        .steps
        .iter()
        .map(|s| s.conclusion)
        .collect();
    assert_eq!(steps, [Conclusion::Success, Conclusion::Failure]);

    let mut finished = Vec::new();
    let mut started = Vec::new();
    while let Ok(event) = received.try_recv() {
        match event {
            RunEvent::Started { name } => started.push(name),
            RunEvent::Finished(job) => finished.push(job),
        }
    }
    assert_eq!(started, ["call / inner"]);
    assert_eq!(finished.len(), 1);
    let learned = &finished[0].learned;
    assert_eq!(
        learned.iter().map(|(index, _)| *index).collect::<Vec<_>>(),
        [0, 1]
    );
    assert_eq!(learned[1].1.exit_code, Some(3));
    assert_eq!(learned[1].1.job, "call / inner");
    assert_eq!(finished[0].job.as_ref(), inner.job.as_ref());
}
