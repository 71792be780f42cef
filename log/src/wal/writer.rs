//! The single writer thread, its group commit, and the syncer thread that
//! makes groups durable.
//!
//! Appends queue on one channel. The writer takes everything waiting (up to a
//! bound), checks each request against the log's state, and writes them all
//! in one `WriteBatch`. With `sync` off it then acknowledges them. With `sync`
//! on and nothing else waiting, it fsyncs and acknowledges them itself (the
//! lowest latency for a lone producer). With `sync` on and more appends
//! waiting, it hands the group to the syncer and goes on to the next group:
//! the syncer fsyncs the WAL once for every group written since its last
//! fsync, then acknowledges them. So under load fsyncs run back to back while
//! groups keep being written, and the more producers there are, the more each
//! fsync carries (pipelined group commit).
//!
//! Acknowledged means durable. The head (and so every subscription) moves
//! only over durable events. A direct read may see an event a moment before
//! its fsync; on power loss such an event can vanish, but never alone: the
//! WAL is sequential, so everything written after it vanishes too.
use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::{mpsc, oneshot};

use super::durable::Durable;
use super::stage::Staged;
use super::store::Store;
use crate::api::{Appended, GroupRequest, Head};
use crate::error::{Error, Result};

/// How many stream versions the writer (and a mirror's follower)
/// remembers before it starts over, reading them back from the `streams`
/// index as needed: memory follows this, not the streams ever written.
pub(crate) const VERSION_CACHE_ENTRIES: usize = 1 << 17;

/// The writer's stream versions, shared with readers
/// ([`crate::Log::known_version`]). Only the writer sets them: a version
/// it read from the store, or a group's once it is written and before it
/// is acknowledged. So a version here is never behind an acknowledged
/// append, and never ahead of what a read of the stream finds. A mirror's
/// follower keeps its own the same way, each version with the seq of its
/// event (`Versions<Last>`, [`crate::Log::local_version`]).
#[derive(Debug, Default)]
pub(crate) struct Versions<T = u64>(Mutex<HashMap<String, T>>);

/// A stream's last version and that event's seq, as a mirror's follower
/// wrote them.
pub(crate) type Last = (u64, u64);

impl<T: Copy> Versions<T> {
    pub fn get(&self, stream: &str) -> Option<T> {
        self.lock().get(stream).copied()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, T>> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(super) fn insert(&self, stream: &str, version: T) {
        self.lock().insert(stream.to_owned(), version);
    }

    /// The stream's entry, or else `read`'s answer (from the store), which
    /// is remembered. Read under the lock: a writer publishes what it wrote
    /// (`extend`) only once it is in the store, so an answer read here is
    /// never older than an entry published before it, and an entry
    /// published after it replaces it.
    pub fn get_or_read(&self, stream: &str, read: impl FnOnce() -> crate::Result<T>) -> crate::Result<T> {
        let mut versions = self.lock();
        if let Some(known) = versions.get(stream) {
            return Ok(*known);
        }
        let read = read()?;
        if versions.len() >= VERSION_CACHE_ENTRIES {
            versions.clear();
        }
        versions.insert(stream.to_owned(), read);
        Ok(read)
    }

    /// Adds a written group's versions, starting over beyond the bound.
    pub(super) fn extend(&self, written: HashMap<String, T>) {
        let mut versions = self.lock();
        if versions.len() + written.len() > VERSION_CACHE_ENTRIES {
            versions.clear();
        }
        versions.extend(written);
    }
}

/// An append (a group of one part) or a group, and where its result goes.
pub(crate) struct Pending {
    pub request: GroupRequest,
    pub reply: oneshot::Sender<Result<Vec<Appended>>>,
}

pub(crate) struct Writer {
    pub store: Arc<Store>,
    pub head: Head,
    pub max_group_events: usize,
    pub durable: Arc<Durable>,
    pub versions: Arc<Versions>,
    /// `Some` when appends must be fsynced before they are acknowledged.
    pub syncer: Option<std::sync::mpsc::Sender<Written>>,
}

type Reply = (oneshot::Sender<Result<Vec<Appended>>>, Result<Vec<Appended>>);

/// A group written to the WAL, waiting for an fsync.
pub(crate) struct Written {
    head: Head,
    replies: Vec<Reply>,
}

/// Answers every reply of a group that did not become durable: an append
/// that would have succeeded gets the poison; a refusal stays a refusal.
fn refuse(replies: Vec<Reply>, error: &Error) {
    for (reply, result) in replies {
        let result = match result {
            Ok(_) => Err(Error::Poisoned { reason: poison_reason(error) }),
            refused => refused,
        };
        let _ = reply.send(result);
    }
}

fn poison_reason(error: &Error) -> String {
    match error {
        Error::Poisoned { reason } => reason.clone(),
        other => other.to_string(),
    }
}

/// Makes a written group's head durable-visible, then acknowledges it:
/// whoever sees an acknowledgement also sees a head that includes it.
fn acknowledge(durable: &Durable, head: Head, replies: Vec<Reply>) {
    durable.advance(head);
    for (reply, result) in replies {
        let _ = reply.send(result);
    }
}

/// The syncer: fsyncs the WAL for every group written since its last fsync,
/// then acknowledges them and publishes the head they reach.
pub(crate) struct Syncer {
    pub store: Arc<Store>,
    pub durable: Arc<Durable>,
}

/// Poisons the WAL if the thread holding it panics: a writer that died
/// midway leaves the state on disk unknown (fail-stop), and whoever waits
/// on the head must wake to see it.
struct PoisonOnPanic<'a>(&'a Durable, &'static str);

impl Drop for PoisonOnPanic<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.0.poison(format!("the {} thread panicked", self.1));
        }
    }
}

impl Syncer {
    pub fn run(self, written: std::sync::mpsc::Receiver<Written>) {
        let _guard = PoisonOnPanic(&self.durable, "syncer");
        while let Ok(first) = written.recv() {
            let mut groups = vec![first];
            groups.extend(written.try_iter());
            let head = groups.last().expect("at least one group").head;
            let replies = groups.into_iter().flat_map(|g| g.replies).collect();
            match self.durable.check().and_then(|()| self.store.sync_wal()) {
                Ok(()) => acknowledge(&self.durable, head, replies),
                // Not durable, and nothing after it can be trusted to be.
                Err(e) => refuse(replies, &self.durable.poison(format!("fsync failed: {e}"))),
            }
        }
    }
}

/// The state one group builds up before it is written.
struct Group<'a> {
    staged: Staged<'a>,
    versions: HashMap<String, u64>,
    keys: HashMap<String, Appended>,
}

impl Writer {
    pub fn run(mut self, mut queue: mpsc::Receiver<Pending>) {
        let durable = self.durable.clone();
        let _guard = PoisonOnPanic(&durable, "writer");
        while let Some(first) = queue.blocking_recv() {
            let mut events = first.request.event_count();
            let mut group = vec![first];
            while events < self.max_group_events {
                match queue.try_recv() {
                    Ok(next) => {
                        events += next.request.event_count();
                        group.push(next);
                    }
                    Err(_) => break,
                }
            }
            self.commit(group, &queue);
        }
    }

    fn commit(&mut self, pending: Vec<Pending>, queue: &mpsc::Receiver<Pending>) {
        if let Err(poisoned) = self.durable.check() {
            for p in pending {
                let _ = p.reply.send(Err(Error::Poisoned { reason: poison_reason(&poisoned) }));
            }
            return;
        }
        let store = self.store.clone();
        let mut group =
            Group { staged: Staged::new(&store, self.head), versions: HashMap::new(), keys: HashMap::new() };
        let mut replies: Vec<Reply> = Vec::with_capacity(pending.len());
        for Pending { request, reply } in pending {
            let result = self.stage(&mut group, request);
            replies.push((reply, result));
        }
        if group.staged.is_empty() {
            // Only duplicates and conflicts: nothing to write. A duplicate's
            // first append may still wait for its fsync, so these replies
            // take the same way as any others.
            return self.acknowledge(self.head, replies, queue);
        }
        // The syncer fsyncs; the write itself only reaches the WAL file.
        let events = group.staged.head().last_seq - self.head.last_seq;
        match group.staged.write(false) {
            Ok((head, sealed)) => {
                metrics::histogram!(crate::metrics::WAL_GROUP_EVENTS).record(events as f64);
                self.head = head;
                self.versions.extend(group.versions);
                self.durable.keep(sealed);
                self.acknowledge(head, replies, queue);
            }
            // After a failed write the state on disk is unknown: refuse
            // every later write rather than build on it (fail-stop).
            Err(e) => refuse(replies, &self.durable.poison(format!("a write failed: {e}"))),
        }
    }

    /// Acknowledges a written group: at once with `sync` off; with it on,
    /// after an fsync, done here when no other append waits (no hand-off
    /// latency) and by the syncer when some do (the writer goes on).
    fn acknowledge(&self, head: Head, replies: Vec<Reply>, queue: &mpsc::Receiver<Pending>) {
        match &self.syncer {
            Some(_) if queue.is_empty() => match self.store.sync_wal() {
                Ok(()) => acknowledge(&self.durable, head, replies),
                Err(e) => refuse(replies, &self.durable.poison(format!("fsync failed: {e}"))),
            },
            Some(syncer) => {
                if let Err(unsent) = syncer.send(Written { head, replies }) {
                    refuse(unsent.0.replies, &self.durable.poison("the syncer thread stopped"));
                }
            }
            None => acknowledge(&self.durable, head, replies),
        }
    }

    fn current_version(&mut self, group: &Group, stream: &str) -> Result<u64> {
        if let Some(v) = group.versions.get(stream).copied().or_else(|| self.versions.get(stream)) {
            return Ok(v);
        }
        let version = self.store.stream_version(stream)?;
        self.versions.insert(stream, version);
        Ok(version)
    }

    /// Checks one request against the log as the group has left it, and adds
    /// its parts' events to the batch, each part's keys with its result.
    fn stage(&mut self, group: &mut Group, request: GroupRequest) -> Result<Vec<Appended>> {
        // Idempotency keys, and signed commands' nonces: seen before, they
        // give the first result (a lone append) or refuse the group.
        let keys: Vec<Vec<String>> = request.parts.iter().map(|part| part.dedupe_keys()).collect();
        for key in keys.iter().flatten() {
            let first = match group.keys.get(key) {
                Some(first) => *first,
                None => match self.store.idempotent_result(key)? {
                    Some(first) => first,
                    None => continue,
                },
            };
            if request.parts.len() == 1 {
                return Ok(vec![first]);
            }
            return Err(Error::KeyUsed { stream: request.stream, key: key.clone() });
        }
        let current = self.current_version(group, &request.stream)?;
        if !request.expected.admits(current) {
            return Err(Error::Conflict { stream: request.stream, expected: request.expected, actual: current });
        }
        let mut version = current;
        let mut results = Vec::with_capacity(request.parts.len());
        for (part, keys) in request.parts.into_iter().zip(keys) {
            let first_seq = group.staged.head().last_seq + 1;
            for (i, mut event) in part.events.into_iter().enumerate() {
                version += 1;
                event.seq = group.staged.head().last_seq + 1;
                event.stream_version = version;
                event.stream.clone_from(&request.stream);
                if i == 0
                    && let Some(key) = &part.idempotency_key
                {
                    event.idempotency_key.clone_from(key);
                }
                // `validate` left room for what the log assigns.
                group.staged.event(event).expect("a validated event stays within the size limit once sealed");
            }
            let appended = Appended {
                first_seq,
                last_seq: group.staged.head().last_seq,
                stream_version: version,
                duplicate: false,
            };
            for key in keys {
                group.staged.idempotency_key(&key, &appended);
                group.keys.insert(key, Appended { duplicate: true, ..appended });
            }
            results.push(appended);
        }
        group.versions.insert(request.stream, version);
        Ok(results)
    }
}
