//! A mission as the API shows it: its state folded from its events, with its forks, its
//! copies and its tree of sub-missions.

use domain::StreamId;
use domain::aggregate::DomainEvent;
use domain::mission::{AttemptError, Mission, MissionError, MissionEvent, MissionStatus, Priority};
use serde::Serialize;
use time::OffsetDateTime;
use utoipa::ToSchema;

use super::refusal;
use super::tree::{self, ForkView, TreeNode};
use crate::api::as_of::AsOfView;
use crate::api::{ApiError, AppState};
use crate::eventlog::command::{self, CommandError};
use crate::eventlog::store::AsOf;

#[derive(Debug, Serialize, ToSchema)]
pub struct AttemptErrorView {
    /// 1 until the first manual retry, then 2, and so on; attempts restart at 1 in each run.
    pub run: u32,
    pub attempt: u32,
    pub error: String,
    pub at: String,
}

/// A copy of a finished mission (a re-enqueue), as its original lists it.
#[derive(Debug, Serialize, ToSchema)]
pub struct CopyView {
    pub mission_id: String,
    pub reason: String,
    pub by: String,
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
    /// The finished mission this one is a copy of (a re-enqueue).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub copied_from: Option<String>,
    /// Copies of this mission, oldest first.
    pub copies: Vec<CopyView>,
    /// The children a suspended mission still waits for.
    pub waiting_for: Vec<String>,
    /// Its sub-missions and theirs, oldest first. Statuses come from the mission list, which
    /// may trail the log by a moment; in a view of an earlier moment, they are the children
    /// the mission's own events named, without their statuses.
    pub children: Vec<TreeNode>,
    /// Present when the view is of an earlier moment (`at_position` or `at`): the last event
    /// of the mission it folds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub as_of: Option<AsOfView>,
}

fn iso(ms: i64) -> String {
    let at = OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .unwrap_or(OffsetDateTime::UNIX_EPOCH);
    at.format(&time::format_description::well_known::Rfc3339).unwrap_or_default()
}

/// A mission's view from its state, who enqueued it and its stream version. Times are the
/// events' own (the moment each command was decided), so the view needs no stored event.
pub(super) fn view(
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
            .map(|AttemptError { run, attempt, error, at_ms }| AttemptErrorView {
                run,
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
        copied_from: spec.copied_from.map(|copy| copy.mission_id),
        copies: vec![],
        waiting_for: mission.waiting,
        children: mission.children.iter().map(leaf).collect(),
        as_of: None,
    })
}

pub(in crate::api) async fn load_view(
    app: &AppState,
    mission_id: &StreamId,
) -> Result<MissionView, ApiError> {
    let (mission, events) =
        command::load_with_events::<Mission>(&app.store, mission_id).await.map_err(refusal)?;
    let view = fold_view(mission_id, mission, &events)?;
    with_children(app, view).await
}

/// The mission as the log held it at `as_of` (time travel): 404 when it did not exist yet.
pub(in crate::api) async fn load_view_as_of(
    app: &AppState,
    mission_id: &StreamId,
    as_of: AsOf,
) -> Result<MissionView, ApiError> {
    let (mission, events) =
        command::load_as_of::<Mission>(&app.store, mission_id, as_of).await.map_err(refusal)?;
    let mut view = fold_view(mission_id, mission, &events)?;
    view.as_of = AsOfView::of(&events);
    Ok(view)
}

/// The view of a mission folded from `events`, its forks included.
fn fold_view(
    mission_id: &StreamId,
    mission: Mission,
    events: &[domain::RecordedEvent],
) -> Result<MissionView, ApiError> {
    let enqueued_by = events.first().map(|event| event.metadata.actor.clone()).unwrap_or_default();
    let version = events.last().map_or(0, |event| event.version);
    let mut view = view(mission_id, mission, enqueued_by, version)
        .ok_or_else(|| refusal(CommandError::Rejected(MissionError::NotFound)))?;
    // Read through the upcasters like the fold above, which has read each of them already.
    let links = events
        .iter()
        .filter(|event| matches!(event.event_type.as_str(), "MissionForked" | "MissionCopied"))
        .filter_map(|event| {
            MissionEvent::upcast(&event.event_type, event.schema_version, event.payload.clone())
                .ok()
        });
    for event in links {
        match event {
            MissionEvent::MissionForked { fork_id, attempt, steps, .. } => {
                view.forks.push(ForkView { mission_id: fork_id, attempt, steps });
            }
            MissionEvent::MissionCopied { copy_id, reason, by, at_ms } => {
                view.copies.push(CopyView { mission_id: copy_id, reason, by, at: iso(at_ms) });
            }
            _ => {}
        }
    }
    Ok(view)
}

/// `view` with the statuses of its sub-missions from the mission list.
async fn with_children(app: &AppState, mut view: MissionView) -> Result<MissionView, ApiError> {
    if !view.children.is_empty() {
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
