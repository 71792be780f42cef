//! The generated protobuf types (`proto/agentlog/v1/events.proto`) and what
//! the rest of the code needs to know about them: each body's stable type
//! name, and how enum fields print as JSON.
#![allow(clippy::all, missing_docs)]

mod generated {
    include!(concat!(env!("OUT_DIR"), "/agentlog.v1.rs"));
}

pub use generated::envelope::Body;
pub use generated::*;

/// The schema version this build writes into every envelope.
pub const SCHEMA_VERSION: u32 = 1;

impl Body {
    /// The stable snake_case name of the event type, as in JSON and archives.
    pub fn type_name(&self) -> &'static str {
        match self {
            Body::SessionOpened(_) => "session_opened",
            Body::SessionHeartbeat(_) => "session_heartbeat",
            Body::SessionClosed(_) => "session_closed",
            Body::SessionExpired(_) => "session_expired",
            Body::AgentRegistered(_) => "agent_registered",
            Body::ActionRecorded(_) => "action_recorded",
            Body::TaskCreated(_) => "task_created",
            Body::TaskClaimed(_) => "task_claimed",
            Body::TaskReleased(_) => "task_released",
            Body::TaskLeaseExpired(_) => "task_lease_expired",
            Body::TaskCompleted(_) => "task_completed",
            Body::TaskFailed(_) => "task_failed",
            Body::BudgetAllocated(_) => "budget_allocated",
            Body::BudgetDebited(_) => "budget_debited",
            Body::BudgetRefunded(_) => "budget_refunded",
            Body::BudgetDebitRefused(_) => "budget_debit_refused",
            Body::BudgetCircuitOpened(_) => "budget_circuit_opened",
            Body::BudgetCircuitClosed(_) => "budget_circuit_closed",
            Body::SandboxModuleRegistered(_) => "sandbox_module_registered",
            Body::SandboxRunCompleted(_) => "sandbox_run_completed",
            Body::SandboxRunTrapped(_) => "sandbox_run_trapped",
            Body::ChainCheckpoint(_) => "chain_checkpoint",
        }
    }
}

impl ActionKind {
    /// `think`, `act`, `learn` (`unspecified` for 0).
    pub fn short_name(self) -> &'static str {
        match self {
            ActionKind::Unspecified => "unspecified",
            ActionKind::Think => "think",
            ActionKind::Act => "act",
            ActionKind::Learn => "learn",
        }
    }
}

impl Outcome {
    /// `succeeded`, `failed` (`unspecified` for 0).
    pub fn short_name(self) -> &'static str {
        match self {
            Outcome::Unspecified => "unspecified",
            Outcome::Succeeded => "succeeded",
            Outcome::Failed => "failed",
        }
    }
}

/// Serde helpers named by `build.rs`: enum fields print their short names,
/// and a number this build does not know prints as the number.
pub(crate) mod json {
    use serde::Serializer;

    pub fn action_kind<S: Serializer>(value: &i32, s: S) -> Result<S::Ok, S::Error> {
        match super::ActionKind::try_from(*value) {
            Ok(kind) => s.serialize_str(kind.short_name()),
            Err(_) => s.serialize_i32(*value),
        }
    }

    pub fn outcome<S: Serializer>(value: &i32, s: S) -> Result<S::Ok, S::Error> {
        match super::Outcome::try_from(*value) {
            Ok(outcome) => s.serialize_str(outcome.short_name()),
            Err(_) => s.serialize_i32(*value),
        }
    }
}
