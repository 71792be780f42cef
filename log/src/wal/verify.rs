//! Checks a whole WAL: sequence continuity, stream versions without gaps,
//! the stream index, and the hash chain up to the recorded head. Stops at the
//! first damage and names its seq.
use std::collections::HashMap;

use super::store::Store;
use crate::chain::{self, GENESIS, Hash};
use crate::codec;
use crate::error::{Error, Result};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Report {
    pub events: u64,
    pub streams: u64,
    pub last_seq: u64,
    pub head_hash: Hash,
}

const PAGE: usize = 4096;

/// `progress(checked, total)` is called after each page. A pruned WAL is
/// checked from its prune mark: the chain from the hash recorded there, and
/// each stream from the version it had at the cut.
pub fn verify(store: &Store, progress: &mut dyn FnMut(u64, u64)) -> Result<Report> {
    let head = store.head()?;
    let pruned = store.pruned_through()?;
    let mut versions: HashMap<String, u64> = HashMap::new();
    let mut previous = pruned.map_or(GENESIS, |p| p.hash);
    let mut expected = pruned.map_or(1, |p| p.seq + 1);
    while expected <= head.last_seq {
        store.for_each_stored(expected, PAGE, |seq, bytes| {
            let damage = |reason: String| Error::Corrupt { seq, reason };
            let event = codec::decode(bytes).map_err(|e| damage(e.to_string()))?;
            if event.seq != seq {
                return Err(damage(format!("stored under seq {seq} but says seq {}", event.seq)));
            }
            let last = match versions.get_mut(&event.stream) {
                Some(last) => last,
                None => {
                    let before = event.stream_version.saturating_sub(1);
                    let at_cut = match pruned {
                        Some(cut) if before > 0 => store
                            .indexed_seq(&event.stream, before)?
                            .filter(|s| *s <= cut.seq)
                            .map(|_| before)
                            .unwrap_or(0),
                        _ => 0,
                    };
                    versions.entry(event.stream.clone()).or_insert(at_cut)
                }
            };
            if event.stream_version != *last + 1 {
                return Err(damage(format!(
                    "stream {} goes from version {} to {}",
                    event.stream, last, event.stream_version
                )));
            }
            *last = event.stream_version;
            let hash = chain::check_stored(&previous, bytes).map_err(|reason| damage(reason.into()))?;
            if store.indexed_seq(&event.stream, event.stream_version)? != Some(seq) {
                return Err(damage(format!(
                    "the stream index does not point {} version {} at this event",
                    event.stream, event.stream_version
                )));
            }
            if *event.hash != hash {
                return Err(damage("the decoded hash differs from the stored one".into()));
            }
            previous = hash;
            expected += 1;
            Ok(())
        })?;
        progress(expected - 1, head.last_seq);
    }
    let last_seq = expected - 1;
    store.check_stream_index(&versions, pruned.map_or(0, |p| p.seq))?;
    if head.last_seq != last_seq || head.hash != previous {
        return Err(Error::Corrupt {
            seq: head.last_seq.max(last_seq),
            reason: format!(
                "the recorded head (seq {}) does not match the events (last seq {last_seq})",
                head.last_seq
            ),
        });
    }
    let events = last_seq - pruned.map_or(0, |p| p.seq);
    Ok(Report { events, streams: versions.len() as u64, last_seq, head_hash: previous })
}
