//! Snapshots taken while folding give exactly the state a fold from seq 1
//! gives, at every seq, on the first pass and from the snapshots after it;
//! a snapshot of a history that changed since is not used.
use agentlog_core::schema::{AgentRegistered, BudgetAllocated, BudgetDebited, TaskCreated};
use agentlog_core::{AppendRequest, Body, Envelope, EventId, ExpectedVersion, Log, SeededIdGen, Timestamp};
use agentlog_log::{EmbeddedLog, Options};
use agentlog_projections::Runner;
use agentlog_replay::{History, Snapshots};

const T0: u64 = 1_767_225_600_000_000_000;

async fn write(dir: &std::path::Path, events: u64, salt: u64) {
    let log = EmbeddedLog::open(dir, Options::default()).unwrap();
    for n in 1..=events {
        let (stream, body) = match n % 4 {
            1 => (
                format!("agent/a{n}"),
                Body::AgentRegistered(AgentRegistered { agent_id: format!("a{n}"), ..Default::default() }),
            ),
            2 => (
                format!("task/t{n}"),
                Body::TaskCreated(TaskCreated {
                    task_id: format!("t{n}"),
                    priority: (n % 7) as i32,
                    ..Default::default()
                }),
            ),
            3 => (
                "budget/b".to_owned(),
                Body::BudgetAllocated(BudgetAllocated { budget_id: "b".into(), amount: 10 + salt, balance_after: 0 }),
            ),
            _ => (
                "budget/b".to_owned(),
                Body::BudgetDebited(BudgetDebited { budget_id: "b".into(), amount: 1, ..Default::default() }),
            ),
        };
        let ts = T0 + n * 1_000_000_000;
        let event = Envelope {
            event_id: EventId::new(Timestamp::from_nanos(ts), &SeededIdGen::new(n)).as_bytes().to_vec(),
            ts,
            stream: stream.clone(),
            actor: "test".into(),
            body: Some(body),
            ..Envelope::default()
        };
        let request =
            AppendRequest { stream, expected: ExpectedVersion::Any, events: vec![event], idempotency_key: None };
        log.append(request).await.unwrap();
    }
}

fn hashes(state: &agentlog_replay::State) -> ([u8; 32], [u8; 32]) {
    (state.world.state_hash(), state.reputation.state_hash())
}

#[tokio::test]
async fn every_point_from_snapshots_is_the_fold_from_seq_one() {
    let (dir, cache) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    write(dir.path(), 40, 0).await;
    let history = History::open(Some(dir.path()), None).unwrap();
    let snapshots = Snapshots::open(cache.path(), &history, 7).unwrap();
    assert!(snapshots.root().starts_with(cache.path()));
    // The first pass takes them on the way to the head.
    let at_head = snapshots.state_at(&history, 40, &mut |_, _| {}).unwrap();
    let expected = agentlog_replay::state_at(&history, 40, &mut |_, _| {}).unwrap();
    assert_eq!(hashes(&at_head), hashes(&expected));
    assert_eq!(snapshots.taken().unwrap(), [7, 14, 21, 28, 35]);
    // Every point, from the snapshots, in any order.
    for seq in (1..=40).rev() {
        let jumped = snapshots.state_at(&history, seq, &mut |_, _| {}).unwrap();
        let folded = agentlog_replay::state_at(&history, seq, &mut |_, _| {}).unwrap();
        assert_eq!(hashes(&jumped), hashes(&folded), "seq {seq}");
        assert_eq!(jumped.summary(), folded.summary(), "seq {seq}");
    }
    // No scratch store is left behind once the states are dropped.
    drop((at_head, expected));
    let left: Vec<_> = std::fs::read_dir(snapshots.root())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| !n.starts_with("seq-"))
        .collect();
    assert_eq!(left, Vec::<String>::new());
}

#[tokio::test]
async fn a_snapshot_of_a_history_that_changed_since_is_not_used() {
    let cache = tempfile::tempdir().unwrap();
    let (first, second) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    // The same first event (the same log id), then other events.
    write(first.path(), 20, 0).await;
    write(second.path(), 20, 5).await;
    let one = History::open(Some(first.path()), None).unwrap();
    let two = History::open(Some(second.path()), None).unwrap();
    let snapshots_one = Snapshots::open(cache.path(), &one, 5).unwrap();
    snapshots_one.state_at(&one, 20, &mut |_, _| {}).unwrap();
    let snapshots_two = Snapshots::open(cache.path(), &two, 5).unwrap();
    assert_eq!(snapshots_two.root(), snapshots_one.root(), "the same first event, the same log id");
    let jumped = snapshots_two.state_at(&two, 20, &mut |_, _| {}).unwrap();
    let folded = agentlog_replay::state_at(&two, 20, &mut |_, _| {}).unwrap();
    assert_eq!(hashes(&jumped), hashes(&folded), "the other history's snapshots were not used");
    // Each history keeps its own: two at each seq, and both are used.
    let kept = std::fs::read_dir(snapshots_one.root())
        .unwrap()
        .filter(|e| e.as_ref().unwrap().file_name().to_string_lossy().starts_with("seq-"))
        .count();
    assert_eq!(kept, 8, "seqs 5, 10, 15 and 20 of each");
    for (history, snapshots) in [(&one, &snapshots_one), (&two, &snapshots_two)] {
        for seq in [12, 20] {
            let jumped = snapshots.state_at(history, seq, &mut |_, _| {}).unwrap();
            let folded = agentlog_replay::state_at(history, seq, &mut |_, _| {}).unwrap();
            assert_eq!(hashes(&jumped), hashes(&folded));
        }
    }
    assert_ne!(hashes(&folded), hashes(&agentlog_replay::state_at(&one, 20, &mut |_, _| {}).unwrap()));
}
