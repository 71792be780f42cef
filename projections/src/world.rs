//! The world model: what is true now, folded from the log. Tasks (status,
//! holder, attempts, priority, capabilities, dependencies), the ready queue
//! (open tasks whose dependencies are done, by priority), sessions (live,
//! closed, expired; last heartbeat; claims held), agents (capabilities,
//! status, load), budgets (allocated, spent, remaining, circuit), and the
//! consistency violations: facts in the log that contradict what it
//! promised, each with the sequence that caused it.
//!
//! Time is what events say (`ts`), never a clock: "live" means no close or
//! expiry event yet, whatever the wall clock thinks.
use std::borrow::Cow;
use std::collections::{BTreeSet, HashMap};
use std::ops::Bound;
use std::sync::{Arc, OnceLock};

use agentlog_core::{Body, Envelope};
use serde::{Deserialize, Serialize};

use crate::Projection;
use crate::entities::{Entities, Family};
use crate::indexes::{self, Index};

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskStatus {
    #[default]
    Open,
    Claimed,
    Completed,
    Failed,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Holder {
    pub agent_id: String,
    pub session_id: String,
    pub claimed_ts: u64,
    pub lease_until_ts: u64,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskView {
    pub task_id: String,
    pub title: String,
    pub status: TaskStatus,
    pub holder: Option<Holder>,
    /// Claims so far.
    pub attempts: u32,
    pub failures: u32,
    pub max_attempts: u32,
    pub priority: i32,
    pub required_capabilities: Vec<String>,
    pub dependencies: Vec<String>,
    pub created_seq: u64,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SessionStatus {
    #[default]
    Live,
    Closed,
    Expired,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionView {
    pub session_id: String,
    pub agent_id: String,
    pub status: SessionStatus,
    pub opened_ts: u64,
    pub last_heartbeat_ts: u64,
    pub heartbeat_timeout_ms: u64,
    /// Tasks this session holds a claim on.
    pub claims: BTreeSet<String>,
}

impl SessionView {
    /// When the session counts as gone if no heartbeat comes.
    pub fn deadline_ts(&self) -> u64 {
        self.last_heartbeat_ts.saturating_add(self.heartbeat_timeout_ms.saturating_mul(1_000_000))
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentView {
    pub agent_id: String,
    pub name: String,
    pub capabilities: Vec<String>,
    /// Its live sessions.
    pub sessions: BTreeSet<String>,
    /// Claims held across its sessions.
    pub load: u32,
}

impl AgentView {
    pub fn status(&self) -> &'static str {
        match (self.sessions.is_empty(), self.load) {
            (true, _) => "offline",
            (false, 0) => "idle",
            (false, _) => "working",
        }
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BudgetView {
    pub budget_id: String,
    pub allocated: u64,
    pub spent: u64,
    pub refunded: u64,
    pub remaining: u64,
    /// `Some(until)` while the circuit is open.
    pub circuit_open_until_ts: Option<u64>,
    pub refused_debits: u64,
}

/// A WASM module registered with the sandbox, and what its runs came to.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModuleView {
    pub module_hash: String,
    pub name: String,
    /// `action` or `policy`.
    pub kind: String,
    pub size_bytes: u64,
    pub registered_seq: u64,
    pub registered_ts: u64,
    /// Runs recorded: completed, and trapped (a deadline included).
    pub runs_completed: u64,
    pub runs_trapped: u64,
    pub fuel_used: u64,
    pub last_run_seq: Option<u64>,
    /// The command types this policy is bound to, sorted.
    pub bound_to: Vec<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ViolationKind {
    /// A task completed, failed or released by an agent or session that
    /// does not hold its claim.
    FinishedByNonHolder,
    /// A claim on a task someone else holds, or that is not open.
    ClaimNotOpen,
    /// A claim through a session that is not live.
    ClaimInDeadSession,
    /// An action recorded in a session that is closed, expired or unknown.
    ActionOutsideLiveSession,
    /// A debit that names no session, or one the log never opened.
    DebitWithoutSession,
    /// A stream version that is not the previous one plus one.
    VersionGap,
    /// A balance an event states differs from the one folded so far.
    BalanceMismatch,
    /// A lease that expired before its end while its holder's session was
    /// live, or a session that expired before its heartbeat deadline.
    ExpiredEarly,
    /// A debit larger than what was left: the balance went below zero
    /// (`remaining` stays at 0; `replay check` calls it
    /// `budget_non_negative`).
    Overdrawn,
    /// An event whose time is before the latest time on its stream
    /// (`replay check`'s `stream_time`; streams are compared one by one,
    /// since two nodes' clocks may interleave across streams).
    TimeWentBack,
    /// An event sent in a session (the envelope's) that had closed or
    /// expired (`replay check`'s `nothing_after_session_end`; sessions are
    /// found by their lowercase hyphenated id, as the handler names them).
    AfterSessionEnd,
}

/// A stream's last version, and the latest time of an event on it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamMark {
    pub version: u64,
    pub ts: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Violation {
    pub seq: u64,
    pub kind: ViolationKind,
    pub stream: String,
    pub detail: String,
}

/// Where a ready task sorts: highest priority first, then oldest.
fn ready_key(task: &TaskView) -> Vec<u8> {
    indexes::ready(task.priority, task.created_seq, &task.task_id)
}

/// The world model's state: its entities, each its own key in the
/// projection store (families `task`, `session`, `agent`, `budget`,
/// `module` (WASM modules, their runs and bindings), `violation` by seq,
/// and `version`: each stream's last version and
/// latest time, for gaps and time going back); the indexes the queries page through, which grow with the
/// world, kept in the store the same way (`ready`, `dependent`, `status`,
/// `live-session`); and indexes of live work only, in memory, rebuilt when
/// a checkpoint is loaded (agents holding a session, the deadlines).
#[derive(Clone, Debug, PartialEq)]
pub struct WorldModel {
    tasks: Entities<String, TaskView>,
    sessions: Entities<String, SessionView>,
    agents: Entities<String, AgentView>,
    budgets: Entities<String, BudgetView>,
    modules: Entities<String, ModuleView>,
    violations: Entities<(u64, u32), Violation>,
    versions: Entities<String, StreamMark>,
    /// Open tasks whose dependencies are all completed, in claim order
    /// ([`indexes::ready`]).
    ready: Index,
    /// (task, a task that depends on it) ([`indexes::dependent`]).
    dependents: Index,
    /// Tasks by status (`tasks --state`; [`indexes::status`]).
    by_status: Index,
    /// Live sessions: what the deadlines are rebuilt from.
    live_sessions: Entities<String, ()>,
    /// Agents with a live session (`match`'s candidates).
    live_agents: BTreeSet<String>,
    /// What the ticker asks about.
    deadlines: Deadlines,
}

impl Default for WorldModel {
    fn default() -> Self {
        WorldModel {
            tasks: Entities::new("task"),
            sessions: Entities::new("session"),
            agents: Entities::new("agent"),
            budgets: Entities::new("budget"),
            modules: Entities::new("module"),
            violations: Entities::new("violation"),
            versions: Entities::new("version"),
            ready: Index::new("ready"),
            dependents: Index::new("dependent"),
            by_status: Index::new("status"),
            live_sessions: Entities::new("live-session"),
            live_agents: BTreeSet::new(),
            deadlines: Deadlines::default(),
        }
    }
}

/// Deadlines, so what is due costs what is due, not every session and task
/// ever seen.
///
/// The maps are kept as events arrive; the same deadlines in time order
/// ([`ByTime`]) are built the first time something asks what is due (the
/// ticker, on its first tick) and kept from then on, so a fold nobody asks
/// that of (a rebuild, a replay) never pays for ordering every heartbeat.
/// (The hash maps here are looked up, and iterated only into ordered sets:
/// no order can leak from them.)
#[derive(Clone, Debug, Default)]
struct Deadlines {
    /// Each live session's heartbeat deadline. Ids are shared (`Arc<str>`)
    /// with [`ByTime::sessions`], so a heartbeat moves a session without
    /// allocating: it is the most frequent event that changes a deadline.
    session_at: HashMap<Arc<str>, u64, foldhash::fast::FixedState>,
    /// The indexed sessions whose ids are UUIDs, as the 16 bytes an
    /// envelope names its session by: is an event's session live, without
    /// formatting its id.
    live_uuids: std::collections::HashSet<u128, foldhash::fast::FixedState>,
    /// Each indexed claim's lease end and holder session.
    lease_at: HashMap<String, (u64, String), foldhash::fast::FixedState>,
    /// Claimed tasks by their holder's session.
    claims: HashMap<String, BTreeSet<String>, foldhash::fast::FixedState>,
    /// Claimed tasks whose holder's session is unknown or not live.
    orphans: BTreeSet<String>,
    /// The deadlines in time order, once asked for.
    by_time: OnceLock<ByTime>,
}

/// Deadlines in time order: what is due before a time is a range.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct ByTime {
    /// Live sessions by heartbeat deadline.
    sessions: BTreeSet<(u64, Arc<str>)>,
    /// Claimed tasks by the end of their lease.
    leases: BTreeSet<(u64, String)>,
}

/// The same deadlines, whether or not they were put in time order yet (the
/// order is built from the maps, exactly).
impl PartialEq for Deadlines {
    fn eq(&self, other: &Self) -> bool {
        self.session_at == other.session_at
            && self.live_uuids == other.live_uuids
            && self.lease_at == other.lease_at
            && self.claims == other.claims
            && self.orphans == other.orphans
    }
}

impl Deadlines {
    /// The deadlines in time order, built now if nothing asked before.
    fn by_time(&self) -> &ByTime {
        self.by_time.get_or_init(|| self.ordered())
    }

    fn ordered(&self) -> ByTime {
        ByTime {
            sessions: self.session_at.iter().map(|(id, &at)| (at, id.clone())).collect(),
            leases: self.lease_at.iter().map(|(id, &(at, _))| (at, id.clone())).collect(),
        }
    }

    /// Sets a session's deadline (`None`: it is not live); whether it was
    /// live before.
    fn set_session(&mut self, session_id: &str, deadline: Option<u64>) -> bool {
        let Some(by_time) = self.by_time.get_mut() else {
            // Nothing keeps time order: the map alone (a heartbeat is one
            // look-up).
            return match deadline {
                Some(at) => match self.session_at.get_mut(session_id) {
                    Some(slot) => {
                        *slot = at;
                        true
                    }
                    None => {
                        self.session_at.insert(Arc::from(session_id), at);
                        false
                    }
                },
                None => self.session_at.remove(session_id).is_some(),
            };
        };
        let (name, was_live) = match self.session_at.remove_entry(session_id) {
            Some((name, at)) => {
                by_time.sessions.remove(&(at, name.clone()));
                (name, true)
            }
            None => (Arc::from(session_id), false),
        };
        if let Some(at) = deadline {
            by_time.sessions.insert((at, name.clone()));
            self.session_at.insert(name, at);
        }
        was_live
    }
}

impl Projection for WorldModel {
    const NAME: &'static str = "world";

    fn apply(&mut self, event: &Envelope) {
        self.check_stream(event);
        self.check_session_live(event);
        let Some(body) = &event.body else { return };
        self.fold(event, body);
        let (task, session) = touched(body);
        if let Some(task) = task {
            self.reindex_claim(task);
        }
        if let Some(session) = session {
            self.reindex_session(session);
        }
    }

    fn families(&self) -> Vec<&dyn Family> {
        vec![
            &self.tasks,
            &self.sessions,
            &self.agents,
            &self.budgets,
            &self.modules,
            &self.violations,
            &self.versions,
            &self.ready,
            &self.dependents,
            &self.by_status,
            &self.live_sessions,
        ]
    }

    fn families_mut(&mut self) -> Vec<&mut dyn Family> {
        vec![
            &mut self.tasks,
            &mut self.sessions,
            &mut self.agents,
            &mut self.budgets,
            &mut self.modules,
            &mut self.violations,
            &mut self.versions,
            &mut self.ready,
            &mut self.dependents,
            &mut self.by_status,
            &mut self.live_sessions,
        ]
    }

    /// The indexes of live work, from the stored ones: claimed tasks and
    /// live sessions (what a load costs is the live work, not the history).
    fn loaded(&mut self) {
        (self.live_agents, self.deadlines) = Default::default();
        for (id, agent) in self.agents.iter() {
            if !agent.sessions.is_empty() {
                self.live_agents.insert(id.into_owned());
            }
        }
        let claimed: Vec<String> = self.task_ids_in_status_after(TaskStatus::Claimed, None).collect();
        let live: Vec<String> = self.live_sessions.keys().map(Cow::into_owned).collect();
        for task in &claimed {
            self.reindex_claim(task);
        }
        for session in &live {
            self.reindex_session(session);
        }
    }
}

/// The task and the session an event may change the deadlines of.
fn touched(body: &Body) -> (Option<&str>, Option<&str>) {
    match body {
        Body::SessionOpened(e) => (None, Some(&e.session_id)),
        Body::SessionHeartbeat(e) => (None, Some(&e.session_id)),
        Body::SessionClosed(e) => (None, Some(&e.session_id)),
        Body::SessionExpired(e) => (None, Some(&e.session_id)),
        Body::TaskCreated(e) => (Some(&e.task_id), None),
        Body::TaskClaimed(e) => (Some(&e.task_id), None),
        Body::TaskReleased(e) => (Some(&e.task_id), None),
        Body::TaskLeaseExpired(e) => (Some(&e.task_id), None),
        Body::TaskCompleted(e) => (Some(&e.task_id), None),
        Body::TaskFailed(e) => (Some(&e.task_id), None),
        _ => (None, None),
    }
}

impl WorldModel {
    fn fold(&mut self, event: &Envelope, body: &Body) {
        match body {
            Body::SessionOpened(e) => {
                let session = SessionView {
                    session_id: e.session_id.clone(),
                    agent_id: e.agent_id.clone(),
                    status: SessionStatus::Live,
                    opened_ts: event.ts,
                    last_heartbeat_ts: event.ts,
                    heartbeat_timeout_ms: e.heartbeat_timeout_ms,
                    claims: BTreeSet::new(),
                };
                self.sessions.insert(e.session_id.clone(), session);
                self.agent_mut(&e.agent_id).sessions.insert(e.session_id.clone());
                self.live_agents.insert(e.agent_id.clone());
            }
            Body::SessionHeartbeat(e) => {
                if let Some(s) = self.sessions.get_mut(&e.session_id) {
                    s.last_heartbeat_ts = event.ts;
                }
            }
            Body::SessionClosed(e) => self.end_session(&e.session_id, SessionStatus::Closed),
            Body::SessionExpired(e) => {
                let early = self
                    .sessions
                    .get(&e.session_id)
                    .filter(|s| s.status == SessionStatus::Live && event.ts <= s.deadline_ts())
                    .map(|s| s.deadline_ts() - event.ts);
                if let Some(before) = early {
                    let detail = format!("session {} expired {before} ns before its heartbeat deadline", e.session_id);
                    self.violate(event, ViolationKind::ExpiredEarly, detail);
                }
                self.end_session(&e.session_id, SessionStatus::Expired);
            }
            Body::AgentRegistered(e) => {
                let agent = self.agent_mut(&e.agent_id);
                agent.name.clone_from(&e.name);
                agent.capabilities.clone_from(&e.capabilities);
            }
            Body::ActionRecorded(e) => {
                let live = self.sessions.get(&e.session_id).map(|s| s.status);
                if live != Some(SessionStatus::Live) {
                    let state = live.map_or("unknown".to_owned(), |s| format!("{s:?}").to_lowercase());
                    self.violate(
                        event,
                        ViolationKind::ActionOutsideLiveSession,
                        format!("agent {} acted in session {} ({state})", e.agent_id, e.session_id),
                    );
                }
            }
            Body::TaskCreated(e) => {
                let task = TaskView {
                    task_id: e.task_id.clone(),
                    title: e.title.clone(),
                    status: TaskStatus::Open,
                    holder: None,
                    attempts: 0,
                    failures: 0,
                    max_attempts: e.max_attempts,
                    priority: e.priority,
                    required_capabilities: e.required_capabilities.clone(),
                    dependencies: e.dependencies.clone(),
                    created_seq: event.seq,
                };
                // Created again (a log no command path writes, but a fold
                // takes any log): the indexes forget the task it replaces.
                let replaced = self.tasks.insert(e.task_id.clone(), task);
                let was_completed = replaced.is_some_and(|old| self.forget_task(&old));
                indexes::add(&mut self.by_status, indexes::status(TaskStatus::Open as u8, &e.task_id));
                for dependency in &e.dependencies {
                    indexes::add(&mut self.dependents, indexes::dependent(dependency, &e.task_id));
                }
                self.refresh_ready(&e.task_id);
                if was_completed {
                    self.refresh_dependents(&e.task_id);
                }
            }
            Body::TaskClaimed(e) => self.claim(event, e),
            Body::TaskReleased(e) => {
                if self.finish(event, &e.task_id, &e.agent_id, &e.session_id, "released") {
                    self.set_status(&e.task_id, TaskStatus::Open);
                }
            }
            Body::TaskLeaseExpired(e) => {
                let early = self.tasks.get(&e.task_id).and_then(|t| t.holder.clone()).filter(|h| {
                    event.ts <= h.lease_until_ts
                        && self
                            .sessions
                            .get(&h.session_id)
                            .is_some_and(|s| s.status == SessionStatus::Live && event.ts <= s.deadline_ts())
                });
                if let Some(holder) = early {
                    let detail = format!(
                        "the lease on task {} expired {} ns before its end while session {} was live",
                        e.task_id,
                        holder.lease_until_ts - event.ts,
                        holder.session_id
                    );
                    self.violate(event, ViolationKind::ExpiredEarly, detail);
                }
                self.drop_claim(&e.task_id);
                self.set_status(&e.task_id, TaskStatus::Open);
            }
            Body::TaskCompleted(e) => {
                if self.finish(event, &e.task_id, &e.agent_id, &e.session_id, "completed") {
                    self.set_status(&e.task_id, TaskStatus::Completed);
                }
            }
            Body::TaskFailed(e) => {
                if self.finish(event, &e.task_id, &e.agent_id, &e.session_id, "failed") {
                    if let Some(t) = self.tasks.get_mut(&e.task_id) {
                        t.failures += 1;
                    }
                    let status = if e.terminal { TaskStatus::Failed } else { TaskStatus::Open };
                    self.set_status(&e.task_id, status);
                }
            }
            Body::BudgetAllocated(e) => {
                let b = self.budget_mut(&e.budget_id);
                b.allocated += e.amount;
                b.remaining += e.amount;
                self.check_balance(event, &e.budget_id, e.balance_after);
            }
            Body::BudgetDebited(e) => {
                let b = self.budget_mut(&e.budget_id);
                let before = b.remaining;
                b.spent += e.amount;
                b.remaining = b.remaining.saturating_sub(e.amount);
                if e.amount > before {
                    let detail = format!(
                        "a debit of {} from budget {} with {before} left: it went {} below zero",
                        e.amount,
                        e.budget_id,
                        e.amount - before
                    );
                    self.violate(event, ViolationKind::Overdrawn, detail);
                }
                self.check_balance(event, &e.budget_id, e.balance_after);
                let session = if e.session_id.is_empty() { None } else { self.sessions.get(&e.session_id) };
                if session.is_none() {
                    let detail = if e.session_id.is_empty() {
                        format!("a debit of {} names no session", e.amount)
                    } else {
                        format!("a debit of {} names session {}, which the log never opened", e.amount, e.session_id)
                    };
                    self.violate(event, ViolationKind::DebitWithoutSession, detail);
                }
            }
            Body::BudgetRefunded(e) => {
                let b = self.budget_mut(&e.budget_id);
                b.refunded += e.amount;
                b.remaining += e.amount;
                self.check_balance(event, &e.budget_id, e.balance_after);
            }
            Body::BudgetDebitRefused(e) => self.budget_mut(&e.budget_id).refused_debits += 1,
            Body::BudgetCircuitOpened(e) => self.budget_mut(&e.budget_id).circuit_open_until_ts = Some(e.open_until_ts),
            Body::BudgetCircuitClosed(e) => self.budget_mut(&e.budget_id).circuit_open_until_ts = None,
            Body::SandboxModuleRegistered(e) => {
                let kind = match agentlog_core::schema::ModuleKind::try_from(e.kind) {
                    Ok(agentlog_core::schema::ModuleKind::Action) => "action",
                    Ok(agentlog_core::schema::ModuleKind::Policy) => "policy",
                    _ => "unknown",
                };
                let module = ModuleView {
                    module_hash: e.module_hash.clone(),
                    name: e.name.clone(),
                    kind: kind.to_owned(),
                    size_bytes: e.size_bytes,
                    registered_seq: event.seq,
                    registered_ts: event.ts,
                    ..ModuleView::default()
                };
                self.modules.insert(e.module_hash.clone(), module);
            }
            Body::SandboxRunCompleted(e) => self.module_ran(event.seq, &e.module_hash, e.fuel_used, false),
            Body::SandboxRunTrapped(e) => self.module_ran(event.seq, &e.module_hash, e.fuel_used, true),
            Body::SandboxPolicyBound(e) => {
                if let Some(previous) = self.modules.get_mut(&e.previous_module_hash) {
                    previous.bound_to.retain(|c| *c != e.command);
                }
                if !e.module_hash.is_empty() {
                    let module = self.modules.get_or_insert_with(&e.module_hash, || ModuleView {
                        module_hash: e.module_hash.clone(),
                        ..ModuleView::default()
                    });
                    if let Err(at) = module.bound_to.binary_search(&e.command) {
                        module.bound_to.insert(at, e.command.clone());
                    }
                }
            }
            // Principals are the command path's business (docs/PROTOCOL.md);
            // the world view does not show them yet.
            Body::ChainCheckpoint(_) | Body::PrincipalRegistered(_) | Body::PrincipalRevoked(_) => {}
        }
    }

    /// Indexes the task's claim (or drops it from the index): its lease
    /// end, its holder's session, and whether that session is live.
    fn reindex_claim(&mut self, task_id: &str) {
        let d = &mut self.deadlines;
        if let Some((lease_until, session)) = d.lease_at.remove(task_id) {
            if let Some(by_time) = d.by_time.get_mut() {
                by_time.leases.remove(&(lease_until, task_id.to_owned()));
            }
            if let Some(claims) = d.claims.get_mut(&session) {
                claims.remove(task_id);
                if claims.is_empty() {
                    d.claims.remove(&session);
                }
            }
            d.orphans.remove(task_id);
        }
        let Some(task) = self.tasks.get(task_id) else { return };
        let (TaskStatus::Claimed, Some(holder)) = (task.status, &task.holder) else { return };
        if let Some(by_time) = d.by_time.get_mut() {
            by_time.leases.insert((holder.lease_until_ts, task_id.to_owned()));
        }
        d.lease_at.insert(task_id.to_owned(), (holder.lease_until_ts, holder.session_id.clone()));
        d.claims.entry(holder.session_id.clone()).or_default().insert(task_id.to_owned());
        if self.sessions.get(&holder.session_id).is_none_or(|s| s.status != SessionStatus::Live) {
            d.orphans.insert(task_id.to_owned());
        }
    }

    /// Indexes the session's deadline while it is live, and whether the
    /// claims held through it are orphans.
    fn reindex_session(&mut self, session_id: &str) {
        let live = self.sessions.get(session_id).filter(|s| s.status == SessionStatus::Live);
        let d = &mut self.deadlines;
        // Indexed exactly while live.
        let was_live = d.set_session(session_id, live.as_ref().map(|s| s.deadline_ts()));
        if was_live != live.is_some()
            && let Ok(uuid) = uuid::Uuid::parse_str(session_id)
        {
            if live.is_some() {
                d.live_uuids.insert(uuid.as_u128());
            } else {
                d.live_uuids.remove(&uuid.as_u128());
            }
        }
        if was_live == live.is_some() {
            return; // a heartbeat: whether its claims are orphans did not change
        }
        if live.is_some() {
            self.live_sessions.insert_if_absent(session_id.to_owned(), || ());
        } else {
            self.live_sessions.remove(session_id);
        }
        for task in d.claims.get(session_id).into_iter().flatten() {
            if live.is_some() {
                d.orphans.remove(task);
            } else {
                d.orphans.insert(task.clone());
            }
        }
    }

    /// Live sessions whose heartbeat deadline is before `now_ts`, in id
    /// order.
    pub fn overdue_sessions(&self, now_ts: u64) -> Vec<String> {
        let by_time = self.deadlines.by_time();
        let mut due: Vec<String> =
            by_time.sessions.range(..(now_ts, Arc::from(""))).map(|(_, id)| id.to_string()).collect();
        due.sort();
        due
    }

    /// Claimed tasks whose lease ended before `now_ts`, or whose holder's
    /// session is unknown, not live, or past its deadline, in id order.
    pub fn overdue_leases(&self, now_ts: u64) -> Vec<String> {
        let (d, by_time) = (&self.deadlines, self.deadlines.by_time());
        let mut due: BTreeSet<&String> = d.orphans.iter().collect();
        due.extend(by_time.leases.range(..(now_ts, String::new())).map(|(_, id)| id));
        for (_, session) in by_time.sessions.range(..(now_ts, Arc::from(""))) {
            due.extend(d.claims.get(&**session).into_iter().flatten());
        }
        due.into_iter().cloned().collect()
    }
}

impl WorldModel {
    pub fn task(&self, id: &str) -> Option<Cow<'_, TaskView>> {
        self.tasks.get(id)
    }

    pub fn tasks(&self) -> impl Iterator<Item = Cow<'_, TaskView>> {
        self.tasks.values()
    }

    /// Tasks in id order, from the first after `after` (all when `None`).
    pub fn tasks_after(&self, after: Option<&str>) -> impl Iterator<Item = Cow<'_, TaskView>> {
        self.tasks.values_after(after)
    }

    /// Tasks in `status`, in id order, from the first after `after`: read
    /// from an index, so a page costs its rows, not the world.
    pub fn tasks_in_status_after<'a>(
        &'a self,
        status: TaskStatus,
        after: Option<&str>,
    ) -> impl Iterator<Item = Cow<'a, TaskView>> + 'a {
        self.task_ids_in_status_after(status, after).filter_map(|id| self.tasks.get(id.as_str()))
    }

    /// The ids of the tasks in `status`, in id order, from the first after
    /// `after`.
    fn task_ids_in_status_after<'a>(
        &'a self,
        status: TaskStatus,
        after: Option<&str>,
    ) -> impl Iterator<Item = String> + 'a {
        let status = status as u8;
        let from = match after {
            Some(after) => Bound::Excluded(indexes::status(status, after)),
            None => Bound::Included(vec![status]),
        };
        self.by_status
            .range((from, Bound::Unbounded))
            .take_while(move |(key, _)| key.first() == Some(&status))
            .map(|(key, _)| indexes::id(&key[1..]).into_owned())
    }

    /// Agents holding a session not yet closed or expired by their own
    /// id, in id order (a superset of those with a live session: a
    /// session reopened under another agent stays with the first).
    pub fn live_agents(&self) -> impl Iterator<Item = Cow<'_, AgentView>> {
        self.live_agents.iter().filter_map(|id| self.agents.get(id.as_str()))
    }

    /// Claimable tasks, highest priority first (then oldest).
    pub fn ready(&self) -> impl Iterator<Item = Cow<'_, TaskView>> {
        self.ready_after(None)
    }

    /// The ready queue from the first task after task `after` in its order
    /// (where `after` stands or would stand now, by its priority and age;
    /// from the start when `None` or unknown).
    pub fn ready_after(&self, after: Option<&str>) -> impl Iterator<Item = Cow<'_, TaskView>> {
        let from = match after.and_then(|id| self.tasks.get(id)) {
            Some(task) => Bound::Excluded(ready_key(&task)),
            None => Bound::Unbounded,
        };
        self.ready
            .range((from, Bound::Unbounded))
            .filter_map(|(key, _)| self.tasks.get(indexes::id(&key[indexes::READY_ID_AT..]).as_ref()))
    }

    /// Sessions in id order, from the first after `after`.
    pub fn sessions_after(&self, after: Option<&str>) -> impl Iterator<Item = Cow<'_, SessionView>> {
        self.sessions.values_after(after)
    }

    /// Agents in id order, from the first after `after`.
    pub fn agents_after(&self, after: Option<&str>) -> impl Iterator<Item = Cow<'_, AgentView>> {
        self.agents.values_after(after)
    }

    /// Budgets in id order, from the first after `after`.
    pub fn budgets_after(&self, after: Option<&str>) -> impl Iterator<Item = Cow<'_, BudgetView>> {
        self.budgets.values_after(after)
    }

    /// Violations in log order, each with its place (its seq, and its index
    /// among the violations of that seq), from the first after the place
    /// `after` (all when `None`).
    pub fn violations_after(
        &self,
        after: Option<(u64, u32)>,
    ) -> impl Iterator<Item = ((u64, u32), Cow<'_, Violation>)> {
        let from = after.map_or(Bound::Unbounded, Bound::Excluded);
        self.violations.range((from, Bound::Unbounded)).map(|(place, v)| (*place, v))
    }

    pub fn session(&self, id: &str) -> Option<Cow<'_, SessionView>> {
        self.sessions.get(id)
    }

    pub fn sessions(&self) -> impl Iterator<Item = Cow<'_, SessionView>> {
        self.sessions.values()
    }

    pub fn agent(&self, id: &str) -> Option<Cow<'_, AgentView>> {
        self.agents.get(id)
    }

    pub fn agents(&self) -> impl Iterator<Item = Cow<'_, AgentView>> {
        self.agents.values()
    }

    pub fn modules_after(&self, after: Option<&str>) -> impl Iterator<Item = Cow<'_, ModuleView>> {
        self.modules.values_after(after)
    }

    pub fn module(&self, module_hash: &str) -> Option<Cow<'_, ModuleView>> {
        self.modules.get(module_hash)
    }

    pub fn budget(&self, id: &str) -> Option<Cow<'_, BudgetView>> {
        self.budgets.get(id)
    }

    pub fn budgets(&self) -> impl Iterator<Item = Cow<'_, BudgetView>> {
        self.budgets.values()
    }

    /// Violations in log order.
    pub fn violations(&self) -> impl Iterator<Item = Cow<'_, Violation>> {
        self.violations.values()
    }

    fn violate(&mut self, event: &Envelope, kind: ViolationKind, detail: String) {
        let index = self.violations.range((event.seq, 0)..=(event.seq, u32::MAX)).count();
        let index = u32::try_from(index).expect("an event causes a handful of violations");
        let violation = Violation { seq: event.seq, kind, stream: event.stream.clone(), detail };
        self.violations.insert((event.seq, index), violation);
    }

    /// The stream's versions continue without a gap, and its time does not
    /// go back.
    fn check_stream(&mut self, event: &Envelope) {
        let (version, ts) = (event.stream_version, event.ts);
        let last = match self.versions.get_mut(event.stream.as_str()) {
            Some(mark) => {
                let was = *mark;
                *mark = StreamMark { version: version.max(was.version), ts: ts.max(was.ts) };
                Some(was)
            }
            None => {
                self.versions.insert(event.stream.clone(), StreamMark { version, ts });
                None
            }
        };
        let last_version = last.map_or(0, |mark| mark.version);
        if version != last_version + 1 {
            let detail = format!("version {version} follows version {last_version}");
            self.violate(event, ViolationKind::VersionGap, detail);
        }
        if let Some(last) = last
            && ts < last.ts
        {
            let detail = format!("its time is {} ns before the latest on stream {}", last.ts - ts, event.stream);
            self.violate(event, ViolationKind::TimeWentBack, detail);
        }
    }

    /// An event sent in a session (the envelope's) comes while it is live.
    fn check_session_live(&mut self, event: &Envelope) {
        let Ok(id) = uuid::Uuid::from_slice(&event.session_id) else { return };
        // Most events come in a live session, which the deadline index
        // holds; only the rest read the session.
        if self.deadlines.live_uuids.contains(&id.as_u128()) {
            return;
        }
        let mut text = [0u8; uuid::fmt::Hyphenated::LENGTH];
        let id = id.hyphenated().encode_lower(&mut text);
        let status = match self.sessions.get(&*id) {
            Some(session) if session.status != SessionStatus::Live => session.status,
            _ => return,
        };
        let detail = format!(
            "sent in session {id}, which had {}",
            if status == SessionStatus::Closed { "closed" } else { "expired" }
        );
        self.violate(event, ViolationKind::AfterSessionEnd, detail);
    }

    fn check_balance(&mut self, event: &Envelope, budget_id: &str, stated: u64) {
        let folded = self.budgets.get(budget_id).map_or(0, |b| b.remaining);
        if folded != stated {
            let detail = format!("the event says {stated} left, the events before it leave {folded}");
            self.violate(event, ViolationKind::BalanceMismatch, detail);
            self.budget_mut(budget_id).remaining = stated;
        }
    }

    fn agent_mut(&mut self, id: &str) -> &mut AgentView {
        self.agents.get_or_insert_with(id, || AgentView { agent_id: id.to_owned(), ..AgentView::default() })
    }

    /// Counts a run of a module (one the log never registered is counted
    /// under its hash all the same).
    fn module_ran(&mut self, seq: u64, module_hash: &str, fuel_used: u64, trapped: bool) {
        let module = self.modules.get_or_insert_with(module_hash, || ModuleView {
            module_hash: module_hash.to_owned(),
            ..ModuleView::default()
        });
        if trapped {
            module.runs_trapped += 1;
        } else {
            module.runs_completed += 1;
        }
        module.fuel_used = module.fuel_used.saturating_add(fuel_used);
        module.last_run_seq = Some(seq);
    }

    fn budget_mut(&mut self, id: &str) -> &mut BudgetView {
        self.budgets.get_or_insert_with(id, || BudgetView { budget_id: id.to_owned(), ..BudgetView::default() })
    }

    fn end_session(&mut self, session_id: &str, status: SessionStatus) {
        let Some(session) = self.sessions.get_mut(session_id) else { return };
        session.status = status;
        let agent_id = session.agent_id.clone();
        if let Some(agent) = self.agents.get_mut(&agent_id) {
            agent.sessions.remove(session_id);
            if agent.sessions.is_empty() {
                self.live_agents.remove(&agent_id);
            }
        }
    }

    fn claim(&mut self, event: &Envelope, e: &agentlog_core::schema::TaskClaimed) {
        let status = self.tasks.get(&e.task_id).map(|t| t.status);
        if status != Some(TaskStatus::Open) {
            let state = status.map_or("unknown".to_owned(), |s| format!("{s:?}").to_lowercase());
            let detail = format!("agent {} claimed task {} while it was {state}", e.agent_id, e.task_id);
            self.violate(event, ViolationKind::ClaimNotOpen, detail);
            self.drop_claim(&e.task_id);
        }
        if self.sessions.get(&e.session_id).map(|s| s.status) != Some(SessionStatus::Live) {
            let detail = format!(
                "agent {} claimed task {} through session {}, which is not live",
                e.agent_id, e.task_id, e.session_id
            );
            self.violate(event, ViolationKind::ClaimInDeadSession, detail);
        }
        let holder = Holder {
            agent_id: e.agent_id.clone(),
            session_id: e.session_id.clone(),
            claimed_ts: event.ts,
            lease_until_ts: e.lease_until_ts,
        };
        if let Some(t) = self.tasks.get_mut(&e.task_id) {
            t.attempts = e.attempt;
            t.holder = Some(holder);
        }
        if let Some(s) = self.sessions.get_mut(&e.session_id) {
            s.claims.insert(e.task_id.clone());
        }
        self.agent_mut(&e.agent_id).load += 1;
        self.set_status(&e.task_id, TaskStatus::Claimed);
    }

    /// Ends a claim by its holder: false (and a violation) if the agent or
    /// session does not hold it.
    fn finish(&mut self, event: &Envelope, task_id: &str, agent_id: &str, session_id: &str, what: &str) -> bool {
        let holder = self.tasks.get(task_id).and_then(|t| t.holder.clone());
        match holder {
            Some(h) if h.agent_id == agent_id && h.session_id == session_id => {
                self.drop_claim(task_id);
                true
            }
            other => {
                let held = other.map_or("nobody holds it".to_owned(), |h| format!("agent {} holds it", h.agent_id));
                let detail = format!("task {task_id} {what} by agent {agent_id} in session {session_id}, but {held}");
                self.violate(event, ViolationKind::FinishedByNonHolder, detail);
                false
            }
        }
    }

    fn drop_claim(&mut self, task_id: &str) {
        let Some(holder) = self.tasks.get_mut(task_id).and_then(|t| t.holder.take()) else { return };
        if let Some(s) = self.sessions.get_mut(&holder.session_id) {
            s.claims.remove(task_id);
        }
        if let Some(a) = self.agents.get_mut(&holder.agent_id) {
            a.load = a.load.saturating_sub(1);
        }
    }

    fn set_status(&mut self, task_id: &str, status: TaskStatus) {
        let Some(t) = self.tasks.get_mut(task_id) else { return };
        let was = std::mem::replace(&mut t.status, status);
        if was != status {
            self.by_status.remove(indexes::status(was as u8, task_id).as_slice());
            indexes::add(&mut self.by_status, indexes::status(status as u8, task_id));
        }
        let was_completed = was == TaskStatus::Completed;
        self.refresh_ready(task_id);
        if was_completed != (status == TaskStatus::Completed) {
            self.refresh_dependents(task_id);
        }
    }

    /// Whether the tasks depending on `task_id` are ready changes with it.
    fn refresh_dependents(&mut self, task_id: &str) {
        let prefix = indexes::dependents_of(task_id);
        let dependents: Vec<String> = self
            .dependents
            .range((Bound::Included(prefix.clone()), Bound::Unbounded))
            .take_while(|(key, _)| key.starts_with(&prefix))
            .map(|(key, _)| indexes::id(&key[prefix.len()..]).into_owned())
            .collect();
        for dependent in dependents {
            self.refresh_ready(&dependent);
        }
    }

    /// Takes a task replaced by another of its id out of the indexes;
    /// whether it was completed.
    fn forget_task(&mut self, old: &TaskView) -> bool {
        let task_id = old.task_id.as_str();
        self.by_status.remove(indexes::status(old.status as u8, task_id).as_slice());
        self.ready.remove(ready_key(old).as_slice());
        for dependency in &old.dependencies {
            self.dependents.remove(indexes::dependent(dependency, task_id).as_slice());
        }
        old.status == TaskStatus::Completed
    }

    /// Puts the task in the ready queue or takes it out.
    fn refresh_ready(&mut self, task_id: &str) {
        let Some(t) = self.tasks.get(task_id) else { return };
        let key = ready_key(&t);
        let deps_done =
            t.dependencies.iter().all(|d| self.tasks.get(d).is_some_and(|d| d.status == TaskStatus::Completed));
        if t.status == TaskStatus::Open && deps_done {
            indexes::add(&mut self.ready, key);
        } else {
            self.ready.remove(key.as_slice());
        }
    }
}
