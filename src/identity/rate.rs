//! Per-key request rates over the whole API, shared by every process of a deployment: a key
//! whose limits name `requests_per_minute` (or, without one, `BRAIN_KEY_RPM_DEFAULT` when
//! set) may send that many requests at once and then one every `60 / rpm` seconds (a bucket
//! holding a minute's requests, refilled at the rate), however many serves it spreads them
//! over.
//!
//! The schedule of each key is one string in Redis (`{ns}:api:rate:<key id>`) moved by
//! `rate.lua` in one round trip, on the Redis server's clock, the way the LLM gateway's
//! limits are (`llm::limits`, decision 0023); it expires once the key is back to a full
//! minute. A key without a rate costs nothing: no round trip, no lock.
//!
//! Two things keep refused callers cheap and the API up:
//! - a refusal is remembered in the process until it ends, so a client that does not wait
//!   is refused again without asking Redis (the schedule only ever moves later, so nothing
//!   could let it through sooner);
//! - when Redis fails or is slower than [`REDIS_WAIT`], each process holds the key to its
//!   rate alone for [`REDIS_RETRY_AFTER`] before asking Redis again (decision 0039), going
//!   on from the schedule Redis last told it: a key then gets at most its rate from each
//!   serve, rather than nothing (an outage of every limited client) or no limit at all.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use redis::Script;
use redis::aio::ConnectionManager;
use tokio::sync::OnceCell;
use tokio::time::Instant;

use super::Principal;
use crate::config::Namespace;

const SCRIPT: &str = include_str!("rate.lua");

/// Longest a request waits for Redis's word on its key's rate before this process decides
/// alone.
pub const REDIS_WAIT: Duration = Duration::from_millis(250);
/// How long a process decides alone after Redis failed, before it asks Redis again.
pub const REDIS_RETRY_AFTER: Duration = Duration::from_secs(1);
/// Keys whose refusals or schedules a process remembers before it forgets those that ended.
const REMEMBERED_MAX: usize = 4_096;
const MINUTE_US: u64 = 60_000_000;

/// Whether a request may go on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Pass,
    /// Over the key's rate: the next request would pass after `retry_after`.
    Refused {
        retry_after: Duration,
    },
}

/// A rate of some requests per minute, a minute's worth at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Rate {
    /// Between two requests at the rate.
    interval_us: u64,
    /// How far the schedule may run ahead of now: one interval less than a minute's
    /// requests, so that many pass at once.
    ahead_us: u64,
}

impl Rate {
    fn per_minute(rpm: u32) -> Rate {
        let interval_us = (MINUTE_US / u64::from(rpm.max(1))).max(1);
        Rate { interval_us, ahead_us: interval_us * u64::from(rpm.max(1) - 1) }
    }

    /// One request at `now_us` against the schedule `tat_us` (when the key would be back to
    /// a full minute): the schedule after it, or how long until one would pass. `rate.lua`
    /// takes the same step in Redis.
    fn step(self, tat_us: u64, now_us: u64) -> Result<u64, u64> {
        let tat = tat_us.max(now_us);
        if tat - now_us > self.ahead_us {
            return Err(tat - now_us - self.ahead_us);
        }
        Ok(tat + self.interval_us)
    }
}

/// What a process remembers about keys' rates.
#[derive(Default)]
struct Remembered {
    /// Keys Redis refused, until when.
    refused_until: HashMap<String, Instant>,
    /// Keys' schedules (µs after [`Inner::epoch`]): as Redis last told them, then as this
    /// process moves them alone while Redis fails.
    schedules: HashMap<String, u64>,
    /// Until when Redis is not asked, after it failed.
    redis_failed_until: Option<Instant>,
}

struct Inner {
    redis: redis::Client,
    connection: Arc<OnceCell<ConnectionManager>>,
    /// `{ns}:api:rate:`
    prefix: String,
    script: Script,
    default_rpm: Option<u32>,
    epoch: Instant,
    remembered: Mutex<Remembered>,
}

/// The request rates of every key, for one process. Cheap to clone.
#[derive(Clone)]
pub struct KeyRates {
    inner: Arc<Inner>,
}

impl KeyRates {
    /// Rates kept in the Redis of `redis` (connected on first use, through the process's
    /// shared `connection`), for the keys of `namespace`; `default_rpm` (0: none) for keys
    /// naming no rate of their own.
    pub fn new(
        redis: redis::Client,
        connection: Arc<OnceCell<ConnectionManager>>,
        namespace: &Namespace,
        default_rpm: u32,
    ) -> KeyRates {
        KeyRates {
            inner: Arc::new(Inner {
                redis,
                connection,
                prefix: format!("{{{}}}:api:rate:", namespace.as_str()),
                script: Script::new(SCRIPT),
                default_rpm: (default_rpm > 0).then_some(default_rpm),
                epoch: Instant::now(),
                remembered: Mutex::default(),
            }),
        }
    }

    /// The requests per minute `principal` is held to, if any.
    pub fn rpm_of(&self, principal: &Principal) -> Option<u32> {
        principal.limits.requests_per_minute.or(self.inner.default_rpm).filter(|&rpm| rpm > 0)
    }

    /// Counts one request of `principal` against its key's rate, or refuses it.
    pub async fn admit(&self, principal: &Principal) -> Verdict {
        let Some(rpm) = self.rpm_of(principal) else { return Verdict::Pass };
        let rate = Rate::per_minute(rpm);
        let key_id = principal.key_id.as_str();
        let now = Instant::now();
        let ask_redis = {
            let mut remembered = self.remembered();
            if let Some(&until) = remembered.refused_until.get(key_id) {
                if until > now {
                    return refused(until - now);
                }
                remembered.refused_until.remove(key_id);
            }
            remembered.redis_failed_until.is_none_or(|until| until <= now)
        };
        if ask_redis {
            match self.ask_redis(rate, key_id).await {
                Ok((wait_us, lead_us)) => {
                    let now_us = self.now_us();
                    let mut remembered = self.remembered();
                    forget_ended(&mut remembered.schedules, |tat| *tat > now_us);
                    remember(&mut remembered.schedules, key_id, now_us + lead_us);
                    if wait_us == 0 {
                        return Verdict::Pass;
                    }
                    let wait = Duration::from_micros(wait_us);
                    forget_ended(&mut remembered.refused_until, |until| *until > now);
                    remember(&mut remembered.refused_until, key_id, Instant::now() + wait);
                    return refused(wait);
                }
                Err(error) => {
                    tracing::warn!(
                        %error,
                        "the shared API rate limits are unreachable: each process holds keys to \
                         their rates alone for {} ms",
                        REDIS_RETRY_AFTER.as_millis()
                    );
                    metrics::counter!("brain_api_rate_limiter_unavailable_total").increment(1);
                    self.remembered().redis_failed_until = Some(Instant::now() + REDIS_RETRY_AFTER);
                }
            }
        }
        self.admit_alone(rate, key_id)
    }

    fn remembered(&self) -> std::sync::MutexGuard<'_, Remembered> {
        self.inner.remembered.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Redis's verdict, in µs: 0 or how long until the key's next request would pass; and
    /// how far its schedule is ahead of now.
    async fn ask_redis(&self, rate: Rate, key_id: &str) -> Result<(u64, u64), String> {
        let inner = &self.inner;
        let key = format!("{}{key_id}", inner.prefix);
        let asked = async {
            let connection =
                inner.connection.get_or_try_init(|| inner.redis.get_connection_manager()).await?;
            let (wait, lead): (i64, i64) = inner
                .script
                .key(&key)
                .arg(rate.interval_us)
                .arg(rate.ahead_us)
                .invoke_async(&mut connection.clone())
                .await?;
            Ok::<_, redis::RedisError>((wait.max(0) as u64, lead.max(0) as u64))
        };
        match tokio::time::timeout(REDIS_WAIT, asked).await {
            Ok(answer) => answer.map_err(|error| error.to_string()),
            Err(_) => Err(format!("no answer within {} ms", REDIS_WAIT.as_millis())),
        }
    }

    fn now_us(&self) -> u64 {
        self.inner.epoch.elapsed().as_micros() as u64
    }

    /// This process's verdict alone, while Redis fails.
    fn admit_alone(&self, rate: Rate, key_id: &str) -> Verdict {
        let now_us = self.now_us();
        let mut remembered = self.remembered();
        let tat = remembered.schedules.get(key_id).copied().unwrap_or(0);
        match rate.step(tat, now_us) {
            Ok(next) => {
                forget_ended(&mut remembered.schedules, |tat| *tat > now_us);
                remember(&mut remembered.schedules, key_id, next);
                Verdict::Pass
            }
            Err(wait_us) => refused(Duration::from_micros(wait_us)),
        }
    }
}

fn refused(retry_after: Duration) -> Verdict {
    metrics::counter!("brain_api_rate_limited_total").increment(1);
    Verdict::Refused { retry_after }
}

/// Sets a key's entry, allocating its name only the first time.
fn remember<T>(map: &mut HashMap<String, T>, key_id: &str, value: T) {
    match map.get_mut(key_id) {
        Some(entry) => *entry = value,
        None => {
            map.insert(key_id.to_owned(), value);
        }
    }
}

/// Keeps a map of keys bounded: once it holds [`REMEMBERED_MAX`], what has ended goes.
fn forget_ended<T>(map: &mut HashMap<String, T>, live: impl Fn(&T) -> bool) {
    if map.len() >= REMEMBERED_MAX {
        map.retain(|_, value| live(value));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The verdicts of requests at `times` (µs) against one schedule.
    fn run(rate: Rate, times: &[u64]) -> Vec<Result<(), u64>> {
        let mut tat = 0;
        times
            .iter()
            .map(|&now| match rate.step(tat, now) {
                Ok(next) => {
                    tat = next;
                    Ok(())
                }
                Err(wait) => Err(wait),
            })
            .collect()
    }

    #[test]
    fn a_minutes_requests_pass_at_once_then_one_per_interval() {
        let start = 1_000_000_000;
        let rate = Rate::per_minute(5);
        let verdicts = run(rate, &[start; 6]);
        assert_eq!(verdicts[..5], [Ok(()); 5]);
        assert_eq!(verdicts[5], Err(12_000_000), "the sixth waits one interval");
        // One interval later one more passes, and only one.
        let later = start + 12_000_000;
        let verdicts = run(rate, &[start, start, start, start, start, later, later]);
        assert_eq!(verdicts[5], Ok(()));
        assert_eq!(verdicts[6], Err(12_000_000));
    }

    #[test]
    fn a_steady_client_at_its_rate_is_never_refused_and_one_above_it_is() {
        let rate = Rate::per_minute(600);
        let at_rate: Vec<u64> = (0..10_000).map(|n| n * 100_000).collect();
        assert!(run(rate, &at_rate).iter().all(Result::is_ok));
        let above: Vec<u64> = (0..10_000).map(|n| n * 90_000).collect();
        let passed = run(rate, &above).iter().filter(|v| v.is_ok()).count();
        // What a full bucket holds (600, less the one the first request takes), then one
        // per 100 ms over the 899.91 s from the first request to the last.
        assert_eq!(passed, 600 + 8_999, "{passed}");
    }

    #[test]
    fn rates_that_do_not_divide_a_minute_still_allow_their_count_at_once() {
        for rpm in [1, 7, 59, 61, 1_000, 999_999] {
            let rate = Rate::per_minute(rpm);
            let verdicts = run(rate, &vec![5_000_000; rpm as usize + 1]);
            let passed = verdicts.iter().filter(|v| v.is_ok()).count();
            assert_eq!(passed, rpm as usize, "rpm {rpm}");
        }
    }
}
