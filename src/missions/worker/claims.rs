//! The worker's claim loop: it fills the free slots with batch claims, several in flight
//! at once, and waits when the queue runs dry until this process's queue projector makes a
//! mission ready (or `idle_poll`). Decision 0044 says why it is shaped so.

use std::time::{Duration, Instant};

use domain::StreamId;
use tokio_util::sync::CancellationToken;

use super::Slot;
use crate::missions::claim::{CLAIM_BATCH_MAX, ClaimRequest, Claimer, Started};

/// Claim batches a worker has in flight at once: while one waits for its starts to commit,
/// the next pops. A single batch at a time would cap a worker at one batch per commit.
pub const CLAIMS_IN_FLIGHT_MAX: usize = 16;

/// How a claim ended, as far as the claim loop cares.
#[derive(Debug, Clone, Copy)]
enum Ran {
    /// The queue had fewer missions than the claim asked for.
    Idle,
    /// Every slot asked for was filled: there may be more.
    Worked,
    Trouble,
}

/// What a claim in flight tells the claim loop.
enum FromClaim {
    /// The queue had this many fewer missions than the claim asked for.
    Unpopped(usize),
    Started(Box<Started>),
}

/// Why the claim loop holds back its next claim.
#[derive(Debug, Clone, Copy)]
enum Pause {
    /// The queue ran dry after `mark` (a [`crate::missions::queue::Readiness`] mark): until a
    /// mission is made ready here, or `idle_poll`.
    Dry(u64),
    /// No agent here takes missions now: `idle_poll`.
    NoAgent,
    /// A claim failed: a second.
    Trouble,
}

impl Slot {
    /// Claims for the free slots until `shutdown`: batches of at most [`CLAIM_BATCH_MAX`],
    /// up to [`CLAIMS_IN_FLIGHT_MAX`] of them at once, each mission started going to a task
    /// of its own in `running`. With every slot busy or asked for, it waits for one to free;
    /// with the queue dry, until a mission is made ready or `idle_poll`. Nothing is claimed
    /// once `shutdown` is cancelled; the claims then in flight are seen to their end, and
    /// what they started runs (and is handed back at the drain time, as any running mission).
    pub(super) async fn claim_loop(
        &self,
        running: &mut tokio::task::JoinSet<()>,
        shutdown: &CancellationToken,
    ) {
        let concurrency = self.config.concurrency.max(1);
        let readiness = self.queue.readiness();
        // Each mission in the channel holds a slot its claim asked for (at most
        // `concurrency`), and each claim sends at most one note of what it did not pop.
        let (started_tx, mut started_rx) =
            tokio::sync::mpsc::channel::<FromClaim>(concurrency + CLAIMS_IN_FLIGHT_MAX);
        let mut claims = tokio::task::JoinSet::new();
        // Slots asked for by claims in flight and not yet running, and by each claim.
        let mut reserved: usize = 0;
        let mut asked_by = std::collections::HashMap::new();
        let mut pause = None;
        loop {
            while let Some(ended) = running.try_join_next() {
                if let Err(error) = ended {
                    tracing::error!(%error, "a mission's run ended abnormally");
                }
            }
            let stopping = shutdown.is_cancelled();
            let free = concurrency.saturating_sub(running.len() + reserved);
            if !stopping && pause.is_none() && free > 0 && claims.len() < CLAIMS_IN_FLIGHT_MAX {
                // A stopped agent, or one waiting out its restart backoff, takes nothing.
                let kinds = self.config.agents.available_kinds();
                if kinds.is_empty() {
                    pause = Some(Pause::NoAgent);
                    continue;
                }
                let asked = free.min(CLAIM_BATCH_MAX);
                reserved += asked;
                // Marked before the claim: a mission made ready while it runs ends the pause.
                let mark = readiness.mark();
                let claim = self.clone().claim(kinds, asked, started_tx.clone());
                let handle = claims.spawn(async move { (mark, claim.await) });
                asked_by.insert(handle.id(), asked);
                continue;
            }
            if stopping && claims.is_empty() {
                while let Ok(from_claim) = started_rx.try_recv() {
                    if let FromClaim::Started(started) = from_claim {
                        running.spawn(self.clone().run(*started, shutdown.clone()));
                    }
                }
                return;
            }
            let paused = async {
                match pause {
                    Some(Pause::Dry(mark)) => {
                        readiness.wait_since(mark, self.config.idle_poll).await;
                    }
                    Some(Pause::NoAgent) => tokio::time::sleep(self.config.idle_poll).await,
                    Some(Pause::Trouble) => tokio::time::sleep(Duration::from_secs(1)).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = shutdown.cancelled(), if !stopping => {}
                Some(from_claim) = started_rx.recv() => match from_claim {
                    // What the queue did not have is free for the next claim at once, not
                    // when this claim's starts have committed.
                    FromClaim::Unpopped(slots) => reserved = reserved.saturating_sub(slots),
                    FromClaim::Started(started) => {
                        reserved = reserved.saturating_sub(1);
                        running.spawn(self.clone().run(*started, shutdown.clone()));
                    }
                },
                Some(ended) = claims.join_next_with_id() => {
                    let (id, (mark, (ran, popped, started))) = match ended {
                        Ok(ended) => ended,
                        Err(error) => {
                            // What it started (if anything) is in the channel; its lease
                            // brings back any it could not send.
                            tracing::error!(%error, "a claim ended abnormally");
                            let asked = asked_by.remove(&error.id()).unwrap_or(0);
                            reserved = reserved.saturating_sub(asked);
                            pause = Some(Pause::Trouble);
                            continue;
                        }
                    };
                    let asked = asked_by.remove(&id).unwrap_or(0);
                    // What it did not pop was noted in the channel (unless the queue failed
                    // it), and so were the missions it started: the rest, popped but not
                    // started, are free now.
                    reserved = reserved.saturating_sub(match popped {
                        Some(popped) => popped.saturating_sub(started),
                        None => asked,
                    });
                    pause = match ran {
                        Ran::Worked => None,
                        Ran::Idle => Some(Pause::Dry(mark)),
                        Ran::Trouble => Some(Pause::Trouble),
                    };
                }
                _ = wait_for_one(running) => {}
                _ = paused, if pause.is_some() => pause = None,
            }
        }
    }

    /// Claims and starts up to `max` missions in one batch, telling the claim loop how many
    /// the queue did not have and sending it each one started; answers how it went, how
    /// many were popped (`None`: the queue failed) and how many were sent.
    async fn claim(
        self,
        kinds: Vec<String>,
        max: usize,
        started_tx: tokio::sync::mpsc::Sender<FromClaim>,
    ) -> (Ran, Option<usize>, usize) {
        let request = ClaimRequest {
            kinds: &kinds,
            holder: &self.config.worker_id,
            lease_ms: self.config.lease_ms,
            claim_ms: self.config.claim_ms,
            // A start learnt of later than this leaves too little of its lease to run in.
            answer_by: Instant::now() + Duration::from_millis(self.config.lease_ms * 2 / 3),
        };
        let claimer = Claimer { store: &self.store, queue: &self.queue, clock: &self.clock };
        let (mut sent, mut popped) = (0, None);
        let note_popped = |count: usize| {
            popped = Some(count);
            if count < max {
                // Room is kept for it: one note per claim in flight.
                let _ = started_tx.try_send(FromClaim::Unpopped(max - count));
            }
        };
        let take = |started: Started| {
            // Room is kept for it: the channel holds as many as the worker has slots.
            match started_tx.try_send(FromClaim::Started(Box::new(started))) {
                Ok(()) => sent += 1,
                // Only if the loop is gone: the mission's lease runs out and it comes back.
                Err(error) => tracing::error!(%error, "a started mission has no slot to run in"),
            }
        };
        let metadata = |id: &StreamId| self.metadata(id);
        let claimed = claimer.claim_and_start_many(&request, max, metadata, note_popped, take);
        let ran = match claimed.await {
            Ok(batch) => {
                for error in &batch.failed {
                    tracing::warn!(%error, "cannot start a claimed mission");
                }
                if batch.started == 0 && !batch.failed.is_empty() {
                    Ran::Trouble
                } else if batch.popped < max {
                    Ran::Idle
                } else {
                    Ran::Worked
                }
            }
            Err(error) => {
                tracing::warn!(%error, "cannot claim missions");
                Ran::Trouble
            }
        };
        (ran, popped, sent)
    }
}

/// Resolves when one of `running`'s tasks has ended, leaving it to be reaped; never while
/// none runs.
async fn wait_for_one(running: &mut tokio::task::JoinSet<()>) {
    match running.join_next().await {
        Some(Err(error)) => tracing::error!(%error, "a mission's run ended abnormally"),
        Some(Ok(())) => {}
        None => std::future::pending().await,
    }
}
