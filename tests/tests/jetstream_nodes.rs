//! Two agentlog nodes (each a JetStream log with its own RocksDB mirror)
//! sharing one stream: racing claims and debits across them stay exact, and
//! both mirrors end byte-identical and hash-chained.
use std::sync::Arc;

use agentlog_commands::command::{AllocateBudget, ClaimTask, CreateTask, DebitBudget, OpenSession, RegisterAgent};
use agentlog_commands::{Code, Command, Handler, Policy, Request};
use agentlog_log::ids::SplitMix64;
use agentlog_log::jetstream::{JetStreamLog, Options};
use agentlog_log::wal::verify;
use agentlog_log::{Body, Log, ManualClock, SeededIdGen};
use agentlog_tests::T0;
use agentlog_tests::nats::NatsServer;

type Node = Arc<Handler<JetStreamLog>>;

async fn node(server: &NatsServer, mirror: &std::path::Path, clock: &Arc<ManualClock>, seed: u64) -> Node {
    let log = Arc::new(JetStreamLog::open(Options::new(server.url(), mirror)).await.expect("open a node"));
    let policy = Policy { circuit_threshold: u32::MAX, ..Policy::default() };
    Arc::new(Handler::new(log, clock.clone(), Arc::new(SeededIdGen::new(seed))).with_policy(policy))
}

async fn send(node: &Node, command: Command) -> agentlog_commands::Accepted {
    let name = command.name();
    node.execute(Request::new(command, "test")).await.unwrap_or_else(|r| panic!("{name}: {r}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn racing_claims_and_debits_across_two_nodes_stay_exact_and_the_mirrors_agree() {
    let server = NatsServer::start();
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let clock = Arc::new(ManualClock::new(T0));
    let nodes = [node(&server, dir_a.path(), &clock, 1).await, node(&server, dir_b.path(), &clock, 2).await];

    let mut claimers = Vec::new();
    for i in 0..8 {
        let agent_id = format!("agent-{i}");
        let capabilities = vec!["code".to_owned()];
        send(
            &nodes[0],
            Command::RegisterAgent(RegisterAgent { agent_id: agent_id.clone(), name: String::new(), capabilities }),
        )
        .await;
        let open = Command::OpenSession(OpenSession {
            agent_id: agent_id.clone(),
            session_id: None,
            heartbeat_timeout_ms: 3_600_000,
        });
        let session = send(&nodes[i % 2], open).await.session_id.unwrap();
        claimers.push((agent_id, session));
    }
    for round in 0..60 {
        let task_id = format!("task-{round}");
        let create = Command::CreateTask(CreateTask {
            task_id: task_id.clone(),
            title: String::new(),
            priority: 0,
            required_capabilities: vec!["code".into()],
            dependencies: vec![],
            max_attempts: 3,
        });
        send(&nodes[round % 2], create).await;
        let racers: Vec<_> = claimers
            .iter()
            .enumerate()
            .map(|(i, (agent_id, session_id))| {
                let node = nodes[i % 2].clone();
                let command = Command::ClaimTask(ClaimTask {
                    task_id: task_id.clone(),
                    agent_id: agent_id.clone(),
                    session_id: session_id.clone(),
                    lease_ms: 60_000,
                });
                tokio::spawn(async move { node.execute(Request::new(command, "racer")).await })
            })
            .collect();
        let mut won = 0;
        for racer in racers {
            match racer.await.unwrap() {
                Ok(_) => won += 1,
                Err(rejection) => assert_eq!(rejection.code, Code::AlreadyClaimed, "round {round}: {rejection}"),
            }
        }
        assert_eq!(won, 1, "round {round}: one claim across both nodes");
    }

    let mut rng = SplitMix64::new(7);
    for round in 0..10 {
        let budget_id = format!("budget-{round}");
        let allocated = 300 + rng.below(300);
        send(&nodes[0], Command::AllocateBudget(AllocateBudget { budget_id: budget_id.clone(), amount: allocated }))
            .await;
        let amounts: Vec<u64> = (0..16).map(|_| 1 + rng.below(80)).collect();
        let debits: Vec<_> = amounts
            .iter()
            .enumerate()
            .map(|(i, amount)| {
                let node = nodes[i % 2].clone();
                let command = Command::DebitBudget(DebitBudget {
                    budget_id: budget_id.clone(),
                    amount: *amount,
                    agent_id: String::new(),
                    session_id: String::new(),
                    task_id: String::new(),
                    reason: String::new(),
                    failed: false,
                });
                tokio::spawn(async move { node.execute(Request::new(command, "spender")).await })
            })
            .collect();
        let mut accepted = 0;
        for (debit, amount) in debits.into_iter().zip(&amounts) {
            match debit.await.unwrap() {
                Ok(_) => accepted += amount,
                Err(rejection) => assert_eq!(rejection.code, Code::InsufficientBudget, "round {round}: {rejection}"),
            }
        }
        for node in &nodes {
            let budget = node.budget(&budget_id).await.unwrap();
            assert_eq!(budget.balance, allocated - accepted, "round {round}: both nodes see the exact balance");
        }
    }

    // Both mirrors hold the same log, byte for byte, and it verifies.
    let head = nodes[0].log().head().await.unwrap();
    let other = nodes[1].log().caught_up(head.last_seq).await.unwrap();
    assert_eq!(other, head);
    let stores = [nodes[0].log().store(), nodes[1].log().store()];
    let (a, b) = (stores[0].read_raw(1, usize::MAX).unwrap(), stores[1].read_raw(1, usize::MAX).unwrap());
    assert_eq!(a.len() as u64, head.last_seq);
    assert!(a == b, "the two mirrors are identical");
    for store in stores {
        let report = verify(store, &mut |_, _| {}).expect("the mirror verifies");
        assert_eq!(report.head_hash, head.hash);
    }
    let claims =
        stores[0].read(1, usize::MAX).unwrap().iter().filter(|e| matches!(e.body, Some(Body::TaskClaimed(_)))).count();
    assert_eq!(claims, 60);
}
