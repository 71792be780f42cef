//! `agentlog bench --archive`: the nightly archive's figures. Archive
//! throughput (one thread) and bytes per event against the WAL's; `scan`
//! throughput, whole and with selective filters; and, in the same run, DuckDB
//! (Python package, one thread) writing the same rows to zstd Parquet, as the
//! reference for file size, and scanning for one session.
use std::path::Path;
use std::process::Command;
use std::time::Instant;

use agentlog_archive::{Day, Filter, Settings};
use agentlog_log::wal::Store;
use anyhow::{Context, bail};

/// Total size of the files under `dir`, skipping the directories named.
pub(crate) fn size_of(dir: &Path, skip: &[&str]) -> anyhow::Result<u64> {
    let mut total = 0;
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let meta = entry.metadata()?;
        if meta.is_dir() {
            if !skip.iter().any(|s| entry.file_name() == *s) {
                total += size_of(&entry.path(), &[])?;
            }
        } else {
            total += meta.len();
        }
    }
    Ok(total)
}

/// A session in the middle of the log: the one of the event halfway.
fn middle_session(store: &Store) -> anyhow::Result<String> {
    let head = store.head()?.last_seq;
    for seq in (head / 2)..head {
        let event = store.read(seq, 1)?.pop().context("an event")?;
        if let Some(agentlog_log::Body::SessionHeartbeat(h)) = &event.body {
            return Ok(h.session_id.clone());
        }
    }
    bail!("no session heartbeat in the second half of the log")
}

fn scan(root: &Path, filter: Filter) -> anyhow::Result<(f64, u64, agentlog_archive::scan::ScanStats)> {
    let started = Instant::now();
    let mut scan = agentlog_archive::scan(root, filter)?;
    let mut rows = 0u64;
    for event in scan.by_ref() {
        std::hint::black_box(event?);
        rows += 1;
    }
    Ok((started.elapsed().as_secs_f64(), rows, scan.stats))
}

const DUCKDB: &str = r#"
import json, sys, time, os, duckdb
root, out, session = sys.argv[1], sys.argv[2], sys.argv[3]
con = duckdb.connect()
con.execute("SET threads = 1")
glob = root + "/date=*/*.parquet"
started = time.perf_counter()
con.execute(f"CREATE TABLE events AS SELECT * EXCLUDE (date) FROM read_parquet('{glob}', hive_partitioning=true) ORDER BY seq")
loaded = time.perf_counter() - started
started = time.perf_counter()
con.execute(f"COPY events TO '{out}' (FORMAT parquet, COMPRESSION zstd)")
written = time.perf_counter() - started
started = time.perf_counter()
rows = con.execute(f"SELECT count(*) FROM read_parquet('{glob}') WHERE session_id = ?", [session]).fetchall()[0][0]
session_scan = time.perf_counter() - started
print(json.dumps({"load_s": loaded, "write_s": written, "bytes": os.path.getsize(out), "session_rows": rows, "session_scan_s": session_scan, "version": duckdb.__version__}))
"#;

pub async fn run(data: Option<&Path>, events: u64, dir: Option<&Path>, json: bool) -> anyhow::Result<()> {
    let say = |what: &str| {
        if !json {
            eprintln!("measuring {what} ...");
        }
    };
    let scratch = match dir {
        Some(dir) => tempfile::tempdir_in(dir)?,
        None => tempfile::tempdir()?,
    };
    let data = match data {
        Some(data) => data.to_owned(),
        None => {
            let data = scratch.path().join("data");
            let log = crate::projections::simulate(&data, events, json).await?;
            drop(log);
            data
        }
    };
    let store = Store::open_read_only(&data).context("cannot open the log in --data")?;
    let head = store.head()?.last_seq;
    let wal_bytes = size_of(&data, &["projections", "archive"])?;
    let root = scratch.path().join("archive");

    say("the archive run (one thread)");
    let started = Instant::now();
    let report = agentlog_archive::run(
        &store,
        &root,
        Day::of(agentlog_log::Timestamp::from_nanos(u64::MAX)),
        &Settings::default(),
        &mut |_| {},
    )?;
    let archive_s = started.elapsed().as_secs_f64();
    let archived: u64 = report.written.iter().map(|w| w.manifest.rows).sum();
    let archive_bytes: u64 = report.written.iter().map(|w| w.bytes()).sum();
    let files: usize = report.written.iter().map(|w| w.manifest.files.len()).sum();

    say("verify");
    let started = Instant::now();
    agentlog_archive::verify(&root, Some(&store), &mut |_, _, _| {})?;
    let verify_s = started.elapsed().as_secs_f64();

    say("scans");
    let session = middle_session(&store)?;
    let (all_s, all_rows, _) = scan(&root, Filter::default())?;
    let (type_s, type_rows, type_stats) =
        scan(&root, Filter { event_type: Some("task_failed".into()), ..Filter::default() })?;
    let (session_s, session_rows, session_stats) =
        scan(&root, Filter { session: Some(session.clone()), ..Filter::default() })?;

    say("DuckDB writing the same rows (one thread)");
    let reference = scratch.path().join("duckdb.parquet");
    let output = Command::new("python3")
        .args([
            "-c",
            DUCKDB,
            root.to_str().context("a UTF-8 path")?,
            reference.to_str().context("a UTF-8 path")?,
            &session,
        ])
        .output()
        .context("cannot run python3 for the DuckDB reference (scripts/setup.sh installs duckdb)")?;
    if !output.status.success() {
        bail!("the DuckDB reference failed: {}", String::from_utf8_lossy(&output.stderr));
    }
    let duck: serde_json::Value = serde_json::from_slice(&output.stdout)?;
    let duck_bytes = duck["bytes"].as_u64().unwrap_or(0);
    if duck["session_rows"].as_u64() != Some(session_rows) {
        bail!("DuckDB finds {} rows of session {session}, scan found {session_rows}", duck["session_rows"]);
    }

    let mb = |bytes: u64| bytes as f64 / 1e6;
    let figures = serde_json::json!({
        "events": head,
        "days": report.written.len(),
        "files": files,
        "wal_bytes": wal_bytes,
        "wal_bytes_per_event": wal_bytes as f64 / head as f64,
        "archive": {
            "seconds": archive_s,
            "events_per_s": archived as f64 / archive_s,
            "mb_written_per_s": mb(archive_bytes) / archive_s,
            "bytes": archive_bytes,
            "bytes_per_event": archive_bytes as f64 / archived as f64,
            "size_vs_wal": archive_bytes as f64 / wal_bytes as f64,
        },
        "verify_events_per_s": archived as f64 / verify_s,
        "scan": {
            "all_events_per_s": all_rows as f64 / all_s,
            "type_task_failed": { "seconds": type_s, "rows": type_rows, "row_groups": type_stats.row_groups, "skipped": type_stats.row_groups_skipped },
            "one_session": { "session": session, "seconds": session_s, "rows": session_rows, "row_groups": session_stats.row_groups, "skipped": session_stats.row_groups_skipped },
        },
        "duckdb": {
            "version": duck["version"],
            "write_seconds": duck["write_s"],
            "events_per_s": head as f64 / duck["write_s"].as_f64().unwrap_or(f64::NAN),
            "bytes": duck_bytes,
            "our_size_vs_duckdb": archive_bytes as f64 / duck_bytes as f64,
            "session_scan_seconds": duck["session_scan_s"],
        },
    });
    if json {
        println!("{figures}");
        return Ok(());
    }
    println!("archive benchmark: {head} events over {} days, {files} files", report.written.len());
    println!(
        "  archive run        {:>12.0} events/s  {:>7.1} MB/s written  ({archive_s:.2} s, one thread)",
        archived as f64 / archive_s,
        mb(archive_bytes) / archive_s
    );
    println!(
        "  on disk            {:>12.1} bytes/event archived, {:.1} in the WAL ({:.2}x)",
        archive_bytes as f64 / archived as f64,
        wal_bytes as f64 / head as f64,
        archive_bytes as f64 / wal_bytes as f64
    );
    println!(
        "  DuckDB reference   {:>12.1} bytes/event ({:.2}x ours is of DuckDB's), write {:.0} events/s (one thread, DuckDB {})",
        duck_bytes as f64 / head as f64,
        archive_bytes as f64 / duck_bytes as f64,
        head as f64 / duck["write_s"].as_f64().unwrap_or(f64::NAN),
        duck["version"].as_str().unwrap_or("?")
    );
    println!("  verify             {:>12.0} events/s", archived as f64 / verify_s);
    println!("  scan, everything   {:>12.0} events/s", all_rows as f64 / all_s);
    println!(
        "  scan, one type     {:>12.3} s  {type_rows} rows (task_failed), {}/{} row groups skipped",
        type_s, type_stats.row_groups_skipped, type_stats.row_groups
    );
    println!(
        "  scan, one session  {:>12.3} s  {session_rows} rows, {}/{} row groups skipped; DuckDB {:.3} s",
        session_s,
        session_stats.row_groups_skipped,
        session_stats.row_groups,
        duck["session_scan_s"].as_f64().unwrap_or(f64::NAN)
    );
    Ok(())
}
