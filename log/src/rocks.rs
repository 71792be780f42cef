//! What every RocksDB store of a node (the WAL, the projection store)
//! shares: about damage, the recovery mode that refuses it at open, how an
//! open failure is read (a held lock, a damaged file named), and the deep
//! scan that reads every key with its checksum checked; about memory, the
//! bound on what a store holds whatever it stores ([`bound_memory`]).
use std::path::Path;

use rocksdb::{
    BlockBasedOptions, Cache, DB, DBRecoveryMode, DEFAULT_COLUMN_FAMILY_NAME, ErrorKind, Options, ReadOptions,
};

/// Bounds what a store holds in memory for its data: at most
/// `write_buffers` bytes of memtables across its column families (the
/// largest is flushed beyond it), and one block cache of `block_cache`
/// bytes that its column families share. (RocksDB's defaults give each
/// column family its own 64 MiB memtables and its own block cache.) Index
/// and filter blocks stay outside the cache, as by default: they are about
/// 1 % of the data, and a cache too small for one would read it from disk
/// on every lookup. Returns the cache, whose [`SharedCache::table`] every
/// column family of the store must be given.
pub fn bound_memory(options: &mut Options, write_buffers: usize, block_cache: usize) -> SharedCache {
    options.set_db_write_buffer_size(write_buffers);
    SharedCache(Cache::new_lru_cache(block_cache))
}

/// The block cache a store's column families share ([`bound_memory`]).
#[derive(Clone)]
pub struct SharedCache(Cache);

impl std::fmt::Debug for SharedCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedCache").finish_non_exhaustive()
    }
}

impl SharedCache {
    /// Table options on this cache, for a column family to be given
    /// (after adding what that family needs, such as a filter).
    pub fn table(&self) -> BlockBasedOptions {
        let mut table = BlockBasedOptions::default();
        table.set_block_cache(&self.0);
        table
    }
}

/// What a store holds in memory, by RocksDB's own counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MemoryUsage {
    /// Memtables, mutable and immutable, across the column families.
    pub memtables: u64,
    /// The shared block cache: data blocks, and index and filter
    /// partitions.
    pub block_cache: u64,
    /// What open table files hold outside the cache (their pinned
    /// top-level indexes and filters).
    pub table_readers: u64,
}

impl MemoryUsage {
    pub fn total(&self) -> u64 {
        self.memtables + self.block_cache + self.table_readers
    }
}

/// Reads [`MemoryUsage`] of `db` over `families` (the default family when
/// empty). A counter RocksDB does not give counts as 0.
pub fn memory_usage(db: &DB, families: &[&str]) -> MemoryUsage {
    let property = |cf: Option<&str>, name: &str| -> u64 {
        let value = match cf.and_then(|cf| db.cf_handle(cf)) {
            Some(handle) => db.property_int_value_cf(handle, name),
            None => db.property_int_value(name),
        };
        value.ok().flatten().unwrap_or(0)
    };
    let families: Vec<Option<&str>> =
        if families.is_empty() { vec![None] } else { families.iter().map(|f| Some(*f)).collect() };
    MemoryUsage {
        memtables: families.iter().map(|cf| property(*cf, "rocksdb.cur-size-all-mem-tables")).sum(),
        // One cache for every family: counted once.
        block_cache: property(families[0], "rocksdb.block-cache-usage"),
        table_readers: families.iter().map(|cf| property(*cf, "rocksdb.estimate-table-readers-mem")).sum(),
    }
}

/// Makes an open refuse damage. RocksDB's default recovery (point in time)
/// stops replaying its write-ahead log at the first damaged record and
/// opens anyway, without everything after it, and says nothing. This mode
/// tolerates only an incomplete last record — a write torn by a crash, never
/// acknowledged — and fails on damage anywhere else.
pub fn refuse_damage(options: &mut Options) {
    options.set_wal_recovery_mode(DBRecoveryMode::TolerateCorruptedTailRecords);
    options.set_paranoid_checks(true);
}

/// Why an open failed, read from RocksDB's error.
#[derive(Debug, PartialEq, Eq)]
pub enum OpenFailure {
    /// Another process holds the store's lock.
    Locked,
    /// A file is damaged; `file` is its path (or the candidates, when
    /// RocksDB did not say which).
    Damaged { file: String, reason: String },
    /// Anything else (permissions, a missing file, an unknown format).
    Other(String),
}

/// Reads an open failure of the store at `dir`, by RocksDB's error kind
/// first: damage is damage whatever its message says.
pub fn open_failure(dir: &Path, err: &rocksdb::Error) -> OpenFailure {
    if let Some(file) = damaged_file(dir, err) {
        return OpenFailure::Damaged { file, reason: err.to_string() };
    }
    let message = err.to_string();
    let lowered = message.to_lowercase();
    let lock = dir.join("LOCK").display().to_string().to_lowercase();
    let held = lowered.contains("temporarily unavailable") || lowered.contains("lock hold by current process");
    if err.kind() == ErrorKind::IOError && lowered.contains(&lock) && held {
        return OpenFailure::Locked;
    }
    OpenFailure::Other(message)
}

/// The damaged file `err` is about, when it reports damage (RocksDB's
/// `Corruption`) in the store at `dir`. RocksDB names the file when a
/// MANIFEST or table file is damaged, but not when its write-ahead log is:
/// then the file is read from the store's info log (`LOG`), where recovery
/// wrote which file it was dropping bytes from.
pub fn damaged_file(dir: &Path, err: &rocksdb::Error) -> Option<String> {
    if err.kind() != ErrorKind::Corruption {
        return None;
    }
    let message = err.to_string();
    Some(
        named_file(dir, &message)
            .or_else(|| message.contains("CURRENT file").then(|| dir.join("CURRENT").display().to_string()))
            .or_else(|| damaged_wal_from_info_log(dir))
            .unwrap_or_else(|| wal_files(dir).unwrap_or_else(|| dir.display().to_string())),
    )
}

/// The path of a file inside `dir` that `message` names, if any.
fn named_file(dir: &Path, message: &str) -> Option<String> {
    let prefix = dir.display().to_string();
    let at = message.find(&prefix)?;
    let rest = &message[at..];
    let end = rest.find(|c: char| c.is_whitespace() || c == ',').unwrap_or(rest.len());
    Some(rest[..end].trim_end_matches('.').to_owned())
}

/// The write-ahead log file the last failed recovery dropped bytes from,
/// as the info log records it: `… /dir/000004.log: dropping 295 bytes; …`.
fn damaged_wal_from_info_log(dir: &Path) -> Option<String> {
    let log = std::fs::read_to_string(dir.join("LOG")).ok()?;
    let line = log.lines().rev().find(|line| line.contains(": dropping "))?;
    let before = &line[..line.find(": dropping ")?];
    let start = before.rfind("] ").map_or(0, |i| i + 2);
    Some(before[start..].to_owned())
}

/// The write-ahead log files in `dir`, when RocksDB did not say which file
/// is damaged and the info log does not either (a read-only open writes
/// none). RocksDB names a damaged MANIFEST or table file itself, so an
/// unnamed damage is in a write-ahead log: with one such file, that one.
fn wal_files(dir: &Path) -> Option<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .ok()?
        .filter_map(|entry| entry.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
        .filter(|name| name.ends_with(".log"))
        .collect();
    names.sort();
    match names.as_slice() {
        [] => None,
        [one] => Some(dir.join(one).display().to_string()),
        several => Some(format!("one of the write-ahead log files {} in {}", several.join(", "), dir.display())),
    }
}

/// What a deep scan found in one column family.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FamilyScan {
    pub family: String,
    /// Keys read before the end or the damage.
    pub keys: u64,
    /// RocksDB's report of the damage (it names the file), if any.
    pub damage: Option<String>,
}

/// Reads every key and value of every column family in `families` with
/// checksum verification on and the block cache bypassed, so every data
/// block of every live table file is read from disk and checked — what
/// RocksDB's `VerifyChecksum` does, which rust-rocksdb does not wrap. A
/// family whose scan fails is reported with the failure and the scan goes
/// on with the next one. `progress` gets the family and the keys read.
pub fn scan_every_key(db: &DB, families: &[&str], progress: &mut dyn FnMut(&str, u64)) -> Vec<FamilyScan> {
    families
        .iter()
        .map(|family| {
            let mut scan = FamilyScan { family: (*family).to_owned(), keys: 0, damage: None };
            let mut options = ReadOptions::default();
            options.set_verify_checksums(true);
            options.fill_cache(false);
            options.set_readahead_size(2 << 20);
            let mut iter = match db.cf_handle(family) {
                Some(cf) => db.raw_iterator_cf_opt(cf, options),
                // A store opened without naming its families has only the default.
                None if *family == DEFAULT_COLUMN_FAMILY_NAME => db.raw_iterator_opt(options),
                None => {
                    scan.damage = Some(format!("the column family {family:?} is missing"));
                    return scan;
                }
            };
            iter.seek_to_first();
            while iter.valid() {
                scan.keys += 1;
                if scan.keys.is_multiple_of(65_536) {
                    progress(family, scan.keys);
                }
                iter.next();
            }
            if let Err(e) = iter.status() {
                scan.damage = Some(e.to_string());
            }
            progress(family, scan.keys);
            scan
        })
        .collect()
}
