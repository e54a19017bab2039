//! Leadership by PostgreSQL advisory lock: one process per namespace runs the relay, and one
//! per projector applies it. The lock lives on a connection of its own, so it goes away with
//! the process (or its network) and a standby can take over.
//!
//! A lock is no fence: a leader cut off from PostgreSQL may not notice at once. What each
//! leader writes is therefore safe under a brief overlap anyway (the relay's expected-sequence
//! headers, a projector's checkpoint compare-and-set); the lock only keeps the work single.

use std::time::Duration;

use sqlx::{PgConnection, PgPool};
use tokio_util::sync::CancellationToken;

use crate::clock::LeaseClock;

/// Longest a leadership check or a lock attempt may wait for PostgreSQL.
pub const CHECK_TIMEOUT: Duration = Duration::from_secs(5);

/// A held advisory lock. Dropping it closes its connection, which releases the lock.
pub struct Leadership {
    connection: PgConnection,
}

impl Leadership {
    /// Confirms the lock's connection still answers within [`CHECK_TIMEOUT`]; an error
    /// means leadership may be lost (a connection that went half-open answers nothing, and
    /// the caller drops it, which closes it).
    pub async fn check(&mut self) -> Result<(), sqlx::Error> {
        let probe = sqlx::query("SELECT 1").execute(&mut self.connection);
        match tokio::time::timeout(CHECK_TIMEOUT, probe).await {
            Ok(answer) => answer.map(|_| ()),
            Err(_) => Err(sqlx::Error::Protocol("leadership check got no answer in time".into())),
        }
    }
}

/// Tries the lock every `retry` until it is held, or `shutdown` is cancelled (`None`).
pub async fn acquire(
    pool: &PgPool,
    name: &str,
    retry: Duration,
    shutdown: &CancellationToken,
) -> Result<Option<Leadership>, sqlx::Error> {
    let mut connection = pool.acquire().await?.detach();
    let key = lock_key(name);
    let mut standby_logged = false;
    loop {
        let attempt = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
            .bind(key)
            .fetch_one(&mut connection);
        let held: bool = tokio::time::timeout(CHECK_TIMEOUT, attempt)
            .await
            .map_err(|_| sqlx::Error::Protocol("lock attempt got no answer in time".into()))??;
        if held {
            tracing::info!(lock = name, "leadership taken");
            return Ok(Some(Leadership { connection }));
        }
        if !standby_logged {
            tracing::info!(lock = name, "standing by: another process leads");
            standby_logged = true;
        }
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(None),
            _ = tokio::time::sleep(retry) => {}
        }
    }
}

/// Pause before seeking leadership again after PostgreSQL failed to answer.
const RETRY_PAUSE: Duration = Duration::from_secs(1);

/// Runs `round` every `every` for as long as this process holds `lock`, until `shutdown`.
/// Leadership lost (its connection stopped answering) is sought again; PostgreSQL being away
/// for a moment never ends the loop. `round` gets the database's clock, read at leadership,
/// which every timed verdict of a leader is taken on (design invariant 10). `leading` says
/// whether this process leads, for status pages.
pub async fn lead<F, Fut>(
    pool: &PgPool,
    lock: &str,
    every: Duration,
    shutdown: &CancellationToken,
    leading: &std::sync::atomic::AtomicBool,
    mut round: F,
) where
    F: FnMut(LeaseClock) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    use std::sync::atomic::Ordering;
    let pause = || async {
        tokio::select! {
            _ = shutdown.cancelled() => {}
            _ = tokio::time::sleep(RETRY_PAUSE) => {}
        }
    };
    while !shutdown.is_cancelled() {
        let mut leadership = match acquire(pool, lock, RETRY_PAUSE, shutdown).await {
            Ok(Some(leadership)) => leadership,
            Ok(None) => return,
            Err(error) => {
                tracing::warn!(lock, %error, "cannot seek leadership; retrying");
                pause().await;
                continue;
            }
        };
        let clock = match LeaseClock::connect(pool.clone()).await {
            Ok(clock) => clock,
            Err(error) => {
                tracing::warn!(lock, %error, "cannot read the database clock; retrying");
                pause().await;
                continue;
            }
        };
        leading.store(true, Ordering::Relaxed);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tokio::time::sleep(every) => {}
            }
            if let Err(error) = leadership.check().await {
                tracing::warn!(lock, %error, "leadership lock lost; seeking it again");
                break;
            }
            round(clock.clone()).await;
        }
        leading.store(false, Ordering::Relaxed);
    }
}

/// A stable 64-bit FNV-1a hash of the lock's name, so every process agrees on the key.
pub fn lock_key(name: &str) -> i64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in name.as_bytes() {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash as i64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lock_keys_are_stable_and_differ_by_name() {
        // FNV-1a of the empty string is its offset basis; pinning it catches a changed hash,
        // which would let an old and a new process lead at once.
        assert_eq!(lock_key(""), 0xcbf2_9ce4_8422_2325_u64 as i64);
        assert_ne!(lock_key("brain:relay"), lock_key("brain2:relay"));
    }
}
