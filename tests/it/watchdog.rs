//! The silence watchdog on its own, against the real PostgreSQL and Redis but without a serve:
//! `setup` builds the watchdog and a bundle (the agent view, its feeder, the queue), a test
//! registers agents and pings them at chosen times, brings the view up to the log with one
//! `catch_up`, and judges with `sweep_at` on either side of a window's exact end. No sweep
//! interval, no wall-clock window: the verdicts are the same on a loaded machine.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use brain::agents::view::AgentViewStore;
use brain::agents::watchdog::{self, SilenceWatchdog, SweepReport, WatchdogConfig};
use brain::eventlog::command;
use brain::eventlog::projector::Feeder;
use brain::eventlog::store::EventStore;
use brain::missions::queue::{Queue, QueueStore};
use domain::agent::{Agent, AgentCommand, Registration};
use domain::{EventMetadata, StreamId};
use projections::agent_view::AgentView;
use projections::mission_queue::{MissionQueue, Scoring};
use tokio::task::JoinHandle;
use uuid::Uuid;

use crate::reaper::Missions;
use crate::support::{TestEnv, redis_url};

/// The silence after which an agent is marked.
const WINDOW_MS: i64 = 60_000;

/// When the test agents registered: ten minutes ago, far past the window.
fn registered_ms() -> i64 {
    brain::clock::now_ms() - 600_000
}

struct Bundle {
    env: TestEnv,
    store: EventStore,
    view: AgentViewStore,
    queue: Queue,
    view_feeder: Feeder<AgentView, AgentViewStore>,
    _committer: JoinHandle<()>,
}

impl Bundle {
    /// Registers an agent at `now_ms` (its last sign of life, as far as the log knows).
    async fn register(&self, name: &str, now_ms: i64) -> String {
        let id = StreamId::from(Uuid::now_v7());
        let registration = Registration {
            name: name.into(),
            kind: "coder".into(),
            capabilities: vec![],
            version: String::new(),
            owner: "tests".into(),
            labels: Default::default(),
            key_id: None,
        };
        command::execute::<Agent>(&self.store, &id, metadata(), || AgentCommand::Register {
            registration: registration.clone(),
            now_ms,
        })
        .await
        .expect("register");
        id.to_string()
    }

    /// Brings the agent view up to the log's head.
    async fn catch_up(&mut self) {
        self.view_feeder.catch_up().await.expect("project the agent view");
    }

    /// When the view began to watch (filled from nothing): its grace starts there.
    async fn watch_since(&self) -> i64 {
        self.view.watch_since().await.unwrap().expect("the view was filled")
    }

    async fn event_types(&self, id: &str) -> Vec<String> {
        let stream_id = StreamId::parse(id).unwrap();
        let (_, events) =
            command::load_with_events::<Agent>(&self.store, &stream_id).await.unwrap();
        events.into_iter().map(|event| event.event_type).collect()
    }

    /// Loses the view, as a flushed Redis would, and refills it from the log.
    async fn lose_and_refill_the_view(&mut self) {
        self.view.drop_all().await.unwrap();
        self.view_feeder =
            Feeder::new(AgentView, self.view.clone(), self.env.pool.clone(), 100).await.unwrap();
        self.catch_up().await;
    }
}

fn metadata() -> EventMetadata {
    let mut metadata = EventMetadata::new("test", time::OffsetDateTime::now_utc());
    metadata.command_id = Some(Uuid::now_v7());
    metadata
}

async fn setup() -> (SilenceWatchdog, Bundle) {
    let env = TestEnv::new().await;
    let (store, committer) = env.store();
    let client = redis::Client::open(redis_url()).unwrap();
    let queue = Queue::connect(&client, &env.namespace).await.expect("connect to Redis");
    let view = AgentViewStore::new(queue.connection(), &env.namespace);
    let view_feeder =
        Feeder::new(AgentView, view.clone(), env.pool.clone(), 100).await.expect("view feeder");
    let config = WatchdogConfig {
        unresponsive_after: Duration::from_millis(WINDOW_MS as u64),
        ..WatchdogConfig::default()
    };
    let watchdog = SilenceWatchdog {
        store: store.clone(),
        view: view.clone(),
        queue: queue.clone(),
        pool: env.pool.clone(),
        namespace: env.namespace.clone(),
        config,
        leading: Arc::new(AtomicBool::new(false)),
    };
    (watchdog, Bundle { env, store, view, queue, view_feeder, _committer: committer })
}

fn verdicts(report: &SweepReport) -> (u64, u64, bool) {
    (report.silent, report.marked, report.grace)
}

#[tokio::test]
async fn a_silent_agent_is_marked_once_its_silence_passes_the_window_and_not_before() {
    // Given two agents, watched since before they last spoke: one last heard from at
    // `spoke`, the other a moment before the sweeps.
    let (watchdog, mut bundle) = setup().await;
    let (silent, chatty) = (
        bundle.register("silent", registered_ms()).await,
        bundle.register("chatty", registered_ms()).await,
    );
    bundle.catch_up().await;
    let spoke = bundle.watch_since().await + 10_000;
    bundle.view.ping(&silent, spoke).await.unwrap();
    bundle.view.ping(&chatty, spoke + WINDOW_MS).await.unwrap();

    // When the watchdog sweeps as the silence reaches the window: no verdict.
    let report = watchdog.sweep_at(spoke + WINDOW_MS).await.unwrap();
    assert_eq!(verdicts(&report), (0, 0, false), "{report:?}");
    assert_eq!(bundle.event_types(&silent).await, ["AgentRegistered"]);

    // One millisecond past it: the silent one is marked, through an event; the other is not.
    let report = watchdog.sweep_at(spoke + WINDOW_MS + 1).await.unwrap();
    assert_eq!(verdicts(&report), (1, 1, false), "{report:?}");
    assert_eq!(bundle.event_types(&silent).await, ["AgentRegistered", "AgentUnresponsive"]);
    assert_eq!(bundle.event_types(&chatty).await, ["AgentRegistered"]);

    // The report is kept where every process can show it.
    let mut connection = bundle.queue.connection();
    let kept = watchdog::last_sweep(&mut connection, &bundle.env.namespace).await.unwrap();
    assert_eq!(kept, Some(report));
}

#[tokio::test]
async fn live_agents_are_not_marked_when_the_view_loses_its_state_and_refills_from_the_log() {
    // Given two agents the log last heard from ten minutes ago, alive since by their pings.
    let (watchdog, mut bundle) = setup().await;
    let registered = registered_ms();
    let ids = [bundle.register("a", registered).await, bundle.register("b", registered).await];
    bundle.catch_up().await;
    let first_watch = bundle.watch_since().await;
    for id in &ids {
        bundle.view.ping(id, first_watch).await.unwrap();
    }

    // When the view loses its state and refills from the log, whose times are far past the
    // window, the watchdog gives every agent one window from the refill to be heard.
    bundle.lose_and_refill_the_view().await;
    let refilled = bundle.watch_since().await;
    assert_eq!(bundle.view.ping_of(&ids[0]).await.unwrap(), Some(registered), "the log's time");
    let report = watchdog.sweep_at(refilled + WINDOW_MS - 1).await.unwrap();
    assert_eq!(verdicts(&report), (0, 0, true), "{report:?}");
    for id in &ids {
        assert_eq!(bundle.event_types(id).await, ["AgentRegistered"], "no verdict on {id}");
    }

    // Once the grace is over, a real silence is judged: the agent that spoke meanwhile
    // stays active, the one that did not is marked.
    bundle.view.ping(&ids[0], refilled + 1_000).await.unwrap();
    let report = watchdog.sweep_at(refilled + WINDOW_MS).await.unwrap();
    assert_eq!(verdicts(&report), (1, 1, false), "{report:?}");
    assert_eq!(bundle.event_types(&ids[0]).await, ["AgentRegistered"]);
    assert_eq!(bundle.event_types(&ids[1]).await, ["AgentRegistered", "AgentUnresponsive"]);
}

#[tokio::test]
async fn a_marked_agents_missions_are_put_back_at_once() {
    // Given an external agent holding a mission's lease, and another agent's mission.
    let (watchdog, mut bundle) = setup().await;
    let agent = bundle.register("holder", registered_ms()).await;
    let other = bundle.register("other", registered_ms()).await;
    bundle.catch_up().await;
    let spoke = bundle.watch_since().await + 10_000;
    let missions = Missions { store: bundle.store.clone() };
    let holder = |agent: &str| format!("{}:n1", watchdog::worker_id(agent));
    let held = missions.running(&holder(&agent), 600_000, spoke).await;
    let kept = missions.running(&holder(&other), 600_000, spoke).await;
    let scoring = Scoring { weights: [0, 1, 2, 4], aging_ms: 60_000 };
    let queue_store = bundle.queue.store(None);
    let mut queue_feeder: Feeder<MissionQueue, QueueStore> =
        Feeder::new(MissionQueue { scoring }, queue_store, bundle.env.pool.clone(), 100)
            .await
            .unwrap();
    queue_feeder.catch_up().await.unwrap();
    bundle.catch_up().await;
    bundle.view.ping(&agent, spoke).await.unwrap();
    bundle.view.ping(&other, spoke + WINDOW_MS).await.unwrap();

    // When the watchdog marks it, its lease ends with it, long before it would run out.
    let report = watchdog.sweep_at(spoke + WINDOW_MS + 1).await.unwrap();
    assert_eq!((report.marked, report.requeued), (1, 1), "{report:?}");
    assert_eq!(missions.event_types(&held).await.last().unwrap(), "MissionLeaseExpired");
    assert_eq!(missions.event_types(&kept).await.last().unwrap(), "MissionStarted");
}
