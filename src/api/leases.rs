//! External agents' side of a mission: claim one over HTTP (a bounded long-poll), then report
//! progress, completion or failure with the lease token the claim gave.
//!
//! The lease token is a fencing token (design invariant 10): it names the attempt and the
//! agent, and the mission aggregate refuses a report whose attempt is not the current one, or
//! whose holder is another, or whose lease ran out (by the database's clock, which granted
//! it). Such a report gets `409 stale_lease` and changes nothing, so a mission never completes
//! twice however late a report arrives.

use crate::api::auth::{Access, Authed};
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use domain::agent::{Agent, AgentState};
use domain::mission::{Mission, MissionCommand, MissionError};
use domain::{EventMetadata, StreamId};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::routes;
use uuid::Uuid;

use super::error::{ErrorCode, errors};
use super::extract::{AgentId, Metadata, MissionId};
use super::missions::{MissionView, refusal};
use super::{ApiError, ApiJson, ApiQuery, ApiRoutes, AppState};
use crate::agents::watchdog::worker_id;
use crate::eventlog::command::{self, CommandError};
use crate::missions::claim::{ClaimError, ClaimRequest, Claimed, Claimer, Started};
use crate::missions::queue::Claim;

/// Longest a claim may wait for a mission, in seconds.
pub const CLAIM_WAIT_S_MAX: u64 = 30;
/// Longest pause between claim attempts while a claim waits (what a waiting agent costs
/// Redis); a mission made ready by this serve's queue projector ends it sooner.
pub const CLAIM_POLL: Duration = Duration::from_millis(250);
/// How long a popped mission is reserved between the pop and its start (as for workers).
const CLAIM_RESERVE_MS: u64 = 5_000;
/// Shortest and longest lease a claim may ask for.
pub const LEASE_S_MIN: u64 = 5;
pub const LEASE_S_MAX: u64 = 3_600;

pub fn routes() -> ApiRoutes {
    ApiRoutes::new()
        .routes(Access::AGENT, routes!(claim))
        .routes(Access::AGENT, routes!(progress))
        .routes(Access::AGENT, routes!(complete))
        .routes(Access::AGENT, routes!(fail))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
struct ClaimQuery {
    /// Comma-separated agent kinds to take missions of; the agent's own kind when absent.
    kinds: Option<String>,
    /// Seconds to wait for a mission when none is ready: 0 to 30, 0 when absent.
    wait_s: Option<u64>,
    /// Seconds the lease lasts before it must be extended by a progress report: 5 to 3600;
    /// `BRAIN_AGENT_LEASE_S` when absent.
    lease_s: Option<u64>,
}

/// A claimed mission.
#[derive(Debug, Serialize, ToSchema)]
pub struct ClaimedMission {
    pub mission_id: String,
    pub name: String,
    pub description: String,
    pub agent: String,
    #[schema(value_type = Object)]
    pub payload: serde_json::Value,
    /// 1 for the first try.
    pub attempt: u32,
    /// Send it with every report; a stale one is refused with 409.
    pub lease_token: String,
    /// When the lease runs out unless a progress report extends it (database clock, Unix ms).
    pub lease_expires_at_ms: i64,
    pub lease_s: u64,
    /// The mission's own deadline for one attempt.
    pub timeout_ms: u64,
}

/// The worker id and attempt a lease token stands for: `<attempt>:<agent id>:<claim nonce>`.
/// The nonce (random, per claim) is part of the lease holder's worker id, so a token is not
/// guessable and a mission retried from scratch (its attempts counted afresh) never takes an
/// old run's token.
fn parse_token(token: &str) -> Result<(String, u32, Uuid), ApiError> {
    let invalid = || {
        let message = "not a lease token from a claim".to_owned();
        super::error::refused(ErrorCode::InvalidField, Some("lease_token"), message)
    };
    let mut parts = token.splitn(3, ':');
    let (Some(attempt), Some(agent), Some(nonce)) = (parts.next(), parts.next(), parts.next())
    else {
        return Err(invalid());
    };
    let attempt: u32 = attempt.parse().map_err(|_| invalid())?;
    let agent = Uuid::parse_str(agent).map_err(|_| invalid())?;
    let nonce = Uuid::parse_str(nonce).map_err(|_| invalid())?;
    Ok((claim_holder(&agent.to_string(), &nonce), attempt, agent))
}

/// The lease holder of one claim by `agent_id`.
fn claim_holder(agent_id: &str, nonce: &Uuid) -> String {
    format!("{}:{}", worker_id(agent_id), nonce.simple())
}

fn lease_token(attempt: u32, agent_id: &str, nonce: &Uuid) -> String {
    format!("{attempt}:{agent_id}:{}", nonce.simple())
}

errors! {
    ClaimErrors = COMMAND + QUERY + CALLER + [
        UnknownAgent, AgentNotFound, AgentNotActive, QueueUnavailable, MissionContended
    ]
}

/// `POST /api/agents/{agent_id}/claim`: 200 with a mission and its lease token, or 204 when
/// none came within `wait_s`.
#[utoipa::path(post, path = "/api/agents/{agent_id}/claim", tag = "agents",
    params(AgentId, ClaimQuery, Metadata),
    responses(
        (status = 200, description = "A mission, started under a lease for this agent", body = ClaimedMission),
        (status = 204, description = "No mission within `wait_s`"),
        ClaimErrors,
    ))]
async fn claim(
    State(app): State<AppState>,
    caller: Authed,
    AgentId(agent_id): AgentId,
    Metadata(metadata): Metadata,
    ApiQuery(query): ApiQuery<ClaimQuery>,
) -> Result<Response, ApiError> {
    let (wait_s, lease_s) = claim_bounds(&app, &query)?;
    // The log says whether the agent may claim: the view may be a moment behind a stop.
    let (own_kind, bound) = active_agent(&app, &agent_id).await?;
    caller.check_agent(agent_id.as_str(), bound.as_deref())?;
    let kinds = claim_kinds(&app, query.kinds.as_deref(), own_kind)?;
    for kind in &kinds {
        caller.check_kind(kind, "kinds")?;
    }
    let claimer =
        Claimer { store: &app.store, queue: super::queue::queue(&app)?, clock: &app.clock };
    // The whole request must end within the server's request deadline.
    let wait =
        Duration::from_secs(wait_s).min(app.request_timeout.saturating_sub(Duration::from_secs(2)));
    let deadline = tokio::time::Instant::now() + wait;
    // A start is answered before the request's own deadline, or given back.
    let answer_by =
        std::time::Instant::now() + app.request_timeout.saturating_sub(Duration::from_secs(1));
    loop {
        // Marked before the claim: a mission made ready while it runs ends the wait.
        let readiness = claimer.queue.readiness();
        let mark = readiness.mark();
        let nonce = Uuid::new_v4();
        let holder = claim_holder(&agent_id.to_string(), &nonce);
        let request = ClaimRequest {
            kinds: &kinds,
            holder: &holder,
            lease_ms: lease_s * 1_000,
            claim_ms: CLAIM_RESERVE_MS,
            answer_by,
        };
        // The agent may have been stopped or marked while this claim waited.
        let admit = async |_: &Claim| active_agent(&app, &agent_id).await.map(drop);
        match claimer.claim_and_start(&request, |_| metadata.clone(), admit).await {
            Ok(Claimed::Started(started)) => {
                let lease_token =
                    lease_token(started.mission.attempt, &agent_id.to_string(), &nonce);
                return Ok(ApiJson(claimed(*started, lease_token, lease_s)).into_response());
            }
            // A stale pop (the mission moved on): the next one.
            Ok(Claimed::Stale) => continue,
            Ok(Claimed::Declined(refusal)) => return Err(refusal),
            Ok(Claimed::Empty) => {}
            Err(ClaimError::Queue(error)) => {
                let message = format!("queue: {error}");
                return Err(super::error::refused(ErrorCode::QueueUnavailable, None, message));
            }
            Err(ClaimError::Start { error, .. } | ClaimError::Load { error, .. }) => {
                return Err(refusal(error));
            }
        }
        if tokio::time::Instant::now() + CLAIM_POLL > deadline {
            return Ok(StatusCode::NO_CONTENT.into_response());
        }
        readiness.wait_since(mark, CLAIM_POLL).await;
    }
}

/// A claim's `wait_s` and `lease_s`, checked against their bounds.
fn claim_bounds(app: &AppState, query: &ClaimQuery) -> Result<(u64, u64), ApiError> {
    let invalid = |field: &'static str, message: String| ApiError::InvalidField { field, message };
    let wait_s = query.wait_s.unwrap_or(0);
    if wait_s > CLAIM_WAIT_S_MAX {
        return Err(invalid("wait_s", format!("must be 0 to {CLAIM_WAIT_S_MAX}")));
    }
    let lease_s = query.lease_s.unwrap_or(app.agents.lease_s);
    if !(LEASE_S_MIN..=LEASE_S_MAX).contains(&lease_s) {
        return Err(invalid("lease_s", format!("must be {LEASE_S_MIN} to {LEASE_S_MAX}")));
    }
    Ok((wait_s, lease_s))
}

/// The kind of a registered agent that may claim now, and the key it is bound to, by its log.
async fn active_agent(
    app: &AppState,
    agent_id: &StreamId,
) -> Result<(String, Option<String>), ApiError> {
    let (agent, _) =
        command::load::<Agent>(&app.store, agent_id).await.map_err(super::agents::refusal)?;
    let Some(registration) = agent.registration else {
        let message = "agent is not registered".to_owned();
        return Err(super::error::refused(ErrorCode::AgentNotFound, None, message));
    };
    if agent.state != AgentState::Active {
        let message = format!("agent is {:?}: it takes no missions until started", agent.state);
        return Err(super::error::refused(ErrorCode::AgentNotActive, None, message));
    }
    Ok((registration.kind, registration.key_id))
}

/// Refuses (403) a report for a lease another key's agent holds, unless the caller controls
/// agents: the lease token names the agent, and the agent's log names its key.
async fn check_reporter(app: &AppState, caller: &Authed, agent_id: Uuid) -> Result<(), ApiError> {
    if caller.agent_key().is_none() {
        return Ok(());
    }
    let (agent, _) = command::load::<Agent>(&app.store, &StreamId::from(agent_id))
        .await
        .map_err(super::agents::refusal)?;
    let bound = agent.registration.as_ref().and_then(|r| r.key_id.as_deref());
    caller.check_agent(&agent_id.to_string(), bound)
}

/// The agent kinds a claim takes: the comma-separated `asked`, or the agent's own kind.
fn claim_kinds(
    app: &AppState,
    asked: Option<&str>,
    own_kind: String,
) -> Result<Vec<String>, ApiError> {
    let kinds: Vec<String> = match asked {
        None => vec![own_kind],
        Some(list) => {
            list.split(',').map(str::trim).filter(|k| !k.is_empty()).map(str::to_owned).collect()
        }
    };
    if kinds.is_empty() || kinds.len() > crate::config::AGENT_KINDS_MAX {
        let message = format!("1 to {} agent kinds", crate::config::AGENT_KINDS_MAX);
        return Err(ApiError::InvalidField { field: "kinds", message });
    }
    for kind in &kinds {
        app.check_known_kind(kind, "kinds")?;
    }
    Ok(kinds)
}

/// The answer to a claim that started `started` under `lease_token`.
fn claimed(started: Started, lease_token: String, lease_s: u64) -> ClaimedMission {
    let Started { mission_id, mission, spec, .. } = started;
    ClaimedMission {
        mission_id,
        name: spec.name,
        description: spec.description,
        agent: spec.agent,
        payload: spec.payload,
        attempt: mission.attempt,
        lease_token,
        lease_expires_at_ms: mission.lease_expires_at_ms.unwrap_or_default(),
        lease_s,
        timeout_ms: spec.timeout_ms,
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ProgressRequest {
    pub lease_token: String,
    /// Recorded in the history; at most 2,000 characters.
    #[serde(default)]
    pub note: Option<String>,
    /// Extend the lease by this many seconds from now (5 to 3600); `BRAIN_AGENT_LEASE_S` when absent.
    #[serde(default)]
    pub lease_s: Option<u64>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CompleteRequest {
    pub lease_token: String,
    #[serde(default)]
    #[schema(value_type = Object)]
    pub result: serde_json::Value,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FailRequest {
    pub lease_token: String,
    /// What went wrong; at most 4,000 characters are recorded.
    pub error: String,
    /// Whether another attempt may help; true when absent.
    #[serde(default = "yes")]
    pub retryable: bool,
}

fn yes() -> bool {
    true
}

/// The reports' shared answer to a refusal: a stale lease is one code, whatever made it stale.
fn report_refusal(error: CommandError<MissionError>) -> ApiError {
    match error {
        CommandError::Rejected(
            rejection @ (MissionError::StaleAttempt { .. }
            | MissionError::HeldByAnother { .. }
            | MissionError::LeaseExpired { .. }
            | MissionError::NotRunning { .. }
            | MissionError::AlreadyFinished { .. }),
        ) => super::error::refused(
            ErrorCode::StaleLease,
            Some("lease_token"),
            format!("the lease is no longer yours: {rejection}"),
        ),
        error => refusal(error),
    }
}

async fn report(
    app: &AppState,
    mission_id: &StreamId,
    metadata: EventMetadata,
    command: impl Fn(i64) -> MissionCommand,
) -> Result<ApiJson<MissionView>, ApiError> {
    let now = app.clock.now_ms_synced().await;
    command::execute::<Mission>(&app.store, mission_id, metadata, || command(now))
        .await
        .map_err(report_refusal)?;
    Ok(ApiJson(super::missions::load_view(app, mission_id).await?))
}

errors! {
    ReportErrors = COMMAND + JSON_BODY + PATH_ID + CALLER + [
        InvalidField, MissionNotFound, StaleLease, MissionContended
    ]
}

/// `POST /api/missions/{mission_id}/progress`: extends the lease; 409 `stale_lease`.
#[utoipa::path(post, path = "/api/missions/{mission_id}/progress", tag = "missions",
    params(MissionId, Metadata),
    request_body = ProgressRequest,
    responses((status = 200, description = "Lease extended", body = MissionView), ReportErrors))]
async fn progress(
    State(app): State<AppState>,
    caller: Authed,
    MissionId(mission_id): MissionId,
    Metadata(metadata): Metadata,
    ApiJson(request): ApiJson<ProgressRequest>,
) -> Result<ApiJson<MissionView>, ApiError> {
    let (worker_id, attempt, agent) = parse_token(&request.lease_token)?;
    check_reporter(&app, &caller, agent).await?;
    let lease_s = request.lease_s.unwrap_or(app.agents.lease_s);
    if !(LEASE_S_MIN..=LEASE_S_MAX).contains(&lease_s) {
        let message = format!("must be {LEASE_S_MIN} to {LEASE_S_MAX}");
        return Err(super::error::refused(ErrorCode::InvalidField, Some("lease_s"), message));
    }
    let note = request.note.map(|note| app.redactor.redact(&note).into_owned());
    report(&app, &mission_id, metadata, |now_ms| MissionCommand::Progress {
        worker_id: worker_id.clone(),
        attempt,
        lease_ms: lease_s * 1_000,
        note: note.clone(),
        now_ms,
    })
    .await
}

/// `POST /api/missions/{mission_id}/complete`: the mission's result; 409 `stale_lease`.
#[utoipa::path(post, path = "/api/missions/{mission_id}/complete", tag = "missions",
    params(MissionId, Metadata),
    request_body = CompleteRequest,
    responses((status = 200, description = "Completed", body = MissionView), ReportErrors))]
async fn complete(
    State(app): State<AppState>,
    caller: Authed,
    MissionId(mission_id): MissionId,
    Metadata(metadata): Metadata,
    ApiJson(request): ApiJson<CompleteRequest>,
) -> Result<ApiJson<MissionView>, ApiError> {
    let (worker_id, attempt, agent) = parse_token(&request.lease_token)?;
    check_reporter(&app, &caller, agent).await?;
    // An agent's reports are recorded without the secrets of this process it may have met.
    let result = app.redactor.redacted_json(request.result);
    report(&app, &mission_id, metadata, |now_ms| MissionCommand::Complete {
        worker_id: worker_id.clone(),
        attempt,
        result: result.clone(),
        now_ms,
    })
    .await
}

/// `POST /api/missions/{mission_id}/fail`: the attempt failed; retried after a backoff when
/// `retryable` and attempts remain. 409 `stale_lease`.
#[utoipa::path(post, path = "/api/missions/{mission_id}/fail", tag = "missions",
    params(MissionId, Metadata),
    request_body = FailRequest,
    responses((status = 200, description = "Attempt failed", body = MissionView), ReportErrors))]
async fn fail(
    State(app): State<AppState>,
    caller: Authed,
    MissionId(mission_id): MissionId,
    Metadata(metadata): Metadata,
    ApiJson(request): ApiJson<FailRequest>,
) -> Result<ApiJson<MissionView>, ApiError> {
    let (worker_id, attempt, agent) = parse_token(&request.lease_token)?;
    check_reporter(&app, &caller, agent).await?;
    let error = crate::missions::worker::recordable(&app.redactor.redact(&request.error));
    let backoff_ms = app.backoff.draw(attempt);
    report(&app, &mission_id, metadata, |now_ms| MissionCommand::Fail {
        worker_id: worker_id.clone(),
        attempt,
        error: error.clone(),
        retryable: request.retryable,
        backoff_ms,
        now_ms,
    })
    .await
}
