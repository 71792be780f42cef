//! The commands that manage principals (admin only): `register_principal`
//! records an ed25519 public key with its roles on `principal/<id>`;
//! `revoke_principal` refuses that key from the next command on, for good.
use agentlog_core::schema as pb;
use base64::Engine as _;
use serde::{Deserialize, Serialize};

use crate::auth::{Role, public_key_from_base64};
use crate::command::{Spec, id, text};
use crate::rejection::{Rejection, Result};

/// Registers a principal. Its id is the key id its signed requests carry
/// and the `actor` of the events they cause.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegisterPrincipal {
    pub principal_id: String,
    /// The 32-byte ed25519 public key, base64 (as `agentlog keygen` prints it).
    pub public_key: String,
    pub roles: Vec<Role>,
    /// Required with the `agent` role, and only with it: the one agent it
    /// acts for.
    #[serde(default)]
    pub agent_id: String,
}

impl Spec for RegisterPrincipal {
    const NAME: &'static str = "register_principal";
    type Proto = pb::RegisterPrincipal;

    fn validate(&self) -> Result<()> {
        id("principal_id", &self.principal_id)?;
        public_key_from_base64("public_key", &self.public_key)?;
        if self.roles.is_empty() {
            return Err(Rejection::invalid("roles: a principal needs at least one role"));
        }
        match (self.roles.contains(&Role::Agent), self.agent_id.is_empty()) {
            (true, true) => Err(Rejection::invalid("agent_id: an agent principal acts for one agent; name it")),
            (false, false) => Err(Rejection::invalid("agent_id is for principals with the agent role only")),
            (true, false) => id("agent_id", &self.agent_id),
            (false, true) => Ok(()),
        }
    }

    fn stream(&self) -> String {
        format!("principal/{}", self.principal_id)
    }

    fn from_proto(m: pb::RegisterPrincipal) -> Result<Self> {
        Ok(RegisterPrincipal {
            principal_id: m.principal_id,
            public_key: base64::engine::general_purpose::STANDARD.encode(m.public_key),
            roles: m.roles.iter().map(|r| r.parse()).collect::<Result<_>>()?,
            agent_id: m.agent_id,
        })
    }

    /// The key's bytes as validation reads them (whitespace around the
    /// base64 trimmed, so such a key reads back without it); text that is
    /// no base64 is sent as no key, which the node refuses.
    fn to_proto(&self) -> pb::RegisterPrincipal {
        pb::RegisterPrincipal {
            principal_id: self.principal_id.clone(),
            public_key: base64::engine::general_purpose::STANDARD.decode(self.public_key.trim()).unwrap_or_default(),
            roles: self.roles.iter().map(|r| r.as_str().to_owned()).collect(),
            agent_id: self.agent_id.clone(),
        }
    }
}

/// Revokes a principal's key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RevokePrincipal {
    pub principal_id: String,
    #[serde(default)]
    pub reason: String,
}

impl Spec for RevokePrincipal {
    const NAME: &'static str = "revoke_principal";
    type Proto = pb::RevokePrincipal;

    fn validate(&self) -> Result<()> {
        id("principal_id", &self.principal_id)?;
        text("reason", &self.reason)
    }

    fn stream(&self) -> String {
        format!("principal/{}", self.principal_id)
    }

    fn from_proto(m: pb::RevokePrincipal) -> Result<Self> {
        Ok(RevokePrincipal { principal_id: m.principal_id, reason: m.reason })
    }

    fn to_proto(&self) -> pb::RevokePrincipal {
        pb::RevokePrincipal { principal_id: self.principal_id.clone(), reason: self.reason.clone() }
    }
}
