//! The HTTP API. This module alone knows about HTTP and JSON: handlers translate requests
//! into calls on the rest of `brain` and map every failure to one error shape,
//! `{"error": {"code", "message"}}` (design invariant 8).
//!
//! Every route is documented in the OpenAPI document at `GET /openapi.json`; [`openapi`]
//! says how to add one.

mod missions;
pub mod openapi;
mod queue;
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
use crate::eventlog::store::{self, EventStore, StoreError};

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
    /// The live event feed behind `GET /ws/events`.
    pub feed: crate::eventlog::feed::FeedHandle,
}

impl AppState {
    fn pool(&self) -> &PgPool {
        self.store.pool()
    }
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
        .merge(missions::routes())
        .merge(queue::routes())
        .merge(ws::routes())
}

/// The router of [`routes()`], the docs UI, and error-shaped answers for unknown paths and
/// methods.
pub fn router(state: AppState) -> Router {
    routes()
        .into_router()
        .fallback(no_route)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(state)
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
    /// Some items of a batch were refused; nothing of the batch was done.
    #[error("{} of {of} items were refused; nothing was done", items.len())]
    BatchRefused { items: Vec<ItemRefusal>, of: usize },
    #[error("internal error")]
    Internal(#[from] anyhow::Error),
}

impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> ApiError {
        ApiError::Internal(error.into())
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(error: sqlx::Error) -> ApiError {
        ApiError::Internal(error.into())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code, field) = match &self {
            ApiError::InvalidQuery(rejection) => (rejection.status(), "invalid_query", None),
            ApiError::InvalidBody(rejection) => (rejection.status(), "invalid_body", None),
            ApiError::Refused(refusal) => (refusal.status, refusal.code, refusal.field),
            ApiError::InvalidField { field, .. } => {
                (StatusCode::BAD_REQUEST, "invalid_field", Some(*field))
            }
            ApiError::BatchRefused { .. } => {
                (StatusCode::UNPROCESSABLE_ENTITY, "batch_refused", None)
            }
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
    /// The input at fault, where there is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<&'static str>,
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
    pub field: Option<&'static str>,
    pub message: String,
}

/// A refusal that a domain or store error maps to: status, a stable code, the field at fault.
#[derive(Debug)]
pub struct Refusal {
    pub status: StatusCode,
    pub code: &'static str,
    pub field: Option<&'static str>,
    pub message: String,
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

/// `axum::Json`, but a bad body gets our error shape instead of plain text.
#[derive(axum::extract::FromRequest)]
#[from_request(via(axum::Json), rejection(ApiError))]
pub struct ApiJson<T>(pub T);

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
}

/// `GET /ready`: 200 when PostgreSQL, NATS and Redis all answer, else 503 naming which not.
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
    let all_ok = [&postgres, &nats, &redis].iter().all(|check| *check == "ok");
    let status = if all_ok { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    let body = Readiness {
        status: if all_ok { "ready" } else { "unavailable" },
        checks: ReadyChecks { postgres, nats, redis },
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
    let limit = query.limit.unwrap_or(100);
    if limit == 0 || limit > EVENTS_PAGE_LIMIT_MAX {
        let message = format!("must be between 1 and {EVENTS_PAGE_LIMIT_MAX}, got {limit}");
        return Err(ApiError::InvalidField { field: "limit", message });
    }
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
    // One snapshot for rows and position, so a commit between them cannot make them disagree.
    let mut tx = app.pool().begin().await?;
    sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
        .execute(&mut *tx)
        .await?;
    let rows: Vec<EventTypeCount> = sqlx::query_as(
        "SELECT stream_type, event_type, events, last_position, last_recorded_at
         FROM event_type_stats ORDER BY stream_type, event_type",
    )
    .fetch_all(&mut *tx)
    .await?;
    let position =
        crate::eventlog::projectors::checkpoint(&mut *tx, projections::event_type_stats::NAME)
            .await?;
    tx.commit().await?;
    Ok(Json(EventTypeStatsPage { position, event_types: rows }))
}
