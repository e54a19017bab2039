//! The `snapshots` check: each stored snapshot (decision 0049) equals a fold of its stream up
//! to the version it names. A snapshot that differs would make every load of its stream
//! start from a wrong state, so each one is named. At most [`SNAPSHOTS_CHECKED_MAX`] are
//! compared (all of them when there are no more, else a random sample, said in the detail);
//! one stream is folded at a time, so memory is bounded by the longest stream compared.

use sqlx::PgPool;

use super::{CheckReport, Progress, Tick};
use crate::eventlog::snapshot::{self, Compared};
use crate::eventlog::store::snapshots;

/// Most snapshots one verify compares.
pub const SNAPSHOTS_CHECKED_MAX: u32 = 1_000;

pub async fn check(pool: &PgPool, progress: Progress<'_>) -> anyhow::Result<CheckReport> {
    let mut report = CheckReport::new("snapshots");
    let stored = snapshots::count(pool).await?;
    let chosen = snapshots::sample(pool, SNAPSHOTS_CHECKED_MAX).await?;
    let total = chosen.len() as u64;
    let mut ignored = 0;
    for (done, stored) in chosen.iter().enumerate() {
        progress(Tick { check: "snapshots", done: done as u64, total });
        match snapshot::compare(pool, stored).await? {
            Compared::Agrees => {}
            Compared::Ignored(_) => ignored += 1,
            Compared::Differs(detail) => report.add(
                format!(
                    "snapshot {}/{} version {}",
                    stored.stream_type, stored.stream_id, stored.version
                ),
                detail,
            ),
        }
        report.checked += 1;
    }
    report.detail = if total < stored {
        format!("a random {total} of {stored} snapshots folded from the log")
    } else {
        format!("{stored} snapshots folded from the log")
    };
    if ignored > 0 {
        report.detail.push_str(&format!(
            "; {ignored} of another snapshot version or type, ignored by loads"
        ));
    }
    Ok(report)
}
