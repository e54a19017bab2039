//! Lease and retry settings shared by `brain worker` and `brain serve`'s workers.

pub const LEASE_MS_DEFAULT: u64 = 30_000;
pub const RETRY_BACKOFF_MS_DEFAULT: u64 = 1_000;
pub const RETRY_BACKOFF_MAX_MS_DEFAULT: u64 = 300_000;

/// Lease and retry settings shared by `brain worker` and `brain serve`'s workers.
#[derive(Debug, Clone, clap::Args)]
pub struct Tuning {
    /// How long a start or a lease extension holds a mission; extended every third of it.
    #[arg(long, env = "BRAIN_LEASE_MS", default_value_t = LEASE_MS_DEFAULT, value_parser = clap::value_parser!(u64).range(1..))]
    pub lease_ms: u64,
    /// Backoff before the second attempt; doubles per attempt, with jitter.
    #[arg(long, env = "BRAIN_RETRY_BACKOFF_MS", default_value_t = RETRY_BACKOFF_MS_DEFAULT)]
    pub retry_backoff_ms: u64,
    /// Longest backoff between attempts.
    #[arg(long, env = "BRAIN_RETRY_BACKOFF_MAX_MS", default_value_t = RETRY_BACKOFF_MAX_MS_DEFAULT)]
    pub retry_backoff_max_ms: u64,
}

pub const WORKER_CONCURRENCY_DEFAULT: usize = 4;

/// What `brain worker` alone is configured with.
#[derive(Debug, Clone, clap::Args)]
pub struct WorkerSettings {
    /// Missions run at once.
    #[arg(long, env = "BRAIN_WORKER_CONCURRENCY", default_value_t = WORKER_CONCURRENCY_DEFAULT, value_parser = concurrency)]
    pub concurrency: usize,
    /// This worker's name in mission events and the status view (default: host-pid-random).
    #[arg(long, env = "BRAIN_WORKER_ID")]
    pub worker_id: Option<String>,
}

/// At least one mission at once.
fn concurrency(value: &str) -> Result<usize, String> {
    match value.trim().parse::<usize>() {
        Ok(slots) if slots >= 1 => Ok(slots),
        _ => Err(format!("{value:?}: a whole number of missions, at least 1, is expected")),
    }
}
