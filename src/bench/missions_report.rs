//! The report of `brain bench missions`: the text lines and the one JSON line, from the
//! figures a run measured. The JSON line keeps every figure a number under `results` (round
//! trips per consumer under `nats_delivered_by_consumer`), so that `scripts/bench-compare.sh`
//! can divide any figure of one build by the same figure of another.

use serde_json::{Map, Value, json};

use super::open_loop::Kept;
use super::round_trips::PerMission;

/// What the run was asked to do.
pub struct Params {
    pub missions: u64,
    pub clients: usize,
    pub rate: Option<f64>,
    pub in_flight_max: usize,
    pub own_serve: bool,
    pub serve_workers: usize,
    pub serve_binary: Option<String>,
    pub agent: String,
}

/// What it measured; latencies in milliseconds as p50, p99, max.
pub struct Figures {
    pub enqueued: u64,
    pub completed: u64,
    pub enqueue_per_s: f64,
    pub enqueue_ms: [f64; 3],
    pub completed_per_s: f64,
    pub completing_s: f64,
    pub end_to_end_ms: [f64; 3],
    pub kept: Option<Kept>,
    /// The measured database and the round trips per completed mission.
    pub round_trips: Option<(String, PerMission)>,
}

pub struct Lines {
    pub text: Vec<String>,
    pub json: Value,
}

pub fn lines(params: Params, f: Figures) -> Lines {
    let mut text = Vec::new();
    let load = match (params.rate, f.kept) {
        (Some(_), Some(kept)) => {
            format!("at {:.0}/s (at most {} in flight)", kept.rate_asked, params.in_flight_max)
        }
        _ => format!("by {} clients", params.clients),
    };
    text.push(format!(
        "missions:            {} enqueued {load}, {} completed",
        f.enqueued, f.completed
    ));
    if let Some(kept) = f.kept {
        text.push(format!(
            "rate:                asked {:.0}/s, achieved {:.0}/s; last send {:.1} ms behind its \
             time (latest {:.1} ms): schedule {}",
            kept.rate_asked,
            kept.rate_achieved,
            kept.last_behind.as_secs_f64() * 1e3,
            kept.max_behind.as_secs_f64() * 1e3,
            if kept.kept { "kept" } else { "NOT kept" }
        ));
    }
    let from = if f.kept.is_some() { " (from intended send times)" } else { "" };
    text.push(format!(
        "enqueue:             {:.0} requests/s, latency p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms{from}",
        f.enqueue_per_s, f.enqueue_ms[0], f.enqueue_ms[1], f.enqueue_ms[2]
    ));
    text.push(format!(
        "completed:           {:.0} missions/s end to end ({} in {:.2} s)",
        f.completed_per_s, f.completed, f.completing_s
    ));
    text.push(format!(
        "enqueue → completed: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        f.end_to_end_ms[0], f.end_to_end_ms[1], f.end_to_end_ms[2]
    ));
    let mut results = json!({
        "enqueued": f.enqueued,
        "completed": f.completed,
        "enqueue_per_s": f.enqueue_per_s,
        "enqueue_p50_ms": f.enqueue_ms[0],
        "enqueue_p99_ms": f.enqueue_ms[1],
        "enqueue_max_ms": f.enqueue_ms[2],
        "completed_per_s": f.completed_per_s,
        "end_to_end_p50_ms": f.end_to_end_ms[0],
        "end_to_end_p99_ms": f.end_to_end_ms[1],
        "end_to_end_max_ms": f.end_to_end_ms[2],
    });
    let add = |results: &mut Value, key: &str, value: Value| {
        results.as_object_mut().expect("an object").insert(key.to_owned(), value);
    };
    if let Some(kept) = f.kept {
        add(&mut results, "rate_asked", json!(kept.rate_asked));
        add(&mut results, "rate_achieved", json!(kept.rate_achieved));
        add(&mut results, "last_send_behind_ms", json!(kept.last_behind.as_secs_f64() * 1e3));
        add(&mut results, "max_send_behind_ms", json!(kept.max_behind.as_secs_f64() * 1e3));
    }
    let mut by_consumer = Map::new();
    if let Some((database, per)) = &f.round_trips {
        text.push(format!(
            "round trips:         per completed mission: {:.2} PostgreSQL transactions \
             (database {database}), {:.2} Redis calls ({:.2} of them scripts; every client of \
             that Redis counts), {:.2} JetStream messages published, {:.2} delivered",
            per.pg_transactions,
            per.redis_commands,
            per.redis_script_calls,
            per.nats_published,
            per.nats_delivered
        ));
        let consumers: Vec<String> = per
            .nats_delivered_by_consumer
            .iter()
            .map(|(name, n)| format!("{name} {n:.2}"))
            .collect();
        if !consumers.is_empty() {
            text.push(format!("  delivered per consumer: {}", consumers.join(", ")));
        }
        add(&mut results, "pg_transactions_per_mission", json!(per.pg_transactions));
        add(&mut results, "redis_calls_per_mission", json!(per.redis_commands));
        add(&mut results, "redis_script_calls_per_mission", json!(per.redis_script_calls));
        add(&mut results, "nats_published_per_mission", json!(per.nats_published));
        add(&mut results, "nats_delivered_per_mission", json!(per.nats_delivered));
        for (name, n) in &per.nats_delivered_by_consumer {
            by_consumer.insert(name.clone(), json!(n));
        }
    }
    let json = json!({
        "bench": "missions",
        "params": {
            "missions": params.missions,
            "clients": params.clients,
            "rate": params.rate,
            "in_flight_max": params.in_flight_max,
            "own_serve": params.own_serve,
            "serve_workers": params.serve_workers,
            "serve_binary": params.serve_binary,
            "agent": params.agent,
            "round_trips_database": f.round_trips.as_ref().map(|(database, _)| database),
            "cores": super::cores(),
        },
        "results": results,
        "nats_delivered_by_consumer": by_consumer,
    });
    Lines { text, json }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn params(rate: Option<f64>) -> Params {
        Params {
            missions: 100,
            clients: 64,
            rate,
            in_flight_max: 256,
            own_serve: true,
            serve_workers: 64,
            serve_binary: None,
            agent: "echo".to_owned(),
        }
    }

    fn figures(kept: Option<Kept>, round_trips: Option<(String, PerMission)>) -> Figures {
        Figures {
            enqueued: 100,
            completed: 100,
            enqueue_per_s: 400.0,
            enqueue_ms: [1.0, 2.0, 3.0],
            completed_per_s: 390.0,
            completing_s: 0.25,
            end_to_end_ms: [4.0, 5.0, 6.0],
            kept,
            round_trips,
        }
    }

    #[test]
    fn the_closed_loop_reports_no_rate_and_every_result_is_a_number() {
        let lines = lines(params(None), figures(None, None));
        assert!(lines.text[0].contains("by 64 clients"));
        assert!(!lines.text.iter().any(|line| line.starts_with("rate:")));
        let results = lines.json["results"].as_object().unwrap();
        assert!(results.values().all(Value::is_number));
        assert!(!results.contains_key("rate_asked"));
        assert_eq!(results["end_to_end_p99_ms"], 5.0);
    }

    #[test]
    fn the_open_loop_reports_the_rate_asked_and_achieved_and_the_round_trips() {
        let kept = Kept {
            rate_asked: 400.0,
            rate_achieved: 250.0,
            last_behind: Duration::from_millis(1_500),
            max_behind: Duration::from_millis(1_600),
            kept: false,
        };
        let per = PerMission {
            pg_transactions: 2.5,
            redis_commands: 6.0,
            redis_script_calls: 2.0,
            nats_published: 4.0,
            nats_delivered: 8.0,
            nats_delivered_by_consumer: [("queue".to_owned(), 4.0), ("list".to_owned(), 4.0)]
                .into(),
        };
        let lines = lines(params(Some(400.0)), figures(Some(kept), Some(("db".to_owned(), per))));
        let rate = lines.text.iter().find(|line| line.starts_with("rate:")).unwrap();
        assert!(rate.contains("asked 400/s, achieved 250/s"), "{rate}");
        assert!(rate.contains("1500.0 ms behind") && rate.contains("NOT kept"), "{rate}");
        let results = lines.json["results"].as_object().unwrap();
        assert!(results.values().all(Value::is_number));
        assert_eq!(results["rate_achieved"], 250.0);
        assert_eq!(results["last_send_behind_ms"], 1500.0);
        assert_eq!(results["pg_transactions_per_mission"], 2.5);
        assert_eq!(lines.json["nats_delivered_by_consumer"]["queue"], 4.0);
        assert_eq!(lines.json["params"]["round_trips_database"], "db");
    }
}
