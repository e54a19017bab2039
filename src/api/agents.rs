//! Agent registry routes: register (idempotent), heartbeat, list, info, look one up with its
//! recent history, deregister. Commands translate HTTP into an `agent` command; every refusal
//! maps to an [`ErrorCode`] in [`refusal`], exhaustively. Lists and heartbeats read the
//! agent view in Redis (`crate::agents::view`).

use crate::api::auth::{Access, Authed};
use domain::api_key::Permission;
use std::collections::BTreeMap;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use domain::agent::{Agent, AgentCommand, AgentError, AgentState, Registration};
use domain::heartbeat::Beat;
use domain::{RecordedEvent, StreamId};
use serde::{Deserialize, Serialize};
use utoipa::IntoParams;
use utoipa::ToSchema;
use utoipa_axum::routes;
use uuid::Uuid;

use super::as_of::{AsOfQuery, AsOfView};
use super::error::{ErrorCode, Refusal, append_refusal, errors, refused};
use super::extract::{AgentId, Metadata, optional_json, page_limit};
use super::{ApiError, ApiJson, ApiQuery, ApiRoutes, AppState};
use crate::agents::heartbeat::{HeartbeatError, Heartbeats};
use crate::agents::view::{AgentRecord, AgentViewStore, PAGE_MAX};
use crate::eventlog::command::{self, CommandError};
use crate::eventlog::store::AsOf;

/// Events of an agent's history `GET /api/agents/{id}` shows, newest last.
pub const HISTORY_EVENTS_MAX: usize = 50;

pub fn routes() -> ApiRoutes {
    ApiRoutes::new()
        .routes(Access::AGENT, routes!(register))
        .routes(Access::AGENT, routes!(heartbeat))
        .routes(Access::needs(Permission::AgentsRead), routes!(list_agents))
        .routes(Access::needs(Permission::AgentsRead), routes!(info))
        .routes(Access::needs(Permission::AgentsRead), routes!(get_agent))
        .routes(Access::AGENT, routes!(deregister))
}

/// The agent view, once Redis has answered.
pub(super) fn agent_view(app: &AppState) -> Result<AgentViewStore, ApiError> {
    let queue = super::queue::queue(app)?;
    Ok(AgentViewStore::new(queue.connection(), &app.namespace))
}

/// Redis failing under a read or a heartbeat: the caller may retry.
pub(super) fn view_unavailable(error: redis::RedisError) -> ApiError {
    refused(ErrorCode::ViewUnavailable, None, format!("agent view: {error}"))
}

/// An agent introducing itself.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RegisterRequest {
    /// A UUID of the agent's choosing; derived from `name` and `owner` when absent, so the
    /// same agent registering again finds itself.
    #[serde(default)]
    pub agent_id: Option<Uuid>,
    /// 1 to 200 characters.
    pub name: String,
    /// The agent kind whose missions it runs: one this deployment knows.
    pub kind: String,
    /// At most 64, each 1 to 200 characters.
    #[serde(default)]
    pub capabilities: Vec<String>,
    #[serde(default)]
    pub version: String,
    #[serde(default)]
    pub owner: String,
    /// At most 64 pairs.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

/// An agent as the API shows it.
#[derive(Debug, Serialize, ToSchema)]
pub struct AgentView {
    pub agent_id: String,
    pub state: AgentState,
    pub name: String,
    pub kind: String,
    pub capabilities: Vec<String>,
    pub version: String,
    pub owner: String,
    pub labels: BTreeMap<String, String>,
    /// A restart was asked for and not yet carried out.
    pub restart_requested: bool,
    pub restarts: u32,
    /// The agent stream's version: one per event.
    pub stream_version: u64,
    /// The most recent events of the agent's life, oldest first (at most 50).
    pub history: Vec<RecordedEvent>,
    /// Present when the view is of an earlier moment (`at_position` or `at`): the last event
    /// of the agent it folds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub as_of: Option<AsOfView>,
    /// What it last reported, from the agent view: only in `GET /api/agents/{agent_id}` of
    /// now, and once the view holds the agent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub live: Option<AgentLive>,
}

/// An agent's last report (its heartbeat) as the agent view holds it.
#[derive(Debug, Serialize, ToSchema)]
pub struct AgentLive {
    /// Free text such as `idle` or `busy`.
    pub status: String,
    /// A unitless figure: 1.0 = fully busy (a built-in agent reports its running missions).
    pub load: f64,
    /// Missions it said it runs in its last recorded heartbeat.
    pub running: Vec<String>,
    /// Its last heartbeat (ms since the epoch).
    pub last_seen_ms: i64,
    /// How long since it was last heard from (database clock).
    pub silent_for_ms: i64,
}

/// Maps an agent command's failure to its HTTP answer.
pub(super) fn refusal(error: CommandError<AgentError>) -> ApiError {
    use ErrorCode as C;
    let message = error.to_string();
    match error {
        CommandError::Rejected(rejection) => {
            let (code, field) = match rejection {
                AgentError::Invalid { field, .. } => (C::InvalidField, Some(field)),
                AgentError::RegisteredOtherwise => (C::AgentRegisteredOtherwise, None),
                AgentError::NotFound => (C::AgentNotFound, None),
                AgentError::Deregistered => (C::AgentDeregistered, None),
                AgentError::NotActive { .. } => (C::AgentNotActive, None),
                AgentError::NotSilent { .. } => (C::AgentNotSilent, None),
                AgentError::ControlNotApplicable { .. } => (C::ControlNotApplicable, None),
            };
            refused(code, field, message)
        }
        CommandError::Contended(_) => refused(C::AgentContended, None, message),
        CommandError::Append(error) => append_refusal(error),
        CommandError::Store(error) => ApiError::from(error),
        CommandError::Upcast(error) => ApiError::Internal(error.into()),
    }
}

pub(super) async fn load_view(app: &AppState, agent_id: &StreamId) -> Result<AgentView, ApiError> {
    // The state through its snapshot and only the history shown: an agent's stream grows
    // for as long as it lives.
    let recent = HISTORY_EVENTS_MAX as u64;
    let (agent, events) = command::load_with_recent_events::<Agent>(&app.store, agent_id, recent)
        .await
        .map_err(refusal)?;
    fold_view(agent_id, agent, events)
}

/// The agent as the log held it at `as_of` (time travel): 404 before it registered.
async fn load_view_as_of(
    app: &AppState,
    agent_id: &StreamId,
    as_of: AsOf,
) -> Result<AgentView, ApiError> {
    let (agent, events) =
        command::load_as_of::<Agent>(&app.store, agent_id, as_of).await.map_err(refusal)?;
    let moment = AsOfView::of(&events);
    Ok(AgentView { as_of: moment, ..fold_view(agent_id, agent, events)? })
}

fn fold_view(
    agent_id: &StreamId,
    agent: Agent,
    events: Vec<RecordedEvent>,
) -> Result<AgentView, ApiError> {
    let Some(registration) = agent.registration else {
        return Err(refusal(CommandError::Rejected(AgentError::NotFound)));
    };
    let stream_version = events.last().map_or(0, |event| event.version);
    let mut history = events;
    history.drain(..history.len().saturating_sub(HISTORY_EVENTS_MAX));
    Ok(AgentView {
        agent_id: agent_id.to_string(),
        state: agent.state,
        name: registration.name,
        kind: registration.kind,
        capabilities: registration.capabilities,
        version: registration.version,
        owner: registration.owner,
        labels: registration.labels,
        restart_requested: agent.restart_requested,
        restarts: agent.restarts,
        stream_version,
        history,
        as_of: None,
        live: None,
    })
}

errors! {
    RegisterErrors = COMMAND + JSON_BODY + CALLER + [
        InvalidField, UnknownAgent, AgentRegisteredOtherwise, AgentDeregistered, AgentContended
    ]
}

/// `POST /api/agents/register`: 201 with the new agent; 200 when it was registered already
/// with the same registration; 409 when its id carries another one.
#[utoipa::path(post, path = "/api/agents/register", tag = "agents",
    params(Metadata),
    request_body = RegisterRequest,
    responses(
        (status = 201, description = "Registered", body = AgentView),
        (status = 200, description = "Registered already, with this registration: nothing changed", body = AgentView),
        RegisterErrors,
    ))]
async fn register(
    State(app): State<AppState>,
    caller: Authed,
    Metadata(metadata): Metadata,
    ApiJson(request): ApiJson<RegisterRequest>,
) -> Result<(StatusCode, ApiJson<AgentView>), ApiError> {
    app.check_known_kind(&request.kind, "kind")?;
    caller.check_kind(&request.kind, "kind")?;
    if request.owner.starts_with(crate::agents::host::OWNER_PREFIX) {
        let message = format!(
            "owners starting {:?} are built-in workers'",
            crate::agents::host::OWNER_PREFIX
        );
        return Err(refused(ErrorCode::InvalidField, Some("owner"), message));
    }
    let agent_id =
        request.agent_id.unwrap_or_else(|| crate::agents::agent_id(&request.owner, &request.name));
    let agent_id = StreamId::from(agent_id);
    let registration = Registration {
        name: request.name,
        kind: request.kind,
        capabilities: request.capabilities,
        version: request.version,
        owner: request.owner,
        labels: request.labels,
        // The agent is bound to the key that registered it.
        key_id: Some(caller.0.key_id.clone()),
    };
    let now = app.clock.now_ms();
    let executed = command::execute::<Agent>(&app.store, &agent_id, metadata, || {
        AgentCommand::Register { registration: registration.clone(), now_ms: now }
    })
    .await
    .map_err(refusal)?;
    let status = if executed.appended.is_some() { StatusCode::CREATED } else { StatusCode::OK };
    Ok((status, ApiJson(load_view(&app, &agent_id).await?)))
}

/// How often agents are asked to heartbeat, in seconds (the heartbeat answer says so).
pub const HEARTBEAT_EVERY_S: u64 = 10;

/// An agent saying it is alive.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct HeartbeatRequest {
    pub agent_id: Uuid,
    /// Free text such as `idle` or `busy`, at most 64 characters.
    #[serde(default)]
    pub status: String,
    /// 0 to 1000: 1.0 is fully busy.
    #[serde(default)]
    pub load: f64,
    /// Ids of the missions it is running, at most 256.
    #[serde(default)]
    pub running: Vec<String>,
    /// It carried out the restart its last answer asked for.
    #[serde(default)]
    pub restarted: bool,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct HeartbeatAnswer {
    pub agent_id: String,
    /// `stopped`: take no missions until started; `failed`: down until an operator starts it.
    pub state: AgentState,
    /// Restart, then heartbeat with `restarted: true`.
    pub restart_requested: bool,
    /// Whether this heartbeat went into the log (unchanged ones are coalesced).
    pub recorded: bool,
    /// When to send the next one.
    pub heartbeat_every_s: u64,
}

errors! {
    HeartbeatErrors = COMMAND + JSON_BODY + CALLER + [
        InvalidField, AgentNotFound, AgentDeregistered, AgentContended, ViewUnavailable,
        QueueUnavailable
    ]
}

/// `POST /api/agents/heartbeat`: 200 with what the agent should do next.
#[utoipa::path(post, path = "/api/agents/heartbeat", tag = "agents",
    params(Metadata),
    request_body = HeartbeatRequest,
    responses((status = 200, description = "Taken", body = HeartbeatAnswer), HeartbeatErrors))]
async fn heartbeat(
    State(app): State<AppState>,
    caller: Authed,
    Metadata(metadata): Metadata,
    ApiJson(request): ApiJson<HeartbeatRequest>,
) -> Result<ApiJson<HeartbeatAnswer>, ApiError> {
    let agent_id = StreamId::from(request.agent_id);
    let heartbeats = Heartbeats {
        store: app.store.clone(),
        view: agent_view(&app)?,
        clock: app.clock.clone(),
        record_every: app.agents.record_every(),
    };
    let beat = Beat { status: request.status, load: request.load, running: request.running };
    let sender = caller.agent_key();
    let answer =
        heartbeats.beat(&agent_id, beat, metadata.clone(), sender).await.map_err(|error| {
            match error {
                HeartbeatError::Invalid(invalid) => ApiError::Refused(Refusal {
                    code: ErrorCode::InvalidField,
                    field: Some(invalid.field.into()),
                    message: invalid.to_string(),
                }),
                HeartbeatError::Agent(error) => refusal(error),
                HeartbeatError::Append(error) => append_refusal(error),
                HeartbeatError::View(error) => view_unavailable(error),
                HeartbeatError::NotYours { agent_id } => caller
                    .check_agent(&agent_id, None)
                    .err()
                    .unwrap_or_else(|| ApiError::Internal(anyhow::anyhow!("not refused"))),
            }
        })?;
    let mut restart_requested = answer.restart_requested;
    if request.restarted && restart_requested {
        let now = app.clock.now_ms();
        command::execute::<Agent>(&app.store, &agent_id, metadata, || {
            AgentCommand::ReportRestarted { reason: "restarted on request".into(), now_ms: now }
        })
        .await
        .map_err(refusal)?;
        restart_requested = false;
    }
    Ok(ApiJson(HeartbeatAnswer {
        agent_id: agent_id.to_string(),
        state: answer.state,
        restart_requested,
        recorded: answer.recorded,
        heartbeat_every_s: HEARTBEAT_EVERY_S,
    }))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(in crate::api) struct ListQuery {
    /// Only agents of this kind.
    kind: Option<String>,
    /// Only agents in this state: `active`, `unresponsive`, `stopped`, `failed`, `deregistered`.
    state: Option<String>,
    /// The `next_after` of the previous page.
    after: Option<String>,
    /// 1 to 500; 100 when absent.
    limit: Option<u32>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AgentPage {
    pub agents: Vec<AgentRecord>,
    /// Pass as `after` for the next page; absent on the last one.
    pub next_after: Option<String>,
}

errors! { ListAgentsErrors = INTERNAL + QUERY + [UnknownAgent, ViewUnavailable, QueueUnavailable] }

/// `GET /api/agents`: agents in id order, filtered by kind and state, paged.
#[utoipa::path(get, path = "/api/agents", tag = "agents",
    params(ListQuery),
    responses((status = 200, description = "A page of agents", body = AgentPage), ListAgentsErrors))]
async fn list_agents(
    State(app): State<AppState>,
    ApiQuery(query): ApiQuery<ListQuery>,
) -> Result<ApiJson<AgentPage>, ApiError> {
    Ok(ApiJson(agent_page(&app, query).await?))
}

/// The page of agents `query` asks for, or a 400 naming the parameter at fault: what `GET
/// /api/agents` and the MCP tool `list_agents` both answer.
pub(in crate::api) async fn agent_page(
    app: &AppState,
    query: ListQuery,
) -> Result<AgentPage, ApiError> {
    let invalid = |field: &'static str, message: String| ApiError::InvalidField { field, message };
    let limit = page_limit(query.limit, 100, PAGE_MAX as u32)? as usize;
    let state = match query.state.as_deref() {
        None => None,
        Some(name) => Some(projections::agent_view::parse_state(name).ok_or_else(|| {
            invalid(
                "state",
                format!(
                    "{name:?} is not one of active, unresponsive, stopped, failed, deregistered"
                ),
            )
        })?),
    };
    if let Some(kind) = &query.kind {
        app.check_known_kind(kind, "kind")?;
    }
    if let Some(after) = &query.after
        && Uuid::parse_str(after).is_err()
    {
        return Err(invalid("after", format!("{after:?} is not an agent id")));
    }
    let view = agent_view(app)?;
    let (agents, next_after) = view
        .list(query.after.as_deref(), limit, query.kind.as_deref(), state)
        .await
        .map_err(view_unavailable)?;
    Ok(AgentPage { agents, next_after })
}

/// A built-in agent and what it can do.
#[derive(Debug, Serialize, ToSchema)]
pub struct BuiltinAgent {
    pub name: &'static str,
    pub description: &'static str,
    /// The system prompt it thinks with (`BRAIN_AGENT_PROMPTS` or the built-in one); none
    /// for an agent that does not call a model in steps.
    pub system_prompt: Option<String>,
    /// Tools it offers the model here (they depend on `BRAIN_AGENT_ROOT`,
    /// `BRAIN_AGENT_COMMANDS`, `BRAIN_AGENT_FETCH_HOSTS`, `BRAIN_SUPERVISOR_KINDS`).
    pub tools: Vec<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AgentsInfo {
    /// Agent kinds missions may name here.
    pub kinds: Vec<String>,
    /// Agents registered per kind (deregistered ones included).
    pub registered_by_kind: BTreeMap<String, u64>,
    /// Agents per state.
    pub counts_by_state: BTreeMap<String, u64>,
    pub builtin: Vec<BuiltinAgent>,
    /// How often agents are asked to heartbeat, and the silence that marks one unresponsive.
    pub heartbeat_every_s: u64,
    pub unresponsive_after_s: u64,
}

errors! { ViewErrors = INTERNAL + [ViewUnavailable, QueueUnavailable] }

/// `GET /api/agents/info`: kinds, counts by state, the built-in agents and their tools.
#[utoipa::path(get, path = "/api/agents/info", tag = "agents",
    responses((status = 200, description = "The registry at a glance", body = AgentsInfo), ViewErrors))]
async fn info(State(app): State<AppState>) -> Result<ApiJson<AgentsInfo>, ApiError> {
    let (counts_by_state, registered_by_kind) =
        agent_view(&app)?.counts().await.map_err(view_unavailable)?;
    let builtin = crate::agents::BUILTIN
        .iter()
        .map(|builtin| {
            let (system_prompt, tools) =
                crate::agents::described(&app.agents.builtin, builtin.name);
            BuiltinAgent {
                name: builtin.name,
                description: builtin.description,
                system_prompt,
                tools,
            }
        })
        .collect();
    Ok(ApiJson(AgentsInfo {
        kinds: app.agent_kinds.iter().cloned().collect(),
        registered_by_kind,
        counts_by_state,
        builtin,
        heartbeat_every_s: HEARTBEAT_EVERY_S,
        unresponsive_after_s: app.agents.unresponsive_after_s,
    }))
}

errors! { GetAgentErrors = READ + PATH_ID + QUERY + [AgentNotFound, ViewUnavailable, QueueUnavailable] }

/// `GET /api/agents/{agent_id}?at_position=&at=`: 200 with the agent and its recent history
/// (as the log held them at that moment, with `as_of` naming its last event, when one is
/// given), 404 unknown (or not registered yet then). Of now, with `live`: its last report
/// from the agent view (load, running missions, last heartbeat).
#[utoipa::path(get, path = "/api/agents/{agent_id}", tag = "agents",
    params(AgentId, AsOfQuery),
    responses((status = 200, description = "The agent", body = AgentView), GetAgentErrors))]
async fn get_agent(
    State(app): State<AppState>,
    AgentId(agent_id): AgentId,
    ApiQuery(query): ApiQuery<AsOfQuery>,
) -> Result<ApiJson<AgentView>, ApiError> {
    match query.as_of()? {
        None => {
            let mut view = load_view(&app, &agent_id).await?;
            let record =
                agent_view(&app)?.get(agent_id.as_str()).await.map_err(view_unavailable)?;
            let now = app.clock.now_ms();
            view.live = record.map(|r| AgentLive {
                status: r.status,
                load: r.load,
                running: r.running,
                silent_for_ms: (now - r.last_seen_ms).max(0),
                last_seen_ms: r.last_seen_ms,
            });
            Ok(ApiJson(view))
        }
        Some(as_of) => Ok(ApiJson(load_view_as_of(&app, &agent_id, as_of).await?)),
    }
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct DeregisterRequest {
    /// Recorded in the agent's history; at most 2,000 characters.
    #[serde(default)]
    reason: String,
}

errors! {
    DeregisterErrors = COMMAND + PATH_ID + CALLER + [
        InvalidBody, InvalidField, AgentNotFound, AgentDeregistered, AgentContended
    ]
}

/// `POST /api/agents/{agent_id}/deregister` with an optional `{"reason"}`: 200 with the agent,
/// 404 unknown, 409 deregistered already.
#[utoipa::path(post, path = "/api/agents/{agent_id}/deregister", tag = "agents",
    params(AgentId, Metadata),
    request_body(content = Option<DeregisterRequest>, description = "Optional"),
    responses((status = 200, description = "Deregistered", body = AgentView), DeregisterErrors))]
async fn deregister(
    State(app): State<AppState>,
    caller: Authed,
    AgentId(agent_id): AgentId,
    Metadata(metadata): Metadata,
    body: Bytes,
) -> Result<ApiJson<AgentView>, ApiError> {
    let request: DeregisterRequest = optional_json(&body)?;
    if caller.agent_key().is_some() {
        let (agent, _) = command::load::<Agent>(&app.store, &agent_id).await.map_err(refusal)?;
        let bound = agent.registration.as_ref().and_then(|r| r.key_id.as_deref());
        if agent.registration.is_some() {
            caller.check_agent(agent_id.as_str(), bound)?;
        }
    }
    let by = metadata.actor.clone();
    let now = app.clock.now_ms();
    command::execute::<Agent>(&app.store, &agent_id, metadata, || AgentCommand::Deregister {
        by: by.clone(),
        reason: request.reason.clone(),
        now_ms: now,
    })
    .await
    .map_err(refusal)?;
    Ok(ApiJson(load_view(&app, &agent_id).await?))
}
