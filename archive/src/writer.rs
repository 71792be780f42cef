//! `archive run`: every closed UTC day not yet archived, read from the WAL in
//! seq order and written as Parquet files of bounded size plus a manifest.
//!
//! The same events and settings always give the same bytes: nothing in a
//! file depends on when or where it was written. A day is built in
//! `.staging` and renamed into place with its manifest (see `layout`), so a
//! run killed at any point leaves only `.staging`, which the next run clears
//! before it writes that day again.
use std::fs::{self, File};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use agentlog_log::EventSource;
use agentlog_log::chain::{self, GENESIS, Hash};
use agentlog_log::codec;
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, Encoding, ZstdLevel};
use parquet::file::metadata::{KeyValue, SortingColumn};
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use parquet::schema::types::ColumnPath;

use crate::columns::{self, ARCHIVE_SCHEMA_VERSION, BatchBuilder};
use crate::day::{Day, DayAssigner};
use crate::error::{Error, Result};
use crate::layout::{self, LOCK, STAGING};
use crate::manifest::{FORMAT, FileEntry, Manifest};

/// How files are cut and compressed. Part of every manifest: a day rerun
/// with the same settings gives the same bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Settings {
    /// A day with more events is split into several files.
    pub max_rows_per_file: u64,
    /// Rows per row group: the unit that statistics let a reader skip.
    pub row_group_rows: usize,
    /// zstd level of every column.
    pub zstd_level: i32,
}

impl Default for Settings {
    fn default() -> Self {
        Settings { max_rows_per_file: 1_000_000, row_group_rows: 65_536, zstd_level: 1 }
    }
}

impl Settings {
    fn validate(&self) -> Result<()> {
        if self.max_rows_per_file == 0 || self.row_group_rows == 0 {
            return Err(Error::Invalid("max rows per file and rows per row group must be at least 1".into()));
        }
        ZstdLevel::try_new(self.zstd_level)
            .map_err(|e| Error::Invalid(format!("zstd level {}: {e}", self.zstd_level)))?;
        Ok(())
    }

    fn writer_properties(&self) -> WriterProperties {
        let column = |name: &str| ColumnPath::from(name);
        let mut builder = WriterProperties::builder()
            .set_compression(Compression::ZSTD(ZstdLevel::try_new(self.zstd_level).expect("validated")))
            .set_max_row_group_row_count(Some(self.row_group_rows))
            .set_created_by(format!("agentlog-archive {ARCHIVE_SCHEMA_VERSION} (parquet-rs)"))
            .set_sorting_columns(Some(vec![SortingColumn { column_idx: 0, descending: false, nulls_first: false }]))
            .set_key_value_metadata(Some(vec![KeyValue::new(
                "agentlog.archive.schema_version".to_owned(),
                ARCHIVE_SCHEMA_VERSION.to_string(),
            )]))
            // A session's events are spread over the day: its id's min/max
            // rarely excludes a row group, a bloom filter does.
            .set_column_bloom_filter_enabled(column(columns::SESSION_ID), true)
            .set_column_bloom_filter_fpp(column(columns::SESSION_ID), 0.01)
            .set_column_bloom_filter_max_ndv(column(columns::SESSION_ID), 16_384);
        // Rising integers: deltas, no dictionary.
        for name in [columns::SEQ, "ts"] {
            builder = builder
                .set_column_dictionary_enabled(column(name), false)
                .set_column_encoding(column(name), Encoding::DELTA_BINARY_PACKED);
        }
        // Unique per row: a dictionary would only be built and thrown away.
        for name in ["event_id", "body_json", columns::ENVELOPE, "hash"] {
            builder = builder.set_column_dictionary_enabled(column(name), false);
        }
        // Nobody filters on blobs: their min/max would only take space.
        for name in ["body_json", columns::ENVELOPE, "hash"] {
            builder = builder.set_column_statistics_enabled(column(name), EnabledStatistics::None);
        }
        builder.build()
    }
}

/// Progress of a run, reported after every page of events.
#[derive(Clone, Copy, Debug)]
pub struct Progress {
    /// Events read so far in this run.
    pub events: u64,
    /// Events between the archive's end and the WAL's head when the run began.
    pub total: u64,
    pub day: Day,
}

/// One day written by a run.
#[derive(Clone, Debug)]
pub struct Written {
    pub manifest: Manifest,
    pub dir: PathBuf,
}

impl Written {
    pub fn bytes(&self) -> u64 {
        self.manifest.files.iter().map(|f| f.bytes).sum()
    }
}

/// What a run did.
#[derive(Clone, Debug, Default)]
pub struct Report {
    pub written: Vec<Written>,
    /// The last day archived, before or during this run.
    pub archived_through: Option<Day>,
    /// Events after `archived_through` left for a later run: their day is
    /// not closed yet (it is after `through`).
    pub pending_events: u64,
}

/// Where the archive ends: its last day and the chain there.
#[derive(Clone, Debug)]
pub struct End {
    pub day: Day,
    pub last_seq: u64,
    pub last_hash: Hash,
}

/// The last archived day, read from its manifest; checks that every `date=`
/// directory has a manifest.
pub fn end(root: &Path) -> Result<Option<End>> {
    let mut last = None;
    for (day, dir) in layout::days(root)? {
        let manifest = Manifest::read_required(&dir, root)?;
        let last_hash = parse_hash(&manifest.last_hash).ok_or_else(|| Error::Damaged {
            root: root.to_owned(),
            problem: format!("the manifest of {day} has a malformed last_hash"),
        })?;
        last = Some(End { day, last_seq: manifest.last_seq, last_hash });
    }
    Ok(last)
}

pub(crate) fn parse_hash(hex: &str) -> Option<Hash> {
    chain::from_hex(hex)?.try_into().ok()
}

/// Events read from the WAL per page.
const PAGE: usize = 8_192;

/// Archives every day up to and including `through` that has events and is
/// not archived yet. The caller makes sure `through` is over (`agentlog
/// archive run` refuses today and later).
pub fn run(
    store: &dyn EventSource,
    root: &Path,
    through: Day,
    settings: &Settings,
    progress: &mut dyn FnMut(Progress),
) -> Result<Report> {
    settings.validate()?;
    fs::create_dir_all(root).map_err(Error::io("creating the archive directory", root))?;
    // One run per archive: serve's nightly job and a cron run must not
    // clear each other's staging.
    let lock_path = root.join(LOCK);
    let lock = File::create(&lock_path).map_err(Error::io("creating", &lock_path))?;
    lock.try_lock().map_err(|e| match e {
        fs::TryLockError::WouldBlock => Error::Invalid(format!(
            "another `archive run` is writing to {} (it holds {LOCK}); wait for it to finish",
            root.display()
        )),
        fs::TryLockError::Error(e) => Error::io("locking", &lock_path)(e),
    })?;
    let staging = root.join(STAGING);
    layout::remove_tree(&staging)?;

    let end = end(root)?;
    let head = store.head()?;
    let (mut next_seq, mut previous) = match &end {
        Some(end) => (end.last_seq + 1, end.last_hash),
        None => (1, GENESIS),
    };
    if let Some(end) = &end {
        check_joins(store, root, end)?;
    }
    let mut report = Report { archived_through: end.as_ref().map(|e| e.day), ..Report::default() };
    let mut days = DayAssigner::new(end.as_ref().map(|e| e.day.next()));
    let mut open: Option<DayWriter> = None;
    let total = (head.last_seq + 1).saturating_sub(next_seq);
    let mut events = 0u64;
    let properties = settings.writer_properties();

    'pages: while next_seq <= head.last_seq {
        let mut stop = false;
        let mut error = None;
        let read = store.for_each_stored(next_seq, PAGE, &mut |seq, bytes| {
            if stop || error.is_some() {
                return Ok(());
            }
            let result = (|| -> Result<()> {
                let hash = chain::check_stored(&previous, bytes).map_err(|reason| Error::Damaged {
                    root: store.location().to_owned(),
                    problem: format!(
                        "the WAL's event {seq} does not chain from the one before it: {reason}; run `agentlog verify`"
                    ),
                })?;
                let envelope = codec::decode(bytes)?;
                if envelope.seq != seq {
                    return Err(Error::Damaged {
                        root: store.location().to_owned(),
                        problem: format!("the WAL stores seq {} under seq {seq}", envelope.seq),
                    });
                }
                let day = days.assign(agentlog_log::Timestamp::from_nanos(envelope.ts));
                if open.as_ref().is_some_and(|w| w.day != day) {
                    let finished = open.take().expect("checked").finish(root)?;
                    report.archived_through = Some(finished.manifest.day().expect("a day"));
                    report.written.push(finished);
                }
                if day > through {
                    stop = true;
                    return Ok(());
                }
                let writer = match &mut open {
                    Some(writer) => writer,
                    None => open.insert(DayWriter::new(day, &staging, settings, properties.clone(), previous)?),
                };
                writer.push(bytes, &envelope, hash)?;
                previous = hash;
                next_seq = seq + 1;
                Ok(())
            })();
            if let Err(e) = result {
                error = Some(e);
            }
            Ok(())
        })?;
        if let Some(e) = error {
            return Err(e);
        }
        if stop || read == 0 {
            break 'pages;
        }
        events += read as u64;
        if let Some(writer) = &open {
            progress(Progress { events: events.min(total), total, day: writer.day });
        }
    }
    if let Some(writer) = open.take() {
        let finished = writer.finish(root)?;
        report.archived_through = Some(finished.manifest.day().expect("a day"));
        report.written.push(finished);
    }
    layout::remove_tree(&staging)?;
    report.pending_events = (head.last_seq + 1).saturating_sub(next_seq);
    Ok(report)
}

/// The WAL must hold the archive's last event (or have pruned it) with the
/// same hash: otherwise the archive belongs to another log.
fn check_joins(store: &dyn EventSource, root: &Path, end: &End) -> Result<()> {
    let head = store.head()?;
    let diverged = |problem: String| Error::Diverged { root: root.to_owned(), problem };
    if head.last_seq < end.last_seq {
        return Err(diverged(format!(
            "the archive reaches seq {} ({}) but the WAL at {} ends at seq {}: is --data the log this archive was made from?",
            end.last_seq,
            end.day,
            store.location().display(),
            head.last_seq
        )));
    }
    if let Some(cut) = store.pruned_through()?.filter(|cut| cut.seq >= end.last_seq) {
        // Pruned at the archive's end (the only cut `archive prune` makes):
        // the WAL recorded the hash there.
        if cut.seq > end.last_seq {
            return Err(diverged(format!(
                "the WAL was pruned through seq {}, beyond the archive's end at seq {}: the events between are in neither",
                cut.seq, end.last_seq
            )));
        }
        if cut.hash != end.last_hash {
            return Err(diverged(format!(
                "the WAL was pruned at seq {} with another hash than the archive's: is --data the log this archive was made from?",
                cut.seq
            )));
        }
        return Ok(());
    }
    let mut found = None;
    store.for_each_stored(end.last_seq, 1, &mut |_, bytes| {
        found = Some(chain::stored_hash(bytes));
        Ok(())
    })?;
    match found {
        None => Err(diverged(format!("the WAL has no event {}", end.last_seq))),
        Some(Some(hash)) if hash == end.last_hash => Ok(()),
        Some(_) => Err(diverged(format!(
            "the archive's event {} ({}) has hash {}, the WAL's has another: is --data the log this archive was made from?",
            end.last_seq,
            end.day,
            chain::to_hex(&end.last_hash)
        ))),
    }
}

/// A hashing, counting file writer: the manifest's checksum and size come
/// from the bytes as they are written.
struct HashingFile {
    file: BufWriter<File>,
    hasher: blake3::Hasher,
    bytes: u64,
}

impl Write for HashingFile {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.file.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.file.flush()
    }
}

struct OpenFile {
    writer: ArrowWriter<HashingFile>,
    path: PathBuf,
    rows: u64,
    first_seq: u64,
    last_seq: u64,
}

/// One day being written in `.staging/date=…`.
struct DayWriter {
    day: Day,
    dir: PathBuf,
    settings: Settings,
    properties: WriterProperties,
    batch: BatchBuilder,
    file: Option<OpenFile>,
    files: Vec<FileEntry>,
    previous_hash: Hash,
    first_hash: Option<Hash>,
    last_hash: Hash,
    first_seq: u64,
    last_seq: u64,
    rows: u64,
}

impl DayWriter {
    fn new(
        day: Day,
        staging: &Path,
        settings: &Settings,
        properties: WriterProperties,
        previous: Hash,
    ) -> Result<Self> {
        let dir = staging.join(day.partition());
        fs::create_dir_all(&dir).map_err(Error::io("creating", &dir))?;
        Ok(DayWriter {
            day,
            dir,
            settings: *settings,
            properties,
            batch: BatchBuilder::with_capacity(settings.row_group_rows),
            file: None,
            files: Vec::new(),
            previous_hash: previous,
            first_hash: None,
            last_hash: previous,
            first_seq: 0,
            last_seq: 0,
            rows: 0,
        })
    }

    fn push(&mut self, stored: &[u8], envelope: &agentlog_log::Envelope, hash: Hash) -> Result<()> {
        if self.file.is_none() {
            let path = self.dir.join(".part.parquet.tmp");
            let file = File::create(&path).map_err(Error::io("creating", &path))?;
            let sink =
                HashingFile { file: BufWriter::with_capacity(1 << 20, file), hasher: blake3::Hasher::new(), bytes: 0 };
            let writer = ArrowWriter::try_new(sink, columns::schema(), Some(self.properties.clone()))
                .map_err(Error::parquet("starting", &path))?;
            self.file = Some(OpenFile { writer, path, rows: 0, first_seq: envelope.seq, last_seq: 0 });
        }
        if self.first_hash.is_none() {
            self.first_hash = Some(hash);
            self.first_seq = envelope.seq;
        }
        self.batch.push(stored, envelope);
        self.last_hash = hash;
        self.last_seq = envelope.seq;
        self.rows += 1;
        let file = self.file.as_mut().expect("opened above");
        file.rows += 1;
        file.last_seq = envelope.seq;
        if self.batch.len() >= self.settings.row_group_rows {
            let batch = self.batch.finish();
            file.writer.write(&batch).map_err(Error::parquet("writing", &file.path))?;
        }
        if file.rows >= self.settings.max_rows_per_file {
            self.close_file()?;
        }
        Ok(())
    }

    fn close_file(&mut self) -> Result<()> {
        let Some(mut file) = self.file.take() else { return Ok(()) };
        if !self.batch.is_empty() {
            let batch = self.batch.finish();
            file.writer.write(&batch).map_err(Error::parquet("writing", &file.path))?;
        }
        let sink = file.writer.into_inner().map_err(Error::parquet("finishing", &file.path))?;
        let HashingFile { file: buffered, hasher, bytes } = sink;
        let handle = buffered.into_inner().map_err(|e| Error::io("writing", &file.path)(e.into_error()))?;
        handle.sync_all().map_err(Error::io("syncing", &file.path))?;
        let name = layout::part_name(file.first_seq, file.last_seq);
        let path = self.dir.join(&name);
        fs::rename(&file.path, &path).map_err(Error::io("renaming into place", &path))?;
        self.files.push(FileEntry {
            name,
            rows: file.rows,
            first_seq: file.first_seq,
            last_seq: file.last_seq,
            bytes,
            blake3: hasher.finalize().to_hex().to_string(),
        });
        Ok(())
    }

    /// Closes the last file, writes the manifest, and moves the day into place.
    fn finish(mut self, root: &Path) -> Result<Written> {
        self.close_file()?;
        let manifest = Manifest {
            format: FORMAT.to_owned(),
            schema_version: ARCHIVE_SCHEMA_VERSION,
            date: self.day.to_string(),
            rows: self.rows,
            first_seq: self.first_seq,
            last_seq: self.last_seq,
            previous_hash: chain::to_hex(&self.previous_hash),
            first_hash: chain::to_hex(&self.first_hash.expect("a day has an event")),
            last_hash: chain::to_hex(&self.last_hash),
            files: std::mem::take(&mut self.files),
            max_rows_per_file: self.settings.max_rows_per_file,
            row_group_rows: self.settings.row_group_rows as u64,
        };
        manifest.write(&self.dir)?;
        let target = root.join(self.day.partition());
        if target.exists() {
            return Err(Error::Damaged {
                root: root.to_owned(),
                problem: format!(
                    "{} appeared while this run wrote it: is another archive run writing here?",
                    target.display()
                ),
            });
        }
        fs::rename(&self.dir, &target).map_err(Error::io("moving the day into place", &target))?;
        layout::sync_dir(root)?;
        Ok(Written { manifest, dir: target })
    }
}
