//! `/api/secrets`, `/api/variables`, `/api/environments` and approvals:
//! what operators set for runs, behind the API's bearer token. A secret's
//! value goes in and never comes out; the scope is named in the query
//! (`?organization=octo`, `?repository=octo/app`, `&environment=production`).

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;

use crate::environments::{decide, DecisionError};
use crate::secrets::SettingError;
use crate::state::AppState;
use crate::store::{ApprovalState, EnvironmentRules};
use crate::vault::{Scope, ScopeError, SettingKind};

pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route("/secrets", get(list_secrets))
        .route("/secrets/rotate-key", post(rotate_key))
        .route("/secrets/{name}", put(put_secret).delete(delete_secret))
        .route("/variables", get(list_variables))
        .route(
            "/variables/{name}",
            put(put_variable).delete(delete_variable),
        )
        .route("/environments", get(list_environments))
        .route(
            "/environments/{name}",
            put(put_environment).delete(delete_environment),
        )
        .route("/approvals", get(waiting_approvals))
        .route(
            "/runs/{id}/approvals",
            get(run_approvals).post(decide_approval),
        )
}

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(json!({ "error": message.into() }))).into_response()
}

/// A request refused before it reached the store, as the JSON error answer.
struct Refusal(StatusCode, String);

impl Refusal {
    fn bad(message: impl Into<String>) -> Self {
        Refusal(StatusCode::BAD_REQUEST, message.into())
    }
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        error(self.0, self.1)
    }
}

/// The scope named in the query.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ScopeQuery {
    organization: Option<String>,
    repository: Option<String>,
    environment: Option<String>,
}

impl ScopeQuery {
    fn scope(&self) -> Result<Scope, ScopeError> {
        Scope::from_parts(
            self.organization.as_deref(),
            self.repository.as_deref(),
            self.environment.as_deref(),
        )
    }
}

/// The body of a `PUT`: the value alone.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ValueBody {
    value: String,
}

fn setting_error(err: SettingError) -> Response {
    let status = match &err {
        SettingError::Name(_)
        | SettingError::Scope(_)
        | SettingError::Empty(_)
        | SettingError::TooLarge { .. } => StatusCode::BAD_REQUEST,
        SettingError::Full { .. } => StatusCode::UNPROCESSABLE_ENTITY,
        SettingError::NoKey => StatusCode::CONFLICT,
        SettingError::NotFound { .. } => StatusCode::NOT_FOUND,
        SettingError::Vault(_) => StatusCode::INTERNAL_SERVER_ERROR,
        SettingError::Store(_) => StatusCode::SERVICE_UNAVAILABLE,
    };
    error(status, err.to_string())
}

/// The scope of a query, or the answer refusing it.
fn scope_of(query: Result<Query<ScopeQuery>, QueryRejection>) -> Result<Scope, Refusal> {
    let Query(query) = query.map_err(|r| Refusal::bad(r.body_text()))?;
    query
        .scope()
        .map_err(|err| Refusal::bad(format!("scope: {err}")))
}

fn body_of<T>(body: Result<Json<T>, JsonRejection>) -> Result<T, Refusal> {
    body.map(|Json(body)| body)
        .map_err(|rejection| Refusal::bad(rejection.body_text()))
}

async fn list_secrets(State(state): State<AppState>) -> Response {
    match state.settings.list_secrets().await {
        Ok(list) => Json(list).into_response(),
        Err(err) => setting_error(err),
    }
}

/// `PUT /api/secrets/{name}?<scope>` with `{"value": "..."}`: the answer
/// names the secret and its scope, never its value.
async fn put_secret(
    State(state): State<AppState>,
    Path(name): Path<String>,
    query: Result<Query<ScopeQuery>, QueryRejection>,
    body: Result<Json<ValueBody>, JsonRejection>,
) -> Response {
    let (scope, body) = match (scope_of(query), body_of(body)) {
        (Ok(scope), Ok(body)) => (scope, body),
        (Err(answer), _) | (_, Err(answer)) => return answer.into_response(),
    };
    match state.settings.set_secret(&scope, &name, &body.value).await {
        Ok(name) => Json(json!({ "name": name, "scope": scope.key(), "level": scope.level() }))
            .into_response(),
        Err(err) => setting_error(err),
    }
}

async fn delete_secret(
    State(state): State<AppState>,
    Path(name): Path<String>,
    query: Result<Query<ScopeQuery>, QueryRejection>,
) -> Response {
    remove(&state, SettingKind::Secret, &name, query).await
}

async fn remove(
    state: &AppState,
    kind: SettingKind,
    name: &str,
    query: Result<Query<ScopeQuery>, QueryRejection>,
) -> Response {
    let scope = match scope_of(query) {
        Ok(scope) => scope,
        Err(answer) => return answer.into_response(),
    };
    match state.settings.remove(kind, &scope, name).await {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(err) => setting_error(err),
    }
}

/// `POST /api/secrets/rotate-key`: seals every secret again with the
/// current key (the previous one must still be configured).
async fn rotate_key(State(state): State<AppState>) -> Response {
    match state.settings.rotate().await {
        Ok(rotation) => Json(rotation).into_response(),
        Err(err) => setting_error(err),
    }
}

async fn list_variables(State(state): State<AppState>) -> Response {
    match state.settings.list_variables().await {
        Ok(list) => Json(list).into_response(),
        Err(err) => setting_error(err),
    }
}

async fn put_variable(
    State(state): State<AppState>,
    Path(name): Path<String>,
    query: Result<Query<ScopeQuery>, QueryRejection>,
    body: Result<Json<ValueBody>, JsonRejection>,
) -> Response {
    let (scope, body) = match (scope_of(query), body_of(body)) {
        (Ok(scope), Ok(body)) => (scope, body),
        (Err(answer), _) | (_, Err(answer)) => return answer.into_response(),
    };
    match state
        .settings
        .set_variable(&scope, &name, &body.value)
        .await
    {
        Ok(name) => Json(json!({ "name": name, "scope": scope.key(), "level": scope.level() }))
            .into_response(),
        Err(err) => setting_error(err),
    }
}

async fn delete_variable(
    State(state): State<AppState>,
    Path(name): Path<String>,
    query: Result<Query<ScopeQuery>, QueryRejection>,
) -> Response {
    remove(&state, SettingKind::Variable, &name, query).await
}

/// `?repository=owner/name` of the environment routes.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RepositoryQuery {
    repository: Option<String>,
}

/// An environment's rules as `PUT` takes them.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RulesBody {
    #[serde(default)]
    branches: Vec<String>,
    #[serde(default)]
    tags: Vec<String>,
    #[serde(default)]
    reviewers: Vec<String>,
}

/// The lower-case repository and environment a route names.
fn environment_of(
    query: Result<Query<RepositoryQuery>, QueryRejection>,
    name: &str,
) -> Result<Scope, Refusal> {
    let Query(query) = query.map_err(|r| Refusal::bad(r.body_text()))?;
    let Some(repository) = query.repository.as_deref() else {
        return Err(Refusal::bad("query repository: required (owner/name)"));
    };
    Scope::from_parts(None, Some(repository), Some(name))
        .map_err(|err| Refusal::bad(format!("scope: {err}")))
}

/// Checks the rules' lists: patterns and logins are short, plain text.
fn check_rules(body: &RulesBody) -> Result<(), Refusal> {
    let lists = [
        ("branches", &body.branches),
        ("tags", &body.tags),
        ("reviewers", &body.reviewers),
    ];
    for (field, list) in lists {
        if list.len() > 100 {
            return Err(Refusal::bad(format!("field {field}: at most 100 entries")));
        }
        if let Some(bad) = list
            .iter()
            .find(|e| e.is_empty() || e.len() > 255 || e.chars().any(char::is_control))
        {
            return Err(Refusal::bad(format!(
                "field {field}: {bad:?} is empty, too long or holds control characters"
            )));
        }
    }
    let login =
        |l: &String| l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') && l.len() <= 39;
    if let Some(bad) = body.reviewers.iter().find(|l| !login(l)) {
        return Err(Refusal::bad(format!(
            "field reviewers: {bad:?} is not a GitHub login"
        )));
    }
    Ok(())
}

async fn put_environment(
    State(state): State<AppState>,
    Path(name): Path<String>,
    query: Result<Query<RepositoryQuery>, QueryRejection>,
    body: Result<Json<RulesBody>, JsonRejection>,
) -> Response {
    let (scope, body) = match (environment_of(query, &name), body_of(body)) {
        (Ok(scope), Ok(body)) => (scope, body),
        (Err(answer), _) | (_, Err(answer)) => return answer.into_response(),
    };
    if let Err(refusal) = check_rules(&body) {
        return refusal.into_response();
    }
    let Scope::Environment { repository, name } = scope else {
        return error(StatusCode::BAD_REQUEST, "scope: not an environment");
    };
    let rules = EnvironmentRules {
        repository,
        name,
        branches: body.branches,
        tags: body.tags,
        reviewers: body.reviewers,
        updated_at: crate::store::now_ms(),
    };
    match state.store.put_environment(&rules).await {
        Ok(()) => Json(rules).into_response(),
        Err(err) => error(StatusCode::SERVICE_UNAVAILABLE, err.to_string()),
    }
}

async fn list_environments(
    State(state): State<AppState>,
    query: Result<Query<RepositoryQuery>, QueryRejection>,
) -> Response {
    let Ok(Query(query)) = query else {
        return error(StatusCode::BAD_REQUEST, "query: only repository=owner/name");
    };
    let repository = query.repository.map(|r| r.to_ascii_lowercase());
    match state.store.environments(repository.as_deref()).await {
        Ok(list) => Json(list).into_response(),
        Err(err) => error(StatusCode::SERVICE_UNAVAILABLE, err.to_string()),
    }
}

async fn delete_environment(
    State(state): State<AppState>,
    Path(name): Path<String>,
    query: Result<Query<RepositoryQuery>, QueryRejection>,
) -> Response {
    let Scope::Environment { repository, name } = (match environment_of(query, &name) {
        Ok(scope) => scope,
        Err(answer) => return answer.into_response(),
    }) else {
        return error(StatusCode::BAD_REQUEST, "scope: not an environment");
    };
    match state.store.delete_environment(&repository, &name).await {
        Ok(true) => StatusCode::NO_CONTENT.into_response(),
        Ok(false) => error(
            StatusCode::NOT_FOUND,
            format!("no environment {name} in {repository}"),
        ),
        Err(err) => error(StatusCode::SERVICE_UNAVAILABLE, err.to_string()),
    }
}

async fn waiting_approvals(State(state): State<AppState>) -> Response {
    match state.store.approvals(None).await {
        Ok(list) => Json(list).into_response(),
        Err(err) => error(StatusCode::SERVICE_UNAVAILABLE, err.to_string()),
    }
}

async fn run_approvals(State(state): State<AppState>, Path(id): Path<String>) -> Response {
    match state.store.approvals(Some(&id)).await {
        Ok(list) => Json(list).into_response(),
        Err(err) => error(StatusCode::SERVICE_UNAVAILABLE, err.to_string()),
    }
}

/// A decision on a run's waiting deployment.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DecisionBody {
    environment: String,
    decision: Decision,
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "lowercase")]
enum Decision {
    Approve,
    Reject,
}

/// `POST /api/runs/{id}/approvals` with `{"environment", "decision":
/// "approve"|"reject"}`: the operator decides as an administrator.
async fn decide_approval(
    State(state): State<AppState>,
    Path(id): Path<String>,
    body: Result<Json<DecisionBody>, JsonRejection>,
) -> Response {
    let body = match body_of(body) {
        Ok(body) => body,
        Err(answer) => return answer.into_response(),
    };
    let decision = match body.decision {
        Decision::Approve => ApprovalState::Approved,
        Decision::Reject => ApprovalState::Rejected,
    };
    match decide(&state, &id, &body.environment, decision, "operator (API)").await {
        Ok(()) => Json(json!({ "run_id": id, "environment": body.environment.to_lowercase(), "state": decision.as_str() })).into_response(),
        Err(err @ DecisionError::NotWaiting { .. }) => error(StatusCode::CONFLICT, err.to_string()),
        Err(err) => error(StatusCode::SERVICE_UNAVAILABLE, err.to_string()),
    }
}
