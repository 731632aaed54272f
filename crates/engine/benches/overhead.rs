//! Engine overhead: what a run costs beyond its commands' own time, for a
//! 20-step job and a 3x3 matrix, in real QEMU/TCG guests (Debian image).
//!
//! `cargo bench -p firerunner-engine --bench overhead -- [RUNS]` (default 3).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use firerunner_engine::actions::remote::ActionSource;
use firerunner_engine::job::{GuestLayout, JobEnvironment, JobReport};
use firerunner_engine::logs::LogHub;
use firerunner_engine::orchestrator::{run_workflow, RunLimits, RunScope};
use firerunner_engine::run_context;
use firerunner_engine::vm_executor::VmJobExecutor;
use firerunner_vm::testing;
use firerunner_workflow::load::parse_workflow;
use firerunner_workflow::plan::{plan_workflow, PlanContext};
use firerunner_workflow::Conclusion;
use firerunner_workflow::{Object, Value};
use tokio_util::sync::CancellationToken;

fn twenty_steps() -> String {
    let mut yaml =
        String::from("on: push\njobs:\n  steps20:\n    runs-on: ubuntu-latest\n    steps:\n");
    for _ in 0..20 {
        yaml.push_str("      - run: \"true\"\n");
    }
    yaml
}

const MATRIX: &str = "on: push\njobs:\n  m:\n    runs-on: ubuntu-latest\n    strategy:\n      matrix:\n        a: [1, 2, 3]\n        b: [1, 2, 3]\n    steps:\n      - run: \"true\"\n";

struct Measure {
    wall: Duration,
    reports: Vec<(String, JobReport)>,
    instance_walls: Vec<Duration>,
}

async fn run(yaml: &str, parallel: usize, warm: usize) -> Measure {
    let workflow = Arc::new(parse_workflow("bench.yml", yaml).unwrap());
    let plan = plan_workflow(&workflow, &PlanContext::default()).unwrap();
    let layout = GuestLayout::for_repository("octo/bench");
    let mut contexts = Object::new();
    contexts.insert("github", Value::Object(Object::new()));
    let github = run_context::github_context(
        &contexts,
        "octo/bench",
        &"0".repeat(40),
        "1",
        "bench",
        &layout,
    );
    let stores = tempfile::tempdir().unwrap();
    let environment = JobEnvironment {
        run_id: "bench".into(),
        secrets: BTreeMap::new(),
        default_env: run_context::default_env(&github, &layout),
        layout,
        checkout: None,
        artifacts: None,
        cache: None,
        actions: ActionSource {
            base_url: String::new(),
            cache_dir: stores.path().join("actions"),
            offline: true,
        },
    };
    let runtime = tempfile::tempdir().unwrap();
    let spec = testing::suite_spec();
    let sessions = testing::sessions(runtime.path(), &spec, warm).await;
    let executor = Arc::new(VmJobExecutor::new(
        sessions.clone(),
        spec,
        environment,
        Arc::new(LogHub::new(&stores.path().join("logs"))),
    ));
    if warm > 0 {
        // Measure from a filled pool, as a long-running service has one.
        while sessions.metrics().pool_ready < warm {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }
    let started = Instant::now();
    let report = run_workflow(
        workflow,
        &plan,
        &Object::new(),
        executor.clone(),
        RunLimits {
            max_parallel_jobs: parallel,
        },
        RunScope::default(),
        CancellationToken::new(),
    )
    .await;
    let wall = started.elapsed();
    sessions.shutdown().await;
    assert_eq!(
        report.conclusion,
        Conclusion::Success,
        "{:?}",
        report.errors
    );
    Measure {
        wall,
        reports: report
            .instances
            .iter()
            .filter_map(|i| Some((i.name.clone(), i.job.clone()?)))
            .collect(),
        instance_walls: report.instances.iter().map(|i| i.duration).collect(),
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(|a, b| a.partial_cmp(b).unwrap());
    values[values.len() / 2]
}

/// Medians of one mode (cold boots or warm pool).
struct Figures {
    per_step: f64,
    per_job_20: f64,
    wall_20: f64,
    per_job_matrix: f64,
    matrix_commands: f64,
    wall_matrix: f64,
}

fn measure(runtime: &tokio::runtime::Runtime, runs: usize, warm: usize) -> Figures {
    let (mut per_step, mut per_job_20, mut wall_20) = (Vec::new(), Vec::new(), Vec::new());
    let (mut per_job_matrix, mut wall_matrix, mut matrix_commands) =
        (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..runs {
        let m = runtime.block_on(run(&twenty_steps(), 2, warm));
        let job = &m.reports[0].1;
        let steps_wall: Duration = job.steps.iter().map(|s| s.duration).sum();
        let commands: Duration = job.steps.iter().map(|s| s.command_duration).sum();
        per_step.push(ms(steps_wall.saturating_sub(commands)) / job.steps.len() as f64);
        per_job_20.push(ms(m.instance_walls[0].saturating_sub(steps_wall)));
        wall_20.push(ms(m.wall));

        let m = runtime.block_on(run(MATRIX, 2, warm));
        let per_instance: Vec<f64> = m
            .reports
            .iter()
            .zip(&m.instance_walls)
            .map(|((_, job), wall)| {
                ms(wall.saturating_sub(job.steps.iter().map(|s| s.command_duration).sum()))
            })
            .collect();
        per_job_matrix.push(per_instance.iter().sum::<f64>() / per_instance.len() as f64);
        matrix_commands.push(ms(m
            .reports
            .iter()
            .flat_map(|(_, j)| &j.steps)
            .map(|s| s.command_duration)
            .sum()));
        wall_matrix.push(ms(m.wall));
    }
    Figures {
        per_step: median(per_step),
        per_job_20: median(per_job_20),
        wall_20: median(wall_20),
        per_job_matrix: median(per_job_matrix),
        matrix_commands: median(matrix_commands),
        wall_matrix: median(wall_matrix),
    }
}

fn main() {
    let runs: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(3);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let cold = measure(&runtime, runs, 0);
    let warm = measure(&runtime, runs, 2);
    println!("Engine overhead, QEMU/TCG, Debian image, 1 vCPU, 512 MiB, 2 jobs at once; median of {runs} runs");
    println!();
    println!("| measure (ms) | cold boots | warm pool (2 restored VMs) |");
    println!("| --- | --- | --- |");
    let row = |name: &str, a: f64, b: f64| println!("| {name} | {a:.1} | {b:.1} |");
    row(
        "20-step job: overhead per step (step wall time minus the command's own time)",
        cold.per_step,
        warm.per_step,
    );
    row("20-step job: overhead per job (job wall time minus its steps: getting a VM, set-up, release)", cold.per_job_20, warm.per_job_20);
    row("20-step job: whole run", cold.wall_20, warm.wall_20);
    row(
        "3x3 matrix: overhead per job (job wall time minus its command's own time)",
        cold.per_job_matrix,
        warm.per_job_matrix,
    );
    row(
        "3x3 matrix: commands' own time, all 9 jobs",
        cold.matrix_commands,
        warm.matrix_commands,
    );
    row("3x3 matrix: whole run", cold.wall_matrix, warm.wall_matrix);
}
