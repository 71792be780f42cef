//! The RocksDB WAL: the embedded log's storage and, in distributed mode, the
//! node's mirror of the JetStream stream.
//!
//! Column families (keys big-endian, so key order is log order):
//! `events` seq → envelope, `streams` stream ‖ version → seq,
//! `ids` event_id → seq, `idem` idempotency key → append result,
//! `meta` format marker, chain head and prune mark. Every append writes all of them in
//! one atomic `WriteBatch`.
mod durable;
mod follower;
mod keys;
mod prune;
#[cfg(feature = "test-util")]
mod raw;
mod recent;
mod stage;
mod store;
mod subscription;
mod verify;
mod writer;

pub use agentlog_core::Pruned;
pub use durable::Durable;
pub use follower::{Follower, Ordered};
pub use prune::PruneReport;
#[cfg(feature = "test-util")]
pub use raw::RawWriter;
pub(crate) use recent::read;
pub use store::{Faults, Store, StoreOptions};
pub use subscription::WalSubscription;
pub use verify::{Report, verify};
#[cfg(feature = "jetstream")]
pub(crate) use writer::Last;
pub(crate) use writer::{Pending, Syncer, Versions, Writer};
