//! `POST /webhook`: check, store, answer. Nothing slow happens here: the
//! delivery is stored durably and the dispatcher is woken; discovery and
//! runs happen in the background.

use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use firerunner_github::webhook::{verify_signature, WebhookEvent};
use serde_json::json;

use crate::live::LiveEvent;
use crate::state::AppState;
use sha2::{Digest, Sha256};

use crate::store::{now_ms, DeliveryRecord, DeliveryState, Recorded, StoreError};

/// How a webhook request ended, for the answer, the log and the metrics.
struct Verdict {
    status: StatusCode,
    result: &'static str,
    message: String,
}

impl Verdict {
    fn new(status: StatusCode, result: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            result,
            message: message.into(),
        }
    }
}

/// Handles one webhook delivery.
pub async fn receive(State(state): State<AppState>, headers: HeaderMap, body: Body) -> Response {
    let started = Instant::now();
    let delivery = header(&headers, "x-github-delivery")
        .unwrap_or("-")
        .to_string();
    let verdict = match state.webhook_slots.clone().try_acquire_owned() {
        Ok(_permit) => accept(&state, &headers, body).await,
        Err(_) => Verdict::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "busy",
            "too many webhook requests at once; GitHub may redeliver this one",
        ),
    };
    metrics::counter!("firerunner_webhooks_total", "result" => verdict.result).increment(1);
    metrics::histogram!("firerunner_webhook_seconds").record(started.elapsed().as_secs_f64());
    if verdict.status.is_client_error() || verdict.status.is_server_error() {
        tracing::warn!(
            delivery,
            result = verdict.result,
            "webhook refused: {}",
            verdict.message
        );
    } else {
        tracing::debug!(
            delivery,
            result = verdict.result,
            "webhook {}",
            verdict.message
        );
    }
    (
        verdict.status,
        Json(json!({ "result": verdict.result, "message": verdict.message })),
    )
        .into_response()
}

fn header<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers.get(name).and_then(|value| value.to_str().ok())
}

async fn accept(state: &AppState, headers: &HeaderMap, body: Body) -> Verdict {
    match checked(state, headers, body).await {
        Ok(delivery) => store(state, delivery).await,
        Err(verdict) => verdict,
    }
}

/// A signed delivery, checked and parsed, not yet stored.
struct Delivery<'h> {
    id: &'h str,
    event_name: &'h str,
    event: WebhookEvent,
    body: Bytes,
}

/// The delivery in a request whose size, signature and headers are right.
async fn checked<'h>(
    state: &AppState,
    headers: &'h HeaderMap,
    body: Body,
) -> Result<Delivery<'h>, Verdict> {
    let body = read_body(state, headers, body).await?;
    if state.config.webhook_secret.is_empty() {
        return Err(Verdict::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "this server has no webhook secret configured and accepts no webhooks",
        ));
    }
    verify_signature(
        state.config.webhook_secret.as_bytes(),
        &body,
        header(headers, "x-hub-signature-256"),
    )
    .map_err(|err| Verdict::new(StatusCode::UNAUTHORIZED, "unauthorized", err.to_string()))?;
    let (event_name, id) = names(headers)?;
    let event = WebhookEvent::parse(event_name, &body)
        .map_err(|err| Verdict::new(StatusCode::BAD_REQUEST, "malformed", err.to_string()))?;
    Ok(Delivery {
        id,
        event_name,
        event,
        body,
    })
}

/// The body, within the size limit and the time limit.
async fn read_body(state: &AppState, headers: &HeaderMap, body: Body) -> Result<Bytes, Verdict> {
    let limit = state.config.max_body_bytes;
    let too_large = || {
        Verdict::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
            format!("body larger than {limit} bytes"),
        )
    };
    let declared = header(headers, "content-length").and_then(|n| n.parse::<usize>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Err(too_large());
    }
    let timeout = Duration::from_secs(state.config.limits.webhook_timeout_seconds);
    match tokio::time::timeout(timeout, axum::body::to_bytes(body, limit)).await {
        Err(_) => Err(Verdict::new(
            StatusCode::REQUEST_TIMEOUT,
            "timeout",
            format!("the body did not arrive within {}s", timeout.as_secs()),
        )),
        Ok(Ok(body)) => Ok(body),
        Ok(Err(err)) => Err(
            if std::error::Error::source(&err)
                .is_some_and(|source| source.is::<http_body_util::LengthLimitError>())
            {
                too_large()
            } else {
                Verdict::new(StatusCode::BAD_REQUEST, "truncated", format!("body: {err}"))
            },
        ),
    }
}

/// The event name and the delivery id the headers give.
fn names(headers: &HeaderMap) -> Result<(&str, &str), Verdict> {
    let bad_request = |message| Verdict::new(StatusCode::BAD_REQUEST, "bad_request", message);
    let Some(event_name) = header(headers, "x-github-event") else {
        return Err(bad_request("missing X-GitHub-Event header"));
    };
    let Some(delivery_id) = header(headers, "x-github-delivery").filter(|id| !id.is_empty()) else {
        return Err(bad_request("missing X-GitHub-Delivery header"));
    };
    if delivery_id.len() > 200 {
        return Err(bad_request("X-GitHub-Delivery is too long"));
    }
    Ok((event_name, delivery_id))
}

/// Stores a checked delivery and wakes the dispatcher.
async fn store(state: &AppState, delivery: Delivery<'_>) -> Verdict {
    let (delivery_id, event_name) = (delivery.id, delivery.event_name);
    match delivery.record(state).await {
        Ok(Recorded::New) => {
            state.wake_dispatcher.notify_one();
            let message = format!("{event_name} delivery stored");
            Verdict::new(StatusCode::ACCEPTED, "accepted", message)
        }
        Ok(Recorded::Duplicate) => Verdict::new(
            StatusCode::OK,
            "duplicate",
            format!("delivery {delivery_id} was already received"),
        ),
        Ok(Recorded::Replay) => Verdict::new(
            StatusCode::CONFLICT,
            "replay",
            "this signed body was already received under another delivery id",
        ),
        Err(err) => {
            let message = format!("storing delivery {delivery_id}: {err}");
            state.report_error("webhook", &message).await;
            Verdict::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "store_error",
                "the delivery could not be stored; GitHub may redeliver it",
            )
        }
    }
}

impl Delivery<'_> {
    /// Records the delivery with its body's SHA-256; a new one goes to the
    /// dashboard.
    async fn record(&self, state: &AppState) -> Result<Recorded, StoreError> {
        // Valid JSON is valid UTF-8.
        let payload = String::from_utf8_lossy(&self.body);
        let repository = self.event.repository().map(|r| r.full_name.clone());
        let digest: String = Sha256::digest(&self.body)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        let recorded = state
            .store
            .record_signed_delivery(
                self.id,
                self.event_name,
                repository.as_deref(),
                &payload,
                Some(&digest),
            )
            .await?;
        if recorded == Recorded::New {
            state.live.publish(LiveEvent::Delivery(DeliveryRecord {
                delivery_id: self.id.to_string(),
                event: self.event_name.to_string(),
                repository,
                received_at: now_ms(),
                state: DeliveryState::Received,
                note: None,
                attempts: 0,
            }));
        }
        Ok(recorded)
    }
}
