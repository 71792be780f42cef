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
use std::borrow::{Borrow, Cow};
use std::collections::hash_map::Entry;
use std::collections::{BTreeSet, HashMap};
use std::hash::Hash;
use std::ops::Bound;
use std::sync::{Arc, OnceLock};

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::stored_keys::StoredKeys;

/// A 256-bit sum of entity hashes (little-endian limbs).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Sum([u64; 4]);

impl Sum {
    pub const ZERO: Sum = Sum([0; 4]);

    /// Read from its 32 bytes (little-endian), as [`Sum::to_bytes`] wrote them.
    pub fn from_bytes(hash: &[u8; 32]) -> Sum {
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
    Sum::from_bytes(hasher.finalize().as_bytes())
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

/// A read of the store that failed.
pub type BackingError = String;

/// Stored entities, in key order: what [`Backing::scan`] yields.
pub type Stored<'a> = Box<dyn Iterator<Item = Result<(Vec<u8>, Vec<u8>), BackingError>> + 'a>;

/// Where a family's entities are when they are not in memory: the
/// projection store, as it was last written. Reads only; a family writes
/// through the store's checkpoints.
pub trait Backing: Send + Sync {
    /// The stored bytes of entity `key` of family `kind`.
    fn get(&self, kind: &str, key: &[u8]) -> Result<Option<Vec<u8>>, BackingError>;
    /// The stored entities of family `kind`, in key order, from `from` on.
    fn scan(&self, kind: &str, from: Bound<&[u8]>) -> Stored<'_>;
}

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
    /// Adds an entity, as settled (a copy of a family, entity by entity;
    /// a `Single` read back).
    fn load(&mut self, key: &[u8], value: &[u8]) -> Result<(), String>;
    /// Reads back a family from the store by the sum a checkpoint recorded
    /// of it, reading none of its entities (a [`Single`] reads its one,
    /// checked against the sum): they are read from `backing` when asked
    /// for.
    fn resume(&mut self, backing: Arc<dyn Backing>, settled: Sum) -> Result<(), String>;
    /// After a settle's changes are in the store (`backing`): reads what
    /// is not in memory from there, forgets the deletions just written,
    /// and drops settled entities beyond `capacity` from memory, those
    /// written longest ago first. Returns how many it dropped.
    fn written(&mut self, backing: &Arc<dyn Backing>, capacity: usize) -> usize;
    /// Entities in memory.
    fn resident(&self) -> usize;
}

#[derive(Clone)]
struct Slot<V> {
    value: V,
    /// Its hash as last settled (0 if it did not exist then).
    settled: Sum,
    /// Changed since the last settle (its key is in `changed`).
    dirty: bool,
    /// The settle that last wrote it, or that was next when it was read
    /// back: what eviction goes by.
    generation: u64,
}

/// An entity that is gone from memory and must not be read from the store.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Removed {
    /// Removed since the last settle; its hash as last settled.
    Since(Sum),
    /// Settled as removed: the store holds it until that settle's write.
    Deleting,
}

/// Entities by key: looked up by hash (a fold's many reads and changes
/// each cost one hash and one comparison, not a search through a tree),
/// with the keys also kept in order once something reads them in order
/// (iteration, ranges).
type ByKey<K, V> = HashMap<K, V, foldhash::fast::FixedState>;

/// A family of entities kept in key order. Every mutable access marks the
/// entity changed, so nothing a fold does can be missed by a checkpoint.
///
/// Until it is first settled (or read back from the store) a family does
/// not track changes: its first settle hands over every entity, so a fold
/// from nothing — a rebuild, a replay — pays nothing for tracking.
///
/// Once its entities are in the store (a [`Backing`]), memory holds the
/// entities changed since the last settle and a bounded number of settled
/// ones ([`Family::written`] evicts the rest); an entity not in memory is
/// read from the store, as it was last written. Reads of an entity not in
/// memory give an owned copy ([`Cow::Owned`]) and leave memory as it was; a
/// change reads it in. Which entities are in memory never changes what a
/// read returns. A store that cannot be read stops the fold (a panic, which
/// the node's supervisor reports as its projection worker failing).
#[derive(Clone)]
pub struct Entities<K, V> {
    kind: &'static str,
    /// Changes are tracked (entities are marked `dirty` one by one);
    /// otherwise every slot stays dirty and the next settle takes all.
    tracking: bool,
    map: ByKey<K, Slot<V>>,
    /// The keys of `map`, in order: built by the first read in key order
    /// and kept from then on. A fold that never reads in order (a rebuild,
    /// a replay) never pays for it.
    order: OnceLock<BTreeSet<K>>,
    /// Keys changed since the last settle, each once.
    changed: Vec<K>,
    /// Entities not to be read from the store. (Only looked up, never
    /// iterated.)
    removed: HashMap<K, Removed>,
    /// The sum of the settled entities' hashes.
    settled: Sum,
    /// Where entities not in `map` are; `None`: every entity is in `map`.
    backing: Option<Arc<dyn Backing>>,
    /// Every key this family wrote to the store, when it is the only
    /// writer of what the store holds of it (its first settle replaced
    /// everything there): a key not among them is not read from the store.
    /// `None` after a resume, when what the store holds is not known.
    stored_keys: Option<StoredKeys>,
    /// Settles so far (what a slot's `generation` counts).
    generation: u64,
}

impl<K: EntityKey + std::fmt::Debug, V: std::fmt::Debug> std::fmt::Debug for Entities<K, V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Entities")
            .field("kind", &self.kind)
            .field("resident", &self.map.len())
            .field("backed", &self.backing.is_some())
            .finish_non_exhaustive()
    }
}

impl<K: EntityKey, V: Value + PartialEq> PartialEq for Entities<K, V> {
    /// Equal content (what the entities are, in memory or stored, not what
    /// was settled).
    fn eq(&self, other: &Self) -> bool {
        self.kind == other.kind && self.iter().eq(other.iter())
    }
}

/// What an entity's value must be: kept as canonical JSON, copied out of
/// memory when read from the store.
pub trait Value: Serialize + DeserializeOwned + Clone + Send + Sync + 'static {}
impl<V: Serialize + DeserializeOwned + Clone + Send + Sync + 'static> Value for V {}

/// A read of the store failed: the fold cannot go on (see [`Entities`]).
fn unreadable(kind: &str, what: impl std::fmt::Display) -> ! {
    panic!(
        "the projection store could not be read ({kind}: {what}); the views stop here. \
         Run `agentlog verify --deep` on the data directory, then restore it or rebuild the projections"
    )
}

impl<K: EntityKey, V: Value> Entities<K, V> {
    pub fn new(kind: &'static str) -> Self {
        Entities {
            kind,
            tracking: false,
            map: ByKey::default(),
            order: OnceLock::new(),
            changed: Vec::new(),
            removed: HashMap::new(),
            settled: Sum::ZERO,
            backing: None,
            stored_keys: None,
            generation: 0,
        }
    }

    /// The keys in order, built now if no read in order needed them yet.
    fn order(&self) -> &BTreeSet<K> {
        self.order.get_or_init(|| self.map.keys().cloned().collect())
    }

    fn order_insert(&mut self, key: &K) {
        if let Some(order) = self.order.get_mut() {
            order.insert(key.clone());
        }
    }

    fn order_remove<Q>(&mut self, key: &Q)
    where
        K: Borrow<Q>,
        Q: Ord + ?Sized,
    {
        if let Some(order) = self.order.get_mut() {
            order.remove(key);
        }
    }

    fn is_removed<Q>(&self, key: &Q) -> bool
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        !self.removed.is_empty() && self.removed.contains_key(key)
    }

    /// The stored bytes of an entity not in memory (`None`: there are none,
    /// or the family keeps everything in memory).
    fn stored<Q>(&self, key: &Q) -> Option<(Vec<u8>, Vec<u8>)>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ToOwned<Owned = K> + ?Sized,
    {
        let backing = self.backing.as_ref()?;
        if self.is_removed(key) {
            return None;
        }
        let key = key.to_owned().to_bytes();
        if self.stored_keys.as_ref().is_some_and(|stored| !stored.may_contain(&key)) {
            return None;
        }
        let bytes = backing.get(self.kind, &key).unwrap_or_else(|e| unreadable(self.kind, e))?;
        Some((key, bytes))
    }

    fn decode(&self, key: &[u8], bytes: &[u8]) -> V {
        serde_json::from_slice(bytes)
            .unwrap_or_else(|e| unreadable(self.kind, format!("entity {:?}: {e}", String::from_utf8_lossy(key))))
    }

    /// Reads a stored entity into memory, as settled (not changed); false
    /// when there is none.
    fn read_in<Q>(&mut self, key: &Q) -> bool
    where
        K: Borrow<Q>,
        Q: Ord + Hash + Eq + ToOwned<Owned = K> + ?Sized,
    {
        let Some((key_bytes, bytes)) = self.stored(key) else { return false };
        let value = self.decode(&key_bytes, &bytes);
        let settled = entity_hash(self.kind, &key_bytes, &bytes);
        let key = key.to_owned();
        self.order_insert(&key);
        self.map.insert(key, Slot { value, settled, dirty: false, generation: self.generation });
        true
    }

    /// Reads the entity into memory if it is only in the store.
    fn resident_or_read<Q>(&mut self, key: &Q)
    where
        K: Borrow<Q>,
        Q: Ord + Hash + Eq + ToOwned<Owned = K> + ?Sized,
    {
        if self.backing.is_some() && !self.map.contains_key(key) {
            self.read_in(key);
        }
    }

    pub fn get<Q>(&self, key: &Q) -> Option<Cow<'_, V>>
    where
        K: Borrow<Q>,
        Q: Ord + Hash + Eq + ToOwned<Owned = K> + ?Sized,
    {
        if let Some(slot) = self.map.get(key) {
            return Some(Cow::Borrowed(&slot.value));
        }
        let (key, bytes) = self.stored(key)?;
        Some(Cow::Owned(self.decode(&key, &bytes)))
    }

    /// The entity to change, marked changed.
    pub fn get_mut<Q>(&mut self, key: &Q) -> Option<&mut V>
    where
        K: Borrow<Q>,
        Q: Ord + Hash + Eq + ToOwned<Owned = K> + ?Sized,
    {
        self.resident_or_read(key);
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
        Q: Ord + Hash + Eq + ToOwned<Owned = K> + ?Sized,
    {
        self.resident_or_read(key);
        if self.map.contains_key(key) {
            return self.get_mut(key).expect("just found");
        }
        let key = key.to_owned();
        let value = make();
        &mut self.insert_new(key, value).value
    }

    /// Sets the entity's value, marked changed; returns the value it
    /// replaces.
    pub fn insert(&mut self, key: K, value: V) -> Option<V> {
        self.resident_or_read(&key);
        match self.map.entry(key) {
            Entry::Occupied(mut entry) => {
                if !entry.get().dirty {
                    entry.get_mut().dirty = true;
                    self.changed.push(entry.key().clone());
                }
                Some(std::mem::replace(&mut entry.get_mut().value, value))
            }
            Entry::Vacant(entry) => {
                let slot = Self::new_slot(
                    &mut self.removed,
                    &mut self.changed,
                    self.tracking,
                    self.generation,
                    entry.key(),
                    value,
                );
                if let Some(order) = self.order.get_mut() {
                    order.insert(entry.key().clone());
                }
                entry.insert(slot);
                None
            }
        }
    }

    /// Adds the entity unless there is one (which is left as it is, not
    /// marked changed). One search.
    pub fn insert_if_absent(&mut self, key: K, make: impl FnOnce() -> V) {
        self.resident_or_read(&key);
        if let Entry::Vacant(entry) = self.map.entry(key) {
            let slot = Self::new_slot(
                &mut self.removed,
                &mut self.changed,
                self.tracking,
                self.generation,
                entry.key(),
                make(),
            );
            if let Some(order) = self.order.get_mut() {
                order.insert(entry.key().clone());
            }
            entry.insert(slot);
        }
    }

    fn insert_new(&mut self, key: K, value: V) -> &mut Slot<V> {
        let slot = Self::new_slot(&mut self.removed, &mut self.changed, self.tracking, self.generation, &key, value);
        self.order_insert(&key);
        self.map.entry(key).or_insert(slot)
    }

    /// The slot of an entity not in memory: changed (its key among the
    /// changed once), with the hash the store has of it.
    fn new_slot(
        removed: &mut HashMap<K, Removed>,
        changed: &mut Vec<K>,
        tracking: bool,
        generation: u64,
        key: &K,
        value: V,
    ) -> Slot<V> {
        let was = if removed.is_empty() { None } else { removed.remove(key) };
        let settled = match was {
            // Removed and back since the last settle: its key is already
            // among the changed, and its settled hash is kept.
            Some(Removed::Since(settled)) => settled,
            // New, or back after its removal was settled.
            Some(Removed::Deleting) | None => {
                if tracking {
                    changed.push(key.clone());
                }
                Sum::ZERO
            }
        };
        Slot { value, settled, dirty: true, generation }
    }

    /// Removes the entity, marked changed.
    pub fn remove<Q>(&mut self, key: &Q) -> Option<V>
    where
        K: Borrow<Q>,
        Q: Ord + Hash + Eq + ToOwned<Owned = K> + ?Sized,
    {
        self.resident_or_read(key);
        let slot = self.map.remove(key)?;
        self.order_remove(key);
        if !self.tracking {
            return Some(slot.value);
        }
        if !slot.dirty {
            self.changed.push(key.to_owned());
        }
        // Remembered until the next settle (its key stays among the
        // changed, once), with the hash to take off the sum.
        self.removed.insert(key.to_owned(), Removed::Since(slot.settled));
        Some(slot.value)
    }

    /// Every entity, in key order.
    pub fn iter(&self) -> Merged<'_, K, V> {
        self.entries(Bound::Unbounded)
    }

    pub fn keys(&self) -> impl Iterator<Item = Cow<'_, K>> {
        self.iter().map(|(k, _)| k)
    }

    pub fn values(&self) -> impl Iterator<Item = Cow<'_, V>> {
        self.iter().map(|(_, v)| v)
    }

    /// Entities in key order within `range`.
    pub fn range<R: std::ops::RangeBounds<K>>(&self, range: R) -> impl Iterator<Item = (Cow<'_, K>, Cow<'_, V>)> {
        let end = range.end_bound().cloned();
        self.entries(range.start_bound().cloned()).take_while(move |(key, _)| match &end {
            Bound::Included(end) => **key <= *end,
            Bound::Excluded(end) => **key < *end,
            Bound::Unbounded => true,
        })
    }

    /// Entities in key order from the first key after `after` (all when
    /// `None`).
    pub fn iter_after<Q>(&self, after: Option<&Q>) -> Merged<'_, K, V>
    where
        K: Borrow<Q>,
        Q: ToOwned<Owned = K> + ?Sized,
    {
        self.entries(after.map_or(Bound::Unbounded, |after| Bound::Excluded(after.to_owned())))
    }

    /// Values in key order from the first key after `after` (all when `None`).
    pub fn values_after<Q>(&self, after: Option<&Q>) -> impl Iterator<Item = Cow<'_, V>>
    where
        K: Borrow<Q>,
        Q: ToOwned<Owned = K> + ?Sized,
    {
        self.iter_after(after).map(|(_, v)| v)
    }

    /// Entities in key order from `from`: those in memory merged with those
    /// only in the store.
    fn entries(&self, from: Bound<K>) -> Merged<'_, K, V> {
        let stored = self.backing.as_ref().map(|backing| {
            let from_bytes = match &from {
                Bound::Included(k) | Bound::Excluded(k) => Some(k.to_bytes()),
                Bound::Unbounded => None,
            };
            let bound = match (&from, &from_bytes) {
                (Bound::Included(_), Some(b)) => Bound::Included(b.as_slice()),
                (Bound::Excluded(_), Some(b)) => Bound::Excluded(b.as_slice()),
                _ => Bound::Unbounded,
            };
            backing.scan(self.kind, bound)
        });
        Merged {
            family: self,
            memory: self.order().range((from, Bound::Unbounded)).peekable(),
            stored,
            stored_head: None,
        }
    }

    fn value_bytes(value: &V) -> Vec<u8> {
        serde_json::to_vec(value).expect("entities serialise")
    }

    fn hash_of(&self, key: &K, value: &V) -> Sum {
        entity_hash(self.kind, &key.to_bytes(), &Self::value_bytes(value))
    }
}

/// A family's entities in key order: those in memory merged with those only
/// in the store (read as they come, never all at once).
pub struct Merged<'a, K, V> {
    family: &'a Entities<K, V>,
    /// The keys in memory, from the first asked for.
    memory: std::iter::Peekable<std::collections::btree_set::Range<'a, K>>,
    stored: Option<Stored<'a>>,
    /// The next stored entity, its key parsed.
    stored_head: Option<(K, Vec<u8>, Vec<u8>)>,
}

impl<'a, K: EntityKey, V: Value> Iterator for Merged<'a, K, V> {
    type Item = (Cow<'a, K>, Cow<'a, V>);

    fn next(&mut self) -> Option<Self::Item> {
        let kind = self.family.kind;
        loop {
            if self.stored_head.is_none()
                && let Some(stored) = self.stored.as_mut()
            {
                self.stored_head = match stored.next() {
                    None => {
                        self.stored = None;
                        None
                    }
                    Some(Err(e)) => unreadable(kind, e),
                    Some(Ok((key_bytes, bytes))) => {
                        let key = K::from_bytes(&key_bytes)
                            .unwrap_or_else(|| unreadable(kind, format!("a key that does not parse: {key_bytes:?}")));
                        Some((key, key_bytes, bytes))
                    }
                };
            }
            let from_memory = match (self.memory.peek(), &self.stored_head) {
                (None, None) => return None,
                (Some(_), None) => true,
                (None, Some(_)) => false,
                (Some(in_memory), Some((stored, _, _))) => match (*in_memory).cmp(stored) {
                    std::cmp::Ordering::Less => true,
                    // In memory, the stored copy is older.
                    std::cmp::Ordering::Equal => {
                        self.stored_head = None;
                        true
                    }
                    std::cmp::Ordering::Greater => false,
                },
            };
            if from_memory {
                let key = self.memory.next()?;
                let slot = self.family.map.get(key).expect("every key in order is in the map");
                return Some((Cow::Borrowed(key), Cow::Borrowed(&slot.value)));
            }
            let (key, key_bytes, bytes) = self.stored_head.take()?;
            if self.family.is_removed(&key) {
                continue;
            }
            let value = self.family.decode(&key_bytes, &bytes);
            return Some((Cow::Owned(key), Cow::Owned(value)));
        }
    }
}

impl<K: EntityKey, V: Value> Family for Entities<K, V> {
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
                None => {
                    if let Some(Removed::Since(settled)) = self.removed.get(key) {
                        sum = sum - *settled;
                    }
                }
            }
        }
        sum
    }

    fn sum_from_scratch(&self) -> Sum {
        self.iter().fold(Sum::ZERO, |sum, (key, value)| sum + self.hash_of(&key, &value))
    }

    fn settle(&mut self, out: &mut Vec<Change>) {
        self.generation += 1;
        let generation = self.generation;
        if !self.tracking {
            // The first settle: every entity, replacing what the store held.
            self.settled = Sum::ZERO;
            let mut stored_keys = StoredKeys::default();
            let mut keys: Vec<&K> = self.map.keys().collect();
            keys.sort_unstable();
            let keys: Vec<K> = keys.into_iter().cloned().collect();
            for key in &keys {
                let slot = self.map.get_mut(key).expect("every key in order is in the map");
                let (key_bytes, bytes) = (key.to_bytes(), Self::value_bytes(&slot.value));
                let hash = entity_hash(self.kind, &key_bytes, &bytes);
                self.settled = self.settled + hash;
                (slot.settled, slot.dirty, slot.generation) = (hash, false, generation);
                stored_keys.insert(&key_bytes);
                out.push((key_bytes, Some(bytes)));
            }
            self.stored_keys = Some(stored_keys);
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
                    (slot.settled, slot.dirty, slot.generation) = (hash, false, generation);
                    if let Some(stored_keys) = &mut self.stored_keys {
                        stored_keys.insert(&key_bytes);
                    }
                    out.push((key_bytes, Some(bytes)));
                }
                None => {
                    // Gone; the store has it only if it was settled then.
                    if let Some(Removed::Since(settled)) = self.removed.get(&key).copied() {
                        if settled != Sum::ZERO {
                            self.settled = self.settled - settled;
                            out.push((key_bytes, None));
                        }
                        // Not read from the store until the deletion is in it.
                        self.removed.insert(key, Removed::Deleting);
                    }
                }
            }
        }
    }

    fn for_each(&self, f: &mut dyn FnMut(Vec<u8>, Vec<u8>)) {
        for (key, value) in self.iter() {
            f(key.to_bytes(), Self::value_bytes(&value));
        }
    }

    fn load(&mut self, key: &[u8], value: &[u8]) -> Result<(), String> {
        let parsed = K::from_bytes(key).ok_or_else(|| format!("a {} key that does not parse: {key:?}", self.kind))?;
        let parsed_value: V = serde_json::from_slice(value)
            .map_err(|e| format!("{} {:?}: {e}", self.kind, String::from_utf8_lossy(key)))?;
        let hash = entity_hash(self.kind, key, value);
        let slot = Slot { value: parsed_value, settled: hash, dirty: false, generation: self.generation };
        self.order_insert(&parsed);
        if let Some(old) = self.map.insert(parsed, slot) {
            self.settled = self.settled - old.settled;
        }
        self.settled = self.settled + hash;
        Ok(())
    }

    fn resume(&mut self, backing: Arc<dyn Backing>, settled: Sum) -> Result<(), String> {
        (self.backing, self.settled, self.tracking, self.stored_keys) = (Some(backing), settled, true, None);
        self.changed.clear();
        Ok(())
    }

    fn written(&mut self, backing: &Arc<dyn Backing>, capacity: usize) -> usize {
        if self.backing.is_none() {
            self.backing = Some(backing.clone());
        }
        self.removed.retain(|_, removed| *removed != Removed::Deleting);
        if self.map.len() <= capacity {
            return 0;
        }
        // Down to three quarters of the capacity, so the next checkpoints
        // do not each evict a few.
        let excess = self.map.len() - capacity / 4 * 3;
        let mut settled: Vec<(u64, &K)> =
            self.map.iter().filter(|(_, slot)| !slot.dirty).map(|(key, slot)| (slot.generation, key)).collect();
        let n = excess.min(settled.len());
        if n < settled.len() {
            // By generation alone: which of one generation go does not
            // change what a read returns, and comparing keys costs.
            settled.select_nth_unstable_by_key(n, |(generation, _)| *generation);
        }
        let evict: Vec<K> = settled[..n].iter().map(|(_, key)| (*key).clone()).collect();
        for key in &evict {
            self.map.remove(key);
            self.order_remove(key);
        }
        evict.len()
    }

    fn resident(&self) -> usize {
        self.map.len()
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

    fn resume(&mut self, backing: Arc<dyn Backing>, settled: Sum) -> Result<(), String> {
        let bytes = backing.get(self.kind, &[])?.ok_or_else(|| format!("{} is not in the store", self.kind))?;
        if entity_hash(self.kind, &[], &bytes) != settled {
            return Err(format!("{} does not hash to the sum its checkpoint recorded", self.kind));
        }
        self.load(&[], &bytes)
    }

    fn written(&mut self, _: &Arc<dyn Backing>, _: usize) -> usize {
        0
    }

    fn resident(&self) -> usize {
        1
    }
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
    fn reads_in_key_order_whether_or_not_the_order_was_built_before_the_changes() {
        let keys = |e: &Entities<String, u64>| e.keys().map(Cow::into_owned).collect::<Vec<_>>();
        let mut e: Entities<String, u64> = Entities::new("n");
        for key in ["m", "c", "x", "a"] {
            e.insert(key.into(), 1);
        }
        e.remove("x");
        e.insert_if_absent("b".into(), || 2);
        // The first read in order builds it from what is there now.
        assert_eq!(keys(&e), ["a", "b", "c", "m"]);
        // Kept from then on, through every kind of change.
        e.remove("a");
        e.insert("d".into(), 3);
        e.insert_if_absent("aa".into(), || 4);
        *e.get_or_insert_with("z", || 5) += 1;
        assert_eq!(keys(&e), ["aa", "b", "c", "d", "m", "z"]);
        assert_eq!(
            e.range("c".to_owned()..="m".to_owned()).map(|(k, _)| k.into_owned()).collect::<Vec<_>>(),
            ["c", "d", "m"]
        );
        // A first settle hands every entity over in key order, built or not.
        let mut fresh: Entities<String, u64> = Entities::new("n");
        for key in ["q", "e", "k"] {
            fresh.insert(key.into(), 1);
        }
        let mut out = Vec::new();
        fresh.settle(&mut out);
        assert_eq!(out.iter().map(|(k, _)| k.as_slice()).collect::<Vec<_>>(), [b"e", b"k", b"q"]);
    }

    #[test]
    fn seq_keys_read_back() {
        assert_eq!(<(u64, u32)>::from_bytes(&(7u64, 2u32).to_bytes()), Some((7, 2)));
        assert_eq!(<(u64, u32)>::from_bytes(&[1, 2]), None);
    }
}
