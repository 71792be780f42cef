//! The projections' error type; its kinds are the shared taxonomy's.
use std::path::PathBuf;

use agentlog_core::Kind;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Log(#[from] agentlog_core::Error),

    #[error("projection store failure while {operation}: {source}")]
    Storage { operation: &'static str, source: Box<dyn std::error::Error + Send + Sync> },

    #[error("the projection store {} is in use by another agentlog process; stop it (or use its queries) and retry", path.display())]
    Locked { path: PathBuf },

    #[error(
        "the projection store {} is damaged ({file}: {reason}); it holds only what the log derives: stop the node, move {} aside and run `agentlog projections rebuild` (or restore it with the log from a backup)",
        path.display(),
        path.display()
    )]
    Damaged { path: PathBuf, file: String, reason: String },

    #[error("the projection {name}'s checkpoint is damaged ({reason}): run `agentlog projections rebuild {name}`")]
    CorruptCheckpoint { name: String, reason: String },

    #[error("no projection named {name:?}: the projections are {known}")]
    UnknownProjection { name: String, known: String },

    #[error("bad query: {reason}")]
    BadQuery { reason: String },

    #[error("no {what} {id:?} in the view")]
    NoSuch { what: &'static str, id: String },

    #[error(
        "the view did not reach seq {seq} within {timeout_ms} ms (it is at {position}); retry, or ask without waiting"
    )]
    NotYet { seq: u64, position: u64, timeout_ms: u64 },
}

impl Error {
    pub fn kind(&self) -> Kind {
        match self {
            Error::Log(e) => e.kind(),
            Error::UnknownProjection { .. } | Error::BadQuery { .. } | Error::NoSuch { .. } => Kind::Invalid,
            Error::Storage { .. }
            | Error::Locked { .. }
            | Error::Damaged { .. }
            | Error::CorruptCheckpoint { .. }
            | Error::NotYet { .. } => Kind::Platform,
        }
    }

    #[cfg(feature = "store")]
    pub(crate) fn storage<E: std::error::Error + Send + Sync + 'static>(
        operation: &'static str,
    ) -> impl FnOnce(E) -> Error {
        move |source| Error::Storage { operation, source: Box::new(source) }
    }
}
