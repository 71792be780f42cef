//! The Parquet archive as users run it: `agentlog archive run|verify|prune|scan`
//! on a real embedded log, read back by bytes, rerun, killed, damaged, and
//! read by pyarrow and DuckDB (installed by scripts/setup.sh).
use std::path::Path;
use std::process::{Command, Output};

use agentlog_log::chain::to_hex;
use agentlog_log::wal::Store;
use agentlog_tests::incident::file_hashes;
use agentlog_tests::output::{failed, ok};

fn agentlog(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_agentlog")).args(args).output().expect("run agentlog")
}

fn json(output: Output) -> serde_json::Value {
    let out = ok(output);
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"))
}

/// The demo's default workload (three simulated days from 2026-01-01).
fn demo(data: &Path) {
    ok(agentlog(&["demo", "--data", data.to_str().unwrap(), "--json"]));
}

/// `<seq> <hex>` of every event the WAL holds, as `archive scan --hex` prints.
fn wal_lines(data: &Path, keep: impl Fn(&agentlog_log::Envelope) -> bool) -> Vec<String> {
    let store = Store::open_read_only(data).unwrap();
    let mut lines = Vec::new();
    let last = store.head().unwrap().last_seq;
    let mut seq = 1;
    while seq <= last {
        seq += store
            .for_each_stored(seq, 4096, |seq, bytes| {
                if keep(&agentlog_log::codec::decode(bytes)?) {
                    lines.push(format!("{seq} {}", to_hex(bytes)));
                }
                Ok(())
            })
            .unwrap() as u64;
    }
    lines
}

fn scan(out: &Path, filters: &[&str]) -> Vec<String> {
    let mut args = vec!["archive", "scan", "--out", out.to_str().unwrap(), "--hex"];
    args.extend_from_slice(filters);
    ok(agentlog(&args)).lines().map(str::to_owned).collect()
}

fn run(data: &Path, out: &Path, extra: &[&str]) -> serde_json::Value {
    let mut args = vec!["archive", "run", "--data", data.to_str().unwrap(), "--out", out.to_str().unwrap(), "--json"];
    args.extend_from_slice(extra);
    json(agentlog(&args))
}

const SMALL_FILES: [&str; 4] = ["--max-rows-per-file", "2000", "--row-group-rows", "500"];

#[test]
fn scan_gives_back_every_event_by_bytes_and_reruns_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (data, first, second) = (dir.path().join("data"), dir.path().join("a1"), dir.path().join("a2"));
    demo(&data);
    let report = run(&data, &first, &SMALL_FILES);
    let days: Vec<&str> = report["written"].as_array().unwrap().iter().map(|d| d["date"].as_str().unwrap()).collect();
    assert_eq!(days, ["2026-01-01", "2026-01-02", "2026-01-03"]);
    assert!(report["written"][0]["files"].as_u64().unwrap() > 1, "a day of ~5000 events in files of 2000 rows");
    assert_eq!(report["pending_events"], 0);

    // Every event back, by bytes, in order.
    let all = wal_lines(&data, |_| true);
    assert!(all.len() > 10_000);
    assert_eq!(scan(&first, &[]), all);

    // Filters give what filtering the WAL gives.
    let claimed = wal_lines(&data, |e| e.body.as_ref().is_some_and(|b| b.type_name() == "task_claimed"));
    assert!(!claimed.is_empty());
    assert_eq!(scan(&first, &["--type", "task_claimed"]), claimed);
    let session = "019b76f9-cbfe-7808-ad23-64249a3381ee";
    let of_session = scan(&first, &["--session", session]);
    assert!(of_session.len() > 100, "{}", of_session.len());
    let json_lines =
        ok(agentlog(&["archive", "scan", "--out", first.to_str().unwrap(), "--session", session, "--json"]));
    for line in json_lines.lines() {
        let event: serde_json::Value = serde_json::from_str(line).unwrap();
        let body_session = event["body"]["session_id"].as_str();
        assert!(event["session_id"] == session || body_session == Some(session), "{line}");
    }
    assert_eq!(json_lines.lines().count(), of_session.len());
    let day2 = scan(&first, &["--from", "2026-01-02", "--to", "2026-01-02"]);
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(first.join("date=2026-01-02/_manifest.json")).unwrap()).unwrap();
    assert_eq!(day2.len() as u64, manifest["rows"].as_u64().unwrap());
    assert!(day2[0].starts_with(&format!("{} ", manifest["first_seq"])));
    assert_eq!(scan(&first, &["--from-seq", "100", "--to-seq", "109"]), all[99..109]);

    // Running again archives nothing and changes no byte.
    let before = file_hashes(&first);
    let again = run(&data, &first, &SMALL_FILES);
    assert_eq!(again["written"].as_array().unwrap().len(), 0);
    assert_eq!(file_hashes(&first), before);

    // The same events give the same bytes: into a new root, and a day rerun.
    run(&data, &second, &SMALL_FILES);
    assert_eq!(file_hashes(&second), before);
    std::fs::remove_dir_all(second.join("date=2026-01-03")).unwrap();
    let rerun = run(&data, &second, &SMALL_FILES);
    assert_eq!(rerun["written"][0]["date"], "2026-01-03");
    assert_eq!(file_hashes(&second), before);

    let verified = json(agentlog(&[
        "archive",
        "verify",
        "--out",
        first.to_str().unwrap(),
        "--data",
        data.to_str().unwrap(),
        "--json",
    ]));
    assert_eq!(verified["ok"], true);
    assert_eq!(verified["rows"].as_u64().unwrap(), all.len() as u64);
    assert_eq!(verified["wal_checked_through"].as_u64().unwrap(), all.len() as u64);
}

#[test]
fn a_killed_run_leaves_no_half_day_and_the_next_run_completes_it() {
    let dir = tempfile::tempdir().unwrap();
    let (data, killed, clean) = (dir.path().join("data"), dir.path().join("killed"), dir.path().join("clean"));
    ok(agentlog(&["demo", "--data", data.to_str().unwrap(), "--days", "6", "--tasks", "1500", "--json"]));
    // Tiny files and row groups, so a run takes long enough to be caught midway.
    let settings = ["--max-rows-per-file", "300", "--row-group-rows", "50"];
    run(&data, &clean, &settings);
    let expected = file_hashes(&clean);

    // Kill it as soon as it is writing, then once a day is in place.
    let staging = killed.join(".staging");
    let mut kills = 0;
    for until_day_in_place in [false, true] {
        let mut child = Command::new(env!("CARGO_BIN_EXE_agentlog"))
            .args(["archive", "run", "--data", data.to_str().unwrap(), "--out", killed.to_str().unwrap()])
            .args(settings)
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let caught = loop {
            if child.try_wait().unwrap().is_some() {
                break false;
            }
            let writing = staging.is_dir() && std::fs::read_dir(&staging).unwrap().next().is_some();
            let days_in_place = std::fs::read_dir(&killed)
                .map(|d| d.filter(|e| !e.as_ref().unwrap().file_name().to_string_lossy().starts_with('.')).count());
            if writing && (!until_day_in_place || days_in_place.unwrap_or(0) > 0) {
                child.kill().unwrap();
                break true;
            }
            std::thread::sleep(std::time::Duration::from_millis(2));
        };
        child.wait().unwrap();
        if caught {
            kills += 1;
        }
        // Whatever is in place is whole: every day has its manifest and the
        // files it lists, and a reader's glob finds nothing else.
        for entry in std::fs::read_dir(&killed).unwrap() {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_str().unwrap().to_owned();
            if name == ".staging" || name == ".lock" {
                continue;
            }
            assert!(name.starts_with("date="), "{name}");
            assert!(path.join("_manifest.json").is_file(), "{name} is in place without its manifest");
        }
        ok(agentlog(&["archive", "verify", "--out", killed.to_str().unwrap(), "--data", data.to_str().unwrap()]));
    }
    assert!(kills >= 1, "no run was caught midway; the log is too small to test this");

    let finished = run(&data, &killed, &settings);
    assert!(!finished["written"].as_array().unwrap().is_empty());
    assert!(!staging.exists(), "a finished run clears .staging");
    assert_eq!(file_hashes(&killed), expected, "the interrupted archive ends byte for byte like an uninterrupted one");
}

#[test]
fn prune_refuses_a_missing_or_altered_archive_and_then_drops_the_archived_days() {
    let dir = tempfile::tempdir().unwrap();
    let (data, out) = (dir.path().join("data"), dir.path().join("archive"));
    let (data_arg, out_arg) = (data.to_str().unwrap(), out.to_str().unwrap());
    demo(&data);
    run(&data, &out, &SMALL_FILES);
    let prune =
        || agentlog(&["archive", "prune", "--data", data_arg, "--out", out_arg, "--before", "2026-01-03", "--json"]);
    let day1 = out.join("date=2026-01-01");
    let part = std::fs::read_dir(&day1)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|x| x == "parquet"))
        .unwrap();
    let original = std::fs::read(&part).unwrap();

    // A flipped byte.
    let mut altered = original.clone();
    let middle = altered.len() / 2;
    altered[middle] ^= 0x40;
    std::fs::write(&part, &altered).unwrap();
    let err = failed(prune());
    assert!(err.contains("altered") && err.contains("2026-01-01"), "{err}");
    // A missing file.
    std::fs::remove_file(&part).unwrap();
    let err = failed(prune());
    assert!(err.contains("missing"), "{err}");
    std::fs::write(&part, &original).unwrap();
    // A stray file a glob would read.
    std::fs::write(day1.join("part-extra.parquet"), b"PAR1").unwrap();
    let err = failed(prune());
    assert!(err.contains("not listed"), "{err}");
    std::fs::remove_file(day1.join("part-extra.parquet")).unwrap();
    // A missing manifest, an edited manifest, a missing day.
    let manifest_path = out.join("date=2026-01-02/_manifest.json");
    let manifest = std::fs::read_to_string(&manifest_path).unwrap();
    std::fs::remove_file(&manifest_path).unwrap();
    let err = failed(prune());
    assert!(err.contains("no manifest"), "{err}");
    let rows: serde_json::Value = serde_json::from_str(&manifest).unwrap();
    let edited = manifest.replace(
        &format!("\"rows\": {},", rows["rows"]),
        &format!("\"rows\": {},", rows["rows"].as_u64().unwrap() + 1),
    );
    assert_ne!(edited, manifest);
    std::fs::write(&manifest_path, &edited).unwrap();
    let err = failed(prune());
    assert!(err.contains("2026-01-02"), "{err}");
    std::fs::write(&manifest_path, &manifest).unwrap();
    let day2 = out.join("date=2026-01-02");
    std::fs::rename(&day2, dir.path().join("moved")).unwrap();
    let err = failed(prune());
    assert!(err.contains("does not continue"), "{err}");
    std::fs::rename(dir.path().join("moved"), &day2).unwrap();
    // Every refusal left the WAL whole.
    let verified = json(agentlog(&["verify", "--data", data_arg, "--json"]));
    assert_eq!(verified["ok"], true);

    // Intact again: days 1 and 2 leave the WAL.
    let pruned = json(prune());
    assert_eq!(pruned["pruned_through_day"], "2026-01-02");
    assert_eq!(pruned["pruned_through_seq"], rows["last_seq"]);
    assert!(pruned["events_dropped"].as_u64().unwrap() > 1000, "{pruned}");
    let again = json(prune());
    assert_eq!(again["events_dropped"], 0, "pruning again drops nothing");

    // The WAL still verifies from the cut, the archive against it, and
    // reading below the cut says where the events went.
    let verified = json(agentlog(&["verify", "--data", data_arg, "--json"]));
    assert_eq!(verified["ok"], true);
    ok(agentlog(&["archive", "verify", "--out", out_arg, "--data", data_arg]));
    let err = failed(agentlog(&["tail", "--data", data_arg, "--from", "1", "--limit", "1"]));
    assert!(err.contains("archive"), "{err}");
    let stats = json(agentlog(&["stats", "--data", data_arg, "--json"]));
    assert_eq!(stats["pruned_through"], rows["last_seq"]);
    // Aggregates that go on after the cut still decide: agent-01 registered
    // on day 1 opens a session.
    ok(agentlog(&[
        "cmd",
        "--data",
        data_arg,
        "open_session",
        r#"{"agent_id":"agent-01","heartbeat_timeout_ms":60000}"#,
    ]));
    // The archive goes on from the cut: nothing new is closed yet.
    let after = run(&data, &out, &SMALL_FILES);
    assert_eq!(after["written"].as_array().unwrap().len(), 0, "{after}");
    // The archive's events are still all there, by bytes.
    assert_eq!(scan(&out, &["--to", "2026-01-02"]).len() as u64, rows["last_seq"].as_u64().unwrap());
}

#[test]
fn pyarrow_and_duckdb_read_the_archive_with_the_documented_types() {
    let dir = tempfile::tempdir().unwrap();
    let (data, out) = (dir.path().join("data"), dir.path().join("archive"));
    demo(&data);
    run(&data, &out, &SMALL_FILES);
    // A leftover of a killed run must not be read.
    std::fs::create_dir_all(out.join(".staging/date=2026-01-04")).unwrap();
    std::fs::write(out.join(".staging/date=2026-01-04/part-x.parquet"), b"half").unwrap();
    let events = Store::open_read_only(&data).unwrap().head().unwrap().last_seq;
    let script = r#"
import json, sys
import pyarrow as pa, pyarrow.dataset as ds, duckdb
root = sys.argv[1]
table = ds.dataset(root, format="parquet", partitioning="hive").to_table()
types = {f.name: str(f.type) for f in table.schema}
per_day = {}
for day in table.column("date").to_pylist():
    per_day[str(day)] = per_day.get(str(day), 0) + 1
glob = root + "/date=*/*.parquet"
duck = duckdb.sql(f"select count(*), count(distinct seq), min(seq), max(seq) from read_parquet('{glob}', hive_partitioning=true)").fetchall()[0]
duck_types = dict(duckdb.sql(f"select column_name, column_type from (describe select * from read_parquet('{glob}', hive_partitioning=true))").fetchall())
claims = duckdb.sql(f"select count(*) from read_parquet('{glob}') where event_type = 'task_claimed'").fetchall()[0][0]
print(json.dumps({"rows": table.num_rows, "types": types, "per_day": per_day, "duck": list(duck), "duck_types": duck_types, "claims": claims}))
"#;
    let output = Command::new("python3")
        .args(["-c", script, out.to_str().unwrap()])
        .output()
        .expect("python3 runs; scripts/setup.sh installs pyarrow and duckdb for this test");
    let result = json(output);
    assert_eq!(result["rows"].as_u64().unwrap(), events);
    assert_eq!(result["duck"], serde_json::json!([events, events, 1, events]));
    let types = &result["types"];
    for (column, expected) in [
        ("seq", "uint64"),
        ("event_id", "string"),
        ("ts", "timestamp[ns, tz=UTC]"),
        ("stream", "string"),
        ("stream_version", "uint64"),
        ("event_type", "dictionary<values=string, indices=int32, ordered=0>"),
        ("actor", "string"),
        ("session_id", "string"),
        ("task_id", "string"),
        ("agent_id", "string"),
        ("amount", "uint64"),
        ("correlation_id", "string"),
        ("causation_id", "string"),
        ("saga_id", "string"),
        ("body_json", "string"),
        ("envelope", "binary"),
        ("hash", "binary"),
    ] {
        assert_eq!(types[column], expected, "pyarrow's type of {column}");
    }
    let duck = &result["duck_types"];
    for (column, expected) in
        [("seq", "UBIGINT"), ("ts", "TIMESTAMPTZ_NS"), ("amount", "UBIGINT"), ("envelope", "BLOB"), ("date", "DATE")]
    {
        assert_eq!(duck[column], expected, "DuckDB's type of {column}");
    }
    for day in ["2026-01-01", "2026-01-02", "2026-01-03"] {
        let manifest: serde_json::Value =
            serde_json::from_slice(&std::fs::read(out.join(format!("date={day}/_manifest.json"))).unwrap()).unwrap();
        assert_eq!(result["per_day"][day], manifest["rows"], "{day}");
    }
    let claims = scan(&out, &["--type", "task_claimed"]).len() as u64;
    assert_eq!(result["claims"].as_u64().unwrap(), claims);
}
