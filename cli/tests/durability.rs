//! Durability as an operator meets it: `verify --deep` finds damage that a
//! plain open cannot see and names the file, and a damaged projection store
//! refuses to open with a message that says what to do.
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

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
