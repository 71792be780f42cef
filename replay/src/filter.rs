//! [`Filter`]: which events a timeline shows, and [`events`], which reads
//! them from a [`History`] in seq order. Every field narrows: an entity
//! (the events on its stream and the events whose body names it), a
//! correlation id, a causation chain (an event and everything it caused,
//! transitively), an event type, an actor, a seq range and a time range.
use std::collections::HashSet;
use std::ops::ControlFlow;

use agentlog_core::schema::TYPE_NAMES;
use agentlog_core::{Envelope, EventSource, SessionId, Timestamp};

use crate::error::{Error, Result};
use crate::source::History;

#[derive(Clone, Debug, Default)]
pub struct Filter {
    pub task: Option<String>,
    pub agent: Option<String>,
    pub session: Option<String>,
    pub budget: Option<String>,
    /// A correlation id (UUID bytes).
    pub correlation: Option<Vec<u8>>,
    /// An event id (UUID bytes): that event and every event it caused,
    /// directly or through others.
    pub caused_by: Option<Vec<u8>>,
    pub event_type: Option<String>,
    pub actor: Option<String>,
    pub from_seq: Option<u64>,
    pub to_seq: Option<u64>,
    /// Events at or after this time.
    pub since: Option<Timestamp>,
    /// Events at or before this time.
    pub until: Option<Timestamp>,
}

/// Parses an event or correlation id as `agentlog tail --json` prints it.
pub fn parse_id(what: &'static str, text: &str) -> Result<Vec<u8>> {
    uuid::Uuid::parse_str(text).map(|id| id.as_bytes().to_vec()).map_err(|e| Error::BadInput {
        what,
        text: text.to_owned(),
        reason: e.to_string(),
    })
}

/// Checks an event type against the types this build knows.
pub fn parse_type(text: &str) -> Result<String> {
    if TYPE_NAMES.contains(&text) {
        Ok(text.to_owned())
    } else {
        Err(Error::BadInput {
            what: "event type",
            text: text.to_owned(),
            reason: format!("known types: {}", TYPE_NAMES.join(", ")),
        })
    }
}

impl Filter {
    /// `session_bytes`: the session filter's id as envelopes carry it,
    /// parsed once per read, not per event.
    fn names_entity(&self, event: &Envelope, session_bytes: Option<&[u8]>) -> bool {
        let refs = event.body.as_ref().map(|b| b.refs()).unwrap_or_default();
        let on_stream =
            |kind: &str, id: &str| event.stream.strip_prefix(kind).and_then(|s| s.strip_prefix('/')) == Some(id);
        self.task.as_deref().is_none_or(|id| on_stream("task", id) || refs.task_id == id)
            && self.agent.as_deref().is_none_or(|id| on_stream("agent", id) || refs.agent_id == id)
            && self.session.as_deref().is_none_or(|id| {
                on_stream("session", id)
                    || refs.session_id == id
                    || session_bytes.is_some_and(|s| *s == event.session_id[..])
            })
            && self.budget.as_deref().is_none_or(|id| on_stream("budget", id))
    }

    fn in_ranges(&self, event: &Envelope) -> bool {
        self.from_seq.is_none_or(|s| event.seq >= s)
            && self.to_seq.is_none_or(|s| event.seq <= s)
            && self.since.is_none_or(|t| event.ts >= t.as_nanos())
            && self.until.is_none_or(|t| event.ts <= t.as_nanos())
    }

    fn plain_match(&self, event: &Envelope, session_bytes: Option<&[u8]>) -> bool {
        self.in_ranges(event)
            && self.names_entity(event, session_bytes)
            && self.correlation.as_deref().is_none_or(|c| event.correlation_id == c)
            && self.event_type.as_deref().is_none_or(|t| event.body.as_ref().is_some_and(|b| b.type_name() == t))
            && self.actor.as_deref().is_none_or(|a| event.actor == a)
    }
}

/// Calls `f` with every event of `history` that `filter` lets through, in
/// seq order, until it returns `false`; returns how many it was given.
pub fn events(history: &History, filter: &Filter, f: &mut dyn FnMut(&Envelope) -> bool) -> Result<u64> {
    let head = history.head()?.last_seq;
    // A causation chain is followed from the first event kept, through
    // events the seq range then leaves out.
    let from = match filter.caused_by {
        Some(_) => history.first_seq(),
        None => filter.from_seq.unwrap_or(1).max(history.first_seq()),
    };
    let to = filter.to_seq.unwrap_or(head).min(head);
    // The causation chain grows as the events it caused go by (an effect
    // always comes after its cause).
    let mut chain: HashSet<Vec<u8>> = HashSet::new();
    let session_bytes =
        filter.session.as_deref().and_then(|id| id.parse::<SessionId>().ok()).map(|s| s.as_bytes().to_vec());
    let mut matched = 0;
    history.pages(from, to, &mut |page| {
        for event in &page {
            if let Some(root) = &filter.caused_by {
                let in_chain = event.event_id == *root || chain.contains(&event.causation_id[..]);
                if !in_chain {
                    continue;
                }
                chain.insert(event.event_id.to_vec());
            }
            if filter.plain_match(event, session_bytes.as_deref()) {
                matched += 1;
                if !f(event) {
                    return Ok(ControlFlow::Break(()));
                }
            }
        }
        Ok(ControlFlow::Continue(()))
    })?;
    Ok(matched)
}
