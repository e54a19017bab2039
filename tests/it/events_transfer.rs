//! `brain events export | import` as an operator runs them: a log taken out and put into a
//! fresh database is the same log, row for row, chain and all; a file edited, cut, holed or
//! not continuing the store is refused with the position at fault and writes nothing; an
//! export resumed from its last position continues the import.

use std::path::Path;
use std::process::Output;

use brain::eventlog::chain;
use domain::{EventMetadata, ExpectedVersion, NewEvent};
use serde_json::{Value, json};

use crate::support::{TestEnv, append_streams, brain_command, new_stream_id, stream_type};

type Row = (
    i64,
    String,
    String,
    i64,
    uuid::Uuid,
    String,
    i32,
    Value,
    Value,
    time::OffsetDateTime,
    Vec<u8>,
);

async fn rows(env: &TestEnv) -> Vec<Row> {
    sqlx::query_as(
        "SELECT global_position, stream_type, stream_id, version, event_id, event_type,
                schema_version, payload, metadata, recorded_at, chain_hash
         FROM events ORDER BY global_position",
    )
    .fetch_all(&env.pool)
    .await
    .unwrap()
}

async fn brain(args: &[&str]) -> Output {
    let run = tokio::process::Command::from(brain_command()).args(args).kill_on_drop(true).output();
    tokio::time::timeout(std::time::Duration::from_secs(60), run).await.unwrap().unwrap()
}

fn says(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

async fn export(env: &TestEnv, file: &Path, extra: &[&str]) {
    let file = file.to_str().unwrap();
    let args =
        [&["events", "export", "--database-url", &env.database_url, "--output", file], extra]
            .concat();
    let output = brain(&args).await;
    assert_eq!(output.status.code(), Some(0), "{}", says(&output));
}

async fn import(env: &TestEnv, file: &Path) -> Output {
    brain(&["events", "import", "--database-url", &env.database_url, file.to_str().unwrap()]).await
}

/// A source log: streams of a few events, and one event whose payload holds what JSON
/// round trips get wrong (decimals, escapes, non-ASCII, nesting, key order).
async fn source() -> TestEnv {
    let env = TestEnv::new().await;
    let (store, _committer) = env.store();
    append_streams(&store, 12, 3).await;
    let payload = json!({ "z": 0.1, "text": "héllo \"✓\"\n", "nested": { "b": [1, 2.5e-7, { "z": null }], "a": true } });
    let append = brain::eventlog::store::Append {
        stream_type: stream_type("probe"),
        stream_id: new_stream_id(),
        expected: ExpectedVersion::Exact(0),
        events: vec![NewEvent::new("ProbeRecorded", payload)],
        metadata: EventMetadata::new("tester", time::OffsetDateTime::now_utc()),
    };
    store.append(append).await.unwrap();
    env
}

/// A folder of the test's own, removed when dropped.
struct Dir(std::path::PathBuf);

impl Dir {
    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn dir() -> Dir {
    let path =
        std::env::temp_dir().join(format!("brain-transfer-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&path).unwrap();
    Dir(path)
}

#[tokio::test]
async fn a_log_exported_and_imported_into_a_fresh_store_is_the_same_log_chain_and_all() {
    let source = source().await;
    let files = dir();
    let file = files.path().join("log.ndjson");
    export(&source, &file, &[]).await;
    let text = std::fs::read_to_string(&file).unwrap();
    let trailer: Value = serde_json::from_str(text.lines().last().unwrap()).unwrap();
    assert_eq!(trailer["trailer"]["count"], 37, "{trailer}");
    let head = chain::head(&source.pool).await.unwrap();
    assert_eq!(trailer["trailer"]["last_hash"], head.chain_hash);

    let target = TestEnv::new().await;
    let imported = import(&target, &file).await;
    assert_eq!(imported.status.code(), Some(0), "{}", says(&imported));
    assert_eq!(rows(&target).await, rows(&source).await);
    assert_eq!(chain::head(&target.pool).await.unwrap(), head);
    let report = chain::verify(&target.pool, None, |_| {}).await.unwrap();
    assert!(report.clean, "{report:?}");

    // The imported store takes appends on from its head, chain included.
    let (store, _committer) = target.store();
    append_streams(&store, 1, 1).await;
    let report = chain::verify(&target.pool, None, |_| {}).await.unwrap();
    assert!(report.clean && report.events_checked == 38, "{report:?}");
}

#[tokio::test]
async fn an_edited_cut_holed_or_misplaced_file_is_refused_at_its_fault_and_writes_nothing() {
    let source = source().await;
    let files = dir();
    let file = files.path().join("log.ndjson");
    export(&source, &file, &[]).await;
    let lines: Vec<String> =
        std::fs::read_to_string(&file).unwrap().lines().map(str::to_owned).collect();
    let write = |name: &str, lines: &[String]| {
        let path = files.path().join(name);
        std::fs::write(&path, lines.join("\n") + "\n").unwrap();
        path
    };
    let mut edited = lines.clone();
    edited[4] = edited[4].replace(r#"{"n": 1}"#, r#"{"n": 7}"#);
    assert_ne!(edited[4], lines[4], "the edit took");
    let mut holed = lines.clone();
    holed.remove(9);
    let cut = lines[..20].to_vec();
    let cases = [
        (write("edited", &edited), "position 5: its content and the previous hash give"),
        (write("holed", &holed), "position 11: expected position 10"),
        (write("cut", &cut), "without its trailer"),
    ];
    let target = TestEnv::new().await;
    for (path, fault) in &cases {
        let refused = import(&target, path).await;
        assert_eq!(refused.status.code(), Some(1), "{}", says(&refused));
        assert!(says(&refused).contains(fault), "{fault}: {}", says(&refused));
        assert!(rows(&target).await.is_empty(), "nothing written");
        assert_eq!(chain::head(&target.pool).await.unwrap().position, 0);
    }

    // A store with events takes only a file that continues its head.
    let whole = import(&target, &file).await;
    assert_eq!(whole.status.code(), Some(0), "{}", says(&whole));
    let again = import(&target, &file).await;
    assert_eq!(again.status.code(), Some(1));
    assert!(
        says(&again).contains("the store's head is 37, so the file must start at 38"),
        "{}",
        says(&again)
    );
    assert_eq!(rows(&target).await, rows(&source).await);
}

#[tokio::test]
async fn an_export_resumed_from_its_last_position_continues_the_import() {
    let source = source().await;
    let files = dir();
    let (first, rest) = (files.path().join("first"), files.path().join("rest"));
    export(&source, &first, &["--to-position", "20"]).await;
    export(&source, &rest, &["--from-position", "21"]).await;
    let target = TestEnv::new().await;
    for file in [&first, &rest] {
        let imported = import(&target, file).await;
        assert_eq!(imported.status.code(), Some(0), "{}", says(&imported));
    }
    assert_eq!(rows(&target).await, rows(&source).await);

    // A filtered export holds only what it names.
    let probes = files.path().join("probes");
    export(&source, &probes, &["--stream-type", "sample"]).await;
    let text = std::fs::read_to_string(&probes).unwrap();
    let events: Vec<Value> = text.lines().map(|line| serde_json::from_str(line).unwrap()).collect();
    let (trailer, events) = events.split_last().unwrap();
    assert_eq!(events.len(), 12, "4 sample streams of 3");
    assert!(events.iter().all(|event| event["stream_type"] == "sample"));
    assert_eq!(trailer["trailer"]["count"], 12);
}
