//! The projections' own RocksDB (`<data>/projections`): per projection, its
//! checkpoint (`checkpoint/<name>`) and its entities, each its own key
//! (`entity/<name>/<kind>/<key>`). A checkpoint writes the entities changed
//! since the last one with the new position, in one `WriteBatch`, so a crash
//! leaves a state and the position it reflects — never one without the
//! other — and costs what changed, not what the state weighs. Restarting
//! from it folds each event exactly once.
use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use agentlog_log::EventSource;
use agentlog_log::rocks::{self, FamilyScan, OpenFailure};
use agentlog_log::rocksdb::{self, DB, Options, WriteBatch};

use crate::entities::{Backing, BackingError, Stored, Sum};
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

/// Entities each family keeps in memory by default once they are stored
/// (`projections.cache-entities`).
pub const DEFAULT_CACHE_ENTITIES: usize = 50_000;

pub struct ProjectionStore {
    db: Arc<DB>,
    path: PathBuf,
    /// Settled entities each family keeps in memory; the rest are read
    /// from here when asked for.
    cache_entities: usize,
    /// Writes still to fail, as a full disk would (tests).
    #[cfg(test)]
    failing_writes: std::sync::atomic::AtomicUsize,
}

/// One projection's entities in the store, read by its families
/// ([`Backing`]).
struct ViewBacking {
    db: Arc<DB>,
    name: &'static str,
}

impl Backing for ViewBacking {
    fn get(&self, kind: &str, key: &[u8]) -> std::result::Result<Option<Vec<u8>>, BackingError> {
        self.db.get(entity_key(self.name, kind, key)).map_err(|e| e.to_string())
    }

    fn scan(&self, kind: &str, from: Bound<&[u8]>) -> Stored<'_> {
        let prefix = entity_key(self.name, kind, b"");
        let (start, skip) = match from {
            Bound::Included(key) => ([&prefix[..], key].concat(), None),
            Bound::Excluded(key) => ([&prefix[..], key].concat(), Some(key.to_vec())),
            Bound::Unbounded => (prefix.clone(), None),
        };
        let mut options = rocksdb::ReadOptions::default();
        options.set_iterate_upper_bound(prefix_end(&prefix));
        let iterator = self.db.iterator_opt(rocksdb::IteratorMode::From(&start, rocksdb::Direction::Forward), options);
        Box::new(
            iterator
                .map(move |item| {
                    item.map(|(key, value)| (key[prefix.len()..].to_vec(), value.into_vec())).map_err(|e| e.to_string())
                })
                .filter(move |item| !matches!((item, &skip), (Ok((key, _)), Some(skip)) if key == skip)),
        )
    }
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

/// Whether a write goes through RocksDB's write-ahead log.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Logging {
    Logged,
    /// Only a rebuild's, which flushes at its end ([`ProjectionStore::rebuild`]).
    Unlogged,
}

/// Events a rebuild into the store folds between two looks at its memory.
pub const REBUILD_LOOK_EVENTS: u64 = 100_000;

/// Memtables the store holds at most.
const WRITE_BUFFERS: usize = 32 << 20;
/// Its block cache.
const BLOCK_CACHE: usize = 16 << 20;

/// The options of every open: damage anywhere but a torn tail refuses it;
/// memory is bounded ([`rocks::bound_memory`]); Bloom filters, since a fold
/// asks for many keys that are not there (each new task, stream and
/// session).
fn options() -> Options {
    let mut options = Options::default();
    rocks::refuse_damage(&mut options);
    let mut table = rocks::bound_memory(&mut options, WRITE_BUFFERS, BLOCK_CACHE).table();
    table.set_bloom_filter(10.0, false);
    options.set_block_based_table_factory(&table);
    options.set_memtable_prefix_bloom_ratio(0.1);
    options.set_memtable_whole_key_filtering(true);
    options
}

impl ProjectionStore {
    /// Opens (or creates) the store, taking its lock.
    pub fn open(path: &Path) -> Result<ProjectionStore> {
        let mut options = options();
        options.create_if_missing(true);
        let db = DB::open(&options, path).map_err(open_error(path))?;
        Ok(ProjectionStore {
            db: Arc::new(db),
            path: path.to_owned(),
            cache_entities: DEFAULT_CACHE_ENTITIES,
            #[cfg(test)]
            failing_writes: Default::default(),
        })
    }

    /// Opens an existing store without its lock, to inspect it; `None` when
    /// there is none yet.
    pub fn open_read_only(path: &Path) -> Result<Option<ProjectionStore>> {
        if !path.join("CURRENT").exists() {
            return Ok(None);
        }
        let db = DB::open_for_read_only(&options(), path, false).map_err(open_error(path))?;
        Ok(Some(ProjectionStore {
            db: Arc::new(db),
            path: path.to_owned(),
            cache_entities: DEFAULT_CACHE_ENTITIES,
            #[cfg(test)]
            failing_writes: Default::default(),
        }))
    }

    /// Keeps at most `entities` settled entities of each family in memory
    /// (at least one).
    pub fn with_cache_entities(mut self, entities: usize) -> Self {
        self.cache_entities = entities.max(1);
        self
    }

    pub fn cache_entities(&self) -> usize {
        self.cache_entities
    }

    /// Where the families of projection `name` read what is not in memory.
    pub fn backing(&self, name: &'static str) -> Arc<dyn Backing> {
        Arc::new(ViewBacking { db: self.db.clone(), name })
    }

    /// A failed read: damage RocksDB found is [`Error::Damaged`], naming the
    /// file; anything else is [`Error::Storage`].
    fn read_failed(&self, operation: &'static str) -> impl FnOnce(rocksdb::Error) -> Error + '_ {
        move |e| match rocks::damaged_file(&self.path, &e) {
            Some(file) => Error::Damaged { path: self.path.clone(), file, reason: format!("{operation}: {e}") },
            None => Error::storage(operation)(e),
        }
    }

    /// Makes `dir` (which must not exist) a copy of the store as it is now:
    /// a RocksDB checkpoint, its table files hard-linked where the file
    /// system allows. What replay jumps from.
    pub fn snapshot_into(&self, dir: &Path) -> Result<()> {
        rocksdb::checkpoint::Checkpoint::new(&self.db)
            .and_then(|c| c.create_checkpoint(dir))
            .map_err(Error::storage("copying the projection store"))
    }

    /// What the store holds in memory ([`rocks::memory_usage`]).
    pub fn memory(&self) -> rocks::MemoryUsage {
        rocks::memory_usage(&self.db, &[])
    }

    /// Rebuilds `runners` from seq 1 to `through` of `wal` and saves them
    /// here. On the way it saves whenever a family outgrows the cache
    /// (looked at every [`REBUILD_LOOK_EVENTS`] events), so memory holds the
    /// cache and what changed since the last save, not the whole history.
    /// `progress` gets the last seq folded after each page. Returns it.
    ///
    /// Its saves skip RocksDB's write-ahead log (the data is written once,
    /// not twice) and the last one is flushed to table files before it
    /// returns. A crash on the way loses saves not yet flushed, never part
    /// of one: the store has one column family, whose memtables are flushed
    /// in the order they were written, so what survives is the state and
    /// checkpoint of some earlier save, and the next start folds on from
    /// there.
    pub fn rebuild(
        &self,
        wal: &dyn EventSource,
        runners: &mut [&mut dyn Runner],
        through: u64,
        progress: &mut dyn FnMut(u64),
    ) -> Result<u64> {
        let mut looked_at = 0;
        let done = crate::views::rebuild_with(wal, runners, through, &mut |runners, done| {
            progress(done);
            if done - looked_at >= REBUILD_LOOK_EVENTS {
                looked_at = done;
                if runners.iter().any(|r| r.largest_in_memory() > self.cache_entities) {
                    self.save_with(runners, Logging::Unlogged)?;
                }
            }
            Ok(())
        })?;
        self.save_with(runners, Logging::Unlogged)?;
        self.db.flush().map_err(Error::storage("flushing a rebuild to table files"))?;
        Ok(done)
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
    /// saved by an older version (whole, or of another [`crate::live::FORMAT`]):
    /// its state is then folded again.
    pub fn checkpoint(&self, name: &str) -> Result<Option<Checkpoint>> {
        let Some(bytes) = self.db.get(checkpoint_key(name)).map_err(self.read_failed("reading a checkpoint"))? else {
            return Ok(None);
        };
        if self.db.get(legacy_state_key(name)).map_err(self.read_failed("reading a checkpoint"))?.is_some() {
            return Ok(None);
        }
        let checkpoint: Checkpoint = serde_json::from_slice(&bytes)
            .map_err(|e| Error::CorruptCheckpoint { name: name.to_owned(), reason: e.to_string() })?;
        Ok((checkpoint.format == crate::live::FORMAT).then_some(checkpoint))
    }

    /// The projection as last saved; a new one at position 0 when none was
    /// saved. Its entities stay in the store: the checkpoint's per-family
    /// sums (checked to add up to its state hash) say what they hash to, so
    /// a load reads the live work the in-memory indexes need, not the
    /// history (`agentlog verify --deep` sums every stored entity).
    pub fn load<P: Projection>(&self) -> Result<Live<P>> {
        let Some(checkpoint) = self.checkpoint(P::NAME)? else {
            if self.db.get(checkpoint_key(P::NAME)).map_err(self.read_failed("reading a checkpoint"))?.is_some() {
                tracing::warn!(
                    message = "a checkpoint an older version wrote (a whole view, or entities without their indexes or sums): folding again from seq 1",
                    projection = P::NAME
                );
            }
            return Ok(Live::new());
        };
        let corrupt = |reason: String| Error::CorruptCheckpoint { name: P::NAME.to_owned(), reason };
        let mut live = Live::from_checkpoint(&checkpoint, P::default());
        for family in live.state.families_mut() {
            let sum = checkpoint
                .sums
                .get(family.kind())
                .and_then(|hex| agentlog_log::chain::from_hex(hex))
                .and_then(|bytes| <[u8; 32]>::try_from(bytes).ok())
                .ok_or_else(|| corrupt(format!("no sum, or not 32 bytes of hex, for family {}", family.kind())))?;
            family.resume(self.backing(P::NAME), Sum::from_bytes(&sum)).map_err(corrupt)?;
        }
        let hash = agentlog_log::chain::to_hex(&crate::projection::state_hash(&live.state));
        if hash != checkpoint.state_hash {
            return Err(corrupt(format!("the state hashes to {hash}, the checkpoint says {}", checkpoint.state_hash)));
        }
        live.state.loaded();
        Ok(live)
    }

    /// Writes what each projection changed since its last save
    /// ([`Runner::settle`]) and its checkpoint, all in one write, then lets
    /// them drop what their cache does not keep; returns the bytes written.
    /// A failed write leaves them settled but not saved: load them again.
    pub fn save(&self, runners: &mut [&mut dyn Runner]) -> Result<usize> {
        self.save_with(runners, Logging::Logged)
    }

    fn save_with(&self, runners: &mut [&mut dyn Runner], logging: Logging) -> Result<usize> {
        let size_bytes = self.write_with(&runners.iter_mut().map(|r| r.settle()).collect::<Vec<_>>(), logging)?;
        self.written(runners);
        Ok(size_bytes)
    }

    /// After a write of what `runners` settled: they read what they do not
    /// keep in memory from here, and keep this store's cache's worth of
    /// settled entities ([`Runner::written`]). Returns the entities dropped
    /// from memory.
    pub fn written(&self, runners: &mut [&mut dyn Runner]) -> usize {
        runners.iter_mut().map(|r| r.written(&self.backing(r.name()), self.cache_entities)).sum()
    }

    /// Writes settled projections, in order, all in one write (one folded
    /// from nothing replaces every entity stored of it); returns the bytes
    /// written. A failed write leaves the projections settled but not
    /// saved: their owner must write the same again, before anything
    /// settled later ([`crate::Views::save`] does).
    pub fn write(&self, settled: &[Settled]) -> Result<usize> {
        self.write_with(settled, Logging::Logged)
    }

    fn write_with(&self, settled: &[Settled], logging: Logging) -> Result<usize> {
        let mut batch = WriteBatch::default();
        for Settled { name, checkpoint, changes, whole } in settled {
            if *whole {
                let prefix = entity_prefix(name);
                batch.delete_range(&prefix, &prefix_end(&prefix));
                batch.delete(legacy_state_key(name));
            }
            for (kind, changes) in changes {
                for (key, value) in changes {
                    let key = entity_key(name, kind, key);
                    match value {
                        Some(value) => batch.put(key, value),
                        None => batch.delete(key),
                    }
                }
            }
            batch.put(checkpoint_key(name), serde_json::to_vec(checkpoint).expect("checkpoints serialise"));
        }
        let size_bytes = batch.size_in_bytes();
        #[cfg(test)]
        {
            use std::sync::atomic::Ordering::SeqCst;
            if self.failing_writes.fetch_update(SeqCst, SeqCst, |n| n.checked_sub(1)).is_ok() {
                let full = std::io::Error::new(std::io::ErrorKind::StorageFull, "no space left on device (injected)");
                return Err(Error::storage("writing projection checkpoints")(full));
            }
        }
        let mut options = rocksdb::WriteOptions::default();
        options.disable_wal(logging == Logging::Unlogged);
        self.db.write_opt(batch, &options).map_err(Error::storage("writing projection checkpoints"))?;
        Ok(size_bytes)
    }
}

#[cfg(test)]
mod tests {
    use agentlog_core::schema::TaskCreated;
    use agentlog_core::{Body, Envelope};

    use super::*;
    use crate::{Runner, WorldModel, state_hash_from_scratch};

    #[test]
    fn a_load_reads_the_checkpoints_sums_and_only_a_sum_of_every_entity_finds_one_gone() {
        let dir = tempfile::tempdir().unwrap();
        let store = ProjectionStore::open(dir.path()).unwrap();
        let mut world = Live::<WorldModel>::new();
        for (seq, id) in [(1u64, "t1"), (2, "t2")] {
            world.apply(&Envelope {
                seq,
                stream: format!("task/{id}"),
                stream_version: 1,
                body: Some(Body::TaskCreated(TaskCreated { task_id: id.into(), ..Default::default() })),
                hash: vec![u8::try_from(seq).unwrap()],
                ..Default::default()
            });
        }
        store.save(&mut [&mut world]).unwrap();
        let checkpoint = store.checkpoint("world").unwrap().unwrap();
        assert!(checkpoint.sums.contains_key("task") && checkpoint.sums.contains_key("ready"), "{checkpoint:?}");
        let hex = |state: &WorldModel| agentlog_log::chain::to_hex(&state_hash_from_scratch(state));
        let loaded: Live<WorldModel> = store.load().unwrap();
        assert_eq!(hex(&loaded.state), checkpoint.state_hash);
        assert_eq!(loaded.state, world.state);

        // A checkpoint whose sums do not add up to its state hash is refused.
        let mut wrong = checkpoint.clone();
        wrong.sums.insert("task".into(), checkpoint.sums["ready"].clone());
        store.db.put(checkpoint_key("world"), serde_json::to_vec(&wrong).unwrap()).unwrap();
        assert!(matches!(store.load::<WorldModel>(), Err(Error::CorruptCheckpoint { .. })));
        store.db.put(checkpoint_key("world"), serde_json::to_vec(&checkpoint).unwrap()).unwrap();

        // An entity gone from the store: the load trusts the sums; the sum
        // of every stored entity (what `verify` computes) does not match.
        store.db.delete(entity_key("world", "task", b"t2")).unwrap();
        let loaded: Live<WorldModel> = store.load().unwrap();
        assert_ne!(hex(&loaded.state), checkpoint.state_hash);
    }

    #[test]
    fn a_save_that_failed_is_written_by_the_next_and_nothing_leaves_memory_before_it_is_stored() {
        let dir = tempfile::tempdir().unwrap();
        let store = ProjectionStore::open(dir.path()).unwrap().with_cache_entities(4);
        let views = crate::Views::default();
        let mut scratch = Live::<WorldModel>::new();
        fn fold(views: &crate::Views, scratch: &mut Live<WorldModel>, seqs: std::ops::RangeInclusive<u64>) {
            for seq in seqs {
                let id = format!("t{seq}");
                let event = Envelope {
                    seq,
                    stream: format!("task/{id}"),
                    stream_version: 1,
                    body: Some(Body::TaskCreated(TaskCreated { task_id: id, ..Default::default() })),
                    hash: seq.to_le_bytes().to_vec(),
                    ..Default::default()
                };
                views.apply(std::slice::from_ref(&event));
                scratch.apply(&event);
            }
        }
        fold(&views, &mut scratch, 1..=10);
        views.save(&store).unwrap();
        fold(&views, &mut scratch, 11..=30);
        store.failing_writes.store(1, std::sync::atomic::Ordering::SeqCst);
        let failed = views.save(&store).unwrap_err();
        assert!(failed.to_string().contains("no space left"), "{failed}");
        // Nothing the failed save took was dropped from memory.
        assert_eq!(views.world().state, scratch.state);
        assert_eq!(store.checkpoint("world").unwrap().unwrap().position, 10);
        fold(&views, &mut scratch, 31..=40);
        views.save(&store).unwrap();
        let loaded: Live<WorldModel> = store.load().unwrap();
        assert_eq!(loaded.position, 40);
        assert_eq!(loaded.state, scratch.state, "every task, those the failed save took too");
        let hex = |state: &WorldModel| agentlog_log::chain::to_hex(&state_hash_from_scratch(state));
        assert_eq!(hex(&loaded.state), hex(&scratch.state));
    }

    #[test]
    fn a_loaded_world_knows_which_sessions_are_live_and_flags_an_event_after_one_ended() {
        use agentlog_core::schema::{SessionClosed, SessionHeartbeat, SessionOpened};
        let session = "0190b5a8-1c2d-7000-8000-00000000beef";
        let bytes = uuid::Uuid::parse_str(session).unwrap().as_bytes().to_vec();
        let event = |seq: u64, version: u64, body: Body| Envelope {
            seq,
            stream: format!("session/{session}"),
            stream_version: version,
            session_id: bytes.clone(),
            body: Some(body),
            hash: vec![u8::try_from(seq).unwrap()],
            ..Default::default()
        };
        let opened = SessionOpened { session_id: session.into(), agent_id: "a1".into(), heartbeat_timeout_ms: 60_000 };
        let dir = tempfile::tempdir().unwrap();
        let store = ProjectionStore::open(dir.path()).unwrap();
        let mut world = Live::<WorldModel>::new();
        world.apply(&event(1, 1, Body::SessionOpened(opened)));
        store.save(&mut [&mut world]).unwrap();
        let mut loaded: Live<WorldModel> = store.load().unwrap();
        assert_eq!(loaded.state, world.state, "the live sessions' index, rebuilt by the load");
        let closed = SessionClosed { session_id: session.into(), reason: String::new() };
        let beat = SessionHeartbeat { session_id: session.into() };
        for live in [&mut world, &mut loaded] {
            live.apply(&event(2, 2, Body::SessionHeartbeat(beat.clone())));
            live.apply(&event(3, 3, Body::SessionClosed(closed.clone())));
            live.apply(&event(4, 4, Body::SessionHeartbeat(beat.clone())));
        }
        let flagged = |world: &WorldModel| world.violations().map(|v| (v.seq, v.kind)).collect::<Vec<_>>();
        assert_eq!(flagged(&loaded.state), [(4, crate::world::ViolationKind::AfterSessionEnd)]);
        assert_eq!(loaded.state, world.state);
    }

    #[test]
    fn a_checkpoint_an_older_version_wrote_is_read_as_none_and_the_view_folds_again() {
        let dir = tempfile::tempdir().unwrap();
        let store = ProjectionStore::open(dir.path()).unwrap();
        let mut world = Live::<WorldModel>::new();
        store.save(&mut [&mut world]).unwrap();
        assert_eq!(store.checkpoint("world").unwrap().map(|c| c.format), Some(crate::live::FORMAT));
        // As the version before wrote it: no format.
        let older = serde_json::json!({ "position": 7, "chain_hash": "00", "state_hash": "00" });
        store.db.put(checkpoint_key("world"), serde_json::to_vec(&older).unwrap()).unwrap();
        assert_eq!(store.checkpoint("world").unwrap(), None);
        let loaded: Live<WorldModel> = store.load().unwrap();
        assert_eq!((loaded.position, loaded.whole), (0, true));
    }
}
