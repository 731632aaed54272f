//! The HTTP side: webhooks, health, metrics, the dashboard and its live
//! stream, and the operators' JSON API. Handlers are thin: they read the
//! shared [`AppState`] and the store, nothing else.

mod api;
mod pages;
pub mod session;
mod settings_api;
mod settings_pages;
mod webhook;

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::json;
use tokio_stream::wrappers::BroadcastStream;
use tokio_stream::{Stream, StreamExt};

use crate::state::{prometheus, AppState};

/// Every route of the service.
pub fn router(state: AppState) -> Router {
    let viewers = Router::new()
        .route("/events", get(events))
        .merge(pages::routes())
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            session::require_viewer,
        ));
    Router::new()
        .route("/webhook", post(webhook::receive))
        .route("/health", get(health))
        .route("/metrics", get(metrics))
        .route("/login", get(session::login_page).post(session::login))
        .merge(pages::assets())
        .merge(viewers)
        .nest("/api", api::routes(state.clone()))
        .layer(axum::middleware::from_fn(session::security_headers))
        .layer(tower_http::trace::TraceLayer::new_for_http())
        .with_state(state)
}

/// `GET /health`: 200 when the store answers, 503 otherwise.
async fn health(State(state): State<AppState>) -> impl IntoResponse {
    let store = state.store.ping().await;
    let status = if store.is_ok() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        status,
        Json(json!({
            "status": if store.is_ok() { "ok" } else { "degraded" },
            "store": store.map_or_else(|err| err.to_string(), |_| "ok".into()),
            "version": env!("CARGO_PKG_VERSION"),
            "uptime_seconds": state.started.elapsed().as_secs(),
            "worker": state.config.worker.id,
        })),
    )
}

/// `GET /metrics`: Prometheus text format. Queue gauges are read from the
/// store at scrape time, so every host reports the shared queue.
async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    if let Ok(counts) = state.store.counts().await {
        metrics::gauge!("firerunner_queue_depth").set(counts.queued as f64);
        metrics::gauge!("firerunner_runs_running").set(counts.running as f64);
    }
    let capacity = state.capacity();
    metrics::gauge!("firerunner_vms_limit").set(capacity.max_vms as f64);
    metrics::gauge!("firerunner_sessions_limit").set(capacity.max_sessions as f64);
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        prometheus().render(),
    )
}

/// `GET /events`: the live stream (SSE), one event per change, named by kind.
async fn events(
    State(state): State<AppState>,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let initial = Event::default()
        .event("capacity")
        .json_data(state.capacity())
        .unwrap_or_default();
    let live = BroadcastStream::new(state.live.subscribe()).filter_map(|event| {
        let event = event.ok()?;
        Event::default().event(event.kind()).json_data(&event).ok()
    });
    let closed = state.live.closed();
    let end = tokio_stream::once(()).then(move |()| {
        let closed = closed.clone();
        async move {
            closed.cancelled().await;
            None
        }
    });
    let live = live
        .map(Some)
        .merge(end)
        .take_while(Option::is_some)
        .filter_map(|event| event);
    let stream = tokio_stream::once(initial).chain(live).map(Ok);
    Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
}
