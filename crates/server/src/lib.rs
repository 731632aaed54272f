//! firerunner's service: signed webhooks in, a durable queue, runs in
//! microVMs, commit statuses and one pull request comment out, with a live
//! dashboard, a JSON API and Prometheus metrics.
//!
//! The data flows through rooms in this order: [`http`] receives and stores
//! a delivery; [`dispatch`] turns it into queued runs; [`worker`] claims
//! runs (leases in the [`store`], shared by every host on PostgreSQL) and
//! hands them to a [`executor::RunExecutor`]; [`report`] writes back to
//! GitHub; [`live`] feeds the dashboard. [`secrets`] and [`variables`]
//! hold what runs read as `secrets` and `vars` (sealed by [`vault`]), and
//! [`environments`] guards the jobs that name an `environment:`.
#![warn(missing_docs)]

pub mod config;
pub mod dispatch;
pub mod environments;
pub mod executor;
pub mod http;
pub mod live;
pub mod masking;
pub mod report;
pub mod secrets;
pub mod state;
pub mod store;
pub mod variables;
pub mod vault;
pub mod vm_ops;
pub mod worker;

use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

pub use config::Config;
pub use executor::{RunExecutor, VmRunExecutor};
pub use state::AppState;
pub use store::{
    Approval, ApprovalState, ClaimedRun, Concurrency, DeliveryRecord, DeliveryState, Enqueued,
    EnvironmentRules, ErrorRecord, JobRecord, JobState, NewRun, RunCounts, RunRecord, RunState,
    SecretInfo, Store, StoreError, UnknownState, WorkerRecord,
};

/// What a process runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Roles {
    /// Accept webhooks, serve the dashboard and API, dispatch deliveries.
    pub http: bool,
    /// Claim and run queued runs.
    pub worker: bool,
}

/// Runs the service until `shutdown` fires: the HTTP server on `listener`
/// (when `roles.http`), the dispatcher, the worker with `executor` (when
/// `roles.worker`), and the forwarding of live log lines to the dashboard.
/// On shutdown the HTTP server finishes its requests and the worker puts
/// the runs it was executing back in the queue.
pub async fn serve<E: RunExecutor>(
    state: AppState,
    roles: Roles,
    listener: Option<TcpListener>,
    executor: Option<Arc<E>>,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    reseal_secrets(&state).await;
    let mut tasks = JoinSet::new();
    tasks.spawn(forward_log_lines(state.clone(), shutdown.clone()));
    if roles.http {
        tasks.spawn(dispatch::run_dispatcher(state.clone(), shutdown.clone()));
    }
    if let (true, Some(executor)) = (roles.worker, executor) {
        tasks.spawn(worker::run_worker(
            state.clone(),
            executor,
            shutdown.clone(),
        ));
    }
    let served = match (roles.http, listener) {
        (true, Some(listener)) => serve_http(&state, listener, &shutdown).await,
        _ => {
            shutdown.cancelled().await;
            Ok(())
        }
    };
    shutdown.cancel();
    while tasks.join_next().await.is_some() {}
    if let Some(learning) = &state.learning {
        if let Err(err) = learning.flush().await {
            tracing::error!("saving what was learned: {err}");
        }
    }
    served
}

/// During a key rotation (`secrets.previous_key` set), seals every secret
/// the previous key sealed again with the current one, and says so.
async fn reseal_secrets(state: &AppState) {
    if state.config.secrets.previous_key.is_empty() || !state.settings.secrets_enabled() {
        return;
    }
    match state.settings.rotate().await {
        Ok(rotation) => {
            tracing::info!(
                key = rotation.key_id,
                resealed = rotation.resealed,
                "secrets sealed with the current key; secrets.previous_key can be removed"
            );
            for problem in rotation.unreadable {
                state.report_error("secrets", &problem).await;
            }
        }
        Err(err) => {
            state
                .report_error("secrets", &format!("rotating the secrets key: {err}"))
                .await
        }
    }
}

/// Serves the dashboard, API and webhooks on `listener` until `shutdown`
/// fires, then finishes the requests under way.
async fn serve_http(
    state: &AppState,
    listener: TcpListener,
    shutdown: &CancellationToken,
) -> std::io::Result<()> {
    let app = http::router(state.clone());
    let stop = shutdown.clone();
    let live = state.live.clone();
    axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            stop.cancelled().await;
            live.close();
        })
        .await
}

/// Forwards the jobs' log lines to the dashboard's live stream until
/// `shutdown` fires.
async fn forward_log_lines(state: AppState, shutdown: CancellationToken) {
    use firerunner_engine::logs::LogStream;
    use tokio::sync::broadcast::error::RecvError;
    let mut lines = state.logs.subscribe();
    loop {
        tokio::select! {
            line = lines.recv() => match line {
                Ok(line) => state.live.publish(live::LiveEvent::Log {
                    run_id: line.run_id,
                    job: line.job,
                    stream: match line.stream {
                        LogStream::Stdout => "stdout",
                        LogStream::Stderr => "stderr",
                        LogStream::Runner => "runner",
                    },
                    text: line.text,
                }),
                Err(RecvError::Lagged(_)) => {}
                Err(RecvError::Closed) => return,
            },
            _ = shutdown.cancelled() => return,
        }
    }
}
