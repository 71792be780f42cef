//! Agents: their capabilities, and the actions they record.
use std::collections::BTreeSet;

use agentlog_core::schema::{self, ActionRecorded, AgentRegistered};
use agentlog_core::{Body, Envelope, Timestamp};

use super::{Decision, Session, canonical};
use crate::command::{ActionKind, ActionOutcome};
use crate::rejection::{Code, Rejection};

#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Agent {
    pub registered: bool,
    pub name: String,
    pub capabilities: BTreeSet<String>,
    pub actions: u64,
    pub failed_actions: u64,
}

impl Agent {
    pub fn apply(&mut self, event: &Envelope) {
        match &event.body {
            Some(Body::AgentRegistered(e)) => {
                self.registered = true;
                self.name.clone_from(&e.name);
                self.capabilities = e.capabilities.iter().cloned().collect();
            }
            Some(Body::ActionRecorded(e)) => {
                self.actions += 1;
                if e.outcome == schema::Outcome::Failed as i32 {
                    self.failed_actions += 1;
                }
            }
            _ => {}
        }
    }

    /// The required capabilities this agent lacks, sorted.
    pub fn missing<'a>(&self, required: &'a [String]) -> Vec<&'a str> {
        required.iter().filter(|c| !self.capabilities.contains(*c)).map(String::as_str).collect()
    }
}

pub fn register(agent_id: &str, name: &str, capabilities: &[String]) -> Decision {
    Ok(vec![Body::AgentRegistered(AgentRegistered {
        agent_id: agent_id.to_owned(),
        name: name.to_owned(),
        capabilities: canonical(capabilities),
    })])
}

pub struct Action<'a> {
    pub agent_id: &'a str,
    pub session_id: &'a str,
    pub task_id: &'a str,
    pub kind: ActionKind,
    pub cost: u64,
    pub outcome: ActionOutcome,
    pub detail: &'a str,
}

pub fn record_action(agent: &Agent, session: &Session, action: Action<'_>, now: Timestamp) -> Decision {
    if !agent.registered {
        return Err(Rejection::new(Code::UnknownAgent, format!("agent {} is not registered", action.agent_id)).into());
    }
    session.check_live_for(action.session_id, action.agent_id, now)?;
    let kind = match action.kind {
        ActionKind::Think => schema::ActionKind::Think,
        ActionKind::Act => schema::ActionKind::Act,
        ActionKind::Learn => schema::ActionKind::Learn,
    };
    let outcome = match action.outcome {
        ActionOutcome::Succeeded => schema::Outcome::Succeeded,
        ActionOutcome::Failed => schema::Outcome::Failed,
    };
    Ok(vec![Body::ActionRecorded(ActionRecorded {
        agent_id: action.agent_id.to_owned(),
        session_id: action.session_id.to_owned(),
        task_id: action.task_id.to_owned(),
        kind: kind as i32,
        cost: action.cost,
        outcome: outcome as i32,
        detail: action.detail.to_owned(),
    })])
}
