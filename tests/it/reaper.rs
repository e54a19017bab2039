//! The lease reaper on its own, against the real PostgreSQL and Redis but without a serve:
//! each test builds the reaper and a bundle of what it needs (`setup`), brings the queue
//! projection up to the log with one `catch_up`, and steps the reaper with `sweep_once` at
//! chosen times, so every expiry is judged on either side of its exact moment and nothing
//! waits for an interval.

use brain::backoff::Backoff;
use brain::eventlog::command;
use brain::eventlog::projector::Feeder;
use brain::eventlog::store::EventStore;
use brain::missions::queue::{Queue, QueueStore};
use brain::missions::reaper::{LeaseReaper, ReaperConfig};
use domain::mission::{Mission, MissionCommand, MissionSpec, Priority};
use domain::{EventMetadata, RecordedEvent, StreamId};
use projections::ProjectionStore;
use projections::mission_queue::{MissionQueue, QueueChange, Scoring};
use serde_json::json;
use tokio::task::JoinHandle;
use uuid::Uuid;

use crate::support::{TestEnv, redis_url};

/// A fixed time to start from: the reaper is only ever told the time.
pub const T0_MS: i64 = 1_800_000_000_000;
pub const KIND: &str = "reaped";

/// What a reaper test needs beside the reaper.
pub struct Bundle {
    pub env: TestEnv,
    pub missions: Missions,
    pub queue: Queue,
    feeder: Feeder<MissionQueue, QueueStore>,
    _committer: JoinHandle<()>,
}

impl Bundle {
    /// Brings the queue projection up to the log's head.
    pub async fn catch_up(&mut self) {
        self.feeder.catch_up().await.expect("project the queue");
    }
}

/// Mission commands at chosen times, and what the log then holds.
pub struct Missions {
    pub store: EventStore,
}

impl Missions {
    pub async fn command(&self, id: &str, command: MissionCommand) {
        let stream_id = StreamId::parse(id).unwrap();
        let metadata = EventMetadata::new("test", time::OffsetDateTime::now_utc());
        command::execute::<Mission>(&self.store, &stream_id, metadata, || command.clone())
            .await
            .unwrap_or_else(|error| panic!("{command:?}: {error}"));
    }

    pub async fn enqueue(&self, now_ms: i64) -> String {
        let id = StreamId::from(Uuid::now_v7()).to_string();
        self.command(&id, MissionCommand::Enqueue { spec: spec(KIND), now_ms }).await;
        id
    }

    /// Enqueues a mission and starts it for `worker` with a lease of `lease_ms`, at `now_ms`.
    pub async fn running(&self, worker: &str, lease_ms: u64, now_ms: i64) -> String {
        let id = self.enqueue(now_ms).await;
        let start = MissionCommand::Start { worker_id: worker.into(), lease_ms, now_ms };
        self.command(&id, start).await;
        id
    }

    pub async fn events(&self, id: &str) -> Vec<RecordedEvent> {
        let stream_id = StreamId::parse(id).unwrap();
        command::load_with_events::<Mission>(&self.store, &stream_id).await.unwrap().1
    }

    pub async fn event_types(&self, id: &str) -> Vec<String> {
        self.events(id).await.into_iter().map(|event| event.event_type).collect()
    }
}

pub fn spec(agent: &str) -> MissionSpec {
    MissionSpec {
        name: "reaped".into(),
        description: String::new(),
        priority: Priority::Normal,
        payload: json!({}),
        agent: agent.into(),
        attempt_max: 3,
        timeout_ms: 60_000,
        not_before_ms: None,
        budget: None,
        parent: None,
        forked_from: None,
        copied_from: None,
    }
}

async fn setup(batch_max: isize) -> (LeaseReaper, Bundle) {
    let env = TestEnv::new().await;
    let (store, committer) = env.store();
    let client = redis::Client::open(redis_url()).unwrap();
    let queue = Queue::connect(&client, &env.namespace).await.expect("connect to Redis");
    let scoring = Scoring { weights: [0, 1, 2, 4], aging_ms: 60_000 };
    let feeder = Feeder::new(MissionQueue { scoring }, queue.store(None), env.pool.clone(), 100)
        .await
        .expect("queue feeder");
    let config = ReaperConfig {
        backoff: Backoff { base_ms: 1_000, max_ms: 1_000 },
        batch_max,
        ..ReaperConfig::default()
    };
    let reaper = LeaseReaper {
        store: store.clone(),
        queue: queue.clone(),
        pool: env.pool.clone(),
        namespace: env.namespace.clone(),
        config,
    };
    let missions = Missions { store };
    (reaper, Bundle { env, missions, queue, feeder, _committer: committer })
}

#[tokio::test]
async fn a_lease_that_ran_out_is_expired_at_its_expiry_and_not_a_millisecond_before() {
    // Given a mission running under a one-second lease.
    let (reaper, mut bundle) = setup(1_000).await;
    let id = bundle.missions.running("w1", 1_000, T0_MS).await;
    bundle.catch_up().await;

    // When the reaper sweeps a millisecond before the expiry, nothing moves.
    assert_eq!(reaper.sweep_once(T0_MS + 999).await.unwrap(), 0);
    assert_eq!(bundle.missions.event_types(&id).await, ["MissionEnqueued", "MissionStarted"]);

    // At the expiry, the lease is expired through an event, and the mission goes back.
    assert_eq!(reaper.sweep_once(T0_MS + 1_000).await.unwrap(), 1);
    let types = bundle.missions.event_types(&id).await;
    assert_eq!(types, ["MissionEnqueued", "MissionStarted", "MissionLeaseExpired"]);

    // The projection still shows the lease (it is behind): the log refuses a second expiry.
    assert_eq!(reaper.sweep_once(T0_MS + 1_001).await.unwrap(), 0);
    bundle.catch_up().await;
    assert_eq!(reaper.sweep_once(T0_MS + 1_002).await.unwrap(), 0);
    assert_eq!(bundle.missions.event_types(&id).await.len(), 3, "expired once");
}

#[tokio::test]
async fn a_pending_mission_is_marked_due_when_its_retry_time_comes() {
    // Given a mission whose first attempt failed, to be retried five seconds later.
    let (reaper, mut bundle) = setup(1_000).await;
    let id = bundle.missions.running("w1", 30_000, T0_MS).await;
    let fail = MissionCommand::Fail {
        worker_id: "w1".into(),
        attempt: 1,
        error: "try again".into(),
        retryable: true,
        backoff_ms: 5_000,
        now_ms: T0_MS + 10,
    };
    bundle.missions.command(&id, fail).await;
    bundle.catch_up().await;

    // Before its retry time, the reaper leaves it pending.
    assert_eq!(reaper.sweep_once(T0_MS + 5_009).await.unwrap(), 0);
    assert_eq!(bundle.missions.event_types(&id).await.last().unwrap(), "MissionAttemptFailed");

    // At its retry time, it is marked due.
    assert_eq!(reaper.sweep_once(T0_MS + 5_010).await.unwrap(), 1);
    assert_eq!(bundle.missions.event_types(&id).await.last().unwrap(), "MissionRetryDue");
}

#[tokio::test]
async fn a_claim_never_started_is_put_back_once_it_expires() {
    // Given a queued mission popped by a claimer that never starts it.
    let (reaper, mut bundle) = setup(1_000).await;
    let id = bundle.missions.enqueue(T0_MS).await;
    bundle.catch_up().await;
    let kinds = [KIND.to_owned()];
    let claim = bundle.queue.claim(&kinds, "gone", T0_MS, 500).await.unwrap();
    assert_eq!(claim.map(|claim| claim.mission_id), Some(id.clone()));
    assert_eq!(bundle.queue.claim(&kinds, "other", T0_MS, 500).await.unwrap(), None);

    // Before the claim expires, the reaper leaves it claimed.
    reaper.sweep_once(T0_MS + 499).await.unwrap();
    assert_eq!(bundle.queue.claim(&kinds, "other", T0_MS + 499, 500).await.unwrap(), None);

    // Once it has, the mission is back in the queue for anyone, and the log never moved.
    assert_eq!(reaper.sweep_once(T0_MS + 500).await.unwrap(), 1);
    let again = bundle.queue.claim(&kinds, "other", T0_MS + 500, 500).await.unwrap();
    assert_eq!(again.map(|claim| claim.mission_id), Some(id.clone()));
    assert_eq!(bundle.missions.event_types(&id).await, ["MissionEnqueued"]);
}

#[tokio::test]
async fn expiries_are_handled_in_batches_of_batch_max() {
    // Given three leases run out, and a reaper that handles two per sweep.
    let (reaper, mut bundle) = setup(2).await;
    for _ in 0..3 {
        bundle.missions.running("w1", 1_000, T0_MS).await;
    }
    bundle.catch_up().await;

    // The first sweep expires two, the next (once the projection shows it) the third.
    assert_eq!(reaper.sweep_once(T0_MS + 1_000).await.unwrap(), 2);
    bundle.catch_up().await;
    assert_eq!(reaper.sweep_once(T0_MS + 1_000).await.unwrap(), 1);
    bundle.catch_up().await;
    assert_eq!(bundle.queue.running().await.unwrap(), 0);
}

#[tokio::test]
async fn a_lease_on_a_mission_the_log_does_not_know_is_forgotten() {
    // Given a queue that holds a running mission its log never had (Redis outlived it).
    let (reaper, mut bundle) = setup(1_000).await;
    bundle.catch_up().await;
    let ghost = StreamId::from(Uuid::now_v7()).to_string();
    let changes = vec![
        QueueChange::Enqueue {
            mission_id: ghost.clone(),
            agent: KIND.into(),
            bonus_ms: 0,
            ready_at_ms: T0_MS,
            delayed: false,
        },
        QueueChange::Lease {
            mission_id: ghost.clone(),
            worker_id: "w1".into(),
            lease_expires_at_ms: T0_MS,
        },
    ];
    let mut store = bundle.queue.store(None);
    let position = bundle.env.head().await;
    store.commit(position, position, changes).await.map_err(|_| "commit").unwrap();
    assert_eq!(bundle.queue.running().await.unwrap(), 1);

    // A sweep past its lease forgets it, so later sweeps do not trip on it again.
    assert_eq!(reaper.sweep_once(T0_MS + 1).await.unwrap(), 0);
    assert_eq!(bundle.queue.running().await.unwrap(), 0);
    assert_eq!(bundle.queue.expired_leases(T0_MS + 1, 10).await.unwrap(), Vec::<String>::new());
}
