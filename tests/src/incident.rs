//! Incidents planted into a log, for the replay tests and docs/REPLAY.md's
//! walk-through (`replay/examples/plant.rs`): events written past the
//! handler, which would refuse them, with the WAL's raw writer.
use std::path::Path;

use agentlog_log::wal::{RawWriter, Store, StoreOptions};
use agentlog_log::{Body, Envelope, EventSource};

/// Two copies of `task`'s first claim written after the log's last event,
/// at its time: a replayed claim, and a second holder. The task's events
/// must still be in the WAL. Returns the two seqs.
pub fn plant_replayed_claim(data: &Path, task: &str) -> Result<(u64, u64), Box<dyn std::error::Error>> {
    let store = Store::open(data, StoreOptions::default())?;
    let stream = format!("task/{task}");
    let events = store.read_stream(&stream, 1, 10_000)?;
    let claim = events
        .iter()
        .find(|e| matches!(e.body, Some(Body::TaskClaimed(_))))
        .ok_or_else(|| format!("{stream} was never claimed: pick a task that was"))?
        .clone();
    let version = events.last().map_or(0, |e| e.stream_version);
    let head = store.head()?;
    let last_ts = EventSource::read(&store, head.last_seq, 1)?.remove(0).ts;
    let mut writer = RawWriter::new(&store)?;
    for n in 1..=2u64 {
        let mut event_id = claim.event_id.to_vec();
        event_id[15] ^= n as u8;
        writer.sealed(Envelope {
            seq: head.last_seq + n,
            stream_version: version + n,
            ts: last_ts,
            event_id,
            ..claim.clone()
        });
    }
    writer.write()?;
    Ok((head.last_seq + 1, head.last_seq + 2))
}

/// Every file under `root` (relative path → blake3 of its bytes): to show
/// that something read a directory and wrote nothing into it.
pub fn file_hashes(root: &Path) -> std::collections::BTreeMap<std::path::PathBuf, String> {
    fn walk(root: &Path, dir: &Path, into: &mut std::collections::BTreeMap<std::path::PathBuf, String>) {
        for entry in std::fs::read_dir(dir).expect("read a directory") {
            let path = entry.expect("read a directory entry").path();
            if path.is_dir() {
                walk(root, &path, into);
            } else {
                let bytes = std::fs::read(&path).expect("read a file");
                into.insert(
                    path.strip_prefix(root).expect("under root").to_owned(),
                    blake3::hash(&bytes).to_hex().to_string(),
                );
            }
        }
    }
    let mut files = std::collections::BTreeMap::new();
    walk(root, root, &mut files);
    files
}
