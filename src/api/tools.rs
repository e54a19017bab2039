//! The tools agents use: the MCP servers configured for them (`GET`/`PUT /api/tools/mcp`,
//! an aggregate with its history, like the LLM gateway's configuration) and every tool with
//! where it comes from and how its server is doing (`GET /api/tools`).
//!
//! Changing the servers is an admin's: a server is a program this deployment starts, or a
//! place its agents send what the model chose, so it needs every permission. What is stored
//! holds no secret: environment variables and header values are named, never given.

use axum::extract::State;
use domain::aggregate::DomainEvent;
use domain::api_key::Permission;
use domain::mcp_config::{
    InvalidMcpSettings, McpConfig, McpConfigCommand, McpConfigEvent, McpSettings,
};
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::routes;

use super::auth::Access;
use super::error::{ErrorCode, Refusal, append_refusal, errors, refused};
use super::extract::Metadata;
use super::{ApiError, ApiJson, ApiRoutes, AppState};
use crate::agents::tools::mcp::{self, ToolsView};
use crate::eventlog::command::{self, CommandError};

/// Changes of the configuration `GET /api/tools/mcp` shows, newest last.
pub const HISTORY_MAX: usize = 20;

pub fn routes() -> ApiRoutes {
    ApiRoutes::new()
        .routes(Access::needs(Permission::AgentsRead), routes!(get_mcp))
        .routes(Access::Admin, routes!(put_mcp))
        .routes(Access::needs(Permission::AgentsRead), routes!(list_tools))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct McpChange {
    pub event_type: String,
    pub by: String,
    /// The servers the change added, changed or removed.
    pub changed: Vec<String>,
    pub at_ms: i64,
    pub global_position: u64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct McpView {
    pub settings: McpSettings,
    /// The configuration stream's version: one per change.
    pub version: u64,
    pub updated_at_ms: Option<i64>,
    /// The most recent changes, oldest first (at most 20).
    pub history: Vec<McpChange>,
}

fn refusal(error: CommandError<InvalidMcpSettings>) -> ApiError {
    let message = error.to_string();
    match error {
        CommandError::Rejected(invalid) => ApiError::Refused(Refusal {
            code: ErrorCode::InvalidField,
            field: Some(invalid.field.into()),
            message,
        }),
        CommandError::Contended(_) => refused(ErrorCode::ConfigContended, None, message),
        CommandError::Append(error) => append_refusal(error),
        CommandError::Store(error) => ApiError::from(error),
        CommandError::Upcast(error) => ApiError::Internal(error.into()),
    }
}

async fn view(app: &AppState) -> Result<McpView, ApiError> {
    let loaded = command::load_with_events::<McpConfig>(&app.store, &mcp::stream_id()).await;
    let (config, events) = loaded.map_err(refusal)?;
    let mut history = Vec::with_capacity(HISTORY_MAX.min(events.len()));
    for event in &events[events.len().saturating_sub(HISTORY_MAX)..] {
        let decoded =
            McpConfigEvent::upcast(&event.event_type, event.schema_version, event.payload.clone())
                .map_err(|error| ApiError::Internal(error.into()))?;
        let McpConfigEvent::McpConfigChanged { by, changed, at_ms, .. } = decoded;
        history.push(McpChange {
            event_type: event.event_type.clone(),
            by,
            changed,
            at_ms,
            global_position: event.global_position,
        });
    }
    Ok(McpView {
        settings: config.settings,
        version: events.last().map_or(0, |event| event.version),
        updated_at_ms: config.updated_at_ms,
        history,
    })
}

errors! { GetMcpErrors = READ + [] }

/// `GET /api/tools/mcp`: the MCP servers configured, and who changed them when.
#[utoipa::path(get, path = "/api/tools/mcp", tag = "agents",
    responses(
        (status = 200, description = "The configuration and its recent history", body = McpView),
        GetMcpErrors,
    ))]
async fn get_mcp(State(app): State<AppState>) -> Result<ApiJson<McpView>, ApiError> {
    Ok(ApiJson(view(&app).await?))
}

errors! { PutMcpErrors = COMMAND + JSON_BODY + CALLER + [InvalidField, ConfigContended] }

/// `PUT /api/tools/mcp`: replaces the servers (422 naming the field, nothing changed, when one
/// breaks a rule); every process connects, reconnects or stops its servers to match within a
/// second. Admins only.
#[utoipa::path(put, path = "/api/tools/mcp", tag = "agents",
    params(Metadata),
    request_body = McpSettings,
    responses(
        (status = 200, description = "In force (unchanged settings record nothing)", body = McpView),
        PutMcpErrors,
    ))]
async fn put_mcp(
    State(app): State<AppState>,
    Metadata(metadata): Metadata,
    ApiJson(settings): ApiJson<McpSettings>,
) -> Result<ApiJson<McpView>, ApiError> {
    let by = metadata.actor.clone();
    let now_ms = app.clock.now_ms();
    command::execute::<McpConfig>(&app.store, &mcp::stream_id(), metadata, || {
        McpConfigCommand::Set { settings: Box::new(settings.clone()), by: by.clone(), now_ms }
    })
    .await
    .map_err(refusal)?;
    Ok(ApiJson(view(&app).await?))
}

errors! { ListToolsErrors = READ + [] }

/// `GET /api/tools`: every tool agents may be offered here, built-in and from MCP servers:
/// where it comes from, which kinds see it, its server's state and its calls so far (by this
/// process).
#[utoipa::path(get, path = "/api/tools", tag = "agents",
    responses(
        (status = 200, description = "The tools and the MCP servers' states", body = ToolsView),
        ListToolsErrors,
    ))]
async fn list_tools(State(app): State<AppState>) -> Result<ApiJson<ToolsView>, ApiError> {
    Ok(ApiJson(mcp::tools_view(&app.agents.builtin, app.mcp.as_ref())))
}
