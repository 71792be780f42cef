//! `replay check` finds each invariant broken, at the exact seq, with the
//! witness docs/REPLAY.md defines. Each log is a small valid history written
//! straight through `Log::append` (past the handler, which would refuse the
//! break) or, for what the log itself guarantees (seqs, versions, the
//! chain), through the WAL's raw writer (past the write path's checks).
//! The live world view flags the same breaks as they arrive, where it can
//! see them (it keeps no hash chain), at the same seq.
use agentlog_core::schema::{
    AgentRegistered, BudgetAllocated, BudgetDebited, SessionClosed, SessionExpired, SessionOpened, TaskClaimed,
    TaskCompleted, TaskCreated, TaskLeaseExpired, TaskReleased,
};
use agentlog_core::{AppendRequest, Body, Envelope, EventId, ExpectedVersion, Log, SeededIdGen, Timestamp};
use agentlog_log::wal::{RawWriter, Store, StoreOptions};
use agentlog_log::{EmbeddedLog, Options};
use agentlog_projections::world::ViolationKind;
use agentlog_projections::{Live, WorldModel};
use agentlog_replay::{History, Invariant, Report};

const S1: &str = "00000000-0000-7000-8000-000000000001";
const S2: &str = "00000000-0000-7000-8000-000000000002";
const T0: u64 = 1_767_225_600_000_000_000;
const SECOND: u64 = 1_000_000_000;

fn envelope(n: u64, ts: u64, stream: &str, session: Option<&str>, body: Body) -> Envelope {
    let ids = SeededIdGen::new(n);
    Envelope {
        event_id: EventId::new(Timestamp::from_nanos(ts), &ids).as_bytes().to_vec(),
        ts,
        stream: stream.to_owned(),
        session_id: session.map(|s| uuid::Uuid::parse_str(s).unwrap().as_bytes().to_vec()).unwrap_or_default(),
        actor: "planted".into(),
        schema_version: agentlog_core::schema::SCHEMA_VERSION,
        body: Some(body),
        ..Envelope::default()
    }
}

/// A log written event by event, each at `T0 + seconds`.
struct Plant {
    log: EmbeddedLog,
    written: u64,
}

impl Plant {
    async fn event(&mut self, seconds: u64, stream: &str, session: Option<&str>, body: Body) -> u64 {
        self.written += 1;
        let event = envelope(self.written, T0 + seconds * SECOND, stream, session, body);
        let request = AppendRequest {
            stream: stream.into(),
            expected: ExpectedVersion::Any,
            events: vec![event],
            idempotency_key: None,
        };
        self.log.append(request).await.unwrap().last_seq
    }

    fn claim(task: &str, agent: &str, session: &str, lease_until_s: u64) -> Body {
        Body::TaskClaimed(TaskClaimed {
            task_id: task.into(),
            agent_id: agent.into(),
            session_id: session.into(),
            attempt: 1,
            lease_until_ts: T0 + lease_until_s * SECOND,
        })
    }

    fn debit(amount: u64, balance_after: u64, agent: &str, session: &str) -> Body {
        Body::BudgetDebited(BudgetDebited {
            budget_id: "b1".into(),
            amount,
            balance_after,
            agent_id: agent.into(),
            session_id: session.into(),
            task_id: "t1".into(),
            ..BudgetDebited::default()
        })
    }
}

/// Seqs 1–7, all valid: agents a1 and a2, their sessions S1 and S2 (60 s
/// heartbeat timeout, opened at 0 s), task t1, budget b1 with 100, and t1
/// claimed by a1 in S1 at 1 s with a lease to 31 s.
async fn valid_prefix(dir: &std::path::Path) -> Plant {
    let mut plant = Plant { log: EmbeddedLog::open(dir, Options::default()).unwrap(), written: 0 };
    for agent in ["a1", "a2"] {
        let body = Body::AgentRegistered(AgentRegistered { agent_id: agent.into(), ..AgentRegistered::default() });
        plant.event(0, &format!("agent/{agent}"), None, body).await;
    }
    for (session, agent) in [(S1, "a1"), (S2, "a2")] {
        let body = Body::SessionOpened(SessionOpened {
            session_id: session.into(),
            agent_id: agent.into(),
            heartbeat_timeout_ms: 60_000,
        });
        plant.event(0, &format!("session/{session}"), Some(session), body).await;
    }
    plant
        .event(0, "task/t1", None, Body::TaskCreated(TaskCreated { task_id: "t1".into(), ..TaskCreated::default() }))
        .await;
    let allocated = Body::BudgetAllocated(BudgetAllocated { budget_id: "b1".into(), amount: 100, balance_after: 100 });
    plant.event(0, "budget/b1", None, allocated).await;
    assert_eq!(plant.event(1, "task/t1", Some(S1), Plant::claim("t1", "a1", S1, 31)).await, 7);
    plant
}

fn check(dir: &std::path::Path) -> Report {
    let history = History::open(Some(dir), None).unwrap();
    agentlog_replay::check(&history, &mut |_, _| {}).unwrap()
}

/// The report has exactly one break, of `invariant` at `seq`, witnessed by `witness`.
fn only(report: &Report, invariant: Invariant, seq: u64, witness: &[u64]) {
    assert_eq!(report.breaks.len(), 1, "{:#?}", report.breaks);
    let found = &report.breaks[0];
    assert_eq!((found.invariant, found.seq), (invariant, seq), "{found:#?}");
    assert_eq!(found.witness, witness, "{found:#?}");
}

/// What the live world view, folded over the whole history, flags.
fn world_flags(dir: &std::path::Path) -> Vec<(u64, ViolationKind)> {
    let history = History::open(Some(dir), None).unwrap();
    let mut world = Live::<WorldModel>::new();
    agentlog_projections::rebuild(&history, &mut [&mut world], u64::MAX, &mut |_, _| {}).unwrap();
    world.state.violations().map(|v| (v.seq, v.kind)).collect()
}

/// The live world view flags `kind` at `seq`.
fn the_world_flags(dir: &std::path::Path, seq: u64, kind: ViolationKind) {
    let flagged = world_flags(dir);
    assert!(flagged.contains(&(seq, kind)), "{kind:?} at seq {seq}: the world flags {flagged:?}");
}

#[tokio::test]
async fn a_valid_history_breaks_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut plant = valid_prefix(dir.path()).await;
    let completed = Body::TaskCompleted(TaskCompleted {
        task_id: "t1".into(),
        agent_id: "a1".into(),
        session_id: S1.into(),
        result: String::new(),
    });
    plant.event(5, "task/t1", Some(S1), completed).await;
    plant.event(6, "budget/b1", Some(S1), Plant::debit(100, 0, "a1", S1)).await;
    drop(plant);
    let report = check(dir.path());
    assert_eq!(report.events, 9);
    assert_eq!(report.breaks, []);
    assert_eq!(world_flags(dir.path()), []);
}

#[tokio::test]
async fn a_second_holder() {
    let dir = tempfile::tempdir().unwrap();
    let mut plant = valid_prefix(dir.path()).await;
    plant.event(2, "task/t1", Some(S2), Plant::claim("t1", "a2", S2, 32)).await;
    drop(plant);
    only(&check(dir.path()), Invariant::OneHolder, 8, &[7, 8]);
    the_world_flags(dir.path(), 8, ViolationKind::ClaimNotOpen);
}

#[tokio::test]
async fn a_claim_in_another_agents_session_and_in_an_ended_one() {
    let dir = tempfile::tempdir().unwrap();
    let mut plant = valid_prefix(dir.path()).await;
    plant
        .event(2, "task/t2", None, Body::TaskCreated(TaskCreated { task_id: "t2".into(), ..TaskCreated::default() }))
        .await;
    plant.event(3, "task/t2", Some(S2), Plant::claim("t2", "a1", S2, 33)).await;
    drop(plant);
    only(&check(dir.path()), Invariant::ClaimInLiveSession, 9, &[4, 9]);

    let dir = tempfile::tempdir().unwrap();
    let mut plant = valid_prefix(dir.path()).await;
    let closed = Body::SessionClosed(SessionClosed { session_id: S2.into(), reason: String::new() });
    plant.event(2, &format!("session/{S2}"), Some(S2), closed).await;
    plant
        .event(2, "task/t2", None, Body::TaskCreated(TaskCreated { task_id: "t2".into(), ..TaskCreated::default() }))
        .await;
    // Sent outside the session (no envelope session), so only the claim rule sees it.
    plant.event(3, "task/t2", None, Plant::claim("t2", "a2", S2, 33)).await;
    drop(plant);
    only(&check(dir.path()), Invariant::ClaimInLiveSession, 10, &[4, 8, 10]);
    the_world_flags(dir.path(), 10, ViolationKind::ClaimInDeadSession);
}

#[tokio::test]
async fn a_completion_by_someone_else_and_one_after_the_lease() {
    let dir = tempfile::tempdir().unwrap();
    let mut plant = valid_prefix(dir.path()).await;
    let by_a2 = Body::TaskCompleted(TaskCompleted {
        task_id: "t1".into(),
        agent_id: "a2".into(),
        session_id: S2.into(),
        result: String::new(),
    });
    plant.event(5, "task/t1", Some(S2), by_a2).await;
    drop(plant);
    only(&check(dir.path()), Invariant::FinishByHolder, 8, &[7, 8]);
    the_world_flags(dir.path(), 8, ViolationKind::FinishedByNonHolder);

    let dir = tempfile::tempdir().unwrap();
    let mut plant = valid_prefix(dir.path()).await;
    let late = Body::TaskCompleted(TaskCompleted {
        task_id: "t1".into(),
        agent_id: "a1".into(),
        session_id: S1.into(),
        result: String::new(),
    });
    plant.event(40, "task/t1", Some(S1), late).await;
    drop(plant);
    only(&check(dir.path()), Invariant::FinishByHolder, 8, &[7, 8]);
}

#[tokio::test]
async fn a_lease_expired_early_and_a_session_expired_early() {
    let dir = tempfile::tempdir().unwrap();
    let mut plant = valid_prefix(dir.path()).await;
    let expired = Body::TaskLeaseExpired(TaskLeaseExpired {
        task_id: "t1".into(),
        agent_id: "a1".into(),
        session_id: S1.into(),
        lease_until_ts: T0 + 31 * SECOND,
    });
    plant.event(10, "task/t1", None, expired.clone()).await;
    drop(plant);
    // The claim, and S1's opening (its last sign of life).
    only(&check(dir.path()), Invariant::LeaseExpiry, 8, &[3, 7, 8]);
    the_world_flags(dir.path(), 8, ViolationKind::ExpiredEarly);

    // After the lease's end it is no break.
    let dir = tempfile::tempdir().unwrap();
    let mut plant = valid_prefix(dir.path()).await;
    plant.event(32, "task/t1", None, expired).await;
    let session_expired =
        Body::SessionExpired(SessionExpired { session_id: S2.into(), last_heartbeat_ts: T0, deadline_ts: T0 });
    plant.event(30, &format!("session/{S2}"), Some(S2), session_expired).await;
    drop(plant);
    only(&check(dir.path()), Invariant::SessionExpiry, 9, &[4, 9]);
}

#[tokio::test]
async fn an_event_in_a_session_after_it_closed() {
    let dir = tempfile::tempdir().unwrap();
    let mut plant = valid_prefix(dir.path()).await;
    let closed = Body::SessionClosed(SessionClosed { session_id: S2.into(), reason: String::new() });
    plant.event(2, &format!("session/{S2}"), Some(S2), closed).await;
    plant.event(3, "budget/b1", Some(S2), Plant::debit(10, 90, "a2", S2)).await;
    drop(plant);
    only(&check(dir.path()), Invariant::NothingAfterSessionEnd, 9, &[8, 9]);
    the_world_flags(dir.path(), 9, ViolationKind::AfterSessionEnd);
}

#[tokio::test]
async fn a_budget_overdrawn_and_a_balance_misstated() {
    let dir = tempfile::tempdir().unwrap();
    let mut plant = valid_prefix(dir.path()).await;
    plant.event(2, "budget/b1", Some(S1), Plant::debit(60, 40, "a1", S1)).await;
    plant.event(3, "budget/b1", Some(S1), Plant::debit(30, 10, "a1", S1)).await;
    plant.event(4, "budget/b1", Some(S1), Plant::debit(50, 0, "a1", S1)).await;
    drop(plant);
    // The allocation, this debit and the largest earlier one: 50 + 60 > 100.
    only(&check(dir.path()), Invariant::BudgetNonNegative, 10, &[6, 8, 10]);
    the_world_flags(dir.path(), 10, ViolationKind::Overdrawn);

    let dir = tempfile::tempdir().unwrap();
    let mut plant = valid_prefix(dir.path()).await;
    plant.event(2, "budget/b1", Some(S1), Plant::debit(10, 95, "a1", S1)).await;
    drop(plant);
    only(&check(dir.path()), Invariant::BudgetArithmetic, 8, &[6, 8]);
    the_world_flags(dir.path(), 8, ViolationKind::BalanceMismatch);
}

#[tokio::test]
async fn a_stream_whose_time_goes_back() {
    let dir = tempfile::tempdir().unwrap();
    let mut plant = valid_prefix(dir.path()).await;
    let released = Body::TaskReleased(TaskReleased {
        task_id: "t1".into(),
        agent_id: "a1".into(),
        session_id: S1.into(),
        reason: String::new(),
    });
    // Half a second before the claim it releases, on the same stream.
    plant.written += 1;
    let event = envelope(plant.written, T0 + SECOND / 2, "task/t1", Some(S1), released);
    let request = AppendRequest {
        stream: "task/t1".into(),
        expected: ExpectedVersion::Any,
        events: vec![event],
        idempotency_key: None,
    };
    plant.log.append(request).await.unwrap();
    drop(plant);
    only(&check(dir.path()), Invariant::StreamTime, 8, &[7, 8]);
    the_world_flags(dir.path(), 8, ViolationKind::TimeWentBack);
}

/// The valid prefix, then `stage` writing raw events after seq 7.
async fn raw(dir: &std::path::Path, stage: impl FnOnce(&mut RawWriter<'_>)) {
    drop(valid_prefix(dir).await);
    let store = Store::open(dir, StoreOptions::default()).unwrap();
    let mut writer = RawWriter::new(&store).unwrap();
    stage(&mut writer);
    writer.write().unwrap();
}

fn released(seq: u64, stream_version: u64) -> Envelope {
    let body = Body::TaskReleased(TaskReleased {
        task_id: "t1".into(),
        agent_id: "a1".into(),
        session_id: S1.into(),
        reason: String::new(),
    });
    Envelope { seq, stream_version, ..envelope(seq, T0 + 2 * SECOND, "task/t1", Some(S1), body) }
}

#[tokio::test]
async fn a_stream_version_skipped() {
    let dir = tempfile::tempdir().unwrap();
    raw(dir.path(), |w| {
        w.sealed(released(8, 4));
    })
    .await;
    only(&check(dir.path()), Invariant::StreamVersions, 8, &[7, 8]);
    the_world_flags(dir.path(), 8, ViolationKind::VersionGap);
}

#[tokio::test]
async fn a_seq_missing_and_a_broken_chain() {
    let dir = tempfile::tempdir().unwrap();
    raw(dir.path(), |w| {
        w.sealed(released(9, 3));
    })
    .await;
    let report = check(dir.path());
    only(&report, Invariant::SeqsAndChain, 8, &[7, 8]);
    assert!(report.breaks[0].detail.contains("9"), "{:?}", report.breaks[0]);
    assert_eq!(report.events, 7, "everything before the gap is checked");

    let dir = tempfile::tempdir().unwrap();
    raw(dir.path(), |w| {
        w.sealed_onto(&[7u8; 32], released(8, 3));
    })
    .await;
    let report = check(dir.path());
    only(&report, Invariant::SeqsAndChain, 8, &[7, 8]);
    assert!(report.breaks[0].detail.contains("hash chain"), "{:?}", report.breaks[0]);
}
