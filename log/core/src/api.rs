//! The `Log` trait: the contract every backend (embedded RocksDB now,
//! JetStream later) keeps, and the types it speaks in. The contract is
//! written down once more as executable tests in `conformance`.
use std::fmt;
use std::future::Future;

use crate::chain::{GENESIS, Hash};
use crate::codec::{ASSIGNED_FIELDS_BYTES, MAX_EVENT_BYTES};
use crate::error::{Error, Result};
use crate::schema::Envelope;

/// Most events one append may carry (the JetStream atomic batch limit, so
/// both backends accept the same appends).
pub const MAX_APPEND_EVENTS: usize = 1000;
/// Longest stream name, in bytes.
pub const MAX_STREAM_BYTES: usize = 256;
/// Longest idempotency key, in bytes.
pub const MAX_IDEMPOTENCY_KEY_BYTES: usize = 256;

/// Longest nonce an envelope may carry (`<key id>/<nonce>`), in bytes.
pub const MAX_NONCE_BYTES: usize = 200;
/// What the idempotency table files a nonce under: `nonce/<key id>/<nonce>`.
/// No idempotency key may begin with it, so the two never meet.
pub const NONCE_KEY_PREFIX: &str = "nonce/";

/// The idempotency-table key of an envelope's nonce.
pub fn nonce_key(nonce: &str) -> String {
    format!("{NONCE_KEY_PREFIX}{nonce}")
}

/// The keys an append records in the idempotency table, from its first
/// event: its idempotency key and, for a signed command, its nonce. Either
/// seen again returns the first append's result and appends nothing.
pub fn dedupe_keys(first: &Envelope) -> impl Iterator<Item = String> + '_ {
    let key = (!first.idempotency_key.is_empty()).then(|| first.idempotency_key.clone());
    let nonce = (!first.nonce.is_empty()).then(|| nonce_key(&first.nonce));
    key.into_iter().chain(nonce)
}

/// Whether `id` can name an aggregate: 1 to 128 bytes of ASCII letters,
/// digits, `_`, `-`, `:` and `@`. The same rule holds on every backend, so
/// an id is always one NATS subject token (`agentlog.evt.<kind>.<id>`).
pub fn is_valid_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= 128 && id.bytes().all(|b| b.is_ascii_alphanumeric() || b"_-:@".contains(&b))
}

/// Whether `stream` is `<kind>/<id>` with a valid kind and id.
pub fn is_valid_stream(stream: &str) -> bool {
    stream.split_once('/').is_some_and(|(kind, id)| is_valid_id(kind) && is_valid_id(id))
}

/// What the appender believes the stream's version is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExpectedVersion {
    /// Append whatever the version (no concurrency check).
    Any,
    /// The stream's last version must be exactly this; 0 means the stream
    /// must not exist yet.
    Exact(u64),
}

impl ExpectedVersion {
    pub fn admits(self, actual: u64) -> bool {
        match self {
            ExpectedVersion::Any => true,
            ExpectedVersion::Exact(expected) => expected == actual,
        }
    }
}

impl fmt::Display for ExpectedVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExpectedVersion::Any => f.write_str("any version"),
            ExpectedVersion::Exact(0) => f.write_str("no stream yet"),
            ExpectedVersion::Exact(v) => write!(f, "version {v}"),
        }
    }
}

/// Events for one stream, appended together or not at all.
///
/// The producer fills in each envelope's `event_id`, `ts`, tracing ids,
/// `actor`, `schema_version` and `body`; the log assigns `stream`,
/// `stream_version`, `seq`, `hash`, and `idempotency_key` on the first event.
/// A signed command's first event also carries its `nonce`, which the log
/// records like a second idempotency key ([`dedupe_keys`]).
#[derive(Clone, Debug)]
pub struct AppendRequest {
    pub stream: String,
    pub expected: ExpectedVersion,
    pub events: Vec<Envelope>,
    pub idempotency_key: Option<String>,
}

impl AppendRequest {
    /// The keys this append records in the idempotency table: its
    /// idempotency key, then its first event's nonce ([`nonce_key`]).
    pub fn dedupe_keys(&self) -> Vec<String> {
        keys_of(&self.events, self.idempotency_key.as_deref())
    }

    /// Checks everything that does not depend on the log's state, so a bad
    /// request is refused before it reaches the writer.
    pub fn validate(&self) -> Result<()> {
        check_stream(&self.stream)?;
        if self.events.len() > MAX_APPEND_EVENTS {
            return Err(Error::BatchTooLarge { events: self.events.len(), limit: MAX_APPEND_EVENTS });
        }
        check_events(&self.stream, &self.events, self.idempotency_key.as_deref())
    }
}

/// Several commands' appends to one stream, written together or not at
/// all: the first part on `expected`, each later part on the version the
/// one before leaves. Each part keeps its own idempotency key and nonce,
/// recorded with its own result, as if it had been appended alone; so a
/// node that decided several commands on one aggregate in order pays one
/// append for them, not one round trip each.
#[derive(Clone, Debug)]
pub struct GroupRequest {
    pub stream: String,
    pub expected: ExpectedVersion,
    pub parts: Vec<Part>,
}

/// One command's events in a [`GroupRequest`].
#[derive(Clone, Debug)]
pub struct Part {
    pub events: Vec<Envelope>,
    pub idempotency_key: Option<String>,
}

impl Part {
    /// The keys this part records in the idempotency table (as
    /// [`AppendRequest::dedupe_keys`]).
    pub fn dedupe_keys(&self) -> Vec<String> {
        keys_of(&self.events, self.idempotency_key.as_deref())
    }
}

fn keys_of(events: &[Envelope], idempotency_key: Option<&str>) -> Vec<String> {
    let nonce = events.first().filter(|e| !e.nonce.is_empty()).map(|e| nonce_key(&e.nonce));
    idempotency_key.map(str::to_owned).into_iter().chain(nonce).collect()
}

impl From<AppendRequest> for GroupRequest {
    /// An append is a group of one part.
    fn from(request: AppendRequest) -> Self {
        GroupRequest {
            stream: request.stream,
            expected: request.expected,
            parts: vec![Part { events: request.events, idempotency_key: request.idempotency_key }],
        }
    }
}

impl GroupRequest {
    /// Every event of every part, in order.
    pub fn event_count(&self) -> usize {
        self.parts.iter().map(|p| p.events.len()).sum()
    }

    /// Checks each part as [`AppendRequest::validate`] would, the events
    /// of all parts together against [`MAX_APPEND_EVENTS`], and that no
    /// two parts share a key (the second would be a retry of the first:
    /// it waits for the first's result instead).
    pub fn validate(&self) -> Result<()> {
        check_stream(&self.stream)?;
        if self.parts.is_empty() {
            return Err(Error::InvalidAppend { reason: "a group needs at least one part".into() });
        }
        let events = self.event_count();
        if events > MAX_APPEND_EVENTS {
            return Err(Error::BatchTooLarge { events, limit: MAX_APPEND_EVENTS });
        }
        let mut seen = std::collections::HashSet::new();
        for (i, part) in self.parts.iter().enumerate() {
            check_events(&self.stream, &part.events, part.idempotency_key.as_deref())?;
            if let Some(key) = part.dedupe_keys().into_iter().find(|key| !seen.insert(key.clone())) {
                return Err(Error::InvalidAppend {
                    reason: format!("part {i} repeats the key {key:?} of an earlier part of the group"),
                });
            }
        }
        Ok(())
    }
}

fn check_stream(stream: &str) -> Result<()> {
    if stream.len() > MAX_STREAM_BYTES || !is_valid_stream(stream) {
        return Err(Error::InvalidAppend {
            reason: format!(
                "stream name {stream:?} must be <kind>/<id>, each 1 to 128 ASCII letters, digits, '_', '-', ':' or '@'"
            ),
        });
    }
    Ok(())
}

/// The checks of one append's events and key (the stream's name checked
/// already).
fn check_events(stream: &str, events: &[Envelope], idempotency_key: Option<&str>) -> Result<()> {
    let invalid = |reason: String| Err(Error::InvalidAppend { reason });
    if events.is_empty() {
        return invalid("an append needs at least one event".into());
    }
    if let Some(key) = idempotency_key
        && (key.is_empty() || key.len() > MAX_IDEMPOTENCY_KEY_BYTES)
    {
        return invalid(format!("idempotency key must be 1 to {MAX_IDEMPOTENCY_KEY_BYTES} bytes, got {}", key.len()));
    }
    if let Some(key) = idempotency_key
        && key.starts_with(NONCE_KEY_PREFIX)
    {
        return invalid(format!(
            "idempotency keys beginning with {NONCE_KEY_PREFIX:?} are reserved for signed commands' nonces; choose another key"
        ));
    }
    for (i, event) in events.iter().enumerate() {
        if i > 0 && !event.nonce.is_empty() {
            return invalid(format!("event {i} carries a nonce: only an append's first event may"));
        }
        if event.nonce.len() > MAX_NONCE_BYTES {
            return invalid(format!("the nonce is {} bytes; the limit is {MAX_NONCE_BYTES}", event.nonce.len()));
        }
        if event.body.is_none() {
            return invalid(format!("event {i} has no body"));
        }
        if event.event_id.len() != 16 {
            return invalid(format!(
                "event {i} has a {}-byte event_id; it must be a 16-byte UUID",
                event.event_id.len()
            ));
        }
        if !event.hash.is_empty() {
            return invalid(format!(
                "event {i} already has a hash: it was sealed by a log before; append fresh events (the log assigns seq, version and hash)"
            ));
        }
        if !event.stream.is_empty() && event.stream != stream {
            return invalid(format!("event {i} names stream {:?} inside an append to {:?}", event.stream, stream));
        }
        let size_bytes = prost::Message::encoded_len(event)
            + stream.len()
            + idempotency_key.map_or(0, str::len)
            + ASSIGNED_FIELDS_BYTES;
        if size_bytes > MAX_EVENT_BYTES {
            return Err(Error::TooLarge { size_bytes, limit_bytes: MAX_EVENT_BYTES });
        }
    }
    Ok(())
}

/// Where an append landed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Appended {
    pub first_seq: u64,
    pub last_seq: u64,
    /// The stream's version after the append.
    pub stream_version: u64,
    /// True when the idempotency key had been seen: nothing was appended and
    /// this is the first append's result.
    pub duplicate: bool,
}

/// The last event of the log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Head {
    /// 0 for an empty log.
    pub last_seq: u64,
    /// The chain hash of the last event ([`GENESIS`] for an empty log).
    pub hash: Hash,
}

impl Head {
    pub const EMPTY: Head = Head { last_seq: 0, hash: GENESIS };
}

/// An append-only, totally ordered, hash-chained event log.
pub trait Log: Send + Sync + 'static {
    type Subscription: Subscription;

    /// Appends the request's events atomically after checking its expected
    /// version (a mismatch is [`Error::Conflict`] and writes nothing) and its
    /// idempotency key (a known key returns the first result, appending
    /// nothing).
    fn append(&self, request: AppendRequest) -> impl Future<Output = Result<Appended>> + Send;

    /// Appends every part of the group atomically, the first on its
    /// expected version (a mismatch is [`Error::Conflict`] and writes
    /// nothing), each part's first event carrying its key, and records each
    /// part's keys with that part's result, which it returns in order. A
    /// group of one is [`Log::append`]. In a group of two or more, a key
    /// recorded already (by an earlier append, on any node) writes nothing
    /// and is [`Error::KeyUsed`]: the caller decides again, and finds the
    /// key's first result.
    fn append_group(&self, group: GroupRequest) -> impl Future<Output = Result<Vec<Appended>>> + Send;

    /// Up to `max` events from `from_seq` on, in log order.
    fn read(&self, from_seq: u64, max: usize) -> impl Future<Output = Result<Vec<Envelope>>> + Send;

    /// Up to `max` events of one stream from `from_version` on.
    fn read_stream(
        &self,
        stream: &str,
        from_version: u64,
        max: usize,
    ) -> impl Future<Output = Result<Vec<Envelope>>> + Send;

    /// Like [`Log::read_stream`], but without first catching up with what
    /// other nodes appended: only what this node's log already holds. Enough
    /// for an optimistic decision whose append names the version it was
    /// decided on (the append's check catches anything missed). On a
    /// single-node log it is `read_stream`.
    fn read_stream_local(
        &self,
        stream: &str,
        from_version: u64,
        max: usize,
    ) -> impl Future<Output = Result<Vec<Envelope>>> + Send {
        self.read_stream(stream, from_version, max)
    }

    /// The stream's last version (0 when it has no events).
    fn stream_version(&self, stream: &str) -> impl Future<Output = Result<u64>> + Send;

    /// The stream's last version when this log knows it without reading
    /// the stream's events (at most one index lookup, then remembered):
    /// never behind an append it has acknowledged, so a state folded to
    /// this version is caught up with the whole log. `None` when it does
    /// not know (read the stream instead); the default.
    fn known_version(&self, _stream: &str) -> Option<u64> {
        None
    }

    /// The stream's last version in this node's log as far as
    /// [`Log::read_stream_local`] would find it, when this log knows it
    /// without reading the stream's events (a mirror's follower remembers
    /// what it wrote, and what one index lookup found). `None` when it does
    /// not know; by default [`Log::known_version`].
    fn local_version(&self, stream: &str) -> Option<u64> {
        self.known_version(stream)
    }

    /// The result recorded for an idempotency key (or a nonce, under
    /// [`nonce_key`]), if any.
    fn idempotent_result(&self, key: &str) -> impl Future<Output = Result<Option<Appended>>> + Send;

    fn head(&self) -> impl Future<Output = Result<Head>> + Send;

    /// Every event from `from_seq` on, in order, then each new one as it
    /// commits.
    fn subscribe(&self, from_seq: u64) -> Result<Self::Subscription>;
}

/// A live, ordered feed of the log.
pub trait Subscription: Send {
    /// The next event; waits (without polling) until one commits. Fails with
    /// [`Error::Closed`] when the log shuts down. Dropping the future while
    /// it waits loses nothing: the next call gives the same event (a
    /// `select!` over it, or a poll that finds nothing ready, is safe).
    fn next(&mut self) -> impl Future<Output = Result<Envelope>> + Send;
}
