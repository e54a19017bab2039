//! Where a step's answer comes from: played back from the record while the record holds the
//! step, then, live, asked of the model through the gateway (streaming its text). In check
//! mode nothing is asked: a played-back step is first held against today's request, and past
//! the record the run ends as the record did, or diverges (both decided in [`super::check`]).
//! What the answer then leads to is [`super::act`]'s business.

use std::ops::ControlFlow;

use domain::mission::LlmCall;

use super::check;
use super::run::{Run, Step};
use super::{Ended, Mode};
use crate::agents::plain::{chat, failure};
use crate::agents::record::{Record, RecordedAnswer};
use crate::llm::ChatAnswer;
use crate::missions::agent::Failure;

/// What the record holds of one step.
#[derive(Debug, PartialEq)]
pub(super) enum Played<'r> {
    /// The step's model call, with its answer read back whole.
    Answer(&'r RecordedAnswer, &'r ChatAnswer),
    /// The step was taken, but its answer cannot be read back; says why.
    Unreadable(&'r str),
    /// The record ends before this step.
    Past,
}

/// What `record` holds of step `step` (1 for the first).
pub(super) fn played(record: &Record, step: u32) -> Played<'_> {
    let Some(recorded) = record.answers.get(step as usize - 1) else { return Played::Past };
    match &recorded.answer {
        Ok(answer) => Played::Answer(recorded, answer),
        Err(why) => Played::Unreadable(why),
    }
}

/// Step `step`'s answer, or how the run ends before one is given.
pub(super) async fn next(
    run: &mut Run<'_>,
    step: u32,
) -> Result<ControlFlow<Ended, ChatAnswer>, Failure> {
    match (played(run.record, step), run.mode) {
        (Played::Answer(recorded, answer), mode) => {
            let redactor = &run.agent.calls.gateway.redactor;
            if mode == Mode::Check
                && let Some(divergence) =
                    check::request(step, &recorded.call.request, &run.ask.messages, redactor)
            {
                return Ok(ControlFlow::Break(Ended::Diverged(divergence)));
            }
            play_back(run, step, recorded, answer).await.map(ControlFlow::Continue)
        }
        (Played::Unreadable(why), Mode::Live) => {
            Err(Failure::permanent(format!("cannot go on from the record at step {step}: {why}")))
        }
        (Played::Unreadable(why), Mode::Check) => {
            Ok(ControlFlow::Break(Ended::Diverged(check::unreadable(step, why))))
        }
        (Played::Past, Mode::Check) => {
            Ok(ControlFlow::Break(check::past_record(step, run.record, &run.ask.messages)))
        }
        (Played::Past, Mode::Live) => ask_model(run).await.map(ControlFlow::Continue),
    }
}

/// A recorded answer given again. A step copied from another run (a fork's origin) is
/// recorded in this mission's history, marked replayed, the first time it is played back.
async fn play_back(
    run: &mut Run<'_>,
    step: u32,
    recorded: &RecordedAnswer,
    answer: &ChatAnswer,
) -> Result<ChatAnswer, Failure> {
    if run.record.copied && !run.record.here.contains(&(step, None)) {
        let call = LlmCall { replayed: true, ..recorded.call.clone() };
        run.record_step(Step::Llm(call)).await?;
    }
    run.tally.played_back(run.record, recorded, &answer.usage);
    Ok(answer.clone())
}

/// The model's answer to the conversation so far, through the gateway (which records it).
async fn ask_model(run: &mut Run<'_>) -> Result<ChatAnswer, Failure> {
    let answered = chat(&run.agent.calls, &run.caller, &run.ask, run.publisher.as_mut())
        .await
        .map_err(failure)?;
    run.tally.asked(&answered);
    Ok(answered.answer)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agents::agent_loop::run::Tally;
    use crate::agents::agent_loop::tests::{answer, llm_call, recorded};
    use crate::llm::Usage;

    #[test]
    fn a_record_gives_its_readable_steps_then_says_why_one_is_unreadable_then_ends() {
        // Given a record whose first answer was kept whole and whose second was cut.
        let record = Record {
            answers: vec![
                recorded(&[], answer("looking", &[])),
                RecordedAnswer { call: llm_call(&[]), answer: Err("cut".into()) },
            ],
            ..Record::default()
        };

        // When each step is looked up, then the first is played back, the second cannot be,
        // and there is no third.
        assert_eq!(played(&record, 1), Played::Answer(&record.answers[0], &answer("looking", &[])));
        assert_eq!(played(&record, 2), Played::Unreadable("cut"));
        assert_eq!(played(&record, 3), Played::Past);
    }

    #[test]
    fn a_played_back_step_counts_its_cost_unless_it_was_copied_from_another_run() {
        // Given a recorded step that cost 0.5 USD and 10 + 5 tokens, from a provider.
        let mut step = recorded(&[], answer("done", &[]));
        step.call.cost_usd = 0.5;
        step.call.provider = "anthropic".into();
        let usage = Usage::reported(10, 5);
        let own = Record::default();
        let copied = Record { copied: true, ..Record::default() };

        // When it is played back from the mission's own record, and from a copied one.
        let (mut from_own, mut from_copy) = (Tally::default(), Tally::default());
        from_own.played_back(&own, &step, &usage);
        from_copy.played_back(&copied, &step, &usage);

        // Then only the own one is counted, and both name who answered.
        assert_eq!(from_own.cost_usd, 0.5);
        assert_eq!(from_own.usage, usage);
        assert_eq!(from_copy.cost_usd, 0.0);
        assert_eq!(from_copy.usage, Usage::default());
        assert_eq!(from_copy.provider, "anthropic");
    }
}
