//! agentlog-log: the storage backends of the [`Log`] trait — the RocksDB
//! WAL ([`wal`]) with the embedded log on top of it ([`embedded`]), and,
//! behind the `jetstream` feature, the JetStream log with its RocksDB
//! mirror ([`jetstream`]).
//!
//! The shared core (schema, codec, ids, clock, chain, errors, traits) lives
//! in agentlog-core; it is re-exported here so that a crate that stores
//! events needs one dependency. Crates that only decide or fold depend on
//! agentlog-core alone.
pub use agentlog_core::{
    AppendRequest, Appended, Body, Clock, Envelope, Error, EventId, EventSource, ExpectedVersion, GroupRequest, Head,
    HybridClock, IdGen, Kind, Log, ManualClock, Part, Pruned, RandomIdGen, Result, SeededIdGen, SessionId,
    Subscription, Timestamp, api, chain, clock, codec, error, ids, json, read_ahead, schema, source,
};
#[cfg(feature = "test-util")]
pub use agentlog_core::{conformance, log_conformance_tests, testing};
/// The RocksDB build every crate that opens a store shares (with the
/// zstd-sys features pinned in this crate's manifest).
pub use rocksdb;

pub mod backup;
pub mod embedded;
#[cfg(feature = "jetstream")]
pub mod jetstream;
pub mod metrics;
pub mod rocks;
pub mod wal;

pub use embedded::{EmbeddedLog, Options};
