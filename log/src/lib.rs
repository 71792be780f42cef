//! agentlog-log: the event schema and envelope, their codec, ids and clock,
//! the hash chain, and the [`Log`] trait with its embedded RocksDB backend.
//!
//! Everything else in agentlog builds on this crate; it depends on no other
//! agentlog crate.
pub mod api;
pub mod chain;
pub mod clock;
pub mod codec;
pub mod embedded;
pub mod error;
pub mod ids;
#[cfg(feature = "jetstream")]
pub mod jetstream;
pub mod json;
pub mod schema;
pub mod wal;

#[cfg(any(test, feature = "test-util"))]
pub mod conformance;
#[cfg(any(test, feature = "test-util"))]
pub mod testing;

pub use api::{AppendRequest, Appended, ExpectedVersion, Head, Log, Subscription};
pub use clock::{Clock, HybridClock, ManualClock, Timestamp};
pub use embedded::{EmbeddedLog, Options};
pub use error::{Error, Kind, Result};
pub use ids::{EventId, IdGen, RandomIdGen, SeededIdGen, SessionId};
pub use schema::{Body, Envelope};
