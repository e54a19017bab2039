//! The Control Deck: the web console `brain serve` serves at `/`.
//!
//! It is a small single-page application of hand-written ES modules (no bundler, no Node.js
//! at build or run time), compiled into the binary with `include_bytes!`. It reads and acts
//! through the public HTTP API and the `/ws/events` feed only: whatever the console does, a
//! script can do. Why a page of plain modules rather than a framework or server rendering is
//! in ARCHITECTURE.md.
//!
//! Every console path (`/`, `/missions/<id>`, `/agents/<id>`, `/chat/<id>`, ...) answers the
//! same `index.html`; the page's router draws what the path names, so every mission, agent and
//! conversation has a link of its own. Assets are served from `/assets/`, gzipped once per
//! process when the client accepts it, with an `ETag` so a reload revalidates instead of
//! downloading again. A strict `Content-Security-Policy` keeps the page to its own origin: no
//! inline script, nothing from elsewhere.

use std::sync::OnceLock;

use axum::Router;
use axum::extract::Path;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use super::AppState;
use super::error::{ErrorCode, refused};

/// One file of the console.
struct Asset {
    name: &'static str,
    content_type: &'static str,
    bytes: &'static [u8],
}

macro_rules! asset {
    ($name:literal, $type:expr) => {
        Asset {
            name: $name,
            content_type: $type,
            bytes: include_bytes!(concat!("console/", $name)),
        }
    };
}

const JS: &str = "text/javascript; charset=utf-8";

/// Every file the console is made of; `index.html` is the page itself.
static ASSETS: &[Asset] = &[
    asset!("index.html", "text/html; charset=utf-8"),
    asset!("app.css", "text/css; charset=utf-8"),
    asset!("icon.svg", "image/svg+xml"),
    asset!("lib.js", JS),
    asset!("format.js", JS),
    asset!("main.js", JS),
    asset!("overview.js", JS),
    asset!("missions.js", JS),
    asset!("mission.js", JS),
    asset!("trace.js", JS),
    asset!("stepper.js", JS),
    asset!("queue.js", JS),
    asset!("agents.js", JS),
    asset!("events.js", JS),
    asset!("llm.js", JS),
    asset!("llmform.js", JS),
    asset!("chat.js", JS),
    asset!("signin.js", JS),
];

/// The first segments of the console's own paths; anything else stays the API's.
pub const PAGES: &[&str] = &["missions", "queue", "agents", "events", "llm", "chat"];

/// Same origin only. `connect-src 'self'` admits the page's own `ws:`/`wss:` feed.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                   connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// An asset with its gzipped form and entity tag, computed once per process.
struct Prepared {
    gzip: Vec<u8>,
    etag: HeaderValue,
}

fn prepared() -> &'static [Prepared] {
    static PREPARED: OnceLock<Vec<Prepared>> = OnceLock::new();
    PREPARED.get_or_init(|| {
        ASSETS
            .iter()
            .map(|asset| {
                use std::io::Write;
                let mut encoder =
                    flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
                encoder.write_all(asset.bytes).expect("writing to memory");
                let gzip = encoder.finish().expect("writing to memory");
                let etag = HeaderValue::from_str(&format!("\"{:016x}\"", fnv1a(asset.bytes)))
                    .expect("hex is a valid header");
                Prepared { gzip, etag }
            })
            .collect()
    })
}

/// A stable content hash for the entity tag (std's hashers promise no stability).
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
        (hash ^ u64::from(*byte)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// The console's routes, merged beside the API's.
pub fn router() -> Router<AppState> {
    let mut router = Router::new().route("/", get(page)).route("/assets/{name}", get(asset));
    for section in PAGES {
        router = router.route(&format!("/{section}"), get(page));
        router = router.route(&format!("/{section}/{{id}}"), get(page));
    }
    router
}

async fn page(headers: HeaderMap) -> Response {
    serve(0, &headers)
}

async fn asset(Path(name): Path<String>, headers: HeaderMap) -> Response {
    match ASSETS.iter().position(|asset| asset.name == name && name != "index.html") {
        Some(index) => serve(index, &headers),
        None => refused(ErrorCode::NoRoute, None, format!("the console has no asset {name:?}"))
            .into_response(),
    }
}

fn serve(index: usize, headers: &HeaderMap) -> Response {
    let (asset, prepared) = (&ASSETS[index], &prepared()[index]);
    let mut response_headers = HeaderMap::new();
    response_headers.insert(header::ETAG, prepared.etag.clone());
    // Revalidate every time: an upgraded server must never leave an old page running.
    response_headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response_headers.insert(header::VARY, HeaderValue::from_static("accept-encoding"));
    let fresh = headers
        .get(header::IF_NONE_MATCH)
        .is_some_and(|tags| tags.as_bytes() == prepared.etag.as_bytes());
    if fresh {
        return (StatusCode::NOT_MODIFIED, response_headers).into_response();
    }
    response_headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(asset.content_type));
    response_headers.insert("x-content-type-options", HeaderValue::from_static("nosniff"));
    if index == 0 {
        response_headers.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
        response_headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    }
    if accepts_gzip(headers) {
        response_headers.insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
        return (response_headers, prepared.gzip.clone()).into_response();
    }
    (response_headers, asset.bytes).into_response()
}

fn accepts_gzip(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT_ENCODING)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .any(|coding| {
            let mut parts = coding.split(';');
            let name = parts.next().unwrap_or("").trim();
            let refused = parts.any(|param| matches!(param.trim(), "q=0" | "q=0.0" | "q=0.00"));
            name.eq_ignore_ascii_case("gzip") && !refused
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gzip_is_negotiated() {
        let mut headers = HeaderMap::new();
        assert!(!accepts_gzip(&headers));
        headers.insert(header::ACCEPT_ENCODING, HeaderValue::from_static("gzip, deflate, br"));
        assert!(accepts_gzip(&headers));
        headers.insert(header::ACCEPT_ENCODING, HeaderValue::from_static("br;q=1, gzip;q=0"));
        assert!(!accepts_gzip(&headers));
    }

    #[test]
    fn every_module_the_page_names_is_served() {
        // Static imports and the router's dynamic ones all name modules as './<file>.js'.
        let mut named = 0;
        for asset in ASSETS.iter().filter(|asset| asset.name.ends_with(".js")) {
            let text = std::str::from_utf8(asset.bytes).expect("assets are UTF-8");
            for piece in text.split("'./").skip(1) {
                let Some(end) = piece.find('\'') else { continue };
                let target = &piece[..end];
                assert!(
                    ASSETS.iter().any(|asset| asset.name == target),
                    "{} names {target}, which is not served",
                    asset.name
                );
                named += 1;
            }
        }
        assert!(named >= 9, "the router and the pages name their modules: {named}");
    }

    #[test]
    fn an_etag_changes_with_content() {
        assert_ne!(fnv1a(b"a"), fnv1a(b"b"));
        assert_eq!(fnv1a(b"abc"), fnv1a(b"abc"));
    }
}
