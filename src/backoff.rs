//! Retry backoff: how long a failed attempt waits before the next. A leaf shared by the
//! missions (a failed attempt, an expired lease), the LLM gateway (a failed call) and the
//! restart policy of built-in agents.

use uuid::Uuid;

/// Exponential backoff with jitter: attempt `n` waits a random time between half and all of
/// `base · 2^(n−1)`, capped at `max`. The randomness spreads retries of missions that
/// failed together (a downstream outage) instead of bringing them back at one instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    pub base_ms: u64,
    pub max_ms: u64,
}

impl Default for Backoff {
    fn default() -> Backoff {
        Backoff { base_ms: 1_000, max_ms: 5 * 60 * 1_000 }
    }
}

impl Backoff {
    /// The wait after attempt `attempt` (1-based) failed, with `unit` in `[0, 1)` as the
    /// random draw.
    pub fn delay_ms(&self, attempt: u32, unit: f64) -> u64 {
        let exponent = attempt.saturating_sub(1).min(32);
        let ceiling = self.base_ms.saturating_mul(1 << exponent).min(self.max_ms);
        let unit = unit.clamp(0.0, 1.0);
        ceiling / 2 + ((ceiling - ceiling / 2) as f64 * unit) as u64
    }

    pub fn draw(&self, attempt: u32) -> u64 {
        self.delay_ms(attempt, random_unit())
    }
}

/// A uniform draw in `[0, 1)` from the operating system's randomness (through a v4 UUID,
/// which is already a dependency), good enough for jitter.
pub fn random_unit() -> f64 {
    (Uuid::new_v4().as_u128() >> 75) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_per_attempt_within_its_jitter_and_stops_at_the_cap() {
        let backoff = Backoff { base_ms: 1_000, max_ms: 10_000 };
        assert_eq!((backoff.delay_ms(1, 0.0), backoff.delay_ms(1, 0.999_999)), (500, 999));
        assert_eq!((backoff.delay_ms(3, 0.0), backoff.delay_ms(3, 0.999_999)), (2_000, 3_999));
        assert_eq!(backoff.delay_ms(40, 0.0), 5_000);
        for _ in 0..1_000 {
            let drawn = backoff.draw(2);
            assert!((1_000..2_000).contains(&drawn), "{drawn}");
        }
    }
}
