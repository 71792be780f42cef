//! Backups of one RocksDB store through RocksDB's backup engine: a backup
//! is consistent while the store is being written (the engine copies the
//! live table files and the live write-ahead log up to one point), backups
//! in one directory share their table files (each after the first copies
//! only what changed), and a restore checks every file's checksum as it
//! copies it back. One process at a time uses a backup directory (a lock
//! file, `agentlog.lock`, held while it does). The WAL and the projection
//! store each use this; which stores make a data directory's backup is the
//! node's to say.
use std::fs::{File, TryLockError};
use std::path::{Path, PathBuf};

use rocksdb::backup::{BackupEngine, BackupEngineOptions, RestoreOptions};
use rocksdb::{DB, Env, ErrorKind};

use crate::error::{Error, Result};

/// One backup in a backup directory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Taken {
    /// The backup engine's id: increasing within the directory.
    pub id: u32,
    /// When it was taken (the engine's clock).
    pub taken_at_unix_seconds: i64,
    /// The bytes this backup refers to (shared files counted in each).
    pub size_bytes: u64,
    pub file_count: u32,
}

/// A backup directory, locked against every other process for as long as
/// this is held.
struct Opened {
    engine: BackupEngine,
    _lock: File,
}

fn open(dir: &Path) -> Result<Opened> {
    std::fs::create_dir_all(dir).map_err(Error::storage("creating the backup directory"))?;
    let lock = File::create(dir.join("agentlog.lock")).map_err(Error::storage("locking the backup directory"))?;
    match lock.try_lock() {
        Ok(()) => {}
        Err(TryLockError::WouldBlock) => return Err(Error::BackupBusy { path: dir.to_owned() }),
        Err(TryLockError::Error(e)) => return Err(Error::storage("locking the backup directory")(e)),
    }
    let mut options = BackupEngineOptions::new(dir).map_err(Error::storage("opening the backup directory"))?;
    options.set_sync(true);
    options.set_max_background_operations(2);
    let env = Env::new().map_err(Error::storage("opening the backup directory"))?;
    let engine = BackupEngine::open(&options, &env).map_err(Error::storage("opening the backup directory"))?;
    Ok(Opened { engine, _lock: lock })
}

fn backups(engine: &BackupEngine) -> Vec<Taken> {
    let mut taken: Vec<Taken> = engine
        .get_backup_info()
        .into_iter()
        .map(|info| Taken {
            id: info.backup_id,
            taken_at_unix_seconds: info.timestamp,
            size_bytes: info.size,
            file_count: info.num_files,
        })
        .collect();
    taken.sort_by_key(|t| t.id);
    taken
}

/// Every backup in `dir`, oldest first (none when `dir` holds no backups).
pub fn list(dir: &Path) -> Result<Vec<Taken>> {
    if !dir.join("meta").is_dir() {
        return Ok(Vec::new());
    }
    Ok(backups(&open(dir)?.engine))
}

/// Backs `db` up into `dir` (created if missing), flushing its memtables
/// first so the copied write-ahead log is short; keeps the newest `keep`
/// backups when given. Returns the new backup and every backup `dir` then
/// holds.
pub fn create(db: &DB, dir: &Path, keep: Option<usize>) -> Result<(Taken, Vec<Taken>)> {
    let mut opened = open(dir)?;
    opened.engine.create_new_backup_flush(db, true).map_err(Error::storage("taking a backup"))?;
    let newest = backups(&opened.engine).pop().ok_or_else(|| Error::Storage {
        operation: "taking a backup",
        source: "the backup engine lists no backup after taking one".into(),
    })?;
    if let Some(keep) = keep {
        opened.engine.purge_old_backups(keep.max(1)).map_err(Error::storage("removing old backups"))?;
    }
    Ok((newest, backups(&opened.engine)))
}

/// Restores backup `id` (the newest when `None`) from `dir` into `to`,
/// which must not hold a store. Returns the backup restored. A backup whose
/// files fail their checksums is [`Error::CorruptStore`], naming it.
pub fn restore(dir: &Path, id: Option<u32>, to: &Path) -> Result<Taken> {
    let no_backup = || Error::NoBackup {
        path: dir.to_owned(),
        wanted: id.map_or("backup".to_owned(), |id| format!("backup {id}")),
    };
    if !dir.join("meta").is_dir() {
        return Err(no_backup());
    }
    let mut opened = open(dir)?;
    let taken = backups(&opened.engine);
    let chosen = match id {
        None => taken.last(),
        Some(id) => taken.iter().find(|t| t.id == id),
    }
    .cloned()
    .ok_or_else(no_backup)?;
    opened.engine.restore_from_backup(to, to, &RestoreOptions::default(), chosen.id).map_err(|e| {
        if e.kind() == ErrorKind::Corruption {
            Error::CorruptStore {
                path: backup_path(dir, chosen.id),
                reason: format!(
                    "backup {} is damaged ({e}); restore an older one (`--backup-id`, `agentlog backup --list`)",
                    chosen.id
                ),
            }
        } else {
            Error::storage("restoring a backup")(e)
        }
    })?;
    Ok(chosen)
}

/// Where the engine keeps what names backup `id`'s files.
fn backup_path(dir: &Path, id: u32) -> PathBuf {
    dir.join("meta").join(id.to_string())
}
