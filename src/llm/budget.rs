//! Budgets enforced before a call is sent. Each call reserves its worst case (its input
//! estimate plus `max_tokens`, at the dearest price among its route's targets) against every
//! budget that applies: the mission's own, the daily budget of the mission's agent kind, the
//! calling API key's daily and lifetime budgets (its `KeyLimits`), and the deployment's daily
//! budget. A call that would pass one is not sent (`budget_exceeded`,
//! naming the budget); one that is sent settles its usage when it ends: the provider's, or
//! where it reported none the gateway's estimate (`estimate`), so no answered call settles at
//! 0. What is in flight is held at its worst, so concurrent calls cannot overspend: the output
//! is bounded by the `max_tokens` sent with the call (the gateway sends the reserved one when
//! the route sets none), and only an input estimate that fell short (text of under three bytes
//! a token) can let a call use more than was held. An estimated input settles at exactly what
//! was held for it; an estimated output errs high, and may settle above its hold.
//!
//! The counters are in Redis (`budget.lua`, one atomic step per reserve and settle), and the
//! spend they start from is the log's: a budget whose key is missing (a first call, an expired
//! day, a Redis that lost its keys) is seeded from the usage table (`llm_calls`, the projection
//! of every recorded call). Right after Redis lost its keys, a seed misses the calls then in
//! flight (their holds went with the keys) and those the projector has not applied yet. Redis
//! being unreachable fails the call (retryably): a budget that cannot be checked is not spent.

use domain::budget::Budget;
use domain::llm_config::DailyBudgets;
use redis::Script;
use redis::aio::ConnectionManager;
use sqlx::PgPool;
use time::{Date, OffsetDateTime, Time};

use crate::config::Namespace;

/// The API key a call is made with, and what its limits say it may spend.
#[derive(Debug, Clone, PartialEq)]
pub struct KeyBudget {
    pub key_id: String,
    pub limits: domain::api_key::KeyLimits,
}
use crate::llm::{LlmError, Reason};

const SCRIPT: &str = include_str!("budget.lua");
/// How long a budget's counters stay in Redis after their last use.
const KEEP_S: u64 = 3 * 86_400;
/// Nano-dollars per dollar: costs are counted as integers, so that sums are exact.
const NANO: f64 = 1_000_000_000.0;

/// One budget that applies to a call.
#[derive(Debug, Clone, PartialEq)]
pub enum Scope {
    Mission {
        id: String,
        budget: Budget,
    },
    KindDay {
        kind: String,
        day: Date,
        budget: Budget,
    },
    /// What an API key's calls may spend in a UTC day.
    KeyDay {
        key: String,
        day: Date,
        budget: Budget,
    },
    /// What an API key's calls may spend over its life.
    KeyTotal {
        key: String,
        budget: Budget,
    },
    /// The tokens an API key's calls may take in one minute (its `tokens_per_minute`): a
    /// fixed window, by the minute since 1970.
    KeyMinute {
        key: String,
        minute: i64,
        budget: Budget,
    },
    Day {
        day: Date,
        budget: Budget,
    },
}

/// A time window of `llm_calls`: where it starts, and its width as an SQL interval.
type Window = (OffsetDateTime, &'static str);

impl Scope {
    fn key_suffix(&self) -> String {
        match self {
            Scope::Mission { id, .. } => format!("mission:{id}"),
            Scope::KindDay { kind, day, .. } => format!("kind:{kind}:{day}"),
            Scope::KeyDay { key, day, .. } => format!("key:{key}:{day}"),
            Scope::KeyTotal { key, .. } => format!("key:{key}:total"),
            Scope::KeyMinute { key, minute, .. } => format!("key:{key}:minute:{minute}"),
            Scope::Day { day, .. } => format!("day:{day}"),
        }
    }

    /// The budget as a failure names it.
    pub fn name(&self) -> String {
        match self {
            Scope::Mission { id, .. } => format!("the budget of mission {id}"),
            Scope::KindDay { kind, day, .. } => format!("the daily budget of kind {kind} ({day})"),
            Scope::KeyDay { key, day, .. } => format!("the daily budget of key {key} ({day})"),
            Scope::KeyTotal { key, .. } => format!("the budget of key {key}"),
            Scope::KeyMinute { key, .. } => format!("the tokens per minute of key {key}"),
            Scope::Day { day, .. } => format!("the daily budget ({day})"),
        }
    }

    pub fn budget(&self) -> Budget {
        match self {
            Scope::Mission { budget, .. }
            | Scope::KindDay { budget, .. }
            | Scope::KeyDay { budget, .. }
            | Scope::KeyTotal { budget, .. }
            | Scope::KeyMinute { budget, .. }
            | Scope::Day { budget, .. } => *budget,
        }
    }

    /// How long the budget's counters are kept after their last use: a minute's past its
    /// minute, any other for days.
    fn keep_s(&self) -> u64 {
        match self {
            Scope::KeyMinute { .. } => 120,
            _ => KEEP_S,
        }
    }

    /// What the log says was spent under this budget: tokens and nano-dollars.
    async fn spent(&self, pool: &PgPool) -> Result<(i64, i64), sqlx::Error> {
        let day_start = |day: &Date| day.with_time(Time::MIDNIGHT).assume_utc();
        // Each scope is one filter on `llm_calls`: a column's value, a time window, or both.
        let day = |day: &Date| Some((day_start(day), "1 day"));
        let (by, window): (Option<(&str, &str)>, Option<Window>) = match self {
            Scope::Mission { id, .. } => (Some(("mission", id)), None),
            Scope::KindDay { kind, day: today, .. } => (Some(("kind", kind)), day(today)),
            Scope::KeyDay { key, day: today, .. } => (Some(("key_id", key)), day(today)),
            Scope::KeyMinute { key, minute, .. } => {
                let start = OffsetDateTime::from_unix_timestamp(minute * 60)
                    .unwrap_or(OffsetDateTime::UNIX_EPOCH);
                (Some(("key_id", key)), Some((start, "1 minute")))
            }
            Scope::KeyTotal { key, .. } => (Some(("key_id", key)), None),
            Scope::Day { day: today, .. } => (None, day(today)),
        };
        let mut filters = Vec::new();
        match by.map(|(column, _)| column) {
            // The mission and every mission under it: a tree shares its root's budget.
            Some("mission") => filters.push(
                "mission_id IN (WITH RECURSIVE tree(id) AS (
                     SELECT $1::text
                     UNION ALL
                     SELECT l.child_id FROM mission_links l JOIN tree t ON l.parent_id = t.id
                 ) SELECT id FROM tree)"
                    .to_owned(),
            ),
            Some(column) => filters.push(format!("{column} = $1")),
            None => {}
        }
        if let Some((_, width)) = window {
            let n = filters.len() + 1;
            filters.push(format!("at >= ${n} AND at < ${n} + interval '{width}'"));
        }
        let sql = format!(
            "SELECT sum(input_tokens + output_tokens)::int8, sum(cost_usd) FROM llm_calls WHERE {}",
            filters.join(" AND ")
        );
        // Every piece of the text is one of the literals above; values are bound.
        let mut query = sqlx::query_as(sqlx::AssertSqlSafe(sql));
        if let Some((_, value)) = by {
            query = query.bind(value);
        }
        if let Some((start, _)) = window {
            query = query.bind(start);
        }
        let (tokens, cost): (Option<i64>, Option<f64>) = query.fetch_one(pool).await?;
        Ok((tokens.unwrap_or(0), (cost.unwrap_or(0.0) * NANO).round() as i64))
    }
}

/// The budgets a call made for `mission` (its id, its own budget, its agent kind) or for no
/// mission, with `key`'s limits when an API key makes it, under the configured daily
/// budgets, today (UTC).
pub fn scopes(
    mission: Option<(&str, Option<Budget>, &str)>,
    key: Option<&KeyBudget>,
    daily: &DailyBudgets,
    now: OffsetDateTime,
) -> Vec<Scope> {
    let day = now.to_offset(time::UtcOffset::UTC).date();
    let mut scopes = Vec::new();
    if let Some(KeyBudget { key_id, limits }) = key {
        let budget = |tokens: Option<u64>, cost_micros: Option<u64>| Budget {
            tokens_max: tokens,
            cost_usd_max: cost_micros.map(|micros| micros as f64 / 1_000_000.0),
        };
        let daily = budget(limits.tokens_per_day, limits.cost_micros_per_day);
        if !daily.is_empty() {
            scopes.push(Scope::KeyDay { key: key_id.clone(), day, budget: daily });
        }
        let total = budget(limits.tokens_total, limits.cost_micros_total);
        if !total.is_empty() {
            scopes.push(Scope::KeyTotal { key: key_id.clone(), budget: total });
        }
        if let Some(tokens) = limits.tokens_per_minute {
            let minute = now.unix_timestamp().div_euclid(60);
            let budget = budget(Some(tokens), None);
            scopes.push(Scope::KeyMinute { key: key_id.clone(), minute, budget });
        }
    }
    if let Some((id, Some(budget), _)) = mission
        && !budget.is_empty()
    {
        scopes.push(Scope::Mission { id: id.to_owned(), budget });
    }
    if let Some((_, _, kind)) = mission
        && let Some(budget) = daily.kinds.get(kind)
    {
        scopes.push(Scope::KindDay { kind: kind.to_owned(), day, budget: *budget });
    }
    if let Some(budget) = daily.all {
        scopes.push(Scope::Day { day, budget });
    }
    scopes
}

/// A call's worst case, held against its budgets until it settles. One dropped unsettled
/// (its call was cancelled) releases its hold from a task of its own, rather than keep it
/// until it lapses.
pub struct Reservation {
    id: String,
    /// Each budget's key, with how long it is kept after this use.
    keys: Vec<(String, u64)>,
    owner: Option<Budgets>,
}

impl std::fmt::Debug for Reservation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reservation").field("id", &self.id).field("keys", &self.keys).finish()
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        let Some(budgets) = self.owner.take() else { return };
        let Ok(runtime) = tokio::runtime::Handle::try_current() else { return };
        let (id, keys) = (std::mem::take(&mut self.id), std::mem::take(&mut self.keys));
        runtime.spawn(async move { budgets.apply_settle(&id, &keys, 0, 0.0).await });
    }
}

/// A call's worst case: what a reserve holds, and for how long.
struct Worst {
    tokens: u64,
    cost_usd: f64,
    hold: std::time::Duration,
}

/// What `budget.lua` answered to a reserve.
enum Reserved {
    /// The worst case is held against every budget.
    Held,
    /// The budget at `index` has no spend loaded from the log yet; nothing was held.
    Unseeded {
        index: usize,
    },
    Exceeded(Exceeded),
    Unexpected(String),
}

/// The budget at `index` would be passed, in tokens or in cost: what it has spent, and what
/// calls in flight hold of it (nano-dollars for a cost).
struct Exceeded {
    index: usize,
    in_tokens: bool,
    spent: i64,
    held: i64,
}

impl Reserved {
    /// Reads the script's answer (`{'ok'}`, `{'unseeded', i}` or
    /// `{'exceeded', i, 'tokens'|'cost', spent, held}`, `i` from 1) for `scope_count` scopes.
    fn read(answer: &[redis::Value], scope_count: usize) -> Reserved {
        let text = |n: usize| match answer.get(n) {
            Some(redis::Value::BulkString(bytes)) => String::from_utf8_lossy(bytes).into_owned(),
            Some(redis::Value::SimpleString(text)) => text.clone(),
            Some(redis::Value::Int(n)) => n.to_string(),
            _ => String::new(),
        };
        let index = || text(1).parse::<usize>().unwrap_or(1).saturating_sub(1).min(scope_count - 1);
        match text(0).as_str() {
            "ok" => Reserved::Held,
            "unseeded" => Reserved::Unseeded { index: index() },
            "exceeded" => Reserved::Exceeded(Exceeded {
                index: index(),
                in_tokens: text(2) == "tokens",
                spent: text(3).parse().unwrap_or(0),
                held: text(4).parse().unwrap_or(0),
            }),
            other => Reserved::Unexpected(other.to_owned()),
        }
    }
}

impl Exceeded {
    /// The refusal's message: the budget, its spend, what is held, what this call may take.
    fn message(&self, scope: &Scope, worst: &Worst) -> String {
        let budget = scope.budget();
        if self.in_tokens {
            format!(
                "{}: {} tokens spent, {} held by calls in flight, this call may take {}, of {}",
                scope.name(),
                self.spent,
                self.held,
                worst.tokens,
                budget.tokens_max.unwrap_or(0)
            )
        } else {
            format!(
                "{}: ${:.6} spent, ${:.6} held by calls in flight, this call may cost ${:.6}, of ${}",
                scope.name(),
                self.spent as f64 / NANO,
                self.held as f64 / NANO,
                worst.cost_usd,
                budget.cost_usd_max.unwrap_or(0.0)
            )
        }
    }
}

/// The budgets of one deployment (namespace). Cheap to clone.
#[derive(Clone)]
pub struct Budgets {
    redis: ConnectionManager,
    prefix: String,
    script: Script,
    pool: PgPool,
}

fn unavailable(error: impl std::fmt::Display) -> LlmError {
    LlmError {
        // Retryable: nothing was spent, and the store may be back at the next attempt.
        server_error: true,
        ..LlmError::new(Reason::BudgetExceeded, format!("the budgets cannot be checked: {error}"))
    }
}

/// A worst case in nano-dollars, rounded up (but not for a float's last-digit noise).
fn nano(usd: f64) -> i64 {
    let exact = usd * NANO;
    if (exact - exact.round()).abs() < 1e-6 { exact.round() as i64 } else { exact.ceil() as i64 }
}

impl Budgets {
    pub fn new(redis: ConnectionManager, namespace: &Namespace, pool: PgPool) -> Budgets {
        Budgets {
            redis,
            prefix: format!("{{{}}}:llm:budget:", namespace.as_str()),
            script: Script::new(SCRIPT),
            pool,
        }
    }

    /// Holds `tokens` and `cost_usd` (a call's worst case) against every scope for `hold`,
    /// or fails `budget_exceeded` naming the first budget it would pass.
    pub async fn reserve(
        &self,
        scopes: &[Scope],
        tokens: u64,
        cost_usd: f64,
        hold: std::time::Duration,
    ) -> Result<Option<Reservation>, LlmError> {
        if scopes.is_empty() {
            return Ok(None);
        }
        let id = uuid::Uuid::new_v4().simple().to_string();
        let keys: Vec<(String, u64)> = scopes
            .iter()
            .map(|scope| (format!("{}{}", self.prefix, scope.key_suffix()), scope.keep_s()))
            .collect();
        let worst = Worst { tokens, cost_usd, hold };
        // Each unseeded budget is seeded once, so this ends within scopes + 1 rounds.
        for _ in 0..=scopes.len() {
            match self.try_reserve(&id, &keys, scopes, &worst).await? {
                Reserved::Held => {
                    return Ok(Some(Reservation { id, keys, owner: Some(self.clone()) }));
                }
                Reserved::Unseeded { index } => self.seed(&scopes[index], &keys[index].0).await?,
                Reserved::Exceeded(exceeded) => {
                    metrics::counter!("brain_llm_budget_refusals_total").increment(1);
                    let scope = &scopes[exceeded.index];
                    let message = exceeded.message(scope, &worst);
                    // A minute's tokens come back with the next minute: a rate, not a spend.
                    if let Scope::KeyMinute { minute, .. } = scope {
                        let next_ms = (minute + 1) * 60_000;
                        let wait_ms = (next_ms - crate::clock::now_ms()).clamp(1, 60_000);
                        let mut error = LlmError::new(Reason::RateLimited, message);
                        error.retry_after = Some(std::time::Duration::from_millis(wait_ms as u64));
                        return Err(error);
                    }
                    return Err(LlmError::new(Reason::BudgetExceeded, message));
                }
                Reserved::Unexpected(other) => {
                    return Err(unavailable(format!("unexpected answer {other:?}")));
                }
            }
        }
        Err(unavailable("the budgets could not be seeded"))
    }

    /// One atomic reserve of `worst` under `id` against every key, each with its scope's
    /// limits.
    async fn try_reserve(
        &self,
        id: &str,
        keys: &[(String, u64)],
        scopes: &[Scope],
        worst: &Worst,
    ) -> Result<Reserved, LlmError> {
        let mut invocation = self.script.prepare_invoke();
        for (key, _) in keys {
            invocation.key(key);
        }
        invocation
            .arg("reserve")
            .arg(id)
            .arg(worst.tokens)
            .arg(nano(worst.cost_usd))
            .arg(worst.hold.as_millis() as u64);
        for scope in scopes {
            let budget = scope.budget();
            invocation.arg(budget.tokens_max.map_or(-1, |max| max as i64));
            invocation.arg(budget.cost_usd_max.map_or(-1, |max| (max * NANO).floor() as i64));
            invocation.arg(scope.keep_s());
        }
        let answer: Vec<redis::Value> =
            invocation.invoke_async(&mut self.redis.clone()).await.map_err(unavailable)?;
        Ok(Reserved::read(&answer, scopes.len()))
    }

    /// Loads a budget's spend from the log into its key, unless another process just did.
    async fn seed(&self, scope: &Scope, key: &str) -> Result<(), LlmError> {
        let (spent_tokens, spent_nano) = scope.spent(&self.pool).await.map_err(unavailable)?;
        let _: i64 = self
            .script
            .key(key)
            .arg("seed")
            .arg(spent_tokens)
            .arg(spent_nano)
            .arg(scope.keep_s())
            .invoke_async(&mut self.redis.clone())
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    /// Replaces a reservation by what the call really used.
    pub async fn settle(&self, mut reservation: Reservation, tokens: u64, cost_usd: f64) {
        reservation.owner = None;
        self.apply_settle(&reservation.id, &reservation.keys, tokens, cost_usd).await;
    }

    async fn apply_settle(&self, id: &str, keys: &[(String, u64)], tokens: u64, cost_usd: f64) {
        let mut invocation = self.script.prepare_invoke();
        for (key, _) in keys {
            invocation.key(key);
        }
        invocation.arg("settle").arg(id).arg(tokens).arg((cost_usd * NANO).round() as i64);
        for (_, keep_s) in keys {
            invocation.arg(*keep_s);
        }
        let settled: Result<i64, _> = invocation.invoke_async(&mut self.redis.clone()).await;
        if let Err(error) = settled {
            // The hold lapses by itself; the spend is in the log, and a re-seed finds it.
            tracing::warn!(%error, "cannot settle an LLM call against its budgets");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[test]
    fn a_call_answers_to_its_mission_its_kind_and_the_day() {
        let budget = |tokens| Budget { tokens_max: Some(tokens), cost_usd_max: None };
        let daily = DailyBudgets {
            all: Some(budget(1_000)),
            kinds: BTreeMap::from([("coder".to_owned(), budget(100))]),
        };
        let now = OffsetDateTime::from_unix_timestamp(1_796_162_400).unwrap();
        let all = scopes(Some(("m1", Some(budget(10)), "coder")), None, &daily, now);
        assert_eq!(all.len(), 3);
        assert_eq!(all[0].name(), "the budget of mission m1");
        assert_eq!(all[1].key_suffix(), format!("kind:coder:{}", now.date()));
        assert_eq!(scopes(Some(("m2", None, "ops")), None, &daily, now).len(), 1);
        assert_eq!(scopes(None, None, &DailyBudgets::default(), now), vec![]);
    }
}
