//! The browser's logs as chromedriver reports them: console entries, DevTools network
//! events, and the requests that failed, read from those events.

use std::collections::HashMap;
use std::fmt;

use serde::Deserialize;
use serde_json::Value;

/// One entry of a chromedriver log.
#[derive(Debug, Clone, Deserialize)]
pub struct LogEntry {
    /// `SEVERE` (console.error, failed loads), `WARNING`, `INFO`, `DEBUG`.
    pub level: String,
    /// For console calls: the script's URL, position and the message.
    pub message: String,
    /// `console-api`, `network`, `javascript` (uncaught errors), …
    #[serde(default)]
    pub source: Option<String>,
    /// Milliseconds since the Unix epoch.
    pub timestamp: f64,
}

impl LogEntry {
    pub fn is_severe(&self) -> bool {
        self.level == "SEVERE"
    }

    /// A `console.error` or an uncaught exception, as opposed to the `SEVERE` entries
    /// Chromium adds for failed loads (`source` `network`: every response of 400 or more,
    /// a fetch's included, logs "Failed to load resource").
    pub fn is_script_error(&self) -> bool {
        self.is_severe() && matches!(self.source.as_deref(), Some("console-api" | "javascript"))
    }
}

/// One DevTools event from the performance log, e.g. `Network.responseReceived`.
#[derive(Debug, Clone)]
pub struct PerfEvent {
    pub method: String,
    pub params: Value,
    /// Milliseconds since the Unix epoch.
    pub timestamp: f64,
}

/// A request that got an error status or none at all.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FailedRequest {
    pub url: String,
    pub failure: Failure,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// An answer with status 400 or more.
    Status(u16),
    /// No answer: DevTools' error text (`net::ERR_CONNECTION_REFUSED`, `net::ERR_ABORTED`
    /// for a request cancelled, e.g. by navigating away, …).
    Error(String),
}

impl fmt::Display for FailedRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.failure {
            Failure::Status(status) => write!(f, "{} answered {status}", self.url),
            Failure::Error(error) => write!(f, "{} failed: {error}", self.url),
        }
    }
}

/// The failed requests among `events`, in the order they failed: responses with status
/// 400 or more (`Network.responseReceived`) and requests that got no answer
/// (`Network.loadingFailed`, named by the URL of their `Network.requestWillBeSent`). One
/// entry per request: an error status is kept over a later loading failure.
pub fn failed_requests(events: &[PerfEvent]) -> Vec<FailedRequest> {
    let mut urls: HashMap<&str, &str> = HashMap::new();
    let mut failed: Vec<(&str, FailedRequest)> = Vec::new();
    for event in events {
        let params = &event.params;
        let request_id = params["requestId"].as_str().unwrap_or_default();
        match event.method.as_str() {
            "Network.requestWillBeSent" => {
                if let Some(url) = params["request"]["url"].as_str() {
                    urls.insert(request_id, url);
                }
            }
            "Network.responseReceived" => {
                let response = &params["response"];
                let status = response["status"].as_u64().unwrap_or_default();
                if status >= 400 {
                    let url = response["url"]
                        .as_str()
                        .or(urls.get(request_id).copied())
                        .unwrap_or_default();
                    let failure = Failure::Status(u16::try_from(status).unwrap_or(u16::MAX));
                    failed.push((request_id, FailedRequest { url: url.to_owned(), failure }));
                }
            }
            "Network.loadingFailed" => {
                if failed.iter().any(|(id, _)| *id == request_id) {
                    continue;
                }
                let url = urls.get(request_id).copied().unwrap_or("(unknown URL)");
                let error = params["errorText"].as_str().unwrap_or("unknown error").to_owned();
                failed.push((
                    request_id,
                    FailedRequest { url: url.to_owned(), failure: Failure::Error(error) },
                ));
            }
            _ => {}
        }
    }
    failed.into_iter().map(|(_, request)| request).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn event(method: &str, params: Value) -> PerfEvent {
        PerfEvent { method: method.to_owned(), params, timestamp: 0.0 }
    }

    #[test]
    fn failed_requests_names_error_statuses_and_requests_without_an_answer() {
        let events = [
            event(
                "Network.requestWillBeSent",
                json!({"requestId": "1", "request": {"url": "http://h/ok"}}),
            ),
            event(
                "Network.responseReceived",
                json!({"requestId": "1", "response": {"url": "http://h/ok", "status": 200}}),
            ),
            event(
                "Network.requestWillBeSent",
                json!({"requestId": "2", "request": {"url": "http://h/missing"}}),
            ),
            event(
                "Network.responseReceived",
                json!({"requestId": "2", "response": {"url": "http://h/missing", "status": 404}}),
            ),
            event(
                "Network.loadingFailed",
                json!({"requestId": "2", "errorText": "net::ERR_FAILED"}),
            ),
            event(
                "Network.requestWillBeSent",
                json!({"requestId": "3", "request": {"url": "http://down/"}}),
            ),
            event(
                "Network.loadingFailed",
                json!({"requestId": "3", "errorText": "net::ERR_CONNECTION_REFUSED"}),
            ),
        ];
        assert_eq!(
            failed_requests(&events),
            vec![
                FailedRequest { url: "http://h/missing".into(), failure: Failure::Status(404) },
                FailedRequest {
                    url: "http://down/".into(),
                    failure: Failure::Error("net::ERR_CONNECTION_REFUSED".into())
                },
            ]
        );
    }
}
