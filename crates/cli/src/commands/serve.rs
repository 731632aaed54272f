//! `firerunner serve` and `firerunner worker`: the service of a team's
//! host. `serve` accepts webhooks, serves the dashboard, API and metrics,
//! dispatches deliveries and (unless `worker.enabled = false`) runs jobs;
//! `worker` only runs jobs, taking them from the shared store.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use firerunner_engine::stores::artifacts::ArtifactStore;
use firerunner_engine::stores::cache::{CacheLimits, CacheStore};
use firerunner_server::vm_ops::SessionVmOperations;
use firerunner_server::{AppState, Config, Roles, VmRunExecutor};
use firerunner_vm::pool::PoolConfig;
use firerunner_vm::qemu::QemuBackend;
use firerunner_vm::session::{SessionConfig, SessionManager};
use firerunner_vm::{image, VmBackend, VmSpec};
use tokio::net::TcpListener;

use super::hypervisor::{self, AccelChoice, Backend};
use tokio_util::sync::CancellationToken;

/// Arguments of `firerunner serve` / `firerunner worker`.
#[derive(clap::Args)]
pub struct Args {
    /// The TOML config file (every key can also be set by a FIRERUNNER_* variable).
    #[arg(short, long)]
    config: Option<PathBuf>,
}

/// Runs `serve` (HTTP, dispatch and, when enabled, jobs) or `worker` (jobs only).
pub fn run(args: Args, worker_only: bool) -> Result<ExitCode> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,tower_http=warn,sqlx=warn".into()),
        )
        .with_writer(std::io::stderr)
        // Colour codes only for a person at a terminal, not for journald or a log file.
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    let config = Config::load(args.config.as_deref())?;
    let roles = Roles {
        http: !worker_only,
        worker: worker_only || config.worker.enabled,
    };
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(start(config, roles))
}

async fn start(config: Config, roles: Roles) -> Result<ExitCode> {
    firerunner_server::state::prometheus();
    let listener = if roles.http {
        Some(
            TcpListener::bind(&config.listen)
                .await
                .with_context(|| format!("cannot listen on {}", config.listen))?,
        )
    } else {
        None
    };
    let state = AppState::open(config.clone()).await?;
    if state.config.webhook_secret.is_empty() && roles.http {
        tracing::warn!("no webhook_secret is configured: every webhook will be refused");
    }
    if state.github.is_none() {
        tracing::warn!("no GitHub credentials (github.token or github.app_id): deliveries cannot be dispatched");
    }
    let shutdown = CancellationToken::new();
    cancel_on_signal(shutdown.clone());
    if let Some(listener) = &listener {
        tracing::info!("listening on http://{}", listener.local_addr()?);
    }
    if !roles.worker {
        firerunner_server::serve::<VmRunExecutor<QemuBackend>>(
            state, roles, listener, None, shutdown,
        )
        .await?;
        return Ok(ExitCode::SUCCESS);
    }
    // Both were checked when the configuration was loaded.
    let accel: AccelChoice = hypervisor::from_config("vm.accel", &config.vm.accel)?;
    match hypervisor::from_config("vm.backend", &config.vm.backend)? {
        Backend::Firecracker => {
            let jailer = hypervisor::service_jailer(
                &config.vm.jailer,
                std::env::var_os("FIRECRACKER_JAILER").map(Into::into),
                running_as_root(),
            )?;
            let backend = hypervisor::firecracker(jailer).await?;
            run_with(backend, state, roles, listener, shutdown).await
        }
        Backend::Qemu => {
            let backend = hypervisor::qemu(accel).await?;
            run_with(backend, state, roles, listener, shutdown).await
        }
    }
}

/// Cancels `shutdown` at Ctrl-C or SIGTERM.
fn cancel_on_signal(shutdown: CancellationToken) {
    tokio::spawn(async move {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("SIGTERM handler");
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        tracing::info!("shutting down");
        shutdown.cancel();
    });
}

async fn run_with<B: VmBackend>(
    backend: B,
    state: AppState,
    roles: Roles,
    listener: Option<TcpListener>,
    shutdown: CancellationToken,
) -> Result<ExitCode> {
    let config = state.config.clone();
    let runtime_root = firerunner_vm::runtime::default_root();
    let reaped = firerunner_vm::reaper::reap_orphans(&runtime_root);
    if !reaped.freed.is_empty() {
        tracing::warn!(
            "freed {} VM(s) left by processes that died",
            reaped.freed.len()
        );
    }
    tracing::info!(
        "preparing the {} guest image (built once, then cached)",
        config.vm.image
    );
    let spec: VmSpec =
        super::image::guest_spec(&config.vm.image, config.vm.memory_mib, config.vm.vcpus).await?;
    let sessions = sessions(backend, &config, runtime_root, &spec);
    let artifacts = Arc::new(ArtifactStore::open(&config.data_dir.join("artifacts"))?);
    let cache = Arc::new(CacheStore::open(
        &config.data_dir.join("actions-cache"),
        CacheLimits::default(),
    )?);
    let executor = Arc::new(VmRunExecutor::new(
        sessions.clone(),
        spec.clone(),
        state.logs.clone(),
        artifacts.clone(),
        cache.clone(),
        image::default_cache_dir().join("actions"),
        config.limits.max_sessions,
    ));
    let state =
        state.with_vm_operations(Arc::new(SessionVmOperations::new(sessions.clone(), spec)));
    let watcher = tokio::spawn(watch(
        state.clone(),
        sessions.clone(),
        artifacts,
        cache,
        shutdown.clone(),
    ));
    firerunner_server::serve(state, roles, listener, Some(executor), shutdown).await?;
    watcher.abort();
    sessions.shutdown().await;
    Ok(ExitCode::SUCCESS)
}

/// Whether this process runs as root (the owner of `/proc/self`).
fn running_as_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

/// The session manager of the worker, with a pool of warm VMs when configured.
fn sessions<B: VmBackend>(
    backend: B,
    config: &Config,
    root: PathBuf,
    spec: &VmSpec,
) -> SessionManager<B> {
    let session_config = SessionConfig {
        root,
        max_vms: config.limits.max_vms,
        max_sessions: config.limits.max_sessions,
        acquire_timeout: None,
    };
    if config.limits.warm_vms == 0 {
        return SessionManager::new(backend, session_config);
    }
    SessionManager::with_pool(
        backend,
        session_config,
        spec.clone(),
        PoolConfig {
            size: config.limits.warm_vms,
            refill: true,
            snapshot_dir: image::default_cache_dir().join("snapshots"),
        },
    )
}

/// Until `shutdown`: publishes the sessions' capacity every second and
/// applies the artifact and cache retention every hour.
async fn watch<B: VmBackend>(
    state: AppState,
    sessions: SessionManager<B>,
    artifacts: Arc<ArtifactStore>,
    cache: Arc<CacheStore>,
    shutdown: CancellationToken,
) {
    let mut interval = tokio::time::interval(Duration::from_secs(1));
    let mut retention = tokio::time::interval(Duration::from_secs(3600));
    loop {
        tokio::select! {
            _ = interval.tick() => {
                let m = sessions.metrics();
                state.update_capacity(|c| {
                    c.vms_running = m.vms_running;
                    c.sessions = m.created + m.executing + m.completed + m.failed;
                    c.warm_ready = m.pool_ready;
                });
            }
            _ = retention.tick() => {
                let expired = artifacts.expire().map(|v| v.len()).unwrap_or(0);
                let evicted = cache.evict().map(|v| v.len()).unwrap_or(0);
                if expired + evicted > 0 {
                    tracing::info!("retention: removed {expired} artifact(s), {evicted} cache entr(ies)");
                }
            }
            _ = shutdown.cancelled() => return,
        }
    }
}
