//! A hot aggregate (issue 16): 256 debits at once on one budget through one
//! handler, on the embedded log and on a JetStream node, and through two
//! JetStream nodes. A node's own commands take turns on the budget, so none
//! is refused for racing another (`retries_exhausted`): each is accepted or
//! refused with a domain code, the sum is exact and the balance never goes
//! below zero.
use std::sync::Arc;

use agentlog_commands::command::{AllocateBudget, OpenSession, RegisterAgent};
use agentlog_commands::{Code, Command, Handler, Policy, Request};
use agentlog_log::jetstream::{JetStreamLog, Options};
use agentlog_log::{Body, Log, ManualClock, SeededIdGen};
use agentlog_tests::nats::NatsServer;
use agentlog_tests::{T0, debit, open_log};

/// Debits at once, and what the budget holds: the last quarter are refused.
const DEBITS: u64 = 256;
const ALLOCATED: u64 = 192;

async fn send<L: Log>(handler: &Handler<L>, command: impl Into<Command>) -> agentlog_commands::Accepted {
    let command = command.into();
    let name = command.name();
    handler.execute(Request::new(command, "test")).await.unwrap_or_else(|r| panic!("{name}: {r}"))
}

/// Allocates [`ALLOCATED`] to one budget and debits 1 from it [`DEBITS`]
/// times at once, each debit by a live session's agent, the debits spread
/// over `nodes`; checks every outcome, the budget as each node sees it, and
/// every balance the log ever recorded.
async fn hot_budget<L: Log>(nodes: &[Arc<Handler<L>>]) {
    let first = &nodes[0];
    send(first, RegisterAgent { agent_id: "a1".into(), name: String::new(), capabilities: vec![] }).await;
    let open = OpenSession { agent_id: "a1".into(), session_id: None, heartbeat_timeout_ms: 3_600_000 };
    let session = send(first, open).await.session_id.unwrap();
    send(first, AllocateBudget { budget_id: "team".into(), amount: ALLOCATED }).await;
    let debits: Vec<_> = (0..DEBITS)
        .map(|i| {
            let node = nodes[usize::try_from(i).unwrap() % nodes.len()].clone();
            let debit = debit("team", 1, "a1", &session);
            tokio::spawn(async move { node.execute(Request::new(debit.into(), "test")).await })
        })
        .collect();
    let (mut accepted, mut refused) = (0, 0);
    for debit in debits {
        match debit.await.unwrap() {
            Ok(_) => accepted += 1,
            Err(r) => {
                assert_eq!(r.code, Code::InsufficientBudget, "only domain refusals on a hot aggregate: {r}");
                refused += 1;
            }
        }
    }
    assert_eq!((accepted, refused), (ALLOCATED, DEBITS - ALLOCATED));
    for node in nodes {
        let budget = node.budget("team").await.unwrap();
        assert_eq!((budget.allocated, budget.spent, budget.balance), (ALLOCATED, ALLOCATED, 0));
    }
    // Every debit the log recorded left a balance of zero or more, and the
    // refusals were recorded once each.
    let events = first.log().read_stream("budget/team", 1, 1_000).await.unwrap();
    let debited: Vec<u64> = events
        .iter()
        .filter_map(|e| match &e.body {
            Some(Body::BudgetDebited(d)) => Some(d.balance_after),
            _ => None,
        })
        .collect();
    assert_eq!(debited, (0..ALLOCATED).rev().collect::<Vec<_>>(), "one debit at a time, down to zero");
    let recorded_refusals = events.iter().filter(|e| matches!(e.body, Some(Body::BudgetDebitRefused(_)))).count();
    assert_eq!(recorded_refusals as u64, DEBITS - ALLOCATED);
}

fn policy() -> Policy {
    // The circuit breaker counts refused debits; it is not what this tests.
    Policy { circuit_threshold: u32::MAX, ..Policy::default() }
}

/// A JetStream node's handler: its own mirror in `dir`, ids from `seed`.
async fn jetstream_node(server: &NatsServer, dir: &std::path::Path, seed: u64) -> Arc<Handler<JetStreamLog>> {
    let log = Arc::new(JetStreamLog::open(Options::new(server.url(), dir)).await.expect("open a node"));
    let clock = Arc::new(ManualClock::new(T0));
    Arc::new(Handler::new(log, clock, Arc::new(SeededIdGen::new(seed))).with_policy(policy()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn debits_at_once_on_one_budget_on_the_embedded_log() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(T0));
    let handler = Handler::new(open_log(dir.path()), clock, Arc::new(SeededIdGen::new(1))).with_policy(policy());
    hot_budget(&[Arc::new(handler)]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn debits_at_once_on_one_budget_through_one_jetstream_node() {
    let server = NatsServer::start();
    let dir = tempfile::tempdir().unwrap();
    hot_budget(&[jetstream_node(&server, dir.path(), 1).await]).await;
}

/// Two nodes on one budget: across nodes the CAS still decides, and with
/// each node taking turns only two commands race at a time, so none is
/// refused `retries_exhausted`.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn debits_at_once_on_one_budget_through_two_jetstream_nodes() {
    let server = NatsServer::start();
    let dirs = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
    hot_budget(&[jetstream_node(&server, dirs[0].path(), 1).await, jetstream_node(&server, dirs[1].path(), 2).await])
        .await;
}

/// A producer that gave up on a queued command (its request timed out)
/// and sends it again with the same idempotency key: decided once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_queued_command_whose_producer_gave_up_is_decided_once_when_retried() {
    use agentlog_commands::wire::{Client, Service};
    let server = NatsServer::start();
    let dir = tempfile::tempdir().unwrap();
    let handler = jetstream_node(&server, dir.path(), 1).await;
    let (stop_tx, stop) = tokio::sync::watch::channel(false);
    let service = Service::bind(async_nats::connect(server.url()).await.unwrap(), handler.clone()).await.unwrap();
    let service = tokio::spawn(service.run(stop));
    let client = Client::new(async_nats::connect(server.url()).await.unwrap(), "test");
    client.execute(&AllocateBudget { budget_id: "team".into(), amount: 10_000 }.into(), None).await.unwrap();
    let team_debit = |amount| -> Command { debit("team", amount, "", "").into() };
    // A queue on the budget, and in it a keyed debit whose producer waits
    // only a millisecond.
    let crowd: Vec<_> = (0..DEBITS)
        .map(|_| {
            let (client, debit) = (client.clone(), team_debit(1));
            tokio::spawn(async move { client.execute(&debit, None).await })
        })
        .collect();
    let impatient = client.clone().with_timeout(std::time::Duration::from_millis(1));
    // Behind the crowd it times out (were it decided within the
    // millisecond, the retry below must still find it decided once).
    if let Err(gave_up) = impatient.execute(&team_debit(100), Some("the-big-one")).await {
        assert_eq!(gave_up.code, Code::Unavailable, "the producer gave up waiting: {gave_up}");
    }
    for debit in crowd {
        debit.await.unwrap().unwrap();
    }
    let retried = client.execute(&team_debit(100), Some("the-big-one")).await.unwrap();
    let again = client.execute(&team_debit(100), Some("the-big-one")).await.unwrap();
    assert_eq!((again.first_seq, again.duplicate), (retried.first_seq, true));
    let budget = handler.budget("team").await.unwrap();
    assert_eq!(budget.spent, DEBITS + 100, "the keyed debit counted once");
    let _ = stop_tx.send(true);
    service.await.unwrap();
}
