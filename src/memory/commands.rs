//! Recording, superseding and forgetting memories: the text embedded through the gateway
//! (held to the caller's budgets and recorded like any call), then the decision of the
//! memory's aggregate appended to its stream.
//!
//! Superseding records the replacement first (naming the memory it replaces, which the index
//! then drops), then marks the old one superseded; if the second append fails, the old one is
//! already out of search and the replacement's `supersedes` says why.

use std::collections::BTreeMap;

use domain::memory::{Embedding, Memory, MemoryCommand, MemoryError, NewMemory, Scope, TTL_S_MAX};
use domain::{EventMetadata, StreamId};
use serde_json::Value;
use uuid::Uuid;

use crate::eventlog::command::{self, CommandError};
use crate::eventlog::store::EventStore;
use crate::llm::calls::{CallError, Caller, Calls};

/// What a memory is recorded with.
#[derive(Debug, Clone)]
pub struct Remember {
    pub scope: Scope,
    pub text: String,
    pub metadata: BTreeMap<String, Value>,
    pub ttl_s: Option<u64>,
    pub mission: Option<Uuid>,
}

#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    #[error(transparent)]
    Embed(#[from] CallError),
    #[error(transparent)]
    Command(#[from] CommandError<MemoryError>),
}

/// The embedding of `text` for `caller`.
pub async fn embed(calls: &Calls, caller: &Caller, text: &str) -> Result<Embedding, CallError> {
    let embedded = calls.embed(caller, None, &[text.to_owned()]).await?;
    let vector = embedded.vectors.into_iter().next().unwrap_or_default();
    Ok(Embedding {
        provider: embedded.provider.as_str().to_owned(),
        model: embedded.model,
        lexical: embedded.lexical,
        vector,
    })
}

/// Records a new memory; answers its id and the position of its event.
pub async fn record(
    store: &EventStore,
    calls: &Calls,
    caller: &Caller,
    metadata: EventMetadata,
    remember: Remember,
    supersedes: Option<Uuid>,
) -> Result<(Uuid, u64), RecordError> {
    let embedding = embed(calls, caller, &remember.text).await?;
    let id = Uuid::now_v7();
    let at_ms = crate::clock::now_ms();
    let expires_at_ms = remember
        .ttl_s
        .map(|ttl| at_ms.saturating_add((ttl.min(TTL_S_MAX) as i64).saturating_mul(1_000)));
    let new = NewMemory {
        scope: remember.scope,
        text: remember.text,
        metadata: remember.metadata,
        expires_at_ms,
        embedding,
        by: metadata.actor.clone(),
        mission: remember.mission,
        supersedes,
        at_ms,
    };
    let executed = command::execute::<Memory>(store, &StreamId::from(id), metadata, || {
        MemoryCommand::Record(Box::new(new.clone()))
    })
    .await?;
    let position = executed.appended.as_ref().map_or(0, |appended| appended.last_position);
    Ok((id, position))
}

/// Replaces memory `old` with a new one (same scope, unless `remember` names another);
/// answers the new one's id and the position of the last event.
pub async fn supersede(
    store: &EventStore,
    calls: &Calls,
    caller: &Caller,
    metadata: EventMetadata,
    old: Uuid,
    remember: Remember,
    reason: String,
) -> Result<(Uuid, u64), RecordError> {
    // Refused before anything is embedded or recorded when the old one cannot be replaced.
    let (state, _) = command::load::<Memory>(store, &StreamId::from(old)).await?;
    let probe = MemoryCommand::Supersede {
        replacement: Uuid::nil(),
        reason: reason.clone(),
        by: metadata.actor.clone(),
        at_ms: 0,
    };
    domain::Aggregate::decide(&state, probe).map_err(CommandError::Rejected)?;
    let (id, _) = record(store, calls, caller, metadata.clone(), remember, Some(old)).await?;
    let mut marking = metadata;
    marking.command_id = marking.command_id.map(|command| Uuid::new_v5(&command, b"superseded"));
    let executed = command::execute::<Memory>(store, &StreamId::from(old), marking, || {
        MemoryCommand::Supersede {
            replacement: id,
            reason: reason.clone(),
            by: metadata_actor(caller),
            at_ms: crate::clock::now_ms(),
        }
    })
    .await?;
    let position = executed.appended.as_ref().map_or(0, |appended| appended.last_position);
    Ok((id, position))
}

fn metadata_actor(caller: &Caller) -> String {
    match caller {
        Caller::Api { by, .. } => by.clone(),
        Caller::Mission(mission) => format!("worker:{}", mission.worker_id),
    }
}

/// Forgets memory `id`: gone from every index once its event is followed; the events stay.
pub async fn forget(
    store: &EventStore,
    metadata: EventMetadata,
    id: Uuid,
    reason: String,
) -> Result<u64, CommandError<MemoryError>> {
    let by = metadata.actor.clone();
    let executed = command::execute::<Memory>(store, &StreamId::from(id), metadata, || {
        MemoryCommand::Forget {
            reason: reason.clone(),
            by: by.clone(),
            at_ms: crate::clock::now_ms(),
        }
    })
    .await?;
    Ok(executed.appended.as_ref().map_or(0, |appended| appended.last_position))
}
