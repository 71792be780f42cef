//! Sessions: opened by an agent, kept alive by heartbeats, closed by the
//! agent or expired by the ticker.
use agentlog_core::schema::{SessionClosed, SessionExpired, SessionHeartbeat, SessionOpened};
use agentlog_core::{Body, Envelope, Timestamp};

use super::{Agent, Decision, ms_to_nanos};
use crate::rejection::{Code, Rejection};

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    #[default]
    Unknown,
    Open,
    Closed,
    Expired,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Session {
    pub status: Status,
    pub agent_id: String,
    pub heartbeat_timeout_ms: u64,
    /// Event time of the last heartbeat, or of the opening.
    pub last_heartbeat_ts: u64,
}

impl Session {
    pub fn apply(&mut self, event: &Envelope) {
        match &event.body {
            Some(Body::SessionOpened(e)) => {
                self.status = Status::Open;
                self.agent_id.clone_from(&e.agent_id);
                self.heartbeat_timeout_ms = e.heartbeat_timeout_ms;
                self.last_heartbeat_ts = event.ts;
            }
            Some(Body::SessionHeartbeat(_)) => self.last_heartbeat_ts = event.ts,
            Some(Body::SessionClosed(_)) => self.status = Status::Closed,
            Some(Body::SessionExpired(_)) => self.status = Status::Expired,
            _ => {}
        }
    }

    /// The instant after which a session without a heartbeat is dead.
    pub fn deadline(&self) -> Timestamp {
        Timestamp::from_nanos(self.last_heartbeat_ts.saturating_add(ms_to_nanos(self.heartbeat_timeout_ms)))
    }

    pub fn is_live(&self, now: Timestamp) -> bool {
        self.status == Status::Open && now <= self.deadline()
    }

    /// Refuses unless the session is live and belongs to `agent_id`.
    pub fn check_live_for(&self, session_id: &str, agent_id: &str, now: Timestamp) -> Result<(), Rejection> {
        if !self.is_live(now) {
            return Err(Rejection::new(
                Code::SessionNotLive,
                format!("session {session_id} is not live ({:?}); open a new session", self.status),
            ));
        }
        if self.agent_id != agent_id {
            return Err(Rejection::new(
                Code::SessionMismatch,
                format!("session {session_id} belongs to agent {}, not {agent_id}", self.agent_id),
            ));
        }
        Ok(())
    }
}

fn not_found(session_id: &str) -> Rejection {
    Rejection::new(Code::NotFound, format!("no session {session_id}; open one with open_session"))
}

pub fn open(state: &Session, session_id: &str, agent_id: &str, heartbeat_timeout_ms: u64, agent: &Agent) -> Decision {
    if state.status != Status::Unknown {
        return Err(Rejection::new(Code::AlreadyExists, format!("session {session_id} already exists")).into());
    }
    if !agent.registered {
        return Err(Rejection::new(
            Code::UnknownAgent,
            format!("agent {agent_id} is not registered; send register_agent first"),
        )
        .into());
    }
    Ok(vec![Body::SessionOpened(SessionOpened {
        session_id: session_id.to_owned(),
        agent_id: agent_id.to_owned(),
        heartbeat_timeout_ms,
    })])
}

pub fn heartbeat(state: &Session, session_id: &str, now: Timestamp) -> Decision {
    match state.status {
        Status::Unknown => Err(not_found(session_id).into()),
        Status::Open if now <= state.deadline() => {
            Ok(vec![Body::SessionHeartbeat(SessionHeartbeat { session_id: session_id.to_owned() })])
        }
        _ => Err(Rejection::new(
            Code::SessionNotLive,
            format!("session {session_id} is no longer live (last heartbeat missed the deadline or it ended); open a new session"),
        )
        .into()),
    }
}

pub fn close(state: &Session, session_id: &str, reason: &str) -> Decision {
    match state.status {
        Status::Unknown => Err(not_found(session_id).into()),
        Status::Open => Ok(vec![Body::SessionClosed(SessionClosed {
            session_id: session_id.to_owned(),
            reason: reason.to_owned(),
        })]),
        Status::Closed | Status::Expired => {
            Err(Rejection::new(Code::SessionNotLive, format!("session {session_id} has already ended")).into())
        }
    }
}

pub fn expire(state: &Session, session_id: &str, now: Timestamp) -> Decision {
    match state.status {
        Status::Unknown => Err(not_found(session_id).into()),
        Status::Open if now > state.deadline() => Ok(vec![Body::SessionExpired(SessionExpired {
            session_id: session_id.to_owned(),
            last_heartbeat_ts: state.last_heartbeat_ts,
            deadline_ts: state.deadline().as_nanos(),
        })]),
        Status::Open => {
            Err(Rejection::new(Code::SessionLive, format!("session {session_id} is live until {}", state.deadline()))
                .into())
        }
        Status::Closed | Status::Expired => {
            Err(Rejection::new(Code::SessionNotLive, format!("session {session_id} has already ended")).into())
        }
    }
}
