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

/// Whether this build re-checks what it writes (the test-only
/// `expensive-checks` feature: every write read back, every seal decoded).
/// A test build turns it on for the whole binary, so the `agentlog` that
/// `cargo test --release` leaves in `target/release` has it; the
/// benchmarks say so, since their figures are then not production's.
pub const EXPENSIVE_CHECKS: bool = cfg!(feature = "expensive-checks");
