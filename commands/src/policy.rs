//! Policies: a registered `policy` module bound to a command type
//! (`bind_policy`, recorded on `policy/<command>`, so replay knows which
//! policy was in force) is asked about every such command before it is
//! decided. Its input is JSON ([`input`]); its output is the verdict, as
//! text: `allow`, or `deny` and a reason. A denial is the `domain` rejection
//! `policy_denied` with that reason; a policy that traps, runs out of fuel
//! or answers anything else denies too, with kind `agent`
//! (`policy_failed`): policies fail closed. Rejections append nothing.
use agentlog_core::schema as pb;
use serde::{Deserialize, Serialize};

use crate::command::{Command, Spec, id};
use crate::rejection::{Code, Rejection, Result};

/// Fuel a policy may use on one command.
pub const POLICY_FUEL: u64 = 1_000_000;

/// Binds a policy module to a command type; an empty `module_hash`
/// unbinds it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BindPolicy {
    pub command: String,
    #[serde(default)]
    pub module_hash: String,
}

impl Spec for BindPolicy {
    const NAME: &'static str = "bind_policy";
    type Proto = pb::BindPolicy;

    fn validate(&self) -> Result<()> {
        if self.command == BindPolicy::NAME || !Command::NAMES.contains(&self.command.as_str()) {
            return Err(Rejection::invalid(format!(
                "command {:?}: a policy is bound to one of {} (not bind_policy itself)",
                self.command,
                Command::NAMES.iter().filter(|n| **n != BindPolicy::NAME).copied().collect::<Vec<_>>().join(", ")
            )));
        }
        if !self.module_hash.is_empty() {
            id("module_hash", &self.module_hash)?;
        }
        Ok(())
    }

    fn stream(&self) -> String {
        format!("policy/{}", self.command)
    }

    fn from_proto(m: pb::BindPolicy) -> Result<Self> {
        Ok(BindPolicy { command: m.command, module_hash: m.module_hash })
    }

    fn to_proto(&self) -> pb::BindPolicy {
        pb::BindPolicy { command: self.command.clone(), module_hash: self.module_hash.clone() }
    }
}

/// What a policy is asked: the command (its wire name and its fields, as
/// in its JSON body), who sent it, the decision's time, and the state of
/// the aggregate it is decided on (`state`, as that aggregate's fields).
#[derive(Serialize)]
pub struct Input<'a> {
    pub command: &'a str,
    pub fields: &'a Command,
    pub actor: &'a str,
    pub now: u64,
    pub stream: &'a str,
    pub state: &'a crate::aggregate::State,
}

/// The input's bytes (JSON).
pub fn input(command: &Command, actor: &str, now: u64, stream: &str, state: &crate::aggregate::State) -> Vec<u8> {
    let input = Input { command: command.name(), fields: command, actor, now, stream, state };
    serde_json::to_vec(&input).expect("policy inputs serialise")
}

/// A policy's verdict, read from its output.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    Allow,
    Deny(String),
}

/// `allow`, or `deny` followed by the reason (whitespace around either
/// ignored); anything else is no verdict.
pub fn verdict(output: &[u8]) -> Option<Verdict> {
    let text = std::str::from_utf8(output).ok()?.trim();
    if text == "allow" {
        return Some(Verdict::Allow);
    }
    let reason = text.strip_prefix("deny")?;
    if !reason.is_empty() && !reason.starts_with(char::is_whitespace) {
        return None;
    }
    Some(Verdict::Deny(reason.trim().to_owned()))
}

/// The rejection a policy's denial gives.
pub fn denied(command: &str, name: &str, module_hash: &str, reason: &str) -> Rejection {
    let reason = if reason.is_empty() { "no reason given" } else { reason };
    Rejection::new(Code::PolicyDenied, format!("policy {name} ({module_hash}) denies {command}: {reason}"))
}

/// The rejection of a policy that gave no verdict (fail closed).
pub fn failed(command: &str, name: &str, module_hash: &str, what: &str) -> Rejection {
    Rejection::new(
        Code::PolicyFailed,
        format!("policy {name} ({module_hash}) {what}, so {command} is denied (policies fail closed)"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The input docs/SANDBOX.md shows, byte for byte.
    #[test]
    fn a_policy_is_shown_the_command_the_actor_the_time_and_the_state() {
        let command = Command::DebitBudget(crate::command::DebitBudget {
            budget_id: "b1".into(),
            amount: 600,
            agent_id: "a1".into(),
            session_id: "s1".into(),
            task_id: String::new(),
            reason: String::new(),
            failed: false,
        });
        let state = crate::aggregate::State::Budget(crate::aggregate::Budget {
            exists: true,
            allocated: 1000,
            balance: 1000,
            ..Default::default()
        });
        let shown = String::from_utf8(input(&command, "alice", 7, "budget/b1", &state)).unwrap();
        assert_eq!(
            shown,
            r#"{"command":"debit_budget","fields":{"budget_id":"b1","amount":600,"agent_id":"a1","session_id":"s1","task_id":"","reason":"","failed":false},"actor":"alice","now":7,"stream":"budget/b1","state":{"budget":{"exists":true,"allocated":1000,"spent":0,"refunded":0,"balance":1000,"consecutive_failures":0,"circuit_open_until_ts":null}}}"#
        );
    }

    #[test]
    fn a_verdict_is_allow_or_deny_with_a_reason_and_nothing_else() {
        assert_eq!(verdict(b"allow"), Some(Verdict::Allow));
        assert_eq!(verdict(b" allow\n"), Some(Verdict::Allow));
        assert_eq!(verdict(b"deny over the limit"), Some(Verdict::Deny("over the limit".into())));
        assert_eq!(verdict(b"deny"), Some(Verdict::Deny(String::new())));
        for nothing in [&b""[..], b"allowed", b"denyx", b"yes", b"\xff"] {
            assert_eq!(verdict(nothing), None, "{nothing:?}");
        }
    }
}
