//! The one error shape of the API, `{"error": {"code", "message", "field"?, "items"?}}`
//! (design invariant 8), and where each answer's code, status and meaning are written down.
//!
//! [`ErrorCode`] is the list of answers: each variant is one code at one status with the
//! sentence that says when it is given, and the OpenAPI document, the README's table and every
//! response take them from there. A code a client sees at two statuses (`invalid_body` is 400,
//! 413, 415 or 422 after what was wrong) is two variants. [`ApiError::code`] is the one mapping
//! from a failure to its code; handlers name codes, never spell them.
//!
//! A route documents its error answers with an [`errors!`] type in `responses(...)`: a few
//! shared fragments ([`READ`], [`COMMAND`], [`JSON_BODY`], ...) and its own codes, grouped
//! by status and described from [`ErrorCode`].

use std::collections::BTreeMap;
use std::time::Duration;

use axum::Json;
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;
use utoipa::openapi::response::{Response as ApiResponse, ResponseBuilder};
use utoipa::openapi::{ContentBuilder, Ref, RefOr};

use crate::eventlog::store::{AppendError, StoreError};

/// Declares [`ErrorCode`] from one table: variant, code, status, when it is given.
macro_rules! error_codes {
    ($($variant:ident = ($code:literal, $status:ident, $when:literal),)+) => {
        /// Every error answer of the API: a stable code, its status and when it is given.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub enum ErrorCode {
            $(#[doc = $when] $variant,)+
        }

        impl ErrorCode {
            /// Every answer, in the order of the table.
            pub const ALL: &'static [ErrorCode] = &[$(ErrorCode::$variant,)+];

            /// The stable, machine-readable code clients match on.
            pub const fn as_str(self) -> &'static str {
                match self {
                    $(ErrorCode::$variant => $code,)+
                }
            }

            pub const fn status(self) -> StatusCode {
                match self {
                    $(ErrorCode::$variant => StatusCode::$status,)+
                }
            }

            /// When it is given, for people: the OpenAPI document's words.
            pub const fn description(self) -> &'static str {
                match self {
                    $(ErrorCode::$variant => $when,)+
                }
            }
        }
    };
}

error_codes! {
    InvalidQuery = ("invalid_query", BAD_REQUEST, "the query string does not parse: an unknown parameter, or a value of the wrong type"),
    InvalidBody = ("invalid_body", BAD_REQUEST, "the body is not JSON, or could not be read"),
    InvalidBodyTooLarge = ("invalid_body", PAYLOAD_TOO_LARGE, "the body is over the route's limit: 2 MiB, 16 MiB for a batch"),
    InvalidBodyMediaType = ("invalid_body", UNSUPPORTED_MEDIA_TYPE, "a request that changes something (POST, PUT, PATCH, DELETE) without `Content-Type: application/json`, whether it has a body or not: a page on another origin can send only form and text bodies without asking first"),
    InvalidBodyShape = ("invalid_body", UNPROCESSABLE_ENTITY, "the JSON has the wrong shape: a missing or unknown field, or a value of the wrong type"),
    InvalidInput = ("invalid_field", BAD_REQUEST, "a path or query parameter is not what it must be, or a string anywhere in the body or the query (a value or an object key, however deep) holds a NUL character (U+0000), which PostgreSQL cannot store; `field` names it (for a body string, its path such as `payload.items[2].note`)"),
    InvalidField = ("invalid_field", UNPROCESSABLE_ENTITY, "a field of the body breaks its rule; `field` names it"),
    InvalidHeader = ("invalid_header", BAD_REQUEST, "`X-Actor` is not 1 to 200 visible ASCII characters, `X-Correlation-Id` is not a UUID, or `If-Match` is not a version: headers that reach events are parsed, never replaced by a default"),
    UnknownAgent = ("unknown_agent", UNPROCESSABLE_ENTITY, "an agent kind this deployment does not know (`BRAIN_AGENT_KINDS`, the kinds its workers serve, and those registered with `POST /api/agent-kinds`)"),
    PayloadTooLarge = ("payload_too_large", PAYLOAD_TOO_LARGE, "a mission's `payload` is over 256 KiB"),
    BatchRefused = ("batch_refused", UNPROCESSABLE_ENTITY, "items of a batch were refused and nothing of it was done; `items` gives each one's `index`, `code`, `field` and `message`"),
    DuplicateIdempotencyKey = ("duplicate_idempotency_key", UNPROCESSABLE_ENTITY, "an item of a batch repeats an earlier item's `idempotency_key` (only in `batch_refused`'s `items`)"),
    BatchTooLarge = ("batch_too_large", PAYLOAD_TOO_LARGE, "a batch's events are over 16 MiB together"),
    Unstorable = ("unstorable", UNPROCESSABLE_ENTITY, "the database refused what this one command carries (found by isolating it from the batch it shared; every other command of the batch went in)"),
    Unauthenticated = ("unauthenticated", UNAUTHORIZED, "no key (`Authorization: Bearer brn_...`) or console session, or one that is malformed, not valid, revoked or expired; `message` says which (revoked and expired only to the holder of the right secret)"),
    Forbidden = ("forbidden", FORBIDDEN, "the key lacks the permission the route needs (`message` names it), acts for an agent another key registered or a kind it may not serve, or sends `X-Actor` without `impersonate`"),
    OriginRefused = ("origin_refused", FORBIDDEN, "the request's `Origin` is neither the serve's own nor in `BRAIN_ALLOWED_ORIGINS`, or a change made with a session cookie carries no `Origin`"),
    HostRefused = ("host_refused", MISDIRECTED_REQUEST, "the `Host` header names none of the serve's public hosts (`BRAIN_PUBLIC_HOSTS`; an IP address and `localhost` always pass): a DNS-rebinding page's request"),
    KeyNotFound = ("key_not_found", NOT_FOUND, "no key has this id"),
    KeyRevoked = ("key_revoked", CONFLICT, "the key is revoked or expired"),
    KeyContended = ("key_contended", CONFLICT, "the key kept changing while the command was decided; nothing was done, retry"),
    NoRoute = ("no_route", NOT_FOUND, "no route has this path"),
    MethodNotAllowed = ("method_not_allowed", METHOD_NOT_ALLOWED, "the path does not answer this method"),
    RequestTimeout = ("request_timeout", REQUEST_TIMEOUT, "the request was not read and answered within `BRAIN_HTTP_REQUEST_TIMEOUT_MS` (a body trickling in included)"),
    Internal = ("internal", INTERNAL_SERVER_ERROR, "something failed on the server's side; the cause is in its log"),
    StoreUnavailable = ("store_unavailable", SERVICE_UNAVAILABLE, "PostgreSQL is away or too slow, or an LLM call could not be recorded; nothing was recorded, retry"),
    OutcomeUnknown = ("outcome_unknown", SERVICE_UNAVAILABLE, "the commit was sent and its answer never came: the command may or may not be recorded; retrying with the same `idempotency_key` is safe and answers with what happened"),
    ShuttingDown = ("shutting_down", SERVICE_UNAVAILABLE, "this process is shutting down and takes no more commands; retry"),
    QueueUnavailable = ("queue_unavailable", SERVICE_UNAVAILABLE, "Redis has not answered yet, or failed under a claim; retry"),
    ViewUnavailable = ("view_unavailable", SERVICE_UNAVAILABLE, "Redis failed under a read of the agent view or a heartbeat; retry"),
    BusUnavailable = ("bus_unavailable", SERVICE_UNAVAILABLE, "NATS could not subscribe to a mission's answer pieces"),
    MissionNotFound = ("mission_not_found", NOT_FOUND, "no mission has this id"),
    MissionExists = ("mission_exists", CONFLICT, "a mission with this id exists already"),
    MissionNotQueued = ("mission_not_queued", CONFLICT, "the mission is not queued"),
    MissionNotRunning = ("mission_not_running", CONFLICT, "the mission is not running"),
    MissionHeldByAnotherWorker = ("mission_held_by_another_worker", CONFLICT, "another worker holds the mission's lease"),
    StaleAttempt = ("stale_attempt", CONFLICT, "the attempt named is not the mission's current one"),
    MissionAlreadyFinished = ("mission_already_finished", CONFLICT, "the mission has finished"),
    MissionNotFailed = ("mission_not_failed", CONFLICT, "only a failed mission can be retried"),
    MissionNotFinished = ("mission_not_finished", CONFLICT, "only a finished mission (completed, failed or cancelled) can be re-enqueued"),
    MissionNotDue = ("mission_not_due", CONFLICT, "the mission is not due yet"),
    LeaseNotExpired = ("lease_not_expired", CONFLICT, "the mission's lease has not run out"),
    LeaseExpired = ("lease_expired", CONFLICT, "the mission's lease ran out"),
    MissionContended = ("mission_contended", CONFLICT, "the mission kept changing while the command was decided; nothing was done, retry"),
    StaleLease = ("stale_lease", CONFLICT, "the lease token is no longer the holder's: the lease ran out, moved to another agent, or the mission finished; nothing changed"),
    NotReplayable = ("not_replayable", UNPROCESSABLE_ENTITY, "the run cannot be played back or forked there: not finished, not a thinking agent's, no step recorded, or a step past the run's"),
    AgentNotFound = ("agent_not_found", NOT_FOUND, "no agent has this id"),
    AgentRegisteredOtherwise = ("agent_registered_otherwise", CONFLICT, "the agent id carries another registration"),
    AgentDeregistered = ("agent_deregistered", CONFLICT, "the agent is deregistered"),
    AgentNotActive = ("agent_not_active", CONFLICT, "the agent is stopped, unresponsive, failed or deregistered, and takes no missions"),
    AgentNotSilent = ("agent_not_silent", CONFLICT, "the agent has been heard from since"),
    ControlNotApplicable = ("control_not_applicable", CONFLICT, "the action does not apply in the agent's state (start of an active agent, stop of a stopped one)"),
    AgentContended = ("agent_contended", CONFLICT, "the agent kept changing while the command was decided; nothing was done, retry"),
    ConversationNotFound = ("conversation_not_found", NOT_FOUND, "no conversation has this id"),
    OtherAgent = ("other_agent", CONFLICT, "the conversation is with another agent"),
    ConversationFull = ("conversation_full", CONFLICT, "the conversation holds its most turns"),
    ConversationContended = ("conversation_contended", CONFLICT, "the conversation kept changing while the turn was added; retry"),
    ConfigContended = ("config_contended", CONFLICT, "the configuration kept changing while the change was decided; retry"),
    VersionMismatch = ("version_mismatch", PRECONDITION_FAILED, "`If-Match` on a configuration change named a version that is no longer current: someone changed it since it was read; nothing changed"),
    LlmDisabled = ("llm_disabled", SERVICE_UNAVAILABLE, "the LLM gateway has no route: it is switched off"),
    ModelNotFound = ("model_not_found", NOT_FOUND, "no route or model has this name, or the provider does not know the model"),
    ContextTooLong = ("context_too_long", BAD_REQUEST, "the messages are too long for the model"),
    BudgetExceeded = ("budget_exceeded", PAYMENT_REQUIRED, "the call could pass a budget (daily, or the mission's) and was not sent"),
    BudgetUnchecked = ("budget_exceeded", SERVICE_UNAVAILABLE, "the budgets could not be checked, so the call was not sent; retry"),
    RateLimited = ("rate_limited", TOO_MANY_REQUESTS, "the key is over its request rate (its `requests_per_minute`, else `BRAIN_KEY_RPM_DEFAULT`; `Retry-After` says in how many seconds it may call again), or the LLM provider or the shared LLM limiter asks to slow down"),
    ProviderUnreachable = ("provider_unreachable", BAD_GATEWAY, "no provider of the route could be reached"),
    AuthFailed = ("auth_failed", BAD_GATEWAY, "the provider refused the key"),
    BadResponse = ("bad_response", BAD_GATEWAY, "the provider answered with an error or something unreadable"),
    Timeout = ("timeout", GATEWAY_TIMEOUT, "the provider did not answer in time"),
    VerifyRunning = ("verify_running", CONFLICT, "a verify is running already (from this process, another serve or `brain events verify`): one runs at a time per database; retry when it is done"),
    VerifyTimeout = ("verify_timeout", SERVICE_UNAVAILABLE, "the verify did not finish before the request's deadline; ask for fewer checks (`only`) or a JetStream `sample`, or run `brain events verify`"),
    NotWebsocket = ("not_websocket", BAD_REQUEST, "`GET /ws/events` without a WebSocket upgrade"),
    NotWebsocketUpgrade = ("not_websocket", UPGRADE_REQUIRED, "`GET /ws/events` with an upgrade that is not a WebSocket one"),
    TooManyClients = ("too_many_clients", SERVICE_UNAVAILABLE, "`GET /ws/events` while the process holds `BRAIN_WS_CLIENTS_MAX` WebSocket clients"),
}

impl ErrorCode {
    /// `invalid_body` at the status a body's rejection has.
    fn invalid_body(status: StatusCode) -> ErrorCode {
        match status {
            StatusCode::PAYLOAD_TOO_LARGE => ErrorCode::InvalidBodyTooLarge,
            StatusCode::UNSUPPORTED_MEDIA_TYPE => ErrorCode::InvalidBodyMediaType,
            StatusCode::UNPROCESSABLE_ENTITY => ErrorCode::InvalidBodyShape,
            _ => ErrorCode::InvalidBody,
        }
    }

    /// An LLM call's failure, as the code of the same name. A budget that could not be
    /// checked is a 503: nothing was sent, and another try may pass.
    pub fn of_llm(reason: crate::llm::Reason, server_error: bool) -> ErrorCode {
        use crate::llm::Reason;
        match reason {
            Reason::BudgetExceeded if server_error => ErrorCode::BudgetUnchecked,
            Reason::BudgetExceeded => ErrorCode::BudgetExceeded,
            Reason::RateLimited => ErrorCode::RateLimited,
            Reason::Timeout => ErrorCode::Timeout,
            Reason::ModelNotFound => ErrorCode::ModelNotFound,
            Reason::ContextTooLong => ErrorCode::ContextTooLong,
            Reason::ProviderUnreachable => ErrorCode::ProviderUnreachable,
            Reason::AuthFailed => ErrorCode::AuthFailed,
            Reason::BadResponse => ErrorCode::BadResponse,
        }
    }
}

impl Serialize for ErrorCode {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("query string is not valid: {0}")]
    InvalidQuery(#[from] QueryRejection),
    #[error("request body is not valid: {0}")]
    InvalidBody(#[from] JsonRejection),
    #[error("{0}")]
    Refused(Refusal),
    /// A path or query parameter that is not what it must be.
    #[error("{field}: {message}")]
    InvalidField { field: &'static str, message: String },
    /// A string of the body or the query (`field` is its path) that no store can carry.
    #[error("{field} holds a NUL character (U+0000), which cannot be stored")]
    Unstorable { field: String },
    /// A header that reaches events and is not what it must be: parsed, never clamped.
    #[error("header {header}: {message}")]
    InvalidHeader { header: &'static str, message: String },
    /// Some items of a batch were refused; nothing of the batch was done.
    #[error("{} of {of} items were refused; nothing was done", items.len())]
    BatchRefused { items: Vec<ItemRefusal>, of: usize },
    /// PostgreSQL could not be reached or did not answer in time; nothing was done.
    #[error("the event store is unavailable; nothing was recorded, retry later")]
    Unavailable,
    /// A command's commit was sent and its answer never came.
    #[error(
        "the command may or may not have been recorded; retrying with the same \
         idempotency_key is safe and answers with what happened"
    )]
    OutcomeUnknown,
    #[error("internal error")]
    Internal(#[from] anyhow::Error),
}

impl ApiError {
    /// The answer this failure gets: the one mapping from a failure to a code and status.
    pub fn code(&self) -> ErrorCode {
        match self {
            ApiError::InvalidQuery(_) => ErrorCode::InvalidQuery,
            ApiError::InvalidBody(rejection) => ErrorCode::invalid_body(rejection.status()),
            ApiError::Refused(refusal) => refusal.code,
            ApiError::InvalidField { .. } | ApiError::Unstorable { .. } => ErrorCode::InvalidInput,
            ApiError::InvalidHeader { .. } => ErrorCode::InvalidHeader,
            ApiError::BatchRefused { .. } => ErrorCode::BatchRefused,
            ApiError::Unavailable => ErrorCode::StoreUnavailable,
            ApiError::OutcomeUnknown => ErrorCode::OutcomeUnknown,
            ApiError::Internal(_) => ErrorCode::Internal,
        }
    }

    /// The input at fault, where there is one.
    fn field(&self) -> Option<Field> {
        match self {
            ApiError::Refused(refusal) => refusal.field.clone(),
            ApiError::InvalidField { field, .. } => Some((*field).into()),
            ApiError::Unstorable { field } => Some(field.clone().into()),
            ApiError::InvalidHeader { header, .. } => Some((*header).into()),
            _ => None,
        }
    }
}

/// A refusal: its code and the fixed field at fault, if any.
pub fn refused(code: ErrorCode, field: Option<&'static str>, message: String) -> ApiError {
    ApiError::Refused(Refusal { code, field: field.map(Into::into), message })
}

impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> ApiError {
        match error {
            StoreError::Database(error) => ApiError::from(error),
            StoreError::Timeout => ApiError::Unavailable,
            corrupt @ StoreError::Corrupt(_) => ApiError::Internal(corrupt.into()),
        }
    }
}

impl From<sqlx::Error> for ApiError {
    /// A database that is away or too slow is a 503 the client may retry; anything else
    /// (a query the schema refuses, a decoding failure) is ours, a 500.
    fn from(error: sqlx::Error) -> ApiError {
        match error {
            sqlx::Error::Io(_)
            | sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::WorkerCrashed => {
                tracing::warn!(%error, "PostgreSQL unavailable");
                ApiError::Unavailable
            }
            sqlx::Error::Database(db) if db.code().is_some_and(|code| code == "57014") => {
                tracing::warn!(error = %db, "statement timed out");
                ApiError::Unavailable
            }
            error => ApiError::Internal(error.into()),
        }
    }
}

impl ApiError {
    /// The status and body this failure is answered with, wherever it is answered (an HTTP
    /// response, an MCP tool's error result).
    pub(in crate::api) fn into_body(self) -> (StatusCode, ErrorBody) {
        let (code, field) = (self.code(), self.field());
        let status = code.status();
        if status.is_server_error() {
            // The cause stays in our logs; the caller learns only that it was ours.
            tracing::error!(error = ?self, "request failed");
        }
        let message = self.to_string();
        let items = match self {
            ApiError::BatchRefused { items, .. } => Some(items),
            _ => None,
        };
        (status, ErrorBody { error: ErrorDetail { code, message, field, items } })
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, body) = self.into_body();
        (status, Json(body)).into_response()
    }
}

/// Maps an append's failure (any aggregate's) to its HTTP answer.
pub fn append_refusal(error: AppendError) -> ApiError {
    let message = error.to_string();
    match error {
        AppendError::PayloadTooLarge { .. } => {
            refused(ErrorCode::PayloadTooLarge, Some("payload"), message)
        }
        AppendError::Unstorable { path, .. } => ApiError::Refused(Refusal {
            code: ErrorCode::InvalidInput,
            field: Some(path.into()),
            message,
        }),
        AppendError::ActorTooLong { .. } => {
            refused(ErrorCode::InvalidInput, Some("x-actor"), message)
        }
        AppendError::GroupTooLarge { .. } => {
            refused(ErrorCode::BatchTooLarge, Some("missions"), message)
        }
        AppendError::Closed => refused(ErrorCode::ShuttingDown, None, message),
        AppendError::Refused { .. } => refused(ErrorCode::Unstorable, None, message),
        AppendError::Database(_) => ApiError::Unavailable,
        AppendError::OutcomeUnknown(error) => {
            tracing::error!(%error, "command outcome unknown");
            ApiError::OutcomeUnknown
        }
        error @ (AppendError::Conflict { .. }
        | AppendError::NoEvents
        | AppendError::TooManyEvents { .. }
        | AppendError::InvalidEventType { .. }
        | AppendError::TooManyAppends { .. }
        | AppendError::InGroup { .. }) => ApiError::Internal(error.into()),
    }
}

/// The answer to a request that outlived its deadline (or whose deadline layer failed).
pub(super) fn timed_out(error: tower::BoxError, request_timeout: Duration) -> ApiError {
    if error.is::<tower::timeout::error::Elapsed>() {
        let message = format!("not answered within {} ms", request_timeout.as_millis());
        refused(ErrorCode::RequestTimeout, None, message)
    } else {
        ApiError::Internal(anyhow::anyhow!("request failed: {error}"))
    }
}

/// `response` with `Retry-After: wait`, in whole seconds rounded up (at least one).
pub(super) fn with_retry_after(mut response: Response, wait: Duration) -> Response {
    let seconds = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    response.headers_mut().insert(axum::http::header::RETRY_AFTER, seconds.max(1).into());
    response
}

/// The router's answer to a path it has no route for.
pub(super) async fn no_route(uri: axum::http::Uri) -> ApiError {
    refused(ErrorCode::NoRoute, None, format!("no route for {}", uri.path()))
}

/// The router's answer to a method a routed path does not serve.
pub(super) async fn method_not_allowed(
    method: axum::http::Method,
    uri: axum::http::Uri,
) -> ApiError {
    let message = format!("{} does not answer {method}", uri.path());
    refused(ErrorCode::MethodNotAllowed, None, message)
}

/// The body of every error answer (design invariant 8).
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorDetail {
    /// Stable and machine-readable: `invalid_field`, `mission_not_found`, ...
    #[schema(value_type = String)]
    pub code: ErrorCode,
    /// For people: what was wrong.
    pub message: String,
    /// The input at fault, where there is one: a field's path in the body (`payload.a[2]`),
    /// a query parameter or a header.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    pub field: Option<Field>,
    /// For `batch_refused`: each refused item, with its reason.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub items: Option<Vec<ItemRefusal>>,
}

/// Why one item of a batch was refused.
#[derive(Debug, Serialize, ToSchema)]
pub struct ItemRefusal {
    /// The item's place in the request, from 0.
    pub index: usize,
    #[schema(value_type = String)]
    pub code: ErrorCode,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    pub field: Option<Field>,
    pub message: String,
}

/// The name or path of an input at fault: mostly a fixed name, a path where the body says.
pub type Field = std::borrow::Cow<'static, str>;

/// A refusal that a domain or store error maps to: a code, the field at fault.
#[derive(Debug)]
pub struct Refusal {
    pub code: ErrorCode,
    pub field: Option<Field>,
    pub message: String,
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

/// Whatever reads PostgreSQL can fail on our side, or find it away.
pub const READ: &[ErrorCode] = &[ErrorCode::Internal, ErrorCode::StoreUnavailable];
/// What reads only Redis or the process's own state: failures are ours.
pub const INTERNAL: &[ErrorCode] = &[ErrorCode::Internal];
/// Whatever runs a command: a read's failures, and an append's.
pub const COMMAND: &[ErrorCode] = &[
    ErrorCode::Internal,
    ErrorCode::StoreUnavailable,
    ErrorCode::OutcomeUnknown,
    ErrorCode::ShuttingDown,
    ErrorCode::Unstorable,
];
/// A JSON body ([`ApiJson`](super::extract::ApiJson)): each way it can be refused.
pub const JSON_BODY: &[ErrorCode] = &[
    ErrorCode::InvalidBody,
    ErrorCode::InvalidBodyTooLarge,
    ErrorCode::InvalidBodyMediaType,
    ErrorCode::InvalidBodyShape,
    ErrorCode::InvalidInput,
];
/// A query string ([`ApiQuery`](super::extract::ApiQuery)).
pub const QUERY: &[ErrorCode] = &[ErrorCode::InvalidQuery, ErrorCode::InvalidInput];
/// An id of the path ([`MissionId`](super::extract::MissionId) and the like).
pub const PATH_ID: &[ErrorCode] = &[ErrorCode::InvalidInput];
/// A call through the LLM gateway: each way it can fail.
pub const LLM_CALL: &[ErrorCode] = &[
    ErrorCode::LlmDisabled,
    ErrorCode::ModelNotFound,
    ErrorCode::ContextTooLong,
    ErrorCode::BudgetExceeded,
    ErrorCode::BudgetUnchecked,
    ErrorCode::RateLimited,
    ErrorCode::ProviderUnreachable,
    ErrorCode::AuthFailed,
    ErrorCode::BadResponse,
    ErrorCode::Timeout,
    ErrorCode::StoreUnavailable,
];
/// The caller's headers ([`Metadata`](super::extract::Metadata)): `X-Actor` needs
/// `impersonate`.
pub const CALLER: &[ErrorCode] = &[ErrorCode::InvalidHeader, ErrorCode::Forbidden];

/// The error answers of a route from fragments and its own codes: one response per status,
/// each with the error shape and a line per code describing when it is given.
pub fn responses(parts: &[&[ErrorCode]]) -> BTreeMap<String, RefOr<ApiResponse>> {
    let mut by_status: BTreeMap<u16, Vec<ErrorCode>> = BTreeMap::new();
    for &code in parts.iter().flat_map(|part| part.iter()) {
        let codes = by_status.entry(code.status().as_u16()).or_default();
        if !codes.contains(&code) {
            codes.push(code);
        }
    }
    by_status
        .into_iter()
        .map(|(status, codes)| {
            let lines: Vec<String> = codes
                .iter()
                .map(|code| format!("- `{}`: {}", code.as_str(), code.description()))
                .collect();
            let content =
                ContentBuilder::new().schema(Some(Ref::from_schema_name("ErrorBody"))).build();
            let response = ResponseBuilder::new()
                .description(lines.join("\n"))
                .content("application/json", content)
                .build();
            (status.to_string(), RefOr::T(response))
        })
        .collect()
}

/// Declares a route's error answers for `#[utoipa::path(responses(...))]`: shared fragments
/// of this module, then the route's own [`ErrorCode`]s.
///
/// ```text
/// errors! { GetMissionErrors = READ + PATH_ID + [MissionNotFound] }
/// ```
macro_rules! errors {
    ($(#[$meta:meta])* $name:ident = $($fragment:ident +)* [$($code:ident),* $(,)?]) => {
        $(#[$meta])*
        struct $name;

        impl utoipa::IntoResponses for $name {
            fn responses() -> std::collections::BTreeMap<
                String,
                utoipa::openapi::RefOr<utoipa::openapi::response::Response>,
            > {
                $crate::api::error::responses(&[
                    $($crate::api::error::$fragment,)*
                    &[$($crate::api::error::ErrorCode::$code),*],
                ])
            }
        }
    };
}
pub(crate) use errors;

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    /// `(code, status)` of each row of README.md's error table.
    fn readme_rows() -> BTreeSet<(String, u16)> {
        let readme = include_str!("../../README.md");
        let table =
            readme.split("| code | status | when |").nth(1).expect("README.md has the error table");
        table
            .lines()
            .skip(2)
            .take_while(|line| line.starts_with('|'))
            .map(|line| {
                let cells: Vec<&str> = line.split('|').map(str::trim).collect();
                let code = cells[1].trim_matches('`').to_owned();
                let status = cells[2].parse().unwrap_or_else(|_| panic!("a status: {line}"));
                (code, status)
            })
            .collect()
    }

    #[test]
    fn the_readme_error_table_lists_every_code_at_its_status_and_nothing_else() {
        let documented = readme_rows();
        let answered: BTreeSet<(String, u16)> = ErrorCode::ALL
            .iter()
            .map(|code| (code.as_str().to_owned(), code.status().as_u16()))
            .collect();
        let missing: Vec<_> = answered.difference(&documented).collect();
        assert!(missing.is_empty(), "in ErrorCode, not in README.md's table: {missing:?}");
        let unknown: Vec<_> = documented.difference(&answered).collect();
        assert!(unknown.is_empty(), "in README.md's table, not in ErrorCode: {unknown:?}");
    }

    #[test]
    fn each_code_is_answered_once_per_status() {
        let pairs: BTreeSet<_> = ErrorCode::ALL.iter().map(|c| (c.as_str(), c.status())).collect();
        assert_eq!(pairs.len(), ErrorCode::ALL.len(), "two variants are one answer");
    }

    #[test]
    fn an_llm_failure_keeps_its_reason_as_its_code() {
        use crate::llm::Reason;
        for reason in [
            Reason::ProviderUnreachable,
            Reason::AuthFailed,
            Reason::ModelNotFound,
            Reason::RateLimited,
            Reason::Timeout,
            Reason::ContextTooLong,
            Reason::BadResponse,
            Reason::BudgetExceeded,
        ] {
            for server_error in [false, true] {
                assert_eq!(ErrorCode::of_llm(reason, server_error).as_str(), reason.as_str());
            }
        }
        assert_eq!(ErrorCode::of_llm(Reason::BudgetExceeded, false).status().as_u16(), 402);
        assert_eq!(ErrorCode::of_llm(Reason::BudgetExceeded, true).status().as_u16(), 503);
    }

    #[test]
    fn a_route_documents_each_status_once_with_every_code_given_at_it() {
        let responses = responses(&[READ, &[ErrorCode::InvalidBody, ErrorCode::InvalidInput]]);
        let statuses: Vec<&str> = responses.keys().map(String::as_str).collect();
        assert_eq!(statuses, ["400", "500", "503"]);
        let RefOr::T(bad_request) = &responses["400"] else { panic!("inline response") };
        assert!(bad_request.description.contains("`invalid_body`"), "{}", bad_request.description);
        assert!(bad_request.description.contains("`invalid_field`"), "{}", bad_request.description);
    }
}
