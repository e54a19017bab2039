//! `echo`: answers with the mission's payload. It exists to exercise the whole mission path
//! (tests, benchmarks, demos) without an LLM, and its payload can ask it to misbehave:
//!
//! | payload field | effect |
//! |---|---|
//! | `delay_ms` | wait this long before answering (at most an hour) |
//! | `fail_attempts` | fail attempts 1 to N with a retryable error |
//! | `fail_permanently` | fail with an error that is not worth retrying |
//! | `hang_attempts` | never answer on attempts 1 to N (until the worker gives up) |
//! | `answer_bytes` | answer with a string of this many bytes instead (at most 16 MiB) |
//! | `answer_nul` | answer with a string holding a NUL character (U+0000) |
//! | `error_nul` | fail once, retryably, with a message holding a NUL character |
//! | `panic_attempts` | panic on attempts 1 to N (the agent dies: its host restarts it) |
//! | `exit_attempts` | report itself down on attempts 1 to N, as an agent whose process exited |
//!
//! The failure switches ([`FAULTS`]: failing, hanging, dying) are for tests and demos of
//! retries and restarts. In a default serve anyone who may enqueue could use them to hold
//! slots or kill the agent for every mission of its kind, so echo obeys them only where its
//! process allows it (`BRAIN_ECHO_FAULTS`); otherwise such a mission fails alone,
//! permanently, saying why.

use std::time::Duration;

use futures::FutureExt;
use futures::future::BoxFuture;
use serde_json::json;

use crate::missions::agent::{Agent, Failure, Outcome, Task};

pub const DELAY_MS_MAX: u64 = 60 * 60 * 1_000;
pub const ANSWER_BYTES_MAX: u64 = 16 * 1024 * 1024;

/// The payload fields that make echo fail, hang or die: obeyed only with `BRAIN_ECHO_FAULTS`.
pub const FAULTS: [&str; 6] = [
    "fail_attempts",
    "fail_permanently",
    "hang_attempts",
    "error_nul",
    "panic_attempts",
    "exit_attempts",
];

pub struct Echo {
    /// Whether it may die on request (`BRAIN_ECHO_FAULTS`).
    pub faults: bool,
}

impl Agent for Echo {
    fn run(&self, task: Task) -> BoxFuture<'static, Result<Outcome, Failure>> {
        let faults = self.faults;
        async move {
            if !faults && let Some(asked) = FAULTS.iter().find(|f| task.payload.get(**f).is_some()) {
                return Err(Failure::permanent(format!(
                    "echo: asked for `{asked}`, a fault this serve does not allow (BRAIN_ECHO_FAULTS)"
                )));
            }
            let field = |name: &str| task.payload.get(name).and_then(serde_json::Value::as_u64);
            let hang_attempts = field("hang_attempts").unwrap_or(0);
            if u64::from(task.attempt) <= hang_attempts {
                std::future::pending::<()>().await;
            }
            if u64::from(task.attempt) <= field("panic_attempts").unwrap_or(0) {
                panic!("echo: asked to panic on attempt {}", task.attempt);
            }
            if u64::from(task.attempt) <= field("exit_attempts").unwrap_or(0) {
                return Err(Failure::down(format!(
                    "echo: asked to exit on attempt {}",
                    task.attempt
                )));
            }
            if let Some(delay_ms) = field("delay_ms") {
                tokio::time::sleep(Duration::from_millis(delay_ms.min(DELAY_MS_MAX))).await;
            }
            if task.payload.get("fail_permanently").and_then(serde_json::Value::as_bool)
                == Some(true)
            {
                let message = "echo: asked to fail permanently".to_owned();
                return Err(Failure::permanent(message));
            }
            if u64::from(task.attempt) <= field("fail_attempts").unwrap_or(0) {
                let message = format!("echo: asked to fail attempt {}", task.attempt);
                return Err(Failure::retryable(message));
            }
            let flag = |name: &str| task.payload.get(name).and_then(serde_json::Value::as_bool);
            if flag("error_nul") == Some(true) && task.attempt == 1 {
                let message = "echo: failed with a \0 in its message".to_owned();
                return Err(Failure::retryable(message));
            }
            if flag("answer_nul") == Some(true) {
                return Ok(json!({ "text": "a NUL \0 here" }));
            }
            if let Some(bytes) = field("answer_bytes") {
                return Ok(json!({ "text": "x".repeat(bytes.min(ANSWER_BYTES_MAX) as usize) }));
            }
            Ok(json!({ "echo": task.payload, "attempt": task.attempt }))
        }
        .map(|ran| ran.map(Outcome::from))
        .boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task(payload: serde_json::Value, attempt: u32) -> Task {
        Task::example(payload, attempt)
    }

    #[tokio::test]
    async fn echo_answers_its_payload_or_fails_as_asked() {
        let payload = json!({ "fail_attempts": 2, "x": 1 });
        let failed = Echo { faults: true }.run(task(payload.clone(), 2)).await.unwrap_err();
        assert_eq!(
            (failed.retryable, failed.message.as_str()),
            (true, "echo: asked to fail attempt 2")
        );
        let answer = Echo { faults: true }.run(task(payload.clone(), 3)).await.unwrap();
        assert_eq!(answer, Outcome::Done(json!({ "echo": payload, "attempt": 3 })));
        let permanent = Echo { faults: true }
            .run(task(json!({ "fail_permanently": true }), 1))
            .await
            .unwrap_err();
        assert!(!permanent.retryable);
    }

    #[tokio::test]
    async fn echo_fails_hangs_or_dies_on_request_only_where_its_serve_allows_it() {
        // Each switch, on an attempt it applies to; `hang_attempts` would never answer.
        for name in FAULTS {
            let payload = json!({ name: 1 });
            let refused = Echo { faults: false }.run(task(payload.clone(), 1)).await.unwrap_err();
            assert!(!refused.retryable && !refused.down, "{payload}: {refused:?}");
            assert!(refused.message.contains(name), "{}", refused.message);
            assert!(refused.message.contains("BRAIN_ECHO_FAULTS"), "{}", refused.message);
        }
        let harmless = json!({ "delay_ms": 1, "answer_nul": true });
        assert!(Echo { faults: false }.run(task(harmless, 1)).await.is_ok());
        let asks = [json!({ "panic_attempts": 1 }), json!({ "exit_attempts": 1 })];
        let down = Echo { faults: true }.run(task(asks[1].clone(), 1)).await.unwrap_err();
        assert!(down.down, "with faults allowed it reports itself down");
    }
}
