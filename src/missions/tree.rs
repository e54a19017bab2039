//! Missions that fan out and wait, on the worker's side: a parent's children are enqueued and
//! the parent suspended in one atomic group (so no child can end before its parent waits for
//! it, and a crash leaves neither half), the children inheriting what the parent's spec fixes.
//! What reports their ends to the parent, and cascades a parent's cancel to them, is the
//! `mission_tree` projector (`crate::eventlog::projectors::mission_tree`).

use domain::mission::{Mission, MissionCommand, MissionError, MissionSpec, ParentLink};
use domain::{EventMetadata, StreamId};
use serde_json::json;

use crate::eventlog::command::{self, CommandError, Create};
use crate::eventlog::store::EventStore;
use crate::missions::agent::ChildRequest;

/// A child's spec: what the agent asked for, the rest as its parent's (priority, attempts,
/// timeout), one level deeper. Its LLM calls count against the root's budget, which the
/// whole tree shares (`budget` is the root's, for the record).
pub fn child_spec(parent_id: &str, parent: &MissionSpec, request: &ChildRequest) -> MissionSpec {
    let depth = parent.parent.as_ref().map_or(0, |link| link.depth) + 1;
    let root = parent.parent.as_ref().map_or(parent_id, |link| link.root.as_str()).to_owned();
    MissionSpec {
        name: request.name.clone(),
        description: request.task.clone(),
        priority: parent.priority,
        payload: json!({ "prompt": request.task }),
        agent: request.agent.clone(),
        attempt_max: parent.attempt_max,
        timeout_ms: parent.timeout_ms,
        not_before_ms: None,
        budget: parent.budget,
        parent: Some(ParentLink { mission_id: parent_id.to_owned(), depth, root }),
        forked_from: None,
        copied_from: None,
    }
}

/// What a suspension needs besides the parent's state.
#[derive(Clone, Copy)]
pub struct Fanout<'a> {
    pub worker_id: &'a str,
    pub attempt: u32,
    pub step: u32,
    pub call_id: &'a str,
    pub now_ms: i64,
}

/// The children of one suspension, their ids and command ids drawn once, so that a repeat
/// after an unknown outcome sends the same group and finds it stored.
pub struct Planned {
    pub ids: Vec<String>,
    decided: command::Decided<Mission>,
}

/// Decides the children's enqueues against the parent's spec, refusing what breaks a rule.
pub fn plan(
    parent_id: &StreamId,
    spec: &MissionSpec,
    metadata: &EventMetadata,
    children: &[ChildRequest],
    now_ms: i64,
) -> Result<Planned, CommandError<MissionError>> {
    let parent = parent_id.to_string();
    let creations: Vec<Create<MissionCommand>> = children
        .iter()
        .map(|request| {
            let mut child_metadata = metadata.clone();
            child_metadata.command_id = Some(uuid::Uuid::now_v7());
            Create {
                stream_id: StreamId::from(uuid::Uuid::now_v7()),
                metadata: child_metadata,
                command: MissionCommand::Enqueue {
                    spec: child_spec(&parent, spec, request),
                    now_ms,
                },
            }
        })
        .collect();
    let ids = creations.iter().map(|creation| creation.stream_id.to_string()).collect();
    let decided = command::decide_creations::<Mission>(creations)
        .map_err(|mut refusals| refusals.swap_remove(0).1)?;
    Ok(Planned { ids, decided })
}

/// Enqueues the planned children and suspends the parent in one group. `held` is the parent
/// as its holder last saw it; a conflict (a cancel came in) loads it again and decides again.
pub async fn suspend(
    store: &EventStore,
    parent_id: &StreamId,
    held: (Mission, u64),
    metadata: &EventMetadata,
    fanout: Fanout<'_>,
    planned: &Planned,
) -> Result<(), CommandError<MissionError>> {
    let suspend = || MissionCommand::Suspend {
        worker_id: fanout.worker_id.to_owned(),
        attempt: fanout.attempt,
        step: fanout.step,
        call_id: fanout.call_id.to_owned(),
        children: planned.ids.clone(),
        now_ms: fanout.now_ms,
    };
    command::execute_with_creations(
        store,
        parent_id,
        metadata,
        Some(held),
        suspend,
        &planned.decided,
    )
    .await
}
