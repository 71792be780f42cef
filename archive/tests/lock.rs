//! Two archive runs on one root: the second is refused while the first
//! holds the root's lock, and succeeds once it is released.
use agentlog_archive::{Day, Error, Settings};
use agentlog_log::wal::{Store, StoreOptions};

#[test]
fn a_second_run_on_the_same_archive_is_refused_while_one_writes() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("data"), StoreOptions::default()).unwrap();
    let root = dir.path().join("archive");
    std::fs::create_dir_all(&root).unwrap();
    let through: Day = "2026-01-01".parse().unwrap();

    let held = std::fs::File::create(root.join(agentlog_archive::layout::LOCK)).unwrap();
    held.lock().unwrap();
    let err = agentlog_archive::run(&store, &root, through, &Settings::default(), &mut |_| {}).unwrap_err();
    assert!(matches!(err, Error::Invalid(_)), "{err}");
    assert!(err.to_string().contains("another `archive run`"), "{err}");

    held.unlock().unwrap();
    let report = agentlog_archive::run(&store, &root, through, &Settings::default(), &mut |_| {}).unwrap();
    assert!(report.written.is_empty(), "an empty log has no day to archive");
}
