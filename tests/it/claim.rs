//! The claim sequence, through both of its callers (an in-process worker and an external
//! agent's `POST /api/agents/{id}/claim`): a mission popped after the log moved on is not
//! started, and the claimer takes the next; a start whose commit never answered leaves the
//! mission neither lost nor run twice, whether that commit went in or not.
//!
//! An unknown outcome is provoked for real: the claimer's PostgreSQL traffic passes a proxy
//! that either stalls the start's `COMMIT` (it never arrives; PostgreSQL ends the stalled
//! session after its idle-in-transaction timeout) or passes it on and loses the answer (it
//! commits). A queue behind the log is provoked by holding the queue projector's leadership,
//! so that the queue shows the log as it stood when the test last fed it.

use std::net::SocketAddr;
use std::time::Duration;

use brain::eventlog::leader::{self, Leadership};
use brain::eventlog::projector::Feeder;
use brain::eventlog::store::{CommitterConfig, EventStore};
use brain::missions::queue::{Queue, QueueStore};
use brain::missions::worker::{self, WorkerConfig};
use brain::serve::ServeOptions;
use projections::mission_queue::{MissionQueue, Scoring};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use crate::agent_supervision::{register, serve_supervising};
use crate::external_agents::claim;
use crate::missions_api::post;
use crate::serve::{get, serve_with_options, services};
use crate::support::{StallingProxy, TestEnv, redis_url, wait_until};
use crate::workers::{enqueue, event_types, mission, serve_without_workers};

const WAIT: Duration = Duration::from_secs(60);
/// Short enough that an unknown outcome comes well within a test, as in production it comes
/// after `TRANSACTION_TIMEOUT`.
const TRANSACTION_TIMEOUT: Duration = Duration::from_secs(2);

/// The queue, fed by the test alone: the serve's queue projector stands by while the test
/// holds its leadership.
struct HeldQueue {
    queue: Queue,
    feeder: Feeder<MissionQueue, QueueStore>,
    _leadership: Leadership,
}

impl HeldQueue {
    /// Takes the leadership; before the serve starts, so that its projector never leads.
    async fn take(env: &TestEnv) -> HeldQueue {
        let lock = format!("{}:projector:{}", env.namespace, projections::mission_queue::NAME);
        let leadership = leader::acquire(&env.pool, &lock, WAIT, &CancellationToken::new())
            .await
            .unwrap()
            .expect("nobody else leads yet");
        let queue = queue(env).await;
        let projector = MissionQueue { scoring: Scoring::default() };
        let feeder = Feeder::new(projector, queue.store(None), env.pool.clone(), 1_000);
        HeldQueue { queue, feeder: feeder.await.unwrap(), _leadership: leadership }
    }

    /// Brings the queue up to the log as it is now.
    async fn feed(&mut self) {
        self.feeder.catch_up().await.unwrap();
    }

    async fn upcoming(&self) -> Vec<String> {
        let upcoming = self.queue.upcoming("echo", 100).await.unwrap();
        upcoming.into_iter().map(|mission| mission.mission_id).collect()
    }
}

async fn queue(env: &TestEnv) -> Queue {
    let redis = redis::Client::open(redis_url()).unwrap();
    Queue::connect(&redis, &env.namespace).await.unwrap()
}

/// A proxy in front of PostgreSQL that can stall the committer's next `COMMIT`, and the
/// database URL through it.
async fn stalling_proxy(env: &TestEnv) -> (StallingProxy, String) {
    let proxy = StallingProxy::start("127.0.0.1:5432".parse().unwrap(), b"lock_timeout=5s").await;
    let url = env.database_url.replace("127.0.0.1:5432", &proxy.addr.to_string());
    (proxy, url)
}

/// An in-process worker for `echo` with one slot, on `store`; stops when the token is
/// cancelled.
async fn spawn_worker(
    env: &TestEnv,
    store: EventStore,
) -> (CancellationToken, tokio::task::JoinHandle<()>) {
    spawn_worker_claiming_for(env, store, None, 1).await
}

/// [`spawn_worker`] whose claims last `claim_ms` instead of the default, with `slots` slots.
async fn spawn_worker_claiming_for(
    env: &TestEnv,
    store: EventStore,
    claim_ms: Option<u64>,
    slots: usize,
) -> (CancellationToken, tokio::task::JoinHandle<()>) {
    let spec = brain::config::agents::AgentSpec::parse("echo").unwrap();
    let (agents, _) = brain::agents::build(&spec, &Default::default(), Default::default());
    let mut config = WorkerConfig::new(agents, slots);
    if let Some(claim_ms) = claim_ms {
        config.claim_ms = claim_ms;
    }
    let (queue, namespace, stop) =
        (queue(env).await, env.namespace.clone(), CancellationToken::new());
    let run = worker::run(store, queue, namespace, config, stop.clone());
    (stop, tokio::spawn(async move { run.await.expect("the worker runs") }))
}

async fn wait_queued(addr: SocketAddr, mission_id: &str) {
    wait_until("the queue to hold the mission", WAIT, || async {
        get(addr, "/api/missions/queue?agent=echo").await.1.to_string().contains(mission_id)
    })
    .await;
}

async fn wait_status(addr: SocketAddr, mission_id: &str, status: &str) -> Value {
    wait_until(&format!("the mission to be {status}"), WAIT, || async {
        mission(addr, mission_id).await["status"] == status
    })
    .await;
    mission(addr, mission_id).await
}

async fn cancel(addr: SocketAddr, mission_id: &str) {
    let body = json!({ "reason": "not needed any more" }).to_string();
    let (status, view) = post(addr, &format!("/api/missions/{mission_id}/cancel"), &body).await;
    assert_eq!((status, &view["status"]), (200, &json!("cancelled")), "{view}");
}

/// Two missions, the first to pop cancelled in the log since the queue last saw it.
async fn first_cancelled_behind_the_queue(
    addr: SocketAddr,
    held: &mut HeldQueue,
) -> (String, String) {
    let first = json!({ "name": "first", "agent": "echo", "priority": "high" });
    let cancelled = enqueue(addr, first).await;
    let next = enqueue(addr, json!({ "name": "next", "agent": "echo" })).await;
    held.feed().await;
    assert_eq!(held.upcoming().await, [cancelled.clone(), next.clone()]);
    cancel(addr, &cancelled).await;
    (cancelled, next)
}

#[tokio::test]
async fn a_worker_that_pops_a_mission_cancelled_since_does_not_start_it_and_runs_the_next() {
    // Given a queue that has not seen the first mission's cancellation.
    let env = TestEnv::new().await;
    let mut held = HeldQueue::take(&env).await;
    let (addr, shutdown, task) = serve_without_workers(&env).await;
    let (cancelled, next) = first_cancelled_behind_the_queue(addr, &mut held).await;

    // When a worker claims: the cancelled mission pops first.
    let (stop, worker) = spawn_worker(&env, env.store().0).await;

    // Then its start is refused, and the worker goes on with the next mission.
    wait_status(addr, &next, "completed").await;
    assert!(held.upcoming().await.is_empty(), "both were popped");
    assert_eq!(event_types(addr, &cancelled).await, ["MissionEnqueued", "MissionCancelled"]);

    stop.cancel();
    worker.await.unwrap();
    shutdown.cancel();
    task.await.unwrap().unwrap();
}

#[tokio::test]
async fn an_agent_whose_claim_pops_a_mission_cancelled_since_gets_the_next_one() {
    let env = TestEnv::new().await;
    let mut held = HeldQueue::take(&env).await;
    let (addr, shutdown, task) = serve_supervising(&env, 30, 60).await;
    let agent = register(addr, "external", "echo").await;
    let (cancelled, next) = first_cancelled_behind_the_queue(addr, &mut held).await;

    let (status, claimed) = claim(addr, &agent, "wait_s=0").await;
    assert_eq!((status, &claimed["mission_id"]), (200, &json!(next)), "{claimed}");
    assert_eq!(claimed["attempt"], 1);
    let (status, answer) = claim(addr, &agent, "wait_s=0").await;
    assert_eq!(status, 204, "nothing else is startable: {answer}");
    assert_eq!(event_types(addr, &cancelled).await, ["MissionEnqueued", "MissionCancelled"]);

    shutdown.cancel();
    task.await.unwrap().unwrap();
}

/// The log's starts of a mission, and whether it ever lost a lease.
async fn starts_and_expiries(addr: SocketAddr, mission_id: &str) -> (usize, usize) {
    let types = event_types(addr, mission_id).await;
    let count = |wanted: &str| types.iter().filter(|t| *t == wanted).count();
    (count("MissionStarted"), count("MissionLeaseExpired"))
}

/// A worker whose event store goes through `proxy`, with a mission queued for it.
async fn worker_behind_a_proxy(env: &TestEnv, addr: SocketAddr, url: &str) -> (EventStore, String) {
    let pool = sqlx::PgPool::connect(url).await.unwrap();
    let config = CommitterConfig { transaction_timeout: TRANSACTION_TIMEOUT, ..Default::default() };
    let (store, _) = EventStore::start(pool, env.namespace.as_str(), config);
    let mission_id = enqueue(addr, json!({ "name": "m", "agent": "echo" })).await;
    wait_queued(addr, &mission_id).await;
    (store, mission_id)
}

#[tokio::test]
async fn a_worker_whose_start_committed_unanswered_learns_it_by_asking_again_and_runs_it_once() {
    // Given a worker whose first commit, its start, will go in unanswered.
    let env = TestEnv::new().await;
    let (addr, shutdown, task) = serve_without_workers(&env).await;
    let (proxy, url) = stalling_proxy(&env).await;
    let (store, mission_id) = worker_behind_a_proxy(&env, addr, &url).await;
    proxy.lose_next_commit_answer();

    // When it claims the mission.
    let (stop, worker) = spawn_worker(&env, store).await;

    // Then it runs the attempt it started, not a second one after the lease runs out.
    let done = wait_status(addr, &mission_id, "completed").await;
    assert_eq!(proxy.stalled(), 1);
    assert_eq!(done["attempt"], 1, "{done}");
    assert_eq!(starts_and_expiries(addr, &mission_id).await, (1, 0));

    stop.cancel();
    worker.await.unwrap();
    shutdown.cancel();
    task.await.unwrap().unwrap();
}

#[tokio::test]
async fn a_start_answered_unknown_after_its_claim_ran_out_is_still_asked_about_and_run_once() {
    // Given a worker whose claims last a quarter of the committer's transaction deadline, as
    // in production (a claim lasts seconds; an unknown outcome is known only after
    // `TRANSACTION_TIMEOUT`), and whose start will go in unanswered.
    let env = TestEnv::new().await;
    let (addr, shutdown, task) = serve_without_workers(&env).await;
    let (proxy, url) = stalling_proxy(&env).await;
    let (store, mission_id) = worker_behind_a_proxy(&env, addr, &url).await;
    proxy.lose_next_commit_answer();

    // When it claims the mission.
    let claim_ms = TRANSACTION_TIMEOUT.as_millis() as u64 / 4;
    let (stop, worker) = spawn_worker_claiming_for(&env, store, Some(claim_ms), 1).await;

    // Then it still learns that its start went in, and runs that attempt: no second
    // attempt after an idle lease.
    let done = wait_status(addr, &mission_id, "completed").await;
    assert_eq!(proxy.stalled(), 1);
    assert_eq!(done["attempt"], 1, "{done}");
    assert_eq!(starts_and_expiries(addr, &mission_id).await, (1, 0));

    stop.cancel();
    worker.await.unwrap();
    shutdown.cancel();
    task.await.unwrap().unwrap();
}

#[tokio::test]
async fn a_worker_whose_start_never_committed_leaves_the_mission_to_come_back_and_run_once() {
    // Given a worker whose start's commit will never reach PostgreSQL.
    let env = TestEnv::new().await;
    let (addr, shutdown, task) = serve_without_workers(&env).await;
    let (proxy, url) = stalling_proxy(&env).await;
    let (store, mission_id) = worker_behind_a_proxy(&env, addr, &url).await;
    proxy.stall_next_commit();

    // When it claims the mission.
    let (stop, worker) = spawn_worker(&env, store).await;

    // Then the mission comes back once the stalled session is gone, and is started once.
    let done = wait_status(addr, &mission_id, "completed").await;
    assert_eq!(proxy.stalled(), 1);
    assert_eq!(done["attempt"], 1, "{done}");
    assert_eq!(starts_and_expiries(addr, &mission_id).await, (1, 0));

    stop.cancel();
    worker.await.unwrap();
    shutdown.cancel();
    task.await.unwrap().unwrap();
}

/// Three queued missions and a worker of four slots whose next commit, the batch's starts,
/// meets `fault`; the worker claims them in one batch, and each must run once, as its first
/// attempt, with no lease left to run out.
async fn a_batch_of_three_whose_starts_meet(fault: fn(&StallingProxy)) {
    let env = TestEnv::new().await;
    let (addr, shutdown, task) = serve_without_workers(&env).await;
    let (proxy, url) = stalling_proxy(&env).await;
    let (store, first) = worker_behind_a_proxy(&env, addr, &url).await;
    let mut ids = vec![first];
    for _ in 0..2 {
        let id = enqueue(addr, json!({ "name": "m", "agent": "echo" })).await;
        wait_queued(addr, &id).await;
        ids.push(id);
    }
    fault(&proxy);

    let (stop, worker) = spawn_worker_claiming_for(&env, store, None, 4).await;

    for id in &ids {
        let done = wait_status(addr, id, "completed").await;
        assert_eq!(done["attempt"], 1, "{done}");
        assert_eq!(starts_and_expiries(addr, id).await, (1, 0), "{id}");
    }
    assert_eq!(proxy.stalled(), 1);

    stop.cancel();
    worker.await.unwrap();
    shutdown.cancel();
    task.await.unwrap().unwrap();
}

#[tokio::test]
async fn a_batch_of_starts_committed_unanswered_is_learnt_by_asking_again_and_each_runs_once() {
    a_batch_of_three_whose_starts_meet(StallingProxy::lose_next_commit_answer).await;
}

#[tokio::test]
async fn a_batch_of_starts_never_committed_comes_back_and_each_runs_once() {
    a_batch_of_three_whose_starts_meet(StallingProxy::stall_next_commit).await;
}

/// A serve whose PostgreSQL traffic goes through a stalling proxy, an agent and a queued
/// mission.
async fn serve_behind_a_proxy(
    env: &TestEnv,
) -> (StallingProxy, SocketAddr, CancellationToken, tokio::task::JoinHandle<anyhow::Result<()>>) {
    let (proxy, url) = stalling_proxy(env).await;
    let mut services = services(env, &redis_url());
    services.database_url = url;
    let mut options = ServeOptions::new(services, "127.0.0.1:0".parse().unwrap());
    options.committer =
        CommitterConfig { transaction_timeout: TRANSACTION_TIMEOUT, ..Default::default() };
    let (addr, shutdown, task) = serve_with_options(options).await;
    (proxy, addr, shutdown, task)
}

#[tokio::test]
async fn an_agent_whose_start_committed_unanswered_gets_the_mission_it_started() {
    // Given a queued mission, and a serve whose next commit goes in unanswered.
    let env = TestEnv::new().await;
    let (proxy, addr, shutdown, task) = serve_behind_a_proxy(&env).await;
    let agent = register(addr, "external", "echo").await;
    let mission_id = enqueue(addr, json!({ "name": "m", "agent": "echo" })).await;
    wait_queued(addr, &mission_id).await;
    proxy.lose_next_commit_answer();

    // When the agent claims, the start goes in and its answer is lost.
    let (status, claimed) = claim(addr, &agent, "wait_s=0").await;

    // Then the claim learns the start went in and hands over its lease.
    assert_eq!(proxy.stalled(), 1);
    assert_eq!((status, &claimed["mission_id"]), (200, &json!(mission_id)), "{claimed}");
    assert_eq!(claimed["attempt"], 1);
    let done = json!({ "lease_token": claimed["lease_token"], "result": { "ok": true } });
    let path = format!("/api/missions/{mission_id}/complete");
    let (status, view) = post(addr, &path, &done.to_string()).await;
    assert_eq!((status, &view["status"]), (200, &json!("completed")), "{view}");
    assert_eq!(starts_and_expiries(addr, &mission_id).await, (1, 0));

    shutdown.cancel();
    task.await.unwrap().unwrap();
}

#[tokio::test]
async fn an_agent_whose_start_never_committed_gets_the_mission_started_once_now_or_later() {
    // Given a queued mission, and a serve whose next commit never reaches PostgreSQL.
    let env = TestEnv::new().await;
    let (proxy, addr, shutdown, task) = serve_behind_a_proxy(&env).await;
    let agent = register(addr, "external", "echo").await;
    let mission_id = enqueue(addr, json!({ "name": "m", "agent": "echo" })).await;
    wait_queued(addr, &mission_id).await;
    proxy.stall_next_commit();

    // When the agent claims: the start is asked about again under its command id until the
    // request's deadline, and once PostgreSQL has ended the stalled session the store decides
    // it then; or, if that came too late, the agent hears the outcome is unknown.
    let (status, first) = claim(addr, &agent, "wait_s=0").await;
    assert_eq!(proxy.stalled(), 1);
    let claimed = match status {
        200 => first,
        503 => {
            assert_eq!(first["error"]["code"], "outcome_unknown", "{first}");
            // Then the mission is not lost: a later claim gets it.
            let deadline = std::time::Instant::now() + WAIT;
            loop {
                assert!(std::time::Instant::now() < deadline, "the mission never came back");
                let (status, claimed) = claim(addr, &agent, "wait_s=1").await;
                match status {
                    200 => break claimed,
                    204 | 503 => {}
                    _ => panic!("unexpected answer {status}: {claimed}"),
                }
            }
        }
        _ => panic!("unexpected answer {status}: {first}"),
    };

    // Either way it is started once, as its first attempt.
    assert_eq!((&claimed["mission_id"], &claimed["attempt"]), (&json!(mission_id), &json!(1)));
    assert_eq!(starts_and_expiries(addr, &mission_id).await, (1, 0));

    shutdown.cancel();
    task.await.unwrap().unwrap();
}
