//! [`Recent`]: the events a WAL wrote last, kept in memory (bounded) as
//! their writer sealed them, so that a subscription at the tail (a node's
//! projection worker, a few events behind the writer) takes them from here
//! instead of reading and decoding them back from RocksDB. A subscription
//! behind the kept window reads the store as before; what is kept is only
//! ever handed out up to the durable head, like a read of the store.
use std::collections::VecDeque;
use std::sync::{Arc, Mutex, PoisonError};

use super::{Durable, Store};
use crate::error::Result;
use crate::schema::Envelope;

/// Events kept, about: the oldest batches go once there are more.
const KEPT_EVENTS: usize = 8192;

/// Written batches in seq order, without gaps between them.
#[derive(Debug, Default)]
pub(crate) struct Recent {
    batches: Mutex<Kept>,
}

#[derive(Debug, Default)]
struct Kept {
    batches: VecDeque<Arc<Vec<Envelope>>>,
    events: usize,
}

impl Recent {
    /// Keeps a batch just written (sealed, in seq order). A batch that does
    /// not continue the last one kept starts the window over.
    pub fn keep(&self, batch: Vec<Envelope>) {
        let Some(first) = batch.first().map(|e| e.seq) else { return };
        let mut kept = self.batches.lock().unwrap_or_else(PoisonError::into_inner);
        let continues = kept.batches.back().and_then(|b| b.last()).is_some_and(|last| last.seq + 1 == first);
        if !continues {
            kept.batches.clear();
            kept.events = 0;
        }
        kept.events += batch.len();
        kept.batches.push_back(Arc::new(batch));
        while kept.events > KEPT_EVENTS && kept.batches.len() > 1 {
            let dropped = kept.batches.pop_front().expect("more than one batch");
            kept.events -= dropped.len();
        }
    }

    /// Copies of the events from `from` through `through` (at most `max`),
    /// if the window still holds `from`; `None` sends the caller to the
    /// store. The copies are made outside the lock.
    pub fn read(&self, from: u64, through: u64, max: usize) -> Option<Vec<Envelope>> {
        let batches: Vec<Arc<Vec<Envelope>>> = {
            let kept = self.batches.lock().unwrap_or_else(PoisonError::into_inner);
            let oldest = kept.batches.front()?.first()?.seq;
            if from < oldest || kept.batches.back()?.last()?.seq < from {
                return None;
            }
            kept.batches.iter().filter(|b| b.last().is_some_and(|last| last.seq >= from)).cloned().collect()
        };
        // Sized at once: collected from this iterator, the vector would
        // grow by doubling, copying every envelope at each step.
        let want = usize::try_from(through.saturating_sub(from).saturating_add(1)).unwrap_or(usize::MAX).min(max);
        let mut events = Vec::with_capacity(want.min(batches.iter().map(|b| b.len()).sum()));
        events.extend(
            batches
                .iter()
                .flat_map(|b| b.iter())
                .skip_while(|e| e.seq < from)
                .take_while(|e| e.seq <= through)
                .take(max)
                .cloned(),
        );
        Some(events)
    }
}

/// Up to `max` events from `from`: those the writer kept when it still
/// holds them all (through the durable head), else what the store has. A
/// read below the prune mark goes to the store, which refuses it, as it
/// would had nothing been kept.
pub(crate) fn read(store: &Store, durable: &Durable, from: u64, max: usize) -> Result<Vec<Envelope>> {
    let head = durable.head().last_seq;
    if from <= head && store.check_not_pruned(from).is_ok() {
        let want = usize::try_from(head - from + 1).unwrap_or(usize::MAX).min(max);
        if let Some(kept) = durable.recent(from, head, want).filter(|kept| kept.len() == want) {
            return Ok(kept);
        }
    }
    store.read(from, max)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(seqs: std::ops::RangeInclusive<u64>) -> Vec<Envelope> {
        seqs.map(|seq| Envelope { seq, ..Default::default() }).collect()
    }

    fn seqs(events: Option<Vec<Envelope>>) -> Option<Vec<u64>> {
        events.map(|events| events.iter().map(|e| e.seq).collect())
    }

    #[test]
    fn reads_within_the_window_and_sends_the_rest_to_the_store() {
        let recent = Recent::default();
        assert_eq!(seqs(recent.read(1, 10, 10)), None, "nothing kept yet");
        recent.keep(batch(1..=3));
        recent.keep(batch(4..=6));
        assert_eq!(seqs(recent.read(2, 5, 10)), Some(vec![2, 3, 4, 5]), "across batches, up to `through`");
        assert_eq!(seqs(recent.read(2, 6, 2)), Some(vec![2, 3]), "at most `max`");
        assert_eq!(seqs(recent.read(7, 9, 10)), None, "beyond what was written");
        // A batch that does not continue the window starts it over.
        recent.keep(batch(9..=9));
        assert_eq!(seqs(recent.read(4, 9, 10)), None);
        assert_eq!(seqs(recent.read(9, 9, 10)), Some(vec![9]));
    }

    #[test]
    fn the_oldest_batches_go_beyond_the_bound() {
        let recent = Recent::default();
        let size = KEPT_EVENTS as u64 / 2;
        for b in 0..4 {
            recent.keep(batch(b * size + 1..=(b + 1) * size));
        }
        assert_eq!(seqs(recent.read(1, 1, 1)), None, "the first batches are gone");
        let from = 2 * size + 1;
        assert_eq!(seqs(recent.read(from, from, 1)), Some(vec![from]), "the last two are kept");
    }
}
