//! The projections' own RocksDB (`<data>/projections`): per projection, its
//! checkpoint and its state, always written together in one `WriteBatch`,
//! so a crash leaves a state and the position it reflects — never one
//! without the other. Restarting from it folds each event exactly once.
use std::path::{Path, PathBuf};

use agentlog_log::rocks::{self, FamilyScan, OpenFailure};
use agentlog_log::rocksdb::{self, DB, Options, WriteBatch};

use crate::error::{Error, Result};
use crate::live::{Checkpoint, Live, Runner};
use crate::projection::Projection;

/// The projection store's directory inside a data directory.
pub fn dir(data: &Path) -> PathBuf {
    data.join("projections")
}

fn checkpoint_key(name: &str) -> String {
    format!("checkpoint/{name}")
}

fn state_key(name: &str) -> String {
    format!("state/{name}")
}

pub struct ProjectionStore {
    db: DB,
    path: PathBuf,
}

impl std::fmt::Debug for ProjectionStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProjectionStore").field("path", &self.path).finish_non_exhaustive()
    }
}

fn open_error(path: &Path) -> impl FnOnce(rocksdb::Error) -> Error {
    let path = path.to_owned();
    move |e| match rocks::open_failure(&path, &e) {
        OpenFailure::Locked => Error::Locked { path },
        OpenFailure::Damaged { file, reason } => Error::Damaged { path, file, reason },
        OpenFailure::Other(_) => Error::storage("opening the projection store")(e),
    }
}

/// The options of every open: damage anywhere but a torn tail refuses it.
fn options() -> Options {
    let mut options = Options::default();
    rocks::refuse_damage(&mut options);
    options
}

impl ProjectionStore {
    /// Opens (or creates) the store, taking its lock.
    pub fn open(path: &Path) -> Result<ProjectionStore> {
        let mut options = options();
        options.create_if_missing(true);
        let db = DB::open(&options, path).map_err(open_error(path))?;
        Ok(ProjectionStore { db, path: path.to_owned() })
    }

    /// Opens an existing store without its lock, to inspect it; `None` when
    /// there is none yet.
    pub fn open_read_only(path: &Path) -> Result<Option<ProjectionStore>> {
        if !path.join("CURRENT").exists() {
            return Ok(None);
        }
        let db = DB::open_for_read_only(&options(), path, false).map_err(open_error(path))?;
        Ok(Some(ProjectionStore { db, path: path.to_owned() }))
    }

    /// A failed read: damage RocksDB found is [`Error::Damaged`], naming the
    /// file; anything else is [`Error::Storage`].
    fn read_failed(&self, operation: &'static str) -> impl FnOnce(rocksdb::Error) -> Error + '_ {
        move |e| match rocks::damaged_file(&self.path, &e) {
            Some(file) => Error::Damaged { path: self.path.clone(), file, reason: format!("{operation}: {e}") },
            None => Error::storage(operation)(e),
        }
    }

    /// Reads every key with checksums checked and the block cache bypassed
    /// ([`rocks::scan_every_key`]).
    pub fn deep_scan(&self, progress: &mut dyn FnMut(&str, u64)) -> Vec<FamilyScan> {
        rocks::scan_every_key(&self.db, &[rocksdb::DEFAULT_COLUMN_FAMILY_NAME], progress)
    }

    /// Backs the store up into `dir` through RocksDB's backup engine
    /// ([`agentlog_log::backup::create`]).
    /// Returns the new backup and every backup `dir` then holds.
    pub fn backup(
        &self,
        dir: &Path,
        keep: Option<usize>,
    ) -> Result<(agentlog_log::backup::Taken, Vec<agentlog_log::backup::Taken>)> {
        Ok(agentlog_log::backup::create(&self.db, dir, keep)?)
    }

    pub fn checkpoint(&self, name: &str) -> Result<Option<Checkpoint>> {
        let Some(bytes) = self.db.get(checkpoint_key(name)).map_err(self.read_failed("reading a checkpoint"))? else {
            return Ok(None);
        };
        serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| Error::CorruptCheckpoint { name: name.to_owned(), reason: e.to_string() })
    }

    /// The projection as last saved, checked against its state hash; a new
    /// one at position 0 when none was saved.
    pub fn load<P: Projection>(&self) -> Result<Live<P>> {
        let Some(checkpoint) = self.checkpoint(P::NAME)? else { return Ok(Live::new()) };
        let corrupt = |reason: String| Error::CorruptCheckpoint { name: P::NAME.to_owned(), reason };
        let bytes = self
            .db
            .get(state_key(P::NAME))
            .map_err(self.read_failed("reading a projection's state"))?
            .ok_or_else(|| corrupt("the checkpoint has no state".into()))?;
        let hash = agentlog_log::chain::to_hex(blake3::hash(&bytes).as_bytes());
        if hash != checkpoint.state_hash {
            return Err(corrupt(format!("the state hashes to {hash}, the checkpoint says {}", checkpoint.state_hash)));
        }
        let mut state: P = serde_json::from_slice(&bytes).map_err(|e| corrupt(e.to_string()))?;
        state.loaded();
        Ok(Live::from_checkpoint(&checkpoint, state))
    }

    /// Writes each projection's state and checkpoint, all in one write;
    /// returns the bytes written.
    pub fn save(&self, runners: &[&dyn Runner]) -> Result<usize> {
        let mut batch = WriteBatch::default();
        for runner in runners {
            let (checkpoint, bytes) = runner.snapshot();
            batch.put(state_key(runner.name()), bytes);
            batch.put(checkpoint_key(runner.name()), serde_json::to_vec(&checkpoint).expect("checkpoints serialise"));
        }
        let size_bytes = batch.size_in_bytes();
        self.db.write(batch).map_err(Error::storage("writing projection checkpoints"))?;
        Ok(size_bytes)
    }
}
