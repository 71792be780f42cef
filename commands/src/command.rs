//! The commands producers send, as plain data (JSON on the CLI: the command
//! name plus its fields), and the stream each one decides on.
use serde::{Deserialize, Serialize};

use crate::rejection::{Rejection, Result};

/// Session ids are UUIDs; the handler makes one when `OpenSession` has none.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "command", rename_all = "snake_case", deny_unknown_fields)]
pub enum Command {
    OpenSession {
        agent_id: String,
        #[serde(default)]
        session_id: Option<String>,
        #[serde(default = "defaults::heartbeat_timeout_ms")]
        heartbeat_timeout_ms: u64,
    },
    Heartbeat {
        session_id: String,
    },
    CloseSession {
        session_id: String,
        #[serde(default)]
        reason: String,
    },
    /// Sent by the ticker when a session missed its heartbeats.
    ExpireSession {
        session_id: String,
    },
    RegisterAgent {
        agent_id: String,
        #[serde(default)]
        name: String,
        #[serde(default)]
        capabilities: Vec<String>,
    },
    CreateTask {
        task_id: String,
        #[serde(default)]
        title: String,
        #[serde(default)]
        priority: i32,
        #[serde(default)]
        required_capabilities: Vec<String>,
        #[serde(default)]
        dependencies: Vec<String>,
        #[serde(default = "defaults::max_attempts")]
        max_attempts: u32,
    },
    ClaimTask {
        task_id: String,
        agent_id: String,
        session_id: String,
        #[serde(default = "defaults::lease_ms")]
        lease_ms: u64,
    },
    ReleaseTask {
        task_id: String,
        agent_id: String,
        session_id: String,
        #[serde(default)]
        reason: String,
    },
    CompleteTask {
        task_id: String,
        agent_id: String,
        session_id: String,
        #[serde(default)]
        result: String,
    },
    FailTask {
        task_id: String,
        agent_id: String,
        session_id: String,
        #[serde(default)]
        reason: String,
    },
    /// Sent by the ticker when a claim's lease ran out.
    ExpireLease {
        task_id: String,
    },
    AllocateBudget {
        budget_id: String,
        amount: u64,
    },
    DebitBudget {
        budget_id: String,
        amount: u64,
        #[serde(default)]
        agent_id: String,
        #[serde(default)]
        session_id: String,
        #[serde(default)]
        task_id: String,
        #[serde(default)]
        reason: String,
        /// The spend went on work that failed (counts toward the circuit).
        #[serde(default)]
        failed: bool,
    },
    RefundBudget {
        budget_id: String,
        amount: u64,
        #[serde(default)]
        reason: String,
    },
    RecordAction {
        agent_id: String,
        session_id: String,
        #[serde(default)]
        task_id: String,
        kind: ActionKind,
        #[serde(default)]
        cost: u64,
        outcome: ActionOutcome,
        #[serde(default)]
        detail: String,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ActionKind {
    Think,
    Act,
    Learn,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ActionOutcome {
    Succeeded,
    Failed,
}

pub mod defaults {
    pub fn heartbeat_timeout_ms() -> u64 {
        60_000
    }
    pub fn max_attempts() -> u32 {
        3
    }
    pub fn lease_ms() -> u64 {
        300_000
    }
}

/// Longest id (task, agent, budget, session) a command may name.
pub const MAX_ID_BYTES: usize = 128;
/// Longest free text (title, reason, result, detail).
pub const MAX_TEXT_BYTES: usize = 16 * 1024;
/// Most capabilities or dependencies one command may list.
pub const MAX_LIST_ITEMS: usize = 64;

impl Command {
    /// The command's name on the wire (`claim_task`).
    pub fn name(&self) -> &'static str {
        match self {
            Command::OpenSession { .. } => "open_session",
            Command::Heartbeat { .. } => "heartbeat",
            Command::CloseSession { .. } => "close_session",
            Command::ExpireSession { .. } => "expire_session",
            Command::RegisterAgent { .. } => "register_agent",
            Command::CreateTask { .. } => "create_task",
            Command::ClaimTask { .. } => "claim_task",
            Command::ReleaseTask { .. } => "release_task",
            Command::CompleteTask { .. } => "complete_task",
            Command::FailTask { .. } => "fail_task",
            Command::ExpireLease { .. } => "expire_lease",
            Command::AllocateBudget { .. } => "allocate_budget",
            Command::DebitBudget { .. } => "debit_budget",
            Command::RefundBudget { .. } => "refund_budget",
            Command::RecordAction { .. } => "record_action",
        }
    }

    /// Every command name, for help texts and errors.
    pub const NAMES: [&'static str; 15] = [
        "open_session",
        "heartbeat",
        "close_session",
        "expire_session",
        "register_agent",
        "create_task",
        "claim_task",
        "release_task",
        "complete_task",
        "fail_task",
        "expire_lease",
        "allocate_budget",
        "debit_budget",
        "refund_budget",
        "record_action",
    ];

    /// Parses `{...fields}` for the command `name`, with a message that
    /// says what is wrong.
    pub fn from_json(name: &str, fields: serde_json::Value) -> Result<Command> {
        if !Command::NAMES.contains(&name) {
            return Err(Rejection::invalid(format!(
                "unknown command {name:?}; the commands are: {}",
                Command::NAMES.join(", ")
            )));
        }
        let serde_json::Value::Object(mut object) = fields else {
            return Err(Rejection::invalid(format!("the body of {name} must be a JSON object")));
        };
        object.insert("command".into(), serde_json::Value::String(name.into()));
        serde_json::from_value(serde_json::Value::Object(object))
            .map_err(|e| Rejection::invalid(format!("{name}: {e}")))
    }

    /// Checks sizes and required fields, before any state is read.
    pub fn validate(&self) -> Result<()> {
        let id = |what: &str, value: &str| -> Result<()> {
            if value.len() > MAX_ID_BYTES || !agentlog_core::api::is_valid_id(value) {
                return Err(Rejection::invalid(format!(
                    "{what} must be 1 to {MAX_ID_BYTES} ASCII letters, digits, '_', '-', ':' or '@', got {value:?}"
                )));
            }
            Ok(())
        };
        let text = |what: &str, value: &str| -> Result<()> {
            if value.len() > MAX_TEXT_BYTES {
                return Err(Rejection::new(
                    crate::Code::TooLarge,
                    format!("{what} is {} bytes; the limit is {MAX_TEXT_BYTES}", value.len()),
                ));
            }
            Ok(())
        };
        let list = |what: &str, values: &[String]| -> Result<()> {
            if values.len() > MAX_LIST_ITEMS {
                return Err(Rejection::new(
                    crate::Code::TooLarge,
                    format!("{what} lists {} items; the limit is {MAX_LIST_ITEMS}", values.len()),
                ));
            }
            values.iter().try_for_each(|v| id(what, v))
        };
        let positive = |value: u64| -> Result<()> {
            if value == 0 {
                return Err(Rejection::new(crate::Code::InvalidAmount, "amount must be positive"));
            }
            Ok(())
        };
        match self {
            Command::OpenSession { agent_id, session_id, heartbeat_timeout_ms } => {
                id("agent_id", agent_id)?;
                if let Some(s) = session_id {
                    id("session_id", s)?;
                }
                if *heartbeat_timeout_ms == 0 {
                    return Err(Rejection::invalid("heartbeat_timeout_ms must be positive"));
                }
                Ok(())
            }
            Command::Heartbeat { session_id } | Command::ExpireSession { session_id } => id("session_id", session_id),
            Command::CloseSession { session_id, reason } => {
                id("session_id", session_id)?;
                text("reason", reason)
            }
            Command::RegisterAgent { agent_id, name, capabilities } => {
                id("agent_id", agent_id)?;
                text("name", name)?;
                list("capabilities", capabilities)
            }
            Command::CreateTask { task_id, title, required_capabilities, dependencies, max_attempts, .. } => {
                id("task_id", task_id)?;
                text("title", title)?;
                list("required_capabilities", required_capabilities)?;
                list("dependencies", dependencies)?;
                if *max_attempts == 0 {
                    return Err(Rejection::invalid("max_attempts must be at least 1"));
                }
                Ok(())
            }
            Command::ClaimTask { task_id, agent_id, session_id, lease_ms } => {
                id("task_id", task_id)?;
                id("agent_id", agent_id)?;
                id("session_id", session_id)?;
                if *lease_ms == 0 {
                    return Err(Rejection::invalid("lease_ms must be positive"));
                }
                Ok(())
            }
            Command::ReleaseTask { task_id, agent_id, session_id, reason: t }
            | Command::CompleteTask { task_id, agent_id, session_id, result: t }
            | Command::FailTask { task_id, agent_id, session_id, reason: t } => {
                id("task_id", task_id)?;
                id("agent_id", agent_id)?;
                id("session_id", session_id)?;
                text("text", t)
            }
            Command::ExpireLease { task_id } => id("task_id", task_id),
            Command::AllocateBudget { budget_id, amount } => {
                id("budget_id", budget_id)?;
                positive(*amount)
            }
            Command::DebitBudget { budget_id, amount: a, reason, .. } => {
                id("budget_id", budget_id)?;
                text("reason", reason)?;
                positive(*a)
            }
            Command::RefundBudget { budget_id, amount: a, reason } => {
                id("budget_id", budget_id)?;
                text("reason", reason)?;
                positive(*a)
            }
            Command::RecordAction { agent_id, session_id, detail, .. } => {
                id("agent_id", agent_id)?;
                id("session_id", session_id)?;
                text("detail", detail)
            }
        }
    }

    /// The stream (aggregate) the command decides on and appends to.
    pub fn stream(&self) -> String {
        match self {
            Command::OpenSession { session_id, .. } => {
                format!("session/{}", session_id.as_deref().unwrap_or_default())
            }
            Command::Heartbeat { session_id }
            | Command::CloseSession { session_id, .. }
            | Command::ExpireSession { session_id } => format!("session/{session_id}"),
            Command::RegisterAgent { agent_id, .. } | Command::RecordAction { agent_id, .. } => {
                format!("agent/{agent_id}")
            }
            Command::CreateTask { task_id, .. }
            | Command::ClaimTask { task_id, .. }
            | Command::ReleaseTask { task_id, .. }
            | Command::CompleteTask { task_id, .. }
            | Command::FailTask { task_id, .. }
            | Command::ExpireLease { task_id } => format!("task/{task_id}"),
            Command::AllocateBudget { budget_id, .. }
            | Command::DebitBudget { budget_id, .. }
            | Command::RefundBudget { budget_id, .. } => format!("budget/{budget_id}"),
        }
    }

    /// The session the command acts in, if it names one.
    pub fn session_id(&self) -> Option<&str> {
        match self {
            Command::OpenSession { session_id, .. } => session_id.as_deref(),
            Command::Heartbeat { session_id }
            | Command::CloseSession { session_id, .. }
            | Command::ExpireSession { session_id }
            | Command::ClaimTask { session_id, .. }
            | Command::ReleaseTask { session_id, .. }
            | Command::CompleteTask { session_id, .. }
            | Command::FailTask { session_id, .. }
            | Command::RecordAction { session_id, .. } => Some(session_id.as_str()),
            Command::DebitBudget { session_id, .. } if !session_id.is_empty() => Some(session_id.as_str()),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_commands_parse_with_defaults_and_clear_errors() {
        let claim = Command::from_json(
            "claim_task",
            serde_json::json!({"task_id": "t1", "agent_id": "a1", "session_id": "s1"}),
        )
        .unwrap();
        assert_eq!(
            claim,
            Command::ClaimTask {
                task_id: "t1".into(),
                agent_id: "a1".into(),
                session_id: "s1".into(),
                lease_ms: 300_000
            }
        );
        let unknown = Command::from_json("claim", serde_json::json!({})).unwrap_err();
        assert!(unknown.message.contains("claim_task"), "{unknown}");
        let missing = Command::from_json("claim_task", serde_json::json!({"task_id": "t1"})).unwrap_err();
        assert!(missing.message.contains("agent_id"), "{missing}");
        let extra = Command::from_json("heartbeat", serde_json::json!({"session_id": "s", "x": 1})).unwrap_err();
        assert!(extra.message.contains("unknown field"), "{extra}");
    }

    #[test]
    fn validation_refuses_bad_ids_and_zero_amounts() {
        let bad = Command::Heartbeat { session_id: "a/b".into() };
        assert_eq!(bad.validate().unwrap_err().code, crate::Code::InvalidCommand);
        let zero = Command::DebitBudget {
            budget_id: "b".into(),
            amount: 0,
            agent_id: String::new(),
            session_id: String::new(),
            task_id: String::new(),
            reason: String::new(),
            failed: false,
        };
        assert_eq!(zero.validate().unwrap_err().code, crate::Code::InvalidAmount);
    }
}
