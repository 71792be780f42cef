//! Idempotency keys are durable: after a restart a repeated key returns the
//! first result and appends nothing.
use std::sync::Arc;

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
    let command = Command::AllocateBudget { budget_id: "b".into(), amount: 10 };
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
