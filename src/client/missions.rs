//! `brain missions list | show | enqueue | watch | cancel | retry` against a running serve,
//! beside `replay` and `fork`, which work on the store itself.

use std::time::Duration;

use serde_json::{Value, json};

use super::watch::{WatchOutput, finished, outcome_line, watch};
use super::{Client, ClientError, OK, Remote, exit_with, print_json, segment, table, text};

/// Longest `watch` and `enqueue --wait` follow a mission unless told otherwise, in seconds.
pub const WATCH_TIMEOUT_S_DEFAULT: u64 = 3_600;

#[derive(Debug, clap::Subcommand)]
#[expect(clippy::large_enum_variant, reason = "parsed once at start-up, never moved around")]
pub enum MissionsCli {
    /// List missions, newest first, filtered as `GET /api/missions` filters them.
    List {
        #[command(flatten)]
        remote: Remote,
        #[command(flatten)]
        filter: ListFilter,
        /// Every page, following the cursor (at most 100,000 missions), not just the first.
        #[arg(long, conflicts_with = "cursor")]
        all: bool,
        /// Print the API's page as JSON (with `--all`, one page holding every mission).
        #[arg(long)]
        json: bool,
    },
    /// Show one mission: its state, attempts, errors and result.
    Show {
        #[command(flatten)]
        remote: Remote,
        mission_id: String,
        /// As it stood just after this position of the log.
        #[arg(long, conflicts_with = "at")]
        at_position: Option<u64>,
        /// As it stood at this moment (RFC 3339).
        #[arg(long)]
        at: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Enqueue a mission; prints its id (or, with `--wait`, follows it to its end).
    Enqueue {
        #[command(flatten)]
        remote: Remote,
        /// Its name (1 to 200 characters).
        name: String,
        #[arg(long, default_value = "")]
        description: String,
        /// `low`, `normal`, `high` or `critical`.
        #[arg(long)]
        priority: Option<String>,
        /// The agent kind to run it.
        #[arg(long)]
        agent: Option<String>,
        /// Its payload: a JSON object.
        #[arg(long)]
        payload: Option<String>,
        /// An idempotency key: enqueueing again with it gives the same mission.
        #[arg(long)]
        idempotency_key: Option<String>,
        /// Attempts it may take (1 to 100).
        #[arg(long)]
        max_attempts: Option<u32>,
        /// Deadline of one attempt, in seconds.
        #[arg(long)]
        timeout_s: Option<u64>,
        /// Not to start before this moment (RFC 3339).
        #[arg(long)]
        not_before: Option<String>,
        /// Follow it until it ends, and exit with its outcome (as `watch`).
        #[arg(long)]
        wait: bool,
        /// With `--wait`: longest to follow it, in seconds.
        #[arg(long, default_value_t = WATCH_TIMEOUT_S_DEFAULT)]
        wait_timeout_s: u64,
        #[arg(long)]
        json: bool,
    },
    /// Follow a mission live (its events, its answer as it is generated) until it ends; exit
    /// 0 completed, 1 failed or cancelled, 2 not ended in time or could not follow.
    Watch {
        #[command(flatten)]
        remote: Remote,
        mission_id: String,
        /// Longest to follow it, in seconds.
        #[arg(long, default_value_t = WATCH_TIMEOUT_S_DEFAULT)]
        wait_timeout_s: u64,
        /// Leave out the answer's pieces.
        #[arg(long)]
        no_tokens: bool,
        /// Events as JSON lines, then the mission as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Cancel a mission that has not ended.
    Cancel {
        #[command(flatten)]
        remote: Remote,
        mission_id: String,
        /// Recorded in its history.
        #[arg(long, default_value = "")]
        reason: String,
        #[arg(long)]
        json: bool,
    },
    /// Run a failed mission again with fresh attempts.
    Retry {
        #[command(flatten)]
        remote: Remote,
        mission_id: String,
        /// Recorded in its history.
        #[arg(long, default_value = "")]
        reason: String,
        #[arg(long)]
        json: bool,
    },
    /// Enqueue a copy of a finished mission (completed, failed or cancelled), linked to it
    /// both ways; prints the copy's id and status.
    Reenqueue {
        #[command(flatten)]
        remote: Remote,
        mission_id: String,
        /// Recorded in the original's history.
        #[arg(long, default_value = "")]
        reason: String,
        /// Sending it again with the same key names the same copy and enqueues nothing.
        #[arg(long)]
        idempotency_key: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Cancel, retry or re-enqueue many missions at once: by id (`--id`, repeatable) or by
    /// the list's filters (at most 10,000); prints each one's outcome. Exit 0 every one done,
    /// 1 some refused (each says why), 2 could not run.
    Bulk {
        #[command(flatten)]
        remote: Remote,
        /// `cancel`, `retry` or `reenqueue`.
        action: String,
        /// A mission to act on (repeatable); without any, the filters name them.
        #[arg(long = "id")]
        ids: Vec<String>,
        #[command(flatten)]
        filter: ListFilter,
        /// Why: recorded in each mission's history.
        #[arg(long)]
        reason: String,
        /// Sending the same command again with the same key changes nothing more.
        #[arg(long)]
        idempotency_key: Option<String>,
        #[arg(long)]
        json: bool,
    },
    #[command(flatten)]
    Record(crate::agents::replay::MissionsCli),
}

/// The list's filters, sent as the route's query parameters of the same names.
#[derive(Debug, Clone, clap::Args)]
pub struct ListFilter {
    /// A status: `pending`, `queued`, `running`, `suspended`, `completed`, `failed`,
    /// `cancelled`.
    #[arg(long)]
    status: Option<String>,
    #[arg(long)]
    priority: Option<String>,
    /// Agent kind.
    #[arg(long)]
    agent: Option<String>,
    /// Enqueued at or after this moment (RFC 3339).
    #[arg(long)]
    since: Option<String>,
    /// Rows per page (1 to 200).
    #[arg(long)]
    limit: Option<u32>,
    /// The `next_cursor` a previous page printed.
    #[arg(long)]
    cursor: Option<String>,
    /// Any other filter the serve's list takes, as NAME=VALUE (repeatable): `q=load`.
    #[arg(long = "where", value_name = "NAME=VALUE", value_parser = name_value)]
    filters: Vec<(String, String)>,
}

fn name_value(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((name, value)) if !name.is_empty() => Ok((name.to_owned(), value.to_owned())),
        _ => Err(format!("expected NAME=VALUE, got {text:?}")),
    }
}

impl ListFilter {
    fn query(&self) -> Vec<(&str, String)> {
        let mut query = Vec::new();
        let named = [
            ("status", &self.status),
            ("priority", &self.priority),
            ("agent", &self.agent),
            ("since", &self.since),
            ("cursor", &self.cursor),
        ];
        for (name, value) in named {
            if let Some(value) = value {
                query.push((name, value.clone()));
            }
        }
        if let Some(limit) = self.limit {
            query.push(("limit", limit.to_string()));
        }
        query.extend(self.filters.iter().map(|(name, value)| (name.as_str(), value.clone())));
        query
    }
}

impl MissionsCli {
    pub async fn run(self) -> anyhow::Result<()> {
        if let MissionsCli::Record(record) = self {
            return record.run().await;
        }
        let remote = match &self {
            MissionsCli::Record(_) => unreachable!("run above"),
            MissionsCli::List { remote, .. }
            | MissionsCli::Show { remote, .. }
            | MissionsCli::Enqueue { remote, .. }
            | MissionsCli::Watch { remote, .. }
            | MissionsCli::Cancel { remote, .. }
            | MissionsCli::Retry { remote, .. }
            | MissionsCli::Reenqueue { remote, .. }
            | MissionsCli::Bulk { remote, .. } => remote.clone(),
        };
        let client = Client::new(&remote)?;
        exit_with("missions", self.execute(&client)).await
    }

    async fn execute(self, client: &Client) -> Result<i32, ClientError> {
        match self {
            MissionsCli::List { filter, all, json, .. } => {
                let page = match all {
                    true => every_page(client, filter.query()).await?,
                    false => client.get("/api/missions", &filter.query()).await?,
                };
                if json {
                    print_json(&page);
                } else {
                    print_list(&page);
                }
            }
            MissionsCli::Show { mission_id, at_position, at, json, .. } => {
                let mut query = Vec::new();
                query.extend(at_position.map(|position| ("at_position", position.to_string())));
                query.extend(at.map(|at| ("at", at)));
                let mission =
                    client.get(&format!("/api/missions/{}", segment(&mission_id)?), &query).await?;
                if json {
                    print_json(&mission);
                } else {
                    print_mission(&mission);
                }
            }
            MissionsCli::Enqueue {
                name,
                description,
                priority,
                agent,
                payload,
                idempotency_key,
                max_attempts,
                timeout_s,
                not_before,
                wait,
                wait_timeout_s,
                json,
                ..
            } => {
                let mut body = json!({ "name": name, "description": description });
                let payload = payload.map(|text| serde_json::from_str::<Value>(&text)).transpose();
                let payload = payload.map_err(|error| {
                    ClientError::Transport(format!("--payload: not JSON: {error}"))
                })?;
                for (field, value) in [
                    ("priority", priority.map(Value::from)),
                    ("agent", agent.map(Value::from)),
                    ("payload", payload),
                    ("idempotency_key", idempotency_key.map(Value::from)),
                    ("max_attempts", max_attempts.map(Value::from)),
                    ("timeout_s", timeout_s.map(Value::from)),
                    ("not_before", not_before.map(Value::from)),
                ] {
                    if let Some(value) = value {
                        body[field] = value;
                    }
                }
                let mission = client.post("/api/missions/enqueue", &body).await?;
                let mission_id = text(&mission, "mission_id");
                if wait {
                    let output = WatchOutput { json, quiet_tokens: false };
                    let timeout = Duration::from_secs(wait_timeout_s);
                    return watch(client, &mission_id, output, timeout).await;
                }
                if json {
                    print_json(&mission);
                } else {
                    println!("{mission_id}");
                }
            }
            MissionsCli::Watch { mission_id, wait_timeout_s, no_tokens, json, .. } => {
                let output = WatchOutput { json, quiet_tokens: no_tokens };
                let timeout = Duration::from_secs(wait_timeout_s);
                return watch(client, &mission_id, output, timeout).await;
            }
            MissionsCli::Cancel { mission_id, reason, json, .. } => {
                let path = format!("/api/missions/{}/cancel", segment(&mission_id)?);
                let mission = client.post(&path, &json!({ "reason": reason })).await?;
                changed(&mission, json);
            }
            MissionsCli::Retry { mission_id, reason, json, .. } => {
                let path = format!("/api/missions/{}/retry", segment(&mission_id)?);
                let mission = client.post(&path, &json!({ "reason": reason })).await?;
                changed(&mission, json);
            }
            MissionsCli::Reenqueue { mission_id, reason, idempotency_key, json, .. } => {
                let path = format!("/api/missions/{}/reenqueue", segment(&mission_id)?);
                let mut body = json!({ "reason": reason });
                if let Some(key) = idempotency_key {
                    body["idempotency_key"] = Value::from(key);
                }
                let copy = client.post(&path, &body).await?;
                changed(&copy, json);
            }
            MissionsCli::Bulk { action, ids, filter, reason, idempotency_key, json, .. } => {
                let mut body = json!({ "action": action, "reason": reason });
                if ids.is_empty() {
                    let filter: serde_json::Map<String, Value> = filter
                        .query()
                        .into_iter()
                        .map(|(name, value)| (name.to_owned(), Value::from(value)))
                        .collect();
                    body["filter"] = Value::Object(filter);
                } else {
                    body["mission_ids"] = json!(ids);
                }
                if let Some(key) = idempotency_key {
                    body["idempotency_key"] = Value::from(key);
                }
                let answer = client.post("/api/missions/bulk", &body).await?;
                if json {
                    print_json(&answer);
                } else {
                    print_bulk(&answer);
                }
                let refused = answer.get("refused").and_then(Value::as_u64).unwrap_or(0);
                return Ok(if refused > 0 { super::MISSION_UNSUCCESSFUL } else { OK });
            }
            MissionsCli::Record(_) => unreachable!("run dispatches it"),
        }
        Ok(OK)
    }
}

/// Most missions `list --all` reads.
const LIST_ALL_MAX: usize = 100_000;

/// Every page of the list for `query`, as one page: the missions in order, the first page's
/// total, and a `next_cursor` only when [`LIST_ALL_MAX`] cut it short.
async fn every_page(client: &Client, mut query: Vec<(&str, String)>) -> Result<Value, ClientError> {
    if !query.iter().any(|(name, _)| *name == "limit") {
        query.push(("limit", "200".to_owned()));
    }
    let mut whole = client.get("/api/missions", &query).await?;
    let mut missions = whole["missions"].as_array().cloned().unwrap_or_default();
    while let Some(cursor) = whole["next_cursor"].as_str().map(str::to_owned) {
        if missions.len() >= LIST_ALL_MAX {
            break;
        }
        query.retain(|(name, _)| *name != "cursor");
        query.push(("cursor", cursor));
        let page = client.get("/api/missions", &query).await?;
        missions.extend(page["missions"].as_array().cloned().unwrap_or_default());
        whole["next_cursor"] = page["next_cursor"].clone();
    }
    whole["missions"] = Value::Array(missions);
    Ok(whole)
}

/// What a command that changed a mission prints: the mission, or its id and new status.
fn changed(mission: &Value, json: bool) {
    if json {
        print_json(mission);
    } else {
        println!("{} {}", text(mission, "mission_id"), text(mission, "status"));
    }
}

fn print_list(page: &Value) {
    let rows: Vec<Vec<String>> = page
        .get("missions")
        .and_then(Value::as_array)
        .map(|missions| {
            missions
                .iter()
                .map(|mission| {
                    let columns =
                        ["mission_id", "status", "agent", "attempt", "updated_at", "name"];
                    let mut row: Vec<String> =
                        columns.iter().map(|column| text(mission, column)).collect();
                    // The last error, where the serve's list carries it.
                    if let Some(error) = mission.get("error").and_then(Value::as_str) {
                        row[5] = format!("{}  ({error})", row[5]);
                    }
                    row
                })
                .collect()
        })
        .unwrap_or_default();
    table::print(&["id", "status", "kind", "attempt", "updated", "name"], &rows);
    match page.get("next_cursor").filter(|cursor| !cursor.is_null()) {
        Some(cursor) => {
            let cursor = cursor.as_str().map_or_else(|| cursor.to_string(), str::to_owned);
            eprintln!("{} shown; more with --cursor {cursor}", rows.len());
        }
        None => eprintln!("{} shown", rows.len()),
    }
}

fn print_bulk(answer: &Value) {
    let rows: Vec<Vec<String>> = answer
        .get("results")
        .and_then(Value::as_array)
        .map(|results| {
            results
                .iter()
                .map(|result| {
                    let why = match (result.get("error"), result.get("copy_id")) {
                        (Some(error), _) => {
                            format!("{}: {}", text(error, "code"), text(error, "message"))
                        }
                        (None, Some(_)) => format!("copy {}", text(result, "copy_id")),
                        (None, None) => text(result, "status"),
                    };
                    vec![text(result, "mission_id"), text(result, "outcome"), why]
                })
                .collect()
        })
        .unwrap_or_default();
    table::print(&["id", "outcome", "status, copy or why"], &rows);
    eprintln!(
        "{} matched, {} done, {} refused",
        text(answer, "matched"),
        text(answer, "done"),
        text(answer, "refused")
    );
}

fn print_mission(mission: &Value) {
    let fields = [
        ("id", "mission_id"),
        ("name", "name"),
        ("status", "status"),
        ("kind", "agent"),
        ("priority", "priority"),
        ("attempt", "attempt"),
        ("max attempts", "max_attempts"),
        ("worker", "worker_id"),
        ("enqueued", "enqueued_at"),
        ("by", "enqueued_by"),
        ("updated", "updated_at"),
        ("parent", "parent_id"),
        ("copy of", "copied_from"),
    ];
    let rows: Vec<Vec<String>> = fields
        .iter()
        .filter(|(_, field)| mission.get(*field).is_some_and(|value| !value.is_null()))
        .map(|(label, field)| vec![(*label).to_owned(), text(mission, field)])
        .collect();
    table::print(&["field", "value"], &rows);
    if let Some(errors) = mission.get("errors").and_then(Value::as_array).filter(|e| !e.is_empty())
    {
        println!();
        let rows: Vec<Vec<String>> = errors
            .iter()
            .map(|error| vec![text(error, "attempt"), text(error, "at"), text(error, "error")])
            .collect();
        table::print(&["attempt", "at", "error"], &rows);
    }
    if finished(mission).is_some() {
        println!();
        println!("{}", outcome_line(mission));
    }
}
