//! The HTTP API. This module alone knows about HTTP and JSON: handlers translate requests
//! into calls on the rest of `brain` and map every failure to one error shape,
//! `{"error": {"code", "message"}}` (design invariant 8).
//!
//! Every route is documented in the OpenAPI document at `GET /openapi.json`; [`openapi`]
//! says how to add one.

mod agents;
mod chat;
mod completions;
mod console;
mod leases;
mod llm;
mod llm_usage;
mod missions;
pub mod openapi;
mod queue;
mod replay;
pub mod server;
mod stream;
mod supervisor;
mod ws;

use std::time::Duration;

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{FromRequestParts, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use domain::RecordedEvent;
use metrics_exporter_prometheus::PrometheusHandle;
use serde::{Deserialize, Serialize};
use sqlx::PgPool;
use tokio::sync::OnceCell;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::routes;

pub use self::openapi::{ApiRoutes, Route};
use crate::eventlog::store::{self, AppendError, EventStore, StoreError};

/// Deadline for each dependency check of `GET /ready`.
pub const READY_CHECK_TIMEOUT_MS: u64 = 2_000;
/// Most events one `GET /api/events` page returns.
pub const EVENTS_PAGE_LIMIT_MAX: u32 = 1_000;

#[derive(Clone)]
pub struct AppState {
    pub store: EventStore,
    pub nats: async_nats::Client,
    pub redis: redis::Client,
    /// Connected on first use, so a Redis that is down at start-up shows in `/ready`
    /// instead of stopping the process.
    pub redis_connection: std::sync::Arc<OnceCell<redis::aio::ConnectionManager>>,
    /// The mission queue, once Redis has answered.
    pub queue: std::sync::Arc<OnceCell<crate::missions::queue::Queue>>,
    pub namespace: crate::config::Namespace,
    pub metrics: PrometheusHandle,
    /// Agent kind of a mission enqueued without one.
    pub default_agent: std::sync::Arc<str>,
    /// Agent kinds a mission may name (`ServeOptions::agent_kinds`).
    pub agent_kinds: std::sync::Arc<std::collections::BTreeSet<String>>,
    /// The live event feed behind `GET /ws/events`.
    pub feed: crate::eventlog::feed::FeedHandle,
    /// The database's clock: heartbeats and external agents' leases are judged on it.
    pub clock: crate::clock::LeaseClock,
    pub agents: std::sync::Arc<crate::agents::AgentSettings>,
    /// Whether this process leads the agent supervisor's sweeps.
    pub watchdog_leading: std::sync::Arc<std::sync::atomic::AtomicBool>,
    /// Backoff before a failed attempt reported over HTTP runs again.
    pub backoff: crate::backoff::Backoff,
    /// Every request's deadline: a long-poll ends before it.
    pub request_timeout: Duration,
    /// The LLM gateway with its shared limits and budgets, once Redis has answered.
    pub llm: std::sync::Arc<OnceCell<crate::llm::calls::Calls>>,
}

impl AppState {
    /// The LLM calls this process makes for API clients: sharing limits and budgets through
    /// Redis, or (while Redis does not answer) without them, in which case a budgeted call
    /// fails rather than spend unchecked.
    pub async fn llm_calls(&self) -> crate::llm::calls::Calls {
        let connected =
            self.redis_connection.get_or_try_init(|| self.redis.get_connection_manager()).await;
        let Ok(redis) = connected else {
            return crate::llm::calls::Calls::new(
                &self.agents.llm,
                crate::llm::gateway::Gateway::configured(&self.agents.llm),
                Some(self.store.clone()),
            );
        };
        self.llm
            .get_or_init(|| async {
                let gateway = crate::llm::gateway::Gateway::configured(&self.agents.llm).shared(
                    redis.clone(),
                    &self.namespace,
                    self.pool().clone(),
                );
                crate::llm::calls::Calls::new(&self.agents.llm, gateway, Some(self.store.clone()))
            })
            .await
            .clone()
    }

    fn pool(&self) -> &PgPool {
        self.store.pool()
    }

    /// Refuses an agent kind outside the configured set (422 `unknown_agent` naming
    /// `field`): each kind is a queue of its own in Redis, so client input must not create
    /// them. A name breaking the naming rule is left to the aggregate, which names the rule.
    fn check_known_kind(&self, kind: &str, field: &'static str) -> Result<(), ApiError> {
        if domain::mission::check_agent(kind).is_err() || self.agent_kinds.contains(kind) {
            return Ok(());
        }
        let known: Vec<&str> = self.agent_kinds.iter().map(String::as_str).collect();
        let message = format!("unknown agent kind {kind:?}; known: {}", known.join(", "));
        Err(refused(StatusCode::UNPROCESSABLE_ENTITY, "unknown_agent", Some(field), message))
    }
}

/// A refusal with its status, stable code and the fixed field at fault, if any.
fn refused(
    status: StatusCode,
    code: &'static str,
    field: Option<&'static str>,
    message: String,
) -> ApiError {
    ApiError::Refused(Refusal { status, code, field: field.map(Into::into), message })
}

/// A page size from the query: `default` when absent, else 1 to `max`, or 400 `invalid_field`
/// naming `limit`.
fn page_limit(limit: Option<u32>, default: u32, max: u32) -> Result<u32, ApiError> {
    let limit = limit.unwrap_or(default);
    if limit == 0 || limit > max {
        let message = format!("must be between 1 and {max}, got {limit}");
        return Err(ApiError::InvalidField { field: "limit", message });
    }
    Ok(limit)
}

/// A stream id taken from the path: a UUID, or 400 `invalid_field` naming `field`.
fn parse_id(field: &'static str, raw: &str) -> Result<domain::StreamId, ApiError> {
    let id = uuid::Uuid::parse_str(raw)
        .map_err(|_| ApiError::InvalidField { field, message: format!("{raw:?} is not a UUID") })?;
    Ok(domain::StreamId::from(id))
}

/// Every route of the API, documented: the one list the router and the OpenAPI document
/// are built from.
pub fn routes() -> ApiRoutes {
    ApiRoutes::new()
        .routes(routes!(health))
        .routes(routes!(ready))
        .routes(routes!(metrics))
        .routes(routes!(openapi::openapi_json))
        .routes(routes!(list_events))
        .routes(routes!(event_type_stats))
        .merge(agents::routes())
        .merge(leases::routes())
        .merge(llm::routes())
        .merge(chat::routes())
        .merge(llm_usage::routes())
        .merge(completions::routes())
        .merge(stream::routes())
        .merge(missions::routes())
        .merge(queue::routes())
        .merge(replay::routes())
        .merge(supervisor::routes())
        .merge(ws::routes())
}

/// The router of [`routes()`], the docs UI, and error-shaped answers for unknown paths and
/// methods. Every request is answered within `request_timeout`, its body read included
/// (`408 request_timeout` past it): a client sending a body at one byte a second holds a
/// handler no longer than that.
pub fn router(state: AppState, request_timeout: Duration) -> Router {
    let deadline = tower::ServiceBuilder::new()
        .layer(axum::error_handling::HandleErrorLayer::new(
            move |error: tower::BoxError| async move { timed_out(error, request_timeout) },
        ))
        .timeout(request_timeout);
    routes()
        .into_router()
        .merge(console::router())
        .fallback(no_route)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(deadline)
        .with_state(state)
}

fn timed_out(error: tower::BoxError, request_timeout: Duration) -> ApiError {
    if error.is::<tower::timeout::error::Elapsed>() {
        let message = format!("not answered within {} ms", request_timeout.as_millis());
        let (status, code) = (StatusCode::REQUEST_TIMEOUT, "request_timeout");
        ApiError::Refused(Refusal { status, code, field: None, message })
    } else {
        ApiError::Internal(anyhow::anyhow!("request failed: {error}"))
    }
}

async fn no_route(uri: axum::http::Uri) -> ApiError {
    let message = format!("no route for {}", uri.path());
    ApiError::Refused(Refusal {
        status: StatusCode::NOT_FOUND,
        code: "no_route",
        field: None,
        message,
    })
}

async fn method_not_allowed(method: axum::http::Method, uri: axum::http::Uri) -> ApiError {
    let (status, code) = (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed");
    let message = format!("{} does not answer {method}", uri.path());
    ApiError::Refused(Refusal { status, code, field: None, message })
}

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("query string is not valid: {0}")]
    InvalidQuery(#[from] QueryRejection),
    #[error("request body is not valid: {0}")]
    InvalidBody(#[from] JsonRejection),
    #[error("{0}")]
    Refused(Refusal),
    #[error("{field}: {message}")]
    InvalidField { field: &'static str, message: String },
    /// A string of the body or the query (`field` is its path) that no store can carry.
    #[error("{field} holds a NUL character (U+0000), which cannot be stored")]
    Unstorable { field: String },
    /// A header that reaches events and is not what it must be: parsed, never clamped.
    #[error("header {header}: {message}")]
    InvalidHeader { header: &'static str, message: String },
    /// Some items of a batch were refused; nothing of the batch was done.
    #[error("{} of {of} items were refused; nothing was done", items.len())]
    BatchRefused { items: Vec<ItemRefusal>, of: usize },
    /// PostgreSQL could not be reached or did not answer in time; nothing was done.
    #[error("the event store is unavailable; nothing was recorded, retry later")]
    Unavailable,
    /// A command's commit was sent and its answer never came.
    #[error(
        "the command may or may not have been recorded; retrying with the same \
         idempotency_key is safe and answers with what happened"
    )]
    OutcomeUnknown,
    #[error("internal error")]
    Internal(#[from] anyhow::Error),
}

impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> ApiError {
        match error {
            StoreError::Database(error) => ApiError::from(error),
            StoreError::Timeout => ApiError::Unavailable,
            corrupt @ StoreError::Corrupt(_) => ApiError::Internal(corrupt.into()),
        }
    }
}

impl From<sqlx::Error> for ApiError {
    /// A database that is away or too slow is a 503 the client may retry; anything else
    /// (a query the schema refuses, a decoding failure) is ours, a 500.
    fn from(error: sqlx::Error) -> ApiError {
        match error {
            sqlx::Error::Io(_)
            | sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::WorkerCrashed => {
                tracing::warn!(%error, "PostgreSQL unavailable");
                ApiError::Unavailable
            }
            sqlx::Error::Database(db) if db.code().is_some_and(|code| code == "57014") => {
                tracing::warn!(error = %db, "statement timed out");
                ApiError::Unavailable
            }
            error => ApiError::Internal(error.into()),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code, field): (_, _, Option<Field>) = match &self {
            ApiError::InvalidQuery(rejection) => (rejection.status(), "invalid_query", None),
            ApiError::InvalidBody(rejection) => (rejection.status(), "invalid_body", None),
            ApiError::Refused(refusal) => (refusal.status, refusal.code, refusal.field.clone()),
            ApiError::InvalidField { field, .. } => {
                (StatusCode::BAD_REQUEST, "invalid_field", Some((*field).into()))
            }
            ApiError::Unstorable { field } => {
                (StatusCode::BAD_REQUEST, "invalid_field", Some(field.clone().into()))
            }
            ApiError::InvalidHeader { header, .. } => {
                (StatusCode::BAD_REQUEST, "invalid_header", Some((*header).into()))
            }
            ApiError::BatchRefused { .. } => {
                (StatusCode::UNPROCESSABLE_ENTITY, "batch_refused", None)
            }
            ApiError::Unavailable => (StatusCode::SERVICE_UNAVAILABLE, "store_unavailable", None),
            ApiError::OutcomeUnknown => (StatusCode::SERVICE_UNAVAILABLE, "outcome_unknown", None),
            ApiError::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal", None),
        };
        if status.is_server_error() {
            // The cause stays in our logs; the caller learns only that it was ours.
            tracing::error!(error = ?self, "request failed");
        }
        let message = self.to_string();
        let items = match self {
            ApiError::BatchRefused { items, .. } => Some(items),
            _ => None,
        };
        let error = ErrorDetail { code, message, field, items };
        (status, Json(ErrorBody { error })).into_response()
    }
}

/// Maps an append's failure (any aggregate's) to its HTTP answer.
fn append_refusal(error: AppendError) -> ApiError {
    use StatusCode as S;
    let message = error.to_string();
    match error {
        AppendError::PayloadTooLarge { .. } => {
            refused(S::PAYLOAD_TOO_LARGE, "payload_too_large", Some("payload"), message)
        }
        AppendError::Unstorable { path, .. } => {
            let field = Some(path.into());
            ApiError::Refused(Refusal {
                status: S::BAD_REQUEST,
                code: "invalid_field",
                field,
                message,
            })
        }
        AppendError::ActorTooLong { .. } => {
            refused(S::BAD_REQUEST, "invalid_field", Some("x-actor"), message)
        }
        AppendError::GroupTooLarge { .. } => {
            refused(S::PAYLOAD_TOO_LARGE, "batch_too_large", Some("missions"), message)
        }
        AppendError::Closed => refused(S::SERVICE_UNAVAILABLE, "shutting_down", None, message),
        AppendError::Refused { .. } => {
            refused(S::UNPROCESSABLE_ENTITY, "unstorable", None, message)
        }
        AppendError::Database(_) => ApiError::Unavailable,
        AppendError::OutcomeUnknown(error) => {
            tracing::error!(%error, "command outcome unknown");
            ApiError::OutcomeUnknown
        }
        error @ (AppendError::Conflict { .. }
        | AppendError::NoEvents
        | AppendError::TooManyEvents { .. }
        | AppendError::InvalidEventType { .. }
        | AppendError::TooManyAppends { .. }
        | AppendError::InGroup { .. }) => ApiError::Internal(error.into()),
    }
}

/// The body of every error answer (design invariant 8).
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorDetail {
    /// Stable and machine-readable: `invalid_field`, `mission_not_found`, ...
    pub code: &'static str,
    /// For people: what was wrong.
    pub message: String,
    /// The input at fault, where there is one: a field's path in the body (`payload.a[2]`),
    /// a query parameter or a header.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    pub field: Option<Field>,
    /// For `batch_refused`: each refused item, with its reason.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub items: Option<Vec<ItemRefusal>>,
}

/// Why one item of a batch was refused.
#[derive(Debug, Serialize, ToSchema)]
pub struct ItemRefusal {
    /// The item's place in the request, from 0.
    pub index: usize,
    pub code: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    pub field: Option<Field>,
    pub message: String,
}

/// The name or path of an input at fault: mostly a fixed name, a path where the body says.
pub type Field = std::borrow::Cow<'static, str>;

/// A refusal that a domain or store error maps to: status, a stable code, the field at fault.
#[derive(Debug)]
pub struct Refusal {
    pub status: StatusCode,
    pub code: &'static str,
    pub field: Option<Field>,
    pub message: String,
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

/// `axum::Json`, but a bad body gets our error shape instead of plain text, and a body
/// with a NUL character in any string (a value or a key, however deeply nested) is refused
/// with the path of that string: PostgreSQL cannot store one, and it must never reach a
/// batch that other clients' commands share (design invariant 9).
pub struct ApiJson<T>(pub T);

impl<T, S> axum::extract::FromRequest<S> for ApiJson<T>
where
    T: serde::de::DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(request: axum::extract::Request, state: &S) -> Result<Self, ApiError> {
        let (parts, body) = request.into_parts();
        let request = axum::extract::Request::from_parts(parts.clone(), body);
        let bytes = axum::body::Bytes::from_request(request, state)
            .await
            .map_err(|rejection| ApiError::InvalidBody(JsonRejection::from(rejection)))?;
        let request = axum::extract::Request::from_parts(parts, bytes.clone().into());
        let Json(value) = Json::<T>::from_request(request, state).await?;
        check_no_nul(&bytes)?;
        Ok(ApiJson(value))
    }
}

/// An optional JSON body: empty means `T::default()`; otherwise it must parse (400
/// `invalid_body`) and hold no NUL (400 `invalid_field` naming where).
pub fn optional_json<T: serde::de::DeserializeOwned + Default>(body: &[u8]) -> Result<T, ApiError> {
    if body.is_empty() {
        return Ok(T::default());
    }
    check_no_nul(body)?;
    serde_json::from_slice(body).map_err(|error| {
        let message = format!("request body is not valid: {error}");
        let (status, code) = (StatusCode::BAD_REQUEST, "invalid_body");
        ApiError::Refused(Refusal { status, code, field: None, message })
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

impl<T: Serialize> IntoResponse for ApiJson<T> {
    fn into_response(self) -> Response {
        Json(self.0).into_response()
    }
}

/// `axum::extract::Query`, but a bad query string gets our error shape.
pub struct ApiQuery<T>(pub T);

impl<T, S> FromRequestParts<S> for ApiQuery<T>
where
    T: serde::de::DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &S,
    ) -> Result<Self, Self::Rejection> {
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

#[derive(Serialize, ToSchema)]
struct Health {
    /// Always `ok`.
    status: &'static str,
}

/// `GET /health`: 200 while the process runs.
#[utoipa::path(get, path = "/health", tag = "service",
    responses((status = 200, description = "The process runs", body = Health)))]
async fn health() -> Json<Health> {
    Json(Health { status: "ok" })
}

#[derive(Serialize, ToSchema)]
struct Readiness {
    /// `ready` or `unavailable`.
    status: &'static str,
    checks: ReadyChecks,
}

/// Each dependency's check: `ok`, or why not.
#[derive(Serialize, ToSchema)]
struct ReadyChecks {
    postgres: String,
    nats: String,
    redis: String,
    /// This process's group committer: its last batch committed and none is stalled.
    committer: String,
}

/// `GET /ready`: 200 when PostgreSQL, NATS and Redis all answer and the committer commits,
/// else 503 naming which not.
#[utoipa::path(get, path = "/ready", tag = "service",
    responses(
        (status = 200, description = "PostgreSQL, NATS and Redis all answer", body = Readiness),
        (status = 503, description = "At least one does not; its check says why", body = Readiness),
    ))]
async fn ready(State(app): State<AppState>) -> (StatusCode, Json<Readiness>) {
    let deadline = Duration::from_millis(READY_CHECK_TIMEOUT_MS);
    let postgres = check(deadline, async {
        sqlx::query("SELECT 1").execute(app.pool()).await.map(|_| ()).map_err(|e| e.to_string())
    });
    let nats = check(deadline, async {
        match app.nats.connection_state() {
            async_nats::connection::State::Connected => {
                app.nats.flush().await.map_err(|e| e.to_string())
            }
            state => Err(format!("connection is {state}")),
        }
    });
    let redis = check(deadline, async {
        let connection = app
            .redis_connection
            .get_or_try_init(|| app.redis.get_connection_manager())
            .await
            .map_err(|e| e.to_string())?;
        let mut connection = connection.clone();
        redis::cmd("PING")
            .query_async::<String>(&mut connection)
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    });
    let (postgres, nats, redis) = tokio::join!(postgres, nats, redis);
    let committer = match app.store.committer_stats().health(crate::clock::now_ms()) {
        Ok(()) => "ok".to_owned(),
        Err(why) => why,
    };
    let all_ok = [&postgres, &nats, &redis, &committer].iter().all(|check| *check == "ok");
    let status = if all_ok { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    let body = Readiness {
        status: if all_ok { "ready" } else { "unavailable" },
        checks: ReadyChecks { postgres, nats, redis, committer },
    };
    (status, Json(body))
}

async fn check(
    deadline: Duration,
    probe: impl std::future::Future<Output = Result<(), String>>,
) -> String {
    match tokio::time::timeout(deadline, probe).await {
        Ok(Ok(())) => "ok".to_owned(),
        Ok(Err(error)) => error,
        Err(_) => format!("no answer within {} ms", deadline.as_millis()),
    }
}

/// `GET /metrics`: Prometheus text.
#[utoipa::path(get, path = "/metrics", tag = "service",
    responses((status = 200, description = "Prometheus text exposition format",
               content_type = "text/plain", body = String)))]
async fn metrics(State(app): State<AppState>) -> impl IntoResponse {
    let content_type = [("content-type", "text/plain; version=0.0.4")];
    (content_type, app.metrics.render())
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
struct EventsQuery {
    /// Events with a position greater than this; 0 (the default) from the start.
    #[serde(default)]
    after: u64,
    /// 1 to 1000, default 100.
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<u32>,
}

#[derive(Serialize, ToSchema)]
struct EventsPage {
    events: Vec<RecordedEvent>,
    /// Pass as `after` to read on; equal to `after` when nothing newer exists yet.
    next_after: u64,
    head: u64,
}

/// `GET /api/events?after=&limit=`: the global log in position order, a page at a time.
#[utoipa::path(get, path = "/api/events", tag = "events", params(EventsQuery),
    responses(
        (status = 200, description = "Events after `after`, in position order", body = EventsPage),
        (status = 400, description = "`invalid_query`, or `invalid_field` for `limit`", body = ErrorBody),
        (status = 500, description = "`internal`: the store could not be read", body = ErrorBody),
    ))]
async fn list_events(
    State(app): State<AppState>,
    ApiQuery(query): ApiQuery<EventsQuery>,
) -> Result<Json<EventsPage>, ApiError> {
    let limit = page_limit(query.limit, 100, EVENTS_PAGE_LIMIT_MAX)?;
    let events = app.store.read_all(query.after, limit).await?;
    let head = store::head(app.pool()).await?;
    let next_after = events.last().map_or(query.after, |event| event.global_position);
    Ok(Json(EventsPage { events, next_after, head }))
}

#[derive(Serialize, sqlx::FromRow, ToSchema)]
struct EventTypeCount {
    stream_type: String,
    event_type: String,
    events: i64,
    last_position: i64,
    #[serde(with = "time::serde::rfc3339")]
    last_recorded_at: time::OffsetDateTime,
}

#[derive(Serialize, ToSchema)]
struct EventTypeStatsPage {
    /// The log position the counts reflect (the projector's checkpoint).
    position: u64,
    event_types: Vec<EventTypeCount>,
}

/// `GET /api/stats/event-types`: events recorded per stream type and event type, from the
/// `event_type_stats` read model, with the position it reflects.
#[utoipa::path(get, path = "/api/stats/event-types", tag = "events",
    responses(
        (status = 200, description = "Counts per stream type and event type", body = EventTypeStatsPage),
        (status = 500, description = "`internal`: the read model could not be read", body = ErrorBody),
    ))]
async fn event_type_stats(
    State(app): State<AppState>,
) -> Result<Json<EventTypeStatsPage>, ApiError> {
    let mut snapshot = crate::eventlog::projectors::Snapshot::begin(app.pool()).await?;
    let rows: Vec<EventTypeCount> = sqlx::query_as(
        "SELECT stream_type, event_type, events, last_position, last_recorded_at
         FROM event_type_stats ORDER BY stream_type, event_type",
    )
    .fetch_all(snapshot.conn())
    .await?;
    let position = snapshot.position(projections::event_type_stats::NAME).await?;
    Ok(Json(EventTypeStatsPage { position, event_types: rows }))
}
