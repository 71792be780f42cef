//! The projections' own RocksDB (`<data>/projections`): per projection, its
//! checkpoint (`checkpoint/<name>`) and its entities, each its own key
//! (`entity/<name>/<kind>/<key>`). A checkpoint writes the entities changed
//! since the last one with the new position, in one `WriteBatch`, so a crash
//! leaves a state and the position it reflects — never one without the
//! other — and costs what changed, not what the state weighs. Restarting
//! from it folds each event exactly once.
use std::path::{Path, PathBuf};

use agentlog_log::rocks::{self, FamilyScan, OpenFailure};
use agentlog_log::rocksdb::{self, DB, Options, WriteBatch};

use crate::error::{Error, Result};
use crate::live::{Checkpoint, Live, Runner, Settled};
use crate::projection::Projection;

/// The projection store's directory inside a data directory.
pub fn dir(data: &Path) -> PathBuf {
    data.join("projections")
}

fn checkpoint_key(name: &str) -> String {
    format!("checkpoint/{name}")
}

/// Where a whole state was kept before states were kept per entity: read
/// as no checkpoint (the projection folds again from seq 1), and deleted by
/// its next save.
fn legacy_state_key(name: &str) -> String {
    format!("state/{name}")
}

/// Every entity key of a projection starts so.
fn entity_prefix(name: &str) -> Vec<u8> {
    format!("entity/{name}/").into_bytes()
}

/// The first key after every key that starts with `prefix`.
fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    *end.last_mut().expect("prefixes are not empty") += 1;
    end
}

fn entity_key(name: &str, kind: &str, key: &[u8]) -> Vec<u8> {
    [&entity_prefix(name)[..], kind.as_bytes(), b"/", key].concat()
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

    /// The projection's checkpoint; `None` when it was never saved, or
    /// saved whole by an older version (its state is then folded again).
    pub fn checkpoint(&self, name: &str) -> Result<Option<Checkpoint>> {
        let Some(bytes) = self.db.get(checkpoint_key(name)).map_err(self.read_failed("reading a checkpoint"))? else {
            return Ok(None);
        };
        if self.db.get(legacy_state_key(name)).map_err(self.read_failed("reading a checkpoint"))?.is_some() {
            return Ok(None);
        }
        serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| Error::CorruptCheckpoint { name: name.to_owned(), reason: e.to_string() })
    }

    /// The projection as last saved, its entities checked against the
    /// checkpoint's state hash; a new one at position 0 when none was saved.
    pub fn load<P: Projection>(&self) -> Result<Live<P>> {
        let Some(checkpoint) = self.checkpoint(P::NAME)? else {
            if self.db.get(legacy_state_key(P::NAME)).map_err(self.read_failed("reading a checkpoint"))?.is_some() {
                tracing::warn!(
                    message = "a checkpoint of the whole view, from before views were kept per entity: folding again from seq 1",
                    projection = P::NAME
                );
            }
            return Ok(Live::new());
        };
        let corrupt = |reason: String| Error::CorruptCheckpoint { name: P::NAME.to_owned(), reason };
        let mut live = Live::from_checkpoint(&checkpoint, P::default());
        let prefix = entity_prefix(P::NAME);
        let mut options = rocksdb::ReadOptions::default();
        options.set_iterate_upper_bound(prefix_end(&prefix));
        let iterator = self.db.iterator_opt(rocksdb::IteratorMode::From(&prefix, rocksdb::Direction::Forward), options);
        {
            let mut families = live.state.families_mut();
            for item in iterator {
                let (key, value) = item.map_err(self.read_failed("reading a projection's entities"))?;
                let rest = &key[prefix.len()..];
                let slash =
                    rest.iter().position(|b| *b == b'/').ok_or_else(|| corrupt(format!("entity key {key:?}")))?;
                let (kind, key) = (&rest[..slash], &rest[slash + 1..]);
                let family = families
                    .iter_mut()
                    .find(|f| f.kind().as_bytes() == kind)
                    .ok_or_else(|| corrupt(format!("no family {:?}", String::from_utf8_lossy(kind))))?;
                family.load(key, &value).map_err(corrupt)?;
            }
            for family in &mut families {
                family.track();
            }
        }
        let hash = agentlog_log::chain::to_hex(&crate::projection::state_hash(&live.state));
        if hash != checkpoint.state_hash {
            return Err(corrupt(format!("the state hashes to {hash}, the checkpoint says {}", checkpoint.state_hash)));
        }
        live.state.loaded();
        Ok(live)
    }

    /// Writes what each projection changed since its last save
    /// ([`Runner::settle`]) and its checkpoint, all in one write; returns
    /// the bytes written.
    pub fn save(&self, runners: &mut [&mut dyn Runner]) -> Result<usize> {
        self.write(runners.iter_mut().map(|r| r.settle()).collect())
    }

    /// Writes settled projections, all in one write (one folded from
    /// nothing replaces every entity stored of it); returns the bytes
    /// written. A failed write leaves the projections settled but not
    /// saved: their owner must set `whole` on them (so their next save
    /// rewrites them) or load them again.
    pub fn write(&self, settled: Vec<Settled>) -> Result<usize> {
        let mut batch = WriteBatch::default();
        for Settled { name, checkpoint, changes, whole } in settled {
            if whole {
                let prefix = entity_prefix(name);
                batch.delete_range(&prefix, &prefix_end(&prefix));
                batch.delete(legacy_state_key(name));
            }
            for (kind, changes) in changes {
                for (key, value) in changes {
                    let key = entity_key(name, kind, &key);
                    match value {
                        Some(value) => batch.put(key, value),
                        None => batch.delete(key),
                    }
                }
            }
            batch.put(checkpoint_key(name), serde_json::to_vec(&checkpoint).expect("checkpoints serialise"));
        }
        let size_bytes = batch.size_in_bytes();
        self.db.write(batch).map_err(Error::storage("writing projection checkpoints"))?;
        Ok(size_bytes)
    }
}
