//! `GET /api/missions/throughput`: missions finished per minute over the last hour, by how
//! they ended, and the failure rate, from the `mission_list` read model (a finished row's
//! `updated_at` is when it finished; index `mission_list_finished`).

use axum::extract::State;
use serde::Serialize;
use utoipa::ToSchema;

use crate::api::error::errors;
use crate::api::{ApiError, ApiJson, AppState};

/// The window the route reports on.
const WINDOW_S: i64 = 3600;
/// One bucket's width.
const BUCKET_S: i64 = 60;

/// Missions that finished within one minute.
#[derive(Debug, Default, Clone, Serialize, ToSchema)]
pub struct Bucket {
    /// Start of the minute, Unix milliseconds.
    pub at_ms: i64,
    pub completed: i64,
    pub failed: i64,
    pub cancelled: i64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Throughput {
    pub window_s: i64,
    pub bucket_s: i64,
    /// Oldest first, one per minute of the window, empty minutes included.
    pub buckets: Vec<Bucket>,
    pub completed: i64,
    pub failed: i64,
    pub cancelled: i64,
    /// Finished missions per minute over the window.
    pub per_minute: f64,
    /// `failed / (completed + failed)`; cancelled missions are neither; 0 when none finished.
    pub failure_rate: f64,
    /// The log position the counts reflect (the `mission_list` projector's checkpoint).
    pub position: u64,
}

errors! { ThroughputErrors = READ + [] }

#[utoipa::path(get, path = "/api/missions/throughput", tag = "missions",
    responses(
        (status = 200, description = "Finished missions per minute over the last hour", body = Throughput),
        ThroughputErrors,
    ))]
pub async fn throughput(State(app): State<AppState>) -> Result<ApiJson<Throughput>, ApiError> {
    let mut snapshot = crate::eventlog::projectors::Snapshot::begin(app.pool()).await?;
    // The database clock for both ends, so the window is the same one the rows were stamped in.
    let (now_ms,): (i64,) = sqlx::query_as("SELECT (extract(epoch FROM now()) * 1000)::int8")
        .fetch_one(snapshot.conn())
        .await?;
    let rows: Vec<(i64, String, i64)> = sqlx::query_as(
        "SELECT (floor(extract(epoch FROM updated_at) / $1) * $1 * 1000)::int8, status, count(*)
         FROM mission_list
         WHERE status IN ('completed', 'failed', 'cancelled')
           AND updated_at > now() - make_interval(secs => $2)
         GROUP BY 1, 2",
    )
    .bind(BUCKET_S as f64)
    .bind(WINDOW_S as f64)
    .fetch_all(snapshot.conn())
    .await?;
    let position = snapshot.position(projections::mission_list::NAME).await?;
    Ok(ApiJson(summarise(now_ms, &rows, position)))
}

/// Counts per (minute, status) into the window's buckets and totals.
fn summarise(now_ms: i64, rows: &[(i64, String, i64)], position: u64) -> Throughput {
    let bucket_ms = BUCKET_S * 1000;
    let last = now_ms.div_euclid(bucket_ms) * bucket_ms;
    let count = (WINDOW_S / BUCKET_S) as usize;
    let first = last - (count as i64 - 1) * bucket_ms;
    let mut buckets: Vec<Bucket> = (0..count)
        .map(|i| Bucket { at_ms: first + i as i64 * bucket_ms, ..Bucket::default() })
        .collect();
    for (at_ms, status, n) in rows {
        // A row stamped just before the window's first full minute folds into the first.
        let index = ((at_ms - first).max(0) / bucket_ms) as usize;
        let Some(bucket) = buckets.get_mut(index) else { continue };
        match status.as_str() {
            "completed" => bucket.completed += n,
            "failed" => bucket.failed += n,
            _ => bucket.cancelled += n,
        }
    }
    let completed = buckets.iter().map(|b| b.completed).sum::<i64>();
    let failed = buckets.iter().map(|b| b.failed).sum::<i64>();
    let cancelled = buckets.iter().map(|b| b.cancelled).sum::<i64>();
    let ended = completed + failed;
    Throughput {
        window_s: WINDOW_S,
        bucket_s: BUCKET_S,
        buckets,
        completed,
        failed,
        cancelled,
        per_minute: (completed + failed + cancelled) as f64 / (WINDOW_S / 60) as f64,
        failure_rate: if ended == 0 { 0.0 } else { failed as f64 / ended as f64 },
        position,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_fall_into_their_minutes() {
        let now = 10_000 * 60_000 + 30_000;
        let this_minute = 10_000 * 60_000;
        let rows = vec![
            (this_minute, "completed".to_owned(), 3),
            (this_minute, "failed".to_owned(), 1),
            (this_minute - 59 * 60_000, "cancelled".to_owned(), 2),
            (this_minute - 60 * 60_000, "completed".to_owned(), 5),
        ];
        let t = summarise(now, &rows, 7);
        assert_eq!(t.buckets.len(), 60);
        assert_eq!(t.buckets[59].at_ms, this_minute);
        assert_eq!((t.buckets[59].completed, t.buckets[59].failed), (3, 1));
        assert_eq!(t.buckets[0].cancelled, 2);
        // Stamped in the minute before the window's first: counted in the first.
        assert_eq!(t.buckets[0].completed, 5);
        assert_eq!((t.completed, t.failed, t.cancelled), (8, 1, 2));
        assert!((t.failure_rate - 1.0 / 9.0).abs() < 1e-9);
        assert_eq!(t.position, 7);
    }

    #[test]
    fn an_idle_hour_has_no_failure_rate() {
        let t = summarise(123_456_789, &[], 0);
        assert_eq!(t.failure_rate, 0.0);
        assert_eq!(t.per_minute, 0.0);
        assert!(t.buckets.iter().all(|b| b.completed + b.failed + b.cancelled == 0));
    }
}
