//! Four producers send 20,000 commands, each with its own idempotency key,
//! retrying on timeouts and refusals of service. Meanwhile something is
//! SIGKILLed twice and restarted: `agentlog serve` (chaos A) or nats-server
//! itself (chaos B). Afterwards every acknowledged command appears exactly
//! once, the mirror equals the stream event for event, and `verify` passes.
mod common;

use std::collections::BTreeMap;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use agentlog_commands::Command as Cmd;
use agentlog_commands::command::AllocateBudget;
use agentlog_commands::wire::Client;
use agentlog_log::wal::Store;
use agentlog_log::{Body, Kind};
use agentlog_tests::nats::NatsServer;
use common::metric;

const PRODUCERS: u64 = 4;
const PER_PRODUCER: u64 = 5_000;
/// Longest a chaos run may take (they take well under a minute each).
const LIMIT: Duration = Duration::from_secs(600);

#[derive(Clone, Copy)]
enum Victim {
    Serve,
    NatsServer,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn commands_survive_two_sigkills_of_serve_exactly_once() {
    common::within(LIMIT, "chaos A", chaos(Victim::Serve)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn commands_survive_two_sigkills_of_nats_server_exactly_once() {
    common::within(LIMIT, "chaos B", chaos(Victim::NatsServer)).await;
}

/// A node that saves its views every 1,000 events, so kills land between
/// two checkpoints.
fn start_checkpointing(server: &NatsServer, data: &std::path::Path) -> common::Node {
    common::start_with_env(&server.url(), data, &[], &[("AGENTLOG_PROJECTIONS_CHECKPOINT_EVENTS", "1000")])
}

/// The world view's checkpoint position, read beside the running node.
fn checkpoint_position(data: &std::path::Path) -> u64 {
    let out = Command::new(env!("CARGO_BIN_EXE_agentlog"))
        .args(["projections", "status", "--json", "--data"])
        .arg(data)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    status["projections"][0]["position"].as_u64().unwrap()
}

async fn chaos(victim: Victim) {
    let mut server = NatsServer::start();
    let dir = tempfile::tempdir().unwrap();
    let mut node = start_checkpointing(&server, dir.path());
    let nats = agentlog_log::jetstream::connect(&server.url()).await.unwrap();
    let client = Client::new(nats.clone(), "chaos").with_timeout(Duration::from_secs(2));
    let acknowledged = Arc::new(AtomicU64::new(0));

    let producers: Vec<_> = (0..PRODUCERS)
        .map(|p| {
            let (client, acknowledged) = (client.clone(), acknowledged.clone());
            tokio::spawn(async move {
                let mut retries = 0u64;
                for i in 0..PER_PRODUCER {
                    let key = format!("p{p}-{i}");
                    let command = Cmd::AllocateBudget(AllocateBudget { budget_id: format!("budget-{p}"), amount: 1 });
                    loop {
                        match client.execute(&command, Some(&key)).await {
                            Ok(_) => break,
                            Err(r) if matches!(r.kind, Kind::Platform | Kind::Conflict) => {
                                retries += 1;
                                tokio::time::sleep(Duration::from_millis(20)).await;
                            }
                            Err(r) => panic!("{key}: {r}"),
                        }
                    }
                    acknowledged.fetch_add(1, Ordering::SeqCst);
                }
                retries
            })
        })
        .collect();

    for kill_at in [4_000, 12_000] {
        while acknowledged.load(Ordering::SeqCst) < kill_at {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        match victim {
            Victim::Serve => {
                // Killed under load with a checkpoint saved (every 1,000
                // events): the views resume from it, folding again what
                // came after it.
                assert!(checkpoint_position(dir.path()) > 0, "a checkpoint before the kill");
                node.kill();
                tokio::time::sleep(Duration::from_millis(300)).await;
                node = start_checkpointing(&server, dir.path());
            }
            Victim::NatsServer => {
                server.kill();
                tokio::time::sleep(Duration::from_millis(300)).await;
                server.restart();
            }
        }
    }
    let mut retries = 0;
    for producer in producers {
        retries += producer.await.unwrap();
    }
    assert!(retries > 0, "the kills interrupted some commands");

    stop_and_check(node, dir.path(), &nats, PRODUCERS * PER_PRODUCER).await;
}

/// Lets the mirror catch up, stops the node gracefully, and checks the
/// outcome: one allocation per acknowledged key and nothing else, the
/// mirror equal to the stream event for event, and `verify` passing.
async fn stop_and_check(mut node: common::Node, data: &std::path::Path, nats: &async_nats::Client, commands: u64) {
    // The query service's own read-your-writes wait: answered once the
    // views reflect every acknowledged command, so the mirror has them too.
    let wait = agentlog_projections::service::Request {
        wait_for: Some(commands),
        timeout_ms: Some(30_000),
        ..Default::default()
    };
    let body = serde_json::to_vec(&wait).unwrap();
    let request = async_nats::Request::new().payload(body.into()).timeout(Some(Duration::from_secs(35)));
    let reply = nats.send_request("agentlog.q.tasks", request).await.expect("the views catch up within 30 s");
    let answer = agentlog_projections::service::parse_reply(&reply.payload).expect("a view's answer");
    assert!(answer.seq >= commands, "the views reflect every command: {}", answer.seq);
    assert_eq!(metric(&node, "agentlog_mirror_lag_events "), 0);
    assert_eq!(metric(&node, "agentlog_projection_lag_events "), 0);
    node.terminate();

    // The views survived the SIGKILLs (their worker died with serve and
    // resumed from its checkpoint): each equals a rebuild from seq 1, and
    // no event was folded twice or skipped.
    let agentlog = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_agentlog")).args(args).arg("--data").arg(data).output().unwrap();
        assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
        serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()
    };
    let verified = agentlog(&["projections", "verify", "--json"]);
    assert_eq!(verified["ok"], true, "{verified}");
    assert!(verified["projections"].as_array().unwrap().iter().all(|p| p["position"] == commands), "{verified}");

    let store = Store::open_read_only(data).unwrap();
    let events = store.read(1, usize::MAX).unwrap();
    assert_eq!(events.len() as u64, commands, "one event per acknowledged command");
    let mut keys: BTreeMap<String, u64> = BTreeMap::new();
    for event in &events {
        assert!(matches!(event.body, Some(Body::BudgetAllocated(_))));
        *keys.entry(event.idempotency_key.clone()).or_default() += 1;
    }
    assert_eq!(keys.len() as u64, commands);
    assert!(keys.values().all(|n| *n == 1), "every key appears once");
    let allocated: u64 = events
        .iter()
        .map(|e| match &e.body {
            Some(Body::BudgetAllocated(a)) => a.amount,
            _ => 0,
        })
        .sum();
    let budgets = agentlog(&["query", "budgets", "--json"]);
    let viewed: u64 = budgets["result"].as_array().unwrap().iter().map(|b| b["allocated"].as_u64().unwrap()).sum();
    assert_eq!(viewed, allocated, "the world view counts every allocation once");

    let js = async_nats::jetstream::new(nats.clone());
    let stream = js.get_stream("AGENTLOG").await.unwrap();
    for event in &events {
        let message = stream.direct_get(event.seq).await.unwrap();
        let mut published = agentlog_log::codec::decode(&message.payload).unwrap();
        published.seq = event.seq;
        published.hash = event.hash.clone();
        assert_eq!(&published, event, "seq {}", event.seq);
    }
    let info = js.get_stream("AGENTLOG").await.unwrap().info().await.unwrap().clone();
    assert_eq!(info.state.last_sequence, events.len() as u64);

    let out = Command::new(env!("CARGO_BIN_EXE_agentlog")).args(["verify", "--data"]).arg(data).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
}

/// Chaos C: a 3-node NATS cluster with an R3 stream. The node
/// `agentlog serve` is connected to is SIGKILLed during the load; the
/// service reconnects to another node and keeps accepting commands, and no
/// acknowledged event is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_r3_stream_survives_losing_the_node_serve_is_connected_to() {
    common::within(LIMIT, "chaos C", chaos_in_a_cluster()).await;
}

async fn chaos_in_a_cluster() {
    let mut cluster = agentlog_tests::nats::NatsCluster::start(3);
    let dir = tempfile::tempdir().unwrap();
    // The cluster elects its JetStream leader first; serve retries until then.
    let url = cluster.nodes[0].url();
    let node = common::start_with(&url, dir.path(), &["--replicas", "3"]);
    let nats = agentlog_log::jetstream::connect(&cluster.nodes[1].url()).await.unwrap();
    let client = Client::new(nats.clone(), "chaos").with_timeout(Duration::from_secs(3));
    let acknowledged = Arc::new(AtomicU64::new(0));
    let producers: Vec<_> = (0..PRODUCERS)
        .map(|p| {
            let (client, acknowledged) = (client.clone(), acknowledged.clone());
            tokio::spawn(async move {
                for i in 0..1_000 {
                    let key = format!("p{p}-{i}");
                    let command = Cmd::AllocateBudget(AllocateBudget { budget_id: format!("budget-{p}"), amount: 1 });
                    while let Err(r) = client.execute(&command, Some(&key)).await {
                        assert!(matches!(r.kind, Kind::Platform | Kind::Conflict), "{key}: {r}");
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                    acknowledged.fetch_add(1, Ordering::SeqCst);
                }
            })
        })
        .collect();
    while acknowledged.load(Ordering::SeqCst) < 1_000 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let before = acknowledged.load(Ordering::SeqCst);
    cluster.nodes[0].kill();
    for producer in producers {
        producer.await.unwrap();
    }
    assert_eq!(acknowledged.load(Ordering::SeqCst), PRODUCERS * 1_000);
    assert!(before < PRODUCERS * 1_000, "the node died during the load");
    stop_and_check(node, dir.path(), &nats, PRODUCERS * 1_000).await;
}
