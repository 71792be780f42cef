//! The views kept current: every projection ([`Views`]), the worker that
//! follows the log into them ([`follow`]), and rebuilding from sequence 1
//! ([`rebuild`]). The worker reads the log in pages (the embedded log, or a
//! node's JetStream mirror), folds each page into every projection under one
//! lock, and saves states and checkpoints together every
//! [`CHECKPOINT_EVENTS`] events and whenever it has caught up.
use std::sync::{RwLock, RwLockReadGuard};
use std::time::Duration;

use agentlog_log::wal::Store;
use agentlog_log::{Envelope, Log, Subscription};
use tokio::sync::watch;

use crate::error::{Error, Result};
use crate::live::{Live, Runner};
use crate::projection::Projection;
use crate::reputation::Reputation;
use crate::store::ProjectionStore;
use crate::world::WorldModel;

/// Events read from the log at a time.
const PAGE: usize = 4096;

/// Pages a rebuild reads ahead of its fold.
const PAGES_AHEAD: usize = 4;

/// Most events folded between two checkpoints while the log keeps coming.
pub const CHECKPOINT_EVENTS: u64 = 50_000;

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
    fn new(world: Live<WorldModel>, reputation: Live<Reputation>) -> Self {
        let position = world.position.min(reputation.position);
        Views { world: RwLock::new(world), reputation: RwLock::new(reputation), position: watch::channel(position).0 }
    }

    /// The views as last saved in `store`, checked against the log in `wal`
    /// (the embedded log's store, or a node's mirror).
    pub fn load(store: &ProjectionStore, wal: &Store) -> Result<Views> {
        let (world, reputation) = (store.load()?, store.load()?);
        check_against_log(wal, &world)?;
        check_against_log(wal, &reputation)?;
        let views = Views::new(world, reputation);
        Ok(views)
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
        let hex = agentlog_log::chain::to_hex;
        let (world, reputation) = (self.world(), self.reputation());
        vec![
            Status { name: "world", position: world.position, state_hash: hex(&world.state_hash()) },
            Status { name: "reputation", position: reputation.position, state_hash: hex(&reputation.state_hash()) },
        ]
    }

    /// Folds what `wal` holds past the views' position (an inspection's
    /// in-memory catch-up); returns the new position.
    pub fn catch_up(&self, wal: &Store) -> Result<u64> {
        loop {
            let page = wal.read(self.position() + 1, PAGE)?;
            self.apply(&page);
            if page.len() < PAGE {
                return Ok(self.position());
            }
        }
    }

    fn apply(&self, events: &[Envelope]) {
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

    pub fn save(&self, store: &ProjectionStore) -> Result<()> {
        let (world, reputation) = (self.world(), self.reputation());
        store.save(&[&*world as &dyn Runner, &*reputation])
    }
}

/// A projection that folded up to `position` must find the same event there.
fn check_against_log<P: Projection>(wal: &Store, live: &Live<P>) -> Result<()> {
    let (name, position) = (P::NAME, live.position);
    if position == 0 {
        return Ok(());
    }
    let found = wal.read(position, 1)?;
    let found = found.first().map(|e| e.hash.as_slice());
    if found != Some(live.chain_hash.as_slice()) {
        let hex = agentlog_log::chain::to_hex;
        let reason = match found {
            None => format!("it folded up to seq {position}, which the log does not have"),
            Some(hash) => format!(
                "its seq {position} had hash {}, the log's has {}: the log was replaced",
                hex(&live.chain_hash),
                hex(hash)
            ),
        };
        return Err(Error::CorruptCheckpoint { name: name.to_owned(), reason });
    }
    Ok(())
}

/// Follows the log into the views until `stop` turns true, saving
/// checkpoints as it goes and once more when it stops.
pub async fn follow<L: Log>(
    log: &L,
    views: &Views,
    store: &ProjectionStore,
    mut stop: watch::Receiver<bool>,
) -> Result<()> {
    let mut unsaved = 0u64;
    loop {
        if *stop.borrow() {
            break;
        }
        let from = views.position() + 1;
        let page = log.read(from, PAGE).await?;
        views.apply(&page);
        unsaved += page.len() as u64;
        if unsaved >= CHECKPOINT_EVENTS {
            views.save(store)?;
            unsaved = 0;
        }
        if page.len() == PAGE {
            continue;
        }
        // Caught up: save, then sleep until the next event commits.
        if unsaved > 0 {
            views.save(store)?;
            unsaved = 0;
        }
        let mut subscription = log.subscribe(views.position() + 1)?;
        tokio::select! {
            next = subscription.next() => {
                let event = next?;
                views.apply(std::slice::from_ref(&event));
                unsaved += 1;
            }
            _ = stop.changed() => {}
        }
    }
    if unsaved > 0 {
        views.save(store)?;
    }
    Ok(())
}

/// Folds the log in `wal` from sequence 1 up to `through` into `runners`
/// (reset first), calling `progress(done, through)` along the way. Reading
/// and decoding run on a second thread, a few pages ahead of the fold, so a
/// rebuild takes about as long as the slower of the two, not their sum; the
/// fold still sees every event once, in order.
pub fn rebuild(
    wal: &Store,
    runners: &mut [&mut dyn Runner],
    through: u64,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<u64> {
    for runner in runners.iter_mut() {
        runner.reset();
    }
    let (pages, folding) = std::sync::mpsc::sync_channel::<Result<Vec<Envelope>>>(PAGES_AHEAD);
    std::thread::scope(|scope| {
        scope.spawn(move || {
            let mut next = 1;
            while next <= through {
                let max = usize::try_from(through - next + 1).unwrap_or(PAGE).min(PAGE);
                let page = wal.read(next, max).map_err(Error::from);
                let last = page.as_ref().map(|p| p.last().map(|e| e.seq));
                let stop = !matches!(last, Ok(Some(_)));
                if let Ok(Some(last)) = last {
                    next = last + 1;
                }
                // The folding side hung up (it failed): stop reading.
                if pages.send(page).is_err() || stop {
                    return;
                }
            }
        });
        let mut done = 0;
        for page in folding {
            let page = page?;
            let Some(last) = page.last() else { break };
            done = last.seq;
            for event in &page {
                for runner in runners.iter_mut() {
                    runner.apply(event);
                }
            }
            progress(done, through);
        }
        Ok(done)
    })
}
