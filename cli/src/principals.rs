//! The principals `demo --nats --key` sends its workload as, on a node in
//! signed mode, the way a real deployment signs: the admin's key (`--key`)
//! registers, for this run, an orchestrator principal and one agent
//! principal per agent (fresh keys; ids `demo-<run>-orchestrator` and
//! `demo-<run>-<agent>`), and each command goes out signed by the principal
//! the role table asks for (`auth::roles::rule`).
use std::collections::HashMap;

use agentlog_commands::auth::roles::{Rule, rule};
use agentlog_commands::principal::RegisterPrincipal;
use agentlog_commands::wire::Client;
use agentlog_commands::{Code, Rejection, Request, Role};
use base64::Engine as _;
use tokio::sync::Mutex;

use crate::keys;

pub struct Principals {
    admin: Client,
    /// This run's tag in the principals' ids.
    run: String,
    /// The principals registered so far, by the role or agent they act as.
    clients: Mutex<HashMap<String, Client>>,
    /// Each session's agent, as the workload opened them.
    sessions: std::sync::Mutex<HashMap<String, String>>,
}

impl Principals {
    pub fn new(admin: Client) -> anyhow::Result<Principals> {
        let tag: [u8; 4] = keys::random()?;
        let run = tag.iter().map(|b| format!("{b:02x}")).collect();
        Ok(Principals { admin, run, clients: Mutex::default(), sessions: Default::default() })
    }

    /// The client signing `request` as the principal its rule needs.
    pub async fn client_for(&self, request: &Request) -> Result<Client, Rejection> {
        let session_owner =
            |session: &str| self.sessions.lock().unwrap_or_else(|p| p.into_inner()).get(session).cloned();
        let agent = match rule(&request.command) {
            Rule::Role(Role::Orchestrator) => None,
            Rule::Agent(agent) => Some(agent.to_owned()),
            Rule::SessionOwner(session) => match session_owner(session) {
                Some(agent) => Some(agent),
                None => return Ok(self.admin.clone()),
            },
            Rule::Role(_) => return Ok(self.admin.clone()),
        };
        let name = agent.clone().unwrap_or_else(|| "orchestrator".into());
        let mut clients = self.clients.lock().await;
        if let Some(client) = clients.get(&name) {
            return Ok(client.clone());
        }
        let id = format!("demo-{}-{name}", self.run);
        let seed = keys::random().map_err(|e| Rejection::new(Code::Unavailable, e.to_string()))?;
        let signer = keys::signer(&id, seed);
        let (roles, agent_id) = match agent {
            Some(agent) => (vec![Role::Agent], agent),
            None => (vec![Role::Orchestrator], String::new()),
        };
        let register = RegisterPrincipal {
            principal_id: id,
            public_key: base64::engine::general_purpose::STANDARD.encode(signer.public_key()),
            roles,
            agent_id,
        };
        self.admin.execute(&register.into(), None).await?;
        let client = self.admin.clone().with_signer(signer);
        clients.insert(name, client.clone());
        Ok(client)
    }

    /// Remembers whose a session is, for its heartbeats and its close.
    pub fn opened(&self, session_id: &str, agent_id: &str) {
        self.sessions.lock().unwrap_or_else(|p| p.into_inner()).insert(session_id.to_owned(), agent_id.to_owned());
    }
}
