//! The views every node keeps ([`Views`]): every projection behind one
//! lock each, the position they all reached, and folding a source of events
//! into them — a page at a time ([`Views::apply`]), an in-memory catch-up
//! ([`Views::catch_up`]) or a rebuild from sequence 1 ([`rebuild`]). They
//! read through [`EventSource`], so the WAL, a mirror or the archive feed the
//! same folds; keeping them on disk is the worker's job (`worker`).
use std::sync::{RwLock, RwLockReadGuard};
use std::time::Duration;

use agentlog_core::{Envelope, EventSource};
use tokio::sync::watch;

use crate::error::{Error, Result};
use crate::live::{Live, Runner};
use crate::reputation::Reputation;
use crate::world::WorldModel;

/// Events read from the log at a time.
pub(crate) const PAGE: usize = 4096;

/// The projections' names, in the order they are reported.
pub const NAMES: [&str; 2] = ["world", "reputation"];

/// Every projection, shared between the worker (writing) and queries
/// (reading).
#[derive(Debug)]
pub struct Views {
    world: RwLock<Live<WorldModel>>,
    reputation: RwLock<Live<Reputation>>,
    /// The sequence every view has reached.
    position: watch::Sender<u64>,
    /// The position of the last checkpoint written (the worker's), or of the
    /// one the views were loaded from.
    saved: watch::Sender<u64>,
    /// Held through a save, so saves are written in the order they were
    /// taken; holds what a failed save took, which the next one writes
    /// first.
    #[cfg_attr(not(feature = "store"), allow(dead_code))]
    pub(crate) unwritten: std::sync::Mutex<Vec<crate::live::Settled>>,
}

/// What `projections status` shows of one projection.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Status {
    pub name: &'static str,
    pub position: u64,
    pub state_hash: String,
}

impl Default for Views {
    fn default() -> Self {
        Views::new(Live::new(), Live::new())
    }
}

impl Views {
    pub(crate) fn new(world: Live<WorldModel>, reputation: Live<Reputation>) -> Self {
        let position = world.position.min(reputation.position);
        Views {
            world: RwLock::new(world),
            reputation: RwLock::new(reputation),
            position: watch::channel(position).0,
            saved: watch::channel(position).0,
            unwritten: std::sync::Mutex::new(Vec::new()),
        }
    }

    /// The position of the last checkpoint, as it changes.
    pub fn saved(&self) -> watch::Receiver<u64> {
        self.saved.subscribe()
    }

    /// Takes what every view changed since the last save, under both
    /// locks, so the two are taken at the same position.
    #[cfg(feature = "store")]
    pub(crate) fn settle(&self) -> Vec<crate::live::Settled> {
        let mut world = self.world.write().unwrap_or_else(|p| p.into_inner());
        let mut reputation = self.reputation.write().unwrap_or_else(|p| p.into_inner());
        vec![world.settle(), reputation.settle()]
    }

    /// After a save is written: every family reads what it does not keep
    /// in memory from `store`, and keeps at most its cache's worth of
    /// settled entities. Returns the entities dropped from memory.
    #[cfg(feature = "store")]
    pub(crate) fn written(&self, store: &crate::store::ProjectionStore) -> usize {
        let mut world = self.world.write().unwrap_or_else(|p| p.into_inner());
        let mut reputation = self.reputation.write().unwrap_or_else(|p| p.into_inner());
        store.written(&mut [&mut *world, &mut *reputation])
    }

    /// Entities the views hold in memory, by view and family.
    pub fn resident(&self) -> Vec<(&'static str, &'static str, usize)> {
        use crate::projection::Projection;
        fn each<P: Projection>(live: &Live<P>, out: &mut Vec<(&'static str, &'static str, usize)>) {
            out.extend(live.state.families().into_iter().map(|f| (P::NAME, f.kind(), f.resident())));
        }
        let mut out = Vec::new();
        each(&*self.world(), &mut out);
        each(&*self.reputation(), &mut out);
        out
    }

    #[cfg(feature = "store")]
    pub(crate) fn mark_saved(&self, position: u64) {
        self.saved.send_replace(position);
    }

    pub fn world(&self) -> RwLockReadGuard<'_, Live<WorldModel>> {
        self.world.read().unwrap_or_else(|p| p.into_inner())
    }

    pub fn reputation(&self) -> RwLockReadGuard<'_, Live<Reputation>> {
        self.reputation.read().unwrap_or_else(|p| p.into_inner())
    }

    /// The sequence every view reflects.
    pub fn position(&self) -> u64 {
        *self.position.borrow()
    }

    /// Waits until every view reflects `seq` (read-your-writes).
    pub async fn wait_for(&self, seq: u64, timeout: Duration) -> Result<u64> {
        let mut position = self.position.subscribe();
        match tokio::time::timeout(timeout, position.wait_for(|p| *p >= seq)).await {
            Ok(Ok(p)) => Ok(*p),
            _ => Err(Error::NotYet {
                seq,
                position: self.position(),
                timeout_ms: u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX),
            }),
        }
    }

    pub fn status(&self) -> Vec<Status> {
        let hex = agentlog_core::chain::to_hex;
        let (world, reputation) = (self.world(), self.reputation());
        vec![
            Status { name: "world", position: world.position, state_hash: hex(&world.state_hash()) },
            Status { name: "reputation", position: reputation.position, state_hash: hex(&reputation.state_hash()) },
        ]
    }

    /// Folds what `wal` holds past the views' position (an inspection's
    /// in-memory catch-up); returns the new position.
    pub fn catch_up(&self, wal: &dyn EventSource) -> Result<u64> {
        loop {
            let page = wal.read(self.position() + 1, PAGE)?;
            self.apply(&page);
            if page.len() < PAGE {
                return Ok(self.position());
            }
        }
    }

    /// Folds `events` (the next ones after the views' position, in order)
    /// into every view, then publishes the new position.
    pub fn apply(&self, events: &[Envelope]) {
        {
            let mut world = self.world.write().unwrap_or_else(|p| p.into_inner());
            let mut reputation = self.reputation.write().unwrap_or_else(|p| p.into_inner());
            for event in events {
                world.apply(event);
                reputation.apply(event);
            }
        }
        if let Some(last) = events.last() {
            self.position.send_replace(last.seq);
        }
    }
}

/// Folds the log in `wal` from sequence 1 up to `through` into `runners`
/// (reset first), calling `progress(done, through)` along the way. Reading
/// and decoding run on two other threads, a few pages ahead of the fold
/// ([`agentlog_core::read_ahead`]), so a rebuild takes about as long as the
/// slowest of the three, not their sum; the fold still sees every event
/// once, in order.
pub fn rebuild(
    wal: &dyn EventSource,
    runners: &mut [&mut dyn Runner],
    through: u64,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<u64> {
    rebuild_with(wal, runners, through, &mut |_, done| {
        progress(done, through);
        Ok(())
    })
}

/// What [`rebuild_with`] calls after each page: the runners, and the last
/// seq folded.
pub type AfterPage<'a> = dyn FnMut(&mut [&mut dyn Runner], u64) -> Result<()> + 'a;

/// [`rebuild`], calling `after_page(runners, done)` after each page is
/// folded (to save a checkpoint now and then: a rebuild into a store);
/// its error stops the rebuild.
pub fn rebuild_with(
    wal: &dyn EventSource,
    runners: &mut [&mut dyn Runner],
    through: u64,
    after_page: &mut AfterPage<'_>,
) -> Result<u64> {
    for runner in runners.iter_mut() {
        runner.reset();
    }
    let mut done = 0;
    let mut failed = None;
    agentlog_core::read_ahead(wal, 1, through, &mut |page| {
        let folded = page.map_err(Error::from).and_then(|page| {
            for event in page {
                for runner in runners.iter_mut() {
                    runner.apply(event);
                }
            }
            done = page.last().map_or(done, |last| last.seq);
            after_page(runners, done)
        });
        failed = folded.err();
        failed.is_none()
    });
    failed.map_or(Ok(done), Err)
}
