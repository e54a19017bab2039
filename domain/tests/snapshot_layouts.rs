//! Every aggregate that takes snapshots (decision 0049) has a golden file of its stored state
//! at its current snapshot version, `tests/golden/snapshots/<stream_type>.v<N>.json`. The file
//! must decode and encode back to itself: a change of the state's fields fails here until
//! the aggregate's `Snapshots::version` is bumped (so stored snapshots of the old layout are
//! ignored, never loaded) and a golden file of the new layout is added.

use std::path::Path;

use domain::agent::Agent;
use domain::aggregate::Aggregate;
use domain::conversation::Conversation;

fn check<A: Aggregate + std::fmt::Debug>() {
    let snapshots = A::SNAPSHOTS.expect("the aggregate takes snapshots");
    let name = format!("{}.v{}.json", A::stream_type(), snapshots.version);
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/golden/snapshots").join(&name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|error| {
        panic!("{name}: no golden file for the current snapshot version ({error})")
    });
    let stored: serde_json::Value = serde_json::from_str(&text).expect("golden file is JSON");
    let state = (snapshots.decode)(stored.clone()).unwrap_or_else(|error| {
        panic!("{name} no longer decodes ({error}): bump the snapshot version, add its file")
    });
    let again = (snapshots.encode)(&state).expect("a state encodes");
    assert_eq!(
        again, stored,
        "{name} does not encode back to itself: the state's layout changed; bump the snapshot \
         version and add its golden file"
    );
    assert!(snapshots.every > 0);
}

#[test]
fn every_snapshot_layout_is_pinned_by_a_golden_file() {
    check::<Agent>();
    check::<Conversation>();
}
