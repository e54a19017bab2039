//! The LLM gateway's runtime configuration: read it with its recent history (who changed
//! what), replace it (validated, a 422 naming the field), reset it to the defaults. Which
//! provider keys are set is shown; a key itself never is.
//!
//! The configuration's version is its entity tag (`ETag: "7"`). A change sent with
//! `If-Match: "7"` is decided against version 7 only: if anyone changed it since, it is
//! refused (412 `version_mismatch`) instead of overwriting what its sender never saw. Without
//! `If-Match` the last write wins, as before.
//!
//! A provider key goes only to the base URLs it is bound to (those the process was started
//! with, and `key_hosts`). A change that points a keyed target at another host, or adds to
//! `key_hosts`, must come with the key itself (`keys`): whoever sends it knows the key
//! already, so the change cannot be a way to steal it. The key is checked against the one
//! this server holds and is never recorded or shown.

use crate::api::auth::Access;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, header};
use domain::StreamId;
use domain::aggregate::DomainEvent;
use domain::api_key::Permission;
use domain::llm_config::{
    InvalidSettings, LlmConfig, LlmConfigCommand, LlmConfigEvent, LlmSettings,
};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::routes;

use super::as_of::{AsOfQuery, AsOfView};
use super::error::{ErrorCode, Refusal, append_refusal, errors, refused};
use super::extract::Metadata;
use super::{ApiError, ApiJson, ApiQuery, ApiRoutes, AppState};
use crate::eventlog::command::{self, CommandError};
use crate::eventlog::store::{AppendError, AsOf};

/// Changes of the configuration `GET /api/llm/config` shows, newest last.
pub const HISTORY_MAX: usize = 20;

fn config_stream() -> StreamId {
    crate::llm::config::stream_id()
}

pub fn routes() -> ApiRoutes {
    ApiRoutes::new()
        .routes(Access::needs(Permission::LlmRead), routes!(get_config))
        .routes(Access::needs(Permission::LlmConfig), routes!(put_config))
        .routes(Access::needs(Permission::LlmConfig), routes!(reset_config))
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
    /// Present when the view is of an earlier moment (`at_position` or `at`): the last change
    /// it folds (none before the first change: the defaults).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub as_of: Option<AsOfView>,
}

fn refusal(error: CommandError<InvalidSettings>) -> ApiError {
    let message = error.to_string();
    match error {
        CommandError::Rejected(invalid) => ApiError::Refused(Refusal {
            code: ErrorCode::InvalidField,
            field: Some(invalid.field.into()),
            message,
        }),
        CommandError::Contended(_) => refused(ErrorCode::ConfigContended, None, message),
        // Only `If-Match` changes (`command::execute_at`) answer a conflict as such.
        CommandError::Append(AppendError::Conflict { expected, actual, .. }) => refused(
            ErrorCode::VersionMismatch,
            Some("if-match"),
            format!(
                "the configuration is at version {actual}, not {expected}: read it again and \
                 redo the change"
            ),
        ),
        CommandError::Append(error) => append_refusal(error),
        CommandError::Store(error) => ApiError::from(error),
        CommandError::Upcast(error) => ApiError::Internal(error.into()),
    }
}

async fn view(app: &AppState) -> Result<ConfigView, ApiError> {
    view_as_of(app, None).await
}

/// The configuration now, or as the log held it at `as_of` (time travel).
async fn view_as_of(app: &AppState, as_of: Option<AsOf>) -> Result<ConfigView, ApiError> {
    let stream = config_stream();
    let loaded = match as_of {
        None => command::load_with_events::<LlmConfig>(&app.store, &stream).await,
        Some(as_of) => command::load_as_of::<LlmConfig>(&app.store, &stream, as_of).await,
    };
    let (config, events) = loaded.map_err(refusal)?;
    // Read through the upcasters like the fold above, which has read each of them already.
    let mut history = Vec::with_capacity(HISTORY_MAX.min(events.len()));
    for event in &events[events.len().saturating_sub(HISTORY_MAX)..] {
        let decoded =
            LlmConfigEvent::upcast(&event.event_type, event.schema_version, event.payload.clone())
                .map_err(|error| ApiError::Internal(error.into()))?;
        let (by, changed, at_ms) = match decoded {
            LlmConfigEvent::LlmConfigChanged { by, changed, at_ms, .. } => (by, changed, at_ms),
            LlmConfigEvent::LlmConfigReset { by, at_ms } => (by, Vec::new(), at_ms),
        };
        history.push(ConfigChange {
            event_type: event.event_type.clone(),
            by,
            changed,
            at_ms,
            global_position: event.global_position,
        });
    }
    let credentials = crate::llm::Credentials::of(&app.agents.llm);
    Ok(ConfigView {
        settings: config.settings,
        version: events.last().map_or(0, |event| event.version),
        updated_at_ms: config.updated_at_ms,
        keys_set: KeysSet {
            openai: credentials.openai.is_some(),
            anthropic: credentials.anthropic.is_some(),
        },
        history,
        as_of: as_of.and_then(|_| AsOfView::of(&events)),
    })
}

errors! { GetConfigErrors = READ + QUERY + [] }

/// `GET /api/llm/config?at_position=&at=`: the settings in force, which keys are set, and
/// recent changes; with a moment, the settings as the log held them then (`as_of` names the
/// last change folded; the keys are those set now).
#[utoipa::path(get, path = "/api/llm/config", tag = "llm",
    params(AsOfQuery),
    responses(
        (status = 200, description = "The configuration; `ETag` is its version", body = ConfigView),
        GetConfigErrors,
    ))]
async fn get_config(
    State(app): State<AppState>,
    ApiQuery(query): ApiQuery<AsOfQuery>,
) -> Result<Tagged, ApiError> {
    Ok(tagged(view_as_of(&app, query.as_of()?).await?))
}

/// A view with its version as the entity tag that `If-Match` names.
type Tagged = ([(header::HeaderName, HeaderValue); 1], ApiJson<ConfigView>);

fn tagged(view: ConfigView) -> Tagged {
    let tag = HeaderValue::from_str(&format!("\"{}\"", view.version)).expect("digits and quotes");
    ([(header::ETAG, tag)], ApiJson(view))
}

/// The version `If-Match` names (`"7"` or `7`); `None` without the header or with `*`.
fn if_match(headers: &HeaderMap) -> Result<Option<u64>, ApiError> {
    let Some(value) = headers.get(header::IF_MATCH) else { return Ok(None) };
    let text = value.to_str().map(str::trim).unwrap_or_default();
    if text == "*" {
        return Ok(None);
    }
    let digits = text.strip_prefix('"').and_then(|t| t.strip_suffix('"')).unwrap_or(text);
    digits.parse::<u64>().map(Some).map_err(|_| ApiError::InvalidHeader {
        header: "if-match",
        message: "must be the configuration's version as an entity tag, e.g. \"3\" (the ETag \
                  of GET /api/llm/config)"
            .to_owned(),
    })
}

/// Runs a change of the configuration: against the version `If-Match` named, once, or
/// against whatever is current.
async fn change(
    app: &AppState,
    headers: &HeaderMap,
    metadata: domain::EventMetadata,
    make: impl Fn(String, i64) -> LlmConfigCommand,
) -> Result<Tagged, ApiError> {
    let expected = if_match(headers)?;
    let by = metadata.actor.clone();
    let now = app.clock.now_ms();
    match expected {
        Some(expected) => {
            let command = make(by, now);
            command::execute_at::<LlmConfig>(
                &app.store,
                &config_stream(),
                metadata,
                expected,
                command,
            )
            .await
        }
        None => {
            command::execute::<LlmConfig>(&app.store, &config_stream(), metadata, || {
                make(by.clone(), now)
            })
            .await
        }
    }
    .map_err(refusal)?;
    Ok(tagged(view(app).await?))
}

errors! {
    PutConfigErrors = COMMAND + JSON_BODY + CALLER + [
        InvalidField, VersionMismatch, ConfigContended
    ]
}

/// Provider keys a change comes with, to bind them to the hosts it points keyed targets at.
/// Never recorded, never shown; `Debug` is not derived on purpose.
#[derive(Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SuppliedKeys {
    #[serde(default)]
    pub openai: Option<String>,
    #[serde(default)]
    pub anthropic: Option<String>,
}

/// A change of the configuration: the settings, and the keys it comes with (only needed to
/// send a key to a host it is not bound to yet).
#[derive(Deserialize, ToSchema)]
#[expect(dead_code, reason = "the body's schema for the OpenAPI document; change_body reads it")]
pub struct ConfigChangeBody {
    #[serde(flatten)]
    pub settings: LlmSettings,
    #[serde(default)]
    pub keys: Option<SuppliedKeys>,
}

/// Splits a change's body into its settings and its keys. (Not `ConfigChangeBody` through
/// serde: a flattened struct would let an unknown field pass unnoticed.)
fn change_body(
    mut body: serde_json::Map<String, serde_json::Value>,
) -> Result<(LlmSettings, SuppliedKeys), ApiError> {
    let shape = |error: serde_json::Error| {
        let message = format!("Failed to deserialize the JSON body into the target type: {error}");
        refused(ErrorCode::InvalidBodyShape, None, message)
    };
    let keys = match body.remove("keys") {
        None | Some(serde_json::Value::Null) => SuppliedKeys::default(),
        Some(keys) => serde_json::from_value(keys).map_err(|error| {
            refused(ErrorCode::InvalidBodyShape, Some("keys"), format!("keys: {error}"))
        })?,
    };
    let settings = serde_json::from_value(serde_json::Value::Object(body)).map_err(shape)?;
    Ok((settings, keys))
}

/// The providers whose key `keys` supplies, each checked against the key this server holds:
/// a wrong or unheld one is refused (422 naming `keys.<provider>`).
fn supplied(
    credentials: &crate::llm::Credentials,
    keys: &SuppliedKeys,
) -> Result<Vec<crate::config::llm::ProviderKind>, ApiError> {
    use crate::config::llm::ProviderKind;
    let mut supplied = Vec::new();
    for (kind, given) in
        [(ProviderKind::Openai, &keys.openai), (ProviderKind::Anthropic, &keys.anthropic)]
    {
        let Some(given) = given else { continue };
        if !credentials.is_key(kind, given) {
            let field = format!("keys.{}", kind.as_str());
            let message = format!(
                "{field}: not the {} key this server holds (or it holds none)",
                kind.as_str()
            );
            return Err(ApiError::Refused(Refusal {
                code: ErrorCode::InvalidField,
                field: Some(field.into()),
                message,
            }));
        }
        supplied.push(kind);
    }
    Ok(supplied)
}

/// `PUT /api/llm/config`: replaces the settings; the next call in every process uses them.
/// Pointing a keyed target at a host its key is not bound to, or adding to `key_hosts`,
/// needs that key in `keys` (422 naming the host's field otherwise, nothing changed); a
/// keyed target is never called over plain http to another machine.
#[utoipa::path(put, path = "/api/llm/config", tag = "llm",
    params(Metadata),
    request_body = ConfigChangeBody,
    responses(
        (status = 200, description = "In force (unchanged settings record nothing); `ETag` is the new version", body = ConfigView),
        PutConfigErrors,
    ))]
async fn put_config(
    State(app): State<AppState>,
    Metadata(metadata): Metadata,
    headers: HeaderMap,
    ApiJson(body): ApiJson<serde_json::Map<String, serde_json::Value>>,
) -> Result<Tagged, ApiError> {
    let (settings, keys) = change_body(body)?;
    let credentials = crate::llm::Credentials::of(&app.agents.llm);
    let held = credentials.held(&supplied(&credentials, &keys)?);
    change(&app, &headers, metadata, |by, now_ms| LlmConfigCommand::Set {
        settings: Box::new(settings.clone()),
        by,
        now_ms,
        keys: held.clone(),
    })
    .await
}

errors! { ResetConfigErrors = COMMAND + CALLER + [VersionMismatch, ConfigContended] }

/// `POST /api/llm/config/reset`: back to the defaults (offline).
#[utoipa::path(post, path = "/api/llm/config/reset", tag = "llm",
    params(Metadata),
    responses(
        (status = 200, description = "The defaults are in force; `ETag` is the new version", body = ConfigView),
        ResetConfigErrors,
    ))]
async fn reset_config(
    State(app): State<AppState>,
    Metadata(metadata): Metadata,
    headers: HeaderMap,
    _body: Bytes,
) -> Result<Tagged, ApiError> {
    change(&app, &headers, metadata, |by, now_ms| LlmConfigCommand::Reset { by, now_ms }).await
}
