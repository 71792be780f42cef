//! Questions the views answer, the same in process (`agentlog query
//! --data`) and over NATS (`agentlog.q.<query>` inside `serve`). Every
//! answer carries the log sequence it reflects. A collection is answered a
//! page at a time ([`Page`]): at most `limit` rows after a cursor, and the
//! cursor of the next page when there may be more, so an answer never
//! copies a whole collection, however large the world grows.
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::matcher::{Candidate, recommend};
use crate::views::Views;
use crate::world::{SessionStatus, TaskStatus};

/// How many agents `match` recommends at most.
pub const MATCH_LIMIT: usize = 10;
/// Rows in a page when the query names no limit.
pub const DEFAULT_LIMIT: usize = 1_000;
/// The most rows one page holds.
pub const MAX_LIMIT: usize = 10_000;

/// Which part of a collection to answer: at most `limit` rows (default
/// [`DEFAULT_LIMIT`], at most [`MAX_LIMIT`]) after the cursor `after` (the
/// last row's id of the page before — `SEQ.INDEX` for violations, of
/// which one event may cause several), and for
/// `tasks` only those in `state` (`open`, `claimed`, `completed`,
/// `failed`, or `ready`: the ready queue, best first).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Page {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
}

impl Page {
    fn limit(&self) -> usize {
        self.limit.unwrap_or(DEFAULT_LIMIT).clamp(1, MAX_LIMIT)
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "query", rename_all = "snake_case")]
pub enum Query {
    Tasks { page: Page },
    Task { id: String },
    Ready { page: Page },
    Sessions { page: Page },
    Agents { page: Page },
    Agent { id: String },
    Budgets { page: Page },
    Modules { page: Page },
    Module { id: String },
    Violations { page: Page },
    Reputation { page: Page },
    Match { task_id: String },
}

impl Query {
    /// The query's name: its NATS subject's last token and CLI word.
    pub fn name(&self) -> &'static str {
        match self {
            Query::Tasks { .. } => "tasks",
            Query::Task { .. } => "task",
            Query::Ready { .. } => "ready",
            Query::Sessions { .. } => "sessions",
            Query::Agents { .. } => "agents",
            Query::Agent { .. } => "agent",
            Query::Budgets { .. } => "budgets",
            Query::Modules { .. } => "modules",
            Query::Module { .. } => "module",
            Query::Violations { .. } => "violations",
            Query::Reputation { .. } => "reputation",
            Query::Match { .. } => "match",
        }
    }

    /// The page a collection query asks for.
    pub fn page(&self) -> Option<&Page> {
        match self {
            Query::Tasks { page }
            | Query::Ready { page }
            | Query::Sessions { page }
            | Query::Agents { page }
            | Query::Budgets { page }
            | Query::Modules { page }
            | Query::Violations { page }
            | Query::Reputation { page } => Some(page),
            Query::Task { .. } | Query::Agent { .. } | Query::Module { .. } | Query::Match { .. } => None,
        }
    }

    /// Builds a query from its name, its one argument (an id) and, for a
    /// collection, the page.
    pub fn parse(name: &str, id: Option<&str>, page: Page) -> Result<Query> {
        let id = |what: &str| {
            id.map(str::to_owned).ok_or_else(|| Error::BadQuery { reason: format!("`{name}` needs {what}") })
        };
        if let Some(state) = &page.state
            && (name != "tasks" || !TASK_STATES.contains(&state.as_str()))
        {
            return Err(Error::BadQuery {
                reason: format!(
                    "state {state:?}: `tasks` takes one of {}, and no other query takes a state",
                    TASK_STATES.join(", ")
                ),
            });
        }
        if name == "violations"
            && let Some(after) = &page.after
            && violation_place(after).is_none()
        {
            return Err(Error::BadQuery {
                reason: format!("violations page after SEQ or SEQ.INDEX (the cursor a page ends with), not {after:?}"),
            });
        }
        Ok(match name {
            "tasks" => Query::Tasks { page },
            "task" => Query::Task { id: id("a task id")? },
            "ready" => Query::Ready { page },
            "sessions" => Query::Sessions { page },
            "agents" => Query::Agents { page },
            "agent" => Query::Agent { id: id("an agent id")? },
            "budgets" => Query::Budgets { page },
            "modules" => Query::Modules { page },
            "module" => Query::Module { id: id("a module hash")? },
            "violations" => Query::Violations { page },
            "reputation" => Query::Reputation { page },
            "match" => Query::Match { task_id: id("a task id")? },
            other => {
                return Err(Error::BadQuery {
                    reason: format!(
                        "no query {other:?}: ask tasks, task ID, ready, sessions, agents, agent ID, budgets, modules, module HASH, violations, reputation or match TASK"
                    ),
                });
            }
        })
    }
}

/// The states `tasks` filters by.
pub const TASK_STATES: [&str; 5] = ["open", "claimed", "completed", "failed", "ready"];

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Answer {
    /// The last log sequence the answer reflects.
    pub seq: u64,
    pub result: serde_json::Value,
    /// For a collection: the cursor of the next page (`after`), when the
    /// page is full and more rows may follow.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next: Option<String>,
}

/// At most `page.limit()` rows of `rows`, as JSON, and the next page's
/// cursor (`cursor` of the last row) when the page is full.
fn paged<T: Serialize>(
    rows: impl Iterator<Item = T>,
    page: &Page,
    cursor: impl Fn(&T) -> String,
) -> (serde_json::Value, Option<String>) {
    let limit = page.limit();
    let rows: Vec<T> = rows.take(limit).collect();
    let next = if rows.len() == limit { rows.last().map(&cursor) } else { None };
    (json(rows), next)
}

fn json<T: Serialize>(value: T) -> serde_json::Value {
    serde_json::to_value(value).expect("views serialise")
}

/// Answers from the views as they are now.
pub fn answer(views: &Views, query: &Query) -> Result<Answer> {
    let world = views.world();
    let seq = views.position();
    let no_such = |what: &'static str, id: &str| Error::NoSuch { what, id: id.to_owned() };
    let after = |page: &Page| page.after.clone();
    let (result, next) = match query {
        Query::Tasks { page } => {
            let after = after(page);
            match page.state.as_deref() {
                Some("ready") => paged(world.state.ready_after(after.as_deref()), page, |t| t.task_id.clone()),
                Some(state) => {
                    let status = task_status(state).ok_or_else(|| Error::BadQuery {
                        reason: format!("state {state:?}: `tasks` takes one of {}", TASK_STATES.join(", ")),
                    })?;
                    paged(world.state.tasks_in_status_after(status, after.as_deref()), page, |t| t.task_id.clone())
                }
                None => paged(world.state.tasks_after(after.as_deref()), page, |t| t.task_id.clone()),
            }
        }
        Query::Task { id } => (json(world.state.task(id).ok_or_else(|| no_such("task", id))?), None),
        Query::Ready { page } => paged(world.state.ready_after(after(page).as_deref()), page, |t| t.task_id.clone()),
        Query::Sessions { page } => {
            paged(world.state.sessions_after(after(page).as_deref()), page, |s| s.session_id.clone())
        }
        Query::Agents { page } => {
            paged(world.state.agents_after(after(page).as_deref()).map(|a| agent_json(&a)), page, |a| {
                a["agent_id"].as_str().unwrap_or_default().to_owned()
            })
        }
        Query::Agent { id } => {
            let agent = world.state.agent(id).ok_or_else(|| no_such("agent", id))?;
            let mut value = agent_json(&agent);
            value["reputation"] = json(views.reputation().state.agent(id));
            (value, None)
        }
        Query::Budgets { page } => {
            paged(world.state.budgets_after(after(page).as_deref()), page, |b| b.budget_id.clone())
        }
        Query::Modules { page } => {
            paged(world.state.modules_after(after(page).as_deref()), page, |m| m.module_hash.clone())
        }
        Query::Module { id } => (json(world.state.module(id).ok_or_else(|| no_such("module", id))?), None),
        Query::Violations { page } => {
            let after = page.after.as_deref().and_then(violation_place);
            let rows =
                world.state.violations_after(after).map(|(place, violation)| PlacedViolation { place, violation });
            paged(rows, page, |row| format!("{}.{}", row.place.0, row.place.1))
        }
        Query::Reputation { page } => {
            paged(views.reputation().state.agents_after(after(page).as_deref()), page, |a| a.agent_id.clone())
        }
        Query::Match { task_id } => {
            let task = world.state.task(task_id).ok_or_else(|| no_such("task", task_id))?;
            let candidates: Vec<Candidate> = world
                .state
                .live_agents()
                .filter(|a| {
                    a.sessions.iter().any(|s| world.state.session(s).is_some_and(|s| s.status == SessionStatus::Live))
                })
                .map(|a| Candidate { agent_id: a.agent_id.clone(), capabilities: a.capabilities.clone(), load: a.load })
                .collect();
            (json(recommend(&views.reputation().state, &task.required_capabilities, &candidates, MATCH_LIMIT)), None)
        }
    };
    Ok(Answer { seq, result, next })
}

/// A violations cursor: `SEQ.INDEX` (after that one of the seq's
/// violations) or `SEQ` (after all of them).
fn violation_place(after: &str) -> Option<(u64, u32)> {
    match after.split_once('.') {
        Some((seq, index)) => Some((seq.parse().ok()?, index.parse().ok()?)),
        None => Some((after.parse().ok()?, u32::MAX)),
    }
}

/// A violation as a row of a page, its place kept for the cursor.
#[derive(Serialize)]
struct PlacedViolation<'a> {
    #[serde(skip)]
    place: (u64, u32),
    #[serde(flatten)]
    violation: std::borrow::Cow<'a, crate::world::Violation>,
}

fn task_status(state: &str) -> Option<TaskStatus> {
    Some(match state {
        "open" => TaskStatus::Open,
        "claimed" => TaskStatus::Claimed,
        "completed" => TaskStatus::Completed,
        "failed" => TaskStatus::Failed,
        _ => return None,
    })
}

fn agent_json(agent: &crate::world::AgentView) -> serde_json::Value {
    let mut value = json(agent);
    value["status"] = agent.status().into();
    value
}
