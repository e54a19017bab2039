//! `fetch_url`: an HTTP GET of a URL whose host is on an allow-list (`host` or `host:port`).
//! Only `http` and `https`, no credentials in the URL, no redirects (a redirect could lead
//! off the list), a deadline, and the body cut at 64 KiB. The URL is parsed once and the
//! request goes to what was checked, so tricks such as `http://allowed@elsewhere/` are judged
//! by the host they really name.

use std::time::Duration;

use futures::future::BoxFuture;
use futures::{FutureExt, StreamExt};
use serde_json::{Value, json};

use super::{RESULT_BYTES_MAX, Tool, ToolError, capped};
use crate::llm::ToolSpec;

pub const TIMEOUT: Duration = Duration::from_secs(20);

pub struct FetchUrl {
    pub client: reqwest::Client,
    /// `host` (any port) or `host:port`, lowercase.
    pub allowed: Vec<String>,
}

impl FetchUrl {
    pub fn new(allowed: Vec<String>) -> FetchUrl {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(Duration::from_secs(5))
            .timeout(TIMEOUT)
            .build()
            .expect("an HTTP client builds");
        let allowed = allowed.into_iter().map(|host| host.trim().to_lowercase()).collect();
        FetchUrl { client, allowed }
    }

    /// The URL to fetch, or why it may not be.
    pub fn check(&self, raw: &str) -> Result<reqwest::Url, ToolError> {
        let refuse = |why: String| Err(ToolError::Refused(format!("{raw:?}: {why}")));
        let Ok(url) = reqwest::Url::parse(raw) else { return refuse("not a URL".into()) };
        if !matches!(url.scheme(), "http" | "https") {
            return refuse("only http and https".into());
        }
        if !url.username().is_empty() || url.password().is_some() {
            return refuse("no credentials in the URL".into());
        }
        let Some(host) = url.host_str().map(str::to_lowercase) else {
            return refuse("no host".into());
        };
        let with_port = format!("{host}:{}", url.port_or_known_default().unwrap_or(0));
        if !self.allowed.iter().any(|allowed| *allowed == host || *allowed == with_port) {
            return refuse(format!(
                "{with_port} is not one of the hosts allowed ({})",
                self.allowed.join(", ")
            ));
        }
        Ok(url)
    }
}

impl Tool for FetchUrl {
    fn spec(&self) -> ToolSpec {
        ToolSpec {
            name: "fetch_url".into(),
            description: format!(
                "GETs a URL on one of these hosts: {}. Answers its status and text (at most 64 KiB).",
                self.allowed.join(", ")
            ),
            parameters: json!({ "type": "object", "properties": { "url": { "type": "string" } }, "required": ["url"] }),
        }
    }

    fn run(&self, arguments: Value) -> BoxFuture<'static, Result<Value, ToolError>> {
        let checked = self.check(arguments["url"].as_str().unwrap_or_default());
        let client = self.client.clone();
        async move {
            let url = checked?;
            let response = client.get(url.clone()).send().await.map_err(|error| ToolError::Failed(error.without_url().to_string()))?;
            let status = response.status().as_u16();
            let mut body = Vec::new();
            let mut stream = response.bytes_stream();
            let mut cut = false;
            while let Some(chunk) = stream.next().await {
                let chunk = chunk.map_err(|error| ToolError::Failed(error.without_url().to_string()))?;
                body.extend_from_slice(&chunk);
                if body.len() > RESULT_BYTES_MAX {
                    cut = true;
                    break;
                }
            }
            let (text, truncated) = capped(&String::from_utf8_lossy(&body));
            Ok(json!({ "url": url.as_str(), "status": status, "text": text, "truncated": cut || truncated }))
        }
        .boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn only_allowed_hosts_are_fetched_and_redirects_are_not_followed() {
        let app =
            axum::Router::new().route("/doc", axum::routing::get(|| async { "the doc" })).route(
                "/away",
                axum::routing::get(|| async {
                    axum::response::Redirect::temporary("http://example.invalid/")
                }),
            );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move { axum::serve(listener, app).await });
        let tool = FetchUrl::new(vec![format!("127.0.0.1:{port}")]);
        let fetched =
            tool.run(json!({ "url": format!("http://127.0.0.1:{port}/doc") })).await.unwrap();
        assert_eq!((&fetched["status"], &fetched["text"]), (&json!(200), &json!("the doc")));
        let moved =
            tool.run(json!({ "url": format!("http://127.0.0.1:{port}/away") })).await.unwrap();
        assert_eq!(moved["status"], 307, "not followed: {moved}");
        for refused in [
            format!("http://127.0.0.1:{}/doc", port + 1),
            format!("http://127.0.0.1:{port}@169.254.169.254/"),
            format!("http://user:pw@127.0.0.1:{port}/doc"),
            "file:///etc/passwd".to_owned(),
            "http://localhost/".to_owned(),
            "not a url".to_owned(),
        ] {
            let outcome = tool.run(json!({ "url": refused })).await;
            assert!(matches!(outcome, Err(ToolError::Refused(_))), "{refused}: {outcome:?}");
        }
    }
}
