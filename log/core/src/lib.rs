//! agentlog-core: what every agentlog crate shares and nothing heavier — the
//! event schema and envelope, their codec, ids and clock, the hash chain,
//! the error taxonomy, and the [`Log`] and [`EventSource`] traits.
//!
//! It depends on no storage engine and no network client (CI checks with
//! `cargo tree`), so the pure parts built on it (decisions, folds) cannot do
//! I/O. The backends live in agentlog-log.
pub mod api;
pub mod chain;
pub mod clock;
pub mod codec;
pub mod error;
pub mod ids;
pub mod json;
pub mod read_ahead;
pub mod schema;
pub mod source;

#[cfg(any(test, feature = "test-util"))]
pub mod conformance;
#[cfg(any(test, feature = "test-util"))]
pub mod testing;

pub use api::{AppendRequest, Appended, ExpectedVersion, GroupRequest, Head, Log, Part, Subscription};
pub use clock::{Clock, HybridClock, ManualClock, Timestamp};
pub use error::{Error, Kind, Result};
pub use ids::{EventId, IdGen, RandomIdGen, SeededIdGen, SessionId};
pub use read_ahead::read_ahead;
pub use schema::{Body, Envelope};
pub use source::{EventSource, Pruned};
