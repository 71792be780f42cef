//! Opening the WAL and reading it. Writes go through `writer`; this module
//! owns the database handle, the open-time checks and every read path.
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use rocksdb::{ColumnFamily, ColumnFamilyDescriptor, DB, Direction, IteratorMode, Options, WriteBatch, WriteOptions};

use super::keys::*;
use crate::api::{Appended, Head};
use crate::codec;
use crate::error::{Error, Result};
use crate::rocks::{FamilyScan, OpenFailure};
use crate::schema::Envelope;

#[derive(Clone, Copy, Debug)]
pub struct StoreOptions {
    /// Create an empty store when the directory holds none.
    pub create_if_missing: bool,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions { create_if_missing: true }
    }
}

/// An open WAL. Shared (behind an `Arc`) by the writer thread and readers.
pub struct Store {
    db: DB,
    path: PathBuf,
    read_only: bool,
    /// The prune mark's seq (0: never pruned), for the read paths.
    pruned: AtomicU64,
    faults: Faults,
}

/// A narrow seam around the two calls that make writes durable — the
/// batch write and the fsync — so a test can make either fail on demand
/// (rust-rocksdb has no fault-injecting `Env`). The real RocksDB is still
/// underneath; a failure is injected before the call, as a full disk or a
/// failed fsync would surface. Two relaxed loads per write when unused.
#[derive(Debug, Default)]
pub struct Faults {
    fail_writes: AtomicBool,
    fail_syncs: AtomicBool,
}

impl Faults {
    /// Makes every later batch write fail (or succeed again).
    pub fn fail_writes(&self, on: bool) {
        self.fail_writes.store(on, Ordering::Relaxed);
    }

    /// Makes every later fsync fail (or succeed again).
    pub fn fail_syncs(&self, on: bool) {
        self.fail_syncs.store(on, Ordering::Relaxed);
    }

    fn inject(flag: &AtomicBool, operation: &'static str) -> Result<()> {
        if flag.load(Ordering::Relaxed) {
            return Err(Error::storage(operation)(std::io::Error::other("injected failure (test)")));
        }
        Ok(())
    }
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("path", &self.path).field("read_only", &self.read_only).finish()
    }
}

/// Memtables the WAL holds at most, across its column families.
const WRITE_BUFFERS: usize = 64 << 20;
/// The block cache its column families share.
const BLOCK_CACHE: usize = 32 << 20;

/// The database's options and its column families', memory bounded
/// ([`crate::rocks::bound_memory`]).
fn db_options() -> (Options, Vec<ColumnFamilyDescriptor>) {
    let mut opts = Options::default();
    crate::rocks::refuse_damage(&mut opts);
    opts.set_max_background_jobs(2);
    opts.set_bytes_per_sync(1 << 20);
    opts.set_keep_log_file_num(4);
    let cache = crate::rocks::bound_memory(&mut opts, WRITE_BUFFERS, BLOCK_CACHE);
    let families = COLUMN_FAMILIES
        .iter()
        .map(|name| {
            let mut cf = Options::default();
            let mut table = cache.table();
            if *name == CF_IDEM {
                // Nearly every look-up here is of a key that is not there
                // (each command's idempotency key and nonce, checked before
                // it is appended), and the table grows with every command
                // ever made: without a filter each one reads an index and a
                // data block of every level (39 µs at 5 M keys, against 2.6
                // µs with it; docs/BENCHMARKS.md). 10 bits a key, held with
                // the table files' indexes.
                table.set_bloom_filter(10.0, false);
            }
            cf.set_block_based_table_factory(&table);
            if *name == CF_EVENTS {
                // Compressed once, where compaction first merges them (the
                // base level), not also when a memtable is flushed to L0:
                // L0 is rewritten soon, and its compression was about 4 % of
                // a busy node's CPU (docs/BENCHMARKS.md). With dynamic level
                // sizes, entry 1 is the base level's.
                let (none, lz4) = (rocksdb::DBCompressionType::None, rocksdb::DBCompressionType::Lz4);
                cf.set_compression_per_level(&[none, lz4, lz4, lz4, lz4, lz4, lz4]);
                cf.set_write_buffer_size(64 << 20);
            }
            ColumnFamilyDescriptor::new(*name, cf)
        })
        .collect();
    (opts, families)
}

fn exists(path: &Path) -> bool {
    path.join("CURRENT").is_file()
}

fn open_error(path: &Path, err: rocksdb::Error) -> Error {
    match crate::rocks::open_failure(path, &err) {
        OpenFailure::Locked => Error::Locked { path: path.to_owned() },
        OpenFailure::Damaged { file, reason } => Error::Damaged { path: path.to_owned(), file, reason },
        OpenFailure::Other(reason) => Error::CorruptStore { path: path.to_owned(), reason },
    }
}

impl Store {
    /// Opens (or creates) a store for reading and writing. Takes the
    /// directory's lock: one writing process per store.
    pub fn open(path: &Path, options: StoreOptions) -> Result<Store> {
        let existed = exists(path);
        if !existed && !options.create_if_missing {
            return Err(Error::NotFound { path: path.to_owned() });
        }
        if existed {
            Self::check_column_families(path)?;
        } else {
            let occupied = std::fs::read_dir(path).map(|mut entries| entries.next().is_some()).unwrap_or(false);
            if occupied {
                return Err(Error::CorruptStore {
                    path: path.to_owned(),
                    reason: "the directory holds other files and no agentlog store; pass a new or empty directory"
                        .into(),
                });
            }
            std::fs::create_dir_all(path).map_err(|e| Error::CorruptStore {
                path: path.to_owned(),
                reason: format!("cannot create the directory: {e}"),
            })?;
        }
        let (mut opts, families) = db_options();
        opts.create_if_missing(true);
        opts.create_missing_column_families(true);
        let db = DB::open_cf_descriptors(&opts, path, families).map_err(|e| open_error(path, e))?;
        let store =
            Store { db, path: path.to_owned(), read_only: false, pruned: AtomicU64::new(0), faults: Faults::default() };
        store.check_format(!existed)?;
        store.check_head()?;
        store.load_pruned()?;
        Ok(store)
    }

    /// Opens an existing store without its lock: for inspecting a store a
    /// running process may be writing. Sees the store as of the opening.
    pub fn open_read_only(path: &Path) -> Result<Store> {
        if !exists(path) {
            return Err(Error::NotFound { path: path.to_owned() });
        }
        Self::check_column_families(path)?;
        let (opts, families) = db_options();
        let db = DB::open_cf_descriptors_read_only(&opts, path, families, false).map_err(|e| open_error(path, e))?;
        let store =
            Store { db, path: path.to_owned(), read_only: true, pruned: AtomicU64::new(0), faults: Faults::default() };
        store.check_format(false)?;
        store.check_head()?;
        store.load_pruned()?;
        Ok(store)
    }

    fn check_column_families(path: &Path) -> Result<()> {
        let found = DB::list_cf(&db_options().0, path).map_err(|e| open_error(path, e))?;
        for name in COLUMN_FAMILIES {
            if !found.iter().any(|f| f == name) {
                return Err(Error::CorruptStore {
                    path: path.to_owned(),
                    reason: format!("not an agentlog store: column family {name:?} is missing"),
                });
            }
        }
        Ok(())
    }

    fn check_format(&self, created: bool) -> Result<()> {
        let format =
            self.db.get_cf(self.cf(CF_META), META_FORMAT).map_err(self.read_failed("reading the format marker"))?;
        match format {
            Some(found) if found == FORMAT_V1 => Ok(()),
            None if created => self
                .db
                .put_cf(self.cf(CF_META), META_FORMAT, FORMAT_V1)
                .map_err(Error::storage("writing the format marker")),
            other => Err(Error::CorruptStore {
                path: self.path.clone(),
                reason: format!(
                    "format marker is {:?}, expected {:?}",
                    other.map(|f| String::from_utf8_lossy(&f).into_owned()),
                    String::from_utf8_lossy(FORMAT_V1)
                ),
            }),
        }
    }

    /// The head in `meta` and the last key of `events` are written in one
    /// batch; if they disagree the store was damaged outside agentlog.
    fn check_head(&self) -> Result<()> {
        let head = self.head()?;
        let last = self.last_event_seq()?;
        if last != head.last_seq {
            return Err(Error::CorruptStore {
                path: self.path.clone(),
                reason: format!("the recorded head is seq {} but the last stored event is seq {last}", head.last_seq),
            });
        }
        Ok(())
    }

    fn load_pruned(&self) -> Result<()> {
        self.set_pruned(self.pruned_through()?.map_or(0, |p| p.seq));
        Ok(())
    }

    pub(crate) fn set_pruned(&self, seq: u64) {
        self.pruned.store(seq, Ordering::Release);
    }

    /// A failed read as an error: damage RocksDB found (a block whose
    /// checksum does not match) is [`Error::Damaged`], naming the file and
    /// never worth a retry; anything else is [`Error::Storage`].
    pub(crate) fn read_failed(&self, operation: &'static str) -> impl FnOnce(rocksdb::Error) -> Error + '_ {
        move |e| match crate::rocks::damaged_file(&self.path, &e) {
            Some(file) => Error::Damaged { path: self.path.clone(), file, reason: format!("{operation}: {e}") },
            None => Error::storage(operation)(e),
        }
    }

    /// Refuses a read that starts at or below the prune mark.
    pub(crate) fn check_not_pruned(&self, seq: u64) -> Result<()> {
        let through = self.pruned.load(Ordering::Acquire);
        if seq <= through { Err(Error::Pruned { seq, through }) } else { Ok(()) }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub(crate) fn db(&self) -> &DB {
        &self.db
    }

    /// What the store holds in memory ([`crate::rocks::memory_usage`]).
    pub fn memory(&self) -> crate::rocks::MemoryUsage {
        crate::rocks::memory_usage(&self.db, &COLUMN_FAMILIES)
    }

    pub(crate) fn cf(&self, name: &str) -> &ColumnFamily {
        self.db.cf_handle(name).expect("every column family is opened with the store")
    }

    pub fn head(&self) -> Result<Head> {
        let value = self.db.get_cf(self.cf(CF_META), META_HEAD).map_err(self.read_failed("reading the head"))?;
        match value {
            None => Ok(Head::EMPTY),
            Some(value) => {
                let (last_seq, hash) = head_from(&value).ok_or_else(|| Error::CorruptStore {
                    path: self.path.clone(),
                    reason: "the recorded head is malformed".into(),
                })?;
                Ok(Head { last_seq, hash })
            }
        }
    }

    fn last_event_seq(&self) -> Result<u64> {
        match self.db.iterator_cf(self.cf(CF_EVENTS), IteratorMode::End).next() {
            None => Ok(0),
            Some(item) => {
                let (key, _) = item.map_err(self.read_failed("reading the last event"))?;
                seq_from(&key).ok_or_else(|| Error::CorruptStore {
                    path: self.path.clone(),
                    reason: "an event key is not 8 bytes".into(),
                })
            }
        }
    }

    /// Up to `max` decoded events from `from_seq` on. Fails on a gap or a
    /// damaged event instead of skipping it. Decodes straight from RocksDB's
    /// buffers (no copy of the stored bytes).
    pub fn read(&self, from_seq: u64, max: usize) -> Result<Vec<Envelope>> {
        let mut out = Vec::with_capacity(max.min(4096));
        self.for_each_stored(from_seq, max, |seq, bytes| {
            out.push(codec::decode_at(seq, bytes)?);
            Ok(())
        })?;
        Ok(out)
    }

    /// The stored bytes of up to `max` events from `from_seq` on, as
    /// `(seq, bytes)`. Fails on a gap.
    pub fn read_raw(&self, from_seq: u64, max: usize) -> Result<Vec<(u64, Vec<u8>)>> {
        let mut out = Vec::new();
        self.for_each_stored(from_seq, max, |seq, bytes| {
            out.push((seq, bytes.to_vec()));
            Ok(())
        })?;
        Ok(out)
    }

    /// Calls `f` with the seq and stored bytes of up to `max` events from
    /// `from_seq` on, in seq order, without copying them; returns how many.
    /// Fails on a gap instead of skipping it.
    pub fn for_each_stored(
        &self,
        from_seq: u64,
        max: usize,
        mut f: impl FnMut(u64, &[u8]) -> Result<()>,
    ) -> Result<usize> {
        let mut expected = from_seq.max(1);
        self.check_not_pruned(expected)?;
        let mut seen = 0;
        // A long read is a forward scan: read ahead, and leave the block
        // cache to the point reads of the command path.
        let mut options = rocksdb::ReadOptions::default();
        if max >= SCAN_EVENTS {
            options.fill_cache(false);
            options.set_readahead_size(READAHEAD_BYTES);
        }
        let mut iter = self.db.raw_iterator_cf_opt(self.cf(CF_EVENTS), options);
        iter.seek(seq_key(expected));
        while seen < max && iter.valid() {
            let (Some(key), Some(bytes)) = (iter.key(), iter.value()) else { break };
            let seq =
                seq_from(key).ok_or_else(|| Error::Corrupt { seq: 0, reason: "an event key is not 8 bytes".into() })?;
            if seq != expected {
                return Err(Error::Corrupt {
                    seq: expected,
                    reason: format!("missing; the next stored event is seq {seq}"),
                });
            }
            f(seq, bytes)?;
            seen += 1;
            expected += 1;
            iter.next();
        }
        iter.status().map_err(self.read_failed("reading events"))?;
        Ok(seen)
    }

    pub fn read_stream(&self, stream: &str, from_version: u64, max: usize) -> Result<Vec<Envelope>> {
        let prefix = stream_prefix(stream);
        let start = stream_key(stream, from_version.max(1));
        let mut seqs = Vec::new();
        for item in self.db.iterator_cf(self.cf(CF_STREAMS), IteratorMode::From(&start, Direction::Forward)) {
            if seqs.len() >= max {
                break;
            }
            let (key, value) = item.map_err(self.read_failed("reading a stream"))?;
            if !key.starts_with(&prefix) {
                break;
            }
            let seq = seq_from(&value).ok_or_else(|| Error::Corrupt {
                seq: 0,
                reason: format!("stream {stream} index entry is malformed"),
            })?;
            seqs.push(seq);
        }
        let keys: Vec<[u8; 8]> = seqs.iter().map(|s| seq_key(*s)).collect();
        let events_cf = self.cf(CF_EVENTS);
        let values = self.db.batched_multi_get_cf(events_cf, keys.iter(), true);
        seqs.iter()
            .zip(values)
            .map(|(seq, value)| match value.map_err(self.read_failed("reading a stream's events"))? {
                Some(bytes) => codec::decode_at(*seq, &bytes),
                None if self.check_not_pruned(*seq).is_err() => {
                    Err(Error::Pruned { seq: *seq, through: self.pruned.load(Ordering::Acquire) })
                }
                None => Err(Error::Corrupt { seq: *seq, reason: format!("indexed by stream {stream} but missing") }),
            })
            .collect()
    }

    pub fn stream_version(&self, stream: &str) -> Result<u64> {
        self.stream_last(stream).map(|(version, _)| version)
    }

    /// A stream's last version and that event's seq ((0, 0): no events).
    pub fn stream_last(&self, stream: &str) -> Result<(u64, u64)> {
        let prefix = stream_prefix(stream);
        let mut iter = self.db.raw_iterator_cf(self.cf(CF_STREAMS));
        iter.seek_for_prev(stream_key(stream, u64::MAX));
        if !iter.valid() {
            iter.status().map_err(self.read_failed("finding a stream's version"))?;
            return Ok((0, 0));
        }
        match iter.key().and_then(|key| version_from(key, &prefix)) {
            Some(version) => {
                let seq = iter.value().and_then(seq_from).ok_or_else(|| Error::Corrupt {
                    seq: 0,
                    reason: format!("the stream index entry of {stream} v{version} is malformed"),
                })?;
                Ok((version, seq))
            }
            None => Ok((0, 0)),
        }
    }

    pub fn idempotent_result(&self, key: &str) -> Result<Option<Appended>> {
        let value = self
            .db
            .get_pinned_cf(self.cf(CF_IDEM), key.as_bytes())
            .map_err(self.read_failed("reading the idempotency table"))?;
        match value {
            None => Ok(None),
            Some(value) => appended_from(&value).map(Some).ok_or_else(|| Error::Corrupt {
                seq: 0,
                reason: format!("idempotency entry for {key:?} is malformed"),
            }),
        }
    }

    /// The seq of an event, by its id.
    pub fn seq_of(&self, event_id: &[u8]) -> Result<Option<u64>> {
        let value =
            self.db.get_pinned_cf(self.cf(CF_IDS), event_id).map_err(self.read_failed("reading the id index"))?;
        Ok(value.and_then(|v| seq_from(&v)))
    }

    /// The seq that the `streams` index records for a stream version.
    pub fn indexed_seq(&self, stream: &str, version: u64) -> Result<Option<u64>> {
        let value = self
            .db
            .get_pinned_cf(self.cf(CF_STREAMS), stream_key(stream, version))
            .map_err(self.read_failed("reading the stream index"))?;
        Ok(value.and_then(|v| seq_from(&v)))
    }

    /// Every `streams` entry must be a version some event has: a stray entry
    /// would make the next append skip versions. Entries at or below the
    /// prune mark `pruned` are the archive's to check.
    pub(crate) fn check_stream_index(
        &self,
        versions: &std::collections::HashMap<String, u64>,
        pruned: u64,
    ) -> Result<()> {
        for item in self.db.iterator_cf(self.cf(CF_STREAMS), IteratorMode::Start) {
            let (key, value) = item.map_err(self.read_failed("reading the stream index"))?;
            let seq = seq_from(&value).unwrap_or(0);
            if seq != 0 && seq <= pruned {
                continue;
            }
            let stray =
                || Error::Corrupt { seq, reason: format!("the stream index has an entry no event matches: {key:?}") };
            let len = usize::from(u16::from_be_bytes(key.get(..2).ok_or_else(stray)?.try_into().expect("2 bytes")));
            let stream = key.get(2..2 + len).and_then(|s| std::str::from_utf8(s).ok()).ok_or_else(stray)?;
            let version = version_from(&key, &key[..2 + len]).ok_or_else(stray)?;
            if versions.get(stream).is_none_or(|last| version > *last) {
                return Err(Error::Corrupt {
                    seq,
                    reason: format!("the stream index has {stream} version {version}, which no event has"),
                });
            }
        }
        Ok(())
    }

    /// Reads every key of every column family with checksums checked and
    /// the block cache bypassed ([`crate::rocks::scan_every_key`]).
    pub fn deep_scan(&self, progress: &mut dyn FnMut(&str, u64)) -> Vec<FamilyScan> {
        let mut families = vec![rocksdb::DEFAULT_COLUMN_FAMILY_NAME];
        families.extend(COLUMN_FAMILIES);
        crate::rocks::scan_every_key(&self.db, &families, progress)
    }

    /// Backs the store up into `dir` through RocksDB's backup engine, while
    /// writes go on ([`crate::backup::create`]).
    /// Returns the new backup and every backup `dir` then holds.
    pub fn backup(&self, dir: &Path, keep: Option<usize>) -> Result<(crate::backup::Taken, Vec<crate::backup::Taken>)> {
        crate::backup::create(&self.db, dir, keep)
    }

    /// Writes every buffered WAL byte to disk.
    pub fn sync_wal(&self) -> Result<()> {
        Faults::inject(&self.faults.fail_syncs, "syncing the WAL")?;
        #[allow(clippy::disallowed_methods)]
        let started = std::time::Instant::now(); // determinism: allowed (a metric, never state)
        self.db.flush_wal(true).map_err(Error::storage("syncing the WAL"))?;
        metrics::histogram!(crate::metrics::WAL_FSYNC_SECONDS).record(started.elapsed().as_secs_f64());
        Ok(())
    }

    /// Writes `batch` atomically (and fsyncs it when `sync`): every write
    /// of the WAL goes through here.
    pub(crate) fn write(&self, batch: WriteBatch, sync: bool) -> Result<()> {
        Faults::inject(&self.faults.fail_writes, "writing events")?;
        let mut options = WriteOptions::default();
        options.set_sync(sync);
        self.db.write_opt(batch, &options).map_err(Error::storage("writing events"))
    }

    /// The fault-injection seam, for tests of the fail-stop paths.
    pub fn faults(&self) -> &Faults {
        &self.faults
    }
}

impl crate::EventSource for Store {
    fn location(&self) -> &Path {
        self.path()
    }

    fn head(&self) -> Result<Head> {
        Store::head(self)
    }

    fn pruned_through(&self) -> Result<Option<crate::Pruned>> {
        Store::pruned_through(self)
    }

    fn for_each_stored(&self, from_seq: u64, max: usize, f: &mut dyn FnMut(u64, &[u8]) -> Result<()>) -> Result<usize> {
        Store::for_each_stored(self, from_seq, max, f)
    }

    fn read(&self, from_seq: u64, max: usize) -> Result<Vec<Envelope>> {
        Store::read(self, from_seq, max)
    }
}

/// How far a scan of the events reads ahead.
const READAHEAD_BYTES: usize = 2 << 20;

/// Reads of at least this many events are scans.
const SCAN_EVENTS: usize = 256;
