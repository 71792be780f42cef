//! The archive's errors, each with its kind from the shared taxonomy.
use std::path::PathBuf;

pub use agentlog_log::Kind;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Log(#[from] agentlog_log::Error),

    #[error("I/O failure while {operation} {}: {source}", path.display())]
    Io { operation: &'static str, path: PathBuf, source: std::io::Error },

    #[error("Parquet failure while {operation} {}: {source}", path.display())]
    Parquet { operation: &'static str, path: PathBuf, source: parquet::errors::ParquetError },

    #[error("cannot read {}: {source}", path.display())]
    Arrow { path: PathBuf, source: arrow_schema::ArrowError },

    #[error("invalid request: {0}")]
    Invalid(String),

    /// The archive does not match its manifests, itself or the WAL.
    #[error("the archive at {} does not verify: {problem}", root.display())]
    Damaged { root: PathBuf, problem: String },

    /// The archive and the WAL disagree about the events they share.
    #[error("the archive at {} and the WAL disagree: {problem}", root.display())]
    Diverged { root: PathBuf, problem: String },
}

impl Error {
    pub fn kind(&self) -> Kind {
        match self {
            Error::Log(e) => e.kind(),
            Error::Invalid(_) => Kind::Invalid,
            Error::Io { .. }
            | Error::Parquet { .. }
            | Error::Arrow { .. }
            | Error::Damaged { .. }
            | Error::Diverged { .. } => Kind::Platform,
        }
    }

    pub(crate) fn io(operation: &'static str, path: &std::path::Path) -> impl FnOnce(std::io::Error) -> Error {
        let path = path.to_owned();
        move |source| Error::Io { operation, path, source }
    }

    pub(crate) fn parquet(
        operation: &'static str,
        path: &std::path::Path,
    ) -> impl FnOnce(parquet::errors::ParquetError) -> Error {
        let path = path.to_owned();
        move |source| Error::Parquet { operation, path, source }
    }
}
