//! `brain missions …` and `brain agents …` against a running serve: the API's client for
//! people at a terminal and for scripts. Every command talks HTTP (or, to follow a mission,
//! the WebSocket feed) to `--url` with the key in `BRAIN_API_KEY`, prints a table by default
//! and the API's own JSON with `--json`, and exits with a status scripts can trust:
//! [`OK`], [`MISSION_UNSUCCESSFUL`] (a watched mission failed or was cancelled), or
//! [`COULD_NOT_RUN`] (the serve unreachable, or the request refused: the serve's reason is
//! printed with its code and field).

pub mod agents;
pub mod missions;
mod table;
mod watch;

use std::time::Duration;

use serde_json::Value;

/// The command did what was asked.
pub const OK: i32 = 0;
/// The mission a command followed ended failed or cancelled.
pub const MISSION_UNSUCCESSFUL: i32 = 1;
/// The command could not do what was asked: the serve was unreachable or refused it.
pub const COULD_NOT_RUN: i32 = 2;

/// Longest wait for a TCP connection to the serve.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Most bytes of an answer the client reads: far above any page the API sends.
pub const ANSWER_BYTES_MAX: usize = 32 * 1024 * 1024;

/// Where the serve is and how to prove who is calling.
#[derive(Debug, Clone, clap::Args)]
pub struct Remote {
    /// The serve's base URL.
    #[arg(long, env = "BRAIN_URL", default_value = "http://127.0.0.1:8000")]
    pub url: String,
    /// An API key of the serve (`brn_...`).
    #[arg(long = "key", env = "BRAIN_API_KEY", hide_env_values = true)]
    pub key: Option<String>,
    /// Longest wait for one request's answer, in seconds.
    #[arg(long, default_value_t = 30)]
    pub request_timeout_s: u64,
}

/// Why a request did not give what was asked.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The serve answered with its error shape (a 4xx or 5xx).
    #[error("{status} {code}{}: {message}", field.as_deref().map(|f| format!(" (field {f})")).unwrap_or_default())]
    Refused { status: u16, code: String, field: Option<String>, message: String },
    /// No usable answer: the serve unreachable, slow past the timeout, or not a BRAiN serve.
    #[error("{0}")]
    Transport(String),
}

/// The serve's API, as one principal sees it.
pub struct Client {
    http: reqwest::Client,
    base: String,
    key: Option<String>,
}

impl Client {
    pub fn new(remote: &Remote) -> anyhow::Result<Client> {
        let http = crate::bench::http_client(remote.key.as_deref())
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(Duration::from_secs(remote.request_timeout_s.max(1)))
            .build()?;
        let base = remote.url.trim_end_matches('/').to_owned();
        Ok(Client { http, base, key: remote.key.clone() })
    }

    /// `GET path?query`, the answer's JSON.
    pub async fn get(&self, path: &str, query: &[(&str, String)]) -> Result<Value, ClientError> {
        let mut url = self.url(path)?;
        if !query.is_empty() {
            url.query_pairs_mut().extend_pairs(query.iter().map(|(k, v)| (*k, v.as_str())));
        }
        answer(self.http.get(url)).await
    }

    /// `POST path` with `body` as JSON, the answer's JSON.
    pub async fn post(&self, path: &str, body: &Value) -> Result<Value, ClientError> {
        answer(self.http.post(self.url(path)?).json(body)).await
    }

    fn url(&self, path: &str) -> Result<reqwest::Url, ClientError> {
        reqwest::Url::parse(&format!("{}{path}", self.base))
            .map_err(|error| ClientError::Transport(format!("--url {}: {error}", self.base)))
    }

    /// The WebSocket URL of `path?query` on the same serve.
    fn ws_url(&self, path: &str, query: &[(&str, String)]) -> Result<reqwest::Url, ClientError> {
        let mut url = self.url(path)?;
        let scheme = if url.scheme() == "https" { "wss" } else { "ws" };
        url.set_scheme(scheme)
            .map_err(|()| ClientError::Transport("--url: not an http(s) URL".into()))?;
        url.query_pairs_mut().extend_pairs(query.iter().map(|(k, v)| (*k, v.as_str())));
        Ok(url)
    }
}

/// Sends `request` and reads its answer: the JSON of a 2xx, or the API's error as
/// [`ClientError::Refused`].
async fn answer(request: reqwest::RequestBuilder) -> Result<Value, ClientError> {
    let transport = |error: reqwest::Error| {
        // reqwest's own text names the URL; the cause (refused, timed out) is in its sources.
        let mut text = error.to_string();
        let mut source = std::error::Error::source(&error);
        while let Some(cause) = source {
            text.push_str(&format!(": {cause}"));
            source = cause.source();
        }
        ClientError::Transport(text)
    };
    let response = request.send().await.map_err(transport)?;
    let status = response.status();
    if response.content_length().is_some_and(|length| length > ANSWER_BYTES_MAX as u64) {
        return Err(ClientError::Transport(format!(
            "an answer of more than {ANSWER_BYTES_MAX} bytes"
        )));
    }
    let bytes = response.bytes().await.map_err(transport)?;
    let body: Option<Value> = serde_json::from_slice(&bytes).ok();
    if status.is_success() {
        return body.ok_or_else(|| ClientError::Transport(format!("{status} without JSON")));
    }
    let error = body.as_ref().and_then(|body| body.get("error"));
    let text = |name: &str| {
        error.and_then(|error| error.get(name)).and_then(Value::as_str).map(str::to_owned)
    };
    Err(ClientError::Refused {
        status: status.as_u16(),
        code: text("code").unwrap_or_else(|| "unknown".into()),
        field: text("field"),
        message: text("message")
            .unwrap_or_else(|| String::from_utf8_lossy(&bytes).chars().take(500).collect()),
    })
}

/// `text` as one segment of a URL path: every byte but letters, digits, `-`, `_` and `~`
/// percent-encoded, so that an id given on the command line cannot reach another route
/// (`../keys`, `x?y`). A segment of dots alone is refused: URL parsers take `%2E%2E` for
/// `..` too.
pub fn segment(text: &str) -> Result<String, ClientError> {
    if text.is_empty() || text.chars().all(|c| c == '.') {
        return Err(ClientError::Transport(format!("{text:?} is not an id")));
    }
    Ok(text
        .bytes()
        .map(|byte| match byte {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' | b'~' => {
                (byte as char).to_string()
            }
            _ => format!("%{byte:02X}"),
        })
        .collect())
}

/// Prints `value` as indented JSON on stdout.
fn print_json(value: &Value) {
    println!("{}", serde_json::to_string_pretty(value).unwrap_or_else(|_| value.to_string()));
}

/// A field of an API object as text for a table: strings bare, absent or null as `-`.
fn text(value: &Value, field: &str) -> String {
    match value.get(field) {
        None | Some(Value::Null) => "-".to_owned(),
        Some(Value::String(text)) => text.clone(),
        Some(other) => other.to_string(),
    }
}

/// Runs a client command: prints why it could not run, and exits with its status.
async fn exit_with(what: &str, run: impl Future<Output = Result<i32, ClientError>>) -> ! {
    let status = match run.await {
        Ok(status) => status,
        Err(error) => {
            eprintln!("brain {what}: {error}");
            COULD_NOT_RUN
        }
    };
    std::process::exit(status)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_id_is_one_path_segment_whatever_it_holds() {
        assert_eq!(segment("0195a3f2-7c1e").unwrap(), "0195a3f2-7c1e");
        assert_eq!(segment("../keys").unwrap(), "%2E%2E%2Fkeys");
        assert_eq!(segment("a?b#c d").unwrap(), "a%3Fb%23c%20d");
        assert!(segment("..").is_err());
        assert!(segment("").is_err());
    }
}
