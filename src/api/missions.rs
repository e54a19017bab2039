//! Mission routes: enqueue (one, or a batch in `batch`), look up, history, cancel, retry. Each handler translates HTTP
//! into a mission command and the outcome back; every refusal maps to a status and a code in
//! [`refusal`], exhaustively, so a new domain error cannot compile without one.

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, post};
use domain::mission::{
    ATTEMPT_MAX_DEFAULT, AttemptError, Mission, MissionCommand, MissionError, MissionSpec,
    MissionStatus, Priority,
};
use domain::{EventMetadata, RecordedEvent, StreamId};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use uuid::Uuid;

mod batch;

use super::{ApiError, ApiJson, AppState, Refusal};
use crate::command::{self, CommandError};
use crate::event_store::AppendError;

/// Deadline of one attempt when the request names none.
pub const TIMEOUT_S_DEFAULT: u64 = 600;
pub const TIMEOUT_S_MAX: u64 = 24 * 60 * 60;
pub const IDEMPOTENCY_KEY_LEN_MAX: usize = 200;

/// Derives mission and command ids from idempotency keys (UUID v5 namespace).
const IDEMPOTENCY_NAMESPACE: Uuid = Uuid::from_u128(0x6b1f_3c2e_9a47_4d8b_b0e5_2f7c_1d9a_4e63);

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/missions", get(list_missions))
        .route("/api/missions/enqueue", post(enqueue))
        .route(
            "/api/missions/enqueue/batch",
            post(batch::enqueue_batch)
                .layer(axum::extract::DefaultBodyLimit::max(batch::BATCH_BODY_BYTES_MAX)),
        )
        .route("/api/missions/{mission_id}", get(get_mission))
        .route("/api/missions/{mission_id}/events", get(mission_events))
        .route("/api/missions/{mission_id}/cancel", post(cancel))
        .route("/api/missions/{mission_id}/retry", post(retry))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnqueueRequest {
    pub name: String,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub priority: Option<Priority>,
    #[serde(default)]
    pub payload: Option<serde_json::Value>,
    #[serde(default)]
    pub agent: Option<String>,
    #[serde(default)]
    pub max_attempts: Option<u32>,
    #[serde(default)]
    pub timeout_s: Option<u64>,
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub not_before: Option<OffsetDateTime>,
    #[serde(default)]
    pub idempotency_key: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct AttemptErrorView {
    pub attempt: u32,
    pub error: String,
    pub at: String,
}

/// A mission as the API shows it.
#[derive(Debug, Serialize)]
pub struct MissionView {
    pub mission_id: String,
    pub status: MissionStatus,
    pub name: String,
    pub description: String,
    pub priority: Priority,
    pub agent: String,
    pub payload: serde_json::Value,
    pub max_attempts: u32,
    pub timeout_s: u64,
    pub attempt: u32,
    pub worker_id: Option<String>,
    pub lease_expires_at: Option<String>,
    pub due_at: Option<String>,
    pub errors: Vec<AttemptErrorView>,
    pub result: Option<serde_json::Value>,
    pub enqueued_by: String,
    pub enqueued_at: String,
    pub updated_at: String,
    /// The mission stream's version: one per event.
    pub version: u64,
}

fn iso(ms: i64) -> String {
    let at = OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .unwrap_or(OffsetDateTime::UNIX_EPOCH);
    at.format(&time::format_description::well_known::Rfc3339).unwrap_or_default()
}

fn view(mission_id: &StreamId, mission: Mission, events: &[RecordedEvent]) -> Option<MissionView> {
    let spec = mission.spec?;
    let (first, last) = (events.first()?, events.last()?);
    let rfc3339 = |at: OffsetDateTime| {
        at.format(&time::format_description::well_known::Rfc3339).unwrap_or_default()
    };
    Some(MissionView {
        mission_id: mission_id.to_string(),
        status: mission.status,
        name: spec.name,
        description: spec.description,
        priority: spec.priority,
        agent: spec.agent,
        payload: spec.payload,
        max_attempts: spec.attempt_max,
        timeout_s: spec.timeout_ms / 1_000,
        attempt: mission.attempt,
        worker_id: mission.worker_id,
        lease_expires_at: mission.lease_expires_at_ms.map(iso),
        due_at: mission.due_at_ms.map(iso),
        errors: mission
            .errors
            .into_iter()
            .map(|AttemptError { attempt, error, at_ms }| AttemptErrorView {
                attempt,
                error,
                at: iso(at_ms),
            })
            .collect(),
        result: mission.result,
        enqueued_by: first.metadata.actor.clone(),
        enqueued_at: rfc3339(first.recorded_at),
        updated_at: rfc3339(last.recorded_at),
        version: last.version,
    })
}

fn now_ms() -> i64 {
    (OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as i64
}

/// Who is asking (`X-Actor`, until authentication arrives) and the request's correlation id
/// (`X-Correlation-Id`, or a new one).
fn metadata(headers: &HeaderMap) -> EventMetadata {
    let actor = headers
        .get("x-actor")
        .and_then(|value| value.to_str().ok())
        .filter(|actor| !actor.is_empty() && actor.len() <= 200)
        .unwrap_or("api");
    let mut metadata = EventMetadata::new(actor, OffsetDateTime::now_utc());
    if let Some(id) = headers
        .get("x-correlation-id")
        .and_then(|value| value.to_str().ok())
        .and_then(|value| Uuid::parse_str(value).ok())
    {
        metadata.correlation_id = id;
    }
    metadata
}

fn parse_mission_id(raw: &str) -> Result<StreamId, ApiError> {
    let id = Uuid::parse_str(raw).map_err(|_| ApiError::InvalidField {
        field: "mission_id",
        message: format!("{raw:?} is not a UUID"),
    })?;
    Ok(StreamId::from(id))
}

fn refused(
    status: StatusCode,
    code: &'static str,
    field: Option<&'static str>,
    message: String,
) -> ApiError {
    ApiError::Refused(Refusal { status, code, field, message })
}

/// Maps a command's failure to its HTTP answer.
fn refusal(error: CommandError<MissionError>) -> ApiError {
    use StatusCode as S;
    let message = error.to_string();
    match error {
        CommandError::Rejected(rejection) => {
            let (status, code, field) = match rejection {
                MissionError::Invalid { field, .. } => {
                    (S::UNPROCESSABLE_ENTITY, "invalid_field", Some(field))
                }
                MissionError::AlreadyExists => (S::CONFLICT, "mission_exists", None),
                MissionError::NotFound => (S::NOT_FOUND, "mission_not_found", None),
                MissionError::NotQueued { .. } => (S::CONFLICT, "mission_not_queued", None),
                MissionError::NotRunning { .. } => (S::CONFLICT, "mission_not_running", None),
                MissionError::HeldByAnother { .. } => {
                    (S::CONFLICT, "mission_held_by_another_worker", None)
                }
                MissionError::StaleAttempt { .. } => (S::CONFLICT, "stale_attempt", None),
                MissionError::AlreadyFinished { .. } => {
                    (S::CONFLICT, "mission_already_finished", None)
                }
                MissionError::NotFailed { .. } => (S::CONFLICT, "mission_not_failed", None),
                MissionError::NotDue { .. } => (S::CONFLICT, "mission_not_due", None),
                MissionError::LeaseNotExpired { .. } => (S::CONFLICT, "lease_not_expired", None),
            };
            refused(status, code, field, message)
        }
        CommandError::Contended(_) => refused(S::CONFLICT, "mission_contended", None, message),
        CommandError::Append(AppendError::PayloadTooLarge { .. }) => {
            refused(S::PAYLOAD_TOO_LARGE, "payload_too_large", Some("payload"), message)
        }
        CommandError::Append(AppendError::ActorTooLong { .. }) => {
            refused(S::BAD_REQUEST, "invalid_field", Some("x-actor"), message)
        }
        CommandError::Append(AppendError::GroupTooLarge { .. }) => {
            refused(S::PAYLOAD_TOO_LARGE, "batch_too_large", Some("missions"), message)
        }
        CommandError::Append(AppendError::Closed) => {
            refused(S::SERVICE_UNAVAILABLE, "shutting_down", None, message)
        }
        CommandError::Append(
            error @ (AppendError::Conflict { .. }
            | AppendError::NoEvents
            | AppendError::TooManyEvents { .. }
            | AppendError::InvalidEventType { .. }
            | AppendError::TooManyAppends { .. }
            | AppendError::InGroup { .. }
            | AppendError::Database(_)),
        ) => ApiError::Internal(error.into()),
        CommandError::Store(error) => ApiError::Internal(error.into()),
        CommandError::Upcast(error) => ApiError::Internal(error.into()),
    }
}

async fn load_view(app: &AppState, mission_id: &StreamId) -> Result<MissionView, ApiError> {
    let (mission, events) =
        command::load_with_events::<Mission>(&app.store, mission_id).await.map_err(refusal)?;
    view(mission_id, mission, &events)
        .ok_or_else(|| refusal(CommandError::Rejected(MissionError::NotFound)))
}

/// An enqueue request turned into what the command needs: the mission's id, the command's
/// id and the spec with every default filled in. Shared by single and batch enqueue, so both
/// apply the same rules and defaults.
struct PlannedEnqueue {
    mission_id: StreamId,
    command_id: Uuid,
    spec: MissionSpec,
}

/// Checks what only the API knows about (`timeout_s` bounds, the idempotency key) and fills
/// in defaults; the aggregate checks the rest of the spec when it decides.
fn plan_enqueue(request: EnqueueRequest, default_agent: &str) -> Result<PlannedEnqueue, ApiError> {
    let timeout_s = request.timeout_s.unwrap_or(TIMEOUT_S_DEFAULT);
    if timeout_s == 0 || timeout_s > TIMEOUT_S_MAX {
        let message = format!("must be between 1 and {TIMEOUT_S_MAX}");
        return Err(refused(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_field",
            Some("timeout_s"),
            message,
        ));
    }
    let (mission_id, command_id) = match &request.idempotency_key {
        Some(key) if key.is_empty() || key.len() > IDEMPOTENCY_KEY_LEN_MAX => {
            let message = format!("must be 1 to {IDEMPOTENCY_KEY_LEN_MAX} characters");
            return Err(refused(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_field",
                Some("idempotency_key"),
                message,
            ));
        }
        // The key fixes both the mission's id and the command's, so a repeat finds the
        // first mission whichever process answers it.
        Some(key) => (
            Uuid::new_v5(&IDEMPOTENCY_NAMESPACE, format!("mission:{key}").as_bytes()),
            Uuid::new_v5(&IDEMPOTENCY_NAMESPACE, format!("enqueue:{key}").as_bytes()),
        ),
        None => (Uuid::now_v7(), Uuid::now_v7()),
    };
    let spec = MissionSpec {
        name: request.name,
        description: request.description,
        priority: request.priority.unwrap_or(Priority::Normal),
        payload: request.payload.unwrap_or_else(|| serde_json::json!({})),
        agent: request.agent.unwrap_or_else(|| default_agent.to_owned()),
        attempt_max: request.max_attempts.unwrap_or(ATTEMPT_MAX_DEFAULT),
        timeout_ms: timeout_s * 1_000,
        not_before_ms: request.not_before.map(|at| (at.unix_timestamp_nanos() / 1_000_000) as i64),
    };
    Ok(PlannedEnqueue { mission_id: StreamId::from(mission_id), command_id, spec })
}

/// `POST /api/missions/enqueue`: 201 with the new mission; 200 with the first one when the
/// `idempotency_key` was used before; 4xx naming the field for a bad body.
async fn enqueue(
    State(app): State<AppState>,
    headers: HeaderMap,
    ApiJson(request): ApiJson<EnqueueRequest>,
) -> Result<(StatusCode, ApiJson<MissionView>), ApiError> {
    let PlannedEnqueue { mission_id, command_id, spec } =
        plan_enqueue(request, &app.default_agent)?;
    let mut metadata = metadata(&headers);
    metadata.command_id = Some(command_id);
    let now = now_ms();
    let executed = command::execute::<Mission>(&app.store, &mission_id, metadata, || {
        MissionCommand::Enqueue { spec: spec.clone(), now_ms: now }
    })
    .await
    .map_err(refusal)?;
    let duplicate = executed.appended.as_ref().is_some_and(|appended| appended.duplicate);
    let status = if duplicate { StatusCode::OK } else { StatusCode::CREATED };
    Ok((status, ApiJson(load_view(&app, &mission_id).await?)))
}

/// `GET /api/missions/{mission_id}`: 200 with the mission, 404 unknown.
async fn get_mission(
    State(app): State<AppState>,
    Path(mission_id): Path<String>,
) -> Result<ApiJson<MissionView>, ApiError> {
    let mission_id = parse_mission_id(&mission_id)?;
    Ok(ApiJson(load_view(&app, &mission_id).await?))
}

/// `GET /api/missions/{mission_id}/events`: the mission's whole history, oldest first.
async fn mission_events(
    State(app): State<AppState>,
    Path(mission_id): Path<String>,
) -> Result<ApiJson<Vec<RecordedEvent>>, ApiError> {
    let mission_id = parse_mission_id(&mission_id)?;
    let stream_type = <Mission as domain::Aggregate>::stream_type();
    let events = app.store.load_stream(&stream_type, &mission_id, None).await?;
    if events.is_empty() {
        return Err(refusal(CommandError::Rejected(MissionError::NotFound)));
    }
    Ok(ApiJson(events))
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct CancelRequest {
    #[serde(default)]
    reason: String,
}

/// `POST /api/missions/{mission_id}/cancel` with an optional `{"reason"}`: 200 with the
/// mission, 404 unknown, 409 already finished.
async fn cancel(
    State(app): State<AppState>,
    Path(mission_id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<ApiJson<MissionView>, ApiError> {
    let mission_id = parse_mission_id(&mission_id)?;
    let request: CancelRequest = if body.is_empty() {
        CancelRequest::default()
    } else {
        serde_json::from_slice(&body).map_err(|error| {
            refused(
                StatusCode::BAD_REQUEST,
                "invalid_body",
                None,
                format!("request body is not valid: {error}"),
            )
        })?
    };
    let metadata = metadata(&headers);
    let by = metadata.actor.clone();
    let now = now_ms();
    command::execute::<Mission>(&app.store, &mission_id, metadata, || MissionCommand::Cancel {
        reason: request.reason.clone(),
        by: by.clone(),
        now_ms: now,
    })
    .await
    .map_err(refusal)?;
    Ok(ApiJson(load_view(&app, &mission_id).await?))
}

/// `POST /api/missions/{mission_id}/retry`: runs a failed mission again with fresh
/// attempts; 200 with the mission, 404 unknown, 409 not failed.
async fn retry(
    State(app): State<AppState>,
    Path(mission_id): Path<String>,
    headers: HeaderMap,
) -> Result<ApiJson<MissionView>, ApiError> {
    let mission_id = parse_mission_id(&mission_id)?;
    let metadata = metadata(&headers);
    let by = metadata.actor.clone();
    let now = now_ms();
    command::execute::<Mission>(&app.store, &mission_id, metadata, || MissionCommand::Retry {
        by: by.clone(),
        now_ms: now,
    })
    .await
    .map_err(refusal)?;
    Ok(ApiJson(load_view(&app, &mission_id).await?))
}

/// Most rows one `GET /api/missions` page returns.
pub const LIST_LIMIT_MAX: u32 = 200;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    status: Option<MissionStatus>,
    priority: Option<Priority>,
    agent: Option<String>,
    #[serde(default, with = "time::serde::rfc3339::option")]
    since: Option<OffsetDateTime>,
    limit: Option<u32>,
    /// `next_cursor` of the previous page.
    cursor: Option<u64>,
}

#[derive(Debug, Serialize, sqlx::FromRow)]
struct MissionRow {
    mission_id: String,
    name: Option<String>,
    status: String,
    priority: Option<String>,
    agent: Option<String>,
    attempt: Option<i32>,
    enqueued_by: Option<String>,
    #[serde(with = "time::serde::rfc3339::option")]
    enqueued_at: Option<OffsetDateTime>,
    #[serde(with = "time::serde::rfc3339")]
    updated_at: OffsetDateTime,
    #[serde(skip)]
    enqueued_position: Option<i64>,
}

#[derive(Debug, Serialize)]
struct MissionPage {
    missions: Vec<MissionRow>,
    /// Pass as `cursor` for the next page; absent on the last one.
    next_cursor: Option<u64>,
    /// The log position the list reflects (the `mission_list` projector's checkpoint).
    position: u64,
}

/// `GET /api/missions?status=&priority=&agent=&since=&limit=&cursor=`: missions, newest
/// first, from the `mission_list` read model.
async fn list_missions(
    State(app): State<AppState>,
    super::ApiQuery(query): super::ApiQuery<ListQuery>,
) -> Result<ApiJson<MissionPage>, ApiError> {
    let limit = query.limit.unwrap_or(50);
    if limit == 0 || limit > LIST_LIMIT_MAX {
        let message = format!("must be between 1 and {LIST_LIMIT_MAX}, got {limit}");
        return Err(ApiError::InvalidField { field: "limit", message });
    }
    let mut tx = app.store.pool().begin().await?;
    sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
        .execute(&mut *tx)
        .await?;
    let missions: Vec<MissionRow> = sqlx::query_as(
        "SELECT mission_id, name, status, priority, agent, attempt, enqueued_by, enqueued_at,
                updated_at, enqueued_position
         FROM mission_list
         WHERE ($1::text IS NULL OR status = $1)
           AND ($2::text IS NULL OR priority = $2)
           AND ($3::text IS NULL OR agent = $3)
           AND ($4::timestamptz IS NULL OR enqueued_at >= $4)
           AND ($5::int8 IS NULL OR enqueued_position < $5)
         ORDER BY enqueued_position DESC
         LIMIT $6",
    )
    .bind(query.status.map(|status| status.to_string()))
    .bind(query.priority.and_then(|priority| {
        serde_json::to_value(priority).ok().and_then(|v| v.as_str().map(str::to_owned))
    }))
    .bind(query.agent)
    .bind(query.since)
    .bind(query.cursor.map(|cursor| cursor as i64))
    .bind(i64::from(limit))
    .fetch_all(&mut *tx)
    .await?;
    let position = crate::projectors::checkpoint(&mut *tx, projections::mission_list::NAME).await?;
    tx.commit().await?;
    let next_cursor = (missions.len() == limit as usize)
        .then(|| missions.last().and_then(|row| row.enqueued_position))
        .flatten()
        .map(|position| position as u64);
    Ok(ApiJson(MissionPage { missions, next_cursor, position }))
}
