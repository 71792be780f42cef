//! [`History`]: one [`EventSource`] over everything kept, the archive's
//! days and then the WAL's tail, in seq order.
//!
//! Opening reads the archive's manifests (each day must begin where the one
//! before ended, and chain from its last hash) and checks the seam: the WAL
//! must hold the event after the archive's last one (or nothing after it),
//! and that event must chain from the archive's last hash. Reading checks
//! every event as it goes: its seq follows the one before and its stored
//! bytes chain from the event before. A gap or a broken link is an error
//! naming the seq, never skipped. Works from the archive alone, from the
//! WAL alone (then the history starts where the WAL was pruned, if it
//! was), and from both after a prune.
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};

use agentlog_archive::{Filter as ArchiveFilter, Manifest, Scan};
use agentlog_core::chain::{self, GENESIS, Hash};
use agentlog_core::{Envelope, Error as LogError, EventSource, Head, Pruned, Result as LogResult};
use agentlog_log::wal::Store;

use crate::error::{Error, Result};

/// Events read per page.
pub(crate) const PAGE: usize = 4096;

/// The archive's part: seqs `1..=last_seq`.
struct Archived {
    root: PathBuf,
    last_seq: u64,
    last_hash: Hash,
}

/// An archive scan positioned at seq `next`.
struct Cursor {
    scan: Scan,
    next: u64,
}

/// Everything kept, read as one checked source.
pub struct History {
    archive: Option<Archived>,
    wal: Option<Store>,
    /// The first seq kept, and the chain hash of the event before it.
    first: u64,
    before_first: Hash,
    head: Head,
    location: PathBuf,
    cursor: Mutex<Option<Cursor>>,
    /// The last event a read handed out and its hash: the next read that
    /// continues it checks its first link against this.
    last_read: Mutex<Option<(u64, Hash)>>,
}

impl std::fmt::Debug for History {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("History")
            .field("location", &self.location)
            .field("first", &self.first)
            .field("head", &self.head.last_seq)
            .finish_non_exhaustive()
    }
}

fn hash_of(root: &Path, what: &str, hex: &str) -> Result<Hash> {
    chain::from_hex(hex).and_then(|h| h.try_into().ok()).ok_or_else(|| {
        Error::Archive(agentlog_archive::Error::Damaged {
            root: root.to_owned(),
            problem: format!("a manifest's {what} is not a hash: {hex:?}"),
        })
    })
}

/// Reads the archive's manifests and checks that its days join: the first
/// begins at seq 1 and each begins after the one before and chains from it.
/// `None` for an archive with no day yet.
fn open_archive(root: &Path) -> Result<Option<Archived>> {
    if !root.is_dir() {
        return Err(Error::NoArchive { path: root.to_owned() });
    }
    let mut end: Option<(u64, Hash)> = None;
    for (day, dir) in agentlog_archive::layout::days(root)? {
        let manifest = Manifest::read_required(&dir, root)?;
        let previous = hash_of(root, "previous_hash", &manifest.previous_hash)?;
        let (expected_seq, expected_hash) = end.map_or((1, GENESIS), |(seq, hash)| (seq + 1, hash));
        if manifest.first_seq != expected_seq {
            return Err(Error::Seam {
                seq: expected_seq,
                reason: format!(
                    "the archive's day {day} begins at seq {} but the days before it end at seq {}: a day is missing from {}",
                    manifest.first_seq,
                    expected_seq - 1,
                    root.display()
                ),
            });
        }
        if previous != expected_hash {
            return Err(Error::Seam {
                seq: expected_seq,
                reason: format!("the archive's day {day} does not chain from the event before it"),
            });
        }
        end = Some((manifest.last_seq, hash_of(root, "last_hash", &manifest.last_hash)?));
    }
    Ok(end.map(|(last_seq, last_hash)| Archived { root: root.to_owned(), last_seq, last_hash }))
}

/// The stored bytes of one event of `source`.
fn stored(source: &dyn EventSource, seq: u64) -> LogResult<Vec<u8>> {
    let mut bytes = None;
    source.for_each_stored(seq, 1, &mut |_, b| {
        bytes = Some(b.to_vec());
        Ok(())
    })?;
    bytes.ok_or_else(|| LogError::Corrupt { seq, reason: format!("missing from {}", source.location().display()) })
}

impl History {
    /// Opens the WAL at `wal` (read-only), the archive at `archive`, or both,
    /// and checks that they join.
    pub fn open(wal: Option<&Path>, archive: Option<&Path>) -> Result<History> {
        let archive = archive.map(open_archive).transpose()?.flatten();
        let wal = wal.map(Store::open_read_only).transpose()?;
        let location = match (&wal, &archive) {
            (Some(wal), _) => EventSource::location(wal).to_owned(),
            (None, Some(archive)) => archive.root.clone(),
            (None, None) => return Err(Error::NoSource),
        };
        let (mut first, mut before_first, mut head) = (1, GENESIS, Head::EMPTY);
        if let Some(archive) = &archive {
            head = Head { last_seq: archive.last_seq, hash: archive.last_hash };
        }
        if let Some(store) = &wal {
            let wal_head = EventSource::head(store)?;
            let pruned = EventSource::pruned_through(store)?;
            match &archive {
                None => {
                    if let Some(Pruned { seq, hash }) = pruned {
                        (first, before_first) = (seq + 1, hash);
                    }
                    head = wal_head;
                }
                Some(archive) => {
                    Self::check_seam(store, archive, pruned, wal_head)?;
                    if wal_head.last_seq > archive.last_seq {
                        head = wal_head;
                    }
                }
            }
        }
        Ok(History {
            archive,
            wal,
            first,
            before_first,
            head,
            location,
            cursor: Mutex::new(None),
            last_read: Mutex::new(None),
        })
    }

    /// The WAL continues the archive: nothing is missing between them, the
    /// event they both hold last (if any) is the same, and the WAL's next
    /// event chains from the archive's last.
    fn check_seam(store: &Store, archive: &Archived, pruned: Option<Pruned>, wal_head: Head) -> Result<()> {
        let end = archive.last_seq;
        if let Some(cut) = pruned
            && cut.seq > end
        {
            return Err(Error::Seam {
                seq: end + 1,
                reason: format!(
                    "the archive ends at seq {end} but the WAL was pruned through seq {}: events {}..={} are in neither",
                    cut.seq,
                    end + 1,
                    cut.seq
                ),
            });
        }
        let held_by_both = pruned.is_none_or(|cut| cut.seq < end) && wal_head.last_seq >= end;
        if held_by_both && chain::stored_hash(&stored(store, end)?) != Some(archive.last_hash) {
            return Err(Error::Seam {
                seq: end,
                reason: "the archive and the WAL hold different events here: they are not of the same log".into(),
            });
        }
        if pruned.is_some_and(|cut| cut.seq == end) && pruned.map(|cut| cut.hash) != Some(archive.last_hash) {
            return Err(Error::Seam {
                seq: end,
                reason: "the WAL was pruned at the archive's end, but from another chain: they are not of the same log"
                    .into(),
            });
        }
        if wal_head.last_seq > end {
            let next = stored(store, end + 1)?;
            chain::check_stored(&archive.last_hash, &next).map_err(|reason| Error::Seam {
                seq: end + 1,
                reason: format!("the WAL does not continue the archive (seq {end}): {reason}"),
            })?;
        }
        Ok(())
    }

    /// The first seq kept (1 unless the WAL was pruned and no archive holds
    /// what it dropped).
    pub fn first_seq(&self) -> u64 {
        self.first
    }

    /// Reads events `from..=through` page by page, in order, handing each
    /// page (never empty) to `each`, which may stop the reading. A history
    /// that ends before `through` is [`Error::Seam`].
    pub(crate) fn pages(
        &self,
        from: u64,
        through: u64,
        each: &mut dyn FnMut(Vec<Envelope>) -> Result<ControlFlow<()>>,
    ) -> Result<()> {
        let mut next = from;
        while next <= through {
            let want = usize::try_from(through - next + 1).unwrap_or(PAGE).min(PAGE);
            let page = self.read(next, want)?;
            let Some(last) = page.last() else {
                return Err(Error::Seam { seq: next, reason: format!("the history ends before seq {through}") });
            };
            next = last.seq + 1;
            if each(page)?.is_break() {
                break;
            }
        }
        Ok(())
    }

    /// The chain hash of the event before `seq`: known when `seq` is the
    /// first kept or continues the last read; otherwise read (the event's
    /// own stored hash, which the link to `seq` then checks).
    fn previous_of(&self, seq: u64) -> LogResult<Hash> {
        if seq == self.first {
            return Ok(self.before_first);
        }
        if let Some((last, hash)) = *self.last_read.lock().unwrap_or_else(PoisonError::into_inner)
            && last + 1 == seq
        {
            return Ok(hash);
        }
        let before = seq - 1;
        let bytes = match &self.archive {
            Some(archive) if before <= archive.last_seq => self.archive_stored(archive, before)?,
            _ => stored(self.wal.as_ref().expect("beyond the archive is the WAL"), before)?,
        };
        chain::stored_hash(&bytes).ok_or_else(|| LogError::Corrupt {
            seq: before,
            reason: "the stored event does not end with its hash".into(),
        })
    }

    fn archive_stored(&self, archive: &Archived, seq: u64) -> LogResult<Vec<u8>> {
        let mut bytes = None;
        self.read_archive(archive, seq, seq, &mut |_, b| {
            bytes = Some(b.to_vec());
            Ok(())
        })?;
        bytes.ok_or_else(|| LogError::Corrupt { seq, reason: "missing from the archive".into() })
    }

    /// Calls `f` with each archived event `from..=to`, reusing the open scan
    /// when it stands at `from`.
    fn read_archive(
        &self,
        archive: &Archived,
        from: u64,
        to: u64,
        f: &mut dyn FnMut(u64, &[u8]) -> LogResult<()>,
    ) -> LogResult<()> {
        let failed =
            |e: agentlog_archive::Error| LogError::Storage { operation: "reading the archive", source: Box::new(e) };
        let mut cursor = self.cursor.lock().unwrap_or_else(PoisonError::into_inner);
        if cursor.as_ref().is_none_or(|c| c.next != from) {
            let filter = ArchiveFilter { from_seq: Some(from), ..ArchiveFilter::default() };
            *cursor = Some(Cursor { scan: agentlog_archive::scan(&archive.root, filter).map_err(failed)?, next: from });
        }
        let cursor = cursor.as_mut().expect("just opened");
        while cursor.next <= to {
            let read = match cursor.scan.next_with(|seq, bytes| f(seq, bytes).map(|()| seq)) {
                Some(read) => read.map_err(failed)??,
                None => {
                    return Err(LogError::Corrupt {
                        seq: cursor.next,
                        reason: format!(
                            "the archive at {} ends before this seq, though its manifests say it holds through seq {}",
                            archive.root.display(),
                            archive.last_seq
                        ),
                    });
                }
            };
            cursor.next = read + 1;
        }
        Ok(())
    }
}

impl EventSource for History {
    fn location(&self) -> &Path {
        &self.location
    }

    fn head(&self) -> LogResult<Head> {
        Ok(self.head)
    }

    fn pruned_through(&self) -> LogResult<Option<Pruned>> {
        Ok((self.first > 1).then_some(Pruned { seq: self.first - 1, hash: self.before_first }))
    }

    fn for_each_stored(
        &self,
        from_seq: u64,
        max: usize,
        f: &mut dyn FnMut(u64, &[u8]) -> LogResult<()>,
    ) -> LogResult<usize> {
        if from_seq < self.first {
            return Err(LogError::Pruned { seq: from_seq, through: self.first - 1 });
        }
        if max == 0 || from_seq > self.head.last_seq {
            return Ok(0);
        }
        let to = self.head.last_seq.min(from_seq.saturating_add(max as u64 - 1));
        let mut read = Checked { next: from_seq, previous: self.previous_of(from_seq)?, f };
        if let Some(archive) = &self.archive
            && read.next <= archive.last_seq
        {
            let upto = to.min(archive.last_seq);
            self.read_archive(archive, read.next, upto, &mut |seq, bytes| read.event(seq, bytes, "the archive"))?;
        }
        if read.next <= to {
            let wal = self.wal.as_ref().ok_or_else(|| LogError::Corrupt {
                seq: read.next,
                reason: "past the archive's end, and no WAL was given".into(),
            })?;
            let want = usize::try_from(to - read.next + 1).unwrap_or(usize::MAX);
            EventSource::for_each_stored(wal, read.next, want, &mut |seq, bytes| read.event(seq, bytes, "the WAL"))?;
        }
        if read.next <= to {
            return Err(LogError::Corrupt {
                seq: read.next,
                reason: "missing: the history ends before its head".into(),
            });
        }
        *self.last_read.lock().unwrap_or_else(PoisonError::into_inner) = Some((read.next - 1, read.previous));
        Ok(usize::try_from(read.next - from_seq).unwrap_or(usize::MAX))
    }
}

/// A read in progress: each event must be the next seq and chain from the
/// one before.
struct Checked<'a> {
    next: u64,
    previous: Hash,
    f: &'a mut dyn FnMut(u64, &[u8]) -> LogResult<()>,
}

impl Checked<'_> {
    fn event(&mut self, seq: u64, bytes: &[u8], from: &str) -> LogResult<()> {
        if seq != self.next {
            return Err(LogError::Corrupt {
                seq: self.next,
                reason: format!("missing from {from}: the next event it holds is seq {seq}"),
            });
        }
        self.previous = chain::check_stored(&self.previous, bytes)
            .map_err(|reason| LogError::Corrupt { seq, reason: format!("{reason} (read from {from})") })?;
        (self.f)(seq, bytes)?;
        self.next += 1;
        Ok(())
    }
}
