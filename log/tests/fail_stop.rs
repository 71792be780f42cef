//! Fail-stop on the write path, with faults injected at the store's seam
//! around the batch write and the fsync (the real RocksDB underneath): each
//! failure poisons the log, later writes are refused even once the fault is
//! gone, every subscription — one already waiting too — delivers what is
//! durable and then ends with the reason, and reopening recovers cleanly
//! from what is on disk.
use std::sync::Arc;

use agentlog_core::testing::{fresh_event, request};
use agentlog_log::wal::{Follower, Ordered, Store, StoreOptions};
use agentlog_log::{EmbeddedLog, Error, ExpectedVersion, Log, Options, Subscription};

/// Which injected fault, and how the log is run when it strikes.
#[derive(Clone, Copy, Debug)]
enum Fault {
    /// The batch write fails (a full disk).
    Write { sync: bool },
    /// The fsync fails, done by the writer itself (one appender).
    SyncByWriter,
    /// The fsync fails under concurrent appends (the writer hands groups to
    /// the syncer thread while more appends wait).
    SyncUnderLoad,
}

impl Fault {
    fn inject(self, store: &Store, on: bool) {
        match self {
            Fault::Write { .. } => store.faults().fail_writes(on),
            Fault::SyncByWriter | Fault::SyncUnderLoad => store.faults().fail_syncs(on),
        }
    }

    fn sync(self) -> bool {
        !matches!(self, Fault::Write { sync: false })
    }
}

fn open(dir: &std::path::Path, sync: bool) -> EmbeddedLog {
    EmbeddedLog::open(dir, Options { sync, ..Options::default() }).expect("open the log")
}

async fn check(fault: Fault) {
    let dir = tempfile::tempdir().unwrap();
    let log = Arc::new(open(dir.path(), fault.sync()));
    for i in 0..3 {
        log.append(request("task/a", ExpectedVersion::Any, 1, i)).await.unwrap();
    }
    // A subscription that has delivered everything and now waits.
    let mut waiting = log.subscribe(1).unwrap();
    for seq in 1..=3 {
        assert_eq!(waiting.next().await.unwrap().seq, seq);
    }
    let waiting = tokio::spawn(async move { waiting.next().await });
    tokio::task::yield_now().await; // it runs until it parks on the head
    assert!(!waiting.is_finished(), "{fault:?}: nothing new was committed yet");

    fault.inject(log.store(), true);
    let failed = match fault {
        Fault::SyncUnderLoad => {
            let appends: Vec<_> = (0..64)
                .map(|i| {
                    let log = log.clone();
                    tokio::spawn(async move { log.append(request("task/b", ExpectedVersion::Any, 1, 100 + i)).await })
                })
                .collect();
            let mut results = Vec::new();
            for append in appends {
                results.push(append.await.unwrap());
            }
            results
        }
        _ => vec![log.append(request("task/a", ExpectedVersion::Any, 1, 10)).await],
    };
    for result in &failed {
        assert!(
            matches!(result, Err(Error::Poisoned { .. })),
            "{fault:?}: an append the fault hit is refused: {result:?}"
        );
    }

    // The fault is gone, but the log stays stopped: the state on disk is unknown.
    fault.inject(log.store(), false);
    let later = log.append(request("task/c", ExpectedVersion::Any, 1, 20)).await;
    assert!(matches!(later, Err(Error::Poisoned { .. })), "{fault:?}: later appends are refused: {later:?}");
    let later = log.append(request("task/c", ExpectedVersion::Any, 1, 21)).await;
    assert!(matches!(later, Err(Error::Poisoned { .. })), "{fault:?}: and again: {later:?}");

    // The waiting subscription ends with the reason, and a new one delivers
    // what was durable first.
    let ended = tokio::time::timeout(std::time::Duration::from_secs(10), waiting)
        .await
        .expect("the waiting subscription wakes")
        .unwrap();
    assert!(matches!(ended, Err(Error::Poisoned { .. })), "{fault:?}: {ended:?}");
    let mut fresh = log.subscribe(1).unwrap();
    let durable = log.head().await.unwrap().last_seq;
    assert_eq!(durable, 3, "{fault:?}: nothing the fault hit became durable");
    for seq in 1..=durable {
        assert_eq!(fresh.next().await.unwrap().seq, seq);
    }
    assert!(matches!(fresh.next().await, Err(Error::Poisoned { .. })), "{fault:?}: a new subscription ends too");

    // Reopening recovers from what is on disk, and the log writes again
    // (a subscription keeps the store open: it goes first).
    drop(fresh);
    drop(log);
    for round in 0..3 {
        let log = open(dir.path(), fault.sync());
        let head = log.head().await.unwrap().last_seq;
        assert!(head >= 3, "{fault:?}: what was acknowledged is there after reopening");
        let appended = log.append(request("task/d", ExpectedVersion::Any, 1, 30 + round)).await.unwrap();
        assert_eq!(appended.first_seq, head + 1, "{fault:?}: the log continues where it stood");
        let report = agentlog_log::wal::verify(log.store(), &mut |_, _| {}).unwrap();
        assert_eq!(report.events, head + 1, "{fault:?}: the reopened log verifies");
    }
}

#[tokio::test]
async fn a_failed_write_stops_the_log() {
    check(Fault::Write { sync: true }).await;
    check(Fault::Write { sync: false }).await;
}

#[tokio::test]
async fn a_failed_fsync_stops_the_log() {
    check(Fault::SyncByWriter).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_failed_fsync_under_load_stops_the_log() {
    check(Fault::SyncUnderLoad).await;
}

/// The mirror's writer: a failed write leaves its head where it was and
/// writes nothing; what the source gets wrong writes nothing either.
#[test]
fn the_follower_writes_a_batch_whole_or_not_at_all() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(Store::open(dir.path(), StoreOptions::default()).unwrap());
    let mut follower = Follower::new(store.clone(), false).unwrap();
    let event = |seq: u64, version: u64| {
        let mut envelope = fresh_event("task/m", seq);
        envelope.stream_version = version;
        Ordered { seq, envelope }
    };
    follower.apply(vec![event(1, 1), event(2, 2)], vec![]).unwrap();
    let before = follower.head();

    store.faults().fail_writes(true);
    let err = follower.apply(vec![event(3, 3)], vec![]).unwrap_err();
    assert!(matches!(err, Error::Storage { .. }), "{err}");
    assert_eq!(follower.head(), before);
    store.faults().fail_writes(false);

    let gap = follower.apply(vec![event(3, 3), event(5, 4)], vec![]).unwrap_err();
    assert!(matches!(gap, Error::Corrupt { seq: 4, .. }), "{gap}");
    let version = follower.apply(vec![event(3, 5)], vec![]).unwrap_err();
    assert!(matches!(version, Error::Corrupt { seq: 3, .. }), "{version}");
    assert_eq!((follower.head(), store.head().unwrap()), (before, before), "nothing was written");

    assert_eq!(follower.apply(vec![event(3, 3)], vec![]).unwrap().last_seq, 3);
    assert_eq!(store.read(1, 10).unwrap().len(), 3);
}
