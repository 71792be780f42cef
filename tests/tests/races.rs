//! Concurrency is exact without locks: racing claims have one winner and
//! racing debits never take a budget below zero.
use std::sync::Arc;

use agentlog_commands::command::{AllocateBudget, ClaimTask, CreateTask, DebitBudget};
use agentlog_commands::{Code, Command, Policy, Request};
use agentlog_log::ids::SplitMix64;
use agentlog_log::{Body, Log, ManualClock};
use agentlog_tests::{T0, agents_with_sessions, handler, open_log, send};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sixteen_claimers_on_one_task_one_thousand_times_one_claim_each_time() {
    let dir = tempfile::tempdir().unwrap();
    let log = open_log(dir.path());
    let clock = Arc::new(ManualClock::new(T0));
    // Four handlers with their own caches, as four service instances would be.
    let handlers: Vec<_> = (0..4).map(|i| handler(log.clone(), clock.clone(), i, Policy::default())).collect();
    let claimers = agents_with_sessions(&handlers[0], 16, &["code"]).await;
    for round in 0..1000 {
        let task_id = format!("task-{round}");
        send(
            &handlers[0],
            Command::CreateTask(CreateTask {
                task_id: task_id.clone(),
                title: String::new(),
                priority: 0,
                required_capabilities: vec!["code".into()],
                dependencies: vec![],
                max_attempts: 3,
            }),
        )
        .await;
        let racers: Vec<_> = claimers
            .iter()
            .enumerate()
            .map(|(i, (agent_id, session_id))| {
                let handler = handlers[i % handlers.len()].clone();
                let command = Command::ClaimTask(ClaimTask {
                    task_id: task_id.clone(),
                    agent_id: agent_id.clone(),
                    session_id: session_id.clone(),
                    lease_ms: 60_000,
                });
                tokio::spawn(async move { handler.execute(Request::new(command, "racer")).await })
            })
            .collect();
        let mut won = 0;
        for racer in racers {
            match racer.await.unwrap() {
                Ok(_) => won += 1,
                Err(rejection) => assert_eq!(rejection.code, Code::AlreadyClaimed, "round {round}: {rejection}"),
            }
        }
        assert_eq!(won, 1, "round {round}: exactly one claimer wins");
        let events = log.read_stream(&format!("task/{task_id}"), 1, 100).await.unwrap();
        let claims = events.iter().filter(|e| matches!(e.body, Some(Body::TaskClaimed(_)))).count();
        assert_eq!(claims, 1, "round {round}: exactly one TaskClaimed in the log");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn thirty_two_concurrent_debits_never_take_a_budget_below_zero() {
    let dir = tempfile::tempdir().unwrap();
    let log = open_log(dir.path());
    let clock = Arc::new(ManualClock::new(T0));
    // No circuit breaker here: every refusal must be for the balance alone.
    let policy = Policy { circuit_threshold: u32::MAX, ..Policy::default() };
    let handlers: Vec<_> = (0..4).map(|i| handler(log.clone(), clock.clone(), i, policy)).collect();
    let mut rng = SplitMix64::new(32);
    for round in 0..50 {
        let budget_id = format!("budget-{round}");
        let allocated = 500 + rng.below(1000);
        send(&handlers[0], Command::AllocateBudget(AllocateBudget { budget_id: budget_id.clone(), amount: allocated }))
            .await;
        let amounts: Vec<u64> = (0..32).map(|_| 1 + rng.below(100)).collect();
        let debits: Vec<_> = amounts
            .iter()
            .enumerate()
            .map(|(i, amount)| {
                let handler = handlers[i % handlers.len()].clone();
                let command = Command::DebitBudget(DebitBudget {
                    budget_id: budget_id.clone(),
                    amount: *amount,
                    agent_id: format!("agent-{i}"),
                    session_id: String::new(),
                    task_id: String::new(),
                    reason: String::new(),
                    failed: false,
                });
                tokio::spawn(async move { handler.execute(Request::new(command, "spender")).await })
            })
            .collect();
        let mut accepted_sum = 0;
        for (debit, amount) in debits.into_iter().zip(&amounts) {
            match debit.await.unwrap() {
                Ok(_) => accepted_sum += amount,
                Err(rejection) => assert_eq!(rejection.code, Code::InsufficientBudget, "round {round}: {rejection}"),
            }
        }
        // Replay the stream: every debit was covered by the balance before it.
        let mut balance = 0u64;
        let mut debited = 0u64;
        for event in log.read_stream(&format!("budget/{budget_id}"), 1, 1000).await.unwrap() {
            match event.body {
                Some(Body::BudgetAllocated(e)) => balance += e.amount,
                Some(Body::BudgetDebited(e)) => {
                    assert!(e.amount <= balance, "round {round}: debit of {} against {balance}", e.amount);
                    balance -= e.amount;
                    assert_eq!(e.balance_after, balance);
                    debited += e.amount;
                }
                Some(Body::BudgetDebitRefused(e)) => assert!(e.amount > e.balance),
                other => panic!("unexpected {other:?}"),
            }
        }
        assert_eq!(debited, accepted_sum, "round {round}: the log holds exactly the accepted debits");
        assert_eq!(balance, allocated - accepted_sum);
        let state = handlers[1].budget(&budget_id).await.unwrap();
        assert_eq!(state.balance, balance);
    }
}
