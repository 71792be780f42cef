//! The mirror resumes exactly where it stopped (and knows how far it wrote
//! each stream), and an existing stream with an unsafe configuration is
//! reported, never silently changed.
use std::time::Duration;

use agentlog_log::jetstream::{JetStreamLog, Options};
use agentlog_log::testing::request;
use agentlog_log::wal::verify;
use agentlog_log::{Error, ExpectedVersion, Log};
use agentlog_tests::nats::NatsServer;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_mirror_resumes_where_it_stopped_and_converges() {
    let server = NatsServer::start();
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let writer = JetStreamLog::open(Options::new(server.url(), dir_a.path())).await.unwrap();
    for round in 0..5u64 {
        // Node B comes and goes while node A keeps appending.
        let reader = JetStreamLog::open(Options::new(server.url(), dir_b.path())).await.unwrap();
        for i in 0..40 {
            let stream = format!("task/t{}", i % 7);
            writer.append(request(&stream, ExpectedVersion::Any, 1 + i % 3, round * 1000 + i)).await.unwrap();
        }
        let head = writer.head().await.unwrap();
        assert_eq!(reader.caught_up(head.last_seq).await.unwrap(), head, "round {round}");
        // The follower says how far it wrote each stream, exactly (a
        // handler's first decision reads nothing more when its cache is there).
        for t in 0..7 {
            let stream = format!("task/t{t}");
            let stored = reader.store().stream_version(&stream).unwrap();
            assert_eq!(reader.local_version(&stream), Some(stored), "round {round}, {stream}");
        }
        // A stream it never wrote is looked up in the index (and
        // remembered): this node's mirror has none of its events.
        assert_eq!(reader.local_version("task/never-written"), Some(0));
        reader.close().await;
    }
    let reader = JetStreamLog::open(Options::new(server.url(), dir_b.path())).await.unwrap();
    let head = writer.head().await.unwrap();
    reader.caught_up(head.last_seq).await.unwrap();
    let (a, b) = (writer.store().read_raw(1, usize::MAX).unwrap(), reader.store().read_raw(1, usize::MAX).unwrap());
    assert!(a == b, "the resumed mirror equals the live one, byte for byte");
    assert_eq!(verify(reader.store(), &mut |_, _| {}).unwrap().head_hash, head.hash);
}

#[tokio::test]
async fn an_existing_stream_with_an_unsafe_configuration_is_reported() {
    let server = NatsServer::start();
    let client = async_nats::connect(server.url()).await.unwrap();
    let js = async_nats::jetstream::new(client);
    js.create_stream(async_nats::jetstream::stream::Config {
        name: "AGENTLOG".into(),
        subjects: vec!["agentlog.evt.>".into()],
        max_age: Duration::from_secs(3600),
        ..Default::default()
    })
    .await
    .unwrap();
    let mirror = tempfile::tempdir().unwrap();
    let err = JetStreamLog::open(Options::new(server.url(), mirror.path())).await.unwrap_err();
    assert!(matches!(err, Error::UnsafeStream { .. }), "{err}");
    let message = err.to_string();
    for problem in ["append-only", "atomic batch", "direct get", "limits would drop"] {
        assert!(message.contains(problem), "names {problem:?}: {message}");
    }
    let info = js.get_stream("AGENTLOG").await.unwrap().info().await.unwrap().clone();
    assert!(!info.config.deny_delete, "the live stream was left as it was");
}
