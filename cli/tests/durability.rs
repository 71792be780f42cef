//! Durability as an operator meets it: `verify --deep` finds damage that a
//! plain open cannot see and names the file; a damaged projection store
//! refuses to open with a message that says what to do; a backup restores
//! to a log that verifies and takes new commands, in embedded mode and from
//! a running node, which takes the backup through its control socket while
//! commands keep coming.
mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use agentlog_commands::Command as Cmd;
use agentlog_commands::command::AllocateBudget;
use agentlog_commands::wire::Client;
use agentlog_tests::nats::NatsServer;

fn agentlog(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_agentlog")).args(args).output().expect("run agentlog")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn json(output: &Output) -> serde_json::Value {
    serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}\nstderr: {}", text(&output.stdout), text(&output.stderr)))
}

fn demo(dir: &Path) {
    let out = agentlog(&["demo", "--seed", "5", "--agents", "5", "--tasks", "80", "--days", "2", "--data", path(dir)]);
    assert!(out.status.success(), "{}", text(&out.stderr));
}

fn path(dir: &Path) -> &str {
    dir.to_str().unwrap()
}

/// The deep verify's check named `name` (the first, when there are several).
fn check<'a>(report: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["check"] == name)
        .unwrap_or_else(|| panic!("no check {name} in {report}"))
}

fn deep_verify(data: &Path) -> (bool, serde_json::Value) {
    let out = agentlog(&["verify", "--data", path(data), "--deep", "--json"]);
    let report = json(&out);
    assert_eq!(out.status.success(), report["ok"] == true, "the exit code agrees with the report: {report}");
    (out.status.success(), report)
}

/// Inverts four bytes in the middle of `file`.
fn overwrite_middle(file: &Path) {
    let mut bytes = std::fs::read(file).unwrap();
    let at = bytes.len() / 2;
    for byte in &mut bytes[at..at + 4] {
        *byte ^= 0xff;
    }
    std::fs::write(file, bytes).unwrap();
}

fn files(dir: &Path, suffix: &str) -> Vec<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().ends_with(suffix))
        .collect();
    found.sort();
    found
}

fn name(file: &Path) -> String {
    file.file_name().unwrap().to_string_lossy().into_owned()
}

#[test]
fn deep_verify_passes_a_whole_directory_and_names_each_damaged_file() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path();
    demo(data);
    let archived = agentlog(&["archive", "run", "--data", path(data)]);
    assert!(archived.status.success(), "{}", text(&archived.stderr));

    let (ok, report) = deep_verify(data);
    assert!(ok, "{report}");
    for name in ["wal storage", "wal chain", "projection storage", "projections", "archive"] {
        assert_eq!(check(&report, name)["ok"], true, "{name}: {report}");
        assert_eq!(check(&report, name)["skipped"], false, "{name}: {report}");
    }
    assert!(check(&report, "archive")["detail"].as_str().unwrap().contains("agreeing with the WAL"));

    // The projection store's write-ahead log, damaged in its middle.
    let projections = data.join("projections");
    let wal = files(&projections, ".log");
    assert_eq!(wal.len(), 1, "{wal:?}");
    overwrite_middle(&wal[0]);
    let (ok, report) = deep_verify(data);
    assert!(!ok);
    let damaged = check(&report, "projection storage");
    assert_eq!(damaged["ok"], false);
    assert!(damaged["detail"].as_str().unwrap().contains(&name(&wal[0])), "{damaged}");
    let status = agentlog(&["projections", "status", "--data", path(data)]);
    assert!(!status.status.success());
    assert!(text(&status.stderr).contains(&name(&wal[0])), "{}", text(&status.stderr));
    assert!(text(&status.stderr).contains("agentlog projections rebuild"), "{}", text(&status.stderr));
    // The projections are derived: moved aside, they are rebuilt.
    std::fs::rename(&projections, data.join("projections.damaged")).unwrap();
    assert!(agentlog(&["projections", "rebuild", "--data", path(data)]).status.success());
    assert!(deep_verify(data).0);

    // A data block of the events' table file: every open succeeds (RocksDB
    // checks data blocks when it reads them), the deep scan finds it.
    {
        let families = ["events", "streams", "ids", "idem", "meta"];
        let db = agentlog_log::rocksdb::DB::open_cf(&agentlog_log::rocksdb::Options::default(), data, families)
            .expect("open the WAL");
        for family in families {
            db.flush_cf(db.cf_handle(family).unwrap()).unwrap();
        }
    }
    let tables = files(data, ".sst");
    let events = tables.iter().max_by_key(|p| std::fs::metadata(p).unwrap().len()).unwrap();
    overwrite_middle(events);
    let (ok, report) = deep_verify(data);
    assert!(!ok);
    let damaged = check(&report, "wal storage");
    assert_eq!(damaged["ok"], false);
    assert!(damaged["detail"].as_str().unwrap().contains(&name(events)), "{damaged}");
    let human = agentlog(&["verify", "--data", path(data), "--deep"]);
    assert!(!human.status.success());
    assert!(text(&human.stdout).contains("DAMAGED wal storage"), "{}", text(&human.stdout));
}

#[test]
fn deep_verify_after_a_prune_skips_only_the_projections() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path();
    demo(data);
    let archived = agentlog(&["archive", "run", "--data", path(data)]);
    assert!(archived.status.success(), "{}", text(&archived.stderr));
    // After a prune the views cannot be refolded from the WAL alone: that
    // check is skipped, said why, and the directory is still whole.
    let archive = json(&agentlog(&["archive", "verify", "--data", path(data), "--json"]));
    let last_day = archive["last_day"].as_str().unwrap().to_owned();
    let pruned = agentlog(&["archive", "prune", "--data", path(data), "--before", &last_day]);
    assert!(pruned.status.success(), "{}", text(&pruned.stderr));
    let (ok, report) = deep_verify(data);
    assert!(ok, "a pruned directory is whole: {report}");
    assert_eq!(check(&report, "projections")["skipped"], true, "{report}");
    assert!(check(&report, "projections")["detail"].as_str().unwrap().contains("pruned"), "{report}");
    assert_eq!(check(&report, "archive")["ok"], true, "{report}");
    assert_eq!(check(&report, "wal chain")["ok"], true, "{report}");
}

#[test]
fn an_embedded_backup_restores_to_a_log_that_verifies_and_takes_new_commands() {
    let dir = tempfile::tempdir().unwrap();
    let (data, backups, restored) = (dir.path().join("data"), dir.path().join("backups"), dir.path().join("restored"));
    demo(&data);
    let head = json(&agentlog(&["stats", "--data", path(&data), "--json"]))["last_seq"].as_u64().unwrap();

    let out = agentlog(&["backup", "--data", path(&data), "--to", path(&backups), "--json"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let taken = json(&out);
    assert_eq!(taken["head_before"], head);
    assert_eq!(taken["taken_by"], "this process");
    assert!(taken["projections_backup_id"].is_u64(), "the projections are backed up too: {taken}");

    let out = agentlog(&["restore", "--from", path(&backups), "--to", path(&restored), "--json"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let back = json(&out);
    assert_eq!(back["last_seq"], head);
    assert_eq!(back["events_verified"], head);
    assert_eq!(back["projections_position"], head, "{back}");
    assert!(deep_verify(&restored).0);

    // An older backup brings back the projections taken with it, even when
    // a newer projections backup was taken in the same second.
    let out = agentlog(&["cmd", "--data", path(&data), "allocate_budget", r#"{"budget_id": "later", "amount": 1}"#]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let projections = agentlog(&["projections", "rebuild", "--data", path(&data)]);
    assert!(projections.status.success(), "{}", text(&projections.stderr));
    let second = json(&agentlog(&["backup", "--data", path(&data), "--to", path(&backups), "--json"]));
    assert_eq!(second["head_before"], head + 1);
    let older = dir.path().join("older");
    let out = agentlog(&["restore", "--from", path(&backups), "--to", path(&older), "--backup-id", "1", "--json"]);
    let back_then = json(&out);
    assert_eq!(back_then["last_seq"], head);
    assert_eq!(back_then["projections_position"], head, "{back_then}");

    // A restore never overwrites a store.
    let again = agentlog(&["restore", "--from", path(&backups), "--to", path(&restored)]);
    assert!(!again.status.success());
    assert!(text(&again.stderr).contains("is not empty"), "{}", text(&again.stderr));

    // The restored log takes commands; its chain continues from the backup's head.
    let out = agentlog(&[
        "cmd",
        "--data",
        path(&restored),
        "--json",
        "allocate_budget",
        r#"{"budget_id": "after-restore", "amount": 5}"#,
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(json(&out)["first_seq"], head + 1);
    let verified = json(&agentlog(&["verify", "--data", path(&restored), "--json"]));
    assert_eq!(verified["ok"], true);
    assert_eq!(verified["last_seq"], head + 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_running_node_takes_a_backup_through_its_control_socket_while_commands_come() {
    let server = NatsServer::start();
    let dir = tempfile::tempdir().unwrap();
    let (data, backups, restored) = (dir.path().join("data"), dir.path().join("backups"), dir.path().join("restored"));
    let mut node = common::start(&server, &data);
    let client = Client::new(async_nats::connect(server.url()).await.unwrap(), "test");

    // Four producers allocate budgets until stopped, each command with its
    // idempotency key; they note the highest seq acknowledged to them.
    let (stop, acked) = (Arc::new(AtomicBool::new(false)), Arc::new(tokio::sync::watch::channel(0u64).0));
    let writers: Vec<_> = (0..4)
        .map(|w| {
            let (client, stop, acked) = (client.clone(), stop.clone(), acked.clone());
            tokio::spawn(async move {
                let mut sent = 0u64;
                while !stop.load(Ordering::Relaxed) || sent < 50 {
                    let command = Cmd::AllocateBudget(AllocateBudget { budget_id: format!("b{w}"), amount: 1 });
                    let key = format!("w{w}-{sent}");
                    let accepted = client.execute(&command, Some(&key)).await.expect("the node accepts the command");
                    acked.send_modify(|seq| *seq = (*seq).max(accepted.last_seq));
                    sent += 1;
                }
                sent
            })
        })
        .collect();
    let mut progress = acked.subscribe();
    common::within(Duration::from_secs(30), "200 commands acknowledged", progress.wait_for(|seq| *seq >= 200))
        .await
        .unwrap();
    // A node's backup holds what its mirror held when the backup began (the
    // stream has the rest): read the mirror's head just before asking.
    let mirrored_before = common::metric(&node, "agentlog_mirror_seq");
    let acknowledged_before = *acked.borrow();

    // The node holds the store's lock: the CLI asks it through the socket.
    let out = tokio::task::spawn_blocking({
        let (data, backups) = (data.clone(), backups.clone());
        move || agentlog(&["backup", "--data", path(&data), "--to", path(&backups), "--json"])
    })
    .await
    .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let taken = json(&out);
    assert_eq!(taken["taken_by"], "the running node that holds it");
    assert!(taken["head_before"].as_u64().unwrap() >= mirrored_before, "{taken}");
    stop.store(true, Ordering::Relaxed);
    let mut sent = 0;
    for writer in writers {
        sent += writer.await.unwrap();
    }
    assert!(*acked.borrow() > acknowledged_before, "commands went on during the backup");
    // A node killed outright leaves its socket behind; the next start
    // replaces it, and a stopped node removes it.
    node.kill();
    assert!(common_socket(&data).exists(), "SIGKILL leaves the socket");
    let mut node = common::start(&server, &data);
    let out = agentlog(&["backup", "--data", path(&data), "--to", path(&backups), "--json"]);
    assert!(out.status.success(), "the restarted node answers on its socket: {}", text(&out.stderr));
    assert_eq!(json(&out)["kept"], serde_json::json!([1, 2]));
    node.terminate();
    assert!(!common_socket(&data).exists(), "a stopped node removes its control socket");
    let original = json(&agentlog(&["verify", "--data", path(&data), "--json"]));
    assert_eq!(original["last_seq"].as_u64().unwrap(), sent, "one event per command");

    let out = agentlog(&["restore", "--from", path(&backups), "--to", path(&restored), "--backup-id", "1", "--json"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let back = json(&out);
    let restored_head = back["last_seq"].as_u64().unwrap();
    assert!(restored_head >= mirrored_before, "everything the mirror held when the backup began: {back}");
    assert!(restored_head < sent, "the backup is a point in time before the end: {back}");

    // A node on the restored mirror follows the stream from the backup's
    // head, takes commands, and ends with the same log as the original.
    let mut revived = common::start(&server, &restored);
    let command = Cmd::AllocateBudget(AllocateBudget { budget_id: "after-restore".into(), amount: 1 });
    let accepted = client.execute(&command, None).await.expect("the restored node accepts commands");
    assert_eq!(accepted.first_seq, sent + 1);
    revived.terminate();
    let verified = json(&agentlog(&["verify", "--data", path(&restored), "--json"]));
    assert_eq!(verified["ok"], true);
    assert_eq!(verified["last_seq"], sent + 1);
    let event = |dir: &Path, seq: u64| {
        text(&agentlog(&["tail", "--data", path(dir), "--json", "--from", &seq.to_string(), "--limit", "1"]).stdout)
    };
    assert_eq!(event(&restored, sent), event(&data, sent), "the chains agree where both have events");

    // A mirror rebuilt from the stream alone holds what the restored and
    // continued one holds, key for key in every column family.
    let rebuilt = dir.path().join("rebuilt");
    let out = agentlog(&["mirror", "rebuild", "--nats", &server.url(), "--data", path(&rebuilt), "--json"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let report = json(&out);
    assert_eq!(report["last_seq"], sent + 1);
    assert_eq!(report["events_verified"], sent + 1);
    assert_eq!(contents(&rebuilt), contents(&restored));
    let again = agentlog(&["mirror", "rebuild", "--nats", &server.url(), "--data", path(&rebuilt)]);
    assert!(!again.status.success(), "a rebuild never writes over a store");
    assert!(text(&again.stderr).contains("move it aside"), "{}", text(&again.stderr));
    let elsewhere = agentlog(&[
        "mirror",
        "rebuild",
        "--nats",
        &server.url(),
        "--data",
        path(&dir.path().join("other")),
        "--config",
        path(&write_config(dir.path(), "[stream]\nname = \"NOT_THERE\"\n")),
    ]);
    assert!(!elsewhere.status.success(), "a rebuild never creates a stream");
    assert!(text(&elsewhere.stderr).contains("no JetStream stream NOT_THERE"), "{}", text(&elsewhere.stderr));

    // A data directory whose path is too long for a Unix socket: the node
    // says so instead of starting without its control socket.
    let long = dir.path().join("d".repeat(120));
    let out = Command::new(env!("CARGO_BIN_EXE_agentlog"))
        .args(["serve", "--nats", &server.url(), "--http", "off", "--data", path(&long)])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("cannot create the control socket"), "{}", text(&out.stderr));
}

fn write_config(dir: &Path, toml: &str) -> PathBuf {
    let file = dir.join("node.toml");
    std::fs::write(&file, toml).unwrap();
    file
}

/// A column family's name and every key and value in it.
type Family = (String, Vec<(Box<[u8]>, Box<[u8]>)>);

/// Every key and value of every column family of the WAL at `dir`.
fn contents(dir: &Path) -> Vec<Family> {
    use agentlog_log::rocksdb::{DB, IteratorMode, Options};
    let families = DB::list_cf(&Options::default(), dir).unwrap();
    let db = DB::open_cf_for_read_only(&Options::default(), dir, &families, false).unwrap();
    let mut all = Vec::new();
    for family in &families {
        let cf = db.cf_handle(family).unwrap();
        let pairs: Vec<_> = db.iterator_cf(cf, IteratorMode::Start).map(Result::unwrap).collect();
        assert!(family == "default" || !pairs.is_empty(), "{family} holds keys");
        all.push((family.clone(), pairs));
    }
    all.sort();
    all
}

fn common_socket(data: &Path) -> PathBuf {
    agentlog_node::control::socket(data)
}
