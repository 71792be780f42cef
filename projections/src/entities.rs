//! Per-entity state and the state hash. A view's state is a few families
//! of entities ([`Entities`]: tasks, sessions, budgets, …), each a map from
//! a key to a value. A family remembers which entities changed since it
//! was last settled, so a checkpoint writes those only, and keeps the sum
//! of its entities' hashes, so the state hash costs what changed.
//!
//! The state hash, defined once and used everywhere (checkpoints,
//! `projections verify`, rebuilds, status, replay):
//!
//! ```text
//! entity_hash = blake3(kind ‖ 0x00 ‖ u64_le(len(key)) ‖ key ‖ value)
//! state_hash  = Σ entity_hash  (mod 2^256, each read as a little-endian integer)
//! ```
//!
//! `kind` is the family's name, `key` the entity's key bytes
//! ([`EntityKey`]) and `value` its canonical bytes (JSON, maps ordered).
//! The sum does not depend on the order entities are visited in, so a
//! change replaces one term: subtract the entity's old hash, add its new
//! one. An absent entity contributes 0; the empty state hashes to 0. It
//! detects accidental differences, like any checksum: it is not a defence
//! against someone choosing entities to collide.
use std::borrow::Borrow;
use std::collections::btree_map::Entry;
use std::collections::{BTreeMap, HashMap};
use std::hash::Hash;
use std::ops::Bound;

use serde::Serialize;
use serde::de::DeserializeOwned;

/// A 256-bit sum of entity hashes (little-endian limbs).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Sum([u64; 4]);

impl Sum {
    pub const ZERO: Sum = Sum([0; 4]);

    fn from_hash(hash: &[u8; 32]) -> Sum {
        let limb = |i: usize| u64::from_le_bytes(hash[i * 8..i * 8 + 8].try_into().expect("8 bytes"));
        Sum([limb(0), limb(1), limb(2), limb(3)])
    }

    /// The state hash's 32 bytes (little-endian).
    pub fn to_bytes(self) -> [u8; 32] {
        let mut out = [0u8; 32];
        for (i, limb) in self.0.iter().enumerate() {
            out[i * 8..i * 8 + 8].copy_from_slice(&limb.to_le_bytes());
        }
        out
    }
}

/// Mod 2^256.
impl std::ops::Add for Sum {
    type Output = Sum;

    fn add(self, other: Sum) -> Sum {
        let (mut out, mut carry) = ([0u64; 4], false);
        for (i, limb) in out.iter_mut().enumerate() {
            let (s, c1) = self.0[i].overflowing_add(other.0[i]);
            let (s, c2) = s.overflowing_add(u64::from(carry));
            (*limb, carry) = (s, c1 || c2);
        }
        Sum(out)
    }
}

/// Mod 2^256.
impl std::ops::Sub for Sum {
    type Output = Sum;

    fn sub(self, other: Sum) -> Sum {
        let (mut out, mut borrow) = ([0u64; 4], false);
        for (i, limb) in out.iter_mut().enumerate() {
            let (d, b1) = self.0[i].overflowing_sub(other.0[i]);
            let (d, b2) = d.overflowing_sub(u64::from(borrow));
            (*limb, borrow) = (d, b1 || b2);
        }
        Sum(out)
    }
}

/// One entity's term of the state hash.
pub fn entity_hash(kind: &str, key: &[u8], value: &[u8]) -> Sum {
    let mut hasher = blake3::Hasher::new();
    hasher.update(kind.as_bytes());
    hasher.update(&[0]);
    hasher.update(&(key.len() as u64).to_le_bytes());
    hasher.update(key);
    hasher.update(value);
    Sum::from_hash(hasher.finalize().as_bytes())
}

/// How an entity's key is written as bytes, and read back.
pub trait EntityKey: Ord + Hash + Clone + Send + Sync + 'static {
    fn to_bytes(&self) -> Vec<u8>;
    fn from_bytes(bytes: &[u8]) -> Option<Self>;
}

/// An id: its UTF-8 bytes.
impl EntityKey for String {
    fn to_bytes(&self) -> Vec<u8> {
        self.as_bytes().to_vec()
    }
    fn from_bytes(bytes: &[u8]) -> Option<Self> {
        String::from_utf8(bytes.to_vec()).ok()
    }
}

/// A sequence and an index under it: 8 and 4 bytes, big-endian.
impl EntityKey for (u64, u32) {
    fn to_bytes(&self) -> Vec<u8> {
        [&self.0.to_be_bytes()[..], &self.1.to_be_bytes()[..]].concat()
    }
    fn from_bytes(bytes: &[u8]) -> Option<Self> {
        let (seq, index) = bytes.split_first_chunk::<8>()?;
        let index: [u8; 4] = index.try_into().ok()?;
        Some((u64::from_be_bytes(*seq), u32::from_be_bytes(index)))
    }
}

/// What a settle hands the store: an entity's key bytes and its new value
/// bytes, or `None` when it is gone.
pub type Change = (Vec<u8>, Option<Vec<u8>>);

/// A family of entities, whatever its key and value types: what the store
/// and the state hash need of it.
pub trait Family: Send + Sync {
    /// Its name in the store and in the hash.
    fn kind(&self) -> &'static str;
    /// Entities the next settle hands over: those changed since the last
    /// settle, or every entity before the first.
    fn changed(&self) -> usize;
    /// The sum of its entities' hashes as they are now: the settled sum
    /// corrected by the changed entities only.
    fn sum(&self) -> Sum;
    /// The same sum, from every entity (tests and checks, never a hot path).
    fn sum_from_scratch(&self) -> Sum;
    /// Takes the changes since the last settle into `out` (in key order)
    /// and makes the current state the settled one.
    fn settle(&mut self, out: &mut Vec<Change>);
    /// Every entity, in key order (a full write; comparisons).
    fn for_each(&self, f: &mut dyn FnMut(Vec<u8>, Vec<u8>));
    /// Adds an entity read back from the store, as settled.
    fn load(&mut self, key: &[u8], value: &[u8]) -> Result<(), String>;
    /// Starts tracking changes on a family read back from the store: its
    /// entities as they are now are what the store holds.
    fn track(&mut self);
}

#[derive(Clone)]
struct Slot<V> {
    value: V,
    /// Its hash as last settled (0 if it did not exist then).
    settled: Sum,
    /// Changed since the last settle (its key is in `changed`).
    dirty: bool,
}

/// A family of entities kept in key order. Every mutable access marks the
/// entity changed, so nothing a fold does can be missed by a checkpoint.
///
/// Until it is first settled (or read back from the store) a family does
/// not track changes: its first settle hands over every entity, so a fold
/// from nothing — a rebuild, a replay — pays nothing for tracking.
#[derive(Clone)]
pub struct Entities<K, V> {
    kind: &'static str,
    /// Changes are tracked (entities are marked `dirty` one by one);
    /// otherwise every slot stays dirty and the next settle takes all.
    tracking: bool,
    map: BTreeMap<K, Slot<V>>,
    /// Keys changed since the last settle, each once.
    changed: Vec<K>,
    /// Entities removed since the last settle, with their settled hash.
    /// (Only looked up, never iterated.)
    removed: HashMap<K, Sum>,
    /// The sum of the settled entities' hashes.
    settled: Sum,
}

impl<K: EntityKey + std::fmt::Debug, V: std::fmt::Debug> std::fmt::Debug for Entities<K, V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Entities").field("kind", &self.kind).field("len", &self.map.len()).finish_non_exhaustive()
    }
}

impl<K: EntityKey, V: PartialEq> PartialEq for Entities<K, V> {
    /// Equal content (what the entities are, not what was settled).
    fn eq(&self, other: &Self) -> bool {
        self.kind == other.kind
            && self.map.len() == other.map.len()
            && self.map.iter().zip(&other.map).all(|((ka, a), (kb, b))| ka == kb && a.value == b.value)
    }
}

impl<K: EntityKey, V> Entities<K, V> {
    pub fn new(kind: &'static str) -> Self {
        Entities {
            kind,
            tracking: false,
            map: BTreeMap::new(),
            changed: Vec::new(),
            removed: HashMap::new(),
            settled: Sum::ZERO,
        }
    }

    pub fn get<Q>(&self, key: &Q) -> Option<&V>
    where
        K: Borrow<Q>,
        Q: Ord + ?Sized,
    {
        self.map.get(key).map(|s| &s.value)
    }

    pub fn contains_key<Q>(&self, key: &Q) -> bool
    where
        K: Borrow<Q>,
        Q: Ord + ?Sized,
    {
        self.map.contains_key(key)
    }

    /// The entity to change, marked changed.
    pub fn get_mut<Q>(&mut self, key: &Q) -> Option<&mut V>
    where
        K: Borrow<Q>,
        Q: Ord + ToOwned<Owned = K> + ?Sized,
    {
        let slot = self.map.get_mut(key)?;
        if !slot.dirty {
            slot.dirty = true;
            self.changed.push(key.to_owned());
        }
        Some(&mut slot.value)
    }

    /// The entity to change, made by `make` when there is none; marked
    /// changed.
    pub fn get_or_insert_with<Q>(&mut self, key: &Q, make: impl FnOnce() -> V) -> &mut V
    where
        K: Borrow<Q>,
        Q: Ord + ToOwned<Owned = K> + ?Sized,
    {
        if self.map.contains_key(key) {
            return self.get_mut(key).expect("just found");
        }
        let key = key.to_owned();
        let value = make();
        &mut self.insert_new(key, value).value
    }

    /// Sets the entity's value, marked changed; returns the value it
    /// replaces. One search.
    pub fn insert(&mut self, key: K, value: V) -> Option<V> {
        match self.map.entry(key) {
            Entry::Occupied(mut entry) => {
                if !entry.get().dirty {
                    entry.get_mut().dirty = true;
                    self.changed.push(entry.key().clone());
                }
                Some(std::mem::replace(&mut entry.get_mut().value, value))
            }
            Entry::Vacant(entry) => {
                let removed = if self.removed.is_empty() { None } else { self.removed.remove(entry.key()) };
                let settled = match removed {
                    Some(settled) => settled,
                    None => {
                        if self.tracking {
                            self.changed.push(entry.key().clone());
                        }
                        Sum::ZERO
                    }
                };
                entry.insert(Slot { value, settled, dirty: true });
                None
            }
        }
    }

    fn insert_new(&mut self, key: K, value: V) -> &mut Slot<V> {
        // Removed and back since the last settle: its key is already
        // among the changed, and its settled hash is kept.
        let removed = if self.removed.is_empty() { None } else { self.removed.remove(&key) };
        let settled = match removed {
            Some(settled) => settled,
            None => {
                if self.tracking {
                    self.changed.push(key.clone());
                }
                Sum::ZERO
            }
        };
        self.map.entry(key).or_insert(Slot { value, settled, dirty: true })
    }

    /// Removes the entity, marked changed.
    pub fn remove<Q>(&mut self, key: &Q) -> Option<V>
    where
        K: Borrow<Q>,
        Q: Ord + ToOwned<Owned = K> + ?Sized,
    {
        let slot = self.map.remove(key)?;
        if !self.tracking {
            return Some(slot.value);
        }
        if !slot.dirty {
            self.changed.push(key.to_owned());
        }
        // Remembered until the next settle (its key stays among the
        // changed, once), with the hash to take off the sum.
        self.removed.insert(key.to_owned(), slot.settled);
        Some(slot.value)
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    pub fn iter(&self) -> impl DoubleEndedIterator<Item = (&K, &V)> {
        self.map.iter().map(|(k, s)| (k, &s.value))
    }

    pub fn keys(&self) -> impl Iterator<Item = &K> {
        self.map.keys()
    }

    pub fn values(&self) -> impl Iterator<Item = &V> {
        self.map.values().map(|s| &s.value)
    }

    /// Entities in key order within `range`.
    pub fn range<Q, R>(&self, range: R) -> impl Iterator<Item = (&K, &V)>
    where
        K: Borrow<Q>,
        Q: Ord + ?Sized,
        R: std::ops::RangeBounds<Q>,
    {
        self.map.range(range).map(|(k, s)| (k, &s.value))
    }

    /// Entities in key order from the first key after `after` (all when
    /// `None`).
    pub fn iter_after<'a, Q>(&'a self, after: Option<&Q>) -> impl Iterator<Item = (&'a K, &'a V)> + use<'a, K, V, Q>
    where
        K: Borrow<Q>,
        Q: Ord + ?Sized,
    {
        let range = match after {
            Some(after) => self.map.range::<Q, _>((Bound::Excluded(after), Bound::Unbounded)),
            None => self.map.range::<Q, _>(..),
        };
        range.map(|(k, s)| (k, &s.value))
    }

    /// Values in key order from the first key after `after` (all when `None`).
    pub fn values_after<'a, Q>(&'a self, after: Option<&Q>) -> impl Iterator<Item = &'a V> + use<'a, K, V, Q>
    where
        K: Borrow<Q>,
        Q: Ord + ?Sized,
    {
        self.iter_after(after).map(|(_, v)| v)
    }
}

impl<K: EntityKey, V: Serialize> Entities<K, V> {
    fn value_bytes(value: &V) -> Vec<u8> {
        serde_json::to_vec(value).expect("entities serialise")
    }

    fn hash_of(&self, key: &K, value: &V) -> Sum {
        entity_hash(self.kind, &key.to_bytes(), &Self::value_bytes(value))
    }
}

impl<K: EntityKey, V: Serialize + DeserializeOwned + Send + Sync> Family for Entities<K, V> {
    fn kind(&self) -> &'static str {
        self.kind
    }

    fn changed(&self) -> usize {
        if self.tracking { self.changed.len() } else { self.map.len() }
    }

    fn sum(&self) -> Sum {
        if !self.tracking {
            return self.sum_from_scratch();
        }
        let mut sum = self.settled;
        for key in &self.changed {
            match self.map.get(key) {
                Some(slot) => sum = sum - slot.settled + self.hash_of(key, &slot.value),
                None => sum = sum - self.removed.get(key).copied().unwrap_or_default(),
            }
        }
        sum
    }

    fn sum_from_scratch(&self) -> Sum {
        self.map.iter().fold(Sum::ZERO, |sum, (key, slot)| sum + self.hash_of(key, &slot.value))
    }

    fn settle(&mut self, out: &mut Vec<Change>) {
        if !self.tracking {
            // The first settle: every entity.
            self.settled = Sum::ZERO;
            for (key, slot) in &mut self.map {
                let (key_bytes, bytes) = (key.to_bytes(), Self::value_bytes(&slot.value));
                let hash = entity_hash(self.kind, &key_bytes, &bytes);
                self.settled = self.settled + hash;
                (slot.settled, slot.dirty) = (hash, false);
                out.push((key_bytes, Some(bytes)));
            }
            (self.tracking, self.changed, self.removed) = (true, Vec::new(), HashMap::new());
            return;
        }
        let mut changed = std::mem::take(&mut self.changed);
        changed.sort_unstable();
        for key in changed {
            let key_bytes = key.to_bytes();
            match self.map.get_mut(&key) {
                Some(slot) => {
                    let bytes = Self::value_bytes(&slot.value);
                    let hash = entity_hash(self.kind, &key_bytes, &bytes);
                    self.settled = self.settled - slot.settled + hash;
                    (slot.settled, slot.dirty) = (hash, false);
                    out.push((key_bytes, Some(bytes)));
                }
                None => {
                    // Gone; the store has it only if it was settled then.
                    let settled = self.removed.remove(&key).unwrap_or_default();
                    if settled != Sum::ZERO {
                        self.settled = self.settled - settled;
                        out.push((key_bytes, None));
                    }
                }
            }
        }
        self.removed.clear();
    }

    fn for_each(&self, f: &mut dyn FnMut(Vec<u8>, Vec<u8>)) {
        for (key, slot) in &self.map {
            f(key.to_bytes(), Self::value_bytes(&slot.value));
        }
    }

    fn load(&mut self, key: &[u8], value: &[u8]) -> Result<(), String> {
        let parsed = K::from_bytes(key).ok_or_else(|| format!("a {} key that does not parse: {key:?}", self.kind))?;
        let parsed_value: V = serde_json::from_slice(value)
            .map_err(|e| format!("{} {:?}: {e}", self.kind, String::from_utf8_lossy(key)))?;
        let hash = entity_hash(self.kind, key, value);
        if let Some(old) = self.map.insert(parsed, Slot { value: parsed_value, settled: hash, dirty: false }) {
            self.settled = self.settled - old.settled;
        }
        self.settled = self.settled + hash;
        Ok(())
    }

    fn track(&mut self) {
        if self.tracking {
            return;
        }
        self.tracking = true;
        // What was not read back, or changed since (dirty), differs from
        // the store: each such key once.
        self.changed.clear();
        for (key, slot) in &self.map {
            if slot.dirty {
                self.changed.push(key.clone());
            }
        }
    }
}

/// A family of exactly one entity (a view's settings and running totals),
/// stored under the empty key.
#[derive(Clone, Debug)]
pub struct Single<V> {
    kind: &'static str,
    value: V,
    /// Changed since the last settle, or never settled.
    dirty: bool,
}

impl<V: PartialEq> PartialEq for Single<V> {
    fn eq(&self, other: &Self) -> bool {
        self.kind == other.kind && self.value == other.value
    }
}

impl<V> Single<V> {
    pub fn new(kind: &'static str, value: V) -> Self {
        Single { kind, value, dirty: true }
    }

    pub fn get(&self) -> &V {
        &self.value
    }

    /// The value to change, marked changed.
    pub fn get_mut(&mut self) -> &mut V {
        self.dirty = true;
        &mut self.value
    }
}

impl<V: Serialize + DeserializeOwned + Send + Sync> Family for Single<V> {
    fn kind(&self) -> &'static str {
        self.kind
    }

    fn changed(&self) -> usize {
        usize::from(self.dirty)
    }

    /// One entity: its hash, whatever changed (O(1)).
    fn sum(&self) -> Sum {
        self.sum_from_scratch()
    }

    fn sum_from_scratch(&self) -> Sum {
        entity_hash(self.kind, &[], &serde_json::to_vec(&self.value).expect("entities serialise"))
    }

    fn settle(&mut self, out: &mut Vec<Change>) {
        if std::mem::replace(&mut self.dirty, false) {
            out.push((Vec::new(), Some(serde_json::to_vec(&self.value).expect("entities serialise"))));
        }
    }

    fn for_each(&self, f: &mut dyn FnMut(Vec<u8>, Vec<u8>)) {
        f(Vec::new(), serde_json::to_vec(&self.value).expect("entities serialise"));
    }

    fn load(&mut self, key: &[u8], value: &[u8]) -> Result<(), String> {
        if !key.is_empty() {
            return Err(format!("{} holds one entity, under the empty key, not {key:?}", self.kind));
        }
        self.value = serde_json::from_slice(value).map_err(|e| format!("{}: {e}", self.kind))?;
        self.dirty = false;
        Ok(())
    }

    fn track(&mut self) {}
}

/// The state hash of `families` as they are now.
pub fn state_sum(families: &[&dyn Family]) -> Sum {
    families.iter().fold(Sum::ZERO, |sum, f| sum + f.sum())
}

/// The same, from every entity.
pub fn state_sum_from_scratch(families: &[&dyn Family]) -> Sum {
    families.iter().fold(Sum::ZERO, |sum, f| sum + f.sum_from_scratch())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sums(e: &Entities<String, u64>) -> (Sum, Sum) {
        (e.sum(), e.sum_from_scratch())
    }

    #[test]
    fn sum_wraps_both_ways() {
        let max = Sum([u64::MAX; 4]);
        let one = Sum([1, 0, 0, 0]);
        assert_eq!(max + one, Sum::ZERO);
        assert_eq!(Sum::ZERO - one, max);
        assert_eq!(Sum([0, 1, 0, 0]) - one, Sum([u64::MAX, 0, 0, 0]));
    }

    #[test]
    fn the_sum_follows_inserts_changes_and_removals_across_settles() {
        let mut e: Entities<String, u64> = Entities::new("n");
        assert_eq!(sums(&e), (Sum::ZERO, Sum::ZERO));
        e.insert("a".into(), 1);
        e.insert("b".into(), 2);
        let (now, scratch) = sums(&e);
        assert_eq!(now, scratch);
        let mut out = Vec::new();
        e.settle(&mut out);
        assert_eq!(out.len(), 2);
        assert_eq!(e.sum(), scratch);
        // Changed, removed, removed and back, created and removed: all
        // between two settles.
        *e.get_mut("a").unwrap() = 5;
        e.remove("b");
        e.insert("c".into(), 3);
        e.remove("c");
        e.insert("b".into(), 7);
        e.remove("b");
        e.insert("b".into(), 8);
        assert_eq!(e.sum(), e.sum_from_scratch());
        e.insert("d".into(), 4);
        e.remove("d");
        e.insert("d".into(), 9);
        assert_eq!(e.changed(), 4, "each changed key once");
        out.clear();
        e.settle(&mut out);
        let keys: Vec<_> = out.iter().map(|(k, v)| (String::from_utf8(k.clone()).unwrap(), v.is_some())).collect();
        // c came and went between the settles: the store never had it.
        assert_eq!(keys, [("a".into(), true), ("b".into(), true), ("d".into(), true)]);
        assert_eq!(e.sum(), e.sum_from_scratch());
        // A settled entity removed: the store is told.
        e.remove("d");
        out.clear();
        e.settle(&mut out);
        assert_eq!(out, [(b"d".to_vec(), None)]);
        assert_eq!(e.sum(), e.sum_from_scratch());
        // Order does not matter: the same content built another way.
        let mut other: Entities<String, u64> = Entities::new("n");
        other.insert("b".into(), 8);
        other.insert("a".into(), 5);
        assert_eq!(other.sum(), e.sum());
        // Loading what a settle wrote gives the same sum.
        let mut loaded: Entities<String, u64> = Entities::new("n");
        e.for_each(&mut |k, v| loaded.load(&k, &v).unwrap());
        assert_eq!(loaded.sum(), e.sum());
        assert!(loaded == e);
    }

    #[test]
    fn seq_keys_read_back() {
        assert_eq!(<(u64, u32)>::from_bytes(&(7u64, 2u32).to_bytes()), Some((7, 2)));
        assert_eq!(<(u64, u32)>::from_bytes(&[1, 2]), None);
    }
}
