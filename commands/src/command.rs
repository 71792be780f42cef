//! The commands producers send: one struct per command, each carrying
//! everything about it that is not a decision — its wire name, its fields
//! (JSON and protobuf, read and written, with the same defaults), its
//! validation, the stream it decides on and the session it acts in —
//! through the [`Spec`] trait. [`Command`] is the sum of them, generated
//! by one list, so adding a command is a struct with its `Spec`, a line in
//! that list, its protobuf message, and its arm in the handler's `decide`.
use agentlog_core::schema as pb;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

pub use crate::module::{RegisterModule, RunModule};
pub use crate::policy::BindPolicy;
pub use crate::principal::{RegisterPrincipal, RevokePrincipal};
use crate::rejection::{Code, Rejection, Result};

/// Longest id (task, agent, budget, session) a command may name.
pub const MAX_ID_BYTES: usize = 128;
/// Longest free text (title, reason, result, detail).
pub const MAX_TEXT_BYTES: usize = 16 * 1024;
/// Most capabilities or dependencies one command may list.
pub const MAX_LIST_ITEMS: usize = 64;

/// What a command knows about itself.
pub trait Spec: Sized + Serialize + DeserializeOwned + Into<Command> {
    /// The name on the wire (`claim_task`): the NATS subject's last token.
    const NAME: &'static str;
    /// Its protobuf body (`log/proto/agentlog/v1/commands.proto`).
    type Proto: prost::Message + Default;

    /// Sizes and required fields, checked before any state is read.
    fn validate(&self) -> Result<()>;

    /// The stream (aggregate) it decides on and appends to.
    fn stream(&self) -> String;

    /// The session it acts in, if it names one.
    fn session_id(&self) -> Option<&str> {
        None
    }

    /// From its protobuf body; a scalar left at 0 or "" takes the default
    /// the JSON form has.
    fn from_proto(message: Self::Proto) -> Result<Self>;

    /// Its protobuf body: [`Spec::from_proto`] gives back this very
    /// command whenever it passes [`Spec::validate`] (but for whitespace
    /// around a `register_principal`'s base64 key, which validation trims
    /// and protobuf's bytes do not keep). A command that does not pass may
    /// read back as another one (a zero where zero means "the default", an
    /// empty optional id), so the client sends it as JSON instead
    /// (`wire::Message::new`).
    fn to_proto(&self) -> Self::Proto;
}

pub(crate) fn id(what: &str, value: &str) -> Result<()> {
    if value.len() > MAX_ID_BYTES || !agentlog_core::api::is_valid_id(value) {
        return Err(Rejection::invalid(format!(
            "{what} must be 1 to {MAX_ID_BYTES} ASCII letters, digits, '_', '-', ':' or '@', got {value:?}"
        )));
    }
    Ok(())
}

pub(crate) fn text(what: &str, value: &str) -> Result<()> {
    if value.len() > MAX_TEXT_BYTES {
        return Err(Rejection::new(
            Code::TooLarge,
            format!("{what} is {} bytes; the limit is {MAX_TEXT_BYTES}", value.len()),
        ));
    }
    Ok(())
}

pub(crate) fn list(what: &str, values: &[String]) -> Result<()> {
    if values.len() > MAX_LIST_ITEMS {
        return Err(Rejection::new(
            Code::TooLarge,
            format!("{what} lists {} items; the limit is {MAX_LIST_ITEMS}", values.len()),
        ));
    }
    values.iter().try_for_each(|v| id(what, v))
}

fn positive_amount(value: u64) -> Result<()> {
    if value == 0 {
        return Err(Rejection::new(Code::InvalidAmount, "amount must be positive"));
    }
    Ok(())
}

pub(crate) fn positive(what: &str, value: u64) -> Result<()> {
    if value == 0 {
        return Err(Rejection::invalid(format!("{what} must be positive")));
    }
    Ok(())
}

/// A protobuf scalar left at its zero value takes `default`.
fn or<T: PartialEq + Default>(value: T, default: T) -> T {
    if value == T::default() { default } else { value }
}

pub mod defaults {
    pub fn heartbeat_timeout_ms() -> u64 {
        60_000
    }
    pub fn max_attempts() -> u32 {
        3
    }
    pub fn lease_ms() -> u64 {
        300_000
    }
}

/// Session ids are UUIDs; the handler makes one when none is given.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OpenSession {
    pub agent_id: String,
    #[serde(default)]
    pub session_id: Option<String>,
    #[serde(default = "defaults::heartbeat_timeout_ms")]
    pub heartbeat_timeout_ms: u64,
}

impl Spec for OpenSession {
    const NAME: &'static str = "open_session";
    type Proto = pb::OpenSession;

    fn validate(&self) -> Result<()> {
        id("agent_id", &self.agent_id)?;
        if let Some(s) = &self.session_id {
            id("session_id", s)?;
        }
        positive("heartbeat_timeout_ms", self.heartbeat_timeout_ms)
    }

    fn stream(&self) -> String {
        format!("session/{}", self.session_id.as_deref().unwrap_or_default())
    }

    fn session_id(&self) -> Option<&str> {
        self.session_id.as_deref()
    }

    fn from_proto(m: pb::OpenSession) -> Result<Self> {
        Ok(OpenSession {
            agent_id: m.agent_id,
            session_id: Some(m.session_id).filter(|s| !s.is_empty()),
            heartbeat_timeout_ms: or(m.heartbeat_timeout_ms, defaults::heartbeat_timeout_ms()),
        })
    }

    fn to_proto(&self) -> pb::OpenSession {
        pb::OpenSession {
            agent_id: self.agent_id.clone(),
            session_id: self.session_id.clone().unwrap_or_default(),
            heartbeat_timeout_ms: self.heartbeat_timeout_ms,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Heartbeat {
    pub session_id: String,
}

impl Spec for Heartbeat {
    const NAME: &'static str = "heartbeat";
    type Proto = pb::Heartbeat;

    fn validate(&self) -> Result<()> {
        id("session_id", &self.session_id)
    }

    fn stream(&self) -> String {
        format!("session/{}", self.session_id)
    }

    fn session_id(&self) -> Option<&str> {
        Some(&self.session_id)
    }

    fn from_proto(m: pb::Heartbeat) -> Result<Self> {
        Ok(Heartbeat { session_id: m.session_id })
    }

    fn to_proto(&self) -> pb::Heartbeat {
        pb::Heartbeat { session_id: self.session_id.clone() }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CloseSession {
    pub session_id: String,
    #[serde(default)]
    pub reason: String,
}

impl Spec for CloseSession {
    const NAME: &'static str = "close_session";
    type Proto = pb::CloseSession;

    fn validate(&self) -> Result<()> {
        id("session_id", &self.session_id)?;
        text("reason", &self.reason)
    }

    fn stream(&self) -> String {
        format!("session/{}", self.session_id)
    }

    fn session_id(&self) -> Option<&str> {
        Some(&self.session_id)
    }

    fn from_proto(m: pb::CloseSession) -> Result<Self> {
        Ok(CloseSession { session_id: m.session_id, reason: m.reason })
    }

    fn to_proto(&self) -> pb::CloseSession {
        pb::CloseSession { session_id: self.session_id.clone(), reason: self.reason.clone() }
    }
}

/// Sent by the ticker when a session missed its heartbeats.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExpireSession {
    pub session_id: String,
}

impl Spec for ExpireSession {
    const NAME: &'static str = "expire_session";
    type Proto = pb::ExpireSession;

    fn validate(&self) -> Result<()> {
        id("session_id", &self.session_id)
    }

    fn stream(&self) -> String {
        format!("session/{}", self.session_id)
    }

    fn session_id(&self) -> Option<&str> {
        Some(&self.session_id)
    }

    fn from_proto(m: pb::ExpireSession) -> Result<Self> {
        Ok(ExpireSession { session_id: m.session_id })
    }

    fn to_proto(&self) -> pb::ExpireSession {
        pb::ExpireSession { session_id: self.session_id.clone() }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegisterAgent {
    pub agent_id: String,
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub capabilities: Vec<String>,
}

impl Spec for RegisterAgent {
    const NAME: &'static str = "register_agent";
    type Proto = pb::RegisterAgent;

    fn validate(&self) -> Result<()> {
        id("agent_id", &self.agent_id)?;
        text("name", &self.name)?;
        list("capabilities", &self.capabilities)
    }

    fn stream(&self) -> String {
        format!("agent/{}", self.agent_id)
    }

    fn from_proto(m: pb::RegisterAgent) -> Result<Self> {
        Ok(RegisterAgent { agent_id: m.agent_id, name: m.name, capabilities: m.capabilities })
    }

    fn to_proto(&self) -> pb::RegisterAgent {
        pb::RegisterAgent {
            agent_id: self.agent_id.clone(),
            name: self.name.clone(),
            capabilities: self.capabilities.clone(),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateTask {
    pub task_id: String,
    #[serde(default)]
    pub title: String,
    #[serde(default)]
    pub priority: i32,
    #[serde(default)]
    pub required_capabilities: Vec<String>,
    #[serde(default)]
    pub dependencies: Vec<String>,
    #[serde(default = "defaults::max_attempts")]
    pub max_attempts: u32,
}

impl Spec for CreateTask {
    const NAME: &'static str = "create_task";
    type Proto = pb::CreateTask;

    fn validate(&self) -> Result<()> {
        id("task_id", &self.task_id)?;
        text("title", &self.title)?;
        list("required_capabilities", &self.required_capabilities)?;
        list("dependencies", &self.dependencies)?;
        if self.max_attempts == 0 {
            return Err(Rejection::invalid("max_attempts must be at least 1"));
        }
        Ok(())
    }

    fn stream(&self) -> String {
        format!("task/{}", self.task_id)
    }

    fn from_proto(m: pb::CreateTask) -> Result<Self> {
        Ok(CreateTask {
            task_id: m.task_id,
            title: m.title,
            priority: m.priority,
            required_capabilities: m.required_capabilities,
            dependencies: m.dependencies,
            max_attempts: or(m.max_attempts, defaults::max_attempts()),
        })
    }

    fn to_proto(&self) -> pb::CreateTask {
        pb::CreateTask {
            task_id: self.task_id.clone(),
            title: self.title.clone(),
            priority: self.priority,
            required_capabilities: self.required_capabilities.clone(),
            dependencies: self.dependencies.clone(),
            max_attempts: self.max_attempts,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClaimTask {
    pub task_id: String,
    pub agent_id: String,
    pub session_id: String,
    #[serde(default = "defaults::lease_ms")]
    pub lease_ms: u64,
}

impl Spec for ClaimTask {
    const NAME: &'static str = "claim_task";
    type Proto = pb::ClaimTask;

    fn validate(&self) -> Result<()> {
        id("task_id", &self.task_id)?;
        id("agent_id", &self.agent_id)?;
        id("session_id", &self.session_id)?;
        positive("lease_ms", self.lease_ms)
    }

    fn stream(&self) -> String {
        format!("task/{}", self.task_id)
    }

    fn session_id(&self) -> Option<&str> {
        Some(&self.session_id)
    }

    fn from_proto(m: pb::ClaimTask) -> Result<Self> {
        Ok(ClaimTask {
            task_id: m.task_id,
            agent_id: m.agent_id,
            session_id: m.session_id,
            lease_ms: or(m.lease_ms, defaults::lease_ms()),
        })
    }

    fn to_proto(&self) -> pb::ClaimTask {
        pb::ClaimTask {
            task_id: self.task_id.clone(),
            agent_id: self.agent_id.clone(),
            session_id: self.session_id.clone(),
            lease_ms: self.lease_ms,
        }
    }
}

/// The three ways a holder ends its claim share their fields.
macro_rules! finish_task {
    ($name:ident, $wire:literal, $text:ident) => {
        #[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
        #[serde(deny_unknown_fields)]
        pub struct $name {
            pub task_id: String,
            pub agent_id: String,
            pub session_id: String,
            #[serde(default)]
            pub $text: String,
        }

        impl Spec for $name {
            const NAME: &'static str = $wire;
            type Proto = pb::$name;

            fn validate(&self) -> Result<()> {
                id("task_id", &self.task_id)?;
                id("agent_id", &self.agent_id)?;
                id("session_id", &self.session_id)?;
                text(stringify!($text), &self.$text)
            }

            fn stream(&self) -> String {
                format!("task/{}", self.task_id)
            }

            fn session_id(&self) -> Option<&str> {
                Some(&self.session_id)
            }

            fn from_proto(m: pb::$name) -> Result<Self> {
                Ok($name { task_id: m.task_id, agent_id: m.agent_id, session_id: m.session_id, $text: m.$text })
            }

            fn to_proto(&self) -> pb::$name {
                pb::$name {
                    task_id: self.task_id.clone(),
                    agent_id: self.agent_id.clone(),
                    session_id: self.session_id.clone(),
                    $text: self.$text.clone(),
                }
            }
        }
    };
}

finish_task!(ReleaseTask, "release_task", reason);
finish_task!(CompleteTask, "complete_task", result);
finish_task!(FailTask, "fail_task", reason);

/// Sent by the ticker when a claim's lease ran out.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExpireLease {
    pub task_id: String,
}

impl Spec for ExpireLease {
    const NAME: &'static str = "expire_lease";
    type Proto = pb::ExpireLease;

    fn validate(&self) -> Result<()> {
        id("task_id", &self.task_id)
    }

    fn stream(&self) -> String {
        format!("task/{}", self.task_id)
    }

    fn from_proto(m: pb::ExpireLease) -> Result<Self> {
        Ok(ExpireLease { task_id: m.task_id })
    }

    fn to_proto(&self) -> pb::ExpireLease {
        pb::ExpireLease { task_id: self.task_id.clone() }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AllocateBudget {
    pub budget_id: String,
    pub amount: u64,
}

impl Spec for AllocateBudget {
    const NAME: &'static str = "allocate_budget";
    type Proto = pb::AllocateBudget;

    fn validate(&self) -> Result<()> {
        id("budget_id", &self.budget_id)?;
        positive_amount(self.amount)
    }

    fn stream(&self) -> String {
        format!("budget/{}", self.budget_id)
    }

    fn from_proto(m: pb::AllocateBudget) -> Result<Self> {
        Ok(AllocateBudget { budget_id: m.budget_id, amount: m.amount })
    }

    fn to_proto(&self) -> pb::AllocateBudget {
        pb::AllocateBudget { budget_id: self.budget_id.clone(), amount: self.amount }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DebitBudget {
    pub budget_id: String,
    pub amount: u64,
    #[serde(default)]
    pub agent_id: String,
    #[serde(default)]
    pub session_id: String,
    #[serde(default)]
    pub task_id: String,
    #[serde(default)]
    pub reason: String,
    /// The spend went on work that failed (counts toward the circuit).
    #[serde(default)]
    pub failed: bool,
}

impl Spec for DebitBudget {
    const NAME: &'static str = "debit_budget";
    type Proto = pb::DebitBudget;

    fn validate(&self) -> Result<()> {
        id("budget_id", &self.budget_id)?;
        text("reason", &self.reason)?;
        positive_amount(self.amount)
    }

    fn stream(&self) -> String {
        format!("budget/{}", self.budget_id)
    }

    fn session_id(&self) -> Option<&str> {
        Some(self.session_id.as_str()).filter(|s| !s.is_empty())
    }

    fn from_proto(m: pb::DebitBudget) -> Result<Self> {
        Ok(DebitBudget {
            budget_id: m.budget_id,
            amount: m.amount,
            agent_id: m.agent_id,
            session_id: m.session_id,
            task_id: m.task_id,
            reason: m.reason,
            failed: m.failed,
        })
    }

    fn to_proto(&self) -> pb::DebitBudget {
        pb::DebitBudget {
            budget_id: self.budget_id.clone(),
            amount: self.amount,
            agent_id: self.agent_id.clone(),
            session_id: self.session_id.clone(),
            task_id: self.task_id.clone(),
            reason: self.reason.clone(),
            failed: self.failed,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RefundBudget {
    pub budget_id: String,
    pub amount: u64,
    #[serde(default)]
    pub reason: String,
}

impl Spec for RefundBudget {
    const NAME: &'static str = "refund_budget";
    type Proto = pb::RefundBudget;

    fn validate(&self) -> Result<()> {
        id("budget_id", &self.budget_id)?;
        text("reason", &self.reason)?;
        positive_amount(self.amount)
    }

    fn stream(&self) -> String {
        format!("budget/{}", self.budget_id)
    }

    fn from_proto(m: pb::RefundBudget) -> Result<Self> {
        Ok(RefundBudget { budget_id: m.budget_id, amount: m.amount, reason: m.reason })
    }

    fn to_proto(&self) -> pb::RefundBudget {
        pb::RefundBudget { budget_id: self.budget_id.clone(), amount: self.amount, reason: self.reason.clone() }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ActionKind {
    Think,
    Act,
    Learn,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ActionOutcome {
    Succeeded,
    Failed,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecordAction {
    pub agent_id: String,
    pub session_id: String,
    #[serde(default)]
    pub task_id: String,
    pub kind: ActionKind,
    #[serde(default)]
    pub cost: u64,
    pub outcome: ActionOutcome,
    #[serde(default)]
    pub detail: String,
}

impl Spec for RecordAction {
    const NAME: &'static str = "record_action";
    type Proto = pb::RecordAction;

    fn validate(&self) -> Result<()> {
        id("agent_id", &self.agent_id)?;
        id("session_id", &self.session_id)?;
        text("detail", &self.detail)
    }

    fn stream(&self) -> String {
        format!("agent/{}", self.agent_id)
    }

    fn session_id(&self) -> Option<&str> {
        Some(&self.session_id)
    }

    fn from_proto(m: pb::RecordAction) -> Result<Self> {
        let kind = match pb::ActionKind::try_from(m.kind) {
            Ok(pb::ActionKind::Think) => ActionKind::Think,
            Ok(pb::ActionKind::Act) => ActionKind::Act,
            Ok(pb::ActionKind::Learn) => ActionKind::Learn,
            _ => return Err(Rejection::invalid(format!("record_action: kind {} is not think, act or learn", m.kind))),
        };
        let outcome = match pb::Outcome::try_from(m.outcome) {
            Ok(pb::Outcome::Succeeded) => ActionOutcome::Succeeded,
            Ok(pb::Outcome::Failed) => ActionOutcome::Failed,
            _ => {
                return Err(Rejection::invalid(format!(
                    "record_action: outcome {} is not succeeded or failed",
                    m.outcome
                )));
            }
        };
        Ok(RecordAction {
            agent_id: m.agent_id,
            session_id: m.session_id,
            task_id: m.task_id,
            kind,
            cost: m.cost,
            outcome,
            detail: m.detail,
        })
    }

    fn to_proto(&self) -> pb::RecordAction {
        let kind = match self.kind {
            ActionKind::Think => pb::ActionKind::Think,
            ActionKind::Act => pb::ActionKind::Act,
            ActionKind::Learn => pb::ActionKind::Learn,
        };
        let outcome = match self.outcome {
            ActionOutcome::Succeeded => pb::Outcome::Succeeded,
            ActionOutcome::Failed => pb::Outcome::Failed,
        };
        pb::RecordAction {
            agent_id: self.agent_id.clone(),
            session_id: self.session_id.clone(),
            task_id: self.task_id.clone(),
            kind: kind as i32,
            cost: self.cost,
            outcome: outcome as i32,
            detail: self.detail.clone(),
        }
    }
}

/// Generates [`Command`] from the list of command structs: the enum, its
/// names, and each question answered by the struct's [`Spec`].
macro_rules! commands {
    ($($name:ident),* $(,)?) => {
        /// Any command.
        #[derive(Clone, Debug, PartialEq, Eq)]
        pub enum Command {
            $($name($name),)*
        }

        /// Its fields, as its JSON body has them.
        impl Serialize for Command {
            fn serialize<S: serde::Serializer>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error> {
                match self {
                    $(Command::$name(c) => c.serialize(serializer),)*
                }
            }
        }

        $(impl From<$name> for Command {
            fn from(command: $name) -> Command {
                Command::$name(command)
            }
        })*

        impl Command {
            /// Every command name, for help texts and errors.
            pub const NAMES: &'static [&'static str] = &[$($name::NAME,)*];

            /// The command's name on the wire (`claim_task`).
            pub fn name(&self) -> &'static str {
                match self {
                    $(Command::$name(_) => $name::NAME,)*
                }
            }

            /// Checks sizes and required fields, before any state is read.
            pub fn validate(&self) -> Result<()> {
                match self {
                    $(Command::$name(c) => c.validate(),)*
                }
            }

            /// The stream (aggregate) the command decides on and appends to.
            pub fn stream(&self) -> String {
                match self {
                    $(Command::$name(c) => c.stream(),)*
                }
            }

            /// The session the command acts in, if it names one.
            pub fn session_id(&self) -> Option<&str> {
                match self {
                    $(Command::$name(c) => c.session_id(),)*
                }
            }

            /// The command's fields as a JSON object (its JSON body).
            pub fn to_json(&self) -> serde_json::Value {
                match self {
                    $(Command::$name(c) => serde_json::to_value(c).expect("commands serialise"),)*
                }
            }

            /// Parses `{...fields}` for the command `name`, with a message
            /// that says what is wrong.
            pub fn from_json(name: &str, fields: serde_json::Value) -> Result<Command> {
                if !Command::NAMES.contains(&name) {
                    return Err(unknown(name));
                }
                if !fields.is_object() {
                    return Err(Rejection::invalid(format!("the body of {name} must be a JSON object")));
                }
                match name {
                    $($name::NAME => serde_json::from_value::<$name>(fields)
                        .map(Command::$name)
                        .map_err(|e| Rejection::invalid(format!("{name}: {e}"))),)*
                    _ => Err(unknown(name)),
                }
            }

            /// Parses the protobuf body of the command `name`.
            pub fn from_protobuf(name: &str, bytes: &[u8]) -> Result<Command> {
                match name {
                    $($name::NAME => $name::from_proto(decode(name, bytes)?).map(Command::$name),)*
                    _ => Err(unknown(name)),
                }
            }

            /// The command's protobuf body, which [`Command::from_protobuf`]
            /// reads back as this command whenever it passes
            /// [`Command::validate`] (see [`Spec::to_proto`]).
            pub fn to_protobuf(&self) -> Vec<u8> {
                match self {
                    $(Command::$name(c) => prost::Message::encode_to_vec(&c.to_proto()),)*
                }
            }
        }
    };
}

commands!(
    OpenSession,
    Heartbeat,
    CloseSession,
    ExpireSession,
    RegisterAgent,
    CreateTask,
    ClaimTask,
    ReleaseTask,
    CompleteTask,
    FailTask,
    ExpireLease,
    AllocateBudget,
    DebitBudget,
    RefundBudget,
    RecordAction,
    RegisterModule,
    RunModule,
    BindPolicy,
    RegisterPrincipal,
    RevokePrincipal,
);

fn unknown(name: &str) -> Rejection {
    Rejection::invalid(format!("unknown command {name:?}; the commands are: {}", Command::NAMES.join(", ")))
}

fn decode<M: prost::Message + Default>(name: &str, bytes: &[u8]) -> Result<M> {
    M::decode(bytes).map_err(|e| Rejection::invalid(format!("the body of {name} is not a protobuf {name}: {e}")))
}

#[cfg(test)]
mod tests {
    use prost::Message;

    use super::*;

    #[test]
    fn json_commands_parse_with_defaults_and_clear_errors() {
        let claim = Command::from_json(
            "claim_task",
            serde_json::json!({"task_id": "t1", "agent_id": "a1", "session_id": "s1"}),
        )
        .unwrap();
        assert_eq!(
            claim,
            Command::ClaimTask(ClaimTask {
                task_id: "t1".into(),
                agent_id: "a1".into(),
                session_id: "s1".into(),
                lease_ms: 300_000
            })
        );
        assert_eq!(Command::from_json("claim_task", claim.to_json()).unwrap(), claim, "to_json round-trips");
        let unknown = Command::from_json("claim", serde_json::json!({})).unwrap_err();
        assert!(unknown.message.contains("claim_task"), "{unknown}");
        let missing = Command::from_json("claim_task", serde_json::json!({"task_id": "t1"})).unwrap_err();
        assert!(missing.message.contains("agent_id"), "{missing}");
        let extra = Command::from_json("heartbeat", serde_json::json!({"session_id": "s", "x": 1})).unwrap_err();
        assert!(extra.message.contains("unknown field"), "{extra}");
        let array = Command::from_json("heartbeat", serde_json::json!([])).unwrap_err();
        assert!(array.message.contains("JSON object"), "{array}");
    }

    #[test]
    fn validation_refuses_bad_ids_and_zero_amounts() {
        let bad = Command::Heartbeat(Heartbeat { session_id: "a/b".into() });
        assert_eq!(bad.validate().unwrap_err().code, Code::InvalidCommand);
        let zero = Command::DebitBudget(DebitBudget {
            budget_id: "b".into(),
            amount: 0,
            agent_id: String::new(),
            session_id: String::new(),
            task_id: String::new(),
            reason: String::new(),
            failed: false,
        });
        assert_eq!(zero.validate().unwrap_err().code, Code::InvalidAmount);
        assert_eq!(zero.session_id(), None, "an empty session is none");
    }

    #[test]
    fn every_name_parses_from_json_and_protobuf_to_its_own_command() {
        for name in Command::NAMES {
            // An empty protobuf body decodes (every field at its default);
            // the command is then the named one, or refused as invalid.
            match Command::from_protobuf(name, &[]) {
                Ok(command) => assert_eq!(command.name(), *name),
                Err(rejection) => assert_eq!(rejection.code, Code::InvalidCommand, "{name}: {rejection}"),
            }
        }
        assert_eq!(Command::NAMES.len(), 20);
    }

    #[test]
    fn protobuf_bodies_give_the_same_commands_as_json_with_the_same_defaults() {
        let claim = pb::ClaimTask { task_id: "t1".into(), agent_id: "a1".into(), session_id: "s1".into(), lease_ms: 0 };
        let json = serde_json::json!({"task_id": "t1", "agent_id": "a1", "session_id": "s1"});
        assert_eq!(
            Command::from_protobuf("claim_task", &claim.encode_to_vec()).unwrap(),
            Command::from_json("claim_task", json).unwrap()
        );
        let action = pb::RecordAction {
            agent_id: "a".into(),
            session_id: "s".into(),
            kind: pb::ActionKind::Learn as i32,
            outcome: pb::Outcome::Failed as i32,
            cost: 4,
            ..Default::default()
        };
        let parsed = Command::from_protobuf("record_action", &action.encode_to_vec()).unwrap();
        assert!(matches!(
            parsed,
            Command::RecordAction(RecordAction {
                kind: ActionKind::Learn,
                outcome: ActionOutcome::Failed,
                cost: 4,
                ..
            })
        ));
        assert_eq!(parsed.to_protobuf(), action.encode_to_vec(), "to_protobuf writes the same body");
        let unset = pb::RecordAction { kind: 0, ..action };
        assert!(Command::from_protobuf("record_action", &unset.encode_to_vec()).is_err());
        assert!(Command::from_protobuf("claim_task", b"\xff\xff\xff").is_err());
        assert!(Command::from_protobuf("claim", b"").unwrap_err().message.contains("claim_task"));
    }
}
