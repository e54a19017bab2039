//! Following one mission until it ends: its history and then its live events from the
//! serve's WebSocket feed (`/ws/events?mission_id=&from=0&tokens=true`), one line each, with
//! the answer's pieces printed as they are generated; at the event that ends it, the
//! mission as the serve then holds it. The feed replays from the start, so a mission that had
//! already ended is shown whole and the command returns at once.

use std::time::Duration;

use futures::StreamExt;
use serde_json::Value;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use super::{COULD_NOT_RUN, Client, ClientError, MISSION_UNSUCCESSFUL, OK, segment, text};

/// Events whose arrival may mean the mission has ended: the mission is then read again.
const ENDING: &[&str] =
    &["MissionCompleted", "MissionAttemptFailed", "MissionLeaseExpired", "MissionCancelled"];

/// How `watch` prints.
#[derive(Debug, Clone, Copy)]
pub struct WatchOutput {
    /// Events as the feed's JSON lines, then the final mission as JSON.
    pub json: bool,
    /// Leave out the answer's pieces.
    pub quiet_tokens: bool,
}

/// Follows `mission_id` until it ends or `timeout` passes; answers the exit status: [`OK`]
/// completed, [`MISSION_UNSUCCESSFUL`] failed or cancelled, [`COULD_NOT_RUN`] when the time
/// ran out first.
pub async fn watch(
    client: &Client,
    mission_id: &str,
    output: WatchOutput,
    timeout: Duration,
) -> Result<i32, ClientError> {
    // Unknown or invisible to this key: the serve's 404 or 403, not a silent wait.
    let path = format!("/api/missions/{}", segment(mission_id)?);
    client.get(&path, &[]).await?;
    let query =
        [("mission_id", mission_id.to_owned()), ("from", "0".into()), ("tokens", "true".into())];
    let url = client.ws_url("/ws/events", &query)?;
    let mut request = url
        .as_str()
        .into_client_request()
        .map_err(|error| ClientError::Transport(error.to_string()))?;
    if let Some(value) = client.key.as_ref().and_then(|key| format!("Bearer {key}").parse().ok()) {
        request.headers_mut().insert("authorization", value);
    }
    let follow = async {
        let feed_error = |error: &dyn std::fmt::Display| {
            ClientError::Transport(format!("the event feed at {url}: {error}"))
        };
        if url.scheme() != "ws" {
            return Err(feed_error(&"this client follows missions over plain HTTP only"));
        }
        let address = url.socket_addrs(|| Some(80)).map_err(|error| feed_error(&error))?;
        let stream = tokio::time::timeout(
            super::CONNECT_TIMEOUT,
            tokio::net::TcpStream::connect(address.as_slice()),
        )
        .await
        .map_err(|_| feed_error(&"no connection in time"))?
        .map_err(|error| feed_error(&error))?;
        let (mut socket, _) = tokio_tungstenite::client_async(request, stream)
            .await
            .map_err(|error| feed_error(&error))?;
        let mut mid_answer = false;
        // The mission once read ended: the event at its version ends the watch.
        let mut ending: Option<Value> = None;
        while let Some(message) = socket.next().await {
            let message = message.map_err(|error| feed_error(&error))?;
            let text = match message {
                Message::Text(text) => text,
                Message::Close(frame) => {
                    let why = frame.map(|frame| frame.reason.to_string()).unwrap_or_default();
                    return Err(ClientError::Transport(format!("the feed closed: {why}")));
                }
                _ => continue,
            };
            let Ok(value) = serde_json::from_str::<Value>(&text) else { continue };
            if let Some(token) = value.get("token") {
                if !output.quiet_tokens && !output.json {
                    let piece = token.get("text").and_then(Value::as_str).unwrap_or_default();
                    print!("{piece}");
                    mid_answer = !token.get("done").and_then(Value::as_bool).unwrap_or(false);
                    if !mid_answer {
                        println!();
                    }
                } else if output.json && !output.quiet_tokens {
                    println!("{value}");
                }
                continue;
            }
            if mid_answer {
                println!();
                mid_answer = false;
            }
            if output.json {
                println!("{value}");
            } else {
                println!("{}", event_line(&value));
            }
            // Done at the event that ended it, not before: a replay passes the end of an
            // attempt the mission was retried after.
            let version = text_u64(&value, "version");
            let event_type = value.get("event_type").and_then(Value::as_str).unwrap_or_default();
            if ending.is_none() && ENDING.contains(&event_type) {
                let mission = client.get(&path, &[]).await?;
                if finished(&mission).is_some() {
                    ending = Some(mission);
                }
            }
            if let Some(mission) = ending.take_if(|mission| version >= text_u64(mission, "version"))
            {
                return Ok((finished(&mission).unwrap_or(COULD_NOT_RUN), mission));
            }
        }
        Err(ClientError::Transport("the event feed ended".into()))
    };
    match tokio::time::timeout(timeout, follow).await {
        Ok(Ok((status, mission))) => {
            if output.json {
                println!("{mission}");
            } else {
                println!("{}", outcome_line(&mission));
            }
            Ok(status)
        }
        Ok(Err(error)) => Err(error),
        Err(_) => {
            eprintln!("brain missions watch: {mission_id} had not ended after {timeout:?}");
            Ok(COULD_NOT_RUN)
        }
    }
}

/// The exit status of a mission that has ended; `None` while it has not.
pub fn finished(mission: &Value) -> Option<i32> {
    match mission.get("status").and_then(Value::as_str) {
        Some("completed") => Some(OK),
        Some("failed" | "cancelled") => Some(MISSION_UNSUCCESSFUL),
        _ => None,
    }
}

fn text_u64(value: &Value, field: &str) -> u64 {
    value.get(field).and_then(Value::as_u64).unwrap_or(0)
}

/// One event as a line: when, its place in the log, its type, and what it says in brief.
fn event_line(event: &Value) -> String {
    let payload = event.get("payload").cloned().unwrap_or(Value::Null);
    let mut details = Vec::new();
    for field in ["attempt", "worker_id", "step", "tool", "reason", "error", "retry_at_ms"] {
        if let Some(value) = payload.get(field).filter(|value| !value.is_null()) {
            let value = value.as_str().map_or_else(|| value.to_string(), str::to_owned);
            let value: String = value.chars().take(200).collect();
            details.push(format!("{field}={value}"));
        }
    }
    format!(
        "{}  #{:<8} {:<22} {}",
        text(event, "recorded_at"),
        text(event, "global_position"),
        text(event, "event_type"),
        details.join(" ")
    )
}

/// The last line of a watch: how the mission ended and what it returned or why it failed.
pub fn outcome_line(mission: &Value) -> String {
    let status = text(mission, "status");
    let detail = match status.as_str() {
        "completed" => mission.get("result").map(Value::to_string).unwrap_or_default(),
        _ => mission
            .get("errors")
            .and_then(Value::as_array)
            .and_then(|errors| errors.last())
            .map(|error| text(error, "error"))
            .unwrap_or_default(),
    };
    format!(
        "{} {status} after {} attempt(s): {detail}",
        text(mission, "mission_id"),
        text(mission, "attempt")
    )
}
