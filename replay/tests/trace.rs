//! `replay diff` and `replay explain` on a log written by the real handler
//! (each command naming the one before it as its cause): the fields that
//! changed and the events that touched them; each field's setter and its
//! causation chain back to the first command, with idempotency keys.
use std::sync::Arc;

use agentlog_commands::command::{ClaimTask, CompleteTask, CreateTask, OpenSession, RegisterAgent};
use agentlog_commands::{Command, Handler, Request};
use agentlog_core::{EventId, Log, ManualClock, SeededIdGen, Timestamp};
use agentlog_log::{EmbeddedLog, Options};
use agentlog_replay::point::Entity;
use agentlog_replay::{Error, History};
use serde_json::json;

struct Written {
    register: u64,
    create: u64,
    claim: u64,
    complete: u64,
}

async fn write(dir: &std::path::Path) -> Written {
    let log = Arc::new(EmbeddedLog::open(dir, Options::default()).unwrap());
    let clock = Arc::new(ManualClock::new(Timestamp::from_nanos(1_767_225_600_000_000_000)));
    let handler = Handler::new(log.clone(), clock.clone(), Arc::new(SeededIdGen::new(3)));
    let mut cause: Option<EventId> = None;
    let mut send = async |command: Command, key: Option<&str>| {
        let mut request = Request::new(command, "engineer");
        request.causation_id = cause;
        request.idempotency_key = key.map(str::to_owned);
        let accepted = handler.execute(request).await.unwrap();
        let event = log.read(accepted.first_seq, 1).await.unwrap().remove(0);
        cause = EventId::from_slice(&event.event_id);
        accepted
    };
    let register = send(
        Command::RegisterAgent(RegisterAgent { agent_id: "a1".into(), name: String::new(), capabilities: vec![] }),
        None,
    )
    .await
    .first_seq;
    let opened = send(
        Command::OpenSession(OpenSession { agent_id: "a1".into(), session_id: None, heartbeat_timeout_ms: 60_000 }),
        None,
    )
    .await;
    let session = opened.session_id.unwrap();
    let create = send(
        Command::CreateTask(CreateTask {
            task_id: "t1".into(),
            title: "the work".into(),
            priority: 1,
            required_capabilities: vec![],
            dependencies: vec![],
            max_attempts: 2,
        }),
        Some("create-t1"),
    )
    .await
    .first_seq;
    let claim = send(
        Command::ClaimTask(ClaimTask {
            task_id: "t1".into(),
            agent_id: "a1".into(),
            session_id: session.clone(),
            lease_ms: 60_000,
        }),
        Some("claim-t1"),
    )
    .await
    .first_seq;
    clock.advance(std::time::Duration::from_secs(1));
    let complete = send(
        Command::CompleteTask(CompleteTask {
            task_id: "t1".into(),
            agent_id: "a1".into(),
            session_id: session,
            result: "done".into(),
        }),
        None,
    )
    .await
    .first_seq;
    Written { register, create, claim, complete }
}

#[tokio::test]
async fn diff_names_each_changed_field_and_the_events_that_touched_it() {
    let dir = tempfile::tempdir().unwrap();
    let w = write(dir.path()).await;
    let history = History::open(Some(dir.path()), None).unwrap();
    let task = Entity::Task("t1".into());

    let changes = agentlog_replay::diff(&history, w.create, w.complete, Some(&task), &mut |_, _| {}).unwrap();
    assert_eq!(changes.len(), 1);
    assert_eq!(changes[0].entity, task);
    assert_eq!(changes[0].events, [w.claim, w.complete]);
    let fields: Vec<(&str, Option<serde_json::Value>, Option<serde_json::Value>)> =
        changes[0].fields.iter().map(|f| (f.path.as_str(), f.before.clone(), f.after.clone())).collect();
    assert_eq!(
        fields,
        [("attempts", Some(json!(0)), Some(json!(1))), ("status", Some(json!("open")), Some(json!("completed")))]
    );

    // Without --entity: the agent changed too (its reputation); the task
    // appears from nothing between its creation's point and before it.
    let all = agentlog_replay::diff(&history, w.register, w.complete, None, &mut |_, _| {}).unwrap();
    let names: Vec<String> = all.iter().map(|c| c.entity.name()).collect();
    assert!(names.contains(&"task/t1".to_owned()) && names.contains(&"agent/a1".to_owned()), "{names:?}");
    let created = all.iter().find(|c| c.entity == task).unwrap();
    assert!(created.fields.iter().all(|f| f.before.is_none()), "it did not exist at the start: {created:?}");
    assert_eq!(created.events, [w.create, w.claim, w.complete]);

    // Nothing between a point and itself.
    assert_eq!(agentlog_replay::diff(&history, w.claim, w.claim, None, &mut |_, _| {}).unwrap(), []);
    let backwards = agentlog_replay::diff(&history, w.complete, w.claim, None, &mut |_, _| {}).unwrap_err();
    assert!(matches!(backwards, Error::BadInput { .. }), "{backwards}");
}

#[tokio::test]
async fn explain_gives_each_fields_setter_and_its_causes_back_to_the_first_command() {
    let dir = tempfile::tempdir().unwrap();
    let w = write(dir.path()).await;
    let history = History::open(Some(dir.path()), None).unwrap();
    let task = Entity::Task("t1".into());

    let explained = agentlog_replay::explain(&history, &task, w.complete, &mut |_, _| {}).unwrap();
    assert_eq!(explained.state["status"], "completed");
    let field = |path: &str| explained.fields.iter().find(|f| f.path == path).unwrap();
    let seqs = |path: &str| field(path).chain.iter().map(|c| c.event.seq).collect::<Vec<_>>();
    // The completion set the status; it was caused by the claim, the claim
    // by the creation, and so on back to the agent's registration.
    let from_complete: Vec<u64> = std::iter::once(w.complete).chain([w.claim, w.create]).collect();
    assert_eq!(seqs("status")[..3], from_complete[..]);
    assert_eq!(*seqs("status").last().unwrap(), w.register, "back to the first command");
    assert_eq!(seqs("attempts")[0], w.claim);
    assert_eq!(seqs("title")[0], w.create);
    assert_eq!(field("title").value, "the work");
    // Each link knows its command's idempotency key and actor.
    let keys: Vec<Option<&str>> = field("attempts").chain.iter().map(|c| c.idempotency_key.as_deref()).collect();
    assert_eq!(keys[..2], [Some("claim-t1"), Some("create-t1")]);
    assert!(field("attempts").chain.iter().all(|c| c.event.actor == "engineer"));

    // Earlier, the claim is what the status is.
    let then = agentlog_replay::explain(&history, &task, w.claim, &mut |_, _| {}).unwrap();
    assert_eq!(then.state["status"], "claimed");
    assert_eq!(then.fields.iter().find(|f| f.path == "status").unwrap().chain[0].event.seq, w.claim);

    // Before it existed, it is unknown; a bad name says how to write one.
    let missing = agentlog_replay::explain(&history, &task, w.register, &mut |_, _| {}).unwrap_err();
    assert!(missing.to_string().contains(&format!("there is no task t1 at seq {}", w.register)), "{missing}");
    let bad = Entity::parse("tasks/t1").unwrap_err();
    assert!(bad.to_string().contains("task, agent, session or budget"), "{bad}");
}
