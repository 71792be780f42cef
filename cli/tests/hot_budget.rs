//! One budget shared by many producers through two `agentlog serve` nodes,
//! one of them SIGKILLed mid-run and started again (issue 16): the node is
//! stopped (SIGSTOP) first and killed once a debit sent to it has timed
//! out, so the kill always cuts debits off mid-decision. Producers
//! retry with the same idempotency key on timeouts and refusals of
//! service; afterwards every acknowledged debit is on the stream exactly
//! once, nothing else was debited, the balance never went below zero, and
//! no debit was refused but for the budget running out (domain refusals:
//! never `retries_exhausted`).
mod common;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use agentlog_commands::command::{AllocateBudget, OpenSession, RegisterAgent};
use agentlog_commands::wire::Client;
use agentlog_commands::{Code, Command as Cmd};
use agentlog_log::jetstream::StreamReader;
use agentlog_log::{Body, Kind};
use agentlog_tests::debit;
use agentlog_tests::nats::NatsServer;
use common::{start, within};

const PRODUCERS: u64 = 16;
const PER_PRODUCER: u64 = 150;
/// A fifth of the debits find the budget spent.
const ALLOCATED: u64 = PRODUCERS * PER_PRODUCER * 4 / 5;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn debits_on_one_budget_through_two_nodes_one_killed_are_each_taken_once() {
    let server = NatsServer::start();
    let dirs = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
    let mut nodes = [start(&server, dirs[0].path()), start(&server, dirs[1].path())];
    let nats = agentlog_log::jetstream::connect(&server.url()).await.unwrap();
    let client = Client::new(nats, "producer").with_timeout(Duration::from_secs(2));
    client
        .execute(&RegisterAgent { agent_id: "a1".into(), name: String::new(), capabilities: vec![] }.into(), None)
        .await
        .unwrap();
    let open = OpenSession { agent_id: "a1".into(), session_id: None, heartbeat_timeout_ms: 3_600_000 };
    let session = client.execute(&open.into(), None).await.unwrap().session_id.unwrap();
    client.execute(&AllocateBudget { budget_id: "team".into(), amount: ALLOCATED }.into(), None).await.unwrap();

    // Each producer reports how many debits it has had answered, and how
    // many times it has had to send one again.
    let (progress, mut answered) = tokio::sync::watch::channel(0u64);
    let (resent, mut retried) = tokio::sync::watch::channel(0u64);
    // No producer goes past two thirds of its debits before the node is
    // stopped: there is always work left to send to it.
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let (progress, resent) = (Arc::new(progress), Arc::new(resent));
    let producers: Vec<_> = (0..PRODUCERS)
        .map(|p| {
            let (client, session) = (client.clone(), session.clone());
            let (progress, resent, mut stopped) = (progress.clone(), resent.clone(), stopped.clone());
            tokio::spawn(async move {
                let (mut taken, mut refused, mut retries) = (BTreeSet::new(), 0u64, 0u64);
                for i in 0..PER_PRODUCER {
                    if i == PER_PRODUCER * 2 / 3 {
                        stopped.wait_for(|stopped| *stopped).await.unwrap();
                    }
                    let key = format!("p{p}-{i}");
                    let debit: Cmd = debit("team", 1, "a1", &session).into();
                    loop {
                        match client.execute(&debit, Some(&key)).await {
                            Ok(_) => {
                                taken.insert(key);
                                break;
                            }
                            // The budget ran out (and, refused debits
                            // counting, its circuit breaker opened).
                            Err(r) if matches!(r.code, Code::InsufficientBudget | Code::CircuitOpen) => {
                                refused += 1;
                                break;
                            }
                            Err(r) if r.kind == Kind::Platform => {
                                retries += 1;
                                resent.send_modify(|n| *n += 1);
                            }
                            Err(r) => panic!("{key}: only the budget running out may refuse a debit: {r}"),
                        }
                    }
                    progress.send_modify(|n| *n += 1);
                }
                (taken, refused, retries)
            })
        })
        .collect();

    // A third of the way through, stop the first node; once a debit sent to
    // it has timed out (the other node answers everything else), SIGKILL it
    // and start it again.
    within(
        Duration::from_secs(120),
        "a third of the debits",
        answered.wait_for(|n| *n >= PRODUCERS * PER_PRODUCER / 3),
    )
    .await
    .unwrap();
    nodes[0].signal("-STOP");
    stop.send_replace(true);
    within(Duration::from_secs(60), "a debit sent to the stopped node timing out", retried.wait_for(|n| *n > 0))
        .await
        .unwrap();
    nodes[0].kill();
    nodes[0] = start(&server, dirs[0].path());

    let (mut taken, mut refused, mut retries) = (BTreeSet::new(), 0, 0);
    for producer in producers {
        let (t, r, n) = within(Duration::from_secs(300), "the producers", producer).await.unwrap();
        taken.extend(t);
        refused += r;
        retries += n;
    }
    assert!(retries > 0, "the kill interrupted some debits");
    assert_eq!(taken.len() as u64, ALLOCATED, "the whole budget was spent");
    assert_eq!(refused, PRODUCERS * PER_PRODUCER - ALLOCATED);

    // The stream itself: each acknowledged key debited exactly once, the
    // balance going down one at a time to zero.
    let reader = StreamReader::open(&server.url(), "AGENTLOG").await.unwrap();
    let events = reader.read_aggregate("budget/team").await.unwrap();
    let mut debited = BTreeSet::new();
    let mut balances = Vec::new();
    for event in &events {
        if let Some(Body::BudgetDebited(d)) = &event.body {
            assert!(debited.insert(event.idempotency_key.clone()), "{} debited twice", event.idempotency_key);
            balances.push(d.balance_after);
        }
    }
    assert_eq!(debited, taken, "every acknowledged debit, and nothing else");
    assert_eq!(balances, (0..ALLOCATED).rev().collect::<Vec<_>>());
    for node in &mut nodes {
        node.terminate();
    }
}
