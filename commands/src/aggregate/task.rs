//! Tasks: created with priority, required capabilities and dependencies;
//! claimed under a lease by one agent at a time; released, completed, failed
//! (and retried until attempts run out), or expired by the ticker.
use std::collections::BTreeMap;

use agentlog_core::schema::{TaskClaimed, TaskCompleted, TaskCreated, TaskFailed, TaskLeaseExpired, TaskReleased};
use agentlog_core::{Body, Envelope, Timestamp};

use super::{Agent, Decision, Session, canonical, ms_to_nanos};
use crate::rejection::{Code, Rejection};

#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    #[default]
    Unknown,
    Open,
    Claimed {
        agent_id: String,
        session_id: String,
        lease_until_ts: u64,
    },
    Completed,
    /// Attempts used up.
    Failed,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Task {
    pub status: Status,
    pub priority: i32,
    pub required_capabilities: Vec<String>,
    pub dependencies: Vec<String>,
    pub max_attempts: u32,
    /// Claims so far.
    pub attempts: u32,
    pub failures: u32,
}

impl Task {
    pub fn apply(&mut self, event: &Envelope) {
        match &event.body {
            Some(Body::TaskCreated(e)) => {
                self.status = Status::Open;
                self.priority = e.priority;
                self.required_capabilities.clone_from(&e.required_capabilities);
                self.dependencies.clone_from(&e.dependencies);
                self.max_attempts = e.max_attempts;
            }
            Some(Body::TaskClaimed(e)) => {
                self.attempts = e.attempt;
                self.status = Status::Claimed {
                    agent_id: e.agent_id.clone(),
                    session_id: e.session_id.clone(),
                    lease_until_ts: e.lease_until_ts,
                };
            }
            Some(Body::TaskReleased(_)) | Some(Body::TaskLeaseExpired(_)) => self.status = Status::Open,
            Some(Body::TaskCompleted(_)) => self.status = Status::Completed,
            Some(Body::TaskFailed(e)) => {
                self.failures += 1;
                self.status = if e.terminal { Status::Failed } else { Status::Open };
            }
            _ => {}
        }
    }

    pub fn exists(&self) -> bool {
        self.status != Status::Unknown
    }
}

fn not_found(task_id: &str) -> Rejection {
    Rejection::new(Code::NotFound, format!("no task {task_id}; create it with create_task"))
}

pub struct NewTask<'a> {
    pub task_id: &'a str,
    pub title: &'a str,
    pub priority: i32,
    pub required_capabilities: &'a [String],
    pub dependencies: &'a [String],
    pub max_attempts: u32,
}

/// `dependencies` maps each named dependency to its current state.
///
/// Dependencies are fixed at creation and must already exist, so the only
/// cycle a new task can close is one through itself: a task created later
/// can never become a dependency of an earlier one.
pub fn create(state: &Task, new: NewTask<'_>, dependencies: &BTreeMap<String, Task>) -> Decision {
    if state.exists() {
        return Err(Rejection::new(Code::AlreadyExists, format!("task {} already exists", new.task_id)).into());
    }
    if new.dependencies.iter().any(|d| d == new.task_id) {
        return Err(
            Rejection::new(Code::DependencyCycle, format!("task {} cannot depend on itself", new.task_id)).into()
        );
    }
    let unknown: Vec<&str> = new
        .dependencies
        .iter()
        .filter(|d| !dependencies.get(*d).is_some_and(Task::exists))
        .map(String::as_str)
        .collect();
    if !unknown.is_empty() {
        return Err(Rejection::new(
            Code::UnknownDependency,
            format!(
                "task {} depends on tasks that do not exist: {}; create them first",
                new.task_id,
                unknown.join(", ")
            ),
        )
        .into());
    }
    Ok(vec![Body::TaskCreated(TaskCreated {
        task_id: new.task_id.to_owned(),
        title: new.title.to_owned(),
        priority: new.priority,
        required_capabilities: canonical(new.required_capabilities),
        dependencies: canonical(new.dependencies),
        max_attempts: new.max_attempts,
    })])
}

pub struct Claim<'a> {
    pub task_id: &'a str,
    pub agent_id: &'a str,
    pub session_id: &'a str,
    pub lease_ms: u64,
}

fn check_claimable(state: &Task, task_id: &str) -> Result<(), Rejection> {
    match &state.status {
        Status::Unknown => Err(not_found(task_id)),
        Status::Open => Ok(()),
        Status::Claimed { agent_id, .. } => {
            Err(Rejection::new(Code::AlreadyClaimed, format!("task {task_id} is already claimed by {agent_id}")))
        }
        Status::Completed => {
            Err(Rejection::new(Code::AlreadyCompleted, format!("task {task_id} is already completed")))
        }
        Status::Failed => Err(Rejection::new(
            Code::TaskFailed,
            format!("task {task_id} failed {} times and stays failed", state.failures),
        )),
    }
}

pub fn claim(
    state: &Task,
    claim: Claim<'_>,
    dependencies: &BTreeMap<String, Task>,
    session: &Session,
    agent: &Agent,
    now: Timestamp,
) -> Decision {
    check_claimable(state, claim.task_id)?;
    let pending: Vec<&str> = state
        .dependencies
        .iter()
        .filter(|d| dependencies.get(*d).is_none_or(|t| t.status != Status::Completed))
        .map(String::as_str)
        .collect();
    if !pending.is_empty() {
        return Err(Rejection::new(
            Code::DependenciesIncomplete,
            format!("task {} waits for {} to complete", claim.task_id, pending.join(", ")),
        )
        .into());
    }
    session.check_live_for(claim.session_id, claim.agent_id, now)?;
    if !agent.registered {
        return Err(Rejection::new(Code::UnknownAgent, format!("agent {} is not registered", claim.agent_id)).into());
    }
    let missing = agent.missing(&state.required_capabilities);
    if !missing.is_empty() {
        return Err(Rejection::new(
            Code::MissingCapabilities,
            format!("agent {} lacks {} for task {}", claim.agent_id, missing.join(", "), claim.task_id),
        )
        .into());
    }
    Ok(vec![Body::TaskClaimed(TaskClaimed {
        task_id: claim.task_id.to_owned(),
        agent_id: claim.agent_id.to_owned(),
        session_id: claim.session_id.to_owned(),
        attempt: state.attempts + 1,
        lease_until_ts: now.as_nanos().saturating_add(ms_to_nanos(claim.lease_ms)),
    })])
}

/// How the holder ends its claim.
pub enum Finish<'a> {
    Release { reason: &'a str },
    Complete { result: &'a str },
    Fail { reason: &'a str },
}

pub fn finish(
    state: &Task,
    task_id: &str,
    agent_id: &str,
    session_id: &str,
    how: Finish<'_>,
    now: Timestamp,
) -> Decision {
    let Status::Claimed { agent_id: holder, session_id: holder_session, lease_until_ts } = &state.status else {
        return Err(match state.status {
            Status::Unknown => not_found(task_id),
            Status::Completed => Rejection::new(Code::AlreadyCompleted, format!("task {task_id} is already completed")),
            Status::Failed => {
                Rejection::new(Code::TaskFailed, format!("task {task_id} failed for good; it has no claim to end"))
            }
            _ => Rejection::new(Code::NotClaimed, format!("task {task_id} is not claimed; claim it first")),
        }
        .into());
    };
    if holder != agent_id || holder_session != session_id {
        return Err(Rejection::new(
            Code::NotHolder,
            format!(
                "task {task_id} is held by {holder} in session {holder_session}, not by {agent_id} in {session_id}"
            ),
        )
        .into());
    }
    if now.as_nanos() > *lease_until_ts {
        return Err(Rejection::new(
            Code::LeaseExpired,
            format!(
                "the lease on task {task_id} ran out at {}; claim it again",
                Timestamp::from_nanos(*lease_until_ts)
            ),
        )
        .into());
    }
    let (task_id, agent_id, session_id) = (task_id.to_owned(), agent_id.to_owned(), session_id.to_owned());
    Ok(vec![match how {
        Finish::Release { reason } => {
            Body::TaskReleased(TaskReleased { task_id, agent_id, session_id, reason: reason.to_owned() })
        }
        Finish::Complete { result } => {
            Body::TaskCompleted(TaskCompleted { task_id, agent_id, session_id, result: result.to_owned() })
        }
        Finish::Fail { reason } => Body::TaskFailed(TaskFailed {
            task_id,
            agent_id,
            session_id,
            reason: reason.to_owned(),
            attempt: state.attempts,
            terminal: state.failures + 1 >= state.max_attempts,
        }),
    }])
}

/// Ends a claim whose lease ran out, or whose holder's session is no longer
/// live (`holder_live`: closed, expired, or past its heartbeat deadline): a
/// lease never outlives the session it was taken in.
pub fn expire_lease(state: &Task, task_id: &str, holder_live: bool, now: Timestamp) -> Decision {
    match &state.status {
        Status::Claimed { agent_id, session_id, lease_until_ts }
            if now.as_nanos() > *lease_until_ts || !holder_live =>
        {
            Ok(vec![Body::TaskLeaseExpired(TaskLeaseExpired {
                task_id: task_id.to_owned(),
                agent_id: agent_id.clone(),
                session_id: session_id.clone(),
                lease_until_ts: *lease_until_ts,
            })])
        }
        Status::Claimed { lease_until_ts, session_id, .. } => Err(Rejection::new(
            Code::LeaseActive,
            format!(
                "the lease on task {task_id} runs until {} and its session {session_id} is live",
                Timestamp::from_nanos(*lease_until_ts)
            ),
        )
        .into()),
        Status::Unknown => Err(not_found(task_id).into()),
        _ => Err(Rejection::new(Code::NotClaimed, format!("task {task_id} is not claimed")).into()),
    }
}
