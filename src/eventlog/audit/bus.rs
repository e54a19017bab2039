//! Whether the JetStream stream mirrors the log: no message past the log's head, one message
//! per sequence from the stream's first to its last, and each the store's event at that
//! position (sequence = position, `Nats-Msg-Id` = event id, the same payload, metadata,
//! subject and routing headers: [`crate::eventlog::mirror`]'s comparison, the relay's own).
//!
//! The stream is compared up to its last message: the relay trailing the log by a few events
//! is no finding (the detail says how far behind it is). Sequences below the stream's first
//! were removed by its limits and are not checked. By default every message is read
//! ([`mirror::CHECK_CONCURRENCY`] at a time); `sample` reads that many at random positions
//! instead, for a quick look at a long log.

use std::collections::BTreeSet;

use async_nats::jetstream;
use sqlx::PgPool;

use super::{CheckReport, Progress, Tick};
use crate::config::Namespace;
use crate::eventlog::{bus, mirror, store};

pub async fn check(
    pool: &PgPool,
    jetstream: &jetstream::Context,
    namespace: &Namespace,
    sample: Option<u64>,
    progress: Progress<'_>,
) -> anyhow::Result<CheckReport> {
    let mut report = CheckReport::new("jetstream");
    let name = bus::stream_name(namespace);
    let head = store::head(pool).await?;
    let mut stream = match jetstream.get_stream(&name).await {
        Ok(stream) => stream,
        Err(error) if error.to_string().contains("not found") => {
            report.detail = format!("no stream {name}");
            if head > 0 {
                report
                    .add(format!("stream {name}"), format!("missing; the log holds {head} events"));
            }
            return Ok(report);
        }
        Err(error) => anyhow::bail!("reading stream {name}: {error}"),
    };
    let state = stream.info().await?.state.clone();
    let (first, last, messages) = (state.first_sequence, state.last_sequence, state.messages);
    let end = last.min(head);
    report.position = Some(end);
    report.detail =
        format!("stream {name}, sequences {}..={end} against the log's head {head}", first.max(1));
    if end < head {
        report.detail.push_str(&format!(" (the relay is {} behind)", head - end));
    }
    if first > 1 {
        report.detail.push_str(&format!("; below {first} removed by the stream's limits"));
    }
    if last > head {
        report.add(
            format!("message {}", head + 1),
            format!("the stream holds {} messages past the log's head {head}", last - head),
        );
    }
    let expected = if messages == 0 { 0 } else { last + 1 - first.max(1) };
    if messages != expected {
        report.add(
            format!("stream {name}"),
            format!(
                "{messages} messages for sequences {}..={last}: {} missing",
                first.max(1),
                expected.saturating_sub(messages)
            ),
        );
    }
    if messages == 0 || end < first.max(1) {
        return Ok(report);
    }
    let lowest = first.max(1);
    let span = end - lowest + 1;
    match sample {
        Some(sample) if sample < span => {
            report.detail.push_str(&format!("; {sample} at random"));
            for (index, sequence) in random_positions(lowest, end, sample).into_iter().enumerate() {
                if let Some(kind) = mirror::check_one(pool, &stream, namespace, sequence).await? {
                    let disagreement = mirror::Disagreement { position: sequence, kind };
                    report.add(format!("message {sequence}"), disagreement.to_string());
                }
                report.checked += 1;
                progress(Tick { check: "jetstream", done: index as u64 + 1, total: sample });
            }
        }
        _ => {
            let (mut found, mut unlisted) = (Vec::new(), 0);
            let checked = mirror::each_disagreement(
                pool,
                &stream,
                namespace,
                lowest - 1,
                end,
                |disagreement| {
                    found.push(disagreement);
                    // Only the listed ones are kept; the rest are counted.
                    if found.len() > super::FINDINGS_LISTED_MAX {
                        found.truncate(super::FINDINGS_LISTED_MAX);
                        unlisted += 1;
                    }
                    true
                },
                |to| progress(Tick { check: "jetstream", done: to - lowest + 1, total: span }),
            )
            .await?;
            report.checked = checked;
            for disagreement in found {
                report.add(format!("message {}", disagreement.position), disagreement.to_string());
            }
            report.findings_total += unlisted;
        }
    }
    Ok(report)
}

/// `count` distinct positions in `lowest..=highest` (which holds more than `count`), in
/// order, drawn from the OS's randomness through UUIDv4.
fn random_positions(lowest: u64, highest: u64, count: u64) -> BTreeSet<u64> {
    let span = highest - lowest + 1;
    let mut chosen = BTreeSet::new();
    while (chosen.len() as u64) < count {
        let draw = uuid::Uuid::new_v4().as_u64_pair().0 % span;
        chosen.insert(lowest + draw);
    }
    chosen
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_positions_are_distinct_and_within_the_range() {
        let chosen = random_positions(5, 14, 9);
        assert_eq!(chosen.len(), 9);
        assert!(chosen.iter().all(|p| (5..=14).contains(p)));
    }
}
