//! agentlog-replay: what an on-call engineer opens first. One event source
//! over everything kept ([`History`]: the archive's days, then the WAL's
//! tail, checked for continuity and the hash chain as it is read), the
//! events that touch an entity or a command ([`Filter`]), and the views as
//! they were just after any event ([`Point`], [`state_at`]; fast from
//! [`Snapshots`] taken while folding), and every
//! invariant checked over the whole history ([`check`]), what changed
//! between two points and where each field of an entity came from
//! ([`diff`], [`explain`]), and what would have happened had other
//! commands been sent ([`fork`]); the history against the views'
//! checkpoints and the archive against the WAL ([`verify`]); a page for
//! people ([`report`]).
//!
//! Replay never writes to what it reads: the WAL is opened read-only with
//! RocksDB's info log kept out of its directory, and the archive is only
//! read.
pub mod check;
pub mod error;
pub mod filter;
pub mod fork;
pub mod point;
pub mod report;
pub mod snapshots;
pub mod source;
pub mod trace;
pub mod verify;

pub use check::{Break, Invariant, Report, check};
pub use error::{Error, Kind, Result};
pub use filter::{Filter, events};
pub use fork::{ForkCommand, Forked, fork, parse_commands};
pub use point::{Entity, Point, State, state_at};
pub use snapshots::Snapshots;
pub use source::History;
pub use trace::{EntityChange, Explained, diff, explain};
pub use verify::{Verification, verify};
