//! What a projection is: a pure fold of events into a state, with a stable
//! hash of that state. A projection looks at events only — never at a clock
//! or a random source — so folding the same events gives the same bytes, and
//! a rebuild from sequence 1 equals the live state.
use agentlog_core::Envelope;
use serde::Serialize;
use serde::de::DeserializeOwned;

pub trait Projection: Default + Serialize + DeserializeOwned + Send + Sync + 'static {
    /// A stable name: the key of its checkpoint, and what the CLI calls it.
    const NAME: &'static str;

    /// Folds one event (in log order, each exactly once).
    fn apply(&mut self, event: &Envelope);

    /// Called once a state is read back from a checkpoint: rebuild what
    /// the state keeps in memory only (indexes it does not store).
    fn loaded(&mut self) {}
}

/// The canonical bytes of a state: its JSON, whose maps are ordered.
pub fn canonical_bytes<P: Projection>(state: &P) -> Vec<u8> {
    serde_json::to_vec(state).expect("projection states serialise")
}

/// The state hash: blake3 of the canonical bytes.
pub fn state_hash<P: Projection>(state: &P) -> [u8; 32] {
    *blake3::hash(&canonical_bytes(state)).as_bytes()
}
