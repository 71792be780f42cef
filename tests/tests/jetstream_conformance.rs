//! The JetStream backend passes the same `Log` conformance suite as the
//! embedded log, against a real nats-server (one per test, on a free
//! loopback port, with a temporary store) and a real RocksDB mirror.
use agentlog_log::jetstream::{JetStreamLog, Options};
use agentlog_tests::nats::NatsServer;

async fn fresh() -> (JetStreamLog, (NatsServer, tempfile::TempDir)) {
    let server = NatsServer::start();
    let mirror = tempfile::tempdir().unwrap();
    let log = JetStreamLog::open(Options::new(server.url(), mirror.path())).await.expect("open the JetStream log");
    (log, (server, mirror))
}

agentlog_log::log_conformance_tests!(fresh());
