//! Time as the domain takes it: Unix milliseconds, read at the edge (HTTP handlers, workers,
//! the supervisor) and passed into commands, which never read a clock.
//!
//! [`now_ms`] is this machine's wall clock: good for stamping what happened. A lease is a
//! different matter (design invariant 10): it is granted by one process and judged by
//! another, so both must read one clock, or a worker whose clock runs 40 s behind gets leases
//! that look expired the moment they are granted. [`LeaseClock`] is that one clock: the
//! database's, read once in a while and carried forward on this process's monotonic clock in
//! between, so neither a skewed nor a stepped wall clock moves a lease.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sqlx::PgPool;
use time::OffsetDateTime;

pub fn now_ms() -> i64 {
    (OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as i64
}

/// How often a [`LeaseClock`] reads the database's clock again.
pub const LEASE_CLOCK_SYNC_INTERVAL: Duration = Duration::from_secs(10);
/// A reading whose round trip took longer is discarded: its midpoint says too little.
pub const LEASE_CLOCK_ROUND_TRIP_MAX: Duration = Duration::from_millis(500);
/// Deadline of one reading.
const LEASE_CLOCK_READ_TIMEOUT: Duration = Duration::from_secs(2);

/// PostgreSQL's clock as seen from this process: the last reading, and the monotonic instant
/// it stands for. Cheap to clone and to read (no I/O); it reads the database again at most
/// every [`LEASE_CLOCK_SYNC_INTERVAL`], from whichever caller comes first after that.
#[derive(Clone)]
pub struct LeaseClock {
    inner: Arc<Inner>,
}

struct Inner {
    pool: Option<PgPool>,
    reading: Mutex<Reading>,
    syncing: tokio::sync::Mutex<()>,
}

#[derive(Clone, Copy)]
struct Reading {
    db_ms: i64,
    at: Instant,
}

impl LeaseClock {
    /// Reads the database's clock once; fails when PostgreSQL does not answer.
    pub async fn connect(pool: PgPool) -> Result<LeaseClock, sqlx::Error> {
        let reading = read(&pool).await?;
        let inner =
            Inner { pool: Some(pool), reading: Mutex::new(reading), syncing: Default::default() };
        Ok(LeaseClock { inner: Arc::new(inner) })
    }

    /// A clock that never reads a database: this machine's wall clock at creation, carried
    /// on its monotonic clock. For tests and tools that have no database.
    pub fn local() -> LeaseClock {
        let reading = Reading { db_ms: now_ms(), at: Instant::now() };
        let inner = Inner { pool: None, reading: Mutex::new(reading), syncing: Default::default() };
        LeaseClock { inner: Arc::new(inner) }
    }

    /// The database's time now, in Unix milliseconds, without a round trip.
    pub fn now_ms(&self) -> i64 {
        let reading = *self.inner.reading.lock().expect("not poisoned");
        reading.db_ms + reading.at.elapsed().as_millis() as i64
    }

    /// [`Self::now_ms`], reading the database again first if the last reading is older than
    /// [`LEASE_CLOCK_SYNC_INTERVAL`]. A failed reading keeps the old one (its error is logged):
    /// a monotonic clock drifts by parts per million, far below any lease's margin.
    pub async fn now_ms_synced(&self) -> i64 {
        let stale = {
            let reading = self.inner.reading.lock().expect("not poisoned");
            reading.at.elapsed() > LEASE_CLOCK_SYNC_INTERVAL
        };
        if let (true, Some(pool)) = (stale, &self.inner.pool)
            && let Ok(_one_at_a_time) = self.inner.syncing.try_lock()
        {
            match read(pool).await {
                Ok(reading) => *self.inner.reading.lock().expect("not poisoned") = reading,
                Err(error) => tracing::warn!(%error, "cannot read the database clock"),
            }
        }
        self.now_ms()
    }
}

/// One reading: the database's `clock_timestamp()` stands for the midpoint of the round trip.
async fn read(pool: &PgPool) -> Result<Reading, sqlx::Error> {
    for _ in 0..3 {
        let sent = Instant::now();
        let query = sqlx::query_scalar::<_, i64>(
            "SELECT (extract(epoch FROM clock_timestamp()) * 1000)::int8",
        )
        .fetch_one(pool);
        let db_ms = tokio::time::timeout(LEASE_CLOCK_READ_TIMEOUT, query)
            .await
            .map_err(|_| sqlx::Error::PoolTimedOut)??;
        let round_trip = sent.elapsed();
        if round_trip <= LEASE_CLOCK_ROUND_TRIP_MAX {
            return Ok(Reading { db_ms, at: sent + round_trip / 2 });
        }
    }
    Err(sqlx::Error::Protocol("the database clock answered too slowly three times".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_local_lease_clock_runs_on_the_monotonic_clock_from_its_reading() {
        let clock = LeaseClock::local();
        let first = clock.now_ms();
        std::thread::sleep(Duration::from_millis(20));
        let second = clock.now_ms();
        assert!(second - first >= 20, "{first} then {second}");
        assert!((second - now_ms()).abs() < 1_000);
    }
}
