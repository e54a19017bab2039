//! Heartbeats: what an agent reports about itself every few seconds, and the rule that decides
//! which of them the log keeps.
//!
//! Heartbeats live on a stream of their own per agent (`agent_heartbeat/<agent id>`), so the
//! agent's life stream stays short. At 10 s from thousands of agents, recording every one
//! would add hundreds of events a second that say nothing new, so they are **coalesced**: a
//! heartbeat is recorded when it changes what the view shows (status, running missions, load
//! by more than [`LOAD_STEP`]), and, when a record interval is set
//! (`BRAIN_HEARTBEAT_RECORD_EVERY_S`; 0, the default, sets none), when the last recorded one is
//! older than it. An idle agent thus adds nothing to the store; a working one adds an event per
//! change of what it runs, fewer than its missions' own events. The exact moment of the last
//! heartbeat, which coalescing hides, is kept beside the view as a ping (see
//! `brain::agents::view`).

use serde::{Deserialize, Serialize};

use crate::StreamType;
use crate::aggregate::DomainEvent;

/// Longest status text.
pub const STATUS_LEN_MAX: usize = 64;
/// Most running missions one heartbeat may list.
pub const RUNNING_MAX: usize = 256;
/// Highest load an agent may report (a unitless figure: 1.0 = fully busy, above = queueing).
pub const LOAD_MAX: f64 = 1_000.0;
/// A load change smaller than this is not a change worth an event.
pub const LOAD_STEP: f64 = 0.1;

/// The stream type of heartbeat streams.
pub fn stream_type() -> StreamType {
    StreamType::parse("agent_heartbeat").expect("a valid stream type")
}

/// One heartbeat's content.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Beat {
    /// Free text such as `idle` or `busy`; empty when not given.
    #[serde(default)]
    pub status: String,
    #[serde(default)]
    pub load: f64,
    /// Missions the agent says it is running, sorted.
    #[serde(default)]
    pub running: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum HeartbeatEvent {
    AgentHeartbeat {
        #[serde(flatten)]
        beat: Beat,
        at_ms: i64,
    },
}

impl DomainEvent for HeartbeatEvent {
    fn event_type(&self) -> &'static str {
        match self {
            HeartbeatEvent::AgentHeartbeat { .. } => "AgentHeartbeat",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct InvalidBeat {
    pub field: &'static str,
    pub reason: String,
}

impl Beat {
    /// Checks the bounds and puts `running` in its canonical (sorted, deduplicated) order.
    pub fn normalised(mut self) -> Result<Beat, InvalidBeat> {
        let invalid = |field, reason: &str| InvalidBeat { field, reason: reason.to_owned() };
        if self.status.chars().count() > STATUS_LEN_MAX {
            return Err(invalid("status", &format!("must be at most {STATUS_LEN_MAX} characters")));
        }
        if !self.load.is_finite() || !(0.0..=LOAD_MAX).contains(&self.load) {
            return Err(invalid("load", &format!("must be a number from 0 to {LOAD_MAX}")));
        }
        if self.running.len() > RUNNING_MAX {
            return Err(invalid("running", &format!("at most {RUNNING_MAX} missions")));
        }
        if self.running.iter().any(|id| uuid::Uuid::parse_str(id).is_err()) {
            return Err(invalid("running", "each must be a mission id (a UUID)"));
        }
        self.running.sort();
        self.running.dedup();
        Ok(self)
    }
}

/// The last heartbeat the log holds for an agent.
#[derive(Debug, Clone, PartialEq)]
pub struct Recorded {
    pub beat: Beat,
    pub at_ms: i64,
}

/// Whether `beat`, received at `now_ms`, goes into the log: when nothing was recorded yet,
/// when it says something new, or when the last recorded one is `record_every_ms` old (never,
/// for 0).
pub fn worth_recording(
    last: Option<&Recorded>,
    beat: &Beat,
    now_ms: i64,
    record_every_ms: i64,
) -> bool {
    let Some(last) = last else { return true };
    (record_every_ms > 0 && now_ms - last.at_ms >= record_every_ms)
        || last.beat.status != beat.status
        || last.beat.running != beat.running
        || (last.beat.load - beat.load).abs() >= LOAD_STEP
}

#[cfg(test)]
mod tests {
    use super::*;

    fn beat(status: &str, load: f64, running: &[&str]) -> Beat {
        Beat {
            status: status.into(),
            load,
            running: running.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn an_unchanged_heartbeat_is_recorded_only_once_per_interval() {
        let last = Recorded { beat: beat("idle", 0.2, &[]), at_ms: 1_000 };
        let same = beat("idle", 0.25, &[]);
        assert!(!worth_recording(Some(&last), &same, 1_000 + 299_999, 300_000));
        assert!(worth_recording(Some(&last), &same, 1_000 + 300_000, 300_000));
        assert!(worth_recording(None, &same, 0, 300_000));
        // Without an interval, an unchanged heartbeat is never recorded again.
        assert!(!worth_recording(Some(&last), &same, i64::MAX / 2, 0));
    }

    #[test]
    fn a_change_of_status_running_or_load_step_is_recorded_at_once() {
        let id = "0190f5d2-7a1e-7c3b-9a4e-5f1d2c3b4a59";
        let last = Recorded { beat: beat("idle", 0.2, &[]), at_ms: 1_000 };
        assert!(worth_recording(Some(&last), &beat("busy", 0.2, &[]), 2_000, 300_000));
        assert!(worth_recording(Some(&last), &beat("idle", 0.2, &[id]), 2_000, 300_000));
        assert!(worth_recording(Some(&last), &beat("idle", 0.31, &[]), 2_000, 300_000));
    }

    #[test]
    fn bounds_name_the_field_and_running_is_canonical() {
        let id = "0190f5d2-7a1e-7c3b-9a4e-5f1d2c3b4a59";
        let other = "0190f5d2-7a1e-7c3b-9a4e-5f1d2c3b4a58";
        let sorted = beat("", 0.0, &[id, other, id]).normalised().unwrap();
        assert_eq!(sorted.running, vec![other.to_string(), id.to_string()]);
        let field = |b: Beat| b.normalised().unwrap_err().field;
        assert_eq!(field(beat(&"x".repeat(65), 0.0, &[])), "status");
        assert_eq!(field(beat("", f64::NAN, &[])), "load");
        assert_eq!(field(beat("", -1.0, &[])), "load");
        assert_eq!(field(beat("", 0.0, &["not-a-uuid"])), "running");
        let many: Vec<String> = (0..257).map(|i| uuid::Uuid::from_u128(i).to_string()).collect();
        assert_eq!(field(Beat { status: String::new(), load: 0.0, running: many }), "running");
    }

    #[test]
    fn the_event_payload_is_flat() {
        let event = HeartbeatEvent::AgentHeartbeat { beat: beat("idle", 0.5, &[]), at_ms: 7 };
        let payload = event.payload();
        assert_eq!(payload["status"], "idle");
        assert_eq!(payload["at_ms"], 7);
        let back = HeartbeatEvent::upcast("AgentHeartbeat", 1, payload).unwrap();
        assert_eq!(back, event);
    }
}
