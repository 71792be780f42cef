//! Where things are under an archive root, and the file-system steps that
//! make a day appear whole or not at all.
//!
//! ```text
//! <root>/date=2026-01-01/part-<first seq>-<last seq>.parquet   (seqs zero-padded to 20 digits)
//! <root>/date=2026-01-01/_manifest.json
//! <root>/.staging/                                             (a day being written; never read)
//! <root>/.lock                                                 (held by the run writing)
//! ```
//!
//! A day is written in `.staging/date=…`, its manifest last, and then the
//! whole directory is renamed into place: a reader sees a day complete with
//! its manifest, or not at all. Readers that list datasets skip names
//! starting with `.` or `_` (pyarrow, Spark), and `date=*/*.parquet` globs
//! (DuckDB, polars) never reach `.staging`.
use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::day::Day;
use crate::error::{Error, Result};

pub const MANIFEST: &str = "_manifest.json";
pub const STAGING: &str = ".staging";
/// Held (an advisory lock) by the one `archive run` writing here.
pub const LOCK: &str = ".lock";

/// `part-<first>-<last>.parquet`, zero-padded so that names sort by seq.
pub fn part_name(first_seq: u64, last_seq: u64) -> String {
    format!("part-{first_seq:020}-{last_seq:020}.parquet")
}

/// The archived days under `root`, in date order: every `date=…` directory.
/// A missing root is an empty archive.
pub fn days(root: &Path) -> Result<Vec<(Day, PathBuf)>> {
    let entries = match fs::read_dir(root) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::io("listing", root)(e)),
    };
    let mut days = Vec::new();
    for entry in entries {
        let entry = entry.map_err(Error::io("listing", root))?;
        let name = entry.file_name();
        if let Some(day) = name.to_str().and_then(Day::from_partition) {
            days.push((day, entry.path()));
        }
    }
    days.sort();
    Ok(days)
}

/// Flushes a directory's entries (new, renamed or removed files) to disk.
pub fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(Error::io("syncing the directory", dir))
}

/// Writes a small file whole or not at all: a temporary name, synced, then
/// renamed over `path`, then the directory synced.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path.parent().expect("a file path has a parent");
    let name = path.file_name().expect("a file path has a name").to_string_lossy();
    let temporary = dir.join(format!(".{name}.tmp"));
    let mut file = File::create(&temporary).map_err(Error::io("creating", &temporary))?;
    file.write_all(bytes).and_then(|()| file.sync_all()).map_err(Error::io("writing", &temporary))?;
    fs::rename(&temporary, path).map_err(Error::io("renaming into place", path))?;
    sync_dir(dir)
}

/// Removes a directory tree if it exists.
pub fn remove_tree(path: &Path) -> Result<()> {
    match fs::remove_dir_all(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io("removing", path)(e)),
    }
}
