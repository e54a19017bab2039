//! The agent kinds registered in the log (`agent_kinds/all`), beside those the operator
//! configured (`BRAIN_AGENT_KINDS`) and those a process's workers serve. Every process keeps
//! them in a [`KindCache`] that follows the log (`eventlog::follow`), so a kind an admin or an
//! agent key registers is known to every serve within a second, without a restart; and the
//! commands that register and remove one.

use std::collections::BTreeSet;
use std::sync::{Arc, RwLock};

use domain::agent_kind::{AgentKindCommand, AgentKindError, AgentKindEvent, AgentKinds};
use domain::aggregate::DomainEvent;
use domain::{Aggregate, EventMetadata, RecordedEvent, StreamType};

use crate::eventlog::command::{self, CommandError};
use crate::eventlog::follow::{Folded, Unreadable};
use crate::eventlog::store::EventStore;

#[derive(Default)]
struct Known {
    kinds: AgentKinds,
    /// The last `agent_kinds` event folded in (or 0).
    position: u64,
}

/// The registered kinds, shared by the tasks of one process.
#[derive(Clone, Default)]
pub struct KindCache {
    known: Arc<RwLock<Known>>,
}

impl KindCache {
    pub fn contains(&self, kind: &str) -> bool {
        let known = self.known.read().unwrap_or_else(|poisoned| poisoned.into_inner());
        known.kinds.kinds.contains(kind)
    }

    /// Every registered kind, sorted.
    pub fn all(&self) -> BTreeSet<String> {
        let known = self.known.read().unwrap_or_else(|poisoned| poisoned.into_inner());
        known.kinds.kinds.clone()
    }
}

impl Folded for KindCache {
    fn stream_type(&self) -> StreamType {
        AgentKinds::stream_type()
    }

    fn position(&self) -> u64 {
        self.known.read().unwrap_or_else(|poisoned| poisoned.into_inner()).position
    }

    fn fold(&self, page: &[RecordedEvent]) -> Result<(), Unreadable> {
        let mut known = self.known.write().unwrap_or_else(|poisoned| poisoned.into_inner());
        for recorded in page {
            // Two catch-ups may read the same page; an event is folded in once.
            if recorded.global_position <= known.position {
                continue;
            }
            let event = AgentKindEvent::upcast(
                &recorded.event_type,
                recorded.schema_version,
                recorded.payload.clone(),
            )
            .map_err(|error| Unreadable::of(recorded, error))?;
            known.kinds.apply(&event);
            known.position = recorded.global_position;
        }
        Ok(())
    }
}

/// Registers `kind`; answers whether it was new.
pub async fn register(
    store: &EventStore,
    kind: &str,
    metadata: EventMetadata,
    now_ms: i64,
) -> Result<bool, CommandError<AgentKindError>> {
    let executed =
        command::execute::<AgentKinds>(store, &domain::agent_kind::stream_id(), metadata, || {
            AgentKindCommand::Register { kind: kind.to_owned(), now_ms }
        })
        .await?;
    Ok(executed.appended.is_some())
}

/// Removes `kind`, with why.
pub async fn remove(
    store: &EventStore,
    kind: &str,
    reason: &str,
    metadata: EventMetadata,
    now_ms: i64,
) -> Result<(), CommandError<AgentKindError>> {
    command::execute::<AgentKinds>(store, &domain::agent_kind::stream_id(), metadata, || {
        AgentKindCommand::Remove { kind: kind.to_owned(), reason: reason.to_owned(), now_ms }
    })
    .await?;
    Ok(())
}
