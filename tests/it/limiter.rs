//! The shared LLM limiter on its own, against the real Redis, with no gateway and no provider:
//! `setup` gives a limiter and a target; each test takes permits and feeds outcomes directly.
//! A caller that would have to wait past its `wait_max` is refused at once, so the tests
//! ask with a short `wait_max` and read the refusal instead of timing a wait.

use std::time::Duration;

use brain::llm::Reason;
use brain::llm::gateway::{ProviderKind, Target};
use brain::llm::limits::{Limiter, Outcome, PAUSE_MAX};
use domain::llm_config::Limits;

use crate::support::{Proxy, TestEnv, redis_url, wait_until};

/// Long enough for a Redis round trip on a loaded machine, far shorter than any slot or pause
/// the tests set up.
const WAIT_MAX: Duration = Duration::from_millis(300);

struct Bundle {
    _env: TestEnv,
    target: Target,
}

async fn setup(limits: Limits) -> (Limiter, Bundle) {
    let env = TestEnv::new().await;
    let redis = redis::Client::open(redis_url()).unwrap().get_connection_manager().await.unwrap();
    let limiter = Limiter::new(redis, &env.namespace);
    let target = Target { limits, ..Target::new(ProviderKind::Openai, "", "limited-1") };
    (limiter, Bundle { _env: env, target })
}

#[tokio::test]
async fn a_full_target_lets_no_one_in_until_a_place_is_handed_back() {
    // Given a target of one place, taken.
    let (limiter, bundle) = setup(Limits { concurrency: Some(1), ..Limits::default() }).await;
    let held = limiter.acquire(&bundle.target, 10, WAIT_MAX).await.expect("the first place");
    assert_eq!(limiter.state(&bundle.target).await.unwrap().in_flight, 1);

    // Another caller is refused while it is held.
    let refused = limiter.acquire(&bundle.target, 10, WAIT_MAX).await.unwrap_err();
    assert_eq!(refused.reason, Reason::RateLimited, "{refused}");

    // Once it is handed back, the next caller is let in.
    limiter.done(held, Outcome::Answered { tokens_used: 10 }).await;
    assert_eq!(limiter.state(&bundle.target).await.unwrap().in_flight, 0);
    let next = limiter.acquire(&bundle.target, 10, WAIT_MAX).await.expect("the freed place");
    limiter.done(next, Outcome::Failed).await;
}

#[tokio::test]
async fn a_dropped_permit_hands_its_place_back() {
    let (limiter, bundle) = setup(Limits { concurrency: Some(1), ..Limits::default() }).await;
    let held = limiter.acquire(&bundle.target, 10, WAIT_MAX).await.expect("the place");

    // A call cancelled mid-flight drops its permit without `done`.
    drop(held);
    wait_until("the place to be handed back", Duration::from_secs(5), || async {
        limiter.state(&bundle.target).await.unwrap().in_flight == 0
    })
    .await;
    limiter.acquire(&bundle.target, 10, WAIT_MAX).await.expect("the place again");
}

#[tokio::test]
async fn a_429_pauses_every_caller_of_the_target_for_its_retry_after_capped_at_pause_max() {
    // Given one call that met a 429 asking for 30 s.
    let (limiter, bundle) = setup(Limits::default()).await;
    let permit = limiter.acquire(&bundle.target, 10, WAIT_MAX).await.unwrap();
    let retry_after = Some(Duration::from_secs(30));
    limiter.done(permit, Outcome::RateLimited { retry_after }).await;

    // The target is paused for that long, and every caller is held back.
    let state = limiter.state(&bundle.target).await.unwrap();
    assert!((29_000..=30_000).contains(&state.paused_ms), "{state:?}");
    assert_eq!(state.pauses, 1, "{state:?}");
    let refused = limiter.acquire(&bundle.target, 10, WAIT_MAX).await.unwrap_err();
    assert_eq!(refused.reason, Reason::RateLimited, "{refused}");

    // A provider asking for ten minutes pauses the fleet for PAUSE_MAX at most.
    let (limiter, bundle) = setup(Limits::default()).await;
    let permit = limiter.acquire(&bundle.target, 10, WAIT_MAX).await.unwrap();
    let retry_after = Some(Duration::from_secs(600));
    limiter.done(permit, Outcome::RateLimited { retry_after }).await;
    let paused_ms = limiter.state(&bundle.target).await.unwrap().paused_ms;
    assert!(paused_ms <= PAUSE_MAX.as_millis() as u64 && paused_ms > 59_000, "{paused_ms}");
}

#[tokio::test]
async fn an_rpm_limit_puts_the_next_callers_slot_a_request_interval_later() {
    // Given 60 requests a minute: one slot a second.
    let (limiter, bundle) = setup(Limits { rpm: Some(60), ..Limits::default() }).await;
    let first = limiter.acquire(&bundle.target, 10, WAIT_MAX).await.expect("the first slot");
    assert_eq!(limiter.state(&bundle.target).await.unwrap().rate_per_s, Some(1.0));

    // The next slot is a second away: a caller who cannot wait that long is refused.
    let refused = limiter.acquire(&bundle.target, 10, WAIT_MAX).await.unwrap_err();
    assert_eq!(refused.reason, Reason::RateLimited, "{refused}");
    limiter.done(first, Outcome::Answered { tokens_used: 10 }).await;
}

#[tokio::test]
async fn a_tpm_limit_holds_back_a_caller_whose_tokens_do_not_fit() {
    // Given 6,000 tokens a minute, and a call that took them all.
    let (limiter, bundle) = setup(Limits { tpm: Some(6_000), ..Limits::default() }).await;
    let first = limiter.acquire(&bundle.target, 6_000, WAIT_MAX).await.expect("the first call");

    // The next call's tokens fit only most of a minute later.
    let refused = limiter.acquire(&bundle.target, 100, WAIT_MAX).await.unwrap_err();
    assert_eq!(refused.reason, Reason::RateLimited, "{refused}");
    limiter.done(first, Outcome::Answered { tokens_used: 6_000 }).await;
}

#[tokio::test]
async fn an_unreachable_redis_lets_calls_through_unlimited() {
    // Given a limiter whose link to Redis is cut, on a target of one place, taken.
    let env = TestEnv::new().await;
    let redis_addr = redis_url().trim_start_matches("redis://").parse().unwrap();
    let proxy = Proxy::start(redis_addr).await;
    let client = redis::Client::open(format!("redis://{}", proxy.addr)).unwrap();
    let limiter = Limiter::new(client.get_connection_manager().await.unwrap(), &env.namespace);
    let limits = Limits { concurrency: Some(1), ..Limits::default() };
    let target = Target { limits, ..Target::new(ProviderKind::Openai, "", "limited-1") };
    let _held = limiter.acquire(&target, 10, WAIT_MAX).await.expect("the place");
    proxy.cut().await;

    // The limiter is a courtesy to the provider: calls go on without it.
    let through = limiter.acquire(&target, 10, WAIT_MAX).await.expect("let through unlimited");
    limiter.done(through, Outcome::Answered { tokens_used: 10 }).await;
}
