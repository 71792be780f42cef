//! What a projection is: a pure fold of events into a state, with a stable
//! hash of that state. A projection looks at events only — never at a clock
//! or a random source — so folding the same events gives the same bytes, and
//! a rebuild from sequence 1 equals the live state.
//!
//! A state is a few families of entities ([`Family`]); what is derived from
//! them (indexes) is rebuilt by [`Projection::loaded`], never stored. The
//! state hash is the one defined in [`crate::entities`].
use agentlog_core::Envelope;

use crate::entities::{Family, state_sum, state_sum_from_scratch};

pub trait Projection: Default + Send + Sync + 'static {
    /// A stable name: the key of its checkpoint, and what the CLI calls it.
    const NAME: &'static str;

    /// Folds one event (in log order, each exactly once).
    fn apply(&mut self, event: &Envelope);

    /// The state's entity families, in a fixed order.
    fn families(&self) -> Vec<&dyn Family>;

    fn families_mut(&mut self) -> Vec<&mut dyn Family>;

    /// Called once a state is read back from a checkpoint: rebuild what
    /// the state keeps in memory only (indexes it does not store).
    fn loaded(&mut self) {}
}

/// The state hash, as the state is now: costs what changed since the last
/// settle.
pub fn state_hash<P: Projection>(state: &P) -> [u8; 32] {
    state_sum(&state.families()).to_bytes()
}

/// The state hash computed from every entity: equal to [`state_hash`]
/// always (tests check it after every checkpoint).
pub fn state_hash_from_scratch<P: Projection>(state: &P) -> [u8; 32] {
    state_sum_from_scratch(&state.families()).to_bytes()
}
