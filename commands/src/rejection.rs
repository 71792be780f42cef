//! Why a command was refused: the taxonomy kind and a stable code that
//! producers can match on. Codes never change meaning once published.
use std::fmt;

use agentlog_core::{Error as LogError, Kind};

/// Stable rejection codes. The wire form is the snake_case name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Code {
    // domain
    AlreadyExists,
    NotFound,
    UnknownAgent,
    UnknownDependency,
    DependencyCycle,
    DependenciesIncomplete,
    AlreadyClaimed,
    AlreadyCompleted,
    TaskFailed,
    NotClaimed,
    NotHolder,
    LeaseExpired,
    LeaseActive,
    SessionNotLive,
    SessionMismatch,
    SessionLive,
    MissingCapabilities,
    InsufficientBudget,
    CircuitOpen,
    RefundExceedsSpent,
    WrongModuleKind,
    PolicyDenied,
    Forbidden,
    // conflict
    RetriesExhausted,
    // invalid
    InvalidCommand,
    InvalidAmount,
    TooLarge,
    InvalidModule,
    Unauthenticated,
    BadSignature,
    StaleTimestamp,
    ReplayedNonce,
    // agent: the agent's own code failed
    ModuleTrapped,
    PolicyFailed,
    // platform
    Storage,
    Unavailable,
}

impl Code {
    pub fn as_str(self) -> &'static str {
        match self {
            Code::AlreadyExists => "already_exists",
            Code::NotFound => "not_found",
            Code::UnknownAgent => "unknown_agent",
            Code::UnknownDependency => "unknown_dependency",
            Code::DependencyCycle => "dependency_cycle",
            Code::DependenciesIncomplete => "dependencies_incomplete",
            Code::AlreadyClaimed => "already_claimed",
            Code::AlreadyCompleted => "already_completed",
            Code::TaskFailed => "task_failed",
            Code::NotClaimed => "not_claimed",
            Code::NotHolder => "not_holder",
            Code::LeaseExpired => "lease_expired",
            Code::LeaseActive => "lease_active",
            Code::SessionNotLive => "session_not_live",
            Code::SessionMismatch => "session_mismatch",
            Code::SessionLive => "session_live",
            Code::MissingCapabilities => "missing_capabilities",
            Code::InsufficientBudget => "insufficient_budget",
            Code::CircuitOpen => "circuit_open",
            Code::RefundExceedsSpent => "refund_exceeds_spent",
            Code::WrongModuleKind => "wrong_module_kind",
            Code::InvalidModule => "invalid_module",
            Code::ModuleTrapped => "module_trapped",
            Code::PolicyDenied => "policy_denied",
            Code::Forbidden => "forbidden",
            Code::Unauthenticated => "unauthenticated",
            Code::BadSignature => "bad_signature",
            Code::StaleTimestamp => "stale_timestamp",
            Code::ReplayedNonce => "replayed_nonce",
            Code::PolicyFailed => "policy_failed",
            Code::RetriesExhausted => "retries_exhausted",
            Code::InvalidCommand => "invalid_command",
            Code::InvalidAmount => "invalid_amount",
            Code::TooLarge => "too_large",
            Code::Storage => "storage",
            Code::Unavailable => "unavailable",
        }
    }

    /// Every code, for parsing replies.
    pub const ALL: [Code; 36] = [
        Code::AlreadyExists,
        Code::NotFound,
        Code::UnknownAgent,
        Code::UnknownDependency,
        Code::DependencyCycle,
        Code::DependenciesIncomplete,
        Code::AlreadyClaimed,
        Code::AlreadyCompleted,
        Code::TaskFailed,
        Code::NotClaimed,
        Code::NotHolder,
        Code::LeaseExpired,
        Code::LeaseActive,
        Code::SessionNotLive,
        Code::SessionMismatch,
        Code::SessionLive,
        Code::MissingCapabilities,
        Code::InsufficientBudget,
        Code::CircuitOpen,
        Code::RefundExceedsSpent,
        Code::WrongModuleKind,
        Code::PolicyDenied,
        Code::Forbidden,
        Code::RetriesExhausted,
        Code::InvalidCommand,
        Code::InvalidAmount,
        Code::TooLarge,
        Code::InvalidModule,
        Code::Unauthenticated,
        Code::BadSignature,
        Code::StaleTimestamp,
        Code::ReplayedNonce,
        Code::ModuleTrapped,
        Code::PolicyFailed,
        Code::Storage,
        Code::Unavailable,
    ];

    /// The code with this wire name.
    pub fn parse(name: &str) -> Option<Code> {
        Code::ALL.into_iter().find(|c| c.as_str() == name)
    }

    /// The taxonomy kind every rejection with this code has. Exhaustive on
    /// purpose: a new code cannot compile without saying its kind.
    pub fn kind(self) -> Kind {
        match self {
            Code::AlreadyExists
            | Code::NotFound
            | Code::UnknownAgent
            | Code::UnknownDependency
            | Code::DependencyCycle
            | Code::DependenciesIncomplete
            | Code::AlreadyClaimed
            | Code::AlreadyCompleted
            | Code::TaskFailed
            | Code::NotClaimed
            | Code::NotHolder
            | Code::LeaseExpired
            | Code::LeaseActive
            | Code::SessionNotLive
            | Code::SessionMismatch
            | Code::SessionLive
            | Code::MissingCapabilities
            | Code::InsufficientBudget
            | Code::CircuitOpen
            | Code::RefundExceedsSpent
            | Code::WrongModuleKind
            | Code::PolicyDenied
            | Code::Forbidden => Kind::Domain,
            Code::RetriesExhausted => Kind::Conflict,
            Code::InvalidCommand
            | Code::InvalidAmount
            | Code::TooLarge
            | Code::InvalidModule
            | Code::Unauthenticated
            | Code::BadSignature
            | Code::StaleTimestamp
            | Code::ReplayedNonce => Kind::Invalid,
            Code::ModuleTrapped | Code::PolicyFailed => Kind::Agent,
            Code::Storage | Code::Unavailable => Kind::Platform,
        }
    }
}

impl fmt::Display for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A refused command. `message` says what was wrong and what to do.
/// `kind` is always `code.kind()`: build one with [`Rejection::new`].
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{kind}/{code}: {message}")]
pub struct Rejection {
    pub kind: Kind,
    pub code: Code,
    pub message: String,
}

pub type Result<T, E = Rejection> = std::result::Result<T, E>;

impl Rejection {
    pub fn new(code: Code, message: impl Into<String>) -> Self {
        Rejection { kind: code.kind(), code, message: message.into() }
    }

    pub fn invalid(message: impl Into<String>) -> Self {
        Rejection::new(Code::InvalidCommand, message)
    }

    /// Whether sending the same command again (same idempotency key) may
    /// succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(self.kind, Kind::Platform | Kind::Conflict)
    }
}

impl From<LogError> for Rejection {
    fn from(err: LogError) -> Self {
        let code = match &err {
            LogError::TooLarge { .. } | LogError::BatchTooLarge { .. } => Code::TooLarge,
            LogError::Conflict { .. } => Code::RetriesExhausted,
            LogError::Closed | LogError::Poisoned { .. } => Code::Unavailable,
            other if other.kind() == Kind::Invalid => Code::InvalidCommand,
            _ => Code::Storage,
        };
        Rejection::new(code, err.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::Code;

    #[test]
    fn every_code_parses_back_from_its_wire_name() {
        for code in Code::ALL {
            assert_eq!(Code::parse(code.as_str()), Some(code));
        }
        assert_eq!(Code::parse("no_such_code"), None);
    }

    /// A log failure keeps its taxonomy kind through the code it maps to.
    #[test]
    fn a_log_failure_keeps_its_kind() {
        use agentlog_core::{Error, ExpectedVersion, Kind};
        let failures = [
            Error::Conflict { stream: "task/t".into(), expected: ExpectedVersion::Exact(1), actual: 2 },
            Error::TooLarge { size_bytes: 2, limit_bytes: 1 },
            Error::InvalidAppend { reason: "x".into() },
            Error::Pruned { seq: 1, through: 2 },
            Error::Poisoned { reason: "x".into() },
            Error::Closed,
            Error::Corrupt { seq: 1, reason: "x".into() },
            Error::Nats { operation: "x", message: "y".into() },
        ];
        for failure in failures {
            let kind = failure.kind();
            let rejection = super::Rejection::from(failure);
            assert_eq!(rejection.kind, kind, "{rejection}");
            assert_eq!(rejection.kind, rejection.code.kind(), "{rejection}");
        }
        assert_eq!(Code::AlreadyClaimed.kind(), Kind::Domain);
    }
}
