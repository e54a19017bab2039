//! The batch claim on its own (`Claimer::claim_and_start_many`), against the real PostgreSQL
//! and Redis without a serve: the queue is fed by the test with one `catch_up`, so what each
//! batch pops is exactly what the test put there. How many times the missions were loaded is
//! read off the claimer's PostgreSQL traffic, through a proxy that counts the load statement.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use brain::clock::{LeaseClock, now_ms};
use brain::config::Namespace;
use brain::eventlog::projector::Feeder;
use brain::eventlog::store::{CommitterConfig, EventStore};
use brain::missions::claim::{Batch, ClaimRequest, Claimer, Started};
use brain::missions::queue::{Queue, QueueStore};
use domain::mission::{MissionCommand, Priority};
use domain::{EventMetadata, StreamId};
use projections::mission_queue::{MissionQueue, Scoring};
use tokio::task::JoinHandle;

use crate::reaper::{KIND, Missions, spec};
use crate::support::{CountingProxy, TestEnv, redis_url};

/// What the store's load of several streams sends (`EventStore::load_streams`).
const LOAD_MANY: &[u8] = b"FROM unnest($2::text[]) AS wanted(stream_id)";

struct Bundle {
    env: TestEnv,
    missions: Missions,
    queue: Queue,
    feeder: Feeder<MissionQueue, QueueStore>,
    clock: LeaseClock,
    _committer: JoinHandle<()>,
}

impl Bundle {
    async fn new() -> Bundle {
        let env = TestEnv::new().await;
        let (store, committer) = env.store();
        let (queue, feeder) = fed_queue(&env, &env.namespace).await;
        let clock = LeaseClock::connect(env.pool.clone()).await.expect("read the clock");
        let missions = Missions { store };
        Bundle { env, missions, queue, feeder, clock, _committer: committer }
    }

    /// Enqueues `count` missions of `priority` and shows them to the queue.
    async fn enqueue(&mut self, count: usize, priority: Priority) -> Vec<String> {
        let mut ids = Vec::new();
        for _ in 0..count {
            let id = StreamId::from(uuid::Uuid::now_v7()).to_string();
            let spec = domain::mission::MissionSpec { priority, ..spec(KIND) };
            self.missions.command(&id, MissionCommand::Enqueue { spec, now_ms: now_ms() }).await;
            ids.push(id);
        }
        self.feeder.catch_up().await.expect("project the queue");
        ids
    }

    /// An event store of its own whose PostgreSQL traffic is counted, and its proxy.
    async fn counted_store(&self) -> (EventStore, CountingProxy, JoinHandle<()>) {
        let proxy = CountingProxy::start("127.0.0.1:5432".parse().unwrap(), LOAD_MANY).await;
        let url = self.env.database_url.replace("127.0.0.1:5432", &proxy.addr.to_string());
        // No prepared statement is kept, so that each query sends its text through the proxy.
        let options: sqlx::postgres::PgConnectOptions = url.parse().unwrap();
        let pool = sqlx::PgPool::connect_with(options.statement_cache_capacity(0)).await.unwrap();
        let config = CommitterConfig::default();
        let (store, committer) = EventStore::start(pool, self.env.namespace.as_str(), config);
        (store, proxy, committer)
    }

    /// Claims up to `max` for `holder` through `queue` and `store`; the missions started, in
    /// the order they were handed over.
    async fn claim(
        &self,
        store: &EventStore,
        queue: &Queue,
        holder: &str,
        max: usize,
    ) -> (Batch, Vec<Started>) {
        let kinds = [KIND.to_owned()];
        let request = ClaimRequest {
            kinds: &kinds,
            holder,
            lease_ms: 30_000,
            claim_ms: 5_000,
            answer_by: Instant::now() + Duration::from_secs(20),
        };
        let claimer = Claimer { store, queue, clock: &self.clock };
        let metadata = |_: &StreamId| EventMetadata::new("test", time::OffsetDateTime::now_utc());
        let mut started = Vec::new();
        let take = |mission: Started| started.push(mission);
        let batch = claimer
            .claim_and_start_many(&request, max, metadata, |_| {}, take)
            .await
            .expect("the batch claim runs");
        (batch, started)
    }

    async fn starts(&self, id: &str) -> usize {
        let types = self.missions.event_types(id).await;
        types.iter().filter(|t| *t == "MissionStarted").count()
    }
}

/// A queue under `namespace`, fed from the test's database by the test alone.
async fn fed_queue(
    env: &TestEnv,
    namespace: &Namespace,
) -> (Queue, Feeder<MissionQueue, QueueStore>) {
    let client = redis::Client::open(redis_url()).unwrap();
    let queue = Queue::connect(&client, namespace).await.expect("connect to Redis");
    let scoring = Scoring { weights: [0, 1, 2, 4], aging_ms: 60_000 };
    let feeder = Feeder::new(MissionQueue { scoring }, queue.store(None), env.pool.clone(), 100)
        .await
        .expect("queue feeder");
    (queue, feeder)
}

fn ids(started: &[Started]) -> Vec<String> {
    started.iter().map(|mission| mission.mission_id.clone()).collect()
}

#[tokio::test]
async fn a_batch_claim_starts_each_queued_mission_once_with_one_load_and_ends_their_claims() {
    // Given five queued missions, and a claimer whose load statements are counted.
    let mut bundle = Bundle::new().await;
    let queued = bundle.enqueue(5, Priority::Normal).await;
    let (store, proxy, _committer) = bundle.counted_store().await;

    // When it claims up to eight at once.
    let (batch, started) = bundle.claim(&store, &bundle.queue, "w1", 8).await;

    // Then all five are started for it, in one load and at most two commits of the starts
    // (the group committer takes what is waiting; one may go ahead alone).
    assert_eq!((batch.popped, batch.started, batch.stale), (5, 5, 0), "{batch:?}");
    assert!(batch.failed.is_empty(), "{batch:?}");
    let taken: BTreeSet<String> = ids(&started).into_iter().collect();
    assert_eq!(taken, queued.iter().cloned().collect());
    assert_eq!(proxy.seen(), 1, "one load for the whole batch");
    let commits = store.committer_stats().transactions.load(std::sync::atomic::Ordering::SeqCst);
    assert!((1..=2).contains(&commits), "{commits} transactions for five starts");
    for mission in &started {
        assert_eq!(mission.mission.worker_id.as_deref(), Some("w1"));
        assert_eq!((mission.mission.attempt, mission.version), (1, 2));
        assert_eq!(bundle.starts(&mission.mission_id).await, 1);
    }

    // Every claim is over (the leases hold the missions now), and nothing is left to pop.
    let claims: usize = redis::cmd("ZCARD")
        .arg(format!("{{{}}}:q:claims", bundle.env.namespace))
        .query_async(&mut bundle.queue.connection())
        .await
        .unwrap();
    assert_eq!(claims, 0);
    let (again, none) = bundle.claim(&store, &bundle.queue, "w1", 8).await;
    assert_eq!((again.popped, none.len()), (0, 0));
    assert_eq!(proxy.seen(), 1, "an empty queue loads nothing");
}

#[tokio::test]
async fn a_batch_with_a_mission_the_log_will_not_start_starts_the_others_and_leaves_it_out() {
    // Given three queued missions, the second cancelled since the queue last saw the log.
    let mut bundle = Bundle::new().await;
    let queued = bundle.enqueue(3, Priority::Normal).await;
    let cancel =
        MissionCommand::Cancel { reason: "not needed".into(), by: "test".into(), now_ms: now_ms() };
    bundle.missions.command(&queued[1], cancel).await;

    // When one batch pops all three.
    let store = bundle.missions.store.clone();
    let (batch, started) = bundle.claim(&store, &bundle.queue, "w1", 3).await;

    // Then the other two are started, and the cancelled one is left as the log has it.
    assert_eq!((batch.popped, batch.started, batch.stale), (3, 2, 1), "{batch:?}");
    assert_eq!(ids(&started), [queued[0].clone(), queued[2].clone()]);
    assert_eq!(
        bundle.missions.event_types(&queued[1]).await,
        ["MissionEnqueued", "MissionCancelled"]
    );
    for id in [&queued[0], &queued[2]] {
        assert_eq!(bundle.starts(id).await, 1);
    }
}

#[tokio::test]
async fn two_claimers_popping_the_same_missions_at_once_never_start_one_twice() {
    // Given twenty queued missions shown by two queues, each fed from the log on its own: both
    // pop every one of them, and only the log keeps a mission to one claimer.
    let mut bundle = Bundle::new().await;
    let queued = bundle.enqueue(20, Priority::Normal).await;
    let other_namespace = Namespace::parse(&format!("{}_b", bundle.env.namespace)).unwrap();
    let (other_queue, mut other_feeder) = fed_queue(&bundle.env, &other_namespace).await;
    other_feeder.catch_up().await.expect("project the second queue");
    let (store_a, _) = bundle.env.store();
    let (store_b, _) = EventStore::start(
        bundle.env.other_pool().await,
        bundle.env.namespace.as_str(),
        CommitterConfig::default(),
    );

    // When two claimers, each with its own store, take batches through their queues at once
    // until neither finds anything.
    let claim_all = async |store: &EventStore, queue: &Queue, holder: &str| {
        let (mut started, mut stale) = (Vec::new(), 0);
        loop {
            let (batch, mut taken) = bundle.claim(store, queue, holder, 16).await;
            assert!(batch.failed.is_empty(), "{batch:?}");
            if batch.popped == 0 {
                return (started, stale);
            }
            stale += batch.stale;
            started.append(&mut taken);
        }
    };
    let ((a, stale_a), (b, stale_b)) = tokio::join!(
        claim_all(&store_a, &bundle.queue, "wa"),
        claim_all(&store_b, &other_queue, "wb")
    );

    // Then every mission is started exactly once, by one of them; the other saw it as stale.
    let (a, b): (BTreeSet<String>, BTreeSet<String>) =
        (ids(&a).into_iter().collect(), ids(&b).into_iter().collect());
    assert!(a.is_disjoint(&b), "started by both: {:?}", a.intersection(&b).collect::<Vec<_>>());
    assert_eq!(a.union(&b).cloned().collect::<BTreeSet<_>>(), queued.iter().cloned().collect());
    assert_eq!((a.len() + b.len(), stale_a + stale_b), (20, 20));
    for id in &queued {
        assert_eq!(bundle.starts(id).await, 1, "{id}");
    }
    other_queue.drop_all().await.unwrap();
}

#[tokio::test]
async fn a_batch_pops_the_best_missions_first_across_kinds_and_hands_them_over_in_that_order() {
    // Given missions of two kinds and three priorities, enqueued low first.
    let mut bundle = Bundle::new().await;
    let low = bundle.enqueue(2, Priority::Low).await;
    let normal = bundle.enqueue(2, Priority::Normal).await;
    let critical = bundle.enqueue(1, Priority::Critical).await;
    let other = StreamId::from(uuid::Uuid::now_v7()).to_string();
    let high_other = domain::mission::MissionSpec { priority: Priority::High, ..spec("other") };
    let enqueue = MissionCommand::Enqueue { spec: high_other, now_ms: now_ms() };
    bundle.missions.command(&other, enqueue).await;
    bundle.feeder.catch_up().await.unwrap();

    // When a batch of four is popped over both kinds.
    let kinds = [KIND.to_owned(), "other".to_owned()];
    let popped = bundle.queue.claim_many(&kinds, "w1", now_ms(), 5_000, 4).await.unwrap();

    // Then they come best first: the critical one, the other kind's high one, then the
    // normal ones by age; the low ones wait for the next batch.
    let order: Vec<&str> = popped.iter().map(|claim| claim.mission_id.as_str()).collect();
    assert_eq!(order, [&critical[0], &other, &normal[0], &normal[1]]);
    assert_eq!(popped[1].agent, "other");
    let rest = bundle.queue.claim_many(&kinds, "w1", now_ms(), 5_000, 4).await.unwrap();
    let order: Vec<&str> = rest.iter().map(|claim| claim.mission_id.as_str()).collect();
    assert_eq!(order, [&low[0], &low[1]]);

    // And a claimer hands its batch over in the order it was popped.
    let more = bundle.enqueue(1, Priority::Low).await;
    let most = bundle.enqueue(1, Priority::Critical).await;
    let mid = bundle.enqueue(1, Priority::Normal).await;
    let store = bundle.missions.store.clone();
    let (batch, started) = bundle.claim(&store, &bundle.queue, "w1", 16).await;
    assert_eq!(batch.started, 3, "{batch:?}");
    assert_eq!(ids(&started), [most[0].clone(), mid[0].clone(), more[0].clone()]);
}
