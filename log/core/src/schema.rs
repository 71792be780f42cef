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

/// Every event type's [`Body::type_name`], in the schema's order.
pub const TYPE_NAMES: [&str; 25] = [
    "session_opened",
    "session_heartbeat",
    "session_closed",
    "session_expired",
    "agent_registered",
    "action_recorded",
    "task_created",
    "task_claimed",
    "task_released",
    "task_lease_expired",
    "task_completed",
    "task_failed",
    "budget_allocated",
    "budget_debited",
    "budget_refunded",
    "budget_debit_refused",
    "budget_circuit_opened",
    "budget_circuit_closed",
    "sandbox_module_registered",
    "sandbox_run_completed",
    "sandbox_run_trapped",
    "sandbox_policy_bound",
    "chain_checkpoint",
    "principal_registered",
    "principal_revoked",
];

impl Body {
    /// The stable snake_case name of the event type, as in JSON and archives
    /// (one of [`TYPE_NAMES`]).
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
            Body::SandboxPolicyBound(_) => "sandbox_policy_bound",
            Body::ChainCheckpoint(_) => "chain_checkpoint",
            Body::PrincipalRegistered(_) => "principal_registered",
            Body::PrincipalRevoked(_) => "principal_revoked",
        }
    }
}

/// The ids and the amount an event's body names besides its stream:
/// what the archive flattens into columns and what replay filters on. An
/// empty string is an id the body does not name.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Refs<'a> {
    pub session_id: &'a str,
    pub task_id: &'a str,
    pub agent_id: &'a str,
    pub amount: Option<u64>,
}

impl Body {
    /// The ids and the amount this body names ([`Refs`]).
    pub fn refs(&self) -> Refs<'_> {
        let session = |session_id| Refs { session_id, ..Default::default() };
        let work = |task_id, agent_id, session_id| Refs { session_id, task_id, agent_id, amount: None };
        match self {
            Body::SessionOpened(b) => Refs { agent_id: &b.agent_id, ..session(&b.session_id) },
            Body::SessionHeartbeat(b) => session(&b.session_id),
            Body::SessionClosed(b) => session(&b.session_id),
            Body::SessionExpired(b) => session(&b.session_id),
            Body::AgentRegistered(b) => Refs { agent_id: &b.agent_id, ..Default::default() },
            Body::PrincipalRegistered(b) => Refs { agent_id: &b.agent_id, ..Default::default() },
            Body::ActionRecorded(b) => work(&b.task_id, &b.agent_id, &b.session_id),
            Body::TaskCreated(b) => Refs { task_id: &b.task_id, ..Default::default() },
            Body::TaskClaimed(b) => work(&b.task_id, &b.agent_id, &b.session_id),
            Body::TaskReleased(b) => work(&b.task_id, &b.agent_id, &b.session_id),
            Body::TaskLeaseExpired(b) => work(&b.task_id, &b.agent_id, &b.session_id),
            Body::TaskCompleted(b) => work(&b.task_id, &b.agent_id, &b.session_id),
            Body::TaskFailed(b) => work(&b.task_id, &b.agent_id, &b.session_id),
            Body::BudgetAllocated(b) => Refs { amount: Some(b.amount), ..Default::default() },
            Body::BudgetDebited(b) => Refs { amount: Some(b.amount), ..work(&b.task_id, &b.agent_id, &b.session_id) },
            Body::BudgetRefunded(b) => Refs { amount: Some(b.amount), ..Default::default() },
            Body::BudgetDebitRefused(b) => {
                Refs { amount: Some(b.amount), ..work(&b.task_id, &b.agent_id, &b.session_id) }
            }
            Body::SandboxRunCompleted(b) => work(&b.task_id, &b.agent_id, &b.session_id),
            Body::SandboxRunTrapped(b) => work(&b.task_id, &b.agent_id, &b.session_id),
            Body::BudgetCircuitOpened(_)
            | Body::BudgetCircuitClosed(_)
            | Body::SandboxModuleRegistered(_)
            | Body::SandboxPolicyBound(_)
            | Body::ChainCheckpoint(_)
            | Body::PrincipalRevoked(_) => Refs::default(),
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

    pub fn module_kind<S: Serializer>(value: &i32, s: S) -> Result<S::Ok, S::Error> {
        match super::ModuleKind::try_from(*value) {
            Ok(super::ModuleKind::Action) => s.serialize_str("action"),
            Ok(super::ModuleKind::Policy) => s.serialize_str("policy"),
            _ => s.serialize_i32(*value),
        }
    }

    pub fn base64<S: Serializer>(value: &[u8], s: S) -> Result<S::Ok, S::Error> {
        use base64::Engine as _;
        s.serialize_str(&base64::engine::general_purpose::STANDARD.encode(value))
    }

    pub fn outcome<S: Serializer>(value: &i32, s: S) -> Result<S::Ok, S::Error> {
        match super::Outcome::try_from(*value) {
            Ok(outcome) => s.serialize_str(outcome.short_name()),
            Err(_) => s.serialize_i32(*value),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn type_names_lists_every_body_once() {
        let bodies = [
            Body::SessionOpened(Default::default()),
            Body::SessionHeartbeat(Default::default()),
            Body::SessionClosed(Default::default()),
            Body::SessionExpired(Default::default()),
            Body::AgentRegistered(Default::default()),
            Body::ActionRecorded(Default::default()),
            Body::TaskCreated(Default::default()),
            Body::TaskClaimed(Default::default()),
            Body::TaskReleased(Default::default()),
            Body::TaskLeaseExpired(Default::default()),
            Body::TaskCompleted(Default::default()),
            Body::TaskFailed(Default::default()),
            Body::BudgetAllocated(Default::default()),
            Body::BudgetDebited(Default::default()),
            Body::BudgetRefunded(Default::default()),
            Body::BudgetDebitRefused(Default::default()),
            Body::BudgetCircuitOpened(Default::default()),
            Body::BudgetCircuitClosed(Default::default()),
            Body::SandboxModuleRegistered(Default::default()),
            Body::SandboxRunCompleted(Default::default()),
            Body::SandboxRunTrapped(Default::default()),
            Body::SandboxPolicyBound(Default::default()),
            Body::ChainCheckpoint(Default::default()),
            Body::PrincipalRegistered(Default::default()),
            Body::PrincipalRevoked(Default::default()),
        ];
        let names: Vec<&str> = bodies.iter().map(Body::type_name).collect();
        assert_eq!(names, TYPE_NAMES);
    }
}
