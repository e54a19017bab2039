//! The agent supervisor's routes: its status (health, counts by state, last sweep, this
//! process's leadership), the agents it watches, and control (start, stop, restart), each a
//! command on the agent with who asked and why.

use crate::api::auth::Access;
use domain::api_key::Permission;
use std::collections::BTreeMap;
use std::sync::atomic::Ordering;

use axum::extract::State;

use domain::StreamId;
use domain::agent::{Agent, AgentCommand, AgentState, ControlAction};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::routes;
use uuid::Uuid;

use super::agents::{AgentView, agent_view, load_view, refusal, view_unavailable};
use super::error::{ErrorCode, errors, refused};
use super::extract::{Metadata, page_limit};
use super::{ApiError, ApiJson, ApiQuery, ApiRoutes, AppState};
use crate::agents::view::{AgentRecord, PAGE_MAX};
use crate::agents::watchdog::{SweepReport, last_sweep};
use crate::eventlog::command;

pub fn routes() -> ApiRoutes {
    ApiRoutes::new()
        .routes(Access::needs(Permission::AgentsRead), routes!(status))
        .routes(Access::needs(Permission::AgentsRead), routes!(agents))
        .routes(Access::needs(Permission::AgentsControl), routes!(control))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SupervisorStatus {
    /// A sweep ran within the last two intervals.
    pub healthy: bool,
    /// Whether this process leads the sweeps (one process per namespace does).
    pub leading: bool,
    pub interval_s: u64,
    pub unresponsive_after_s: u64,
    pub counts_by_state: BTreeMap<String, u64>,
    pub last_sweep: Option<SweepReport>,
}

errors! { StatusErrors = INTERNAL + [ViewUnavailable, QueueUnavailable] }

/// `GET /api/supervisor/status`.
#[utoipa::path(get, path = "/api/supervisor/status", tag = "supervisor",
    responses((status = 200, description = "The supervisor at a glance", body = SupervisorStatus), StatusErrors))]
async fn status(State(app): State<AppState>) -> Result<ApiJson<SupervisorStatus>, ApiError> {
    let queue = super::queue::queue(&app)?;
    let last_sweep =
        last_sweep(&mut queue.connection(), &app.namespace).await.map_err(view_unavailable)?;
    let (counts_by_state, _) = agent_view(&app)?.counts().await.map_err(view_unavailable)?;
    let interval_ms = app.agents.supervisor_interval_s as i64 * 1_000;
    let now = app.clock.now_ms();
    let healthy = last_sweep.as_ref().is_some_and(|sweep| now - sweep.at_ms <= 2 * interval_ms);
    Ok(ApiJson(SupervisorStatus {
        healthy,
        leading: app.watchdog_leading.load(Ordering::Relaxed),
        interval_s: app.agents.supervisor_interval_s,
        unresponsive_after_s: app.agents.unresponsive_after_s,
        counts_by_state,
        last_sweep,
    }))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
struct WatchedQuery {
    /// The `next_after` of the previous page.
    after: Option<Uuid>,
    /// 1 to 500; 100 when absent.
    limit: Option<u32>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct WatchedAgent {
    #[serde(flatten)]
    pub agent: AgentRecord,
    /// How long since it was last heard from (database clock).
    pub silent_for_ms: i64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct WatchedPage {
    pub agents: Vec<WatchedAgent>,
    pub next_after: Option<String>,
}

errors! { WatchedErrors = INTERNAL + QUERY + [ViewUnavailable, QueueUnavailable] }

/// `GET /api/supervisor/agents`: every agent not deregistered, with its silence.
#[utoipa::path(get, path = "/api/supervisor/agents", tag = "supervisor",
    params(WatchedQuery),
    responses(
        (status = 200, description = "A page of watched agents, in id order", body = WatchedPage),
        WatchedErrors,
    ))]
async fn agents(
    State(app): State<AppState>,
    ApiQuery(query): ApiQuery<WatchedQuery>,
) -> Result<ApiJson<WatchedPage>, ApiError> {
    let limit = page_limit(query.limit, 100, PAGE_MAX as u32)? as usize;
    let after = query.after.map(|after| after.to_string());
    let (records, next_after) = agent_view(&app)?
        .list(after.as_deref(), limit, None, None)
        .await
        .map_err(view_unavailable)?;
    let now = app.clock.now_ms();
    let agents = records
        .into_iter()
        .filter(|record| record.state != AgentState::Deregistered)
        .map(|agent| WatchedAgent { silent_for_ms: (now - agent.last_seen_ms).max(0), agent })
        .collect();
    Ok(ApiJson(WatchedPage { agents, next_after }))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ControlRequest {
    pub agent_id: Uuid,
    /// `start`, `stop` or `restart`.
    pub action: String,
    /// Recorded in the agent's history; at most 2,000 characters.
    #[serde(default)]
    pub reason: String,
}

errors! {
    ControlErrors = COMMAND + JSON_BODY + CALLER + [
        InvalidField, AgentNotFound, ControlNotApplicable, AgentDeregistered, AgentContended
    ]
}

/// `POST /api/supervisor/control`: start, stop or restart an agent. A stopped agent claims
/// nothing until started; an external agent sees a restart in its next heartbeat answer.
#[utoipa::path(post, path = "/api/supervisor/control", tag = "supervisor",
    params(Metadata),
    request_body = ControlRequest,
    responses((status = 200, description = "Done (a restart: requested)", body = AgentView), ControlErrors))]
async fn control(
    State(app): State<AppState>,
    Metadata(metadata): Metadata,
    ApiJson(request): ApiJson<ControlRequest>,
) -> Result<ApiJson<AgentView>, ApiError> {
    let action = match request.action.as_str() {
        "start" => ControlAction::Start,
        "stop" => ControlAction::Stop,
        "restart" => ControlAction::Restart,
        other => {
            let message = format!("{other:?} is not one of start, stop, restart");
            return Err(refused(ErrorCode::InvalidField, Some("action"), message));
        }
    };
    let by = metadata.actor.clone();
    let agent_id = StreamId::from(request.agent_id);
    let now = app.clock.now_ms();
    command::execute::<Agent>(&app.store, &agent_id, metadata, || AgentCommand::RequestControl {
        action,
        by: by.clone(),
        reason: request.reason.clone(),
        now_ms: now,
    })
    .await
    .map_err(refusal)?;
    Ok(ApiJson(load_view(&app, &agent_id).await?))
}
