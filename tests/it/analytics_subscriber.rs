//! The outside analytics subscriber (`examples/analytics_subscriber.py`) against a real store,
//! relay and NATS, logged in as the read-only `reader` of `nats/nats-server.conf`: killed
//! with SIGKILL partway through the stream, restarted from its checkpoint, and following the
//! stream live, its totals equal a count made with SQL over the `events` table. And the
//! reader's rights the README states: messages by sequence, no consumer of any kind.
//!
//! The reader's permissions name the default namespace's stream (`BRAIN_EVENTS`), so the test
//! runs a NATS server of its own from that config, unchanged, and a relay for namespace
//! `brain` on it: the subscriber gets exactly the rights an outside program gets in compose.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use brain::config::Namespace;
use brain::eventlog::bus;
use brain::eventlog::command::execute;
use brain::eventlog::relay::{Relay, RelayConfig};
use brain::eventlog::store::{Append, CommitterConfig, EventStore};
use domain::llm_call::LlmCallEvent;
use domain::mission::{LlmCall, Mission, MissionCommand, MissionSpec, Priority};
use domain::{EventMetadata, ExpectedVersion, NewEvent, StreamId};
use serde_json::{Value, json};
use sqlx::Row;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::support::{TestEnv, new_stream_id, wait_until};

const WAIT: Duration = Duration::from_secs(30);
/// The local passwords of `scripts/services.sh`, which this test's server is given too.
const BRAIN_PASSWORD: &str = "brain-local";
const READER_PASSWORD: &str = "reader-local";
/// 2026-11-25T00:00:00Z: the missions' clock, spread over three UTC days.
const BASE_MS: i64 = 1_795_564_800_000;
const DAY_MS: i64 = 86_400_000;
const KINDS: [&str; 3] = ["coder", "echo", "research"];

/// A NATS server of the test's own, from `nats/nats-server.conf` as compose runs it, in a
/// folder of its own (which the test also keeps the checkpoint in); killed and the folder
/// removed when dropped.
struct AccountsNats {
    child: Child,
    dir: PathBuf,
    port: u16,
}

impl AccountsNats {
    async fn start(dir: &Path) -> AccountsNats {
        let config = concat!(env!("CARGO_MANIFEST_DIR"), "/nats/nats-server.conf");
        std::fs::copy(config, dir.join("nats-server.conf")).expect("copy the NATS config");
        // A port free a moment ago; nothing else in the tests binds ports at random but the OS.
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let local = format!(
            "include \"nats-server.conf\"\nlisten: \"127.0.0.1:{port}\"\nhttp: 0\n\
             jetstream {{ store_dir: \"{}\" }}\n",
            dir.join("store").display()
        );
        std::fs::write(dir.join("local.conf"), local).unwrap();
        let child = Command::new(nats_server_binary())
            .arg("-c")
            .arg(dir.join("local.conf"))
            .env("BRAIN_NATS_PASSWORD", BRAIN_PASSWORD)
            .env("BRAIN_NATS_READER_PASSWORD", READER_PASSWORD)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("nats-server runs (scripts/services.sh installs it)");
        let server = AccountsNats { child, dir: dir.to_owned(), port };
        wait_until("the test's NATS server to listen", WAIT, || async {
            tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_ok()
        })
        .await;
        server
    }

    fn url(&self, user: &str, password: &str) -> String {
        format!("nats://{user}:{password}@127.0.0.1:{}", self.port)
    }
}

impl Drop for AccountsNats {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn nats_server_binary() -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/usr/local/sbin")])
        .map(|dir| dir.join("nats-server"))
        .find(|binary| binary.is_file())
        .expect("nats-server is installed (scripts/services.sh installs it)")
}

/// A run of the example; killed (SIGKILL) when dropped.
struct Subscriber {
    child: Child,
    lines: tokio::sync::mpsc::UnboundedReceiver<String>,
}

impl Subscriber {
    fn start(url: &str, checkpoint: &Path, extra: &[&str]) -> Subscriber {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/analytics_subscriber.py");
        let mut child = Command::new("python3")
            .arg(script)
            .arg("--checkpoint")
            .arg(checkpoint)
            .args(extra)
            .env("NATS_URL", url)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("python3 runs");
        // Read on a thread of its own: each line is one print of the totals.
        let stdout = child.stdout.take().unwrap();
        let (send, lines) = tokio::sync::mpsc::unbounded_channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = send.send(line);
            }
        });
        Subscriber { child, lines }
    }

    fn signal(&self, name: &str) {
        let pid = self.child.id().to_string();
        let status = Command::new("kill").args([&format!("-{name}"), &pid]).status().unwrap();
        assert!(status.success(), "kill -{name} {pid}");
    }

    async fn next_totals(&mut self) -> Value {
        let line = tokio::time::timeout(WAIT, self.lines.recv()).await;
        let line = line.expect("the subscriber prints its totals").expect("a line");
        serde_json::from_str(&line).unwrap_or_else(|error| panic!("{error}: {line}"))
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Subscriber {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The position in the subscriber's checkpoint file (0 before its first write).
fn checkpointed(path: &Path) -> u64 {
    let Ok(text) = std::fs::read_to_string(path) else { return 0 };
    let state: Value = serde_json::from_str(&text).expect("the checkpoint is whole JSON");
    state["position"].as_u64().expect("a position")
}

fn metadata(actor: &str) -> EventMetadata {
    EventMetadata::new(actor, time::OffsetDateTime::now_utc())
}

fn call(kind: &str, input: u64, output: u64, replayed: bool) -> LlmCall {
    // Costs in whole micro-dollars, so that sums compare exactly once rounded to them.
    let cost = (input + 3 * output) as f64 / 1_000_000.0;
    serde_json::from_value(json!({
        "route": "default", "kind": kind, "provider": "fake", "model": "m", "tries": 1,
        "request": null, "response": null, "input_tokens": input, "output_tokens": output,
        "cost_usd": cost, "latency_ms": 10, "outcome": "ok", "replayed": replayed,
    }))
    .unwrap()
}

/// Mission `n`'s life, varied by `n`: its kind, day, queue wait, run time, LLM calls and end
/// (completed, failed for good, failed then retried and completed, or still running).
async fn run_mission(store: &EventStore, n: i64) {
    let kind = KINDS[(n % 3) as usize];
    let id = StreamId::from(Uuid::now_v7());
    let mut at = BASE_MS + (n % 3) * DAY_MS + n * 60_000;
    let command = |command: MissionCommand| {
        let store = store.clone();
        let id = id.clone();
        async move {
            execute::<Mission>(&store, &id, metadata("worker:w"), move || command.clone())
                .await
                .expect("the command is accepted");
        }
    };
    let spec = MissionSpec {
        name: format!("mission {n}"),
        description: String::new(),
        priority: Priority::Normal,
        payload: json!({ "n": n }),
        agent: kind.to_owned(),
        attempt_max: 3,
        timeout_ms: 600_000,
        not_before_ms: None,
        budget: None,
        parent: None,
        forked_from: None,
        copied_from: None,
    };
    command(MissionCommand::Enqueue { spec, now_ms: at }).await;
    at += 20 + (n * 7_919) % 5_000;
    let start = |now_ms| MissionCommand::Start { worker_id: "w".into(), lease_ms: 600_000, now_ms };
    command(start(at)).await;
    for k in 0..(n % 4) as u64 {
        at += 500;
        let call = call(kind, 100 + 17 * k + n as u64, 20 + k, n % 11 == 5 && k == 0);
        let record =
            MissionCommand::RecordLlmCall { worker_id: "w".into(), attempt: 1, call, now_ms: at };
        command(record).await;
    }
    at += 100 + (n * 104_729) % 60_000;
    let fail = |retryable, now_ms| MissionCommand::Fail {
        worker_id: "w".into(),
        attempt: 1,
        error: "boom".into(),
        retryable,
        backoff_ms: 1_000,
        now_ms,
    };
    let complete = |attempt, now_ms| MissionCommand::Complete {
        worker_id: "w".into(),
        attempt,
        result: json!({ "ok": true }),
        now_ms,
    };
    match n % 6 {
        0 => {
            command(fail(true, at)).await;
            command(MissionCommand::MarkDue { now_ms: at + 1_000 }).await;
            command(start(at + 1_500 + n)).await;
            command(complete(2, at + 9_000 + 13 * n)).await;
        }
        1 => command(fail(false, at)).await,
        2 => {} // still running
        _ => command(complete(1, at)).await,
    }
}

/// A call made outside any mission (`POST /v1/chat/completions`).
async fn record_outside_call(store: &EventStore, n: i64) {
    let event = LlmCallEvent::LlmCalled {
        call: call("", 40 + n as u64, 9, false),
        by: "key:a0000000000000a1".into(),
        at_ms: BASE_MS + (n % 2) * DAY_MS + n,
    };
    let append = Append {
        stream_type: domain::llm_call::stream_type(),
        stream_id: new_stream_id(),
        expected: ExpectedVersion::Exact(0),
        events: vec![NewEvent::new(
            "LlmCalled",
            serde_json::to_value(&event).unwrap()["LlmCalled"].clone(),
        )],
        metadata: metadata("key:a0000000000000a1"),
    };
    store.append(append).await.expect("append");
}

/// `query` after a CTE of every mission's kind and enqueue time (a literal, as sqlx wants).
macro_rules! with_kinds {
    ($query:literal) => {
        concat!(
            "WITH kinds AS (
                SELECT stream_id, payload->'spec'->>'agent' AS kind,
                    (payload->>'at_ms')::bigint AS at
                FROM events WHERE stream_type = 'mission' AND event_type = 'MissionEnqueued') ",
            $query
        )
    };
}

/// The subscriber's totals, counted straight from the log with SQL (its definitions, in the
/// example's docstring, in SQL). Costs are in micro-dollars, rounded.
async fn totals_from_the_log(pool: &sqlx::PgPool) -> Value {
    let empty = || {
        let none = json!({ "count": 0, "p50": null, "p95": null });
        json!({ "completed": 0, "failed": 0, "queue_wait_ms": none, "run_ms": none, "llm": {} })
    };
    let mut kinds: BTreeMap<String, Value> = BTreeMap::new();
    let ends = with_kinds!(
        "SELECT k.kind,
            count(*) FILTER (WHERE e.event_type = 'MissionCompleted'),
            count(*) FILTER (WHERE e.event_type IN ('MissionAttemptFailed', 'MissionLeaseExpired')
                             AND e.payload->>'retry_at_ms' IS NULL)
         FROM events e JOIN kinds k USING (stream_id)
         WHERE e.stream_type = 'mission' AND e.event_type <> 'MissionEnqueued' GROUP BY k.kind"
    );
    for row in sqlx::query(ends).fetch_all(pool).await.unwrap() {
        let totals = kinds.entry(row.get(0)).or_insert_with(empty);
        totals["completed"] = json!(row.get::<i64, _>(1));
        totals["failed"] = json!(row.get::<i64, _>(2));
    }
    let waits = with_kinds!(
        "SELECT k.kind, count(*), percentile_disc(0.5) WITHIN GROUP (ORDER BY w),
            percentile_disc(0.95) WITHIN GROUP (ORDER BY w)
         FROM (SELECT DISTINCT ON (stream_id) stream_id, (payload->>'at_ms')::bigint AS started
               FROM events WHERE stream_type = 'mission' AND event_type = 'MissionStarted'
               ORDER BY stream_id, global_position) s
         JOIN kinds k USING (stream_id) CROSS JOIN LATERAL (SELECT s.started - k.at AS w) x
         GROUP BY k.kind"
    );
    let runs = with_kinds!(
        "SELECT k.kind, count(*), percentile_disc(0.5) WITHIN GROUP (ORDER BY r),
            percentile_disc(0.95) WITHIN GROUP (ORDER BY r)
         FROM events e JOIN kinds k USING (stream_id)
         CROSS JOIN LATERAL (
             SELECT (s.payload->>'at_ms')::bigint AS started FROM events s
             WHERE s.stream_type = 'mission' AND s.stream_id = e.stream_id
               AND s.event_type = 'MissionStarted' AND s.global_position < e.global_position
             ORDER BY s.global_position DESC LIMIT 1) s
         CROSS JOIN LATERAL (SELECT (e.payload->>'at_ms')::bigint - s.started AS r) x
         WHERE e.stream_type = 'mission'
           AND e.event_type IN ('MissionCompleted', 'MissionAttemptFailed')
         GROUP BY k.kind"
    );
    for (field, query) in [("queue_wait_ms", waits), ("run_ms", runs)] {
        for row in sqlx::query(query).fetch_all(pool).await.unwrap() {
            let totals = kinds.entry(row.get(0)).or_insert_with(empty);
            totals[field] = json!({
                "count": row.get::<i64, _>(1),
                "p50": row.get::<i64, _>(2),
                "p95": row.get::<i64, _>(3),
            });
        }
    }
    let calls = with_kinds!(
        "SELECT coalesce(k.kind, '(none)'),
            to_char(to_timestamp((e.payload->>'at_ms')::bigint / 1000.0) AT TIME ZONE 'UTC',
                    'YYYY-MM-DD'),
            count(*), sum((e.payload->'call'->>'input_tokens')::bigint)::bigint,
            sum((e.payload->'call'->>'output_tokens')::bigint)::bigint,
            round(sum((e.payload->'call'->>'cost_usd')::float8) * 1e6)::bigint
         FROM events e LEFT JOIN kinds k ON e.stream_type = 'mission' AND k.stream_id = e.stream_id
         WHERE e.event_type IN ('MissionLlmCalled', 'LlmCalled')
           AND NOT coalesce((e.payload->'call'->>'replayed')::boolean, false)
         GROUP BY 1, 2"
    );
    for row in sqlx::query(calls).fetch_all(pool).await.unwrap() {
        let totals = kinds.entry(row.get(0)).or_insert_with(empty);
        totals["llm"][row.get::<String, _>(1)] = json!({
            "calls": row.get::<i64, _>(2),
            "input_tokens": row.get::<i64, _>(3),
            "output_tokens": row.get::<i64, _>(4),
            "cost_usd": row.get::<i64, _>(5),
        });
    }
    json!(kinds)
}

/// The subscriber's printed kinds, costs in micro-dollars, rounded.
fn in_micro_dollars(totals: &Value) -> Value {
    let mut kinds = totals["kinds"].clone();
    for kind in kinds.as_object_mut().expect("kinds").values_mut() {
        for day in kind["llm"].as_object_mut().expect("llm").values_mut() {
            let cost = day["cost_usd"].as_f64().expect("a cost");
            day["cost_usd"] = json!((cost * 1e6).round() as i64);
        }
    }
    kinds
}

#[tokio::test]
async fn the_analytics_subscriber_resumes_after_sigkill_and_its_totals_equal_the_log() {
    let env = TestEnv::new().await;
    let dir = std::env::temp_dir().join(format!("brain-analytics-{}", Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    let nats = AccountsNats::start(&dir).await;
    let checkpoint = dir.join("analytics.json");

    // The store and relay of namespace `brain` (its stream BRAIN_EVENTS on the test's NATS).
    let namespace = Namespace::parse("brain").unwrap();
    let (store, _committer) =
        EventStore::start(env.pool.clone(), namespace.as_str(), CommitterConfig::default());
    let client = bus::connect(&nats.url("brain", BRAIN_PASSWORD)).await.unwrap();
    let jetstream = bus::jetstream(client.clone(), 64);
    let config = RelayConfig { idle_check: Duration::from_millis(100), ..RelayConfig::default() };
    let shutdown = CancellationToken::new();
    let relay = Relay::new(env.pool.clone(), client, namespace.clone(), config);
    let relay = tokio::spawn(relay.run(shutdown.clone()));
    let mirrored = |head: u64| {
        let jetstream = jetstream.clone();
        let name = bus::stream_name(&namespace);
        async move {
            let Ok(mut stream) = jetstream.get_stream(name).await else { return false };
            stream.info().await.is_ok_and(|info| info.state.last_sequence >= head)
        }
    };

    for n in 0..60 {
        run_mission(&store, n).await;
    }
    for n in 0..5 {
        record_outside_call(&store, n).await;
    }
    let head = env.head().await;
    wait_until("the relay to publish the log", WAIT, || mirrored(head)).await;

    // Given a subscriber killed with SIGKILL partway through, after some checkpoints.
    let reader = nats.url("reader", READER_PASSWORD);
    let mut first =
        Subscriber::start(&reader, &checkpoint, &["--batch", "10", "--max-rate", "100"]);
    wait_until("a checkpoint partway", WAIT, || async { checkpointed(&checkpoint) >= 40 }).await;
    first.kill();
    let killed_at = checkpointed(&checkpoint);
    assert!(killed_at < head, "killed at {killed_at} of {head}: the restart has events left");

    // When it is started again, it goes on from its checkpoint, and then follows live.
    let mut second = Subscriber::start(&reader, &checkpoint, &["--batch", "25"]);
    wait_until("the restart to catch up", WAIT, || async { checkpointed(&checkpoint) == head })
        .await;
    second.signal("USR1");
    assert_eq!(second.next_totals().await["position"], json!(head), "totals on demand");
    for n in 60..72 {
        run_mission(&store, n).await;
    }
    record_outside_call(&store, 5).await;
    let head = env.head().await;
    wait_until("it to follow the new events live", WAIT, || async {
        checkpointed(&checkpoint) == head
    })
    .await;
    second.signal("TERM");
    let totals = second.next_totals().await;
    let exit = tokio::task::spawn_blocking(move || {
        let mut second = second;
        second.child.wait().map(|status| status.code())
    });
    let exit = tokio::time::timeout(WAIT, exit).await.expect("it exits on SIGTERM").unwrap();
    assert_eq!(exit.unwrap(), Some(0), "exit code on SIGTERM");

    // Then its totals equal the log's, counted once.
    assert_eq!(totals["position"], json!(head));
    let expected = totals_from_the_log(&env.pool).await;
    assert_eq!(in_micro_dollars(&totals), expected, "subscriber (left) against SQL (right)");
    let completed: i64 =
        KINDS.iter().map(|kind| expected[kind]["completed"].as_i64().unwrap()).sum();
    assert!(completed > 30 && expected["(none)"]["llm"].as_object().unwrap().len() == 2);

    shutdown.cancel();
    relay.await.unwrap().unwrap();
}

/// What the README promises an outside program with the `reader` login: stream info and any
/// message by sequence, and no consumer of any kind (an ordered or ephemeral one included).
#[tokio::test]
async fn the_reader_gets_messages_by_sequence_and_may_create_no_consumer() {
    let dir = std::env::temp_dir().join(format!("brain-analytics-{}", Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    let nats = AccountsNats::start(&dir).await;
    let brain = bus::connect(&nats.url("brain", BRAIN_PASSWORD)).await.unwrap();
    let namespace = Namespace::parse("brain").unwrap();
    bus::ensure_stream(&bus::jetstream(brain.clone(), 1), &namespace).await.unwrap();
    brain.publish("brain.events.probe.1", "first".into()).await.unwrap();
    brain.flush().await.unwrap();

    let reader = bus::connect(&nats.url("reader", READER_PASSWORD)).await.unwrap();
    // Short: a refused request goes unanswered and ends at this timeout.
    let jetstream =
        async_nats::jetstream::ContextBuilder::new().timeout(Duration::from_secs(2)).build(reader);
    let mut stream = jetstream.get_stream("BRAIN_EVENTS").await.expect("stream info");
    wait_until("the message on the stream", WAIT, || {
        let stream = stream.clone();
        async move { stream.get_raw_message(1).await.is_ok() }
    })
    .await;
    let message = stream.get_raw_message(1).await.expect("a message by sequence");
    assert_eq!((message.sequence, &message.payload[..]), (1, &b"first"[..]));
    assert_eq!(stream.info().await.expect("stream info").state.last_sequence, 1);

    let ordered = async_nats::jetstream::consumer::push::OrderedConfig {
        deliver_subject: "_INBOX.analytics".into(),
        ..Default::default()
    };
    let ordered = stream.create_consumer(ordered).await;
    assert!(ordered.is_err(), "the reader created an ordered consumer");
    let ephemeral = async_nats::jetstream::consumer::pull::Config::default();
    let ephemeral = stream.create_consumer(ephemeral).await;
    assert!(ephemeral.is_err(), "the reader created an ephemeral pull consumer");
    let mut as_brain = bus::jetstream(brain, 1).get_stream("BRAIN_EVENTS").await.unwrap();
    let consumers = as_brain.info().await.unwrap().state.consumer_count;
    assert_eq!(consumers, 0, "no consumer exists");
}
