//! Routes only an admin (a caller holding every permission) may call: `POST
//! /api/admin/verify`, the report of `brain events verify` over HTTP.
//!
//! A verify reads the whole log and builds every read model beside the live one, so it is
//! bounded: one at a time per process (409 `verify_running` at once otherwise, and the same
//! when another process's verify holds the database's lock), and within the request's
//! deadline less [`DEADLINE_MARGIN`] (503 `verify_timeout` past it; the scratch copies are
//! dropped by the next verify).

use std::sync::OnceLock;
use std::time::Duration;

use axum::extract::State;
use serde::Deserialize;
use tokio::sync::Mutex;
use utoipa::ToSchema;
use utoipa_axum::routes;

use super::auth::Access;
use super::error::{ErrorCode, errors, refused};
use super::{ApiError, ApiJson, ApiRoutes, AppState};
use crate::eventlog::audit::{Options, Report, Verifier, VerifyError};
use crate::eventlog::bus;

/// Time kept back from the request's deadline to answer with the verify's own error.
pub const DEADLINE_MARGIN: Duration = Duration::from_secs(1);

pub fn routes() -> ApiRoutes {
    ApiRoutes::new().routes(Access::Admin, routes!(verify))
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VerifyRequest {
    /// Only these checks: `positions`, `stream_versions`, `chain`, `jetstream`, or a read
    /// model's name; every one when absent.
    #[serde(default)]
    pub only: Option<Vec<String>>,
    /// Compare this many JetStream messages at random positions (at least 1) instead of
    /// every one.
    #[serde(default)]
    pub sample: Option<u64>,
}

/// The one verify this process runs at a time.
fn running() -> &'static Mutex<()> {
    static RUNNING: OnceLock<Mutex<()>> = OnceLock::new();
    RUNNING.get_or_init(|| Mutex::new(()))
}

errors! { VerifyErrors = JSON_BODY + [InvalidField, VerifyRunning, VerifyTimeout, Internal, StoreUnavailable] }

/// `POST /api/admin/verify`: whether the log, its chain, the JetStream stream and every
/// read model agree, each check by name with its first findings (at most 20 each). The
/// answer is 200 whatever was found: `clean` says whether anything was.
#[utoipa::path(post, path = "/api/admin/verify", tag = "admin",
    request_body = VerifyRequest,
    responses(
        (status = 200, description = "The report", body = Report),
        VerifyErrors,
    ))]
async fn verify(
    State(app): State<AppState>,
    ApiJson(request): ApiJson<VerifyRequest>,
) -> Result<ApiJson<Report>, ApiError> {
    let Ok(_running) = running().try_lock() else {
        let message = "a verify is running in this process".to_owned();
        return Err(refused(ErrorCode::VerifyRunning, None, message));
    };
    let options = Options { only: request.only, sample: request.sample };
    let deadline = app.request_timeout.saturating_sub(DEADLINE_MARGIN);
    let run = async {
        let models = (app.verify_models)().await.map_err(ApiError::Internal)?;
        let verifier = Verifier {
            pool: app.store.pool().clone(),
            namespace: app.namespace.clone(),
            jetstream: Ok(bus::jetstream(app.nats.clone(), 1)),
            models,
        };
        verifier.run(&options, &|_| {}).await.map_err(refusal)
    };
    match tokio::time::timeout(deadline, run).await {
        Ok(report) => report.map(ApiJson),
        Err(_) => {
            let message = format!("the verify did not finish within {} ms", deadline.as_millis());
            Err(refused(ErrorCode::VerifyTimeout, None, message))
        }
    }
}

fn refusal(error: VerifyError) -> ApiError {
    let message = error.to_string();
    match error {
        VerifyError::Busy => refused(ErrorCode::VerifyRunning, None, message),
        VerifyError::UnknownCheck(..) => refused(ErrorCode::InvalidField, Some("only"), message),
        VerifyError::EmptySample => refused(ErrorCode::InvalidField, Some("sample"), message),
        VerifyError::Store(error) => ApiError::from(error),
        VerifyError::Database(error) => ApiError::from(error),
    }
}
