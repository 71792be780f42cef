//! Modules: a WASM module registered once under its content hash (stream
//! `module/<hash>`), and the runs of action modules, decided on the running
//! agent's stream with the outcome the sandbox gave.
use std::sync::Arc;

use agentlog_core::schema::{SandboxModuleRegistered, SandboxRunCompleted, SandboxRunTrapped};
use agentlog_core::{Body, Envelope, Timestamp};

use super::{Agent, Budget, Decision, Refused, Session};
use crate::module::{ModuleKind, RunModule, RunOutcome, charge_for, content_hash, trapped};
use crate::rejection::{Code, Rejection};

/// A module as registered.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Registered {
    pub name: String,
    pub kind: ModuleKind,
    /// Shared: a decision clones the state, not the module.
    #[serde(skip)]
    pub module: Arc<[u8]>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Module {
    pub registered: Option<Registered>,
}

impl Module {
    pub fn apply(&mut self, event: &Envelope) {
        if let Some(Body::SandboxModuleRegistered(e)) = &event.body {
            // A kind this build does not know is kept as a policy: it is
            // never run as an action.
            let kind = ModuleKind::from_proto(e.kind).unwrap_or(ModuleKind::Policy);
            self.registered = Some(Registered { name: e.name.clone(), kind, module: e.module.as_slice().into() });
        }
    }
}

/// Registers a module the sandbox accepted (the handler asked it first).
pub fn register(module: &Module, name: &str, kind: ModuleKind, bytes: &[u8]) -> Decision {
    let hash = content_hash(bytes);
    if let Some(registered) = &module.registered {
        return Err(Rejection::new(
            Code::AlreadyExists,
            format!("module {hash} is registered already (as {:?}, {})", registered.name, registered.kind.as_str()),
        )
        .into());
    }
    Ok(vec![Body::SandboxModuleRegistered(SandboxModuleRegistered {
        module_hash: hash,
        name: name.to_owned(),
        size_bytes: bytes.len() as u64,
        kind: kind.to_proto() as i32,
        module: bytes.to_vec(),
    })])
}

/// A module an agent may run: registered, and an action.
pub fn runnable<'a>(module: &'a Module, module_hash: &str) -> Result<&'a Registered, Rejection> {
    match &module.registered {
        None => Err(Rejection::new(
            Code::NotFound,
            format!("no module {module_hash} is registered; register it first (`agentlog sandbox register`)"),
        )),
        Some(registered) if registered.kind != ModuleKind::Action => Err(Rejection::new(
            Code::WrongModuleKind,
            format!("module {module_hash} is a {} module; only action modules are run", registered.kind.as_str()),
        )),
        Some(registered) => Ok(registered),
    }
}

/// Whether a run may be charged to `budget`: it exists, its circuit is
/// closed, and it holds what the whole fuel limit would cost (checked
/// before running; the debit after it is the guard).
pub fn can_charge(budget: &Budget, run: &RunModule, now: Timestamp) -> Result<(), Rejection> {
    if !budget.exists {
        return Err(Rejection::new(Code::NotFound, format!("no budget {}; allocate one first", run.budget_id)));
    }
    if budget.circuit_open_until_ts.is_some_and(|until| now.as_nanos() < until) {
        return Err(Rejection::new(
            Code::CircuitOpen,
            format!("budget {}'s circuit is open; nothing is charged to it until it closes", run.budget_id),
        ));
    }
    let most = charge_for(run.fuel);
    if budget.balance < most {
        return Err(Rejection::new(
            Code::InsufficientBudget,
            format!(
                "budget {} has {} left and a run of {} fuel may cost {most}; give less fuel or allocate more",
                run.budget_id, budget.balance, run.fuel
            ),
        ));
    }
    Ok(())
}

/// Records a run the sandbox made: its output, or its trap (then the
/// command is refused with kind `agent`, and the trap is recorded all the
/// same). The agent must be registered and the session live and its own.
pub fn record_run(
    agent: &Agent,
    session: &Session,
    run: &RunModule,
    outcome: &RunOutcome,
    engine_hash: &str,
    now: Timestamp,
) -> Decision {
    if !agent.registered {
        return Err(Rejection::new(Code::UnknownAgent, format!("agent {} is not registered", run.agent_id)).into());
    }
    session.check_live_for(&run.session_id, &run.agent_id, now)?;
    let input_hash = content_hash(&run.input);
    match outcome {
        RunOutcome::Completed { output, fuel_used } => Ok(vec![Body::SandboxRunCompleted(SandboxRunCompleted {
            module_hash: run.module_hash.clone(),
            fuel_used: *fuel_used,
            output_hash: content_hash(output),
            agent_id: run.agent_id.clone(),
            session_id: run.session_id.clone(),
            task_id: run.task_id.clone(),
            input: run.input.clone(),
            input_hash,
            output: output.clone(),
            engine_hash: engine_hash.to_owned(),
            fuel_limit: run.fuel,
        })]),
        RunOutcome::Trapped { trap, fuel_used } => Err(Refused {
            rejection: trapped(&run.module_hash, trap, *fuel_used, run.fuel),
            record: vec![Body::SandboxRunTrapped(SandboxRunTrapped {
                module_hash: run.module_hash.clone(),
                fuel_used: *fuel_used,
                trap: trap.clone(),
                agent_id: run.agent_id.clone(),
                session_id: run.session_id.clone(),
                task_id: run.task_id.clone(),
                input: run.input.clone(),
                input_hash,
                engine_hash: engine_hash.to_owned(),
                fuel_limit: run.fuel,
            })],
        }),
    }
}
