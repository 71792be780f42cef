//! The worker that keeps the views current on disk: it follows the log
//! into [`Views`], saving states and checkpoints together (one write in the
//! projection store) every [`CHECKPOINT_EVENTS`] events and whenever it has
//! caught up, and loads them back at start, checked against the log.
use agentlog_core::{EventSource, Log, Subscription};
use tokio::sync::watch;

use crate::error::{Error, Result};
use crate::live::{Live, Runner};
use crate::projection::Projection;
use crate::store::ProjectionStore;
use crate::views::{PAGE, Views};

/// Most events folded between two checkpoints while the log keeps coming.
pub const CHECKPOINT_EVENTS: u64 = 50_000;

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

    /// Saves every view with its checkpoint, in one write.
    pub fn save(&self, store: &ProjectionStore) -> Result<()> {
        let (world, reputation) = (self.world(), self.reputation());
        let size_bytes = store.save(&[&*world as &dyn Runner, &*reputation])?;
        metrics::counter!(CHECKPOINTS).increment(1);
        metrics::histogram!(CHECKPOINT_BYTES).record(size_bytes as f64);
        tracing::debug!(message = "checkpoint", position = world.position.min(reputation.position), size_bytes);
        Ok(())
    }
}

/// A projection that folded up to `position` must find the same event there.
fn check_against_log<P: Projection>(wal: &dyn EventSource, live: &Live<P>) -> Result<()> {
    let (name, position) = (P::NAME, live.position);
    if position == 0 {
        return Ok(());
    }
    let found = wal.read(position, 1)?;
    let found = found.first().map(|e| e.hash.as_slice());
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
