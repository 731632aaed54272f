//! Who may look: the dashboard and the live stream need a signed-in viewer
//! (the operator's `api_token`, given once on `/login` and kept as a session
//! cookie, or sent as a bearer token); every answer carries security headers.

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{Html, IntoResponse, Redirect, Response};
use sha2::{Digest, Sha256};

use crate::state::AppState;

/// The session cookie's name.
pub const SESSION_COOKIE: &str = "firerunner_session";

/// The policy every page is served with: no inline script, no framing.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; \
     style-src 'self'; img-src 'self' data:; connect-src 'self'; object-src 'none'; \
     base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// Adds `Content-Security-Policy`, `X-Frame-Options`, `X-Content-Type-Options`
/// and `Referrer-Policy` to every answer.
pub async fn security_headers(request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    response
}

/// The cookie value of a session opened with `token`: a digest of it, so the
/// cookie is not the token itself and changing the token ends every session.
fn session_value(token: &str) -> String {
    Sha256::digest(format!("firerunner dashboard session\n{token}"))
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Equal in time independent of where the bytes differ.
pub(super) fn same_secret(given: &[u8], expected: &[u8]) -> bool {
    given.len() == expected.len()
        && given
            .iter()
            .zip(expected)
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
}

/// Whether the request comes from a signed-in viewer.
fn signed_in(state: &AppState, headers: &HeaderMap) -> bool {
    let token = &state.config.api_token;
    if token.is_empty() {
        return false;
    }
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    if bearer.is_some_and(|given| same_secret(given.as_bytes(), token.as_bytes())) {
        return true;
    }
    let expected = session_value(token);
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .any(|(name, value)| {
            name == SESSION_COOKIE && same_secret(value.as_bytes(), expected.as_bytes())
        })
}

/// A signed-in viewer who may change settings and decide deployments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Admin {
    /// Who it is, as recorded with what they decide.
    pub login: String,
}

/// The admin behind a request, if it comes from one. Today every signed-in
/// viewer is the operator (the `api_token`'s holder) and so an admin; a
/// sign-in that names users decides here who of them is one.
pub fn admin(state: &AppState, headers: &HeaderMap) -> Option<Admin> {
    signed_in(state, headers).then(|| Admin {
        login: "operator".into(),
    })
}

/// The token a form of this session carries (`csrf` field): a digest of
/// the session cookie, so another site's form, which cannot read it, is
/// refused even where `SameSite` does not hold. `None` without a cookie.
pub fn csrf_token(headers: &HeaderMap) -> Option<String> {
    let session = headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == SESSION_COOKIE)
        .map(|(_, value)| value.to_string())?;
    let digest = Sha256::digest(format!("firerunner form\n{session}"));
    Some(digest.iter().map(|b| format!("{b:02x}")).collect())
}

/// Whether a form's `csrf` field is this session's token.
pub fn csrf_ok(headers: &HeaderMap, given: Option<&str>) -> bool {
    match (csrf_token(headers), given) {
        (Some(expected), Some(given)) => same_secret(given.as_bytes(), expected.as_bytes()),
        _ => false,
    }
}

/// The fields of an `application/x-www-form-urlencoded` body.
pub fn form_fields(body: &[u8]) -> std::collections::HashMap<String, String> {
    String::from_utf8_lossy(body)
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .map(|(name, value)| (form_decode(name), form_decode(value)))
        .collect()
}

/// Lets signed-in viewers through; sends others to `/login` (pages) or
/// answers 401 (fragments, the live stream).
pub async fn require_viewer(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    if signed_in(&state, request.headers()) {
        return next.run(request).await;
    }
    let wants_page = request.method() == Method::GET
        && request
            .headers()
            .get(header::ACCEPT)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|accept| accept.contains("text/html"));
    if wants_page {
        Redirect::to("/login").into_response()
    } else {
        (StatusCode::UNAUTHORIZED, "sign in at /login\n").into_response()
    }
}

/// `GET /login`: a form for the operator's token.
pub async fn login_page(State(state): State<AppState>) -> Response {
    login_form(&state, None, StatusCode::OK)
}

fn login_form(state: &AppState, problem: Option<&str>, status: StatusCode) -> Response {
    let note = if state.config.api_token.is_empty() {
        "<p>The dashboard is off: set <code>api_token</code> in the configuration.</p>"
    } else {
        "<p>Sign in with the operator's API token.</p>"
    };
    let problem = problem
        .map(|p| format!("<p class=failure>{}</p>", super::pages::escape(p)))
        .unwrap_or_default();
    let html = format!(
        "<!doctype html><html lang=en><head><meta charset=utf-8><title>Sign in · firerunner</title>\
         <link rel=stylesheet href='/static/dashboard.css'></head><body><header><a href='/'>firerunner</a></header>\
         <main><section><h2>Sign in</h2>{note}{problem}<form method=post action='/login'>\
         <input type=password name=token autocomplete=current-password autofocus> \
         <button type=submit>Sign in</button></form></section></main></body></html>"
    );
    (status, Html(html)).into_response()
}

/// `POST /login` (form field `token`): opens a session when it is the operator's token.
pub async fn login(State(state): State<AppState>, body: Body) -> Response {
    let Ok(body) = axum::body::to_bytes(body, 16 * 1024).await else {
        return login_form(
            &state,
            Some("the form is too large"),
            StatusCode::BAD_REQUEST,
        );
    };
    let token = String::from_utf8_lossy(&body)
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .find(|(name, _)| *name == "token")
        .map(|(_, value)| form_decode(value))
        .unwrap_or_default();
    let expected = &state.config.api_token;
    if expected.is_empty() || !same_secret(token.as_bytes(), expected.as_bytes()) {
        return login_form(&state, Some("wrong token"), StatusCode::UNAUTHORIZED);
    }
    let secure = if state.config.public_url.starts_with("https://") {
        "; Secure"
    } else {
        ""
    };
    let cookie = format!(
        "{SESSION_COOKIE}={}; Path=/; HttpOnly; SameSite=Strict{secure}",
        session_value(expected)
    );
    let mut response = Redirect::to("/").into_response();
    if let Ok(value) = HeaderValue::from_str(&cookie) {
        response.headers_mut().insert(header::SET_COOKIE, value);
    }
    response
}

/// A value of an `application/x-www-form-urlencoded` body.
fn form_decode(value: &str) -> String {
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = value
                    .get(i + 1..i + 3)
                    .and_then(|h| u8::from_str_radix(h, 16).ok());
                if let Some(byte) = hex {
                    out.push(byte);
                    i += 2;
                } else {
                    out.push(b'%');
                }
            }
            byte => out.push(byte),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}
