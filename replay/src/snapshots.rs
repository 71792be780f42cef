//! Snapshots that make a jump to any point fast. While replay folds a
//! history it keeps both views in a projection store of its own (never the
//! node's) and, at every `interval` events, copies that store into
//! `<cache>/<log id>/seq-<N>` (a RocksDB checkpoint: hard links, nearly
//! free). A later jump to any point starts from the last snapshot at or
//! before it and folds at most `interval` events. The log id is the first
//! event's chain hash; a snapshot is named by its seq and the chain hash
//! there, and used only if its checkpoint's chain hash is the history's at
//! its seq, so snapshots of another log, or of a history changed since,
//! are never used (both keep their own). The source is never written; the
//! cache is.
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};

use agentlog_core::EventSource;
use agentlog_core::chain::{self, to_hex};
use agentlog_projections::{Live, ProjectionStore, Reputation, Runner, WorldModel};

use crate::error::{Error, Result};
use crate::point::State;
use crate::source::History;

/// Events between two snapshots, unless told otherwise.
pub const DEFAULT_INTERVAL: u64 = 25_000;

/// The snapshots of one log.
#[derive(Debug)]
pub struct Snapshots {
    root: PathBuf,
    interval: u64,
}

/// The chain hash of event `seq`, as stored.
fn hash_at(history: &History, seq: u64) -> Result<String> {
    let mut hash = None;
    history.for_each_stored(seq, 1, &mut |_, bytes| {
        hash = chain::stored_hash(bytes);
        Ok(())
    })?;
    hash.map(|h| to_hex(&h)).ok_or(Error::PastHead { seq, head: history.head()?.last_seq })
}

impl Snapshots {
    /// The snapshots of `history` kept under `cache`, one every `interval`
    /// events.
    pub fn open(cache: &Path, history: &History, interval: u64) -> Result<Snapshots> {
        if history.first_seq() > 1 {
            return Err(Error::NotFromStart { first: history.first_seq() });
        }
        if history.head()?.last_seq == 0 {
            return Err(Error::Empty);
        }
        let id = hash_at(history, 1)?;
        // Snapshots of another format hold views another fold made: not
        // continued from.
        let root = cache.join(&id[..32]).join(format!("format-{}", agentlog_projections::live::FORMAT));
        std::fs::create_dir_all(&root).map_err(|e| Error::Cache { path: root.clone(), reason: e.to_string() })?;
        Ok(Snapshots { root, interval: interval.max(1) })
    }

    /// Where they are kept.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The snapshot at `seq` whose chain hash there is `hash` (hex).
    fn dir(&self, seq: u64, hash: &str) -> PathBuf {
        self.root.join(format!("seq-{seq:020}-{}", &hash[..16]))
    }

    /// The seqs snapshots were taken at, in order (of any history of this
    /// log: see [`Snapshots`]).
    pub fn taken(&self) -> Result<Vec<u64>> {
        let entries = std::fs::read_dir(&self.root)
            .map_err(|e| Error::Cache { path: self.root.clone(), reason: e.to_string() })?;
        let mut seqs: Vec<u64> = entries
            .filter_map(|e| e.ok()?.file_name().to_str()?.strip_prefix("seq-")?.split('-').next()?.parse().ok())
            .collect();
        seqs.sort_unstable();
        seqs.dedup();
        Ok(seqs)
    }

    /// Whether there is a snapshot at `seq` holding both views at `seq` of
    /// this very history.
    fn usable(&self, history: &History, seq: u64) -> Result<bool> {
        let expected = hash_at(history, seq)?;
        let Some(store) = ProjectionStore::open_read_only(&self.dir(seq, &expected))? else { return Ok(false) };
        for name in [
            <WorldModel as agentlog_projections::Projection>::NAME,
            <Reputation as agentlog_projections::Projection>::NAME,
        ] {
            match store.checkpoint(name)? {
                Some(c) if c.position == seq && c.chain_hash == expected => {}
                _ => return Ok(false),
            }
        }
        Ok(true)
    }

    /// Both views just after `seq`: from the last usable snapshot at or
    /// before it, taking the snapshots missing on the way.
    pub fn state_at(&self, history: &History, seq: u64, progress: &mut dyn FnMut(u64, u64)) -> Result<State> {
        let head = history.head()?.last_seq;
        if seq > head {
            return Err(Error::PastHead { seq, head });
        }
        let mut base = (0, String::new());
        for taken in self.taken()?.into_iter().rev().filter(|s| *s <= seq) {
            if self.usable(history, taken)? {
                base = (taken, hash_at(history, taken)?);
                break;
            }
        }
        let (base, base_hash) = base;
        let cache_error = |e: std::io::Error| Error::Cache { path: self.root.clone(), reason: e.to_string() };
        let work = tempfile::Builder::new().prefix("work-").tempdir_in(&self.root).map_err(cache_error)?;
        let store_dir = work.path().join("views");
        if base > 0 {
            let snapshot =
                ProjectionStore::open_read_only(&self.dir(base, &base_hash))?.expect("a usable snapshot exists");
            snapshot.snapshot_into(&store_dir)?;
        }
        let store = ProjectionStore::open(&store_dir)?;
        let mut world: Live<WorldModel> = if base > 0 { store.load()? } else { Live::new() };
        let mut reputation: Live<Reputation> = if base > 0 { store.load()? } else { Live::new() };
        if world.position != base || reputation.position != base {
            return Err(Error::Cache {
                path: self.dir(base, &base_hash),
                reason: format!("its views load at seq {} and {}, not {base}", world.position, reputation.position),
            });
        }
        let mut next = base + 1;
        while next <= seq {
            let boundary = (next - 1) / self.interval * self.interval + self.interval;
            let upto = seq.min(boundary);
            history.pages(next, upto, &mut |page| {
                for event in &page {
                    world.apply(event);
                    reputation.apply(event);
                }
                if world.largest_in_memory().max(reputation.largest_in_memory()) > store.cache_entities() {
                    store.save(&mut [&mut world, &mut reputation])?;
                }
                progress(page.last().map_or(upto, |e| e.seq), seq);
                Ok(ControlFlow::Continue(()))
            })?;
            next = upto + 1;
            let there = self.dir(boundary, &hash_at(history, boundary.min(head))?);
            if upto == boundary && !there.exists() {
                store.save(&mut [&mut world, &mut reputation])?;
                let taking = self.root.join(format!(".taking-{boundary:020}-{}", std::process::id()));
                store.snapshot_into(&taking)?;
                // Another replay may have taken it meanwhile: theirs stands.
                if std::fs::rename(&taking, there).is_err() {
                    let _ = std::fs::remove_dir_all(&taking);
                }
            }
        }
        Ok(State { seq, world, reputation, _work: Some(work) })
    }
}
