//! Signed commands and roles on a real embedded log, each request built and
//! parsed exactly as the wire does it (`wire::Message`): unsigned, wrongly
//! signed, stale, future-dated and replayed requests are refused and append
//! nothing; a nonce is accepted once, also after a restart and under a
//! race; principals are held to the role table; a revoked key is refused
//! from the next command on; a retry re-signed with the same idempotency
//! key gets the first result.
use std::sync::Arc;
use std::time::Duration;

use agentlog_commands::command::{
    AllocateBudget, ClaimTask, CreateTask, ExpireSession, Heartbeat, OpenSession, RegisterAgent,
};
use agentlog_commands::principal::{RegisterPrincipal, RevokePrincipal};
use agentlog_commands::wire::Message;
use agentlog_commands::{Accepted, Auth, Code, Command, Handler, Principal, Rejection, Request, Role, Signer};
use agentlog_log::{EmbeddedLog, Log, ManualClock, RandomIdGen, SeededIdGen};
use agentlog_tests::{T0, debit, open_log};
use base64::Engine as _;

const SKEW_SECONDS: u64 = 60;

/// A node's handler in signed mode, with `ops` as its bootstrap admin.
fn node(log: Arc<EmbeddedLog>, clock: Arc<ManualClock>, seed: u64) -> Handler<EmbeddedLog> {
    let admin = Principal { public_key: key(1, &clock).public_key(), ..Principal::in_process("ops", &[Role::Admin]) };
    Handler::new(log, clock, Arc::new(SeededIdGen::new(seed))).with_auth(Arc::new(Auth::new([admin], SKEW_SECONDS)))
}

/// The key with seed `[n; 32]`, signing as `ops` (n = 1), `bob` (2),
/// `orchestrator` (3), `carol` (4), at the time of `clock`, each request
/// with a fresh random nonce as a producer's client does.
fn key(n: u8, clock: &Arc<ManualClock>) -> Signer {
    let id = ["", "ops", "bob", "orchestrator", "carol"][usize::from(n)];
    Signer::new(id, [n; 32], clock.clone(), Arc::new(RandomIdGen::new()))
}

fn public_key(signer: &Signer) -> String {
    base64::engine::general_purpose::STANDARD.encode(signer.public_key())
}

/// What the service makes of `command` signed by `signer` (with a fresh
/// nonce), sent with `idempotency_key`.
fn signed(signer: &Signer, command: impl Into<Command>, idempotency_key: Option<&str>) -> Message {
    let mut request = Request::new(command.into(), "whoever-the-header-says");
    request.idempotency_key = idempotency_key.map(str::to_owned);
    Message::new(&request, Some(signer))
}

async fn send(handler: &Handler<EmbeddedLog>, message: &Message) -> Result<Accepted, Rejection> {
    handler.execute(message.parse()?).await
}

async fn accepted(handler: &Handler<EmbeddedLog>, message: &Message) -> Accepted {
    send(handler, message).await.unwrap_or_else(|r| panic!("{} refused: {r}", message.subject))
}

/// Refused with `code`, and the log did not move.
async fn refused(handler: &Handler<EmbeddedLog>, message: &Message, code: Code) -> Rejection {
    let head = handler.log().head().await.unwrap();
    let rejection = send(handler, message).await.expect_err("refused");
    assert_eq!(rejection.code, code, "{}: {rejection}", message.subject);
    assert_eq!(handler.log().head().await.unwrap(), head, "a refused request appends nothing");
    rejection
}

/// Registers bob and carol (agent principals for agents a1 and a2), the
/// orchestrator, and agents a1 and a2, as the admin.
async fn principals(handler: &Handler<EmbeddedLog>, clock: &Arc<ManualClock>) {
    let ops = key(1, clock);
    let register = |n: u8, roles: Vec<Role>, agent: &str| RegisterPrincipal {
        principal_id: key(n, clock).key_id().to_owned(),
        public_key: public_key(&key(n, clock)),
        roles,
        agent_id: agent.into(),
    };
    accepted(handler, &signed(&ops, register(2, vec![Role::Agent], "a1"), None)).await;
    accepted(handler, &signed(&ops, register(3, vec![Role::Orchestrator], ""), None)).await;
    accepted(handler, &signed(&ops, register(4, vec![Role::Agent], "a2"), None)).await;
    for agent in ["a1", "a2"] {
        let agent = RegisterAgent { agent_id: agent.into(), name: String::new(), capabilities: vec!["code".into()] };
        accepted(handler, &signed(&ops, agent, None)).await;
    }
}

fn open_session(agent: &str) -> OpenSession {
    OpenSession { agent_id: agent.into(), session_id: None, heartbeat_timeout_ms: 3_600_000 }
}

/// Task t1, with no requirements.
fn task_t1() -> CreateTask {
    CreateTask {
        task_id: "t1".into(),
        title: String::new(),
        priority: 0,
        required_capabilities: vec![],
        dependencies: vec![],
        max_attempts: 3,
    }
}

#[tokio::test]
async fn unsigned_unknown_and_wrongly_signed_requests_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(T0));
    let handler = node(open_log(dir.path()), clock.clone(), 1);
    let allocate = AllocateBudget { budget_id: "b1".into(), amount: 10 };

    let unsigned = Message::new(&Request::new(allocate.clone().into(), "ops"), None);
    let err = refused(&handler, &unsigned, Code::Unauthenticated).await;
    assert!(err.message.contains("requires signed commands"), "{err}");

    let stranger = Signer::new("mallory", [9; 32], clock.clone(), Arc::new(SeededIdGen::new(9)));
    let err = refused(&handler, &signed(&stranger, allocate.clone(), None), Code::Unauthenticated).await;
    assert!(err.message.contains("no principal mallory"), "{err}");

    // ops's key id with another key.
    let impostor = Signer::new("ops", [9; 32], clock.clone(), Arc::new(SeededIdGen::new(9)));
    refused(&handler, &signed(&impostor, allocate.clone(), None), Code::BadSignature).await;

    // Each signed part changed after signing: the body, the subject, the
    // idempotency key, the timestamp.
    let ops = key(1, &clock);
    let mut body = signed(&ops, allocate.clone(), Some("k1"));
    body.payload = Command::from(AllocateBudget { budget_id: "b1".into(), amount: 1000 }).to_protobuf();
    refused(&handler, &body, Code::BadSignature).await;
    let mut subject = signed(&ops, allocate.clone(), Some("k1"));
    subject.subject = "agentlog.cmd.refund_budget".into();
    refused(&handler, &subject, Code::BadSignature).await;
    let mut keyed = signed(&ops, allocate.clone(), Some("k1"));
    keyed.headers.insert("Agentlog-Idempotency-Key", "k2");
    refused(&handler, &keyed, Code::BadSignature).await;
    let mut moved = signed(&ops, allocate.clone(), Some("k1"));
    moved.headers.insert("Agentlog-Timestamp", (T0.as_nanos() + 1).to_string().as_str());
    refused(&handler, &moved, Code::BadSignature).await;
    // Half the signature headers.
    let mut partial = signed(&ops, allocate.clone(), None);
    partial.headers = {
        let mut kept = async_nats::HeaderMap::new();
        kept.insert("Agentlog-Key-Id", "ops");
        kept
    };
    let err = refused(&handler, &partial, Code::Unauthenticated).await;
    assert!(err.message.contains("Agentlog-Signature"), "{err}");

    // The genuine request: accepted, and its actor is the principal, not
    // the header.
    let done = accepted(&handler, &signed(&ops, allocate, Some("k1"))).await;
    let events = handler.log().read(done.first_seq, 1).await.unwrap();
    assert_eq!(events[0].actor, "ops");
}

/// `message` with the signature of `other` (the same key, another
/// request): a forgery whose every other part is genuine.
fn forged(message: &Message, other: &Message) -> Message {
    let mut forged = message.clone();
    let signature = other.headers.get("Agentlog-Signature").expect("a signed request").clone();
    forged.headers.insert("Agentlog-Signature", signature);
    forged
}

/// The signature is checked after the reads a decision makes (while they
/// wait on the network), but a forgery is answered `bad_signature` whatever
/// else would refuse it, and gets no first result of a key.
#[tokio::test]
async fn a_forged_request_learns_nothing_but_bad_signature() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(T0));
    let handler = node(open_log(dir.path()), clock.clone(), 1);
    principals(&handler, &clock).await;
    let (ops, bob, orchestrator) = (key(1, &clock), key(2, &clock), key(3, &clock));
    let other = signed(&bob, open_session("a1"), None);
    let session = accepted(&handler, &signed(&bob, open_session("a1"), None)).await.session_id.unwrap();
    accepted(&handler, &signed(&orchestrator, task_t1(), None)).await;
    let claim = |task: &str| ClaimTask {
        task_id: task.into(),
        agent_id: "a1".into(),
        session_id: session.clone(),
        lease_ms: 60_000,
    };

    // A claim, which reads its session and agent: forged, refused (the
    // genuine one is accepted below, with a key).
    refused(&handler, &forged(&signed(&bob, claim("t1"), None), &other), Code::BadSignature).await;
    // What the role table forbids (bob allocating), what the domain refuses
    // (a claim of no task), a key already used, a nonce already used.
    let allocate = AllocateBudget { budget_id: "b1".into(), amount: 10 };
    refused(&handler, &signed(&bob, allocate.clone(), None), Code::Forbidden).await;
    refused(&handler, &forged(&signed(&bob, allocate, None), &other), Code::BadSignature).await;
    refused(&handler, &signed(&bob, claim("t9"), None), Code::NotFound).await;
    refused(&handler, &forged(&signed(&bob, claim("t9"), None), &other), Code::BadSignature).await;
    let keyed = signed(&bob, claim("t1"), Some("claim-1"));
    let first = accepted(&handler, &keyed).await;
    refused(&handler, &forged(&signed(&bob, claim("t1"), Some("claim-1")), &other), Code::BadSignature).await;
    refused(&handler, &keyed, Code::ReplayedNonce).await;
    refused(&handler, &forged(&keyed, &other), Code::BadSignature).await;
    // Out of the skew window as well.
    let held = signed(&ops, AllocateBudget { budget_id: "b2".into(), amount: 10 }, None);
    clock.advance(Duration::from_secs(SKEW_SECONDS + 1));
    refused(&handler, &held, Code::StaleTimestamp).await;
    refused(&handler, &forged(&held, &other), Code::BadSignature).await;
    // The task has its creation and the one claim.
    assert_eq!(handler.load("task/t1").await.unwrap().0, 2);
    assert_eq!(handler.log().head().await.unwrap().last_seq, first.last_seq);
}

#[tokio::test]
async fn timestamps_outside_the_skew_window_are_refused_either_way() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(T0));
    let handler = node(open_log(dir.path()), clock.clone(), 1);
    let producer_clock = Arc::new(ManualClock::new(T0));
    let ops = key(1, &producer_clock);
    let allocate = |n: u64| AllocateBudget { budget_id: format!("b{n}"), amount: 10 };

    let window = Duration::from_secs(SKEW_SECONDS);
    producer_clock.set(T0.plus(window + Duration::from_secs(1)));
    let err = refused(&handler, &signed(&ops, allocate(1), None), Code::StaleTimestamp).await;
    assert!(err.message.contains("ahead of"), "{err}");
    producer_clock.set(T0);
    clock.set(T0.plus(window + Duration::from_secs(1)));
    let err = refused(&handler, &signed(&ops, allocate(2), None), Code::StaleTimestamp).await;
    assert!(err.message.contains("behind"), "{err}");
    // A request signed in time but held back past the window: stale.
    clock.set(T0);
    let held = signed(&ops, allocate(3), None);
    clock.advance(window + Duration::from_secs(1));
    refused(&handler, &held, Code::StaleTimestamp).await;
    // Just inside the window either way: accepted.
    producer_clock.set(T0.plus(window + window));
    accepted(&handler, &signed(&ops, allocate(4), None)).await;
    producer_clock.set(T0.plus(Duration::from_secs(1)));
    accepted(&handler, &signed(&ops, allocate(5), None)).await;
}

#[tokio::test]
async fn a_nonce_is_accepted_once_ever_and_a_retry_is_signed_again() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(T0));
    let captured_debit;
    let captured_allocation;
    let first;
    {
        let handler = node(open_log(dir.path()), clock.clone(), 1);
        principals(&handler, &clock).await;
        let ops = key(1, &clock);
        let bob = key(2, &clock);
        captured_allocation = signed(&ops, AllocateBudget { budget_id: "b1".into(), amount: 100 }, None);
        accepted(&handler, &captured_allocation).await;
        let session = accepted(&handler, &signed(&bob, open_session("a1"), None)).await.session_id.unwrap();
        let debit = debit("b1", 10, "a1", &session);
        captured_debit = signed(&bob, debit.clone(), Some("debit-1"));
        first = accepted(&handler, &captured_debit).await;

        // Sent again, word for word: a replay, refused.
        let err = refused(&handler, &captured_allocation, Code::ReplayedNonce).await;
        assert!(err.message.contains("nonce ops/"), "{err}");
        refused(&handler, &captured_debit, Code::ReplayedNonce).await;
        // The producer's retry is signed again (a fresh nonce) with the same
        // key: the first result, nothing appended.
        let head = handler.log().head().await.unwrap();
        let retry = accepted(&handler, &signed(&bob, debit, Some("debit-1"))).await;
        assert!(retry.duplicate);
        assert_eq!((retry.first_seq, retry.last_seq), (first.first_seq, first.last_seq));
        assert_eq!(handler.log().head().await.unwrap(), head);
        assert_eq!(handler.budget("b1").await.unwrap().balance, 90);
    }
    // After restarts, with a node that never saw them (its cache empty):
    // still refused.
    for seed in 2..4 {
        let handler = node(open_log(dir.path()), clock.clone(), seed);
        refused(&handler, &captured_allocation, Code::ReplayedNonce).await;
        refused(&handler, &captured_debit, Code::ReplayedNonce).await;
        assert_eq!(handler.budget("b1").await.unwrap().balance, 90);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn racing_copies_of_one_signed_request_append_it_once() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(T0));
    let handler = Arc::new(node(open_log(dir.path()), clock.clone(), 1));
    let ops = key(1, &clock);
    // With and without an idempotency key (then the nonce alone dedupes).
    for key in [None, Some("alloc-race")] {
        let message = signed(&ops, AllocateBudget { budget_id: "b1".into(), amount: 7 }, key);
        let copies: Vec<_> = (0..16)
            .map(|_| {
                let (handler, message) = (handler.clone(), message.clone());
                tokio::spawn(async move { send(&handler, &message).await })
            })
            .collect();
        let mut outcomes = Vec::new();
        for copy in copies {
            outcomes.push(copy.await.unwrap());
        }
        let winners = outcomes.iter().filter(|o| matches!(o, Ok(a) if !a.duplicate)).count();
        assert_eq!(winners, 1, "{outcomes:?}");
        for outcome in &outcomes {
            assert!(
                matches!(outcome, Ok(a) if !a.duplicate) || matches!(outcome, Err(r) if r.code == Code::ReplayedNonce),
                "{outcome:?}"
            );
        }
    }
    assert_eq!(handler.budget("b1").await.unwrap().allocated, 14);
}

#[tokio::test]
async fn principals_are_held_to_the_role_table() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(T0));
    let handler = node(open_log(dir.path()), clock.clone(), 1);
    principals(&handler, &clock).await;
    let (ops, bob, orchestrator, carol) = (key(1, &clock), key(2, &clock), key(3, &clock), key(4, &clock));

    // bob acts for a1, and only for a1; carol for a2.
    let bobs = accepted(&handler, &signed(&bob, open_session("a1"), None)).await;
    let err = refused(&handler, &signed(&bob, open_session("a2"), None), Code::Forbidden).await;
    assert!(err.message.contains("acting for agent a2") && err.message.contains("agent a1"), "{err}");
    let carols = accepted(&handler, &signed(&carol, open_session("a2"), None)).await.session_id.unwrap();
    let heartbeat = |session: &str| Heartbeat { session_id: session.into() };
    let err = refused(&handler, &signed(&bob, heartbeat(&carols), None), Code::Forbidden).await;
    assert!(err.message.contains(&format!("agent a2, whose session {carols} is")), "{err}");
    accepted(&handler, &signed(&bob, heartbeat(bobs.session_id.as_deref().unwrap()), None)).await;

    // Tasks are the orchestrator's; a claim is the claiming agent's own.
    let err = refused(&handler, &signed(&bob, task_t1(), None), Code::Forbidden).await;
    assert!(err.message.contains("the orchestrator role"), "{err}");
    accepted(&handler, &signed(&orchestrator, task_t1(), None)).await;
    let claim = |agent: &str, session: &str| ClaimTask {
        task_id: "t1".into(),
        agent_id: agent.into(),
        session_id: session.into(),
        lease_ms: 60_000,
    };
    refused(&handler, &signed(&bob, claim("a2", &carols), None), Code::Forbidden).await;
    // An admin acts for no agent.
    refused(&handler, &signed(&ops, claim("a2", &carols), None), Code::Forbidden).await;
    let claimed = accepted(&handler, &signed(&carol, claim("a2", &carols), None)).await;
    let events = handler.log().read(claimed.first_seq, 1).await.unwrap();
    assert_eq!(events[0].actor, "carol", "the actor is the verified principal, not Agentlog-Actor");

    // Budgets, agents' capabilities and principals are the admin's; a
    // debit is its agent's, and names it.
    let err =
        refused(&handler, &signed(&bob, AllocateBudget { budget_id: "b".into(), amount: 5 }, None), Code::Forbidden)
            .await;
    assert!(err.message.contains("the admin role"), "{err}");
    let capabilities =
        RegisterAgent { agent_id: "a1".into(), name: String::new(), capabilities: vec!["deploy".into()] };
    refused(&handler, &signed(&bob, capabilities.clone(), None), Code::Forbidden).await;
    refused(&handler, &signed(&orchestrator, capabilities, None), Code::Forbidden).await;
    let escalate = RegisterPrincipal {
        principal_id: "bob2".into(),
        public_key: public_key(&bob),
        roles: vec![Role::Admin],
        agent_id: String::new(),
    };
    refused(&handler, &signed(&bob, escalate, None), Code::Forbidden).await;
    accepted(&handler, &signed(&ops, AllocateBudget { budget_id: "b".into(), amount: 5 }, None)).await;
    let bobs_session = bobs.session_id.clone().unwrap();
    let debit_as = |agent: &str| debit("b", 1, agent, &bobs_session);
    refused(&handler, &signed(&bob, debit_as(""), None), Code::Forbidden).await;
    refused(&handler, &signed(&bob, debit_as("a2"), None), Code::Forbidden).await;
    accepted(&handler, &signed(&bob, debit_as("a1"), None)).await;

    // Expiries are the ticker's.
    let expire = ExpireSession { session_id: carols };
    let err = refused(&handler, &signed(&ops, expire.clone(), None), Code::Forbidden).await;
    assert!(err.message.contains("the ticker role"), "{err}");
    let as_ticker = handler.execute(Request::new(expire.into(), "x").as_principal(Principal::ticker())).await;
    assert_eq!(as_ticker.unwrap_err().code, Code::SessionLive, "the ticker passes the table; the session is live");
}

#[tokio::test]
async fn a_revoked_key_is_refused_from_the_next_command_on() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(T0));
    let handler = node(open_log(dir.path()), clock.clone(), 1);
    principals(&handler, &clock).await;
    let (ops, bob) = (key(1, &clock), key(2, &clock));
    let session = accepted(&handler, &signed(&bob, open_session("a1"), None)).await.session_id.unwrap();
    let heartbeat = || Heartbeat { session_id: session.clone() };
    accepted(&handler, &signed(&bob, heartbeat(), None)).await;
    let revoke = RevokePrincipal { principal_id: "bob".into(), reason: "key leaked".into() };
    let revoked = accepted(&handler, &signed(&ops, revoke, None)).await;
    let err = refused(&handler, &signed(&bob, heartbeat(), None), Code::Unauthenticated).await;
    assert!(err.message.contains(&format!("revoked (seq {})", revoked.first_seq)), "{err}");
    // Also on a node started after it, and the key cannot come back under
    // its old id.
    let restarted = node(handler.log().clone(), clock.clone(), 2);
    refused(&restarted, &signed(&bob, heartbeat(), None), Code::Unauthenticated).await;
    let again = RegisterPrincipal {
        principal_id: "bob".into(),
        public_key: public_key(&bob),
        roles: vec![Role::Agent],
        agent_id: "a1".into(),
    };
    refused(&restarted, &signed(&ops, again, None), Code::AlreadyExists).await;
}
