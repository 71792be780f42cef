//! Test-only (feature `test-util`): writes events as given, past the
//! writer's checks and the write path's assertions, to build WALs that
//! break the log's own invariants (a gap in the seqs, a stream version
//! skipped, a broken chain, an event changed after it was written). What
//! reads a WAL must find each of them.
use rocksdb::WriteBatch;

use super::keys::*;
use super::store::Store;
use crate::api::Head;
use crate::chain::{self, Hash};
use crate::error::Result;
use crate::schema::Envelope;

/// Events staged onto a store's head, written by [`RawWriter::write`].
pub struct RawWriter<'a> {
    store: &'a Store,
    batch: WriteBatch,
    head: Head,
    /// The hash of the last event staged (the head's before the first).
    last: Hash,
}

impl<'a> RawWriter<'a> {
    pub fn new(store: &'a Store) -> Result<RawWriter<'a>> {
        let head = store.head()?;
        Ok(RawWriter { store, batch: WriteBatch::default(), head, last: head.hash })
    }

    /// Seals `event` onto the chain after the last event staged, under
    /// its own `seq`, `stream` and `stream_version`, whatever they are.
    pub fn sealed(&mut self, mut event: Envelope) -> Hash {
        event.hash.clear();
        let (bytes, hash) = chain::seal_encoded(&self.last, &event);
        self.put(&event, &bytes, hash);
        hash
    }

    /// Seals `event` onto `previous` instead of the chain's last hash: the
    /// link from the event before it is broken.
    pub fn sealed_onto(&mut self, previous: &Hash, mut event: Envelope) -> Hash {
        event.hash.clear();
        let (bytes, hash) = chain::seal_encoded(previous, &event);
        self.put(&event, &bytes, hash);
        hash
    }

    fn put(&mut self, event: &Envelope, bytes: &[u8], hash: Hash) {
        self.batch.put_cf(self.store.cf(CF_EVENTS), seq_key(event.seq), bytes);
        self.batch.put_cf(
            self.store.cf(CF_STREAMS),
            stream_key(&event.stream, event.stream_version),
            seq_key(event.seq),
        );
        self.batch.put_cf(self.store.cf(CF_IDS), &event.event_id, seq_key(event.seq));
        self.last = hash;
        // An event written over an earlier one leaves the head where it is.
        if event.seq >= self.head.last_seq {
            self.head = Head { last_seq: event.seq, hash };
        }
    }

    /// Writes what was staged, with the highest seq written as the head
    /// (or the head as it was, when only earlier events were rewritten).
    pub fn write(mut self) -> Result<Head> {
        let head = self.head;
        self.batch.put_cf(self.store.cf(CF_META), META_HEAD, head_value(head.last_seq, &head.hash));
        self.store.write(self.batch, true)?;
        Ok(head)
    }
}
