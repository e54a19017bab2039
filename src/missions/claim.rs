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

use std::time::{Duration, Instant};

use domain::mission::{Mission, MissionCommand, MissionError, MissionSpec, MissionStatus};
use domain::{EventMetadata, StreamId};
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
            self.release(&claim.mission_id).await;
            return Ok(Claimed::Stale);
        };
        if let Err(declined) = admit(&claim).await {
            return Ok(Claimed::Declined(declined));
        }
        let mut metadata = metadata(&stream_id);
        metadata.command_id = Some(Uuid::now_v7());
        let start = Start { stream_id: &stream_id, request, metadata };
        let (mission, version, lease_until) = match self.start(&start).await {
            Ok(Some(held)) => held,
            Ok(None) => return Ok(Claimed::Stale),
            Err(error) => return Err(ClaimError::Start { mission_id: claim.mission_id, error }),
        };
        self.release(&claim.mission_id).await;
        let Some(spec) = mission.spec.clone() else {
            // A start is decided only for an enqueued mission, which has its spec.
            tracing::error!(claim.mission_id, "a started mission has no spec");
            return Ok(Claimed::Stale);
        };
        let Claim { mission_id, agent } = claim;
        let started = Started { mission_id, stream_id, agent, mission, spec, version, lease_until };
        Ok(Claimed::Started(Box::new(started)))
    }

    /// Sends the start and, while its outcome is unknown and the claim lasts, asks again
    /// under the same command id. `None` when the log would not start the mission.
    async fn start(
        &self,
        start: &Start<'_>,
    ) -> Result<Option<(Mission, u64, Instant)>, CommandError<MissionError>> {
        let command = MissionCommand::Start {
            worker_id: start.request.holder.to_owned(),
            lease_ms: start.request.lease_ms,
            now_ms: self.clock.now_ms_synced().await,
        };
        let sent = Instant::now();
        let lease_until = sent + Duration::from_millis(start.request.lease_ms);
        let (store, stream_id, metadata) = (self.store, start.stream_id, &start.metadata);
        let mut outcome =
            command::execute_new::<Mission>(store, stream_id, metadata.clone(), None, || {
                command.clone()
            })
            .await;
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

    /// Ends a claim whose mission the lease holds now (or that nothing could start).
    async fn release(&self, mission_id: &str) {
        if let Err(error) = self.queue.release(mission_id).await {
            // Harmless: its expiry finds the mission running and leaves it.
            tracing::warn!(mission_id, %error, "cannot release a claim");
        }
    }
}

/// One start as [`Claimer::start`] sends it.
struct Start<'a> {
    stream_id: &'a StreamId,
    request: &'a ClaimRequest<'a>,
    metadata: EventMetadata,
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
