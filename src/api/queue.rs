//! Queue routes for dashboards: what will run next, how the mission machinery is doing, and
//! what each worker is up to. They read the Redis queue projection, the `mission_list` read
//! model and the workers' own status reports; none of them writes anything.

use crate::api::auth::Access;
use domain::api_key::Permission;
use std::collections::BTreeMap;

use axum::extract::State;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::routes;

use super::error::{ErrorCode, errors, refused};
use super::extract::page_limit;
use super::{ApiError, ApiJson, ApiQuery, ApiRoutes, AppState};
use crate::clock::now_ms;
use crate::missions::list;
use crate::missions::queue::{Depth, Queue};
use crate::missions::status::{StatusBoard, WorkerStatus};

/// Most missions one `GET /api/missions/queue` returns.
pub const QUEUE_LIMIT_MAX: u32 = 500;

pub fn routes() -> ApiRoutes {
    ApiRoutes::new()
        .routes(Access::needs(Permission::MissionsRead), routes!(upcoming))
        .routes(Access::needs(Permission::MissionsRead), routes!(health))
        .routes(Access::needs(Permission::MissionsRead), routes!(worker_status))
}

pub(super) fn queue(app: &AppState) -> Result<&Queue, ApiError> {
    app.queue.get().ok_or_else(|| {
        let message = "the queue is not connected to Redis yet".to_owned();
        refused(ErrorCode::QueueUnavailable, None, message)
    })
}

fn queue_error(error: crate::missions::queue::QueueError) -> ApiError {
    ApiError::Internal(error.into())
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
struct UpcomingQuery {
    /// One agent kind; all of them, merged in pop order, when absent.
    agent: Option<String>,
    /// 1 to 500; 50 when absent.
    limit: Option<u32>,
}

#[derive(Debug, Serialize, ToSchema)]
struct UpcomingMission {
    mission_id: String,
    agent: String,
    name: Option<String>,
    priority: Option<String>,
    /// Lower pops first: the time it became ready, less its priority's bonus (ms).
    score: i64,
    ready_at_ms: i64,
    bonus_ms: i64,
    /// How long it has waited, in ms.
    age_ms: i64,
}

#[derive(Debug, Serialize, ToSchema)]
struct UpcomingPage {
    missions: Vec<UpcomingMission>,
    /// The log position the queue reflects.
    position: u64,
}

errors! { UpcomingErrors = READ + QUERY + [QueueUnavailable] }

/// `GET /api/missions/queue?agent=&limit=`: ready missions in the order workers will pop them.
#[utoipa::path(get, path = "/api/missions/queue", tag = "missions", params(UpcomingQuery),
    responses(
        (status = 200, description = "Ready missions in pop order, with score and age", body = UpcomingPage),
        UpcomingErrors,
    ))]
async fn upcoming(
    State(app): State<AppState>,
    ApiQuery(query): ApiQuery<UpcomingQuery>,
) -> Result<ApiJson<UpcomingPage>, ApiError> {
    let limit = page_limit(query.limit, 50, QUEUE_LIMIT_MAX)?;
    if let Some(agent) = &query.agent {
        domain::mission::check_agent(agent).map_err(|error| ApiError::InvalidField {
            field: "agent",
            message: error.to_string(),
        })?;
    }
    let queue = queue(&app)?;
    let position = queue.checkpoint().await.map_err(queue_error)?;
    let kinds = match query.agent {
        Some(agent) => vec![agent],
        None => queue.depths().await.map_err(queue_error)?.into_keys().collect(),
    };
    let mut upcoming = Vec::new();
    for kind in kinds {
        let missions = queue.upcoming(&kind, limit as isize).await.map_err(queue_error)?;
        upcoming.extend(missions.into_iter().map(|mission| (kind.clone(), mission)));
    }
    upcoming.sort_by(|(_, a), (_, b)| (a.score, &a.mission_id).cmp(&(b.score, &b.mission_id)));
    upcoming.truncate(limit as usize);
    let ids: Vec<String> = upcoming.iter().map(|(_, mission)| mission.mission_id.clone()).collect();
    let mut described = list::describe(app.pool(), &ids).await?;
    let now = now_ms();
    let missions = upcoming
        .into_iter()
        .map(|(agent, mission)| {
            let (name, priority) = described.remove(&mission.mission_id).unwrap_or_default();
            UpcomingMission {
                age_ms: (now - mission.ready_at_ms).max(0),
                mission_id: mission.mission_id,
                agent,
                name,
                priority,
                score: mission.score,
                ready_at_ms: mission.ready_at_ms,
                bonus_ms: mission.bonus_ms,
            }
        })
        .collect();
    Ok(ApiJson(UpcomingPage { missions, position }))
}

#[derive(Debug, Serialize, ToSchema)]
struct QueueHealth {
    ready: u64,
    delayed: u64,
    /// How long the longest-waiting ready mission has waited, in ms.
    oldest_waiting_ms: Option<i64>,
}

#[derive(Debug, Serialize, ToSchema)]
struct Lag {
    /// Events committed but not yet on JetStream.
    relay: u64,
    /// Events committed but not yet applied, per projector.
    projectors: BTreeMap<String, u64>,
}

#[derive(Debug, Serialize, ToSchema)]
struct MissionsHealth {
    /// Per agent kind.
    queues: BTreeMap<String, QueueHealth>,
    running: u64,
    /// Missions per status, from the mission list.
    statuses: BTreeMap<String, i64>,
    /// The event store's last position.
    head: u64,
    lag: Lag,
}

errors! { QueueReadErrors = READ + [QueueUnavailable] }

/// `GET /api/missions/health`: queue depth per kind, oldest waiting age, counts by status,
/// projector and relay lag.
#[utoipa::path(get, path = "/api/missions/health", tag = "missions",
    responses(
        (status = 200, description = "Queue depths, running missions, counts by status, lag", body = MissionsHealth),
        QueueReadErrors,
    ))]
async fn health(State(app): State<AppState>) -> Result<ApiJson<MissionsHealth>, ApiError> {
    let queue = queue(&app)?;
    let now = now_ms();
    let depths = queue.depths().await.map_err(queue_error)?;
    let queues = depths
        .into_iter()
        .map(|(kind, Depth { ready, delayed, oldest_ready_at_ms })| {
            let oldest_waiting_ms = oldest_ready_at_ms.map(|at| (now - at).max(0));
            (kind, QueueHealth { ready, delayed, oldest_waiting_ms })
        })
        .collect();
    let running = queue.running().await.map_err(queue_error)?;
    let statuses = list::count_by_status(app.pool()).await?;
    let head = crate::eventlog::store::head(app.pool()).await?;
    let checkpoints: Vec<(String, i64)> = sqlx::query_as(
        "SELECT projector, position FROM projector_checkpoints WHERE projector NOT LIKE '%:%'",
    )
    .fetch_all(app.pool())
    .await?;
    let mut projectors: BTreeMap<String, u64> = checkpoints
        .into_iter()
        .map(|(name, position)| (name, head.saturating_sub(position as u64)))
        .collect();
    let queue_position = queue.checkpoint().await.map_err(queue_error)?;
    projectors
        .insert(projections::mission_queue::NAME.to_owned(), head.saturating_sub(queue_position));
    let jetstream = crate::eventlog::bus::jetstream(app.nats.clone(), 1);
    let on_bus = match jetstream.get_stream(crate::eventlog::bus::stream_name(&app.namespace)).await
    {
        Ok(mut stream) => stream.info().await.map_or(0, |info| info.state.last_sequence),
        Err(_) => 0,
    };
    Ok(ApiJson(MissionsHealth {
        queues,
        running,
        statuses,
        head,
        lag: Lag { relay: head.saturating_sub(on_bus), projectors },
    }))
}

#[derive(Debug, Serialize, ToSchema)]
struct WorkerView {
    #[serde(flatten)]
    status: WorkerStatus,
    /// Reported within the last few status intervals.
    alive: bool,
}

#[derive(Debug, Serialize, ToSchema)]
struct WorkersPage {
    workers: Vec<WorkerView>,
}

errors! { WorkerStatusErrors = INTERNAL + [QueueUnavailable] }

/// `GET /api/missions/worker/status`: each worker's kinds, running missions, counts,
/// throughput and when it last reported; workers silent for an hour are forgotten.
#[utoipa::path(get, path = "/api/missions/worker/status", tag = "missions",
    responses(
        (status = 200, description = "Every worker heard from in the last hour", body = WorkersPage),
        WorkerStatusErrors,
    ))]
async fn worker_status(State(app): State<AppState>) -> Result<ApiJson<WorkersPage>, ApiError> {
    let queue = queue(&app)?;
    let board = StatusBoard::new(queue.connection(), &app.namespace);
    let seen = board.read(now_ms()).await.map_err(|error| ApiError::Internal(error.into()))?;
    let workers = seen
        .into_iter()
        .map(|seen| WorkerView { status: seen.status, alive: seen.alive })
        .collect();
    Ok(ApiJson(WorkersPage { workers }))
}
