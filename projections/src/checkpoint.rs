//! The checkpoint rule, written once for every projector and every source of events.
//!
//! Events arrive by position. A projector applies position `checkpoint + 1` next; anything at
//! or below the checkpoint was already applied and is skipped (a redelivery, a replay after a
//! restart); anything further ahead means events in between are missing and must be fetched
//! from the event store first.

/// What to do with an event at a given position.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admit {
    /// Already applied: skip it.
    Seen,
    /// The next one: apply it.
    Next,
    /// Events `from..=to` are missing before this one: fetch and apply them first.
    Hole { from: u64, to: u64 },
}

/// The last applied position, advanced only through [`Checkpoint::advance`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Checkpoint(u64);

impl Checkpoint {
    pub fn new(position: u64) -> Checkpoint {
        Checkpoint(position)
    }

    pub fn position(self) -> u64 {
        self.0
    }

    pub fn admit(self, position: u64) -> Admit {
        match position {
            p if p <= self.0 => Admit::Seen,
            p if p == self.0 + 1 => Admit::Next,
            p => Admit::Hole { from: self.0 + 1, to: p - 1 },
        }
    }

    /// Moves past `position`, which must be the next one.
    pub fn advance(&mut self, position: u64) {
        assert_eq!(position, self.0 + 1, "checkpoint may only advance by one position");
        self.0 = position;
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn positions_are_seen_next_or_after_a_hole() {
        let checkpoint = Checkpoint::new(10);
        assert_eq!(checkpoint.admit(3), Admit::Seen);
        assert_eq!(checkpoint.admit(10), Admit::Seen);
        assert_eq!(checkpoint.admit(11), Admit::Next);
        assert_eq!(checkpoint.admit(14), Admit::Hole { from: 11, to: 13 });
    }

    proptest! {
        /// Whatever mix of redeliveries and reorderings arrives, admitting and filling holes
        /// applies every position exactly once, in order.
        #[test]
        fn any_delivery_order_applies_each_position_once_in_order(
            deliveries in proptest::collection::vec(1u64..60, 0..200)
        ) {
            let mut checkpoint = Checkpoint::default();
            let mut applied = Vec::new();
            for position in deliveries {
                match checkpoint.admit(position) {
                    Admit::Seen => {}
                    Admit::Next => { checkpoint.advance(position); applied.push(position); }
                    Admit::Hole { from, to } => {
                        for missing in from..=to { checkpoint.advance(missing); applied.push(missing); }
                        checkpoint.advance(position);
                        applied.push(position);
                    }
                }
            }
            let expected: Vec<u64> = (1..=checkpoint.position()).collect();
            prop_assert_eq!(applied, expected);
        }
    }
}
