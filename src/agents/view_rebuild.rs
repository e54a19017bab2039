//! `brain projections rebuild agent_view`: the agent view built from the log beside the live
//! one (`{ns}:avr:`) while serves keep using it, then swapped in by one script
//! (`view_swap.lua`) once it has reached the live view's checkpoint. Readers see the old view
//! or the new one, never a half-built one; a live projector's next commit finds the
//! checkpoint moved and carries on from the rebuilt position, as after any rebuild.

use projections::agent_view::{AgentView, NAME};
use sqlx::PgPool;

use super::view::AgentViewStore;
use crate::eventlog::projector::{Feeder, RunnerError};
use crate::eventlog::projectors::REBUILD_SWAP_ATTEMPTS_MAX;

/// The rebuilt view's name beside the live one.
pub const SHADOW: &str = "avr";

/// Rebuilds `live` from the log and swaps the rebuild in; returns the position it reached.
pub async fn rebuild(
    pool: &PgPool,
    live: &AgentViewStore,
    shadow: AgentViewStore,
) -> Result<u64, RunnerError> {
    let redis = |error: redis::RedisError| RunnerError::Projection(Box::new(error));
    shadow.drop_all().await.map_err(redis)?;
    let mut feeder = Feeder::new(AgentView, shadow.clone(), pool.clone(), 1_000).await?;
    for attempt in 1..=REBUILD_SWAP_ATTEMPTS_MAX {
        let reached = feeder.catch_up().await?;
        if let Some(position) = live.swap_in(&shadow).await.map_err(redis)? {
            shadow.drop_all().await.map_err(redis)?;
            tracing::info!(projector = NAME, position, "rebuilt and swapped in");
            return Ok(position);
        }
        tracing::debug!(projector = NAME, attempt, reached, "rebuild behind live");
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    shadow.drop_all().await.map_err(redis)?;
    Err(RunnerError::Projection(
        format!("rebuild of {NAME} could not overtake the live view").into(),
    ))
}
