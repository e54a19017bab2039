//! The open loop of `brain bench missions --rate R`: enqueues sent at a fixed rate whatever
//! the server does, the `i`-th at its intended time `t0 + i/R`. Latencies count from that
//! intended time, not from when the request actually left: a server that stalls delays the
//! sends behind the stall, and measuring from the actual send would hide that wait
//! (coordinated omission). Requests in flight are capped (`--in-flight-max`); a send that
//! finds the cap full waits for a free slot, and its latency still counts from its intended
//! time. The report says whether the schedule was kept: how late the last send left.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use tokio::sync::Semaphore;

use super::histogram;
use super::missions::Enqueued;

/// A send later than this past its intended time (on top of one interval) means the
/// schedule was not kept; below it is timer and scheduling noise.
const SCHEDULE_SLACK: Duration = Duration::from_millis(10);
/// Longest one enqueue request may take before the run fails.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// When each send is meant to leave: `rate_per_s` sends a second from `t0`.
#[derive(Debug, Clone, Copy)]
pub struct Schedule {
    pub t0: Instant,
    pub rate_per_s: f64,
}

impl Schedule {
    pub fn new(t0: Instant, rate_per_s: f64) -> anyhow::Result<Schedule> {
        if !(rate_per_s.is_finite() && rate_per_s > 0.0) {
            bail!("--rate must be a positive number of missions per second");
        }
        Ok(Schedule { t0, rate_per_s })
    }

    /// The intended time of send `i` (from 0).
    pub fn intended(&self, i: u64) -> Instant {
        self.t0 + Duration::from_secs_f64(i as f64 / self.rate_per_s)
    }

    /// One interval between sends.
    pub fn interval(&self) -> Duration {
        Duration::from_secs_f64(1.0 / self.rate_per_s)
    }

    /// The rate actually achieved by `sends` sends, the last of which left at `last_sent`:
    /// the asked rate when every send left on time.
    pub fn achieved(&self, sends: u64, last_sent: Instant) -> f64 {
        let span = last_sent.saturating_duration_since(self.t0) + self.interval();
        sends as f64 / span.as_secs_f64()
    }

    /// Whether a last send `behind` its intended time kept the schedule.
    pub fn kept(&self, behind: Duration) -> bool {
        behind <= self.interval() + SCHEDULE_SLACK
    }
}

/// A request's latency: from its intended send time to its answer, however late it left.
pub fn latency_from_intended(intended: Instant, answered: Instant) -> Duration {
    answered.saturating_duration_since(intended)
}

/// How well the sends kept their schedule.
#[derive(Debug, Clone, Copy)]
pub struct Kept {
    pub rate_asked: f64,
    pub rate_achieved: f64,
    /// How late the last send left.
    pub last_behind: Duration,
    /// The latest any send left.
    pub max_behind: Duration,
    pub kept: bool,
}

/// Enqueues `missions` missions for `agent` at `rate_per_s`, at most `in_flight_max` requests
/// at once. Each mission's send time in the result is its intended time, so that
/// enqueue→completed counts from it too.
pub async fn enqueue_at_rate(
    client: reqwest::Client,
    url: String,
    agent: String,
    missions: u64,
    rate_per_s: f64,
    in_flight_max: usize,
) -> anyhow::Result<(Enqueued, Kept)> {
    let slots = Arc::new(Semaphore::new(in_flight_max.max(1)));
    let schedule = Schedule::new(Instant::now(), rate_per_s)?;
    let mut requests = tokio::task::JoinSet::new();
    let mut latencies = histogram();
    let mut sent = Vec::with_capacity(missions as usize);
    let (mut last_sent, mut max_behind) = (schedule.t0, Duration::ZERO);
    let mut collect = |outcome: Result<anyhow::Result<(u64, String, Instant)>, _>| {
        let (latency_us, id, intended) = outcome.context("request task")??;
        latencies.record(latency_us).context("latency out of range")?;
        sent.push((id, intended));
        anyhow::Ok(())
    };
    for i in 0..missions {
        let intended = schedule.intended(i);
        tokio::time::sleep_until(intended.into()).await;
        let slot = slots.clone().acquire_owned().await.context("in-flight slots")?;
        last_sent = Instant::now();
        max_behind = max_behind.max(last_sent.saturating_duration_since(intended));
        let (client, url, agent) = (client.clone(), url.clone(), agent.clone());
        requests.spawn(async move {
            let _slot = slot;
            let id = enqueue_one(&client, &url, &agent, i).await?;
            let latency = latency_from_intended(intended, Instant::now());
            anyhow::Ok((latency.as_micros() as u64, id, intended))
        });
        while let Some(outcome) = requests.try_join_next() {
            collect(outcome)?;
        }
    }
    while let Some(outcome) = requests.join_next().await {
        collect(outcome)?;
    }
    let last_behind =
        last_sent.saturating_duration_since(schedule.intended(missions.saturating_sub(1)));
    let kept = Kept {
        rate_asked: rate_per_s,
        rate_achieved: schedule.achieved(missions, last_sent),
        last_behind,
        max_behind,
        kept: schedule.kept(last_behind),
    };
    Ok((Enqueued { latencies, sent, elapsed: schedule.t0.elapsed() }, kept))
}

/// Enqueues mission `n`; returns its id.
async fn enqueue_one(
    client: &reqwest::Client,
    url: &str,
    agent: &str,
    n: u64,
) -> anyhow::Result<String> {
    let body = serde_json::json!({ "name": format!("bench {n}"), "agent": agent });
    let response = client.post(url).json(&body).timeout(REQUEST_TIMEOUT).send().await?;
    let status = response.status();
    let mission: serde_json::Value = response.json().await?;
    if status.as_u16() != 201 {
        bail!("enqueue answered {status}: {mission}");
    }
    Ok(mission["mission_id"].as_str().unwrap_or_default().to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sends_are_scheduled_at_t0_plus_i_over_the_rate() {
        let t0 = Instant::now();
        let schedule = Schedule::new(t0, 400.0).unwrap();
        assert_eq!(schedule.intended(0), t0);
        assert_eq!(schedule.intended(1), t0 + Duration::from_micros(2_500));
        assert_eq!(schedule.intended(400), t0 + Duration::from_secs(1));
        assert_eq!(schedule.intended(4_000), t0 + Duration::from_secs(10));
        assert!(Schedule::new(t0, 0.0).is_err());
        assert!(Schedule::new(t0, f64::NAN).is_err());
    }

    #[test]
    fn a_late_send_counts_its_latency_from_its_intended_time() {
        let t0 = Instant::now();
        let schedule = Schedule::new(t0, 100.0).unwrap();
        let intended = schedule.intended(10); // t0 + 100 ms
        // The server stalled: the send left 400 ms late and was answered 5 ms after.
        let left = intended + Duration::from_millis(400);
        let answered = left + Duration::from_millis(5);
        assert_eq!(latency_from_intended(intended, answered), Duration::from_millis(405));
        // An answer can never count as earlier than its intended time.
        assert_eq!(latency_from_intended(answered, intended), Duration::ZERO);
    }

    #[test]
    fn the_achieved_rate_is_the_asked_one_only_when_the_schedule_was_kept() {
        let t0 = Instant::now();
        let schedule = Schedule::new(t0, 100.0).unwrap();
        // 1,000 sends, the last on time at t0 + 9.99 s.
        let on_time = schedule.intended(999);
        assert!((schedule.achieved(1_000, on_time) - 100.0).abs() < 1e-6);
        assert!(schedule.kept(Duration::ZERO));
        assert!(schedule.kept(Duration::from_millis(15)));
        // The last left 10 s late: half the rate, and not kept.
        let late = on_time + Duration::from_secs(10);
        assert!((schedule.achieved(1_000, late) - 50.0).abs() < 1e-6);
        assert!(!schedule.kept(Duration::from_secs(10)));
    }
}
