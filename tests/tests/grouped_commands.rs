//! Commands queued on one aggregate are decided together and appended as
//! one group (issue 16): with the turn holder's append held at a gate, 63
//! keyed debits queue behind it; the next turn holder decides all 63 on
//! the state each leaves and appends them as one group of 63 parts. Each
//! keeps its own idempotency key and result: the key's event is its own,
//! a retry with the key gets its own first result (an acceptance or a
//! recorded refusal), and the sum is exact. On the embedded log and on a
//! JetStream node (where the group is one atomic batch and the mirror
//! records each part's key).
use std::sync::{Arc, Mutex};
use std::time::Duration;

use agentlog_commands::command::{AllocateBudget, OpenSession, RegisterAgent};
use agentlog_commands::{Code, Command, Handler, Policy, Request};
use agentlog_log::jetstream::{JetStreamLog, Options};
use agentlog_log::{
    AppendRequest, Appended, Body, EmbeddedLog, Envelope, GroupRequest, Head, Log, ManualClock, Result, SeededIdGen,
};
use agentlog_tests::nats::NatsServer;
use agentlog_tests::{T0, debit, open_log};

const DEBITS: u64 = 64;
const ALLOCATED: u64 = 50;
const BUDGET: &str = "budget/team";

/// The real log underneath; lone appends wait while the gate is shut, and
/// group appends are counted by their parts.
struct Gated<L> {
    log: Arc<L>,
    open: tokio::sync::watch::Sender<bool>,
    /// Appends that have come to the gate.
    arrived: tokio::sync::watch::Sender<usize>,
    groups: Mutex<Vec<usize>>,
}

impl<L: Log> Gated<L> {
    fn new(log: Arc<L>) -> Self {
        Gated {
            log,
            open: tokio::sync::watch::channel(true).0,
            arrived: tokio::sync::watch::channel(0).0,
            groups: Mutex::new(Vec::new()),
        }
    }

    fn set_open(&self, open: bool) {
        self.open.send_replace(open);
    }
}

impl<L: Log> Log for Gated<L> {
    type Subscription = L::Subscription;

    async fn append(&self, request: AppendRequest) -> Result<Appended> {
        let mut open = self.open.subscribe();
        self.arrived.send_modify(|arrived| *arrived += 1);
        open.wait_for(|open| *open).await.expect("the gate lives as long as the log");
        self.log.append(request).await
    }

    async fn append_group(&self, group: GroupRequest) -> Result<Vec<Appended>> {
        self.groups.lock().unwrap().push(group.parts.len());
        self.log.append_group(group).await
    }

    async fn read(&self, from_seq: u64, max: usize) -> Result<Vec<Envelope>> {
        self.log.read(from_seq, max).await
    }

    async fn read_stream(&self, stream: &str, from_version: u64, max: usize) -> Result<Vec<Envelope>> {
        self.log.read_stream(stream, from_version, max).await
    }

    async fn read_stream_local(&self, stream: &str, from_version: u64, max: usize) -> Result<Vec<Envelope>> {
        self.log.read_stream_local(stream, from_version, max).await
    }

    async fn stream_version(&self, stream: &str) -> Result<u64> {
        self.log.stream_version(stream).await
    }

    fn known_version(&self, stream: &str) -> Option<u64> {
        self.log.known_version(stream)
    }

    fn local_version(&self, stream: &str) -> Option<u64> {
        self.log.local_version(stream)
    }

    async fn idempotent_result(&self, key: &str) -> Result<Option<Appended>> {
        self.log.idempotent_result(key).await
    }

    async fn head(&self) -> Result<Head> {
        self.log.head().await
    }

    fn subscribe(&self, from_seq: u64) -> Result<Self::Subscription> {
        self.log.subscribe(from_seq)
    }
}

async fn send<L: Log>(handler: &Handler<L>, command: impl Into<Command>) -> agentlog_commands::Accepted {
    let command = command.into();
    let name = command.name();
    handler.execute(Request::new(command, "test")).await.unwrap_or_else(|r| panic!("{name}: {r}"))
}

async fn grouped_debits<L: Log>(log: Arc<L>) {
    let gated = Arc::new(Gated::new(log));
    let clock = Arc::new(ManualClock::new(T0));
    let policy = Policy { circuit_threshold: u32::MAX, ..Policy::default() };
    let handler = Arc::new(Handler::new(gated.clone(), clock, Arc::new(SeededIdGen::new(1))).with_policy(policy));
    send(&handler, RegisterAgent { agent_id: "a1".into(), name: String::new(), capabilities: vec![] }).await;
    let open = OpenSession { agent_id: "a1".into(), session_id: None, heartbeat_timeout_ms: 3_600_000 };
    let session = send(&handler, open).await.session_id.unwrap();
    send(&handler, AllocateBudget { budget_id: "team".into(), amount: ALLOCATED }).await;

    gated.set_open(false);
    let key = |i: u64| format!("debit-{i}");
    let request = |i: u64| Request::new(debit("team", 1, "a1", &session).into(), "test").with_idempotency_key(key(i));
    let spawn = |i: u64| {
        let (handler, request) = (handler.clone(), request(i));
        tokio::spawn(async move { handler.execute(request).await })
    };
    // The first debit takes the turn; its append waits at the gate.
    let mut arrived = gated.arrived.subscribe();
    let before = *arrived.borrow();
    let mut debits = vec![spawn(0)];
    tokio::time::timeout(Duration::from_secs(30), arrived.wait_for(|n| *n == before + 1))
        .await
        .expect("the first debit's append reaches the gate within 30 s")
        .unwrap();
    // The rest queue behind it.
    debits.extend((1..DEBITS).map(spawn));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while handler.waiting(BUDGET) < DEBITS as usize - 1 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "only {} of {} debits queued within 30 s",
            handler.waiting(BUDGET),
            DEBITS - 1
        );
        tokio::task::yield_now().await;
    }
    gated.set_open(true);
    let mut results = Vec::new();
    for debit in debits {
        results.push(debit.await.unwrap());
    }
    assert_eq!(*gated.groups.lock().unwrap(), [DEBITS as usize - 1], "the 63 queued debits went as one group");

    let events = handler.log().read_stream(BUDGET, 1, 1_000).await.unwrap();
    let (mut accepted, mut refused) = (0, 0);
    for (i, result) in (0..DEBITS).zip(&results) {
        let first = handler.log().idempotent_result(&key(i)).await.unwrap().expect("each key is recorded");
        let keyed: Vec<&Envelope> = events.iter().filter(|e| e.idempotency_key == key(i)).collect();
        assert_eq!(keyed.len(), 1, "{} is on exactly one event", key(i));
        assert_eq!((keyed[0].seq, first.last_seq), (first.first_seq, first.first_seq), "{}'s own event", key(i));
        let again = handler.execute(request(i)).await;
        match (result, &again) {
            (Ok(accepted_first), Ok(retried)) => {
                accepted += 1;
                assert!(matches!(keyed[0].body, Some(Body::BudgetDebited(_))));
                assert_eq!(accepted_first.first_seq, first.first_seq);
                assert_eq!((retried.first_seq, retried.duplicate), (first.first_seq, true), "{}", key(i));
            }
            (Err(refusal), Err(retried)) => {
                refused += 1;
                assert_eq!((refusal.code, retried.code), (Code::InsufficientBudget, Code::InsufficientBudget));
                assert!(matches!(keyed[0].body, Some(Body::BudgetDebitRefused(_))));
                assert!(retried.message.contains(&format!("seq {}", first.first_seq)), "{retried}");
            }
            (first, again) => panic!("{}: first {first:?}, retried {again:?}", key(i)),
        }
    }
    assert_eq!((accepted, refused), (ALLOCATED, DEBITS - ALLOCATED));
    let budget = handler.budget("team").await.unwrap();
    assert_eq!((budget.spent, budget.balance), (ALLOCATED, 0));
    let balances: Vec<u64> = events
        .iter()
        .filter_map(|e| match &e.body {
            Some(Body::BudgetDebited(d)) => Some(d.balance_after),
            _ => None,
        })
        .collect();
    assert_eq!(balances, (0..ALLOCATED).rev().collect::<Vec<_>>(), "one debit after another, down to zero");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn queued_debits_are_one_group_each_with_its_own_key_on_the_embedded_log() {
    let dir = tempfile::tempdir().unwrap();
    let log: Arc<EmbeddedLog> = open_log(dir.path());
    grouped_debits(log).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn queued_debits_are_one_group_each_with_its_own_key_on_a_jetstream_node() {
    let server = NatsServer::start();
    let dir = tempfile::tempdir().unwrap();
    let log = Arc::new(JetStreamLog::open(Options::new(server.url(), dir.path())).await.expect("open a node"));
    grouped_debits(log.clone()).await;
    // Another node's mirror, built from JetStream alone, records each
    // part's key with the same result.
    let other_dir = tempfile::tempdir().unwrap();
    let other = JetStreamLog::open(Options::new(server.url(), other_dir.path())).await.expect("open a second node");
    other.caught_up(log.head().await.unwrap().last_seq).await.unwrap();
    for i in 0..DEBITS {
        let key = format!("debit-{i}");
        let recorded = log.idempotent_result(&key).await.unwrap();
        assert!(recorded.is_some());
        assert_eq!(other.idempotent_result(&key).await.unwrap(), recorded, "{key}");
    }
}
