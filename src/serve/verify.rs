//! `brain events verify`, wired: the [`Verifier`] with every read model of [`READ_MODELS`]
//! (the composition root is what knows them all), and the command line around it: a table or
//! `--json` on stdout, a progress line with rate and ETA on stderr, exit 0 clean, 1
//! findings, 2 could not run. `POST /api/admin/verify` runs the same verifier.

use std::io::Write;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use projections::mission_queue::Scoring;
use sqlx::PgPool;

use super::read_models::READ_MODELS;
use crate::agents::view::AgentViewStore;
use crate::agents::view_check::AgentViewCheck;
use crate::config::Namespace;
use crate::eventlog::audit::tables::TableCheck;
use crate::eventlog::audit::{self, ModelCheck, Options, Tick, Unchecked, Verifier, VerifyError};
use crate::eventlog::cli::{FAILED_EXIT, VerifyArgs};
use crate::eventlog::{bus, db};
use crate::missions::queue::Queue;
use crate::missions::queue::verify::QueueCheck;

/// Longest the CLI waits for NATS or Redis to answer at start.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How often the progress line is redrawn, once a check has run this long.
pub const PROGRESS_EVERY: Duration = Duration::from_secs(1);

/// The check of each read model, in [`READ_MODELS`]' order, the Redis ones on `redis`.
pub fn model_checks(
    pool: &PgPool,
    redis: redis::aio::ConnectionManager,
    namespace: &Namespace,
    scoring: Scoring,
) -> Vec<Box<dyn ModelCheck>> {
    let queue = Queue::new(redis.clone(), namespace);
    READ_MODELS
        .iter()
        .map(|model| -> Box<dyn ModelCheck> {
            let pool = pool.clone();
            match model.name {
                projections::mission_queue::NAME => {
                    Box::new(QueueCheck { pool, queue: queue.clone(), scoring })
                }
                projections::mission_list::NAME => Box::new(TableCheck::new(
                    pool,
                    projections::mission_list::MissionList,
                    crate::missions::list::MissionListWriter,
                )),
                projections::llm_usage::NAME => Box::new(TableCheck::new(
                    pool,
                    projections::llm_usage::LlmUsage,
                    crate::llm::usage::LlmUsageWriter,
                )),
                projections::conversation_list::NAME => Box::new(TableCheck::new(
                    pool,
                    projections::conversation_list::ConversationList,
                    crate::agents::conversations::ConversationListWriter,
                )),
                projections::event_type_stats::NAME => Box::new(TableCheck::new(
                    pool,
                    projections::event_type_stats::EventTypeStats,
                    crate::eventlog::projectors::event_type_stats::EventTypeStatsWriter,
                )),
                projections::agent_view::NAME => Box::new(AgentViewCheck {
                    pool,
                    live: AgentViewStore::new(redis.clone(), namespace),
                    scratch: AgentViewStore::at(redis.clone(), namespace, "avv"),
                }),
                projections::mission_tree::NAME => Box::new(TableCheck::new(
                    pool,
                    projections::mission_tree::MissionTree,
                    crate::missions::tree_store::TreeLinksWriter,
                )),
                _ => Box::new(Unchecked {
                    name: model.name,
                    reason: "no check is written for this read model",
                }),
            }
        })
        .collect()
}

/// [`model_checks`] for a serve's `POST /api/admin/verify`, made when a verify starts, on a
/// Redis connection of their own.
pub fn model_checks_later(
    pool: PgPool,
    redis: redis::Client,
    namespace: Namespace,
    scoring: Scoring,
) -> audit::ModelChecks {
    std::sync::Arc::new(move || {
        let (pool, redis, namespace) = (pool.clone(), redis.clone(), namespace.clone());
        Box::pin(async move {
            let connection = tokio::time::timeout(CONNECT_TIMEOUT, redis.get_connection_manager())
                .await
                .map_err(|_| anyhow::anyhow!("Redis did not answer in time"))??;
            Ok(model_checks(&pool, connection, &namespace, scoring))
        })
    })
}

/// Runs `brain events verify` and exits with its status.
pub async fn run_cli(args: VerifyArgs) -> anyhow::Result<()> {
    let status = match execute(args).await {
        Ok(status) => status,
        Err(error) => {
            eprintln!("brain events verify: could not run: {error:#}");
            FAILED_EXIT
        }
    };
    if status != 0 {
        std::process::exit(status);
    }
    Ok(())
}

async fn execute(args: VerifyArgs) -> anyhow::Result<i32> {
    let services = &args.services;
    let pool = db::connect(&services.database_url, 4).await?;
    let redis = redis::Client::open(services.redis_url.as_str())?;
    let redis = tokio::time::timeout(CONNECT_TIMEOUT, redis.get_connection_manager())
        .await
        .map_err(|_| anyhow::anyhow!("Redis did not answer in time"))??;
    let jetstream =
        match tokio::time::timeout(CONNECT_TIMEOUT, bus::connect(&services.nats_url)).await {
            Ok(Ok(client)) => Ok(bus::jetstream(client, 1)),
            Ok(Err(error)) => Err(error.to_string()),
            Err(_) => Err("NATS did not answer in time".to_owned()),
        };
    let scoring =
        Scoring { weights: args.queue_weights, aging_ms: args.queue_aging_s.saturating_mul(1_000) };
    let verifier = verifier(pool, redis, services.namespace.clone(), jetstream, scoring);
    let options = Options { only: args.only, sample: args.sample };
    let line = ProgressLine::new();
    let report = match verifier.run(&options, &|tick| line.show(tick)).await {
        Ok(report) => report,
        Err(
            error @ (VerifyError::UnknownCheck(..) | VerifyError::EmptySample | VerifyError::Busy),
        ) => {
            line.finish();
            eprintln!("brain events verify: {error}");
            return Ok(FAILED_EXIT);
        }
        Err(error) => return Err(error.into()),
    };
    line.finish();
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        print!("{}", audit::describe(&report));
    }
    Ok(report.exit_code())
}

/// The verifier over these services, with every read model's check.
pub fn verifier(
    pool: PgPool,
    redis: redis::aio::ConnectionManager,
    namespace: Namespace,
    jetstream: Result<async_nats::jetstream::Context, String>,
    scoring: Scoring,
) -> Verifier {
    let models = model_checks(&pool, redis, &namespace, scoring);
    Verifier { pool, namespace, jetstream, models }
}

/// The progress line on stderr: the check, how far, the rate and the time left; nothing for
/// a check done within [`PROGRESS_EVERY`].
struct ProgressLine {
    state: Mutex<ProgressState>,
}

struct ProgressState {
    check: String,
    started: Instant,
    last_shown: Option<Instant>,
    shown: bool,
}

impl ProgressLine {
    fn new() -> ProgressLine {
        let state = ProgressState {
            check: String::new(),
            started: Instant::now(),
            last_shown: None,
            shown: false,
        };
        ProgressLine { state: Mutex::new(state) }
    }

    fn show(&self, tick: Tick<'_>) {
        let mut state = self.state.lock().expect("not poisoned");
        if state.check != tick.check {
            state.check = tick.check.to_owned();
            state.started = Instant::now();
        }
        let elapsed = state.started.elapsed();
        if elapsed < PROGRESS_EVERY
            || state.last_shown.is_some_and(|t| t.elapsed() < PROGRESS_EVERY)
        {
            return;
        }
        let rate = tick.done as f64 / elapsed.as_secs_f64().max(1e-9);
        let eta = tick.total.saturating_sub(tick.done) as f64 / rate.max(1e-9);
        eprint!(
            "\rverify {}: {} of {}, {rate:.0}/s, {eta:.0} s left      ",
            tick.check, tick.done, tick.total
        );
        let _ = std::io::stderr().flush();
        state.last_shown = Some(Instant::now());
        state.shown = true;
    }

    fn finish(&self) {
        if self.state.lock().expect("not poisoned").shown {
            eprintln!();
        }
    }
}
