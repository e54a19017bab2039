//! Stored events never break. Every event type, at every schema version ever written, has a
//! golden file under `tests/golden/events/<stream_type>/<EventType>.v<N>.json` holding a
//! payload as the store holds it. This test reads each one the way BRAiN reads the log
//! (`DomainEvent::upcast`, which the command handler, the in-memory followers, the views and
//! replay use, then every projector that reads that stream) and fails when:
//!
//! - a golden file no longer loads (a payload type changed without a version bump and an
//!   upcaster);
//! - loading drops or changes a value the stored payload held (a field renamed or removed,
//!   which a serde default would otherwise hide);
//! - an event type of the code has no golden file at the version it writes today (adding an
//!   event type, or bumping a version, adds its golden file);
//! - a golden file names a stream type, event type or version the code does not have.
//!
//! The event types come from the enums themselves (`domain::catalogue`); the projectors are
//! listed in [`each_projector`].

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use domain::catalogue::{EventFamily, families};
use domain::{EventMetadata, RecordedEvent, StreamId};
use projections::{Projector, agent_view, conversation_list, event_type_stats, llm_usage};
use projections::{mission_list, mission_queue, mission_tree};
use serde_json::Value;

/// Where the golden files live, beside the workspace's other tests.
fn golden_root() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/golden/events");
    root.canonicalize().unwrap_or_else(|error| panic!("{}: {error}", root.display()))
}

/// One golden file: `<EventType>.v<N>.json` in its stream type's folder.
struct Golden {
    path: PathBuf,
    event_type: String,
    schema_version: u32,
    payload: Value,
}

fn read_dir(dir: &Path) -> Vec<PathBuf> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|error| panic!("cannot list {}: {error}", dir.display()))
        .map(|entry| entry.expect("a directory entry").path())
        .collect();
    paths.sort();
    paths
}

/// Every golden file, by stream type; a name that is not `<EventType>.v<N>.json` fails.
fn golden_files(problems: &mut Vec<String>) -> BTreeMap<String, Vec<Golden>> {
    let mut by_stream_type: BTreeMap<String, Vec<Golden>> = BTreeMap::new();
    for dir in read_dir(&golden_root()) {
        let stream_type = dir.file_name().unwrap().to_string_lossy().into_owned();
        let files = by_stream_type.entry(stream_type).or_default();
        for path in read_dir(&dir) {
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            let parsed =
                name.strip_suffix(".json").and_then(|stem| stem.rsplit_once(".v")).and_then(
                    |(event_type, version)| Some((event_type.to_owned(), version.parse().ok()?)),
                );
            let Some((event_type, schema_version)) = parsed else {
                problems.push(format!("{}: not named <EventType>.v<N>.json", path.display()));
                continue;
            };
            let text = std::fs::read_to_string(&path)
                .unwrap_or_else(|error| panic!("cannot read {}: {error}", path.display()));
            match serde_json::from_str(&text) {
                Ok(payload) => files.push(Golden { path, event_type, schema_version, payload }),
                Err(error) => problems.push(format!("{}: not JSON: {error}", path.display())),
            }
        }
    }
    by_stream_type
}

/// Where `stored` holds a value that `loaded` does not hold the same: what loading lost.
fn lost(stored: &Value, loaded: &Value, at: &str, found: &mut Vec<String>) {
    match (stored, loaded) {
        (Value::Object(stored), Value::Object(loaded)) => {
            for (key, value) in stored {
                match loaded.get(key) {
                    Some(kept) => lost(value, kept, &format!("{at}.{key}"), found),
                    None => found.push(format!("{at}.{key} is dropped")),
                }
            }
        }
        (Value::Array(stored), Value::Array(loaded)) if stored.len() == loaded.len() => {
            for (index, (value, kept)) in stored.iter().zip(loaded).enumerate() {
                lost(value, kept, &format!("{at}[{index}]"), found);
            }
        }
        (stored, loaded) if stored == loaded => {}
        (stored, loaded) => found.push(format!("{at} was {stored}, loads as {loaded}")),
    }
}

/// The golden payload as a stored event, as PostgreSQL and the bus hand it to a projector.
fn recorded(stream_type: &str, golden: &Golden, position: u64) -> RecordedEvent {
    let at = time::OffsetDateTime::from_unix_timestamp(1_795_636_800).expect("a time");
    RecordedEvent {
        global_position: position,
        stream_type: domain::StreamType::parse(stream_type).expect("a stream type"),
        stream_id: StreamId::parse("0199b1c2-7a3e-7c41-9d2f-5e8a1b3c4d5e").expect("a stream id"),
        version: 1,
        event_id: uuid::Uuid::nil(),
        event_type: golden.event_type.clone(),
        schema_version: golden.schema_version,
        payload: golden.payload.clone(),
        metadata: EventMetadata::new("key:golden", at),
        recorded_at: at,
    }
}

fn through<P: Projector>(projector: P, event: &RecordedEvent, problems: &mut Vec<String>) {
    if !projector.reads().wants(event.stream_type.as_str(), &event.event_type) {
        return;
    }
    if let Err(unreadable) = projector.apply(event, &mut Vec::new()) {
        problems.push(format!("projector {}: {unreadable}", projector.name()));
    }
}

/// Every projector of this crate: each one that reads the event must read it.
fn each_projector(event: &RecordedEvent, problems: &mut Vec<String>) {
    through(agent_view::AgentView, event, problems);
    through(conversation_list::ConversationList, event, problems);
    through(event_type_stats::EventTypeStats, event, problems);
    through(llm_usage::LlmUsage, event, problems);
    through(mission_list::MissionList, event, problems);
    through(mission_queue::MissionQueue::default(), event, problems);
    through(mission_tree::MissionTree, event, problems);
}

/// What is wrong with one golden file of `family`.
fn check_file(
    family: &EventFamily,
    stream_type: &str,
    golden: &Golden,
    position: u64,
) -> Vec<String> {
    let mut problems = Vec::new();
    let (event_type, version) = (golden.event_type.as_str(), golden.schema_version);
    if !(family.event_types)().contains(&event_type) {
        return vec![format!("{event_type} is not an event type of {stream_type} streams")];
    }
    let current = (family.current_version)(event_type);
    if version == 0 || version > current {
        return vec![format!("{event_type} is written at v{current}; v{version} never was")];
    }
    let stored = match (family.load)(event_type, version, golden.payload.clone()) {
        Ok(stored) => stored,
        Err(error) => return vec![format!("does not load: {error}")],
    };
    if (stored.event_type, stored.schema_version) != (event_type, current) {
        problems.push(format!(
            "loads as {} v{}, not {event_type} v{current}",
            stored.event_type, stored.schema_version
        ));
    }
    // What the upcasters make of the stored payload must all reach the event: a value the
    // event type no longer reads would be lost the first time the stream is written again.
    let upcast =
        domain::upcast::to_current(family.upcasters, event_type, version, golden.payload.clone())
            .expect("it loaded, so it upcasts");
    let mut dropped = Vec::new();
    lost(&upcast, &stored.payload, "payload", &mut dropped);
    problems.extend(dropped.into_iter().map(|what| format!("loading loses a value: {what}")));
    // Written again today, it loads again as the same event.
    let again = (family.load)(event_type, current, stored.payload.clone());
    if again.as_ref() != Ok(&stored) {
        problems.push(format!("written again and read back, it differs: {again:?}"));
    }
    each_projector(&recorded(stream_type, golden, position), &mut problems);
    problems
}

#[test]
fn every_stored_layout_of_every_event_type_still_loads_and_has_a_golden_file() {
    let mut problems = Vec::new();
    let mut files = golden_files(&mut problems);
    let mut position = 0;
    let mut checked = 0;
    for family in families() {
        let stream_type = (family.stream_type)();
        let stream_type = stream_type.as_str();
        let goldens = files.remove(stream_type).unwrap_or_default();
        for event_type in (family.event_types)() {
            let current = (family.current_version)(event_type);
            let pinned = goldens
                .iter()
                .any(|golden| golden.event_type == *event_type && golden.schema_version == current);
            if !pinned {
                problems.push(format!(
                    "{stream_type}/{event_type}.v{current}.json is missing: every event type has a \
                     golden file at the schema version it is written at, holding a payload as \
                     stored"
                ));
            }
        }
        for golden in &goldens {
            position += 1;
            checked += 1;
            for problem in check_file(&family, stream_type, golden, position) {
                problems.push(format!("{}: {problem}", golden.path.display()));
            }
        }
    }
    for stream_type in files.keys() {
        problems.push(format!("{stream_type}: no event enum is stored under this stream type"));
    }
    assert!(problems.is_empty(), "{} problem(s):\n{}", problems.len(), problems.join("\n"));
    assert!(checked > 0, "no golden file was read from {}", golden_root().display());
}
