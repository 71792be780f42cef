//! `agentlog verify [--deep]`: is the data directory whole? Without
//! `--deep`, the log's sequence continuity, stream versions and hash chain.
//! With it, also every key of every column family of the WAL and of the
//! projection store read with checksums checked (RocksDB checks a table
//! file's data blocks only when it reads them), the projections rebuilt to
//! their checkpoints and compared, and the archive checked against the log.
use std::path::PathBuf;
use std::process::ExitCode;

use agentlog_log::chain::to_hex;
use agentlog_log::rocks::FamilyScan;
use agentlog_log::wal::{self, Store};
use agentlog_projections::{ProjectionStore, store};

use crate::{DataArg, progress, projections};

#[derive(clap::Args)]
pub struct VerifyArgs {
    #[command(flatten)]
    data: DataArg,
    #[arg(long)]
    json: bool,
    /// Also read every stored byte with its checksum (the WAL and the
    /// projection store), compare the projections with the log, and check
    /// the archive against the log.
    #[arg(long)]
    deep: bool,
    /// With --deep: the archive to check (default <data>/archive, when it exists).
    #[arg(long, requires = "deep")]
    archive: Option<PathBuf>,
}

pub fn verify(args: VerifyArgs) -> anyhow::Result<ExitCode> {
    if args.deep {
        return deep(&args);
    }
    let store = match Store::open_read_only(&args.data.data) {
        Ok(store) => store,
        Err(e @ (agentlog_log::Error::CorruptStore { .. } | agentlog_log::Error::Damaged { .. })) => {
            return Ok(report_damage(&args, None, &e.to_string()));
        }
        Err(e) => return Err(e.into()),
    };
    let head = store.head()?;
    let bar = progress::bar(head.last_seq, "verifying", args.json || head.last_seq < 200_000);
    let result = wal::verify(&store, &mut |done, total| {
        bar.set_length(total);
        bar.set_position(done);
    });
    bar.finish_and_clear();
    match result {
        Ok(report) => {
            if args.json {
                let out = serde_json::json!({
                    "ok": true,
                    "events": report.events,
                    "streams": report.streams,
                    "last_seq": report.last_seq,
                    "head_hash": to_hex(&report.head_hash),
                });
                println!("{out}");
            } else {
                println!("{}", chain_ok(&report));
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(agentlog_log::Error::Corrupt { seq, reason }) => Ok(report_damage(&args, Some(seq), &reason)),
        Err(e @ agentlog_log::Error::Damaged { .. }) => Ok(report_damage(&args, None, &e.to_string())),
        Err(other) => Err(other.into()),
    }
}

fn chain_ok(report: &wal::Report) -> String {
    format!(
        "ok: {} events in {} streams; seqs 1..{} continuous, stream versions without gaps, hash chain intact up to head {}",
        report.events,
        report.streams,
        report.last_seq,
        to_hex(&report.head_hash)
    )
}

fn report_damage(args: &VerifyArgs, seq: Option<u64>, reason: &str) -> ExitCode {
    if args.json {
        println!("{}", serde_json::json!({"ok": false, "first_bad_seq": seq, "reason": reason}));
    } else {
        match seq {
            Some(seq) => println!("DAMAGED: first bad seq {seq}: {reason}"),
            None => println!("DAMAGED: {reason}"),
        }
    }
    ExitCode::FAILURE
}

/// What one check of a deep verify found.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Ok,
    Damaged,
    /// Not made, and why is in the detail; not a failure.
    Skipped,
}

impl Outcome {
    fn label(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Damaged => "DAMAGED",
            Outcome::Skipped => "skipped",
        }
    }
}

/// One check of a deep verify and what it found.
struct Check {
    name: &'static str,
    outcome: Outcome,
    detail: String,
}

/// The checks of a deep verify, printed as they finish.
struct Checks {
    json: bool,
    done: Vec<Check>,
}

impl Checks {
    fn record(&mut self, name: &'static str, ok: bool, detail: String) {
        self.push(name, if ok { Outcome::Ok } else { Outcome::Damaged }, detail);
    }

    fn skip(&mut self, name: &'static str, why: String) {
        self.push(name, Outcome::Skipped, why);
    }

    fn push(&mut self, name: &'static str, outcome: Outcome, detail: String) {
        if !self.json {
            println!("{:<7} {name:<19} {detail}", outcome.label());
        }
        self.done.push(Check { name, outcome, detail });
    }

    fn storage(&mut self, name: &'static str, scans: &[FamilyScan]) -> bool {
        let keys: u64 = scans.iter().map(|s| s.keys).sum();
        let damaged: Vec<String> =
            scans.iter().filter_map(|s| s.damage.as_ref().map(|d| format!("{}: {d}", s.family))).collect();
        let ok = damaged.is_empty();
        let detail = if ok {
            let families = if scans.len() == 1 { "column family" } else { "column families" };
            format!("{keys} keys in {} {families} read, every checksum matches", scans.len())
        } else {
            damaged.join("; ")
        };
        self.record(name, ok, detail);
        ok
    }

    fn finish(self) -> ExitCode {
        let ok = self.done.iter().all(|c| c.outcome != Outcome::Damaged);
        if self.json {
            let checks: Vec<serde_json::Value> = self
                .done
                .iter()
                .map(|c| {
                    serde_json::json!({
                        "check": c.name,
                        "ok": c.outcome != Outcome::Damaged,
                        "skipped": c.outcome == Outcome::Skipped,
                        "detail": c.detail,
                    })
                })
                .collect();
            println!("{}", serde_json::json!({ "ok": ok, "deep": true, "checks": checks }));
        } else if !ok {
            println!("the data directory is damaged: docs/OPERATIONS.md, Disaster recovery, says what to do");
        }
        if ok { ExitCode::SUCCESS } else { ExitCode::FAILURE }
    }
}

fn deep(args: &VerifyArgs) -> anyhow::Result<ExitCode> {
    let data = &args.data.data;
    let mut checks = Checks { json: args.json, done: Vec::new() };
    let wal = match Store::open_read_only(data) {
        Ok(wal) => wal,
        Err(e @ (agentlog_log::Error::CorruptStore { .. } | agentlog_log::Error::Damaged { .. })) => {
            checks.record("wal open", false, e.to_string());
            checks.skip("projections", "not compared: the log cannot be opened".into());
            return Ok(checks.finish());
        }
        Err(e) => return Err(e.into()),
    };
    let head = wal.head()?.last_seq;
    let quiet = args.json || head < 200_000;

    let bar = progress::bar(0, "reading", quiet);
    let scans = wal.deep_scan(&mut |family, keys| {
        bar.set_message(family.to_owned());
        bar.set_position(keys);
    });
    bar.finish_and_clear();
    let storage_ok = checks.storage("wal storage", &scans);

    let bar = progress::bar(head, "verifying", quiet);
    let chain = wal::verify(&wal, &mut |done, total| {
        bar.set_length(total);
        bar.set_position(done);
    });
    bar.finish_and_clear();
    let chain_whole = match chain {
        Ok(report) => {
            checks.record("wal chain", true, chain_ok(&report).trim_start_matches("ok: ").to_owned());
            true
        }
        Err(e) => {
            checks.record("wal chain", false, e.to_string());
            false
        }
    };

    match ProjectionStore::open_read_only(&store::dir(data)) {
        Ok(None) => checks.skip("projections", "none saved yet, nothing to compare".into()),
        Err(e) => checks.record("projection storage", false, e.to_string()),
        Ok(Some(projections)) => {
            let scans = projections.deep_scan(&mut |_, _| {});
            let projection_storage_ok = checks.storage("projection storage", &scans);
            match wal.pruned_through()? {
                _ if !(projection_storage_ok && storage_ok && chain_whole) => checks.skip(
                    "projections",
                    "not compared: the storage or the chain above is damaged, and the views fold from it".into(),
                ),
                // The views fold from seq 1, which a pruned WAL no longer has.
                Some(pruned) => checks.skip(
                    "projections",
                    format!(
                        "not compared: the WAL is pruned through seq {} and the views fold from seq 1 (the archive holds the rest)",
                        pruned.seq
                    ),
                ),
                None => {
                    let bar = progress::bar(0, "folding", quiet);
                    let compared = projections::compare(&wal, Some(&projections));
                    bar.finish_and_clear();
                    match compared {
                        Ok(compared) => {
                            for c in compared {
                                checks.record("projections", c.ok(), c.describe());
                            }
                        }
                        Err(e) => checks.record("projections", false, format!("{e:#}")),
                    }
                }
            }
        }
    }

    let archive = args.archive.clone().unwrap_or_else(|| data.join("archive"));
    if archive.exists() {
        let bar = progress::bar(0, "archive", quiet);
        let verified = agentlog_archive::verify(&archive, Some(&wal), &mut |day, index, total| {
            bar.set_length(total as u64);
            bar.set_position(index as u64);
            bar.set_message(day.to_string());
        });
        bar.finish_and_clear();
        match verified {
            Ok(v) => checks.record(
                "archive",
                true,
                format!(
                    "{} days, {} events (seq {}..={}) in {}, agreeing with the WAL{}",
                    v.manifests.len(),
                    v.rows,
                    v.first_seq,
                    v.last_seq,
                    archive.display(),
                    v.wal_checked_through.map(|s| format!(" through seq {s}")).unwrap_or_default()
                ),
            ),
            Err(e) => checks.record("archive", false, e.to_string()),
        }
    } else if args.archive.is_some() {
        checks.record("archive", false, format!("there is no archive at {}", archive.display()));
    } else {
        checks.skip(
            "archive",
            format!("none at {} (a node whose archive.dir is elsewhere: pass --archive DIR)", archive.display()),
        );
    }
    Ok(checks.finish())
}
