//! LLM budgets on their own, against the real Redis and PostgreSQL, with no gateway and no
//! provider: `setup` gives the budgets of a fresh namespace and database; each test reserves,
//! settles and drops reservations directly and reads what is refused.

use std::time::Duration;

use brain::llm::Reason;
use brain::llm::budget::{Budgets, Scope};
use domain::budget::Budget;
use time::OffsetDateTime;

use crate::support::{TestEnv, redis_url, wait_until};

/// How long a test's holds last: longer than any test.
const HOLD: Duration = Duration::from_secs(600);

struct Bundle {
    env: TestEnv,
}

impl Bundle {
    /// Records a call of `tokens` and `cost_usd` made today in the usage table, as the
    /// projector of recorded calls would.
    async fn spent_today(&self, tokens: i64, cost_usd: f64) {
        sqlx::query(
            "INSERT INTO llm_calls (position, at, mission_id, kind, route, provider, model,
                 input_tokens, output_tokens, cost_usd, latency_ms, outcome)
             VALUES (1, now(), NULL, 'coder', 'default', 'openai', 'm', $1, 0, $2, 5, 'ok')",
        )
        .bind(tokens)
        .bind(cost_usd)
        .execute(&self.env.pool)
        .await
        .expect("record a call");
    }
}

async fn setup() -> (Budgets, Bundle) {
    let env = TestEnv::new().await;
    let redis = redis::Client::open(redis_url()).unwrap().get_connection_manager().await.unwrap();
    let budgets = Budgets::new(redis, &env.namespace, env.pool.clone());
    (budgets, Bundle { env })
}

fn today(tokens_max: Option<u64>, cost_usd_max: Option<f64>) -> Vec<Scope> {
    let day = OffsetDateTime::now_utc().date();
    vec![Scope::Day { day, budget: Budget { tokens_max, cost_usd_max } }]
}

#[tokio::test]
async fn a_call_that_would_pass_its_budget_with_what_is_in_flight_is_refused_naming_it() {
    // Given a daily budget of 100 tokens, 60 of them held by a call in flight.
    let (budgets, _bundle) = setup().await;
    let scopes = today(Some(100), None);
    let held = budgets.reserve(&scopes, 60, 0.0, HOLD).await.unwrap().expect("a reservation");

    // A second call of 60 would pass it: refused, naming the budget and what is held.
    let refused = budgets.reserve(&scopes, 60, 0.0, HOLD).await.unwrap_err();
    assert_eq!(refused.reason, Reason::BudgetExceeded);
    assert!(!refused.retryable(), "a budget refusal is not retried");
    assert!(refused.message.starts_with("the daily budget ("), "{refused}");
    assert!(refused.message.contains("60 held by calls in flight"), "{refused}");

    // One that fits goes through.
    let fits = budgets.reserve(&scopes, 40, 0.0, HOLD).await.unwrap().expect("it fits");
    budgets.settle(fits, 40, 0.0).await;
    budgets.settle(held, 60, 0.0).await;
}

#[tokio::test]
async fn settling_replaces_a_calls_hold_by_what_it_really_used() {
    // Given a call reserved at its worst case, 60 of 100, that used 10.
    let (budgets, _bundle) = setup().await;
    let scopes = today(Some(100), None);
    let held = budgets.reserve(&scopes, 60, 0.0, HOLD).await.unwrap().unwrap();
    budgets.settle(held, 10, 0.0).await;

    // 90 are left: a call of 90 fits, then nothing more does.
    let next = budgets.reserve(&scopes, 90, 0.0, HOLD).await.unwrap().expect("90 left");
    let refused = budgets.reserve(&scopes, 1, 0.0, HOLD).await.unwrap_err();
    assert!(refused.message.contains("10 tokens spent, 90 held"), "{refused}");
    budgets.settle(next, 0, 0.0).await;
}

#[tokio::test]
async fn a_dropped_reservation_gives_its_hold_back() {
    // Given a call cancelled while it held the whole budget.
    let (budgets, _bundle) = setup().await;
    let scopes = today(Some(100), None);
    let held = budgets.reserve(&scopes, 100, 0.0, HOLD).await.unwrap().unwrap();
    drop(held);

    // Its hold is released without spending anything.
    wait_until("the hold to be released", Duration::from_secs(5), || async {
        match budgets.reserve(&scopes, 100, 0.0, HOLD).await {
            Ok(reservation) => {
                budgets.settle(reservation.unwrap(), 0, 0.0).await;
                true
            }
            Err(_) => false,
        }
    })
    .await;
}

#[tokio::test]
async fn a_budget_redis_does_not_hold_starts_from_what_the_log_says_was_spent() {
    // Given calls recorded today, and no counter in Redis (a first call, or Redis lost it).
    let (budgets, bundle) = setup().await;
    bundle.spent_today(90, 0.9).await;

    // The counters are seeded from the usage table, tokens and dollars alike.
    let refused = budgets.reserve(&today(Some(100), None), 20, 0.0, HOLD).await.unwrap_err();
    assert!(refused.message.contains("90 tokens spent"), "{refused}");
    let refused = budgets.reserve(&today(None, Some(1.0)), 0, 0.2, HOLD).await.unwrap_err();
    assert!(refused.message.contains("$0.900000 spent"), "{refused}");
    let fits = budgets.reserve(&today(Some(100), None), 10, 0.0, HOLD).await.unwrap().unwrap();
    budgets.settle(fits, 10, 0.0).await;
}

#[tokio::test]
async fn concurrent_calls_cannot_overspend_a_budget() {
    // Given a budget of 100 tokens and twenty calls of 10 asking at once.
    let (budgets, _bundle) = setup().await;
    let scopes = today(Some(100), None);
    let asks = (0..20).map(|_| budgets.reserve(&scopes, 10, 0.0, HOLD));
    let answers = futures::future::join_all(asks).await;

    // Exactly ten get through; the others are refused.
    let (granted, refused): (Vec<_>, Vec<_>) = answers.into_iter().partition(Result::is_ok);
    assert_eq!((granted.len(), refused.len()), (10, 10));
    for reservation in granted {
        budgets.settle(reservation.unwrap().unwrap(), 10, 0.0).await;
    }
}

#[tokio::test]
async fn a_call_under_no_budget_reserves_nothing() {
    let (budgets, _bundle) = setup().await;
    assert!(budgets.reserve(&[], 1_000_000, 100.0, HOLD).await.unwrap().is_none());
}
