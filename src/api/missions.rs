//! Mission routes: enqueue (one, or a batch in [`batch`]), find ([`list`]), look up, history;
//! cancel, retry and re-enqueue ([`control`], or many at once in [`bulk`]).
//! Each handler translates HTTP into a mission command and the outcome back; every refusal
//! maps to an [`ErrorCode`] in [`refusal`], exhaustively, so a new domain error cannot
//! compile without one.

use crate::api::auth::Access;
use axum::extract::State;
use axum::http::StatusCode;
use domain::api_key::Permission;
use domain::mission::{
    ATTEMPT_MAX_DEFAULT, Mission, MissionCommand, MissionError, MissionSpec, Priority,
};
use domain::{RecordedEvent, StreamId};
use serde::Deserialize;
use time::OffsetDateTime;
use utoipa::ToSchema;
use utoipa_axum::router::UtoipaMethodRouterExt;
use utoipa_axum::routes;
use uuid::Uuid;

mod batch;
mod bulk;
mod control;
mod list;
mod throughput;
mod tree;
mod view;

pub(in crate::api) use control::{REASON_LEN_MAX, Reasoned, reasoned_command};
pub(in crate::api) use list::{
    LIST_LIMIT_MAX, ListQuery as MissionListQuery, page as mission_page,
};
pub(super) use view::{MissionView, load_view};

use super::as_of::AsOfQuery;
use super::error::{ErrorCode, append_refusal, errors, refused};
use super::extract::{Metadata, MissionId};
use super::{ApiError, ApiJson, ApiQuery, ApiRoutes, AppState};
use crate::clock::now_ms;
use crate::eventlog::command::{self, CommandError};

/// Deadline of one attempt when the request names none.
pub const TIMEOUT_S_DEFAULT: u64 = 600;
pub const TIMEOUT_S_MAX: u64 = 24 * 60 * 60;
pub const IDEMPOTENCY_KEY_LEN_MAX: usize = 200;

/// Derives mission and command ids from idempotency keys (UUID v5 namespace).
pub(super) const IDEMPOTENCY_NAMESPACE: Uuid =
    Uuid::from_u128(0x6b1f_3c2e_9a47_4d8b_b0e5_2f7c_1d9a_4e63);

pub fn routes() -> ApiRoutes {
    let batch_body_limit = axum::extract::DefaultBodyLimit::max(batch::BATCH_BODY_BYTES_MAX);
    ApiRoutes::new()
        .routes(Access::needs(Permission::MissionsRead), routes!(list::list_missions))
        .routes(Access::needs(Permission::MissionsWrite), routes!(enqueue))
        .routes(
            Access::needs(Permission::MissionsWrite),
            routes!(batch::enqueue_batch).layer(batch_body_limit),
        )
        .routes(Access::needs(Permission::MissionsRead), routes!(get_mission))
        .routes(Access::needs(Permission::MissionsRead), routes!(mission_events))
        .routes(Access::needs(Permission::MissionsWrite), routes!(control::cancel))
        .routes(Access::needs(Permission::MissionsWrite), routes!(control::retry))
        .routes(Access::needs(Permission::MissionsWrite), routes!(control::reenqueue))
        .routes(Access::needs(Permission::MissionsWrite), routes!(bulk::bulk))
        .routes(Access::needs(Permission::MissionsRead), routes!(throughput::throughput))
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

/// Maps a command's failure to its HTTP answer.
pub(crate) fn refusal(error: CommandError<MissionError>) -> ApiError {
    use ErrorCode as C;
    let message = error.to_string();
    match error {
        CommandError::Rejected(rejection) => {
            let (code, field) = match rejection {
                MissionError::Invalid { field, .. } => (C::InvalidField, Some(field)),
                MissionError::AlreadyExists => (C::MissionExists, None),
                MissionError::NotFound => (C::MissionNotFound, None),
                MissionError::NotQueued { .. } => (C::MissionNotQueued, None),
                MissionError::NotRunning { .. } => (C::MissionNotRunning, None),
                MissionError::HeldByAnother { .. } => (C::MissionHeldByAnotherWorker, None),
                MissionError::StaleAttempt { .. } => (C::StaleAttempt, None),
                MissionError::AlreadyFinished { .. } => (C::MissionAlreadyFinished, None),
                MissionError::NotFailed { .. } => (C::MissionNotFailed, None),
                MissionError::NotFinished { .. } => (C::MissionNotFinished, None),
                MissionError::NotDue { .. } => (C::MissionNotDue, None),
                MissionError::LeaseNotExpired { .. } => (C::LeaseNotExpired, None),
                MissionError::LeaseExpired { .. } => (C::LeaseExpired, None),
            };
            refused(code, field, message)
        }
        CommandError::Contended(_) => refused(C::MissionContended, None, message),
        CommandError::Append(error) => append_refusal(error),
        CommandError::Store(error) => ApiError::from(error),
        CommandError::Upcast(error) => ApiError::Internal(error.into()),
    }
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
        return Err(refused(ErrorCode::InvalidField, Some("timeout_s"), message));
    }
    let (mission_id, command_id) = match &request.idempotency_key {
        Some(key) if key.is_empty() || key.len() > IDEMPOTENCY_KEY_LEN_MAX => {
            let message = format!("must be 1 to {IDEMPOTENCY_KEY_LEN_MAX} characters");
            return Err(refused(ErrorCode::InvalidField, Some("idempotency_key"), message));
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
        copied_from: None,
    };
    app.check_known_kind(&spec.agent, "agent")?;
    let keyed = request.idempotency_key.is_some();
    Ok(PlannedEnqueue { mission_id: StreamId::from(mission_id), command_id, spec, keyed })
}

errors! {
    EnqueueErrors = COMMAND + JSON_BODY + CALLER + [
        InvalidField, UnknownAgent, PayloadTooLarge, MissionContended
    ]
}

/// `POST /api/missions/enqueue`: 201 with the new mission; 200 with the first one when the
/// `idempotency_key` was used before; 4xx naming the field for a bad body.
#[utoipa::path(post, path = "/api/missions/enqueue", tag = "missions",
    params(Metadata),
    request_body = EnqueueRequest,
    responses(
        (status = 201, description = "Enqueued", body = MissionView),
        (status = 200, description = "The `idempotency_key` was used before: the first mission, nothing enqueued", body = MissionView),
        EnqueueErrors,
    ))]
async fn enqueue(
    State(app): State<AppState>,
    Metadata(metadata): Metadata,
    ApiJson(request): ApiJson<EnqueueRequest>,
) -> Result<(StatusCode, ApiJson<MissionView>), ApiError> {
    let (status, view) = enqueue_one(&app, metadata, request).await?;
    Ok((status, ApiJson(view)))
}

/// Enqueues one mission for `metadata`'s principal: `201` and the new mission, or `200` and
/// the first one when its `idempotency_key` was used before. What `POST
/// /api/missions/enqueue` and the MCP tool `enqueue_mission` both run.
pub(in crate::api) async fn enqueue_one(
    app: &AppState,
    mut metadata: domain::EventMetadata,
    request: EnqueueRequest,
) -> Result<(StatusCode, MissionView), ApiError> {
    let PlannedEnqueue { mission_id, command_id, spec, keyed } = plan_enqueue(request, app)?;
    metadata.command_id = Some(command_id);
    let now = now_ms();
    let enqueue = || MissionCommand::Enqueue { spec: spec.clone(), now_ms: now };
    if keyed {
        let executed = command::execute::<Mission>(&app.store, &mission_id, metadata, enqueue)
            .await
            .map_err(refusal)?;
        let duplicate = executed.appended.as_ref().is_some_and(|appended| appended.duplicate);
        let status = if duplicate { StatusCode::OK } else { StatusCode::CREATED };
        return Ok((status, load_view(app, &mission_id).await?));
    }
    // A new id of our own: the stream is empty and the command was never sent, so neither
    // a look-up before nor a read after is needed.
    let actor = metadata.actor.clone();
    let empty = Some((Mission::default(), 0));
    let executed =
        command::execute_new::<Mission>(&app.store, &mission_id, metadata, empty, enqueue)
            .await
            .map_err(refusal)?;
    let view = view::view(&mission_id, executed.state, actor, executed.version)
        .ok_or_else(|| ApiError::Internal(anyhow::anyhow!("an enqueued mission has a spec")))?;
    Ok((StatusCode::CREATED, view))
}

errors! { ReadMissionErrors = READ + PATH_ID + [MissionNotFound] }
errors! { ReadMissionAsOfErrors = READ + PATH_ID + QUERY + [MissionNotFound] }

/// `GET /api/missions/{mission_id}?at_position=&at=`: 200 with the mission (as the log held
/// it at that moment, with `as_of` naming its last event, when one is given), 404 unknown
/// (or not yet enqueued then).
#[utoipa::path(get, path = "/api/missions/{mission_id}", tag = "missions",
    params(MissionId, AsOfQuery),
    responses((status = 200, description = "The mission", body = MissionView), ReadMissionAsOfErrors))]
async fn get_mission(
    State(app): State<AppState>,
    MissionId(mission_id): MissionId,
    ApiQuery(query): ApiQuery<AsOfQuery>,
) -> Result<ApiJson<MissionView>, ApiError> {
    match query.as_of()? {
        None => Ok(ApiJson(load_view(&app, &mission_id).await?)),
        Some(as_of) => Ok(ApiJson(view::load_view_as_of(&app, &mission_id, as_of).await?)),
    }
}

/// `GET /api/missions/{mission_id}/events`: the mission's whole history, oldest first.
#[utoipa::path(get, path = "/api/missions/{mission_id}/events", tag = "missions",
    params(MissionId),
    responses(
        (status = 200, description = "Every event of the mission, oldest first", body = Vec<RecordedEvent>),
        ReadMissionErrors,
    ))]
async fn mission_events(
    State(app): State<AppState>,
    MissionId(mission_id): MissionId,
) -> Result<ApiJson<Vec<RecordedEvent>>, ApiError> {
    Ok(ApiJson(history(&app, &mission_id).await?))
}

/// Every event of a mission, oldest first; `mission_not_found` when it has none. What `GET
/// /api/missions/{mission_id}/events` and the MCP resource of a mission's history read.
pub(in crate::api) async fn history(
    app: &AppState,
    mission_id: &StreamId,
) -> Result<Vec<RecordedEvent>, ApiError> {
    let stream_type = <Mission as domain::Aggregate>::stream_type();
    let events = app.store.load_stream(&stream_type, mission_id, None).await?;
    if events.is_empty() {
        return Err(refusal(CommandError::Rejected(MissionError::NotFound)));
    }
    Ok(events)
}
