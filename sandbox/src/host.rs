//! The sandbox as the command handler sees it: [`ModuleHost`], which
//! `agentlog-commands` defines so that deciding a command never compiles
//! wasmtime. The node wires a [`Sandbox`] in with
//! `Handler::with_modules`.
use agentlog_commands::module::{DEADLINE_EXCEEDED, ModuleHost, RunOutcome};

use crate::error::Error;
use crate::sandbox::{Outcome, Sandbox};

impl ModuleHost for Sandbox {
    fn check(&self, module: &[u8]) -> Result<(), String> {
        self.validate(module).map(|_| ()).map_err(|e| match e {
            Error::Refused { reason } => reason,
            other => other.to_string(),
        })
    }

    fn run(&self, module_hash: &str, module: &[u8], input: &[u8], fuel: u64) -> Result<RunOutcome, String> {
        match self.run_hashed(module_hash, module, input, fuel).map_err(|e| e.to_string())? {
            Outcome::Completed { output, fuel_used, .. } => Ok(RunOutcome::Completed { output, fuel_used }),
            Outcome::Trapped { trap, fuel_used } => Ok(RunOutcome::Trapped { trap: trap.name().to_owned(), fuel_used }),
            Outcome::DeadlineExceeded { fuel_used } => {
                Ok(RunOutcome::Trapped { trap: DEADLINE_EXCEEDED.to_owned(), fuel_used })
            }
        }
    }

    fn is_compiled(&self, module_hash: &str) -> bool {
        Sandbox::is_compiled(self, module_hash)
    }

    fn engine_hash(&self) -> String {
        Sandbox::engine_hash(self)
    }
}
