//! Questions the views answer, the same in process (`agentlog query
//! --data`) and over NATS (`agentlog.q.<query>` inside `serve`). Every
//! answer carries the log sequence it reflects.
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::matcher::{Candidate, recommend};
use crate::views::Views;
use crate::world::SessionStatus;

/// How many agents `match` recommends at most.
pub const MATCH_LIMIT: usize = 10;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "query", rename_all = "snake_case")]
pub enum Query {
    Tasks,
    Task { id: String },
    Ready,
    Sessions,
    Agents,
    Agent { id: String },
    Budgets,
    Violations,
    Reputation,
    Match { task_id: String },
}

impl Query {
    /// The query's name: its NATS subject's last token and CLI word.
    pub fn name(&self) -> &'static str {
        match self {
            Query::Tasks => "tasks",
            Query::Task { .. } => "task",
            Query::Ready => "ready",
            Query::Sessions => "sessions",
            Query::Agents => "agents",
            Query::Agent { .. } => "agent",
            Query::Budgets => "budgets",
            Query::Violations => "violations",
            Query::Reputation => "reputation",
            Query::Match { .. } => "match",
        }
    }

    /// Builds a query from its name and its one argument (an id).
    pub fn parse(name: &str, id: Option<&str>) -> Result<Query> {
        let id = |what: &str| {
            id.map(str::to_owned).ok_or_else(|| Error::BadQuery { reason: format!("`{name}` needs {what}") })
        };
        Ok(match name {
            "tasks" => Query::Tasks,
            "task" => Query::Task { id: id("a task id")? },
            "ready" => Query::Ready,
            "sessions" => Query::Sessions,
            "agents" => Query::Agents,
            "agent" => Query::Agent { id: id("an agent id")? },
            "budgets" => Query::Budgets,
            "violations" => Query::Violations,
            "reputation" => Query::Reputation,
            "match" => Query::Match { task_id: id("a task id")? },
            other => {
                return Err(Error::BadQuery {
                    reason: format!(
                        "no query {other:?}: ask tasks, task ID, ready, sessions, agents, agent ID, budgets, violations, reputation or match TASK"
                    ),
                });
            }
        })
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Answer {
    /// The last log sequence the answer reflects.
    pub seq: u64,
    pub result: serde_json::Value,
}

fn json<T: Serialize>(value: T) -> serde_json::Value {
    serde_json::to_value(value).expect("views serialise")
}

/// Answers from the views as they are now.
pub fn answer(views: &Views, query: &Query) -> Result<Answer> {
    let world = views.world();
    let seq = views.position();
    let no_such = |what: &'static str, id: &str| Error::NoSuch { what, id: id.to_owned() };
    let result = match query {
        Query::Tasks => json(world.state.tasks().collect::<Vec<_>>()),
        Query::Task { id } => json(world.state.task(id).ok_or_else(|| no_such("task", id))?),
        Query::Ready => json(world.state.ready().collect::<Vec<_>>()),
        Query::Sessions => json(world.state.sessions().collect::<Vec<_>>()),
        Query::Agents => json(world.state.agents().map(agent_json).collect::<Vec<_>>()),
        Query::Agent { id } => {
            let agent = world.state.agent(id).ok_or_else(|| no_such("agent", id))?;
            let mut value = agent_json(agent);
            value["reputation"] = json(views.reputation().state.agent(id));
            value
        }
        Query::Budgets => json(world.state.budgets().collect::<Vec<_>>()),
        Query::Violations => json(world.state.violations()),
        Query::Reputation => json(views.reputation().state.agents().collect::<Vec<_>>()),
        Query::Match { task_id } => {
            let task = world.state.task(task_id).ok_or_else(|| no_such("task", task_id))?;
            let candidates: Vec<Candidate> = world
                .state
                .agents()
                .filter(|a| {
                    a.sessions.iter().any(|s| world.state.session(s).is_some_and(|s| s.status == SessionStatus::Live))
                })
                .map(|a| Candidate { agent_id: a.agent_id.clone(), capabilities: a.capabilities.clone(), load: a.load })
                .collect();
            json(recommend(&views.reputation().state, &task.required_capabilities, &candidates, MATCH_LIMIT))
        }
    };
    Ok(Answer { seq, result })
}

fn agent_json(agent: &crate::world::AgentView) -> serde_json::Value {
    let mut value = json(agent);
    value["status"] = agent.status().into();
    value
}
