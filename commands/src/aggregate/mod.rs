//! Aggregate state and the pure `decide` functions.
//!
//! Each aggregate is a fold over its own stream's events (`apply`), and each
//! decision is a function of that state, the command, the states it reads
//! (a claim reads the session, the agent and the dependencies) and `now`.
//! No I/O, no clock, no randomness: the same inputs give the same events.
pub mod agent;
pub mod budget;
pub mod module;
pub mod policy;
pub mod principal;
pub mod session;
pub mod task;

use agentlog_core::{Body, Envelope};

use crate::rejection::Rejection;

pub use agent::Agent;
pub use budget::{Budget, Policy};
pub use module::Module;
pub use policy::Binding;
pub use principal::Principal;
pub use session::Session;
pub use task::Task;

/// A refusal, with the facts the refusal itself establishes (a refused debit
/// is recorded so the circuit breaker can count it). Most refusals record
/// nothing.
#[derive(Clone, Debug, PartialEq)]
pub struct Refused {
    pub rejection: Rejection,
    pub record: Vec<Body>,
}

impl From<Rejection> for Refused {
    fn from(rejection: Rejection) -> Self {
        Refused { rejection, record: Vec::new() }
    }
}

/// What a decision gives: the events to append, or a refusal.
pub type Decision = Result<Vec<Body>, Refused>;

/// The state of any one aggregate, folded from its stream. As JSON (what
/// a policy is shown), the aggregate's fields under its kind's name.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    Session(Session),
    Agent(Agent),
    Task(Task),
    Budget(Budget),
    Module(Module),
    Policy(Binding),
    Principal(Principal),
}

impl State {
    /// The empty state of the aggregate behind `stream` (`task/…` etc.).
    pub fn empty_for(stream: &str) -> Option<State> {
        match stream.split_once('/')?.0 {
            "session" => Some(State::Session(Session::default())),
            "agent" => Some(State::Agent(Agent::default())),
            "task" => Some(State::Task(Task::default())),
            "budget" => Some(State::Budget(Budget::default())),
            "module" => Some(State::Module(Module::default())),
            "policy" => Some(State::Policy(Binding::default())),
            "principal" => Some(State::Principal(Principal::default())),
            _ => None,
        }
    }

    pub fn apply(&mut self, event: &Envelope) {
        match self {
            State::Session(s) => s.apply(event),
            State::Agent(a) => a.apply(event),
            State::Task(t) => t.apply(event),
            State::Budget(b) => b.apply(event),
            State::Module(m) => m.apply(event),
            State::Policy(p) => p.apply(event),
            State::Principal(p) => p.apply(event),
        }
    }
}

/// Sorted and without duplicates: sets go into events in one canonical order.
pub(crate) fn canonical(items: &[String]) -> Vec<String> {
    let set: std::collections::BTreeSet<&String> = items.iter().collect();
    set.into_iter().cloned().collect()
}

pub(crate) fn ms_to_nanos(ms: u64) -> u64 {
    ms.saturating_mul(1_000_000)
}
