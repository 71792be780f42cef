//! The node's supervision, as an operator meets it through `agentlog
//! serve`: a fatal failure (the mirror reading an event it cannot decode)
//! is logged with its cause and the component, and the process exits
//! non-zero; a transient one (the NATS server restarting) turns `/ready`
//! to 503 naming `nats` and back to 200 by itself; and SIGTERM to a node
//! whose NATS server is gone exits within the configured drain timeout.
mod common;

use std::time::Duration;

use agentlog_commands::Command as Cmd;
use agentlog_commands::command::RegisterAgent;
use agentlog_commands::wire::Client;
use agentlog_tests::nats::NatsServer;
use common::{field, get, start, start_with_env};

fn register(n: u32) -> Cmd {
    Cmd::RegisterAgent(RegisterAgent { agent_id: format!("agent-{n}"), name: String::new(), capabilities: vec![] })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_undecodable_event_in_the_stream_stops_the_node_naming_the_mirror() {
    let server = NatsServer::start();
    let dir = tempfile::tempdir().unwrap();
    let mut node = start(&server, dir.path());
    let nats = async_nats::connect(server.url()).await.unwrap();
    let client = Client::new(nats.clone(), "test").with_timeout(Duration::from_secs(10));
    client.execute(&register(1), None).await.unwrap();

    // Bytes that are no envelope, straight onto the event stream (this test
    // has the permissions a producer does not).
    let js = async_nats::jetstream::new(nats);
    js.publish("agentlog.evt.agent.forged", "not an envelope".into()).await.unwrap().await.unwrap();

    let failed = node.wait_for_log(Duration::from_secs(30), "the node to report the failure", |line| {
        field(line, "message").as_deref() == Some("a component failed; the node drains and exits")
    });
    assert_eq!(field(&failed, "component").as_deref(), Some("mirror"), "{failed}");
    let reason = field(&failed, "reason").unwrap();
    assert!(reason.contains("seq 2") && reason.contains("decode"), "the cause, at its seq: {reason}");
    let exit = node.exit_within(Duration::from_secs(30));
    assert!(!exit.success(), "a node that cannot go on exits non-zero, not {exit}");

    // The mirror kept what it verified, and nothing after it.
    let verify = std::process::Command::new(env!("CARGO_BIN_EXE_agentlog"))
        .args(["verify", "--data"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(verify.status.success(), "{}", String::from_utf8_lossy(&verify.stderr));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nats_restart_is_transient_and_ready_says_so() {
    let mut server = NatsServer::start();
    let dir = tempfile::tempdir().unwrap();
    let mut node = start(&server, dir.path());
    assert_eq!(get(node.http, "/ready").map(|(status, _)| status), Some(200));

    server.kill();
    node.wait_for_log(Duration::from_secs(30), "the node to notice NATS is gone", |line| {
        field(line, "message").as_deref() == Some("not ready")
    });
    let (status, body) = get(node.http, "/ready").expect("/ready answers while NATS is down");
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("nats: degraded"), "{body}");
    assert_eq!(get(node.http, "/health").map(|(status, _)| status), Some(200), "alive all the same");

    server.restart();
    node.wait_for_log(Duration::from_secs(60), "the node to be ready again", |line| {
        field(line, "message").as_deref() == Some("ready")
    });
    assert_eq!(get(node.http, "/ready").map(|(status, _)| status), Some(200));
    let nats = async_nats::connect(server.url()).await.unwrap();
    let client = Client::new(nats, "test").with_timeout(Duration::from_secs(10));
    let accepted = client.execute(&register(2), None).await.expect("commands are answered again");
    assert_eq!(accepted.first_seq, 1);
    node.terminate();
}

#[test]
fn sigterm_without_nats_exits_within_the_drain_timeout() {
    let mut server = NatsServer::start();
    let dir = tempfile::tempdir().unwrap();
    let env = [("AGENTLOG_SHUTDOWN_DRAIN_TIMEOUT_SECONDS", "2")];
    let mut node = start_with_env(&server.url(), dir.path(), &[], &env);
    server.kill();
    node.wait_for_log(Duration::from_secs(30), "the node to notice NATS is gone", |line| {
        field(line, "message").as_deref() == Some("not ready")
    });
    node.signal("-TERM");
    // The drain timeout, plus room for the process to start and end.
    node.exit_within(Duration::from_secs(2 + 8));
}
