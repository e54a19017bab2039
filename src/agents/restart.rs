//! The restart policy of a built-in agent (OTP-style): when it dies (its run panics, or it reports
//! itself down), it is restarted after a backoff, from a fresh instance; past its restart
//! intensity (more than `restarts_max` deaths within `window`) it stays down with the reason,
//! until an operator starts it again. While down, or stopped, it takes no missions: workers
//! ask [`Agent::available`] before each claim, so the missions of its kind run elsewhere.
//!
//! This type is pure in-memory state; what happens to it (restarted, failed) is queued as
//! [`LifeEvent`]s for the host (`crate::agents::host`), which records them as commands on the
//! agent's stream, heartbeats it and carries out the controls it receives.

use std::collections::{BTreeSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::FutureExt;
use futures::future::BoxFuture;

use crate::backoff::Backoff;
use crate::missions::agent::{Agent, Failure, Outcome, Task};

/// At most `restarts_max` restarts within `window`; each after a backoff.
#[derive(Debug, Clone, Copy)]
pub struct Intensity {
    pub restarts_max: u32,
    pub window: Duration,
    pub backoff: Backoff,
}

impl Default for Intensity {
    fn default() -> Intensity {
        Intensity {
            restarts_max: 3,
            window: Duration::from_secs(60),
            backoff: Backoff { base_ms: 200, max_ms: 10_000 },
        }
    }
}

/// What happened to a supervised agent, for its host to record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LifeEvent {
    Restarted { reason: String },
    Failed { reason: String },
}

/// Life events kept for the host; past this the oldest are dropped (a host that is not
/// running, in a test or a tool, must not make the queue grow).
const EVENTS_MAX: usize = 64;

struct Life {
    current: Arc<dyn Agent>,
    /// What each new instance is made with.
    context: crate::agents::Context,
    /// Which instance `current` is: a death counts only for the instance still current (the
    /// runs in flight on one broken instance die together, and that is one death).
    instance: u64,
    deaths: VecDeque<Instant>,
    /// Dead, to be restarted at this instant, for this reason.
    restart_at: Option<(Instant, String)>,
    failed: Option<String>,
    stopped: bool,
    intensity: Intensity,
    running: BTreeSet<String>,
    events: VecDeque<LifeEvent>,
}

impl Life {
    fn replace(&mut self, factory: fn(&crate::agents::Context) -> Arc<dyn Agent>) {
        self.current = factory(&self.context);
        self.instance += 1;
    }
}

/// The state shared by the agent (in the worker's map) and its host.
pub struct Restarting {
    pub kind: String,
    pub implementation: String,
    factory: fn(&crate::agents::Context) -> Arc<dyn Agent>,
    life: Mutex<Life>,
}

impl Restarting {
    /// The agent `kind`, run by `implementation`, each instance made by `factory` with
    /// `context` (the first one now).
    pub fn new(
        kind: &str,
        implementation: &str,
        factory: fn(&crate::agents::Context) -> Arc<dyn Agent>,
        context: crate::agents::Context,
        intensity: Intensity,
    ) -> Arc<Restarting> {
        let life = Life {
            current: factory(&context),
            context,
            instance: 0,
            deaths: VecDeque::new(),
            restart_at: None,
            failed: None,
            stopped: false,
            intensity,
            running: BTreeSet::new(),
            events: VecDeque::new(),
        };
        Arc::new(Restarting {
            kind: kind.to_owned(),
            implementation: implementation.to_owned(),
            factory,
            life: Mutex::new(life),
        })
    }

    fn life(&self) -> std::sync::MutexGuard<'_, Life> {
        self.life.lock().expect("not poisoned")
    }

    /// The life events since the last call, oldest first.
    pub fn take_events(&self) -> Vec<LifeEvent> {
        self.life().events.drain(..).collect()
    }

    /// Missions it runs now.
    pub fn running(&self) -> Vec<String> {
        self.life().running.iter().cloned().collect()
    }

    /// `"stopped"`, `"failed"`, `"restarting"`, `"busy"` or `"idle"`.
    pub fn status(&self) -> &'static str {
        let life = self.life();
        match (&life.failed, life.stopped, &life.restart_at, life.running.is_empty()) {
            (Some(_), ..) => "failed",
            (_, true, ..) => "stopped",
            (_, _, Some(_), _) => "restarting",
            (.., false) => "busy",
            _ => "idle",
        }
    }

    pub fn stop(&self) {
        self.life().stopped = true;
    }

    /// Up again, with a clean record of deaths (an operator's start after a failure).
    pub fn start(&self) {
        let mut life = self.life();
        life.stopped = false;
        if life.failed.take().is_some() {
            life.deaths.clear();
            life.replace(self.factory);
        }
    }

    /// A restart asked for from outside: a fresh instance now.
    pub fn restart(&self, reason: &str) {
        let mut life = self.life();
        life.replace(self.factory);
        life.restart_at = None;
        push(&mut life.events, LifeEvent::Restarted { reason: reason.to_owned() });
    }

    /// Marks the agent failed from outside (the log says so, as after a restart of its host).
    pub fn fail(&self, reason: &str) {
        self.life().failed.get_or_insert_with(|| reason.to_owned());
    }

    fn died(&self, instance: u64, reason: String) {
        let mut life = self.life();
        if life.failed.is_some() || life.instance != instance || life.restart_at.is_some() {
            return;
        }
        let now = Instant::now();
        let window = life.intensity.window;
        while life.deaths.front().is_some_and(|at| now.duration_since(*at) > window) {
            life.deaths.pop_front();
        }
        life.deaths.push_back(now);
        let deaths = life.deaths.len() as u32;
        let Intensity { restarts_max, backoff, .. } = life.intensity;
        if deaths > restarts_max {
            let reason = format!(
                "{reason}; died {deaths} times within {} s, past its limit of {restarts_max} restarts",
                window.as_secs()
            );
            tracing::error!(kind = self.kind, %reason, "built-in agent failed; it stays down");
            life.failed = Some(reason.clone());
            life.restart_at = None;
            push(&mut life.events, LifeEvent::Failed { reason });
        } else {
            let wait = Duration::from_millis(backoff.draw(deaths));
            tracing::warn!(kind = self.kind, %reason, ?wait, "built-in agent died; restarting");
            life.restart_at = Some((now + wait, reason));
        }
    }
}

fn push(events: &mut VecDeque<LifeEvent>, event: LifeEvent) {
    if events.len() == EVENTS_MAX {
        events.pop_front();
    }
    events.push_back(event);
}

/// The agent a worker holds: runs the current instance, and reports its deaths.
pub struct RestartingAgent(pub Arc<Restarting>);

impl Agent for RestartingAgent {
    fn run(&self, task: Task) -> BoxFuture<'static, Result<Outcome, Failure>> {
        let shared = self.0.clone();
        let mission_id = task.mission_id.clone();
        let (current, instance) = {
            let mut life = shared.life();
            life.running.insert(mission_id.clone());
            (life.current.clone(), life.instance)
        };
        async move {
            let outcome = std::panic::AssertUnwindSafe(current.run(task)).catch_unwind().await;
            shared.life().running.remove(&mission_id);
            match outcome {
                Ok(Err(failure)) if failure.down => {
                    shared.died(instance, format!("went down: {}", failure.message));
                    Err(failure)
                }
                Ok(outcome) => outcome,
                Err(panic) => {
                    let message = crate::telemetry::panic_message(&*panic)
                        .unwrap_or_else(|| "no message".to_owned());
                    shared.died(instance, format!("panicked: {message}"));
                    Err(Failure::down(format!("the agent panicked: {message}")))
                }
            }
        }
        .boxed()
    }

    /// Up, not stopped; a dead agent whose backoff is over is restarted here, by the first
    /// slot that asks.
    fn available(&self) -> bool {
        let mut life = self.0.life();
        if life.stopped || life.failed.is_some() {
            return false;
        }
        match &life.restart_at {
            Some((at, _)) if Instant::now() < *at => false,
            Some(_) => {
                let (_, reason) = life.restart_at.take().expect("just matched");
                life.replace(self.0.factory);
                push(
                    &mut life.events,
                    LifeEvent::Restarted { reason: format!("after it {reason}") },
                );
                true
            }
            None => true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn echo(_: &crate::agents::Context) -> Arc<dyn Agent> {
        Arc::new(crate::agents::echo::Echo { faults: true })
    }

    fn task(payload: serde_json::Value) -> Task {
        Task::example(payload, 1)
    }

    #[tokio::test]
    async fn a_dead_agent_is_restarted_after_its_backoff_and_fails_past_its_intensity() {
        let intensity = Intensity {
            restarts_max: 2,
            window: Duration::from_secs(60),
            backoff: Backoff { base_ms: 30, max_ms: 30 },
        };
        let shared = Restarting::new("echo", "echo", echo, Default::default(), intensity);
        let agent = RestartingAgent(shared.clone());
        for death in 1..=2 {
            let failure = agent.run(task(json!({ "panic_attempts": 1 }))).await.unwrap_err();
            assert!(failure.down && failure.retryable, "{failure:?}");
            assert!(!agent.available(), "down during its backoff ({death})");
            assert_eq!(shared.status(), "restarting");
            let deadline = Instant::now() + Duration::from_secs(5);
            while !agent.available() {
                assert!(Instant::now() < deadline, "never restarted");
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            let events = shared.take_events();
            assert!(
                matches!(&events[..], [LifeEvent::Restarted { reason }] if reason.contains("panicked")),
                "{events:?}"
            );
        }
        // The third death in the window is one too many: down for good, with the reason.
        let failure = agent.run(task(json!({ "exit_attempts": 1 }))).await.unwrap_err();
        assert!(failure.down);
        assert!(!agent.available());
        assert_eq!(shared.status(), "failed");
        let events = shared.take_events();
        assert!(
            matches!(&events[..], [LifeEvent::Failed { reason }] if reason.contains("went down") && reason.contains("limit of 2")),
            "{events:?}"
        );
        // An operator's start brings it back with a clean record.
        shared.start();
        assert!(agent.available());
        let Outcome::Done(answer) = agent.run(task(json!({ "x": 1 }))).await.unwrap() else {
            panic!("no answer")
        };
        assert_eq!(answer["echo"], json!({ "x": 1 }));
    }

    #[tokio::test]
    async fn runs_dying_together_on_one_instance_are_one_death() {
        let intensity = Intensity {
            restarts_max: 1,
            window: Duration::from_secs(60),
            backoff: Backoff { base_ms: 10, max_ms: 10 },
        };
        let shared = Restarting::new("echo", "echo", echo, Default::default(), intensity);
        let agent = RestartingAgent(shared.clone());
        let runs: Vec<_> = (0..4).map(|_| agent.run(task(json!({ "exit_attempts": 1 })))).collect();
        for outcome in futures::future::join_all(runs).await {
            assert!(outcome.unwrap_err().down);
        }
        assert_eq!(shared.status(), "restarting", "four runs, one instance, one death");
    }

    #[tokio::test]
    async fn a_stopped_agent_is_not_available_until_started() {
        let shared = Restarting::new("echo", "echo", echo, Default::default(), Default::default());
        let agent = RestartingAgent(shared.clone());
        shared.stop();
        assert!(!agent.available());
        assert_eq!(shared.status(), "stopped");
        shared.start();
        assert!(agent.available());
    }
}
