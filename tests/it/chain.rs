//! The event chain against a real PostgreSQL: hashes assigned by the committer in position
//! order, stable under `jsonb`'s rewriting of payloads, computed for a log that predates
//! them, and a check that names the first edited position.

use brain::eventlog::chain::{self, FindingKind, Report};
use brain::eventlog::store::chain::{ChainRow, Content, GENESIS, fill, read_rows};
use brain::eventlog::store::{Append, CommitterConfig, EventStore, canonical};
use domain::{EventMetadata, ExpectedVersion, NewEvent};
use serde_json::{Value, json};
use sqlx::PgPool;

use crate::support::{TestEnv, append, append_streams, brain_command, new_stream_id, stream_type};

async fn verify(pool: &PgPool) -> Report {
    chain::verify(pool, None, |_| {}).await.expect("the check runs")
}

async fn rows(pool: &PgPool) -> Vec<ChainRow> {
    read_rows(pool, 0, u64::MAX, 10_000).await.expect("read rows")
}

fn positions_found(report: &Report) -> Vec<(u64, FindingKind)> {
    report.findings.iter().map(|finding| (finding.position, finding.kind)).collect()
}

#[tokio::test]
async fn a_clean_log_verifies_clean_and_its_head_holds_the_last_hash() {
    // Given appends of one and several events, an atomic group, and a second committer
    // (another process) appending at the same time.
    let env = TestEnv::new().await;
    let (store, _committer) = env.store();
    let config = CommitterConfig { transactions_in_flight_max: 4, ..CommitterConfig::default() };
    let (other, _other_committer) =
        EventStore::start(env.other_pool().await, env.namespace.as_str(), config);
    let empty = verify(&env.pool).await;
    assert!(empty.clean && empty.events_checked == 0, "{empty:?}");
    assert_eq!(empty.head.chain_hash, chain::hex(&GENESIS));

    let (a, b) = tokio::join!(append_streams(&store, 40, 1), append_streams(&other, 40, 3));
    assert_eq!((a.len(), b.len()), (40, 40));
    let probe = stream_type("probe");
    let group = (0..5)
        .map(|_| append(&probe, &new_stream_id(), ExpectedVersion::Exact(0), "ProbeRecorded", 2))
        .collect();
    store.append_all(group).await.expect("group");

    // Then every event has a hash, the chain checks out, and the head holds the last one.
    let report = verify(&env.pool).await;
    let head = env.head().await;
    assert_eq!(head, 40 + 120 + 10);
    assert!(report.clean, "{report:?}");
    assert_eq!((report.events_checked, report.head.position), (head, head));
    let rows = rows(&env.pool).await;
    let last = rows.last().and_then(|row| row.chain_hash.clone()).expect("last hash");
    assert_eq!(report.head.chain_hash, chain::hex(&last));
    assert!(rows.iter().all(|row| row.chain_hash.is_some()));
    // The first event's link starts from 32 zero bytes.
    let first = &rows[0];
    let digest = first.digest(&mut Vec::new()).expect("digest");
    let expected = brain::eventlog::store::chain::link(&GENESIS, 1, first.version, &digest);
    assert_eq!(first.chain_hash.as_deref(), Some(expected.as_slice()));
}

#[tokio::test]
async fn an_edited_row_is_named_at_its_position_and_only_there() {
    let env = TestEnv::new().await;
    let (store, _committer) = env.store();
    append_streams(&store, 20, 1).await;
    assert!(verify(&env.pool).await.clean);

    // When one row's payload is edited behind the store's back.
    sqlx::query("UPDATE events SET payload = '{\"n\": 99}' WHERE global_position = 7")
        .execute(&env.pool)
        .await
        .unwrap();

    // Then the check names exactly that position.
    let report = verify(&env.pool).await;
    assert!(!report.clean);
    assert_eq!(report.first_position, Some(7));
    assert_eq!(positions_found(&report), vec![(7, FindingKind::Mismatch)], "{report:?}");

    // And so with the other covered columns, each edit named where it is.
    for statement in [
        "UPDATE events SET metadata = metadata || '{\"actor\": \"someone else\"}' WHERE global_position = 11",
        "UPDATE events SET event_type = 'SampleForged' WHERE global_position = 13",
        "UPDATE events SET stream_id = 'elsewhere' WHERE global_position = 15",
        "UPDATE events SET version = 2 WHERE global_position = 17",
        "UPDATE events SET schema_version = 9 WHERE global_position = 18",
    ] {
        sqlx::query(statement).execute(&env.pool).await.unwrap();
    }
    let report = verify(&env.pool).await;
    let found: Vec<u64> = report.findings.iter().map(|finding| finding.position).collect();
    assert_eq!(found, vec![7, 11, 13, 15, 17, 18], "{report:?}");
    assert_eq!(report.first_position, Some(7));

    // A stored hash rewritten to hide an edit breaks the link of the event after it.
    sqlx::query("UPDATE events SET chain_hash = sha256(chain_hash) WHERE global_position = 3")
        .execute(&env.pool)
        .await
        .unwrap();
    let report = verify(&env.pool).await;
    assert_eq!(report.first_position, Some(3));
    assert!(positions_found(&report).contains(&(4, FindingKind::Mismatch)));

    // And recomputing a whole tail of hashes is caught by a head recorded earlier.
    let clean_env = TestEnv::new().await;
    let (clean_store, _c) = clean_env.store();
    append_streams(&clean_store, 5, 1).await;
    let recorded = chain::head(&clean_env.pool).await.unwrap();
    let anchor = format!("{}:{}", recorded.chain_position, recorded.chain_hash).parse().unwrap();
    let report = chain::verify(&clean_env.pool, Some(anchor), |_| {}).await.unwrap();
    assert!(report.clean, "{report:?}");
    sqlx::query("UPDATE events SET chain_hash = sha256(chain_hash) WHERE global_position = 5")
        .execute(&clean_env.pool)
        .await
        .unwrap();
    sqlx::query(
        "UPDATE head SET chain_hash = (SELECT chain_hash FROM events WHERE global_position = 5)",
    )
    .execute(&clean_env.pool)
    .await
    .unwrap();
    let report = chain::verify(&clean_env.pool, Some(anchor), |_| {}).await.unwrap();
    assert!(positions_found(&report).contains(&(5, FindingKind::Anchor)), "{report:?}");
}

/// Payloads whose `jsonb` text differs from the text serde_json sent.
fn awkward_payloads() -> Vec<Value> {
    vec![
        json!({}),
        json!([]),
        json!({"b": 1, "a": {"d": [], "c": {}}, "": null, "aa": true}),
        json!({"deep": {"er": {"still": [[[{"z": 1, "y": [2, {"x": "3"}]}]]]}}}),
        json!({"unicode": "é ü 中文 😀 \u{200b}", "escapes": "\"quoted\" \\ / \n\r\t\u{1}\u{1f}\u{7f}"}),
        json!({"é": 1, "e": 2, "z": 3, "😀": 4, "Z": 5}),
        json!({"int": 1, "neg": -1, "big": u64::MAX, "min": i64::MIN, "f": 1.5, "g": 0.1}),
        json!({"whole_float": 2.0, "neg_zero": -0.0, "e18": 1e18, "e20": 1e20, "tiny": 1e-7}),
        json!({"max": f64::MAX, "min_pos": f64::MIN_POSITIVE, "subnormal": 5e-324, "third": 1.0 / 3.0}),
        json!({"beyond_f64_exact": 9007199254740993u64, "long": "x".repeat(5_000)}),
        json!("a bare string"),
        json!(12345.678),
        json!(null),
    ]
}

#[tokio::test]
async fn awkward_payloads_hash_the_same_after_the_jsonb_round_trip() {
    // Given events whose payloads jsonb rewrites (key order, escapes, number forms).
    let env = TestEnv::new().await;
    let (store, _committer) = env.store();
    let payloads = awkward_payloads();
    let mut metadata = EventMetadata::new("tëst \"actor\"", time::OffsetDateTime::now_utc());
    metadata.on_behalf_of = Some("someone\nelse".into());
    let events: Vec<NewEvent> =
        payloads.iter().map(|payload| NewEvent::new("ProbeRecorded", payload.clone())).collect();
    let stream_id = new_stream_id();
    let append = Append {
        stream_type: stream_type("probe"),
        stream_id: stream_id.clone(),
        expected: ExpectedVersion::Exact(0),
        events: events.clone(),
        metadata: metadata.clone(),
    };
    store.append(append).await.expect("append");

    // Then each stored row's digest, from the text PostgreSQL prints, is the digest of the
    // value the command built.
    let metadata = canonical::to_vec(&serde_json::to_value(&metadata).unwrap());
    let rows = rows(&env.pool).await;
    assert_eq!(rows.len(), payloads.len());
    let mut scratch = Vec::new();
    for (row, event) in rows.iter().zip(&events) {
        let content = Content {
            stream_type: "probe",
            stream_id: stream_id.as_str(),
            event_id: event.event_id,
            event_type: &event.event_type,
            schema_version: event.schema_version,
            payload: &event.payload,
        };
        let sent = content.digest(&metadata, &mut scratch);
        assert_eq!(row.digest(&mut scratch).unwrap(), sent, "payload {}", row.payload_json);
    }
    // And the whole chain checks out.
    let report = verify(&env.pool).await;
    assert!(report.clean, "{report:?}");
}

#[tokio::test]
async fn random_numbers_keep_their_canonical_form_through_jsonb() {
    // Given doubles of any bit pattern, integers of the whole range and short decimals.
    let env = TestEnv::new().await;
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let mut values = Vec::new();
    while values.len() < 8_000 {
        let bits = next();
        let double = f64::from_bits(bits);
        if double.is_finite() {
            values.push(json!(double));
        }
        values.push(json!(bits));
        values.push(json!(bits as i64));
        values.push(json!((bits % 10_000_000) as f64 / 1_000.0));
    }
    // When PostgreSQL stores each as jsonb and prints it back.
    let texts: Vec<String> = values.iter().map(|v| serde_json::to_string(v).unwrap()).collect();
    let printed: Vec<String> = sqlx::query_scalar(
        "SELECT (t::jsonb)::text FROM unnest($1::text[]) WITH ORDINALITY AS u(t, n) ORDER BY n",
    )
    .bind(&texts)
    .fetch_all(&env.pool)
    .await
    .unwrap();
    // Then what is read back has the canonical form of what was sent.
    assert_eq!(printed.len(), values.len());
    for ((value, sent), back) in values.iter().zip(&texts).zip(&printed) {
        let parsed: Value = serde_json::from_str(back)
            .unwrap_or_else(|error| panic!("{sent} came back as {back}: {error}"));
        assert_eq!(
            canonical::to_vec(&parsed),
            canonical::to_vec(value),
            "{sent} came back as {back}"
        );
    }
}

/// Inserts `count` events the way a build without the chain did: positions from the head,
/// no hash.
async fn append_without_chain(pool: &PgPool, count: i64) {
    sqlx::query(
        "WITH h AS (UPDATE head SET position = position + $1 RETURNING position - $1 AS base)
         INSERT INTO events (global_position, stream_type, stream_id, version, event_id,
                             event_type, schema_version, payload, metadata)
         SELECT h.base + g, 'probe', 'old-' || (h.base + g), 1, gen_random_uuid(),
                'ProbeRecorded', 1, jsonb_build_object('n', g, 'f', g * 1.5, 's', 'é\"'),
                jsonb_build_object('actor', 'old', 'correlation_id', gen_random_uuid(),
                                   'timestamp', '2026-01-01T00:00:00Z')
         FROM h, generate_series(1, $1) AS g",
    )
    .bind(count)
    .execute(pool)
    .await
    .expect("insert old events");
}

async fn stored_hashes(pool: &PgPool) -> Vec<Option<Vec<u8>>> {
    sqlx::query_scalar("SELECT chain_hash FROM events ORDER BY global_position")
        .fetch_all(pool)
        .await
        .unwrap()
}

#[tokio::test]
async fn an_old_log_gets_its_chain_when_migrated_and_migrating_again_changes_nothing() {
    // Given a log written before the chain's migration existed.
    let env = TestEnv::new_at_migration(9).await;
    append_without_chain(&env.pool, 4_500).await;

    // When it is migrated.
    brain::eventlog::db::migrate(&env.pool).await.expect("migrate");

    // Then every event has its hash, the head its last, and the log verifies clean.
    let head = chain::head(&env.pool).await.unwrap();
    assert_eq!((head.position, head.chain_position), (4_500, 4_500));
    let hashes = stored_hashes(&env.pool).await;
    assert!(hashes.iter().all(Option::is_some));
    let report = verify(&env.pool).await;
    assert!(report.clean && report.events_checked == 4_500, "{report:?}");

    // And migrating again (or filling again) changes nothing.
    brain::eventlog::db::migrate(&env.pool).await.expect("migrate again");
    assert_eq!(fill(&env.pool).await.unwrap(), 0);
    assert_eq!(stored_hashes(&env.pool).await, hashes);
    assert_eq!(chain::head(&env.pool).await.unwrap(), head);

    // And appends carry on from there.
    let (store, _committer) = env.store();
    append_streams(&store, 3, 2).await;
    let report = verify(&env.pool).await;
    assert!(report.clean && report.events_checked == 4_506, "{report:?}");
}

#[tokio::test]
async fn the_committer_chains_events_an_older_build_stored_before_it_appends() {
    // Given a chained log, then events stored by a build that knows no chain.
    let env = TestEnv::new().await;
    let (store, _committer) = env.store();
    append_streams(&store, 3, 1).await;
    append_without_chain(&env.pool, 5).await;
    let report = verify(&env.pool).await;
    assert_eq!(report.unchained_from, Some(4), "{report:?}");

    // When this build appends, it chains them first, and its own events follow.
    append_streams(&store, 2, 1).await;
    let report = verify(&env.pool).await;
    assert!(report.clean && report.events_checked == 10, "{report:?}");
    assert_eq!(report.unchained_from, None);
}

#[tokio::test]
async fn brain_events_prints_the_head_and_checks_the_chain_with_its_exit_status() {
    let env = TestEnv::new().await;
    let (store, _committer) = env.store();
    append_streams(&store, 4, 1).await;
    let run = |args: &[&str]| {
        brain_command()
            .arg("events")
            .args(args)
            .env("DATABASE_URL", &env.database_url)
            .output()
            .expect("run brain events")
    };

    let head = run(&["head", "--json"]);
    assert!(head.status.success(), "{head:?}");
    let printed: Value = serde_json::from_slice(&head.stdout).unwrap();
    let expected = chain::head(&env.pool).await.unwrap();
    assert_eq!(printed["position"], 4);
    assert_eq!(printed["chain_hash"], expected.chain_hash.as_str());
    let text = run(&["head"]);
    let anchor = String::from_utf8(text.stdout).unwrap().trim().to_owned();
    assert_eq!(anchor, format!("4:{}", expected.chain_hash));

    let clean = run(&["verify-chain", "--expect", &anchor]);
    assert_eq!(clean.status.code(), Some(0), "{clean:?}");
    sqlx::query("UPDATE events SET payload = '{}' WHERE global_position = 2")
        .execute(&env.pool)
        .await
        .unwrap();
    let found = run(&["verify-chain", "--json"]);
    assert_eq!(found.status.code(), Some(1), "{found:?}");
    let report: Value = serde_json::from_slice(&found.stdout).unwrap();
    assert_eq!(report["first_position"], 2);

    let nowhere = brain_command()
        .args(["events", "verify-chain"])
        .env(
            "DATABASE_URL",
            format!("{}/brain_no_such_database", crate::support::postgres_server_url()),
        )
        .output()
        .unwrap();
    assert_eq!(nowhere.status.code(), Some(2), "{nowhere:?}");
    assert!(String::from_utf8_lossy(&nowhere.stderr).contains("could not run"));
}
