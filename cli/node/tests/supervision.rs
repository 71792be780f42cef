//! The node's supervision in process, where its readiness can be read
//! after it ended: a fatal failure (an undecodable event in the stream)
//! ends `run` with the mirror named as the cause, and what `/ready` answers
//! names it too; a stop through the handle drains and ends cleanly.
use std::sync::Arc;
use std::time::Duration;

use agentlog_core::{HybridClock, RandomIdGen};
use agentlog_node::{Config, Exit, Node};
use agentlog_tests::nats::NatsServer;

fn config(server: &NatsServer, data: &std::path::Path) -> Config {
    let mut config = Config::default();
    config.nats.url = server.url();
    config.data = data.to_owned();
    config.http = "127.0.0.1:0".into();
    config.archive.enabled = false;
    config
}

/// A node on `server`, ready.
async fn start(server: &NatsServer, data: &std::path::Path) -> Node {
    let node = Node::start(config(server, data), Arc::new(HybridClock::system()), Arc::new(RandomIdGen::new()))
        .await
        .expect("the node starts");
    ready(&node).await;
    node
}

async fn ready(node: &Node) {
    let mut ready = node.ready();
    tokio::time::timeout(Duration::from_secs(30), ready.wait_for(|r| *r))
        .await
        .expect("the node is ready within 30 s")
        .expect("the node is running");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_undecodable_event_ends_the_node_naming_the_mirror() {
    let server = NatsServer::start();
    let dir = tempfile::tempdir().unwrap();
    let node = start(&server, dir.path()).await;
    assert_eq!(node.health().not_ready(), None);

    let js = async_nats::jetstream::new(async_nats::connect(server.url()).await.unwrap());
    js.publish("agentlog.evt.agent.forged", "not an envelope".into()).await.unwrap().await.unwrap();

    let health = node.health();
    let exit = tokio::time::timeout(Duration::from_secs(30), node.run()).await.expect("the node ends by itself");
    let Exit::Failed { component, reason } = exit else { panic!("a fatal failure, not {exit:?}") };
    assert_eq!(component, "mirror");
    assert!(reason.contains("seq 1") && reason.contains("decode"), "{reason}");
    let not_ready = health.not_ready().expect("a failed node is not ready");
    assert!(not_ready.contains("mirror: failed:") && not_ready.contains("decode"), "{not_ready}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_node_drains_and_ends_cleanly() {
    let server = NatsServer::start();
    let dir = tempfile::tempdir().unwrap();
    let node = start(&server, dir.path()).await;
    let addr = node.http_addr().expect("http is on");
    assert_ne!(addr.port(), 0, "port 0 was replaced by the one bound");
    node.handle().stop();
    let exit = tokio::time::timeout(Duration::from_secs(30), node.run()).await.expect("the node drains");
    assert_eq!(exit, Exit::Stopped);
}
