//! The floor under a claim's latency on this machine: what the NATS visits a
//! claim through the service makes cost with nothing of agentlog's in them,
//! one at a time on an otherwise idle server. A claim is a request and its
//! reply (two one-way hops through nats-server), a direct get of its other
//! aggregates' last events (its session and agent, read at once), and one
//! JetStream publish; here each is made by a bare async-nats client (a
//! no-op responder in this process, a direct get on the event stream, a
//! publish to a plain stream with no consumer), and then all three in a
//! row, which is the least a claim can take here before any work of its
//! own (deciding, the mirror's write). `distributed.rs` measures it in the
//! claims' alternating rounds, so the machine's drift falls on both, and
//! reports it beside them.
use std::time::Instant;

use agentlog_commands::wire::server_has_read;
use agentlog_log::jetstream::{JetStreamLog, subject};
use agentlog_log::{AppendRequest, ExpectedVersion, Log};
use futures_util::StreamExt as _;
use hdrhistogram::Histogram;

use crate::{Latency, sample_event};

/// Each visit alone and the three in a row.
pub(crate) struct Floor {
    pub request_reply: Latency,
    pub direct_get: Latency,
    pub publish: Latency,
    pub in_a_row: Latency,
}

impl Floor {
    pub fn json(&self) -> serde_json::Value {
        let figure = |l: &Latency| serde_json::json!({ "p50_us": l.p50_us.round(), "p99_us": l.p99_us.round() });
        serde_json::json!({
            "request_reply": figure(&self.request_reply),
            "direct_get": figure(&self.direct_get),
            "publish": figure(&self.publish),
            "in_a_row": figure(&self.in_a_row),
        })
    }
}

/// The bare clients the visits are made with, and what they measured.
pub(crate) struct Probe {
    client: async_nats::Client,
    js: async_nats::jetstream::Context,
    events: async_nats::jetstream::stream::Stream,
    last_of: String,
    payload: bytes::Bytes,
    answering: tokio::task::JoinHandle<()>,
    /// Request/reply, direct get, publish, the three in a row (ns).
    histograms: Vec<Histogram<u64>>,
}

impl Probe {
    /// A no-op responder, a plain stream to publish to, and an aggregate
    /// on `log`'s stream (`stream`) to read the last event of.
    pub async fn start(url: &str, log: &JetStreamLog, stream: &str) -> anyhow::Result<Probe> {
        let aggregate = "agent/bench-floor";
        let first = AppendRequest {
            stream: aggregate.into(),
            expected: ExpectedVersion::Any,
            events: vec![sample_event(1)],
            idempotency_key: None,
        };
        log.append(first).await?;
        let responder = async_nats::connect(url).await?;
        let mut incoming = responder.subscribe("bench.floor").await?;
        server_has_read(&responder).await?;
        let answering = tokio::spawn(async move {
            while let Some(request) = incoming.next().await {
                if let Some(reply) = request.reply {
                    let _ = responder.publish(reply, bytes::Bytes::new()).await;
                }
            }
        });
        let client = async_nats::connect(url).await?;
        let js = async_nats::jetstream::new(client.clone());
        crate::plain_stream(&js, "FLOOR").await?;
        let events = js.get_stream(stream).await?;
        Ok(Probe {
            client,
            js,
            events,
            last_of: subject(aggregate),
            // A command's size, both ways.
            payload: agentlog_log::codec::encode(&sample_event(2)).into(),
            answering,
            histograms: (0..4).map(|_| Histogram::new(3)).collect::<Result<_, _>>()?,
        })
    }

    /// `samples` rounds of: a request to the no-op responder and its
    /// reply, a direct get of the aggregate's last event, and a JetStream
    /// publish awaiting its ack; each timed, and the round.
    pub async fn measure(&mut self, samples: u64) -> anyhow::Result<()> {
        let ns = |since: Instant| u64::try_from(since.elapsed().as_nanos()).unwrap_or(u64::MAX);
        for _ in 0..samples {
            let round = Instant::now();
            self.client.request("bench.floor", self.payload.clone()).await?;
            self.histograms[0].record(ns(round))?;
            let started = Instant::now();
            self.events.direct_get_last_for_subject(&self.last_of).await?;
            self.histograms[1].record(ns(started))?;
            let started = Instant::now();
            self.js.publish("floor.claims", self.payload.clone()).await?.await?;
            self.histograms[2].record(ns(started))?;
            self.histograms[3].record(ns(round))?;
        }
        Ok(())
    }

    /// What every [`Probe::measure`] measured.
    pub fn floor(self) -> Floor {
        self.answering.abort();
        let h = &self.histograms;
        Floor {
            request_reply: Latency::from(&h[0]),
            direct_get: Latency::from(&h[1]),
            publish: Latency::from(&h[2]),
            in_a_row: Latency::from(&h[3]),
        }
    }
}
