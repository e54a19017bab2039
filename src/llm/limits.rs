//! Shared, adaptive rate limits per provider+model, held in Redis so that every caller in
//! every process counts against the same limits (`limits.lua` does each step atomically, on
//! the Redis server's clock).
//!
//! A call goes through three steps around each try of a target:
//! 1. **take**: reserve the next request slot (and the call's estimated tokens) of the
//!    target's rate; the caller sleeps until its slot. A slot further away than
//!    [`HORIZON_MS`] is not reserved: the caller waits and asks again, so a rate that drops
//!    applies to the waiting callers too.
//! 2. **enter**: unless the target is paused, take one of its concurrency places.
//! 3. **done**: give the place back, correct the tokens taken by what was really used, and
//!    feed the outcome to the rate: a 429 with `Retry-After` pauses every caller of the target
//!    until then (at most [`PAUSE_MAX`]) and cuts the rate to 90 % of what the provider
//!    actually answered over the last second (multiplicative decrease, once a second however
//!    many calls met it; with nothing answered yet, no rate is guessed, the pause alone
//!    holds); while callers are held back by the rate, successes raise it by 2 % per second
//!    (at least 0.5 request/s per second, and 10 % once ten seconds passed without a 429:
//!    additive increase), up to the configured `rpm` if there is one. The fleet so settles
//!    just under what the provider allows, without being told what that is.
//!
//! Redis being unreachable does not stop calls: the limiter is a courtesy to the provider,
//! whose own 429s still pace the retries (budgets, which guard money, do stop).

use std::time::{Duration, Instant};

use domain::llm_config::Limits;
use redis::Script;
use redis::aio::ConnectionManager;

use crate::backoff::random_unit;
use crate::config::Namespace;
use crate::llm::gateway::Target;
use crate::llm::{LlmError, Reason};

const SCRIPT: &str = include_str!("limits.lua");

/// How far ahead a caller may reserve its request slot.
pub const HORIZON_MS: u64 = 1_000;
/// Longest one caller waits for the shared limits before its try fails `rate_limited`.
pub const WAIT_MAX: Duration = Duration::from_secs(120);
/// Longest pause a provider's `Retry-After` imposes on the fleet; the retry policy does not
/// wait longer either (the route falls back instead).
pub const PAUSE_MAX: Duration = Duration::from_secs(60);
/// Shortest and longest sleep between two asks while a target is full.
const POLL_MIN_MS: u64 = 5;
const POLL_MAX_MS: u64 = 250;

/// The limiter of one deployment (namespace). Cheap to clone.
#[derive(Clone)]
pub struct Limiter {
    redis: ConnectionManager,
    prefix: String,
    script: Script,
    /// How long a concurrency place outlives a process that died holding it.
    pub slot_ttl: Duration,
}

/// A try let through: its place and its token estimate, handed back by [`Limiter::done`].
/// One dropped without it (its call was cancelled: a mission's timeout, a client gone) hands
/// its place back as a failed try, from a task of its own.
pub struct Permit {
    key: String,
    id: String,
    limits: Limits,
    tokens_estimated: u64,
    /// How long the caller waited for the limits.
    pub waited: Duration,
    /// Who to hand it back to; `None` once handed back (or when it holds nothing).
    owner: Option<Limiter>,
}

impl std::fmt::Debug for Permit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Permit").field("key", &self.key).field("id", &self.id).finish()
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        let Some(limiter) = self.owner.take() else { return };
        let Ok(runtime) = tokio::runtime::Handle::try_current() else { return };
        let permit = Permit {
            key: std::mem::take(&mut self.key),
            id: std::mem::take(&mut self.id),
            limits: self.limits,
            tokens_estimated: self.tokens_estimated,
            waited: self.waited,
            owner: None,
        };
        runtime.spawn(async move { limiter.feed(&permit, Outcome::Failed).await });
    }
}

/// What a target's limiter holds now, for `/api/llm/limits` and the tests.
#[derive(Debug, Clone, Default, serde::Serialize, utoipa::ToSchema)]
pub struct LimiterState {
    /// `<provider>/<model>`.
    pub target: String,
    /// Requests per second now allowed; `None` until configured or learned from a 429.
    pub rate_per_s: Option<f64>,
    /// Milliseconds left of a pause a 429 asked for.
    pub paused_ms: u64,
    pub in_flight: u64,
    pub pauses: u64,
    pub cuts: u64,
}

/// How a try ended, as the limiter learns from it.
pub enum Outcome {
    Answered { tokens_used: u64 },
    RateLimited { retry_after: Option<Duration> },
    Failed,
}

fn limits_key(target: &Target) -> String {
    format!("{}/{}", target.provider.as_str(), target.model)
}

impl Limiter {
    pub fn new(redis: ConnectionManager, namespace: &Namespace) -> Limiter {
        Limiter {
            redis,
            prefix: format!("{{{}}}:llm:lim:", namespace.as_str()),
            script: Script::new(SCRIPT),
            slot_ttl: Duration::from_secs(15 * 60),
        }
    }

    fn keys(&self, key: &str) -> (String, String) {
        (format!("{}{key}", self.prefix), format!("{}{key}:flying", self.prefix))
    }

    /// Waits until `target` may be sent a try estimated at `tokens`, or fails `rate_limited`
    /// past `wait_max` (and at the latest [`WAIT_MAX`]).
    pub async fn acquire(
        &self,
        target: &Target,
        tokens: u64,
        wait_max: Duration,
    ) -> Result<Permit, LlmError> {
        let started = Instant::now();
        let deadline = started + wait_max.min(WAIT_MAX);
        let key = limits_key(target);
        let limits = target.limits;
        let (state, flying) = self.keys(&key);
        let id = uuid::Uuid::new_v4().simple().to_string();
        let ceiling = limits.rpm.map_or(0.0, |rpm| rpm as f64 / 60.0);
        let mut polls = 0u32;
        loop {
            // take: a request slot and the tokens.
            let taken: Result<(i64, i64, String), _> = self
                .script
                .key(&state)
                .key(&flying)
                .arg("take")
                .arg(ceiling)
                .arg(limits.tpm.unwrap_or(0))
                .arg(tokens)
                .arg(HORIZON_MS)
                .invoke_async(&mut self.redis.clone())
                .await;
            let (granted, wait_ms, why) = match taken {
                Ok(taken) => taken,
                Err(error) => return Ok(self.unlimited(key, error, started)),
            };
            if granted == 0 {
                polls += 1;
                self.sleep_or_fail(&key, &why, wait_ms.max(0) as u64, polls, deadline).await?;
                continue;
            }
            if wait_ms > 0 {
                sleep_until_or_fail(&key, Duration::from_millis(wait_ms as u64), deadline).await?;
            }
            // enter: not paused meanwhile, and a concurrency place.
            loop {
                let entered: Result<(i64, i64, String), _> = self
                    .script
                    .key(&state)
                    .key(&flying)
                    .arg("enter")
                    .arg(limits.concurrency.unwrap_or(0))
                    .arg(&id)
                    .arg(self.slot_ttl.as_millis() as u64)
                    .invoke_async(&mut self.redis.clone())
                    .await;
                let (granted, wait_ms, why) = match entered {
                    Ok(entered) => entered,
                    Err(error) => return Ok(self.unlimited(key, error, started)),
                };
                if granted == 1 {
                    let waited = started.elapsed();
                    metrics::histogram!("brain_llm_limiter_wait_seconds", "target" => key.clone())
                        .record(waited.as_secs_f64());
                    let owner = Some(self.clone());
                    return Ok(Permit { key, id, limits, tokens_estimated: tokens, waited, owner });
                }
                // Paused or full: the slot taken stays ours (a pause pushed the schedule past
                // itself anyway), so only entering is asked again.
                polls += 1;
                self.sleep_or_fail(&key, &why, wait_ms.max(0) as u64, polls, deadline).await?;
            }
        }
    }

    fn unlimited(&self, key: String, error: redis::RedisError, started: Instant) -> Permit {
        tracing::warn!(target = key, %error, "the shared LLM limits are unreachable: calling unlimited");
        metrics::counter!("brain_llm_limiter_unavailable_total").increment(1);
        let limits = Limits::default();
        let waited = started.elapsed();
        Permit { key, id: String::new(), limits, tokens_estimated: 0, waited, owner: None }
    }

    async fn sleep_or_fail(
        &self,
        key: &str,
        why: &str,
        hint_ms: u64,
        polls: u32,
        deadline: Instant,
    ) -> Result<(), LlmError> {
        // A pause or a far slot says how long; a full target is asked again soon, with
        // jitter so that waiting callers do not all ask at once.
        let backoff = (POLL_MIN_MS << polls.min(6)).min(POLL_MAX_MS);
        let wait_ms = if hint_ms > 0 { hint_ms } else { backoff };
        let jittered = wait_ms + (wait_ms as f64 * 0.2 * random_unit()) as u64;
        if why == "paused" && polls == 1 {
            metrics::counter!("brain_llm_limiter_paused_waits_total", "target" => key.to_owned())
                .increment(1);
        }
        sleep_until_or_fail(key, Duration::from_millis(jittered), deadline).await
    }

    /// Hands a permit back with how its try ended.
    pub async fn done(&self, mut permit: Permit, outcome: Outcome) {
        if permit.owner.take().is_none() {
            return;
        }
        self.feed(&permit, outcome).await;
    }

    async fn feed(&self, permit: &Permit, outcome: Outcome) {
        let (state, flying) = self.keys(&permit.key);
        let (name, retry_after, used): (&str, u64, i64) = match outcome {
            Outcome::Answered { tokens_used } => ("ok", 0, tokens_used as i64),
            Outcome::RateLimited { retry_after } => {
                let pause = retry_after.map_or(0, |wait| wait.min(PAUSE_MAX).as_millis() as u64);
                ("limited", pause, -1)
            }
            Outcome::Failed => ("failed", 0, 0),
        };
        let ceiling = permit.limits.rpm.map_or(0.0, |rpm| rpm as f64 / 60.0);
        let fed: Result<(String, i64), _> = self
            .script
            .key(&state)
            .key(&flying)
            .arg("done")
            .arg(name)
            .arg(retry_after)
            .arg(permit.tokens_estimated)
            .arg(used)
            .arg(permit.limits.tpm.unwrap_or(0))
            .arg(ceiling)
            .arg(&permit.id)
            .invoke_async(&mut self.redis.clone())
            .await;
        match fed {
            Ok((rate, paused_ms)) => {
                if let Ok(rate) = rate.parse::<f64>()
                    && rate > 0.0
                {
                    metrics::gauge!("brain_llm_limiter_rate_per_second", "target" => permit.key.clone())
                        .set(rate);
                }
                if name == "limited" && paused_ms > 0 {
                    metrics::counter!("brain_llm_limiter_pauses_total", "target" => permit.key.clone())
                        .increment(1);
                }
            }
            Err(error) => tracing::warn!(%error, "cannot report to the shared LLM limits"),
        }
    }

    /// The limiter's state for `target`.
    pub async fn state(&self, target: &Target) -> Result<LimiterState, redis::RedisError> {
        let key = limits_key(target);
        let (state, flying) = self.keys(&key);
        let mut redis = self.redis.clone();
        let (fields, in_flight, now): (std::collections::HashMap<String, String>, u64, (u64, u64)) =
            redis::pipe().hgetall(&state).zcard(&flying).cmd("TIME").query_async(&mut redis).await?;
        let now_ms = now.0 * 1_000 + now.1 / 1_000;
        let number = |field: &str| fields.get(field).and_then(|value| value.parse::<f64>().ok());
        let paused_until = number("paused_until").unwrap_or(0.0) as u64;
        Ok(LimiterState {
            target: key,
            rate_per_s: number("rate").filter(|rate| *rate > 0.0),
            paused_ms: paused_until.saturating_sub(now_ms),
            in_flight,
            pauses: number("pauses").unwrap_or(0.0) as u64,
            cuts: number("cuts").unwrap_or(0.0) as u64,
        })
    }
}

/// Sleeps `wait`, or fails `rate_limited` at once when that would pass `deadline`, saying
/// how long the limits asked to wait (a refused `/v1` call's `Retry-After`).
async fn sleep_until_or_fail(key: &str, wait: Duration, deadline: Instant) -> Result<(), LlmError> {
    let now = Instant::now();
    if now + wait > deadline {
        return Err(LlmError {
            retry_after: Some(wait),
            ..LlmError::new(
                Reason::RateLimited,
                format!("{key}: the shared rate limits let no call through in time"),
            )
        });
    }
    tokio::time::sleep(wait).await;
    Ok(())
}
