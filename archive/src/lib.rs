//! agentlog-archive: the nightly archive. Each closed UTC day of the log
//! becomes Hive-partitioned Parquet (`date=YYYY-MM-DD/part-….parquet`) with a
//! manifest written last; `verify` re-reads it all, `prune` lets the WAL drop
//! what a verified archive holds, `scan` reads events back.
//!
//! arrow and parquet are compiled for this crate only.
pub mod columns;
pub mod day;
pub mod error;
pub mod layout;
pub mod manifest;
pub mod prune;
pub mod scan;
pub mod schedule;
pub mod verify;
pub mod writer;

pub use columns::ARCHIVE_SCHEMA_VERSION;
pub use day::Day;
pub use error::{Error, Kind, Result};
pub use manifest::Manifest;
pub use scan::{Filter, Scan, Scanned, scan};
pub use schedule::AtTime;
pub use verify::{Verified, verify};
pub use writer::{Progress, Report, Settings, run};
