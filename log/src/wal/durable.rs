//! [`Durable`]: one WAL's durable head and its fail-stop state, shared by
//! whoever writes the WAL (the embedded log's writer and syncer, or a
//! node's mirror) and whoever follows it (subscriptions, catch-up waits).
//!
//! Every failure that stops writes goes through [`Durable::poison`], which
//! also wakes everyone waiting on the head, so no waiter sleeps through it;
//! closing the log goes through [`Durable::close`] the same way.
//!
//! It also keeps the events written last ([`Recent`]), which subscriptions
//! at the tail take instead of reading them back from the store.
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::sync::watch;

use super::recent::Recent;
use crate::api::Head;
use crate::error::{Error, Result};
use crate::schema::Envelope;

#[derive(Debug)]
pub struct Durable {
    head: watch::Sender<Head>,
    poison: OnceLock<String>,
    closed: AtomicBool,
    recent: Recent,
}

impl Durable {
    /// A WAL whose durable head is `head`.
    pub fn new(head: Head) -> Durable {
        Durable {
            head: watch::channel(head).0,
            poison: OnceLock::new(),
            closed: AtomicBool::new(false),
            recent: Recent::default(),
        }
    }

    /// The last durable event.
    pub fn head(&self) -> Head {
        *self.head.borrow()
    }

    /// A receiver that wakes when the head moves, the WAL is poisoned or it
    /// is closed.
    pub fn watch(&self) -> watch::Receiver<Head> {
        self.head.subscribe()
    }

    /// Publishes `head` as durable. The head only moves forward: the writer
    /// and the syncer both publish, and one fsync may cover groups the
    /// other has not acknowledged yet, so an older head changes nothing. A
    /// head at the same seq with another hash is a bug (two writers).
    pub fn advance(&self, head: Head) {
        self.head.send_if_modified(|current| {
            assert!(
                head.last_seq != current.last_seq || head.hash == current.hash,
                "the WAL's head at seq {} was published with two different hashes",
                head.last_seq
            );
            let newer = head.last_seq > current.last_seq;
            if newer {
                *current = head;
            }
            newer
        });
    }

    /// Keeps a batch just written (sealed, in seq order) for subscriptions
    /// at the tail; called before the head that covers it is published.
    pub(crate) fn keep(&self, written: Vec<Envelope>) {
        self.recent.keep(written);
    }

    /// The kept events from `from` through `through` (at most `max`), or
    /// `None` when they must be read from the store.
    pub(crate) fn recent(&self, from: u64, through: u64, max: usize) -> Option<Vec<Envelope>> {
        self.recent.read(from, through, max)
    }

    /// Fail-stop: after a failed write or fsync, or an inconsistency the
    /// writer cannot repair, every later write is refused (the state on
    /// disk is unknown; a restart recovers from what is durable).
    /// Subscriptions deliver what is durable, then end with the reason.
    /// The first reason wins; the error returned names it.
    pub fn poison(&self, reason: impl Into<String>) -> Error {
        let reason = reason.into();
        if self.poison.set(reason.clone()).is_ok() {
            tracing::error!(message = "the WAL stops taking writes", reason = %reason, head_seq = self.head().last_seq);
            metrics::counter!(crate::metrics::WAL_POISONED).increment(1);
        }
        self.head.send_modify(|_| {});
        self.poisoned().expect("just poisoned")
    }

    /// [`Error::Poisoned`] with the first reason, if the WAL is poisoned.
    pub fn poisoned(&self) -> Option<Error> {
        self.poison.get().map(|reason| Error::Poisoned { reason: reason.clone() })
    }

    /// Refuses when the WAL is poisoned.
    pub fn check(&self) -> Result<()> {
        self.poisoned().map_or(Ok(()), Err)
    }

    /// The log is shut down: followers that have delivered everything
    /// durable end with [`Error::Closed`].
    pub fn close(&self) {
        self.closed.store(true, Ordering::Release);
        self.head.send_modify(|_| {});
    }

    /// Waits until the WAL is poisoned or closed, and says which: what a
    /// supervisor watches to learn that its writer stopped for good.
    pub async fn ended_wait(&self) -> Error {
        let mut head = self.watch();
        loop {
            if let Some(ended) = self.ended() {
                return ended;
            }
            // The sender lives in `self`: `changed` cannot fail.
            let _ = head.changed().await;
        }
    }

    /// Why a follower that has delivered everything durable must stop, if
    /// it must: poisoned first (the more useful answer), then closed.
    pub fn ended(&self) -> Option<Error> {
        self.poisoned().or_else(|| self.closed.load(Ordering::Acquire).then_some(Error::Closed))
    }
}
