//! The handler's first decision uses what its node already has of the
//! aggregate (`Log::read_stream_local`), which on a JetStream node may lag
//! other nodes' appends. Decisions stay exact however far it lags: an
//! acceptance is checked by the append's expected version, and a refusal is
//! only given on state caught up with the log. Here node A's local reads
//! never see anything new (a mirror stuck at its cache) while node B writes.
//!
//! On the embedded log a handler skips the read when the log knows the
//! stream is at the cached version (`Log::known_version`); two handlers on
//! one log check that the skip never hides the other's append.
use std::sync::Arc;

use agentlog_commands::command::{AllocateBudget, ClaimTask, CompleteTask, CreateTask, DebitBudget, ReleaseTask};
use agentlog_commands::{Accepted, Code, Command, Handler, Policy, Rejection, Request};
use agentlog_log::{AppendRequest, Appended, EmbeddedLog, Envelope, GroupRequest, Head, Log, ManualClock, Result};
use agentlog_tests::{T0, agents_with_sessions, handler, open_log, send};

/// A log whose local reads return nothing: the most a mirror can lag.
struct Lagging(Arc<EmbeddedLog>);

impl Log for Lagging {
    type Subscription = <EmbeddedLog as Log>::Subscription;

    async fn append(&self, request: AppendRequest) -> Result<Appended> {
        self.0.append(request).await
    }

    async fn append_group(&self, group: GroupRequest) -> Result<Vec<Appended>> {
        self.0.append_group(group).await
    }

    async fn read(&self, from_seq: u64, max: usize) -> Result<Vec<Envelope>> {
        self.0.read(from_seq, max).await
    }

    async fn read_stream(&self, stream: &str, from_version: u64, max: usize) -> Result<Vec<Envelope>> {
        self.0.read_stream(stream, from_version, max).await
    }

    async fn read_stream_local(&self, _stream: &str, _from_version: u64, _max: usize) -> Result<Vec<Envelope>> {
        Ok(Vec::new())
    }

    async fn stream_version(&self, stream: &str) -> Result<u64> {
        self.0.stream_version(stream).await
    }

    async fn idempotent_result(&self, key: &str) -> Result<Option<Appended>> {
        self.0.idempotent_result(key).await
    }

    async fn head(&self) -> Result<Head> {
        self.0.head().await
    }

    fn subscribe(&self, from_seq: u64) -> Result<Self::Subscription> {
        self.0.subscribe(from_seq)
    }
}

async fn run(handler: &Handler<Lagging>, command: Command) -> std::result::Result<Accepted, Rejection> {
    handler.execute(Request::new(command, "node-a")).await
}

fn debit(budget_id: &str, amount: u64) -> Command {
    Command::DebitBudget(DebitBudget {
        budget_id: budget_id.into(),
        amount,
        agent_id: String::new(),
        session_id: String::new(),
        task_id: String::new(),
        reason: String::new(),
        failed: false,
    })
}

#[tokio::test]
async fn decisions_on_a_lagging_node_are_exact() {
    let dir = tempfile::tempdir().unwrap();
    let log = open_log(dir.path());
    let clock = Arc::new(ManualClock::new(T0));
    let b = handler(log.clone(), clock.clone(), 1, Policy::default());
    let a = Handler::new(Arc::new(Lagging(log.clone())), clock.clone(), Arc::new(agentlog_log::SeededIdGen::new(2)));
    let agents = agents_with_sessions(&b, 2, &["code"]).await;
    let claim = |agent: usize| {
        Command::ClaimTask(ClaimTask {
            task_id: "t1".into(),
            agent_id: agents[agent].0.clone(),
            session_id: agents[agent].1.clone(),
            lease_ms: 60_000,
        })
    };

    // B creates the task; A has never seen it locally, yet claims it.
    let create = Command::CreateTask(CreateTask {
        task_id: "t1".into(),
        title: String::new(),
        priority: 0,
        required_capabilities: vec!["code".into()],
        dependencies: vec![],
        max_attempts: 3,
    });
    send(&b, create).await;
    run(&a, claim(0)).await.expect("A sees B's task before refusing");
    // B releases it; A's cache still says claimed, yet the other agent gets it.
    let release = Command::ReleaseTask(ReleaseTask {
        task_id: "t1".into(),
        agent_id: agents[0].0.clone(),
        session_id: agents[0].1.clone(),
        reason: String::new(),
    });
    send(&b, release).await;
    run(&a, claim(1)).await.expect("A sees B's release before refusing");
    // And a true refusal is still a refusal.
    assert_eq!(run(&a, claim(0)).await.unwrap_err().code, Code::AlreadyClaimed);

    // Debits: A's cache thinks 40 are left after B took 30 more.
    send(&b, Command::AllocateBudget(AllocateBudget { budget_id: "b1".into(), amount: 100 })).await;
    run(&a, debit("b1", 60)).await.expect("A sees B's allocation");
    send(&b, debit("b1", 30)).await;
    let refused = run(&a, debit("b1", 20)).await.unwrap_err();
    assert_eq!(refused.code, Code::InsufficientBudget, "{refused}");
    assert!(refused.message.contains("has 10 left"), "{refused}");
    run(&a, debit("b1", 10)).await.expect("exactly the rest");
    assert_eq!(b.budget("b1").await.unwrap().balance, 0);
}

#[tokio::test]
async fn a_cache_behind_the_embedded_logs_known_version_is_caught_up() {
    let dir = tempfile::tempdir().unwrap();
    let log = open_log(dir.path());
    let clock = Arc::new(ManualClock::new(T0));
    let a = handler(log.clone(), clock.clone(), 1, Policy::default());
    let b = handler(log.clone(), clock.clone(), 2, Policy::default());
    let agents = agents_with_sessions(&a, 2, &["code"]).await;
    // A stream never written is known to have no events (one index lookup,
    // remembered); what follows checks that the writer moves it on.
    assert_eq!(log.known_version("task/t1"), Some(0), "a stream never written has version 0");

    // A creates the task and caches it open; B claims it behind A's back.
    let create = Command::CreateTask(CreateTask {
        task_id: "t1".into(),
        title: String::new(),
        priority: 0,
        required_capabilities: vec!["code".into()],
        dependencies: vec![],
        max_attempts: 3,
    });
    send(&a, create).await;
    assert_eq!(log.known_version("task/t1"), Some(1));
    let claim = |agent: usize| {
        Command::ClaimTask(ClaimTask {
            task_id: "t1".into(),
            agent_id: agents[agent].0.clone(),
            session_id: agents[agent].1.clone(),
            lease_ms: 60_000,
        })
    };
    send(&b, claim(0)).await;
    assert_eq!(log.known_version("task/t1"), Some(2), "known as soon as the append is acknowledged");

    // On A's cached state the task is open, so completing it would be
    // refused: A must see B's claim instead, and accept.
    let complete = Command::CompleteTask(CompleteTask {
        task_id: "t1".into(),
        agent_id: agents[0].0.clone(),
        session_id: agents[0].1.clone(),
        result: String::new(),
    });
    let accepted = a.execute(Request::new(complete, "node-a")).await.expect("A sees B's claim");
    assert_eq!(accepted.stream_version, 3);
    assert_eq!(a.execute(Request::new(claim(1), "node-a")).await.unwrap_err().code, Code::AlreadyCompleted);

    // A budget A last saw with 100 left, after B took 30.
    send(&a, Command::AllocateBudget(AllocateBudget { budget_id: "b1".into(), amount: 100 })).await;
    send(&b, debit("b1", 30)).await;
    let refused = a.execute(Request::new(debit("b1", 80), "node-a")).await.unwrap_err();
    assert!(refused.message.contains("has 70 left"), "{refused}");
    a.execute(Request::new(debit("b1", 70), "node-a")).await.expect("exactly the rest");
}

#[tokio::test]
async fn a_decision_never_takes_a_time_before_its_streams_last_event() {
    let dir = tempfile::tempdir().unwrap();
    let log = open_log(dir.path());
    // Node A's clock runs a minute ahead of node B's.
    let ahead = Arc::new(ManualClock::new(T0.plus(std::time::Duration::from_secs(60))));
    let behind = Arc::new(ManualClock::new(T0));
    let a = handler(log.clone(), ahead, 1, Policy::default());
    let b = handler(log.clone(), behind.clone(), 2, Policy::default());
    send(&a, Command::AllocateBudget(AllocateBudget { budget_id: "b1".into(), amount: 100 })).await;
    let debited = send(&b, debit("b1", 10)).await;
    let events = log.read_stream("budget/b1", 1, 10).await.unwrap();
    assert_eq!(events.len(), 2);
    assert!(events[1].ts >= events[0].ts, "B's debit is not before A's allocation on the stream");
    assert_eq!(events[1].seq, debited.first_seq);
    // Where B's clock is ahead, it keeps its own time.
    behind.set(T0.plus(std::time::Duration::from_secs(120)));
    send(&b, debit("b1", 10)).await;
    let events = log.read_stream("budget/b1", 1, 10).await.unwrap();
    assert_eq!(events[2].ts, T0.plus(std::time::Duration::from_secs(120)).as_nanos());
}
