//! Reputation: what the log says about how well each agent works, overall and
//! per capability (the required capabilities of the tasks it finished or
//! failed). A pure fold of events; time is event time only.
//!
//! Per agent and per (agent, capability) it keeps:
//!
//! * `successes` (`TaskCompleted` by the agent) and `failures` (`TaskFailed` by
//!   the agent, and `TaskLeaseExpired` of its claim);
//! * decayed success and failure weights, half-life 7 days of event time.
//!   Before an outcome at `ts` both are multiplied by `HOURLY^n`, `n` the whole
//!   hours since the time they were last decayed to, which then advances by
//!   `n` hours only (so the grid is whole hours since the epoch). `HOURLY^n` is
//!   computed by squaring with plain `f64` multiplications, never `powf`, so
//!   every platform gets the same bits; past [`MAX_DECAY_HOURS`] it is 0. The
//!   decayed success rate `s / (s + f)` is `None` while `s + f == 0`;
//! * cost: `ActionRecorded.cost` plus `BudgetDebited.amount` of the agent (to a
//!   capability when the event names a task still open whose requirements are
//!   known), kept as two sums; they usually record the same spend, so the
//!   cost is the larger of the two, and cost per success = cost / successes, an
//!   `f64`, `None` without successes;
//! * claim-to-completion latency of each completion of a task the agent had
//!   claimed: log2 buckets in milliseconds (bucket `i` holds `[2^(i-1), 2^i)`,
//!   bucket 0 holds `< 1 ms`), percentiles reported as the bucket's exclusive
//!   upper bound `2^i` ms, and the exact fraction within the SLO (a field of the
//!   state, [`Reputation::with_slo_ms`], default 15 minutes; inclusive).
//!
//! The score, in `[0, 1]` (`s`, `f`: the decayed weights):
//!
//! ```text
//! score = 0.6 * (s + 0.5) / (s + f + 1)        decayed success rate with one neutral pseudo-outcome
//!       + 0.2 * within_slo / timed             0.5 without timed completions
//!       + 0.2 * m / (m + c)                    c: its cost per success, m: the fleet's
//!                                              (all cost / all successes); 0.5 when either
//!                                              is unknown or both are 0
//! ```
//!
//! An agent without history scores 0.5. The state also remembers each task
//! not yet finished for good (its requirements and current claim). Floats in the state are serialised as
//! their bit patterns, so an entity read back from its JSON hashes the same.
use std::collections::BTreeMap;

use agentlog_core::{Body, Envelope};
use serde::{Deserialize, Serialize};

use crate::Projection;
use crate::entities::{Entities, Family, Single};

pub const HOUR_NS: u64 = 3_600 * 1_000_000_000;
/// The half-life of the success and failure weights: 7 days.
pub const HALF_LIFE_NS: u64 = 168 * HOUR_NS;
/// `0.5^(1/168)`: the decay of one hour.
pub const HOURLY: f64 = 0.995_882_623_658_297_4;
/// Beyond this many hours (about 11 years) the weights become 0.
pub const MAX_DECAY_HOURS: u64 = 100_000;
pub const DEFAULT_SLO_MS: u64 = 15 * 60 * 1000;
const W_RATE: f64 = 0.6;
const W_SLO: f64 = 0.2;
const W_COST: f64 = 0.2;
const NEUTRAL: f64 = 0.5;

/// `HOURLY^hours` by squaring (0 beyond [`MAX_DECAY_HOURS`]).
pub fn decay_factor(hours: u64) -> f64 {
    if hours > MAX_DECAY_HOURS {
        return 0.0;
    }
    let (mut base, mut n, mut acc) = (HOURLY, hours, 1.0);
    while n > 0 {
        if n & 1 == 1 {
            acc *= base;
        }
        base *= base;
        n >>= 1;
    }
    acc
}

/// The reputation's state, each entity its own key in the projection
/// store: families `agent` (per agent: its overall stats and its stats per
/// capability, which an outcome updates together), `task` (tasks not yet
/// finished for good: their requirements and current claim) and `fleet`
/// (one entity: the SLO and the fleet's successes).
#[derive(Debug, Clone, PartialEq)]
pub struct Reputation {
    agents: Entities<String, AgentState>,
    tasks: Entities<String, TaskState>,
    fleet: Single<Fleet>,
    /// The agents' costs summed (derived: kept as the fold goes, rebuilt
    /// when a checkpoint is loaded), so a score does not read every agent.
    fleet_cost: u128,
}

#[derive(Serialize, Deserialize, Default, Debug, Clone, PartialEq)]
struct AgentState {
    overall: Stats,
    capabilities: BTreeMap<String, Stats>,
}

#[derive(Serialize, Deserialize, Default, Debug, Clone, PartialEq)]
struct Fleet {
    slo_ms: u64,
    successes: u64,
}

#[derive(Serialize, Deserialize, Default, Debug, Clone, PartialEq)]
struct TaskState {
    /// Sorted, each once: a set, kept as a `Vec` (one allocation, not a
    /// tree node, for each of the many tasks in memory; the same JSON).
    required: Vec<String>,
    claim: Option<Claim>,
}

#[derive(Serialize, Deserialize, Default, Debug, Clone, PartialEq)]
struct Claim {
    agent_id: String,
    ts: u64,
}

#[derive(Serialize, Deserialize, Default, Debug, Clone, PartialEq)]
struct Stats {
    successes: u64,
    failures: u64,
    #[serde(with = "f64_bits")]
    success_weight: f64,
    #[serde(with = "f64_bits")]
    failure_weight: f64,
    decayed_to_ts: u64,
    action_cost: u64,
    debited: u64,
    /// log2 bucket → completions.
    latency: BTreeMap<u32, u64>,
    timed: u64,
    within_slo: u64,
}

#[derive(Clone, Copy)]
enum Outcome {
    /// With the claim-to-completion latency in ns when the claim is known.
    Success(Option<u64>),
    Failure,
}

/// One agent's reputation, as the CLI prints it.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct AgentSummary {
    pub agent_id: String,
    #[serde(flatten)]
    pub overall: StatsSummary,
    pub capabilities: BTreeMap<String, StatsSummary>,
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct StatsSummary {
    pub score: f64,
    pub successes: u64,
    pub failures: u64,
    /// Decayed weights as of `decayed_to_ts` (the last outcome, to the hour).
    pub success_weight: f64,
    pub failure_weight: f64,
    pub decayed_to_ts: u64,
    pub success_rate: Option<f64>,
    pub action_cost: u64,
    pub debited: u64,
    pub cost_per_success: Option<f64>,
    pub timed_completions: u64,
    /// Bucket upper bounds (exclusive), ms.
    pub latency_p50_ms: Option<u64>,
    pub latency_p90_ms: Option<u64>,
    pub latency_p99_ms: Option<u64>,
    pub slo_attainment: Option<f64>,
}

impl Default for Reputation {
    fn default() -> Self {
        Self::with_slo_ms(DEFAULT_SLO_MS)
    }
}

impl Reputation {
    pub fn with_slo_ms(slo_ms: u64) -> Self {
        Self {
            agents: Entities::new("agent"),
            tasks: Entities::new("task"),
            fleet: Single::new("fleet", Fleet { slo_ms, successes: 0 }),
            fleet_cost: 0,
        }
    }

    pub fn slo_ms(&self) -> u64 {
        self.fleet.get().slo_ms
    }

    pub fn agent(&self, agent_id: &str) -> Option<AgentSummary> {
        self.agents.get(agent_id).map(|a| self.summarise(agent_id, &a))
    }

    /// Every agent with any history, in agent id order.
    pub fn agents(&self) -> impl Iterator<Item = AgentSummary> + '_ {
        self.agents_after(None)
    }

    /// Agents with history in id order, from the first after `after`.
    pub fn agents_after<'a>(&'a self, after: Option<&str>) -> impl Iterator<Item = AgentSummary> + 'a {
        let fleet = self.fleet_cost_per_success();
        self.agents.iter_after(after).map(move |(id, a)| self.summary(&id, &a, fleet))
    }

    /// The agent's score; 0.5 for an agent without history.
    pub fn score(&self, agent_id: &str) -> f64 {
        self.agents.get(agent_id).map_or(NEUTRAL, |a| a.overall.score(self.fleet_cost_per_success()))
    }

    fn fleet_cost_per_success(&self) -> Option<f64> {
        // What summing the agents' costs with saturating adds gives.
        let fleet_cost = u64::try_from(self.fleet_cost).unwrap_or(u64::MAX);
        let successes = self.fleet.get().successes;
        (successes > 0).then(|| fleet_cost as f64 / successes as f64)
    }

    fn summarise(&self, agent_id: &str, agent: &AgentState) -> AgentSummary {
        self.summary(agent_id, agent, self.fleet_cost_per_success())
    }

    fn summary(&self, agent_id: &str, agent: &AgentState, fleet: Option<f64>) -> AgentSummary {
        AgentSummary {
            agent_id: agent_id.to_owned(),
            overall: agent.overall.summary(fleet),
            capabilities: agent.capabilities.iter().map(|(c, s)| (c.clone(), s.summary(fleet))).collect(),
        }
    }

    /// Ends the task's claim; returns its requirements (forgetting the task when `finished`).
    fn end_claim(&mut self, task_id: &str, finished: bool) -> TaskState {
        if finished {
            return self.tasks.remove(task_id).unwrap_or_default();
        }
        self.tasks
            .get_mut(task_id)
            .map(|t| TaskState { required: t.required.clone(), claim: t.claim.take() })
            .unwrap_or_default()
    }

    fn record(&mut self, agent_id: &str, required: &[String], ts: u64, outcome: Outcome) {
        if agent_id.is_empty() {
            return;
        }
        let slo_ns = self.slo_ms().saturating_mul(1_000_000);
        let agent = self.agents.get_or_insert_with(agent_id, AgentState::default);
        agent.overall.record(ts, outcome, slo_ns);
        for cap in required {
            with_capability(&mut agent.capabilities, cap, |stats| stats.record(ts, outcome, slo_ns));
        }
        if let Outcome::Success(_) = outcome {
            let fleet = self.fleet.get_mut();
            fleet.successes = fleet.successes.saturating_add(1);
        }
    }

    fn add_cost(&mut self, agent_id: &str, task_id: &str, amount: u64, debit: bool) {
        if agent_id.is_empty() {
            return;
        }
        let agent = self.agents.get_or_insert_with(agent_id, AgentState::default);
        let before = agent.overall.cost();
        agent.overall.add_cost(amount, debit);
        self.fleet_cost = self.fleet_cost - u128::from(before) + u128::from(agent.overall.cost());
        let task = self.tasks.get(task_id);
        for cap in task.iter().flat_map(|t| &t.required) {
            with_capability(&mut agent.capabilities, cap, |stats| stats.add_cost(amount, debit));
        }
    }
}

/// Changes the agent's figures for one capability, added when it has none
/// yet (the name is copied only then; one search when it has).
fn with_capability(capabilities: &mut BTreeMap<String, Stats>, name: &str, change: impl FnOnce(&mut Stats)) {
    match capabilities.get_mut(name) {
        Some(stats) => change(stats),
        None => change(capabilities.entry(name.to_owned()).or_default()),
    }
}

impl Projection for Reputation {
    const NAME: &'static str = "reputation";

    fn families(&self) -> Vec<&dyn Family> {
        vec![&self.agents, &self.tasks, &self.fleet]
    }

    fn families_mut(&mut self) -> Vec<&mut dyn Family> {
        vec![&mut self.agents, &mut self.tasks, &mut self.fleet]
    }

    fn loaded(&mut self) {
        self.fleet_cost = self.agents.values().map(|a| u128::from(a.overall.cost())).sum();
    }

    fn apply(&mut self, event: &Envelope) {
        let ts = event.ts;
        match &event.body {
            Some(Body::TaskCreated(e)) => {
                let mut required = e.required_capabilities.clone();
                required.sort_unstable();
                required.dedup();
                self.tasks.insert(e.task_id.clone(), TaskState { required, claim: None });
            }
            Some(Body::TaskClaimed(e)) => {
                self.tasks.get_or_insert_with(&e.task_id, TaskState::default).claim =
                    Some(Claim { agent_id: e.agent_id.clone(), ts });
            }
            Some(Body::TaskReleased(e)) => {
                self.end_claim(&e.task_id, false);
            }
            Some(Body::TaskLeaseExpired(e)) => {
                let task = self.end_claim(&e.task_id, false);
                self.record(&e.agent_id, &task.required, ts, Outcome::Failure);
            }
            Some(Body::TaskFailed(e)) => {
                let task = self.end_claim(&e.task_id, e.terminal);
                self.record(&e.agent_id, &task.required, ts, Outcome::Failure);
            }
            Some(Body::TaskCompleted(e)) => {
                let task = self.end_claim(&e.task_id, true);
                let latency = task.claim.filter(|c| c.agent_id == e.agent_id).map(|c| ts.saturating_sub(c.ts));
                self.record(&e.agent_id, &task.required, ts, Outcome::Success(latency));
            }
            Some(Body::ActionRecorded(e)) => self.add_cost(&e.agent_id, &e.task_id, e.cost, false),
            Some(Body::BudgetDebited(e)) => self.add_cost(&e.agent_id, &e.task_id, e.amount, true),
            _ => {}
        }
    }
}

impl Stats {
    fn record(&mut self, ts: u64, outcome: Outcome, slo_ns: u64) {
        let hours = ts.saturating_sub(self.decayed_to_ts) / HOUR_NS;
        if hours > 0 {
            let factor = decay_factor(hours);
            self.success_weight *= factor;
            self.failure_weight *= factor;
            self.decayed_to_ts += hours * HOUR_NS;
        }
        match outcome {
            Outcome::Success(latency) => {
                self.successes = self.successes.saturating_add(1);
                self.success_weight += 1.0;
                if let Some(ns) = latency {
                    let bucket = u64::BITS - (ns / 1_000_000).leading_zeros();
                    *self.latency.entry(bucket).or_default() += 1;
                    self.timed += 1;
                    self.within_slo += u64::from(ns <= slo_ns);
                }
            }
            Outcome::Failure => {
                self.failures = self.failures.saturating_add(1);
                self.failure_weight += 1.0;
            }
        }
    }

    fn add_cost(&mut self, amount: u64, debit: bool) {
        let sum = if debit { &mut self.debited } else { &mut self.action_cost };
        *sum = sum.saturating_add(amount);
    }

    /// Action costs and budget debits usually record the same spend (the
    /// demo records both), so the cost is the larger sum, not their total.
    fn cost(&self) -> u64 {
        self.action_cost.max(self.debited)
    }

    fn cost_per_success(&self) -> Option<f64> {
        (self.successes > 0).then(|| self.cost() as f64 / self.successes as f64)
    }

    fn success_rate(&self) -> Option<f64> {
        let total = self.success_weight + self.failure_weight;
        (total > 0.0).then(|| self.success_weight / total)
    }

    fn slo_attainment(&self) -> Option<f64> {
        (self.timed > 0).then(|| self.within_slo as f64 / self.timed as f64)
    }

    /// The upper bound (exclusive, ms) of the bucket holding the `percent`th percentile.
    fn percentile_ms(&self, percent: u64) -> Option<u64> {
        let rank = (u128::from(self.timed) * u128::from(percent)).div_ceil(100).max(1);
        let mut seen = 0u128;
        let (&bucket, _) = self.latency.iter().find(|&(_, &n)| {
            seen += u128::from(n);
            seen >= rank
        })?;
        Some(1u64.checked_shl(bucket).unwrap_or(u64::MAX))
    }

    fn score(&self, fleet_cost_per_success: Option<f64>) -> f64 {
        let rate = (self.success_weight + NEUTRAL) / (self.success_weight + self.failure_weight + 1.0);
        let cost = match (self.cost_per_success(), fleet_cost_per_success) {
            (Some(c), Some(m)) if c + m > 0.0 => m / (m + c),
            _ => NEUTRAL,
        };
        (W_RATE * rate + W_SLO * self.slo_attainment().unwrap_or(NEUTRAL) + W_COST * cost).clamp(0.0, 1.0)
    }

    fn summary(&self, fleet_cost_per_success: Option<f64>) -> StatsSummary {
        StatsSummary {
            score: self.score(fleet_cost_per_success),
            successes: self.successes,
            failures: self.failures,
            success_weight: self.success_weight,
            failure_weight: self.failure_weight,
            decayed_to_ts: self.decayed_to_ts,
            success_rate: self.success_rate(),
            action_cost: self.action_cost,
            debited: self.debited,
            cost_per_success: self.cost_per_success(),
            timed_completions: self.timed,
            latency_p50_ms: self.percentile_ms(50),
            latency_p90_ms: self.percentile_ms(90),
            latency_p99_ms: self.percentile_ms(99),
            slo_attainment: self.slo_attainment(),
        }
    }
}

/// An `f64` as its bit pattern: serde_json does not read every float back bit for bit.
mod f64_bits {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &f64, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(v.to_bits())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
        u64::deserialize(d).map(f64::from_bits)
    }
}

#[cfg(test)]
mod tests {
    use agentlog_core::schema::{
        ActionRecorded, BudgetDebited, TaskClaimed, TaskCompleted, TaskCreated, TaskFailed, TaskLeaseExpired,
        TaskReleased,
    };
    use proptest::prelude::*;

    use super::*;
    use crate::state_hash;

    const MS: u64 = 1_000_000;
    const T0: u64 = 1_700_000_000_000_000_000;

    fn env(seq: u64, ts: u64, body: Body) -> Envelope {
        Envelope { seq, ts, stream: "test".into(), body: Some(body), ..Default::default() }
    }

    /// The state as the projection store would read it back: every entity
    /// through its bytes.
    fn read_back(state: &Reputation) -> Reputation {
        let mut back = Reputation::default();
        for (from, to) in state.families().into_iter().zip(back.families_mut()) {
            from.for_each(&mut |key, value| to.load(&key, &value).unwrap());
        }
        back
    }

    fn fold(state: Reputation, bodies: impl IntoIterator<Item = (u64, Body)>) -> Reputation {
        let mut state = state;
        for (i, (ts, body)) in bodies.into_iter().enumerate() {
            state.apply(&env(i as u64 + 1, ts, body));
        }
        state
    }

    fn created(task: &str, caps: &[&str]) -> Body {
        let required_capabilities = caps.iter().map(|c| c.to_string()).collect();
        Body::TaskCreated(TaskCreated { task_id: task.into(), required_capabilities, ..Default::default() })
    }
    fn claimed(task: &str, agent: &str) -> Body {
        Body::TaskClaimed(TaskClaimed { task_id: task.into(), agent_id: agent.into(), ..Default::default() })
    }
    fn completed(task: &str, agent: &str) -> Body {
        Body::TaskCompleted(TaskCompleted { task_id: task.into(), agent_id: agent.into(), ..Default::default() })
    }
    fn failed(task: &str, agent: &str, terminal: bool) -> Body {
        Body::TaskFailed(TaskFailed { task_id: task.into(), agent_id: agent.into(), terminal, ..Default::default() })
    }
    fn expired(task: &str, agent: &str) -> Body {
        Body::TaskLeaseExpired(TaskLeaseExpired { task_id: task.into(), agent_id: agent.into(), ..Default::default() })
    }
    fn released(task: &str, agent: &str) -> Body {
        Body::TaskReleased(TaskReleased { task_id: task.into(), agent_id: agent.into(), ..Default::default() })
    }
    fn action(agent: &str, task: &str, cost: u64) -> Body {
        Body::ActionRecorded(ActionRecorded {
            agent_id: agent.into(),
            task_id: task.into(),
            cost,
            ..Default::default()
        })
    }
    fn debited(agent: &str, task: &str, amount: u64) -> Body {
        Body::BudgetDebited(BudgetDebited {
            agent_id: agent.into(),
            task_id: task.into(),
            amount,
            ..Default::default()
        })
    }

    #[test]
    fn counts_outcomes_per_agent_and_capability() {
        let r = fold(
            Reputation::default(),
            [
                created("t1", &["rust", "sql"]),
                created("t2", &["rust"]),
                claimed("t1", "a"),
                completed("t1", "a"),
                claimed("t2", "a"),
                failed("t2", "a", false),
                claimed("t2", "a"),
                completed("t2", "a"),
                created("t3", &["sql"]),
                claimed("t3", "b"),
                failed("t3", "b", true),
            ]
            .into_iter()
            .enumerate()
            .map(|(i, b)| (T0 + i as u64 * MS, b)),
        );
        let a = r.agent("a").unwrap();
        assert_eq!((a.overall.successes, a.overall.failures), (2, 1));
        assert_eq!((a.capabilities["rust"].successes, a.capabilities["rust"].failures), (2, 1));
        assert_eq!((a.capabilities["sql"].successes, a.capabilities["sql"].failures), (1, 0));
        assert_eq!(a.overall.success_rate, Some(2.0 / 3.0));
        let b = r.agent("b").unwrap();
        assert_eq!((b.overall.successes, b.overall.failures), (0, 1));
        assert_eq!(b.capabilities.keys().collect::<Vec<_>>(), ["sql"]);
        assert_eq!(r.agents().map(|s| s.agent_id).collect::<Vec<_>>(), ["a", "b"]);
        assert!(r.tasks.iter().next().is_none(), "finished tasks are forgotten");
    }

    #[test]
    fn weights_halve_in_seven_days() {
        assert_eq!(decay_factor(0), 1.0);
        assert!((decay_factor(168) - 0.5).abs() < 1e-9);
        assert!((decay_factor(336) - 0.25).abs() < 1e-9);
        assert_eq!(decay_factor(MAX_DECAY_HOURS + 1), 0.0);

        // Not on an hour boundary: the remainder stays for later.
        let start = T0 + 25 * 60_000 * MS;
        let r = fold(
            Reputation::default(),
            [(start, completed("t1", "a")), (start + HALF_LIFE_NS, failed("t2", "a", true))],
        );
        let a = r.agent("a").unwrap().overall;
        assert!((a.success_weight - 0.5).abs() < 1e-9, "{}", a.success_weight);
        assert_eq!(a.failure_weight, 1.0);
        assert_eq!(a.decayed_to_ts, (start + HALF_LIFE_NS) / HOUR_NS * HOUR_NS);
        assert!((a.success_rate.unwrap() - 1.0 / 3.0).abs() < 1e-9);

        // Decay counts whole hours since the epoch: none inside one, one across a boundary however close.
        let hour = T0 / HOUR_NS * HOUR_NS;
        let r = fold(Reputation::default(), [(hour, completed("t1", "a")), (hour + HOUR_NS - 1, completed("t2", "a"))]);
        assert_eq!(r.agent("a").unwrap().overall.success_weight, 2.0);
        let r = fold(Reputation::default(), [(hour - 1, completed("t1", "a")), (hour, completed("t2", "a"))]);
        assert_eq!(r.agent("a").unwrap().overall.success_weight, 1.0 + HOURLY);

        // After more than MAX_DECAY_HOURS the past is gone.
        let r = fold(
            Reputation::default(),
            [(T0, failed("t1", "a", true)), (T0 + 200_000 * HOUR_NS, completed("t2", "a"))],
        );
        assert_eq!(r.agent("a").unwrap().overall.success_rate, Some(1.0));
    }

    #[test]
    fn latency_percentiles_and_slo() {
        // Five tasks in 1 s, four in 10 min, one in 1 h.
        let latencies = [[1_000; 5].as_slice(), &[600_000; 4], &[3_600_000]].concat();
        let bodies = |i: usize, ms: u64| {
            let task = format!("t{i}");
            let start = T0 + i as u64 * 2 * HOUR_NS;
            [(start, claimed(&task, "a")), (start + ms * MS, completed(&task, "a"))]
        };
        let events: Vec<_> = latencies.iter().enumerate().flat_map(|(i, &ms)| bodies(i, ms)).collect();

        let a = fold(Reputation::default(), events.clone()).agent("a").unwrap().overall;
        assert_eq!(a.timed_completions, 10);
        assert_eq!(a.latency_p50_ms, Some(1 << 10)); // 1000 ms < 1024
        assert_eq!(a.latency_p90_ms, Some(1 << 20)); // 600 000 ms < 1 048 576
        assert_eq!(a.latency_p99_ms, Some(1 << 22)); // 3 600 000 ms < 4 194 304
        assert_eq!(a.slo_attainment, Some(0.9));

        let strict = fold(Reputation::with_slo_ms(1_000), events);
        assert_eq!(strict.agent("a").unwrap().overall.slo_attainment, Some(0.5), "the SLO is inclusive");
        assert_eq!(strict.slo_ms(), 1_000);
    }

    #[test]
    fn lease_expiry_is_a_failure_and_ends_the_claim() {
        let r = fold(
            Reputation::default(),
            [
                (T0, created("t1", &["rust"])),
                (T0 + 1, claimed("t1", "a")),
                (T0 + 2, expired("t1", "a")),
                (T0 + 3, claimed("t1", "b")),
                (T0 + 4, released("t1", "b")),
                (T0 + 5, completed("t1", "a")),
            ],
        );
        let a = r.agent("a").unwrap();
        assert_eq!((a.overall.successes, a.overall.failures), (1, 1));
        assert_eq!(a.capabilities["rust"].failures, 1);
        assert_eq!(a.overall.timed_completions, 0, "completed without a claim of its own");
        assert!(r.agent("b").is_none(), "a release is neither success nor failure");
    }

    #[test]
    fn cost_and_score() {
        assert_eq!(Reputation::default().score("nobody"), 0.5);
        let r = fold(
            Reputation::default(),
            [
                (T0, created("t1", &["rust"])),
                (T0, claimed("t1", "cheap")),
                (T0, action("cheap", "t1", 10)),
                (T0, debited("cheap", "t1", 10)),
                (T0 + MS, completed("t1", "cheap")),
                (T0, created("t2", &[])),
                (T0, claimed("t2", "dear")),
                (T0, debited("dear", "t2", 60)),
                (T0 + MS, completed("t2", "dear")),
                (T0, debited("", "t2", 1_000)),
            ],
        );
        let cheap = r.agent("cheap").unwrap();
        assert_eq!((cheap.overall.action_cost, cheap.overall.debited), (10, 10));
        // The action and the debit record the same spend: counted once.
        assert_eq!(cheap.overall.cost_per_success, Some(10.0));
        assert_eq!(cheap.capabilities["rust"].cost_per_success, Some(10.0));
        // Fleet: (10 + 60) / 2 = 35 per success. cheap: 35 / 45; dear: 35 / 95.
        let expect = |cost: f64| 0.6 * 1.5 / 2.0 + 0.2 * 1.0 + 0.2 * cost;
        assert!((r.score("cheap") - expect(35.0 / 45.0)).abs() < 1e-12);
        assert!((r.score("dear") - expect(35.0 / 95.0)).abs() < 1e-12);
        assert_eq!(cheap.overall.score, r.score("cheap"));
    }

    #[test]
    fn folding_twice_and_reading_back_give_the_same_hash() {
        let events: Vec<_> = (0..200u64)
            .flat_map(|i| {
                let (task, agent) = (format!("t{i}"), format!("a{}", i % 3));
                let ts = T0 + i * 7 * HOUR_NS / 3 + i * 12_345;
                let end = if i % 4 == 0 { failed(&task, &agent, true) } else { completed(&task, &agent) };
                [(ts, created(&task, &["x"])), (ts, claimed(&task, &agent)), (ts + i * MS, end)]
            })
            .collect();
        let one = fold(Reputation::default(), events.clone());
        let two = fold(Reputation::default(), events);
        assert_eq!(state_hash(&one), state_hash(&two));
        let back = read_back(&one);
        assert_eq!(back, one);
        assert_eq!(state_hash(&back), state_hash(&one));
    }

    fn arb_body() -> impl Strategy<Value = Body> {
        let id = |prefix: &'static str, n: u8| (0..n).prop_map(move |i| format!("{prefix}{i}"));
        let caps = prop::collection::vec(id("c", 4), 0..4);
        prop_oneof![
            (id("t", 5), caps).prop_map(|(t, c)| created(&t, &c.iter().map(String::as_str).collect::<Vec<_>>())),
            (id("t", 6), id("a", 4)).prop_map(|(t, a)| claimed(&t, &a)),
            (id("t", 6), id("a", 4)).prop_map(|(t, a)| completed(&t, &a)),
            (id("t", 6), id("a", 4), any::<bool>()).prop_map(|(t, a, terminal)| failed(&t, &a, terminal)),
            (id("t", 6), id("a", 4)).prop_map(|(t, a)| expired(&t, &a)),
            (id("t", 6), id("a", 4)).prop_map(|(t, a)| released(&t, &a)),
            (id("t", 6), id("a", 5), any::<u64>()).prop_map(|(t, a, c)| action(&a, &t, c)),
            (id("t", 6), id("a", 5), any::<u64>()).prop_map(|(t, a, c)| debited(
                if a == "a4" { "" } else { &a },
                &t,
                c
            )),
        ]
    }

    fn arb_events() -> impl Strategy<Value = Vec<Envelope>> {
        let step = prop_oneof![0..3 * HOUR_NS, 0..HALF_LIFE_NS * 4, any::<u64>()];
        prop::collection::vec((prop::option::weighted(0.95, arb_body()), step, any::<bool>()), 0..80).prop_map(
            |items| {
                let mut ts = 0u64;
                let to_env = |(i, (body, step, jump)): (usize, (Option<Body>, u64, bool))| {
                    ts = if jump { step } else { ts.saturating_add(step) };
                    Envelope { seq: i as u64 + 1, ts, body, ..Default::default() }
                };
                items.into_iter().enumerate().map(to_env).collect()
            },
        )
    }

    proptest! {
        #[test]
        fn random_events_fold_deterministically(events in arb_events(), slo_ms in any::<u64>()) {
            let (mut one, mut two) = (Reputation::with_slo_ms(slo_ms), Reputation::with_slo_ms(slo_ms));
            for e in &events {
                one.apply(e);
            }
            for e in &events {
                two.apply(e);
            }
            prop_assert_eq!(state_hash(&one), state_hash(&two));
            let back = read_back(&one);
            prop_assert_eq!(state_hash(&back), state_hash(&one));
            for summary in one.agents() {
                for s in std::iter::once(&summary.overall).chain(summary.capabilities.values()) {
                    prop_assert!((0.0..=1.0).contains(&s.score));
                    prop_assert!(s.success_weight.is_finite() && s.failure_weight.is_finite());
                }
                serde_json::to_string(&summary).unwrap();
            }
        }
    }
}
