//! `mission_tree`: the links between missions and their children, and the reactions a tree
//! needs: a child's end reported to its parent, a parent's cancel passed on to its children.
//! Its store (`brain::missions::tree_store`) keeps the links in PostgreSQL and issues those
//! commands, which are idempotent, so that a redelivery or a rebuild repeats them harmlessly.

use domain::RecordedEvent;
use domain::aggregate::DomainEvent;
use domain::mission::{ChildOutcome, MissionEvent};

use crate::{Projector, Reads, StreamEvents, Unreadable};

pub const NAME: &str = "mission_tree";

#[derive(Debug, Clone, PartialEq)]
pub enum TreeChange {
    /// `child` was spawned by `parent`.
    Link { child: String, parent: String, position: u64 },
    /// A mission ended: if it has a parent, the parent is told.
    Ended(ChildOutcome),
    /// A mission was cancelled: its children that still run are cancelled too.
    Cancelled { mission_id: String },
}

/// The mission events that link a child to its parent or end a mission; the tree reads no
/// other.
const INTERESTING: &[&str] = &[
    "MissionEnqueued",
    "MissionCompleted",
    "MissionAttemptFailed",
    "MissionLeaseExpired",
    "MissionCancelled",
];

#[derive(Debug, Default, Clone, Copy)]
pub struct MissionTree;

impl Projector for MissionTree {
    type Change = TreeChange;

    fn name(&self) -> &'static str {
        NAME
    }

    fn reads(&self) -> Reads {
        const READS: Reads = Reads::Streams(&[StreamEvents::only("mission", INTERESTING)]);
        READS
    }

    fn apply(
        &self,
        event: &RecordedEvent,
        changes: &mut Vec<TreeChange>,
    ) -> Result<(), Unreadable> {
        if !INTERESTING.contains(&event.event_type.as_str()) {
            return Ok(());
        }
        let mission =
            MissionEvent::upcast(&event.event_type, event.schema_version, event.payload.clone())
                .map_err(|error| Unreadable::of(event, error))?;
        let mission_id = event.stream_id.to_string();
        if let MissionEvent::MissionEnqueued { spec, .. } = &mission
            && let Some(parent) = &spec.parent
        {
            changes.push(TreeChange::Link {
                child: mission_id.clone(),
                parent: parent.mission_id.clone(),
                position: event.global_position,
            });
        }
        if let Some(outcome) = ChildOutcome::of(&mission_id, &mission) {
            changes.push(TreeChange::Ended(outcome));
        }
        if matches!(mission, MissionEvent::MissionCancelled { .. }) {
            changes.push(TreeChange::Cancelled { mission_id });
        }
        Ok(())
    }
}
