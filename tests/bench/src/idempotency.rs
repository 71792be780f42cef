//! What a look-up in the idempotency table costs as the table grows: a
//! command with an idempotency key checks it three times before it is
//! appended (the handler, its group, the append), a signed one its nonce as
//! often, nearly always finding nothing, and the table keeps an entry for
//! every keyed or signed command ever made. Part of
//! `agentlog bench` (the embedded log): the table is filled through
//! `Log::append_group` (128 commands a group, each with its own key), the
//! log reopened so that what was written is in table files, then
//! `Log::idempotent_result` timed for keys never used and for keys used.
use std::path::Path;
use std::time::Instant;

use agentlog_log::{EmbeddedLog, ExpectedVersion, GroupRequest, Log, Options, Part};

use crate::sample_event;

/// Commands per group while filling.
const GROUP: u64 = 128;
/// Look-ups timed of each kind at each size.
const LOOKUPS: u64 = 100_000;

/// One size of the table.
#[derive(Debug)]
pub(crate) struct Row {
    pub keys: u64,
    /// Mean of a look-up of a key never used (ns).
    pub unseen_ns: f64,
    /// Mean of a look-up of a key used (ns).
    pub seen_ns: f64,
}

/// The key of the `i`th command: spread like the random keys producers
/// send, so that no look-up is near the one before.
fn key(i: u64) -> String {
    format!("cmd-{:032x}", u128::from(i).wrapping_mul(0x9e37_79b9_7f4a_7c15_f39c_c060_5ced_c835))
}

/// Fills one log to each of `sizes` (ascending) and measures at each.
pub(crate) async fn measure(dir: &Path, sizes: &[u64], mut progress: impl FnMut(u64)) -> anyhow::Result<Vec<Row>> {
    let mut rows = Vec::new();
    let mut written = 0u64;
    for &size in sizes {
        {
            let log = EmbeddedLog::open(dir, Options::default())?;
            while written < size {
                let n = GROUP.min(size - written);
                let parts = (written..written + n)
                    .map(|i| Part { events: vec![sample_event(i)], idempotency_key: Some(key(i)) })
                    .collect();
                log.append_group(GroupRequest {
                    stream: format!("agent/k{}", written / (GROUP * 64)),
                    expected: ExpectedVersion::Any,
                    parts,
                })
                .await?;
                written += n;
            }
        }
        progress(size);
        // Reopened: what was written is flushed into table files, as a
        // node's older keys are.
        let log = EmbeddedLog::open(dir, Options::default())?;
        let (unseen_ns, found) = time(&log, (0..LOOKUPS).map(|i| key(size + i))).await?;
        anyhow::ensure!(found == 0, "{found} keys never used were found in the idempotency table");
        let (seen_ns, found) = time(&log, (0..LOOKUPS).map(|i| key(i.wrapping_mul(7919) % size))).await?;
        anyhow::ensure!(found == LOOKUPS, "only {found} of {LOOKUPS} keys used were found in the idempotency table");
        rows.push(Row { keys: size, unseen_ns, seen_ns });
    }
    Ok(rows)
}

/// The mean time of a look-up of each of `keys`, and how many were found.
async fn time(log: &EmbeddedLog, keys: impl Iterator<Item = String>) -> anyhow::Result<(f64, u64)> {
    let keys: Vec<String> = keys.collect();
    let started = Instant::now();
    let mut found = 0;
    for key in &keys {
        found += u64::from(log.idempotent_result(key).await?.is_some());
    }
    Ok((started.elapsed().as_nanos() as f64 / keys.len() as f64, found))
}
