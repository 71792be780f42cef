//! `archive prune --before DATE`: lets the WAL drop the events of the days
//! before DATE, only after the whole archive verifies against itself and the
//! WAL, and only when every day before DATE that has events is archived.
use std::path::Path;

use agentlog_log::chain;
use agentlog_log::codec;
use agentlog_log::wal::{PruneReport, Store};

use crate::day::Day;
use crate::error::{Error, Result};
use crate::verify::{OnDay, Verified, verify};

#[derive(Clone, Debug)]
pub struct Pruned {
    pub verified: Verified,
    /// The last archived day before the cut date, and the WAL's report;
    /// `None` when no archived day is before it.
    pub through: Option<(Day, PruneReport)>,
}

pub fn prune(root: &Path, store: &Store, before: Day, on_day: OnDay<'_>) -> Result<Pruned> {
    let refuse = |problem: String| Error::Damaged { root: root.to_owned(), problem };
    let verified = verify(root, Some(store), on_day)?;
    let Some(manifest) = verified.manifests.iter().rfind(|m| m.day().is_some_and(|day| day < before)).cloned() else {
        return Ok(Pruned { verified, through: None });
    };
    let last_day = manifest.day().expect("verified above");
    // A day before the cut date that has events but no archive would lose
    // them: the WAL's next event must belong to the cut date or later.
    let mut next_day = None;
    if store.head()?.last_seq > manifest.last_seq {
        store.for_each_stored(manifest.last_seq + 1, 1, |_, bytes| {
            let event = codec::decode(bytes)?;
            next_day = Some(Day::of(agentlog_log::Timestamp::from_nanos(event.ts)));
            Ok(())
        })?;
    }
    if let Some(day) = next_day.filter(|day| *day < before) {
        return Err(refuse(format!(
            "{day} has events (from seq {}) but is not archived: run `agentlog archive run` first (nothing was pruned)",
            manifest.last_seq + 1
        )));
    }
    let hash = crate::writer::parse_hash(&manifest.last_hash).expect("verified above");
    let report = store.prune_through(manifest.last_seq, &hash).map_err(|e| match e {
        agentlog_log::Error::Corrupt { seq, reason } => {
            refuse(format!("at seq {seq}: {reason} (hash {})", chain::to_hex(&hash)))
        }
        other => other.into(),
    })?;
    Ok(Pruned { verified, through: Some((last_day, report)) })
}
