//! `agentlog backup` and `agentlog restore`. A backup is taken by this
//! process when nothing holds the data directory, and by the running node
//! that holds it (through its control socket) otherwise; either way it is
//! consistent while the log is being written. Restore brings a backup back
//! into a new directory and verifies it (agentlog_node::backup).
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use agentlog_log::wal::{Store, StoreOptions};
use agentlog_node::backup::{self, Report};
use agentlog_node::control;
use agentlog_projections::{ProjectionStore, store};
use anyhow::Context;

use crate::{DataArg, progress};

#[derive(clap::Args)]
pub struct BackupArgs {
    #[command(flatten)]
    data: DataArg,
    /// The backup directory: created when missing; each backup after the
    /// first copies only the files that changed.
    #[arg(long)]
    to: PathBuf,
    /// Keep only the newest N backups in the directory.
    #[arg(long)]
    keep: Option<usize>,
    /// List the backups the directory holds instead of taking one.
    #[arg(long)]
    list: bool,
    #[arg(long)]
    json: bool,
}

#[derive(clap::Args)]
pub struct RestoreArgs {
    /// The backup directory.
    #[arg(long)]
    from: PathBuf,
    /// The new data directory (must not exist, or be empty).
    #[arg(long)]
    to: PathBuf,
    /// The backup to restore (`agentlog backup --list`); the newest when absent.
    #[arg(long)]
    backup_id: Option<u32>,
    #[arg(long)]
    json: bool,
}

pub async fn backup(args: BackupArgs) -> anyhow::Result<ExitCode> {
    let to = std::path::absolute(&args.to).with_context(|| format!("resolving {}", args.to.display()))?;
    if args.list {
        return list(&to, args.json);
    }
    let data = &args.data.data;
    let started = Instant::now();
    let (report, through) = match Store::open(data, StoreOptions { create_if_missing: false }) {
        Ok(wal) => {
            let projections = store::dir(data);
            let projections =
                projections.join("CURRENT").exists().then(|| ProjectionStore::open(&projections)).transpose()?;
            (backup::take(&wal, projections.as_ref(), &to, args.keep)?, "this process")
        }
        Err(agentlog_log::Error::Locked { .. }) => {
            (control::request_backup(data, &to, args.keep).await?, "the running node that holds it")
        }
        Err(e) => return Err(e.into()),
    };
    let seconds = started.elapsed().as_secs_f64();
    print_backup(&args, &to, &report, through, seconds);
    Ok(ExitCode::SUCCESS)
}

fn print_backup(args: &BackupArgs, to: &std::path::Path, report: &Report, through: &str, seconds: f64) {
    if args.json {
        let mut out = serde_json::to_value(report).expect("reports serialise");
        out["seconds"] = serde_json::json!(seconds);
        out["taken_by"] = serde_json::json!(through);
        println!("{out}");
        return;
    }
    println!(
        "backup {} of {} in {} (taken by {through}, {seconds:.2} s): every event through seq {} (the head when it began)",
        report.backup_id,
        args.data.data.display(),
        to.display(),
        report.head_before,
    );
    println!(
        "  log {:.1} MB in {} files; projections {}",
        report.log_bytes as f64 / 1e6,
        report.log_file_count,
        match report.projections_backup_id {
            Some(id) => format!("{:.1} MB (backup {id})", report.projections_bytes as f64 / 1e6),
            None => "none yet".to_owned(),
        }
    );
    let kept: Vec<String> = report.kept.iter().map(u32::to_string).collect();
    println!(
        "  the directory holds backups {}; restore with: agentlog restore --from {} --to NEW_DIR",
        kept.join(", "),
        to.display()
    );
}

fn list(to: &std::path::Path, json: bool) -> anyhow::Result<ExitCode> {
    let taken = agentlog_log::backup::list(&backup::log_dir(to))?;
    if json {
        let rows: Vec<serde_json::Value> = taken
            .iter()
            .map(|t| {
                serde_json::json!({
                    "backup_id": t.id,
                    "taken_at_unix_seconds": t.taken_at_unix_seconds,
                    "size_bytes": t.size_bytes,
                    "file_count": t.file_count,
                })
            })
            .collect();
        println!("{}", serde_json::json!({ "backups": rows }));
        return Ok(ExitCode::SUCCESS);
    }
    if taken.is_empty() {
        println!("no backups in {}", to.display());
    }
    for t in taken {
        println!(
            "backup {:>4}  taken at {} (Unix s)  {:.1} MB in {} files",
            t.id,
            t.taken_at_unix_seconds,
            t.size_bytes as f64 / 1e6,
            t.file_count
        );
    }
    Ok(ExitCode::SUCCESS)
}

pub fn restore(args: RestoreArgs) -> anyhow::Result<ExitCode> {
    let started = Instant::now();
    let bar = progress::bar(0, "verifying", args.json);
    let restored = backup::restore(&args.from, args.backup_id, &args.to, &mut |done, total| {
        bar.set_length(total);
        bar.set_position(done);
    })
    .with_context(|| format!("restoring {} into {}", args.from.display(), args.to.display()))?;
    bar.finish_and_clear();
    let seconds = started.elapsed().as_secs_f64();
    if args.json {
        let mut out = serde_json::to_value(&restored).expect("reports serialise");
        out["seconds"] = serde_json::json!(seconds);
        println!("{out}");
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "restored backup {} into {} in {seconds:.2} s: {} events, seqs 1..{} continuous, hash chain intact up to head {}",
        restored.backup_id,
        args.to.display(),
        restored.events_verified,
        restored.last_seq,
        restored.head_hash
    );
    println!("  projections: {}", restored.projections_note);
    println!(
        "  next: agentlog verify --deep --data {} (the archive is not in a backup: copy it back first)",
        args.to.display()
    );
    Ok(ExitCode::SUCCESS)
}
