//! Writes into the WAL events that another log already ordered (the
//! JetStream stream, in distributed mode): the mirror's writer.
//!
//! The source assigns the sequence; the follower checks it continues the
//! WAL without a gap, that each stream's versions continue without a gap,
//! computes the hash chain, and writes each batch with its position in one
//! atomic `WriteBatch`, so a crash resumes exactly after the last batch.
use std::collections::HashMap;
use std::sync::Arc;

use super::stage::Staged;
use super::store::Store;
use super::writer::{Last, Versions};
use crate::api::{Appended, Head};
use crate::error::{Error, Result};
use crate::schema::Envelope;

/// One event as the source stored it.
#[derive(Debug)]
pub struct Ordered {
    /// The source's sequence number (the WAL's seq).
    pub seq: u64,
    /// With `stream` and `stream_version` set by the publisher; no hash yet.
    pub envelope: Envelope,
}

#[derive(Debug)]
pub struct Follower {
    store: Arc<Store>,
    head: Head,
    /// The versions of the streams it wrote last, each with its event's
    /// seq, shared with readers.
    versions: Arc<Versions<Last>>,
    sync: bool,
}

impl Follower {
    pub fn new(store: Arc<Store>, sync: bool) -> Result<Follower> {
        let head = store.head()?;
        Ok(Follower { store, head, versions: Arc::default(), sync })
    }

    /// The streams' versions as this follower last wrote them, each with
    /// its event's seq (bounded: a stream not among them is read from the
    /// store).
    #[cfg(feature = "jetstream")]
    pub(crate) fn versions(&self) -> Arc<Versions<Last>> {
        self.versions.clone()
    }

    pub fn head(&self) -> Head {
        self.head
    }

    /// Appends `events` (in source order) and records `keys` (idempotency
    /// key → the append it named), all in one write. What the source got
    /// wrong (a gap, a stream version that does not continue, an event too
    /// large to read back) is [`Error::Corrupt`] and writes nothing.
    pub fn apply(&mut self, events: Vec<Ordered>, keys: Vec<(String, Appended)>) -> Result<Head> {
        self.apply_sealed(events, keys).map(|(head, _)| head)
    }

    /// [`Follower::apply`], also giving back the events written, sealed (as
    /// a read of the store would give them).
    pub(crate) fn apply_sealed(
        &mut self,
        events: Vec<Ordered>,
        keys: Vec<(String, Appended)>,
    ) -> Result<(Head, Vec<Envelope>)> {
        let store = self.store.clone();
        let mut staged = Staged::with_capacity(&store, self.head, events.len());
        let mut touched: HashMap<String, Last> = HashMap::new();
        for Ordered { seq, mut envelope } in events {
            let expected = staged.head().last_seq + 1;
            if seq != expected {
                return Err(Error::Corrupt {
                    seq: expected,
                    reason: format!("the source delivered seq {seq} next: a gap in the mirror"),
                });
            }
            let last = match touched.get(&envelope.stream).copied().or_else(|| self.versions.get(&envelope.stream)) {
                Some((version, _)) => version,
                None => self.store.stream_version(&envelope.stream)?,
            };
            if envelope.stream_version != last + 1 {
                return Err(Error::Corrupt {
                    seq,
                    reason: format!(
                        "stream {} goes from version {last} to {} in the source",
                        envelope.stream, envelope.stream_version
                    ),
                });
            }
            envelope.seq = seq;
            touched.insert(envelope.stream.clone(), (envelope.stream_version, seq));
            staged.event(envelope).map_err(|e| Error::Corrupt { seq, reason: e.to_string() })?;
        }
        for (key, appended) in &keys {
            staged.idempotency_key(key, appended);
        }
        if staged.is_empty() {
            return Ok((self.head, Vec::new()));
        }
        let (head, sealed) = staged.write(self.sync)?;
        metrics::histogram!(crate::metrics::MIRROR_BATCH_EVENTS).record((head.last_seq - self.head.last_seq) as f64);
        self.head = head;
        // Only once the write is done: never ahead of what a read finds.
        self.versions.extend(touched);
        Ok((head, sealed))
    }
}
