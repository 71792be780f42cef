//! Key and value layouts of the WAL's column families.
use crate::api::Appended;
use crate::chain::Hash;

pub const CF_EVENTS: &str = "events";
pub const CF_STREAMS: &str = "streams";
pub const CF_IDS: &str = "ids";
pub const CF_IDEM: &str = "idem";
pub const CF_META: &str = "meta";
pub const COLUMN_FAMILIES: [&str; 5] = [CF_EVENTS, CF_STREAMS, CF_IDS, CF_IDEM, CF_META];

pub const META_FORMAT: &[u8] = b"format";
pub const META_HEAD: &[u8] = b"head";
/// Where the WAL was cut by `archive prune`: seq ‖ chain hash there.
pub const META_PRUNED: &[u8] = b"pruned";
/// Written once when a store is created; a store without it is not ours.
pub const FORMAT_V1: &[u8] = b"agentlog-wal-v1";

pub fn seq_key(seq: u64) -> [u8; 8] {
    seq.to_be_bytes()
}

pub fn seq_from(bytes: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(bytes.try_into().ok()?))
}

/// `u16 length ‖ stream ‖ u64 version`: one stream's keys are contiguous and
/// ordered by version, and no stream's keys interleave with another's.
pub fn stream_key(stream: &str, version: u64) -> Vec<u8> {
    let mut key = stream_prefix(stream);
    key.extend_from_slice(&version.to_be_bytes());
    key
}

pub fn stream_prefix(stream: &str) -> Vec<u8> {
    let len = u16::try_from(stream.len()).expect("stream names are at most 256 bytes");
    let mut key = Vec::with_capacity(2 + stream.len() + 8);
    key.extend_from_slice(&len.to_be_bytes());
    key.extend_from_slice(stream.as_bytes());
    key
}

/// The version at the end of a `streams` key with this prefix.
pub fn version_from(key: &[u8], prefix: &[u8]) -> Option<u64> {
    let rest = key.strip_prefix(prefix)?;
    seq_from(rest)
}

pub fn appended_value(appended: &Appended) -> [u8; 24] {
    let mut value = [0u8; 24];
    value[..8].copy_from_slice(&appended.first_seq.to_be_bytes());
    value[8..16].copy_from_slice(&appended.last_seq.to_be_bytes());
    value[16..].copy_from_slice(&appended.stream_version.to_be_bytes());
    value
}

pub fn appended_from(value: &[u8]) -> Option<Appended> {
    if value.len() != 24 {
        return None;
    }
    let appended = Appended {
        first_seq: seq_from(&value[..8])?,
        last_seq: seq_from(&value[8..16])?,
        stream_version: seq_from(&value[16..])?,
        duplicate: true,
    };
    (appended.first_seq >= 1 && appended.first_seq <= appended.last_seq).then_some(appended)
}

pub fn head_value(last_seq: u64, hash: &Hash) -> [u8; 40] {
    let mut value = [0u8; 40];
    value[..8].copy_from_slice(&last_seq.to_be_bytes());
    value[8..].copy_from_slice(hash);
    value
}

pub fn head_from(value: &[u8]) -> Option<(u64, Hash)> {
    if value.len() != 40 {
        return None;
    }
    Some((seq_from(&value[..8])?, value[8..].try_into().ok()?))
}
