//! The LLM gateway's runtime configuration: read it with its recent history (who changed
//! what), replace it (validated, a 422 naming the field), reset it to the defaults. Which
//! provider keys are set is shown; a key itself never is.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use domain::StreamId;
use domain::llm_config::{InvalidSettings, LlmConfig, LlmConfigCommand, LlmSettings};
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::routes;

use super::missions::metadata;
use super::{ApiError, ApiJson, ApiRoutes, AppState, ErrorBody, Refusal, append_refusal, refused};
use crate::eventlog::command::{self, CommandError};

/// Changes of the configuration `GET /api/llm/config` shows, newest last.
pub const HISTORY_MAX: usize = 20;

fn config_stream() -> StreamId {
    crate::llm::config::stream_id()
}

pub fn routes() -> ApiRoutes {
    ApiRoutes::new().routes(routes!(get_config, put_config)).routes(routes!(reset_config))
}

/// Whether each provider's key is set in this process's environment.
#[derive(Debug, Serialize, ToSchema)]
pub struct KeysSet {
    pub openai: bool,
    pub anthropic: bool,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ConfigChange {
    pub event_type: String,
    pub by: String,
    /// The fields a change touched; empty for a reset.
    pub changed: Vec<String>,
    pub at_ms: i64,
    pub global_position: u64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ConfigView {
    pub settings: LlmSettings,
    /// The configuration stream's version: one per change.
    pub version: u64,
    pub updated_at_ms: Option<i64>,
    pub keys_set: KeysSet,
    /// The most recent changes, oldest first (at most 20).
    pub history: Vec<ConfigChange>,
}

fn refusal(error: CommandError<InvalidSettings>) -> ApiError {
    let message = error.to_string();
    match error {
        CommandError::Rejected(invalid) => ApiError::Refused(Refusal {
            status: StatusCode::UNPROCESSABLE_ENTITY,
            code: "invalid_field",
            field: Some(invalid.field.into()),
            message,
        }),
        CommandError::Contended(_) => {
            refused(StatusCode::CONFLICT, "config_contended", None, message)
        }
        CommandError::Append(error) => append_refusal(error),
        CommandError::Store(error) => ApiError::from(error),
        CommandError::Upcast(error) => ApiError::Internal(error.into()),
    }
}

async fn view(app: &AppState) -> Result<ConfigView, ApiError> {
    let (config, events) = command::load_with_events::<LlmConfig>(&app.store, &config_stream())
        .await
        .map_err(refusal)?;
    let history = events[events.len().saturating_sub(HISTORY_MAX)..]
        .iter()
        .map(|event| ConfigChange {
            event_type: event.event_type.clone(),
            by: event.payload["by"].as_str().unwrap_or_default().to_owned(),
            changed: serde_json::from_value(event.payload["changed"].clone()).unwrap_or_default(),
            at_ms: event.payload["at_ms"].as_i64().unwrap_or_default(),
            global_position: event.global_position,
        })
        .collect();
    let credentials = crate::llm::Credentials::from_env();
    Ok(ConfigView {
        settings: config.settings,
        version: events.last().map_or(0, |event| event.version),
        updated_at_ms: config.updated_at_ms,
        keys_set: KeysSet {
            openai: credentials.openai.is_some(),
            anthropic: credentials.anthropic.is_some(),
        },
        history,
    })
}

/// `GET /api/llm/config`: the settings in force, which keys are set, and recent changes.
#[utoipa::path(get, path = "/api/llm/config", tag = "llm",
    responses(
        (status = 200, description = "The configuration", body = ConfigView),
        (status = 500, description = "`internal`", body = ErrorBody),
    ))]
async fn get_config(State(app): State<AppState>) -> Result<ApiJson<ConfigView>, ApiError> {
    Ok(ApiJson(view(&app).await?))
}

/// `PUT /api/llm/config`: replaces the settings; the next call in every process uses them.
#[utoipa::path(put, path = "/api/llm/config", tag = "llm",
    request_body = LlmSettings,
    responses(
        (status = 200, description = "In force (unchanged settings record nothing)", body = ConfigView),
        (status = 400, description = "`invalid_body`: not JSON; `invalid_field` naming a string that holds a NUL; `invalid_header`", body = ErrorBody),
        (status = 413, description = "`invalid_body`: body over 2 MiB", body = ErrorBody),
        (status = 415, description = "`invalid_body`: not `application/json`", body = ErrorBody),
        (status = 422, description = "`invalid_body`: wrong shape or an unknown field; `invalid_field` naming the field (`provider`, `host`, `model`, `temperature`, `max_tokens`, `routes.<name>[<n>].<field>`, `prices.<model>.<field>`)", body = ErrorBody),
        (status = 500, description = "`internal`", body = ErrorBody),
        (status = 503, description = "`store_unavailable`, `outcome_unknown`", body = ErrorBody),
    ))]
async fn put_config(
    State(app): State<AppState>,
    headers: HeaderMap,
    ApiJson(settings): ApiJson<LlmSettings>,
) -> Result<ApiJson<ConfigView>, ApiError> {
    let metadata = metadata(&headers)?;
    let by = metadata.actor.clone();
    let now = app.clock.now_ms();
    command::execute::<LlmConfig>(&app.store, &config_stream(), metadata, || {
        LlmConfigCommand::Set { settings: Box::new(settings.clone()), by: by.clone(), now_ms: now }
    })
    .await
    .map_err(refusal)?;
    Ok(ApiJson(view(&app).await?))
}

/// `POST /api/llm/config/reset`: back to the defaults (offline).
#[utoipa::path(post, path = "/api/llm/config/reset", tag = "llm",
    responses(
        (status = 200, description = "The defaults are in force", body = ConfigView),
        (status = 400, description = "`invalid_header`", body = ErrorBody),
        (status = 500, description = "`internal`", body = ErrorBody),
        (status = 503, description = "`store_unavailable`, `outcome_unknown`", body = ErrorBody),
    ))]
async fn reset_config(
    State(app): State<AppState>,
    headers: HeaderMap,
    _body: Bytes,
) -> Result<ApiJson<ConfigView>, ApiError> {
    let metadata = metadata(&headers)?;
    let by = metadata.actor.clone();
    let now = app.clock.now_ms();
    command::execute::<LlmConfig>(&app.store, &config_stream(), metadata, || {
        LlmConfigCommand::Reset { by: by.clone(), now_ms: now }
    })
    .await
    .map_err(refusal)?;
    Ok(ApiJson(view(&app).await?))
}
