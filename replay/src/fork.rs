//! `replay fork`: what if. The history up to a point is copied into a
//! scratch embedded log (same seqs, same bytes, same chain: the copy's head
//! hash is checked against the original's at that point), the given
//! commands run through the real handler on a manual clock that starts at
//! that point's event time, and the fork's views are compared with the
//! original's at the same moment (its last event at or before the fork's
//! clock when the last command ran). The original is only read.
use std::ops::ControlFlow;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use agentlog_commands::{Accepted, Command, Handler, Rejection, Request};
use agentlog_core::{Appended, Clock, EventSource, ManualClock, SeededIdGen, Timestamp};
use agentlog_log::wal::{Follower, Ordered, Store, StoreOptions};
use agentlog_log::{EmbeddedLog, Options};
use serde::Deserialize;

use crate::error::{Error, Result};
use crate::source::History;
use crate::trace::{EntityChange, compare_ends};

/// One line of a commands file.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Line {
    /// The command's name, as `agentlog cmd` takes it.
    command: String,
    /// Its fields.
    #[serde(default = "empty_object")]
    body: serde_json::Value,
    #[serde(default = "default_actor")]
    actor: String,
    idempotency_key: Option<String>,
    /// Moves the fork's clock forward this much before the command.
    #[serde(default)]
    after_ms: u64,
}

fn empty_object() -> serde_json::Value {
    serde_json::json!({})
}

fn default_actor() -> String {
    "fork".to_owned()
}

/// A command to run in the fork.
#[derive(Clone, Debug)]
pub struct ForkCommand {
    /// Its line in the file (from 1).
    pub line: usize,
    pub command: Command,
    pub actor: String,
    pub idempotency_key: Option<String>,
    pub after: Duration,
}

/// Parses a commands file: one JSON object per line (`{"command":
/// "claim_task", "body": {...}, "actor": "...", "idempotency_key": "...",
/// "after_ms": 1000}`; blank lines and lines starting with `#` skipped).
pub fn parse_commands(text: &str) -> Result<Vec<ForkCommand>> {
    let mut commands = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let trimmed = raw.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let bad = |reason: String| Error::BadInput { what: "commands line", text: format!("{}", i + 1), reason };
        let line: Line = serde_json::from_str(trimmed).map_err(|e| bad(e.to_string()))?;
        let command = Command::from_json(&line.command, line.body).map_err(|r| bad(r.to_string()))?;
        commands.push(ForkCommand {
            line: i + 1,
            command,
            actor: line.actor,
            idempotency_key: line.idempotency_key,
            after: Duration::from_millis(line.after_ms),
        });
    }
    Ok(commands)
}

/// What one command did in the fork.
#[derive(Clone, Debug)]
pub struct Outcome {
    pub line: usize,
    pub command: String,
    pub at: Timestamp,
    pub result: std::result::Result<Accepted, Rejection>,
}

/// A fork's result.
#[derive(Debug)]
pub struct Forked {
    /// The point the fork starts after.
    pub at: u64,
    /// The fork's last seq.
    pub head: u64,
    pub outcomes: Vec<Outcome>,
    /// The fork's clock when its last command ran.
    pub until: Timestamp,
    /// The original's last event at or before `until` (at least `at`):
    /// where the original is compared with the fork.
    pub original_at: u64,
    /// The fork's views at its end against the original's at
    /// `original_at`: `before` is the original's, `after` the fork's.
    pub changes: Vec<EntityChange>,
}

/// Copies events `1..=at` of `history` into a new WAL at `out`, with the
/// idempotency keys and nonces their appends recorded; checks the copy's head.
fn copy(history: &History, at: u64, out: &Path, progress: &mut dyn FnMut(u64, u64)) -> Result<()> {
    let store = Arc::new(Store::open(out, StoreOptions::default())?);
    let mut follower = Follower::new(store.clone(), false)?;
    // An append's idempotency key is on its first event; the append is the
    // run of events after it on the same stream with the same correlation.
    let mut open_key: Option<(Vec<String>, Appended, String, Vec<u8>)> = None;
    history.pages(1, at, &mut |page| {
        let last = page.last().map_or(at, |e| e.seq);
        let mut keys = Vec::new();
        let mut events = Vec::with_capacity(page.len());
        for mut event in page {
            if let Some((key, appended, stream, correlation)) = &mut open_key {
                if event.stream == *stream && event.correlation_id == *correlation && event.seq == appended.last_seq + 1
                {
                    appended.last_seq = event.seq;
                    appended.stream_version = event.stream_version;
                } else {
                    keys.extend(std::mem::take(key).into_iter().map(|key| (key, *appended)));
                    open_key = None;
                }
            }
            if !event.idempotency_key.is_empty() || !event.nonce.is_empty() {
                if let Some((key, appended, ..)) = open_key.take() {
                    keys.extend(key.into_iter().map(|key| (key, appended)));
                }
                let appended = Appended {
                    first_seq: event.seq,
                    last_seq: event.seq,
                    stream_version: event.stream_version,
                    duplicate: false,
                };
                let dedupe = agentlog_core::api::dedupe_keys(&event).collect();
                open_key = Some((dedupe, appended, event.stream.clone(), event.correlation_id.to_vec()));
            }
            event.hash.clear();
            events.push(Ordered { seq: event.seq, envelope: event });
        }
        follower.apply(events, keys)?;
        progress(last, at);
        Ok(ControlFlow::Continue(()))
    })?;
    if let Some((key, appended, ..)) = open_key {
        follower.apply(Vec::new(), key.into_iter().map(|key| (key, appended)).collect())?;
    }
    let copied = follower.head();
    let original = history.read(at, 1)?.pop().map(|e| e.hash);
    if original.as_deref() != Some(&copied.hash[..]) || copied.last_seq != at {
        return Err(Error::Seam {
            seq: at,
            reason: "the fork's copy does not end on the original's chain hash; nothing was run".into(),
        });
    }
    store.sync_wal()?;
    Ok(())
}

/// Forks `history` just after `at` into `out` (which must not exist or be
/// empty), runs `commands` there on a manual clock from `at`'s event time
/// (ids from `seed`), and compares the fork with the original.
pub async fn fork(
    history: &History,
    at: u64,
    commands: &[ForkCommand],
    out: &Path,
    seed: u64,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<Forked> {
    if history.first_seq() > 1 {
        return Err(Error::NotFromStart { first: history.first_seq() });
    }
    let head = history.head()?.last_seq;
    if at > head || at == 0 {
        return Err(Error::PastHead { seq: at, head });
    }
    if out.exists() && std::fs::read_dir(out).map(|mut d| d.next().is_some()).unwrap_or(true) {
        return Err(Error::BadInput {
            what: "fork directory",
            text: out.display().to_string(),
            reason: "it exists and is not empty: the fork is written into a new directory".into(),
        });
    }
    copy(history, at, out, progress)?;
    let start = Timestamp::from_nanos(history.read(at, 1)?.pop().map_or(0, |e| e.ts));
    let mut outcomes = Vec::new();
    let until;
    {
        let log = Arc::new(EmbeddedLog::open(out, Options { sync: false, ..Options::default() })?);
        let clock = Arc::new(ManualClock::new(start));
        let handler = Handler::new(log.clone(), clock.clone(), Arc::new(SeededIdGen::new(seed)));
        for c in commands {
            let now = clock.advance(c.after);
            let mut request = Request::new(c.command.clone(), c.actor.clone());
            request.idempotency_key.clone_from(&c.idempotency_key);
            let result = handler.execute(request).await;
            outcomes.push(Outcome { line: c.line, command: c.command.name().to_owned(), at: now, result });
        }
        log.sync()?;
        until = clock.now();
    }
    let forked = History::open(Some(out), None)?;
    let fork_head = forked.head()?.last_seq;
    // The same moment in both histories: what really happened by the time
    // the fork's last command ran.
    let original_at = crate::point::Point::Time(until).resolve(history)?.max(at);
    let changes = compare_ends(history, original_at, &forked, at, progress)?;
    Ok(Forked { at, head: fork_head, outcomes, until, original_at, changes })
}
