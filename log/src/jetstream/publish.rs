//! Appending on JetStream: one event is one publish with
//! `Nats-Expected-Last-Subject-Sequence` (and `Nats-Msg-Id` for the
//! idempotency key); several events for one stream are one atomic batch
//! (`Nats-Batch-Id`, `Nats-Batch-Sequence`, `Nats-Batch-Commit`) whose first
//! message carries the expected subject sequence. Either way nothing is
//! written unless the stream is still at the version the caller decided on.
use async_nats::HeaderMap;
use async_nats::jetstream::context::PublishErrorKind;
use async_nats::jetstream::stream::DirectGetErrorKind;
use serde::Deserialize;

use super::{JetStreamLog, nats, subject};
use crate::api::{Appended, ExpectedVersion, GroupRequest};
use crate::codec;
use crate::error::{Error, Result};
use crate::schema::Envelope;

/// The header on the last message of each part of a group's batch but the
/// last (the commit ends that one): the mirror records each part's keys
/// with the part's own result.
pub(super) const PART_END: &str = "Agentlog-Part-End";
/// Atomic batches this node keeps open on the stream at once. nats-server
/// holds at most 50 per stream (`jetstream.limits.batch.
/// max_inflight_per_stream`), shared by every node writing to it.
pub(super) const MAX_BATCHES_IN_FLIGHT: usize = 16;
/// JetStream's error code for a failed expected-sequence check.
const WRONG_LAST_SEQUENCE: u64 = 10071;
/// Retries of an `ExpectedVersion::Any` append that lost a race.
const ANY_RETRIES: usize = 64;

enum Published {
    Stored {
        first_seq: u64,
        last_seq: u64,
    },
    /// JetStream had seen the `Nats-Msg-Id`: the first append's last seq.
    Duplicate {
        seq: u64,
    },
    /// Another writer appended to the subject first.
    WrongLastSequence,
}

#[derive(Deserialize)]
struct ApiError {
    #[serde(default)]
    err_code: u64,
    #[serde(default)]
    description: String,
}

#[derive(Deserialize)]
struct BatchAck {
    #[serde(default)]
    seq: u64,
    #[serde(default)]
    count: u64,
    error: Option<ApiError>,
}

impl JetStreamLog {
    /// The stream's last version and the JetStream sequence of that event
    /// (0, 0 when the stream has none).
    pub(super) async fn last_on_subject(&self, subject: &str) -> Result<(u64, u64)> {
        match self.stream.direct_get_last_for_subject(subject).await {
            Ok(message) => {
                let last = codec::decode(&message.payload)
                    .map_err(|e| Error::Corrupt { seq: message.sequence, reason: e.to_string() })?;
                Ok((last.stream_version, message.sequence))
            }
            Err(e) if e.kind() == DirectGetErrorKind::NotFound => Ok((0, 0)),
            Err(e) => Err(nats("reading a stream's last event")(&e)),
        }
    }

    pub(super) async fn append_published(&self, request: GroupRequest) -> Result<Vec<Appended>> {
        self.check_poison()?;
        // `Nats-Msg-Id` is a lone event's idempotency key, or else its
        // nonce's entry: within the dedupe window JetStream itself refuses
        // the second publish of either, whichever node sends it.
        let keys: Vec<String> = request.parts.iter().flat_map(|part| part.dedupe_keys()).collect();
        let key = keys.first().map(String::as_str);
        if let Some((key, first)) = self.recorded(&keys)? {
            return self.key_used(&request, key, first);
        }
        let subject = subject(&request.stream);
        let mut last_seen = 0;
        for attempt in 0..ANY_RETRIES {
            // The mirror's stream index maps a version to its JetStream
            // sequence: when it has the version the caller decided on (or,
            // for `Any`, the last version it knows), that is the expected
            // subject sequence, and JetStream need not be asked. If the
            // mirror is behind, the CAS fails and we ask.
            let known = match request.expected {
                _ if attempt > 0 => None,
                ExpectedVersion::Exact(v) => self.local_subject_seq(&request.stream, v)?,
                ExpectedVersion::Any => {
                    let v = self.store.stream_version(&request.stream)?;
                    self.local_subject_seq(&request.stream, v)?
                }
            };
            let (version, subject_seq) = match known {
                Some(known) => known,
                None => self.last_on_subject(&subject).await?,
            };
            last_seen = version;
            if !request.expected.admits(version) {
                return self.conflict(&request, version, subject_seq).await;
            }
            let events = stamp(&request, version);
            match self.publish(&subject, subject_seq, &events, key).await? {
                Published::Stored { first_seq, last_seq } => {
                    debug_assert_eq!(last_seq - first_seq + 1, events.len() as u64);
                    self.caught_up(last_seq).await?;
                    return Ok(placed(&request, first_seq, version));
                }
                Published::Duplicate { seq } => {
                    self.caught_up(seq).await?;
                    return match self.recorded(&keys)? {
                        Some((key, first)) => self.key_used(&request, key, first),
                        None => Err(Error::Corrupt {
                            seq,
                            reason: "JetStream reports a duplicate the mirror has no idempotency entry for".into(),
                        }),
                    };
                }
                Published::WrongLastSequence if request.expected == ExpectedVersion::Any || known.is_some() => continue,
                Published::WrongLastSequence => {
                    let (version, subject_seq) = self.last_on_subject(&subject).await?;
                    return self.conflict(&request, version, subject_seq).await;
                }
            }
        }
        Err(Error::Conflict { stream: request.stream, expected: request.expected, actual: last_seen })
    }

    /// A key of the request was recorded by an earlier append: a lone
    /// append answers with its first result, a group writes nothing.
    fn key_used(&self, request: &GroupRequest, key: String, first: Appended) -> Result<Vec<Appended>> {
        if request.parts.len() == 1 {
            return Ok(vec![first]);
        }
        Err(Error::KeyUsed { stream: request.stream.clone(), key })
    }

    /// The JetStream sequence of a stream's version `v`, from the mirror's
    /// index (`(0, 0)` for version 0); `None` when the mirror lacks it.
    fn local_subject_seq(&self, stream: &str, v: u64) -> Result<Option<(u64, u64)>> {
        if v == 0 {
            return Ok(Some((0, 0)));
        }
        // Usually the version the follower wrote last (this node's last
        // append waited for it): no read.
        if let Some((last, seq)) = self.versions.get(stream)
            && last == v
        {
            #[cfg(feature = "expensive-checks")]
            assert_eq!(self.store.indexed_seq(stream, v)?, Some(seq), "the follower's seq of {stream} v{v}");
            return Ok(Some((v, seq)));
        }
        Ok(self.store.indexed_seq(stream, v)?.map(|seq| (v, seq)))
    }

    /// Whichever of an append's keys the mirror has recorded (idempotency
    /// keys, nonces), with its first result.
    fn recorded(&self, keys: &[String]) -> Result<Option<(String, Appended)>> {
        for key in keys {
            if let Some(first) = self.store.idempotent_result(key)? {
                return Ok(Some((key.clone(), first)));
            }
        }
        Ok(None)
    }

    /// The stream moved on. Before saying so, let the mirror catch up with
    /// what was seen, so that the caller's reload sees it too; and if this
    /// request's own key is what moved it (a retry whose first try landed),
    /// answer with that.
    async fn conflict(&self, request: &GroupRequest, actual: u64, subject_seq: u64) -> Result<Vec<Appended>> {
        self.caught_up(subject_seq).await?;
        let keys: Vec<String> = request.parts.iter().flat_map(|part| part.dedupe_keys()).collect();
        if let Some((key, first)) = self.recorded(&keys)? {
            return self.key_used(request, key, first);
        }
        Err(Error::Conflict { stream: request.stream.clone(), expected: request.expected, actual })
    }

    async fn publish(
        &self,
        subject: &str,
        subject_seq: u64,
        events: &[Stamped],
        key: Option<&str>,
    ) -> Result<Published> {
        let mut expected = HeaderMap::new();
        expected.insert("Nats-Expected-Last-Subject-Sequence", subject_seq.to_string().as_str());
        if let [Stamped { event, .. }] = events {
            if let Some(key) = key {
                expected.insert("Nats-Msg-Id", key);
            }
            let payload = codec::encode(event).into();
            let ack = self
                .js
                .publish_with_headers(subject.to_owned(), expected, payload)
                .await
                .map_err(|e| nats("publishing an event")(&e))?
                .await;
            return match ack {
                Ok(ack) if ack.duplicate => Ok(Published::Duplicate { seq: ack.sequence }),
                Ok(ack) => Ok(Published::Stored { first_seq: ack.sequence, last_seq: ack.sequence }),
                Err(e) if e.kind() == PublishErrorKind::WrongLastSequence => Ok(Published::WrongLastSequence),
                Err(e) => Err(nats("publishing an event")(&e)),
            };
        }
        // An atomic batch. `Nats-Msg-Id` is not allowed in one: a retry is
        // caught by the expected subject sequence and the idempotency table.
        // The server holds a bounded number of batches open per stream,
        // shared by every node: this node keeps to its share.
        let _slot = self.batches.acquire().await.map_err(|_| Error::Closed)?;
        let batch_id = crate::chain::to_hex(&events[0].event.event_id);
        let headers = |i: usize| {
            let mut headers = if i == 0 { expected.clone() } else { HeaderMap::new() };
            headers.insert("Nats-Batch-Id", batch_id.as_str());
            headers.insert("Nats-Batch-Sequence", (i + 1).to_string().as_str());
            headers
        };
        let (commit, rest) = events.split_last().expect("a batch has events");
        for (i, Stamped { event, ends_part }) in rest.iter().enumerate() {
            let mut headers = headers(i);
            if *ends_part {
                headers.insert(PART_END, "1");
            }
            self.client
                .publish_with_headers(subject.to_owned(), headers, codec::encode(event).into())
                .await
                .map_err(|e| nats("publishing an atomic batch")(&e))?;
        }
        // The commit's acknowledgement carries the result, and any error of
        // the batch (a wrong expected sequence among them).
        let mut headers = headers(rest.len());
        headers.insert("Nats-Batch-Commit", "1");
        let reply = self
            .client
            .request_with_headers(subject.to_owned(), headers, codec::encode(&commit.event).into())
            .await
            .map_err(|e| nats("publishing an atomic batch")(&e))?;
        let ack: BatchAck =
            serde_json::from_slice(&reply.payload).map_err(|e| nats("reading a batch acknowledgement")(&e))?;
        if let Some(error) = ack.error {
            if error.err_code == WRONG_LAST_SEQUENCE {
                return Ok(Published::WrongLastSequence);
            }
            return Err(Error::Nats {
                operation: "publishing an atomic batch",
                message: format!("{} (code {})", error.description, error.err_code),
            });
        }
        if ack.count != events.len() as u64 || ack.seq < ack.count {
            return Err(Error::Nats {
                operation: "publishing an atomic batch",
                message: format!("the server stored {} of {} messages", ack.count, events.len()),
            });
        }
        Ok(Published::Stored { first_seq: ack.seq - ack.count + 1, last_seq: ack.seq })
    }
}

/// An event as published, and whether it is the last of a group's part
/// (its keys' result ends there).
struct Stamped {
    event: Envelope,
    ends_part: bool,
}

/// The events as published: stream and versions set, each part's key on
/// its first event, no seq or hash (the mirror assigns those in log order).
fn stamp(request: &GroupRequest, version: u64) -> Vec<Stamped> {
    let mut stamped = Vec::with_capacity(request.event_count());
    for part in &request.parts {
        let last = part.events.len() - 1;
        for (i, event) in part.events.iter().enumerate() {
            let mut event = event.clone();
            event.stream.clone_from(&request.stream);
            event.stream_version = version + 1 + stamped.len() as u64;
            event.seq = 0;
            event.hash.clear();
            event.idempotency_key = match (i, &part.idempotency_key) {
                (0, Some(key)) => key.clone(),
                _ => String::new(),
            };
            stamped.push(Stamped { event, ends_part: i == last });
        }
    }
    stamped
}

/// Where each part of a group stored from `first_seq` on, the stream at
/// `version` before it, landed.
fn placed(request: &GroupRequest, first_seq: u64, version: u64) -> Vec<Appended> {
    let mut next = 0;
    request
        .parts
        .iter()
        .map(|part| {
            let count = part.events.len() as u64;
            let appended = Appended {
                first_seq: first_seq + next,
                last_seq: first_seq + next + count - 1,
                stream_version: version + next + count,
                duplicate: false,
            };
            next += count;
            appended
        })
        .collect()
}
