//! The event log as it is: `GET /api/events` pages through the global log in position
//! order, `GET /api/stats/event-types` counts events per stream and event type from the
//! `event_type_stats` read model.

use crate::api::auth::Access;
use axum::Json;
use axum::extract::State;
use domain::RecordedEvent;
use domain::api_key::Permission;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::routes;

use super::error::{ApiError, errors};
use super::extract::{ApiQuery, page_limit};
use super::{ApiRoutes, AppState};
use crate::eventlog::store;

/// Most events one `GET /api/events` page returns.
pub const EVENTS_PAGE_LIMIT_MAX: u32 = 1_000;

pub fn routes() -> ApiRoutes {
    ApiRoutes::new()
        .routes(Access::needs(Permission::EventsRead), routes!(list_events))
        .routes(Access::needs(Permission::EventsRead), routes!(event_type_stats))
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

errors! { ListEventsErrors = READ + QUERY + [] }

/// `GET /api/events?after=&limit=`: the global log in position order, a page at a time.
#[utoipa::path(get, path = "/api/events", tag = "events", params(EventsQuery),
    responses(
        (status = 200, description = "Events after `after`, in position order", body = EventsPage),
        ListEventsErrors,
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

errors! { EventTypeStatsErrors = READ + [] }

/// `GET /api/stats/event-types`: events recorded per stream type and event type, from the
/// `event_type_stats` read model, with the position it reflects.
#[utoipa::path(get, path = "/api/stats/event-types", tag = "events",
    responses(
        (status = 200, description = "Counts per stream type and event type", body = EventTypeStatsPage),
        EventTypeStatsErrors,
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
