//! Checking the event chain ([`store::chain`], decision 0046) against what the store holds
//! now: every event's stored hash is recomputed from its stored content and its
//! predecessor's stored hash, in pages of [`VERIFY_PAGE_EVENTS`] in position order, and the
//! head's hash against the last event's.
//!
//! Each event is checked against its predecessor's *stored* hash, so one edited row is
//! named alone: an edited payload, metadata, type, stream or version fails at that position;
//! an edited stored hash fails there and at the next position. Someone who can write the
//! database can also recompute every hash after an edit, up to the head: what catches that
//! is a head recorded elsewhere earlier (`brain events head`), given back as an
//! [`Anchor`]: the stored hash at its position must still be the one recorded.

use std::time::{Duration, Instant};

use serde::Serialize;
use sqlx::PgPool;

use crate::eventlog::store::StoreError;
use crate::eventlog::store::chain::{self, ChainHead, GENESIS};

/// Events one page of [`verify`] reads (and at most [`crate::eventlog::store::PAGE_BYTES_MAX`]
/// bytes of them).
pub const VERIFY_PAGE_EVENTS: i64 = 1_000;
/// Findings a report lists; past this it only counts them.
pub const FINDINGS_LISTED_MAX: usize = 100;

/// Lower-case hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut text = String::with_capacity(bytes.len() * 2);
    for byte in bytes {
        text.push(DIGITS[usize::from(byte >> 4)] as char);
        text.push(DIGITS[usize::from(byte & 0xf)] as char);
    }
    text
}

/// 32 bytes from 64 hex digits.
pub fn parse_hash(text: &str) -> Option<[u8; 32]> {
    if text.len() != 64 || !text.is_ascii() {
        return None;
    }
    let mut hash = [0u8; 32];
    for (index, byte) in hash.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&text[index * 2..index * 2 + 2], 16).ok()?;
    }
    Some(hash)
}

/// The head of the log: its last position, and the chain's hash there.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Head {
    pub position: u64,
    /// How far the chain has been computed: `position`, unless events were stored without a
    /// hash and not chained yet (see `store::chain::fill`).
    pub chain_position: u64,
    /// The hash of the event at `chain_position` (32 zero bytes for an empty log), in hex.
    pub chain_hash: String,
}

impl From<ChainHead> for Head {
    fn from(head: ChainHead) -> Head {
        Head {
            position: head.position,
            chain_position: head.chain_position,
            chain_hash: hex(&head.hash),
        }
    }
}

pub async fn head(pool: &PgPool) -> Result<Head, StoreError> {
    chain::chain_head(pool).await.map(Head::from)
}

/// A head recorded earlier: the chain's hash at `position` must still be `hash`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Anchor {
    pub position: u64,
    pub hash: [u8; 32],
}

impl std::str::FromStr for Anchor {
    type Err = String;

    /// `POSITION:HASH`, as `brain events head` prints them.
    fn from_str(text: &str) -> Result<Anchor, String> {
        let refused = || format!("{text:?} is not POSITION:HASH (a position and 64 hex digits)");
        let (position, hash) = text.split_once(':').ok_or_else(refused)?;
        let position = position.parse().map_err(|_| refused())?;
        let hash = parse_hash(hash).ok_or_else(refused)?;
        Ok(Anchor { position, hash })
    }
}

/// What is wrong at one position.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FindingKind {
    /// The stored hash is not the one the stored content and the previous hash give: the
    /// content (payload, metadata, type, stream, version, id) or the hash was changed.
    Mismatch,
    /// No event at a position below the head.
    Missing,
    /// The event has no hash although the chain was computed past it.
    Unchained,
    /// The payload or metadata no longer parses as JSON.
    Unreadable,
    /// The head's hash is not the last event's.
    Head,
    /// The hash at the anchor's position is not the one recorded.
    Anchor,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    pub position: u64,
    pub kind: FindingKind,
    pub detail: String,
}

/// What [`verify`] found.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// The head when the check started; events appended since are not checked.
    pub head: Head,
    pub events_checked: u64,
    /// True when nothing was found.
    pub clean: bool,
    /// The first position with a finding.
    pub first_position: Option<u64>,
    /// Up to [`FINDINGS_LISTED_MAX`] findings, in position order.
    pub findings: Vec<Finding>,
    pub findings_total: u64,
    /// Positions after `head.chain_position` are not chained yet and were not checked.
    pub unchained_from: Option<u64>,
    pub seconds: f64,
}

impl Report {
    fn add(&mut self, position: u64, kind: FindingKind, detail: String) {
        self.findings_total += 1;
        self.clean = false;
        self.first_position = Some(self.first_position.map_or(position, |p| p.min(position)));
        if self.findings.len() < FINDINGS_LISTED_MAX {
            self.findings.push(Finding { position, kind, detail });
        }
    }
}

/// Where a check has got to, for a progress line.
#[derive(Debug, Clone, Copy)]
pub struct Progress {
    pub checked: u64,
    pub through: u64,
    pub head: u64,
    pub elapsed: Duration,
}

/// Recomputes the chain of every event up to the head as it was at the start, page by page,
/// calling `progress` after each page. An error means the check could not run to its end
/// (the store did not answer); what it found is in the report.
pub async fn verify(
    pool: &PgPool,
    anchor: Option<Anchor>,
    mut progress: impl FnMut(Progress),
) -> Result<Report, StoreError> {
    let started = Instant::now();
    let head = chain::chain_head(pool).await?;
    // Only the chained part can be checked; events after it get their hashes from `fill`.
    let end = head.chain_position.min(head.position);
    let mut report = Report {
        head: Head::from(head),
        events_checked: 0,
        clean: true,
        first_position: None,
        findings: Vec::new(),
        findings_total: 0,
        unchained_from: (end < head.position).then_some(end + 1),
        seconds: 0.0,
    };
    if let Some(anchor) = anchor
        && anchor.position > end
    {
        let detail = format!("the chain reaches only position {end}");
        report.add(anchor.position, FindingKind::Anchor, detail);
    }
    let (mut after, mut previous) = (0u64, GENESIS);
    let mut scratch = Vec::new();
    while after < end {
        let rows = chain::read_rows(pool, after, end, VERIFY_PAGE_EVENTS).await?;
        if rows.is_empty() {
            let detail = format!("no events in {}..={end}", after + 1);
            report.add(after + 1, FindingKind::Missing, detail);
            break;
        }
        for row in &rows {
            let expected = after + 1;
            if row.position != expected {
                let detail = format!("no events in {expected}..={}", row.position - 1);
                report.add(expected, FindingKind::Missing, detail);
            }
            let stored = row.chain_hash.as_deref().and_then(|hash| <[u8; 32]>::try_from(hash).ok());
            match (stored, row.digest(&mut scratch)) {
                (None, _) => {
                    report.add(row.position, FindingKind::Unchained, "no chain hash".into());
                }
                (Some(_), Err(what)) => report.add(row.position, FindingKind::Unreadable, what),
                (Some(stored), Ok(digest)) => {
                    let computed = chain::link(&previous, row.position, row.version, &digest);
                    if computed != stored {
                        let detail = format!(
                            "stored hash {} but its content and the previous hash give {}",
                            hex(&stored),
                            hex(&computed)
                        );
                        report.add(row.position, FindingKind::Mismatch, detail);
                    }
                }
            }
            if let Some(anchor) = anchor
                && anchor.position == row.position
                && stored != Some(anchor.hash)
            {
                let detail = format!("recorded hash {}", hex(&anchor.hash));
                report.add(row.position, FindingKind::Anchor, detail);
            }
            // The next event is checked against this one's stored hash, so one edit is
            // named once, not at every position after it.
            previous = stored.unwrap_or(GENESIS);
            after = row.position;
            report.events_checked += 1;
        }
        progress(Progress {
            checked: report.events_checked,
            through: after,
            head: end,
            elapsed: started.elapsed(),
        });
    }
    if end > 0 && after == end && previous != head.hash {
        let detail = format!("head hash {} but the event's is {}", hex(&head.hash), hex(&previous));
        report.add(end, FindingKind::Head, detail);
    }
    if let Some(anchor) = anchor
        && anchor.position == 0
        && anchor.hash != GENESIS
    {
        report.add(0, FindingKind::Anchor, "position 0's hash is 32 zero bytes".into());
    }
    report.findings.sort_by_key(|finding| finding.position);
    report.seconds = started.elapsed().as_secs_f64();
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_go_to_hex_and_back() {
        let hash: [u8; 32] = std::array::from_fn(|i| (i * 9) as u8);
        assert_eq!(parse_hash(&hex(&hash)), Some(hash));
        assert_eq!(hex(&[0x0f, 0xa0]), "0fa0");
        assert_eq!(parse_hash("00"), None);
        assert_eq!(parse_hash(&"g".repeat(64)), None);
    }

    #[test]
    fn an_anchor_is_a_position_and_a_hash() {
        let text = format!("42:{}", "ab".repeat(32));
        assert_eq!(text.parse::<Anchor>(), Ok(Anchor { position: 42, hash: [0xab; 32] }));
        assert!("42".parse::<Anchor>().is_err());
        assert!(format!("x:{}", "ab".repeat(32)).parse::<Anchor>().is_err());
        assert!("42:abc".parse::<Anchor>().is_err());
    }
}
