//! Staging writes into one atomic `WriteBatch`: the one place the WAL's key
//! layout is written for an event (the embedded writer and the mirror's
//! follower alike), and where the write path's invariants are asserted —
//! seqs continue the head by one, and the head only moves forward.
use rocksdb::WriteBatch;

use super::keys::*;
use super::store::Store;
use crate::api::{Appended, Head};
use crate::chain::{self, Hash};
use crate::codec::MAX_EVENT_BYTES;
use crate::error::{Error, Result};
use crate::schema::Envelope;

/// A batch being built on top of `base`, the head the WAL had before it.
pub(crate) struct Staged<'a> {
    store: &'a Store,
    batch: WriteBatch,
    base: Head,
    head: Head,
    /// The events staged, sealed (with their hashes), in seq order.
    sealed: Vec<Envelope>,
}

impl<'a> Staged<'a> {
    pub fn new(store: &'a Store, base: Head) -> Self {
        Self::with_capacity(store, base, 0)
    }

    /// [`Staged::new`] with room for `events` events.
    pub fn with_capacity(store: &'a Store, base: Head, events: usize) -> Self {
        Staged { store, batch: WriteBatch::default(), base, head: base, sealed: Vec::with_capacity(events) }
    }

    /// The head once this batch is written.
    pub fn head(&self) -> Head {
        self.head
    }

    /// Seals `event` as the next event (its `seq`, `stream` and
    /// `stream_version` already set; the caller checked the version
    /// continues its stream) and stages it with its index entries. An event
    /// whose sealed bytes would be over [`MAX_EVENT_BYTES`] is refused: no
    /// reader could decode it.
    pub fn event(&mut self, mut event: Envelope) -> Result<Hash> {
        let seq = self.head.last_seq + 1;
        assert_eq!(event.seq, seq, "a write continues the log's seqs by one");
        assert!(event.stream_version >= 1, "stream versions start at 1");
        event.hash.clear();
        let (bytes, hash) = chain::seal_encoded(&self.head.hash, &event);
        if bytes.len() > MAX_EVENT_BYTES {
            return Err(Error::TooLarge { size_bytes: bytes.len(), limit_bytes: MAX_EVENT_BYTES });
        }
        self.batch.put_cf(self.store.cf(CF_EVENTS), seq_key(seq), &bytes);
        self.batch.put_cf(self.store.cf(CF_STREAMS), stream_key(&event.stream, event.stream_version), seq_key(seq));
        self.batch.put_cf(self.store.cf(CF_IDS), &event.event_id, seq_key(seq));
        self.head = Head { last_seq: seq, hash };
        event.hash = hash.to_vec();
        self.sealed.push(event);
        Ok(hash)
    }

    /// Records what an idempotency key's append gave.
    pub fn idempotency_key(&mut self, key: &str, appended: &Appended) {
        self.batch.put_cf(self.store.cf(CF_IDEM), key.as_bytes(), appended_value(appended));
    }

    /// Whether there is nothing to write.
    pub fn is_empty(&self) -> bool {
        self.batch.is_empty()
    }

    /// Writes the batch with the new head, in one atomic write (fsynced
    /// when `sync`); returns the head and the events written, sealed (as a
    /// read of the store would give them).
    pub fn write(mut self, sync: bool) -> Result<(Head, Vec<Envelope>)> {
        assert!(self.head.last_seq >= self.base.last_seq, "the head only moves forward");
        let head = self.head;
        self.batch.put_cf(self.store.cf(CF_META), META_HEAD, head_value(head.last_seq, &head.hash));
        self.store.write(self.batch, sync)?;
        #[cfg(feature = "expensive-checks")]
        check_written(self.store, self.base, head, &self.sealed);
        Ok((head, self.sealed))
    }
}

/// Reads back what a write stored and re-checks the chain from the base:
/// every event decodes under its seq, to the event sealed, and hashes to
/// the next link.
#[cfg(feature = "expensive-checks")]
fn check_written(store: &Store, base: Head, head: Head, sealed: &[Envelope]) {
    let mut previous = base.hash;
    let count = usize::try_from(head.last_seq - base.last_seq).expect("a batch fits in memory");
    let read = store
        .for_each_stored(base.last_seq + 1, count, |seq, bytes| {
            let decoded = crate::codec::decode_at(seq, bytes)?;
            let index = usize::try_from(seq - base.last_seq - 1).expect("a batch fits in memory");
            assert_eq!(decoded, sealed[index], "the event kept in memory is the event stored");
            previous = chain::check_stored(&previous, bytes)
                .map_err(|reason| Error::Corrupt { seq, reason: reason.into() })?;
            Ok(())
        })
        .expect("a batch just written reads back");
    assert_eq!(read, count, "every event written reads back");
    assert_eq!(previous, head.hash, "the chain read back ends at the head written");
}
