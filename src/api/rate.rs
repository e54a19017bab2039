//! Each key's request rate over the whole API (`identity::rate`), held by [`auth::guard`]
//! once a request has passed its route's gate: past it, `429 rate_limited` with
//! `Retry-After` in whole seconds. Public routes (`/health`, `/ready`, signing in) are not
//! counted, whatever key they carry.
//!
//! [`auth::guard`]: super::auth

use std::sync::Arc;

use axum::extract::Request;
use axum::response::{IntoResponse, Response};

use super::auth::{Access, Caller};
use super::error::{ErrorCode, refused, with_retry_after};
use crate::identity::Principal;
use crate::identity::rate::{KeyRates, Verdict};

/// The key a request counts against, and the rates it is held to; none for a public route
/// or a request without a key.
pub(super) struct Counted(Option<(KeyRates, Arc<Principal>)>);

/// What `request`, about to reach a route of `access`, counts against.
pub(super) fn counted(access: Access, request: &Request) -> Counted {
    if access == Access::Public {
        return Counted(None);
    }
    let extensions = request.extensions();
    let principal = match extensions.get::<Caller>() {
        Some(Caller::Key(principal) | Caller::Session(principal)) => principal.clone(),
        _ => return Counted(None),
    };
    Counted(extensions.get::<KeyRates>().map(|rates| (rates.clone(), principal)))
}

impl Counted {
    /// Counts the request against its key's rate, or answers its refusal.
    pub(super) async fn admit(self) -> Result<(), Response> {
        let Some((rates, principal)) = self.0 else { return Ok(()) };
        match rates.admit(&principal).await {
            Verdict::Pass => Ok(()),
            Verdict::Refused { retry_after } => {
                let rpm = rates.rpm_of(&principal).unwrap_or_default();
                let message = format!(
                    "the key {} is over its {rpm} requests a minute; retry in {} ms",
                    principal.key_id,
                    retry_after.as_millis()
                );
                let response = refused(ErrorCode::RateLimited, None, message).into_response();
                Err(with_retry_after(response, retry_after))
            }
        }
    }
}
