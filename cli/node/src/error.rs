//! The node's error type: what stops it from starting, with its kind.
use agentlog_core::Kind;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{reason}")]
    Config { reason: String },

    #[error(transparent)]
    Log(#[from] agentlog_log::Error),

    #[error(transparent)]
    Projections(#[from] agentlog_projections::Error),

    #[error(transparent)]
    Sandbox(#[from] agentlog_sandbox::Error),

    #[error(
        "cannot subscribe the {service} service on NATS: {message}; check that nats-server is reachable and the node may subscribe there"
    )]
    Subscribe { service: &'static str, message: String },

    #[error(
        "cannot listen on {addr} for /health, /ready and /metrics: {source}; pick a free address with --http, or `off`"
    )]
    Listen { addr: String, source: std::io::Error },

    #[error(
        "cannot create the control socket {}: {source}; the data directory must be writable and its path short enough for a Unix socket (about 100 bytes)",
        path.display()
    )]
    ControlSocket { path: std::path::PathBuf, source: std::io::Error },

    #[error(
        "cannot reach the node that holds this data directory through {}: {reason}; is it an agentlog serve of this version? Otherwise stop the process that holds the store and run the command again",
        socket.display()
    )]
    Control { socket: std::path::PathBuf, reason: String },

    #[error(
        "the mirror stayed at seq {seq} of the stream's {target_seq} for {timeout_seconds} s; check the node's NATS connection and permissions, then run the rebuild again into a new directory"
    )]
    Stalled { seq: u64, target_seq: u64, timeout_seconds: u64 },

    #[error(
        "{} is not empty: restore into a new directory (a restore never writes over a store), then move it into place",
        path.display()
    )]
    RestoreTarget { path: std::path::PathBuf },

    #[error("{}: {source}", path.display())]
    Io { path: std::path::PathBuf, source: std::io::Error },

    #[error("the node refused the backup: {reason}")]
    BackupRefused { reason: String },

    #[error("cannot record metrics: {reason}")]
    Metrics { reason: String },
}

impl Error {
    pub fn kind(&self) -> Kind {
        match self {
            Error::Config { .. } | Error::RestoreTarget { .. } => Kind::Invalid,
            Error::Log(e) => e.kind(),
            Error::Projections(e) => e.kind(),
            Error::Sandbox(e) => e.kind(),
            Error::Subscribe { .. }
            | Error::Listen { .. }
            | Error::Control { .. }
            | Error::ControlSocket { .. }
            | Error::Stalled { .. }
            | Error::Io { .. }
            | Error::BackupRefused { .. }
            | Error::Metrics { .. } => Kind::Platform,
        }
    }
}
