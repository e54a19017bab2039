//! The LLM gateway's retries and fallback on their own, against local fake providers and no
//! serve: `setup` builds a gateway whose backoff is a millisecond, so a test reads which
//! targets were tried how often, in what order, instead of timing waits.

use std::time::Duration;

use brain::backoff::Backoff;
use brain::llm::budget::Scope;
use brain::llm::gateway::{Call, Gateway, ProviderKind, Route, Target};
use brain::llm::retry::RetryPolicy;
use brain::llm::{Message, Reason, Role, Timeouts};
use domain::budget::Budget;

use crate::fake_llm::{FakeLlm, Scripted};
use crate::support::{TestEnv, redis_url};

const KEY: &str = "sk-gateway-test-key";

fn setup() -> Gateway {
    crate::serve::crypto_provider();
    let credentials = crate::fake_llm::credentials(KEY);
    let retry =
        RetryPolicy { backoff: Backoff { base_ms: 1, max_ms: 1 }, ..RetryPolicy::default() };
    Gateway::new(credentials, Timeouts::default(), retry)
}

/// A route over `fakes`, in order, each as an OpenAI target.
fn route(fakes: &[&FakeLlm]) -> Route {
    let targets =
        fakes.iter().map(|fake| Target::new(ProviderKind::Openai, fake.url(), "m")).collect();
    Route { targets, temperature: None, max_tokens: Some(32) }
}

fn ask() -> Vec<Message> {
    vec![Message::new(Role::User, "hello")]
}

fn status(code: u16, retry_after: Option<&str>) -> Scripted {
    Scripted::Status { code, retry_after: retry_after.map(str::to_owned) }
}

#[tokio::test]
async fn a_target_failing_retryably_is_tried_attempts_max_times_then_the_next_answers() {
    // Given a first target that always answers 500, and a second that answers.
    let gateway = setup();
    let down = FakeLlm::start(vec![], status(500, None), Some(KEY)).await;
    let up = FakeLlm::start(vec![], Scripted::text("from the second"), Some(KEY)).await;

    let answered = gateway.chat(&route(&[&down, &up]), &ask(), &[], None).await.unwrap();

    // Three tries of the first (its attempts_max), then one of the second.
    assert_eq!(answered.answer.content, "from the second");
    assert_eq!((down.seen().len(), up.seen().len()), (3, 1));
    let tries: Vec<(u32, Option<Reason>)> =
        answered.tries.iter().map(|t| (t.attempt, t.failure)).collect();
    let bad = Some(Reason::BadResponse);
    assert_eq!(tries, [(1, bad), (2, bad), (3, bad), (1, None)]);
}

#[tokio::test]
async fn a_failure_that_would_fail_again_falls_back_at_once_without_a_retry() {
    // Given a first target that refuses the key, and a second that answers.
    let gateway = setup();
    let refusing = FakeLlm::start(vec![], Scripted::text("never"), Some("another-key")).await;
    let up = FakeLlm::start(vec![], Scripted::text("from the second"), Some(KEY)).await;

    let answered = gateway.chat(&route(&[&refusing, &up]), &ask(), &[], None).await.unwrap();

    assert_eq!(answered.answer.content, "from the second");
    let failures: Vec<Option<Reason>> = answered.tries.iter().map(|t| t.failure).collect();
    assert_eq!(failures, [Some(Reason::AuthFailed), None]);
}

#[tokio::test]
async fn a_retry_after_longer_than_retry_after_max_is_not_waited_for_the_route_falls_back() {
    // Given a first target asking to be left alone for ten minutes.
    let gateway = setup();
    let busy = FakeLlm::start(vec![], status(429, Some("600")), Some(KEY)).await;
    let up = FakeLlm::start(vec![], Scripted::text("from the second"), Some(KEY)).await;

    let (route, messages) = (route(&[&busy, &up]), ask());
    let call = gateway.chat(&route, &messages, &[], None);
    let answered = tokio::time::timeout(Duration::from_secs(30), call).await.unwrap().unwrap();

    assert_eq!(answered.answer.content, "from the second");
    assert_eq!(busy.seen().len(), 1, "asked once, not retried");
}

#[tokio::test]
async fn a_retry_after_within_bounds_is_waited_for_on_the_same_target() {
    // Given a target that asks once for a pause of a second, then answers.
    let gateway = setup();
    let fake =
        FakeLlm::start(vec![status(429, Some("1"))], Scripted::text("after"), Some(KEY)).await;

    let answered = gateway.chat(&route(&[&fake]), &ask(), &[], None).await.unwrap();

    // Retried on the same target, no sooner than asked (the backoff alone is a millisecond).
    assert_eq!(answered.answer.content, "after");
    let seen = fake.seen();
    assert_eq!(seen.len(), 2);
    let waited = seen[1].at.duration_since(seen[0].at);
    assert!(waited >= Duration::from_secs(1), "retried after {waited:?}");
}

#[tokio::test]
async fn when_every_target_fails_the_call_fails_with_the_last_failure_and_every_try() {
    let gateway = setup();
    let first = FakeLlm::start(vec![], status(500, None), Some(KEY)).await;
    let second = FakeLlm::start(vec![], Scripted::Malformed, Some(KEY)).await;

    let failed = gateway.chat(&route(&[&first, &second]), &ask(), &[], None).await.unwrap_err();

    assert_eq!(failed.error.reason, Reason::BadResponse);
    assert_eq!(failed.tries.len(), 4, "three of the first, one of the second: {:?}", failed.tries);
}

#[tokio::test]
async fn a_call_over_its_budget_is_refused_before_any_provider_is_asked() {
    // Given a gateway sharing budgets through Redis, and a call whose worst case (its
    // `max_tokens` alone) passes its budget.
    let env = TestEnv::new().await;
    let redis = redis::Client::open(redis_url()).unwrap().get_connection_manager().await.unwrap();
    let gateway = setup().shared(redis, &env.namespace, env.pool.clone());
    let fake = FakeLlm::start(vec![], Scripted::text("never"), Some(KEY)).await;
    let route = route(&[&fake]);
    let day = time::OffsetDateTime::now_utc().date();
    let budget = Budget { tokens_max: Some(10), cost_usd_max: None };
    let budgets = [Scope::Day { day, budget }];
    let messages = ask();
    let call = Call {
        route: &route,
        messages: &messages,
        tools: &[],
        budgets: &budgets,
        let_through: None,
    };

    let failed = gateway.call(call, None).await.unwrap_err();

    assert_eq!(failed.error.reason, Reason::BudgetExceeded, "{}", failed.error);
    assert!(failed.tries.is_empty() && fake.seen().is_empty(), "no provider was asked");

    // Without a shared store, the budget cannot be kept: refused too, but retryably.
    let failed = setup().call(call, None).await.unwrap_err();
    assert_eq!(failed.error.reason, Reason::BudgetExceeded);
    assert!(failed.error.retryable(), "{}", failed.error);
}

#[tokio::test]
async fn a_provider_key_goes_only_to_the_hosts_it_was_configured_for() {
    // Given a key bound (as the environment binds it) to one server, and a route whose first
    // target, as a configuration change could set it, is another server.
    crate::serve::crypto_provider();
    let trusted = FakeLlm::start(vec![], Scripted::text("trusted"), Some(KEY)).await;
    let elsewhere = FakeLlm::start(vec![], Scripted::text("elsewhere"), None).await;
    let settings = brain::config::llm::LlmSettings {
        openai_api_key: Some(brain::config::llm::Secret::new(KEY)),
        key_hosts: vec![trusted.url()],
        ..Default::default()
    };
    let gateway = Gateway::configured(&settings);

    // When a call goes to each.
    gateway.chat(&route(&[&elsewhere]), &ask(), &[], None).await.unwrap();
    gateway.chat(&route(&[&trusted]), &ask(), &[], None).await.unwrap();

    // Then only the trusted one saw the key; the other was called without one.
    let authorization = |fake: &FakeLlm| {
        let seen = fake.seen();
        seen[0].headers.get("authorization").map(|value| value.to_str().unwrap().to_owned())
    };
    assert_eq!(authorization(&elsewhere), None);
    assert_eq!(authorization(&trusted), Some(format!("Bearer {KEY}")));
}
