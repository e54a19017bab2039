//! The queue's check for `brain events verify`: the queue is built from the log into a
//! scratch queue (base `{ns}:qv:`, same hash tag, so the same slot), then every key of the
//! live generation and of the scratch is compared, one key at a time.
//!
//! The live queue moves while it is compared, so each key is read in one atomic script
//! together with the live checkpoint (`read_key.lua`); the scratch is first caught up to that
//! position, then read. Each key is thus compared at one position on both sides, and a busy
//! queue verifies clean. Memory is bounded by the largest single key (a ready set).
//!
//! What a claim does between a pop and the `start` event is not projected state: a mission
//! under a claim (listed in `{ns}:q:claims` at the moment of the read) may be missing from
//! its ready or delayed set, and its hash may say `ready`, without it being a finding. A
//! worker ends its claim once its `start` is in the log, which may be before the projector
//! applied it: so a key that differs is compared again once the live queue has reached the
//! head the log had at the end of the passes, and only what differs both times is reported.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::time::{Duration, Instant};

use projections::mission_queue::{MissionQueue, NAME, Scoring};
use redis::Script;
use sqlx::PgPool;

use super::{Queue, QueueStore, Readiness};
use crate::eventlog::audit::{BoxFuture, CheckReport, ModelCheck, Progress, Tick};
use crate::eventlog::projector::Feeder;
use crate::eventlog::store;

const READ_KEY: &str = include_str!("read_key.lua");
/// Keys one `SCAN` step asks for.
const SCAN_COUNT: usize = 1_000;
/// Times the check starts over when a rebuild swaps the live generation under it.
pub const GENERATION_ATTEMPTS: u32 = 3;
/// Positions the scratch build moves by between progress reports.
const BUILD_STEP: u64 = 50_000;
/// Keys that differed once kept to be compared again (each with at most
/// [`crate::eventlog::audit::FINDINGS_LISTED_MAX`] findings).
pub const SUSPECTS_MAX: usize = 1_000;
/// Longest the check waits for the live queue to reach the log's head before comparing the
/// suspect keys again, and how often it looks.
pub const RECHECK_WAIT: Duration = Duration::from_secs(10);
const RECHECK_POLL: Duration = Duration::from_millis(50);

/// The queue's [`ModelCheck`].
pub struct QueueCheck {
    pub pool: PgPool,
    pub queue: Queue,
    pub scoring: Scoring,
}

/// One key as `read_key.lua` reads it.
struct Read {
    generation: u64,
    position: u64,
    claimed: HashSet<String>,
    kind: String,
    contents: Vec<String>,
}

impl ModelCheck for QueueCheck {
    fn name(&self) -> &'static str {
        NAME
    }

    fn check<'a>(&'a self, progress: Progress<'a>) -> BoxFuture<'a, anyhow::Result<CheckReport>> {
        Box::pin(async move {
            let scratch = self.scratch();
            for _ in 0..GENERATION_ATTEMPTS {
                scratch.drop_all().await?;
                let compared = self.compare(&scratch, progress).await;
                scratch.drop_all().await?;
                if let Some(report) = compared? {
                    return Ok(report);
                }
            }
            anyhow::bail!(
                "the live queue was rebuilt during each of {GENERATION_ATTEMPTS} attempts"
            )
        })
    }
}

impl QueueCheck {
    /// A queue of its own beside the live one.
    fn scratch(&self) -> Queue {
        let mut scratch = self.queue.clone();
        scratch.base = format!("{}v:", self.queue.base.trim_end_matches(':'));
        scratch.ready = std::sync::Arc::new(Readiness::default());
        scratch
    }

    async fn read(&self, queue: &Queue, name: &str) -> anyhow::Result<Read> {
        let (generation, position, claimed, kind, contents): (
            u64,
            u64,
            Vec<String>,
            String,
            Vec<String>,
        ) = Script::new(READ_KEY)
            .key(queue.generation_key())
            .arg(&queue.base)
            .arg(name)
            .invoke_async(&mut queue.connection())
            .await?;
        Ok(Read { generation, position, claimed: claimed.into_iter().collect(), kind, contents })
    }

    /// One comparison of every key; `None` if the live generation changed meanwhile.
    async fn compare(
        &self,
        scratch: &Queue,
        progress: Progress<'_>,
    ) -> anyhow::Result<Option<CheckReport>> {
        let generation = self.queue.live_generation().await?;
        let start = self.queue.checkpoint().await?;
        let projector = MissionQueue { scoring: self.scoring };
        let mut feeder =
            Feeder::new(projector, scratch.store(Some(1)), self.pool.clone(), 1_000).await?;
        while feeder.checkpoint() < start {
            let to = start.min(feeder.checkpoint() + BUILD_STEP);
            feeder.catch_up_to(to).await?;
            progress(Tick { check: NAME, done: to, total: start });
        }
        let mut report = CheckReport::new(NAME);
        let mut suspects = Vec::new();
        let live_prefix = self.queue.prefix(generation);
        let scratch_prefix = scratch.prefix(1);
        let mut connection = self.queue.connection();

        // Every live key against the scratch's.
        let mut cursor = 0u64;
        loop {
            let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(format!("{live_prefix}*"))
                .arg("COUNT")
                .arg(SCAN_COUNT)
                .query_async(&mut connection)
                .await?;
            for key in keys {
                let name = &key[live_prefix.len()..];
                if name == "checkpoint" {
                    continue;
                }
                let live = self.read(&self.queue, name).await?;
                if live.generation != generation {
                    return Ok(None);
                }
                if live.position > feeder.checkpoint() {
                    feeder.catch_up_to(live.position).await?;
                }
                let rebuilt = self.read(scratch, name).await?;
                suspect(&mut suspects, &mut report, &key, name, &live, &rebuilt);
                report.checked += 1;
            }
            if next == 0 {
                break;
            }
            cursor = next;
        }

        // Every scratch key the live generation lacks.
        let mut cursor = 0u64;
        loop {
            let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(format!("{scratch_prefix}*"))
                .arg("COUNT")
                .arg(SCAN_COUNT)
                .query_async(&mut connection)
                .await?;
            for key in keys {
                let name = &key[scratch_prefix.len()..];
                if name == "checkpoint" {
                    continue;
                }
                let live = self.read(&self.queue, name).await?;
                if live.generation != generation {
                    return Ok(None);
                }
                if live.kind != "none" {
                    continue;
                }
                if live.position > feeder.checkpoint() {
                    feeder.catch_up_to(live.position).await?;
                }
                let rebuilt = self.read(scratch, name).await?;
                if rebuilt.kind != "none" {
                    suspect(
                        &mut suspects,
                        &mut report,
                        &format!("{live_prefix}{name}"),
                        name,
                        &live,
                        &rebuilt,
                    );
                    report.checked += 1;
                }
            }
            if next == 0 {
                break;
            }
            cursor = next;
        }
        if !self.confirm(suspects, &mut feeder, scratch, generation, &mut report).await? {
            return Ok(None);
        }
        report.position = Some(feeder.checkpoint());
        report.detail = format!(
            "generation {generation}, each key at the live queue's position as it moved, {start}..={}",
            feeder.checkpoint()
        );
        Ok(Some(report))
    }
}

impl QueueCheck {
    /// Compares the suspect keys again once the live queue has applied what the log held
    /// when the passes ended, and adds to `report` the differences found both times. What a
    /// worker does between its claim and the projector's applying its `start` (the claim
    /// ended, the start not yet applied) is gone by then; a real difference stays. False if
    /// the live generation changed.
    async fn confirm(
        &self,
        suspects: Vec<Suspect>,
        feeder: &mut Feeder<MissionQueue, QueueStore>,
        scratch: &Queue,
        generation: u64,
        report: &mut CheckReport,
    ) -> anyhow::Result<bool> {
        if suspects.is_empty() {
            return Ok(true);
        }
        let head = store::head(&self.pool).await?;
        let deadline = Instant::now() + RECHECK_WAIT;
        while self.queue.checkpoint().await? < head && Instant::now() < deadline {
            tokio::time::sleep(RECHECK_POLL).await;
        }
        for suspect in suspects {
            let live = self.read(&self.queue, &suspect.name).await?;
            if live.generation != generation {
                return Ok(false);
            }
            if live.position > feeder.checkpoint() {
                feeder.catch_up_to(live.position).await?;
            }
            let rebuilt = self.read(scratch, &suspect.name).await?;
            let mut again = CheckReport::new(NAME);
            compare_key(&mut again, &suspect.key, &suspect.name, &live, &rebuilt);
            for finding in again.findings {
                if suspect.found.contains(&finding.key) {
                    report.add(finding.key, finding.detail);
                }
            }
        }
        Ok(true)
    }
}

/// A key that differed once, and what was found in it.
struct Suspect {
    key: String,
    name: String,
    found: BTreeSet<String>,
}

/// Compares a key, keeping it as a suspect if it differs (past [`SUSPECTS_MAX`], its
/// differences go to `report` unconfirmed).
fn suspect(
    suspects: &mut Vec<Suspect>,
    report: &mut CheckReport,
    key: &str,
    name: &str,
    live: &Read,
    rebuilt: &Read,
) {
    let mut found = CheckReport::new(NAME);
    compare_key(&mut found, key, name, live, rebuilt);
    if found.findings_total == 0 {
        return;
    }
    if suspects.len() < SUSPECTS_MAX {
        let found = found.findings.into_iter().map(|finding| finding.key).collect();
        suspects.push(Suspect { key: key.to_owned(), name: name.to_owned(), found });
    } else {
        for finding in found.findings {
            report.add(finding.key, finding.detail);
        }
    }
}

/// The mission id of a key that belongs to one mission (`m:<id>`).
fn mission_of(name: &str) -> Option<&str> {
    name.strip_prefix("m:")
}

fn pairs(contents: &[String]) -> BTreeMap<&str, &str> {
    contents.chunks_exact(2).map(|pair| (pair[0].as_str(), pair[1].as_str())).collect()
}

/// Adds to `report` what differs between the live key and the scratch's.
fn compare_key(report: &mut CheckReport, key: &str, name: &str, live: &Read, rebuilt: &Read) {
    let claimed = |id: &str| live.claimed.contains(id);
    if mission_of(name).is_some_and(claimed) {
        return;
    }
    let collection = |kind: &str| kind == "zset" || kind == "set";
    let kind = match (live.kind.as_str(), rebuilt.kind.as_str()) {
        (a, b) if a == b => a,
        // Redis drops a set once it is empty: one missing on one side is compared member by
        // member with an empty one, so that members under a claim are still no finding.
        ("none", kind) | (kind, "none") if collection(kind) => kind,
        (a, b) => {
            let what = match (a, b) {
                ("none", kind) => format!("missing from the live queue (the log's is a {kind})"),
                (kind, "none") => format!("a {kind} the log's queue does not hold"),
                (live, log) => format!("a {live} where the log's queue holds a {log}"),
            };
            report.add(key, what);
            return;
        }
    };
    match kind {
        "zset" | "hash" => {
            let (on_live, on_log) = (pairs(&live.contents), pairs(&rebuilt.contents));
            let fields: BTreeSet<&str> = on_live.keys().chain(on_log.keys()).copied().collect();
            let mut differing = Vec::new();
            for field in fields {
                let (a, b) = (on_live.get(field), on_log.get(field));
                if a == b {
                    continue;
                }
                if kind == "zset" {
                    if claimed(field) {
                        continue;
                    }
                    let what = match (a, b) {
                        (None, Some(score)) => {
                            format!("missing from the live set (log score {score})")
                        }
                        (Some(score), None) => {
                            format!("in the live set (score {score}), not in the log's")
                        }
                        (a, b) => {
                            format!("score live {}, log {}", a.unwrap_or(&"-"), b.unwrap_or(&"-"))
                        }
                    };
                    report.add(format!("{key} member {field}"), what);
                } else {
                    differing.push(format!(
                        "{field}: live {}, log {}",
                        a.unwrap_or(&"(none)"),
                        b.unwrap_or(&"(none)")
                    ));
                }
            }
            if !differing.is_empty() {
                report.add(key, differing.join("; "));
            }
        }
        "set" => {
            let on_live: BTreeSet<&String> = live.contents.iter().collect();
            let on_log: BTreeSet<&String> = rebuilt.contents.iter().collect();
            for member in on_log.difference(&on_live) {
                report.add(format!("{key} member {member}"), "missing from the live set");
            }
            for member in on_live.difference(&on_log) {
                report.add(format!("{key} member {member}"), "in the live set, not in the log's");
            }
        }
        _ => {
            if live.contents != rebuilt.contents {
                report.add(key, format!("live {:?}, log {:?}", live.contents, rebuilt.contents));
            }
        }
    }
}
