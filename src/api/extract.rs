//! What handlers take from a request, parsed at the edge and refused in the API's error
//! shape: a JSON body ([`ApiJson`]) or query ([`ApiQuery`]) with no NUL character anywhere
//! (PostgreSQL cannot store one, and it must never reach a batch that other clients' commands
//! share: design invariant 9), ids from the path ([`MissionId`], [`AgentId`],
//! [`ConversationId`]) and who is asking ([`Metadata`]). Each also documents itself for the
//! OpenAPI document (`params(MissionId, Metadata)`), so a route's annotation names the
//! extractor rather than restating it.

use axum::Json;
use axum::extract::rejection::{JsonRejection, RawPathParamsRejection};
use axum::extract::{FromRequest, FromRequestParts, RawPathParams, Request};
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use domain::{EventMetadata, StreamId};
use serde::Serialize;
use serde::de::DeserializeOwned;
use time::OffsetDateTime;
use utoipa::IntoParams;
use utoipa::openapi::Required;
use utoipa::openapi::path::{Parameter, ParameterBuilder, ParameterIn};
use utoipa::openapi::schema::{KnownFormat, ObjectBuilder, SchemaFormat, Type};
use uuid::Uuid;

use domain::api_key::Permission;

use super::error::{ApiError, ErrorCode, Refusal, refused};

/// Longest `X-Actor`.
pub const ACTOR_LEN_MAX: usize = 200;

/// `axum::Json`, but a bad body gets our error shape instead of plain text, and a body
/// with a NUL character in any string (a value or a key, however deeply nested) is refused
/// with the path of that string.
pub struct ApiJson<T>(pub T);

impl<T, S> FromRequest<S> for ApiJson<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, ApiError> {
        let (parts, body) = request.into_parts();
        let request = Request::from_parts(parts.clone(), body);
        let bytes = axum::body::Bytes::from_request(request, state)
            .await
            .map_err(|rejection| ApiError::InvalidBody(JsonRejection::from(rejection)))?;
        let request = Request::from_parts(parts, bytes.clone().into());
        let Json(value) = Json::<T>::from_request(request, state).await?;
        check_no_nul(&bytes)?;
        Ok(ApiJson(value))
    }
}

impl<T: Serialize> IntoResponse for ApiJson<T> {
    fn into_response(self) -> Response {
        Json(self.0).into_response()
    }
}

/// An optional JSON body: empty means `T::default()`; otherwise it must parse (400
/// `invalid_body`) and hold no NUL (400 `invalid_field` naming where).
pub fn optional_json<T: DeserializeOwned + Default>(body: &[u8]) -> Result<T, ApiError> {
    if body.is_empty() {
        return Ok(T::default());
    }
    check_no_nul(body)?;
    serde_json::from_slice(body).map_err(|error| {
        let message = format!("request body is not valid: {error}");
        ApiError::Refused(Refusal { code: ErrorCode::InvalidBody, field: None, message })
    })
}

/// Refuses JSON text holding a NUL in any string, naming where (cheap when there is none:
/// a scan for backslashes; the text is parsed again only to find the path).
pub fn check_no_nul(json: &[u8]) -> Result<(), ApiError> {
    if !domain::text::json_has_nul(json) {
        return Ok(());
    }
    let value: serde_json::Value = serde_json::from_slice(json).unwrap_or_default();
    let field = domain::text::nul_path(&value, "").unwrap_or_else(|| "body".to_owned());
    Err(ApiError::Unstorable { field: if field.is_empty() { "body".into() } else { field } })
}

/// `axum::extract::Query`, but a bad query string gets our error shape.
pub struct ApiQuery<T>(pub T);

impl<T, S> FromRequestParts<S> for ApiQuery<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let axum::extract::Query(value) =
            axum::extract::Query::<T>::from_request_parts(parts, state).await?;
        // A NUL can only arrive percent-encoded; no query value may carry one to a store.
        for pair in parts.uri.query().unwrap_or_default().split('&') {
            if pair.contains("%00") {
                let name = pair.split_once('=').map_or(pair, |(name, _)| name);
                return Err(ApiError::Unstorable { field: name.replace("%00", "\\u0000") });
            }
        }
        Ok(ApiQuery(value))
    }
}

/// A page size from the query: `default` when absent, else 1 to `max`, or 400 `invalid_field`
/// naming `limit`.
pub fn page_limit(limit: Option<u32>, default: u32, max: u32) -> Result<u32, ApiError> {
    let limit = limit.unwrap_or(default);
    if limit == 0 || limit > max {
        let message = format!("must be between 1 and {max}, got {limit}");
        return Err(ApiError::InvalidField { field: "limit", message });
    }
    Ok(limit)
}

/// A stream id given as text: a UUID, or 400 `invalid_field` naming `field`.
pub fn parse_id(field: &'static str, raw: &str) -> Result<StreamId, ApiError> {
    let id = uuid::Uuid::parse_str(raw)
        .map_err(|_| ApiError::InvalidField { field, message: format!("{raw:?} is not a UUID") })?;
    Ok(StreamId::from(id))
}

/// The path parameter `name` as a stream id.
async fn path_id<S: Send + Sync>(
    parts: &mut Parts,
    state: &S,
    name: &'static str,
) -> Result<StreamId, ApiError> {
    let params =
        RawPathParams::from_request_parts(parts, state).await.map_err(
            |rejection| match rejection {
                RawPathParamsRejection::InvalidUtf8InPathParam(_) => {
                    ApiError::InvalidField { field: name, message: "is not UTF-8".to_owned() }
                }
                other => {
                    ApiError::Internal(anyhow::anyhow!("path parameters: {}", other.body_text()))
                }
            },
        )?;
    let Some((_, raw)) = params.iter().find(|(key, _)| *key == name) else {
        return Err(ApiError::Internal(anyhow::anyhow!("the route has no parameter {name}")));
    };
    parse_id(name, raw)
}

/// The OpenAPI description of a UUID path parameter.
fn id_parameter(name: &str, description: &str) -> Parameter {
    let uuid = ObjectBuilder::new()
        .schema_type(Type::String)
        .format(Some(SchemaFormat::KnownFormat(KnownFormat::Uuid)));
    ParameterBuilder::new()
        .name(name)
        .parameter_in(ParameterIn::Path)
        .required(Required::True)
        .description(Some(description))
        .schema(Some(uuid))
        .build()
}

/// Declares an id extractor: the path parameter `$param`, a UUID, or 400 `invalid_field`
/// naming it.
macro_rules! path_id {
    ($(#[$meta:meta])* $name:ident = $param:literal, $description:literal) => {
        $(#[$meta])*
        #[derive(Debug, Clone)]
        pub struct $name(pub StreamId);

        impl<S: Send + Sync> FromRequestParts<S> for $name {
            type Rejection = ApiError;

            async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
                path_id(parts, state, $param).await.map($name)
            }
        }

        impl IntoParams for $name {
            fn into_params(_: impl Fn() -> Option<ParameterIn>) -> Vec<Parameter> {
                vec![id_parameter($param, $description)]
            }
        }
    };
}

path_id!(
    /// `{mission_id}` of the path.
    MissionId = "mission_id", "The mission's id"
);
path_id!(
    /// `{agent_id}` of the path.
    AgentId = "agent_id", "The agent's id"
);
path_id!(
    /// `{conversation_id}` of the path.
    ConversationId = "conversation_id", "The conversation's id"
);

/// Who is asking and on behalf of which request, as the metadata of the events a command
/// records: the authenticated principal as the actor (`key:<id>`, with the key's name), whom it says it acts for
/// (`X-Actor`, kept as `on_behalf_of`, and only from a key holding `impersonate`), and the
/// request's correlation id (`X-Correlation-Id`, or a new one). Both headers end up in
/// events, so a value that is present but not what it must be is refused (400
/// `invalid_header`), never replaced; `X-Actor` from a key without `impersonate` is a 403.
#[derive(Debug, Clone)]
pub struct Metadata(pub EventMetadata);

impl<S: Send + Sync> FromRequestParts<S> for Metadata {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        metadata(parts).map(Metadata)
    }
}

/// What [`Metadata`] extracts.
pub(super) fn metadata(parts: &Parts) -> Result<EventMetadata, ApiError> {
    let principal = super::auth::principal_of(parts);
    // Only a public route has no principal, and no public route records anything.
    let actor = principal.map_or_else(|| "anonymous".to_owned(), |principal| principal.actor());
    let headers = &parts.headers;
    let on_behalf_of = match headers.get("x-actor") {
        None => None,
        Some(value) => {
            let named = value
                .to_str()
                .ok()
                .filter(|actor| !actor.is_empty() && actor.len() <= ACTOR_LEN_MAX)
                .ok_or_else(|| ApiError::InvalidHeader {
                    header: "x-actor",
                    message: format!("must be 1 to {ACTOR_LEN_MAX} visible ASCII characters"),
                })?;
            if !principal.is_some_and(|principal| principal.can(Permission::Impersonate)) {
                let message = "X-Actor names whom a key acts for, and needs the impersonate \
                               permission"
                    .to_owned();
                return Err(refused(ErrorCode::Forbidden, Some("x-actor"), message));
            }
            Some(named.to_owned())
        }
    };
    let mut metadata = EventMetadata::new(actor, OffsetDateTime::now_utc());
    metadata.actor_name = principal.map(|principal| principal.name.clone());
    metadata.on_behalf_of = on_behalf_of;
    if let Some(value) = headers.get("x-correlation-id") {
        metadata.correlation_id =
            value.to_str().ok().and_then(|value| Uuid::parse_str(value).ok()).ok_or_else(|| {
                ApiError::InvalidHeader {
                    header: "x-correlation-id",
                    message: "must be a UUID".to_owned(),
                }
            })?;
    }
    Ok(metadata)
}

impl IntoParams for Metadata {
    fn into_params(parameter_in: impl Fn() -> Option<ParameterIn>) -> Vec<Parameter> {
        CallerHeaders::into_params(parameter_in)
    }
}

/// The headers [`Metadata`] reads, as the OpenAPI document shows them.
#[derive(IntoParams)]
#[into_params(parameter_in = Header)]
#[expect(dead_code, reason = "read from the headers by `metadata`; this type only documents them")]
struct CallerHeaders {
    /// Whom the key acts for, recorded as the events' `on_behalf_of` beside the key itself;
    /// only from a key holding `impersonate` (403 `forbidden` otherwise); 1 to 200 visible
    /// ASCII characters; anything else is a 400 `invalid_header`.
    #[param(rename = "X-Actor")]
    x_actor: Option<String>,
    /// A UUID shared by everything that follows from this request; a new one when absent;
    /// not a UUID is a 400 `invalid_header`.
    #[param(rename = "X-Correlation-Id")]
    x_correlation_id: Option<Uuid>,
}
