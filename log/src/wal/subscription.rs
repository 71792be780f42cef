//! A live, ordered feed of a WAL: the subscription of the embedded log and
//! of the JetStream log's mirror alike. It reads committed events in pages
//! and, once caught up, sleeps on the head's `watch` (no polling).
use std::collections::VecDeque;
use std::sync::{Arc, OnceLock};

use tokio::sync::watch;

use super::Store;
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
    poison: Arc<OnceLock<String>>,
}

const SUBSCRIPTION_PAGE: usize = 512;

impl WalSubscription {
    /// A subscription to the WAL `store`, whose durable head `head` announces.
    pub(crate) fn new(
        store: Arc<Store>,
        from_seq: u64,
        head: watch::Receiver<Head>,
        poison: Arc<OnceLock<String>>,
    ) -> Self {
        WalSubscription { store, next_seq: from_seq.max(1), buffer: VecDeque::new(), head, poison }
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
                let page = self.store.read(self.next_seq, want)?;
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
            if let Some(reason) = self.poison.get() {
                // Caught up with everything durable; nothing more will come.
                return Err(Error::Poisoned { reason: reason.clone() });
            }
            if self.head.changed().await.is_err() {
                // The writer stopped; deliver what it committed last, then close.
                if self.head.borrow().last_seq >= self.next_seq {
                    continue;
                }
                return Err(Error::Closed);
            }
        }
    }
}
