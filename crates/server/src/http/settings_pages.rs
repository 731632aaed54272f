//! The dashboard's settings page (`/settings`): secrets by scope with their
//! dates (never a value), variables, environments' rules and the
//! deployments waiting for approval, with forms to set and remove secrets
//! and variables and to approve or reject. Every form needs an admin
//! ([`session::admin`]) and carries the session's CSRF token.

use std::collections::HashMap;
use std::fmt::Write as _;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::Router;

use super::pages::{escape, page};
use super::session::{admin, csrf_ok, csrf_token, form_fields};
use crate::environments::decide;
use crate::state::AppState;
use crate::store::{Approval, ApprovalState};
use crate::vault::{Scope, SettingKind};

pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route("/settings", get(settings_page))
        .route("/settings/{kind}/{action}", post(change_setting))
        .route("/runs/{id}/approvals", post(decide_from_dashboard))
}

/// `YYYY-MM-DD HH:MM UTC` of milliseconds since the epoch.
fn date(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let (days, rest) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Howard Hinnant's civil-from-days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02} UTC",
        rest / 3600,
        rest / 60 % 60
    )
}

/// The hidden CSRF field of this session's forms.
pub(super) fn csrf_field(headers: &HeaderMap) -> String {
    let token = csrf_token(headers).unwrap_or_default();
    format!("<input type=hidden name=csrf value='{}'>", escape(&token))
}

/// A form removing one secret or variable.
fn remove_form(kind: &str, scope: &str, name: &str, csrf: &str) -> String {
    format!(
        "<form method=post action='/settings/{kind}/remove'>{csrf}\
         <input type=hidden name=scope value='{}'><input type=hidden name=name value='{}'>\
         <button type=submit>remove</button></form>",
        escape(scope),
        escape(name)
    )
}

/// The form that sets a secret (`password` input) or a variable.
fn set_form(kind: &str, csrf: &str) -> String {
    let input = if kind == "secret" { "password" } else { "text" };
    format!(
        "<form method=post action='/settings/{kind}/set'>{csrf}\
         <input name=organization placeholder='organization'> or \
         <input name=repository placeholder='owner/name'> \
         <input name=environment placeholder='environment (optional)'> \
         <input name=name placeholder='NAME' required> \
         <input type={input} name=value placeholder='value' autocomplete=off required> \
         <button type=submit>set {kind}</button></form>"
    )
}

async fn secrets_section(state: &AppState, csrf: &str) -> String {
    let mut out = String::from("<section><h2>Secrets</h2>");
    if !state.settings.secrets_enabled() {
        out.push_str("<p class=failure>The secret store is off: set <code>secrets.key_file</code> in the configuration.</p>");
    }
    out.push_str("<table><tr><th>Level</th><th>Scope</th><th>Name</th><th>Updated</th><th>Key</th><th></th></tr>");
    for secret in state.settings.list_secrets().await.unwrap_or_default() {
        let _ = write!(
            out,
            "<tr><td>{}</td><td><code>{}</code></td><td><code>{}</code></td><td>{}</td><td><code>{}</code></td><td>{}</td></tr>",
            secret.level,
            escape(&secret.scope),
            escape(&secret.name),
            date(secret.updated_at),
            escape(&secret.key_id),
            remove_form("secret", &secret.scope, &secret.name, csrf),
        );
    }
    out.push_str("</table>");
    out.push_str(&set_form("secret", csrf));
    out.push_str("</section>");
    out
}

async fn variables_section(state: &AppState, csrf: &str) -> String {
    let mut out = String::from(
        "<section><h2>Variables (firerunner's own; GitHub's are read at run time)</h2>",
    );
    out.push_str("<table><tr><th>Level</th><th>Scope</th><th>Name</th><th>Value</th><th>Updated</th><th></th></tr>");
    for variable in state.settings.list_variables().await.unwrap_or_default() {
        let _ = write!(
            out,
            "<tr><td>{}</td><td><code>{}</code></td><td><code>{}</code></td><td><code>{}</code></td><td>{}</td><td>{}</td></tr>",
            variable.level,
            escape(&variable.scope),
            escape(&variable.name),
            escape(&variable.value),
            date(variable.updated_at),
            remove_form("variable", &variable.scope, &variable.name, csrf),
        );
    }
    out.push_str("</table>");
    out.push_str(&set_form("variable", csrf));
    out.push_str("</section>");
    out
}

async fn environments_section(state: &AppState) -> String {
    let mut out = String::from(
        "<section><h2>Environments</h2><p>Set with <code>firerunner environments set</code> or <code>PUT /api/environments/NAME</code>.</p>\
         <table><tr><th>Repository</th><th>Environment</th><th>Branches</th><th>Tags</th><th>Reviewers</th></tr>",
    );
    let all = |list: &[String]| {
        if list.is_empty() {
            "any".to_string()
        } else {
            list.join(", ")
        }
    };
    for rules in state.store.environments(None).await.unwrap_or_default() {
        let any_ref = rules.branches.is_empty() && rules.tags.is_empty();
        let _ = write!(
            out,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            escape(&rules.repository),
            escape(&rules.name),
            escape(&if any_ref {
                "any".into()
            } else {
                rules.branches.join(", ")
            }),
            escape(&if any_ref {
                "any".into()
            } else {
                rules.tags.join(", ")
            }),
            escape(&all(&rules.reviewers)),
        );
    }
    out.push_str("</table></section>");
    out
}

/// The deployments of `approvals`, with approve and reject buttons on the waiting ones.
pub(super) fn approvals_table(approvals: &[Approval], csrf: &str) -> String {
    let mut out = String::from(
        "<table><tr><th>Run</th><th>Environment</th><th>Jobs</th><th>Reviewers</th><th>State</th><th></th></tr>",
    );
    for approval in approvals {
        let buttons = if approval.state == ApprovalState::Waiting {
            let form = |decision: &str| {
                format!(
                    "<form method=post action='/runs/{}/approvals'>{csrf}<input type=hidden name=environment value='{}'>\
                     <button type=submit name=decision value={decision}>{decision}</button></form>",
                    escape(&approval.run_id),
                    escape(&approval.environment)
                )
            };
            format!("{}{}", form("approve"), form("reject"))
        } else {
            escape(approval.decided_by.as_deref().unwrap_or(""))
        };
        let _ = write!(
            out,
            "<tr><td><a href='/runs/{id}'>{id}</a></td><td>{}</td><td>{}</td><td>{}</td><td class=queued>{}</td><td>{buttons}</td></tr>",
            escape(&approval.environment),
            escape(&approval.jobs.join(", ")),
            escape(&approval.reviewers.join(", ")),
            approval.state,
            id = escape(&approval.run_id),
        );
    }
    out.push_str("</table>");
    out
}

/// `GET /settings`.
async fn settings_page(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let csrf = csrf_field(&headers);
    let waiting = state.store.approvals(None).await.unwrap_or_default();
    let body = format!(
        "<section><h2>Waiting for approval</h2>{}</section>{}{}{}",
        approvals_table(&waiting, &csrf),
        secrets_section(&state, &csrf).await,
        variables_section(&state, &csrf).await,
        environments_section(&state).await,
    );
    page("Secrets and variables", &body).into_response()
}

/// A form that was refused before it was read.
struct Refused(StatusCode, &'static str);

impl IntoResponse for Refused {
    fn into_response(self) -> Response {
        (self.0, self.1).into_response()
    }
}

/// Reads a form posted by an admin with this session's CSRF token.
async fn admin_form(
    state: &AppState,
    headers: &HeaderMap,
    body: Body,
) -> Result<(String, HashMap<String, String>), Refused> {
    let Some(admin) = admin(state, headers) else {
        return Err(Refused(
            StatusCode::FORBIDDEN,
            "only an admin may change this\n",
        ));
    };
    let Ok(bytes) = axum::body::to_bytes(body, 256 * 1024).await else {
        return Err(Refused(
            StatusCode::PAYLOAD_TOO_LARGE,
            "the form is too large\n",
        ));
    };
    let fields = form_fields(&bytes);
    if !csrf_ok(headers, fields.get("csrf").map(String::as_str)) {
        let message = "the form's CSRF token is missing or wrong; reload the page\n";
        return Err(Refused(StatusCode::FORBIDDEN, message));
    }
    Ok((admin.login, fields))
}

fn problem(status: StatusCode, message: &str) -> Response {
    let body = format!(
        "<section><h2>Not done</h2><p class=failure>{}</p><p><a href='/settings'>back</a></p></section>",
        escape(message)
    );
    (status, page("Secrets and variables", &body)).into_response()
}

/// The scope a settings form names (`scope` key, or the three fields).
fn form_scope(fields: &HashMap<String, String>) -> Result<Scope, String> {
    if let Some(key) = fields.get("scope") {
        return Scope::parse_key(key).map_err(|err| err.to_string());
    }
    let field = |name: &str| fields.get(name).map(|v| v.trim()).filter(|v| !v.is_empty());
    Scope::from_parts(
        field("organization"),
        field("repository"),
        field("environment"),
    )
    .map_err(|err| format!("scope: {err}"))
}

/// `POST /settings/{secret|variable}/{set|remove}`.
async fn change_setting(
    State(state): State<AppState>,
    Path((kind, action)): Path<(String, String)>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let fields = match admin_form(&state, &headers, body).await {
        Ok((_, fields)) => fields,
        Err(answer) => return answer.into_response(),
    };
    let kind = match kind.as_str() {
        "secret" => SettingKind::Secret,
        "variable" => SettingKind::Variable,
        _ => return problem(StatusCode::NOT_FOUND, "no such setting"),
    };
    let scope = match form_scope(&fields) {
        Ok(scope) => scope,
        Err(message) => return problem(StatusCode::BAD_REQUEST, &message),
    };
    let name = fields.get("name").map(|n| n.trim()).unwrap_or_default();
    let value = fields.get("value").map(String::as_str).unwrap_or_default();
    let settings = &state.settings;
    let done = match (kind, action.as_str()) {
        (SettingKind::Secret, "set") => settings.set_secret(&scope, name, value).await.map(drop),
        (SettingKind::Variable, "set") => {
            settings.set_variable(&scope, name, value).await.map(drop)
        }
        (_, "remove") => settings.remove(kind, &scope, name).await,
        _ => return problem(StatusCode::NOT_FOUND, "no such action"),
    };
    match done {
        Ok(()) => Redirect::to("/settings").into_response(),
        Err(err) => problem(StatusCode::BAD_REQUEST, &err.to_string()),
    }
}

/// `POST /runs/{id}/approvals` (fields `environment`, `decision`).
async fn decide_from_dashboard(
    State(state): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let (login, fields) = match admin_form(&state, &headers, body).await {
        Ok(form) => form,
        Err(answer) => return answer.into_response(),
    };
    let decision = match fields.get("decision").map(String::as_str) {
        Some("approve") => ApprovalState::Approved,
        Some("reject") => ApprovalState::Rejected,
        _ => return problem(StatusCode::BAD_REQUEST, "field decision: approve or reject"),
    };
    let environment = fields.get("environment").cloned().unwrap_or_default();
    let by = format!("{login} (dashboard)");
    match decide(&state, &id, &environment, decision, &by).await {
        Ok(()) => {
            Redirect::to(&format!("/runs/{}", crate::report::percent_encode(&id))).into_response()
        }
        Err(err) => problem(StatusCode::CONFLICT, &err.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::date;

    #[test]
    fn dates_are_civil_utc() {
        assert_eq!(date(0), "1970-01-01 00:00 UTC");
        assert_eq!(date(1_709_210_096_000), "2024-02-29 12:34 UTC");
    }
}
