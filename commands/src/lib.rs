//! agentlog-commands: the commands producers send, the pure `decide`
//! functions over aggregate state, and the handler that appends their events
//! to a [`agentlog_core::Log`] with optimistic concurrency, and the
//! [`Executor`] trait that code sending commands names. The sandbox's
//! commands reach a WASM engine through [`ModuleHost`] only.
//!
//! Also the seeded simulation behind `agentlog demo` (`sim`), which drives
//! the real handler so the demo exercises the real command path.
pub mod aggregate;
pub mod auth;
pub mod command;
pub mod executor;
pub mod handler;
pub mod module;
pub mod policy;
pub mod principal;
pub mod rejection;
pub mod sim;
pub mod turns;
#[cfg(feature = "nats")]
pub mod wire;

pub use aggregate::Policy;
pub use auth::{Auth, Credential, Principal, Role, Signer};
pub use command::{ActionKind, ActionOutcome, Command, Spec};
pub use executor::Executor;
pub use handler::{Accepted, Handler, Request};
pub use module::{ModuleHost, ModuleKind, RunOutcome, RunResult};
pub use rejection::{Code, Rejection};
