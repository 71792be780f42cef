//! [`EventSource`]: sealed events read in seq order, from wherever they are
//! kept. The embedded log's WAL and a node's mirror are sources; so can be
//! the archive or a replay's merge of both. Folds (projections) and the
//! archive writer read through this trait, never through a storage crate,
//! so any source feeds the same code.
use std::path::Path;

use crate::api::Head;
use crate::chain::Hash;
use crate::codec;
use crate::error::Result;
use crate::schema::Envelope;

/// Where a source was cut: events through `seq` may be gone; `hash` is the
/// chain hash of event `seq`, which the first event after it chains from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pruned {
    pub seq: u64,
    pub hash: Hash,
}

/// Sealed events (seq, stream version and chain hash assigned) in seq order.
pub trait EventSource: Send + Sync {
    /// Where the events are kept, for messages.
    fn location(&self) -> &Path;

    /// The last event's seq and chain hash ([`Head::EMPTY`] when empty).
    fn head(&self) -> Result<Head>;

    /// Where the source was cut, if it was: reads at or below it answer
    /// [`crate::Error::Pruned`].
    fn pruned_through(&self) -> Result<Option<Pruned>>;

    /// Calls `f` with the seq and stored bytes (the sealed, canonical
    /// envelope) of up to `max` events from `from_seq` on, in seq order;
    /// returns how many. A gap or damage is an error, never skipped.
    fn for_each_stored(&self, from_seq: u64, max: usize, f: &mut dyn FnMut(u64, &[u8]) -> Result<()>) -> Result<usize>;

    /// Up to `max` decoded events from `from_seq` on, consecutive.
    fn read(&self, from_seq: u64, max: usize) -> Result<Vec<Envelope>> {
        let mut out = Vec::with_capacity(max.min(4096));
        self.for_each_stored(from_seq, max, &mut |seq, bytes| {
            out.push(codec::decode_at(seq, bytes)?);
            Ok(())
        })?;
        Ok(out)
    }
}
