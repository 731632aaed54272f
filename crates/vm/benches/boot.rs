//! Cold boot against snapshot restore under QEMU, the agent's command round
//! trip against SSH's in the same guest, and QEMU's memory per idle VM, all
//! in one run on one image (the test image with Dropbear, user-mode network),
//! printed as tables.
//!
//! `cargo bench -p firerunner-vm --bench boot -- [RUNS]` (default 10): RUNS
//! cold boots and restores, 10 x RUNS agent and reused-connection SSH round
//! trips, 2 x RUNS new-connection SSH round trips. The machine these numbers
//! come from is shared, so measures compared with each other alternate.

#[path = "../tests/common/mod.rs"]
mod common;

use std::path::Path;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use firerunner_agent_proto::client::Client;
use firerunner_agent_proto::message::ExecRequest;
use firerunner_vm::image::ssh;
use firerunner_vm::qemu::QemuVm;
use firerunner_vm::{agent_link, Network, VmBackend, VmDir, VmInstance, VmSpec};

fn true_command() -> ExecRequest {
    ExecRequest::argv(["true"])
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|text| {
            text.split_whitespace()
                .take(3)
                .collect::<Vec<_>>()
                .join(" ")
        })
        .unwrap_or_else(|_| "?".into())
}

fn median(samples: &[Duration]) -> Option<Duration> {
    let mut sorted = samples.to_vec();
    sorted.sort();
    sorted.get(sorted.len() / 2).copied()
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

/// QEMU's memory as `/proc/<pid>/smaps_rollup` counts it, in KiB.
#[derive(Debug, Clone, Copy, Default)]
struct Memory {
    rss: u64,
    pss: u64,
    pss_anon: u64,
    pss_file: u64,
    private: u64,
}

impl Memory {
    fn of(pid: u32) -> Option<Self> {
        let text = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).ok()?;
        let field = |name: &str| {
            text.lines()
                .find_map(|line| line.strip_prefix(name)?.strip_prefix(':'))
                .and_then(|rest| rest.split_whitespace().next()?.parse::<u64>().ok())
                .unwrap_or_default()
        };
        Some(Self {
            rss: field("Rss"),
            pss: field("Pss"),
            pss_anon: field("Pss_Anon"),
            pss_file: field("Pss_File"),
            private: field("Private_Clean") + field("Private_Dirty"),
        })
    }
}

fn memory_row(name: &str, samples: &[Memory]) {
    if samples.is_empty() {
        println!("| {name} | 0 | - | - | - | - | - |");
        return;
    }
    let median = |get: fn(&Memory) -> u64| {
        let mut values: Vec<u64> = samples.iter().map(get).collect();
        values.sort();
        values[values.len() / 2] as f64 / 1024.0
    };
    println!(
        "| {name} | {} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} |",
        samples.len(),
        median(|m| m.rss),
        median(|m| m.pss),
        median(|m| m.pss_anon),
        median(|m| m.pss_file),
        median(|m| m.private),
    );
}

fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or_default()
}

async fn connect(vm: &QemuVm, within: Duration) -> Result<Client, firerunner_vm::VmError> {
    agent_link::connect(vm, within).await
}

async fn run_true(client: &Client) {
    let exit = client
        .exec(true_command())
        .await
        .unwrap()
        .wait()
        .await
        .unwrap();
    assert_eq!(exit.2.code, Some(0), "`true` failed in the guest: {exit:?}");
}

/// Start times (to agent ready, to first command done) and QEMU's memory
/// right after, over a set of starts.
#[derive(Default)]
struct Starts {
    /// `boot` or `restore` returned: QEMU runs (and has loaded the snapshot).
    launched: Vec<Duration>,
    /// The agent's handshake is done.
    handshake: Vec<Duration>,
    ready: Vec<Duration>,
    first_command: Vec<Duration>,
    memory: Vec<Memory>,
    failures: usize,
}

impl Starts {
    /// Connects to the agent of a VM whose launch began at `started` (setting its
    /// clock first when `set_clock`, as the warm pool does after a restore),
    /// runs `true`, records the times and the memory, destroys the VM.
    async fn measure(&mut self, vm: QemuVm, started: Instant, set_clock: bool, what: &str) {
        self.launched.push(started.elapsed());
        let connected = async {
            let client = connect(&vm, Duration::from_secs(20)).await?;
            self.handshake.push(started.elapsed());
            if set_clock {
                client.set_clock(now_ns()).await?;
            }
            Ok::<_, firerunner_vm::VmError>(client)
        }
        .await;
        match connected {
            Ok(client) => {
                self.ready.push(started.elapsed());
                run_true(&client).await;
                self.first_command.push(started.elapsed());
                self.memory.extend(Memory::of(vm.pid()));
            }
            Err(err) => {
                self.failures += 1;
                eprintln!("{what} failed: {err}");
            }
        }
        vm.destroy().await.unwrap();
    }
}

/// `ssh` to the guest as root with the image's key, through the forwarded port.
fn ssh_command(key: &Path, port: u16, extra: &[String]) -> tokio::process::Command {
    let mut command = tokio::process::Command::new("ssh");
    command
        .arg("-i")
        .arg(key)
        .args(["-p", &port.to_string()])
        .args([
            "-o",
            "BatchMode=yes",
            "-o",
            "StrictHostKeyChecking=no",
            "-o",
            "UserKnownHostsFile=/dev/null",
            "-o",
            "LogLevel=ERROR",
            "-o",
            "ConnectTimeout=20",
        ])
        .args(extra)
        .arg("root@127.0.0.1")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true);
    command
}

/// Runs `ssh ... true`; the time it took, or why it failed.
async fn ssh_true(key: &Path, port: u16, extra: &[String]) -> Result<Duration, String> {
    let started = Instant::now();
    let output = ssh_command(key, port, extra)
        .arg("true")
        .output()
        .await
        .map_err(|err| format!("ssh: {err}"))?;
    if output.status.success() {
        Ok(started.elapsed())
    } else {
        Err(format!(
            "ssh ended with {}: {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        ))
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let runs: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(10);
    let load_before = load_average();
    let backend = common::qemu().await;
    let spec = VmSpec {
        image: firerunner_vm::testing::ssh_test_image(),
        network: Network::Nat,
        boot_timeout: Duration::from_secs(20),
        ..common::test_spec()
    };
    let key = ssh::client_key(&spec.image).expect("the SSH test image has a client key");
    let root = tempfile::tempdir().unwrap();

    // The machine is shared and its load moves: measures that are compared
    // with each other are taken in alternation, so that they see the same load.

    // (3) The agent against SSH, in one cold-booted guest.
    let mut base = backend
        .boot(&spec, VmDir::create(root.path(), "base").unwrap())
        .await
        .unwrap();
    let client = connect(&base, Duration::from_secs(60)).await.unwrap();
    let port = base.forward_tcp(22).await.unwrap();
    // Dropbear starts just before the agent; wait until it answers.
    let deadline = Instant::now() + Duration::from_secs(60);
    while let Err(err) = ssh_true(&key, port, &[]).await {
        assert!(Instant::now() < deadline, "SSH never answered: {err}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let control = root.path().join("ssh-control");
    let control_args = vec![
        "-o".to_string(),
        format!("ControlPath={}", control.display()),
    ];
    let master = ssh_command(
        &key,
        port,
        &[
            "-o".into(),
            "ControlMaster=yes".into(),
            "-o".into(),
            format!("ControlPath={}", control.display()),
            "-N".into(),
        ],
    )
    .spawn()
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !control.exists() {
        assert!(Instant::now() < deadline, "the SSH master never connected");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Warm up both paths (QEMU translates guest code on first use).
    for _ in 0..3 {
        run_true(&client).await;
        ssh_true(&key, port, &control_args).await.unwrap();
    }
    let (mut agent_trips, mut pings) = (Vec::new(), Vec::new());
    let (mut ssh_fresh, mut ssh_fresh_failures) = (Vec::new(), 0);
    let (mut ssh_reused, mut ssh_reused_failures) = (Vec::new(), 0);
    for round in 0..runs * 10 {
        let started = Instant::now();
        run_true(&client).await;
        agent_trips.push(started.elapsed());
        match ssh_true(&key, port, &control_args).await {
            Ok(took) => ssh_reused.push(took),
            Err(err) => {
                ssh_reused_failures += 1;
                eprintln!("{err}");
            }
        }
        if round % 5 == 0 {
            match ssh_true(&key, port, &[]).await {
                Ok(took) => ssh_fresh.push(took),
                Err(err) => {
                    ssh_fresh_failures += 1;
                    eprintln!("{err}");
                }
            }
        }
        let started = Instant::now();
        client.ping().await.unwrap();
        pings.push(started.elapsed());
    }
    drop(master);

    // (1, 2) Cold boots and restores from a snapshot of that guest, idle,
    // one after the other.
    drop(client);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let snapshot = base.snapshot(root.path().join("snapshot")).await.unwrap();
    base.destroy().await.unwrap();
    let mut cold = Starts::default();
    let mut restored = Starts::default();
    for i in 0..runs {
        let dir = VmDir::create(root.path(), &format!("cold-{i}")).unwrap();
        let started = Instant::now();
        let vm = backend.boot(&spec, dir).await.unwrap();
        cold.measure(vm, started, false, &format!("cold boot {i}"))
            .await;
        let dir = VmDir::create(root.path(), &format!("warm-{i}")).unwrap();
        let started = Instant::now();
        let vm = backend.restore(&snapshot, &spec, dir).await.unwrap();
        restored
            .measure(vm, started, true, &format!("restore {i}"))
            .await;
    }
    // (4) Two restored VMs side by side share the snapshot's unwritten pages.
    let mut pair = Vec::new();
    for i in 0..2 {
        let dir = VmDir::create(root.path(), &format!("pair-{i}")).unwrap();
        let vm = backend.restore(&snapshot, &spec, dir).await.unwrap();
        let client = connect(&vm, Duration::from_secs(20)).await.unwrap();
        client.set_clock(now_ns()).await.unwrap();
        run_true(&client).await;
        pair.push((vm, client));
    }
    let pair_memory: Vec<Memory> = pair
        .iter()
        .filter_map(|(vm, _)| Memory::of(vm.pid()))
        .collect();
    for (vm, client) in pair {
        drop(client);
        vm.destroy().await.unwrap();
    }
    let load_after = load_average();

    let ms = |d: Option<Duration>| d.map(|d| d.as_secs_f64() * 1000.0).unwrap_or(f64::NAN);
    println!(
        "QEMU {:?}, SSH test image (busybox, agent, Dropbear), 1 vCPU, {} MiB, user-mode network",
        backend.accel(),
        spec.memory_mib
    );
    println!("load average before: {load_before}; after: {load_after}");
    println!();
    println!("| measure (ms) | samples | min | median | p90 | failures |");
    println!("| --- | --- | --- | --- | --- | --- |");
    summary(
        "cold boot to agent ready",
        cold.ready.clone(),
        cold.failures,
    );
    summary(
        "restore to agent ready (clock set)",
        restored.ready.clone(),
        restored.failures,
    );
    summary(
        "cold boot to first command done",
        cold.first_command.clone(),
        cold.failures,
    );
    summary(
        "restore to first command done",
        restored.first_command.clone(),
        restored.failures,
    );
    summary("agent exec `true` round trip", agent_trips.clone(), 0);
    summary(
        "`ssh guest true`, new connection",
        ssh_fresh.clone(),
        ssh_fresh_failures,
    );
    summary(
        "`ssh guest true`, reused connection",
        ssh_reused.clone(),
        ssh_reused_failures,
    );
    summary("agent ping round trip", pings, 0);
    summary(
        "restore, part: QEMU started, state loaded, resumed",
        restored.launched.clone(),
        0,
    );
    summary(
        "restore, part: + agent handshake",
        restored.handshake.clone(),
        0,
    );
    summary("cold boot, part: QEMU started", cold.launched.clone(), 0);
    println!();
    println!(
        "restore vs cold boot (medians): {:.1}x to agent ready, {:.1}x to first command done",
        ms(median(&cold.ready)) / ms(median(&restored.ready)),
        ms(median(&cold.first_command)) / ms(median(&restored.first_command)),
    );
    println!(
        "agent vs SSH `true` (medians): {:.1}x vs a new connection, {:.1}x vs a reused one",
        ms(median(&ssh_fresh)) / ms(median(&agent_trips)),
        ms(median(&ssh_reused)) / ms(median(&agent_trips)),
    );
    println!();
    println!("| QEMU memory per idle VM (MiB, median) | VMs | RSS | PSS | PSS anon | PSS file | private |");
    println!("| --- | --- | --- | --- | --- | --- | --- |");
    memory_row("cold-booted, after its first command", &cold.memory);
    memory_row("restored, after its first command", &restored.memory);
    memory_row("restored, two side by side", &pair_memory);
}
