//! A worker on its own, through its public API (`worker::run`), against the real PostgreSQL
//! and Redis but without a serve: `setup` starts a worker over an agent that holds every
//! attempt until the test lets it go, so what the slots and the lease renewals do is read off
//! the agent's counters and the log, not timed.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use brain::clock::now_ms;
use brain::eventlog::projector::Feeder;
use brain::missions::agent::{Agent, Agents, Failure, Outcome, Task};
use brain::missions::queue::{Queue, QueueStore};
use brain::missions::worker::{self, WorkerConfig};
use domain::mission::MissionCommand;
use futures::future::BoxFuture;
use projections::mission_queue::{MissionQueue, Scoring};
use serde_json::json;
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::reaper::{KIND, Missions};
use crate::support::{TestEnv, redis_url, wait_until};

const WAIT: Duration = Duration::from_secs(20);

/// What the held agent has seen: attempts begun, running now, most at once, and ended
/// (finished or dropped by the worker).
#[derive(Default)]
struct Counters {
    started: AtomicUsize,
    running: AtomicUsize,
    most: AtomicUsize,
    ended: AtomicUsize,
}

/// An agent that holds each attempt until a permit is given, then answers.
struct Held {
    counters: Arc<Counters>,
    release: Arc<Semaphore>,
}

/// Counts an attempt as running while it lives, so a dropped attempt is counted too.
struct Running(Arc<Counters>);

impl Drop for Running {
    fn drop(&mut self) {
        self.0.running.fetch_sub(1, Ordering::SeqCst);
        self.0.ended.fetch_add(1, Ordering::SeqCst);
    }
}

impl Agent for Held {
    fn run(&self, task: Task) -> BoxFuture<'static, Result<Outcome, Failure>> {
        let (counters, release) = (self.counters.clone(), self.release.clone());
        Box::pin(async move {
            counters.started.fetch_add(1, Ordering::SeqCst);
            let now = counters.running.fetch_add(1, Ordering::SeqCst) + 1;
            counters.most.fetch_max(now, Ordering::SeqCst);
            let _running = Running(counters);
            release.acquire().await.expect("the semaphore stays open").forget();
            Ok(Outcome::Done(json!({ "mission": task.mission_id })))
        })
    }
}

struct Bundle {
    _env: TestEnv,
    missions: Missions,
    counters: Arc<Counters>,
    release: Arc<Semaphore>,
    feeder: Feeder<MissionQueue, QueueStore>,
    shutdown: CancellationToken,
    _committer: JoinHandle<()>,
}

impl Bundle {
    /// Enqueues `count` missions and shows them to the worker's queue.
    async fn enqueue(&mut self, count: usize) -> Vec<String> {
        let mut ids = Vec::new();
        for _ in 0..count {
            ids.push(self.missions.enqueue(now_ms()).await);
        }
        self.feeder.catch_up().await.expect("project the queue");
        ids
    }

    async fn wait_for(&self, what: &str, counter: fn(&Counters) -> &AtomicUsize, value: usize) {
        wait_until(what, WAIT, || async {
            counter(&self.counters).load(Ordering::SeqCst) == value
        })
        .await;
    }

    async fn wait_for_event(&self, id: &str, event_type: &str) {
        wait_until(event_type, WAIT, || async {
            self.missions.event_types(id).await.iter().any(|t| t == event_type)
        })
        .await;
    }
}

/// A worker of `concurrency` slots holding leases of `lease_ms`, and its bundle.
async fn setup(concurrency: usize, lease_ms: u64) -> (JoinHandle<()>, Bundle) {
    setup_polling(concurrency, lease_ms, Duration::from_millis(10)).await
}

/// As [`setup`], with the worker looking again after `idle_poll` when it found nothing.
async fn setup_polling(
    concurrency: usize,
    lease_ms: u64,
    idle_poll: Duration,
) -> (JoinHandle<()>, Bundle) {
    let env = TestEnv::new().await;
    let (store, committer) = env.store();
    let client = redis::Client::open(redis_url()).unwrap();
    let queue = Queue::connect(&client, &env.namespace).await.expect("connect to Redis");
    let scoring = Scoring { weights: [0, 1, 2, 4], aging_ms: 60_000 };
    let feeder = Feeder::new(MissionQueue { scoring }, queue.store(None), env.pool.clone(), 100)
        .await
        .expect("queue feeder");
    let (counters, release) = (Arc::new(Counters::default()), Arc::new(Semaphore::new(0)));
    let mut agents = Agents::default();
    agents.insert(
        KIND.into(),
        Arc::new(Held { counters: counters.clone(), release: release.clone() }),
    );
    let config = WorkerConfig { lease_ms, idle_poll, ..WorkerConfig::new(agents, concurrency) };
    let shutdown = CancellationToken::new();
    let worker = tokio::spawn({
        let (store, namespace, shutdown) = (store.clone(), env.namespace.clone(), shutdown.clone());
        async move { worker::run(store, queue, namespace, config, shutdown).await.expect("worker") }
    });
    let missions = Missions { store };
    let bundle =
        Bundle { _env: env, missions, counters, release, feeder, shutdown, _committer: committer };
    (worker, bundle)
}

#[tokio::test]
async fn a_worker_runs_at_most_its_concurrency_and_takes_the_next_mission_when_a_slot_frees() {
    // Given a worker of two slots and three missions.
    let (worker, mut bundle) = setup(2, 30_000).await;
    let ids = bundle.enqueue(3).await;

    // Both slots take one; the third mission waits, unstarted, while they are held.
    bundle.wait_for("two attempts to start", |c| &c.started, 2).await;
    assert_eq!(bundle.counters.running.load(Ordering::SeqCst), 2);
    let waiting: Vec<&String> = {
        let mut waiting = Vec::new();
        for id in &ids {
            if bundle.missions.event_types(id).await == ["MissionEnqueued"] {
                waiting.push(id);
            }
        }
        waiting
    };
    assert_eq!(waiting.len(), 1, "one mission waits for a slot");

    // When one attempt ends, its slot takes the third; never more than two at once.
    bundle.release.add_permits(1);
    bundle.wait_for("the third attempt to start", |c| &c.started, 3).await;
    bundle.release.add_permits(2);
    for id in &ids {
        bundle.wait_for_event(id, "MissionCompleted").await;
    }
    assert_eq!(bundle.counters.most.load(Ordering::SeqCst), 2);

    bundle.shutdown.cancel();
    worker.await.unwrap();
}

#[tokio::test]
async fn a_running_missions_lease_is_extended_before_it_runs_out_each_time_further() {
    // Given a mission held by its agent under a three-second lease.
    let (worker, mut bundle) = setup(1, 3_000).await;
    let id = bundle.enqueue(1).await.remove(0);
    bundle.wait_for("the attempt to start", |c| &c.started, 1).await;

    // The worker extends the lease every third of it: two extensions, each further on.
    wait_until("two lease extensions", WAIT, || async {
        let types = bundle.missions.event_types(&id).await;
        types.iter().filter(|t| *t == "MissionProgressed").count() >= 2
    })
    .await;
    let expiries: Vec<i64> = bundle
        .missions
        .events(&id)
        .await
        .iter()
        .filter_map(|event| event.payload["lease_expires_at_ms"].as_i64())
        .collect();
    assert!(expiries.len() >= 3, "the start and two extensions: {expiries:?}");
    assert!(expiries.windows(2).all(|pair| pair[0] < pair[1]), "each further: {expiries:?}");

    // The attempt still ends as its agent says, under the extended lease.
    bundle.release.add_permits(1);
    bundle.wait_for_event(&id, "MissionCompleted").await;
    assert_eq!(bundle.counters.ended.load(Ordering::SeqCst), 1);

    bundle.shutdown.cancel();
    worker.await.unwrap();
}

#[tokio::test]
async fn a_mission_cancelled_while_it_runs_stops_its_agent_at_the_next_lease_extension() {
    // Given a mission held by its agent under a three-second lease.
    let (worker, mut bundle) = setup(1, 3_000).await;
    let id = bundle.enqueue(1).await.remove(0);
    bundle.wait_for("the attempt to start", |c| &c.started, 1).await;

    // When it is cancelled, the next extension is refused and the worker drops the attempt.
    let cancel =
        MissionCommand::Cancel { reason: "not needed".into(), by: "test".into(), now_ms: now_ms() };
    bundle.missions.command(&id, cancel).await;
    bundle.wait_for("the attempt to be dropped", |c| &c.ended, 1).await;

    // Nothing is reported for it: the log ends with the cancellation.
    assert_eq!(bundle.missions.event_types(&id).await.last().unwrap(), "MissionCancelled");
    assert_eq!(bundle.counters.running.load(Ordering::SeqCst), 0);

    bundle.shutdown.cancel();
    worker.await.unwrap();
}

#[tokio::test]
async fn an_idle_worker_takes_a_mission_as_soon_as_its_projector_makes_it_ready() {
    // Given a worker that, finding nothing, would look again only after an hour.
    let (worker, mut bundle) = setup_polling(1, 30_000, Duration::from_secs(3_600)).await;

    // Each mission made ready while it waits is taken at once: the wait never runs out.
    for n in 1..=3 {
        let id = bundle.enqueue(1).await.remove(0);
        bundle.wait_for("the attempt to start", |c| &c.started, n).await;
        bundle.release.add_permits(1);
        bundle.wait_for_event(&id, "MissionCompleted").await;
    }

    bundle.shutdown.cancel();
    worker.await.unwrap();
}
