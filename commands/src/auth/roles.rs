//! The role table: which principal may send which command (docs/PROTOCOL.md,
//! "Roles"). [`rule`] says what a command needs; [`check`] holds a
//! principal to it. Checked before the command is decided: a principal
//! without the right is refused `domain`/`forbidden`, naming the rule.
use super::{Principal, Role};
use crate::command::Command;
use crate::rejection::{Code, Rejection, Result};

/// What a command needs of its sender.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rule<'a> {
    /// Any principal holding this role.
    Role(Role),
    /// An `agent` principal acting for this agent (the command's own
    /// `agent_id`).
    Agent(&'a str),
    /// An `agent` principal acting for the agent whose session this is
    /// (the handler looks the session up).
    SessionOwner(&'a str),
}

/// The rule for `command`. Every command has one; adding a command adds
/// its arm here.
pub fn rule(command: &Command) -> Rule<'_> {
    match command {
        Command::RegisterAgent(_)
        | Command::AllocateBudget(_)
        | Command::RefundBudget(_)
        | Command::RegisterModule(_)
        | Command::BindPolicy(_)
        | Command::RegisterPrincipal(_)
        | Command::RevokePrincipal(_) => Rule::Role(Role::Admin),
        Command::CreateTask(_) => Rule::Role(Role::Orchestrator),
        Command::ExpireSession(_) | Command::ExpireLease(_) => Rule::Role(Role::Ticker),
        Command::OpenSession(c) => Rule::Agent(&c.agent_id),
        Command::ClaimTask(c) => Rule::Agent(&c.agent_id),
        Command::ReleaseTask(c) => Rule::Agent(&c.agent_id),
        Command::CompleteTask(c) => Rule::Agent(&c.agent_id),
        Command::FailTask(c) => Rule::Agent(&c.agent_id),
        Command::DebitBudget(c) => Rule::Agent(&c.agent_id),
        Command::RecordAction(c) => Rule::Agent(&c.agent_id),
        Command::RunModule(c) => Rule::Agent(&c.agent_id),
        Command::Heartbeat(c) => Rule::SessionOwner(&c.session_id),
        Command::CloseSession(c) => Rule::SessionOwner(&c.session_id),
    }
}

/// Holds `principal` to `command`'s rule. `session_owner` is the agent of
/// the session a [`Rule::SessionOwner`] names (`None`: no such session).
pub fn check(principal: &Principal, command: &Command, session_owner: Option<&str>) -> Result<()> {
    let name = command.name();
    let forbidden = |needs: String| {
        Rejection::new(
            Code::Forbidden,
            format!("{name} needs {needs}; principal {} has {}", principal.id, principal.describe()),
        )
    };
    match rule(command) {
        Rule::Role(role) if principal.has(role) => Ok(()),
        Rule::Role(role) => Err(forbidden(format!("the {role} role"))),
        Rule::Agent("") => Err(forbidden("an agent principal, and names its agent_id".into())),
        Rule::Agent(agent) if principal.acts_for(agent) => Ok(()),
        Rule::Agent(agent) => Err(forbidden(format!("an agent principal acting for agent {agent}"))),
        Rule::SessionOwner(session) => match session_owner {
            Some(owner) if principal.acts_for(owner) => Ok(()),
            Some(owner) => {
                Err(forbidden(format!("an agent principal acting for agent {owner}, whose session {session} is")))
            }
            // No such session: deciding says so; but only an agent may ask.
            None if principal.has(Role::Agent) => Ok(()),
            None => Err(forbidden("an agent principal acting for the session's agent".into())),
        },
    }
}

impl Principal {
    /// Whether this is an `agent` principal acting for `agent_id`.
    pub fn acts_for(&self, agent_id: &str) -> bool {
        self.has(Role::Agent) && self.agent_id.as_deref() == Some(agent_id)
    }

    /// Its roles (and agent), for messages.
    pub fn describe(&self) -> String {
        match &self.agent_id {
            Some(agent) if self.has(Role::Agent) => format!("{} (agent {agent})", self.roles_text()),
            _ => self.roles_text(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::command::{AllocateBudget, ClaimTask, Heartbeat};

    fn agent(id: &str, agent: &str) -> Principal {
        Principal { agent_id: Some(agent.into()), ..Principal::in_process(id, &[Role::Agent]) }
    }

    #[test]
    fn agents_act_only_for_themselves_and_admins_hold_budgets() {
        let claim = |agent_id: &str| {
            Command::ClaimTask(ClaimTask {
                task_id: "t".into(),
                agent_id: agent_id.into(),
                session_id: "s".into(),
                lease_ms: 1,
            })
        };
        let bob = agent("bob", "a1");
        check(&bob, &claim("a1"), None).unwrap();
        let err = check(&bob, &claim("a2"), None).unwrap_err();
        assert_eq!((err.code, err.kind), (Code::Forbidden, agentlog_core::Kind::Domain));
        assert!(err.message.contains("acting for agent a2") && err.message.contains("agent a1"), "{err}");

        let allocate = Command::AllocateBudget(AllocateBudget { budget_id: "b".into(), amount: 1 });
        let err = check(&bob, &allocate, None).unwrap_err();
        assert!(err.message.contains("the admin role"), "{err}");
        check(&Principal::in_process("ops", &[Role::Admin]), &allocate, None).unwrap();
        assert_eq!(check(&Principal::ticker(), &allocate, None).unwrap_err().code, Code::Forbidden);

        let beat = Command::Heartbeat(Heartbeat { session_id: "s".into() });
        check(&bob, &beat, Some("a1")).unwrap();
        assert_eq!(check(&bob, &beat, Some("a2")).unwrap_err().code, Code::Forbidden);
        assert_eq!(
            check(&Principal::in_process("ops", &[Role::Admin]), &beat, None).unwrap_err().code,
            Code::Forbidden
        );
    }

    #[test]
    fn every_command_has_a_rule_an_admin_alone_cannot_always_meet() {
        // The table is total (the match above is exhaustive); an admin may
        // not act for agents.
        let admin = Principal::in_process("ops", &[Role::Admin]);
        let claim = Command::ClaimTask(ClaimTask {
            task_id: "t".into(),
            agent_id: "a1".into(),
            session_id: "s".into(),
            lease_ms: 1,
        });
        assert_eq!(check(&admin, &claim, None).unwrap_err().code, Code::Forbidden);
    }
}
