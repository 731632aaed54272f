//! Real guests under QEMU/TCG: cold boot, the agent's operations, snapshot
//! restore and clean-up.

mod common;

use std::time::{Duration, Instant};

use firerunner_agent_proto::client::{Client, ExecEvent};
use firerunner_agent_proto::message::ExecRequest;
use firerunner_vm::agent_link;
use firerunner_vm::qemu::QemuVm;
use firerunner_vm::{VmBackend, VmDir, VmInstance};

fn exec(argv: &[&str]) -> ExecRequest {
    ExecRequest::argv(argv.iter().copied())
}

fn sh(script: &str) -> ExecRequest {
    exec(&["/bin/sh", "-c", script])
}

async fn boot(root: &std::path::Path, id: &str) -> (QemuVm, Client) {
    let backend = common::qemu().await;
    let spec = common::test_spec();
    let dir = VmDir::create(root, id).unwrap();
    let started = Instant::now();
    let vm = backend.boot(&spec, dir).await.expect("QEMU starts");
    let client = agent_link::connect(&vm, spec.boot_timeout)
        .await
        .expect("the agent answers");
    eprintln!(
        "{id}: cold boot to agent handshake in {:?}",
        started.elapsed()
    );
    (vm, client)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cold_booted_guest_runs_commands_through_the_agent() {
    let root = tempfile::tempdir().unwrap();
    let (vm, client) = boot(root.path(), "cold").await;

    let (stdout, _, status) = client
        .exec(exec(&["uname", "-s"]))
        .await
        .unwrap()
        .wait()
        .await
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&stdout).trim(), "Linux");
    assert_eq!(status.code, Some(0));

    let (_, stderr, status) = client
        .exec(sh("echo oops >&2; exit 3"))
        .await
        .unwrap()
        .wait()
        .await
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&stderr), "oops\n");
    assert_eq!(status.code, Some(3));

    // Output streams as it is produced, not at exit.
    let mut handle = client
        .exec(sh("echo first; sleep 1; echo second"))
        .await
        .unwrap();
    let mut first_at = None;
    let started = Instant::now();
    while let Some(event) = handle.next_event().await.unwrap() {
        if let ExecEvent::Output { data, .. } = event {
            if first_at.is_none() {
                assert_eq!(String::from_utf8_lossy(&data), "first\n");
                first_at = Some(started.elapsed());
            }
        }
    }
    let total = started.elapsed();
    assert!(
        total - first_at.unwrap() >= Duration::from_millis(800),
        "first line came {:?} into a {total:?} command",
        first_at.unwrap()
    );

    // Timeouts end the command.
    let mut request = sh("sleep 30");
    request.timeout_ms = Some(300);
    let started = Instant::now();
    let (_, _, status) = client.exec(request).await.unwrap().wait().await.unwrap();
    // Far below the 30 s the command would run if the timeout did not end it.
    assert!(started.elapsed() < Duration::from_secs(20));
    assert!(status.timed_out, "{status:?}");

    // Kill reaches the process.
    let handle = client.exec(sh("sleep 30")).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    handle.kill(9).await.unwrap();
    let (_, _, status) = handle.wait().await.unwrap();
    assert_eq!(status.signal, Some(9));

    // Files both ways.
    let payload: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    client
        .put_file("/tmp/payload", 0o640, &payload)
        .await
        .unwrap();
    let (back, mode) = client.get_file("/tmp/payload", 1 << 20).await.unwrap();
    assert_eq!(back, payload);
    assert_eq!(mode & 0o777, 0o640);
    let (sum, _, _) = client
        .exec(sh("wc -c < /tmp/payload"))
        .await
        .unwrap()
        .wait()
        .await
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&sum).trim(), "200000");

    // Several commands at once on one VM.
    let handles = futures_join(&client, 4).await;
    for (i, (stdout, status)) in handles.into_iter().enumerate() {
        assert_eq!(String::from_utf8_lossy(&stdout).trim(), format!("job {i}"));
        assert_eq!(status, Some(0), "the commands did not all run at once");
    }

    let path = vm.dir().path().to_path_buf();
    let pid = vm.pid();
    drop(client);
    vm.destroy().await.unwrap();
    assert!(!path.exists(), "the VM directory is removed");
    assert!(
        !std::path::Path::new(&format!("/proc/{pid}")).exists(),
        "QEMU is gone"
    );
}

/// Runs `count` commands at once; each one ends only once all of them have
/// started (or fails after 60 s), so they succeed only if they overlapped.
async fn futures_join(client: &Client, count: usize) -> Vec<(Vec<u8>, Option<i32>)> {
    let mut tasks = Vec::new();
    for i in 0..count {
        let client = client.clone();
        let script = format!(
            "mkdir -p /tmp/together; touch /tmp/together/{i}; tries=0; \
             while [ $(ls /tmp/together | wc -l) -lt {count} ]; do \
             tries=$((tries + 1)); [ $tries -gt 1200 ] && exit 1; sleep 0.05; done; echo job {i}"
        );
        tasks.push(tokio::spawn(async move {
            let (stdout, _, status) = client
                .exec(sh(&script))
                .await
                .unwrap()
                .wait()
                .await
                .unwrap();
            (stdout, status.code)
        }));
    }
    let mut results = Vec::new();
    for task in tasks {
        results.push(task.await.unwrap());
    }
    results
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restored_guests_answer_and_are_independent_with_their_own_time_and_randomness() {
    let root = tempfile::tempdir().unwrap();
    let (mut vm, client) = boot(root.path(), "base").await;
    client
        .put_file("/tmp/marker", 0o644, b"from the base")
        .await
        .unwrap();
    // The host detaches before the snapshot, so restored guests wait for a new host.
    drop(client);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let snapshot = vm.snapshot(root.path().join("snapshot")).await.unwrap();
    vm.destroy().await.unwrap();

    let backend = common::qemu().await;
    let spec = common::test_spec();
    let mut seen_random = Vec::new();
    for id in ["restored-1", "restored-2"] {
        let started = Instant::now();
        let vm = backend
            .restore(&snapshot, &spec, VmDir::create(root.path(), id).unwrap())
            .await
            .unwrap();
        let client = agent_link::connect(&vm, Duration::from_secs(20))
            .await
            .unwrap();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap();
        agent_link::refresh_restored(&client).await.unwrap();
        let (stdout, _, _) = client
            .exec(sh(
                "cat /tmp/marker; echo; date +%s; echo changed > /tmp/marker; \
                 cat /proc/sys/kernel/random/uuid; head -c 16 /dev/urandom | od -An -tx1",
            ))
            .await
            .unwrap()
            .wait()
            .await
            .unwrap();
        eprintln!("{id}: restore to first command in {:?}", started.elapsed());
        let text = String::from_utf8_lossy(&stdout);
        let mut lines = text.lines();
        assert_eq!(
            lines.next(),
            Some("from the base"),
            "each restore starts from the snapshot"
        );
        let guest_secs: u64 = lines.next().unwrap().parse().unwrap();
        assert!(
            guest_secs.abs_diff(now.as_secs()) <= 2,
            "clock set after restore"
        );
        for random in lines {
            eprintln!("{id}: random bytes {random}");
            assert!(
                !seen_random.iter().any(|seen| seen == random),
                "two restored guests produced the same random bytes: {random}"
            );
            seen_random.push(random.to_string());
        }
        drop(client);
        vm.destroy().await.unwrap();
    }
    assert!(firerunner_vm::VmDir::list(root.path()).unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_a_nat_guest_reaches_the_host_network() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = tokio::spawn(async move {
        use tokio::io::AsyncWriteExt;
        let (mut stream, _) = listener.accept().await.unwrap();
        stream.write_all(b"hello from the host\n").await.unwrap();
    });

    let root = tempfile::tempdir().unwrap();
    let backend = common::qemu().await;
    let mut spec = common::test_spec();

    let (vm, client) =
        firerunner_vm::agent_link::boot_and_connect(&backend, &spec, root.path(), "isolated", 2)
            .await
            .unwrap();
    let (stdout, _, _) = client
        .exec(sh("ls /sys/class/net"))
        .await
        .unwrap()
        .wait()
        .await
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&stdout).trim(),
        "lo",
        "no network device by default"
    );
    drop(client);
    vm.destroy().await.unwrap();

    spec.network = firerunner_vm::Network::Nat;
    let (vm, client) =
        firerunner_vm::agent_link::boot_and_connect(&backend, &spec, root.path(), "nat", 2)
            .await
            .unwrap();
    let (stdout, stderr, status) = client
        .exec(sh(&format!("nc 10.0.2.2 {port} </dev/null")))
        .await
        .unwrap()
        .wait()
        .await
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&stdout),
        "hello from the host\n",
        "{status:?} {}",
        String::from_utf8_lossy(&stderr)
    );
    server.await.unwrap();
    drop(client);
    vm.destroy().await.unwrap();
}

/// A guest that floods its serial console fills at most the console quota on
/// the host, and goes on answering.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_guest_flooding_its_console_fills_only_its_quota_on_the_host() {
    use firerunner_vm::console::{dropped_line, ConsoleQuota};
    use firerunner_vm::qemu::{Accel, QemuBackend, QemuConfig};
    let quota = ConsoleQuota { bytes: 8 * 1024 };
    let backend = QemuBackend::new(QemuConfig {
        accel: Accel::Tcg,
        console_quota: quota,
        ..QemuConfig::default()
    })
    .await
    .unwrap();
    let root = tempfile::tempdir().unwrap();
    let spec = common::test_spec();
    let (vm, client) =
        firerunner_vm::agent_link::boot_and_connect(&backend, &spec, root.path(), "flood", 2)
            .await
            .unwrap();
    let (_, stderr, status) = client
        .exec(sh("head -c 40000 /dev/zero | tr '\\0' x > /dev/ttyS0"))
        .await
        .unwrap()
        .wait()
        .await
        .unwrap();
    assert_eq!(status.code, Some(0), "{}", String::from_utf8_lossy(&stderr));
    // The flood has left the guest; wait until the host has drained it all.
    let console = vm.console_log();
    let expected = quota.bytes + dropped_line(quota).len() as u64;
    let deadline = Instant::now() + Duration::from_secs(60);
    while std::fs::metadata(&console).unwrap().len() < expected && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let kept = std::fs::read(&console).unwrap();
    assert_eq!(
        kept.len() as u64,
        expected,
        "console.log holds the quota and one line"
    );
    assert!(kept.ends_with(dropped_line(quota).as_bytes()));
    let (stdout, _, _) = client
        .exec(exec(&["echo", "still here"]))
        .await
        .unwrap()
        .wait()
        .await
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&stdout), "still here\n");
    drop(client);
    vm.destroy().await.unwrap();
}

/// The SSH variant of the test image runs Dropbear beside the agent: a
/// forwarded port reaches it, and root logs in with the image's client key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ssh_test_image_answers_ssh_beside_the_agent() {
    let root = tempfile::tempdir().unwrap();
    let backend = common::qemu().await;
    let spec = firerunner_vm::VmSpec {
        image: firerunner_vm::testing::ssh_test_image(),
        network: firerunner_vm::Network::Nat,
        ..common::test_spec()
    };
    let key = firerunner_vm::image::ssh::client_key(&spec.image).expect("a client key");
    let (mut vm, client) =
        firerunner_vm::agent_link::boot_and_connect(&backend, &spec, root.path(), "ssh", 2)
            .await
            .unwrap();
    let port = vm.forward_tcp(22).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let stdout = loop {
        let output = tokio::process::Command::new("ssh")
            .arg("-i")
            .arg(&key)
            .args(["-p", &port.to_string()])
            .args(["-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=no"])
            .args(["-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR"])
            .args(["root@127.0.0.1", "echo", "over ssh;", "id", "-u"])
            .stdin(std::process::Stdio::null())
            .output()
            .await
            .expect("ssh runs (scripts/setup-vm.sh installs openssh-client)");
        if output.status.success() {
            break output.stdout;
        }
        assert!(
            Instant::now() < deadline,
            "ssh never logged in: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    // The remote shell reads the words as one line: `;` separates the commands.
    assert_eq!(String::from_utf8_lossy(&stdout), "over ssh\n0\n");
    let (stdout, _, _) = client
        .exec(exec(&["echo", "agent too"]))
        .await
        .unwrap()
        .wait()
        .await
        .unwrap();
    assert_eq!(stdout, b"agent too\n");
    drop(client);
    vm.destroy().await.unwrap();
}

#[tokio::test]
async fn the_kvm_probe_guest_runs_to_its_exit_and_auto_decides() {
    let binary = std::path::Path::new("qemu-system-x86_64");
    // Under TCG the probe guest must reach its exit port: this checks the
    // boot sector itself, so a KVM verdict means what it says.
    let tcg = firerunner_vm::qemu::run_probe_guest(binary, "tcg", Duration::from_secs(30)).await;
    assert!(
        matches!(tcg, firerunner_vm::qemu::KvmProbe::Usable(_)),
        "{tcg:?}"
    );
    let started = Instant::now();
    let verdict = firerunner_vm::qemu::probe_kvm(binary).await;
    eprintln!("KVM probe: {verdict:?} after {:?}", started.elapsed());
    assert!(started.elapsed() < Duration::from_secs(5));
    let backend = firerunner_vm::qemu::QemuBackend::new(firerunner_vm::qemu::QemuConfig::default())
        .await
        .unwrap();
    let expected = match verdict {
        firerunner_vm::qemu::KvmProbe::Usable(_) => firerunner_vm::qemu::Accel::Kvm,
        firerunner_vm::qemu::KvmProbe::Unusable(_) => firerunner_vm::qemu::Accel::Tcg,
    };
    assert_eq!(backend.accel(), expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_debian_image_boots_to_its_root_filesystem_with_the_tools_jobs_need() {
    let root = tempfile::tempdir().unwrap();
    let backend = common::qemu().await;
    let spec = firerunner_vm::testing::suite_spec();
    let started = Instant::now();
    let (vm, client) =
        firerunner_vm::agent_link::boot_and_connect(&backend, &spec, root.path(), "debian", 3)
            .await
            .unwrap();
    eprintln!("debian: boot to agent handshake in {:?}", started.elapsed());
    let script = "set -e; . /etc/os-release; echo $VERSION_CODENAME; bash --version | head -1; git --version; \
                  printf 'int main(){return 42;}' > /tmp/t.c && gcc -o /tmp/t /tmp/t.c && (/tmp/t || echo exit=$?); \
                  touch /written && mount | grep ' / '";
    let (stdout, stderr, status) = client
        .exec(exec(&["/bin/bash", "-c", script]))
        .await
        .unwrap()
        .wait()
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&stdout);
    assert_eq!(
        status.code,
        Some(0),
        "{text}{}",
        String::from_utf8_lossy(&stderr)
    );
    assert!(text.starts_with("bookworm\nGNU bash"), "{text}");
    assert!(text.contains("git version"), "{text}");
    assert!(text.contains("exit=42"), "gcc compiled a program: {text}");
    assert!(text.contains("/dev/vda on / type ext4"), "{text}");
    drop(client);
    vm.destroy().await.unwrap();
}

#[test]
fn concurrent_builds_of_one_image_into_an_empty_cache_both_succeed() {
    let cache = tempfile::tempdir().unwrap();
    let recipe = firerunner_vm::image::ImageRecipe::test(firerunner_vm::testing::agent_binary());
    let builds: Vec<_> = (0..2)
        .map(|_| {
            let (recipe, cache) = (recipe.clone(), cache.path().to_path_buf());
            std::thread::spawn(move || firerunner_vm::image::build(&recipe, &cache, &mut |_| {}))
        })
        .collect();
    let images: Vec<_> = builds
        .into_iter()
        .map(|b| b.join().unwrap().expect("both builds succeed"))
        .collect();
    assert_eq!(images[0], images[1]);
    assert!(images[0].0.initrd.is_file() && images[0].0.kernel.is_file());
}
