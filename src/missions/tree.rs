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
/// timeout, budget), one level deeper.
pub fn child_spec(parent_id: &str, parent: &MissionSpec, request: &ChildRequest) -> MissionSpec {
    let depth = parent.parent.as_ref().map_or(0, |link| link.depth) + 1;
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
        parent: Some(ParentLink { mission_id: parent_id.to_owned(), depth }),
        forked_from: None,
    }
}

/// What a suspension needs besides the parent's state.
#[derive(Clone, Copy)]
pub struct Fanout<'a> {
    pub worker_id: &'a str,
    pub attempt: u32,
    pub step: u32,
    pub call_id: &'a str,
    pub children: &'a [ChildRequest],
    pub now_ms: i64,
}

/// Enqueues the children and suspends the parent in one group. `held` is the parent as its
/// holder last saw it; a conflict (a cancel came in) loads it again and decides again. The
/// children's ids and command ids are drawn once, so a repeat after an unknown outcome finds
/// the first group. Returns the children's ids.
pub async fn suspend(
    store: &EventStore,
    parent_id: &StreamId,
    held: (Mission, u64),
    metadata: &EventMetadata,
    fanout: Fanout<'_>,
) -> Result<Vec<String>, CommandError<MissionError>> {
    let Some(spec) = held.0.spec.clone() else {
        return Err(CommandError::Rejected(MissionError::NotFound));
    };
    let parent = parent_id.to_string();
    let children: Vec<(StreamId, EventMetadata, MissionSpec)> = fanout
        .children
        .iter()
        .map(|request| {
            let mut child_metadata = metadata.clone();
            child_metadata.command_id = Some(uuid::Uuid::now_v7());
            (
                StreamId::from(uuid::Uuid::now_v7()),
                child_metadata,
                child_spec(&parent, &spec, request),
            )
        })
        .collect();
    let ids: Vec<String> = children.iter().map(|(id, ..)| id.to_string()).collect();
    let creations = children
        .iter()
        .map(|(stream_id, metadata, spec)| Create {
            stream_id: stream_id.clone(),
            metadata: metadata.clone(),
            command: MissionCommand::Enqueue { spec: spec.clone(), now_ms: fanout.now_ms },
        })
        .collect();
    let decided = command::decide_creations::<Mission>(creations)
        .map_err(|mut refusals| refusals.swap_remove(0).1)?;
    let suspend = || MissionCommand::Suspend {
        worker_id: fanout.worker_id.to_owned(),
        attempt: fanout.attempt,
        step: fanout.step,
        call_id: fanout.call_id.to_owned(),
        children: ids.clone(),
        now_ms: fanout.now_ms,
    };
    command::execute_with_creations(store, parent_id, metadata, Some(held), suspend, &decided)
        .await?;
    Ok(ids)
}
