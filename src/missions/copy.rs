//! Re-enqueue: a finished mission (completed, failed or cancelled) run again as a new
//! mission, a copy of its spec. The two are linked both ways in one atomic group: the copy's
//! spec names its original (`copied_from`) and the original's history gains
//! `MissionCopied` (the copy's id, who and why). Unlike a retry, the original keeps its
//! outcome; unlike a fork, nothing is played back: the copy runs from the start.
//!
//! A copy is a root: a copy of a child no longer reports to its parent, a copy of a fork
//! runs live from the first step, and a `not_before` in the past is not waited for again.

use domain::aggregate::Aggregate;
use domain::mission::{CopyLink, Mission, MissionCommand, MissionError, MissionSpec};
use domain::{EventMetadata, StreamId};
use uuid::Uuid;

use crate::eventlog::command::{self, CommandError, Create};
use crate::eventlog::store::EventStore;

/// What a re-enqueue did.
#[derive(Debug)]
pub struct Copied {
    pub copy_id: StreamId,
    /// `true`: the command id had been executed before; nothing new was enqueued.
    pub repeated: bool,
}

/// Ids of one re-enqueue: the copy's, the command that creates it, and the command recorded
/// in the original. With an idempotency key all are derived from it, so that a repeat names
/// the same copy and is known as a repeat.
#[derive(Debug, Clone, Copy)]
pub struct CopyIds {
    pub copy_id: Uuid,
    pub copy_command_id: Uuid,
    /// The original's command; `None` for a request without a key (never looked up).
    pub command_id: Option<Uuid>,
}

impl CopyIds {
    pub fn fresh() -> CopyIds {
        CopyIds { copy_id: Uuid::now_v7(), copy_command_id: Uuid::now_v7(), command_id: None }
    }

    /// Ids derived from `seed` (the caller, its key and the mission) in `namespace`.
    pub fn derived(namespace: &Uuid, seed: &str) -> CopyIds {
        let id = |part: &str| Uuid::new_v5(namespace, format!("{part}\n{seed}").as_bytes());
        CopyIds {
            copy_id: id("copy"),
            copy_command_id: id("copy-enqueue"),
            command_id: Some(id("copy-record")),
        }
    }
}

/// Enqueues a copy of finished mission `origin_id`, recorded in the origin's history with
/// `reason` and `metadata.actor`. A command id of `ids` seen before is answered with the
/// first outcome, and nothing is done again.
pub async fn reenqueue(
    store: &EventStore,
    origin_id: &StreamId,
    reason: &str,
    mut metadata: EventMetadata,
    ids: CopyIds,
    now_ms: i64,
) -> Result<Copied, CommandError<MissionError>> {
    let copy_id = StreamId::from(ids.copy_id);
    metadata.command_id = ids.command_id;
    if let Some(command_id) = ids.command_id
        && store.command_outcome(command_id).await?.is_some()
    {
        return Ok(Copied { copy_id, repeated: true });
    }
    let (origin, version) = command::load::<Mission>(store, origin_id).await?;
    let by = metadata.actor.clone();
    let record = || MissionCommand::RecordCopy {
        copy_id: copy_id.to_string(),
        reason: reason.to_owned(),
        by: by.clone(),
        now_ms,
    };
    // Decided first against the origin as loaded, so that an unfinished or unknown mission
    // is refused before a copy is made of it.
    origin.decide(record()).map_err(CommandError::Rejected)?;
    let spec = MissionSpec {
        parent: None,
        forked_from: None,
        not_before_ms: None,
        copied_from: Some(CopyLink { mission_id: origin_id.to_string() }),
        ..origin.spec.clone().ok_or(CommandError::Rejected(MissionError::NotFound))?
    };
    let mut copy_metadata = metadata.clone();
    copy_metadata.command_id = Some(ids.copy_command_id);
    let creation = Create {
        stream_id: copy_id.clone(),
        metadata: copy_metadata,
        command: MissionCommand::Enqueue { spec, now_ms },
    };
    let decided = command::decide_creations::<Mission>(vec![creation])
        .map_err(|mut refusals| refusals.swap_remove(0).1)?;
    command::execute_with_creations(
        store,
        origin_id,
        &metadata,
        Some((origin, version)),
        record,
        &decided,
    )
    .await?;
    Ok(Copied { copy_id, repeated: false })
}
