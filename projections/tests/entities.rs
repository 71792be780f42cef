//! Views kept per entity in the projection store, on seeded random
//! workloads: every event kind, ids drawn from small pools (so claims race,
//! tasks depend on each other, sessions die under their claims), and now and
//! then a stream version skipped or a balance misstated (so violations
//! appear). Checkpoints fall at random points, and now and then the views
//! are read back from the store and folding goes on from there. After every
//! checkpoint the incremental state hash equals the one computed from
//! scratch; at the end the checkpointed views equal a rebuild from seq 1,
//! hash and every entity. With a cache of a few entities, those evicted
//! from memory read back from the store identical.
use std::collections::BTreeMap;

use agentlog_core::schema::{
    ActionRecorded, AgentRegistered, BudgetAllocated, BudgetCircuitClosed, BudgetCircuitOpened, BudgetDebitRefused,
    BudgetDebited, BudgetRefunded, SessionClosed, SessionExpired, SessionHeartbeat, SessionOpened, TaskClaimed,
    TaskCompleted, TaskCreated, TaskFailed, TaskLeaseExpired, TaskReleased,
};
use agentlog_core::{Body, Envelope};
use agentlog_projections::{
    Live, Projection, ProjectionStore, Reputation, Runner, Views, WorldModel, state_hash, state_hash_from_scratch,
};

/// A small seeded generator (splitmix64): the same seed, the same workload.
struct Draw(u64);

impl Draw {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn id(&mut self, prefix: &str, pool: u64) -> String {
        format!("{prefix}{}", self.below(pool))
    }

    fn one_in(&mut self, n: u64) -> bool {
        self.below(n) == 0
    }
}

/// `events` random events with consecutive seqs.
fn workload(seed: u64, events: usize) -> Vec<Envelope> {
    let mut draw = Draw(seed);
    let mut versions: BTreeMap<String, u64> = BTreeMap::new();
    let mut out = Vec::with_capacity(events);
    let mut ts = 1_700_000_000_000_000_000u64;
    let caps = |draw: &mut Draw| (0..draw.below(3)).map(|_| draw.id("c", 4)).collect::<Vec<_>>();
    for seq in 1..=events as u64 {
        ts += draw.below(120) * 1_000_000_000;
        let (task, agent, session, budget) = (draw.id("t", 60), draw.id("a", 6), draw.id("s", 12), draw.id("b", 3));
        let amount = draw.below(50);
        let body = match draw.below(18) {
            0 => Body::AgentRegistered(AgentRegistered {
                agent_id: agent,
                name: "n".into(),
                capabilities: caps(&mut draw),
            }),
            1 => Body::SessionOpened(SessionOpened {
                session_id: session,
                agent_id: agent,
                heartbeat_timeout_ms: 60_000,
            }),
            2 => Body::SessionHeartbeat(SessionHeartbeat { session_id: session }),
            3 => Body::SessionClosed(SessionClosed { session_id: session, reason: String::new() }),
            4 => Body::SessionExpired(SessionExpired { session_id: session, ..Default::default() }),
            5 | 6 => {
                let dependencies = (0..draw.below(2)).map(|_| draw.id("t", 60)).collect();
                Body::TaskCreated(TaskCreated {
                    task_id: task,
                    title: "x".into(),
                    priority: i32::try_from(draw.below(5)).unwrap(),
                    max_attempts: 3,
                    required_capabilities: caps(&mut draw),
                    dependencies,
                })
            }
            7 | 8 => Body::TaskClaimed(TaskClaimed {
                task_id: task,
                agent_id: agent,
                session_id: session,
                attempt: u32::try_from(draw.below(3)).unwrap() + 1,
                lease_until_ts: ts + draw.below(600) * 1_000_000_000,
            }),
            9 => Body::TaskReleased(TaskReleased {
                task_id: task,
                agent_id: agent,
                session_id: session,
                ..Default::default()
            }),
            10 => Body::TaskLeaseExpired(TaskLeaseExpired { task_id: task, agent_id: agent, ..Default::default() }),
            11 | 12 => Body::TaskCompleted(TaskCompleted {
                task_id: task,
                agent_id: agent,
                session_id: session,
                ..Default::default()
            }),
            13 => Body::TaskFailed(TaskFailed {
                task_id: task,
                agent_id: agent,
                session_id: session,
                terminal: draw.one_in(2),
                ..Default::default()
            }),
            14 => Body::BudgetAllocated(BudgetAllocated { budget_id: budget, amount, balance_after: draw.below(200) }),
            15 => Body::BudgetDebited(BudgetDebited {
                budget_id: budget,
                amount,
                agent_id: agent,
                session_id: if draw.one_in(4) { String::new() } else { session },
                task_id: task,
                balance_after: draw.below(200),
                ..Default::default()
            }),
            16 => match draw.below(4) {
                0 => Body::BudgetRefunded(BudgetRefunded { budget_id: budget, amount, ..Default::default() }),
                1 => Body::BudgetDebitRefused(BudgetDebitRefused { budget_id: budget, ..Default::default() }),
                2 => Body::BudgetCircuitOpened(BudgetCircuitOpened {
                    budget_id: budget,
                    open_until_ts: ts,
                    ..Default::default()
                }),
                _ => Body::BudgetCircuitClosed(BudgetCircuitClosed { budget_id: budget }),
            },
            _ => Body::ActionRecorded(ActionRecorded {
                agent_id: agent,
                session_id: session,
                task_id: task,
                cost: amount,
                ..Default::default()
            }),
        };
        let stream = match &body {
            Body::AgentRegistered(e) => format!("agent/{}", e.agent_id),
            Body::ActionRecorded(e) => format!("agent/{}", e.agent_id),
            Body::SessionOpened(e) => format!("session/{}", e.session_id),
            Body::SessionHeartbeat(e) => format!("session/{}", e.session_id),
            Body::SessionClosed(e) => format!("session/{}", e.session_id),
            Body::SessionExpired(e) => format!("session/{}", e.session_id),
            Body::BudgetAllocated(e) => format!("budget/{}", e.budget_id),
            Body::BudgetDebited(e) => format!("budget/{}", e.budget_id),
            Body::BudgetRefunded(e) => format!("budget/{}", e.budget_id),
            Body::BudgetDebitRefused(e) => format!("budget/{}", e.budget_id),
            Body::BudgetCircuitOpened(e) => format!("budget/{}", e.budget_id),
            Body::BudgetCircuitClosed(e) => format!("budget/{}", e.budget_id),
            _ => "task/any".to_owned(),
        };
        let version = versions.entry(stream.clone()).or_default();
        *version += if draw.one_in(40) { 2 } else { 1 };
        let hash = seq.to_le_bytes().to_vec();
        out.push(Envelope { seq, ts, stream, stream_version: *version, body: Some(body), hash, ..Default::default() });
    }
    out
}

/// The stored indexes answer what a scan of every task answers.
fn indexes_agree_with_a_scan(world: &WorldModel, what: &str) {
    use agentlog_projections::world::TaskStatus;
    let tasks: Vec<_> = world.tasks().map(std::borrow::Cow::into_owned).collect();
    for status in [TaskStatus::Open, TaskStatus::Claimed, TaskStatus::Completed, TaskStatus::Failed] {
        let indexed: Vec<String> = world.tasks_in_status_after(status, None).map(|t| t.task_id.clone()).collect();
        let scanned: Vec<String> = tasks.iter().filter(|t| t.status == status).map(|t| t.task_id.clone()).collect();
        assert_eq!(indexed, scanned, "tasks {status:?}: {what}");
    }
    let completed = |id: &String| tasks.iter().any(|t| &t.task_id == id && t.status == TaskStatus::Completed);
    let mut ready: Vec<_> = tasks
        .iter()
        .filter(|t| t.status == TaskStatus::Open && t.dependencies.iter().all(completed))
        .map(|t| (-i64::from(t.priority), t.created_seq, t.task_id.clone()))
        .collect();
    ready.sort();
    let ready: Vec<String> = ready.into_iter().map(|(_, _, id)| id).collect();
    let indexed: Vec<String> = world.ready().map(|t| t.task_id.clone()).collect();
    assert_eq!(indexed, ready, "the ready queue: {what}");
}

fn checked_hash<P: Projection>(live: &Live<P>, seed: u64, at: u64) -> [u8; 32] {
    let hash = state_hash(&live.state);
    assert_eq!(hash, state_hash_from_scratch(&live.state), "{}: seed {seed}, seq {at}", P::NAME);
    hash
}

#[test]
fn checkpointed_views_equal_a_rebuild_entity_by_entity_and_their_hash_is_the_one_from_scratch() {
    let (mut checkpoints, mut reloads, mut violations) = (0, 0, 0);
    for seed in 0..24u64 {
        let events = workload(seed, 3_000);
        let dir = tempfile::tempdir().unwrap();
        let store = ProjectionStore::open(dir.path()).unwrap();
        let mut draw = Draw(seed ^ 0x5eed);
        let (mut world, mut reputation) = (Live::<WorldModel>::new(), Live::<Reputation>::new());
        for event in &events {
            world.apply(event);
            reputation.apply(event);
            if draw.one_in(150) {
                store.save(&mut [&mut world, &mut reputation]).unwrap();
                checkpoints += 1;
                checked_hash(&world, seed, event.seq);
                checked_hash(&reputation, seed, event.seq);
                if draw.one_in(3) {
                    // Read back and fold on from the store's copy.
                    let (w, r): (Live<WorldModel>, Live<Reputation>) = (store.load().unwrap(), store.load().unwrap());
                    assert_eq!(w.state, world.state, "world read back: seed {seed}, seq {}", event.seq);
                    assert_eq!(r.state, reputation.state, "reputation read back: seed {seed}, seq {}", event.seq);
                    assert_eq!((w.position, r.position), (event.seq, event.seq));
                    (world, reputation) = (w, r);
                    reloads += 1;
                }
            }
        }
        store.save(&mut [&mut world, &mut reputation]).unwrap();
        let (mut fresh_world, mut fresh_reputation) = (Live::<WorldModel>::new(), Live::<Reputation>::new());
        for event in &events {
            fresh_world.apply(event);
            fresh_reputation.apply(event);
        }
        let end = events.len() as u64;
        assert_eq!(checked_hash(&world, seed, end), checked_hash(&fresh_world, seed, end), "seed {seed}");
        assert_eq!(checked_hash(&reputation, seed, end), checked_hash(&fresh_reputation, seed, end), "seed {seed}");
        assert_eq!(world.state, fresh_world.state, "seed {seed}");
        assert_eq!(reputation.state, fresh_reputation.state, "seed {seed}");
        // What the store holds is the rebuild, entity by entity, and the
        // indexes rebuilt from it are the ones the fold kept.
        let saved: Live<WorldModel> = store.load().unwrap();
        assert_eq!(saved.state, fresh_world.state, "seed {seed}");
        let saved: Live<Reputation> = store.load().unwrap();
        assert_eq!(saved.state, fresh_reputation.state, "seed {seed}");
        indexes_agree_with_a_scan(&world.state, &format!("seed {seed}"));
        violations += fresh_world.state.violations().count();
    }
    // The workloads reached what they are for.
    assert!(checkpoints > 300 && reloads > 80, "{checkpoints} checkpoints, {reloads} reloads");
    assert!(violations > 1_000, "{violations} violations");
}

#[test]
fn a_rebuilt_projection_replaces_every_entity_it_had_in_the_store() {
    let events = workload(99, 2_000);
    let dir = tempfile::tempdir().unwrap();
    let store = ProjectionStore::open(dir.path()).unwrap();
    let mut reputation = Live::<Reputation>::new();
    for event in &events {
        reputation.apply(event);
    }
    store.save(&mut [&mut reputation]).unwrap();
    // Folded again from nothing to an earlier seq: tasks it had finished
    // by the end are unfinished again, and others it knew are unknown.
    reputation.reset();
    for event in &events[..500] {
        reputation.apply(event);
    }
    store.save(&mut [&mut reputation]).unwrap();
    let loaded: Live<Reputation> = store.load().unwrap();
    assert_eq!(loaded.position, 500);
    assert_eq!(loaded.state, reputation.state);
    assert_eq!(state_hash(&loaded.state), state_hash_from_scratch(&reputation.state));
}

#[test]
fn with_a_cache_of_four_entities_the_evicted_ones_read_back_from_the_store_identical() {
    const CACHE: usize = 4;
    let (mut checks, mut read_back) = (0, 0);
    for seed in 0..12u64 {
        let events = workload(seed, 3_000);
        let dir = tempfile::tempdir().unwrap();
        let store = ProjectionStore::open(dir.path()).unwrap().with_cache_entities(CACHE);
        let views = Views::default();
        let (mut world, mut reputation) = (Live::<WorldModel>::new(), Live::<Reputation>::new());
        let mut draw = Draw(seed ^ 0xcac4e);
        for event in &events {
            views.apply(std::slice::from_ref(event));
            world.apply(event);
            reputation.apply(event);
            // Checked right after a save (memory then holds no changes)
            // and between saves (changed and removed entities in memory
            // over older copies in the store).
            let save = draw.one_in(100);
            if !save && !draw.one_in(50) {
                continue;
            }
            let at = event.seq;
            if save {
                views.save(&store).unwrap();
                // Memory holds the cache's worth of each family, no more.
                for (view, kind, resident) in views.resident() {
                    assert!(resident <= CACHE, "{view}/{kind}: {resident} in memory, seed {seed}, seq {at}");
                }
            }
            checks += 1;
            let (w, r) = (views.world(), views.reputation());
            assert_eq!(checked_hash(&w, seed, at), checked_hash(&world, seed, at), "seed {seed}, seq {at}");
            assert_eq!(checked_hash(&r, seed, at), checked_hash(&reputation, seed, at), "seed {seed}, seq {at}");
            // Every entity, most of them read from the store.
            for task in world.state.tasks() {
                assert_eq!(w.state.task(&task.task_id).as_deref(), Some(&*task), "seed {seed}, seq {at}");
                read_back += 1;
            }
            assert_eq!(w.state, world.state, "world: seed {seed}, seq {at}");
            indexes_agree_with_a_scan(&w.state, &format!("seed {seed}, seq {at}"));
            assert_eq!(r.state, reputation.state, "reputation: seed {seed}, seq {at}");
            if save {
                // And read back whole from the store alone.
                let loaded: Live<WorldModel> = store.load().unwrap();
                assert_eq!(loaded.state, world.state, "world loaded: seed {seed}, seq {at}");
            }
        }
    }
    assert!(checks > 1_000 && read_back > 30_000, "{checks} checks, {read_back} tasks read back");
}
