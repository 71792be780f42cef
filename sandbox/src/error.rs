//! The sandbox's error type; its kinds are the shared taxonomy's. A run
//! that traps or passes its deadline is not an error but an
//! [`crate::Outcome`]: it is recorded like a result.
use agentlog_core::Kind;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("module refused: {reason}")]
    Refused { reason: String },

    #[error("the WASM engine failed while {operation}: {reason}")]
    Engine { operation: &'static str, reason: String },
}

impl Error {
    pub fn kind(&self) -> Kind {
        match self {
            Error::Refused { .. } => Kind::Invalid,
            Error::Engine { .. } => Kind::Platform,
        }
    }

    pub(crate) fn refused(reason: impl Into<String>) -> Error {
        Error::Refused { reason: reason.into() }
    }

    pub(crate) fn engine(operation: &'static str) -> impl FnOnce(wasmtime::Error) -> Error {
        move |e| Error::Engine { operation, reason: format!("{e:#}") }
    }
}
