//! The log's error type (what every `Log` backend and `EventSource`
//! answers) and the error taxonomy every agentlog crate shares.
//!
//! Each error knows its [`Kind`] (what a producer should do about it) and
//! whether repeating the same request may succeed.
use std::fmt;
use std::path::PathBuf;

use crate::api::ExpectedVersion;

/// The taxonomy of DESIGN.md: what kind of failure, as a producer sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    /// The command is not allowed in the current state (already claimed,
    /// insufficient budget, circuit open).
    Domain,
    /// Another writer changed the aggregate first and retries ran out.
    Conflict,
    /// Malformed, unknown, too large: repeating it cannot succeed.
    Invalid,
    /// Storage or network failure; safe to retry with the same idempotency key.
    Platform,
    /// The agent's own code failed (for example a sandbox trap).
    Agent,
}

impl Kind {
    /// The stable lowercase name used on the wire and in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Domain => "domain",
            Kind::Conflict => "conflict",
            Kind::Invalid => "invalid",
            Kind::Platform => "platform",
            Kind::Agent => "agent",
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "stream {stream} is at version {actual}, the append expected {expected}: another writer appended first; reload the stream and decide again"
    )]
    Conflict { stream: String, expected: ExpectedVersion, actual: u64 },

    #[error(
        "the key {key:?} of a command in a group appended to {stream} was used by an earlier append; nothing was written: decide the group again (the key's command gets its first result)"
    )]
    KeyUsed { stream: String, key: String },

    #[error("event is {size_bytes} bytes, over the limit of {limit_bytes} bytes: make the body smaller")]
    TooLarge { size_bytes: usize, limit_bytes: usize },

    #[error("append of {events} events is over the limit of {limit} events per append: split it")]
    BatchTooLarge { events: usize, limit: usize },

    #[error("invalid append: {reason}")]
    InvalidAppend { reason: String },

    #[error("cannot decode {what}: {source}")]
    Decode { what: &'static str, source: prost::DecodeError },

    #[error("cannot decode {what}: {reason}")]
    Malformed { what: &'static str, reason: String },

    #[error("storage failure while {operation}: {source}")]
    Storage { operation: &'static str, source: Box<dyn std::error::Error + Send + Sync> },

    #[error(
        "the log refuses writes after an earlier storage failure ({reason}); restart the process to recover from the last durable state"
    )]
    Poisoned { reason: String },

    #[error("the log's writer has stopped; the log was closed or the process is shutting down")]
    Closed,

    #[error("no agentlog data at {}: run `agentlog demo --data {}` to create some, or pass the right --data", path.display(), path.display())]
    NotFound { path: PathBuf },

    #[error("there is no {wanted} in {}: list what it holds with `agentlog backup --list --to {}`", path.display(), path.display())]
    NoBackup { path: PathBuf, wanted: String },

    #[error(
        "another agentlog process is using the backup directory {} (a backup, restore or list): wait for it to finish and run this again",
        path.display()
    )]
    BackupBusy { path: PathBuf },

    #[error("the data directory {} is in use by another agentlog process (its LOCK is held); stop that process or use another --data", path.display())]
    Locked { path: PathBuf },

    #[error("the data at {} is damaged or not an agentlog store: {reason}", path.display())]
    CorruptStore { path: PathBuf, reason: String },

    #[error(
        "the store at {} is damaged ({file}: {reason}); agentlog neither opens nor reads past damage, nor goes on as if it were not there. Restore the store from a backup (`agentlog restore`), or on a distributed node rebuild it from JetStream (`agentlog mirror rebuild`): docs/OPERATIONS.md, Disaster recovery",
        path.display()
    )]
    Damaged { path: PathBuf, file: String, reason: String },

    #[error(
        "seq {seq} is archived and no longer in the WAL, which was pruned through seq {through}: read it from the archive (`agentlog archive scan`)"
    )]
    Pruned { seq: u64, through: u64 },

    #[error("damage at seq {seq}: {reason}")]
    Corrupt { seq: u64, reason: String },

    #[error("NATS failure while {operation}: {message}; check that nats-server is reachable, then retry")]
    Nats { operation: &'static str, message: String },

    #[error(
        "there is no JetStream stream {stream} on that server: check the NATS URL, its account and `stream.name` (this never creates a stream)"
    )]
    NoStream { stream: String },

    #[error(
        "the JetStream stream {stream} exists with an unsafe configuration ({problems}); agentlog will not change a live stream: fix it with `nats stream edit` or use another stream name"
    )]
    UnsafeStream { stream: String, problems: String },
}

impl Error {
    pub fn kind(&self) -> Kind {
        match self {
            Error::Conflict { .. } | Error::KeyUsed { .. } => Kind::Conflict,
            Error::TooLarge { .. }
            | Error::BatchTooLarge { .. }
            | Error::InvalidAppend { .. }
            | Error::Decode { .. }
            | Error::Malformed { .. }
            | Error::NotFound { .. }
            | Error::NoBackup { .. }
            | Error::Pruned { .. }
            | Error::UnsafeStream { .. }
            | Error::NoStream { .. } => Kind::Invalid,
            Error::Storage { .. }
            | Error::Poisoned { .. }
            | Error::Closed
            | Error::Locked { .. }
            | Error::BackupBusy { .. }
            | Error::CorruptStore { .. }
            | Error::Damaged { .. }
            | Error::Corrupt { .. }
            | Error::Nats { .. } => Kind::Platform,
        }
    }

    /// Whether repeating the same request (with the same idempotency key) may
    /// succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(self, Error::Conflict { .. } | Error::KeyUsed { .. } | Error::Storage { .. } | Error::Nats { .. })
    }

    /// Wraps a storage engine's failure while `operation` (what the log was
    /// doing, in words) as [`Error::Storage`], for `map_err`.
    pub fn storage<E: std::error::Error + Send + Sync + 'static>(operation: &'static str) -> impl FnOnce(E) -> Error {
        move |source| Error::Storage { operation, source: Box::new(source) }
    }
}
