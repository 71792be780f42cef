//! Damaged storage is never silent. Bytes are overwritten in the WAL's
//! RocksDB files behind agentlog's back, as a failing disk or a stray
//! write would: damage in the write-ahead log file or the MANIFEST refuses
//! every open (read-only too) and names the file; damage in a table file's
//! data block fails the first read of that block, naming the file, and the
//! deep scan reports it; only an incomplete last record — a torn write —
//! is tolerated.
use std::path::{Path, PathBuf};

use agentlog_core::testing::request;
use agentlog_log::wal::{Store, StoreOptions, verify};
use agentlog_log::{EmbeddedLog, Error, ExpectedVersion, Log, Options};

const EVENTS: u64 = 2_000;

/// A store of `EVENTS` events whose data is still in the write-ahead log.
async fn store_in_wal(dir: &Path) {
    let log = EmbeddedLog::open(dir, Options::default()).unwrap();
    for i in 0..EVENTS {
        log.append(request("task/a", ExpectedVersion::Any, 1, i)).await.unwrap();
    }
}

fn files_ending(dir: &Path, suffix: &str) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().unwrap().to_string_lossy().ends_with(suffix))
        .collect();
    files.sort();
    files
}

fn only_file(dir: &Path, prefix_or_suffix: &str) -> PathBuf {
    let files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            name.starts_with(prefix_or_suffix) || name.ends_with(prefix_or_suffix)
        })
        .collect();
    assert_eq!(files.len(), 1, "one {prefix_or_suffix} file: {files:?}");
    files.into_iter().next().unwrap()
}

/// Inverts four bytes of `file` at `at`.
fn overwrite(file: &Path, at: usize) {
    let mut bytes = std::fs::read(file).unwrap();
    assert!(bytes.len() > at + 4, "{} has {} bytes", file.display(), bytes.len());
    for byte in &mut bytes[at..at + 4] {
        *byte ^= 0xff;
    }
    std::fs::write(file, bytes).unwrap();
}

/// Both opens fail with `Damaged` naming `file` — the read-only one first,
/// so it names the file by itself — and the files are left as they were:
/// nothing was appended or repaired.
fn assert_refused(dir: &Path, file: &Path) {
    let before = std::fs::read(file).unwrap();
    let name = file.file_name().unwrap().to_string_lossy().into_owned();
    for (how, result) in
        [("read-only", Store::open_read_only(dir)), ("read-write", Store::open(dir, StoreOptions::default()))]
    {
        match result {
            Err(e @ Error::Damaged { .. }) => {
                let message = e.to_string();
                assert!(message.contains(&dir.join(&name).display().to_string()), "{how}: names {name}: {message}");
                assert!(!message.contains("one of the"), "{how}: names the one file, not candidates: {message}");
                assert!(message.contains("agentlog restore"), "{how}: the error says what to do: {message}");
                assert!(!e.is_retryable(), "{how}: damage is not worth a retry");
            }
            other => panic!("{how}: a damaged {name} must refuse the open, got {other:?}"),
        }
    }
    assert!(EmbeddedLog::open(dir, Options::default()).is_err(), "the embedded log refuses it too");
    assert_eq!(std::fs::read(file).unwrap(), before, "a refused open leaves {name} as it was");
}

#[tokio::test]
async fn damage_in_the_middle_of_the_write_ahead_log_refuses_every_open() {
    let dir = tempfile::tempdir().unwrap();
    store_in_wal(dir.path()).await;
    let wal = only_file(dir.path(), ".log");
    let size = std::fs::metadata(&wal).unwrap().len() as usize;
    overwrite(&wal, size / 2);
    assert_refused(dir.path(), &wal);
}

#[tokio::test]
async fn damage_in_the_manifest_refuses_every_open() {
    let dir = tempfile::tempdir().unwrap();
    store_in_wal(dir.path()).await;
    let manifest = only_file(dir.path(), "MANIFEST-");
    overwrite(&manifest, 200);
    assert_refused(dir.path(), &manifest);
}

#[tokio::test]
async fn a_torn_last_record_opens_without_it_and_the_log_continues() {
    let dir = tempfile::tempdir().unwrap();
    store_in_wal(dir.path()).await;
    // A crash in the middle of writing the last record leaves it incomplete.
    let wal = only_file(dir.path(), ".log");
    let size = std::fs::metadata(&wal).unwrap().len();
    std::fs::OpenOptions::new().write(true).open(&wal).unwrap().set_len(size - 7).unwrap();

    let store = Store::open(dir.path(), StoreOptions::default()).expect("a torn tail is tolerated");
    let report = verify(&store, &mut |_, _| {}).expect("what remains verifies");
    assert_eq!(report.last_seq, EVENTS - 1, "only the torn record is lost");
    drop(store);
    let log = EmbeddedLog::open(dir.path(), Options::default()).unwrap();
    let appended = log.append(request("task/a", ExpectedVersion::Any, 1, EVENTS)).await.unwrap();
    assert_eq!(appended.first_seq, EVENTS, "the next append takes the torn record's place");
    verify(log.store(), &mut |_, _| {}).expect("the chain continues");
}

#[tokio::test]
async fn damage_in_a_table_file_fails_the_read_of_that_block_and_the_deep_scan_names_it() {
    let dir = tempfile::tempdir().unwrap();
    store_in_wal(dir.path()).await;
    {
        // Move everything from the write-ahead log into table files.
        let families = ["events", "streams", "ids", "idem", "meta"];
        let db = agentlog_log::rocksdb::DB::open_cf(&agentlog_log::rocksdb::Options::default(), dir.path(), families)
            .unwrap();
        for family in families {
            db.flush_cf(db.cf_handle(family).unwrap()).unwrap();
        }
    }
    // The largest table file holds the events; damage an early data block
    // (RocksDB checks data blocks when it reads them, not at open).
    let tables = files_ending(dir.path(), ".sst");
    let events = tables.iter().max_by_key(|p| std::fs::metadata(p).unwrap().len()).unwrap();
    let name = events.file_name().unwrap().to_string_lossy().into_owned();
    overwrite(events, 5_000);

    let store = Store::open(dir.path(), StoreOptions::default()).expect("the index and the last block are intact");
    let error = store.read(1, EVENTS as usize).expect_err("reading the damaged block fails");
    assert!(matches!(error, Error::Damaged { .. }), "damage, not a passing storage failure: {error:?}");
    assert!(!error.is_retryable());
    assert!(error.to_string().contains(&name), "the read error names {name}: {error}");
    assert!(verify(&store, &mut |_, _| {}).is_err(), "verify fails too");

    let scans = store.deep_scan(&mut |_, _| {});
    let damaged: Vec<_> = scans.iter().filter(|s| s.damage.is_some()).collect();
    assert_eq!(damaged.len(), 1, "{scans:?}");
    assert_eq!(damaged[0].family, "events");
    assert!(damaged[0].damage.as_ref().unwrap().contains(&name), "{:?}", damaged[0]);
    let ids = scans.iter().find(|s| s.family == "ids").unwrap();
    assert_eq!(ids.keys, EVENTS, "the intact families are read whole");
}
