//! The world model on crafted event sequences: what it shows, and each kind
//! of consistency violation detected with the sequence that caused it.
use std::collections::BTreeMap;

use agentlog_core::schema::{
    ActionRecorded, AgentRegistered, BudgetAllocated, BudgetDebited, SessionClosed, SessionExpired, SessionOpened,
    TaskClaimed, TaskCompleted, TaskCreated, TaskFailed, TaskLeaseExpired,
};
use agentlog_core::{Body, Envelope};
use agentlog_projections::query::{self, Page, Query};
use agentlog_projections::world::{SessionStatus, TaskStatus, ViolationKind};
use agentlog_projections::{Projection, Views, WorldModel, state_hash};

/// Events with consecutive seqs and per-stream versions, one second apart.
#[derive(Default)]
struct Log {
    events: Vec<Envelope>,
    versions: BTreeMap<String, u64>,
}

impl Log {
    fn push(&mut self, stream: &str, body: Body) -> u64 {
        let version = self.versions.entry(stream.to_owned()).or_default();
        *version += 1;
        let seq = self.events.len() as u64 + 1;
        self.events.push(Envelope {
            seq,
            stream: stream.to_owned(),
            stream_version: *version,
            ts: seq * 1_000_000_000,
            body: Some(body),
            ..Envelope::default()
        });
        seq
    }

    fn fold(&self) -> WorldModel {
        let mut world = WorldModel::default();
        for event in &self.events {
            world.apply(event);
        }
        world
    }

    fn agent(&mut self, agent: &str, capabilities: &[&str]) {
        let capabilities = capabilities.iter().map(|c| c.to_string()).collect();
        self.push(
            &format!("agent/{agent}"),
            Body::AgentRegistered(AgentRegistered { agent_id: agent.into(), name: String::new(), capabilities }),
        );
    }

    fn session(&mut self, session: &str, agent: &str) {
        self.push(
            &format!("session/{session}"),
            Body::SessionOpened(SessionOpened {
                session_id: session.into(),
                agent_id: agent.into(),
                heartbeat_timeout_ms: 60_000,
            }),
        );
    }

    fn task(&mut self, task: &str, priority: i32, dependencies: &[&str]) {
        self.push(
            &format!("task/{task}"),
            Body::TaskCreated(TaskCreated {
                task_id: task.into(),
                priority,
                dependencies: dependencies.iter().map(|d| d.to_string()).collect(),
                max_attempts: 3,
                ..TaskCreated::default()
            }),
        );
    }

    fn claim(&mut self, task: &str, agent: &str, session: &str) -> u64 {
        self.push(
            &format!("task/{task}"),
            Body::TaskClaimed(TaskClaimed {
                task_id: task.into(),
                agent_id: agent.into(),
                session_id: session.into(),
                attempt: 1,
                lease_until_ts: u64::MAX,
            }),
        )
    }

    fn complete(&mut self, task: &str, agent: &str, session: &str) -> u64 {
        self.push(
            &format!("task/{task}"),
            Body::TaskCompleted(TaskCompleted {
                task_id: task.into(),
                agent_id: agent.into(),
                session_id: session.into(),
                result: String::new(),
            }),
        )
    }
}

fn kinds(world: &WorldModel) -> Vec<(u64, ViolationKind)> {
    world.violations().map(|v| (v.seq, v.kind)).collect()
}

#[test]
fn a_clean_history_has_no_violations_and_shows_the_world() {
    let mut log = Log::default();
    log.agent("a1", &["code"]);
    log.session("s1", "a1");
    log.task("t1", 1, &[]);
    log.task("t2", 5, &["t1"]);
    log.task("t3", 9, &[]);
    let world = log.fold();
    let ready: Vec<String> = world.ready().map(|t| t.task_id.clone()).collect();
    assert_eq!(ready, ["t3", "t1"], "by priority; t2 waits for t1");

    log.claim("t1", "a1", "s1");
    let world = log.fold();
    assert_eq!(world.agent("a1").unwrap().load, 1);
    assert_eq!(world.agent("a1").unwrap().status(), "working");
    assert!(world.session("s1").unwrap().claims.contains("t1"));
    assert_eq!(world.ready().map(|t| t.task_id.clone()).collect::<Vec<_>>(), ["t3"]);

    log.complete("t1", "a1", "s1");
    log.push(
        "budget/b1",
        Body::BudgetAllocated(BudgetAllocated { budget_id: "b1".into(), amount: 100, balance_after: 100 }),
    );
    log.push(
        "budget/b1",
        Body::BudgetDebited(BudgetDebited {
            budget_id: "b1".into(),
            amount: 30,
            balance_after: 70,
            session_id: "s1".into(),
            ..BudgetDebited::default()
        }),
    );
    log.push("session/s1", Body::SessionClosed(SessionClosed { session_id: "s1".into(), reason: String::new() }));
    let world = log.fold();
    assert_eq!(world.task("t1").unwrap().status, TaskStatus::Completed);
    assert_eq!(world.ready().map(|t| t.task_id.clone()).collect::<Vec<_>>(), ["t3", "t2"], "t2's dependency is done");
    assert_eq!(world.agent("a1").unwrap().load, 0);
    assert_eq!(world.agent("a1").unwrap().status(), "offline");
    assert_eq!(world.session("s1").unwrap().status, SessionStatus::Closed);
    let budget = world.budget("b1").unwrap();
    assert_eq!((budget.allocated, budget.spent, budget.remaining), (100, 30, 70));
    assert_eq!(kinds(&world), []);
    assert_eq!(state_hash(&world), state_hash(&log.fold()), "the same events, the same state hash");
}

#[test]
fn a_completion_by_an_agent_that_does_not_hold_the_claim() {
    let mut log = Log::default();
    log.session("s1", "a1");
    log.session("s2", "a2");
    log.task("t1", 0, &[]);
    log.claim("t1", "a1", "s1");
    let bad = log.complete("t1", "a2", "s2");
    let world = log.fold();
    assert_eq!(kinds(&world), [(bad, ViolationKind::FinishedByNonHolder)]);
    assert_eq!(world.task("t1").unwrap().status, TaskStatus::Claimed, "the bogus completion changes nothing");
    let failed = log.push(
        "task/t1",
        Body::TaskFailed(TaskFailed {
            task_id: "t1".into(),
            agent_id: "a1".into(),
            session_id: "s2".into(),
            ..TaskFailed::default()
        }),
    );
    assert_eq!(kinds(&log.fold())[1], (failed, ViolationKind::FinishedByNonHolder), "right agent, wrong session");
}

#[test]
fn an_action_in_a_closed_session() {
    let mut log = Log::default();
    log.session("s1", "a1");
    let action = |session: &str| {
        Body::ActionRecorded(ActionRecorded {
            agent_id: "a1".into(),
            session_id: session.into(),
            ..ActionRecorded::default()
        })
    };
    log.push("agent/a1", action("s1"));
    log.push("session/s1", Body::SessionClosed(SessionClosed { session_id: "s1".into(), reason: String::new() }));
    let closed = log.push("agent/a1", action("s1"));
    let unknown = log.push("agent/a1", action("s9"));
    let world = log.fold();
    assert_eq!(
        kinds(&world),
        [(closed, ViolationKind::ActionOutsideLiveSession), (unknown, ViolationKind::ActionOutsideLiveSession)]
    );
    let first = world.violations().next().unwrap();
    assert!(first.detail.contains("closed"), "{first:?}");
}

#[test]
fn a_debit_with_no_session() {
    let mut log = Log::default();
    log.session("s1", "a1");
    let debit = |session: &str, amount: u64, after: u64| {
        Body::BudgetDebited(BudgetDebited {
            budget_id: "b1".into(),
            amount,
            balance_after: after,
            session_id: session.into(),
            ..BudgetDebited::default()
        })
    };
    log.push(
        "budget/b1",
        Body::BudgetAllocated(BudgetAllocated { budget_id: "b1".into(), amount: 50, balance_after: 50 }),
    );
    log.push("budget/b1", debit("s1", 10, 40));
    let none = log.push("budget/b1", debit("", 10, 30));
    let unknown = log.push("budget/b1", debit("s7", 10, 20));
    let world = log.fold();
    assert_eq!(
        kinds(&world),
        [(none, ViolationKind::DebitWithoutSession), (unknown, ViolationKind::DebitWithoutSession)]
    );
    assert_eq!(world.budget("b1").unwrap().remaining, 20);
}

#[test]
fn time_going_back_on_one_stream_but_not_across_streams() {
    let mut log = Log::default();
    log.task("t1", 0, &[]);
    log.task("t2", 0, &[]);
    // Another stream earlier in time: two nodes' clocks may interleave.
    log.events[1].ts = log.events[0].ts - 500;
    log.claim("t1", "a1", "s1");
    let back = log.claim("t1", "a1", "s1");
    log.events[back as usize - 1].ts = log.events[0].ts - 1;
    let world = log.fold();
    let broken: Vec<_> = kinds(&world).into_iter().filter(|(_, k)| *k == ViolationKind::TimeWentBack).collect();
    assert_eq!(broken, [(back, ViolationKind::TimeWentBack)]);
    let violation = world.violations().find(|v| v.kind == ViolationKind::TimeWentBack).unwrap();
    assert!(violation.detail.contains("ns before the latest on stream task/t1"), "{violation:?}");
}

#[test]
fn an_event_sent_in_a_session_that_ended() {
    let session = "0190b5a8-1c2d-7000-8000-00000000beef";
    let bytes = uuid::Uuid::parse_str(session).unwrap().as_bytes().to_vec();
    let mut log = Log::default();
    log.session(session, "a1");
    log.task("t1", 0, &[]);
    let live = log.claim("t1", "a1", session);
    log.events[live as usize - 1].session_id = bytes.clone();
    log.push(
        &format!("session/{session}"),
        Body::SessionClosed(SessionClosed { session_id: session.into(), reason: String::new() }),
    );
    let after = log.complete("t1", "a1", session);
    log.events[after as usize - 1].session_id = bytes;
    let world = log.fold();
    let broken: Vec<_> = kinds(&world).into_iter().filter(|(_, k)| *k == ViolationKind::AfterSessionEnd).collect();
    assert_eq!(broken, [(after, ViolationKind::AfterSessionEnd)]);
    let violation = world.violations().find(|v| v.kind == ViolationKind::AfterSessionEnd).unwrap();
    assert!(violation.detail.contains(&format!("sent in session {session}, which had closed")), "{violation:?}");
}

#[test]
fn a_version_gap() {
    let mut log = Log::default();
    log.task("t1", 0, &[]);
    log.task("t2", 0, &[]);
    let mut skipped = log.events[1].clone();
    skipped.seq = 3;
    skipped.stream_version = 3; // task/t2 jumps from version 1 to 3
    skipped.body =
        Some(Body::TaskLeaseExpired(TaskLeaseExpired { task_id: "t2".into(), ..TaskLeaseExpired::default() }));
    log.events.push(skipped);
    let world = log.fold();
    assert_eq!(kinds(&world), [(3, ViolationKind::VersionGap)]);
    assert_eq!(world.violations().next().unwrap().stream, "task/t2");
}

#[test]
fn a_claim_of_a_claimed_task_and_a_claim_in_a_dead_session() {
    let mut log = Log::default();
    log.session("s1", "a1");
    log.session("s2", "a2");
    log.task("t1", 0, &[]);
    log.task("t2", 0, &[]);
    log.claim("t1", "a1", "s1");
    let double = log.claim("t1", "a2", "s2");
    log.push("session/s2", Body::SessionClosed(SessionClosed { session_id: "s2".into(), reason: String::new() }));
    let dead = log.claim("t2", "a2", "s2");
    let world = log.fold();
    assert_eq!(kinds(&world), [(double, ViolationKind::ClaimNotOpen), (dead, ViolationKind::ClaimInDeadSession)]);
    assert_eq!(world.agent("a1").unwrap().load, 0, "the overridden holder's claim is gone");
}

#[test]
fn a_balance_that_contradicts_the_events_before_it() {
    let mut log = Log::default();
    log.push(
        "budget/b1",
        Body::BudgetAllocated(BudgetAllocated { budget_id: "b1".into(), amount: 50, balance_after: 50 }),
    );
    let bad = log.push(
        "budget/b1",
        Body::BudgetAllocated(BudgetAllocated { budget_id: "b1".into(), amount: 10, balance_after: 70 }),
    );
    let world = log.fold();
    assert_eq!(kinds(&world), [(bad, ViolationKind::BalanceMismatch)]);
}

#[test]
fn a_lease_or_session_expired_before_its_time_is_flagged_and_one_expired_after_it_is_not() {
    let mut log = Log::default();
    let expire_lease =
        |task: &str| Body::TaskLeaseExpired(TaskLeaseExpired { task_id: task.into(), ..TaskLeaseExpired::default() });
    let expire_session = |session: &str| {
        Body::SessionExpired(SessionExpired { session_id: session.into(), ..SessionExpired::default() })
    };
    // Events are a second apart; sessions time out after 60 s; leases never end.
    log.session("s1", "a1");
    log.task("t1", 0, &[]);
    log.claim("t1", "a1", "s1");
    let lease_early = log.push("task/t1", expire_lease("t1"));
    log.session("s2", "a2");
    let session_early = log.push("session/s2", expire_session("s2"));
    // s3 falls silent: past its deadline, both expiries are due.
    log.session("s3", "a3");
    log.task("t2", 0, &[]);
    log.claim("t2", "a3", "s3");
    for n in 0..70 {
        log.agent(&format!("filler-{n}"), &[]);
    }
    log.push("task/t2", expire_lease("t2"));
    log.push("session/s3", expire_session("s3"));
    let world = log.fold();
    assert_eq!(
        kinds(&world),
        [(lease_early, ViolationKind::ExpiredEarly), (session_early, ViolationKind::ExpiredEarly)]
    );
}

#[test]
fn a_debit_beyond_what_is_left_is_flagged_as_it_arrives() {
    // The case: 10 allocated, 57 debited straight onto the stream.
    let mut log = Log::default();
    log.session("s1", "a1");
    log.push(
        "budget/b1",
        Body::BudgetAllocated(BudgetAllocated { budget_id: "b1".into(), amount: 10, balance_after: 10 }),
    );
    let overdraw = log.push(
        "budget/b1",
        Body::BudgetDebited(BudgetDebited {
            budget_id: "b1".into(),
            amount: 57,
            balance_after: 0,
            agent_id: "a1".into(),
            session_id: "s1".into(),
            ..BudgetDebited::default()
        }),
    );
    let world = log.fold();
    assert_eq!(kinds(&world), [(overdraw, ViolationKind::Overdrawn)]);
    let violation = world.violations().next().unwrap().into_owned();
    assert!(violation.detail.contains("with 10 left: it went 47 below zero"), "{}", violation.detail);
    let budget = world.budget("b1").unwrap();
    assert_eq!((budget.remaining, budget.spent), (0, 57));
}

/// Every page of `name` from the start, following `next`, with `limit` rows
/// each: the rows in order, and how many pages it took.
fn all_pages(views: &Views, name: &str, state: Option<&str>, limit: usize) -> (Vec<serde_json::Value>, usize) {
    let (mut rows, mut pages, mut after) = (Vec::new(), 0, None);
    loop {
        let page = Page { limit: Some(limit), after: after.clone(), state: state.map(str::to_owned) };
        let answer = query::answer(views, &Query::parse(name, None, page).unwrap()).unwrap();
        let got = answer.result.as_array().unwrap().clone();
        assert!(got.len() <= limit, "a page holds at most its limit");
        pages += 1;
        rows.extend(got);
        match answer.next {
            Some(next) => after = Some(next),
            None => return (rows, pages),
        }
        assert!(pages <= 1_000, "paging ends");
    }
}

#[test]
fn collections_are_answered_a_page_at_a_time_and_the_pages_add_up_to_the_whole() {
    let mut log = Log::default();
    log.agent("a1", &["code"]);
    log.session("s1", "a1");
    for i in 0..57 {
        log.task(&format!("t{i:03}"), i % 7, if i % 5 == 4 { &["t000"] } else { &[] });
    }
    for i in 0..9 {
        log.claim(&format!("t{i:03}"), "a1", "s1");
    }
    // Debits without a session from a budget with nothing in it: two
    // violations each (no session, overdrawn).
    for _ in 0..23 {
        log.push(
            "budget/b1",
            Body::BudgetDebited(BudgetDebited { budget_id: "b1".into(), amount: 1, ..BudgetDebited::default() }),
        );
    }
    // Claims of claimed tasks through a session never opened: two
    // violations each, so a page of 5 ends between an event's two.
    for i in 0..3 {
        log.claim(&format!("t{i:03}"), "a1", "s9");
    }
    let views = Views::default();
    views.apply(&log.events);
    let world = views.world();
    let ids = |rows: &[serde_json::Value], key: &str| -> Vec<String> {
        rows.iter().map(|r| r[key].as_str().unwrap().to_owned()).collect()
    };

    let (tasks, pages) = all_pages(&views, "tasks", None, 10);
    assert_eq!(ids(&tasks, "task_id"), world.state.tasks().map(|t| t.task_id.clone()).collect::<Vec<_>>());
    assert_eq!(pages, 6, "57 tasks, 10 a page");

    let (claimed, _) = all_pages(&views, "tasks", Some("claimed"), 4);
    assert_eq!(claimed.len(), 9);
    assert!(claimed.iter().all(|t| t["status"] == "claimed"));
    // Each state's pages (read from the status index) are the tasks a
    // scan of every task finds in it.
    for state in ["open", "claimed", "completed", "failed"] {
        let (rows, _) = all_pages(&views, "tasks", Some(state), 4);
        let scanned: Vec<String> = world
            .state
            .tasks()
            .filter(|t| serde_json::to_value(t.status).unwrap() == state)
            .map(|t| t.task_id.clone())
            .collect();
        assert_eq!(ids(&rows, "task_id"), scanned, "{state}");
    }

    let ready_order: Vec<String> = world.state.ready().map(|t| t.task_id.clone()).collect();
    assert!(ready_order.len() > 20, "{}", ready_order.len());
    let (ready, _) = all_pages(&views, "ready", None, 7);
    assert_eq!(ids(&ready, "task_id"), ready_order, "the ready queue, best first, page after page");
    let (ready_state, _) = all_pages(&views, "tasks", Some("ready"), 5);
    assert_eq!(ids(&ready_state, "task_id"), ready_order);

    let (violations, _) = all_pages(&views, "violations", None, 5);
    let rows: Vec<(u64, String)> =
        violations.iter().map(|v| (v["seq"].as_u64().unwrap(), v["kind"].as_str().unwrap().to_owned())).collect();
    let all: Vec<(u64, String)> = world
        .state
        .violations()
        .map(|v| (v.seq, serde_json::to_value(v.kind).unwrap().as_str().unwrap().to_owned()))
        .collect();
    assert_eq!(rows, all);
    assert_eq!(rows.len(), 23 * 2 + 3 * 2);

    // A page ends with `next` only when it is full.
    let one = query::answer(&views, &Query::parse("agents", None, Page::default()).unwrap()).unwrap();
    assert_eq!(one.result.as_array().unwrap().len(), 1);
    assert_eq!(one.next, None);
    // A limit is bounded, and a state only filters tasks.
    let big = Page { limit: Some(1_000_000), ..Page::default() };
    let answer = query::answer(&views, &Query::parse("tasks", None, big).unwrap()).unwrap();
    assert_eq!(answer.result.as_array().unwrap().len(), 57);
    let wrong = Page { state: Some("open".into()), ..Page::default() };
    assert!(Query::parse("sessions", None, wrong).is_err());
    let unknown = Page { state: Some("done".into()), ..Page::default() };
    assert!(Query::parse("tasks", None, unknown).is_err());
}
