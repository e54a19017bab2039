//! The session's pure parts: parameter checks and the delivery plan.
use super::*;

fn query(from: Option<&str>, types: Option<&str>, mission: Option<&str>) -> FeedQuery {
    FeedQuery {
        from: from.map(str::to_owned),
        stream_type: types.map(str::to_owned),
        mission_id: mission.map(str::to_owned),
        tokens: None,
        stream_id: None,
    }
}

fn field_of(result: Result<(Option<u64>, Selection), ApiError>) -> &'static str {
    match result {
        Err(ApiError::InvalidField { field, .. }) => field,
        other => panic!("expected a refused field, got {:?}", other.map(|_| ())),
    }
}

fn event(position: u64, stream_type: &str) -> Arc<FeedEvent> {
    let json = bytes::Bytes::from(format!("{position}"));
    Arc::new(FeedEvent::new(position, stream_type, "s", "Probed", json))
}

fn positions(steps: &[Delivery]) -> Vec<String> {
    steps
        .iter()
        .map(|step| match step {
            Delivery::Write { events, through } => {
                let written: Vec<String> = events.iter().map(|e| e.position.to_string()).collect();
                format!("write [{}] through {through}", written.join(","))
            }
            Delivery::Fill { to } => format!("fill to {to}"),
        })
        .collect()
}

#[test]
fn live_events_already_replayed_are_skipped_and_a_hole_is_filled_first() {
    let batch = [3, 4, 5, 6, 7, 7, 9, 10].map(|p| event(p, "probe"));
    let steps = plan(5, batch, &Selection::default());
    assert_eq!(
        positions(&steps),
        ["write [6,7] through 7", "fill to 8", "write [9,10] through 10"]
    );
    assert_eq!(
        positions(&plan(5, [3, 5].map(|p| event(p, "probe")), &Selection::default())),
        [] as [String; 0]
    );
    assert_eq!(
        positions(&plan(5, [8].map(|p| event(p, "probe")), &Selection::default())),
        ["fill to 7", "write [8] through 8"]
    );
}

#[test]
fn unselected_live_events_move_the_position_without_being_written() {
    let selection =
        Selection { stream_types: vec![StreamType::parse("sample").unwrap()], stream_id: None };
    let batch = [event(6, "probe"), event(7, "sample"), event(8, "probe")];
    assert_eq!(positions(&plan(5, batch, &selection)), ["write [7] through 8"]);
}

#[test]
fn a_mission_id_selects_that_mission_stream() {
    let id = "0199b1c2-aaaa-7bbb-8ccc-0123456789AB";
    let (from, selection) = parse(query(Some("7"), None, Some(id))).unwrap();
    assert_eq!(from, Some(7));
    assert_eq!(selection.stream_types, [StreamType::parse("mission").unwrap()]);
    assert_eq!(selection.stream_id.unwrap().as_str(), id.to_ascii_lowercase());
}

#[test]
fn several_stream_types_are_separated_by_commas() {
    let (_, selection) = parse(query(None, Some("probe,sample,probe"), None)).unwrap();
    let names: Vec<&str> = selection.stream_types.iter().map(|t| t.as_str()).collect();
    assert_eq!(names, ["probe", "sample"]);
    assert!(selection.matches("sample", "x") && !selection.matches("mission", "x"));
}

#[test]
fn each_bad_parameter_is_refused_by_name() {
    assert_eq!(field_of(parse(query(Some("abc"), None, None))), "from");
    assert_eq!(field_of(parse(query(Some("-1"), None, None))), "from");
    assert_eq!(field_of(parse(query(None, Some("Mission"), None))), "stream_type");
    assert_eq!(field_of(parse(query(None, Some("probe,"), None))), "stream_type");
    assert_eq!(field_of(parse(query(None, None, Some("not-a-uuid")))), "mission_id");
    let id = Uuid::now_v7().to_string();
    assert_eq!(field_of(parse(query(None, Some("probe"), Some(&id)))), "mission_id");
}
