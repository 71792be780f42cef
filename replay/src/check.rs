//! `replay check`: every invariant over the whole history. For each one
//! broken: the first event that breaks it, and the minimal set of earlier
//! events that witness it (docs/REPLAY.md defines each set). The checker
//! keeps its own small fold (who holds each task, each session's life,
//! each budget's credits and debits, each stream's last version and time),
//! independent of the views, so a bug in a view's fold cannot hide a break.
use std::collections::HashMap as StdHashMap;

use agentlog_core::schema::Body;
use agentlog_core::{Envelope, Error as LogError, EventSource};

use crate::error::{Error, Result};
use crate::source::History;

/// The checker's maps: a fixed-seed fast hash (nothing is iterated, and
/// SipHash was a fifth of a check's time).
type HashMap<K, V> = StdHashMap<K, V, foldhash::fast::FixedState>;

/// The invariants, in the order they are reported.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Invariant {
    /// Seqs follow one another and each event chains from the one before.
    SeqsAndChain,
    /// Each stream's versions follow one another.
    StreamVersions,
    /// On each stream, no event's time is before the one before it.
    StreamTime,
    /// A task has at most one holder at a time.
    OneHolder,
    /// A claim is made in a live session of the claiming agent.
    ClaimInLiveSession,
    /// A task is released, completed or failed only by its holder (agent
    /// and session) within its lease.
    FinishByHolder,
    /// A lease expires only after its deadline, or once its holder's
    /// session is no longer live.
    LeaseExpiry,
    /// A session expires only after its heartbeat deadline.
    SessionExpiry,
    /// No event is sent in a session after it closed or expired.
    NothingAfterSessionEnd,
    /// A budget's balance is never negative.
    BudgetNonNegative,
    /// The balance an event states is allocations − debits + refunds so far.
    BudgetArithmetic,
}

impl Invariant {
    pub const ALL: [Invariant; 11] = [
        Invariant::SeqsAndChain,
        Invariant::StreamVersions,
        Invariant::StreamTime,
        Invariant::OneHolder,
        Invariant::ClaimInLiveSession,
        Invariant::FinishByHolder,
        Invariant::LeaseExpiry,
        Invariant::SessionExpiry,
        Invariant::NothingAfterSessionEnd,
        Invariant::BudgetNonNegative,
        Invariant::BudgetArithmetic,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Invariant::SeqsAndChain => "seqs_and_chain",
            Invariant::StreamVersions => "stream_versions",
            Invariant::StreamTime => "stream_time",
            Invariant::OneHolder => "one_holder",
            Invariant::ClaimInLiveSession => "claim_in_live_session",
            Invariant::FinishByHolder => "finish_by_holder",
            Invariant::LeaseExpiry => "lease_expiry",
            Invariant::SessionExpiry => "session_expiry",
            Invariant::NothingAfterSessionEnd => "nothing_after_session_end",
            Invariant::BudgetNonNegative => "budget_non_negative",
            Invariant::BudgetArithmetic => "budget_arithmetic",
        }
    }
}

/// The first event that breaks an invariant.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Break {
    pub invariant: Invariant,
    pub seq: u64,
    pub detail: String,
    /// The events that witness it, in seq order, `seq` last.
    pub witness: Vec<u64>,
}

/// What a check found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Report {
    /// Events checked.
    pub events: u64,
    /// The first break of each broken invariant, in [`Invariant::ALL`] order.
    pub breaks: Vec<Break>,
}

impl Report {
    pub fn holds(&self, invariant: Invariant) -> bool {
        !self.breaks.iter().any(|b| b.invariant == invariant)
    }
}

struct Claim {
    seq: u64,
    agent_id: String,
    session_id: String,
    lease_until_ts: u64,
}

#[derive(Default)]
struct TaskState {
    /// Boxed: most tasks are not held at any one time, and a history has
    /// many tasks.
    holder: Option<Box<Claim>>,
    /// The event that last ended a claim.
    ended_seq: Option<u64>,
}

struct SessionState {
    opened_seq: u64,
    agent_id: String,
    timeout_ns: u64,
    last_beat_seq: u64,
    last_beat_ts: u64,
    ended_seq: Option<u64>,
}

impl SessionState {
    fn deadline(&self) -> u64 {
        self.last_beat_ts.saturating_add(self.timeout_ns)
    }

    /// Live at `ts`: not ended and within its heartbeat deadline.
    fn live_at(&self, ts: u64) -> bool {
        self.ended_seq.is_none() && ts <= self.deadline()
    }
}

#[derive(Default)]
struct BudgetState {
    balance: i128,
    /// Allocations and refunds: (seq, amount).
    credits: Vec<(u64, u64)>,
    /// Debits: (seq, amount).
    debits: Vec<(u64, u64)>,
}

struct StreamState {
    version: u64,
    ts: u64,
    seq: u64,
}

#[derive(Default)]
struct Checker {
    tasks: HashMap<String, TaskState>,
    sessions: HashMap<String, SessionState>,
    /// Sessions that ended, by id bytes (as envelopes name them): where.
    ended: HashMap<[u8; 16], u64>,
    budgets: HashMap<String, BudgetState>,
    streams: HashMap<String, StreamState>,
    first: HashMap<Invariant, Break>,
}

/// Tasks and streams the checker's maps are sized for at most before it
/// starts.
const MAX_PRESIZED: usize = 1 << 21;

fn witness(seqs: impl IntoIterator<Item = Option<u64>>, seq: u64) -> Vec<u64> {
    let mut all: Vec<u64> = seqs.into_iter().flatten().filter(|s| *s < seq).collect();
    all.sort_unstable();
    all.dedup();
    all.push(seq);
    all
}

fn task_entry<'a>(tasks: &'a mut HashMap<String, TaskState>, id: &str) -> &'a mut TaskState {
    if !tasks.contains_key(id) {
        tasks.insert(id.to_owned(), TaskState::default());
    }
    tasks.get_mut(id).expect("just inserted")
}

fn budget_entry<'a>(budgets: &'a mut HashMap<String, BudgetState>, id: &str) -> &'a mut BudgetState {
    if !budgets.contains_key(id) {
        budgets.insert(id.to_owned(), BudgetState::default());
    }
    budgets.get_mut(id).expect("just inserted")
}

impl Checker {
    fn broken(&mut self, invariant: Invariant, seq: u64, detail: String, witness: Vec<u64>) {
        self.first.entry(invariant).or_insert(Break { invariant, seq, detail, witness });
    }

    fn event(&mut self, event: &Envelope) {
        let seq = event.seq;
        self.stream(event);
        if let Ok(session) = <[u8; 16]>::try_from(&event.session_id[..])
            && let Some(ended) = self.ended.get(&session).copied()
        {
            let session = uuid::Uuid::from_bytes(session).hyphenated();
            let detail = format!("sent in session {session}, which ended at seq {ended}");
            self.broken(Invariant::NothingAfterSessionEnd, seq, detail, witness([Some(ended)], seq));
        }
        let Some(body) = &event.body else { return };
        match body {
            Body::SessionOpened(b) => {
                self.sessions.insert(
                    b.session_id.clone(),
                    SessionState {
                        opened_seq: seq,
                        agent_id: b.agent_id.clone(),
                        timeout_ns: b.heartbeat_timeout_ms.saturating_mul(1_000_000),
                        last_beat_seq: seq,
                        last_beat_ts: event.ts,
                        ended_seq: None,
                    },
                );
            }
            Body::SessionHeartbeat(b) => {
                if let Some(s) = self.sessions.get_mut(&b.session_id) {
                    (s.last_beat_seq, s.last_beat_ts) = (seq, event.ts);
                }
            }
            Body::SessionClosed(b) => {
                if let Some(s) = self.sessions.get_mut(&b.session_id) {
                    s.ended_seq.get_or_insert(seq);
                }
                self.end(&b.session_id, seq);
            }
            Body::SessionExpired(b) => {
                self.session_expired(event, &b.session_id);
                self.end(&b.session_id, seq);
            }
            Body::TaskCreated(b) => {
                task_entry(&mut self.tasks, &b.task_id);
            }
            Body::TaskClaimed(b) => self.claimed(event, &b.task_id, &b.agent_id, &b.session_id, b.lease_until_ts),
            Body::TaskReleased(b) => self.finished(event, &b.task_id, &b.agent_id, &b.session_id, "released"),
            Body::TaskCompleted(b) => self.finished(event, &b.task_id, &b.agent_id, &b.session_id, "completed"),
            Body::TaskFailed(b) => self.finished(event, &b.task_id, &b.agent_id, &b.session_id, "failed"),
            Body::TaskLeaseExpired(b) => self.lease_expired(event, &b.task_id),
            Body::BudgetAllocated(b) => self.credit(event, &b.budget_id, b.amount, b.balance_after),
            Body::BudgetRefunded(b) => self.credit(event, &b.budget_id, b.amount, b.balance_after),
            Body::BudgetDebited(b) => self.debit(event, &b.budget_id, b.amount, b.balance_after),
            _ => {}
        }
    }

    fn end(&mut self, session_id: &str, seq: u64) {
        if let Ok(id) = uuid::Uuid::parse_str(session_id) {
            self.ended.entry(*id.as_bytes()).or_insert(seq);
        }
    }

    fn stream(&mut self, event: &Envelope) {
        let seq = event.seq;
        let (last_version, last) = match self.streams.get(&event.stream) {
            Some(s) => (s.version, Some((s.seq, s.ts))),
            None => (0, None),
        };
        if event.stream_version != last_version + 1 {
            let detail =
                format!("stream {} goes from version {last_version} to {}", event.stream, event.stream_version);
            self.broken(Invariant::StreamVersions, seq, detail, witness([last.map(|l| l.0)], seq));
        }
        if let Some((last_seq, last_ts)) = last
            && event.ts < last_ts
        {
            let detail = format!(
                "on stream {} this event's time is {} ns before the one at seq {last_seq}",
                event.stream,
                last_ts - event.ts
            );
            self.broken(Invariant::StreamTime, seq, detail, witness([Some(last_seq)], seq));
        }
        let ts = last.map_or(event.ts, |(_, ts)| ts.max(event.ts));
        let state = StreamState { version: event.stream_version, ts, seq };
        match self.streams.get_mut(&event.stream) {
            Some(known) => *known = state,
            None => {
                self.streams.insert(event.stream.clone(), state);
            }
        }
    }

    fn session_expired(&mut self, event: &Envelope, session_id: &str) {
        let seq = event.seq;
        let Some(s) = self.sessions.get_mut(session_id) else {
            let detail = format!("session {session_id} expired but was never opened");
            return self.broken(Invariant::SessionExpiry, seq, detail, witness([], seq));
        };
        let (opened, beat, deadline, ended) = (s.opened_seq, s.last_beat_seq, s.deadline(), s.ended_seq);
        s.ended_seq.get_or_insert(seq);
        if event.ts <= deadline && ended.is_none() {
            let detail =
                format!("session {session_id} expired {} ns before its heartbeat deadline", deadline - event.ts);
            self.broken(Invariant::SessionExpiry, seq, detail, witness([Some(opened), Some(beat)], seq));
        }
    }

    fn claimed(&mut self, event: &Envelope, task_id: &str, agent_id: &str, session_id: &str, lease_until_ts: u64) {
        let seq = event.seq;
        let task = task_entry(&mut self.tasks, task_id);
        let holding = task.holder.as_ref().map(|h| (h.seq, h.agent_id.clone()));
        task.holder = Some(Box::new(Claim {
            seq,
            agent_id: agent_id.to_owned(),
            session_id: session_id.to_owned(),
            lease_until_ts,
        }));
        if let Some((held_seq, holder)) = holding {
            let detail =
                format!("task {task_id} claimed by {agent_id} while {holder} held it (claim at seq {held_seq})");
            self.broken(Invariant::OneHolder, seq, detail, witness([Some(held_seq)], seq));
        }
        let problem = match self.sessions.get(session_id) {
            None => Some((format!("session {session_id} was never opened"), vec![])),
            Some(s) if s.agent_id != agent_id => Some((
                format!("session {session_id} belongs to {}, not {agent_id}", s.agent_id),
                vec![Some(s.opened_seq)],
            )),
            Some(s) if s.ended_seq.is_some() => Some((
                format!("session {session_id} had ended (seq {})", s.ended_seq.unwrap_or_default()),
                vec![Some(s.opened_seq), s.ended_seq],
            )),
            Some(s) if event.ts > s.deadline() => Some((
                format!("session {session_id} was past its heartbeat deadline by {} ns", event.ts - s.deadline()),
                vec![Some(s.opened_seq), Some(s.last_beat_seq)],
            )),
            Some(_) => None,
        };
        if let Some((why, seqs)) = problem {
            let detail = format!("task {task_id} claimed by {agent_id}: {why}");
            self.broken(Invariant::ClaimInLiveSession, seq, detail, witness(seqs, seq));
        }
    }

    fn finished(&mut self, event: &Envelope, task_id: &str, agent_id: &str, session_id: &str, how: &str) {
        let seq = event.seq;
        let task = task_entry(&mut self.tasks, task_id);
        let holder = task.holder.take();
        let ended_before = task.ended_seq.replace(seq);
        let problem = match &holder {
            None => {
                Some((format!("task {task_id} {how} by {agent_id} but nobody held it"), witness([ended_before], seq)))
            }
            Some(h) if h.agent_id != agent_id || h.session_id != session_id => Some((
                format!(
                    "task {task_id} {how} by {agent_id} in session {session_id}, but {} held it in session {}",
                    h.agent_id, h.session_id
                ),
                witness([Some(h.seq)], seq),
            )),
            Some(h) if event.ts > h.lease_until_ts => Some((
                format!("task {task_id} {how} {} ns after its lease ran out", event.ts - h.lease_until_ts),
                witness([Some(h.seq)], seq),
            )),
            Some(_) => None,
        };
        if let Some((detail, witness)) = problem {
            self.broken(Invariant::FinishByHolder, seq, detail, witness);
        }
    }

    fn lease_expired(&mut self, event: &Envelope, task_id: &str) {
        let seq = event.seq;
        let task = task_entry(&mut self.tasks, task_id);
        let holder = task.holder.take();
        let ended_before = task.ended_seq.replace(seq);
        let Some(h) = holder else {
            let detail = format!("the lease on task {task_id} expired but nobody held it");
            return self.broken(Invariant::LeaseExpiry, seq, detail, witness([ended_before], seq));
        };
        if event.ts > h.lease_until_ts {
            return;
        }
        let live_beat = self.sessions.get(&h.session_id).filter(|s| s.live_at(event.ts)).map(|s| s.last_beat_seq);
        if let Some(beat) = live_beat {
            let detail = format!(
                "the lease on task {task_id} expired {} ns before its end while session {} was live",
                h.lease_until_ts - event.ts,
                h.session_id
            );
            self.broken(Invariant::LeaseExpiry, seq, detail, witness([Some(h.seq), Some(beat)], seq));
        }
    }

    fn check_balance(&mut self, event: &Envelope, budget_id: &str, stated: u64) {
        let budget = budget_entry(&mut self.budgets, budget_id);
        if budget.balance >= 0 && i128::from(stated) != budget.balance {
            let detail = format!(
                "budget {budget_id}'s balance is stated as {stated}, but its allocations, debits and refunds give {}",
                budget.balance
            );
            let seqs: Vec<Option<u64>> =
                budget.credits.iter().chain(&budget.debits).map(|(seq, _)| Some(*seq)).collect();
            self.broken(Invariant::BudgetArithmetic, event.seq, detail, witness(seqs, event.seq));
        }
    }

    fn credit(&mut self, event: &Envelope, budget_id: &str, amount: u64, stated: u64) {
        let budget = budget_entry(&mut self.budgets, budget_id);
        budget.balance += i128::from(amount);
        budget.credits.push((event.seq, amount));
        self.check_balance(event, budget_id, stated);
    }

    fn debit(&mut self, event: &Envelope, budget_id: &str, amount: u64, stated: u64) {
        let seq = event.seq;
        let budget = budget_entry(&mut self.budgets, budget_id);
        budget.balance -= i128::from(amount);
        budget.debits.push((seq, amount));
        if budget.balance < 0 {
            // Every credit (what there was to spend), then this debit and the
            // largest earlier ones until they spend more than all of it.
            let credit: i128 = budget.credits.iter().map(|(_, a)| i128::from(*a)).sum();
            let mut earlier: Vec<(u64, u64)> = budget.debits[..budget.debits.len() - 1].to_vec();
            earlier.sort_unstable_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
            let mut spent = i128::from(amount);
            let mut seqs: Vec<Option<u64>> = budget.credits.iter().map(|(s, _)| Some(*s)).collect();
            for (s, a) in earlier {
                if spent > credit {
                    break;
                }
                spent += i128::from(a);
                seqs.push(Some(s));
            }
            let detail = format!(
                "budget {budget_id} went {} below zero: {credit} allocated and refunded, {} debited",
                -budget.balance,
                credit - budget.balance
            );
            self.broken(Invariant::BudgetNonNegative, seq, detail, witness(seqs, seq));
        } else {
            self.check_balance(event, budget_id, stated);
        }
    }

    fn report(mut self, events: u64) -> Report {
        let breaks = Invariant::ALL.iter().filter_map(|i| self.first.remove(i)).collect();
        Report { events, breaks }
    }
}

/// Checks every invariant over `history` from its first event;
/// `progress(done, head)` after each page. A gap or a broken chain stops
/// the reading and is reported as [`Invariant::SeqsAndChain`]; any other
/// failure to read is an error. Reading and decoding run on two other
/// threads, a few pages ahead of the checks ([`agentlog_core::read_ahead`]).
pub fn check(history: &History, progress: &mut dyn FnMut(u64, u64)) -> Result<Report> {
    if history.first_seq() > 1 {
        return Err(Error::NotFromStart { first: history.first_seq() });
    }
    let head = history.head()?.last_seq;
    // Sized for the history up front (a history has at most an entity or
    // a stream an event, and most have fewer): growing them doubling
    // rehashes them and touches fresh memory again at each step, the most
    // of what a check of a large world cost. Only the tables' control
    // bytes are written now; the rest is touched as entries arrive.
    let expected = usize::try_from(head).unwrap_or(usize::MAX).min(MAX_PRESIZED);
    let mut checker = Checker {
        tasks: HashMap::with_capacity_and_hasher(expected, Default::default()),
        streams: HashMap::with_capacity_and_hasher(expected, Default::default()),
        ..Checker::default()
    };
    let mut events = 0;
    let (mut next, mut failed) = (history.first_seq(), None);
    agentlog_core::read_ahead(history, next, head, &mut |page| {
        let checked = match page {
            Ok(page) => {
                for event in page {
                    checker.event(event);
                }
                events += page.len() as u64;
                next += page.len() as u64;
                progress(next - 1, head);
                return true;
            }
            Err(LogError::Corrupt { seq, reason }) => {
                // What comes before the damage is checked too.
                history.read(next, usize::try_from(seq.saturating_sub(next)).unwrap_or(0)).map(|before| {
                    for event in &before {
                        checker.event(event);
                    }
                    events += before.len() as u64;
                    let witness = if seq > 1 { vec![seq - 1, seq] } else { vec![seq] };
                    checker.broken(Invariant::SeqsAndChain, seq, reason, witness);
                })
            }
            Err(other) => Err(other),
        };
        failed = checked.err();
        false
    });
    if let Some(failed) = failed {
        return Err(Error::from(failed));
    }

    Ok(checker.report(events))
}
