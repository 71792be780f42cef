//! The sandbox's commands — `register_module` and `run_module` — and
//! [`ModuleHost`], the handler's view of a WASM sandbox. The commands crate
//! never compiles a WASM engine: `agentlog-sandbox` implements the trait
//! and the node wires it in ([`crate::Handler::with_modules`]); a handler
//! without one refuses both commands as `unavailable`.
//!
//! Bytes (a module, an input, an output) are base64 (standard alphabet,
//! padded) in the JSON form and `bytes` in protobuf.
use agentlog_core::schema as pb;
use serde::{Deserialize, Serialize};

use crate::command::{Spec, id, positive};
use crate::rejection::{Code, Rejection, Result};

/// A module's size: it is recorded whole in one event (at most 1 MiB),
/// with room for the rest of the envelope.
pub const MAX_MODULE_BYTES: usize = 768 * 1024;
/// A run's input, and its output: both are recorded in the run's event.
pub const MAX_IO_BYTES: usize = 256 * 1024;
/// The most fuel one run may be given (the wall-clock deadline bounds a
/// run as well).
pub const MAX_FUEL: u64 = 10_000_000_000;
/// Fuel per unit of budget: a run charged to a budget is debited its fuel
/// used divided by this, rounded up.
pub const FUEL_PER_BUDGET_UNIT: u64 = 1_000;

/// What a run that used `fuel_used` is charged.
pub fn charge_for(fuel_used: u64) -> u64 {
    fuel_used.div_ceil(FUEL_PER_BUDGET_UNIT)
}

/// The trap a run aborted at its wall-clock deadline is recorded with. It
/// is the one outcome that depends on the machine: replay never compares it.
pub const DEADLINE_EXCEEDED: &str = "deadline_exceeded";

/// How a run ended, as the handler records it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RunOutcome {
    Completed {
        output: Vec<u8>,
        fuel_used: u64,
    },
    /// A trap (`out_of_fuel`, `stack_overflow`, …) or [`DEADLINE_EXCEEDED`].
    Trapped {
        trap: String,
        fuel_used: u64,
    },
}

/// What the handler needs of a WASM sandbox.
pub trait ModuleHost: Send + Sync {
    /// Why `module` cannot be registered (its size, an import, its memory,
    /// its exports, or that it is no valid module), or `Ok`.
    fn check(&self, module: &[u8]) -> std::result::Result<(), String>;
    /// Runs `module` (whose blake3 is `module_hash`) on `input` with at
    /// most `fuel`. Blocks the caller until the run ends (at most the
    /// sandbox's wall-clock deadline). `Err`: the engine failed, not the
    /// module.
    fn run(&self, module_hash: &str, module: &[u8], input: &[u8], fuel: u64)
    -> std::result::Result<RunOutcome, String>;
    /// Whether the module named `module_hash` is compiled here already, so
    /// that a run starts at once (a first run compiles it: up to seconds).
    fn is_compiled(&self, module_hash: &str) -> bool;
    /// What compiled code depends on (the engine's version and
    /// configuration), recorded with every run.
    fn engine_hash(&self) -> String;
}

/// Hex blake3: how modules, inputs and outputs are named.
pub fn content_hash(bytes: &[u8]) -> String {
    blake3::hash(bytes).to_hex().to_string()
}

/// Bytes as base64 in JSON.
mod base64_bytes {
    use base64::Engine as _;
    use base64::engine::general_purpose::STANDARD;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(bytes: &[u8], serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&STANDARD.encode(bytes))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<u8>, D::Error> {
        let text = String::deserialize(deserializer)?;
        STANDARD.decode(text.as_bytes()).map_err(|e| serde::de::Error::custom(format!("not base64: {e}")))
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ModuleKind {
    /// Run by agents (`run_module`).
    Action,
    /// Allows or denies the commands it is bound to.
    Policy,
}

impl ModuleKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ModuleKind::Action => "action",
            ModuleKind::Policy => "policy",
        }
    }

    pub fn to_proto(self) -> pb::ModuleKind {
        match self {
            ModuleKind::Action => pb::ModuleKind::Action,
            ModuleKind::Policy => pb::ModuleKind::Policy,
        }
    }

    pub fn from_proto(kind: i32) -> Option<ModuleKind> {
        match pb::ModuleKind::try_from(kind) {
            Ok(pb::ModuleKind::Action) => Some(ModuleKind::Action),
            Ok(pb::ModuleKind::Policy) => Some(ModuleKind::Policy),
            _ => None,
        }
    }
}

/// Registers a module; its stream is `module/<hex blake3 of its bytes>`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegisterModule {
    pub name: String,
    pub kind: ModuleKind,
    #[serde(with = "base64_bytes")]
    pub module: Vec<u8>,
}

impl Spec for RegisterModule {
    const NAME: &'static str = "register_module";
    type Proto = pb::RegisterModule;

    fn validate(&self) -> Result<()> {
        id("name", &self.name)?;
        if self.module.is_empty() {
            return Err(Rejection::invalid("module is empty: send the WASM module's bytes"));
        }
        if self.module.len() > MAX_MODULE_BYTES {
            return Err(Rejection::new(
                Code::TooLarge,
                format!("the module is {} bytes; the limit is {MAX_MODULE_BYTES}", self.module.len()),
            ));
        }
        Ok(())
    }

    fn stream(&self) -> String {
        format!("module/{}", content_hash(&self.module))
    }

    fn from_proto(m: pb::RegisterModule) -> Result<Self> {
        let kind = ModuleKind::from_proto(m.kind)
            .ok_or_else(|| Rejection::invalid(format!("register_module: kind {} is not action or policy", m.kind)))?;
        Ok(RegisterModule { name: m.name, kind, module: m.module })
    }

    fn to_proto(&self) -> pb::RegisterModule {
        pb::RegisterModule { name: self.name.clone(), kind: self.kind.to_proto() as i32, module: self.module.clone() }
    }
}

/// Runs a registered action module for an agent in its live session. The
/// run is recorded on the agent's stream, so a popular module is no hot
/// spot.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunModule {
    pub module_hash: String,
    pub agent_id: String,
    pub session_id: String,
    #[serde(default)]
    pub task_id: String,
    #[serde(default, with = "base64_bytes")]
    pub input: Vec<u8>,
    pub fuel: u64,
    /// The budget the run's fuel is charged to (empty: none). The run is
    /// refused unless it holds enough for the whole fuel limit.
    #[serde(default)]
    pub budget_id: String,
}

impl Spec for RunModule {
    const NAME: &'static str = "run_module";
    type Proto = pb::RunModule;

    fn validate(&self) -> Result<()> {
        if self.module_hash.len() != 64 || !self.module_hash.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            return Err(Rejection::invalid(format!(
                "module_hash must be the module's hex blake3 (64 lowercase hex digits), got {:?}",
                self.module_hash
            )));
        }
        id("agent_id", &self.agent_id)?;
        id("session_id", &self.session_id)?;
        if !self.task_id.is_empty() {
            id("task_id", &self.task_id)?;
        }
        if !self.budget_id.is_empty() {
            id("budget_id", &self.budget_id)?;
        }
        if self.input.len() > MAX_IO_BYTES {
            return Err(Rejection::new(
                Code::TooLarge,
                format!("the input is {} bytes; the limit is {MAX_IO_BYTES}", self.input.len()),
            ));
        }
        positive("fuel", self.fuel)?;
        if self.fuel > MAX_FUEL {
            return Err(Rejection::invalid(format!(
                "fuel is {}; the most a run may be given is {MAX_FUEL}",
                self.fuel
            )));
        }
        Ok(())
    }

    fn stream(&self) -> String {
        format!("agent/{}", self.agent_id)
    }

    fn session_id(&self) -> Option<&str> {
        Some(&self.session_id)
    }

    fn from_proto(m: pb::RunModule) -> Result<Self> {
        Ok(RunModule {
            module_hash: m.module_hash,
            agent_id: m.agent_id,
            session_id: m.session_id,
            task_id: m.task_id,
            input: m.input,
            fuel: m.fuel,
            budget_id: m.budget_id,
        })
    }

    fn to_proto(&self) -> pb::RunModule {
        pb::RunModule {
            module_hash: self.module_hash.clone(),
            agent_id: self.agent_id.clone(),
            session_id: self.session_id.clone(),
            task_id: self.task_id.clone(),
            input: self.input.clone(),
            fuel: self.fuel,
            budget_id: self.budget_id.clone(),
        }
    }
}

/// What a completed run gave the producer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunResult {
    pub module_hash: String,
    #[serde(with = "base64_bytes")]
    pub output: Vec<u8>,
    pub output_hash: String,
    pub fuel_used: u64,
    /// The debit of its fuel, when it was charged to a budget.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub charge: Option<Charge>,
}

/// A run's fuel, debited from a budget.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Charge {
    pub budget_id: String,
    pub amount: u64,
    /// The debit's seq.
    pub seq: u64,
}

/// The rejection a trapped run answers with (kind `agent`: the module
/// failed, not the command); the trap is recorded all the same.
pub fn trapped(module_hash: &str, trap: &str, fuel_used: u64, fuel_limit: u64) -> Rejection {
    let what = if trap == DEADLINE_EXCEEDED {
        "was aborted at the sandbox's wall-clock deadline".to_owned()
    } else {
        format!("trapped ({trap})")
    };
    Rejection::new(
        Code::ModuleTrapped,
        format!("module {module_hash} {what} after {fuel_used} of {fuel_limit} fuel; the run is recorded"),
    )
}
