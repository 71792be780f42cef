//! A data directory's backup and its restore. A backup directory holds two
//! backup engines: `projections/` and `log/` (the WAL, the embedded log or a
//! node's mirror). A backup takes the projection store first and the log
//! second, so the views restored never reach past the log restored; each
//! is consistent while it is being written. A restore brings the log back,
//! verifies its chain, and brings back the projections taken with it when
//! they agree with the log (checked as a node's start checks them);
//! otherwise it leaves them out, to be rebuilt from the log.
//!
//! The archive (`<data>/archive`) is not in the backup: its days are
//! written once and never change, so it is copied as files
//! (docs/OPERATIONS.md, Disaster recovery).
use std::path::{Path, PathBuf};

use agentlog_core::Head;
use agentlog_log::backup;
use agentlog_log::wal::{self, Store};
use agentlog_projections::{ProjectionStore, Views, store};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// The log's backups inside a backup directory.
pub fn log_dir(backups: &Path) -> PathBuf {
    backups.join("log")
}

/// The projection store's backups inside a backup directory.
pub fn projections_dir(backups: &Path) -> PathBuf {
    backups.join("projections")
}

/// What a backup took.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Report {
    pub backup_id: u32,
    /// The log's head when the backup began: every event up to it is in the
    /// backup. In embedded mode that is every event acknowledged before the
    /// backup began; on a node it is what its mirror held then (the stream
    /// has the rest, and a restored node follows it from there).
    pub head_before: u64,
    pub log_bytes: u64,
    pub log_file_count: u32,
    /// The projection store's backup, when the data directory has one.
    pub projections_backup_id: Option<u32>,
    pub projections_bytes: u64,
    /// Every backup the directory now holds (log ids), oldest first.
    pub kept: Vec<u32>,
}

/// Backs up the log `wal` and the projection store (when there is one) into
/// `to`, keeping the newest `keep` backups when given.
pub fn take(wal: &Store, projections: Option<&ProjectionStore>, to: &Path, keep: Option<usize>) -> Result<Report> {
    let head_before = wal.head()?.last_seq;
    let projections = projections.map(|p| p.backup(&projections_dir(to), keep)).transpose()?.map(|(taken, _)| taken);
    let (log, kept) = wal.backup(&log_dir(to), keep)?;
    Ok(Report {
        backup_id: log.id,
        head_before,
        log_bytes: log.size_bytes,
        log_file_count: log.file_count,
        projections_backup_id: projections.as_ref().map(|p| p.id),
        projections_bytes: projections.as_ref().map_or(0, |p| p.size_bytes),
        kept: kept.into_iter().map(|t| t.id).collect(),
    })
}

/// What a restore brought back.
#[derive(Clone, Debug, Serialize)]
pub struct Restored {
    pub backup_id: u32,
    pub taken_at_unix_seconds: i64,
    pub last_seq: u64,
    pub head_hash: String,
    pub events_verified: u64,
    /// The views' position when restored with the log; `None` when they
    /// were left out (see `projections_note`).
    pub projections_position: Option<u64>,
    pub projections_note: String,
}

/// Restores backup `id` (the newest when `None`) from `from` into `to`,
/// which must not exist or be empty; a restore that fails leaves `to` as
/// it found it. `progress` gets the events verified and the total.
pub fn restore(from: &Path, id: Option<u32>, to: &Path, progress: &mut dyn FnMut(u64, u64)) -> Result<Restored> {
    let existed = to.exists();
    let occupied = std::fs::read_dir(to).map(|mut entries| entries.next().is_some()).unwrap_or(false);
    if occupied {
        return Err(Error::RestoreTarget { path: to.to_owned() });
    }
    let restored = restore_into(from, id, to, progress);
    if restored.is_err() {
        let _ = std::fs::remove_dir_all(to);
        if existed {
            let _ = std::fs::create_dir_all(to);
        }
    }
    restored
}

fn restore_into(from: &Path, id: Option<u32>, to: &Path, progress: &mut dyn FnMut(u64, u64)) -> Result<Restored> {
    let log = backup::restore(&log_dir(from), id, to)?;
    let wal = Store::open_read_only(to)?;
    let report = wal::verify(&wal, progress)?;
    let head: Head = wal.head()?;

    // The projections taken with this log backup: taken just before it, so
    // the newest no later; an older one when that one does not agree with
    // the log (the check a node's start makes).
    let mut candidates = backup::list(&projections_dir(from))?;
    candidates.retain(|p| p.taken_at_unix_seconds <= log.taken_at_unix_seconds);
    let dir = store::dir(to);
    let mut projections_position = None;
    let mut projections_note =
        "the backup holds no projections: they are rebuilt from the log at the next start".to_owned();
    for taken in candidates.iter().rev() {
        backup::restore(&projections_dir(from), Some(taken.id), &dir)?;
        match ProjectionStore::open(&dir).and_then(|store| Views::load(&store, &wal)) {
            Ok(views) => {
                projections_position = Some(views.position());
                projections_note = format!("restored from projections backup {}", taken.id);
                break;
            }
            Err(e) => {
                std::fs::remove_dir_all(&dir).map_err(|source| Error::Io { path: dir.clone(), source })?;
                projections_note = format!("left out ({e}): they are rebuilt from the log at the next start");
            }
        }
    }
    Ok(Restored {
        backup_id: log.id,
        taken_at_unix_seconds: log.taken_at_unix_seconds,
        last_seq: head.last_seq,
        head_hash: agentlog_core::chain::to_hex(&head.hash),
        events_verified: report.events,
        projections_position,
        projections_note,
    })
}
