//! The pure decide functions, driven by data: fold a history of events into
//! state, decide one command at an instant, compare with what is expected.
use std::collections::BTreeMap;
use std::time::Duration;

use agentlog_commands::aggregate::{
    self, Agent, Budget, Decision, Policy, Session, Task, agent, budget, session, task,
};
use agentlog_commands::{ActionKind, ActionOutcome, Code};
use agentlog_core::schema::*;
use agentlog_core::{Body, Envelope, Timestamp};

const T0: Timestamp = Timestamp::from_nanos(1_767_225_600 * 1_000_000_000);

fn at(seconds: u64) -> Timestamp {
    T0.plus(Duration::from_secs(seconds))
}

fn event(ts: Timestamp, body: Body) -> Envelope {
    Envelope { ts: ts.as_nanos(), body: Some(body), ..Envelope::default() }
}

fn fold<S: Default>(history: &[(u64, Body)], apply: fn(&mut S, &Envelope)) -> S {
    let mut state = S::default();
    for (seconds, body) in history {
        apply(&mut state, &event(at(*seconds), body.clone()));
    }
    state
}

fn types(decision: &Decision) -> Vec<&'static str> {
    decision.as_ref().map(|events| events.iter().map(Body::type_name).collect()).unwrap_or_default()
}

fn code(decision: &Decision) -> Option<Code> {
    decision.as_ref().err().map(|r| r.rejection.code)
}

fn live_session(agent: &str) -> Session {
    fold(
        &[(
            0,
            Body::SessionOpened(SessionOpened {
                session_id: "s".into(),
                agent_id: agent.into(),
                heartbeat_timeout_ms: 60_000,
            }),
        )],
        Session::apply,
    )
}

fn coder() -> Agent {
    fold(
        &[(
            0,
            Body::AgentRegistered(AgentRegistered {
                agent_id: "a".into(),
                name: String::new(),
                capabilities: vec!["code".into(), "sql".into()],
            }),
        )],
        Agent::apply,
    )
}

fn created(deps: &[&str], caps: &[&str], max_attempts: u32) -> Body {
    Body::TaskCreated(TaskCreated {
        task_id: "t".into(),
        title: String::new(),
        priority: 1,
        required_capabilities: caps.iter().map(|c| c.to_string()).collect(),
        dependencies: deps.iter().map(|d| d.to_string()).collect(),
        max_attempts,
    })
}

fn claimed(agent: &str, lease_until: Timestamp) -> Body {
    Body::TaskClaimed(TaskClaimed {
        task_id: "t".into(),
        agent_id: agent.into(),
        session_id: "s".into(),
        attempt: 1,
        lease_until_ts: lease_until.as_nanos(),
    })
}

fn task_with(history: &[(u64, Body)]) -> Task {
    fold(history, Task::apply)
}

fn claim(state: &Task, deps: &BTreeMap<String, Task>, session: &Session, agent: &Agent, now: Timestamp) -> Decision {
    task::claim(
        state,
        task::Claim { task_id: "t", agent_id: "a", session_id: "s", lease_ms: 60_000 },
        deps,
        session,
        agent,
        now,
    )
}

#[test]
fn claims_follow_every_rule() {
    let open = task_with(&[(0, created(&[], &["code"], 3))]);
    let none = BTreeMap::new();
    let (s, a) = (live_session("a"), coder());
    assert_eq!(types(&claim(&open, &none, &s, &a, at(10))), ["task_claimed"]);

    let held = task_with(&[(0, created(&[], &["code"], 3)), (1, claimed("b", at(100)))]);
    assert_eq!(code(&claim(&held, &none, &s, &a, at(10))), Some(Code::AlreadyClaimed));
    assert_eq!(code(&claim(&Task::default(), &none, &s, &a, at(10))), Some(Code::NotFound));

    let needs_vision = task_with(&[(0, created(&[], &["code", "vision"], 3))]);
    let missing = claim(&needs_vision, &none, &s, &a, at(10));
    assert_eq!(code(&missing), Some(Code::MissingCapabilities));
    assert!(missing.unwrap_err().rejection.message.contains("vision"));

    // The session must be live (heartbeat within its timeout) and the agent's own.
    assert_eq!(code(&claim(&open, &none, &s, &a, at(61))), Some(Code::SessionNotLive));
    assert_eq!(code(&claim(&open, &none, &live_session("b"), &a, at(10))), Some(Code::SessionMismatch));
    let closed = fold(
        &[
            (
                0,
                Body::SessionOpened(SessionOpened {
                    session_id: "s".into(),
                    agent_id: "a".into(),
                    heartbeat_timeout_ms: 60_000,
                }),
            ),
            (5, Body::SessionClosed(SessionClosed { session_id: "s".into(), reason: String::new() })),
        ],
        Session::apply,
    );
    assert_eq!(code(&claim(&open, &none, &closed, &a, at(10))), Some(Code::SessionNotLive));

    // Dependencies must all be completed.
    let dependent = task_with(&[(0, created(&["d1", "d2"], &[], 3))]);
    let done = task_with(&[
        (0, created(&[], &[], 3)),
        (1, claimed("x", at(99))),
        (2, Body::TaskCompleted(TaskCompleted::default())),
    ]);
    let mut deps = BTreeMap::from([("d1".to_owned(), done.clone()), ("d2".to_owned(), open.clone())]);
    let waiting = claim(&dependent, &deps, &s, &a, at(10));
    assert_eq!(code(&waiting), Some(Code::DependenciesIncomplete));
    assert!(waiting.unwrap_err().rejection.message.contains("d2"));
    deps.insert("d2".into(), done);
    assert_eq!(types(&claim(&dependent, &deps, &s, &a, at(10))), ["task_claimed"]);
}

fn new_task(dependencies: &[String]) -> task::NewTask<'_> {
    task::NewTask { task_id: "t", title: "", priority: 0, required_capabilities: &[], dependencies, max_attempts: 3 }
}

#[test]
fn creation_refuses_duplicates_unknown_dependencies_and_self_cycles() {
    let existing = BTreeMap::from([("d".to_owned(), task_with(&[(0, created(&[], &[], 3))]))]);
    let (no_deps, with_ghost, itself) = (vec![], vec!["d".to_owned(), "ghost".to_owned()], vec!["t".to_owned()]);
    assert_eq!(types(&task::create(&Task::default(), new_task(&no_deps), &existing)), ["task_created"]);
    let exists = task_with(&[(0, created(&[], &[], 3))]);
    assert_eq!(code(&task::create(&exists, new_task(&no_deps), &existing)), Some(Code::AlreadyExists));
    let refused = task::create(&Task::default(), new_task(&with_ghost), &existing);
    assert_eq!(code(&refused), Some(Code::UnknownDependency));
    assert!(refused.unwrap_err().rejection.message.contains("ghost"));
    assert_eq!(code(&task::create(&Task::default(), new_task(&itself), &existing)), Some(Code::DependencyCycle));
}

#[test]
fn only_the_holder_finishes_and_only_within_its_lease() {
    let held = task_with(&[(0, created(&[], &[], 2)), (1, claimed("a", at(100)))]);
    let finish = |agent: &str, how, now| task::finish(&held, "t", agent, "s", how, now);
    assert_eq!(types(&finish("a", task::Finish::Complete { result: "ok" }, at(50))), ["task_completed"]);
    assert_eq!(code(&finish("b", task::Finish::Complete { result: "ok" }, at(50))), Some(Code::NotHolder));
    assert_eq!(code(&finish("a", task::Finish::Release { reason: "" }, at(101))), Some(Code::LeaseExpired));
    let open = task_with(&[(0, created(&[], &[], 2))]);
    assert_eq!(
        code(&task::finish(&open, "t", "a", "s", task::Finish::Fail { reason: "" }, at(5))),
        Some(Code::NotClaimed)
    );

    // Failing reopens the task until attempts run out; then it stays failed.
    let Ok(first) = finish("a", task::Finish::Fail { reason: "x" }, at(50)) else { panic!() };
    assert!(matches!(&first[0], Body::TaskFailed(f) if !f.terminal));
    let after_one = task_with(&[
        (0, created(&[], &[], 2)),
        (1, claimed("a", at(100))),
        (50, first[0].clone()),
        (60, claimed("a", at(200))),
    ]);
    let Ok(second) = task::finish(&after_one, "t", "a", "s", task::Finish::Fail { reason: "x" }, at(70)) else {
        panic!()
    };
    assert!(matches!(&second[0], Body::TaskFailed(f) if f.terminal));
    let mut failed = after_one.clone();
    failed.apply(&event(at(70), second[0].clone()));
    assert_eq!(code(&claim(&failed, &BTreeMap::new(), &live_session("a"), &coder(), at(80))), Some(Code::TaskFailed));
}

#[test]
fn leases_expire_after_their_deadline_or_with_their_session_and_reopen_the_task() {
    let held = task_with(&[(0, created(&[], &[], 3)), (1, claimed("a", at(100)))]);
    assert_eq!(code(&task::expire_lease(&held, "t", true, at(100))), Some(Code::LeaseActive));
    let Ok(with_session) = task::expire_lease(&held, "t", false, at(50)) else { panic!() };
    assert_eq!(with_session.iter().map(Body::type_name).collect::<Vec<_>>(), ["task_lease_expired"]);
    let Ok(expired) = task::expire_lease(&held, "t", true, at(101)) else { panic!() };
    assert_eq!(expired.iter().map(Body::type_name).collect::<Vec<_>>(), ["task_lease_expired"]);
    let mut reopened = held.clone();
    reopened.apply(&event(at(101), expired[0].clone()));
    assert_eq!(reopened.status, task::Status::Open);
}

#[test]
fn sessions_heartbeat_close_and_expire_by_event_time() {
    let s = live_session("a");
    assert_eq!(types(&session::heartbeat(&s, "s", at(60))), ["session_heartbeat"]);
    assert_eq!(code(&session::heartbeat(&s, "s", at(61))), Some(Code::SessionNotLive));
    assert_eq!(code(&session::expire(&s, "s", at(60))), Some(Code::SessionLive));
    assert_eq!(types(&session::expire(&s, "s", at(61))), ["session_expired"]);
    // A heartbeat moves the deadline.
    let mut beaten = s.clone();
    beaten.apply(&event(at(50), Body::SessionHeartbeat(SessionHeartbeat { session_id: "s".into() })));
    assert_eq!(code(&session::expire(&beaten, "s", at(100))), Some(Code::SessionLive));
    assert_eq!(types(&session::close(&beaten, "s", "done")), ["session_closed"]);
    assert_eq!(code(&session::open(&beaten, "s", "a", 1000, &coder())), Some(Code::AlreadyExists));
    assert_eq!(code(&session::open(&Session::default(), "s", "a", 1000, &Agent::default())), Some(Code::UnknownAgent));
}

#[test]
fn actions_need_a_registered_agent_in_its_live_session() {
    let action = |kind| agent::Action {
        agent_id: "a",
        session_id: "s",
        task_id: "t",
        kind,
        cost: 3,
        outcome: ActionOutcome::Failed,
        detail: "",
    };
    let Ok(events) = agent::record_action(&coder(), &live_session("a"), action(ActionKind::Learn), at(1)) else {
        panic!()
    };
    assert!(
        matches!(&events[0], Body::ActionRecorded(r) if r.kind == agentlog_core::schema::ActionKind::Learn as i32 && r.cost == 3)
    );
    assert_eq!(
        code(&agent::record_action(&Agent::default(), &live_session("a"), action(ActionKind::Act), at(1))),
        Some(Code::UnknownAgent)
    );
    assert_eq!(
        code(&agent::record_action(&coder(), &live_session("a"), action(ActionKind::Act), at(61))),
        Some(Code::SessionNotLive)
    );
}

fn debit(state: &Budget, amount: u64, failed: bool, now: Timestamp) -> Decision {
    let policy = Policy { circuit_threshold: 3, circuit_cooldown_ms: 30_000 };
    budget::debit(
        state,
        budget::Debit { budget_id: "b", amount, agent_id: "a", session_id: "", task_id: "", reason: "", failed },
        &policy,
        now,
    )
}

/// Applies an accepted decision, or the facts a refusal recorded.
fn settle(state: &mut Budget, decision: &Decision, now: Timestamp) {
    let events = match decision {
        Ok(events) => events,
        Err(refused) => &refused.record,
    };
    for body in events {
        state.apply(&event(now, body.clone()));
    }
}

#[test]
fn the_circuit_opens_after_consecutive_failures_and_closes_after_the_cool_down() {
    let mut b = fold(
        &[(0, Body::BudgetAllocated(BudgetAllocated { budget_id: "b".into(), amount: 100, balance_after: 100 }))],
        Budget::apply,
    );
    // A success resets the count; refused and failed debits add to it.
    for (seconds, amount, failed, expect) in [
        (1, 500, false, Err(Code::InsufficientBudget)),
        (2, 10, true, Ok(vec!["budget_debited"])),
        (3, 10, false, Ok(vec!["budget_debited"])),
        (4, 500, false, Err(Code::InsufficientBudget)),
        (5, 10, true, Ok(vec!["budget_debited"])),
        (6, 500, false, Err(Code::InsufficientBudget)),
    ] {
        let decision = debit(&b, amount, failed, at(seconds));
        match expect {
            Ok(expected) => assert_eq!(types(&decision), expected, "at {seconds}s"),
            Err(expected) => assert_eq!(code(&decision), Some(expected), "at {seconds}s"),
        }
        settle(&mut b, &decision, at(seconds));
    }
    // The third consecutive failure (at 6s) opened the circuit until 36s.
    assert_eq!(b.circuit_open_until_ts, Some(at(36).as_nanos()));
    assert_eq!(b.balance, 70);
    let refused = debit(&b, 1, false, at(35));
    assert_eq!(code(&refused), Some(Code::CircuitOpen));
    assert!(refused.unwrap_err().record.is_empty(), "refusals while open are not recorded");
    let reopened = debit(&b, 1, false, at(36));
    assert_eq!(types(&reopened), ["budget_circuit_closed", "budget_debited"]);
    settle(&mut b, &reopened, at(36));
    assert_eq!((b.circuit_open_until_ts, b.consecutive_failures, b.balance), (None, 0, 69));
}

#[test]
fn budgets_refund_at_most_what_was_spent_and_never_overflow() {
    let mut b = fold(
        &[(0, Body::BudgetAllocated(BudgetAllocated { budget_id: "b".into(), amount: 100, balance_after: 100 }))],
        Budget::apply,
    );
    let spent = debit(&b, 40, false, at(1));
    settle(&mut b, &spent, at(1));
    assert_eq!(code(&budget::refund(&b, "b", 41, "")), Some(Code::RefundExceedsSpent));
    assert_eq!(types(&budget::refund(&b, "b", 40, "")), ["budget_refunded"]);
    assert_eq!(code(&budget::allocate(&b, "b", u64::MAX)), Some(Code::InvalidAmount));
    assert_eq!(code(&debit(&Budget::default(), 1, false, at(1))), Some(Code::NotFound));
    let _ = aggregate::State::empty_for("budget/b").expect("budget streams are aggregates");
}

#[test]
fn budget_totals_cannot_overflow_through_allocations_debits_or_refunds() {
    let max = u64::MAX;
    let mut b = fold(
        &[(0, Body::BudgetAllocated(BudgetAllocated { budget_id: "b".into(), amount: max, balance_after: max }))],
        Budget::apply,
    );
    let spent = debit(&b, max, false, at(1));
    settle(&mut b, &spent, at(1));
    assert_eq!(b.balance, 0);
    // The balance has room, the allocated total does not.
    assert_eq!(code(&budget::allocate(&b, "b", 1)), Some(Code::InvalidAmount));
    let refunded = budget::refund(&b, "b", max, "");
    assert_eq!(types(&refunded), ["budget_refunded"]);
    settle(&mut b, &refunded, at(2));
    assert_eq!(b.balance, max);
    // Covered by the balance, but the spent total would overflow.
    assert_eq!(code(&debit(&b, max, false, at(3))), Some(Code::InvalidAmount));
    assert_eq!(code(&budget::refund(&b, "b", 1, "")), Some(Code::RefundExceedsSpent));
    // Damaged data on disk saturates instead of making the stream unloadable.
    b.apply(&event(
        at(4),
        Body::BudgetAllocated(BudgetAllocated { budget_id: "b".into(), amount: max, balance_after: max }),
    ));
    assert_eq!(b.allocated, max);
}
