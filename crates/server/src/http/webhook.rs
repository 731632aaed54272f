//! `POST /webhook`: check, store, answer. Nothing slow happens here: the
//! delivery is stored durably and the dispatcher is woken; discovery and
//! runs happen in the background.

use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use firerunner_github::webhook::{verify_signature, WebhookEvent};
use serde_json::json;

use crate::live::LiveEvent;
use crate::state::AppState;
use sha2::{Digest, Sha256};

use crate::store::{now_ms, DeliveryRecord, DeliveryState, Recorded};

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
    let limit = state.config.max_body_bytes;
    let declared = header(headers, "content-length").and_then(|n| n.parse::<usize>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Verdict::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
            format!("body larger than {limit} bytes"),
        );
    }
    let timeout = Duration::from_secs(state.config.limits.webhook_timeout_seconds);
    let body = match tokio::time::timeout(timeout, axum::body::to_bytes(body, limit)).await {
        Err(_) => {
            return Verdict::new(
                StatusCode::REQUEST_TIMEOUT,
                "timeout",
                format!("the body did not arrive within {}s", timeout.as_secs()),
            )
        }
        Ok(Ok(body)) => body,
        Ok(Err(err)) => {
            let too_large = std::error::Error::source(&err)
                .is_some_and(|source| source.is::<http_body_util::LengthLimitError>());
            return if too_large {
                Verdict::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "too_large",
                    format!("body larger than {limit} bytes"),
                )
            } else {
                Verdict::new(StatusCode::BAD_REQUEST, "truncated", format!("body: {err}"))
            };
        }
    };
    if state.config.webhook_secret.is_empty() {
        return Verdict::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "this server has no webhook secret configured and accepts no webhooks",
        );
    }
    if let Err(err) = verify_signature(
        state.config.webhook_secret.as_bytes(),
        &body,
        header(headers, "x-hub-signature-256"),
    ) {
        return Verdict::new(StatusCode::UNAUTHORIZED, "unauthorized", err.to_string());
    }
    let Some(event_name) = header(headers, "x-github-event") else {
        return Verdict::new(
            StatusCode::BAD_REQUEST,
            "bad_request",
            "missing X-GitHub-Event header",
        );
    };
    let Some(delivery_id) = header(headers, "x-github-delivery").filter(|id| !id.is_empty()) else {
        return Verdict::new(
            StatusCode::BAD_REQUEST,
            "bad_request",
            "missing X-GitHub-Delivery header",
        );
    };
    if delivery_id.len() > 200 {
        return Verdict::new(
            StatusCode::BAD_REQUEST,
            "bad_request",
            "X-GitHub-Delivery is too long",
        );
    }
    let event = match WebhookEvent::parse(event_name, &body) {
        Ok(event) => event,
        Err(err) => return Verdict::new(StatusCode::BAD_REQUEST, "malformed", err.to_string()),
    };
    // Valid JSON is valid UTF-8.
    let payload = String::from_utf8_lossy(&body);
    let repository = event.repository().map(|r| r.full_name.clone());
    let digest: String = Sha256::digest(&body)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    match state
        .store
        .record_signed_delivery(
            delivery_id,
            event_name,
            repository.as_deref(),
            &payload,
            Some(&digest),
        )
        .await
    {
        Ok(Recorded::New) => {
            state.live.publish(LiveEvent::Delivery(DeliveryRecord {
                delivery_id: delivery_id.to_string(),
                event: event_name.to_string(),
                repository,
                received_at: now_ms(),
                state: DeliveryState::Received,
                note: None,
                attempts: 0,
            }));
            state.wake_dispatcher.notify_one();
            Verdict::new(
                StatusCode::ACCEPTED,
                "accepted",
                format!("{event_name} delivery stored"),
            )
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
            state
                .report_error("webhook", &format!("storing delivery {delivery_id}: {err}"))
                .await;
            Verdict::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "store_error",
                "the delivery could not be stored; GitHub may redeliver it",
            )
        }
    }
}
