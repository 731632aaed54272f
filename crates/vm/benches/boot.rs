//! Cold boot against snapshot restore under QEMU/TCG, and the agent's
//! command round trip, printed as a table.
//!
//! `cargo bench -p firerunner-vm --bench boot -- [RUNS]` (default 10).

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use firerunner_agent_proto::message::ExecRequest;
use firerunner_vm::runtime::ProcessId;
use firerunner_vm::{agent_link, VmBackend, VmDir, VmInstance};

fn true_command() -> ExecRequest {
    ExecRequest::argv(["true"])
}

fn summary(name: &str, mut samples: Vec<Duration>, failures: usize) {
    samples.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    if samples.is_empty() {
        println!("| {name} | 0 | - | - | - | {failures} |");
        return;
    }
    let median = samples[samples.len() / 2];
    let p90 = samples[(samples.len() * 9 / 10).min(samples.len() - 1)];
    println!(
        "| {name} | {} | {:.1} | {:.1} | {:.1} | {failures} |",
        samples.len(),
        ms(samples[0]),
        ms(median),
        ms(p90),
    );
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let runs: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(10);
    let backend = common::qemu().await;
    let mut spec = common::test_spec();
    spec.boot_timeout = Duration::from_secs(20);
    let root = tempfile::tempdir().unwrap();

    let mut cold = Vec::new();
    let mut cold_failures = 0;
    for i in 0..runs {
        let started = Instant::now();
        let vm = backend
            .boot(
                &spec,
                VmDir::create(root.path(), &format!("cold-{i}")).unwrap(),
            )
            .await
            .unwrap();
        match agent_link::connect(
            &vm.agent_endpoint(),
            ProcessId::of(vm.pid()),
            spec.boot_timeout,
            &vm.console_log(),
        )
        .await
        {
            Ok(client) => {
                client
                    .exec(true_command())
                    .await
                    .unwrap()
                    .wait()
                    .await
                    .unwrap();
                cold.push(started.elapsed());
            }
            Err(err) => {
                cold_failures += 1;
                eprintln!("cold boot {i} failed: {err}");
            }
        }
        vm.destroy().await.unwrap();
    }

    let (mut base, client) = {
        let vm = backend
            .boot(&spec, VmDir::create(root.path(), "base").unwrap())
            .await
            .unwrap();
        let client = agent_link::connect(
            &vm.agent_endpoint(),
            ProcessId::of(vm.pid()),
            Duration::from_secs(60),
            &vm.console_log(),
        )
        .await
        .unwrap();
        (vm, client)
    };
    let mut round_trips = Vec::new();
    for _ in 0..runs * 10 {
        let started = Instant::now();
        client
            .exec(true_command())
            .await
            .unwrap()
            .wait()
            .await
            .unwrap();
        round_trips.push(started.elapsed());
    }
    let mut pings = Vec::new();
    for _ in 0..runs * 10 {
        let started = Instant::now();
        client.ping().await.unwrap();
        pings.push(started.elapsed());
    }
    drop(client);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let snapshot = base.snapshot(root.path().join("snapshot")).await.unwrap();
    base.destroy().await.unwrap();

    let mut restored = Vec::new();
    let mut restore_failures = 0;
    for i in 0..runs {
        let started = Instant::now();
        let vm = backend
            .restore(
                &snapshot,
                &spec,
                VmDir::create(root.path(), &format!("warm-{i}")).unwrap(),
            )
            .await
            .unwrap();
        match agent_link::connect(
            &vm.agent_endpoint(),
            ProcessId::of(vm.pid()),
            spec.boot_timeout,
            &vm.console_log(),
        )
        .await
        {
            Ok(client) => {
                client
                    .exec(true_command())
                    .await
                    .unwrap()
                    .wait()
                    .await
                    .unwrap();
                restored.push(started.elapsed());
            }
            Err(err) => {
                restore_failures += 1;
                eprintln!("restore {i} failed: {err}");
            }
        }
        vm.destroy().await.unwrap();
    }

    println!("QEMU {:?}, test image, 1 vCPU, 256 MiB", backend.accel());
    println!();
    println!("| measure (ms) | samples | min | median | p90 | failures |");
    println!("| --- | --- | --- | --- | --- | --- |");
    summary("cold boot to first command done", cold, cold_failures);
    summary(
        "snapshot restore to first command done",
        restored,
        restore_failures,
    );
    summary("agent exec `true` round trip", round_trips, 0);
    summary("agent ping round trip", pings, 0);
}
