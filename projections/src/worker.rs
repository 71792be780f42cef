//! The worker that keeps the views current on disk: it follows the log
//! into [`Views`], saving states and checkpoints together (one write in the
//! projection store) at the [`Cadence`] — after so many events, or so long
//! after the first unsaved one — and never merely because it caught up (a
//! live log catches up after nearly every event). Queries and
//! read-your-writes answer from memory as soon as an event is folded,
//! saved or not; a restart folds again from the last checkpoint, each
//! event once. It loads the views back at start, checked against the log.
use std::pin::Pin;
use std::time::Duration;

use agentlog_core::{EventSource, Log, Subscription};
use futures_util::FutureExt as _;
use tokio::sync::watch;

use crate::error::{Error, Result};
use crate::live::Live;
use crate::projection::Projection;
use crate::store::ProjectionStore;
use crate::views::{PAGE, Views};

/// When the worker saves a checkpoint: once `events` events are unsaved, or
/// `interval` after the first unsaved event folded, whichever comes first,
/// and when it stops. A checkpoint costs what changed since the last one;
/// its cadence gathers many events' changes into one write instead of
/// paying a write per event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cadence {
    pub events: u64,
    pub interval: Duration,
}

impl Default for Cadence {
    fn default() -> Self {
        Cadence { events: 50_000, interval: Duration::from_secs(5) }
    }
}

/// Checkpoints the worker wrote (counter).
pub const CHECKPOINTS: &str = "agentlog_projection_checkpoints_total";
/// Bytes one checkpoint wrote, every view's state included (histogram).
pub const CHECKPOINT_BYTES: &str = "agentlog_projection_checkpoint_bytes";

impl Views {
    /// The views as last saved in `store`, checked against the log in `wal`
    /// (the embedded log's store, or a node's mirror).
    pub fn load(store: &ProjectionStore, wal: &dyn EventSource) -> Result<Views> {
        let (world, reputation) = (store.load()?, store.load()?);
        check_against_log(wal, &world)?;
        check_against_log(wal, &reputation)?;
        let views = Views::new(world, reputation);
        Ok(views)
    }

    /// Saves what every view changed since the last save, with their
    /// checkpoints, in one write. The fold waits only while the changes are
    /// taken (their cost, not the views'), not while they are written; then
    /// the views drop from memory what their cache does not keep. What a
    /// failed save took is written first by the next one (nothing settled
    /// is lost, and nothing is dropped from memory before it is stored).
    /// Returns the bytes written.
    pub fn save(&self, store: &ProjectionStore) -> Result<usize> {
        let mut unwritten = self.unwritten.lock().unwrap_or_else(|p| p.into_inner());
        let settled = self.settle();
        // Where this save leaves the views (what a failed one took is older).
        let position = settled.iter().map(|s| s.checkpoint.position).min().unwrap_or_default();
        unwritten.extend(settled);
        let size_bytes = store.write(&unwritten)?;
        unwritten.clear();
        let evicted = self.written(store);
        drop(unwritten);
        metrics::counter!(CHECKPOINTS).increment(1);
        metrics::histogram!(CHECKPOINT_BYTES).record(size_bytes as f64);
        tracing::debug!(message = "checkpoint", position, size_bytes, evicted);
        self.mark_saved(position);
        Ok(size_bytes)
    }
}

/// A projection that folded up to `position` must find the same event there.
fn check_against_log<P: Projection>(wal: &dyn EventSource, live: &Live<P>) -> Result<()> {
    let (name, position) = (P::NAME, live.position);
    if position == 0 {
        return Ok(());
    }
    let found = wal.read(position, 1)?;
    let found = found.first().map(|e| &e.hash[..]);
    if found != Some(live.chain_hash.as_slice()) {
        let hex = agentlog_core::chain::to_hex;
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
/// checkpoints at `cadence` and once more when it stops.
pub async fn follow<L: Log>(
    log: &L,
    views: &Views,
    store: &ProjectionStore,
    cadence: Cadence,
    mut stop: watch::Receiver<bool>,
) -> Result<()> {
    let mut unsaved = 0u64;
    // Runs from the first unsaved event; a checkpoint is due when it ends.
    let mut due: Option<Pin<Box<tokio::time::Sleep>>> = None;
    let folded = |n: usize, due: &mut Option<Pin<Box<tokio::time::Sleep>>>, unsaved: &mut u64| {
        if n > 0 && due.is_none() {
            *due = Some(Box::pin(tokio::time::sleep(cadence.interval)));
        }
        *unsaved += n as u64;
    };
    // One subscription for the whole run: what it reads ahead (a page from
    // the events the writer kept, or from the store) is folded, not read
    // again.
    let mut subscription = log.subscribe(views.position() + 1)?;
    let mut page = Vec::with_capacity(PAGE);
    loop {
        if *stop.borrow() {
            break;
        }
        // The next event, a checkpoint falling due, or the stop.
        tokio::select! {
            next = subscription.next() => {
                // With what else the subscription has, or can read, without
                // waiting (its `next` may be dropped while it waits: it loses
                // nothing): one fold and one publication of the position per
                // page.
                page.push(next?);
                while page.len() < PAGE && let Some(next) = subscription.next().now_or_never() {
                    page.push(next?);
                }
                views.apply(&page);
                folded(page.len(), &mut due, &mut unsaved);
                page.clear();
                if unsaved >= cadence.events {
                    views.save(store)?;
                    (unsaved, due) = (0, None);
                }
            }
            () = async { due.as_mut().expect("guarded by the condition").await }, if due.is_some() => {
                views.save(store)?;
                (unsaved, due) = (0, None);
            }
            _ = stop.changed() => {}
        }
    }
    if unsaved > 0 {
        views.save(store)?;
    }
    Ok(())
}
