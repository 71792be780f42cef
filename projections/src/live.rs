//! A projection being kept current: its state, the last sequence folded into
//! it and that event's chain hash, behind the object-safe [`Runner`] the
//! worker and the store handle every projection through.
use std::collections::BTreeMap;
use std::sync::Arc;

use agentlog_core::Envelope;
use serde::{Deserialize, Serialize};

use crate::entities::{Backing, Change, Sum};
use crate::projection::Projection;

/// What a checkpoint holds: 4 since the world keeps each stream's latest
/// time beside its version (3: each family's sum recorded; 2: the indexes
/// the queries page through kept in the store with the entities).
/// A checkpoint of another format (the oldest have none: 0) is read as
/// none, and its projection folds again from seq 1, replacing what the
/// store had of it. Any change to what a fold makes of the same events
/// (a field, a violation it flags) bumps it, so no node and no replay
/// snapshot goes on from a state an older fold made.
pub const FORMAT: u32 = 5;

/// Where a projection is: written with its state in one RocksDB write.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    /// What the state holds ([`FORMAT`]).
    #[serde(default)]
    pub format: u32,
    /// The last sequence folded in (0: none).
    pub position: u64,
    /// That event's chain hash (hex): a log replaced under the projection
    /// is noticed, not silently folded on.
    pub chain_hash: String,
    /// The state hash (hex; defined in `entities`).
    pub state_hash: String,
    /// Each family's part of it (its kind → hex), so a load need not read
    /// every entity to know the sum.
    #[serde(default)]
    pub sums: BTreeMap<String, String>,
}

#[derive(Debug, Default)]
pub struct Live<P> {
    pub state: P,
    pub position: u64,
    /// The chain hash of the event at `position` (bytes; hex only in the
    /// checkpoint, so folding an event formats nothing).
    pub chain_hash: Vec<u8>,
    /// Folded from nothing, not from a saved state, since its last save:
    /// the next save replaces every entity the store has of it.
    pub whole: bool,
}

/// What a save writes of one projection: its checkpoint, the entities
/// changed since the last save (by family), and whether they replace
/// everything stored of it.
#[derive(Debug)]
pub struct Settled {
    pub name: &'static str,
    pub checkpoint: Checkpoint,
    pub changes: Vec<(&'static str, Vec<Change>)>,
    pub whole: bool,
}

impl<P: Projection> Live<P> {
    pub fn new() -> Self {
        Live { state: P::default(), position: 0, chain_hash: Vec::new(), whole: true }
    }

    /// A checkpoint whose chain hash is not hex yields an empty one, which
    /// no event's hash equals: the check against the log then refuses it.
    pub fn from_checkpoint(checkpoint: &Checkpoint, state: P) -> Self {
        let chain_hash = agentlog_core::chain::from_hex(&checkpoint.chain_hash).unwrap_or_default();
        Live { state, position: checkpoint.position, chain_hash, whole: false }
    }

    /// Where the state is now, with its state hash and each family's part
    /// of it.
    pub fn checkpoint(&self) -> Checkpoint {
        let hex = agentlog_core::chain::to_hex;
        let families = self.state.families();
        let parts: Vec<(&str, Sum)> = families.iter().map(|f| (f.kind(), f.sum())).collect();
        let state = parts.iter().fold(Sum::ZERO, |sum, (_, part)| sum + *part);
        Checkpoint {
            format: FORMAT,
            position: self.position,
            chain_hash: hex(&self.chain_hash),
            state_hash: hex(&state.to_bytes()),
            sums: parts.into_iter().map(|(kind, part)| (kind.to_owned(), hex(&part.to_bytes()))).collect(),
        }
    }
}

/// Every projection, whatever its state type.
pub trait Runner: Send + Sync {
    fn name(&self) -> &'static str;
    fn position(&self) -> u64;
    /// Folds the event if it is past the position (an event delivered again
    /// is skipped); it must be the next one.
    fn apply(&mut self, event: &Envelope);
    fn state_hash(&self) -> [u8; 32];
    /// The checkpoint, and every entity changed since the last one (by
    /// family): the state is then settled.
    fn settle(&mut self) -> Settled;
    /// After what it settled is in the store ([`crate::entities::Family::written`]):
    /// reads what it does not keep in memory from `backing`, and keeps at
    /// most `capacity` settled entities per family. Returns the entities
    /// dropped from memory.
    fn written(&mut self, backing: &Arc<dyn Backing>, capacity: usize) -> usize;
    /// The entities its largest family holds in memory.
    fn largest_in_memory(&self) -> usize;
    /// Back to the empty state at position 0.
    fn reset(&mut self);
}

impl<P: Projection> Runner for Live<P> {
    fn name(&self) -> &'static str {
        P::NAME
    }

    fn position(&self) -> u64 {
        self.position
    }

    fn apply(&mut self, event: &Envelope) {
        if event.seq > self.position {
            // Sources fail on a gap rather than skip one, so a fold that
            // sees one was handed the wrong events: a bug, not damage.
            assert_eq!(event.seq, self.position + 1, "{} folds the log without gaps", P::NAME);
            self.state.apply(event);
            self.position = event.seq;
            // A hash over a hash of the same length (every one after the
            // first): a copy of 32 bytes in place, not a call to memcpy.
            match (<&mut [u8; 32]>::try_from(&mut self.chain_hash[..]), <&[u8; 32]>::try_from(&event.hash[..])) {
                (Ok(to), Ok(hash)) => *to = *hash,
                _ => {
                    self.chain_hash.clear();
                    self.chain_hash.extend_from_slice(&event.hash);
                }
            }
        }
    }

    fn state_hash(&self) -> [u8; 32] {
        crate::projection::state_hash(&self.state)
    }

    fn settle(&mut self) -> Settled {
        let changes = self
            .state
            .families_mut()
            .into_iter()
            .map(|family| {
                let mut changes = Vec::with_capacity(family.changed());
                family.settle(&mut changes);
                (family.kind(), changes)
            })
            .collect();
        let whole = std::mem::replace(&mut self.whole, false);
        Settled { name: P::NAME, checkpoint: self.checkpoint(), changes, whole }
    }

    fn written(&mut self, backing: &Arc<dyn Backing>, capacity: usize) -> usize {
        self.state.families_mut().into_iter().map(|family| family.written(backing, capacity)).sum()
    }

    fn largest_in_memory(&self) -> usize {
        self.state.families().iter().map(|family| family.resident()).max().unwrap_or_default()
    }

    fn reset(&mut self) {
        *self = Live::new();
    }
}
