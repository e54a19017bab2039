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
//! 2. Register it in the module's `routes()` with who may call it:
//!    `ApiRoutes::new().routes(Access::needs(Permission::MissionsRead), routes!(queue))`.
//!    Several handlers on one path with different methods go in one `routes!(a, b)` (one
//!    access for all). The access is enforced by [`auth::guard`](super::auth) and written
//!    into the document: the security requirement, `x-permissions`, and the 401/403/415/429
//!    answers the gate gives (429: the key's request rate, [`super::rate`]).
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
use super::auth::{self, Access};
use super::error::ErrorCode;

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
        (name = "keys", description = "API keys and console sessions: who may call, and as whom"),
    ),
    components(schemas(super::ErrorBody)),
    modifiers(&SecuritySchemes)
)]
struct ApiDoc;

/// The name of the key scheme in the document.
pub const KEY_SCHEME: &str = "key";
/// The name of the session-cookie scheme in the document.
pub const SESSION_SCHEME: &str = "session";

struct SecuritySchemes;

impl utoipa::Modify for SecuritySchemes {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{
            ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme,
        };
        let components = openapi.components.get_or_insert_with(Default::default);
        let key = HttpBuilder::new()
            .scheme(HttpAuthScheme::Bearer)
            .bearer_format("brn_<key id>_<secret>")
            .description(Some("An API key: `Authorization: Bearer brn_...`"))
            .build();
        components.add_security_scheme(KEY_SCHEME, SecurityScheme::Http(key));
        let session = ApiKeyValue::with_description(
            crate::identity::session::COOKIE,
            "The console's session (`POST /api/session`); a change needs the page's `Origin`",
        );
        components
            .add_security_scheme(SESSION_SCHEME, SecurityScheme::ApiKey(ApiKey::Cookie(session)));
    }
}

/// One operation the router serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub method: Method,
    /// As documented, with `{name}` for a path parameter (axum's syntax too).
    pub path: String,
    /// Who may call it.
    pub access: Access,
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

    /// Adds the handlers of one `routes!(..)`: routed and documented by their annotation,
    /// open to the callers `access` admits.
    pub fn routes(mut self, access: Access, mut routes: UtoipaMethodRouter<AppState>) -> ApiRoutes {
        for (path, item) in routes.1.paths.iter_mut() {
            for method in methods(item) {
                self.served.push(Route { method, path: path.clone(), access });
            }
            for operation in operations(item) {
                document_access(operation, access);
            }
        }
        routes.2 = routes.2.route_layer(axum::middleware::from_fn(move |request, next| {
            auth::guard(access, request, next)
        }));
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
        served.sort_by(|a, b| (&a.path, a.method.as_str()).cmp(&(&b.path, b.method.as_str())));
        served
    }

    /// The axum router of every route added, plus `/openapi.json`'s document and the UI.
    pub fn into_router(self) -> axum::Router<AppState> {
        let (router, document) = self.router.split_for_parts();
        let json = document.to_json().expect("the OpenAPI document serialises");
        let docs = utoipa_swagger_ui::SwaggerUi::new(DOCS_PATH)
            .config(utoipa_swagger_ui::Config::from(OPENAPI_PATH));
        let docs = axum::Router::<AppState>::from(docs)
            .layer(axum::middleware::map_response(docs_headers));
        router.layer(Extension(Document(Bytes::from(json)))).merge(docs)
    }
}

fn operations(item: &mut PathItem) -> impl Iterator<Item = &mut utoipa::openapi::path::Operation> {
    [
        &mut item.get,
        &mut item.put,
        &mut item.post,
        &mut item.delete,
        &mut item.options,
        &mut item.head,
        &mut item.patch,
        &mut item.trace,
    ]
    .into_iter()
    .filter_map(Option::as_mut)
}

/// Writes a route's access into its operation: who may call it, and the answers the gate
/// gives (merged into the route's own, one response per status).
fn document_access(operation: &mut utoipa::openapi::path::Operation, access: Access) {
    use utoipa::openapi::security::SecurityRequirement;
    let mut gate = vec![ErrorCode::HostRefused];
    if access != Access::Public {
        let scopes: Vec<&str> = access.permissions().iter().map(|p| p.as_str()).collect();
        operation.security = Some(vec![
            SecurityRequirement::new(KEY_SCHEME, scopes.clone()),
            SecurityRequirement::new(SESSION_SCHEME, scopes.clone()),
        ]);
        let permissions = serde_json::json!(scopes);
        let extensions = utoipa::openapi::extensions::ExtensionsBuilder::new()
            .add("x-permissions", permissions)
            .build();
        match &mut operation.extensions {
            Some(existing) => existing.merge(extensions),
            None => operation.extensions = Some(extensions),
        }
        gate.extend([ErrorCode::OriginRefused, ErrorCode::Unauthenticated]);
        if !scopes.is_empty() {
            gate.push(ErrorCode::Forbidden);
        }
        // The key's request rate (`api::rate`).
        gate.push(ErrorCode::RateLimited);
        let needs = if scopes.is_empty() {
            "Needs a key or session.".to_owned()
        } else {
            format!("Needs `{}`.", scopes.join("` or `"))
        };
        let description = operation.description.take().unwrap_or_default();
        operation.description =
            Some(if description.is_empty() { needs } else { format!("{description}\n\n{needs}") });
    }
    let documented = &mut operation.responses.responses;
    for (status, response) in super::error::responses(&[&gate]) {
        let utoipa::openapi::RefOr::T(added) = response else { continue };
        match documented.get_mut(&status) {
            Some(utoipa::openapi::RefOr::T(existing)) => {
                // A route that answers the same code itself (`rate_limited` of an LLM call)
                // has its line already.
                if !existing.description.contains(&added.description) {
                    existing.description =
                        format!("{}\n{}", existing.description, added.description);
                }
            }
            _ => {
                documented.insert(status, utoipa::openapi::RefOr::T(added));
            }
        }
    }
}

/// The Swagger UI's policy: its own files only (its script sets styles inline and draws
/// icons from `data:` URLs), calls to this origin, never framed by another page.
const DOCS_CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; \
                        img-src 'self' data:; connect-src 'self'; base-uri 'none'; \
                        form-action 'self'; frame-ancestors 'none'";

async fn docs_headers(mut response: axum::response::Response) -> axum::response::Response {
    use axum::http::{HeaderValue, header};
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(DOCS_CSP));
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    response
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
