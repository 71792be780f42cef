//! Replay's errors, each with its kind from the shared taxonomy: bad input
//! (a point past the head, an unknown entity) is `invalid`; a source that
//! cannot be read or does not hold together (a gap, a broken chain) is
//! `platform`, naming the seq.
use std::path::PathBuf;

pub use agentlog_core::Kind;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Log(#[from] agentlog_core::Error),

    #[error(transparent)]
    Archive(#[from] agentlog_archive::Error),

    #[error(transparent)]
    Projections(#[from] agentlog_projections::Error),

    #[error("nothing to replay: give the data directory (--data), the archive (--archive), or both")]
    NoSource,

    #[error("no archive at {}: give the directory `agentlog archive run --out` wrote", path.display())]
    NoArchive { path: PathBuf },

    /// The archive and the WAL do not join into one history.
    #[error("the history does not hold together at seq {seq}: {reason}")]
    Seam { seq: u64, reason: String },

    #[error(
        "the history starts at seq {first}: events before it were pruned from the WAL and no archive holds them; pass the archive (--archive DIR) to read from seq 1"
    )]
    NotFromStart { first: u64 },

    #[error("seq {seq} is past the last event kept (seq {head})")]
    PastHead { seq: u64, head: u64 },

    #[error("{at} is before the first event kept (seq {first}, at {first_ts})")]
    BeforeFirst { at: String, first: u64, first_ts: String },

    #[error("the history is empty: there is no event to replay")]
    Empty,

    #[error("{text:?} is neither a seq nor an RFC 3339 time (like 2026-01-01T03:12:00Z)")]
    BadPoint { text: String },

    #[error("{what} {text:?} is not valid: {reason}")]
    BadInput { what: &'static str, text: String, reason: String },

    #[error("the replay cache at {} cannot be used: {reason}; pass another --cache DIR, or --no-cache", path.display())]
    Cache { path: PathBuf, reason: String },

    #[error("there is no {kind} {id} at seq {seq}")]
    UnknownEntity { kind: &'static str, id: String, seq: u64 },
}

impl Error {
    pub fn kind(&self) -> Kind {
        match self {
            Error::Log(e) => e.kind(),
            Error::Archive(e) => e.kind(),
            Error::Projections(e) => e.kind(),
            Error::Seam { .. } | Error::Cache { .. } => Kind::Platform,
            Error::NoSource
            | Error::NoArchive { .. }
            | Error::NotFromStart { .. }
            | Error::PastHead { .. }
            | Error::BeforeFirst { .. }
            | Error::Empty
            | Error::BadPoint { .. }
            | Error::BadInput { .. }
            | Error::UnknownEntity { .. } => Kind::Invalid,
        }
    }
}
