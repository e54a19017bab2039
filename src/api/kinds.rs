//! Agent kinds over HTTP: the kinds missions may name (configured, served by this process's
//! workers, and registered in the log), and registering or removing one. An admin (or any key
//! holding `kinds.manage`) registers any kind; an agent key registers only a kind it may
//! serve, so a team can bring a new kind of agent online without anyone restarting a serve.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use domain::agent_kind::AgentKindError;
use domain::api_key::Permission;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::routes;

use super::auth::{Access, Authed};
use super::error::{ErrorCode, append_refusal, errors, refused};
use super::extract::Metadata;
use super::{ApiError, ApiJson, ApiRoutes, AppState};
use crate::agents::kinds;
use crate::eventlog::command::CommandError;

pub fn routes() -> ApiRoutes {
    let register_access = Access::Any(&[Permission::KindsManage, Permission::AgentsSelf]);
    ApiRoutes::new()
        .routes(Access::needs(Permission::AgentsRead), routes!(list_kinds))
        .routes(register_access, routes!(register_kind))
        .routes(Access::needs(Permission::KindsManage), routes!(remove_kind))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct KindList {
    /// Every kind a mission may name, sorted.
    pub kinds: Vec<String>,
    /// Of those, the ones registered in the log (the rest are configured or served here).
    pub registered: Vec<String>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RegisterKindRequest {
    /// 1 to 64 characters of a-z, 0-9, `_` and `-`.
    pub kind: String,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RemoveKindRequest {
    /// Why, for the audit trail: 1 to 500 characters.
    pub reason: String,
}

/// `{kind}` of the path.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
#[expect(dead_code, reason = "documents the path parameter; handlers take it as a String")]
pub struct KindPath {
    /// The agent kind.
    pub kind: String,
}

fn refusal(error: CommandError<AgentKindError>) -> ApiError {
    let message = error.to_string();
    match error {
        CommandError::Rejected(AgentKindError::Invalid { field, .. }) => {
            refused(ErrorCode::InvalidField, Some(field), message)
        }
        CommandError::Rejected(AgentKindError::Full) => {
            refused(ErrorCode::InvalidField, Some("kind"), message)
        }
        CommandError::Rejected(AgentKindError::Unknown(_)) => {
            refused(ErrorCode::UnknownAgent, Some("kind"), message)
        }
        CommandError::Contended(_) => refused(ErrorCode::AgentContended, None, message),
        CommandError::Append(error) => append_refusal(error),
        CommandError::Store(error) => ApiError::from(error),
        CommandError::Upcast(error) => ApiError::Internal(error.into()),
    }
}

/// The process's cache made to hold what was just recorded, so the answer holds here at once
/// (other processes follow within a second).
async fn caught_up(app: &AppState) -> Result<(), ApiError> {
    crate::eventlog::follow::catch_up(&app.kinds, app.pool())
        .await
        .map_err(|error| ApiError::Internal(error.into()))?;
    Ok(())
}

fn list(app: &AppState) -> KindList {
    let registered = app.kinds.all();
    let mut kinds: Vec<String> = app.agent_kinds.iter().chain(&registered).cloned().collect();
    kinds.sort();
    kinds.dedup();
    KindList { kinds, registered: registered.into_iter().collect() }
}

errors! { ListKindsErrors = READ + [] }

/// `GET /api/agent-kinds`: the kinds missions may name.
#[utoipa::path(get, path = "/api/agent-kinds", tag = "agents",
    responses((status = 200, description = "The kinds", body = KindList), ListKindsErrors))]
async fn list_kinds(State(app): State<AppState>) -> Result<ApiJson<KindList>, ApiError> {
    caught_up(&app).await?;
    Ok(ApiJson(list(&app)))
}

errors! { RegisterKindErrors = COMMAND + JSON_BODY + CALLER + [InvalidField, AgentContended] }

/// `POST /api/agent-kinds`: registers a kind; every serve takes missions for it within a
/// second. 201 when new, 200 when known already.
#[utoipa::path(post, path = "/api/agent-kinds", tag = "agents",
    params(Metadata),
    request_body = RegisterKindRequest,
    responses(
        (status = 201, description = "Registered", body = KindList),
        (status = 200, description = "Known already: nothing changed", body = KindList),
        RegisterKindErrors,
    ))]
async fn register_kind(
    State(app): State<AppState>,
    caller: Authed,
    Metadata(metadata): Metadata,
    ApiJson(request): ApiJson<RegisterKindRequest>,
) -> Result<(StatusCode, ApiJson<KindList>), ApiError> {
    if !caller.0.can(Permission::KindsManage) {
        caller.check_kind(&request.kind, "kind")?;
    }
    let now = crate::clock::now_ms();
    let new = kinds::register(&app.store, &request.kind, metadata, now).await.map_err(refusal)?;
    caught_up(&app).await?;
    let status = if new { StatusCode::CREATED } else { StatusCode::OK };
    Ok((status, ApiJson(list(&app))))
}

errors! {
    RemoveKindErrors = COMMAND + JSON_BODY + CALLER + [InvalidField, UnknownAgent, AgentContended]
}

/// `POST /api/agent-kinds/{kind}/remove`: no new mission may name the kind (those queued
/// stay, and run if an agent serves them).
#[utoipa::path(post, path = "/api/agent-kinds/{kind}/remove", tag = "agents",
    params(KindPath, Metadata),
    request_body = RemoveKindRequest,
    responses((status = 200, description = "Removed", body = KindList), RemoveKindErrors))]
async fn remove_kind(
    State(app): State<AppState>,
    Path(kind): Path<String>,
    Metadata(metadata): Metadata,
    ApiJson(request): ApiJson<RemoveKindRequest>,
) -> Result<ApiJson<KindList>, ApiError> {
    let now = crate::clock::now_ms();
    kinds::remove(&app.store, &kind, &request.reason, metadata, now).await.map_err(refusal)?;
    caught_up(&app).await?;
    Ok(ApiJson(list(&app)))
}
