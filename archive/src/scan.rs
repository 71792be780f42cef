//! `archive scan`: events back out of the archive, in seq order, as the
//! bytes the log stored. Filters skip whole days by partition, row groups by
//! their statistics and session bloom filters, and read the envelope only
//! for rows whose filter columns match.
use std::fs::File;
use std::path::{Path, PathBuf};

use arrow_array::cast::AsArray;
use arrow_array::types::{Int32Type, UInt64Type};
use arrow_array::{Array, BinaryArray, BooleanArray, RecordBatch, UInt64Array};
use arrow_schema::ArrowError;
use parquet::arrow::ProjectionMask;
use parquet::arrow::arrow_reader::{
    ArrowPredicateFn, ParquetRecordBatchReader, ParquetRecordBatchReaderBuilder, RowFilter,
};
use parquet::file::metadata::RowGroupMetaData;

use crate::columns::{self, ENVELOPE, EVENT_TYPE, SEQ, SESSION_ID};
use crate::day::Day;
use crate::error::{Error, Result};
use crate::layout;
use crate::manifest::Manifest;

/// Which events to read; every field narrows the scan.
#[derive(Clone, Debug, Default)]
pub struct Filter {
    pub from: Option<Day>,
    pub to: Option<Day>,
    pub event_type: Option<String>,
    pub session: Option<String>,
    pub from_seq: Option<u64>,
    pub to_seq: Option<u64>,
}

/// One event read back: its seq and the bytes the log stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Scanned {
    pub seq: u64,
    pub envelope: Vec<u8>,
}

/// What a scan skipped, for `--stats` and the benchmark.
#[derive(Clone, Copy, Debug, Default)]
pub struct ScanStats {
    pub files: u64,
    pub row_groups: u64,
    pub row_groups_skipped: u64,
}

/// An iterator over the matching events of an archive, in seq order.
pub struct Scan {
    filter: Filter,
    files: std::vec::IntoIter<PathBuf>,
    current: Option<(ParquetRecordBatchReader, PathBuf)>,
    /// The batch being handed out: its seqs and envelopes (typed once per
    /// batch, not per row), and the next row.
    batch: Option<(UInt64Array, BinaryArray, usize)>,
    pub stats: ScanStats,
}

/// Starts a scan of the archive at `root`. Reads the manifests of the days
/// the filter allows (a day without one is an error) but no file yet.
pub fn scan(root: &Path, filter: Filter) -> Result<Scan> {
    let mut files = Vec::new();
    for (day, dir) in layout::days(root)? {
        if filter.from.is_some_and(|from| day < from) || filter.to.is_some_and(|to| day > to) {
            continue;
        }
        let manifest = Manifest::read_required(&dir, root)?;
        for file in &manifest.files {
            if filter.from_seq.is_some_and(|from| file.last_seq < from)
                || filter.to_seq.is_some_and(|to| file.first_seq > to)
            {
                continue;
            }
            files.push(dir.join(&file.name));
        }
    }
    Ok(Scan { filter, files: files.into_iter(), current: None, batch: None, stats: ScanStats::default() })
}

impl Scan {
    fn open(&mut self, path: PathBuf) -> Result<ParquetRecordBatchReader> {
        let file = File::open(&path).map_err(Error::io("opening", &path))?;
        let builder = ParquetRecordBatchReaderBuilder::try_new(file).map_err(Error::parquet("reading", &path))?;
        let parquet_schema = builder.parquet_schema().clone();
        let mut keep = Vec::new();
        for (index, group) in builder.metadata().row_groups().iter().enumerate() {
            self.stats.row_groups += 1;
            let mut possible = self.statistics_allow(group);
            if possible && let Some(session) = &self.filter.session {
                let bloom = builder
                    .get_row_group_column_bloom_filter(index, columns::index(SESSION_ID))
                    .map_err(Error::parquet("reading a bloom filter of", &path))?;
                possible = bloom.is_none_or(|bloom| bloom.check(session.as_str()));
            }
            if possible {
                keep.push(index);
            } else {
                self.stats.row_groups_skipped += 1;
            }
        }
        self.stats.files += 1;
        let mut predicates: Vec<Box<dyn parquet::arrow::arrow_reader::ArrowPredicate>> = Vec::new();
        if self.filter.from_seq.is_some() || self.filter.to_seq.is_some() {
            let (from, to) = (self.filter.from_seq.unwrap_or(0), self.filter.to_seq.unwrap_or(u64::MAX));
            let mask = ProjectionMask::roots(&parquet_schema, [columns::index(SEQ)]);
            predicates.push(Box::new(ArrowPredicateFn::new(mask, move |batch: RecordBatch| {
                let seqs = batch.column(0).as_primitive::<UInt64Type>();
                Ok(seqs.iter().map(|seq| Some(seq.is_some_and(|s| (from..=to).contains(&s)))).collect::<BooleanArray>())
            })));
        }
        if let Some(wanted) = self.filter.event_type.clone() {
            let mask = ProjectionMask::roots(&parquet_schema, [columns::index(EVENT_TYPE)]);
            predicates.push(Box::new(ArrowPredicateFn::new(mask, move |batch: RecordBatch| type_is(&batch, &wanted))));
        }
        if let Some(wanted) = self.filter.session.clone() {
            let mask = ProjectionMask::roots(&parquet_schema, [columns::index(SESSION_ID)]);
            predicates.push(Box::new(ArrowPredicateFn::new(mask, move |batch: RecordBatch| {
                let ids = batch.column(0).as_string::<i32>();
                Ok(ids.iter().map(|id| Some(id == Some(wanted.as_str()))).collect::<BooleanArray>())
            })));
        }
        let projection = ProjectionMask::roots(&parquet_schema, [columns::index(SEQ), columns::index(ENVELOPE)]);
        builder
            .with_row_groups(keep)
            .with_projection(projection)
            .with_row_filter(RowFilter::new(predicates))
            .with_batch_size(4096)
            .build()
            .map_err(Error::parquet("reading", &path))
    }

    /// Whether a row group's min/max statistics leave room for a match.
    fn statistics_allow(&self, group: &RowGroupMetaData) -> bool {
        let bytes_within = |column: &str, wanted: &[u8]| {
            let Some(stats) = group.column(columns::index(column)).statistics() else { return true };
            let below = stats.min_bytes_opt().is_some_and(|min| wanted < min);
            let above = stats.max_bytes_opt().is_some_and(|max| wanted > max);
            !below && !above
        };
        let seqs_overlap = || {
            let Some(stats) = group.column(columns::index(SEQ)).statistics() else { return true };
            let read = |b: Option<&[u8]>| b.and_then(|b| b.try_into().ok()).map(u64::from_le_bytes);
            let (min, max) = (read(stats.min_bytes_opt()), read(stats.max_bytes_opt()));
            !(self.filter.from_seq.zip(max).is_some_and(|(from, max)| max < from)
                || self.filter.to_seq.zip(min).is_some_and(|(to, min)| min > to))
        };
        self.filter.event_type.as_deref().is_none_or(|t| bytes_within(EVENT_TYPE, t.as_bytes()))
            && self.filter.session.as_deref().is_none_or(|s| bytes_within(SESSION_ID, s.as_bytes()))
            && seqs_overlap()
    }
}

fn type_is(batch: &RecordBatch, wanted: &str) -> Result<BooleanArray, ArrowError> {
    let types = batch.column(0).as_dictionary::<Int32Type>();
    let values = types.values().as_string::<i32>();
    let key = values.iter().position(|v| v == Some(wanted));
    let Some(key) = key.and_then(|k| i32::try_from(k).ok()) else {
        return Ok(BooleanArray::from(vec![false; batch.num_rows()]));
    };
    Ok(types.keys().iter().map(|k| Some(k == Some(key))).collect())
}

impl Scan {
    /// The next matching event, handed to `f` as it lies in the decoded
    /// page (no copy); `None` at the end.
    pub fn next_with<T>(&mut self, f: impl FnOnce(u64, &[u8]) -> T) -> Option<Result<T>> {
        loop {
            if let Some((seqs, envelopes, row)) = &mut self.batch {
                if *row < seqs.len() {
                    let item = f(seqs.value(*row), envelopes.value(*row));
                    *row += 1;
                    return Some(Ok(item));
                }
                self.batch = None;
            }
            if let Some((reader, path)) = &mut self.current {
                match reader.next() {
                    Some(Ok(batch)) => {
                        if batch.column(0).null_count() > 0 || batch.column(1).null_count() > 0 {
                            return Some(Err(Error::Damaged {
                                root: path.clone(),
                                problem: "a row has no seq or no envelope".into(),
                            }));
                        }
                        let seqs = batch.column(0).as_primitive::<UInt64Type>().clone();
                        self.batch = Some((seqs, batch.column(1).as_binary::<i32>().clone(), 0));
                        continue;
                    }
                    Some(Err(source)) => return Some(Err(Error::Arrow { path: path.clone(), source })),
                    None => self.current = None,
                }
            }
            let path = self.files.next()?;
            match self.open(path.clone()) {
                Ok(reader) => self.current = Some((reader, path)),
                Err(e) => return Some(Err(e)),
            }
        }
    }
}

impl Iterator for Scan {
    type Item = Result<Scanned>;

    fn next(&mut self) -> Option<Result<Scanned>> {
        self.next_with(|seq, envelope| Scanned { seq, envelope: envelope.to_vec() })
    }
}
