//! Wall-clock time as the domain takes it: Unix milliseconds, read at the edge (HTTP
//! handlers, workers, the supervisor) and passed into commands, which never read a clock.

use time::OffsetDateTime;

pub fn now_ms() -> i64 {
    (OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as i64
}
