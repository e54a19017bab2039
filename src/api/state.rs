//! What every handler is given: the process's connections (the event store, NATS, Redis and
//! what is built on it), its configuration and its live feed, shared by every request.
//!
//! Axum clones the state into each request; [`AppState`] is one `Arc` around
//! [`AppStateParts`], so that a clone is one reference count rather than one per part (some
//! twenty, each an atomic both cores contend on: 5-7 % of serve's CPU under
//! `brain bench missions` before).

use std::time::Duration;

use metrics_exporter_prometheus::PrometheusHandle;
use sqlx::PgPool;
use tokio::sync::OnceCell;

use super::error::{ApiError, ErrorCode, refused};
use crate::eventlog::store::EventStore;

/// The state every handler is given: [`AppStateParts`] behind one `Arc` (read its fields
/// through `Deref`).
#[derive(Clone)]
pub struct AppState(std::sync::Arc<AppStateParts>);

impl AppState {
    pub fn new(parts: AppStateParts) -> AppState {
        AppState(std::sync::Arc::new(parts))
    }
}

impl std::ops::Deref for AppState {
    type Target = AppStateParts;

    fn deref(&self) -> &AppStateParts {
        &self.0
    }
}

pub struct AppStateParts {
    pub store: EventStore,
    pub nats: async_nats::Client,
    pub redis: redis::Client,
    /// Connected on first use, so a Redis that is down at start-up shows in `/ready`
    /// instead of stopping the process.
    pub redis_connection: std::sync::Arc<OnceCell<redis::aio::ConnectionManager>>,
    /// The mission queue, once Redis has answered.
    pub queue: std::sync::Arc<OnceCell<crate::missions::queue::Queue>>,
    pub namespace: crate::config::Namespace,
    pub metrics: PrometheusHandle,
    /// Agent kind of a mission enqueued without one.
    pub default_agent: std::sync::Arc<str>,
    /// Agent kinds a mission may name (`ServeOptions::agent_kinds`), besides those
    /// registered in the log (`kinds`).
    pub agent_kinds: std::sync::Arc<std::collections::BTreeSet<String>>,
    /// The agent kinds registered in the log, kept current by following it.
    pub kinds: crate::agents::kinds::KindCache,
    /// The MCP servers this process holds for its agents (none in a process without them).
    pub mcp: Option<crate::agents::tools::mcp::McpHub>,
    /// The live event feed behind `GET /ws/events`.
    pub feed: crate::eventlog::feed::FeedHandle,
    /// The database's clock: heartbeats and external agents' leases are judged on it.
    pub clock: crate::clock::LeaseClock,
    pub agents: std::sync::Arc<crate::agents::AgentSettings>,
    /// Takes the process's secrets out of what the API records for others (an external
    /// agent's result, a chat turn).
    pub redactor: crate::secrets::Redactor,
    /// Whether this process leads the agent supervisor's sweeps.
    pub watchdog_leading: std::sync::Arc<std::sync::atomic::AtomicBool>,
    /// Backoff before a failed attempt reported over HTTP runs again.
    pub backoff: crate::backoff::Backoff,
    /// Every request's deadline: a long-poll ends before it.
    pub request_timeout: Duration,
    /// The LLM gateway with its shared limits and budgets, once Redis has answered.
    pub llm: std::sync::Arc<OnceCell<crate::llm::calls::Calls>>,
    /// Every API key, kept current by following the log: what a request's key is checked
    /// against.
    pub keys: crate::identity::cache::KeyCache,
    /// Signs and checks console session cookies.
    pub sessions: crate::identity::session::Sessions,
    /// The one-time sign-in codes this process printed.
    pub sign_in_codes: crate::identity::session::SignInCodes,
    /// Which `Host` and `Origin` values the serve answers.
    pub web: std::sync::Arc<super::auth::WebPolicy>,
    /// Each key's request rate, shared through Redis with the namespace's other serves.
    pub rates: crate::identity::rate::KeyRates,
    /// Whether this process's relay is rebuilding a stream that disagreed with the store.
    pub relay: crate::eventlog::relay::RelayStatus,
    /// The read models' checks of `POST /api/admin/verify`, as the serve wires them.
    pub verify_models: crate::eventlog::audit::ModelChecks,
}

impl AppStateParts {
    /// The LLM calls this process makes for API clients: sharing limits and budgets through
    /// Redis, or (while Redis does not answer) without them, in which case a budgeted call
    /// fails rather than spend unchecked.
    pub async fn llm_calls(&self) -> crate::llm::calls::Calls {
        let connected =
            self.redis_connection.get_or_try_init(|| self.redis.get_connection_manager()).await;
        let Ok(redis) = connected else {
            return crate::llm::calls::Calls::new(
                &self.agents.llm,
                crate::llm::gateway::Gateway::configured(&self.agents.llm),
                Some(self.store.clone()),
            );
        };
        self.llm
            .get_or_init(|| async {
                let gateway = crate::llm::gateway::Gateway::configured(&self.agents.llm).shared(
                    redis.clone(),
                    &self.namespace,
                    self.pool().clone(),
                );
                crate::llm::calls::Calls::new(&self.agents.llm, gateway, Some(self.store.clone()))
            })
            .await
            .clone()
    }

    pub(super) fn pool(&self) -> &PgPool {
        self.store.pool()
    }

    /// Refuses an agent kind neither configured nor registered (422 `unknown_agent` naming
    /// `field`): each kind is a queue of its own in Redis, so client input must not create
    /// them. A name breaking the naming rule is left to the aggregate, which names the rule.
    pub(super) fn check_known_kind(&self, kind: &str, field: &'static str) -> Result<(), ApiError> {
        if domain::mission::check_agent(kind).is_err()
            || self.agent_kinds.contains(kind)
            || self.kinds.contains(kind)
        {
            return Ok(());
        }
        let registered = self.kinds.all();
        let mut known: Vec<&str> =
            self.agent_kinds.iter().chain(&registered).map(String::as_str).collect();
        known.sort_unstable();
        known.dedup();
        let message = format!("unknown agent kind {kind:?}; known: {}", known.join(", "));
        Err(refused(ErrorCode::UnknownAgent, Some(field), message))
    }
}
