//! With a server configuration where producers may publish only on
//! `agentlog.cmd.>`, a producer's commands work, its attempts to write
//! events on `agentlog.evt.>` are refused, and the stream is unchanged.
use std::sync::Arc;
use std::time::Duration;

use agentlog_commands::command::RegisterAgent;
use agentlog_commands::wire::{self, Client};
use agentlog_commands::{Command, Handler};
use agentlog_log::jetstream::{JetStreamLog, Options};
use agentlog_log::{HybridClock, Log, RandomIdGen};
use agentlog_tests::nats::NatsServer;

const AUTHORIZATION: &str = r#"
authorization {
  users = [
    { user: "service", password: "service-secret" }
    { user: "producer", password: "producer-secret",
      permissions: { publish: ["agentlog.cmd.>"], subscribe: ["_INBOX.>"] } }
  ]
}
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn producers_can_send_commands_but_cannot_write_events() {
    let server = NatsServer::start_with(AUTHORIZATION);
    let mirror = tempfile::tempdir().unwrap();
    let log = Arc::new(
        JetStreamLog::open(Options::new(server.url_as("service", "service-secret"), mirror.path())).await.unwrap(),
    );
    let handler = Arc::new(Handler::new(log.clone(), Arc::new(HybridClock::system()), Arc::new(RandomIdGen::new())));
    let service_connection =
        agentlog_log::jetstream::connect(&server.url_as("service", "service-secret")).await.unwrap();
    let (_stop, stop) = tokio::sync::watch::channel(false);
    tokio::spawn(wire::Service::bind(service_connection, handler).await.unwrap().run(stop));

    let producer = agentlog_log::jetstream::connect(&server.url_as("producer", "producer-secret")).await.unwrap();
    let client = Client::new(producer.clone(), "producer").with_timeout(Duration::from_secs(5));
    // The service was bound (subscribed and flushed) before it was spawned.
    let register =
        Command::RegisterAgent(RegisterAgent { agent_id: "a1".into(), name: String::new(), capabilities: vec![] });
    let accepted = client.execute(&register, Some("register-a1")).await.expect("the producer's command is accepted");
    assert_eq!(accepted.events, ["agent_registered"]);
    let before = log.source_last_seq().await.unwrap();
    assert_eq!(before, 1);

    // Straight onto the event stream: refused by the server.
    let js = async_nats::jetstream::new(producer.clone());
    let published = tokio::time::timeout(Duration::from_secs(2), async {
        js.publish("agentlog.evt.agent.a1", "forged".into()).await?.await.map(|_| ())
    })
    .await;
    assert!(!matches!(published, Ok(Ok(()))), "a forged event must not be acknowledged");
    let forged = async_nats::Request::new().payload("forged".into()).timeout(Some(Duration::from_secs(1)));
    let request = producer.send_request("agentlog.evt.task.t1", forged).await;
    assert!(request.is_err(), "a forged event request must fail");
    producer.flush().await.unwrap();

    // Both attempts have been answered (refused); the server's own count says
    // nothing was stored.
    assert_eq!(log.source_last_seq().await.unwrap(), before, "the stream is unchanged");
    assert_eq!(log.head().await.unwrap().last_seq, before);
}
