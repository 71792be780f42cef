//! Dropping archived events from the WAL. Only `agentlog archive prune`
//! calls this, after the archive of every day through the cut verified.
//!
//! The cut and the chain hash there are recorded first (`meta/pruned`), then
//! events at or below it are deleted, except the ones the command path still
//! needs: every event of a stream that goes on after the cut (an aggregate is
//! decided on its whole stream), and the head event. A stream that ended at
//! or before the cut keeps its index entries, so its version stays known and
//! nothing can be appended to it at a version the archive already holds;
//! reading it answers `Error::Pruned`.
use std::collections::BTreeMap;

use rocksdb::WriteBatch;

use super::keys::*;
use super::store::Store;
use crate::chain::{self, Hash};
use crate::error::{Error, Result};
use crate::source::Pruned;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PruneReport {
    pub through: u64,
    pub dropped: u64,
    /// Events at or below the cut kept for streams that go on after it.
    pub kept: u64,
}

const DELETES_PER_BATCH: usize = 10_000;

impl Store {
    /// Where the WAL was cut, if it was.
    pub fn pruned_through(&self) -> Result<Option<Pruned>> {
        let value =
            self.db().get_cf(self.cf(CF_META), META_PRUNED).map_err(self.read_failed("reading the prune mark"))?;
        match value {
            None => Ok(None),
            Some(value) => {
                let (seq, hash) = head_from(&value).ok_or_else(|| Error::CorruptStore {
                    path: self.path().to_owned(),
                    reason: "the prune mark is malformed".into(),
                })?;
                Ok(Some(Pruned { seq, hash }))
            }
        }
    }

    /// Drops the events through `seq`, whose chain hash the caller read from
    /// a verified archive; refuses if the WAL's event there has another hash.
    /// Safe to repeat, and to rerun after a crash.
    pub fn prune_through(&self, seq: u64, hash: &Hash) -> Result<PruneReport> {
        let head = self.head()?;
        if seq > head.last_seq {
            return Err(Error::InvalidAppend {
                reason: format!("cannot prune through seq {seq}: the WAL ends at seq {}", head.last_seq),
            });
        }
        let already = self.pruned_through()?.map_or(0, |p| p.seq);
        let mut report = PruneReport { through: seq.max(already), ..PruneReport::default() };
        if seq <= already {
            return Ok(report);
        }
        let stored =
            self.db().get_pinned_cf(self.cf(CF_EVENTS), seq_key(seq)).map_err(self.read_failed("reading events"))?;
        let stored = stored.and_then(|bytes| chain::stored_hash(&bytes));
        if stored.as_ref() != Some(hash) {
            return Err(Error::Corrupt {
                seq,
                reason: format!(
                    "the archive says this event's hash is {}, the WAL says {}: the archive is not of this log; nothing was pruned",
                    chain::to_hex(hash),
                    stored.map_or_else(|| "nothing".to_owned(), |h| chain::to_hex(&h))
                ),
            });
        }
        self.db()
            .put_cf(self.cf(CF_META), META_PRUNED, head_value(seq, hash))
            .map_err(Error::storage("writing the prune mark"))?;
        self.set_pruned(seq);

        let mut goes_on: BTreeMap<String, bool> = BTreeMap::new();
        let mut batch = WriteBatch::default();
        let mut iter = self.db().raw_iterator_cf(self.cf(CF_EVENTS));
        iter.seek(seq_key(already + 1));
        while iter.valid() {
            let (Some(key), Some(bytes)) = (iter.key(), iter.value()) else { break };
            let Some(event_seq) = seq_from(key) else { break };
            if event_seq > seq {
                break;
            }
            let event =
                crate::codec::decode(bytes).map_err(|e| Error::Corrupt { seq: event_seq, reason: e.to_string() })?;
            let keep = event_seq == head.last_seq
                || match goes_on.get(&event.stream) {
                    Some(keep) => *keep,
                    None => {
                        let version = self.stream_version(&event.stream)?;
                        let last = self.indexed_seq(&event.stream, version)?.unwrap_or(0);
                        *goes_on.entry(event.stream.clone()).or_insert(last > seq)
                    }
                };
            if keep {
                report.kept += 1;
            } else {
                batch.delete_cf(self.cf(CF_EVENTS), key);
                report.dropped += 1;
                if batch.len() >= DELETES_PER_BATCH {
                    self.write(std::mem::take(&mut batch), false)?;
                }
            }
            iter.next();
        }
        iter.status().map_err(self.read_failed("reading events"))?;
        self.write(batch, false)?;
        self.db().compact_range_cf(self.cf(CF_EVENTS), None::<&[u8]>, Some(&seq_key(seq + 1)[..]));
        Ok(report)
    }
}
