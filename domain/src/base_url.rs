//! A provider's base URL, the one place its rule is written: what a configured `host` may be
//! (`http(s)://host[:port]` and at most a fixed path prefix of plain segments), the canonical
//! form a provider key is bound to, and whether a call to it would cross the network in clear
//! text. Hand-written rather than a URL parser's: the rule is narrower than a URL, and this
//! crate does no I/O and keeps its dependencies short.

/// A base URL's parts.
struct Base<'a> {
    https: bool,
    /// Lower case; an IPv6 address in brackets.
    host: String,
    port: Option<u16>,
    segments: Vec<&'a str>,
}

/// `url` as a provider's base URL and nothing more: `http(s)://host[:port]`, then a fixed path
/// prefix of plain segments (letters, digits, `-._~`; no `.` or `..`). A user, query,
/// fragment, escape or dot segment would let a configuration change aim the gateway's POST
/// (and a key) somewhere other than where it appears to.
fn parse_base(url: &str) -> Option<Base<'_>> {
    let (scheme, rest) = url.split_once("://")?;
    let https = match scheme {
        "https" => true,
        "http" => false,
        _ => return None,
    };
    let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
    let plain = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_');
    let (host, port) = match authority.strip_prefix('[') {
        Some(v6) => {
            let (address, after) = v6.split_once(']')?;
            let ok = !address.is_empty()
                && address.chars().all(|c| c.is_ascii_hexdigit() || matches!(c, ':' | '.'));
            let port = if after.is_empty() { None } else { Some(after.strip_prefix(':')?) };
            (ok.then(|| format!("[{}]", address.to_ascii_lowercase()))?, port)
        }
        None => {
            let (host, port) = match authority.split_once(':') {
                Some((host, port)) => (host, Some(port)),
                None => (authority, None),
            };
            let ok = !host.is_empty() && host.chars().all(plain);
            (ok.then(|| host.to_ascii_lowercase())?, port)
        }
    };
    let port = match port {
        None => None,
        Some(port) if (1..=5).contains(&port.len()) && port.bytes().all(|b| b.is_ascii_digit()) => {
            Some(u16::try_from(port.parse::<u32>().ok()?).ok().filter(|port| *port > 0)?)
        }
        Some(_) => return None,
    };
    let path = path.strip_suffix('/').unwrap_or(path);
    let segments: Vec<&str> = if path.is_empty() { vec![] } else { path.split('/').collect() };
    let segment_ok = |segment: &&str| {
        !segment.is_empty()
            && *segment != "."
            && *segment != ".."
            && segment.chars().all(|c| plain(c) || c == '~')
    };
    segments.iter().all(segment_ok).then_some(Base { https, host, port, segments })
}

/// Whether `host` is a provider's base URL and nothing more (see [`parse_base`]).
pub fn is_base_url(host: &str) -> bool {
    parse_base(host).is_some()
}

/// What a key is bound to: the base URL with its scheme and host in lower case, without the
/// scheme's default port or a trailing `/` or `/v1` (a base with and without its `/v1` name
/// the same endpoints). `None` when `url` is not a base URL.
pub fn key_base(url: &str) -> Option<String> {
    let base = parse_base(url)?;
    let scheme = if base.https { "https" } else { "http" };
    let port = match (base.port, base.https) {
        (Some(443), true) | (Some(80), false) | (None, _) => String::new(),
        (Some(port), _) => format!(":{port}"),
    };
    let mut segments = base.segments;
    if segments.last() == Some(&"v1") {
        segments.pop();
    }
    let path: String = segments.iter().map(|segment| format!("/{segment}")).collect();
    Some(format!("{scheme}://{}{port}{path}", base.host))
}

/// Whether a call to `url` would cross the network in clear text: plain `http` to a host
/// other than this machine (`localhost`, `127.0.0.0/8`, `[::1]`).
pub fn clear_text_remote(url: &str) -> bool {
    let Some(base) = parse_base(url) else { return false };
    if base.https {
        return false;
    }
    let host = base.host.as_str();
    let loopback = host == "localhost"
        || host.ends_with(".localhost")
        || host.parse::<std::net::Ipv4Addr>().is_ok_and(|ip| ip.is_loopback())
        || host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .and_then(|h| h.parse::<std::net::Ipv6Addr>().ok())
            .is_some_and(|ip| ip.is_loopback());
    !loopback
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_is_bound_to_a_canonical_base_url() {
        for (url, base) in [
            ("https://API.OpenAI.com", "https://api.openai.com"),
            ("https://api.openai.com:443/v1/", "https://api.openai.com"),
            ("http://127.0.0.1:80/", "http://127.0.0.1"),
            ("http://127.0.0.1:8080/v1", "http://127.0.0.1:8080"),
            ("https://gw.example/openai/v1", "https://gw.example/openai"),
            ("https://gw.example/v1/v1", "https://gw.example/v1"),
            ("http://[::1]:9", "http://[::1]:9"),
        ] {
            assert_eq!(key_base(url).as_deref(), Some(base), "{url}");
        }
        assert_eq!(key_base("https://u@h"), None);
        for (url, remote) in [
            ("http://10.0.0.1", true),
            ("http://gw.example", true),
            ("http://localhost:1", false),
            ("http://a.localhost", false),
            ("http://127.8.0.1", false),
            ("http://[::1]:8", false),
            ("https://gw.example", false),
        ] {
            assert_eq!(clear_text_remote(url), remote, "{url}");
        }
    }
}
