//! `agentlog archive run|verify|prune|scan`: the Parquet archive of the log
//! (agentlog-archive), by hand or from cron; `serve` runs `run` nightly.
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use agentlog_archive::writer::Written;
use agentlog_archive::{Day, Filter, Settings};
use agentlog_log::wal::Store;
use agentlog_log::{Clock, HybridClock};
use anyhow::{Context, bail};

use crate::{DataArg, progress};

#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: Sub,
}

#[derive(clap::Args, Clone)]
struct OutArg {
    /// The archive's root directory; `<data>/archive` when absent.
    #[arg(long, env = "AGENTLOG_ARCHIVE")]
    out: Option<PathBuf>,
}

impl OutArg {
    fn root(&self, data: &Path) -> PathBuf {
        self.out.clone().unwrap_or_else(|| data.join("archive"))
    }
}

#[derive(clap::Subcommand)]
enum Sub {
    /// Archive every closed UTC day that is not archived yet.
    Run {
        #[command(flatten)]
        data: DataArg,
        #[command(flatten)]
        out: OutArg,
        /// The last day to archive (YYYY-MM-DD); yesterday (UTC) when absent.
        /// Today and later are refused: they are not over.
        #[arg(long)]
        through: Option<Day>,
        /// A day with more events is split into several files.
        #[arg(long, default_value_t = Settings::default().max_rows_per_file)]
        max_rows_per_file: u64,
        /// Rows per row group, the unit statistics let readers skip.
        #[arg(long, default_value_t = Settings::default().row_group_rows)]
        row_group_rows: usize,
        #[arg(long)]
        json: bool,
    },
    /// Re-read every day: checksums, row counts, the hash chain through every
    /// event and across days, and (with --data) the WAL where both hold events.
    Verify {
        #[command(flatten)]
        out: OutArg,
        /// The WAL to compare with; the archive alone when absent and --out is given.
        #[arg(long, env = "AGENTLOG_DATA")]
        data: Option<PathBuf>,
        #[arg(long)]
        json: bool,
    },
    /// Drop from the WAL the events of the archived days before DATE, after
    /// the archive verifies; refuses otherwise. Needs the WAL's lock: stop
    /// the process that has it open first.
    Prune {
        #[command(flatten)]
        data: DataArg,
        #[command(flatten)]
        out: OutArg,
        /// Days before this one (YYYY-MM-DD) may be dropped from the WAL.
        #[arg(long)]
        before: Day,
        #[arg(long)]
        json: bool,
    },
    /// Print archived events in seq order; filters skip what cannot match.
    Scan {
        #[command(flatten)]
        out: OutArg,
        /// The data directory, only to find `<data>/archive` when --out is absent.
        #[arg(long, env = "AGENTLOG_DATA", default_value = "agentlog-data")]
        data: PathBuf,
        /// First day (YYYY-MM-DD).
        #[arg(long)]
        from: Option<Day>,
        /// Last day (YYYY-MM-DD).
        #[arg(long)]
        to: Option<Day>,
        /// Only events of this type, for example task_claimed.
        #[arg(long = "type")]
        event_type: Option<String>,
        /// Only events of this session (its UUID).
        #[arg(long)]
        session: Option<String>,
        /// Only events from this seq on.
        #[arg(long)]
        from_seq: Option<u64>,
        /// Only events up to this seq.
        #[arg(long)]
        to_seq: Option<u64>,
        /// One JSON object per event, as `agentlog tail --json`.
        #[arg(long, conflicts_with = "hex")]
        json: bool,
        /// `<seq> <stored envelope bytes as hex>` per event: exactly what the log stored.
        #[arg(long)]
        hex: bool,
    },
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    match args.command {
        Sub::Run { data, out, through, max_rows_per_file, row_group_rows, json } => {
            let settings = Settings { max_rows_per_file, row_group_rows, ..Settings::default() };
            let today = Day::of(HybridClock::system().now());
            let through = match through {
                Some(day) if day >= today => {
                    bail!(
                        "{day} is not over yet (today is {today} UTC): archive through {} at the latest",
                        yesterday(today)?
                    )
                }
                Some(day) => day,
                None => yesterday(today)?,
            };
            let store = Store::open_read_only(&data.data)?;
            let root = out.root(&data.data);
            let report = archive_days(&store, &root, through, &settings, json)?;
            print_run(&root, &report, json);
            Ok(ExitCode::SUCCESS)
        }
        Sub::Verify { out, data, json } => {
            let Some(root) = out.out.clone().or_else(|| data.as_ref().map(|d| d.join("archive"))) else {
                bail!("say which archive to verify: --out DIR, or --data DIR for <data>/archive");
            };
            let store = data.as_deref().map(Store::open_read_only).transpose()?;
            let bar = progress::bar(0, "verify", json);
            let verified = agentlog_archive::verify(
                &root,
                store.as_ref().map(|s| s as &dyn agentlog_log::EventSource),
                &mut |day, index, total| {
                    bar.set_length(total as u64);
                    bar.set_position(index as u64);
                    bar.set_message(day.to_string());
                },
            )?;
            bar.finish_and_clear();
            print_verified(&root, &verified, json);
            Ok(ExitCode::SUCCESS)
        }
        Sub::Prune { data, out, before, json } => {
            let store = Store::open(&data.data, agentlog_log::wal::StoreOptions { create_if_missing: false })
                .context("prune needs the WAL to itself")?;
            let root = out.root(&data.data);
            let pruned = agentlog_archive::prune::prune(&root, &store, before, &mut |_, _, _| {})?;
            store.sync_wal()?;
            let result = match &pruned.through {
                Some((day, report)) => serde_json::json!({
                    "archived_days": pruned.verified.manifests.len(),
                    "pruned_through_day": day.to_string(),
                    "pruned_through_seq": report.through,
                    "events_dropped": report.dropped,
                    "events_kept": report.kept,
                }),
                None => {
                    serde_json::json!({ "archived_days": pruned.verified.manifests.len(), "pruned_through_seq": null })
                }
            };
            if json {
                println!("{result}");
            } else if let Some((day, report)) = &pruned.through {
                println!(
                    "archive verified ({} days); the WAL drops everything through {day} (seq {}): {} events dropped, {} kept for streams that go on after it",
                    pruned.verified.manifests.len(),
                    report.through,
                    report.dropped,
                    report.kept
                );
            } else {
                println!("no archived day is before {before}: nothing to prune");
            }
            Ok(ExitCode::SUCCESS)
        }
        Sub::Scan { out, data, from, to, event_type, session, from_seq, to_seq, json, hex } => {
            let root = out.root(&data);
            if !root.is_dir() {
                bail!("no archive at {}: run `agentlog archive run` first, or pass --out", root.display());
            }
            let filter = Filter { from, to, event_type, session, from_seq, to_seq };
            match print_scan(&root, filter, json, hex) {
                // The reader stopped reading (`| head`): that is not a failure.
                Err(e)
                    if e.downcast_ref::<std::io::Error>()
                        .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe) =>
                {
                    Ok(ExitCode::SUCCESS)
                }
                other => other.map(|()| ExitCode::SUCCESS),
            }
        }
    }
}

fn print_scan(root: &Path, filter: Filter, json: bool, hex: bool) -> anyhow::Result<()> {
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    for event in agentlog_archive::scan(root, filter)? {
        let event = event?;
        if hex {
            writeln!(out, "{} {}", event.seq, agentlog_log::chain::to_hex(&event.envelope))?;
            continue;
        }
        let envelope = agentlog_log::codec::decode(&event.envelope)?;
        if json {
            writeln!(out, "{}", agentlog_log::json::envelope(&envelope))?;
        } else {
            writeln!(out, "{}", crate::inspect::line(&envelope))?;
        }
    }
    out.flush()?;
    Ok(())
}

fn yesterday(today: Day) -> anyhow::Result<Day> {
    today.previous().context("the clock says it is 1970-01-01: no day is over yet")
}

/// Archives with a progress bar (hidden for JSON output or without a terminal).
pub fn archive_days(
    store: &Store,
    root: &Path,
    through: Day,
    settings: &Settings,
    quiet: bool,
) -> anyhow::Result<agentlog_archive::Report> {
    let bar = progress::bar(0, "archive", quiet);
    let report = agentlog_archive::run(store, root, through, settings, &mut |p| {
        bar.set_length(p.total);
        bar.set_position(p.events);
        bar.set_message(p.day.to_string());
    })
    .with_context(|| format!("archiving into {}", root.display()))?;
    bar.finish_and_clear();
    Ok(report)
}

fn day_json(written: &Written) -> serde_json::Value {
    let m = &written.manifest;
    serde_json::json!({
        "date": m.date,
        "rows": m.rows,
        "first_seq": m.first_seq,
        "last_seq": m.last_seq,
        "files": m.files.len(),
        "bytes": written.bytes(),
        "dir": written.dir,
    })
}

fn print_run(root: &Path, report: &agentlog_archive::Report, json: bool) {
    if json {
        println!(
            "{}",
            serde_json::json!({
                "archive": root,
                "written": report.written.iter().map(day_json).collect::<Vec<_>>(),
                "archived_through": report.archived_through.map(|d| d.to_string()),
                "pending_events": report.pending_events,
            })
        );
        return;
    }
    if report.written.is_empty() {
        println!("nothing new to archive in {}", root.display());
    }
    for written in &report.written {
        let m = &written.manifest;
        println!(
            "{}: {} events (seq {}..={}) in {} file(s), {} bytes",
            m.date,
            m.rows,
            m.first_seq,
            m.last_seq,
            m.files.len(),
            written.bytes()
        );
    }
    match report.archived_through {
        Some(day) => {
            println!("archived through {day}; {} later events wait for their day to end", report.pending_events)
        }
        None => println!("no day is archived yet; {} events wait for their day to end", report.pending_events),
    }
}

fn print_verified(root: &Path, verified: &agentlog_archive::Verified, json: bool) {
    if json {
        println!(
            "{}",
            serde_json::json!({
                "archive": root,
                "ok": true,
                "days": verified.manifests.len(),
                "first_day": verified.first_day().map(|d| d.to_string()),
                "last_day": verified.last_day().map(|d| d.to_string()),
                "files": verified.files,
                "rows": verified.rows,
                "bytes": verified.bytes,
                "first_seq": verified.first_seq,
                "last_seq": verified.last_seq,
                "last_hash": verified.last_hash.map(|h| agentlog_log::chain::to_hex(&h)),
                "wal_checked_through": verified.wal_checked_through,
            })
        );
        return;
    }
    match (verified.first_day(), verified.last_day()) {
        (Some(first), Some(last)) => println!(
            "ok: {} days ({first}..={last}), {} files, {} events (seq {}..={}), {} bytes{}",
            verified.manifests.len(),
            verified.files,
            verified.rows,
            verified.first_seq,
            verified.last_seq,
            verified.bytes,
            match verified.wal_checked_through {
                Some(seq) => format!("; agrees with the WAL through seq {seq}"),
                None => String::new(),
            }
        ),
        _ => println!("ok: the archive at {} is empty", root.display()),
    }
}
