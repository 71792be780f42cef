//! `--caused-by`: an event and everything it caused, through any number of
//! steps, and nothing else, on a log whose commands name their causes
//! (written through the real handler on an embedded log).
use std::sync::Arc;

use agentlog_commands::command::{CreateTask, RegisterAgent};
use agentlog_commands::{Command, Handler, Request};
use agentlog_core::{EventId, Log, ManualClock, SeededIdGen, Timestamp};
use agentlog_log::{EmbeddedLog, Options};
use agentlog_replay::{Filter, History};

fn task(id: &str) -> Command {
    Command::CreateTask(CreateTask {
        task_id: id.into(),
        title: String::new(),
        priority: 0,
        required_capabilities: vec![],
        dependencies: vec![],
        max_attempts: 1,
    })
}

#[tokio::test]
async fn caused_by_follows_the_chain_through_every_step_and_nothing_else() {
    let dir = tempfile::tempdir().unwrap();
    let log = Arc::new(EmbeddedLog::open(dir.path(), Options::default()).unwrap());
    let clock = Arc::new(ManualClock::new(Timestamp::from_nanos(1_767_225_600_000_000_000)));
    let handler = Handler::new(log.clone(), clock, Arc::new(SeededIdGen::new(7)));
    let mut event_of = Vec::new();
    // seq 1 root; 2 caused by 1; 3 unrelated; 4 caused by 2; 5 caused by 3; 6 caused by 1.
    let causes: [Option<usize>; 6] = [None, Some(0), None, Some(1), Some(2), Some(0)];
    for (i, cause) in causes.iter().enumerate() {
        let command = if i == 0 {
            Command::RegisterAgent(RegisterAgent { agent_id: "a1".into(), name: String::new(), capabilities: vec![] })
        } else {
            task(&format!("t{i}"))
        };
        let mut request = Request::new(command, "test");
        request.causation_id = cause.map(|c: usize| event_of[c]);
        let accepted = handler.execute(request).await.unwrap();
        let event = log.read(accepted.first_seq, 1).await.unwrap().remove(0);
        event_of.push(EventId::from_slice(&event.event_id).unwrap());
    }
    drop(handler);
    drop(log);

    let history = History::open(Some(dir.path()), None).unwrap();
    let chain = |root: usize| {
        let filter = Filter { caused_by: Some(event_of[root].as_bytes().to_vec()), ..Filter::default() };
        let mut seqs = Vec::new();
        agentlog_replay::events(&history, &filter, &mut |e| {
            seqs.push(e.seq);
            true
        })
        .unwrap();
        seqs
    };
    assert_eq!(chain(0), [1, 2, 4, 6]);
    assert_eq!(chain(1), [2, 4]);
    assert_eq!(chain(2), [3, 5]);
    assert_eq!(chain(5), [6]);
    // Combined with another filter: the chain is followed through events the
    // other filter drops.
    let filter = Filter { caused_by: Some(event_of[0].as_bytes().to_vec()), from_seq: Some(3), ..Filter::default() };
    let mut seqs = Vec::new();
    agentlog_replay::events(&history, &filter, &mut |e| {
        seqs.push(e.seq);
        true
    })
    .unwrap();
    assert_eq!(seqs, [4, 6], "the chain is followed from seq 1 though only seqs from 3 are shown");
}
