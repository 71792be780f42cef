//! Idempotency keys are durable: after a restart a repeated key returns the
//! first result and appends nothing.
use std::sync::Arc;

use agentlog_commands::command::{AllocateBudget, DebitBudget, OpenSession, RegisterAgent};
use agentlog_commands::{Command, Policy, Request};
use agentlog_log::testing::request;
use agentlog_log::{ExpectedVersion, Log, ManualClock};
use agentlog_tests::{T0, handler, open_log};

#[tokio::test]
async fn an_idempotent_append_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let mut keyed = request("task/t", ExpectedVersion::Exact(0), 3, 1);
    keyed.idempotency_key = Some("create-t".into());
    let first = {
        let log = open_log(dir.path());
        let first = log.append(keyed.clone()).await.unwrap();
        log.append(request("task/u", ExpectedVersion::Exact(0), 1, 2)).await.unwrap();
        first
    };
    for _ in 0..3 {
        let log = open_log(dir.path());
        let head = log.head().await.unwrap();
        let again = log.append(keyed.clone()).await.unwrap();
        assert!(again.duplicate);
        assert_eq!(
            (again.first_seq, again.last_seq, again.stream_version),
            (first.first_seq, first.last_seq, first.stream_version)
        );
        assert_eq!(log.head().await.unwrap(), head, "a repeated key appends nothing");
    }
}

#[tokio::test]
async fn a_repeated_command_after_a_restart_returns_the_first_result() {
    let dir = tempfile::tempdir().unwrap();
    let command = Command::AllocateBudget(AllocateBudget { budget_id: "b".into(), amount: 10 });
    let keyed = || Request::new(command.clone(), "test").with_idempotency_key("alloc-b-1");
    let first = {
        let log = open_log(dir.path());
        let h = handler(log, Arc::new(ManualClock::new(T0)), 1, Policy::default());
        h.execute(keyed()).await.unwrap()
    };
    let log = open_log(dir.path());
    let h = handler(log.clone(), Arc::new(ManualClock::new(T0)), 2, Policy::default());
    let again = h.execute(keyed()).await.unwrap();
    assert!(again.duplicate);
    assert_eq!(again.first_seq, first.first_seq);
    assert_eq!(again.events, first.events);
    assert_eq!(h.budget("b").await.unwrap().balance, 10, "allocated once, not twice");
    // Without the key the same command is a new allocation.
    h.execute(Request::new(command, "test")).await.unwrap();
    assert_eq!(h.budget("b").await.unwrap().balance, 20);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn racing_commands_with_one_key_all_get_the_first_result() {
    let dir = tempfile::tempdir().unwrap();
    let log = open_log(dir.path());
    let clock = Arc::new(ManualClock::new(T0));
    let handlers: Vec<_> = (0..4).map(|i| handler(log.clone(), clock.clone(), i, Policy::default())).collect();
    agentlog_tests::send(
        &handlers[0],
        Command::RegisterAgent(RegisterAgent { agent_id: "a".into(), name: String::new(), capabilities: vec![] }),
    )
    .await;
    for round in 0..50 {
        // No session id: each handler would make up its own.
        let open =
            Command::OpenSession(OpenSession { agent_id: "a".into(), session_id: None, heartbeat_timeout_ms: 1000 });
        let racers: Vec<_> = (0..8)
            .map(|i| {
                let handler = handlers[i % 4].clone();
                let request = Request::new(open.clone(), "test").with_idempotency_key(format!("open-{round}"));
                tokio::spawn(async move { handler.execute(request).await })
            })
            .collect();
        let mut sessions = std::collections::BTreeSet::new();
        for racer in racers {
            let accepted = racer.await.unwrap().expect("every racer gets the first result");
            sessions.insert(accepted.session_id.expect("a session id"));
        }
        assert_eq!(sessions.len(), 1, "round {round}: one session, named the same to everyone: {sessions:?}");
        let session = sessions.pop_first().unwrap();
        let opened = log.read_stream(&format!("session/{session}"), 1, 10).await.unwrap();
        assert_eq!(opened.len(), 1, "round {round}: opened once");
    }
}

#[tokio::test]
async fn a_refused_debit_repeated_with_its_key_is_refused_again_and_recorded_once() {
    let dir = tempfile::tempdir().unwrap();
    let log = open_log(dir.path());
    let h = handler(log.clone(), Arc::new(ManualClock::new(T0)), 1, Policy::default());
    h.execute(Request::new(Command::AllocateBudget(AllocateBudget { budget_id: "b".into(), amount: 5 }), "test"))
        .await
        .unwrap();
    let debit = Command::DebitBudget(DebitBudget {
        budget_id: "b".into(),
        amount: 9,
        agent_id: String::new(),
        session_id: String::new(),
        task_id: String::new(),
        reason: String::new(),
        failed: false,
    });
    for _ in 0..5 {
        let refused = h.execute(Request::new(debit.clone(), "test").with_idempotency_key("debit-1")).await.unwrap_err();
        assert_eq!(refused.code, agentlog_commands::Code::InsufficientBudget);
    }
    let events = log.read_stream("budget/b", 1, 100).await.unwrap();
    let refusals = events.iter().filter(|e| matches!(e.body, Some(agentlog_log::Body::BudgetDebitRefused(_)))).count();
    assert_eq!(refusals, 1, "one refusal recorded, however often the key is repeated");
    assert_eq!(h.budget("b").await.unwrap().circuit_open_until_ts, None, "one refusal does not open the circuit");
}
