//! A day's manifest: what the day holds (rows, seq range, the chain hashes
//! at both ends and the one before it) and each file's size and checksum.
//! Written last; a day is archived exactly when its manifest is in place.
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::day::Day;
use crate::error::{Error, Result};
use crate::layout::{self, MANIFEST};

pub const FORMAT: &str = "agentlog-archive";

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// Always `agentlog-archive`.
    pub format: String,
    /// [`crate::ARCHIVE_SCHEMA_VERSION`] of the writer.
    pub schema_version: u32,
    /// The UTC day, `YYYY-MM-DD`.
    pub date: String,
    pub rows: u64,
    pub first_seq: u64,
    pub last_seq: u64,
    /// Hex chain hash of event `first_seq - 1` (zeros when `first_seq` is 1):
    /// what the day's first event chains from.
    pub previous_hash: String,
    /// Hex chain hashes of the first and the last event.
    pub first_hash: String,
    pub last_hash: String,
    /// In seq order; together they hold `first_seq..=last_seq` without gaps.
    pub files: Vec<FileEntry>,
    /// The writer's settings: rerunning the day with them gives the same bytes.
    pub max_rows_per_file: u64,
    pub row_group_rows: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileEntry {
    pub name: String,
    pub rows: u64,
    pub first_seq: u64,
    pub last_seq: u64,
    pub bytes: u64,
    /// Hex blake3 of the file's bytes.
    pub blake3: String,
}

impl Manifest {
    pub fn day(&self) -> Option<Day> {
        self.date.parse().ok()
    }

    /// Reads `<day dir>/_manifest.json`; `None` when there is none.
    pub fn read(day_dir: &Path) -> Result<Option<Manifest>> {
        let path = day_dir.join(MANIFEST);
        let text = match std::fs::read(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Error::io("reading", &path)(e)),
        };
        let manifest: Manifest = serde_json::from_slice(&text).map_err(|e| Error::Damaged {
            root: day_dir.to_owned(),
            problem: format!("{} is not a valid manifest: {e}", path.display()),
        })?;
        if manifest.format != FORMAT || manifest.schema_version != crate::ARCHIVE_SCHEMA_VERSION {
            return Err(Error::Damaged {
                root: day_dir.to_owned(),
                problem: format!(
                    "{} is format {:?} version {}; this build reads {FORMAT:?} version {}",
                    path.display(),
                    manifest.format,
                    manifest.schema_version,
                    crate::ARCHIVE_SCHEMA_VERSION
                ),
            });
        }
        Ok(Some(manifest))
    }

    /// Reads the manifest of a day that is in place: agentlog never puts a
    /// day in place without one, so its absence is damage.
    pub fn read_required(day_dir: &Path, root: &Path) -> Result<Manifest> {
        Manifest::read(day_dir)?.ok_or_else(|| Error::Damaged {
            root: root.to_owned(),
            problem: format!(
                "{} has no manifest (agentlog never leaves a day without one, so it was changed by hand): restore it, or move the day away and run `agentlog archive run` again",
                day_dir.display()
            ),
        })
    }

    /// Writes the manifest into `day_dir` by atomic rename.
    pub fn write(&self, day_dir: &Path) -> Result<()> {
        let mut text = serde_json::to_vec_pretty(self).expect("a manifest serializes");
        text.push(b'\n');
        layout::write_atomic(&day_dir.join(MANIFEST), &text)
    }
}
