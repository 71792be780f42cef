//! The seeded multi-agent workload behind `agentlog demo`.
//!
//! Agents with different capabilities and reliability come online, open
//! sessions, race for the highest-priority ready task they can do, spend
//! their team's budget on think/act/learn steps, complete or fail, and
//! sometimes vanish without closing their session; a ticker then expires
//! the session and the lease so another agent can take the task over.
//!
//! Everything goes through the real [`Handler`], one command at a time, on a
//! [`ManualClock`] and seeded ids, so one seed gives one log, byte for byte.
//! Or through any other [`Target`]: the CLI's `demo --nats` sends the same
//! commands to the command service, which decides on its own clock.
//!
//! Deadlines are not this module's to judge: each simulated minute it asks
//! a [`Ticker`] (in the demo, the projections' real ticker on a world view
//! folded from the log) to expire what is due, and learns from it which sessions and
//! leases ended.
use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use agentlog_core::ids::SplitMix64;
use agentlog_core::{Clock, Envelope, Log, ManualClock, Timestamp};
use serde::Serialize;

use crate::command::{
    ActionKind, ActionOutcome, AllocateBudget, ClaimTask, CloseSession, Command, CompleteTask, CreateTask, DebitBudget,
    FailTask, Heartbeat, OpenSession, RecordAction, RefundBudget, RegisterAgent, ReleaseTask,
};
use crate::executor::Executor;
use crate::handler::{Accepted, Handler, Request};
use crate::rejection::Rejection;

/// 2026-01-01T00:00:00Z: simulated time starts at a UTC midnight, so each
/// simulated day is a whole archive day.
pub const START: Timestamp = Timestamp::from_nanos(1_767_225_600 * 1_000_000_000);

const CAPABILITIES: [&str; 6] = ["code", "math", "search", "sql", "vision", "writing"];
const STEP: Duration = Duration::from_secs(60);
const HEARTBEAT_EVERY: Duration = Duration::from_secs(5 * 60);
const HEARTBEAT_TIMEOUT_MS: u64 = 10 * 60 * 1000;
const LEASE_MS: u64 = 45 * 60 * 1000;
const AGENTS_PER_BUDGET: usize = 4;
const MAX_ATTEMPTS: u32 = 3;
const DAILY_ALLOCATION: u64 = 16_000;
/// How long an agent whose team ran out of budget waits before trying again.
const REST_AFTER_REFUSAL: Duration = Duration::from_secs(45 * 60);

#[derive(Clone, Copy, Debug)]
pub struct Config {
    pub seed: u64,
    pub agents: usize,
    pub tasks: usize,
    pub days: u32,
    /// Decisions are made on the simulation's clock (the handler in this
    /// process). Off when the commands go to a service that decides on its
    /// own clock: then no agent vanishes and the ticker is never asked,
    /// since only the service's clock can say a deadline passed.
    pub sim_clock: bool,
}

impl Default for Config {
    fn default() -> Self {
        Config { seed: 1, agents: 8, tasks: 500, days: 3, sim_clock: true }
    }
}

/// Where the workload's commands go, and where it reads a stream back.
pub trait Target: Executor {
    /// Every event of one stream (the summary counts circuits opened).
    fn read_stream(&self, stream: &str) -> impl Future<Output = Result<Vec<Envelope>, Rejection>> + Send;
}

/// What a tick expired.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Expired {
    pub sessions: Vec<String>,
    pub leases: Vec<String>,
}

/// Sends the expiry commands for whatever is due at `now`.
pub trait Ticker: Sync {
    fn tick(&self, now: Timestamp) -> impl Future<Output = Result<Expired, Rejection>> + Send;
}

/// The ticker of a workload that never asks one (`sim_clock` off).
#[derive(Clone, Copy, Debug)]
pub struct NoTicker;

impl Ticker for NoTicker {
    async fn tick(&self, _now: Timestamp) -> Result<Expired, Rejection> {
        Ok(Expired::default())
    }
}

impl<L: Log> Target for Handler<L> {
    async fn read_stream(&self, stream: &str) -> Result<Vec<Envelope>, Rejection> {
        Ok(self.log().read_stream(stream, 1, usize::MAX).await?)
    }
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct AgentSummary {
    pub agent_id: String,
    pub capabilities: Vec<String>,
    pub completed: u64,
    pub failed: u64,
    pub success_rate: f64,
    pub claims_won: u64,
    pub claims_lost: u64,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct Summary {
    pub seed: u64,
    pub commands: u64,
    pub accepted: u64,
    /// Rejections by code.
    pub rejected: BTreeMap<&'static str, u64>,
    pub claims_won: u64,
    pub claims_lost: u64,
    pub tasks_created: u64,
    pub tasks_completed: u64,
    pub tasks_failed: u64,
    pub sessions_opened: u64,
    pub sessions_abandoned: u64,
    pub leases_expired: u64,
    pub budget_allocated: u64,
    pub budget_spent: u64,
    pub budget_refunded: u64,
    pub circuits_opened: u64,
    pub simulated_from: String,
    pub simulated_to: String,
    pub agents: Vec<AgentSummary>,
}

#[derive(Clone, Debug, PartialEq)]
enum Activity {
    Offline,
    Idle { session: String },
    Working { session: String, task: usize, steps_left: u32, spent: u64 },
}

#[derive(Debug)]
struct Agent {
    id: String,
    capabilities: Vec<String>,
    reliability: f64,
    budget: String,
    activity: Activity,
    next_heartbeat: Timestamp,
    shift_end: Timestamp,
    /// No claims before this instant (after running out of budget).
    rest_until: Timestamp,
    summary: AgentSummary,
}

#[derive(Clone, Debug, PartialEq)]
enum TaskStatus {
    NotYetCreated,
    Open,
    Claimed,
    Completed,
    Failed,
}

#[derive(Debug)]
struct Task {
    id: String,
    priority: i32,
    capabilities: Vec<String>,
    dependencies: Vec<usize>,
    created_at: Timestamp,
    work_steps: u32,
    status: TaskStatus,
    failures: u32,
}

struct World<'a, T: Target, K: Ticker> {
    target: &'a T,
    ticker: &'a K,
    sim_clock: bool,
    clock: &'a ManualClock,
    rng: SplitMix64,
    agents: Vec<Agent>,
    tasks: Vec<Task>,
    index: Index,
    summary: Summary,
}

/// What the workload looks tasks up by, kept as statuses change so a step
/// costs what happens in it, not what the whole plan holds. Each gives the
/// choices a scan of every task would, in the same order, so a seed still
/// gives the same log.
#[derive(Debug, Default)]
struct Index {
    /// Open tasks whose dependencies are all completed, best first: highest
    /// priority, then lowest position in the plan.
    ready: BTreeSet<(Reverse<i32>, usize)>,
    /// For each task, the tasks that depend on it.
    dependents: Vec<Vec<usize>>,
    /// Task positions by id.
    by_id: BTreeMap<String, usize>,
    /// Tasks whose creation time has come and that are not created yet, in
    /// plan order; `due_through` tasks have been looked at (they are planned
    /// in creation-time order).
    to_create: BTreeSet<usize>,
    due_through: usize,
}

impl Index {
    fn new(tasks: &[Task]) -> Index {
        let mut index = Index { dependents: vec![Vec::new(); tasks.len()], ..Index::default() };
        for (t, task) in tasks.iter().enumerate() {
            for &d in &task.dependencies {
                index.dependents[d].push(t);
            }
            index.by_id.insert(task.id.clone(), t);
        }
        index
    }
}

/// Runs the workload; `progress(done, total)` is called as simulated time
/// passes. A rejection is part of the workload (lost races, empty budgets);
/// only a platform failure ends the run early.
pub async fn run<T: Target, K: Ticker>(
    target: &T,
    ticker: &K,
    clock: &ManualClock,
    config: Config,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<Summary, Rejection> {
    clock.set(START);
    let mut rng = SplitMix64::new(config.seed);
    let span = Duration::from_secs(86_400 * u64::from(config.days.max(1)));
    let agents = make_agents(&mut rng, config.agents.max(1));
    let tasks = make_tasks(&mut rng, config.tasks, &agents, span);
    let index = Index::new(&tasks);
    let mut world = World {
        target,
        ticker,
        sim_clock: config.sim_clock,
        clock,
        rng,
        agents,
        tasks,
        index,
        summary: Summary::default(),
    };
    world.summary.seed = config.seed;
    world.summary.simulated_from = START.to_string();
    world.setup().await?;
    let steps = span.as_secs() / STEP.as_secs();
    for step in 0..steps {
        let jitter = Duration::from_millis(world.rng.below(1000));
        clock.set(START.plus(STEP * u32::try_from(step).unwrap_or(u32::MAX)).plus(jitter));
        if step > 0 && step % (86_400 / STEP.as_secs()) == 0 {
            world.allocate_budgets().await?;
        }
        world.create_due_tasks().await?;
        world.tick().await?;
        let mut order: Vec<usize> = (0..world.agents.len()).collect();
        shuffle(&mut world.rng, &mut order);
        world.race_for_tasks(&order).await?;
        for i in order {
            world.act(i).await?;
        }
        if step % 60 == 0 || step + 1 == steps {
            progress(step + 1, steps);
        }
    }
    world.summary.simulated_to = clock.now().to_string();
    world.summary.circuits_opened = world.count_circuits_opened().await?;
    world.summary.agents = world
        .agents
        .iter()
        .map(|a| {
            let mut s = a.summary.clone();
            let ended = s.completed + s.failed;
            s.success_rate = if ended == 0 { 0.0 } else { s.completed as f64 / ended as f64 };
            s
        })
        .collect();
    Ok(world.summary)
}

fn shuffle<T>(rng: &mut SplitMix64, items: &mut [T]) {
    for i in (1..items.len()).rev() {
        let j = rng.below(i as u64 + 1) as usize;
        items.swap(i, j);
    }
}

fn make_agents(rng: &mut SplitMix64, count: usize) -> Vec<Agent> {
    (0..count)
        .map(|i| {
            let mut pool: Vec<&str> = CAPABILITIES.to_vec();
            shuffle(rng, &mut pool);
            let mut capabilities: Vec<String> =
                pool[..2 + rng.below(3) as usize].iter().map(|c| c.to_string()).collect();
            capabilities.sort();
            let id = format!("agent-{:02}", i + 1);
            Agent {
                summary: AgentSummary {
                    agent_id: id.clone(),
                    capabilities: capabilities.clone(),
                    ..AgentSummary::default()
                },
                id,
                capabilities,
                reliability: 0.55 + 0.43 * rng.unit(),
                budget: format!("team-{}", i / AGENTS_PER_BUDGET + 1),
                activity: Activity::Offline,
                next_heartbeat: START,
                shift_end: START,
                rest_until: START,
            }
        })
        .collect()
}

fn make_tasks(rng: &mut SplitMix64, count: usize, agents: &[Agent], span: Duration) -> Vec<Task> {
    let span_ms = u64::try_from(span.as_millis()).unwrap_or(u64::MAX);
    // Creation times spread over the first 90% of the span, in order.
    let mut times: Vec<u64> = (0..count).map(|_| rng.below(span_ms / 10 * 9)).collect();
    times.sort_unstable();
    (0..count)
        .map(|i| {
            // Required capabilities are a subset of one agent's, so someone can do it.
            let owner = &agents[rng.below(agents.len() as u64) as usize];
            let mut capabilities = owner.capabilities.clone();
            shuffle(rng, &mut capabilities);
            capabilities.truncate(1 + rng.below(2) as usize);
            capabilities.sort();
            let mut dependencies = Vec::new();
            if i > 0 && rng.chance(0.3) {
                for _ in 0..1 + rng.below(2) {
                    let back = 1 + rng.below(i.min(20) as u64) as usize;
                    dependencies.push(i - back);
                }
                dependencies.sort_unstable();
                dependencies.dedup();
            }
            Task {
                id: format!("task-{:05}", i + 1),
                priority: rng.below(10) as i32,
                capabilities,
                dependencies,
                created_at: START.plus(Duration::from_millis(times[i])),
                work_steps: 2 + rng.below(10) as u32,
                status: TaskStatus::NotYetCreated,
                failures: 0,
            }
        })
        .collect()
}

impl<T: Target, K: Ticker> World<'_, T, K> {
    /// Sends one command; counts the result. `Ok(None)` is a rejection the
    /// workload expects; a platform rejection stops the run.
    async fn send(&mut self, command: Command, actor: &str) -> Result<Option<Accepted>, Rejection> {
        self.summary.commands += 1;
        match self.target.execute(Request::new(command, actor)).await {
            Ok(accepted) => {
                self.summary.accepted += 1;
                Ok(Some(accepted))
            }
            Err(rejection) if rejection.kind == agentlog_core::Kind::Platform => Err(rejection),
            Err(rejection) => {
                *self.summary.rejected.entry(rejection.code.as_str()).or_default() += 1;
                Ok(None)
            }
        }
    }

    async fn setup(&mut self) -> Result<(), Rejection> {
        for i in 0..self.agents.len() {
            let (id, capabilities) = (self.agents[i].id.clone(), self.agents[i].capabilities.clone());
            let name = format!("Agent {}", i + 1);
            self.send(Command::RegisterAgent(RegisterAgent { agent_id: id.clone(), name, capabilities }), &id).await?;
        }
        self.allocate_budgets().await
    }

    async fn allocate_budgets(&mut self) -> Result<(), Rejection> {
        let budgets: std::collections::BTreeSet<String> = self.agents.iter().map(|a| a.budget.clone()).collect();
        for budget_id in budgets {
            let amount = DAILY_ALLOCATION;
            if self.send(Command::AllocateBudget(AllocateBudget { budget_id, amount }), "treasurer").await?.is_some() {
                self.summary.budget_allocated += amount;
            }
        }
        Ok(())
    }

    async fn create_due_tasks(&mut self) -> Result<(), Rejection> {
        let now = self.clock.now();
        while self.index.due_through < self.tasks.len() && self.tasks[self.index.due_through].created_at <= now {
            self.index.to_create.insert(self.index.due_through);
            self.index.due_through += 1;
        }
        let due: Vec<usize> = self.index.to_create.iter().copied().collect();
        for i in due {
            let task = &self.tasks[i];
            let command = Command::CreateTask(CreateTask {
                task_id: task.id.clone(),
                title: format!("work item {}", i + 1),
                priority: task.priority,
                required_capabilities: task.capabilities.clone(),
                dependencies: task.dependencies.iter().map(|d| self.tasks[*d].id.clone()).collect(),
                max_attempts: MAX_ATTEMPTS,
            });
            if self.send(command, "planner").await?.is_some() {
                self.index.to_create.remove(&i);
                self.set_status(i, TaskStatus::Open);
                self.summary.tasks_created += 1;
            }
        }
        Ok(())
    }

    /// Asks the ticker to expire what is due (sessions of vanished agents,
    /// leases that ran out or lost their session), and hands expired tasks
    /// back to the pool.
    async fn tick(&mut self) -> Result<(), Rejection> {
        if !self.sim_clock {
            return Ok(());
        }
        let expired = self.ticker.tick(self.clock.now()).await?;
        let ended = (expired.sessions.len() + expired.leases.len()) as u64;
        self.summary.commands += ended;
        self.summary.accepted += ended;
        for session_id in &expired.sessions {
            // A vanished agent is offline already; any other loses its session.
            for agent in &mut self.agents {
                if matches!(&agent.activity, Activity::Idle { session } | Activity::Working { session, .. } if session == session_id)
                {
                    agent.activity = Activity::Offline;
                }
            }
        }
        for task_id in &expired.leases {
            if let Some(&t) = self.index.by_id.get(task_id) {
                self.set_status(t, TaskStatus::Open);
            }
            self.summary.leases_expired += 1;
        }
        Ok(())
    }

    fn is_ready(&self, task: &Task) -> bool {
        task.status == TaskStatus::Open
            && task.dependencies.iter().all(|d| self.tasks[*d].status == TaskStatus::Completed)
    }

    /// Sets a task's status and keeps the index of ready tasks: the task
    /// itself, and the tasks that depend on it when it enters or leaves
    /// `Completed`.
    fn set_status(&mut self, t: usize, status: TaskStatus) {
        let completion_changed = (self.tasks[t].status == TaskStatus::Completed) != (status == TaskStatus::Completed);
        self.tasks[t].status = status;
        self.refresh_ready(t);
        if completion_changed {
            for d in self.index.dependents[t].clone() {
                self.refresh_ready(d);
            }
        }
    }

    fn refresh_ready(&mut self, t: usize) {
        let key = (Reverse(self.tasks[t].priority), t);
        if self.is_ready(&self.tasks[t]) {
            self.index.ready.insert(key);
        } else {
            self.index.ready.remove(&key);
        }
    }

    /// Every idle agent goes for the best ready task it can do. Agents with
    /// the same skills pick the same task, so claims really race: the first
    /// wins and the others get `already_claimed`.
    async fn race_for_tasks(&mut self, order: &[usize]) -> Result<(), Rejection> {
        let now = self.clock.now();
        let mut picks = Vec::new();
        for &i in order {
            let agent = &self.agents[i];
            let Activity::Idle { session } = &agent.activity else {
                continue;
            };
            if agent.shift_end <= now || agent.rest_until > now {
                continue;
            }
            // The best ready task this agent can do: the first in the index.
            let best = self.index.ready.iter().map(|&(_, t)| t).find(|t| {
                debug_assert!(self.is_ready(&self.tasks[*t]));
                self.tasks[*t].capabilities.iter().all(|c| agent.capabilities.contains(c))
            });
            if let Some(t) = best {
                picks.push((i, t, session.clone()));
            }
        }
        for (i, t, session) in picks {
            let (agent_id, task_id) = (self.agents[i].id.clone(), self.tasks[t].id.clone());
            let command = Command::ClaimTask(ClaimTask {
                task_id,
                agent_id: agent_id.clone(),
                session_id: session.clone(),
                lease_ms: LEASE_MS,
            });
            if self.send(command, &agent_id).await?.is_some() {
                self.set_status(t, TaskStatus::Claimed);
                self.agents[i].activity =
                    Activity::Working { session, task: t, steps_left: self.tasks[t].work_steps, spent: 0 };
                self.agents[i].summary.claims_won += 1;
                self.summary.claims_won += 1;
            } else {
                self.agents[i].summary.claims_lost += 1;
                self.summary.claims_lost += 1;
            }
        }
        Ok(())
    }

    async fn heartbeat_if_due(&mut self, i: usize, session: &str) -> Result<(), Rejection> {
        let now = self.clock.now();
        if self.agents[i].next_heartbeat <= now {
            let agent_id = self.agents[i].id.clone();
            self.send(Command::Heartbeat(Heartbeat { session_id: session.to_owned() }), &agent_id).await?;
            self.agents[i].next_heartbeat = now.plus(HEARTBEAT_EVERY);
        }
        Ok(())
    }

    /// The agent vanishes: no close, no more heartbeats; the ticker
    /// expires its session once the deadline passes.
    fn abandon(&mut self, i: usize) {
        self.agents[i].activity = Activity::Offline;
        self.summary.sessions_abandoned += 1;
    }

    async fn act(&mut self, i: usize) -> Result<(), Rejection> {
        let now = self.clock.now();
        let agent_id = self.agents[i].id.clone();
        match self.agents[i].activity.clone() {
            Activity::Offline => {
                if self.rng.chance(0.01) {
                    let command = Command::OpenSession(OpenSession {
                        agent_id: agent_id.clone(),
                        session_id: None,
                        heartbeat_timeout_ms: HEARTBEAT_TIMEOUT_MS,
                    });
                    if let Some(accepted) = self.send(command, &agent_id).await? {
                        let session = accepted.session_id.expect("open_session names its session");
                        let shift = Duration::from_secs(3600 * (4 + self.rng.below(6)));
                        let agent = &mut self.agents[i];
                        agent.activity = Activity::Idle { session };
                        agent.next_heartbeat = now.plus(HEARTBEAT_EVERY);
                        agent.shift_end = now.plus(shift);
                        self.summary.sessions_opened += 1;
                    }
                }
            }
            Activity::Idle { session } => {
                if self.agents[i].shift_end <= now {
                    if self.rng.chance(0.2) && self.sim_clock {
                        self.abandon(i);
                    } else {
                        let command =
                            Command::CloseSession(CloseSession { session_id: session, reason: "shift over".into() });
                        self.send(command, &agent_id).await?;
                        self.agents[i].activity = Activity::Offline;
                    }
                } else {
                    self.heartbeat_if_due(i, &session).await?;
                }
            }
            Activity::Working { session, task, steps_left, spent } => {
                if self.rng.chance(0.002) && self.sim_clock {
                    // Vanishes mid-task: the lease will run out and the
                    // ticker will hand the task back.
                    self.abandon(i);
                    return Ok(());
                }
                self.heartbeat_if_due(i, &session).await?;
                if steps_left > 0 {
                    self.work_step(i, &session, task, steps_left, spent).await?;
                } else {
                    self.finish(i, session, task, spent).await?;
                }
            }
        }
        Ok(())
    }

    async fn work_step(
        &mut self,
        i: usize,
        session: &str,
        task: usize,
        steps_left: u32,
        spent: u64,
    ) -> Result<(), Rejection> {
        let agent_id = self.agents[i].id.clone();
        let task_id = self.tasks[task].id.clone();
        let kind = match self.rng.below(3) {
            0 => ActionKind::Think,
            1 => ActionKind::Act,
            _ => ActionKind::Learn,
        };
        let failed = self.rng.chance((1.0 - self.agents[i].reliability) / 3.0);
        let outcome = if failed { ActionOutcome::Failed } else { ActionOutcome::Succeeded };
        let cost = 5 + self.rng.below(40);
        let action = Command::RecordAction(RecordAction {
            agent_id: agent_id.clone(),
            session_id: session.to_owned(),
            task_id: task_id.clone(),
            kind,
            cost,
            outcome,
            detail: String::new(),
        });
        self.send(action, &agent_id).await?;
        let debit = Command::DebitBudget(DebitBudget {
            budget_id: self.agents[i].budget.clone(),
            amount: cost,
            agent_id: agent_id.clone(),
            session_id: session.to_owned(),
            task_id: task_id.clone(),
            reason: format!("{kind:?} step").to_lowercase(),
            failed,
        });
        let paid = self.send(debit, &agent_id).await?;
        match paid {
            Some(_) => {
                self.summary.budget_spent += cost;
                self.agents[i].activity = Activity::Working {
                    session: session.to_owned(),
                    task,
                    steps_left: steps_left - 1,
                    spent: spent + cost,
                };
            }
            None => {
                // Out of budget: hand the task back and wait.
                let release = Command::ReleaseTask(ReleaseTask {
                    task_id,
                    agent_id: agent_id.clone(),
                    session_id: session.to_owned(),
                    reason: "out of budget".into(),
                });
                if self.send(release, &agent_id).await?.is_some() {
                    self.set_status(task, TaskStatus::Open);
                }
                self.agents[i].activity = Activity::Idle { session: session.to_owned() };
                self.agents[i].rest_until = self.clock.now().plus(REST_AFTER_REFUSAL);
            }
        }
        Ok(())
    }

    async fn finish(&mut self, i: usize, session: String, task: usize, spent: u64) -> Result<(), Rejection> {
        let agent_id = self.agents[i].id.clone();
        let task_id = self.tasks[task].id.clone();
        let succeeded = self.rng.chance(self.agents[i].reliability);
        let command = if succeeded {
            Command::CompleteTask(CompleteTask {
                task_id,
                agent_id: agent_id.clone(),
                session_id: session.clone(),
                result: "done".into(),
            })
        } else {
            Command::FailTask(FailTask {
                task_id,
                agent_id: agent_id.clone(),
                session_id: session.clone(),
                reason: "could not finish".into(),
            })
        };
        if self.send(command, &agent_id).await?.is_some() {
            if succeeded {
                self.set_status(task, TaskStatus::Completed);
                self.agents[i].summary.completed += 1;
                self.summary.tasks_completed += 1;
            } else {
                self.tasks[task].failures += 1;
                let terminal = self.tasks[task].failures >= MAX_ATTEMPTS;
                self.set_status(task, if terminal { TaskStatus::Failed } else { TaskStatus::Open });
                self.agents[i].summary.failed += 1;
                if terminal {
                    self.summary.tasks_failed += 1;
                }
                // Half the time the team gets part of a failed task's spend back.
                if spent > 1 && self.rng.chance(0.5) {
                    let amount = spent / 2;
                    let refund = Command::RefundBudget(RefundBudget {
                        budget_id: self.agents[i].budget.clone(),
                        amount,
                        reason: format!("failed {}", self.tasks[task].id),
                    });
                    if self.send(refund, "treasurer").await?.is_some() {
                        self.summary.budget_refunded += amount;
                    }
                }
            }
        } else {
            // The lease ran out under us: the ticker hands the task back.
            self.set_status(task, TaskStatus::Open);
        }
        self.agents[i].activity = Activity::Idle { session };
        Ok(())
    }

    /// Circuits open both on accepted failed debits and on refusals, so
    /// they are counted from the budgets' streams.
    async fn count_circuits_opened(&self) -> Result<u64, Rejection> {
        let budgets: std::collections::BTreeSet<&String> = self.agents.iter().map(|a| &a.budget).collect();
        let mut opened = 0;
        for budget in budgets {
            let events = self.target.read_stream(&format!("budget/{budget}")).await?;
            opened +=
                events.iter().filter(|e| matches!(e.body, Some(agentlog_core::Body::BudgetCircuitOpened(_)))).count()
                    as u64;
        }
        Ok(opened)
    }
}

/// The demo's handler: seeded ids and the manual clock.
pub fn handler<L: Log>(log: Arc<L>, clock: Arc<ManualClock>, seed: u64) -> Handler<L> {
    Handler::new(log, clock, Arc::new(agentlog_core::SeededIdGen::new(seed)))
}
