//! Replay and fork of a recorded run (`brain missions replay`, `brain missions fork`, and
//! their routes).
//!
//! A replay plays a finished mission's attempt back through today's agent loop (its prompt
//! from `BRAIN_AGENT_PROMPTS` or the build, its tools from the process's settings) in
//! [`Mode::Check`](crate::agents::agent_loop::Mode::Check): the recorded answers stand in for
//! the model and the recorded results for the tools, nothing is called and nothing is
//! written, and it reports either that the code decides as it did then or the first step
//! where it does not. A fork enqueues a new mission that plays the first steps of a run back
//! and goes on live from there; the fork and the origin name each other in their histories
//! (`forked_from` in the fork's spec, `MissionForked` in the origin's).

use domain::mission::{ForkLink, Mission, MissionCommand, MissionSpec};
use domain::{EventMetadata, StreamId};
use serde::Serialize;
use serde_json::Value;

use crate::agents::agent_loop::{Divergence, Ended};
use crate::agents::record::{self, Record};
use crate::agents::{BuiltinSettings, Context, Implementation};
use crate::eventlog::command::{self, CommandError, Create};
use crate::eventlog::store::EventStore;
use crate::missions::agent::{Failure, Task};

/// What a replay found.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct ReplayReport {
    pub mission_id: String,
    pub attempt: u32,
    /// The agent kind, and the built-in agent whose code was played back.
    pub agent: String,
    pub implementation: String,
    /// Model calls in the record.
    pub steps: u32,
    pub tool_calls: u32,
    /// `identical` or `diverged`.
    pub verdict: String,
    #[schema(value_type = Option<Object>)]
    pub divergence: Option<Divergence>,
}

/// Why a replay or a fork cannot be made.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error("mission {0} does not exist")]
    NotFound(String),
    /// The mission, the attempt or the step asked for cannot be replayed; says why.
    #[error("{0}")]
    Refused(String),
    #[error("{0}")]
    Store(String),
    /// The fork's append was refused or failed.
    #[error(transparent)]
    Command(#[from] CommandError<domain::mission::MissionError>),
}

/// The built-in agent that runs kind `kind` here (per the worker agents of `settings`, else
/// the one named like the kind), if it is one that thinks in steps.
pub fn implementation_of(settings: &BuiltinSettings, kind: &str) -> Option<Implementation> {
    let implementation =
        settings.worker_agents.get(kind).or_else(|| Implementation::parse(kind))?;
    implementation.thinks().then_some(implementation)
}

async fn load(
    store: &EventStore,
    mission_id: &str,
) -> Result<(Mission, Vec<domain::RecordedEvent>), ReplayError> {
    let (mission, events) = record::history(store, mission_id).await.map_err(ReplayError::Store)?;
    if mission.spec.is_none() {
        return Err(ReplayError::NotFound(mission_id.to_owned()));
    }
    Ok((mission, events))
}

/// The attempt asked for, or the mission's last one; and its record.
fn attempt_record(
    events: &[domain::RecordedEvent],
    attempt: Option<u32>,
) -> Result<(u32, Record), ReplayError> {
    let attempt = attempt.or(record::last_attempt(events)).unwrap_or(1);
    let record = Record::of_attempt(events, attempt).map_err(ReplayError::Store)?;
    if record.answers.is_empty() {
        return Err(ReplayError::Refused(format!(
            "attempt {attempt} made no model call that answered: there is nothing to replay"
        )));
    }
    Ok((attempt, record))
}

/// The spec of `mission`, which must have finished for its run to be `used` (replayed,
/// forked).
fn finished_spec(
    mission: &Mission,
    mission_id: &str,
    used: &str,
) -> Result<MissionSpec, ReplayError> {
    if !mission.status.is_finished() {
        return Err(ReplayError::Refused(format!(
            "mission {mission_id} is {}: only a finished run can be {used}",
            mission.status
        )));
    }
    mission.spec.clone().ok_or_else(|| ReplayError::NotFound(mission_id.to_owned()))
}

/// Replays attempt `attempt` (default: the last) of the finished mission `mission_id` with
/// the agents `context` makes.
pub async fn replay(
    store: &EventStore,
    context: &Context,
    mission_id: &str,
    attempt: Option<u32>,
) -> Result<ReplayReport, ReplayError> {
    let (mission, events) = load(store, mission_id).await?;
    let spec = finished_spec(&mission, mission_id, "replayed")?;
    let Some(implementation) = implementation_of(&context.builtin, &spec.agent) else {
        return Err(ReplayError::Refused(format!(
            "agent kind {} is not served by a built-in agent that thinks in steps here",
            spec.agent
        )));
    };
    let (attempt, record) = attempt_record(&events, attempt)?;
    let agent = crate::agents::thinking_agent(context, implementation)
        .ok_or_else(|| ReplayError::Refused(format!("{implementation} does not think in steps")))?;
    let ended = agent.check(&replay_task(mission_id, &spec, attempt, &record), &record).await;
    let divergence = divergence(ended, &mission, attempt, &record);
    Ok(ReplayReport {
        mission_id: mission_id.to_owned(),
        attempt,
        agent: spec.agent,
        implementation: implementation.to_string(),
        steps: record.answers.len() as u32,
        tool_calls: record.tools.len() as u32,
        verdict: if divergence.is_some() { "diverged" } else { "identical" }.into(),
        divergence,
    })
}

/// The task attempt `attempt` of a mission ran, as a replay plays it back: with the record's
/// fan-out so far, held by no worker.
fn replay_task(mission_id: &str, spec: &MissionSpec, attempt: u32, record: &Record) -> Task {
    Task {
        mission_id: mission_id.to_owned(),
        name: spec.name.clone(),
        description: spec.description.clone(),
        agent: spec.agent.clone(),
        payload: spec.payload.clone(),
        attempt,
        worker_id: "replay".into(),
        budget: spec.budget,
        budget_scope: mission_id.to_owned(),
        playback: true,
        children_spawned: record.children_spawned,
        depth: record.depth,
    }
}

/// How a check of attempt `attempt` of `mission` ended, held against how the run ended then:
/// `None` when today's code decided every step as the record shows.
fn divergence(
    ended: Result<Ended, Failure>,
    mission: &Mission,
    attempt: u32,
    record: &Record,
) -> Option<Divergence> {
    match ended {
        Ok(Ended::Answered(_)) => None,
        Ok(Ended::Diverged(divergence)) => Some(divergence),
        Ok(Ended::Wait { step, children, .. }) => Some(Divergence {
            step,
            what: "sub-missions the recorded run did not ask for".into(),
            recorded: Value::Null,
            now: serde_json::json!(children.len()),
        }),
        // The code now stops the run the way it stopped then (a limit): the same decision.
        Err(failure)
            if mission
                .errors
                .iter()
                .any(|error| error.attempt == attempt && error.error == failure.message) =>
        {
            None
        }
        Err(failure) => Some(Divergence {
            step: record.answers.len() as u32,
            what: "the run now fails".into(),
            recorded: serde_json::json!(mission.status.to_string()),
            now: serde_json::json!(failure.message),
        }),
    }
}

/// Whether a fork may play back the first `at_step` steps of `record` (attempt `attempt`):
/// steps it took, each answer recorded whole.
fn check_fork_step(record: &Record, attempt: u32, at_step: u32) -> Result<(), ReplayError> {
    let steps = record.answers.len() as u32;
    if at_step == 0 || at_step > steps {
        return Err(ReplayError::Refused(format!(
            "at_step: must be between 1 and {steps}, the steps attempt {attempt} took"
        )));
    }
    let unreadable = record
        .answers
        .iter()
        .take(at_step as usize)
        .enumerate()
        .find_map(|(n, answer)| answer.answer.as_ref().err().map(|why| (n + 1, why)));
    match unreadable {
        Some((step, why)) => {
            Err(ReplayError::Refused(format!("step {step} cannot be played back: {why}")))
        }
        None => Ok(()),
    }
}

/// Enqueues a fork of attempt `attempt` (default: the last) of `mission_id` that plays its
/// first `at_step` steps back and runs live from there. Returns the fork's id.
pub async fn fork(
    store: &EventStore,
    mission_id: &str,
    at_step: u32,
    attempt: Option<u32>,
    metadata: EventMetadata,
    now_ms: i64,
) -> Result<String, ReplayError> {
    let (mission, events) = load(store, mission_id).await?;
    let origin = finished_spec(&mission, mission_id, "forked")?;
    let (attempt, record) = attempt_record(&events, attempt)?;
    check_fork_step(&record, attempt, at_step)?;
    let spec = MissionSpec {
        parent: None,
        not_before_ms: None,
        forked_from: Some(ForkLink { mission_id: mission_id.to_owned(), attempt, steps: at_step }),
        copied_from: None,
        ..origin
    };
    let fork_id = StreamId::from(uuid::Uuid::now_v7());
    let mut fork_metadata = metadata.clone();
    fork_metadata.command_id = Some(uuid::Uuid::now_v7());
    let creation = Create {
        stream_id: fork_id.clone(),
        metadata: fork_metadata,
        command: MissionCommand::Enqueue { spec, now_ms },
    };
    let decided = command::decide_creations::<Mission>(vec![creation])
        .map_err(|mut refusals| ReplayError::Refused(refusals.swap_remove(0).1.to_string()))?;
    let by = metadata.actor.clone();
    let record_fork = || MissionCommand::RecordFork {
        fork_id: fork_id.to_string(),
        attempt,
        steps: at_step,
        by: by.clone(),
        now_ms,
    };
    let origin_id =
        StreamId::parse(mission_id).map_err(|error| ReplayError::Refused(error.to_string()))?;
    command::execute_with_creations(store, &origin_id, &metadata, None, record_fork, &decided)
        .await?;
    Ok(fork_id.to_string())
}

/// `brain missions ...`: the debugging an event log makes possible, run against the store
/// directly (no server needed), with this build's agent code.
#[derive(Debug, clap::Subcommand)]
#[expect(clippy::large_enum_variant, reason = "parsed once at start-up, never moved around")]
pub enum MissionsCli {
    /// Replay a finished mission's run against its record: no model call, no tool run, no
    /// write. Prints `identical`, or the first step where today's code decides otherwise;
    /// exits 2 when it diverged.
    Replay {
        #[command(flatten)]
        services: crate::config::Services,
        #[command(flatten)]
        builtin: BuiltinSettings,
        #[command(flatten)]
        llm: crate::config::llm::LlmSettings,
        /// The mission's id.
        mission_id: String,
        /// The attempt to replay (default: the last).
        #[arg(long)]
        attempt: Option<u32>,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Enqueue a new mission that plays back the first N steps of a run and runs live from
    /// there; prints its id. The fork and the original name each other in their histories.
    Fork {
        #[command(flatten)]
        services: crate::config::Services,
        mission_id: String,
        /// Steps played back from the record.
        #[arg(long)]
        at_step: u32,
        #[arg(long)]
        attempt: Option<u32>,
    },
}

/// Exit status of a replay that found a divergence.
pub const DIVERGED_EXIT: i32 = 2;

impl MissionsCli {
    pub async fn run(self) -> anyhow::Result<()> {
        let services = match &self {
            MissionsCli::Replay { services, .. } | MissionsCli::Fork { services, .. } => {
                services.clone()
            }
        };
        let pool = crate::eventlog::db::connect(&services.database_url, 2).await?;
        let (store, committer) =
            EventStore::start(pool, services.namespace.as_str(), Default::default());
        let outcome = match self {
            MissionsCli::Replay { mission_id, attempt, json, builtin, llm, .. } => {
                let context = Context::unconnected(builtin, llm);
                let report = replay(&store, &context, &mission_id, attempt).await?;
                if json {
                    println!("{}", serde_json::to_string_pretty(&report)?);
                } else {
                    print!("{}", describe(&report));
                }
                Ok(report.divergence.is_some())
            }
            MissionsCli::Fork { mission_id, at_step, attempt, .. } => {
                let metadata = EventMetadata::new("cli", time::OffsetDateTime::now_utc());
                let now_ms = crate::clock::now_ms();
                let fork_id = fork(&store, &mission_id, at_step, attempt, metadata, now_ms).await?;
                println!("{fork_id}");
                Ok(false)
            }
        };
        drop(store);
        committer.await?;
        match outcome {
            Ok(true) => std::process::exit(DIVERGED_EXIT),
            Ok(false) => Ok(()),
            Err(error) => Err(error),
        }
    }
}

/// A report as a person reads it.
pub fn describe(report: &ReplayReport) -> String {
    let mut text = format!(
        "mission {} attempt {} ({} agent, played back by {}): {} model calls, {} tool calls recorded\n",
        report.mission_id,
        report.attempt,
        report.agent,
        report.implementation,
        report.steps,
        report.tool_calls
    );
    match &report.divergence {
        None => text.push_str("identical: today's code decides every step as recorded\n"),
        Some(divergence) => {
            text.push_str(&format!("diverged at step {}: {}\n", divergence.step, divergence.what));
            text.push_str(&format!("  recorded: {}\n", divergence.recorded));
            text.push_str(&format!("  now:      {}\n", divergence.now));
        }
    }
    text
}

#[cfg(test)]
mod tests {
    use domain::mission::{AttemptError, MissionStatus};
    use serde_json::json;

    use super::*;
    use crate::agents::record::RecordedAnswer;
    use crate::llm::ChatAnswer;
    use crate::missions::agent::ChildRequest;

    /// A mission whose attempt `attempt` failed with `error`.
    fn failed(attempt: u32, error: &str) -> Mission {
        let error = AttemptError { run: 1, attempt, error: error.into(), at_ms: 0 };
        Mission { status: MissionStatus::Failed, errors: vec![error], ..Mission::default() }
    }

    /// A recorded step whose answer reads back as `answer`.
    fn step(answer: Result<ChatAnswer, String>) -> RecordedAnswer {
        let call = serde_json::from_value(json!({
            "route": "default", "provider": "offline", "model": "m", "tries": 1,
            "input_tokens": 1, "output_tokens": 1, "cost_usd": 0.0, "latency_ms": 1,
            "outcome": "ok"
        }))
        .expect("an LLM call record");
        RecordedAnswer { call, answer }
    }

    #[test]
    fn a_check_that_stops_as_the_recorded_attempt_did_is_identical_and_a_new_failure_diverges() {
        // Given attempt 2 of a mission that failed at its step limit, after three steps.
        let mission = failed(2, "step limit: 3 model calls without a final answer");
        let record =
            Record { answers: vec![step(Ok(ChatAnswer::default())); 3], ..Record::default() };

        // When today's code stops it with the same failure, then it decided the same.
        let same = Failure::permanent("step limit: 3 model calls without a final answer");
        assert_eq!(divergence(Err(same.clone()), &mission, 2, &record), None);

        // When the failure is another attempt's, or another failure, then the run diverged
        // after its last recorded step.
        assert!(divergence(Err(same), &mission, 1, &record).is_some());
        let other = Failure::permanent("tool-call limit: more than 100 tool calls in one attempt");
        let diverged = divergence(Err(other), &mission, 2, &record).unwrap();
        assert_eq!((diverged.step, diverged.what.as_str()), (3, "the run now fails"));
        assert_eq!(diverged.recorded, json!("failed"));
    }

    #[test]
    fn a_check_that_answers_is_identical_and_one_that_asks_for_children_diverges() {
        // Given a completed mission's record.
        let (mission, record) = (Mission::default(), Record::default());

        // When the check answers, then nothing differs.
        let answered = Ok(Ended::Answered(Value::Null));
        assert_eq!(divergence(answered, &mission, 1, &record), None);

        // When it asks for sub-missions the record never shows, then it diverged there.
        let child = ChildRequest { agent: "coder".into(), name: "n".into(), task: "t".into() };
        let wait = Ended::Wait { step: 2, call_id: "c1".into(), children: vec![child; 2] };
        let diverged = divergence(Ok(wait), &mission, 1, &record).unwrap();
        assert_eq!((diverged.step, diverged.now.clone()), (2, json!(2)));
        assert_eq!(diverged.what, "sub-missions the recorded run did not ask for");
    }

    #[test]
    fn a_fork_plays_back_only_steps_that_were_taken_and_recorded_whole() {
        // Given a record of three steps whose third answer was cut to the record's bound.
        let mut answers = vec![step(Ok(ChatAnswer::default())); 2];
        answers.push(step(Err("the answer was cut to the record's bound".into())));
        let record = Record { answers, ..Record::default() };
        let refusal = |at_step| match check_fork_step(&record, 1, at_step) {
            Err(ReplayError::Refused(why)) => why,
            other => panic!("a fork at step {at_step} must be refused: {other:?}"),
        };

        // When forks are asked at each step, then the first two may be played back.
        assert!(check_fork_step(&record, 1, 1).is_ok());
        assert!(check_fork_step(&record, 1, 2).is_ok());

        // And step 3 is refused with why, as are steps the attempt did not take.
        assert_eq!(
            refusal(3),
            "step 3 cannot be played back: the answer was cut to the record's bound"
        );
        assert_eq!(refusal(0), "at_step: must be between 1 and 3, the steps attempt 1 took");
        assert_eq!(refusal(4), refusal(0));
    }
}
