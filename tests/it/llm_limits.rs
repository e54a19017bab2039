//! The LLM gateway's shared limits, with two gateways that share nothing but Redis (as two
//! processes would): a 429's `Retry-After` pauses the other's calls to that target, a
//! concurrency limit holds for both together, an `rpm` spaces their requests, and the rate
//! learned from a 429 is shown by `GET /api/llm/limits`.

use std::time::{Duration, Instant};

use brain::llm::gateway::{Gateway, ProviderKind, Route, Target};
use brain::llm::limits::Limiter;
use brain::llm::{Message, Role};
use domain::llm_config::Limits;

use crate::fake_llm::{FakeLlm, Scripted};
use crate::support::{TestEnv, redis_url, wait_until};

async fn gateway(env: &TestEnv) -> Gateway {
    let redis = redis::Client::open(redis_url()).unwrap().get_connection_manager().await.unwrap();
    Gateway::configured(&Default::default()).shared(redis, &env.namespace, env.pool.clone())
}

fn route(fake: &FakeLlm, limits: Limits) -> Route {
    let target = Target { limits, ..Target::new(ProviderKind::Openai, fake.url(), "fake-1") };
    Route { targets: vec![target], temperature: None, max_tokens: Some(16) }
}

fn ask() -> Vec<Message> {
    vec![Message::new(Role::User, "hello")]
}

#[tokio::test]
async fn a_429_with_retry_after_pauses_every_caller_of_the_target_until_then() {
    let env = TestEnv::new().await;
    let limited = Scripted::Status { code: 429, retry_after: Some("2".into()) };
    let fake = FakeLlm::start(vec![limited], Scripted::text("fine"), None).await;
    let (first, second) = (gateway(&env).await, gateway(&env).await);
    let route = route(&fake, Limits::default());

    let call = {
        let route = route.clone();
        tokio::spawn(async move { first.chat(&route, &ask(), &[], None).await })
    };
    wait_until("the first call to meet its 429", Duration::from_secs(10), || async {
        !fake.seen().is_empty()
    })
    .await;
    // The other gateway has seen nothing of it but what Redis holds.
    let limiter = Limiter::new(
        redis::Client::open(redis_url()).unwrap().get_connection_manager().await.unwrap(),
        &env.namespace,
    );
    wait_until("the pause to be shared", Duration::from_secs(5), || async {
        limiter.state(&route.targets[0]).await.unwrap().pauses == 1
    })
    .await;
    let asked = Instant::now();
    let answered = second.chat(&route, &ask(), &[], None).await.expect("the second call answers");
    assert_eq!(answered.answer.content, "fine");
    let first = call.await.unwrap().expect("the first call answers on its retry");
    assert_eq!(first.tries.len(), 2);

    let seen = fake.seen();
    assert_eq!(seen.len(), 3, "the 429, then both calls");
    let limited_at = seen[0].at;
    for later in &seen[1..] {
        let after = later.at.duration_since(limited_at);
        assert!(after >= Duration::from_secs(2), "a request {after:?} after the 429");
    }
    assert!(seen[1].at > asked, "the second call waited for the pause, not before it");
    let state = limiter.state(&route.targets[0]).await.unwrap();
    assert_eq!((state.pauses, state.in_flight), (1, 0), "{state:?}");
    // Nothing was answered before the 429: no rate is guessed from nothing.
    assert_eq!((state.rate_per_s, state.cuts), (None, 0), "{state:?}");
}

#[tokio::test]
async fn a_429_sets_the_rate_under_what_the_provider_was_answering() {
    let env = TestEnv::new().await;
    // About 20 answers a second from one caller, then a 429.
    let mut script = vec![Scripted::text("fine"); 30];
    script.push(Scripted::Status { code: 429, retry_after: Some("1".into()) });
    let fake = FakeLlm::start(script, Scripted::text("fine"), None).await;
    fake.set_delay(Duration::from_millis(50));
    let gateway = gateway(&env).await;
    let route = route(&fake, Limits::default());
    for _ in 0..31 {
        gateway.chat(&route, &ask(), &[], None).await.expect("answered, the last on its retry");
    }
    let limiter = Limiter::new(
        redis::Client::open(redis_url()).unwrap().get_connection_manager().await.unwrap(),
        &env.namespace,
    );
    let state = limiter.state(&route.targets[0]).await.unwrap();
    let answered_per_s = 1_000.0 / 50.0;
    let rate = state.rate_per_s.expect("a rate learned from the 429");
    assert!(rate < answered_per_s && rate > answered_per_s / 2.0, "{state:?}");
    assert_eq!(state.cuts, 1, "{state:?}");
}

#[tokio::test]
async fn a_concurrency_limit_holds_for_every_gateway_together() {
    let env = TestEnv::new().await;
    let fake = FakeLlm::start(vec![], Scripted::text("slow"), None).await;
    fake.set_delay(Duration::from_millis(300));
    let limits = Limits { concurrency: Some(2), ..Limits::default() };
    let route = route(&fake, limits);
    let mut calls = Vec::new();
    for _ in 0..8 {
        let gateway = gateway(&env).await;
        let route = route.clone();
        calls.push(tokio::spawn(async move { gateway.chat(&route, &ask(), &[], None).await }));
    }
    for call in calls {
        call.await.unwrap().expect("every call answers in turn");
    }
    assert_eq!(fake.seen().len(), 8);
    assert_eq!(fake.most_in_flight(), 2, "at most two at once, and the limit was used");
}

#[tokio::test]
async fn an_rpm_limit_spaces_the_requests_of_every_gateway() {
    let env = TestEnv::new().await;
    let fake = FakeLlm::start(vec![], Scripted::text("paced"), None).await;
    // 120 a minute: one every 500 ms, however many callers ask at once.
    let route = route(&fake, Limits { rpm: Some(120), ..Limits::default() });
    let (one, two) = (gateway(&env).await, gateway(&env).await);
    let mut calls = Vec::new();
    for n in 0..6 {
        let gateway = if n % 2 == 0 { one.clone() } else { two.clone() };
        let route = route.clone();
        calls.push(tokio::spawn(async move { gateway.chat(&route, &ask(), &[], None).await }));
    }
    for call in calls {
        call.await.unwrap().expect("every call answers");
    }
    let mut at: Vec<Instant> = fake.seen().iter().map(|seen| seen.at).collect();
    at.sort();
    let span = at[5].duration_since(at[0]);
    assert!(span >= Duration::from_millis(2_400), "six requests at 2/s span 2.5 s, not {span:?}");
}

#[tokio::test]
async fn a_cancelled_call_hands_its_concurrency_place_back() {
    let env = TestEnv::new().await;
    let fake = FakeLlm::start(vec![], Scripted::text("late"), None).await;
    fake.set_delay(Duration::from_secs(30));
    let route = route(&fake, Limits { concurrency: Some(1), ..Limits::default() });
    let gateway = gateway(&env).await;
    let call = {
        let (gateway, route) = (gateway.clone(), route.clone());
        tokio::spawn(async move { gateway.chat(&route, &ask(), &[], None).await })
    };
    wait_until("the call to reach the provider", Duration::from_secs(10), || async {
        fake.most_in_flight() == 1
    })
    .await;
    let limiter = Limiter::new(
        redis::Client::open(redis_url()).unwrap().get_connection_manager().await.unwrap(),
        &env.namespace,
    );
    assert_eq!(limiter.state(&route.targets[0]).await.unwrap().in_flight, 1);
    // A mission's timeout, a client gone: the call's future is dropped mid-flight.
    call.abort();
    wait_until("the place to be handed back", Duration::from_secs(5), || async {
        limiter.state(&route.targets[0]).await.unwrap().in_flight == 0
    })
    .await;
}
