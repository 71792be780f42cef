//! Reading the JetStream stream itself, without a mirror: `agentlog tail
//! --nats` and the demo's read-back through a running service use it.
//! Events carry the stream's seq; they have no hash (the chain is computed
//! by each node's mirror). An event that does not decode is an error at its
//! seq, never skipped.
use async_nats::jetstream::consumer::DeliverPolicy;
use async_nats::jetstream::consumer::pull::{Ordered, OrderedConfig};
use async_nats::jetstream::stream::{DirectGetErrorKind, Stream};
use futures_util::StreamExt;

use super::{SUBJECT_PREFIX, nats, subject};
use crate::codec;
use crate::error::{Error, Result};
use crate::schema::Envelope;

/// The event stream of a JetStream server, read directly.
#[derive(Debug)]
pub struct StreamReader {
    stream: Stream,
}

impl StreamReader {
    /// The stream `name` on the server at `url` (credentials may ride in
    /// the URL).
    pub async fn open(url: &str, name: &str) -> Result<StreamReader> {
        let client = super::connect(url).await?;
        let stream = async_nats::jetstream::new(client).get_stream(name).await.map_err(|e| Error::Nats {
            operation: "opening the event stream",
            message: format!("{e} (no {name} stream on that server: is agentlog serve running?)"),
        })?;
        Ok(StreamReader { stream })
    }

    /// The last seq of the whole stream, or of one aggregate (`task/t1`);
    /// 0 when there is none.
    pub async fn last_seq(&self, aggregate: Option<&str>) -> Result<u64> {
        match aggregate {
            None => {
                let mut stream = self.stream.clone();
                Ok(stream.info().await.map_err(|e| nats("reading the stream's state")(&e))?.state.last_sequence)
            }
            Some(name) => match self.stream.direct_get_last_for_subject(subject(name)).await {
                Ok(message) => Ok(message.sequence),
                Err(e) if e.kind() == DirectGetErrorKind::NotFound => Ok(0),
                Err(e) => Err(nats("reading an aggregate's last event")(&e)),
            },
        }
    }

    /// Events from `from_seq` on, of one aggregate or of all, in order, then
    /// each new one as it is stored.
    pub async fn follow(&self, aggregate: Option<&str>, from_seq: u64) -> Result<Following> {
        let filter_subject = aggregate.map_or_else(|| format!("{SUBJECT_PREFIX}.>"), subject);
        let consumer = self
            .stream
            .create_consumer(OrderedConfig {
                filter_subject,
                deliver_policy: DeliverPolicy::ByStartSequence { start_sequence: from_seq.max(1) },
                ..Default::default()
            })
            .await
            .map_err(|e| nats("creating a consumer")(&e))?;
        let messages = consumer.messages().await.map_err(|e| nats("following the stream")(&e))?;
        Ok(Following { messages })
    }

    /// Every event of one aggregate, as the stream holds it now.
    pub async fn read_aggregate(&self, name: &str) -> Result<Vec<Envelope>> {
        let last = self.last_seq(Some(name)).await?;
        let mut events = Vec::new();
        if last == 0 {
            return Ok(events);
        }
        let mut following = self.follow(Some(name), 1).await?;
        while let Some(event) = following.next().await {
            let event = event?;
            let seq = event.seq;
            events.push(event);
            if seq >= last {
                break;
            }
        }
        Ok(events)
    }
}

/// Events as the stream delivers them.
pub struct Following {
    messages: Ordered,
}

impl std::fmt::Debug for Following {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Following").finish_non_exhaustive()
    }
}

impl Following {
    /// The next event (waiting for it); `None` when the consumer ends.
    pub async fn next(&mut self) -> Option<Result<Envelope>> {
        let message = match self.messages.next().await? {
            Ok(message) => message,
            Err(e) => return Some(Err(nats("following the stream")(&e))),
        };
        let seq = match message.info() {
            Ok(info) => info.stream_sequence,
            Err(e) => return Some(Err(nats("reading a message's position")(&e))),
        };
        Some(
            codec::decode(&message.payload)
                .map(|mut event| {
                    event.seq = seq;
                    event
                })
                .map_err(|e| Error::Corrupt { seq, reason: e.to_string() }),
        )
    }
}
