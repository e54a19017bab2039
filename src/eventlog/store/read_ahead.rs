//! A long read of the log with several pages in flight: how a rebuild, a heal or a scratch
//! build for `verify` reads the stretch it replays.
//!
//! Positions are known in advance (the committer hands them out without a hole), so the
//! stretch is cut into fixed ranges of positions and the next [`READ_AHEAD_PAGES`] ranges are
//! read on their own tasks, on their own connections, while the caller applies the page in
//! hand. PostgreSQL's scans, the decoding of rows and the caller's writes then run at once,
//! not in turn. Pages still come out in position order and contiguous: a page that stopped
//! short of its range's end (full by count or by bytes) is followed by the rest of that range
//! before the next range's page.

use std::collections::VecDeque;
use std::sync::Arc;

use futures::future::BoxFuture;
use tokio::task::JoinHandle;

use super::{Page, StoreError};

/// Ranges read ahead of the page being applied: each holds a pooled connection while it
/// runs, so a process's catch-ups at start (one per projector) stay well inside its pool.
pub const READ_AHEAD_PAGES: usize = 2;

/// Reads the events wanted in `after < position <= up_to` (see [`super::read_wanted`]).
pub type ReadRange =
    Arc<dyn Fn(u64, u64) -> BoxFuture<'static, Result<Page, StoreError>> + Send + Sync>;

type InFlight = (u64, u64, JoinHandle<Result<Page, StoreError>>);

/// The pages of `after < position <= up_to`, in order, with up to `depth` more ranges of
/// `span` positions being read ahead (none with a `depth` of 0: one page at a time).
pub struct ReadAhead {
    read: ReadRange,
    /// The start of the first range not yet asked for.
    next: u64,
    up_to: u64,
    span: u64,
    depth: usize,
    in_flight: VecDeque<InFlight>,
}

impl ReadAhead {
    pub fn new(read: ReadRange, after: u64, up_to: u64, span: u64, depth: usize) -> ReadAhead {
        ReadAhead { read, next: after, up_to, span: span.max(1), depth, in_flight: VecDeque::new() }
    }

    /// The next page, whose events follow the last page's `through` and end at its own; `None`
    /// once `up_to` is reached. After an error, [`ReadAhead::restart`] before reading on.
    pub async fn next(&mut self) -> Option<Result<Page, StoreError>> {
        self.fill();
        let (_, to, reading) = self.in_flight.pop_front()?;
        let page = match reading.await {
            Ok(Ok(page)) => page,
            Ok(Err(error)) => return Some(Err(self.failed(error))),
            Err(join) => {
                let error = StoreError::Corrupt(format!("a read of the log ended: {join}"));
                return Some(Err(self.failed(error)));
            }
        };
        if page.through < to {
            let rest = self.spawn(page.through, to);
            self.in_flight.push_front(rest);
        }
        Some(Ok(page))
    }

    /// Drops what is in flight and reads on from `after` (a rebuild moved the reader's
    /// checkpoint).
    pub fn restart(&mut self, after: u64) {
        self.abort();
        self.next = after;
    }

    fn failed(&mut self, error: StoreError) -> StoreError {
        self.abort();
        error
    }

    fn fill(&mut self) {
        while self.in_flight.len() < self.depth + 1 && self.next < self.up_to {
            let to = self.next.saturating_add(self.span).min(self.up_to);
            let reading = self.spawn(self.next, to);
            self.in_flight.push_back(reading);
            self.next = to;
        }
    }

    fn spawn(&self, after: u64, to: u64) -> InFlight {
        (after, to, tokio::spawn((self.read)(after, to)))
    }

    fn abort(&mut self) {
        for (from, _, reading) in self.in_flight.drain(..) {
            reading.abort();
            self.next = self.next.min(from);
        }
    }
}

impl Drop for ReadAhead {
    fn drop(&mut self) {
        self.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    /// A log of positions 1..=head whose reads return at most `limit` events of a range and
    /// note each range asked for.
    fn fake(limit: u64, asked: Arc<Mutex<Vec<(u64, u64)>>>) -> ReadRange {
        Arc::new(move |after, to| {
            asked.lock().unwrap().push((after, to));
            Box::pin(async move {
                let through = to.min(after + limit);
                let events = (after + 1..=through).map(event).collect();
                Ok(Page { events, through })
            })
        })
    }

    fn event(position: u64) -> domain::RecordedEvent {
        domain::RecordedEvent {
            global_position: position,
            stream_type: domain::StreamType::parse("mission").unwrap(),
            stream_id: domain::StreamId::parse("m-1").unwrap(),
            version: position,
            event_id: uuid::Uuid::now_v7(),
            event_type: "MissionStarted".into(),
            schema_version: 1,
            payload: serde_json::Value::Null,
            metadata: domain::EventMetadata::new("user:a", time::OffsetDateTime::UNIX_EPOCH),
            recorded_at: time::OffsetDateTime::UNIX_EPOCH,
        }
    }

    async fn positions(mut reader: ReadAhead) -> Vec<u64> {
        let mut seen = Vec::new();
        let mut through = None;
        while let Some(page) = reader.next().await {
            let page = page.unwrap();
            assert!(through.is_none_or(|last| page.through > last), "pages move forward");
            seen.extend(page.events.iter().map(|event| event.global_position));
            through = Some(page.through);
        }
        seen
    }

    #[tokio::test]
    async fn pages_come_in_order_without_a_hole_whatever_the_ranges_hold() {
        for (span, limit, depth) in [(10, 10, 2), (10, 3, 2), (7, 100, 0), (1, 1, 4)] {
            let asked = Arc::new(Mutex::new(Vec::new()));
            let reader = ReadAhead::new(fake(limit, asked.clone()), 5, 58, span, depth);
            assert_eq!(positions(reader).await, (6..=58).collect::<Vec<_>>(), "{span} {limit}");
            let asked = asked.lock().unwrap();
            assert!(asked.iter().all(|&(after, to)| after < to && to - after <= span));
        }
    }

    #[tokio::test]
    async fn a_restart_reads_on_from_where_it_is_told() {
        let asked = Arc::new(Mutex::new(Vec::new()));
        let mut reader = ReadAhead::new(fake(10, asked), 0, 100, 10, 2);
        let first = reader.next().await.unwrap().unwrap();
        assert_eq!(first.through, 10);
        reader.restart(40);
        let next = reader.next().await.unwrap().unwrap();
        assert_eq!(next.events.first().map(|event| event.global_position), Some(41));
        assert_eq!(positions(reader).await, (51..=100).collect::<Vec<_>>());
    }

    #[tokio::test]
    async fn an_empty_stretch_has_no_page() {
        let asked = Arc::new(Mutex::new(Vec::new()));
        let mut reader = ReadAhead::new(fake(10, asked.clone()), 9, 9, 10, 2);
        assert!(reader.next().await.is_none());
        assert!(asked.lock().unwrap().is_empty());
    }
}
