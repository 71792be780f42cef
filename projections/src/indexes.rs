//! The keys of the indexes a view keeps in the store beside its entities
//! (families whose values are empty): each key's bytes sort as the index
//! must, so a page of an index is a range of keys, read from memory and the
//! store alike ([`crate::entities::Entities`]). Ids are UTF-8; a key that
//! holds two ids length-prefixes the first.
use std::borrow::Cow;

/// An index: keys, no values.
pub type Index = crate::entities::Entities<Vec<u8>, ()>;

/// Raw bytes: they sort as bytes, which is what an index's keys are made
/// for.
impl crate::entities::EntityKey for Vec<u8> {
    fn to_bytes(&self) -> Vec<u8> {
        self.clone()
    }
    fn from_bytes(bytes: &[u8]) -> Option<Self> {
        Some(bytes.to_vec())
    }
}

/// Adds `key` unless it is there (a key already there is not rewritten).
pub fn add(index: &mut Index, key: Vec<u8>) {
    index.insert_if_absent(key, || ());
}

/// An id from the end of a key.
pub fn id(bytes: &[u8]) -> Cow<'_, str> {
    String::from_utf8_lossy(bytes)
}

/// A task under its status: one byte, then the id.
pub fn status(status: u8, task_id: &str) -> Vec<u8> {
    [&[status][..], task_id.as_bytes()].concat()
}

/// A ready task in claim order: highest priority first (the negated
/// priority with its sign bit flipped, big-endian, sorts as a signed
/// number), then the oldest (its creating seq), then the id.
pub fn ready(priority: i32, created_seq: u64, task_id: &str) -> Vec<u8> {
    let neg_priority = (-i64::from(priority)).cast_unsigned() ^ (1 << 63);
    [&neg_priority.to_be_bytes()[..], &created_seq.to_be_bytes(), task_id.as_bytes()].concat()
}

/// Where a ready key's id starts.
pub const READY_ID_AT: usize = 16;

/// Every key of `dependency`'s dependents starts so.
pub fn dependents_of(dependency: &str) -> Vec<u8> {
    let len = u32::try_from(dependency.len()).expect("an id is shorter than 4 GiB");
    [&len.to_be_bytes()[..], dependency.as_bytes()].concat()
}

/// A task that depends on `dependency`.
pub fn dependent(dependency: &str, task_id: &str) -> Vec<u8> {
    [dependents_of(dependency), task_id.as_bytes().to_vec()].concat()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_keys_sort_by_priority_down_then_age_then_id() {
        let mut keys = [
            ready(0, 5, "a"),
            ready(-3, 1, "b"),
            ready(7, 9, "c"),
            ready(7, 2, "d"),
            ready(i32::MIN, 0, "e"),
            ready(i32::MAX, 100, "f"),
            ready(0, 5, "0"),
        ];
        keys.sort();
        let ids: Vec<_> = keys.iter().map(|k| id(&k[READY_ID_AT..]).into_owned()).collect();
        assert_eq!(ids, ["f", "d", "c", "0", "a", "b", "e"]);
    }

    #[test]
    fn one_dependencys_dependents_are_one_range() {
        let mut keys = [dependent("ab", "x"), dependent("a", "z"), dependent("abc", "y"), dependent("ab", "w")];
        keys.sort();
        let prefix = dependents_of("ab");
        let of_ab: Vec<_> =
            keys.iter().filter(|k| k.starts_with(&prefix)).map(|k| id(&k[prefix.len()..]).into_owned()).collect();
        assert_eq!(of_ab, ["w", "x"]);
        assert!(!dependent("abc", "y").starts_with(&prefix));
    }
}
