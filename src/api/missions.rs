//! Mission routes: enqueue (one, or a batch in [`batch`]), look up, history, cancel, retry.
//! Each handler translates HTTP into a mission command and the outcome back; every refusal
//! maps to a status and a code in [`refusal`], exhaustively, so a new domain error cannot
//! compile without one.

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use domain::mission::{
    ATTEMPT_MAX_DEFAULT, AttemptError, Mission, MissionCommand, MissionError, MissionSpec,
    MissionStatus, Priority,
};
use domain::{EventMetadata, RecordedEvent, StreamId};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::UtoipaMethodRouterExt;
use utoipa_axum::routes;
use uuid::Uuid;

mod batch;
mod throughput;
mod tree;

pub use tree::{ForkView, TreeNode};

use super::{ApiError, ApiJson, ApiRoutes, AppState, ErrorBody, append_refusal, refused};
use crate::clock::now_ms;
use crate::eventlog::command::{self, CommandError};
use crate::missions::list::{self, ListFilter, MissionRow};

/// Deadline of one attempt when the request names none.
pub const TIMEOUT_S_DEFAULT: u64 = 600;
pub const TIMEOUT_S_MAX: u64 = 24 * 60 * 60;
pub const IDEMPOTENCY_KEY_LEN_MAX: usize = 200;

/// Derives mission and command ids from idempotency keys (UUID v5 namespace).
const IDEMPOTENCY_NAMESPACE: Uuid = Uuid::from_u128(0x6b1f_3c2e_9a47_4d8b_b0e5_2f7c_1d9a_4e63);

pub fn routes() -> ApiRoutes {
    let batch_body_limit = axum::extract::DefaultBodyLimit::max(batch::BATCH_BODY_BYTES_MAX);
    ApiRoutes::new()
        .routes(routes!(list_missions))
        .routes(routes!(enqueue))
        .routes(routes!(batch::enqueue_batch).layer(batch_body_limit))
        .routes(routes!(get_mission))
        .routes(routes!(mission_events))
        .routes(routes!(cancel))
        .routes(routes!(retry))
        .routes(routes!(throughput::throughput))
}

/// Who is asking and on behalf of which request; both go into the events' metadata.
#[derive(IntoParams)]
#[into_params(parameter_in = Header)]
#[allow(dead_code)] // read from the headers by `metadata`; this type only documents them
pub(super) struct CallerHeaders {
    /// The caller, recorded as the events' actor (until authentication exists); 1 to 200
    /// visible ASCII characters, `api` when absent; anything else is a 400 `invalid_header`.
    #[param(rename = "X-Actor")]
    x_actor: Option<String>,
    /// A UUID shared by everything that follows from this request; a new one when absent;
    /// not a UUID is a 400 `invalid_header`.
    #[param(rename = "X-Correlation-Id")]
    x_correlation_id: Option<Uuid>,
}

/// A mission to run.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EnqueueRequest {
    /// 1 to 200 characters, not blank.
    pub name: String,
    /// Up to 4,000 characters.
    #[serde(default)]
    pub description: String,
    /// `normal` when absent.
    #[serde(default)]
    pub priority: Option<Priority>,
    /// Any JSON object, handed to the agent (at most 256 KiB as JSON); `{}` when absent.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub payload: Option<serde_json::Value>,
    /// Agent kind: 1 to 64 characters of a-z, 0-9, `_` and `-`; the server's default
    /// (`BRAIN_DEFAULT_AGENT`) when absent.
    #[serde(default)]
    pub agent: Option<String>,
    /// 1 to 100, default 3.
    #[serde(default)]
    #[schema(minimum = 1, maximum = 100)]
    pub max_attempts: Option<u32>,
    /// Deadline of one attempt in seconds: 1 to 86,400, default 600.
    #[serde(default)]
    #[schema(minimum = 1, maximum = 86400)]
    pub timeout_s: Option<u64>,
    /// Not to start before this time (RFC 3339).
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub not_before: Option<OffsetDateTime>,
    /// 1 to 200 characters. The same key always names the same mission: a repeat returns
    /// the first mission and enqueues nothing.
    #[serde(default)]
    pub idempotency_key: Option<String>,
    /// What the mission's LLM calls may spend over all its attempts: a call that could pass
    /// it is not sent, and the attempt fails `budget_exceeded` (not retried).
    #[serde(default)]
    pub budget: Option<domain::budget::Budget>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AttemptErrorView {
    pub attempt: u32,
    pub error: String,
    pub at: String,
}

/// A mission as the API shows it.
#[derive(Debug, Serialize, ToSchema)]
pub struct MissionView {
    pub mission_id: String,
    pub status: MissionStatus,
    pub name: String,
    pub description: String,
    pub priority: Priority,
    pub agent: String,
    #[schema(value_type = Object)]
    pub payload: serde_json::Value,
    pub max_attempts: u32,
    pub timeout_s: u64,
    /// What its LLM calls may spend, when it was given one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub budget: Option<domain::budget::Budget>,
    pub attempt: u32,
    pub worker_id: Option<String>,
    pub lease_expires_at: Option<String>,
    pub due_at: Option<String>,
    pub errors: Vec<AttemptErrorView>,
    /// What the agent returned, once completed.
    #[schema(value_type = Option<Object>)]
    pub result: Option<serde_json::Value>,
    pub enqueued_by: String,
    pub enqueued_at: String,
    pub updated_at: String,
    /// The mission stream's version: one per event.
    pub version: u64,
    /// The mission that spawned this one and waits for it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parent_id: Option<String>,
    /// The run this one is a fork of.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub forked_from: Option<ForkView>,
    /// Forks of this mission's runs.
    pub forks: Vec<ForkView>,
    /// The children a suspended mission still waits for.
    pub waiting_for: Vec<String>,
    /// Its sub-missions and theirs, oldest first. Statuses come from the mission list, which
    /// may trail the log by a moment.
    pub children: Vec<TreeNode>,
}

fn iso(ms: i64) -> String {
    let at = OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .unwrap_or(OffsetDateTime::UNIX_EPOCH);
    at.format(&time::format_description::well_known::Rfc3339).unwrap_or_default()
}

/// A mission's view from its state, who enqueued it and its stream version. Times are the
/// events' own (the moment each command was decided), so the view needs no stored event.
fn view(
    mission_id: &StreamId,
    mission: Mission,
    enqueued_by: String,
    version: u64,
) -> Option<MissionView> {
    let spec = mission.spec?;
    let leaf = |mission_id: &String| TreeNode {
        mission_id: mission_id.clone(),
        name: None,
        agent: None,
        status: None,
        children: vec![],
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
        budget: spec.budget,
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
        enqueued_by,
        enqueued_at: mission.enqueued_at_ms.map(iso).unwrap_or_default(),
        updated_at: mission.updated_at_ms.map(iso).unwrap_or_default(),
        version,
        parent_id: spec.parent.map(|parent| parent.mission_id),
        forked_from: spec.forked_from.map(|fork| ForkView {
            mission_id: fork.mission_id,
            attempt: fork.attempt,
            steps: fork.steps,
        }),
        forks: vec![],
        waiting_for: mission.waiting,
        children: mission.children.iter().map(leaf).collect(),
    })
}

/// Longest `X-Actor`.
pub const ACTOR_LEN_MAX: usize = 200;

/// Who is asking (`X-Actor`, until authentication arrives; `api` when absent) and the
/// request's correlation id (`X-Correlation-Id`, or a new one). Both end up in events, so a
/// value that is present but not what it must be is refused, never replaced.
pub(super) fn metadata(headers: &HeaderMap) -> Result<EventMetadata, ApiError> {
    let actor = match headers.get("x-actor") {
        None => "api",
        Some(value) => value
            .to_str()
            .ok()
            .filter(|actor| !actor.is_empty() && actor.len() <= ACTOR_LEN_MAX)
            .ok_or_else(|| ApiError::InvalidHeader {
                header: "x-actor",
                message: format!("must be 1 to {ACTOR_LEN_MAX} visible ASCII characters"),
            })?,
    };
    let mut metadata = EventMetadata::new(actor, OffsetDateTime::now_utc());
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

pub(super) fn parse_mission_id(raw: &str) -> Result<StreamId, ApiError> {
    super::parse_id("mission_id", raw)
}

/// Maps a command's failure to its HTTP answer.
pub(crate) fn refusal(error: CommandError<MissionError>) -> ApiError {
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
                MissionError::LeaseExpired { .. } => (S::CONFLICT, "lease_expired", None),
            };
            refused(status, code, field, message)
        }
        CommandError::Contended(_) => refused(S::CONFLICT, "mission_contended", None, message),
        CommandError::Append(error) => append_refusal(error),
        CommandError::Store(error) => ApiError::from(error),
        CommandError::Upcast(error) => ApiError::Internal(error.into()),
    }
}

pub(super) async fn load_view(
    app: &AppState,
    mission_id: &StreamId,
) -> Result<MissionView, ApiError> {
    let (mission, events) =
        command::load_with_events::<Mission>(&app.store, mission_id).await.map_err(refusal)?;
    let enqueued_by = events.first().map(|event| event.metadata.actor.clone()).unwrap_or_default();
    let version = events.last().map_or(0, |event| event.version);
    let has_children = !mission.children.is_empty();
    let mut view = view(mission_id, mission, enqueued_by, version)
        .ok_or_else(|| refusal(CommandError::Rejected(MissionError::NotFound)))?;
    view.forks = events
        .iter()
        .filter(|event| event.event_type == "MissionForked")
        .filter_map(|event| {
            let payload = &event.payload;
            Some(ForkView {
                mission_id: payload["fork_id"].as_str()?.to_owned(),
                attempt: payload["attempt"].as_u64()? as u32,
                steps: payload["steps"].as_u64()? as u32,
            })
        })
        .collect();
    if has_children {
        let known = tree::tree_of(app.store.pool(), &view.mission_id)
            .await
            .map_err(|error| ApiError::Internal(error.into()))?;
        for node in &mut view.children {
            if let Some(found) = known.iter().find(|found| found.mission_id == node.mission_id) {
                *node = found.clone();
            }
        }
    }
    Ok(view)
}

/// An enqueue request turned into what the command needs: the mission's id, the command's
/// id and the spec with every default filled in. Shared by single and batch enqueue, so both
/// apply the same rules and defaults.
struct PlannedEnqueue {
    mission_id: StreamId,
    command_id: Uuid,
    spec: MissionSpec,
    /// Ids derived from the caller's idempotency key (else fresh ones of our own).
    keyed: bool,
}

/// Checks what only the API knows about (`timeout_s` bounds, the idempotency key) and fills
/// in defaults; the aggregate checks the rest of the spec when it decides.
fn plan_enqueue(request: EnqueueRequest, app: &AppState) -> Result<PlannedEnqueue, ApiError> {
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
        agent: request.agent.unwrap_or_else(|| app.default_agent.to_string()),
        attempt_max: request.max_attempts.unwrap_or(ATTEMPT_MAX_DEFAULT),
        timeout_ms: timeout_s * 1_000,
        not_before_ms: request.not_before.map(|at| (at.unix_timestamp_nanos() / 1_000_000) as i64),
        budget: request.budget.filter(|budget| !budget.is_empty()),
        parent: None,
        forked_from: None,
    };
    app.check_known_kind(&spec.agent, "agent")?;
    let keyed = request.idempotency_key.is_some();
    Ok(PlannedEnqueue { mission_id: StreamId::from(mission_id), command_id, spec, keyed })
}

/// `POST /api/missions/enqueue`: 201 with the new mission; 200 with the first one when the
/// `idempotency_key` was used before; 4xx naming the field for a bad body.
#[utoipa::path(post, path = "/api/missions/enqueue", tag = "missions",
    params(CallerHeaders),
    request_body = EnqueueRequest,
    responses(
        (status = 201, description = "Enqueued", body = MissionView),
        (status = 200, description = "The `idempotency_key` was used before: the first mission, nothing enqueued", body = MissionView),
        (status = 400, description = "`invalid_body`: not JSON; `invalid_field` naming a string that holds a NUL; `invalid_header` (`x-actor`, `x-correlation-id`)", body = ErrorBody),
        (status = 409, description = "`mission_contended`: the mission kept changing while enqueued", body = ErrorBody),
        (status = 413, description = "`payload_too_large` (`payload` over 256 KiB), or `invalid_body`: body over 2 MiB", body = ErrorBody),
        (status = 415, description = "`invalid_body`: not `application/json`", body = ErrorBody),
        (status = 422, description = "`invalid_body`: wrong shape or unknown field; `invalid_field` naming the field", body = ErrorBody),
        (status = 500, description = "`internal`", body = ErrorBody),
        (status = 503, description = "`shutting_down`", body = ErrorBody),
    ))]
async fn enqueue(
    State(app): State<AppState>,
    headers: HeaderMap,
    ApiJson(request): ApiJson<EnqueueRequest>,
) -> Result<(StatusCode, ApiJson<MissionView>), ApiError> {
    let PlannedEnqueue { mission_id, command_id, spec, keyed } = plan_enqueue(request, &app)?;
    let mut metadata = metadata(&headers)?;
    metadata.command_id = Some(command_id);
    let now = now_ms();
    let enqueue = || MissionCommand::Enqueue { spec: spec.clone(), now_ms: now };
    if keyed {
        let executed = command::execute::<Mission>(&app.store, &mission_id, metadata, enqueue)
            .await
            .map_err(refusal)?;
        let duplicate = executed.appended.as_ref().is_some_and(|appended| appended.duplicate);
        let status = if duplicate { StatusCode::OK } else { StatusCode::CREATED };
        return Ok((status, ApiJson(load_view(&app, &mission_id).await?)));
    }
    // A new id of our own: the stream is empty and the command was never sent, so neither
    // a look-up before nor a read after is needed.
    let actor = metadata.actor.clone();
    let empty = Some((Mission::default(), 0));
    let executed =
        command::execute_new::<Mission>(&app.store, &mission_id, metadata, empty, enqueue)
            .await
            .map_err(refusal)?;
    let view = view(&mission_id, executed.state, actor, executed.version)
        .ok_or_else(|| ApiError::Internal(anyhow::anyhow!("an enqueued mission has a spec")))?;
    Ok((StatusCode::CREATED, ApiJson(view)))
}

/// `GET /api/missions/{mission_id}`: 200 with the mission, 404 unknown.
#[utoipa::path(get, path = "/api/missions/{mission_id}", tag = "missions",
    params(("mission_id" = Uuid, Path, description = "The mission's id")),
    responses(
        (status = 200, description = "The mission", body = MissionView),
        (status = 400, description = "`invalid_field` (`mission_id`): not a UUID", body = ErrorBody),
        (status = 404, description = "`mission_not_found`", body = ErrorBody),
        (status = 500, description = "`internal`", body = ErrorBody),
    ))]
async fn get_mission(
    State(app): State<AppState>,
    Path(mission_id): Path<String>,
) -> Result<ApiJson<MissionView>, ApiError> {
    let mission_id = parse_mission_id(&mission_id)?;
    Ok(ApiJson(load_view(&app, &mission_id).await?))
}

/// `GET /api/missions/{mission_id}/events`: the mission's whole history, oldest first.
#[utoipa::path(get, path = "/api/missions/{mission_id}/events", tag = "missions",
    params(("mission_id" = Uuid, Path, description = "The mission's id")),
    responses(
        (status = 200, description = "Every event of the mission, oldest first", body = Vec<RecordedEvent>),
        (status = 400, description = "`invalid_field` (`mission_id`): not a UUID", body = ErrorBody),
        (status = 404, description = "`mission_not_found`", body = ErrorBody),
        (status = 500, description = "`internal`", body = ErrorBody),
    ))]
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

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct CancelRequest {
    /// Recorded in the mission's history.
    #[serde(default)]
    reason: String,
}

/// `POST /api/missions/{mission_id}/cancel` with an optional `{"reason"}`: 200 with the
/// mission, 404 unknown, 409 already finished.
#[utoipa::path(post, path = "/api/missions/{mission_id}/cancel", tag = "missions",
    params(("mission_id" = Uuid, Path, description = "The mission's id"), CallerHeaders),
    request_body(content = Option<CancelRequest>, description = "Optional; an empty body cancels without a reason"),
    responses(
        (status = 200, description = "Cancelled", body = MissionView),
        (status = 400, description = "`invalid_field` (`mission_id`, or a string holding a NUL), `invalid_header` (`x-actor`, `x-correlation-id`), or `invalid_body`", body = ErrorBody),
        (status = 404, description = "`mission_not_found`", body = ErrorBody),
        (status = 409, description = "`mission_already_finished`, or `mission_contended`", body = ErrorBody),
        (status = 500, description = "`internal`", body = ErrorBody),
        (status = 503, description = "`shutting_down`", body = ErrorBody),
    ))]
async fn cancel(
    State(app): State<AppState>,
    Path(mission_id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<ApiJson<MissionView>, ApiError> {
    let mission_id = parse_mission_id(&mission_id)?;
    let request: CancelRequest = super::optional_json(&body)?;
    let metadata = metadata(&headers)?;
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
#[utoipa::path(post, path = "/api/missions/{mission_id}/retry", tag = "missions",
    params(("mission_id" = Uuid, Path, description = "The mission's id"), CallerHeaders),
    responses(
        (status = 200, description = "Queued again with fresh attempts", body = MissionView),
        (status = 400, description = "`invalid_field` (`mission_id`), `invalid_header` (`x-actor`, `x-correlation-id`)", body = ErrorBody),
        (status = 404, description = "`mission_not_found`", body = ErrorBody),
        (status = 409, description = "`mission_not_failed`, or `mission_contended`", body = ErrorBody),
        (status = 500, description = "`internal`", body = ErrorBody),
        (status = 503, description = "`shutting_down`", body = ErrorBody),
    ))]
async fn retry(
    State(app): State<AppState>,
    Path(mission_id): Path<String>,
    headers: HeaderMap,
) -> Result<ApiJson<MissionView>, ApiError> {
    let mission_id = parse_mission_id(&mission_id)?;
    let metadata = metadata(&headers)?;
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

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    status: Option<MissionStatus>,
    priority: Option<Priority>,
    /// Agent kind.
    agent: Option<String>,
    /// Only missions enqueued at or after this time (RFC 3339).
    #[serde(default, with = "time::serde::rfc3339::option")]
    since: Option<OffsetDateTime>,
    /// 1 to 200, default 50.
    #[param(minimum = 1, maximum = 200)]
    limit: Option<u32>,
    /// `next_cursor` of the previous page.
    cursor: Option<u64>,
}

#[derive(Debug, Serialize, ToSchema)]
struct MissionPage {
    missions: Vec<MissionRow>,
    /// Pass as `cursor` for the next page; absent on the last one.
    next_cursor: Option<u64>,
    /// The log position the list reflects (the `mission_list` projector's checkpoint).
    position: u64,
}

/// `GET /api/missions?status=&priority=&agent=&since=&limit=&cursor=`: missions, newest
/// first, from the `mission_list` read model.
#[utoipa::path(get, path = "/api/missions", tag = "missions", params(ListQuery),
    responses(
        (status = 200, description = "A page of missions, newest first", body = MissionPage),
        (status = 400, description = "`invalid_query`, or `invalid_field` for `limit`", body = ErrorBody),
        (status = 500, description = "`internal`", body = ErrorBody),
    ))]
async fn list_missions(
    State(app): State<AppState>,
    super::ApiQuery(query): super::ApiQuery<ListQuery>,
) -> Result<ApiJson<MissionPage>, ApiError> {
    let limit = super::page_limit(query.limit, 50, LIST_LIMIT_MAX)?;
    let filter = ListFilter {
        status: query.status.map(|status| status.to_string()),
        priority: query.priority.and_then(|priority| {
            serde_json::to_value(priority).ok().and_then(|v| v.as_str().map(str::to_owned))
        }),
        agent: query.agent,
        since: query.since,
        before_position: query.cursor,
        limit,
    };
    let (missions, position) = list::list(app.store.pool(), &filter).await?;
    let next_cursor = (missions.len() == limit as usize)
        .then(|| missions.last().and_then(|row| row.enqueued_position))
        .flatten()
        .map(|position| position as u64);
    Ok(ApiJson(MissionPage { missions, next_cursor, position }))
}
