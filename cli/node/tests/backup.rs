//! A backup taken while four writers append to the embedded log restores to
//! a log that verifies and holds every event acknowledged before the backup
//! began; the restored log takes new appends and its chain continues; the
//! next backup into the same directory shares the unchanged table files.
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use agentlog_log::testing::request;
use agentlog_log::wal::verify;
use agentlog_log::{EmbeddedLog, ExpectedVersion, Log, Options};
use agentlog_node::backup;

const WRITERS: u64 = 4;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_backup_under_four_writers_holds_every_event_acknowledged_before_it_began() {
    let dir = tempfile::tempdir().unwrap();
    let (data, backups, restored) = (dir.path().join("data"), dir.path().join("backups"), dir.path().join("restored"));
    let log = Arc::new(EmbeddedLog::open(&data, Options::default()).unwrap());
    let stop = Arc::new(AtomicBool::new(false));
    // Each writer appends to its own stream until stopped, and records
    // each acknowledgement (seq, event id) as it gets it.
    let acked = Arc::new(Mutex::new(Vec::<(u64, Vec<u8>)>::new()));
    let writers: Vec<_> = (0..WRITERS)
        .map(|w| {
            let (log, stop, acked) = (log.clone(), stop.clone(), acked.clone());
            tokio::spawn(async move {
                let mut i = 0;
                while !stop.load(Ordering::Relaxed) || i < 500 {
                    let request = request(&format!("task/w{w}"), ExpectedVersion::Any, 1, w * 1_000_000 + i);
                    let id = request.events[0].event_id.clone();
                    let appended = log.append(request).await.expect("append");
                    acked.lock().unwrap().push((appended.first_seq, id.to_vec()));
                    i += 1;
                }
            })
        })
        .collect();

    // Wait until the writers are well under way, then back up while they go on.
    let mut subscription = log.subscribe(1).unwrap();
    for _ in 0..1_000 {
        agentlog_log::Subscription::next(&mut subscription).await.unwrap();
    }
    drop(subscription);
    let acknowledged_before: Vec<(u64, Vec<u8>)> = acked.lock().unwrap().clone();
    let store = log.store().clone();
    let taken = tokio::task::spawn_blocking({
        let backups = backups.clone();
        move || backup::take(&store, None, &backups, None)
    })
    .await
    .unwrap()
    .expect("a backup while writers append");
    let acknowledged_during = acked.lock().unwrap().len() - acknowledged_before.len();
    stop.store(true, Ordering::Relaxed);
    for writer in writers {
        writer.await.unwrap();
    }
    let final_head = log.store().head().unwrap().last_seq;
    assert!(!acknowledged_before.is_empty());
    assert!(final_head > taken.head_before, "the writers went on after the backup");

    let restored_report = backup::restore(&backups, None, &restored, &mut |_, _| {}).expect("restore");
    assert_eq!(restored_report.events_verified, restored_report.last_seq, "the restore verified the whole chain");
    let copy = EmbeddedLog::open(&restored, Options::default()).expect("the restored log opens for writing");
    // Every event acknowledged before the backup began is there, by seq and id.
    for (seq, id) in &acknowledged_before {
        let found = copy.store().read(*seq, 1).unwrap_or_else(|e| panic!("seq {seq} acknowledged before: {e}"));
        assert_eq!(found.first().map(|e| &e.event_id[..]), Some(&id[..]), "seq {seq} is the event acknowledged as it");
    }
    // And the backup is a prefix of the original, byte for byte.
    let original = log.store().read(1, restored_report.last_seq as usize).unwrap();
    assert_eq!(copy.store().read(1, usize::MAX).unwrap(), original);
    eprintln!(
        "{} appends acknowledged before the backup, {acknowledged_during} while it ran; it holds {} events",
        acknowledged_before.len(),
        restored_report.last_seq
    );

    // The restored log continues: the next append follows its head.
    let next = copy.append(request("task/after", ExpectedVersion::Any, 1, 1)).await.unwrap();
    assert_eq!(next.first_seq, restored_report.last_seq + 1);
    verify(copy.store(), &mut |_, _| {}).expect("the chain continues");

    // A second backup copies only what changed since the first.
    let second = backup::take(log.store(), None, &backups, None).unwrap();
    assert_eq!(second.kept, vec![taken.backup_id, second.backup_id]);
    let on_disk = du(&backups);
    assert!(
        on_disk < taken.log_bytes + second.log_bytes,
        "backups share their table files: {on_disk} bytes on disk for {} + {}",
        taken.log_bytes,
        second.log_bytes
    );
}

fn du(dir: &std::path::Path) -> u64 {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            let meta = e.metadata().unwrap();
            if meta.is_dir() { du(&e.path()) } else { meta.len() }
        })
        .sum()
}
