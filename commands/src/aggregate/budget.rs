//! Budgets: allocated, debited and refunded; never below zero. A circuit
//! breaker opens after `Policy::circuit_threshold` consecutive refused or
//! failed debits and closes once `circuit_cooldown_ms` of clock time passed.
use agentlog_core::schema::{
    self, BudgetAllocated, BudgetCircuitClosed, BudgetCircuitOpened, BudgetDebitRefused, BudgetDebited, BudgetRefunded,
};
use agentlog_core::{Body, Envelope, Timestamp};

use super::{Decision, Refused, ms_to_nanos};
use crate::rejection::{Code, Rejection};

/// The budget rules a deployment chooses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Policy {
    /// Consecutive refused or failed debits that open the circuit.
    pub circuit_threshold: u32,
    /// How long the circuit stays open.
    pub circuit_cooldown_ms: u64,
}

impl Default for Policy {
    fn default() -> Self {
        Policy { circuit_threshold: 3, circuit_cooldown_ms: 60_000 }
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Budget {
    pub exists: bool,
    pub allocated: u64,
    pub spent: u64,
    pub refunded: u64,
    pub balance: u64,
    pub consecutive_failures: u32,
    /// `Some(until)` while the circuit is open.
    pub circuit_open_until_ts: Option<u64>,
}

impl Budget {
    pub fn apply(&mut self, event: &Envelope) {
        match &event.body {
            // Totals saturate: `decide` never lets them overflow, and data
            // damaged on disk must not make a stream impossible to load.
            Some(Body::BudgetAllocated(e)) => {
                self.exists = true;
                self.allocated = self.allocated.saturating_add(e.amount);
                self.balance = e.balance_after;
            }
            Some(Body::BudgetDebited(e)) => {
                self.spent = self.spent.saturating_add(e.amount);
                self.balance = e.balance_after;
                if e.outcome == schema::Outcome::Failed as i32 {
                    self.consecutive_failures += 1;
                } else {
                    self.consecutive_failures = 0;
                }
            }
            Some(Body::BudgetRefunded(e)) => {
                self.refunded = self.refunded.saturating_add(e.amount);
                self.balance = e.balance_after;
            }
            Some(Body::BudgetDebitRefused(_)) => self.consecutive_failures += 1,
            Some(Body::BudgetCircuitOpened(e)) => self.circuit_open_until_ts = Some(e.open_until_ts),
            Some(Body::BudgetCircuitClosed(_)) => {
                self.circuit_open_until_ts = None;
                self.consecutive_failures = 0;
            }
            _ => {}
        }
    }
}

fn not_found(budget_id: &str) -> Rejection {
    Rejection::new(Code::NotFound, format!("no budget {budget_id}; allocate one first"))
}

fn overflow(budget_id: &str, what: &str, amount: u64) -> Rejection {
    Rejection::new(Code::InvalidAmount, format!("{what} {amount} would overflow budget {budget_id}'s totals"))
}

pub fn allocate(state: &Budget, budget_id: &str, amount: u64) -> Decision {
    let balance_after = state.balance.checked_add(amount).ok_or_else(|| overflow(budget_id, "allocating", amount))?;
    state.allocated.checked_add(amount).ok_or_else(|| overflow(budget_id, "allocating", amount))?;
    Ok(vec![Body::BudgetAllocated(BudgetAllocated { budget_id: budget_id.to_owned(), amount, balance_after })])
}

pub struct Debit<'a> {
    pub budget_id: &'a str,
    pub amount: u64,
    pub agent_id: &'a str,
    pub session_id: &'a str,
    pub task_id: &'a str,
    pub reason: &'a str,
    pub failed: bool,
}

pub fn debit(state: &Budget, debit: Debit<'_>, policy: &Policy, now: Timestamp) -> Decision {
    if !state.exists {
        return Err(not_found(debit.budget_id).into());
    }
    state.spent.checked_add(debit.amount).ok_or_else(|| overflow(debit.budget_id, "debiting", debit.amount))?;
    let mut events = Vec::new();
    let mut failures = state.consecutive_failures;
    if let Some(until) = state.circuit_open_until_ts {
        if now.as_nanos() < until {
            return Err(Rejection::new(
                Code::CircuitOpen,
                format!(
                    "budget {}'s circuit is open until {}; retry after it",
                    debit.budget_id,
                    Timestamp::from_nanos(until)
                ),
            )
            .into());
        }
        events.push(Body::BudgetCircuitClosed(BudgetCircuitClosed { budget_id: debit.budget_id.to_owned() }));
        failures = 0;
    }
    let open_circuit = |failures: u32, events: &mut Vec<Body>| {
        if failures >= policy.circuit_threshold {
            events.push(Body::BudgetCircuitOpened(BudgetCircuitOpened {
                budget_id: debit.budget_id.to_owned(),
                consecutive_failures: failures,
                open_until_ts: now.as_nanos().saturating_add(ms_to_nanos(policy.circuit_cooldown_ms)),
            }));
        }
    };
    if debit.amount > state.balance {
        events.push(Body::BudgetDebitRefused(BudgetDebitRefused {
            budget_id: debit.budget_id.to_owned(),
            amount: debit.amount,
            balance: state.balance,
            agent_id: debit.agent_id.to_owned(),
            session_id: debit.session_id.to_owned(),
            task_id: debit.task_id.to_owned(),
        }));
        open_circuit(failures + 1, &mut events);
        return Err(Refused {
            rejection: Rejection::new(
                Code::InsufficientBudget,
                format!("budget {} has {} left, the debit asks {}", debit.budget_id, state.balance, debit.amount),
            ),
            record: events,
        });
    }
    let outcome = if debit.failed { schema::Outcome::Failed } else { schema::Outcome::Succeeded };
    events.push(Body::BudgetDebited(BudgetDebited {
        budget_id: debit.budget_id.to_owned(),
        amount: debit.amount,
        balance_after: state.balance - debit.amount,
        agent_id: debit.agent_id.to_owned(),
        session_id: debit.session_id.to_owned(),
        task_id: debit.task_id.to_owned(),
        reason: debit.reason.to_owned(),
        outcome: outcome as i32,
    }));
    if debit.failed {
        open_circuit(failures + 1, &mut events);
    }
    Ok(events)
}

pub fn refund(state: &Budget, budget_id: &str, amount: u64, reason: &str) -> Decision {
    if !state.exists {
        return Err(not_found(budget_id).into());
    }
    let refundable = state.spent.saturating_sub(state.refunded);
    if amount > refundable {
        return Err(Rejection::new(
            Code::RefundExceedsSpent,
            format!(
                "budget {budget_id} can refund at most {refundable} (spent {} minus refunded {})",
                state.spent, state.refunded
            ),
        )
        .into());
    }
    let balance_after = state.balance.checked_add(amount).ok_or_else(|| overflow(budget_id, "refunding", amount))?;
    state.refunded.checked_add(amount).ok_or_else(|| overflow(budget_id, "refunding", amount))?;
    Ok(vec![Body::BudgetRefunded(BudgetRefunded {
        budget_id: budget_id.to_owned(),
        amount,
        balance_after,
        reason: reason.to_owned(),
    })])
}
