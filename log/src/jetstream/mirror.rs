//! The mirror: follows the JetStream stream in order (an ordered consumer
//! starting after the WAL's head) and writes what it reads into the WAL with
//! the `Follower`. An atomic batch is written whole or not at all, and the
//! idempotency key (and nonce) of an append is recorded once the append is
//! complete, each part of a group's batch with its own result.
//! A NATS failure (the server restarting, a network cut) only pauses it: it
//! follows again from the WAL's head once NATS answers. A consumer that
//! stops delivering while the stream grows (its server died, and the client
//! library would wait for two missed 15 s heartbeats) is noticed within two
//! idle checks and replaced the same way. An inconsistency (a
//! gap, an undecodable event) stops the mirror and poisons the log: it never
//! skips.
use std::sync::Arc;
use std::time::Duration;

use super::{SUBJECT_PREFIX, nats};
use crate::api::Appended;
use crate::codec;
use crate::error::{Error, Result};
use crate::wal::{Durable, Follower, Ordered};
use async_nats::jetstream::consumer::DeliverPolicy;
use async_nats::jetstream::consumer::pull::OrderedConfig;
use async_nats::jetstream::stream::Stream;
use futures_util::{FutureExt, StreamExt};

/// Most events one WAL write takes.
const MAX_WRITE_EVENTS: usize = 4096;

/// Pause before following again after a NATS failure.
const RETRY_PAUSE: Duration = Duration::from_millis(250);

/// How long the mirror waits for a message before it asks the stream
/// whether it has fallen behind.
const IDLE_CHECK: Duration = Duration::from_secs(1);

pub(super) async fn run(stream: Stream, mut follower: Follower, durable: Arc<Durable>) {
    loop {
        match follow(&stream, &mut follower, &durable).await {
            Err(e @ Error::Nats { .. }) => {
                tracing::warn!(
                    message = "the mirror follows the stream again from its head",
                    head_seq = follower.head().last_seq,
                    error = %e
                );
                metrics::counter!(crate::metrics::MIRROR_RESTARTS).increment(1);
                tokio::time::sleep(RETRY_PAUSE).await
            }
            Err(e) => {
                durable.poison(format!("the mirror stopped: {e}"));
                return;
            }
            Ok(never) => match never {},
        }
    }
}

/// What the mirror has read but not yet written.
#[derive(Default)]
struct Pending {
    events: Vec<Ordered>,
    keys: Vec<(String, Appended)>,
    /// An append with an idempotency key or a nonce under way: (its
    /// idempotency-table keys, first seq).
    open_key: Option<(Vec<String>, u64)>,
    /// Inside an atomic batch that has not committed yet.
    in_batch: bool,
}

impl Pending {
    fn push(&mut self, message: &async_nats::jetstream::Message) -> Result<()> {
        let info = message.info().map_err(|e| nats("reading a message's position")(&e))?;
        let seq = info.stream_sequence;
        let envelope = codec::decode(&message.payload).map_err(|e| Error::Corrupt { seq, reason: e.to_string() })?;
        let header = |name: &str| message.headers.as_ref().and_then(|h| h.get(name)).is_some();
        if !envelope.idempotency_key.is_empty() || !envelope.nonce.is_empty() {
            self.open_key = Some((crate::api::dedupe_keys(&envelope).collect(), seq));
        }
        self.in_batch = header("Nats-Batch-Id") && !header("Nats-Batch-Commit");
        let version = envelope.stream_version;
        self.events.push(Ordered { seq, envelope });
        // An append's keys are recorded with its result once it is whole:
        // a lone event, a batch's commit, or the end of a group's part.
        if (!self.in_batch || header(super::publish::PART_END))
            && let Some((keys, first_seq)) = self.open_key.take()
        {
            let appended = Appended { first_seq, last_seq: seq, stream_version: version, duplicate: true };
            self.keys.extend(keys.into_iter().map(|key| (key, appended)));
        }
        Ok(())
    }
}

/// Follows from the WAL's head until NATS fails (what was read but not
/// written is read again on the next call).
async fn follow(stream: &Stream, follower: &mut Follower, durable: &Durable) -> Result<std::convert::Infallible> {
    let start_sequence = follower.head().last_seq + 1;
    let consumer = stream
        .create_consumer(OrderedConfig {
            filter_subject: format!("{SUBJECT_PREFIX}.>"),
            deliver_policy: DeliverPolicy::ByStartSequence { start_sequence },
            ..Default::default()
        })
        .await
        .map_err(|e| nats("creating the mirror's consumer")(&e))?;
    let mut messages = consumer.messages().await.map_err(|e| nats("following the stream")(&e))?;
    let mut pending = Pending::default();
    // The mirror's position at the last idle check that found it behind.
    let mut behind_at: Option<u64> = None;
    loop {
        let message = match tokio::time::timeout(IDLE_CHECK, messages.next()).await {
            Ok(Some(message)) => message.map_err(|e| nats("following the stream")(&e))?,
            Ok(None) => {
                return Err(Error::Nats { operation: "following the stream", message: "the consumer ended".into() });
            }
            Err(_idle) => {
                let have = pending.events.last().map_or(follower.head().last_seq, |o| o.seq);
                let mut stream = stream.clone();
                let info = stream.info().await.map_err(|e| nats("reading the stream's state")(&e))?;
                let last = info.state.last_sequence;
                if last <= have {
                    behind_at = None;
                } else if behind_at == Some(have) {
                    // Behind for two idle checks with nothing delivered: the
                    // consumer is stalled, not slow.
                    return Err(Error::Nats {
                        operation: "following the stream",
                        message: format!("the consumer stalled at seq {have} while the stream has {last}"),
                    });
                } else {
                    behind_at = Some(have);
                }
                continue;
            }
        };
        behind_at = None;
        pending.push(&message)?;
        // Take whatever else has arrived, without waiting, into the same write.
        while pending.events.len() < MAX_WRITE_EVENTS
            && let Some(Some(message)) = messages.next().now_or_never()
        {
            pending.push(&message.map_err(|e| nats("following the stream")(&e))?)?;
        }
        if !pending.in_batch && !pending.events.is_empty() {
            // The next write's vector starts as large as this one (grown
            // by doubling, each step would copy every envelope in it).
            let room = Vec::with_capacity(pending.events.len());
            let events = std::mem::replace(&mut pending.events, room);
            let keys = std::mem::take(&mut pending.keys);
            let (at, written) = follower.apply_sealed(events, keys)?;
            durable.keep(written);
            durable.advance(at);
        }
    }
}
