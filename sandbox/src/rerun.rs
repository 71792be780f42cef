//! Re-execution on replay: every action run the log records is run again
//! from the log alone (the module's bytes are in its registration, the
//! input in the run) and compared with what was recorded: the output's
//! hash, the fuel used and the trap. The first run that differs is named
//! by its seq. A run aborted at its wall-clock deadline recorded no result
//! and is not compared.
use std::collections::HashMap;
use std::sync::Arc;

use agentlog_commands::module::{DEADLINE_EXCEEDED, content_hash};
use agentlog_core::{Body, EventSource};

use crate::error::{Error, Result};
use crate::sandbox::{Outcome, Sandbox};

/// Events read per page.
const PAGE: usize = 4096;

/// What a re-execution found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Rerun {
    /// Modules registered in the history.
    pub modules: u64,
    /// Runs executed again and compared.
    pub compared: u64,
    /// Runs recorded as aborted at their deadline: not compared.
    pub aborted: u64,
    /// Runs of modules registered before the history read begins (a WAL
    /// pruned with no archive before it): not compared.
    pub module_before_history: u64,
    /// The first run whose outcome differs, if any.
    pub divergence: Option<Divergence>,
}

impl Rerun {
    pub fn ok(&self) -> bool {
        self.divergence.is_none()
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Divergence {
    pub seq: u64,
    pub module_hash: String,
    /// What differs, recorded against now.
    pub what: String,
}

/// A recorded run's outcome, as compared.
#[derive(Debug, PartialEq, Eq)]
enum Recorded {
    Completed { output_hash: String, fuel_used: u64 },
    Trapped { trap: String, fuel_used: u64 },
}

/// Runs again every recorded run of `source`'s events `from..=through`,
/// stopping at the first that differs. From seq 1, a run of a module the
/// history never registered is a difference; from later (a pruned WAL),
/// such a run is counted as not compared. `progress(done, total)` after
/// each page.
pub fn rerun(
    source: &dyn EventSource,
    from: u64,
    through: u64,
    sandbox: &Sandbox,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<Rerun> {
    let read_failed =
        |e: agentlog_core::Error| Error::Engine { operation: "reading the history", reason: e.to_string() };
    let mut modules: HashMap<String, Arc<[u8]>> = HashMap::new();
    let mut found = Rerun::default();
    let mut next = from;
    while next <= through {
        let want = usize::try_from(through - next + 1).unwrap_or(PAGE).min(PAGE);
        let page = source.read(next, want).map_err(read_failed)?;
        let Some(last) = page.last() else { break };
        next = last.seq + 1;
        for event in &page {
            let (module_hash, input, input_hash, fuel_limit, engine_hash, recorded) = match &event.body {
                Some(Body::SandboxModuleRegistered(m)) => {
                    modules.insert(m.module_hash.clone(), m.module.as_slice().into());
                    found.modules += 1;
                    continue;
                }
                Some(Body::SandboxRunCompleted(r)) => (
                    &r.module_hash,
                    &r.input,
                    &r.input_hash,
                    r.fuel_limit,
                    &r.engine_hash,
                    Recorded::Completed { output_hash: r.output_hash.clone(), fuel_used: r.fuel_used },
                ),
                Some(Body::SandboxRunTrapped(r)) if r.trap == DEADLINE_EXCEEDED => {
                    found.aborted += 1;
                    continue;
                }
                Some(Body::SandboxRunTrapped(r)) => (
                    &r.module_hash,
                    &r.input,
                    &r.input_hash,
                    r.fuel_limit,
                    &r.engine_hash,
                    Recorded::Trapped { trap: r.trap.clone(), fuel_used: r.fuel_used },
                ),
                _ => continue,
            };
            let diverged = |what: String| Divergence { seq: event.seq, module_hash: module_hash.clone(), what };
            let Some(module) = modules.get(module_hash) else {
                if from > 1 {
                    found.module_before_history += 1;
                    continue;
                }
                found.divergence =
                    Some(diverged(format!("module {module_hash} is not registered before this run in the history")));
                return Ok(found);
            };
            if content_hash(input) != *input_hash {
                found.divergence = Some(diverged(format!(
                    "the recorded input hashes to {}, not the recorded input_hash {input_hash}",
                    content_hash(input)
                )));
                return Ok(found);
            }
            let now = match sandbox.run_hashed(module_hash, module, input, fuel_limit)? {
                Outcome::Completed { output_hash, fuel_used, .. } => Recorded::Completed { output_hash, fuel_used },
                Outcome::Trapped { trap, fuel_used } => Recorded::Trapped { trap: trap.name().to_owned(), fuel_used },
                Outcome::DeadlineExceeded { .. } => {
                    Recorded::Trapped { trap: DEADLINE_EXCEEDED.to_owned(), fuel_used: 0 }
                }
            };
            found.compared += 1;
            if now != recorded {
                let engine = if *engine_hash == sandbox.engine_hash() {
                    "on the same engine".to_owned()
                } else {
                    format!("recorded on engine {engine_hash}, re-run on {}", sandbox.engine_hash())
                };
                found.divergence = Some(diverged(format!("recorded {recorded:?}, re-run {now:?} ({engine})")));
                return Ok(found);
            }
        }
        progress(next - from, through - from + 1);
    }
    Ok(found)
}
