//! agentlog's deterministic WASM sandbox: untrusted policy modules and
//! agent actions run on wasmtime so that the same module, input and fuel
//! give the same output, bit for bit, on every machine — what replay
//! re-executes and compares.
//!
//! * [`Sandbox::validate`] accepts a module or refuses it, naming why: its size
//!   ([`Limits::max_module_bytes`]), any import (the host API is empty:
//!   no time, randomness, files or network can reach a module), a
//!   declared memory beyond the cap, or the ABI's exports missing.
//! * [`Sandbox::run`] executes one with fuel metering for all work, fixed
//!   memory and table limits, NaN canonicalisation and relaxed SIMD off,
//!   and a wall-clock deadline through epoch interruption: a run past its
//!   deadline is aborted and reported as such, never as a result.
//!   Compiled modules are cached by content hash, a bounded number.
//!
//! The ABI a module implements: it exports `memory`, `alloc(len: i32) ->
//! i32` (where the host writes the input) and `run(ptr: i32, len: i32) ->
//! i64`, which returns the output's place as `(ptr << 32) | len`.
pub mod error;
pub mod examples;
pub mod host;
pub mod limits;
pub mod rerun;
pub mod sandbox;
pub mod validate;

pub use error::{Error, Result};
pub use limits::Limits;
pub use rerun::{Rerun, rerun};
pub use sandbox::{Outcome, Sandbox, TrapKind};
pub use validate::Validated;

/// A module file's bytes as WASM: a binary module as it is, WAT text
/// compiled to one (`wat`), or why it is neither.
pub fn module_from_file(bytes: &[u8]) -> Result<Vec<u8>> {
    wat::parse_bytes(bytes)
        .map(std::borrow::Cow::into_owned)
        .map_err(|e| Error::refused(format!("it is neither a WASM binary nor WAT text: {e}")))
}
