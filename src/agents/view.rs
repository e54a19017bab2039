//! The agent view in Redis: the store of the `agent_view` projector (one record per agent,
//! its state and last recorded heartbeat), the reads behind `GET /api/agents` and the
//! supervisor's sweep, and the ephemeral pings that say when each agent was last heard from.
//!
//! Keys, all under the namespace's hash tag so one script reaches them on a cluster:
//!
//! | key | type | holds |
//! |---|---|---|
//! | `{ns}:av:checkpoint` | string | last position applied |
//! | `{ns}:av:a:<id>` | hash | name, kind, owner, version, state, registered_at, seen_at, status, load, running (JSON), beat_at, restarts, restart_requested, key_id |
//! | `{ns}:av:ids` | sorted set | every agent, score 0: pages in id order |
//! | `{ns}:av:states` | hash | agents per state |
//! | `{ns}:av:kinds` | hash | agents registered per kind |
//! | `{ns}:av:watch_since` | string | when this view was filled from nothing: the supervisor's grace starts there |
//! | `{ns}:av:pings` | sorted set | active agents, score = the moment of the last heartbeat, recorded or not: the sweep's candidates |
//!
//! The pings are more than projected state: coalescing keeps unchanged heartbeats out of the
//! log (see `domain::heartbeat`), so the log knows an agent's last heartbeat only to within
//! the record interval. The projector puts the log's time there and the heartbeat route the
//! exact moment (`ZADD XX GT`: only for agents the view holds as active, never backwards), so
//! the supervisor never calls an agent silent that spoke a second ago. Pings lost with the
//! rest (Redis flushed) come back from the log's time, which is older: at worst an agent is
//! marked unresponsive early and recovers at its next heartbeat, both as events. A rebuild is
//! compared without them.

use std::collections::BTreeMap;

use domain::agent::AgentState;
use projections::agent_view::{AgentChange, parse_state, state_name};
use projections::{CommitError, ProjectionStore};
use redis::aio::ConnectionManager;
use redis::{AsyncCommands, Script};
use serde::Serialize;

use crate::config::Namespace;

const COMMIT: &str = include_str!("view_commit.lua");
const SWAP: &str = include_str!("view_swap.lua");

/// Most agents one page of the list holds.
pub const PAGE_MAX: usize = 500;
/// Records one list request reads while filtering, past which it returns a shorter page and
/// a cursor: a filter that matches little costs bounded work per request.
pub const LIST_SCAN_MAX: usize = 5_000;

/// One agent's record.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct AgentRecord {
    pub agent_id: String,
    pub name: String,
    pub kind: String,
    pub owner: String,
    pub version: String,
    pub state: AgentState,
    pub registered_at_ms: i64,
    /// Its last heartbeat: the exact moment when this process knows it, else the last one
    /// the log recorded.
    pub last_seen_ms: i64,
    pub status: String,
    pub load: f64,
    /// Missions it said it runs in its last recorded heartbeat.
    pub running: Vec<String>,
    pub restarts: u32,
    pub restart_requested: bool,
    /// When the log last recorded a heartbeat of it (coalescing skips unchanged ones).
    pub last_recorded_heartbeat_ms: Option<i64>,
    /// The API key that registered it, which alone may act for it (none for built-ins).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_id: Option<String>,
}

/// The agent view of one namespace, at the live keys or at another base (a rebuild).
#[derive(Clone)]
pub struct AgentViewStore {
    connection: ConnectionManager,
    /// The clock the commit stamps `watch_since` with: the supervisor judges on the
    /// database's, so the serve passes that one.
    clock: Option<crate::clock::LeaseClock>,
    /// `{ns}:av:`, or another prefix under the tag for a rebuild beside the live one.
    base: String,
    commit: Script,
}

const FIELDS: [&str; 14] = [
    "name",
    "kind",
    "owner",
    "version",
    "state",
    "registered_at",
    "seen_at",
    "status",
    "load",
    "running",
    "restarts",
    "restart_requested",
    "beat_at",
    "key_id",
];

impl AgentViewStore {
    pub fn new(connection: ConnectionManager, namespace: &Namespace) -> AgentViewStore {
        AgentViewStore::at(connection, namespace, "av")
    }

    /// The view under `{ns}:<name>:`: `av` is the live one.
    pub fn at(connection: ConnectionManager, namespace: &Namespace, name: &str) -> AgentViewStore {
        AgentViewStore {
            connection,
            clock: None,
            base: format!("{{{namespace}}}:{name}:"),
            commit: Script::new(COMMIT),
        }
    }

    /// Stamps `watch_since` on `clock` rather than this machine's wall clock.
    pub fn with_clock(mut self, clock: crate::clock::LeaseClock) -> AgentViewStore {
        self.clock = Some(clock);
        self
    }

    fn record_key(&self, agent_id: &str) -> String {
        format!("{}a:{agent_id}", self.base)
    }

    fn pings(&self) -> String {
        format!("{}pings", self.base)
    }

    /// Records that `agent_id` was heard from at `at_ms`, if the view holds it as active,
    /// and never backwards.
    pub async fn ping(&self, agent_id: &str, at_ms: i64) -> Result<(), redis::RedisError> {
        redis::cmd("ZADD")
            .arg(self.pings())
            .arg("XX")
            .arg("GT")
            .arg(at_ms)
            .arg(agent_id)
            .query_async::<()>(&mut self.connection.clone())
            .await
    }

    /// One agent's record, or `None` when the view does not have it (yet).
    pub async fn get(&self, agent_id: &str) -> Result<Option<AgentRecord>, redis::RedisError> {
        Ok(self.get_many(&[agent_id.to_owned()]).await?.pop().flatten())
    }

    async fn get_many(
        &self,
        ids: &[String],
    ) -> Result<Vec<Option<AgentRecord>>, redis::RedisError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        for id in ids {
            pipe.cmd("HMGET").arg(self.record_key(id)).arg(&FIELDS[..]);
            pipe.zscore(self.pings(), id);
        }
        type Row = (Vec<Option<String>>, Option<f64>);
        let rows: Vec<Row> = pipe.query_async(&mut self.connection.clone()).await?;
        Ok(ids.iter().zip(rows).map(|(id, (fields, ping))| record(id, fields, ping)).collect())
    }

    /// A page of agents in id order after `after`, of `kind` and in `state` when given: at most
    /// `limit` of them, and the cursor to continue from when there may be more.
    pub async fn list(
        &self,
        after: Option<&str>,
        limit: usize,
        kind: Option<&str>,
        state: Option<AgentState>,
    ) -> Result<(Vec<AgentRecord>, Option<String>), redis::RedisError> {
        let mut page = Vec::new();
        let mut cursor = after.map(|after| format!("({after}")).unwrap_or_else(|| "-".into());
        let mut scanned = 0;
        let chunk = limit.clamp(1, PAGE_MAX);
        loop {
            let ids: Vec<String> = self
                .connection
                .clone()
                .zrangebylex_limit(format!("{}ids", self.base), &cursor, "+", 0, chunk as isize)
                .await?;
            let exhausted = ids.len() < chunk;
            scanned += ids.len();
            let Some(last) = ids.last().cloned() else { return Ok((page, None)) };
            for record in self.get_many(&ids).await?.into_iter().flatten() {
                let wanted = kind.is_none_or(|kind| record.kind == kind)
                    && state.is_none_or(|state| record.state == state);
                if wanted {
                    page.push(record);
                }
                if page.len() == limit {
                    let next = page.last().map(|record| record.agent_id.clone());
                    return Ok((page, next));
                }
            }
            if exhausted {
                return Ok((page, None));
            }
            cursor = format!("({last}");
            if scanned >= LIST_SCAN_MAX {
                return Ok((page, Some(last)));
            }
        }
    }

    /// Agents per state, and agents registered per kind.
    pub async fn counts(
        &self,
    ) -> Result<(BTreeMap<String, u64>, BTreeMap<String, u64>), redis::RedisError> {
        let mut connection = self.connection.clone();
        let states: BTreeMap<String, i64> =
            connection.hgetall(format!("{}states", self.base)).await?;
        let kinds: BTreeMap<String, i64> =
            connection.hgetall(format!("{}kinds", self.base)).await?;
        let positive = |map: BTreeMap<String, i64>| {
            map.into_iter().filter(|(_, n)| *n > 0).map(|(k, n)| (k, n as u64)).collect()
        };
        Ok((positive(states), positive(kinds)))
    }

    /// Active agents not heard from since `before_ms`, oldest first, at most `limit`, each
    /// with when it was last heard from.
    pub async fn silent(
        &self,
        before_ms: i64,
        limit: usize,
    ) -> Result<Vec<(String, i64)>, redis::RedisError> {
        let silent: Vec<(String, f64)> = redis::cmd("ZRANGE")
            .arg(self.pings())
            .arg("-inf")
            .arg(format!("({before_ms}"))
            .arg("BYSCORE")
            .arg("LIMIT")
            .arg(0)
            .arg(limit)
            .arg("WITHSCORES")
            .query_async(&mut self.connection.clone())
            .await?;
        Ok(silent.into_iter().map(|(id, at)| (id, at as i64)).collect())
    }

    /// When `agent_id` was last heard from, if the view holds it as active.
    pub async fn ping_of(&self, agent_id: &str) -> Result<Option<i64>, redis::RedisError> {
        let ping: Option<f64> = self.connection.clone().zscore(self.pings(), agent_id).await?;
        Ok(ping.map(|ping| ping as i64))
    }

    /// Every key of this view with its contents, but for what is not projected state (the
    /// checkpoint, the pings, the grace's start).
    pub async fn snapshot(&self) -> Result<BTreeMap<String, String>, redis::RedisError> {
        let skip = ["checkpoint", "pings", "watch_since"];
        crate::kv::snapshot(&mut self.connection.clone(), &self.base, &skip).await
    }

    /// Deletes this view's keys.
    pub async fn drop_all(&self) -> Result<(), redis::RedisError> {
        crate::kv::drop_prefix(&mut self.connection.clone(), &self.base).await
    }

    /// When this view began to be filled from nothing, if it has.
    pub async fn watch_since(&self) -> Result<Option<i64>, redis::RedisError> {
        self.connection.clone().get(format!("{}watch_since", self.base)).await
    }

    /// Swaps `rebuilt` (a view of its own, built from the log) in for this one in one step
    /// (`view_swap.lua`), if it has reached this view's checkpoint: `Some(position)`, or
    /// `None` when this view has moved past it.
    pub async fn swap_in(
        &self,
        rebuilt: &AgentViewStore,
    ) -> Result<Option<u64>, redis::RedisError> {
        let (swapped, position): (i64, u64) = Script::new(SWAP)
            .key(format!("{}checkpoint", self.base))
            .key(format!("{}checkpoint", rebuilt.base))
            .arg(&self.base)
            .arg(&rebuilt.base)
            .invoke_async(&mut self.connection.clone())
            .await?;
        Ok((swapped == 1).then_some(position))
    }

    pub async fn position(&self) -> Result<u64, redis::RedisError> {
        let position: Option<u64> =
            self.connection.clone().get(format!("{}checkpoint", self.base)).await?;
        Ok(position.unwrap_or(0))
    }
}

fn record(id: &str, fields: Vec<Option<String>>, ping: Option<f64>) -> Option<AgentRecord> {
    let [
        name,
        kind,
        owner,
        version,
        state,
        registered_at,
        seen_at,
        status,
        load,
        running,
        restarts,
        restart_requested,
        beat_at,
        key_id,
    ]: [Option<String>; 14] = fields.try_into().ok()?;
    let number = |field: &Option<String>| field.as_deref().and_then(|v| v.parse::<i64>().ok());
    let seen_at = number(&seen_at).unwrap_or(0);
    Some(AgentRecord {
        agent_id: id.to_owned(),
        name: name?,
        kind: kind.unwrap_or_default(),
        owner: owner.unwrap_or_default(),
        version: version.unwrap_or_default(),
        state: state.as_deref().and_then(parse_state).unwrap_or_default(),
        registered_at_ms: number(&registered_at).unwrap_or(0),
        last_seen_ms: ping.map_or(seen_at, |ping| seen_at.max(ping as i64)),
        status: status.unwrap_or_default(),
        load: load.as_deref().and_then(|v| v.parse().ok()).unwrap_or(0.0),
        running: running.as_deref().and_then(|v| serde_json::from_str(v).ok()).unwrap_or_default(),
        restarts: number(&restarts).unwrap_or(0) as u32,
        restart_requested: restart_requested.as_deref() == Some("1"),
        last_recorded_heartbeat_ms: number(&beat_at),
        key_id: key_id.filter(|key| !key.is_empty()),
    })
}

impl ProjectionStore<AgentChange> for AgentViewStore {
    type Error = redis::RedisError;

    async fn checkpoint(&mut self) -> Result<u64, redis::RedisError> {
        self.position().await
    }

    async fn commit(
        &mut self,
        after: u64,
        up_to: u64,
        changes: Vec<AgentChange>,
    ) -> Result<(), CommitError<redis::RedisError>> {
        let mut invocation = self.commit.prepare_invoke();
        invocation.key(format!("{}checkpoint", self.base));
        let now = self.clock.as_ref().map_or_else(crate::clock::now_ms, |clock| clock.now_ms());
        invocation.arg(&self.base).arg(after).arg(up_to).arg(now);
        for change in changes {
            match change {
                AgentChange::Register { agent_id, name, kind, owner, version, key_id, at_ms } => {
                    invocation.arg("R").arg(agent_id).arg(name).arg(kind);
                    invocation.arg(owner).arg(version).arg(at_ms).arg(key_id);
                }
                AgentChange::State { agent_id, state, seen_at_ms } => {
                    invocation.arg("S").arg(agent_id).arg(state_name(state));
                    invocation.arg(seen_at_ms.map(|at| at.to_string()).unwrap_or_default());
                }
                AgentChange::Restart { agent_id, requested, version } => {
                    invocation.arg("T").arg(agent_id).arg(if requested { "1" } else { "0" });
                    invocation.arg(version);
                }
                AgentChange::Seen { agent_id, beat, at_ms } => {
                    let running = serde_json::to_string(&beat.running).unwrap_or_default();
                    invocation.arg("B").arg(agent_id).arg(beat.status).arg(beat.load);
                    invocation.arg(running).arg(at_ms);
                }
            }
        }
        let (applied, position): (i64, u64) = invocation
            .invoke_async(&mut self.connection.clone())
            .await
            .map_err(CommitError::Store)?;
        if applied == 1 { Ok(()) } else { Err(CommitError::Moved { actual: position }) }
    }

    async fn reset(&mut self) -> Result<(), redis::RedisError> {
        crate::kv::drop_prefix(&mut self.connection.clone(), &self.base).await
    }
}
