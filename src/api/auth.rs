//! Who is calling, and whether they may: the API's gate.
//!
//! Two layers do it. [`authenticate`] wraps the whole router: it refuses a `Host` that is not
//! one of the serve's (DNS rebinding), then turns the request's `Authorization: Bearer` key or
//! console session cookie into a [`Caller`] in the request's extensions, asking the
//! process's key cache (no database round trip). Then each route's own [`Access`], declared
//! where the route is registered ([`ApiRoutes::routes`](super::ApiRoutes::routes)), is
//! enforced by [`guard`], run only for a request that reached that route (so an unknown path
//! or method still answers 404 or 405):
//!
//! 1. a foreign `Origin` is refused (403 `origin_refused`), and so is a change made with a
//!    session cookie and no `Origin` at all, or a read the browser marks as made by another
//!    site's page (`Sec-Fetch-Site`): what a browser sends on a page's behalf never acts or
//!    reads for the operator signed in beside it;
//! 2. no caller, or one whose key or session does not hold, is 401 `unauthenticated`;
//! 3. a caller without the route's permission is 403 `forbidden`;
//! 4. a change (POST, PUT, PATCH, DELETE) without `Content-Type: application/json` is 415,
//!    body or not: a page on another origin can only send form and text bodies unasked.
//!
//! Handlers read the principal through [`Metadata`](super::extract::Metadata) (the actor of
//! the events they record) or [`Caller::principal`].

use std::net::IpAddr;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use domain::api_key::Permission;

use super::AppState;
use super::error::{ApiError, ErrorCode, refused};
use crate::identity::Principal;
use crate::identity::cache::AuthError;
use crate::identity::session::COOKIE;

/// Who may call a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Anyone: `/health`, `/ready`, this document, signing in.
    Public,
    /// Any authenticated caller, whatever it holds.
    Signed,
    /// A caller holding at least one of these permissions.
    Any(&'static [Permission]),
    /// An admin: a caller holding every permission (what the `admin` role grants).
    Admin,
}

impl Access {
    /// A caller holding `permission`.
    pub const fn needs(permission: Permission) -> Access {
        match permission {
            Permission::MissionsRead => Access::Any(&[Permission::MissionsRead]),
            Permission::MissionsWrite => Access::Any(&[Permission::MissionsWrite]),
            Permission::AgentsRead => Access::Any(&[Permission::AgentsRead]),
            Permission::AgentsControl => Access::Any(&[Permission::AgentsControl]),
            Permission::AgentsSelf => Access::Any(&[Permission::AgentsSelf]),
            Permission::KindsManage => Access::Any(&[Permission::KindsManage]),
            Permission::LlmCall => Access::Any(&[Permission::LlmCall]),
            Permission::LlmRead => Access::Any(&[Permission::LlmRead]),
            Permission::LlmConfig => Access::Any(&[Permission::LlmConfig]),
            Permission::EventsRead => Access::Any(&[Permission::EventsRead]),
            Permission::KeysManage => Access::Any(&[Permission::KeysManage]),
            Permission::Metrics => Access::Any(&[Permission::Metrics]),
            Permission::Impersonate => Access::Any(&[Permission::Impersonate]),
        }
    }

    /// What an agent does for itself (register, heartbeat, claim, report), or an operator
    /// for any agent.
    pub const AGENT: Access = Access::Any(&[Permission::AgentsSelf, Permission::AgentsControl]);

    /// The permissions the route names, for its document.
    pub fn permissions(self) -> &'static [Permission] {
        match self {
            Access::Public | Access::Signed => &[],
            Access::Any(permissions) => permissions,
            Access::Admin => &Permission::ALL,
        }
    }

    /// Whether `principal` passes.
    pub fn admits(self, principal: &Principal) -> bool {
        match self {
            Access::Public | Access::Signed => true,
            Access::Any(permissions) => permissions.iter().any(|&p| principal.can(p)),
            Access::Admin => Permission::ALL.iter().all(|&p| principal.can(p)),
        }
    }
}

/// How the caller of a request presented itself, as [`authenticate`] found it.
#[derive(Debug, Clone)]
pub enum Caller {
    /// Nothing presented.
    Anonymous,
    /// A key in `Authorization: Bearer`.
    Key(Arc<Principal>),
    /// A console session cookie.
    Session(Arc<Principal>),
    /// A key or session that does not hold.
    Refused(AuthError),
}

impl Caller {
    pub fn principal(&self) -> Option<&Principal> {
        match self {
            Caller::Key(principal) | Caller::Session(principal) => Some(principal),
            Caller::Anonymous | Caller::Refused(_) => None,
        }
    }
}

/// Which `Host` and `Origin` values a serve answers.
#[derive(Debug, Clone, Default)]
pub struct WebPolicy {
    /// Host names (with or without a port) besides IP addresses and `localhost`.
    pub public_hosts: Vec<String>,
    /// Origins (`scheme://host[:port]`) allowed besides the serve's own.
    pub allowed_origins: Vec<String>,
}

impl WebPolicy {
    /// Whether a `Host` value is one of the serve's. An IP address cannot be rebound and
    /// `localhost` resolves only here; any other name must be listed.
    pub fn host_allowed(&self, host: &str) -> bool {
        let name = host_name(host);
        if name.parse::<IpAddr>().is_ok()
            || name.eq_ignore_ascii_case("localhost")
            || name.to_ascii_lowercase().ends_with(".localhost")
        {
            return true;
        }
        self.public_hosts.iter().any(|allowed| {
            allowed.eq_ignore_ascii_case(host)
                || (!allowed.contains(':') && allowed.eq_ignore_ascii_case(name))
        })
    }

    /// Whether an `Origin` may call: the serve's own (the origin's host and port are the
    /// request's `Host`), or one listed.
    pub fn origin_allowed(&self, origin: &str, host: Option<&str>) -> bool {
        if self.allowed_origins.iter().any(|allowed| allowed.eq_ignore_ascii_case(origin)) {
            return true;
        }
        let authority = origin.strip_prefix("http://").or_else(|| origin.strip_prefix("https://"));
        match (authority, host) {
            (Some(authority), Some(host)) => authority.eq_ignore_ascii_case(host),
            _ => false,
        }
    }
}

/// The name part of a `Host` value: without its port, and without the brackets of an IPv6
/// address.
fn host_name(host: &str) -> &str {
    if let Some(rest) = host.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    match host.rsplit_once(':') {
        Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
        _ => host,
    }
}

/// The request's `Host`: the header, or the URI's authority (HTTP/2).
fn request_host(request: &Request) -> Option<String> {
    request
        .headers()
        .get(header::HOST)
        .and_then(|value| value.to_str().ok())
        .map(str::to_owned)
        .or_else(|| request.uri().authority().map(|authority| authority.as_str().to_owned()))
}

/// The whole router's layer: `Host` checked, the caller found.
pub(super) async fn authenticate(
    State(state): State<AppState>,
    mut request: Request,
    next: Next,
) -> Response {
    if let Some(host) = request_host(&request)
        && !state.web.host_allowed(&host)
    {
        let message =
            format!("Host {host:?} is not one of this serve's public hosts (BRAIN_PUBLIC_HOSTS)");
        return refused(ErrorCode::HostRefused, Some("host"), message).into_response();
    }
    let caller = caller(&state, request.headers());
    request.extensions_mut().insert(caller);
    request.extensions_mut().insert(state.web.clone());
    next.run(request).await
}

/// The caller a request's headers present: a bearer key first, else a session cookie.
fn caller(state: &AppState, headers: &HeaderMap) -> Caller {
    let now = crate::clock::now_ms();
    if let Some(value) = headers.get(header::AUTHORIZATION) {
        let presented = value.to_str().ok().and_then(|value| {
            let (scheme, token) = value.split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
        });
        return match presented {
            None => {
                Caller::Refused(AuthError::Malformed(crate::identity::token::TokenError::Malformed))
            }
            Some(token) => match state.keys.authenticate(token, now) {
                Ok(principal) => Caller::Key(Arc::new(principal)),
                Err(error) => Caller::Refused(error),
            },
        };
    }
    match session_cookie(headers) {
        None => Caller::Anonymous,
        Some(value) => match state.sessions.authenticate(&state.keys, value, now) {
            Ok(principal) => Caller::Session(Arc::new(principal)),
            Err(error) => Caller::Refused(error),
        },
    }
}

/// The value of the session cookie, if the request carries one.
pub(super) fn session_cookie(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE)
        .map(|(_, value)| value)
}

/// Whether the browser says the request was made by another site's page (`Sec-Fetch-Site`;
/// `same-site` counts, since another port of this host is the same site).
fn from_elsewhere(headers: &HeaderMap) -> bool {
    headers
        .get("sec-fetch-site")
        .and_then(|value| value.to_str().ok())
        .is_some_and(|site| site == "cross-site" || site == "same-site")
}

fn changes(method: &Method) -> bool {
    !matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

/// One route's gate: `Origin`, caller, permission, content type, in that order; then the
/// key's request rate ([`super::rate`]).
pub(super) async fn guard(access: Access, request: Request, next: Next) -> Response {
    if let Err(error) = admit(access, &request) {
        return error.into_response();
    }
    if let Err(refusal) = super::rate::counted(access, &request).admit().await {
        return refusal;
    }
    next.run(request).await
}

fn admit(access: Access, request: &Request) -> Result<(), ApiError> {
    if access == Access::Public {
        return Ok(());
    }
    admit_caller(access, request)?;
    if changes(request.method()) && !is_json(request.headers()) {
        let message = "a change needs Content-Type: application/json".to_owned();
        return Err(refused(ErrorCode::InvalidBodyMediaType, Some("content-type"), message));
    }
    Ok(())
}

/// The gate without its content-type rule: `Origin`, caller, permission. The MCP endpoint
/// keeps the rest of the gate but leaves its content types to the protocol (a session is
/// closed with a bodiless `DELETE`).
pub(super) fn admit_caller(access: Access, request: &Request) -> Result<(), ApiError> {
    let caller = request.extensions().get::<Caller>().unwrap_or(&Caller::Anonymous);
    let headers = request.headers();
    let origin = headers.get(header::ORIGIN).map(|value| value.to_str().unwrap_or("?"));
    let web = request.extensions().get::<Arc<WebPolicy>>();
    match origin {
        Some(origin) => {
            let host = request_host(request);
            let allowed = web.is_some_and(|web| web.origin_allowed(origin, host.as_deref()));
            if !allowed {
                let message = format!(
                    "Origin {origin:?} may not call this serve: only its own origin and \
                     BRAIN_ALLOWED_ORIGINS may"
                );
                return Err(refused(ErrorCode::OriginRefused, Some("origin"), message));
            }
        }
        None if matches!(caller, Caller::Session(_)) && changes(request.method()) => {
            let message =
                "a change made with a session cookie must carry the page's Origin".to_owned();
            return Err(refused(ErrorCode::OriginRefused, Some("origin"), message));
        }
        // A read a page elsewhere made the browser send (`<script src>`, `<img>`, a frame)
        // carries no Origin, but the browser says where it came from.
        None if matches!(caller, Caller::Session(_)) && from_elsewhere(headers) => {
            let message = "a session's read from another site's page is refused".to_owned();
            return Err(refused(ErrorCode::OriginRefused, Some("sec-fetch-site"), message));
        }
        None => {}
    }
    let principal = match caller {
        Caller::Key(principal) | Caller::Session(principal) => principal,
        Caller::Anonymous => {
            let message = "no key: send Authorization: Bearer brn_..., or sign in".to_owned();
            return Err(refused(ErrorCode::Unauthenticated, None, message));
        }
        Caller::Refused(error) => {
            return Err(refused(ErrorCode::Unauthenticated, None, error.to_string()));
        }
    };
    check_access(access, principal)
}

/// Refuses (403 `forbidden`, naming what is missing) a principal `access` does not admit: a
/// route's check, and each MCP tool's.
pub(super) fn check_access(access: Access, principal: &Principal) -> Result<(), ApiError> {
    if !access.admits(principal) {
        let names: Vec<&str> = access.permissions().iter().map(|p| p.as_str()).collect();
        let message = if access == Access::Admin {
            format!("the key {} is no admin: it must hold {}", principal.key_id, names.join(", "))
        } else {
            format!("the key {} lacks the permission {}", principal.key_id, names.join(" or "))
        };
        return Err(refused(ErrorCode::Forbidden, None, message));
    }
    Ok(())
}

fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.split(';').next())
        .is_some_and(|kind| kind.trim().eq_ignore_ascii_case("application/json"))
}

/// The caller of a request that passed its route's gate.
pub(super) fn principal_of(parts: &axum::http::request::Parts) -> Option<&Principal> {
    parts.extensions.get::<Caller>().and_then(Caller::principal)
}

/// The principal of a request, for handlers that decide by who is asking (a route that is not
/// `Public` always has one).
pub struct Authed(pub Principal);

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for Authed {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        _: &S,
    ) -> Result<Self, ApiError> {
        principal_of(parts).cloned().map(Authed).ok_or_else(|| {
            refused(
                ErrorCode::Unauthenticated,
                None,
                "no key: send Authorization: Bearer brn_...".to_owned(),
            )
        })
    }
}

impl Authed {
    /// Whether the caller acts for every agent (an operator), rather than only for those its
    /// key registered.
    pub fn controls_agents(&self) -> bool {
        self.0.can(Permission::AgentsControl)
    }

    /// The key the caller may only act for its own agents with, or `None` when it controls
    /// every agent.
    pub fn agent_key(&self) -> Option<&str> {
        (!self.controls_agents()).then_some(self.0.key_id.as_str())
    }

    /// Refuses (403) acting for an agent bound to `bound` (the key that registered it; none
    /// for a process's own built-in agents) unless the caller is that key or controls agents.
    pub fn check_agent(&self, agent_id: &str, bound: Option<&str>) -> Result<(), ApiError> {
        match self.agent_key() {
            Some(mine) if bound != Some(mine) => {
                let message = format!(
                    "the agent {agent_id} was registered by another key; a key acts only for \
                     its own agents unless it holds agents.control"
                );
                Err(refused(ErrorCode::Forbidden, Some("agent_id"), message))
            }
            _ => Ok(()),
        }
    }

    /// Refuses (403) an agent kind the key may not serve.
    pub fn check_kind(&self, kind: &str, field: &'static str) -> Result<(), ApiError> {
        if self.controls_agents() || self.0.may_serve(kind) {
            return Ok(());
        }
        let message = format!(
            "the key {} may serve the agent kinds {} only, not {kind:?}",
            self.0.key_id,
            self.0.kinds.join(", ")
        );
        Err(refused(ErrorCode::Forbidden, Some(field), message))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ip_addresses_and_localhost_pass_other_names_only_when_listed() {
        let web = WebPolicy {
            public_hosts: vec!["brain.example.com".into(), "api.example.com:8443".into()],
            allowed_origins: vec![],
        };
        for host in [
            "127.0.0.1:8080",
            "10.1.2.3",
            "[::1]:8080",
            "localhost:3000",
            "app.localhost",
            "brain.example.com",
            "BRAIN.example.com:8080",
            "api.example.com:8443",
        ] {
            assert!(web.host_allowed(host), "{host}");
        }
        for host in
            ["evil.example", "api.example.com:80", "localhost.evil.example", "127.0.0.1.nip.io"]
        {
            assert!(!web.host_allowed(host), "{host}");
        }
    }

    #[test]
    fn the_own_origin_and_listed_ones_pass() {
        let web = WebPolicy {
            public_hosts: vec![],
            allowed_origins: vec!["https://deck.example.com".into()],
        };
        assert!(web.origin_allowed("http://127.0.0.1:8080", Some("127.0.0.1:8080")));
        assert!(web.origin_allowed("https://deck.example.com", Some("127.0.0.1:8080")));
        assert!(!web.origin_allowed("http://127.0.0.1:8081", Some("127.0.0.1:8080")));
        assert!(!web.origin_allowed("null", Some("127.0.0.1:8080")));
        assert!(!web.origin_allowed("http://evil.example", None));
    }
}
