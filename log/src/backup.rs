//! Backups of one RocksDB store through RocksDB's backup engine: a backup
//! is consistent while the store is being written (the engine copies the
//! live table files and the live write-ahead log up to one point), backups
//! in one directory share their table files (each after the first copies
//! only what changed), and a restore checks every file's checksum as it
//! copies it back. The WAL and the projection store each use it; which
//! stores make a data directory's backup is the node's to say.
use std::path::Path;

use rocksdb::backup::{BackupEngine, BackupEngineOptions, RestoreOptions};
use rocksdb::{DB, Env};

use crate::error::{Error, Result};

/// One backup in a backup directory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Taken {
    /// The backup engine's id: increasing within the directory.
    pub id: u32,
    /// When it was taken, in Unix seconds (the engine's clock).
    pub timestamp: i64,
    /// The bytes this backup refers to (shared files counted in each).
    pub size: u64,
    pub files: u32,
}

fn engine(dir: &Path) -> Result<BackupEngine> {
    std::fs::create_dir_all(dir).map_err(Error::storage("creating the backup directory"))?;
    let mut options = BackupEngineOptions::new(dir).map_err(Error::storage("opening the backup directory"))?;
    options.set_sync(true);
    options.set_max_background_operations(2);
    let env = Env::new().map_err(Error::storage("opening the backup directory"))?;
    BackupEngine::open(&options, &env).map_err(Error::storage("opening the backup directory"))
}

/// Every backup in `dir`, oldest first.
pub fn list(dir: &Path) -> Result<Vec<Taken>> {
    if !dir.join("meta").is_dir() {
        return Ok(Vec::new());
    }
    let mut taken: Vec<Taken> = engine(dir)?
        .get_backup_info()
        .into_iter()
        .map(|info| Taken { id: info.backup_id, timestamp: info.timestamp, size: info.size, files: info.num_files })
        .collect();
    taken.sort_by_key(|t| t.id);
    Ok(taken)
}

/// Backs `db` up into `dir` (created if missing), flushing its memtables
/// first so the copied write-ahead log is short; keeps the newest `keep`
/// backups when given. Returns the new backup.
pub fn create(db: &DB, dir: &Path, keep: Option<usize>) -> Result<Taken> {
    let mut engine = engine(dir)?;
    engine.create_new_backup_flush(db, true).map_err(Error::storage("taking a backup"))?;
    if let Some(keep) = keep {
        engine.purge_old_backups(keep.max(1)).map_err(Error::storage("removing old backups"))?;
    }
    list(dir)?.pop().ok_or_else(|| Error::Storage {
        operation: "taking a backup",
        source: "the backup engine lists no backup after taking one".into(),
    })
}

/// Restores backup `id` (the newest when `None`) from `dir` into `to`,
/// which must not hold a store. Returns the backup restored.
pub fn restore(dir: &Path, id: Option<u32>, to: &Path) -> Result<Taken> {
    let taken = list(dir)?;
    let chosen = match id {
        None => taken.last(),
        Some(id) => taken.iter().find(|t| t.id == id),
    }
    .cloned()
    .ok_or_else(|| Error::NoBackup {
        path: dir.to_owned(),
        wanted: id.map_or("backup".to_owned(), |id| format!("backup {id}")),
    })?;
    let mut engine = engine(dir)?;
    engine
        .restore_from_backup(to, to, &RestoreOptions::default(), chosen.id)
        .map_err(Error::storage("restoring a backup"))?;
    Ok(chosen)
}
