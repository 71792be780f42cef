//! Shared helpers for agentlog's end-to-end tests: a world of registered
//! agents with open sessions on a fresh embedded log, a real nats-server,
//! incidents planted into a log, and what a test asserts of a process it
//! ran.
pub mod incident;
pub mod nats;
pub mod output;

use std::path::Path;
use std::sync::Arc;

use agentlog_commands::command::{DebitBudget, OpenSession, RegisterAgent};
use agentlog_commands::{Command, Handler, Policy, Request};
use agentlog_log::{EmbeddedLog, ManualClock, Options, SeededIdGen, Timestamp};

pub const T0: Timestamp = Timestamp::from_nanos(1_767_225_600 * 1_000_000_000);

/// A fresh embedded log with fsync on (the default) in `dir`.
pub fn open_log(dir: &Path) -> Arc<EmbeddedLog> {
    Arc::new(EmbeddedLog::open(dir, Options::default()).expect("open the embedded log"))
}

pub fn handler(log: Arc<EmbeddedLog>, clock: Arc<ManualClock>, seed: u64, policy: Policy) -> Arc<Handler<EmbeddedLog>> {
    Arc::new(Handler::new(log, clock, Arc::new(SeededIdGen::new(seed))).with_policy(policy))
}

/// A debit of `amount` from `budget_id` by `agent_id` in `session_id`
/// (either may be "": then the debit names no agent or session).
pub fn debit(budget_id: &str, amount: u64, agent_id: &str, session_id: &str) -> DebitBudget {
    DebitBudget {
        budget_id: budget_id.into(),
        amount,
        agent_id: agent_id.into(),
        session_id: session_id.into(),
        task_id: String::new(),
        reason: String::new(),
        failed: false,
    }
}

pub async fn send(handler: &Handler<EmbeddedLog>, command: Command) -> agentlog_commands::Accepted {
    let name = command.name();
    handler.execute(Request::new(command, "test")).await.unwrap_or_else(|r| panic!("{name} rejected: {r}"))
}

/// Registers `agent-<i>` for each i with `capabilities`, opens a session for
/// each, and returns `(agent_id, session_id)` pairs.
pub async fn agents_with_sessions(
    handler: &Handler<EmbeddedLog>,
    count: usize,
    capabilities: &[&str],
) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for i in 0..count {
        let agent_id = format!("agent-{i}");
        let capabilities = capabilities.iter().map(|c| c.to_string()).collect();
        send(
            handler,
            Command::RegisterAgent(RegisterAgent { agent_id: agent_id.clone(), name: String::new(), capabilities }),
        )
        .await;
        let opened = send(
            handler,
            Command::OpenSession(OpenSession {
                agent_id: agent_id.clone(),
                session_id: None,
                heartbeat_timeout_ms: 3_600_000,
            }),
        )
        .await;
        out.push((agent_id, opened.session_id.expect("open_session names its session")));
    }
    out
}
