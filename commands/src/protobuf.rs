//! Commands from protobuf bodies (`log/proto/agentlog/v1/commands.proto`),
//! the default encoding on the wire. A scalar left at 0 or "" takes the
//! default the JSON form has.
use agentlog_core::schema as pb;
use prost::Message;

use crate::command::{ActionKind, ActionOutcome, Command, defaults};
use crate::rejection::{Rejection, Result};

fn decode<M: Message + Default>(name: &str, bytes: &[u8]) -> Result<M> {
    M::decode(bytes).map_err(|e| Rejection::invalid(format!("the body of {name} is not a protobuf {name}: {e}")))
}

fn or<T: PartialEq + Default>(value: T, default: T) -> T {
    if value == T::default() { default } else { value }
}

impl Command {
    /// Parses the protobuf body of the command `name`.
    pub fn from_protobuf(name: &str, bytes: &[u8]) -> Result<Command> {
        Ok(match name {
            "open_session" => {
                let m: pb::OpenSession = decode(name, bytes)?;
                Command::OpenSession {
                    agent_id: m.agent_id,
                    session_id: Some(m.session_id).filter(|s| !s.is_empty()),
                    heartbeat_timeout_ms: or(m.heartbeat_timeout_ms, defaults::heartbeat_timeout_ms()),
                }
            }
            "heartbeat" => Command::Heartbeat { session_id: decode::<pb::Heartbeat>(name, bytes)?.session_id },
            "close_session" => {
                let m: pb::CloseSession = decode(name, bytes)?;
                Command::CloseSession { session_id: m.session_id, reason: m.reason }
            }
            "expire_session" => {
                Command::ExpireSession { session_id: decode::<pb::ExpireSession>(name, bytes)?.session_id }
            }
            "register_agent" => {
                let m: pb::RegisterAgent = decode(name, bytes)?;
                Command::RegisterAgent { agent_id: m.agent_id, name: m.name, capabilities: m.capabilities }
            }
            "create_task" => {
                let m: pb::CreateTask = decode(name, bytes)?;
                Command::CreateTask {
                    task_id: m.task_id,
                    title: m.title,
                    priority: m.priority,
                    required_capabilities: m.required_capabilities,
                    dependencies: m.dependencies,
                    max_attempts: or(m.max_attempts, defaults::max_attempts()),
                }
            }
            "claim_task" => {
                let m: pb::ClaimTask = decode(name, bytes)?;
                let lease_ms = or(m.lease_ms, defaults::lease_ms());
                Command::ClaimTask { task_id: m.task_id, agent_id: m.agent_id, session_id: m.session_id, lease_ms }
            }
            "release_task" => {
                let m: pb::ReleaseTask = decode(name, bytes)?;
                Command::ReleaseTask {
                    task_id: m.task_id,
                    agent_id: m.agent_id,
                    session_id: m.session_id,
                    reason: m.reason,
                }
            }
            "complete_task" => {
                let m: pb::CompleteTask = decode(name, bytes)?;
                Command::CompleteTask {
                    task_id: m.task_id,
                    agent_id: m.agent_id,
                    session_id: m.session_id,
                    result: m.result,
                }
            }
            "fail_task" => {
                let m: pb::FailTask = decode(name, bytes)?;
                Command::FailTask {
                    task_id: m.task_id,
                    agent_id: m.agent_id,
                    session_id: m.session_id,
                    reason: m.reason,
                }
            }
            "expire_lease" => Command::ExpireLease { task_id: decode::<pb::ExpireLease>(name, bytes)?.task_id },
            "allocate_budget" => {
                let m: pb::AllocateBudget = decode(name, bytes)?;
                Command::AllocateBudget { budget_id: m.budget_id, amount: m.amount }
            }
            "debit_budget" => {
                let m: pb::DebitBudget = decode(name, bytes)?;
                Command::DebitBudget {
                    budget_id: m.budget_id,
                    amount: m.amount,
                    agent_id: m.agent_id,
                    session_id: m.session_id,
                    task_id: m.task_id,
                    reason: m.reason,
                    failed: m.failed,
                }
            }
            "refund_budget" => {
                let m: pb::RefundBudget = decode(name, bytes)?;
                Command::RefundBudget { budget_id: m.budget_id, amount: m.amount, reason: m.reason }
            }
            "record_action" => {
                let m: pb::RecordAction = decode(name, bytes)?;
                let kind = match pb::ActionKind::try_from(m.kind) {
                    Ok(pb::ActionKind::Think) => ActionKind::Think,
                    Ok(pb::ActionKind::Act) => ActionKind::Act,
                    Ok(pb::ActionKind::Learn) => ActionKind::Learn,
                    _ => {
                        return Err(Rejection::invalid(format!(
                            "record_action: kind {} is not think, act or learn",
                            m.kind
                        )));
                    }
                };
                let outcome = match pb::Outcome::try_from(m.outcome) {
                    Ok(pb::Outcome::Succeeded) => ActionOutcome::Succeeded,
                    Ok(pb::Outcome::Failed) => ActionOutcome::Failed,
                    _ => {
                        return Err(Rejection::invalid(format!(
                            "record_action: outcome {} is not succeeded or failed",
                            m.outcome
                        )));
                    }
                };
                Command::RecordAction {
                    agent_id: m.agent_id,
                    session_id: m.session_id,
                    task_id: m.task_id,
                    kind,
                    cost: m.cost,
                    outcome,
                    detail: m.detail,
                }
            }
            other => {
                return Err(Rejection::invalid(format!(
                    "unknown command {other:?}; the commands are: {}",
                    Command::NAMES.join(", ")
                )));
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn protobuf_bodies_give_the_same_commands_as_json_with_the_same_defaults() {
        let claim = pb::ClaimTask { task_id: "t1".into(), agent_id: "a1".into(), session_id: "s1".into(), lease_ms: 0 };
        let json = serde_json::json!({"task_id": "t1", "agent_id": "a1", "session_id": "s1"});
        assert_eq!(
            Command::from_protobuf("claim_task", &claim.encode_to_vec()).unwrap(),
            Command::from_json("claim_task", json).unwrap()
        );
        let action = pb::RecordAction {
            agent_id: "a".into(),
            session_id: "s".into(),
            kind: pb::ActionKind::Learn as i32,
            outcome: pb::Outcome::Failed as i32,
            cost: 4,
            ..Default::default()
        };
        let parsed = Command::from_protobuf("record_action", &action.encode_to_vec()).unwrap();
        assert!(matches!(
            parsed,
            Command::RecordAction { kind: ActionKind::Learn, outcome: ActionOutcome::Failed, cost: 4, .. }
        ));
        let unset = pb::RecordAction { kind: 0, ..action };
        assert!(Command::from_protobuf("record_action", &unset.encode_to_vec()).is_err());
        assert!(Command::from_protobuf("claim_task", b"\xff\xff\xff").is_err());
        assert!(Command::from_protobuf("claim", b"").unwrap_err().message.contains("claim_task"));
    }
}
