//! The committer's decision over one batch, apart from its SQL: which commands repeat an
//! id (in the batch or stored before), which streams to lock, which groups go in at which
//! versions and offsets, which are refused and give their ids back, and what every group is
//! answered. Pure: the SQL steps feed it what the database said and write what it decided,
//! so every rule here is unit- and property-tested without a database.
//!
//! Groups are decided in arrival order, each against the versions the groups before it
//! left, so two commands on one stream behave as if they had come one after the other. A
//! group goes in whole or not at all: a conflict on any of its commands, or a repeat of a
//! command whose own group was refused, refuses all of it. A command whose id was stored by
//! an earlier transaction is answered with that first outcome and does not refuse its group.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::ops::Range;

use domain::ExpectedVersion;
use uuid::Uuid;

use super::super::{Append, AppendError, Appended};

/// One command's outcome.
pub(super) type Outcome = Result<Appended, AppendError>;
/// A group's outcome: every append's, in order, or the error that refused them all.
pub(crate) type GroupOutcome = Result<Vec<Appended>, AppendError>;

/// A stream as `(stream_type, stream_id)`, borrowed from the batch's appends.
pub(super) type StreamKey<'a> = (&'a str, &'a str);

pub(super) fn key(append: &Append) -> StreamKey<'_> {
    (append.stream_type.as_str(), append.stream_id.as_str())
}

/// A batch seen as its commands: every append of every group, flattened in arrival order.
pub(super) struct Commands<'a> {
    pub appends: Vec<&'a Append>,
    /// The group each command belongs to.
    group_of: Vec<usize>,
    /// Each group's commands, as a range of `appends`.
    groups: Vec<Range<usize>>,
    /// A command whose id an earlier command of the batch already carries, with that one.
    first_of: HashMap<usize, usize>,
    /// Each command id of the batch, with the command that carries it first.
    first_with_id: HashMap<Uuid, usize>,
}

impl<'a> Commands<'a> {
    pub fn new(groups: impl IntoIterator<Item = &'a [Append]>) -> Commands<'a> {
        let mut commands = Commands {
            appends: Vec::new(),
            group_of: Vec::new(),
            groups: Vec::new(),
            first_of: HashMap::new(),
            first_with_id: HashMap::new(),
        };
        for (group, appends) in groups.into_iter().enumerate() {
            let start = commands.appends.len();
            for append in appends {
                let index = commands.appends.len();
                if let Some(id) = append.metadata.command_id {
                    match commands.first_with_id.entry(id) {
                        Entry::Occupied(first) => {
                            commands.first_of.insert(index, *first.get());
                        }
                        Entry::Vacant(slot) => {
                            slot.insert(index);
                        }
                    }
                }
                commands.appends.push(append);
                commands.group_of.push(group);
            }
            commands.groups.push(start..commands.appends.len());
        }
        commands
    }

    /// The batch's distinct command ids, sorted: concurrent committers claim them in one
    /// order, so they cannot deadlock on each other's claims.
    pub fn ids(&self) -> Vec<Uuid> {
        let mut ids: Vec<Uuid> = self.first_with_id.keys().copied().collect();
        ids.sort_unstable();
        ids
    }

    /// Outcomes stored by earlier transactions, placed at the first command carrying each id.
    /// An id in `seen` without a stored outcome is a corrupt row (a claim is only ever
    /// committed together with its outcome).
    pub fn stored(
        &self,
        seen: &[Uuid],
        mut earlier: HashMap<Uuid, Outcome>,
    ) -> Vec<Option<Outcome>> {
        let mut stored = vec![None; self.appends.len()];
        for id in seen {
            let outcome = earlier.remove(id).unwrap_or_else(|| Err(corrupt_command(*id)));
            stored[self.first_with_id[id]] = Some(outcome);
        }
        stored
    }

    /// The commands this batch must decide: neither stored before nor repeating another.
    pub fn live(&self, stored: &[Option<Outcome>]) -> Vec<bool> {
        (0..self.appends.len())
            .map(|index| stored[index].is_none() && !self.first_of.contains_key(&index))
            .collect()
    }

    /// The streams of the live commands, sorted and distinct: the rows to lock, in the
    /// order every committer locks them.
    pub fn streams(&self, live: &[bool]) -> Vec<StreamKey<'a>> {
        let mut keys: Vec<StreamKey<'a>> =
            (0..self.appends.len()).filter(|i| live[*i]).map(|i| key(self.appends[i])).collect();
        keys.sort_unstable();
        keys.dedup();
        keys
    }
}

pub(super) fn corrupt_command(id: Uuid) -> AppendError {
    AppendError::from(sqlx::Error::Protocol(format!("command {id} is stored without its outcome")))
}

/// A command that passed the version check, with the offsets (1-based, within the batch)
/// of its events.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Placed {
    pub index: usize,
    pub first_version: u64,
    pub last_version: u64,
    pub first_offset: u64,
    pub last_offset: u64,
}

/// What the batch writes and whom it refuses.
#[derive(Debug)]
pub(super) struct Plan<'a> {
    /// Commands to append, in the order their events are written.
    pub placed: Vec<Placed>,
    /// Per group: the error that refused it.
    pub failed: Vec<Option<AppendError>>,
    /// Command ids claimed by refused groups, to give back.
    pub released: Vec<Uuid>,
    /// Every locked stream's version after the batch.
    pub versions: HashMap<StreamKey<'a>, u64>,
    /// Events written.
    pub event_count: u64,
}

/// Decides the batch against the versions its streams were locked at.
pub(super) fn plan<'a>(
    commands: &Commands<'a>,
    stored: &[Option<Outcome>],
    live: &[bool],
    mut versions: HashMap<StreamKey<'a>, u64>,
) -> Plan<'a> {
    let mut failed: Vec<Option<AppendError>> = vec![None; commands.groups.len()];
    let mut placed = Vec::new();
    let mut released = Vec::new();
    let mut event_count = 0u64;
    for (group, members) in commands.groups.iter().enumerate() {
        match decide_group(commands, members.clone(), stored, &failed, &versions) {
            Ok(staged) => {
                for (index, current) in staged {
                    let append = commands.appends[index];
                    let count = append.events.len() as u64;
                    versions.insert(key(append), current + count);
                    placed.push(Placed {
                        index,
                        first_version: current + 1,
                        last_version: current + count,
                        first_offset: event_count + 1,
                        last_offset: event_count + count,
                    });
                    event_count += count;
                }
            }
            Err(error) => {
                // A refused group changed nothing, so the ids it claimed stay free for a retry.
                released.extend(
                    members
                        .clone()
                        .filter(|index| live[*index])
                        .filter_map(|index| commands.appends[index].metadata.command_id),
                );
                failed[group] = Some(error);
            }
        }
    }
    Plan { placed, failed, released, versions, event_count }
}

/// Checks one group's commands against the current versions. Returns the commands to
/// append, each with the version it starts from, or the error that refuses the whole group.
fn decide_group<'a>(
    commands: &Commands<'a>,
    members: Range<usize>,
    stored: &[Option<Outcome>],
    failed: &[Option<AppendError>],
    versions: &HashMap<StreamKey<'a>, u64>,
) -> Result<Vec<(usize, u64)>, AppendError> {
    // Versions this group has moved so far; they count only if the whole group goes in.
    let mut moved: HashMap<StreamKey<'a>, u64> = HashMap::new();
    let mut staged = Vec::with_capacity(members.len());
    for index in members {
        // Stored by an earlier transaction: nothing to append, unless the row is corrupt.
        if let Some(outcome) = &stored[index] {
            outcome.clone()?;
            continue;
        }
        // A repeat within this batch stands or falls with its first occurrence.
        if let Some(&first) = commands.first_of.get(&index) {
            if let Some(Err(error)) = &stored[first] {
                return Err(error.clone());
            }
            if let Some(error) = &failed[commands.group_of[first]] {
                return Err(error.clone());
            }
            continue;
        }
        let append = commands.appends[index];
        let stream = key(append);
        let current = moved
            .get(&stream)
            .or_else(|| versions.get(&stream))
            .copied()
            .expect("every live stream was locked");
        if let ExpectedVersion::Exact(expected) = append.expected
            && expected != current
        {
            return Err(AppendError::Conflict {
                stream_type: append.stream_type.clone(),
                stream_id: append.stream_id.clone(),
                expected,
                actual: current,
            });
        }
        moved.insert(stream, current + append.events.len() as u64);
        staged.push((index, current));
    }
    Ok(staged)
}

/// Every group's answer, once the batch committed with its first event at `base + 1`.
pub(super) fn answers(
    commands: &Commands<'_>,
    plan: Plan<'_>,
    stored: Vec<Option<Outcome>>,
    base: u64,
) -> Vec<GroupOutcome> {
    let mut outcomes = stored;
    for p in &plan.placed {
        let append = commands.appends[p.index];
        outcomes[p.index] = Some(Ok(Appended {
            stream_type: append.stream_type.clone(),
            stream_id: append.stream_id.clone(),
            first_version: p.first_version,
            last_version: p.last_version,
            first_position: base + p.first_offset,
            last_position: base + p.last_offset,
            duplicate: false,
        }));
    }
    let mut failed = plan.failed;
    let mut answers = Vec::with_capacity(commands.groups.len());
    for (group, members) in commands.groups.iter().enumerate() {
        if let Some(error) = failed[group].take() {
            answers.push(Err(error));
            continue;
        }
        let mut appended = Vec::with_capacity(members.len());
        for index in members.clone() {
            let repeat = commands.first_of.get(&index);
            // A repeated id is answered like its first occurrence, as a duplicate.
            let outcome = outcomes[*repeat.unwrap_or(&index)].clone();
            match outcome.expect("every command of an accepted group decided") {
                Ok(done) => appended
                    .push(Appended { duplicate: done.duplicate || repeat.is_some(), ..done }),
                Err(error) => unreachable!("a group with a failed command is refused: {error}"),
            }
        }
        answers.push(Ok(appended));
    }
    answers
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use domain::{EventMetadata, NewEvent, StreamId, StreamType};
    use proptest::prelude::*;

    use super::*;

    fn append(stream: &str, expected: ExpectedVersion, events: usize, id: Option<u128>) -> Append {
        Append {
            stream_type: StreamType::parse("mission").unwrap(),
            stream_id: StreamId::parse(stream).unwrap(),
            expected,
            events: (0..events).map(|_| NewEvent::new("Happened", serde_json::json!({}))).collect(),
            metadata: EventMetadata {
                command_id: id.map(Uuid::from_u128),
                ..EventMetadata::new("test", time::OffsetDateTime::UNIX_EPOCH)
            },
        }
    }

    /// Runs the decision the way the committer does, with `locked` as the streams' versions
    /// and `earlier` as outcomes stored by earlier transactions; answers from position 100.
    fn decide(
        groups: &[Vec<Append>],
        locked: &[(&str, u64)],
        earlier: &[(u128, Outcome)],
    ) -> (Vec<GroupOutcome>, Vec<Uuid>) {
        let commands = Commands::new(groups.iter().map(Vec::as_slice));
        let earlier: HashMap<Uuid, Outcome> =
            earlier.iter().map(|(id, outcome)| (Uuid::from_u128(*id), outcome.clone())).collect();
        let seen: Vec<Uuid> =
            commands.ids().into_iter().filter(|id| earlier.contains_key(id)).collect();
        let stored = commands.stored(&seen, earlier);
        let live = commands.live(&stored);
        let versions = commands
            .streams(&live)
            .into_iter()
            .map(|stream| {
                let at = locked.iter().find(|(id, _)| *id == stream.1).map_or(0, |(_, v)| *v);
                (stream, at)
            })
            .collect();
        let plan = plan(&commands, &stored, &live, versions);
        let released = plan.released.clone();
        (answers(&commands, plan, stored, 100), released)
    }

    fn versions(outcome: &GroupOutcome) -> Vec<(u64, u64, u64, u64, bool)> {
        outcome
            .as_ref()
            .unwrap()
            .iter()
            .map(|a| {
                (a.first_version, a.last_version, a.first_position, a.last_position, a.duplicate)
            })
            .collect()
    }

    #[test]
    fn two_commands_on_one_stream_are_decided_one_after_the_other() {
        let groups = [
            vec![append("m1", ExpectedVersion::Exact(2), 1, None)],
            vec![append("m1", ExpectedVersion::Exact(3), 2, None)],
        ];
        let (answers, _) = decide(&groups, &[("m1", 2)], &[]);
        assert_eq!(versions(&answers[0]), [(3, 3, 101, 101, false)]);
        assert_eq!(versions(&answers[1]), [(4, 5, 102, 103, false)]);
    }

    #[test]
    fn a_stale_command_is_refused_with_the_version_it_met_and_the_others_go_on() {
        let groups = [
            vec![append("m1", ExpectedVersion::Exact(0), 1, Some(1))],
            vec![append("m1", ExpectedVersion::Exact(0), 1, Some(2))],
            vec![append("m2", ExpectedVersion::Any, 1, None)],
        ];
        let (answers, released) = decide(&groups, &[], &[]);
        assert_eq!(versions(&answers[0]), [(1, 1, 101, 101, false)]);
        assert!(matches!(answers[1], Err(AppendError::Conflict { expected: 0, actual: 1, .. })));
        assert_eq!(versions(&answers[2]), [(1, 1, 102, 102, false)]);
        assert_eq!(released, [Uuid::from_u128(2)]);
    }

    #[test]
    fn a_group_with_one_conflict_writes_nothing_and_releases_all_its_ids() {
        let groups = [vec![
            append("m1", ExpectedVersion::Exact(0), 1, Some(1)),
            append("m2", ExpectedVersion::Exact(5), 1, Some(2)),
        ]];
        let (answers, released) = decide(&groups, &[], &[]);
        assert!(matches!(answers[0], Err(AppendError::Conflict { expected: 5, actual: 0, .. })));
        assert_eq!(released, [Uuid::from_u128(1), Uuid::from_u128(2)]);
    }

    #[test]
    fn a_repeat_within_the_batch_gets_the_first_outcome_as_a_duplicate() {
        let groups = [
            vec![append("m1", ExpectedVersion::Exact(0), 1, Some(7))],
            vec![append("m1", ExpectedVersion::Exact(0), 1, Some(7))],
        ];
        let (answers, released) = decide(&groups, &[], &[]);
        assert_eq!(versions(&answers[0]), [(1, 1, 101, 101, false)]);
        assert_eq!(versions(&answers[1]), [(1, 1, 101, 101, true)]);
        assert!(released.is_empty());
    }

    #[test]
    fn a_repeat_of_a_refused_command_is_refused_with_it() {
        let groups = [
            vec![append("m1", ExpectedVersion::Exact(9), 1, Some(7))],
            vec![append("m1", ExpectedVersion::Exact(0), 1, Some(7))],
        ];
        let (answers, _) = decide(&groups, &[], &[]);
        assert!(answers[0].is_err());
        assert!(matches!(answers[1], Err(AppendError::Conflict { expected: 9, .. })));
    }

    #[test]
    fn an_id_stored_before_is_answered_with_its_outcome_without_refusing_its_group() {
        let first = Appended {
            stream_type: StreamType::parse("mission").unwrap(),
            stream_id: StreamId::parse("m1").unwrap(),
            first_version: 1,
            last_version: 1,
            first_position: 4,
            last_position: 4,
            duplicate: true,
        };
        let groups = [vec![
            append("m1", ExpectedVersion::Exact(0), 1, Some(1)),
            append("m2", ExpectedVersion::Exact(0), 1, Some(2)),
        ]];
        let (answers, _) = decide(&groups, &[("m1", 1)], &[(1, Ok(first))]);
        assert_eq!(versions(&answers[0]), [(1, 1, 4, 4, true), (1, 1, 101, 101, false)]);
    }

    #[test]
    fn a_stored_id_without_its_outcome_refuses_its_group() {
        let groups = [vec![append("m1", ExpectedVersion::Any, 1, Some(1))]];
        let commands = Commands::new(groups.iter().map(Vec::as_slice));
        let stored = commands.stored(&[Uuid::from_u128(1)], HashMap::new());
        let live = commands.live(&stored);
        assert!(commands.streams(&live).is_empty());
        let plan = plan(&commands, &stored, &live, HashMap::new());
        assert!(plan.placed.is_empty());
        assert!(matches!(plan.failed[0], Some(AppendError::Database(_))));
    }

    /// A sequential model written apart from `plan`: a group goes in when each of its new
    /// commands, in turn, meets its expected version; repeats follow their first occurrence.
    fn model(groups: &[Vec<Append>]) -> Vec<Option<Vec<(String, u64, u64)>>> {
        let mut versions: BTreeMap<String, u64> = BTreeMap::new();
        let mut by_id: HashMap<Uuid, Option<(String, u64, u64)>> = HashMap::new();
        let mut answers = Vec::new();
        for group in groups {
            let mut trial = versions.clone();
            let mut results = Vec::new();
            let mut new_ids = Vec::new();
            let mut refused = false;
            for append in group {
                let id = append.metadata.command_id;
                if let Some(first) = id.and_then(|id| by_id.get(&id).cloned()).or_else(|| {
                    id.and_then(|id| {
                        new_ids.iter().find(|(i, _)| *i == id).map(|(_, r)| Some(r).cloned())
                    })
                }) {
                    match first {
                        Some(result) => {
                            results.push(result);
                            continue;
                        }
                        None => {
                            refused = true;
                            break;
                        }
                    }
                }
                let stream = append.stream_id.as_str().to_owned();
                let current = *trial.get(&stream).unwrap_or(&0);
                if let ExpectedVersion::Exact(expected) = append.expected
                    && expected != current
                {
                    refused = true;
                    break;
                }
                let last = current + append.events.len() as u64;
                trial.insert(stream.clone(), last);
                let result = (stream, current + 1, last);
                if let Some(id) = id {
                    new_ids.push((id, result.clone()));
                }
                results.push(result);
            }
            if refused {
                for append in group {
                    if let Some(id) = append.metadata.command_id {
                        by_id.entry(id).or_insert(None);
                    }
                }
                answers.push(None);
            } else {
                versions = trial;
                for (id, result) in new_ids {
                    by_id.insert(id, Some(result));
                }
                answers.push(Some(results));
            }
        }
        answers
    }

    fn arb_append() -> impl Strategy<Value = Append> {
        (0..3usize, prop::option::of(0..4u64), 1..3usize, prop::option::of(0..6u128)).prop_map(
            |(stream, expected, events, id)| {
                let expected = expected.map_or(ExpectedVersion::Any, ExpectedVersion::Exact);
                append(&format!("m{stream}"), expected, events, id)
            },
        )
    }

    proptest! {
        #[test]
        fn the_decision_matches_a_sequential_model_and_positions_are_gapless(
            groups in prop::collection::vec(prop::collection::vec(arb_append(), 1..4), 1..8)
        ) {
            let (answers, _) = decide(&groups, &[], &[]);
            // A repeat of a refused id inside a later group is refused in both; a repeat that
            // follows a refused first occurrence before any success is what the model tracks.
            let expected = model(&groups);
            let mut positions = Vec::new();
            for (answer, expected) in answers.iter().zip(&expected) {
                match (answer, expected) {
                    (Ok(appended), Some(results)) => {
                        let got: Vec<(String, u64, u64)> = appended
                            .iter()
                            .map(|a| (a.stream_id.as_str().to_owned(), a.first_version, a.last_version))
                            .collect();
                        prop_assert_eq!(&got, results);
                        for a in appended.iter().filter(|a| !a.duplicate) {
                            positions.extend(a.first_position..=a.last_position);
                        }
                    }
                    (Err(_), None) => {}
                    (answer, expected) => prop_assert!(false, "got {answer:?}, model {expected:?}"),
                }
            }
            let gapless: Vec<u64> = (101..101 + positions.len() as u64).collect();
            prop_assert_eq!(positions, gapless);
        }
    }
}
