//! Console sign-in: a key (or the one-time code of the link a first start prints) is traded
//! for an `HttpOnly`, `SameSite=Strict` session cookie (`Secure` behind TLS) that the
//! console's requests and its WebSocket carry; signing out clears it. What a session is and
//! how it is checked is `identity::session`.
//!
//! Signing in is open to anyone (it is how a caller gets a principal), but only from the
//! serve's own pages: a foreign `Origin` is refused, so another site cannot sign the
//! operator's browser in under a key of its own.

use axum::extract::State;
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::routes;

use super::auth::Access;
use super::error::{ErrorCode, errors, refused};
use super::{ApiError, ApiJson, ApiRoutes, AppState};
use crate::identity::keys::KeyView;
use crate::identity::session::COOKIE;

pub fn routes() -> ApiRoutes {
    ApiRoutes::new()
        .routes(Access::Public, routes!(sign_in, sign_out))
        .routes(Access::Signed, routes!(whoami))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SignInRequest {
    /// A key's token (`brn_...`).
    #[serde(default)]
    pub key: Option<String>,
    /// The one-time code of the sign-in link a first start printed.
    #[serde(default)]
    pub code: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SessionView {
    /// The key the session acts as.
    pub key: KeyView,
    /// When the session ends, in milliseconds since 1970 (absent for a bearer key).
    pub expires_at_ms: Option<i64>,
}

/// The caller's parts the gate looked at, for the handlers that are public.
struct Gate(Parts);

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for Gate {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        let origin = parts.headers.get(header::ORIGIN).map(|v| v.to_str().unwrap_or("?"));
        if let Some(origin) = origin {
            let host = parts.headers.get(header::HOST).and_then(|v| v.to_str().ok());
            let web = parts.extensions.get::<std::sync::Arc<super::auth::WebPolicy>>();
            if !web.is_some_and(|web| web.origin_allowed(origin, host)) {
                let message = format!("Origin {origin:?} may not sign in here");
                return Err(refused(ErrorCode::OriginRefused, Some("origin"), message));
            }
        }
        Ok(Gate(parts.clone()))
    }
}

/// Whether the browser reached the serve over TLS (directly, or through a proxy that says so).
fn over_tls(headers: &HeaderMap) -> bool {
    let forwarded = headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|proto| proto.eq_ignore_ascii_case("https"));
    let origin = headers
        .get(header::ORIGIN)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|origin| origin.starts_with("https://"));
    forwarded || origin
}

fn cookie(value: &str, max_age_s: i64, secure: bool) -> HeaderValue {
    let secure = if secure { "; Secure" } else { "" };
    let text =
        format!("{COOKIE}={value}; Path=/; HttpOnly; SameSite=Strict; Max-Age={max_age_s}{secure}");
    HeaderValue::from_str(&text).expect("a session value is visible ASCII")
}

errors! { SignInErrors = INTERNAL + JSON_BODY + [InvalidField, Unauthenticated, OriginRefused] }

/// `POST /api/session`: signs the browser in with a key or a one-time code.
#[utoipa::path(post, path = "/api/session", tag = "keys",
    request_body = SignInRequest,
    responses(
        (status = 200, description = "Signed in: the `brain_session` cookie is set", body = SessionView),
        SignInErrors,
    ))]
async fn sign_in(
    State(app): State<AppState>,
    Gate(parts): Gate,
    ApiJson(request): ApiJson<SignInRequest>,
) -> Result<Response, ApiError> {
    let now = crate::clock::now_ms();
    let principal = match (request.key, request.code) {
        (Some(key), None) => app.keys.authenticate(&key, now),
        (None, Some(code)) => match app.sign_in_codes.redeem(&code, now) {
            Some(key_id) => app.keys.principal(&key_id, now),
            None => {
                let message = "the sign-in code is not valid, used or expired".to_owned();
                return Err(refused(ErrorCode::Unauthenticated, Some("code"), message));
            }
        },
        _ => {
            let message = "give either `key` or `code`".to_owned();
            return Err(refused(ErrorCode::InvalidField, Some("key"), message));
        }
    }
    .map_err(|error| refused(ErrorCode::Unauthenticated, None, error.to_string()))?;
    let session = app
        .sessions
        .start(&app.keys, &principal, now)
        .ok_or_else(|| refused(ErrorCode::Unauthenticated, None, "the key is gone".to_owned()))?;
    let key = app
        .keys
        .get(&principal.key_id)
        .and_then(|key| KeyView::of(&principal.key_id, &key, now))
        .ok_or_else(|| refused(ErrorCode::Unauthenticated, None, "the key is gone".to_owned()))?;
    let max_age_s = ((session.expires_at_ms - now) / 1_000).max(1);
    let set = cookie(&session.value, max_age_s, over_tls(&parts.headers));
    let body = SessionView { key, expires_at_ms: Some(session.expires_at_ms) };
    Ok(([(header::SET_COOKIE, set)], ApiJson(body)).into_response())
}

errors! { SignOutErrors = INTERNAL + [OriginRefused] }

/// `DELETE /api/session`: signs the browser out (the cookie is cleared).
#[utoipa::path(delete, path = "/api/session", tag = "keys",
    responses(
        (status = 204, description = "Signed out"),
        SignOutErrors,
    ))]
async fn sign_out(Gate(parts): Gate) -> Response {
    let set = cookie("", 0, over_tls(&parts.headers));
    (StatusCode::NO_CONTENT, [(header::SET_COOKIE, set)]).into_response()
}

errors! { WhoamiErrors = INTERNAL + [] }

/// `GET /api/session`: who the caller is (a session's key, or the bearer key).
#[utoipa::path(get, path = "/api/session", tag = "keys",
    responses(
        (status = 200, description = "The caller's key", body = SessionView),
        WhoamiErrors,
    ))]
async fn whoami(
    State(app): State<AppState>,
    Gate(parts): Gate,
) -> Result<ApiJson<SessionView>, ApiError> {
    let now = crate::clock::now_ms();
    let principal = super::auth::principal_of(&parts)
        .ok_or_else(|| refused(ErrorCode::Unauthenticated, None, "no key".to_owned()))?;
    let key = app
        .keys
        .get(&principal.key_id)
        .and_then(|key| KeyView::of(&principal.key_id, &key, now))
        .ok_or_else(|| refused(ErrorCode::Unauthenticated, None, "the key is gone".to_owned()))?;
    let expires_at_ms = super::auth::session_cookie(&parts.headers)
        .filter(|_| matches!(parts.extensions.get(), Some(super::auth::Caller::Session(_))))
        .and_then(|value| value.split('.').nth(1))
        .and_then(|ms| ms.parse().ok());
    Ok(ApiJson(SessionView { key, expires_at_ms }))
}
