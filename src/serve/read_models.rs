//! The read models a serve keeps, by name, and what `brain projections` does with them from
//! any process, while serves run: list them, say how far each is behind the log, and rebuild
//! one from the log beside the live one, then swap it in.
//!
//! A rebuild never takes a model away from its readers: a PostgreSQL model is built in shadow
//! tables swapped in by renames in one transaction (`eventlog::projectors::rebuild`), the queue
//! in a fresh Redis generation switched in one step (`missions::queue::rebuild`), the agent
//! view beside the live one and swapped in by one script (`agents::view_rebuild`). The live
//! projector, wherever it runs, commits against the same checkpoint, so it waits out the swap
//! and carries on from the rebuilt position. The mission tree, whose projector issues
//! commands as it applies events, is swapped in at the live position instead, never past it
//! (`eventlog::projectors::rebuild_at_live`).
//!
//! Each reset of a model (a rebuild, or a heal of one that lost its state) is recorded in
//! `projector_resets`, which `status` reads.

use std::time::{Duration, Instant};

use anyhow::Context;
use projections::mission_queue::Scoring;
use serde::Serialize;
use sqlx::PgPool;
use time::OffsetDateTime;

use crate::agents::view::AgentViewStore;
use crate::agents::view_rebuild::SHADOW;
use crate::config::{Namespace, Services};
use crate::eventlog::projectors::{self, record_reset};
use crate::eventlog::{db, store};
use crate::missions::queue::Queue;

/// Where a read model lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Home {
    Postgres,
    Redis,
}

/// One read model of a serve.
#[derive(Debug, Serialize)]
pub struct ReadModel {
    pub name: &'static str,
    pub home: Home,
    /// What it holds, for people.
    pub holds: &'static str,
    /// Whether `brain projections rebuild` can rebuild it beside the live one.
    pub rebuilds: bool,
}

/// Every read model a serve keeps.
pub const READ_MODELS: &[ReadModel] = &[
    ReadModel {
        name: projections::mission_queue::NAME,
        home: Home::Redis,
        holds: "the queue workers claim from: ready, delayed and running missions by kind",
        rebuilds: true,
    },
    ReadModel {
        name: projections::agent_view::NAME,
        home: Home::Redis,
        holds: "each agent's state and last heartbeat, for the supervisor and GET /api/agents",
        rebuilds: true,
    },
    ReadModel {
        name: projections::mission_list::NAME,
        home: Home::Postgres,
        holds: "the mission list behind GET /api/missions",
        rebuilds: true,
    },
    ReadModel {
        name: projections::mission_tree::NAME,
        home: Home::Postgres,
        holds: "links between parent and child missions; reports children's ends to parents",
        rebuilds: true,
    },
    ReadModel {
        name: projections::llm_usage::NAME,
        home: Home::Postgres,
        holds: "LLM calls, tokens and cost, behind GET /api/llm/usage",
        rebuilds: true,
    },
    ReadModel {
        name: projections::conversation_list::NAME,
        home: Home::Postgres,
        holds: "chat conversations, behind GET /api/chat/conversations",
        rebuilds: true,
    },
    ReadModel {
        name: projections::event_type_stats::NAME,
        home: Home::Postgres,
        holds: "events counted by stream and event type",
        rebuilds: true,
    },
];

/// The read model called `name`, or an error listing the names there are.
pub fn named(name: &str) -> anyhow::Result<&'static ReadModel> {
    READ_MODELS.iter().find(|model| model.name == name).with_context(|| {
        let names: Vec<&str> = READ_MODELS.iter().map(|model| model.name).collect();
        format!("{name:?} is no read model; read models: {}", names.join(", "))
    })
}

/// What the services hold of the read models: their positions and resets.
pub struct Models {
    pool: PgPool,
    redis: redis::aio::ConnectionManager,
    namespace: Namespace,
}

/// Most time one read of a model's position, or of the log, may take.
pub const READ_TIMEOUT: Duration = Duration::from_secs(10);

/// A model's last reset, as recorded.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Reset {
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
    /// `rebuild`, `lost_state` or `ahead_of_log`.
    pub reason: String,
    /// The position the model was at after the reset.
    pub position: u64,
}

/// How far one model is behind the log.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Status {
    pub name: &'static str,
    pub home: Home,
    pub position: u64,
    /// Events between its position and the log's head.
    pub lag_events: u64,
    /// Time between the event at its position and the head's (0 when at the head).
    pub lag_seconds: f64,
    /// Events its position moved by per second over the sample.
    pub rate: f64,
    pub last_reset: Option<Reset>,
}

impl Models {
    pub fn new(pool: PgPool, redis: redis::aio::ConnectionManager, namespace: Namespace) -> Models {
        Models { pool, redis, namespace }
    }

    /// Deletes the Redis models of this namespace, the queue and the agent view (a bench's
    /// cleanup).
    pub async fn drop_redis(&self) -> anyhow::Result<()> {
        self.queue().drop_all().await?;
        Ok(AgentViewStore::new(self.redis.clone(), &self.namespace).drop_all().await?)
    }

    pub async fn connect(services: &Services) -> anyhow::Result<Models> {
        let pool = db::connect(&services.database_url, 4).await?;
        db::migrate(&pool).await?;
        let client = redis::Client::open(services.redis_url.as_str()).context("REDIS_URL")?;
        let connect = redis::aio::ConnectionManager::new(client);
        let redis = tokio::time::timeout(READ_TIMEOUT, connect)
            .await
            .context("Redis did not answer in time")?
            .context("Redis")?;
        Ok(Models { pool, redis, namespace: services.namespace.clone() })
    }

    fn queue(&self) -> Queue {
        Queue::new(self.redis.clone(), &self.namespace)
    }

    /// The position `model` reflects.
    pub async fn position(&self, model: &ReadModel) -> anyhow::Result<u64> {
        let read = async {
            match model.name {
                projections::mission_queue::NAME => Ok(self.queue().checkpoint().await?),
                projections::agent_view::NAME => {
                    let view = crate::agents::view::AgentViewStore::new(
                        self.redis.clone(),
                        &self.namespace,
                    );
                    Ok(view.position().await?)
                }
                name => Ok(projectors::checkpoint(&self.pool, name).await?),
            }
        };
        tokio::time::timeout(READ_TIMEOUT, read)
            .await
            .with_context(|| format!("{}'s position did not come in time", model.name))?
    }

    /// Every model's status: positions read twice, `sample` apart, for the rate.
    pub async fn status(&self, sample: Duration) -> anyhow::Result<Vec<Status>> {
        let mut first = Vec::with_capacity(READ_MODELS.len());
        for model in READ_MODELS {
            first.push(self.position(model).await?);
        }
        let started = Instant::now();
        tokio::time::sleep(sample).await;
        let elapsed = started.elapsed().as_secs_f64().max(f64::EPSILON);
        let head = store::head(&self.pool).await?;
        let head_at = self.recorded_at(head).await?;
        let mut statuses = Vec::with_capacity(READ_MODELS.len());
        for (model, before) in READ_MODELS.iter().zip(first) {
            let position = self.position(model).await?;
            let lag_seconds = match (head_at, self.recorded_at(position).await?) {
                (Some(head_at), Some(at)) if position < head => {
                    (head_at - at).as_seconds_f64().max(0.0)
                }
                (Some(head_at), None) if position < head => {
                    let first_at = self.recorded_at(1).await?.unwrap_or(head_at);
                    (head_at - first_at).as_seconds_f64().max(0.0)
                }
                _ => 0.0,
            };
            statuses.push(Status {
                name: model.name,
                home: model.home,
                position,
                lag_events: head.saturating_sub(position),
                lag_seconds,
                rate: position.saturating_sub(before) as f64 / elapsed,
                last_reset: self.last_reset(model.name).await?,
            });
        }
        Ok(statuses)
    }

    /// When the event at `position` was recorded (none for position 0 or past the head).
    async fn recorded_at(&self, position: u64) -> anyhow::Result<Option<OffsetDateTime>> {
        if position == 0 {
            return Ok(None);
        }
        let at = sqlx::query_scalar("SELECT recorded_at FROM events WHERE global_position = $1")
            .bind(i64::try_from(position).unwrap_or(i64::MAX))
            .fetch_optional(&self.pool);
        Ok(tokio::time::timeout(READ_TIMEOUT, at).await.context("the log did not answer")??)
    }

    async fn last_reset(&self, name: &str) -> anyhow::Result<Option<Reset>> {
        let row: Option<(OffsetDateTime, String, i64)> = sqlx::query_as(
            "SELECT at, reason, position FROM projector_resets WHERE projector = $1
             ORDER BY id DESC LIMIT 1",
        )
        .bind(name)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(|(at, reason, position)| Reset { at, reason, position: position as u64 }))
    }

    /// Rebuilds `model` from the log beside the live one and swaps it in; returns the
    /// position the rebuilt model reached.
    pub async fn rebuild(&self, model: &ReadModel, scoring: Scoring) -> anyhow::Result<u64> {
        use crate::eventlog::projectors::event_type_stats::EventTypeStatsWriter;
        let pool = &self.pool;
        let reached = match model.name {
            projections::mission_queue::NAME => {
                crate::missions::queue::rebuild(pool, &self.queue(), scoring, true).await?.0
            }
            projections::mission_list::NAME => {
                let writer = crate::missions::list::MissionListWriter;
                projectors::rebuild(pool, projections::mission_list::MissionList, writer).await?
            }
            projections::llm_usage::NAME => {
                let writer = crate::llm::usage::LlmUsageWriter;
                projectors::rebuild(pool, projections::llm_usage::LlmUsage, writer).await?
            }
            projections::conversation_list::NAME => {
                let writer = crate::agents::conversations::ConversationListWriter;
                let projector = projections::conversation_list::ConversationList;
                projectors::rebuild(pool, projector, writer).await?
            }
            projections::event_type_stats::NAME => {
                let projector = projections::event_type_stats::EventTypeStats;
                projectors::rebuild(pool, projector, EventTypeStatsWriter).await?
            }
            projections::mission_tree::NAME => {
                let writer = crate::missions::tree_store::TreeLinksWriter;
                let projector = projections::mission_tree::MissionTree;
                projectors::rebuild_at_live(pool, projector, writer).await?
            }
            projections::agent_view::NAME => {
                let live = AgentViewStore::new(self.redis.clone(), &self.namespace);
                let shadow = AgentViewStore::at(self.redis.clone(), &self.namespace, SHADOW);
                crate::agents::view_rebuild::rebuild(pool, &live, shadow).await?
            }
            name => anyhow::bail!("{name} is no read model that can be rebuilt"),
        };
        record_reset(pool, model.name, "rebuild", reached).await;
        Ok(reached)
    }
}
