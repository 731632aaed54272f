//! `/api`: the operators' JSON API, behind a bearer token (off when no
//! token is configured). Runs, jobs, logs, deliveries, workers, and VMs an
//! operator can create, exec in and delete.

use axum::extract::{Path, Query, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;

use crate::state::AppState;
use crate::vm_ops::{ExecInput, VmOperations};

pub(super) fn routes(state: AppState) -> Router<AppState> {
    Router::new()
        .route("/status", get(status))
        .route("/runs", get(runs))
        .route("/runs/{id}", get(run))
        .route("/runs/{id}/jobs/{job}/log", get(log))
        .route("/deliveries", get(deliveries))
        .route("/workers", get(workers))
        .route("/errors", get(errors))
        .route("/vms", get(vms).post(create_vm))
        .route("/vms/{id}", axum::routing::delete(remove_vm))
        .route("/vms/{id}/exec", post(exec_vm))
        .merge(super::settings_api::routes())
        .layer(middleware::from_fn_with_state(state, require_token))
}

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(json!({ "error": message.into() }))).into_response()
}

/// Lets a request through only with `Authorization: Bearer <api_token>`.
async fn require_token(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let expected = state.config.api_token.as_bytes();
    if expected.is_empty() {
        return error(
            StatusCode::FORBIDDEN,
            "the API is off: set api_token in the config",
        );
    }
    let given = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("")
        .as_bytes();
    // Constant time in the token's content.
    if !super::session::same_secret(given, expected) {
        return error(StatusCode::UNAUTHORIZED, "missing or wrong bearer token");
    }
    next.run(request).await
}

fn store_error(err: crate::store::StoreError) -> Response {
    error(StatusCode::SERVICE_UNAVAILABLE, err.to_string())
}

/// The limit of a listing.
#[derive(Debug, Deserialize)]
struct Limit {
    limit: Option<i64>,
}

impl Limit {
    fn get(&self) -> i64 {
        self.limit.unwrap_or(50).clamp(1, 1000)
    }
}

async fn status(State(state): State<AppState>) -> Response {
    let counts = match state.store.counts().await {
        Ok(counts) => counts,
        Err(err) => return store_error(err),
    };
    let workers = state.store.workers().await.unwrap_or_default();
    let deliveries = state.store.delivery_counts().await.unwrap_or_default();
    let running_jobs = state.store.running_jobs().await.unwrap_or_default();
    Json(json!({
        "version": env!("CARGO_PKG_VERSION"),
        "uptime_seconds": state.started.elapsed().as_secs(),
        "database": if state.store.is_postgres() { "postgres" } else { "sqlite" },
        "runs": counts,
        "deliveries": deliveries
            .into_iter()
            .map(|(state, count)| (state.as_str(), count))
            .collect::<std::collections::BTreeMap<_, _>>(),
        "capacity": state.capacity(),
        "workers": workers,
        "running_jobs": running_jobs,
        "now_ms": crate::store::now_ms(),
    }))
    .into_response()
}

async fn runs(State(state): State<AppState>, Query(limit): Query<Limit>) -> Response {
    match state.store.recent_runs(limit.get()).await {
        Ok(runs) => Json(runs).into_response(),
        Err(err) => store_error(err),
    }
}

async fn run(State(state): State<AppState>, Path(id): Path<String>) -> Response {
    match (state.store.run(&id).await, state.store.jobs(&id).await) {
        (Ok(Some(run)), Ok(jobs)) => Json(json!({ "run": run, "jobs": jobs })).into_response(),
        (Ok(None), _) => error(StatusCode::NOT_FOUND, format!("no run {id}")),
        (Err(err), _) | (_, Err(err)) => store_error(err),
    }
}

async fn log(State(state): State<AppState>, Path((id, job)): Path<(String, String)>) -> Response {
    match state.job_log(&id, &job).await {
        Ok(Some(lines)) => Json(lines).into_response(),
        Ok(None) => error(
            StatusCode::NOT_FOUND,
            format!("no log for job {job:?} of run {id} yet"),
        ),
        Err(err) => error(StatusCode::INTERNAL_SERVER_ERROR, err),
    }
}

async fn deliveries(State(state): State<AppState>, Query(limit): Query<Limit>) -> Response {
    match state.store.recent_deliveries(limit.get()).await {
        Ok(list) => Json(list).into_response(),
        Err(err) => store_error(err),
    }
}

async fn workers(State(state): State<AppState>) -> Response {
    match state.store.workers().await {
        Ok(list) => Json(list).into_response(),
        Err(err) => store_error(err),
    }
}

async fn errors(State(state): State<AppState>, Query(limit): Query<Limit>) -> Response {
    match state.store.recent_errors(limit.get()).await {
        Ok(list) => Json(list).into_response(),
        Err(err) => store_error(err),
    }
}

fn vm_operations(state: &AppState) -> Result<&dyn VmOperations, Box<Response>> {
    state.vms.as_deref().ok_or_else(|| {
        Box::new(error(
            StatusCode::NOT_IMPLEMENTED,
            "this process runs no VMs (worker disabled)",
        ))
    })
}

async fn vms(State(state): State<AppState>) -> Response {
    match vm_operations(&state) {
        Ok(ops) => Json(ops.list()).into_response(),
        Err(response) => *response,
    }
}

async fn create_vm(State(state): State<AppState>) -> Response {
    let ops = match vm_operations(&state) {
        Ok(ops) => ops,
        Err(response) => return *response,
    };
    match ops.create().await {
        Ok(info) => (StatusCode::CREATED, Json(info)).into_response(),
        Err(err) => error(err.status(), err.to_string()),
    }
}

async fn remove_vm(State(state): State<AppState>, Path(id): Path<String>) -> Response {
    let ops = match vm_operations(&state) {
        Ok(ops) => ops,
        Err(response) => return *response,
    };
    match ops.remove(&id).await {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(err) => error(err.status(), err.to_string()),
    }
}

async fn exec_vm(
    State(state): State<AppState>,
    Path(id): Path<String>,
    input: Result<Json<ExecInput>, axum::extract::rejection::JsonRejection>,
) -> Response {
    let ops = match vm_operations(&state) {
        Ok(ops) => ops,
        Err(response) => return *response,
    };
    let Json(input) = match input {
        Ok(input) => input,
        Err(rejection) => return error(StatusCode::BAD_REQUEST, rejection.body_text()),
    };
    if input.argv.is_empty() {
        return error(StatusCode::BAD_REQUEST, "field argv: must name a program");
    }
    match ops.exec(&id, input).await {
        Ok(output) => Json(output).into_response(),
        Err(err) => error(err.status(), err.to_string()),
    }
}
