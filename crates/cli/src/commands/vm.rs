//! `firerunner vm`: run one command in a throw-away microVM, list the VMs
//! this machine runs, and remove them.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use firerunner_agent_proto::client::{ExecEvent, ExitStatus};
use firerunner_agent_proto::message::{ExecRequest, Stream};
use firerunner_vm::pool::{self, PoolConfig};
use firerunner_vm::reaper::{self, FreedVm, ReapReport};
use firerunner_vm::runtime::{self, ProcessId};
use firerunner_vm::session::{Session, SessionConfig, SessionManager};
use firerunner_vm::{image, VmBackend, VmDir, VmSpec};

use super::hypervisor::{self, AccelChoice, Backend};
use super::plan::parse_key_value;

/// Exit code after Ctrl-C (128 + SIGINT), as shells report it.
const INTERRUPTED: u8 = 130;

/// Arguments of `firerunner vm`.
#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: VmCommand,
}

#[derive(clap::Subcommand)]
enum VmCommand {
    /// Run a command in a fresh microVM, streaming its output, and exit with its exit code.
    Run(RunArgs),
    /// List the VMs under the runtime directory.
    Ls,
    /// Destroy VMs: end their processes, delete their tap devices and directories.
    Rm(RmArgs),
}

/// Arguments of `firerunner vm run`.
#[derive(clap::Args)]
struct RunArgs {
    /// Guest image: an image directory from `firerunner image build`, or
    /// `debian` / `test` (built on first use).
    #[arg(long, default_value = "debian")]
    image: String,
    /// Guest memory in MiB.
    #[arg(long, default_value_t = 512)]
    memory: u32,
    /// Guest vCPUs.
    #[arg(long, default_value_t = 1)]
    vcpus: u8,
    /// Kill the command after this many seconds (exit code 137).
    #[arg(long, value_name = "SECS")]
    timeout: Option<u64>,
    /// An environment variable for the command, as KEY=VALUE (repeatable).
    #[arg(long = "env", value_name = "K=V", value_parser = parse_key_value)]
    env: Vec<(String, String)>,
    /// The command's working directory in the guest.
    #[arg(long, value_name = "DIR")]
    workdir: Option<String>,
    /// Restore the VM from the image's base snapshot (made on first use) instead of booting it.
    #[arg(long)]
    warm: bool,
    /// Hypervisor: `qemu` (microvm; TCG or KVM) or `firecracker` (needs
    /// hardware KVM; the binary from $FIRECRACKER_BIN or PATH).
    #[arg(long, value_enum, default_value_t = Backend::Qemu)]
    backend: Backend,
    /// QEMU accelerator.
    #[arg(long, value_enum, default_value_t = AccelChoice::Auto)]
    accel: AccelChoice,
    /// The command and its arguments, after `--`.
    #[arg(last = true, required = true, value_name = "CMD")]
    command: Vec<String>,
}

/// Arguments of `firerunner vm rm`.
#[derive(clap::Args)]
#[command(group(clap::ArgGroup::new("which").required(true).args(["ids", "all", "orphans"])))]
struct RmArgs {
    /// The VMs to destroy, by id.
    ids: Vec<String>,
    /// Destroy every VM, whoever owns it.
    #[arg(long)]
    all: bool,
    /// Destroy the VMs whose owner process is gone.
    #[arg(long)]
    orphans: bool,
}

/// Runs `firerunner vm`.
pub fn run(args: Args) -> Result<ExitCode> {
    let root = runtime::default_root();
    match args.command {
        VmCommand::Run(args) => tokio::runtime::Runtime::new()?.block_on(run_command(args, root)),
        VmCommand::Ls => {
            print!("{}", list(&root)?);
            Ok(ExitCode::SUCCESS)
        }
        VmCommand::Rm(args) => remove(&root, &args),
    }
}

/// Runs the command on the backend `--backend` names: the one place that
/// chooses a hypervisor.
async fn run_on_chosen_backend(args: &RunArgs, spec: VmSpec, root: PathBuf) -> Result<ExitCode> {
    match args.backend {
        Backend::Qemu => run_in_vm(hypervisor::qemu(args.accel).await?, spec, args, root).await,
        Backend::Firecracker => {
            run_in_vm(hypervisor::firecracker(None).await?, spec, args, root).await
        }
    }
}

async fn spec_from_args(args: &RunArgs) -> Result<VmSpec> {
    super::image::guest_spec(&args.image, args.memory, args.vcpus).await
}

async fn run_command(args: RunArgs, root: PathBuf) -> Result<ExitCode> {
    let reaped = tokio::task::spawn_blocking({
        let root = root.clone();
        move || reaper::reap_orphans(&root)
    })
    .await?;
    report_reaped(&reaped);
    if args.warm {
        pool::remove_abandoned_snapshots(&snapshot_dir());
    }
    let spec = spec_from_args(&args).await?;
    let result = tokio::select! {
        result = run_on_chosen_backend(&args, spec, root.clone()) => result,
        _ = tokio::signal::ctrl_c() => Ok(ExitCode::from(INTERRUPTED)),
    };
    // Ctrl-C drops the session mid-way; what it left belongs to this process alone.
    destroy_own_vms(&root);
    result
}

/// Runs the command in a VM from `backend`, releasing the VM afterwards.
async fn run_in_vm<B: VmBackend>(
    backend: B,
    spec: VmSpec,
    args: &RunArgs,
    root: PathBuf,
) -> Result<ExitCode> {
    let config = SessionConfig {
        root,
        max_vms: 1,
        max_sessions: 1,
        acquire_timeout: None,
    };
    let manager = if args.warm {
        let pool = PoolConfig {
            size: 1,
            refill: false,
            snapshot_dir: snapshot_dir(),
        };
        SessionManager::with_pool(backend, config, spec.clone(), pool)
    } else {
        SessionManager::new(backend, config)
    };
    let mut session = manager.acquire(&spec).await?;
    session.mark_executing()?;
    let outcome = stream_command(&session, request(args)).await;
    match &outcome {
        Ok(status) if status.code == Some(0) => session.mark_complete()?,
        _ => session.mark_failed()?,
    }
    session.release().await?;
    manager.shutdown().await;
    Ok(exit_code(&outcome?, args.timeout))
}

/// Where base snapshots for `--warm` are kept: next to the images they come from.
fn snapshot_dir() -> PathBuf {
    image::default_cache_dir().join("snapshots")
}

fn request(args: &RunArgs) -> ExecRequest {
    let mut request = ExecRequest::argv(args.command.iter().cloned());
    request.env = args.env.iter().cloned().collect();
    request.cwd = args.workdir.clone();
    request.timeout_ms = args.timeout.map(|secs| secs.saturating_mul(1000));
    request
}

/// Streams the command's output as it comes and returns how it ended.
async fn stream_command<B: VmBackend>(
    session: &Session<B>,
    request: ExecRequest,
) -> Result<ExitStatus> {
    let mut handle = session.client().exec(request).await?;
    loop {
        match handle.next_event().await? {
            Some(ExecEvent::Output { stream, data, .. }) => {
                let written = match stream {
                    Stream::Stdout => write_now(&mut std::io::stdout().lock(), &data),
                    Stream::Stderr => write_now(&mut std::io::stderr().lock(), &data),
                };
                written.context("writing the command's output")?;
            }
            Some(ExecEvent::Started(_)) => {}
            Some(ExecEvent::Exit(status)) => return Ok(status),
            None => bail!("the guest agent closed the command's stream"),
        }
    }
}

fn write_now(out: &mut impl Write, data: &[u8]) -> std::io::Result<()> {
    out.write_all(data)?;
    out.flush()
}

/// The command's exit code, or 128 + the signal that killed it.
fn exit_code(status: &ExitStatus, timeout: Option<u64>) -> ExitCode {
    if status.timed_out {
        eprintln!(
            "firerunner: the command was killed after {}s",
            timeout.unwrap_or_default()
        );
    }
    let code = match (status.code, status.signal) {
        (Some(code), _) => code,
        (None, Some(signal)) => 128 + signal,
        (None, None) => 1,
    };
    ExitCode::from(u8::try_from(code).unwrap_or(1))
}

fn report_reaped(report: &ReapReport) {
    for freed in &report.freed {
        eprintln!(
            "firerunner: freed VM {} left by a dead owner{}",
            freed.id,
            describe(freed)
        );
    }
    for (id, err) in &report.failures {
        eprintln!("firerunner: cannot free VM {id}: {err}");
    }
}

/// Destroys the VMs this process owns (used after an interruption).
fn destroy_own_vms(root: &Path) {
    let me = ProcessId::current();
    for dir in VmDir::list(root).unwrap_or_default() {
        if dir.owner() == Some(me) {
            let _ = reaper::destroy_dir(dir);
        }
    }
}

fn describe(freed: &FreedVm) -> String {
    let mut parts: Vec<String> = freed
        .killed
        .iter()
        .map(|(role, pid)| format!("ended {role} {pid}"))
        .collect();
    parts.extend(freed.taps.iter().map(|tap| format!("deleted tap {tap}")));
    if parts.is_empty() {
        String::new()
    } else {
        format!(" ({})", parts.join(", "))
    }
}

/// The `vm ls` table: id, owner (alive or dead), recorded processes, age.
fn list(root: &Path) -> Result<String> {
    let dirs = VmDir::list(root)?;
    let mut rows = vec![[
        "ID".to_string(),
        "OWNER".to_string(),
        "PROCESSES".to_string(),
        "AGE".to_string(),
    ]];
    rows.extend(dirs.iter().map(vm_row));
    let mut widths = [0usize; 4];
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.len());
        }
    }
    let mut table = String::new();
    for row in &rows {
        let line = format!(
            "{:<w0$}  {:<w1$}  {:<w2$}  {}",
            row[0],
            row[1],
            row[2],
            row[3],
            w0 = widths[0],
            w1 = widths[1],
            w2 = widths[2],
        );
        table.push_str(line.trim_end());
        table.push('\n');
    }
    Ok(table)
}

/// One VM's row: its id, its owner, its processes and its age.
fn vm_row(dir: &VmDir) -> [String; 4] {
    let owner = match dir.owner() {
        Some(owner) if reaper::is_running(&owner) => format!("{} alive", owner.pid),
        Some(owner) => format!("{} dead", owner.pid),
        None => "-".to_string(),
    };
    let processes: Vec<String> = dir
        .processes()
        .into_iter()
        .map(|(role, process)| {
            let state = if reaper::is_running(&process) {
                ""
            } else {
                " (gone)"
            };
            format!("{role} {}{state}", process.pid)
        })
        .collect();
    let age = reaper::age(dir).map_or("-".to_string(), human_duration);
    let processes = if processes.is_empty() {
        "-".to_string()
    } else {
        processes.join(", ")
    };
    [dir.id().to_string(), owner, processes, age]
}

fn human_duration(duration: Duration) -> String {
    let secs = duration.as_secs();
    match secs {
        0..=119 => format!("{secs}s"),
        120..=7199 => format!("{}m", secs / 60),
        7200..=172_799 => format!("{}h", secs / 3600),
        _ => format!("{}d", secs / 86_400),
    }
}

/// `vm rm`: destroys the named VMs, every VM, or the orphans.
fn remove(root: &Path, args: &RmArgs) -> Result<ExitCode> {
    let mut ok = true;
    if args.orphans {
        let report = reaper::reap_orphans(root);
        for freed in &report.freed {
            println!("removed {}{}", freed.id, describe(freed));
        }
        for (id, err) in &report.failures {
            eprintln!("firerunner: cannot remove VM {id}: {err}");
            ok = false;
        }
    } else if args.all {
        for dir in VmDir::list(root)? {
            ok &= destroy_one(dir);
        }
    } else {
        for id in &args.ids {
            let plain = !id.is_empty()
                && id
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
            match VmDir::open(root.join("vms").join(id)).filter(|_| plain) {
                Some(dir) => ok &= destroy_one(dir),
                None => {
                    eprintln!("firerunner: no VM {id}");
                    ok = false;
                }
            }
        }
    }
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Destroys one VM and says so; returns whether that worked.
fn destroy_one(dir: VmDir) -> bool {
    let id = dir.id().to_string();
    match reaper::destroy_dir(dir) {
        Ok(freed) => {
            println!("removed {id}{}", describe(&freed));
            true
        }
        Err(err) => {
            eprintln!("firerunner: cannot remove VM {id}: {err}");
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rm(ids: &[&str], all: bool, orphans: bool) -> RmArgs {
        RmArgs {
            ids: ids.iter().map(|s| s.to_string()).collect(),
            all,
            orphans,
        }
    }

    fn orphan(root: &Path, id: &str) -> VmDir {
        let dir = VmDir::create(root, id).unwrap();
        std::fs::write(dir.join("owner"), "999999999 1\n").unwrap();
        dir
    }

    #[test]
    fn ls_shows_each_vm_with_its_owner_and_processes() {
        let root = tempfile::tempdir().unwrap();
        let mine = VmDir::create(root.path(), "mine").unwrap();
        mine.record_process("qemu", std::process::id()).unwrap();
        orphan(root.path(), "theirs");
        let table = list(root.path()).unwrap();
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), 3, "{table}");
        assert!(lines[0].starts_with("ID") && lines[0].ends_with("AGE"));
        let me = std::process::id();
        assert!(lines[1].starts_with("mine"), "{table}");
        assert!(lines[1].contains(&format!("{me} alive")), "{table}");
        assert!(lines[1].contains(&format!("qemu {me}")), "{table}");
        assert!(
            lines[1].ends_with("0s") || lines[1].ends_with("1s"),
            "{table}"
        );
        assert!(lines[2].starts_with("theirs"), "{table}");
        assert!(lines[2].contains("999999999 dead"), "{table}");
    }

    #[test]
    fn rm_orphans_keeps_live_owners_and_rm_all_takes_the_rest() {
        let root = tempfile::tempdir().unwrap();
        let live = VmDir::create(root.path(), "live").unwrap();
        let dead = orphan(root.path(), "dead");
        assert_eq!(
            remove(root.path(), &rm(&[], false, true)).unwrap(),
            ExitCode::SUCCESS
        );
        assert!(!dead.path().exists() && live.path().exists());
        assert_eq!(
            remove(root.path(), &rm(&[], true, false)).unwrap(),
            ExitCode::SUCCESS
        );
        assert!(VmDir::list(root.path()).unwrap().is_empty());
    }

    #[test]
    fn rm_by_id_reports_unknown_ids() {
        let root = tempfile::tempdir().unwrap();
        let one = VmDir::create(root.path(), "one").unwrap();
        let two = VmDir::create(root.path(), "two").unwrap();
        assert_eq!(
            remove(
                root.path(),
                &rm(&["one", "missing", "../vms"], false, false)
            )
            .unwrap(),
            ExitCode::FAILURE
        );
        assert!(!one.path().exists() && two.path().exists());
    }

    #[test]
    fn exit_codes_follow_the_shell_convention() {
        let status = |code, signal| ExitStatus {
            code,
            signal,
            duration_ms: 1,
            timed_out: false,
        };
        assert_eq!(exit_code(&status(Some(3), None), None), ExitCode::from(3));
        assert_eq!(exit_code(&status(None, Some(9)), None), ExitCode::from(137));
        assert_eq!(
            exit_code(&status(None, Some(15)), None),
            ExitCode::from(143)
        );
    }
}
