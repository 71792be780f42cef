//! A live, ordered feed of a WAL: the subscription of the embedded log and
//! of the JetStream log's mirror alike. It reads committed events in pages
//! (from the events its writer kept in memory when it is near the tail, or
//! else from the store) and, once caught up, sleeps on the head's `watch`
//! (no polling).
use std::collections::VecDeque;
use std::sync::Arc;

use tokio::sync::watch;

use super::{Durable, Store};
use crate::api::{Head, Subscription};
use crate::error::{Error, Result};
use crate::schema::Envelope;

/// Reads committed events in pages; when it has caught up it sleeps on the
/// writer's head notification.
pub struct WalSubscription {
    store: Arc<Store>,
    next_seq: u64,
    buffer: VecDeque<Envelope>,
    head: watch::Receiver<Head>,
    durable: Arc<Durable>,
}

const SUBSCRIPTION_PAGE: usize = 512;

impl WalSubscription {
    /// A subscription to the WAL `store`, whose durable head `durable`
    /// announces.
    pub fn new(store: Arc<Store>, from_seq: u64, durable: Arc<Durable>) -> Self {
        let head = durable.watch();
        WalSubscription { store, next_seq: from_seq.max(1), buffer: VecDeque::new(), head, durable }
    }
}

impl Subscription for WalSubscription {
    async fn next(&mut self) -> Result<Envelope> {
        loop {
            if let Some(event) = self.buffer.pop_front() {
                return Ok(event);
            }
            let committed = self.head.borrow_and_update().last_seq;
            if committed >= self.next_seq {
                let want = usize::try_from(committed - self.next_seq + 1).unwrap_or(usize::MAX).min(SUBSCRIPTION_PAGE);
                let page = super::recent::read(&self.store, &self.durable, self.next_seq, want)?;
                if page.len() != want {
                    return Err(Error::Corrupt {
                        seq: self.next_seq + page.len() as u64,
                        reason: "committed but not readable".into(),
                    });
                }
                self.next_seq += want as u64;
                self.buffer.extend(page);
                continue;
            }
            if let Some(ended) = self.durable.ended() {
                // Caught up with everything durable; nothing more will come.
                return Err(ended);
            }
            // The sender lives in `durable`, which this holds: it never
            // closes; the end comes through `ended` above.
            let _ = self.head.changed().await;
        }
    }
}
