//! The OpenAPI document of the HTTP API, generated from the code, served at
//! `GET /openapi.json` with a Swagger UI at `/docs` (its files are compiled in: it works
//! offline).
//!
//! The router and the document are built from one list. A route enters the router only
//! through [`ApiRoutes::routes`], which takes what `utoipa_axum::routes!` makes of a handler
//! annotated with `#[utoipa::path]`: the path and methods axum routes are the ones the
//! annotation documents, so an undocumented route cannot be added. [`routes`](fn@super::routes)
//! is that list; the integration test `openapi` reads it and checks it against the served
//! document, and probes every documented operation.
//!
//! # Adding a route
//!
//! 1. Write the handler in the module of its resource (`api::missions`, `api::queue`, ...)
//!    and annotate it:
//!    ```text
//!    errors! { QueueErrors = READ + QUERY + [QueueUnavailable] }
//!
//!    #[utoipa::path(get, path = "/api/missions/queue", tag = "missions",
//!        params(QueueQuery),                       // query: derive IntoParams
//!        responses(
//!            (status = 200, description = "...", body = QueueView),   // derive ToSchema
//!            QueueErrors,                                             // every 4xx/5xx
//!        ))]
//!    async fn queue(...) -> Result<ApiJson<QueueView>, ApiError> { ... }
//!    ```
//!    Path ids and the caller's headers document themselves: `params(MissionId, Metadata)`
//!    for a handler taking those extractors; a JSON body is `request_body = T`. Error answers
//!    are an [`errors!`](super::error) type: the shared fragments of what the handler does
//!    (`READ` wherever PostgreSQL is read, `COMMAND` for a command, `JSON_BODY` for an
//!    `ApiJson`, `QUERY` for an `ApiQuery`, `PATH_ID`, `CALLER` for `Metadata`, `LLM_CALL`),
//!    then each `ErrorCode` the handler gives itself; each is described from `ErrorCode`.
//! 2. Register it in the module's `routes()`: `ApiRoutes::new().routes(routes!(queue))`.
//!    Several handlers on one path with different methods go in one `routes!(a, b)`.
//! 3. A new module's `routes()` is merged in [`super::routes()`](fn@super::routes).
//!
//! A route that cannot be a `routes!` of an annotated handler does not belong on the API
//! router. The Swagger UI under `/docs` is the one set of routes outside the document: it
//! serves the page that reads the document, not an operation of the API.

use axum::body::Bytes;
use axum::extract::Extension;
use axum::http::Method;
use axum::response::IntoResponse;
use utoipa::OpenApi;
use utoipa::openapi::path::PathItem;
use utoipa_axum::router::{OpenApiRouter, UtoipaMethodRouter};

use super::AppState;

/// Where the document is served, and where the UI reads it from.
pub const OPENAPI_PATH: &str = "/openapi.json";
/// Where the Swagger UI is served.
pub const DOCS_PATH: &str = "/docs";

/// The document's fixed parts; paths and schemas come from the routes.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "BRAiN",
        description = "Event-sourced backend for running autonomous AI agent systems. Every \
                       error answer has the body `{\"error\": {\"code\", \"message\", \"field\"?}}`; \
                       an unknown path answers 404 `no_route`, a method a path does not serve \
                       405 `method_not_allowed`. The Swagger UI is at `/docs`."
    ),
    tags(
        (name = "service", description = "Liveness, readiness, metrics and this document"),
        (name = "events", description = "The event log and read models over it"),
        (name = "missions", description = "Missions: enqueue, look up, cancel, retry; external agents' progress, complete and fail reports"),
        (name = "agents", description = "The agent registry: register, heartbeat, list, claim missions"),
        (name = "supervisor", description = "The agent supervisor: status, watched agents, start / stop / restart"),
        (name = "llm", description = "The LLM gateway: runtime configuration"),
    ),
    components(schemas(super::ErrorBody))
)]
struct ApiDoc;

/// One operation the router serves.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Route {
    pub method: Method,
    /// As documented, with `{name}` for a path parameter (axum's syntax too).
    pub path: String,
}

/// The API's routes and their document, grown together.
pub struct ApiRoutes {
    router: OpenApiRouter<AppState>,
    served: Vec<Route>,
}

impl Default for ApiRoutes {
    fn default() -> ApiRoutes {
        ApiRoutes::new()
    }
}

impl ApiRoutes {
    pub fn new() -> ApiRoutes {
        ApiRoutes { router: OpenApiRouter::with_openapi(ApiDoc::openapi()), served: Vec::new() }
    }

    /// Adds the handlers of one `routes!(..)`: routed and documented by their annotation.
    pub fn routes(mut self, routes: UtoipaMethodRouter<AppState>) -> ApiRoutes {
        for (path, item) in routes.1.paths.iter() {
            for method in methods(item) {
                self.served.push(Route { method, path: path.clone() });
            }
        }
        self.router = self.router.routes(routes);
        self
    }

    pub fn merge(mut self, other: ApiRoutes) -> ApiRoutes {
        self.served.extend(other.served);
        self.router = self.router.merge(other.router);
        self
    }

    /// Every operation added, sorted.
    pub fn served(&self) -> Vec<Route> {
        let mut served = self.served.clone();
        served.sort();
        served
    }

    /// The axum router of every route added, plus `/openapi.json`'s document and the UI.
    pub fn into_router(self) -> axum::Router<AppState> {
        let (router, document) = self.router.split_for_parts();
        let json = document.to_json().expect("the OpenAPI document serialises");
        let docs = utoipa_swagger_ui::SwaggerUi::new(DOCS_PATH)
            .config(utoipa_swagger_ui::Config::from(OPENAPI_PATH));
        router.layer(Extension(Document(Bytes::from(json)))).merge(docs)
    }
}

fn methods(item: &PathItem) -> impl Iterator<Item = Method> + '_ {
    [
        (Method::GET, &item.get),
        (Method::PUT, &item.put),
        (Method::POST, &item.post),
        (Method::DELETE, &item.delete),
        (Method::OPTIONS, &item.options),
        (Method::HEAD, &item.head),
        (Method::PATCH, &item.patch),
        (Method::TRACE, &item.trace),
    ]
    .into_iter()
    .filter(|(_, operation)| operation.is_some())
    .map(|(method, _)| method)
}

/// The document as JSON text, serialised once when the router is built.
#[derive(Clone)]
pub(super) struct Document(Bytes);

/// `GET /openapi.json`.
#[utoipa::path(
    get,
    path = "/openapi.json",
    tag = "service",
    responses(
        (status = 200, description = "This document (OpenAPI 3.1)", content_type = "application/json",
         body = Object),
    )
)]
pub(super) async fn openapi_json(
    Extension(Document(json)): Extension<Document>,
) -> impl IntoResponse {
    ([("content-type", "application/json")], json)
}
