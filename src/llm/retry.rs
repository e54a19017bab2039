//! When to try a provider again: 429, 5xx and connection failures are retried after an
//! exponential backoff with jitter, or after the provider's `Retry-After` (seconds or an
//! HTTP-date; `retry-after-ms` when given) when it is longer; other failures (a bad key, an unknown model, a malformed
//! answer) are not, since trying again would fail the same way.

use std::time::Duration;

use time::OffsetDateTime;
use time::format_description::well_known::Rfc2822;

use crate::backoff::Backoff;
use crate::llm::LlmError;

/// How a gateway retries one target.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    /// Tries of one target, the first included.
    pub attempts_max: u32,
    pub backoff: Backoff,
    /// A `Retry-After` longer than this is not waited for: the target counts as failed and
    /// the route falls back.
    pub retry_after_max: Duration,
}

impl Default for RetryPolicy {
    fn default() -> RetryPolicy {
        RetryPolicy {
            attempts_max: 3,
            backoff: Backoff { base_ms: 500, max_ms: 10_000 },
            retry_after_max: Duration::from_secs(60),
        }
    }
}

impl RetryPolicy {
    /// How long to wait before try `attempt + 1` after `error` on try `attempt` (1-based),
    /// or `None` when it is not worth another try.
    pub fn wait(&self, attempt: u32, error: &LlmError) -> Option<Duration> {
        if attempt >= self.attempts_max || !error.retryable() {
            return None;
        }
        let backoff = Duration::from_millis(self.backoff.draw(attempt));
        match error.retry_after {
            Some(asked) if asked > self.retry_after_max => None,
            Some(asked) => Some(asked.max(backoff.min(asked + Duration::from_millis(250)))),
            None => Some(backoff),
        }
    }
}

/// A `Retry-After` header's value as a wait from `now`: delay-seconds or an HTTP-date.
pub fn parse_retry_after(value: &str, now: OffsetDateTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    if let Ok(seconds) = value.parse::<f64>()
        && let Ok(wait) = Duration::try_from_secs_f64(seconds)
    {
        return Some(wait);
    }
    let at = OffsetDateTime::parse(value, &Rfc2822).ok()?;
    let wait = at - now;
    Some(if wait.is_negative() { Duration::ZERO } else { wait.unsigned_abs() })
}

/// The wait a response asks for: `retry-after-ms` (milliseconds, as OpenAI and Azure send
/// beside the standard header), else `Retry-After`.
pub fn retry_after_of(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    if let Some(ms) = headers.get("retry-after-ms").and_then(|value| value.to_str().ok())
        && let Ok(ms) = ms.trim().parse::<f64>()
        && let Ok(wait) = Duration::try_from_secs_f64(ms / 1_000.0)
    {
        return Some(wait);
    }
    let value = headers.get(reqwest::header::RETRY_AFTER)?.to_str().ok()?;
    parse_retry_after(value, OffsetDateTime::now_utc())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::llm::{LlmError, Reason};

    #[test]
    fn retry_after_is_read_as_seconds_or_an_http_date() {
        let now = OffsetDateTime::parse("Tue, 01 Dec 2026 20:00:00 GMT", &Rfc2822).unwrap();
        assert_eq!(parse_retry_after("2", now), Some(Duration::from_secs(2)));
        assert_eq!(parse_retry_after(" 0.5 ", now), Some(Duration::from_millis(500)));
        assert_eq!(
            parse_retry_after("Tue, 01 Dec 2026 20:00:07 GMT", now),
            Some(Duration::from_secs(7))
        );
        assert_eq!(parse_retry_after("Tue, 01 Dec 2026 19:59:00 GMT", now), Some(Duration::ZERO));
        assert_eq!(parse_retry_after("soon", now), None);
        assert_eq!(parse_retry_after("-3", now), None);
        assert_eq!(parse_retry_after("1e300", now), None, "too long to be a wait: no panic");
    }

    #[test]
    fn only_what_may_pass_is_retried_and_retry_after_is_a_floor() {
        let policy = RetryPolicy::default();
        let limited = LlmError {
            retry_after: Some(Duration::from_secs(2)),
            ..LlmError::new(Reason::RateLimited, "slow down")
        };
        let wait = policy.wait(1, &limited).unwrap();
        assert!(wait >= Duration::from_secs(2) && wait <= Duration::from_millis(2_250), "{wait:?}");
        assert_eq!(policy.wait(3, &limited), None, "attempts are bounded");
        let too_long = LlmError { retry_after: Some(Duration::from_secs(600)), ..limited.clone() };
        assert_eq!(policy.wait(1, &too_long), None);
        let server = LlmError { server_error: true, ..LlmError::new(Reason::BadResponse, "500") };
        assert!(policy.wait(1, &server).is_some());
        for reason in
            [Reason::AuthFailed, Reason::ModelNotFound, Reason::BadResponse, Reason::ContextTooLong]
        {
            assert_eq!(policy.wait(1, &LlmError::new(reason, "no")), None, "{reason:?}");
        }
    }
}
