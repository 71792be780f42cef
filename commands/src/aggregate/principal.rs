//! A principal (stream `principal/<id>`): its key and roles once
//! registered, and whether it was revoked. Registered once; revoked once,
//! for good (a new key is a new principal).
use agentlog_core::schema::{PrincipalRegistered, PrincipalRevoked};
use agentlog_core::{Body, Envelope};
use serde::Serialize;

use super::{Decision, canonical};
use crate::auth::{Principal as Identity, Role};
use crate::principal::RegisterPrincipal;
use crate::rejection::{Code, Rejection};

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Principal {
    /// The key (32 bytes), roles and agent, once registered.
    pub public_key: Vec<u8>,
    pub roles: Vec<String>,
    pub agent_id: String,
    pub registered: bool,
    /// The seq of its revocation, once revoked.
    pub revoked_at: Option<u64>,
}

impl Principal {
    pub fn apply(&mut self, event: &Envelope) {
        match &event.body {
            Some(Body::PrincipalRegistered(e)) => {
                self.public_key.clone_from(&e.public_key);
                self.roles.clone_from(&e.roles);
                self.agent_id.clone_from(&e.agent_id);
                self.registered = true;
            }
            Some(Body::PrincipalRevoked(_)) => self.revoked_at = Some(event.seq),
            _ => {}
        }
    }

    /// The identity its signed requests act as; `None` unless registered.
    /// A role this build does not know is left out.
    pub fn identity(&self, id: &str) -> Option<Identity> {
        let public_key: [u8; 32] = self.public_key.as_slice().try_into().ok().filter(|_| self.registered)?;
        let roles = self.roles.iter().filter_map(|r| r.parse::<Role>().ok()).collect();
        let agent_id = Some(self.agent_id.clone()).filter(|a| !a.is_empty());
        Some(Identity { id: id.to_owned(), public_key, roles, agent_id })
    }
}

pub fn register(state: &Principal, command: &RegisterPrincipal) -> Decision {
    if state.registered {
        return Err(Rejection::new(
            Code::AlreadyExists,
            format!("principal {} is registered already; a new key is a new principal", command.principal_id),
        )
        .into());
    }
    let public_key = crate::auth::public_key_from_base64("public_key", &command.public_key)?;
    let roles: Vec<String> = command.roles.iter().map(|r| r.as_str().to_owned()).collect();
    Ok(vec![Body::PrincipalRegistered(PrincipalRegistered {
        principal_id: command.principal_id.clone(),
        public_key: public_key.to_vec(),
        roles: canonical(&roles),
        agent_id: command.agent_id.clone(),
    })])
}

pub fn revoke(state: &Principal, principal_id: &str, reason: &str) -> Decision {
    if !state.registered {
        return Err(Rejection::new(Code::NotFound, format!("no principal {principal_id} is registered")).into());
    }
    if let Some(seq) = state.revoked_at {
        return Err(Rejection::new(
            Code::AlreadyExists,
            format!("principal {principal_id} was revoked already (seq {seq})"),
        )
        .into());
    }
    Ok(vec![Body::PrincipalRevoked(PrincipalRevoked {
        principal_id: principal_id.to_owned(),
        reason: reason.to_owned(),
    })])
}
