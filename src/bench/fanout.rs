//! `brain bench fanout`: one `supervisor` mission fanning out to `--children` sub-missions on
//! a serve with `--workers` slots, against a provider that answers at once ([`llm_fake`]:
//! `spawn_missions` first, then an answer). It reports, per round and as medians, the time
//! from the parent's enqueue to its completion, and where it went: to the suspension (the
//! parent's first step and the children's enqueue), running the children, from the last
//! child's end to the parent's resume (the `mission_tree` projector's reaction), and from
//! the resume to the completion (the parent's second step). The children run on the `echo`
//! agent (`coder=echo`) by default, so the figure is the tree's own cost; `--thinking-children`
//! runs them as `coder` agents that take two steps each through the same fake.
//!
//! [`llm_fake`]: super::llm_fake

use std::time::{Duration, Instant};

use serde_json::json;
use sqlx::PgPool;
use time::OffsetDateTime;

use super::own_serve::InstantServe;

#[derive(Debug, clap::Args)]
pub struct FanoutBench {
    #[command(flatten)]
    services: super::BenchServices,
    /// Sub-missions the parent asks for (at most 100, the per-call limit).
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=100))]
    children: u32,
    /// Missions the serve runs at once.
    #[arg(long, default_value_t = 4)]
    workers: usize,
    /// Parents, one after the other.
    #[arg(long, default_value_t = 5)]
    rounds: u32,
    /// Run the children as `coder` agents (two steps each through the fake) instead of echo.
    #[arg(long)]
    thinking_children: bool,
}

/// Milliseconds between two recorded times.
fn ms(from: OffsetDateTime, to: OffsetDateTime) -> f64 {
    (to - from).whole_microseconds() as f64 / 1_000.0
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// Where one round's time went, in milliseconds: enqueue to completion, to the suspension,
/// the children, the last child's end to the resume, the resume to the completion.
type Round = [f64; 5];

impl FanoutBench {
    pub async fn run(self) -> anyhow::Result<()> {
        let agents =
            if self.thinking_children { "supervisor,coder" } else { "supervisor,coder=echo" };
        let vars = [
            ("BRAIN_WORKERS", self.workers.to_string()),
            ("BRAIN_WORKER_AGENTS", agents.to_owned()),
            ("BRAIN_SUPERVISOR_KINDS", "coder".to_owned()),
        ];
        let (database, namespace) = ("brain_bench_fanout", "bench_fanout");
        let serve =
            InstantServe::start(&self.services, database, namespace, &vars, self.children).await?;
        let outcome = self.measure(&serve).await;
        serve.drop_all().await?;
        outcome
    }

    async fn measure(&self, serve: &InstantServe) -> anyhow::Result<()> {
        println!(
            "fan-out: 1 supervisor mission -> {} {} children, {} worker slots, provider answering at once",
            self.children,
            if self.thinking_children { "coder (two steps each)" } else { "echo" },
            self.workers
        );
        let mut rounds = Vec::new();
        for round in 1..=self.rounds {
            let id = self.parent_finished(serve, round).await?;
            let row = times(&serve.pool, &id).await?;
            println!(
                "  round {round}: {:.0} ms enqueue to completion (to suspended {:.0}, children {:.0}, last child to resumed {:.0}, resumed to completed {:.0})",
                row[0], row[1], row[2], row[3], row[4]
            );
            rounds.push(row);
        }
        let column = |k: usize| median(&mut rounds.iter().map(|row| row[k]).collect::<Vec<_>>());
        let children = column(2);
        println!(
            "  median: {:.0} ms enqueue to completion (to suspended {:.0}, children {:.0}, last child to resumed {:.0}, resumed to completed {:.0}); {:.0} children/s",
            column(0),
            column(1),
            children,
            column(3),
            column(4),
            f64::from(self.children) / (children / 1_000.0)
        );
        Ok(())
    }

    /// Enqueues round `round`'s parent and waits (at most 5 minutes) until it completed;
    /// returns its id.
    async fn parent_finished(&self, serve: &InstantServe, round: u32) -> anyhow::Result<String> {
        let (client, url) = (&serve.client, &serve.serve.url);
        let body = json!({ "name": format!("fan out {round}"), "agent": "supervisor", "payload": { "prompt": "split it" } });
        let response =
            client.post(format!("{url}/api/missions/enqueue")).json(&body).send().await?;
        anyhow::ensure!(response.status().is_success(), "enqueue: {}", response.status());
        let id = response.json::<serde_json::Value>().await?["mission_id"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let deadline = Instant::now() + Duration::from_secs(300);
        let status = loop {
            let view: serde_json::Value =
                client.get(format!("{url}/api/missions/{id}")).send().await?.json().await?;
            let status = view["status"].as_str().unwrap_or_default().to_owned();
            if status == "completed" || status == "failed" || status == "cancelled" {
                break status;
            }
            anyhow::ensure!(Instant::now() < deadline, "the parent did not finish in 5 min");
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        anyhow::ensure!(status == "completed", "the parent {id} ended {status}");
        Ok(id)
    }
}

/// Where the time of parent `id` went, from its history and its children's.
async fn times(pool: &PgPool, id: &str) -> anyhow::Result<Round> {
    let at = |event_type: &'static str| {
        sqlx::query_scalar::<_, OffsetDateTime>(
            "SELECT recorded_at FROM events WHERE stream_type = 'mission'
             AND stream_id = $1 AND event_type = $2 ORDER BY version LIMIT 1",
        )
        .bind(id)
        .bind(event_type)
        .fetch_one(pool)
    };
    let enqueued = at("MissionEnqueued").await?;
    let suspended = at("MissionSuspended").await?;
    let resumed = at("MissionResumed").await?;
    let completed = at("MissionCompleted").await?;
    let last_child_end: OffsetDateTime = sqlx::query_scalar(
        "SELECT max(e.recorded_at) FROM events e JOIN mission_links l ON l.child_id = e.stream_id
         WHERE l.parent_id = $1 AND e.event_type IN ('MissionCompleted', 'MissionAttemptFailed', 'MissionCancelled')",
    )
    .bind(id)
    .fetch_one(pool)
    .await?;
    Ok([
        ms(enqueued, completed),
        ms(enqueued, suspended),
        ms(suspended, last_child_end),
        ms(last_child_end, resumed),
        ms(resumed, completed),
    ])
}
