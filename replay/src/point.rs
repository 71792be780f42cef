//! A point in the history ([`Point`]: a seq, or a time meaning the last
//! event at or before it) and the views as they were just after it
//! ([`state_at`], [`State`]): both views folded from seq 1 in memory, so
//! the same events give the same state hash as the live views.
use std::ops::ControlFlow;
use std::str::FromStr;

use agentlog_core::{EventSource, Timestamp};
use agentlog_projections::world::{AgentView, BudgetView, SessionView, TaskStatus, TaskView};
use agentlog_projections::{Live, Reputation, Runner, WorldModel};
use serde_json::{Value, json};

use crate::error::{Error, Result};
use crate::source::History;

/// Where in the history: `SEQ`, or an RFC 3339 time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Point {
    Seq(u64),
    /// The last event whose `ts` is at or before it.
    Time(Timestamp),
}

impl FromStr for Point {
    type Err = Error;

    fn from_str(text: &str) -> Result<Point> {
        let bad = || Error::BadPoint { text: text.to_owned() };
        if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) {
            return text.parse().map(Point::Seq).map_err(|_| bad());
        }
        let time = chrono::DateTime::parse_from_rfc3339(text).map_err(|_| bad())?;
        let nanos = time.timestamp_nanos_opt().and_then(|n| u64::try_from(n).ok()).ok_or_else(bad)?;
        Ok(Point::Time(Timestamp::from_nanos(nanos)))
    }
}

impl Point {
    /// The seq this point names in `history`. A time is resolved by reading
    /// the events' times (they need not be in seq order across streams:
    /// the last seq at or before the time wins).
    pub fn resolve(self, history: &History) -> Result<u64> {
        let head = history.head()?.last_seq;
        if head == 0 {
            return Err(Error::Empty);
        }
        match self {
            Point::Seq(seq) if seq > head => Err(Error::PastHead { seq, head }),
            Point::Seq(0) => Err(Error::BadPoint { text: "0 (seqs start at 1)".into() }),
            Point::Seq(seq) => Ok(seq),
            Point::Time(at) => {
                let (mut found, mut first_ts) = (None, None);
                history.pages(history.first_seq(), head, &mut |page| {
                    for event in &page {
                        first_ts.get_or_insert(event.ts);
                        if event.ts <= at.as_nanos() {
                            found = Some(event.seq);
                        }
                    }
                    Ok(ControlFlow::Continue(()))
                })?;
                found.ok_or_else(|| Error::BeforeFirst {
                    at: at.to_string(),
                    first: history.first_seq(),
                    first_ts: Timestamp::from_nanos(first_ts.unwrap_or_default()).to_string(),
                })
            }
        }
    }
}

/// Both views just after event `seq`.
#[derive(Debug)]
pub struct State {
    pub seq: u64,
    pub world: Live<WorldModel>,
    pub reputation: Live<Reputation>,
    /// The scratch store the views read from, when they came from a
    /// snapshot ([`crate::snapshots`]): removed once they are dropped.
    pub(crate) _work: Option<tempfile::TempDir>,
}

/// Folds both views from seq 1 through `seq`; `progress(done, seq)` after
/// each page.
pub fn state_at(history: &History, seq: u64, progress: &mut dyn FnMut(u64, u64)) -> Result<State> {
    if history.first_seq() > 1 {
        return Err(Error::NotFromStart { first: history.first_seq() });
    }
    let head = history.head()?.last_seq;
    if seq > head {
        return Err(Error::PastHead { seq, head });
    }
    let (mut world, mut reputation) = (Live::<WorldModel>::new(), Live::<Reputation>::new());
    let done = agentlog_projections::rebuild(history, &mut [&mut world, &mut reputation], seq, progress)?;
    if done != seq {
        return Err(Error::Seam { seq: done + 1, reason: format!("the history ends at seq {done}, before seq {seq}") });
    }
    Ok(State { seq, world, reputation, _work: None })
}

/// One entity of the views, as `replay state --task ID` names it
/// (`task/ID` in `replay diff` and `explain`: [`Entity::parse`]).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Entity {
    Task(String),
    Agent(String),
    Session(String),
    Budget(String),
}

impl State {
    /// Counts of what the views hold, and their state hashes.
    pub fn summary(&self) -> Value {
        let world = &self.world.state;
        let mut tasks = [0u64; 4];
        for task in world.tasks() {
            tasks[match task.status {
                TaskStatus::Open => 0,
                TaskStatus::Claimed => 1,
                TaskStatus::Completed => 2,
                TaskStatus::Failed => 3,
            }] += 1;
        }
        let live_sessions =
            world.sessions().filter(|s| s.status == agentlog_projections::world::SessionStatus::Live).count();
        json!({
            "seq": self.seq,
            "world": {
                "state_hash": hex(&self.world.state_hash()),
                "tasks": { "open": tasks[0], "claimed": tasks[1], "completed": tasks[2], "failed": tasks[3] },
                "ready": world.ready().count(),
                "sessions": world.sessions().count(),
                "live_sessions": live_sessions,
                "agents": world.agents().count(),
                "budgets": world.budgets().count(),
                "violations": world.violations().count(),
            },
            "reputation": {
                "state_hash": hex(&self.reputation.state_hash()),
                "agents": self.reputation.state.agents().count(),
            },
        })
    }

    /// One entity as the views held it; an agent with its reputation.
    pub fn entity(&self, entity: &Entity) -> Result<Value> {
        let world = &self.world.state;
        let unknown = |kind, id: &str| Error::UnknownEntity { kind, id: id.to_owned(), seq: self.seq };
        Ok(match entity {
            Entity::Task(id) => {
                let task: TaskView = world.task(id).ok_or_else(|| unknown("task", id))?.into_owned();
                json!({ "seq": self.seq, "task": task })
            }
            Entity::Agent(id) => {
                let agent: AgentView = world.agent(id).ok_or_else(|| unknown("agent", id))?.into_owned();
                json!({ "seq": self.seq, "agent": agent, "reputation": self.reputation.state.agent(id) })
            }
            Entity::Session(id) => {
                let session: SessionView = world.session(id).ok_or_else(|| unknown("session", id))?.into_owned();
                json!({ "seq": self.seq, "session": session })
            }
            Entity::Budget(id) => {
                let budget: BudgetView = world.budget(id).ok_or_else(|| unknown("budget", id))?.into_owned();
                json!({ "seq": self.seq, "budget": budget })
            }
        })
    }
}

fn hex(hash: &[u8; 32]) -> String {
    agentlog_core::chain::to_hex(hash)
}
