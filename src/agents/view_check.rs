//! The agent view's check for `brain events verify`: the view is built from the log into a
//! scratch view (`{ns}:avv:`) up to the live view's own position, and the two are compared
//! key by key (an agent's record, the sets by state and kind), naming each key that differs.
//!
//! The live view moves while it is read. It is small (a few keys per agent), so it is read
//! whole between two reads of its checkpoint; a commit in between (the checkpoint moved) reads
//! it again, up to [`STILL_READS_MAX`] times. Pings and the grace's start are not projected
//! state and are left out on both sides, as [`AgentViewStore::snapshot`] does.

use std::collections::{BTreeMap, BTreeSet};

use projections::agent_view::{AgentView, NAME};
use sqlx::PgPool;

use super::view::AgentViewStore;
use crate::eventlog::audit::{BoxFuture, CheckReport, ModelCheck, Progress, Tick};
use crate::eventlog::projector::Feeder;
use crate::eventlog::store;

/// Reads of the live view before the check gives up finding it still.
pub const STILL_READS_MAX: u32 = 20;
/// Positions the scratch build moves by between progress reports.
const BUILD_STEP: u64 = 50_000;
/// Longest a value is shown in a finding.
const VALUE_SHOWN_MAX: usize = 120;

/// The agent view's [`ModelCheck`]: `live` is the serving view, `scratch` a view of its own
/// beside it.
pub struct AgentViewCheck {
    pub pool: PgPool,
    pub live: AgentViewStore,
    pub scratch: AgentViewStore,
}

impl ModelCheck for AgentViewCheck {
    fn name(&self) -> &'static str {
        NAME
    }

    fn check<'a>(&'a self, progress: Progress<'a>) -> BoxFuture<'a, anyhow::Result<CheckReport>> {
        Box::pin(async move {
            self.scratch.drop_all().await?;
            let checked = self.compare(progress).await;
            self.scratch.drop_all().await?;
            checked
        })
    }
}

impl AgentViewCheck {
    /// The live view as one position left it: read whole between two equal checkpoints.
    async fn still(&self) -> anyhow::Result<(u64, BTreeMap<String, String>)> {
        for _ in 0..STILL_READS_MAX {
            let before = self.live.position().await?;
            let snapshot = self.live.snapshot().await?;
            if self.live.position().await? == before {
                return Ok((before, snapshot));
            }
        }
        anyhow::bail!("the live view changed during each of {STILL_READS_MAX} reads")
    }

    async fn compare(&self, progress: Progress<'_>) -> anyhow::Result<CheckReport> {
        let mut report = CheckReport::new(NAME);
        let (position, live) = self.still().await?;
        report.position = Some(position);
        let head = store::head(&self.pool).await?;
        if position > head {
            report.detail = format!("the view is at {position}, past the log's head {head}");
            report.add(format!("{NAME} position"), report.detail.clone());
            return Ok(report);
        }
        let mut feeder =
            Feeder::new(AgentView, self.scratch.clone(), self.pool.clone(), 1_000).await?;
        while feeder.checkpoint() < position {
            let to = position.min(feeder.checkpoint() + BUILD_STEP);
            feeder.catch_up_to(to).await?;
            progress(Tick { check: NAME, done: to, total: position });
        }
        let rebuilt = self.scratch.snapshot().await?;
        let keys: BTreeSet<&String> = live.keys().chain(rebuilt.keys()).collect();
        report.checked = keys.len() as u64;
        for key in keys {
            let (live, rebuilt) = (live.get(key), rebuilt.get(key));
            if live != rebuilt {
                report.add(format!("agent view key {key}"), describe(live, rebuilt));
            }
        }
        report.detail = format!(
            "{} keys at its position {position} against the log's rebuild (head {head})",
            report.checked
        );
        Ok(report)
    }
}

fn describe(live: Option<&String>, rebuilt: Option<&String>) -> String {
    let cut = |value: &String| match value.char_indices().nth(VALUE_SHOWN_MAX) {
        Some((at, _)) => format!("{}…", &value[..at]),
        None => value.clone(),
    };
    match (live, rebuilt) {
        (Some(live), None) => format!("live holds {}, the log's rebuild nothing", cut(live)),
        (None, Some(rebuilt)) => format!("live holds nothing, the log's rebuild {}", cut(rebuilt)),
        (Some(live), Some(rebuilt)) => {
            format!("live holds {}, the log's rebuild {}", cut(live), cut(rebuilt))
        }
        (None, None) => String::new(),
    }
}
