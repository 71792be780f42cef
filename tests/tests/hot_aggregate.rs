//! A hot aggregate on one node (issue 16): 256 debits at once on one budget
//! through one handler, on the embedded log and on a JetStream node. The
//! node's own commands take turns on the budget, so none is refused for
//! racing another (`retries_exhausted`): each is accepted or refused with
//! a domain code, the sum is exact and the balance never goes below zero.
use std::sync::Arc;

use agentlog_commands::command::{AllocateBudget, DebitBudget, OpenSession, RegisterAgent};
use agentlog_commands::{Code, Command, Handler, Policy, Request};
use agentlog_log::jetstream::{JetStreamLog, Options};
use agentlog_log::{Body, Log, ManualClock, SeededIdGen};
use agentlog_tests::nats::NatsServer;
use agentlog_tests::{T0, open_log};

/// Debits at once, and what the budget holds: the last quarter are refused.
const DEBITS: u64 = 256;
const ALLOCATED: u64 = 192;

async fn send<L: Log>(handler: &Handler<L>, command: impl Into<Command>) -> agentlog_commands::Accepted {
    let command = command.into();
    let name = command.name();
    handler.execute(Request::new(command, "test")).await.unwrap_or_else(|r| panic!("{name}: {r}"))
}

/// Allocates [`ALLOCATED`] to one budget and debits 1 from it [`DEBITS`]
/// times at once, each debit by a live session's agent; checks every
/// outcome, the budget, and every balance the log ever recorded.
async fn hot_budget<L: Log>(handler: Arc<Handler<L>>) {
    send(&handler, RegisterAgent { agent_id: "a1".into(), name: String::new(), capabilities: vec![] }).await;
    let open = OpenSession { agent_id: "a1".into(), session_id: None, heartbeat_timeout_ms: 3_600_000 };
    let session = send(&handler, open).await.session_id.unwrap();
    send(&handler, AllocateBudget { budget_id: "team".into(), amount: ALLOCATED }).await;
    let debits: Vec<_> = (0..DEBITS)
        .map(|_| {
            let handler = handler.clone();
            let debit = DebitBudget {
                budget_id: "team".into(),
                amount: 1,
                agent_id: "a1".into(),
                session_id: session.clone(),
                task_id: String::new(),
                reason: String::new(),
                failed: false,
            };
            tokio::spawn(async move { handler.execute(Request::new(debit.into(), "test")).await })
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
    let budget = handler.budget("team").await.unwrap();
    assert_eq!((budget.allocated, budget.spent, budget.balance), (ALLOCATED, ALLOCATED, 0));
    // Every debit the log recorded left a balance of zero or more, and the
    // refusals were recorded once each.
    let events = handler.log().read_stream("budget/team", 1, 1_000).await.unwrap();
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

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn debits_at_once_on_one_budget_on_the_embedded_log() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(T0));
    let handler = Handler::new(open_log(dir.path()), clock, Arc::new(SeededIdGen::new(1))).with_policy(policy());
    hot_budget(Arc::new(handler)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn debits_at_once_on_one_budget_through_one_jetstream_node() {
    let server = NatsServer::start();
    let dir = tempfile::tempdir().unwrap();
    let log = Arc::new(JetStreamLog::open(Options::new(server.url(), dir.path())).await.expect("open a node"));
    let clock = Arc::new(ManualClock::new(T0));
    let handler = Handler::new(log, clock, Arc::new(SeededIdGen::new(1))).with_policy(policy());
    hot_budget(Arc::new(handler)).await;
}
