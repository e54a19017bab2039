//! `fetch_url`: an HTTP GET of a URL whose host is on an allow-list (`host` or `host:port`).
//! Only `http` and `https`, no credentials in the URL, no redirects (a redirect could lead
//! off the list), a deadline, and the body cut at 64 KiB. The URL is parsed once and the
//! request goes to what was checked, so tricks such as `http://allowed@elsewhere/` are judged
//! by the host they really name.
//!
//! Where the request goes is checked too (design invariant 13): a host listed without a port
//! allows only its scheme's own port; a listed name must resolve to public addresses only (a
//! name that answers with a loopback, private, link-local or other internal address is
//! refused, so DNS cannot turn an allowed name into a way inside), and the request is sent to
//! the very address that was checked, never resolved again (no rebinding between check and
//! connect). An internal server is allowed by listing its address itself (`10.0.0.5:8080`).

use std::time::Duration;

use futures::future::BoxFuture;
use futures::{FutureExt, StreamExt};
use serde_json::{Value, json};

use super::{RESULT_BYTES_MAX, Tool, ToolError, capped};
use crate::llm::ToolSpec;

pub const TIMEOUT: Duration = Duration::from_secs(20);
/// Deadline of the DNS look-up of a URL's host.
pub const RESOLVE_TIMEOUT: Duration = Duration::from_secs(5);
/// Deadline of connecting to the checked address.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

pub struct FetchUrl {
    /// `host` (its scheme's own port only) or `host:port`, lowercase.
    pub allowed: Vec<String>,
}

/// Whether an address is one a listed *name* may lead to: not loopback, private, link-local
/// (the cloud metadata services' 169.254.169.254 among them), shared (CGNAT), unspecified,
/// multicast, broadcast, documentation or reserved, in IPv4 or IPv6 (`fc00::/7` holds the
/// metadata service's `fd00:ec2::254`). An IPv6 address that carries an IPv4 one (mapped,
/// compatible, NAT64's `64:ff9b::/96`, 6to4's `2002::/16`) is judged as that IPv4 address.
pub fn is_public(address: std::net::IpAddr) -> bool {
    use std::net::{IpAddr, Ipv4Addr};
    match address {
        IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            !(v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_multicast()
                || v4.is_broadcast()
                || v4.is_documentation()
                || a == 0
                || a >= 240
                || (a == 100 && (64..128).contains(&b))
                || (a == 192 && b == 0)
                || (a == 198 && (18..20).contains(&b)))
        }
        IpAddr::V6(v6) => {
            // `::a.b.c.d` and `::ffff:a.b.c.d` (`::1` too, as 0.0.0.1: not public).
            if let Some(v4) = v6.to_ipv4() {
                return is_public(IpAddr::V4(v4));
            }
            let segments = v6.segments();
            let embedded = |high: u16, low: u16| {
                let [a, b] = high.to_be_bytes();
                let [c, d] = low.to_be_bytes();
                IpAddr::V4(Ipv4Addr::new(a, b, c, d))
            };
            if segments[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
                return is_public(embedded(segments[6], segments[7]));
            }
            if segments[0] == 0x2002 {
                return is_public(embedded(segments[1], segments[2]));
            }
            let first = segments[0];
            !(v6.is_multicast()
                || (first & 0xfe00) == 0xfc00
                || (first & 0xffc0) == 0xfe80
                // Site-local (deprecated, still routed inside some networks).
                || (first & 0xffc0) == 0xfec0
                // NAT64 for local use, and the discard-only prefix.
                || (first == 0x64 && segments[1] == 0xff9b && segments[2] == 1)
                || segments[..4] == [0x100, 0, 0, 0]
                || first == 0x2001 && segments[1] == 0x0db8)
        }
    }
}

impl FetchUrl {
    pub fn new(allowed: Vec<String>) -> FetchUrl {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let allowed = allowed.into_iter().map(|host| host.trim().to_lowercase()).collect();
        FetchUrl { allowed }
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
        // `url.port()` is `None` exactly when the URL uses its scheme's own port.
        let own_port = url.port().is_none();
        if !self
            .allowed
            .iter()
            .any(|allowed| (*allowed == host && own_port) || *allowed == with_port)
        {
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
        async move {
            let url = checked?;
            let client = pinned_client(&url).await?;
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

/// A client that can reach only the one address `url`'s host was checked to have: an IP
/// literal as it is, a name resolved once and every answer required to be public.
async fn pinned_client(url: &reqwest::Url) -> Result<reqwest::Client, ToolError> {
    let port = url.port_or_known_default().unwrap_or(0);
    let host = url.host_str().unwrap_or_default();
    let literal = host.starts_with('[') || host.parse::<std::net::IpAddr>().is_ok();
    match url.host_str() {
        None => Err(ToolError::Refused(format!("{url}: no host"))),
        // An address the list names itself was checked as written.
        Some(_) if literal => client(None),
        Some(name) => client(Some((name, checked_address(name, port).await?))),
    }
}

/// The address to connect to for `name`: looked up once, within [`RESOLVE_TIMEOUT`], and
/// refused unless every answer is public.
async fn checked_address(name: &str, port: u16) -> Result<std::net::SocketAddr, ToolError> {
    let lookup = tokio::net::lookup_host((name, port));
    let addresses: Vec<std::net::SocketAddr> =
        match tokio::time::timeout(RESOLVE_TIMEOUT, lookup).await {
            Ok(Ok(addresses)) => addresses.collect(),
            Ok(Err(error)) => return Err(ToolError::Failed(format!("{name}: {error}"))),
            Err(_) => return Err(ToolError::Failed(format!("{name}: no DNS answer in time"))),
        };
    if let Some(internal) = addresses.iter().find(|address| !is_public(address.ip())) {
        return Err(ToolError::Refused(format!(
            "{name} resolves to the internal address {}; list the address itself to allow it",
            internal.ip()
        )));
    }
    addresses.first().copied().ok_or_else(|| ToolError::Failed(format!("{name}: no address")))
}

/// The HTTP client of one fetch: no redirects, no proxy, its deadlines, and, for a name,
/// the address it was checked to have (the client never looks the name up itself).
fn client(pin: Option<(&str, std::net::SocketAddr)>) -> Result<reqwest::Client, ToolError> {
    let builder = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(CONNECT_TIMEOUT)
        .timeout(TIMEOUT)
        .no_proxy();
    let builder = match pin {
        Some((name, address)) => builder.resolve(name, address),
        None => builder,
    };
    builder.build().map_err(|error| ToolError::Failed(format!("HTTP client: {error}")))
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

    #[tokio::test]
    async fn a_name_that_resolves_inside_and_a_port_not_listed_are_refused() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let app = axum::Router::new().route("/doc", axum::routing::get(|| async { "inside" }));
        tokio::spawn(async move { axum::serve(listener, app).await });
        // `localhost` is a name: allowed by the list, it still leads to a loopback address.
        let by_name = FetchUrl::new(vec![format!("localhost:{port}")]);
        let outcome = by_name.run(json!({ "url": format!("http://localhost:{port}/doc") })).await;
        match outcome {
            Err(ToolError::Refused(why)) => assert!(why.contains("internal address"), "{why}"),
            other => panic!("a name resolving to loopback was fetched: {other:?}"),
        }
        // A host listed without a port allows its scheme's own port only.
        let no_port = FetchUrl::new(vec!["127.0.0.1".into()]);
        let outcome = no_port.run(json!({ "url": format!("http://127.0.0.1:{port}/doc") })).await;
        assert!(matches!(outcome, Err(ToolError::Refused(_))), "{outcome:?}");
    }

    #[test]
    fn a_port_not_listed_and_an_address_in_any_spelling_are_refused_before_any_lookup() {
        // Names only on the list: every URL below names another host or port.
        let tool = FetchUrl::new(vec!["docs.example.com".into(), "api.example.com:8443".into()]);
        for refused in [
            // A host listed without a port: its scheme's own port only.
            "http://docs.example.com:22/",
            "http://docs.example.com:6379/",
            "https://docs.example.com:6379/",
            "http://docs.example.com:443/",
            "https://api.example.com/",
            // Loopback, metadata and private addresses however they are written: the URL is
            // parsed to the address it means before it is compared.
            "http://2130706433/",
            "http://0x7f.1/",
            "http://0177.0.0.1/",
            "http://127.1/",
            "http://[::ffff:127.0.0.1]/",
            "http://[::ffff:7f00:1]/",
            "http://[::1]/",
            "http://169.254.169.254/latest/meta-data/",
            "http://[::ffff:169.254.169.254]/",
            "http://[fd00:ec2::254]/latest/meta-data/",
            "http://0xa9fea9fe/",
            "http://metadata.google.internal/",
            "http://docs.example.com.evil.test/",
            "http://docs.example.com@127.0.0.1/",
        ] {
            let outcome = tool.check(refused);
            assert!(matches!(outcome, Err(ToolError::Refused(_))), "{refused}: {outcome:?}");
        }
        for allowed in [
            "https://docs.example.com/a?b",
            "http://DOCS.example.com:80/",
            "https://api.example.com:8443/",
        ] {
            assert!(tool.check(allowed).is_ok(), "{allowed}");
        }
    }

    #[tokio::test]
    async fn an_address_listed_is_matched_in_any_spelling_and_a_name_goes_to_its_checked_address() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let app = axum::Router::new().route("/doc", axum::routing::get(|| async { "the doc" }));
        tokio::spawn(async move { axum::serve(listener, app).await });
        // The listed address, spelled as a number and in hexadecimal: the same address.
        let tool = FetchUrl::new(vec![format!("127.0.0.1:{port}")]);
        for spelling in
            [format!("http://2130706433:{port}/doc"), format!("http://0x7f.1:{port}/doc")]
        {
            let fetched = tool.run(json!({ "url": spelling })).await.unwrap();
            assert_eq!(fetched["text"], "the doc", "{spelling}");
        }
        // A client pinned to a checked address connects there and never looks the name up:
        // `pinned.invalid` has no address in any DNS.
        let pinned = client(Some(("pinned.invalid", ([127, 0, 0, 1], port).into()))).unwrap();
        let answer = pinned.get(format!("http://pinned.invalid:{port}/doc")).send().await.unwrap();
        assert_eq!(answer.text().await.unwrap(), "the doc");
        // And the look-up itself refuses a name with an internal answer.
        let looked = checked_address("localhost", port).await;
        assert!(
            matches!(&looked, Err(ToolError::Refused(why)) if why.contains("127.0.0.1") || why.contains("::1")),
            "{looked:?}"
        );
    }

    #[test]
    fn internal_addresses_are_told_from_public_ones() {
        for internal in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "224.0.0.1",
            "255.255.255.255",
            "::1",
            "::",
            "fc00::1",
            "fe80::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "::ffff:169.254.169.254",
            "::127.0.0.1",
            "fd00:ec2::254",
            "fec0::1",
            "64:ff9b::7f00:1",
            "64:ff9b::a9fe:a9fe",
            "64:ff9b:1::1",
            "2002:7f00:1::1",
            "2002:a9fe:a9fe::1",
            "100::1",
            "2001:db8::1",
        ] {
            assert!(!is_public(internal.parse().unwrap()), "{internal} is internal");
        }
        for public in [
            "8.8.8.8",
            "1.1.1.1",
            "2606:4700::1111",
            "::ffff:8.8.8.8",
            "64:ff9b::808:808",
            "2002:808:808::1",
        ] {
            assert!(is_public(public.parse().unwrap()), "{public} is public");
        }
    }
}
