//! Latency of `LearningCoordinator::record_step` with 100,000 steps already in a SQLite store.
//!
//! Run with `cargo bench -p firerunner-learning --bench record`. Prints a table of p50/p90/p99/max
//! over 10,000 back-to-back records (the writer persists them concurrently).

use firerunner_learning::{
    Conclusion, LearningConfig, LearningCoordinator, LearningStore, StepRecord,
};
use std::time::{Duration, Instant, UNIX_EPOCH};

const PRELOADED: usize = 100_000;
const MEASURED: usize = 10_000;

const COMMANDS: &[&str] = &[
    "cargo build --release --target-dir /tmp/t{n}",
    "cargo test --workspace -- --test-threads {n}",
    "cargo clippy --all-targets -- -D warnings",
    "cargo fmt --all --check",
    "npm ci",
    "npm test -- --maxWorkers={n}",
    "npx eslint@9.{n}.0 src",
    "pytest -k test_{n} -n 4",
    "go test ./... -count={n}",
    "docker build -t app:{n} .",
    "make -j{n} all",
    "./scripts/deploy.sh --env staging --build {n}",
];

fn step(index: usize, rng: &mut fastrand::Rng) -> StepRecord {
    let repository = rng.usize(0..50);
    let command =
        COMMANDS[rng.usize(0..COMMANDS.len())].replace("{n}", &rng.u32(1..64).to_string());
    let failed = rng.u32(0..10) == 0;
    let log_tail = if failed {
        let mut log = String::new();
        for line in 0..40 {
            log.push_str(&format!(
                "2026-03-01T10:00:{:02}.{:03}Z compiling unit {line} in /home/runner/work/r{repository}/src/{:x}\n",
                line % 60,
                rng.u32(0..1000),
                rng.u32(..)
            ));
        }
        log.push_str(&format!(
            "error[E0{}]: mismatched types\n --> src/lib.rs:{}:{}\nError: Process completed with exit code 101.\n",
            rng.u32(300..320),
            rng.u32(1..500),
            rng.u32(1..80)
        ));
        log
    } else {
        "ok\n".to_string()
    };
    StepRecord {
        run_id: format!("run-{}", index / 6),
        repository: format!("org/repo{repository}"),
        commit_sha: format!("{:040x}", rng.u64(0..2_000)),
        workflow: "ci.yml".into(),
        job: format!("job{}", rng.u32(0..4)),
        step_name: format!("step{}", rng.u32(0..6)),
        command,
        outcome: if failed {
            Conclusion::Failure
        } else {
            Conclusion::Success
        },
        exit_code: Some(if failed { 101 } else { 0 }),
        duration: Duration::from_millis(rng.u64(10..60_000)),
        log_tail,
        timestamp: UNIX_EPOCH + Duration::from_secs(1_770_000_000 + index as u64),
    }
}

fn percentile(sorted: &[Duration], fraction: f64) -> Duration {
    let index = ((sorted.len() as f64 * fraction).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[index]
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let directory = tempfile::tempdir()?;
        let url = format!(
            "sqlite://{}?mode=rwc",
            directory.path().join("learning.db").display()
        );
        let mut rng = fastrand::Rng::with_seed(7);

        let started = Instant::now();
        let learning = LearningCoordinator::open(
            LearningStore::connect(&url).await?,
            LearningConfig::default(),
        )
        .await?;
        for index in 0..PRELOADED {
            learning.record_step(step(index, &mut rng)).await?;
        }
        learning.close().await?;
        let preload = started.elapsed();

        let started = Instant::now();
        let store = LearningStore::connect(&url).await?;
        let in_store = store.step_count().await?;
        let learning = LearningCoordinator::open(store, LearningConfig::default()).await?;
        let load = started.elapsed();

        let records: Vec<StepRecord> = (0..MEASURED)
            .map(|index| step(PRELOADED + index, &mut rng))
            .collect();
        let mut latencies = Vec::with_capacity(MEASURED);
        let measured_started = Instant::now();
        for record in records {
            let started = Instant::now();
            learning.record_step(record).await?;
            latencies.push(started.elapsed());
        }
        let burst = measured_started.elapsed();
        let started = Instant::now();
        learning.close().await?;
        let drain = started.elapsed();
        latencies.sort();

        println!(
            "record_step with {in_store} steps in the store (SQLite file, write-behind queue)"
        );
        println!("| measure | value |");
        println!("| --- | --- |");
        println!("| preload {PRELOADED} steps (recorded + persisted) | {preload:.2?} |");
        println!("| open: load graph and state from the store | {load:.2?} |");
        println!("| records measured | {MEASURED} in {burst:.2?} |");
        println!("| p50 | {:.1?} |", percentile(&latencies, 0.50));
        println!("| p90 | {:.1?} |", percentile(&latencies, 0.90));
        println!("| p99 | {:.1?} |", percentile(&latencies, 0.99));
        println!("| max | {:.1?} |", latencies[latencies.len() - 1]);
        println!("| drain queue on close | {drain:.2?} |");
        Ok(())
    })
}
