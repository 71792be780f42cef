//! Reads at the tail of the WAL come from the events its writer kept in
//! memory (`wal::Recent`): they must answer exactly what the store holds,
//! and a read below the prune mark must still be refused as pruned.
use agentlog_core::testing::request;
use agentlog_log::{EmbeddedLog, Error, ExpectedVersion, Log, Options, Subscription};

#[tokio::test]
async fn reads_at_the_tail_answer_what_the_store_holds_and_respect_the_prune_mark() {
    let dir = tempfile::tempdir().unwrap();
    let log = EmbeddedLog::open(dir.path(), Options::default()).unwrap();
    for salt in 0..10 {
        log.append(request(&format!("task/t{}", salt % 3), ExpectedVersion::Any, 2, salt)).await.unwrap();
    }
    let stored = log.store().read(1, 100).unwrap();
    assert_eq!(stored.len(), 20);
    assert_eq!(log.read(1, 100).await.unwrap(), stored, "a read from the kept events is the store's");
    assert_eq!(log.read(7, 5).await.unwrap(), stored[6..11], "a page from the middle");
    let mut subscription = log.subscribe(15).unwrap();
    for expected in &stored[14..] {
        assert_eq!(&subscription.next().await.unwrap(), expected, "seq {}", expected.seq);
    }

    let hash: [u8; 32] = stored[9].hash.as_slice().try_into().unwrap();
    log.store().prune_through(10, &hash).unwrap();
    let refused = log.read(5, 10).await.unwrap_err();
    assert!(matches!(refused, Error::Pruned { seq: 5, through: 10 }), "{refused}");
    assert_eq!(log.read(11, 100).await.unwrap(), stored[10..], "after the mark, as before");
}
