//! The claim sequence, written once for every claimer (the in-process worker's slots and
//! external agents' `POST /api/agents/{id}/claim`): pop the best mission from the queue,
//! start it under a lease for the claimer, and decide what becomes of the claim when the
//! start does not go in. It runs no agent and answers no request.
//!
//! A claim is released only once its start is in the log: the lease holds the mission from
//! then on. Every other end leaves the claim to run out, so that the lease reaper's reclaim
//! puts the mission back if the queue projection still holds it ready then. A release
//! would leave such a mission in no set and under no claim: nothing would run it again
//! until the queue was rebuilt. Case by case:
//! - the log refuses the start (cancelled, finished, started elsewhere, not yet due by the
//!   log's clock) or it still conflicts after every re-decision: the queue was ahead of or
//!   behind the log. A mission the log moved on from is taken out of the queue by its
//!   projector before the claim runs out; one the log would still start comes back.
//! - the store failed the start (nothing was written): the mission is still queued in the
//!   log, and the claim's expiry brings it back.
//! - the start's outcome is unknown (its commit never answered, which the committer says only
//!   after its transaction deadline): it is asked again under the same command id, at least
//!   once and then until the claimer could no longer use the mission (`answer_by`). The store
//!   answers a repeated command with its first outcome or, if that never committed, decides
//!   it now, so a start that went in is run rather than left idle to its lease. Still unknown
//!   by then, the mission is given back: if the log shows it running for this holder, a
//!   `Release` puts it back in the queue without counting the attempt; if the start never
//!   went in, the claim's expiry brings it back. Either way it is started once at a time,
//!   never lost, and never charged an attempt nobody ran.
//!
//! A worker with several free slots claims them all at once ([`Claimer::claim_and_start_many`]):
//! one queue call pops up to [`CLAIM_BATCH_MAX`] missions (the same script and rules as a
//! single claim, best first), one query loads all their streams, and their starts, each
//! decided against its own mission as loaded, go to the group committer together, so they
//! usually share one transaction. Each start is still its own command with its own command
//! id and expected version: the committer refuses a conflicting one alone, and the case
//! analysis above holds for every mission of the batch on its own (a start the log refuses
//! or that conflicts is re-decided alone, by the single-stream path; an outcome unknown is
//! asked about alone). The claims of the starts answered at once end in one release call,
//! and their missions are handed over before any unknown one is asked about again, so that
//! one slow answer does not hold the others' leases idle.

use std::time::{Duration, Instant};

use domain::mission::{Mission, MissionCommand, MissionError, MissionSpec, MissionStatus};
use domain::{EventMetadata, StreamId};
use futures::StreamExt;
use uuid::Uuid;

use crate::clock::LeaseClock;
use crate::eventlog::command::{self, CommandError, Executed};
use crate::eventlog::store::{AppendError, EventStore};
use crate::missions::queue::{Claim, Queue, QueueError};

/// Pause before asking again about a start whose outcome is unknown.
const ASK_AGAIN_PAUSE: Duration = Duration::from_millis(250);

/// What a claim asks for.
#[derive(Debug, Clone, Copy)]
pub struct ClaimRequest<'a> {
    /// Agent kinds to take missions of.
    pub kinds: &'a [String],
    /// The lease holder the start records: a worker's id, or one claim of an external agent.
    pub holder: &'a str,
    /// How long the start's lease lasts.
    pub lease_ms: u64,
    /// How long a popped mission is reserved for its start.
    pub claim_ms: u64,
    /// The last moment the claimer could still use a started mission (a worker: well before
    /// its lease runs out; an HTTP claim: before its request's deadline). A start whose
    /// outcome is unknown is asked about until then, and given back after.
    pub answer_by: Instant,
}

/// The handles a claim works with.
#[derive(Clone, Copy)]
pub struct Claimer<'a> {
    pub store: &'a EventStore,
    pub queue: &'a Queue,
    /// The database's clock, on which leases are granted and judged.
    pub clock: &'a LeaseClock,
}

/// A mission started under a lease for the claimer.
#[derive(Debug)]
pub struct Started {
    pub mission_id: String,
    pub stream_id: StreamId,
    /// The agent kind it was queued for.
    pub agent: String,
    pub mission: Mission,
    pub spec: MissionSpec,
    /// The stream's version after the start.
    pub version: u64,
    /// When the lease runs out on this process's monotonic clock: counted from before the
    /// start was sent, so never later than the expiry the log recorded.
    pub lease_until: Instant,
}

/// Most missions one [`Claimer::claim_and_start_many`] pops and starts: a worker's free
/// slots beyond it are filled by its next claim. It bounds the queue script's work, the
/// load query and the group of starts that waits on the slowest of them.
pub const CLAIM_BATCH_MAX: usize = 16;

/// What a batch claim came to, beside the missions it handed over.
#[derive(Debug, Default)]
pub struct Batch {
    /// Missions popped from the queue.
    pub popped: usize,
    /// Missions started and handed over.
    pub started: usize,
    /// Popped, but the log would not start them: the queue was ahead of or behind it.
    pub stale: usize,
    /// Popped, but their start failed or its outcome stayed unknown; none is lost.
    pub failed: Vec<ClaimError>,
}

/// How a claim ended, short of an error.
#[derive(Debug)]
pub enum Claimed<D> {
    /// Nothing ready of the kinds asked for.
    Empty,
    /// A mission was popped but the log would not start it: the queue was ahead of or
    /// behind the log. The next claim takes the next mission.
    Stale,
    /// The caller's check between pop and start said no. The mission was not touched; it
    /// comes back when the claim runs out.
    Declined(D),
    Started(Box<Started>),
}

#[derive(Debug, thiserror::Error)]
pub enum ClaimError {
    #[error("queue: {0}")]
    Queue(#[from] QueueError),
    /// The missions of a batch could not be read: none was started, and each claim's expiry
    /// brings its mission back.
    #[error("cannot load {missions} claimed missions: {error}")]
    Load { missions: usize, error: CommandError<MissionError> },
    /// The start failed or its outcome stayed unknown; the mission is not lost either way.
    #[error("cannot start mission {mission_id}: {error}")]
    Start { mission_id: String, error: CommandError<MissionError> },
}

impl Claimer<'_> {
    /// Pops the best mission of `request.kinds`, lets `admit` check the caller still wants
    /// one, and starts it with a lease for `request.holder`. `metadata` gives the start's
    /// metadata for the mission popped; the start gets a command id of its own.
    pub async fn claim_and_start<D>(
        &self,
        request: &ClaimRequest<'_>,
        metadata: impl FnOnce(&StreamId) -> EventMetadata,
        admit: impl AsyncFnOnce(&Claim) -> Result<(), D>,
    ) -> Result<Claimed<D>, ClaimError> {
        let now_ms = self.clock.now_ms_synced().await;
        let Some(claim) =
            self.queue.claim(request.kinds, request.holder, now_ms, request.claim_ms).await?
        else {
            return Ok(Claimed::Empty);
        };
        let Ok(stream_id) = StreamId::parse(&claim.mission_id) else {
            // Nothing in the log can start it; the claim would only bring it back.
            tracing::error!(claim.mission_id, "queue holds a mission id that is not a stream id");
            self.release(&[&claim.mission_id]).await;
            return Ok(Claimed::Stale);
        };
        if let Err(declined) = admit(&claim).await {
            return Ok(Claimed::Declined(declined));
        }
        let mut metadata = metadata(&stream_id);
        metadata.command_id = Some(Uuid::now_v7());
        let start = Start { stream_id: &stream_id, request, metadata };
        let command = self.start_command(request).await;
        let sent = Instant::now();
        let outcome = self.send(&start, &command, None).await;
        let (mission, version, lease_until) = match self
            .settle(&start, &command, outcome, sent)
            .await
        {
            Ok(Some(held)) => held,
            Ok(None) => return Ok(Claimed::Stale),
            Err(error) => return Err(ClaimError::Start { mission_id: claim.mission_id, error }),
        };
        self.release(&[&claim.mission_id]).await;
        match started(claim, stream_id, mission, version, lease_until) {
            Some(started) => Ok(Claimed::Started(Box::new(started))),
            None => Ok(Claimed::Stale),
        }
    }

    /// Pops up to `max` (at most [`CLAIM_BATCH_MAX`]) of the best missions of
    /// `request.kinds` in one queue call, loads them all in one query, and starts each with
    /// a lease for `request.holder`, the starts sent together so that the group committer
    /// takes them in one transaction. Each mission started is given to `take` as soon as it
    /// is: first those whose start was answered, then, one by one, those whose outcome was
    /// unknown and became known by asking again. Every mission of the batch gets what
    /// [`Claimer::claim_and_start`] gives its one (see the module doc); one the log will not
    /// start leaves the others unaffected. `popped` is told how many were popped as soon as
    /// the queue answers, before any is started: what the claimer asked for beyond that is
    /// free again.
    pub async fn claim_and_start_many(
        &self,
        request: &ClaimRequest<'_>,
        max: usize,
        metadata: impl Fn(&StreamId) -> EventMetadata,
        popped: impl FnOnce(usize),
        mut take: impl FnMut(Started),
    ) -> Result<Batch, ClaimError> {
        let max = max.min(CLAIM_BATCH_MAX);
        let now_ms = self.clock.now_ms_synced().await;
        let (kinds, holder) = (request.kinds, request.holder);
        let claims = self.queue.claim_many(kinds, holder, now_ms, request.claim_ms, max).await?;
        popped(claims.len());
        let mut batch = Batch { popped: claims.len(), ..Batch::default() };
        let mut claimed = Vec::with_capacity(claims.len());
        let mut unusable = Vec::new();
        for claim in claims {
            match StreamId::parse(&claim.mission_id) {
                Ok(stream_id) => claimed.push((claim, stream_id)),
                Err(_) => {
                    tracing::error!(
                        claim.mission_id,
                        "queue holds a mission id that is not a stream id"
                    );
                    unusable.push(claim.mission_id);
                }
            }
        }
        batch.stale += unusable.len();
        self.release(&unusable).await;
        if claimed.is_empty() {
            return Ok(batch);
        }
        let (claimed, stream_ids): (Vec<Claim>, Vec<StreamId>) = claimed.into_iter().unzip();
        // Nothing is written if this fails: each claim's expiry brings its mission back.
        let known = command::load_many::<Mission>(self.store, &stream_ids)
            .await
            .map_err(|error| ClaimError::Load { missions: stream_ids.len(), error })?;
        let starts: Vec<Start> = stream_ids
            .iter()
            .map(|stream_id| {
                let mut metadata = metadata(stream_id);
                metadata.command_id = Some(Uuid::now_v7());
                Start { stream_id, request, metadata }
            })
            .collect();
        let command = self.start_command(request).await;
        let sent = Instant::now();
        let sending = starts.iter().zip(known).map(|(start, known)| {
            let command = &command;
            async move { self.send(start, command, Some(known)).await }
        });
        let outcomes = futures::future::join_all(sending).await;

        // Answered starts first: their claims end in one call and their missions go out.
        let mut answered = Vec::new();
        let mut unknown = Vec::new();
        for ((claim, outcome), start) in claimed.into_iter().zip(outcomes).zip(&starts) {
            if matches!(outcome, Err(CommandError::Append(AppendError::OutcomeUnknown(_)))) {
                unknown.push((claim, start, outcome));
                continue;
            }
            match self.settle(start, &command, outcome, sent).await {
                Ok(Some(held)) => answered.push((claim, start.stream_id.clone(), held)),
                Ok(None) => batch.stale += 1,
                Err(error) => {
                    let mission_id = claim.mission_id;
                    batch.failed.push(ClaimError::Start { mission_id, error });
                }
            }
        }
        let ids: Vec<&str> = answered.iter().map(|(claim, ..)| claim.mission_id.as_str()).collect();
        self.release(&ids).await;
        for (claim, stream_id, (mission, version, lease_until)) in answered {
            match started(claim, stream_id, mission, version, lease_until) {
                Some(started) => {
                    batch.started += 1;
                    take(started);
                }
                None => batch.stale += 1,
            }
        }

        // Then each unknown one, asked about again until the claimer could no longer use it.
        let mut asking: futures::stream::FuturesUnordered<_> = unknown
            .into_iter()
            .map(|(claim, start, outcome)| {
                let command = &command;
                async move { (claim, start, self.settle(start, command, outcome, sent).await) }
            })
            .collect();
        while let Some((claim, start, settled)) = asking.next().await {
            match settled {
                Ok(Some((mission, version, lease_until))) => {
                    self.release(&[&claim.mission_id]).await;
                    let stream_id = start.stream_id.clone();
                    match started(claim, stream_id, mission, version, lease_until) {
                        Some(started) => {
                            batch.started += 1;
                            take(started);
                        }
                        None => batch.stale += 1,
                    }
                }
                Ok(None) => batch.stale += 1,
                Err(error) => {
                    let mission_id = claim.mission_id;
                    batch.failed.push(ClaimError::Start { mission_id, error });
                }
            }
        }
        Ok(batch)
    }

    /// The start every mission of one claim gets, on the database's clock.
    async fn start_command(&self, request: &ClaimRequest<'_>) -> MissionCommand {
        MissionCommand::Start {
            worker_id: request.holder.to_owned(),
            lease_ms: request.lease_ms,
            now_ms: self.clock.now_ms_synced().await,
        }
    }

    /// Sends a start once: decided against `known` (the mission as just loaded) or, without
    /// it, against the stream loaded now; a conflict loads and decides again.
    async fn send(
        &self,
        start: &Start<'_>,
        command: &MissionCommand,
        known: Option<(Mission, u64)>,
    ) -> Result<Executed<Mission>, CommandError<MissionError>> {
        let (store, stream_id, metadata) = (self.store, start.stream_id, start.metadata.clone());
        command::execute_new::<Mission>(store, stream_id, metadata, known, || command.clone()).await
    }

    /// Decides what a start sent at `sent` came to: while its outcome is unknown and the
    /// claimer could still use the mission, asks again under the same command id. `None`
    /// when the log would not start the mission.
    async fn settle(
        &self,
        start: &Start<'_>,
        command: &MissionCommand,
        outcome: Result<Executed<Mission>, CommandError<MissionError>>,
        sent: Instant,
    ) -> Result<Option<(Mission, u64, Instant)>, CommandError<MissionError>> {
        let lease_until = sent + Duration::from_millis(start.request.lease_ms);
        let (store, stream_id, metadata) = (self.store, start.stream_id, &start.metadata);
        let mut outcome = outcome;
        let mut asked = false;
        while let Err(CommandError::Append(AppendError::OutcomeUnknown(_))) = &outcome
            && (!asked || Instant::now() + ASK_AGAIN_PAUSE < start.request.answer_by)
        {
            asked = true;
            tokio::time::sleep(ASK_AGAIN_PAUSE).await;
            match command::execute::<Mission>(store, stream_id, metadata.clone(), || {
                command.clone()
            })
            .await
            {
                // A failure of the repeat says nothing of the first: still unknown.
                Err(CommandError::Append(_) | CommandError::Store(_)) => {}
                answered => outcome = answered,
            }
        }
        match outcome {
            Ok(executed) if held_since_start(&executed, start.request.holder) => {
                Ok(Some((executed.state, executed.version, lease_until)))
            }
            Ok(_) => {
                tracing::debug!(%stream_id, "started, but the mission moved on since");
                Ok(None)
            }
            Err(CommandError::Rejected(reason)) => {
                tracing::debug!(%stream_id, %reason, "claimed mission not startable");
                Ok(None)
            }
            Err(CommandError::Contended(error)) => {
                tracing::debug!(%stream_id, %error, "claimed mission kept changing");
                Ok(None)
            }
            Err(error @ CommandError::Append(AppendError::OutcomeUnknown(_))) => {
                self.give_back(start).await;
                Err(error)
            }
            Err(error) => Err(error),
        }
    }

    /// Puts back a mission whose start stayed unknown, if the log shows that start: running
    /// for this holder, which nobody will run now. A `Release` does not count the attempt.
    /// Best effort: if it fails too, the lease's expiry puts the mission back.
    async fn give_back(&self, start: &Start<'_>) {
        let (store, stream_id, holder) = (self.store, start.stream_id, start.request.holder);
        let held = match command::load::<Mission>(store, stream_id).await {
            Ok((mission, _)) => mission,
            Err(error) => {
                tracing::warn!(%stream_id, %error, "cannot read a mission whose start is unknown");
                return;
            }
        };
        if held.status != MissionStatus::Running || held.worker_id.as_deref() != Some(holder) {
            return;
        }
        let mut metadata = start.metadata.clone();
        metadata.command_id = Some(Uuid::now_v7());
        let now_ms = self.clock.now_ms_synced().await;
        let release = || MissionCommand::Release {
            worker_id: holder.to_owned(),
            attempt: held.attempt,
            reason: "its start's outcome stayed unknown past what the claimer could use".into(),
            now_ms,
        };
        match command::execute_new::<Mission>(store, stream_id, metadata, None, release).await {
            Ok(_) => tracing::info!(%stream_id, "gave back a mission whose start stayed unknown"),
            Err(error) => tracing::warn!(%stream_id, %error, "cannot give back a mission"),
        }
    }

    /// Ends claims whose missions the lease holds now (or that nothing could start), in one
    /// call.
    async fn release(&self, mission_ids: &[impl AsRef<str>]) {
        if let Err(error) = self.queue.release_many(mission_ids).await {
            // Harmless: its expiry finds each mission running and leaves it.
            let missions: Vec<&str> = mission_ids.iter().map(AsRef::as_ref).collect();
            tracing::warn!(?missions, %error, "cannot release claims");
        }
    }
}

/// One start as [`Claimer::send`] sends it.
struct Start<'a> {
    stream_id: &'a StreamId,
    request: &'a ClaimRequest<'a>,
    metadata: EventMetadata,
}

/// The mission started for `claim`, with its spec; `None` (not startable) for one without,
/// which cannot happen: a start is decided only for an enqueued mission, which has its spec.
fn started(
    claim: Claim,
    stream_id: StreamId,
    mission: Mission,
    version: u64,
    lease_until: Instant,
) -> Option<Started> {
    let Some(spec) = mission.spec.clone() else {
        tracing::error!(claim.mission_id, "a started mission has no spec");
        return None;
    };
    let Claim { mission_id, agent } = claim;
    Some(Started { mission_id, stream_id, agent, mission, spec, version, lease_until })
}

/// Whether the mission is still as the start left it: running for `holder`, nothing
/// recorded since. A start learnt of by asking again comes with the mission as it is now,
/// which may have moved on (cancelled, or its lease expired and another start taken it).
fn held_since_start(executed: &Executed<Mission>, holder: &str) -> bool {
    let mission = &executed.state;
    let unchanged = executed
        .appended
        .as_ref()
        .is_none_or(|appended| !appended.duplicate || appended.last_version == executed.version);
    unchanged
        && mission.status == MissionStatus::Running
        && mission.worker_id.as_deref() == Some(holder)
}
