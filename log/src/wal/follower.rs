//! Writes into the WAL events that another log already ordered (the
//! JetStream stream, in distributed mode): the mirror's writer.
//!
//! The source assigns the sequence; the follower checks it continues the
//! WAL without a gap, that each stream's versions continue without a gap,
//! computes the hash chain, and writes each batch with its position in one
//! atomic `WriteBatch`, so a crash resumes exactly after the last batch.
use std::collections::HashMap;
use std::sync::Arc;

use rocksdb::{WriteBatch, WriteOptions};

use super::keys::*;
use super::store::Store;
use crate::api::{Appended, Head};
use crate::chain;
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
    versions: HashMap<String, u64>,
    sync: bool,
}

impl Follower {
    pub fn new(store: Arc<Store>, sync: bool) -> Result<Follower> {
        let head = store.head()?;
        Ok(Follower { store, head, versions: HashMap::new(), sync })
    }

    pub fn head(&self) -> Head {
        self.head
    }

    /// Appends `events` (in source order) and records `keys` (idempotency
    /// key → the append it named), all in one write.
    pub fn apply(&mut self, events: Vec<Ordered>, keys: Vec<(String, Appended)>) -> Result<Head> {
        let mut batch = WriteBatch::default();
        let mut head = self.head;
        let mut touched: HashMap<String, u64> = HashMap::new();
        for Ordered { seq, mut envelope } in events {
            if seq != head.last_seq + 1 {
                return Err(Error::Corrupt {
                    seq: head.last_seq + 1,
                    reason: format!("the source delivered seq {seq} next: a gap in the mirror"),
                });
            }
            let last = match touched.get(&envelope.stream).or_else(|| self.versions.get(&envelope.stream)) {
                Some(v) => *v,
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
            envelope.hash.clear();
            let (bytes, hash) = chain::seal_encoded(&head.hash, &envelope);
            batch.put_cf(self.store.cf(CF_EVENTS), seq_key(seq), &bytes);
            batch.put_cf(
                self.store.cf(CF_STREAMS),
                stream_key(&envelope.stream, envelope.stream_version),
                seq_key(seq),
            );
            batch.put_cf(self.store.cf(CF_IDS), &envelope.event_id, seq_key(seq));
            touched.insert(envelope.stream, envelope.stream_version);
            head = Head { last_seq: seq, hash };
        }
        for (key, appended) in &keys {
            batch.put_cf(self.store.cf(CF_IDEM), key.as_bytes(), appended_value(appended));
        }
        if head == self.head && keys.is_empty() {
            return Ok(head);
        }
        batch.put_cf(self.store.cf(CF_META), META_HEAD, head_value(head.last_seq, &head.hash));
        let mut options = WriteOptions::default();
        options.set_sync(self.sync);
        self.store.db().write_opt(batch, &options).map_err(Error::storage("writing mirrored events"))?;
        self.head = head;
        if self.versions.len() > 1 << 20 {
            self.versions.clear();
        }
        self.versions.extend(touched);
        Ok(head)
    }
}
