//! The command handler: load an aggregate's stream, fold it, decide, append at the version
//! it was decided against. A conflict (another command got there first) is answered by
//! loading again and deciding again, a bounded number of times (design invariant 5).
//!
//! [`decide_creations`] and [`create_all`] are the bulk form for commands that create
//! streams: each is decided against the empty state, with no load, and all are appended in
//! one atomic group.

use domain::aggregate::{Aggregate, DomainEvent, UpcastError};
use domain::{EventMetadata, ExpectedVersion, NewEvent, RecordedEvent, StreamId};

use crate::eventlog::snapshot;
use crate::eventlog::store::snapshots;
use crate::eventlog::store::{Append, AppendError, Appended, AsOf, EventStore, StoreError};

/// Re-decisions after a conflict before giving up with it.
pub const CONFLICT_RETRIES_MAX: u32 = 5;

#[derive(Debug, thiserror::Error)]
pub enum CommandError<E: std::error::Error> {
    /// The aggregate refused the command: the caller's fault, a 4xx.
    #[error(transparent)]
    Rejected(E),
    /// Still conflicting after every retry: the stream is too busy; a 409 to retry later.
    #[error("stream kept changing while the command was decided ({0})")]
    Contended(AppendError),
    #[error(transparent)]
    Append(AppendError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Upcast(#[from] UpcastError),
}

/// What a command did: the aggregate after it, its stream version, and the append's outcome
/// (`None` when the command decided that nothing needed to happen).
#[derive(Debug)]
pub struct Executed<A> {
    pub state: A,
    pub version: u64,
    pub appended: Option<Appended>,
}

/// Loads a stream and folds it into its aggregate, upcasting stored events. An aggregate
/// that takes snapshots starts from its stream's snapshot and folds only the events after
/// it (decision 0049).
pub async fn load<A: Aggregate>(
    store: &EventStore,
    stream_id: &StreamId,
) -> Result<(A, u64), CommandError<A::Error>> {
    match A::SNAPSHOTS {
        Some(snapshots) => snapshot::load(store, stream_id, &snapshots).await,
        None => load_whole(store, stream_id).await,
    }
}

/// [`load`] folding every event of the stream, never a snapshot: what a load costs without
/// one, and what a snapshot must always equal.
pub async fn load_whole<A: Aggregate>(
    store: &EventStore,
    stream_id: &StreamId,
) -> Result<(A, u64), CommandError<A::Error>> {
    let (state, recorded) = load_with_events::<A>(store, stream_id).await?;
    Ok((state, recorded.last().map_or(0, |event| event.version)))
}

/// [`load`], keeping the stored events (for views that show who did what, and when).
pub async fn load_with_events<A: Aggregate>(
    store: &EventStore,
    stream_id: &StreamId,
) -> Result<(A, Vec<RecordedEvent>), CommandError<A::Error>> {
    let recorded = store.load_stream(&A::stream_type(), stream_id, None).await?;
    Ok((fold(&recorded)?, recorded))
}

/// [`load`], with the stream's last `recent` events or more (for a view that shows recent
/// history): the state through the snapshot, then the tail of the stream in a second read.
/// Events appended between the two reads are folded into the state too, so the two agree.
pub async fn load_with_recent_events<A: Aggregate>(
    store: &EventStore,
    stream_id: &StreamId,
    recent: u64,
) -> Result<(A, Vec<RecordedEvent>), CommandError<A::Error>> {
    let (state, version) = load::<A>(store, stream_id).await?;
    let after = version.saturating_sub(recent);
    let recorded =
        snapshots::stream_range(store.pool(), &A::stream_type(), stream_id, after, None).await?;
    let newer = recorded.partition_point(|event| event.version <= version);
    let (state, _) = snapshot::fold_onto(state, version, &recorded[newer..])?;
    Ok((state, recorded))
}

/// The aggregate the stored events of one stream make, each upcast first.
fn fold<A: Aggregate>(recorded: &[RecordedEvent]) -> Result<A, UpcastError> {
    let mut state = A::default();
    for event in recorded {
        let event =
            A::Event::upcast(&event.event_type, event.schema_version, event.payload.clone())?;
        state.apply(&event);
    }
    Ok(state)
}

/// [`load_with_events`] as the log stood at `as_of` (time travel): the aggregate folded from
/// the stream's events up to that moment, and those events. Never from a snapshot: the one
/// stored is usually past that moment, and the caller wants the events anyway.
pub async fn load_as_of<A: Aggregate>(
    store: &EventStore,
    stream_id: &StreamId,
    as_of: AsOf,
) -> Result<(A, Vec<RecordedEvent>), CommandError<A::Error>> {
    let recorded = store.load_stream_as_of(&A::stream_type(), stream_id, as_of).await?;
    Ok((fold(&recorded)?, recorded))
}

/// [`load`] for several streams of one aggregate in one query: each stream's aggregate and
/// version, in the order of `stream_ids` (a stream with no events is the empty aggregate
/// at version 0). For deciding many commands at once, each against its own stream.
pub async fn load_many<A: Aggregate>(
    store: &EventStore,
    stream_ids: &[StreamId],
) -> Result<Vec<(A, u64)>, CommandError<A::Error>> {
    let mut streams = store.load_streams(&A::stream_type(), stream_ids).await?;
    let mut loaded = Vec::with_capacity(stream_ids.len());
    for stream_id in stream_ids {
        let mut state = A::default();
        let mut version = 0;
        for event in streams.remove(stream_id).unwrap_or_default() {
            version = event.version;
            state.apply(&A::Event::upcast(&event.event_type, event.schema_version, event.payload)?);
        }
        loaded.push((state, version));
    }
    Ok(loaded)
}

/// Runs `command` (rebuilt by `make` for each attempt) against the stream's current state.
/// A repeated `metadata.command_id` returns the first outcome without deciding again.
pub async fn execute<A: Aggregate>(
    store: &EventStore,
    stream_id: &StreamId,
    metadata: EventMetadata,
    make: impl FnMut() -> A::Command,
) -> Result<Executed<A>, CommandError<A::Error>> {
    // A command id seen before is answered with its stored outcome, even where deciding
    // again against today's state would refuse: the first execution is what counts.
    let command_id = metadata.command_id;
    if let Some(command_id) = command_id
        && let Some(appended) = store.command_outcome(command_id).await?
    {
        let (state, version) = load::<A>(store, stream_id).await?;
        return Ok(Executed { state, version, appended: Some(appended) });
    }
    match execute_new(store, stream_id, metadata, None, make).await {
        // The same command, sent concurrently, may have committed between the look-up above
        // and the load the decision was taken against (which then refused it: the mission
        // exists). Its outcome is this command's answer too.
        Err(CommandError::Rejected(rejection)) => match command_id {
            Some(command_id) => match store.command_outcome(command_id).await? {
                Some(appended) => {
                    let (state, version) = load::<A>(store, stream_id).await?;
                    Ok(Executed { state, version, appended: Some(appended) })
                }
                None => Err(CommandError::Rejected(rejection)),
            },
            None => Err(CommandError::Rejected(rejection)),
        },
        executed => executed,
    }
}

/// [`execute`] for a command whose id was never sent before (a fresh one, not a client's
/// key), which therefore needs no look-up of earlier outcomes. With `known`, the first
/// decision is taken against that state and version instead of loading the stream: a
/// worker knows the mission it holds, and an enqueue under a new id knows the stream is
/// empty. A conflict loads the stream and decides again, as always.
pub async fn execute_new<A: Aggregate>(
    store: &EventStore,
    stream_id: &StreamId,
    metadata: EventMetadata,
    mut known: Option<(A, u64)>,
    mut make: impl FnMut() -> A::Command,
) -> Result<Executed<A>, CommandError<A::Error>> {
    let mut attempt = 0;
    loop {
        let (state, version) = match known.take() {
            Some(known) => known,
            None => load::<A>(store, stream_id).await?,
        };
        match decide_and_append(store, stream_id, &metadata, state, version, make()).await? {
            Ok(executed) => return Ok(executed),
            Err(conflict) => {
                attempt += 1;
                if attempt > CONFLICT_RETRIES_MAX {
                    return Err(CommandError::Contended(conflict));
                }
            }
        }
    }
}

/// Decides `command` once, against the stream as it stood at version `expected`: for a
/// caller that read that version and changes what it saw (an `If-Match`). Anything recorded
/// since, found at the load or by the append's version check, is answered with
/// `CommandError::Append(AppendError::Conflict)` rather than decided again against a state
/// the caller never saw. It does not look up `metadata.command_id` as [`execute`] does: a
/// retry of a change that went in is refused as stale rather than answered with its first
/// outcome, so give it commands without an idempotency key.
pub async fn execute_at<A: Aggregate>(
    store: &EventStore,
    stream_id: &StreamId,
    metadata: EventMetadata,
    expected: u64,
    command: A::Command,
) -> Result<Executed<A>, CommandError<A::Error>> {
    let (state, version) = load::<A>(store, stream_id).await?;
    if version != expected {
        return Err(CommandError::Append(AppendError::Conflict {
            stream_type: A::stream_type(),
            stream_id: stream_id.clone(),
            expected,
            actual: version,
        }));
    }
    decide_and_append(store, stream_id, &metadata, state, version, command)
        .await?
        .map_err(CommandError::Append)
}

/// One decision against `state` at `version`, and its append at that version. The inner
/// `Err` is the append's conflict (someone else appended since), for the caller to retry
/// or to report.
async fn decide_and_append<A: Aggregate>(
    store: &EventStore,
    stream_id: &StreamId,
    metadata: &EventMetadata,
    state: A,
    version: u64,
    command: A::Command,
) -> Result<Result<Executed<A>, AppendError>, CommandError<A::Error>> {
    let events = state.decide(command).map_err(CommandError::Rejected)?;
    if events.is_empty() {
        return Ok(Ok(Executed { state, version, appended: None }));
    }
    let new_events: Vec<NewEvent> = events.iter().map(new_event).collect();
    let last_event_id = new_events.last().map(|event| event.event_id);
    let append = Append {
        stream_type: A::stream_type(),
        stream_id: stream_id.clone(),
        expected: ExpectedVersion::Exact(version),
        events: new_events,
        metadata: metadata.clone(),
    };
    match store.append(append).await {
        Ok(appended) if appended.duplicate => {
            let (state, version) = load::<A>(store, stream_id).await?;
            Ok(Ok(Executed { state, version, appended: Some(appended) }))
        }
        Ok(appended) => {
            let mut state = state;
            for event in &events {
                state.apply(event);
            }
            let version = appended.last_version;
            // Past a multiple of `every`, the state just decided on is the snapshot: no load.
            if let Some(snapshots) = A::SNAPSHOTS
                && let Some(event_id) = last_event_id
                && snapshot::crossed(
                    appended.first_version.saturating_sub(1),
                    version,
                    snapshots.every,
                )
            {
                snapshot::save_later(
                    store, stream_id, &snapshots, &state, version, event_id, false,
                );
            }
            Ok(Ok(Executed { state, version, appended: Some(appended) }))
        }
        Err(conflict @ AppendError::Conflict { .. }) => Ok(Err(conflict)),
        Err(error) => Err(CommandError::Append(error)),
    }
}

/// A command that creates a stream: decided against the aggregate's empty state.
#[derive(Debug)]
pub struct Create<C> {
    pub stream_id: StreamId,
    /// Its `command_id` makes the creation idempotent, as for [`execute`].
    pub metadata: EventMetadata,
    pub command: C,
}

/// What [`create_all`] did for one stream: the aggregate after it and the append's outcome
/// (`duplicate` set when its command id had been executed before, and `state` is then the
/// stream's current state).
#[derive(Debug)]
pub struct Created<A> {
    pub state: A,
    pub appended: Appended,
}

/// Creations decided and checked against the store's limits, ready for [`create_all`].
#[derive(Debug)]
pub struct Decided<A: Aggregate> {
    events: Vec<Vec<A::Event>>,
    appends: Vec<Append>,
}

/// Commands refused by [`decide_creations`], each with its index.
pub type Refusals<E> = Vec<(usize, CommandError<E>)>;

/// Decides every creation against the aggregate's empty state (no load: each append will
/// expect version 0) and checks each against the store's limits. Every refusal comes back,
/// with the index of its command, so a caller can report them all at once.
pub fn decide_creations<A: Aggregate>(
    commands: Vec<Create<A::Command>>,
) -> Result<Decided<A>, Refusals<A::Error>> {
    let mut refused = Vec::new();
    let mut decided = Decided { events: Vec::new(), appends: Vec::with_capacity(commands.len()) };
    for (index, Create { stream_id, metadata, command }) in commands.into_iter().enumerate() {
        let events = match A::default().decide(command) {
            Ok(events) => events,
            Err(error) => {
                refused.push((index, CommandError::Rejected(error)));
                continue;
            }
        };
        let append = Append {
            stream_type: A::stream_type(),
            stream_id,
            expected: ExpectedVersion::Exact(0),
            events: events.iter().map(new_event).collect(),
            metadata,
        };
        if let Err(error) = crate::eventlog::store::validate(&append) {
            refused.push((index, CommandError::Append(error)));
            continue;
        }
        decided.events.push(events);
        decided.appends.push(append);
    }
    if refused.is_empty() { Ok(decided) } else { Err(refused) }
}

/// Appends decided creations as one atomic group: all of them or none. Outcomes come back in
/// the order the commands were given.
///
/// A command whose id was executed before is answered with its first outcome; its stream is
/// then loaded (all such streams in one query) to report its current state. A stream that
/// exists under another command id is a conflict that fails the whole group (`Contended`):
/// a creation is not re-decided, since against a stream that exists it can only be refused.
pub async fn create_all<A: Aggregate>(
    store: &EventStore,
    decided: Decided<A>,
) -> Result<Vec<Created<A>>, CommandError<A::Error>> {
    let outcomes = store.append_all(decided.appends).await.map_err(|error| match error {
        conflict @ AppendError::Conflict { .. } => CommandError::Contended(conflict),
        error => CommandError::Append(error),
    })?;
    let repeated: Vec<StreamId> = outcomes
        .iter()
        .filter(|appended| appended.duplicate)
        .map(|appended| appended.stream_id.clone())
        .collect();
    let mut current = if repeated.is_empty() {
        Default::default()
    } else {
        store.load_streams(&A::stream_type(), &repeated).await?
    };
    let mut created = Vec::with_capacity(outcomes.len());
    for (events, appended) in decided.events.into_iter().zip(outcomes) {
        let mut state = A::default();
        if appended.duplicate {
            for event in current.remove(&appended.stream_id).unwrap_or_default() {
                state.apply(&A::Event::upcast(
                    &event.event_type,
                    event.schema_version,
                    event.payload,
                )?);
            }
        } else {
            for event in &events {
                state.apply(event);
            }
        }
        created.push(Created { state, appended });
    }
    Ok(created)
}

/// Runs `make` against one stream and appends its events in one atomic group with `decided`
/// creations of other streams: all of them or none (a parent suspended with the children it
/// waits for, a fork enqueued with its link in the origin). With `known`, the first decision
/// is taken against that state; a conflict on the stream loads it and decides again.
pub async fn execute_with_creations<A: Aggregate>(
    store: &EventStore,
    stream_id: &StreamId,
    metadata: &EventMetadata,
    mut known: Option<(A, u64)>,
    mut make: impl FnMut() -> A::Command,
    decided: &Decided<A>,
) -> Result<(), CommandError<A::Error>> {
    let mut conflicts = 0;
    loop {
        let (state, version) = match known.take() {
            Some(known) => known,
            None => load::<A>(store, stream_id).await?,
        };
        let events = state.decide(make()).map_err(CommandError::Rejected)?;
        let mut group = vec![Append {
            stream_type: A::stream_type(),
            stream_id: stream_id.clone(),
            expected: ExpectedVersion::Exact(version),
            events: events.iter().map(new_event).collect(),
            metadata: metadata.clone(),
        }];
        group.extend(decided.appends.iter().cloned());
        match store.append_all(group).await {
            Ok(_) => return Ok(()),
            Err(conflict @ AppendError::Conflict { .. }) => {
                conflicts += 1;
                if conflicts > CONFLICT_RETRIES_MAX {
                    return Err(CommandError::Contended(conflict));
                }
            }
            Err(error) => return Err(CommandError::Append(error)),
        }
    }
}

/// The stored form of a domain event, under a fresh id.
pub fn new_event<E: DomainEvent>(event: &E) -> NewEvent {
    NewEvent {
        event_id: uuid::Uuid::now_v7(),
        event_type: event.event_type().to_owned(),
        schema_version: event.schema_version(),
        payload: event.payload(),
    }
}
