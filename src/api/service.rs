//! The service's own routes: liveness (`/health`), readiness of every dependency (`/ready`)
//! and Prometheus metrics (`/metrics`). None of them reads a request.

use crate::api::auth::Access;
use domain::api_key::Permission;
use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::routes;

use super::{ApiRoutes, AppState};

/// Deadline for each dependency check of `GET /ready`.
pub const READY_CHECK_TIMEOUT_MS: u64 = 2_000;

pub fn routes() -> ApiRoutes {
    ApiRoutes::new()
        .routes(Access::Public, routes!(health))
        .routes(Access::Public, routes!(ready))
        .routes(Access::needs(Permission::Metrics), routes!(metrics))
}

#[derive(Serialize, ToSchema)]
struct Health {
    /// Always `ok`.
    status: &'static str,
}

/// `GET /health`: 200 while the process runs.
#[utoipa::path(get, path = "/health", tag = "service",
    responses((status = 200, description = "The process runs", body = Health)))]
async fn health() -> Json<Health> {
    Json(Health { status: "ok" })
}

#[derive(Serialize, ToSchema)]
struct Readiness {
    /// `ready`; `degraded` when everything answers but something is repairing itself (the
    /// relay rebuilding a stream that disagreed with the store: events still reach clients,
    /// from the store); `unavailable` when a dependency does not answer.
    status: &'static str,
    checks: ReadyChecks,
}

/// Each dependency's check: `ok`, or why not.
#[derive(Serialize, ToSchema)]
struct ReadyChecks {
    postgres: String,
    nats: String,
    redis: String,
    /// This process's group committer: its last batch committed and none is stalled.
    committer: String,
    /// This process's relay: `ok` while it mirrors the store or stands by; `repairing: …`
    /// (with where the stream and the store parted) while it rebuilds the stream.
    relay: String,
}

/// `GET /ready`: 200 when PostgreSQL, NATS and Redis all answer and the committer commits
/// (`degraded` while the relay repairs the stream), else 503 naming which not.
#[utoipa::path(get, path = "/ready", tag = "service",
    responses(
        (status = 200, description = "PostgreSQL, NATS and Redis all answer; `degraded` while the relay repairs the stream", body = Readiness),
        (status = 503, description = "At least one does not; its check says why", body = Readiness),
    ))]
async fn ready(State(app): State<AppState>) -> (StatusCode, Json<Readiness>) {
    let deadline = Duration::from_millis(READY_CHECK_TIMEOUT_MS);
    let postgres = check(deadline, async {
        sqlx::query("SELECT 1").execute(app.pool()).await.map(|_| ()).map_err(|e| e.to_string())
    });
    let nats = check(deadline, async {
        match app.nats.connection_state() {
            async_nats::connection::State::Connected => {
                app.nats.flush().await.map_err(|e| e.to_string())
            }
            state => Err(format!("connection is {state}")),
        }
    });
    let redis = check(deadline, async {
        let connection = app
            .redis_connection
            .get_or_try_init(|| app.redis.get_connection_manager())
            .await
            .map_err(|e| e.to_string())?;
        let mut connection = connection.clone();
        redis::cmd("PING")
            .query_async::<String>(&mut connection)
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    });
    let (postgres, nats, redis) = tokio::join!(postgres, nats, redis);
    let committer = match app.store.committer_stats().health(crate::clock::now_ms()) {
        Ok(()) => "ok".to_owned(),
        Err(why) => why,
    };
    let relay = match app.relay.repairing() {
        None => "ok".to_owned(),
        Some(why) => {
            format!("repairing: {why}; {} events not yet on the stream", app.relay.lag())
        }
    };
    let all_ok = [&postgres, &nats, &redis, &committer].iter().all(|check| *check == "ok");
    let status = if all_ok { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    let word = match (all_ok, relay == "ok") {
        (false, _) => "unavailable",
        (true, false) => "degraded",
        (true, true) => "ready",
    };
    let body =
        Readiness { status: word, checks: ReadyChecks { postgres, nats, redis, committer, relay } };
    (status, Json(body))
}

async fn check(
    deadline: Duration,
    probe: impl std::future::Future<Output = Result<(), String>>,
) -> String {
    match tokio::time::timeout(deadline, probe).await {
        Ok(Ok(())) => "ok".to_owned(),
        Ok(Err(error)) => error,
        Err(_) => format!("no answer within {} ms", deadline.as_millis()),
    }
}

/// `GET /metrics`: Prometheus text.
#[utoipa::path(get, path = "/metrics", tag = "service",
    responses((status = 200, description = "Prometheus text exposition format",
               content_type = "text/plain", body = String)))]
async fn metrics(State(app): State<AppState>) -> impl IntoResponse {
    let content_type = [("content-type", "text/plain; version=0.0.4")];
    (content_type, app.metrics.render())
}
