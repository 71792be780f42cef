//! The `agentlog` binary as a user runs it: the demo is reproducible, the
//! inspection commands agree with it, damage is named, and a missing, locked
//! or corrupt data directory gets a clear message, never a panic.
use std::path::Path;
use std::process::{Command, Output};

fn agentlog(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_agentlog")).args(args).output().expect("run agentlog")
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn json(output: &Output) -> serde_json::Value {
    assert!(output.status.success(), "stdout: {}\nstderr: {}", stdout(output), stderr(output));
    serde_json::from_slice(&output.stdout).unwrap_or_else(|e| panic!("{e}: {}", stdout(output)))
}

fn demo(dir: &Path, seed: u64) -> serde_json::Value {
    let seed = seed.to_string();
    let data = dir.to_str().unwrap();
    json(&agentlog(&[
        "demo", "--seed", &seed, "--agents", "5", "--tasks", "80", "--days", "1", "--data", data, "--json",
    ]))
}

#[test]
fn the_demo_is_reproducible_and_stats_and_verify_agree_with_it() {
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let a = demo(dirs[0].path(), 11);
    let b = demo(dirs[1].path(), 11);
    let c = demo(dirs[2].path(), 12);
    assert_eq!(a["head_hash"], b["head_hash"]);
    assert_eq!(a["events"], b["events"]);
    assert_ne!(a["head_hash"], c["head_hash"]);
    assert!(a["events"].as_u64().unwrap() > 500);
    assert_eq!(a["events"], a["last_seq"]);

    let data = dirs[0].path().to_str().unwrap();
    let stats = json(&agentlog(&["stats", "--data", data, "--json"]));
    assert_eq!(stats["events"], a["events"]);
    assert_eq!(stats["head_hash"], a["head_hash"]);
    let verified = json(&agentlog(&["verify", "--data", data, "--json"]));
    assert_eq!(verified["ok"], true);
    assert_eq!(verified["head_hash"], a["head_hash"]);

    let tail = agentlog(&["tail", "--data", data, "--json", "--from", "3", "--limit", "5"]);
    let lines: Vec<serde_json::Value> = stdout(&tail).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.iter().map(|l| l["seq"].as_u64().unwrap()).collect::<Vec<_>>(), [3, 4, 5, 6, 7]);
    let human = stdout(&agentlog(&["tail", "--data", data, "--stream", "agent/agent-01"]));
    assert!(human.lines().next().unwrap().contains("agent_registered"), "{human}");
    assert!(human.lines().all(|l| l.contains("agent/agent-01@")));
}

/// The demo runs the projections live; their saved state hashes equal a
/// rebuild's from sequence 1, in memory (`verify`) and saved (`rebuild`),
/// and the same seed gives the same views. Queries answer from them.
#[test]
fn the_demo_views_equal_a_rebuild_and_answer_queries() {
    let dirs: Vec<_> = (0..2).map(|_| tempfile::tempdir().unwrap()).collect();
    let a = demo(dirs[0].path(), 21);
    let b = demo(dirs[1].path(), 21);
    assert_eq!(a["projections"], b["projections"], "the same seed, the same views");
    let data = dirs[0].path().to_str().unwrap();
    let head = a["last_seq"].as_u64().unwrap();

    let status = json(&agentlog(&["projections", "status", "--json", "--data", data]));
    for p in status["projections"].as_array().unwrap() {
        assert_eq!(p["position"], head, "{status}");
        assert_eq!(p["lag"], 0, "{status}");
        assert_eq!(p["state_hash"], a["projections"][p["name"].as_str().unwrap()], "{status}");
    }
    let verified = json(&agentlog(&["projections", "verify", "--json", "--data", data]));
    assert_eq!(verified["ok"], true, "{verified}");
    assert!(verified["projections"].as_array().unwrap().iter().all(|p| p["checked"] == true), "{verified}");
    assert!(agentlog(&["projections", "rebuild", "--data", data]).status.success());
    let rebuilt = json(&agentlog(&["projections", "status", "--json", "--data", data]));
    assert_eq!(rebuilt, status, "a saved rebuild from seq 1 equals the live views");

    let tasks = json(&agentlog(&["query", "tasks", "--json", "--data", data]));
    assert_eq!(tasks["seq"], head);
    assert_eq!(tasks["result"].as_array().unwrap().len(), 80);
    let summary = &a["summary"];
    let completed = tasks["result"].as_array().unwrap().iter().filter(|t| t["status"] == "completed").count();
    assert_eq!(completed as u64, summary["tasks_completed"].as_u64().unwrap());
    let violations = json(&agentlog(&["query", "violations", "--json", "--data", data]));
    assert_eq!(violations["result"], serde_json::json!([]), "the demo keeps every promise");
    let agent = json(&agentlog(&["query", "agent", "agent-01", "--json", "--data", data]));
    assert_eq!(agent["result"]["agent_id"], "agent-01");
    assert!(agent["result"]["reputation"]["successes"].as_u64().is_some(), "{agent}");
    let unknown = agentlog(&["query", "task", "nope", "--data", data]);
    assert!(!unknown.status.success());
    assert!(stderr(&unknown).contains("no task \"nope\""), "{}", stderr(&unknown));

    let wrong = agentlog(&["projections", "rebuild", "nonsense", "--data", data]);
    assert!(stderr(&wrong).contains("no projection named \"nonsense\""), "{}", stderr(&wrong));

    // A saved world view that is not what the log folds to: verify fails
    // and names it.
    {
        use agentlog_projections::{Live, ProjectionStore, WorldModel, store};
        let saved = ProjectionStore::open(&store::dir(dirs[0].path())).unwrap();
        let mut wrong = Live { state: WorldModel::default(), position: head, chain_hash: Vec::new(), whole: true };
        saved.save(&mut [&mut wrong]).unwrap();
    }
    let mismatch = agentlog(&["projections", "verify", "--json", "--data", data]);
    assert!(!mismatch.status.success());
    let report: serde_json::Value = serde_json::from_slice(&mismatch.stdout).unwrap();
    assert_eq!(report["first_mismatch"], "world", "{report}");
}

#[test]
fn the_demo_refuses_a_log_that_is_not_empty() {
    let dir = tempfile::tempdir().unwrap();
    demo(dir.path(), 1);
    let again = agentlog(&["demo", "--data", dir.path().to_str().unwrap(), "--tasks", "5", "--days", "1"]);
    assert!(!again.status.success());
    assert!(stderr(&again).contains("needs an empty log"), "{}", stderr(&again));
}

#[test]
fn commands_run_end_to_end_and_rejections_carry_kind_and_code() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().to_str().unwrap();
    let cmd = |name: &str, body: &str| agentlog(&["cmd", "--data", data, "--json", name, body]);
    json(&cmd("register_agent", r#"{"agent_id": "a1", "capabilities": ["code"]}"#));
    let opened = json(&cmd("open_session", r#"{"agent_id": "a1"}"#));
    let session = opened["session_id"].as_str().unwrap().to_owned();
    json(&cmd("create_task", r#"{"task_id": "t1", "required_capabilities": ["code"]}"#));
    let claim = format!(r#"{{"task_id": "t1", "agent_id": "a1", "session_id": "{session}"}}"#);
    let claimed = json(&cmd("claim_task", &claim));
    assert_eq!(claimed["events"], serde_json::json!(["task_claimed"]));
    assert_eq!(claimed["stream_version"], 2);

    let again = cmd("claim_task", &claim);
    assert!(!again.status.success());
    let rejection: serde_json::Value = serde_json::from_slice(&again.stdout).unwrap();
    assert_eq!((rejection["kind"].as_str(), rejection["code"].as_str()), (Some("domain"), Some("already_claimed")));

    let unknown = cmd("claim", "{}");
    let rejection: serde_json::Value = serde_json::from_slice(&unknown.stdout).unwrap();
    assert_eq!(rejection["kind"], "invalid");
    assert!(rejection["message"].as_str().unwrap().contains("claim_task"));

    // Idempotency from the command line: the same key, the first result.
    let alloc = |key: &str| {
        agentlog(&[
            "cmd",
            "--data",
            data,
            "--json",
            "--idempotency-key",
            key,
            "allocate_budget",
            r#"{"budget_id": "b", "amount": 5}"#,
        ])
    };
    let first = json(&alloc("k1"));
    let second = json(&alloc("k1"));
    assert_eq!(second["duplicate"], true);
    assert_eq!(first["first_seq"], second["first_seq"]);
    assert_eq!(json(&agentlog(&["verify", "--data", data, "--json"]))["ok"], true);
}

#[test]
fn verify_names_the_first_damaged_seq() {
    let dir = tempfile::tempdir().unwrap();
    demo(dir.path(), 3);
    {
        // Change one stored event behind agentlog's back, keeping it decodable.
        let cfs = ["events", "streams", "ids", "idem", "meta"];
        let db =
            agentlog_log::rocksdb::DB::open_cf(&agentlog_log::rocksdb::Options::default(), dir.path(), cfs).unwrap();
        let events = db.cf_handle("events").unwrap();
        let key = 42u64.to_be_bytes();
        let mut value = db.get_cf(events, key).unwrap().unwrap();
        let actor = agentlog_log::codec::decode(&value).unwrap().actor;
        let at = value.windows(actor.len()).position(|w| w == actor.as_bytes()).expect("the actor is stored as text");
        value[at] ^= 0x20; // change the case of its first letter
        db.put_cf(events, key, value).unwrap();
    }
    let out = agentlog(&["verify", "--data", dir.path().to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(stdout(&out).contains("first bad seq 42"), "{}", stdout(&out));
    let out = agentlog(&["verify", "--data", dir.path().to_str().unwrap(), "--json"]);
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["first_bad_seq"], 42);
}

#[test]
fn verify_finds_a_stream_index_entry_that_no_event_has() {
    let dir = tempfile::tempdir().unwrap();
    demo(dir.path(), 4);
    {
        let cfs = ["events", "streams", "ids", "idem", "meta"];
        let db =
            agentlog_log::rocksdb::DB::open_cf(&agentlog_log::rocksdb::Options::default(), dir.path(), cfs).unwrap();
        let streams = db.cf_handle("streams").unwrap();
        let stream = b"task/task-00001";
        let mut key = (stream.len() as u16).to_be_bytes().to_vec();
        key.extend_from_slice(stream);
        key.extend_from_slice(&999u64.to_be_bytes());
        db.put_cf(streams, key, 5u64.to_be_bytes()).unwrap();
    }
    let out = agentlog(&["verify", "--data", dir.path().to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(stdout(&out).contains("task/task-00001 version 999"), "{}", stdout(&out));
}

#[test]
fn a_missing_locked_or_corrupt_data_dir_gets_a_clear_message() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nothing-here");
    for command in ["stats", "verify", "tail"] {
        let out = agentlog(&[command, "--data", missing.to_str().unwrap()]);
        assert!(!out.status.success());
        assert!(stderr(&out).contains("no agentlog data at"), "{command}: {}", stderr(&out));
        assert!(!stderr(&out).contains("panicked"));
    }

    let live = dir.path().join("live");
    let _held = agentlog_log::EmbeddedLog::open(&live, Default::default()).unwrap();
    let out =
        agentlog(&["cmd", "--data", live.to_str().unwrap(), "allocate_budget", r#"{"budget_id": "b", "amount": 1}"#]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("in use by another agentlog process"), "{}", stderr(&out));
    // Reading a store that another process holds works.
    assert!(agentlog(&["stats", "--data", live.to_str().unwrap()]).status.success());

    let corrupt = dir.path().join("corrupt");
    std::fs::create_dir_all(&corrupt).unwrap();
    std::fs::write(corrupt.join("CURRENT"), b"MANIFEST-garbage\n").unwrap();
    for command in ["stats", "verify"] {
        let out = agentlog(&[command, "--data", corrupt.to_str().unwrap()]);
        assert!(!out.status.success());
        let said = format!("{}{}", stdout(&out), stderr(&out));
        assert!(said.contains("is damaged"), "{command}: {said}");
        assert!(said.contains(&format!("{}/CURRENT", corrupt.display())), "{command} names the file: {said}");
        assert!(!said.contains("panicked"));
    }
}

fn serve_config(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_agentlog"));
    command.args(["serve", "--print-config"]).args(args);
    for (name, _) in std::env::vars().filter(|(n, _)| n.starts_with("AGENTLOG_")) {
        command.env_remove(name);
    }
    command.envs(env.iter().copied()).output().expect("run agentlog serve --print-config")
}

#[test]
fn serve_configuration_layers_defaults_file_environment_and_flags() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("agentlog.toml");
    std::fs::write(
        &file,
        "data = \"/var/lib/agentlog\"\nhttp = \"0.0.0.0:9000\"\n[nats]\nurl = \"nats://file:4222\"\n[stream]\nreplicas = 3\n",
    )
    .unwrap();
    let path = file.to_str().unwrap();
    let config = |out: &Output| -> toml::Table {
        assert!(out.status.success(), "{}", stderr(out));
        stdout(out).parse().unwrap()
    };
    let defaults = config(&serve_config(&[], &[]));
    assert_eq!(defaults["nats"]["url"].as_str(), Some("nats://127.0.0.1:4222"));
    assert_eq!(defaults["mirror"]["sync"].as_bool(), Some(false));

    let from_file = config(&serve_config(&["--config", path], &[]));
    assert_eq!(from_file["data"].as_str(), Some("/var/lib/agentlog"));
    assert_eq!(from_file["stream"]["replicas"].as_integer(), Some(3));
    assert_eq!(from_file["stream"]["name"].as_str(), Some("AGENTLOG"), "unset keys keep their defaults");

    let env =
        [("AGENTLOG_NATS_URL", "nats://env:4222"), ("AGENTLOG_MIRROR_SYNC", "true"), ("AGENTLOG_HTTP", "127.0.0.1:1")];
    let layered = config(&serve_config(&["--config", path, "--http", "127.0.0.1:2"], &env));
    assert_eq!(layered["nats"]["url"].as_str(), Some("nats://env:4222"), "the environment overrides the file");
    assert_eq!(layered["mirror"]["sync"].as_bool(), Some(true));
    assert_eq!(layered["http"].as_str(), Some("127.0.0.1:2"), "a flag overrides the environment");
    assert_eq!(layered["data"].as_str(), Some("/var/lib/agentlog"));
}

#[test]
fn serve_configuration_rejects_unknown_keys_and_bad_values_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("agentlog.toml");
    std::fs::write(&file, "[nats]\nurl = \"nats://x:4222\"\ntls-requred = true\n").unwrap();
    let out = serve_config(&["--config", file.to_str().unwrap()], &[]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("tls-requred"), "{}", stderr(&out));

    let out = serve_config(&[], &[("AGENTLOG_STREAM_REPLICAS", "2")]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("stream.replicas is 2"), "{}", stderr(&out));

    let out = serve_config(&[], &[("AGENTLOG_MIRROR_CATCH_UP_TIMEOUT_SECONDS", "soon")]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("catch-up-timeout-seconds"), "{}", stderr(&out));
}
