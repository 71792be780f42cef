//! `agentlog replay` as an on-call engineer runs it: on the demo's log, its
//! archive, and the WAL pruned behind the archive. Every answer is checked
//! against the log read another way (`agentlog tail --json` of the whole,
//! never-pruned WAL, and the live views' checkpoints), and nothing replay
//! reads is ever written.
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use agentlog_tests::incident::{file_hashes, plant_replayed_claim};
use agentlog_tests::output::{failed, ok};
use serde_json::Value;

fn agentlog(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_agentlog")).args(args).output().expect("run agentlog")
}

fn json_lines(out: &str) -> Vec<Value> {
    out.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"))).collect()
}

fn path(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// The demo's log (three days from 2026-01-01) at `whole`, and a copy at
/// `pruned` whose first two days are archived into `<pruned>/archive` and
/// whose first day is pruned from its WAL.
fn logs(dir: &Path) -> (PathBuf, PathBuf) {
    let (whole, pruned) = (dir.join("whole"), dir.join("pruned"));
    ok(agentlog(&["demo", "--data", path(&whole), "--json"]));
    ok(agentlog(&["demo", "--data", path(&pruned), "--json"]));
    ok(agentlog(&["archive", "run", "--data", path(&pruned), "--through", "2026-01-02", "--json"]));
    let report: Value = serde_json::from_str(&ok(agentlog(&[
        "archive",
        "prune",
        "--data",
        path(&pruned),
        "--before",
        "2026-01-02",
        "--json",
    ])))
    .unwrap();
    assert!(report["pruned_through_seq"].as_u64().unwrap() > 1000, "{report}");
    (whole, pruned)
}

fn events(args: &[&str]) -> Vec<Value> {
    let mut all = vec!["replay", "events", "--json"];
    all.extend_from_slice(args);
    json_lines(&ok(agentlog(&all)))
}

fn seqs(events: &[Value]) -> Vec<u64> {
    events.iter().map(|e| e["seq"].as_u64().unwrap()).collect()
}

#[test]
fn one_history_over_the_archive_and_the_pruned_wal_is_the_whole_log() {
    let dir = tempfile::tempdir().unwrap();
    let (whole, pruned) = logs(dir.path());
    let all = json_lines(&ok(agentlog(&["tail", "--data", path(&whole), "--json"])));
    assert!(all.len() > 10_000);
    let archive = pruned.join("archive");
    let before = (file_hashes(&whole), file_hashes(&pruned));

    // Archive, then the WAL's tail: every event, as the whole WAL has it.
    assert_eq!(events(&["--data", path(&pruned)]), all);
    // The never-pruned WAL alone, the same.
    assert_eq!(events(&["--data", path(&whole)]), all);
    // The archive alone: its days.
    let archived = events(&["--archive", path(&archive)]);
    let archived_through = archived.last().unwrap()["seq"].as_u64().unwrap();
    assert!(archived_through > 5000 && archived_through < all.len() as u64 - 1000, "{archived_through}");
    assert_eq!(archived[..], all[..archived_through as usize]);
    // The pruned WAL alone: from where it was cut.
    let tail = events(&["--data", path(&pruned), "--no-archive"]);
    let cut = all.len() - tail.len();
    assert!(cut > 1000, "{cut}");
    assert_eq!(tail[..], all[cut..]);

    // State at the head equals the live views' checkpoints, from every source.
    let status = ok(agentlog(&["projections", "status", "--data", path(&whole), "--json"]));
    let status: Value = serde_json::from_str(&status).unwrap();
    let hash_of = |name: &str| {
        status["projections"].as_array().unwrap().iter().find(|p| p["name"] == name).unwrap()["state_hash"].clone()
    };
    let head = all.len().to_string();
    for source in [vec!["--data", path(&whole)], vec!["--data", path(&pruned)]] {
        let mut args = vec!["replay", "state", "--at", head.as_str(), "--json"];
        args.extend_from_slice(&source);
        let state: Value = serde_json::from_str(&ok(agentlog(&args))).unwrap();
        assert_eq!(state["world"]["state_hash"], hash_of("world"), "{source:?}");
        assert_eq!(state["reputation"]["state_hash"], hash_of("reputation"), "{source:?}");
    }
    // The pruned WAL alone cannot fold from seq 1, and says what to do.
    let refused = failed(agentlog(&["replay", "state", "--data", path(&pruned), "--no-archive", "--at", "10"]));
    assert!(refused.contains(&format!("starts at seq {}", cut + 1)) && refused.contains("--archive"), "{refused}");

    // A time is the last event at or before it, wherever the events came from.
    let at = "2026-01-02T12:00:00Z";
    let nanos = 1_767_355_200_000_000_000u64;
    let expected =
        all.iter().filter(|e| e["ts_ns"].as_u64().unwrap() <= nanos).map(|e| e["seq"].as_u64().unwrap()).max();
    let by_time: Value =
        serde_json::from_str(&ok(agentlog(&["replay", "state", "--data", path(&pruned), "--at", at, "--json"])))
            .unwrap();
    assert_eq!(by_time["seq"].as_u64(), expected);
    let by_seq = expected.unwrap().to_string();
    let same: Value = serde_json::from_str(&ok(agentlog(&[
        "replay",
        "state",
        "--archive",
        path(&archive),
        "--at",
        &by_seq,
        "--json",
    ])))
    .unwrap();
    assert_eq!(same, by_time, "the archive alone folds to the same state");

    // One entity, as the views had it then.
    let task: Value = serde_json::from_str(&ok(agentlog(&[
        "replay",
        "state",
        "--data",
        path(&pruned),
        "--at",
        "12",
        "--task",
        "task-00001",
        "--json",
    ])))
    .unwrap();
    assert_eq!(task["task"]["status"], "open");
    let task: Value = serde_json::from_str(&ok(agentlog(&[
        "replay",
        "state",
        "--data",
        path(&pruned),
        "--at",
        "14",
        "--task",
        "task-00001",
        "--json",
    ])))
    .unwrap();
    assert_eq!(task["task"]["status"], "claimed", "{task}");
    assert_eq!(task["task"]["holder"]["agent_id"], "agent-08", "{task}");

    // Diff and explain give the same answers from the archive and the
    // pruned WAL as from the whole WAL.
    for args in [
        vec!["diff", "--from", "2026-01-01T06:00:00Z", "--to", "6000", "--json"],
        vec!["diff", "--from", "1168", "--to", "1300", "--entity", "task/task-00042", "--json"],
        vec!["explain", "task/task-00042", "--at", "2656", "--json"],
        vec!["explain", "agent/agent-08", "--json"],
    ] {
        let run = |data: &Path| {
            let mut all = vec!["replay"];
            all.extend_from_slice(&args);
            all.extend_from_slice(&["--data", path(data)]);
            serde_json::from_str::<Value>(&ok(agentlog(&all))).unwrap()
        };
        let (a, b) = (run(&whole), run(&pruned));
        assert_eq!(a, b, "{args:?}");
        assert!(a.to_string().len() > 200, "{args:?} says something: {a}");
    }
    let explained: Value = serde_json::from_str(&ok(agentlog(&[
        "replay",
        "explain",
        "task/task-00042",
        "--at",
        "2656",
        "--json",
        "--data",
        path(&pruned),
    ])))
    .unwrap();
    let status = explained["fields"].as_array().unwrap().iter().find(|f| f["path"] == "status").unwrap();
    assert_eq!(status["value"], "completed");
    assert_eq!(status["set_by"][0]["type"], "task_completed");
    assert_eq!(status["set_by"][0]["body"]["task_id"], "task-00042");

    assert_eq!((file_hashes(&whole), file_hashes(&pruned)), before, "replay wrote to what it read");
}

#[test]
fn every_filter_gives_what_filtering_the_whole_log_gives() {
    let dir = tempfile::tempdir().unwrap();
    let (whole, pruned) = logs(dir.path());
    let all = json_lines(&ok(agentlog(&["tail", "--data", path(&whole), "--json"])));
    let source = ["--data", path(&pruned)];
    let check = |args: &[&str], keep: &dyn Fn(&Value) -> bool| {
        let mut with_source = source.to_vec();
        with_source.extend_from_slice(args);
        let got = events(&with_source);
        let expected: Vec<Value> = all.iter().filter(|e| keep(e)).cloned().collect();
        assert!(!expected.is_empty(), "{args:?} matches something");
        assert_eq!(seqs(&got), seqs(&expected), "{args:?}");
    };
    let body = |e: &Value, field: &str| e["body"][field].as_str().map(str::to_owned);
    check(&["--task", "task-00001"], &|e| {
        e["stream"] == "task/task-00001" || body(e, "task_id").as_deref() == Some("task-00001")
    });
    check(&["--agent", "agent-03"], &|e| {
        e["stream"] == "agent/agent-03" || body(e, "agent_id").as_deref() == Some("agent-03")
    });
    let session = "019b76f9-cbfe-7808-ad23-64249a3381ee";
    check(&["--session", session], &|e| {
        e["stream"] == format!("session/{session}")
            || e["session_id"] == session
            || body(e, "session_id").as_deref() == Some(session)
    });
    check(&["--budget", "team-2"], &|e| e["stream"] == "budget/team-2");
    check(&["--type", "task_lease_expired"], &|e| e["type"] == "task_lease_expired");
    let actor = all.iter().map(|e| e["actor"].clone()).find(|a| a.is_string()).unwrap();
    check(&["--actor", actor.as_str().unwrap()], &|e| e["actor"] == actor);
    check(&["--from-seq", "4990", "--to-seq", "5030"], &|e| (4990..=5030).contains(&e["seq"].as_u64().unwrap()));
    check(&["--since", "2026-01-01T23:59:00Z", "--until", "2026-01-02T00:01:00Z"], &|e| {
        let ts = e["ts_ns"].as_u64().unwrap();
        (1_767_311_940_000_000_000..=1_767_312_060_000_000_000).contains(&ts)
    });
    // A correlation id: a command's events share it.
    let claim = all.iter().find(|e| e["type"] == "task_claimed" && e["seq"].as_u64().unwrap() > 6000).unwrap();
    let correlation = claim["correlation_id"].as_str().unwrap().to_owned();
    check(&["--correlation", &correlation], &|e| e["correlation_id"] == correlation.as_str());
    // A causation chain: replay/tests/causation.rs (the demo's commands name no cause).
    // Filters combine.
    check(&["--task", "task-00002", "--type", "task_claimed"], &|e| {
        e["stream"] == "task/task-00002" && e["type"] == "task_claimed"
    });
    // --limit.
    let mut args = vec!["replay", "events", "--limit", "3"];
    args.extend_from_slice(&source);
    assert_eq!(ok(agentlog(&args)).lines().count(), 3);
}

#[test]
fn bad_input_and_sources_that_do_not_join_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let (whole, pruned) = logs(dir.path());
    let archive = pruned.join("archive");
    let refused = |args: &[&str]| failed(agentlog(args));

    let head = ok(agentlog(&["tail", "--data", path(&whole)])).lines().count();
    let past = (head + 1).to_string();
    let e = refused(&["replay", "state", "--data", path(&whole), "--at", &past]);
    assert!(e.contains(&format!("seq {past} is past the last event kept (seq {head})")), "{e}");
    let e = refused(&["replay", "state", "--data", path(&whole), "--at", "2025-12-31T23:00:00Z"]);
    assert!(e.contains("is before the first event kept (seq 1, at 2026-01-01T00:00:00"), "{e}");
    let e = refused(&["replay", "state", "--data", path(&whole), "--at", "yesterday"]);
    assert!(e.contains("neither a seq nor an RFC 3339 time"), "{e}");
    let e = refused(&["replay", "state", "--data", path(&whole), "--at", "100", "--task", "no-such-task"]);
    assert!(e.contains("there is no task no-such-task at seq 100"), "{e}");
    let e = refused(&["replay", "events", "--data", path(&whole), "--type", "task_stolen"]);
    assert!(e.contains("task_stolen") && e.contains("task_claimed"), "{e}");
    let e = refused(&["replay", "events", "--data", path(&whole), "--correlation", "not-a-uuid"]);
    assert!(e.contains("correlation id"), "{e}");
    let e = refused(&["replay", "events"]);
    assert!(e.contains("--data") && e.contains("--archive"), "{e}");
    let e = refused(&["replay", "events", "--archive", path(&dir.path().join("nowhere"))]);
    assert!(e.contains("no archive at"), "{e}");

    // Another log's WAL does not continue this archive.
    let other = dir.path().join("other");
    ok(agentlog(&["demo", "--data", path(&other), "--seed", "2", "--json"]));
    let e = refused(&["replay", "events", "--data", path(&other), "--archive", path(&archive)]);
    assert!(e.contains("does not hold together at seq"), "{e}");

    // A day missing from the middle of the archive.
    let holed = dir.path().join("holed");
    ok(agentlog(&["archive", "run", "--data", path(&whole), "--out", path(&holed), "--json"]));
    std::fs::remove_dir_all(holed.join("date=2026-01-02")).unwrap();
    let e = refused(&["replay", "events", "--archive", path(&holed)]);
    assert!(e.contains("day 2026-01-03 begins at seq") && e.contains("a day is missing"), "{e}");

    // The WAL pruned past the archive's end: events in neither.
    let short = dir.path().join("short");
    ok(agentlog(&[
        "archive",
        "run",
        "--data",
        path(&whole),
        "--out",
        path(&short),
        "--through",
        "2026-01-01",
        "--json",
    ]));
    let further = dir.path().join("further");
    ok(agentlog(&["demo", "--data", path(&further), "--json"]));
    ok(agentlog(&["archive", "run", "--data", path(&further), "--through", "2026-01-02", "--json"]));
    ok(agentlog(&["archive", "prune", "--data", path(&further), "--before", "2026-01-03", "--json"]));
    let e = refused(&["replay", "events", "--data", path(&further), "--archive", path(&short)]);
    assert!(e.contains("the archive ends at seq") && e.contains("are in neither"), "{e}");
    // And where they do join (the same log cut where the archive ends), they join.
    assert_eq!(events(&["--data", path(&pruned), "--archive", path(&short)]).len(), head);
}

#[test]
fn check_holds_on_the_demo_and_names_a_planted_break_with_its_witnesses() {
    let dir = tempfile::tempdir().unwrap();
    let (whole, pruned) = logs(dir.path());
    for data in [&whole, &pruned] {
        let report: Value =
            serde_json::from_str(&ok(agentlog(&["replay", "check", "--data", path(data), "--json"]))).unwrap();
        assert_eq!(report["broken"], serde_json::json!([]), "{report}");
        assert_eq!(report["held"].as_array().unwrap().len(), 11, "{report}");
        assert_eq!(report["events"].as_u64().unwrap(), 15_099);
    }
    let e = failed(agentlog(&["replay", "check", "--data", path(&pruned), "--no-archive"]));
    assert!(e.contains("pass the archive"), "{e}");

    let (first, second) = plant_second_holder(&whole);
    let status = agentlog(&["replay", "check", "--data", path(&whole)]);
    let out = String::from_utf8_lossy(&status.stdout).into_owned();
    assert!(!status.status.success(), "{out}");
    assert!(out.contains(&format!("  BROKEN  one_holder at seq {second}: task task-00001 claimed by agent-08 while agent-08 held it (claim at seq {first})")), "{out}");
    assert!(
        out.contains(&format!("\n  {first:>8} ")) && out.contains(&format!("\n  {second:>8} ")),
        "the witnesses are printed: {out}"
    );
    for invariant in ["seqs_and_chain", "stream_versions", "stream_time", "budget_non_negative"] {
        assert!(out.contains(&format!("  ok      {invariant}")), "{out}");
    }
}

#[test]
fn a_fork_runs_other_commands_on_a_copy_and_never_touches_the_original() {
    let dir = tempfile::tempdir().unwrap();
    let (whole, pruned) = logs(dir.path());
    let all = json_lines(&ok(agentlog(&["tail", "--data", path(&whole), "--json"])));
    let before = file_hashes(&pruned);
    // What if task-00042 had failed at once instead of being worked on.
    let session = "019b76f9-cbfe-7808-ad23-64249a3381ee";
    let commands = dir.path().join("what-if.jsonl");
    std::fs::write(
        &commands,
        format!(
            "# what if task-00042 had failed at once\n\
             {{\"command\": \"claim_task\", \"body\": {{\"task_id\": \"task-00042\", \"agent_id\": \"agent-08\", \"session_id\": \"{session}\", \"lease_ms\": 60000}}}}\n\
             {{\"command\": \"fail_task\", \"body\": {{\"task_id\": \"task-00042\", \"agent_id\": \"agent-08\", \"session_id\": \"{session}\", \"reason\": \"what if\"}}, \"after_ms\": 1000}}\n\
             \n\
             {{\"command\": \"complete_task\", \"body\": {{\"task_id\": \"task-00042\", \"agent_id\": \"agent-08\", \"session_id\": \"{session}\"}}}}\n"
        ),
    )
    .unwrap();
    let run_fork = |out: &Path| {
        agentlog(&[
            "replay",
            "fork",
            "--data",
            path(&pruned),
            "--at",
            "1168",
            "--commands",
            path(&commands),
            "--out",
            path(out),
            "--json",
        ])
    };
    let fork = |out: &Path| -> Value { serde_json::from_str(&ok(run_fork(out))).unwrap() };
    let (first, second) = (dir.path().join("fork1"), dir.path().join("fork2"));
    let report = fork(&first);
    let outcomes = report["commands"].as_array().unwrap();
    assert_eq!(outcomes.len(), 3);
    assert_eq!((outcomes[0]["line"].clone(), outcomes[0]["accepted"]["first_seq"].clone()), (2.into(), 1169.into()));
    assert_eq!(outcomes[1]["accepted"]["events"], serde_json::json!(["task_failed"]));
    assert_eq!(outcomes[1]["at"], "2026-01-01T06:14:01.908000000Z", "the clock starts at seq 1168's time");
    assert_eq!(outcomes[2]["rejected"]["code"], "not_claimed");
    assert_eq!(report["head"], 1170);

    // The fork holds the original's first 1168 events, byte for byte (same
    // hashes), then its own.
    let forked = events(&["--data", path(&first)]);
    assert_eq!(forked[..1168], all[..1168]);
    assert_eq!(forked[1168]["type"], "task_claimed");
    assert_eq!(forked[1169]["body"]["reason"], "what if");

    // Compared with what really happened by the same moment.
    let original_at = report["original_at"].as_u64().unwrap();
    let until = all.iter().filter(|e| e["ts"].as_str().unwrap() <= "2026-01-01T06:14:01.908000000Z").count() as u64;
    assert_eq!(original_at, until);
    let task = report["changed"].as_array().unwrap().iter().find(|c| c["entity"] == "task/task-00042").unwrap();
    let status = task["fields"].as_array().unwrap().iter().find(|f| f["path"] == "status").unwrap();
    assert_eq!((status["before"].clone(), status["after"].clone()), ("claimed".into(), "open".into()));

    // The same fork again gives the same bytes; the original never changed.
    fork(&second);
    assert_eq!(events(&["--data", path(&second)]), forked);
    assert_eq!(file_hashes(&pruned), before, "the fork wrote to the original");
    let e = failed(run_fork(&first));
    assert!(e.contains("is not empty"), "{e}");
    std::fs::write(&commands, "{\"command\": \"steal_task\", \"body\": {}}\n").unwrap();
    let e = failed(run_fork(&dir.path().join("fork3")));
    assert!(e.contains("commands line \"1\"") && e.contains("steal_task"), "{e}");
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let path = entry.unwrap().path();
        let target = to.join(path.file_name().unwrap());
        if path.is_dir() {
            copy_dir(&path, &target);
        } else {
            std::fs::copy(&path, &target).unwrap();
        }
    }
}

#[test]
fn verify_names_a_changed_event_and_views_that_are_not_the_historys() {
    let dir = tempfile::tempdir().unwrap();
    let (whole, pruned) = logs(dir.path());
    let verify = |data: &Path| -> (bool, Value) {
        let out = agentlog(&["replay", "verify", "--data", path(data), "--json"]);
        (out.status.success(), serde_json::from_slice(&out.stdout).unwrap())
    };
    // The demo's own views and archive verify, with and without a prune.
    let (passed, report) = verify(&pruned);
    assert!(passed, "{report}");
    assert_eq!(report["views"].as_array().unwrap().len(), 2);
    assert_eq!(report["archive_against_wal"]["ok"], true, "{report}");
    assert!(report["archive_against_wal"]["from"].as_u64().unwrap() > 1000, "from the prune mark: {report}");

    // An archive, then an event of the WAL changed after the fact (its actor),
    // in the middle of what both hold.
    let changed = dir.path().join("changed");
    ok(agentlog(&["demo", "--data", path(&changed), "--json"]));
    ok(agentlog(&["archive", "run", "--data", path(&changed), "--through", "2026-01-02", "--json"]));
    {
        let store = agentlog_log::wal::Store::open(&changed, agentlog_log::wal::StoreOptions::default()).unwrap();
        let mut event = agentlog_log::EventSource::read(&store, 100, 1).unwrap().remove(0);
        let previous: [u8; 32] =
            agentlog_log::EventSource::read(&store, 99, 1).unwrap()[0].hash[..].try_into().unwrap();
        event.actor = "someone-else".into();
        let mut writer = agentlog_log::wal::RawWriter::new(&store).unwrap();
        writer.sealed_onto(&previous, event);
        writer.write().unwrap();
    }
    let (passed, report) = verify(&changed);
    assert!(!passed, "{report}");
    let divergence = &report["archive_against_wal"]["first_divergence"];
    assert_eq!(divergence["seq"], 100, "{report}");
    let actor = divergence["fields"].as_array().unwrap().iter().find(|f| f["path"] == "actor").unwrap();
    assert_eq!(actor["wal"], "someone-else");
    assert!(actor["archive"].is_string() && actor["archive"] != "someone-else", "{actor}");

    // Views kept from another log: the fold of this one differs, entity by entity.
    let other = dir.path().join("other");
    ok(agentlog(&["demo", "--data", path(&other), "--seed", "2", "--json"]));
    std::fs::remove_dir_all(other.join("projections")).unwrap();
    copy_dir(&whole.join("projections"), &other.join("projections"));
    let (passed, report) = verify(&other);
    assert!(!passed, "{report}");
    let world = report["views"].as_array().unwrap().iter().find(|v| v["name"] == "world").unwrap();
    assert_eq!(world["ok"], false);
    assert_ne!(world["live_state_hash"], world["replayed_state_hash"]);
    assert!(world["differing_entities"].as_u64().unwrap() > 10, "{world}");
    let first = &world["differing"][0];
    assert!(first["entity"].is_string() && !first["fields"].as_array().unwrap().is_empty(), "{world}");

    // The history rewritten after its views were kept, with an intact
    // chain (as a fold that changed would see it): one task's title, at
    // its creation. That event is named as the first divergent one.
    let rewritten = dir.path().join("rewritten");
    copy_dir(&whole, &rewritten);
    let created = json_lines(&ok(agentlog(&[
        "tail",
        "--data",
        path(&rewritten),
        "--json",
        "--stream",
        "task/task-00042",
    ])))[0]["seq"]
        .as_u64()
        .unwrap();
    {
        let store = agentlog_log::wal::Store::open(&rewritten, agentlog_log::wal::StoreOptions::default()).unwrap();
        let head = store.head().unwrap().last_seq;
        let previous: [u8; 32] =
            agentlog_log::EventSource::read(&store, created - 1, 1).unwrap()[0].hash[..].try_into().unwrap();
        let mut events = agentlog_log::EventSource::read(&store, created, usize::try_from(head).unwrap()).unwrap();
        let Some(agentlog_log::Body::TaskCreated(task)) = &mut events[0].body else { panic!("{:?}", events[0]) };
        task.title = "rewritten".into();
        let mut writer = agentlog_log::wal::RawWriter::new(&store).unwrap();
        let mut events = events.into_iter();
        writer.sealed_onto(&previous, events.next().unwrap());
        for event in events {
            writer.sealed(event);
        }
        writer.write().unwrap();
    }
    ok(agentlog(&["verify", "--data", path(&rewritten)]));
    let (passed, report) = verify(&rewritten);
    assert!(!passed, "{report}");
    let world = report["views"].as_array().unwrap().iter().find(|v| v["name"] == "world").unwrap();
    assert_eq!(world["differing_entities"], 1, "{world}");
    assert_eq!(world["differing"][0]["entity"], "task/task-00042", "{world}");
    assert_eq!(world["differing"][0]["events"], serde_json::json!([created]), "{world}");
    assert_eq!(world["first_divergent_event"]["seq"], created, "{world}");
    assert_eq!(world["first_divergent_event"]["type"], "task_created", "{world}");
    let reputation = report["views"].as_array().unwrap().iter().find(|v| v["name"] == "reputation").unwrap();
    assert_eq!(reputation["ok"], true, "the title is not the reputation's: {reputation}");
}

/// The demo completed task-00001 long before its last event: two copies
/// of its claim after it make a second holder, witnessed by the first.
fn plant_second_holder(whole: &Path) -> (u64, u64) {
    let task = json_lines(&ok(agentlog(&["tail", "--data", path(whole), "--json", "--stream", "task/task-00001"])));
    assert_eq!(task.last().unwrap()["type"], "task_completed");
    plant_replayed_claim(whole, "task-00001").unwrap()
}

/// The page as headless Chromium leaves it after its scripts ran.
fn rendered(page: &Path) -> String {
    let profile = tempfile::tempdir().unwrap();
    let out = Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            &format!("--user-data-dir={}", path(profile.path())),
            "--dump-dom",
            &format!("file://{}", path(page)),
        ])
        .output()
        .expect("chromium is missing: run ./scripts/setup.sh, which installs Debian's chromium");
    assert!(out.status.success(), "chromium failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

fn count(dom: &str, needle: &str) -> usize {
    dom.matches(needle).count()
}

#[test]
fn the_html_report_draws_the_logs_lanes_and_bars_in_a_real_browser() {
    let dir = tempfile::tempdir().unwrap();
    let (whole, pruned) = logs(dir.path());
    let until = "2026-01-01T08:00:00Z";
    let page = dir.path().join("morning.html");
    ok(agentlog(&["replay", "report", "--data", path(&pruned), "--until", until, "--html", path(&page)]));
    let html = std::fs::read_to_string(&page).unwrap();
    for external in ["src=\"http", "href=\"http", "@import", "url("] {
        assert!(!html.contains(external), "the page loads nothing from elsewhere: {external}");
    }
    let dom = rendered(&page);
    assert_eq!(count(&dom, "class=\"script-error\""), 0, "no script error: {dom}");
    assert!(dom.contains("data-rendered=\"true\""), "the script ran to its end");

    // What the log says about that morning.
    let morning: Vec<Value> = json_lines(&ok(agentlog(&["tail", "--data", path(&whole), "--json"])))
        .into_iter()
        .filter(|e| e["ts_ns"].as_u64().unwrap() <= 1_767_254_400_000_000_000)
        .collect();
    let of = |kind: &str| morning.iter().filter(|e| e["type"] == kind).count();
    let claimers: std::collections::BTreeSet<&str> = morning
        .iter()
        .filter(|e| e["type"] == "task_claimed")
        .map(|e| e["body"]["agent_id"].as_str().unwrap())
        .collect();
    assert!(claimers.len() > 3 && of("task_claimed") > 20, "a morning with work in it");
    for agent in &claimers {
        assert_eq!(count(&dom, &format!("<g class=\"lane\" data-agent=\"{agent}\"")), 1, "a lane for {agent}");
    }
    assert_eq!(count(&dom, "<g class=\"lane\""), claimers.len(), "a lane per agent that claimed");
    assert_eq!(count(&dom, "<rect class=\"claim "), of("task_claimed"), "a bar per claim");
    assert_eq!(count(&dom, "<rect class=\"claim completed\""), of("task_completed"));
    assert_eq!(
        count(&dom, "<rect class=\"claim failed\"") + count(&dom, "<rect class=\"claim lease-expired\""),
        of("task_failed") + of("task_lease_expired")
    );
    assert_eq!(count(&dom, "<tr id=\"seq-"), morning.len(), "a row per event");
    assert_eq!(count(&dom, "<polyline class=\"balance\""), 2, "the demo's two budgets");
    assert!(dom.contains("every invariant holds"));

    // A planted second holder is marked on the timeline and in the list.
    let (first, second) = plant_second_holder(&whole);
    let broken = dir.path().join("broken.html");
    let from = first.to_string();
    ok(agentlog(&[
        "replay",
        "report",
        "--data",
        path(&whole),
        "--task",
        "task-00001",
        "--from-seq",
        &from,
        "--html",
        path(&broken),
    ]));
    let dom = rendered(&broken);
    assert_eq!(count(&dom, "class=\"script-error\""), 0, "no script error: {dom}");
    assert!(dom.contains("<line class=\"break\" x1="), "{dom}");
    assert!(
        dom.contains(&format!("data-seq=\"{second}\"></line>")) || dom.contains(&format!("data-seq=\"{second}\">")),
        "{dom}"
    );
    assert!(dom.contains(&format!("<a href=\"#seq={second}\">one_holder at seq {second}</a>")), "{dom}");
    assert!(dom.contains(&format!("<tr id=\"seq-{second}\" class=\"broken\"")), "{dom}");
    assert_eq!(count(&dom, "<rect class=\"claim "), 2);

    // Too many events for one page: refused, nothing written.
    let big = dir.path().join("big.html");
    let e =
        failed(agentlog(&["replay", "report", "--data", path(&whole), "--html", path(&big), "--max-events", "100"]));
    assert!(e.contains("draws at most 100 events") && e.contains("narrow it"), "{e}");
    assert!(!big.exists());
}
