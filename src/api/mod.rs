//! The HTTP API. This module alone knows about HTTP and JSON: handlers translate requests
//! into calls on the rest of `brain` and map every failure to one error shape,
//! `{"error": {"code", "message"}}` (design invariant 8), in [`error`].
//!
//! Every route is documented in the OpenAPI document at `GET /openapi.json`; [`openapi`]
//! says how to add one.

mod admin;
mod agents;
mod analytics;
mod as_of;
pub mod auth;
mod chat;
mod completions;
mod console;
mod error;
mod events;
mod extract;
mod keys;
mod kinds;
mod leases;
mod llm;
mod llm_usage;
pub mod mcp;
mod missions;
pub mod openapi;
mod queue;
mod rate;
mod replay;
pub mod server;
mod service;
mod session;
mod state;
mod stream;
mod supervisor;
mod tools;
pub mod ws;

use std::time::Duration;

use axum::Router;
use utoipa_axum::routes;

pub use self::auth::Access;
pub use self::error::{ApiError, ErrorBody, ErrorCode};
pub use self::extract::{ApiJson, ApiQuery};
pub use self::openapi::{ApiRoutes, Route};
pub use self::state::{AppState, AppStateParts};

/// Every route of the API, documented: the one list the router and the OpenAPI document
/// are built from.
pub fn routes() -> ApiRoutes {
    ApiRoutes::new()
        .merge(service::routes())
        .merge(admin::routes())
        .routes(Access::Public, routes!(openapi::openapi_json))
        .merge(session::routes())
        .merge(keys::routes())
        .merge(kinds::routes())
        .merge(events::routes())
        .merge(agents::routes())
        .merge(leases::routes())
        .merge(llm::routes())
        .merge(tools::routes())
        .merge(chat::routes())
        .merge(llm_usage::routes())
        .merge(completions::routes())
        .merge(stream::routes())
        .merge(missions::routes())
        .merge(analytics::routes())
        .merge(queue::routes())
        .merge(replay::routes())
        .merge(supervisor::routes())
        .merge(ws::routes())
}

/// The router of [`routes()`], the docs UI, and error-shaped answers for unknown paths and
/// methods, behind the gate of [`auth`] and each key's request rate ([`rate`]). Every request
/// is answered within `request_timeout`, its body read included (`408 request_timeout` past
/// it): a client sending a body at one byte a second holds a handler no longer than that.
pub fn router(state: AppState, request_timeout: Duration) -> Router {
    let deadline = tower::ServiceBuilder::new()
        .layer(axum::error_handling::HandleErrorLayer::new(
            move |error: tower::BoxError| async move { error::timed_out(error, request_timeout) },
        ))
        .timeout(request_timeout);
    routes()
        .into_router()
        .merge(console::router())
        .fallback(error::no_route)
        .method_not_allowed_fallback(error::method_not_allowed)
        .layer(deadline)
        // Beside the deadline rather than under it: see `mcp` for what bounds it instead.
        .merge(mcp::router(state.clone(), request_timeout))
        .layer(axum::Extension(state.rates.clone()))
        .layer(axum::middleware::from_fn_with_state(state.clone(), auth::authenticate))
        .with_state(state)
}
