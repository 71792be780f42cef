//! Deciding a turn's group: the commands one node has waiting on one
//! aggregate, decided in the order they came, each on the state the ones
//! before it leave, and appended together — a group of one as a plain
//! append, a larger one as one atomic group append ([`Log::append_group`])
//! in which each command keeps its own idempotency key, nonce and result.
//!
//! A group is cut short, and the rest decided after its append, where a
//! command cannot safely be decided on the group's state so far: a refusal
//! (or a policy's denial, or a failure) on state that includes commands
//! not yet appended, a key or nonce an earlier member carries, a
//! revocation (its seq is part of the state), or the append's event
//! limit. An append that lost a race to another writer is decided again,
//! whole, on state caught up with the log, after the same jittered waits
//! as before; and the stream's next [`SOLO_AFTER_RACE`] commands go one at
//! a time, since a lost group wastes a whole batch.
use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use agentlog_core::api::MAX_APPEND_EVENTS;
use agentlog_core::{
    AppendRequest, Appended, Envelope, Error as LogError, ExpectedVersion, GroupRequest, Log, Part, Timestamp,
};

use super::{Accepted, Handler, Loaded, Prepared, Request, backoff, opened_session, run_result};
use crate::aggregate::{Refused, State};
use crate::auth::verification::{self, Verification};
use crate::command::Command;
use crate::rejection::{Code, Rejection, Result};
use crate::turns::{Abandon, Ticket};

/// A command ready to be decided: authenticated, its run (if any) made.
pub(super) struct Member {
    pub request: Request,
    pub command: Command,
    pub stream: String,
    pub nonce: Option<String>,
    /// A signed request's signature, checked before it gets anything.
    pub signature: Option<Verification>,
    pub prepared: Option<Prepared>,
}

/// How a member's turn ended; its own task finishes from here.
pub(super) enum Outcome {
    /// Refused, or failed, with nothing appended.
    Done(Result<Accepted>),
    /// Its idempotency key (or nonce) had been recorded: the first result.
    Seen(Appended),
    /// Appended: accepted, or a refusal that is recorded.
    Appended { result: Result<Accepted>, events: Vec<Envelope>, first_seq: u64 },
}

impl Abandon for Outcome {
    fn abandoned() -> Self {
        Outcome::Done(Err(Rejection::new(
            Code::Unavailable,
            "the node stopped deciding this command midway (its caller went away); it may or may not be appended: send it again with its idempotency key",
        )))
    }
}

type Taken = Arc<Ticket<Arc<Member>, Outcome>>;

/// Commands on a stream that go one at a time after a race lost on it.
const SOLO_AFTER_RACE: u32 = 256;

/// A member decided for the group's append.
struct Decided {
    ticket: Taken,
    events: Vec<Envelope>,
    refusal: Option<Rejection>,
}

/// What deciding one member gave.
enum Step {
    /// Its key (or nonce) had been recorded.
    Seen(Appended),
    /// Refused with nothing to record, on the group's state.
    Refused(Rejection),
    Append(Vec<Envelope>, Option<Rejection>),
}

impl<L: Log> Handler<L> {
    /// Decides `group` (the turn holder's own member first) and answers
    /// each member.
    pub(super) async fn decide_group(&self, stream: &str, group: Vec<Taken>) {
        let mut pending: VecDeque<Taken> = group.into();
        let mut fresh = false;
        let mut reloaded: Option<Loaded> = None;
        let mut attempt = 0;
        // Where another writer (another node) is racing this one on the
        // aggregate, commands go one at a time: a lost group wastes a whole
        // batch, a lost command one publish.
        let mut most_parts = if self.contended(stream, 0) { 1 } else { super::MAX_GROUP };
        while !pending.is_empty() {
            if attempt > self.max_retries {
                tracing::warn!(message = "retries exhausted", stream = %stream, attempts = self.max_retries + 1);
                let exhausted = Rejection::new(
                    Code::RetriesExhausted,
                    format!("{stream} kept changing under {} attempts; send the command again", self.max_retries + 1),
                );
                return fail(pending.drain(..), &exhausted);
            }
            let loaded = match reloaded.take() {
                Some(loaded) => loaded,
                None => match self.load_as(stream, fresh).await {
                    Ok(loaded) => loaded,
                    Err(rejection) => return fail(pending.drain(..), &rejection),
                },
            };
            // Decide members in order on the state the ones before leave.
            let mut state = loaded.state.clone();
            let mut last_ts = loaded.last_ts;
            let mut parts: Vec<Decided> = Vec::new();
            let mut events_in_parts = 0;
            let mut keys: Vec<String> = Vec::new();
            let mut known_fresh = fresh;
            while let Some(ticket) = pending.front().cloned() {
                let member = &ticket.member;
                let member_keys: Vec<String> = member
                    .request
                    .idempotency_key
                    .iter()
                    .cloned()
                    .chain(member.nonce.as_deref().map(agentlog_core::api::nonce_key))
                    .collect();
                if !parts.is_empty() && (parts.len() >= most_parts || member_keys.iter().any(|k| keys.contains(k))) {
                    break;
                }
                // Time never goes backwards on a stream, even when another
                // node's clock wrote its last event ahead of this one's.
                let now = self.clock.now().max(Timestamp::from_nanos(last_ts));
                let step = match self.decide_member(member, stream, &state, now).await {
                    Ok(step) => step,
                    // A policy's denial (or a failure) on state the group
                    // changed is decided again after the group's append.
                    Err(_) if !parts.is_empty() => break,
                    Err(rejection) => {
                        pending.pop_front();
                        ticket.resolve(Outcome::Done(Err(rejection)));
                        continue;
                    }
                };
                match step {
                    Step::Seen(first) => {
                        pending.pop_front();
                        ticket.resolve(Outcome::Seen(first));
                    }
                    // A refusal on state the group changed (not yet
                    // appended) is decided again after the group's append.
                    Step::Refused(_) if !parts.is_empty() => break,
                    Step::Refused(rejection) if known_fresh => {
                        pending.pop_front();
                        ticket.resolve(Outcome::Done(Err(rejection)));
                    }
                    Step::Refused(rejection) => {
                        let current = match self.load_as(stream, true).await {
                            Ok(current) => current,
                            Err(e) => return fail(pending.drain(..), &e),
                        };
                        if current.version == loaded.version {
                            known_fresh = true;
                            pending.pop_front();
                            ticket.resolve(Outcome::Done(Err(rejection)));
                            continue;
                        }
                        // The state was behind: decide again on the new one.
                        (fresh, reloaded) = (true, Some(current));
                        break;
                    }
                    Step::Append(mut events, refusal) => {
                        if !parts.is_empty() && events_in_parts + events.len() > MAX_APPEND_EVENTS {
                            break;
                        }
                        pending.pop_front();
                        if let (Some(first), Some(nonce)) = (events.first_mut(), &member.nonce) {
                            first.nonce.clone_from(nonce);
                        }
                        for (i, event) in events.iter_mut().enumerate() {
                            event.stream_version = loaded.version + (events_in_parts + i + 1) as u64;
                            state.apply(event);
                            last_ts = last_ts.max(event.ts);
                        }
                        events_in_parts += events.len();
                        keys.extend(member_keys);
                        // A revocation's seq is part of its state: known
                        // only once appended.
                        let ends = matches!(member.command, Command::RevokePrincipal(_));
                        parts.push(Decided { ticket, events, refusal });
                        if ends {
                            break;
                        }
                    }
                }
            }
            if reloaded.is_some() || parts.is_empty() {
                continue;
            }
            match self.append_parts(stream, loaded.version, &parts).await {
                Ok(results) => {
                    if most_parts == 1 {
                        self.contended(stream, 1);
                    }
                    self.answer(stream, loaded, parts, results);
                    (fresh, attempt) = (false, 0);
                }
                Err(LogError::Conflict { expected, actual, .. }) => {
                    tracing::debug!(message = "conflict: deciding again", stream = %stream, %expected, actual, attempt);
                    self.lost_race(stream, &mut pending, parts, &mut attempt).await;
                    (fresh, most_parts) = (true, 1);
                }
                Err(LogError::KeyUsed { key, .. }) => {
                    tracing::debug!(message = "a key in the group was used meanwhile: deciding again", stream = %stream, key = %key, attempt);
                    self.lost_race(stream, &mut pending, parts, &mut attempt).await;
                    (fresh, most_parts) = (true, 1);
                }
                Err(other) => fail(parts.into_iter().map(|p| p.ticket), &other.into()),
            }
        }
    }

    /// One member on the group's state: its nonce and key checked again
    /// (on a log whose reads catch up per stream, the key's first append
    /// may only be seen now), its policy asked, then decided. Its signature
    /// is checked while the decision waits on its reads of other
    /// aggregates, and before the member gets any of it.
    async fn decide_member(&self, member: &Member, stream: &str, state: &State, now: Timestamp) -> Result<Step> {
        let signature = member.signature.as_ref();
        if let Some(nonce) = &member.nonce {
            self.refuse_seen_nonce(nonce).await.map_err(|r| verification::before(signature, r))?;
        }
        if let Some(key) = &member.request.idempotency_key
            && let Some(first) =
                self.log.idempotent_result(key).await.map_err(|e| verification::before(signature, e.into()))?
        {
            verification::check(signature)?;
            return Ok(Step::Seen(first));
        }
        // The signature is checked while the decision's reads of other
        // aggregates are on the network, or after it when it has none;
        // before the policy is asked.
        let decision = self.decide(&member.command, state, now, member.prepared.as_ref());
        let (decision, verified) = match signature {
            None => (decision.await, Ok(())),
            Some(signature) => signature.while_waiting(decision).await,
        };
        verified?;
        // The policy bound to this command type, if any, is asked before
        // the decision counts, on the state it was made on.
        self.police(&member.request, &member.command, stream, state, now).await?;
        Ok(match decision? {
            Ok(bodies) => Step::Append(self.envelopes(&member.request, &member.command, bodies, now), None),
            Err(Refused { rejection, record }) if record.is_empty() => Step::Refused(rejection),
            // A recorded refusal keeps the key too: repeating the key gives
            // the same refusal, not a second record of it.
            Err(Refused { rejection, record }) => {
                Step::Append(self.envelopes(&member.request, &member.command, record, now), Some(rejection))
            }
        })
    }

    /// One part: a plain append; more: one group append.
    async fn append_parts(
        &self,
        stream: &str,
        version: u64,
        parts: &[Decided],
    ) -> agentlog_core::Result<Vec<Appended>> {
        let key = |decided: &Decided| decided.ticket.member.request.idempotency_key.clone();
        if let [one] = parts {
            let append = AppendRequest {
                stream: stream.to_owned(),
                expected: ExpectedVersion::Exact(version),
                events: one.events.clone(),
                idempotency_key: key(one),
            };
            return Ok(vec![self.log.append(append).await?]);
        }
        let group = GroupRequest {
            stream: stream.to_owned(),
            expected: ExpectedVersion::Exact(version),
            parts: parts.iter().map(|p| Part { events: p.events.clone(), idempotency_key: key(p) }).collect(),
        };
        self.log.append_group(group).await
    }

    /// Answers each appended member, and keeps what the group appended.
    fn answer(&self, stream: &str, loaded: Loaded, parts: Vec<Decided>, results: Vec<Appended>) {
        let commands = parts.len();
        let mut appended_events = Vec::new();
        let mut last: Option<Appended> = None;
        for (Decided { ticket, mut events, refusal }, appended) in parts.into_iter().zip(results) {
            if appended.duplicate {
                // A lone append whose key won a race with it: the key's
                // result stands (this attempt wrote nothing); or its nonce
                // did: a replay of it.
                ticket.resolve(Outcome::Seen(appended));
                continue;
            }
            // As the log stamped them, so what is folded from them (a
            // revocation's seq, say) is what a reload would give.
            for (event, seq) in events.iter_mut().zip(appended.first_seq..) {
                event.seq = seq;
                event.stream_version = appended.stream_version - (appended.last_seq - seq);
            }
            let member = &ticket.member;
            let result = match refusal {
                Some(rejection) => Err(rejection),
                None => Ok(Accepted {
                    command: member.command.name().to_owned(),
                    stream: stream.to_owned(),
                    first_seq: appended.first_seq,
                    last_seq: appended.last_seq,
                    stream_version: appended.stream_version,
                    duplicate: false,
                    session_id: opened_session(&member.command),
                    run: run_result(&events),
                    events: events.iter().filter_map(|e| e.body.as_ref().map(|b| b.type_name().to_owned())).collect(),
                }),
            };
            appended_events.extend(events.iter().cloned());
            last = Some(match last {
                Some(before) => {
                    Appended { last_seq: appended.last_seq, stream_version: appended.stream_version, ..before }
                }
                None => appended,
            });
            ticket.resolve(Outcome::Appended { result, events, first_seq: appended.first_seq });
        }
        let Some(all) = last else { return };
        self.remember(stream, loaded.version, loaded.state, &appended_events, &all);
        #[cfg(feature = "nats")]
        metrics::histogram!(super::METRIC_GROUP_COMMANDS).record(commands as f64);
        #[cfg(not(feature = "nats"))]
        let _ = commands;
    }

    /// An append lost a race to another writer: its members go back to the
    /// front of the queue, to be decided again after a jittered wait.
    async fn lost_race(&self, stream: &str, pending: &mut VecDeque<Taken>, parts: Vec<Decided>, attempt: &mut u32) {
        self.races_lost.fetch_add(1, Ordering::Relaxed);
        #[cfg(feature = "nats")]
        metrics::counter!(super::METRIC_RACES_LOST).increment(1);
        {
            let mut contended = self.contended.lock().unwrap_or_else(|p| p.into_inner());
            if contended.len() >= super::CACHE_ENTRIES && !contended.contains_key(stream) {
                contended.clear();
            }
            contended.insert(stream.to_owned(), SOLO_AFTER_RACE);
        }
        for part in parts.into_iter().rev() {
            pending.push_front(part.ticket);
        }
        *attempt += 1;
        // Writers that keep colliding on one aggregate fall out of step:
        // each waits a random part of a growing bound.
        let wait = backoff(*attempt, self.ids.next_u128());
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
    }
}

impl<L: Log> Handler<L> {
    /// Whether `stream` was raced on lately; counts `appended` commands
    /// off what goes one at a time, forgetting the stream at zero.
    fn contended(&self, stream: &str, appended: u32) -> bool {
        let mut contended = self.contended.lock().unwrap_or_else(|p| p.into_inner());
        let Some(left) = contended.get_mut(stream) else { return false };
        *left = left.saturating_sub(appended);
        if *left == 0 {
            contended.remove(stream);
            return false;
        }
        true
    }
}

/// Answers every one of `tickets` with `rejection` (a forgery among them
/// with `bad_signature`).
fn fail(tickets: impl Iterator<Item = Taken>, rejection: &Rejection) {
    for ticket in tickets {
        let rejection = verification::before(ticket.member.signature.as_ref(), rejection.clone());
        ticket.resolve(Outcome::Done(Err(rejection)));
    }
}
