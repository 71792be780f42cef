//! Which keys a family may have in the store, when it knows: a growing
//! Bloom filter of every key it wrote there. A family whose entities went
//! into an empty store (a fold from seq 1: a rebuild, a new node) is the
//! only writer of its keys, so a key the filter never saw is not in the
//! store and need not be looked up — and most such lookups are of new
//! entities (each new task, session, stream), which a fold makes all the
//! time. A key the filter may have seen is looked up as before: the
//! filter only saves reads, it never changes what a read returns.
//!
//! It grows by layers, each twice the keys of the one before, at 16 bits
//! per key a layer holds (2 MB per million keys), each key's bits in one
//! cache line: one miss a layer, and under 0.5 % false positives when it
//! is full.
use std::hash::{DefaultHasher, Hasher};

/// Keys the first layer holds before a second is added.
const FIRST_LAYER_KEYS: usize = 1 << 16;
const BITS_PER_KEY: usize = 16;
const PROBES: u64 = 6;

#[derive(Clone, Debug)]
struct Layer {
    bits: Vec<u64>,
    keys: usize,
    capacity: usize,
}

impl Layer {
    fn new(capacity: usize) -> Layer {
        Layer { bits: vec![0; capacity * BITS_PER_KEY / 64], keys: 0, capacity }
    }

    /// The bit positions of a key's hash: all in one block of 512 bits
    /// (one cache line), chosen by the hash's high bits; within it, by
    /// double hashing of its low bits.
    fn probes(&self, hash: u64) -> impl Iterator<Item = usize> + use<> {
        let blocks = (self.bits.len() / 8) as u64;
        let block = (((hash >> 32) * blocks) >> 32) as usize * 512;
        let (h1, h2) = (hash as u32, (hash as u32).rotate_left(16) | 1);
        (0..PROBES as u32).map(move |i| block + (h1.wrapping_add(i.wrapping_mul(h2)) & 511) as usize)
    }

    fn insert(&mut self, hash: u64) {
        for bit in self.probes(hash) {
            self.bits[bit / 64] |= 1 << (bit % 64);
        }
        self.keys += 1;
    }

    fn may_contain(&self, hash: u64) -> bool {
        self.probes(hash).all(|bit| self.bits[bit / 64] & (1 << (bit % 64)) != 0)
    }
}

/// Every key written to the store, as a Bloom filter: [`StoredKeys::may_contain`]
/// is true of each of them, and false of most others.
#[derive(Clone, Debug, Default)]
pub struct StoredKeys {
    layers: Vec<Layer>,
}

fn hash(key: &[u8]) -> u64 {
    // SipHash with fixed keys: the same on every run (it decides reads only).
    let mut hasher = DefaultHasher::new();
    hasher.write(key);
    hasher.finish()
}

impl StoredKeys {
    pub fn insert(&mut self, key: &[u8]) {
        let hash = hash(key);
        if self.layers.last().is_some_and(|layer| layer.may_contain(hash)) {
            return;
        }
        if self.layers.last().is_none_or(|layer| layer.keys >= layer.capacity) {
            let capacity = self.layers.last().map_or(FIRST_LAYER_KEYS, |layer| layer.capacity * 2);
            self.layers.push(Layer::new(capacity));
        }
        self.layers.last_mut().expect("just pushed").insert(hash);
    }

    /// False only of a key never inserted.
    pub fn may_contain(&self, key: &[u8]) -> bool {
        let hash = hash(key);
        self.layers.iter().any(|layer| layer.may_contain(hash))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_key_inserted_may_be_contained_and_few_others_are() {
        let mut keys = StoredKeys::default();
        let n = 300_000u32;
        for i in 0..n {
            keys.insert(format!("task-{i}").as_bytes());
        }
        assert!(keys.layers.len() >= 3, "{} layers", keys.layers.len());
        assert!((0..n).all(|i| keys.may_contain(format!("task-{i}").as_bytes())));
        let false_positives = (n..2 * n).filter(|i| keys.may_contain(format!("task-{i}").as_bytes())).count();
        assert!(false_positives < n as usize / 50, "{false_positives} false positives of {n}");
        assert!(!StoredKeys::default().may_contain(b"task-1"));
    }
}
