//! Commands over NATS request/reply: the subjects, headers and bodies of
//! docs/PROTOCOL.md, the service that answers them (`Service`) and the Rust
//! client (`Client`).
//!
//! A request goes to `agentlog.cmd.<command>` with the command's protobuf
//! message as its body, or its fields as JSON with the header
//! `Content-Type: application/json`; the service instances share the subject
//! in one queue group. The reply comes in the request's encoding: a
//! `CommandReply`, or JSON `{"accepted": {...}}` /
//! `{"rejected": {"kind", "code", "message"}}`. The client sends protobuf,
//! and JSON only for a command that fails validation (see [`Message::new`]).
use std::sync::Arc;
use std::time::Duration;

use agentlog_core::Log;
use agentlog_core::ids::CorrelationId;
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::auth::{Credential, Signed, Signer};
use crate::command::Command;
use crate::handler::{Accepted, Handler, Request};
use crate::module::{Charge, RunResult};
use crate::rejection::{Code, Rejection};

pub const SUBJECT_PREFIX: &str = "agentlog.cmd";
pub const QUEUE_GROUP: &str = "agentlog-commands";
pub use crate::auth::signing::{
    HEADER_CORRELATION_ID, HEADER_IDEMPOTENCY_KEY, HEADER_KEY_ID, HEADER_NONCE, HEADER_SIGNATURE, HEADER_TIMESTAMP,
};
/// Who is sending, on a node in open mode only (`auth.mode = "open"`):
/// where signing is required the verified principal is the actor.
pub const HEADER_ACTOR: &str = "Agentlog-Actor";
/// Most commands one service instance runs at once (shared among its
/// shards); beyond it requests wait in NATS (and time out at the producer,
/// who retries with the same key).
pub const MAX_IN_FLIGHT: usize = 1024;

/// The reply body.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reply {
    Accepted(Accepted),
    Rejected(RejectedReply),
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct RejectedReply {
    pub kind: String,
    pub code: String,
    pub message: String,
}

impl From<&Rejection> for RejectedReply {
    fn from(r: &Rejection) -> Self {
        RejectedReply { kind: r.kind.as_str().to_owned(), code: r.code.as_str().to_owned(), message: r.message.clone() }
    }
}

/// Commands answered, by result (`accepted`, `rejected`).
pub const METRIC_COMMANDS: &str = "agentlog_commands_total";
/// Commands refused `retries_exhausted`: their aggregate kept changing
/// under every attempt. This node's own commands take turns on an
/// aggregate, so only other nodes (or processes) can cause it: worth an
/// alert when it grows.
pub const METRIC_RETRIES_EXHAUSTED: &str = "agentlog_commands_retries_exhausted_total";
/// Commands being decided right now.
pub const METRIC_IN_FLIGHT: &str = "agentlog_commands_in_flight";

/// How a request's body is encoded, and so its reply's.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Encoding {
    /// The command's protobuf message; the reply a `CommandReply`. The
    /// default: a request without `Content-Type`.
    Protobuf,
    /// The command's fields as a JSON object; the reply JSON. A request
    /// with `Content-Type: application/json`.
    Json,
}

impl Encoding {
    /// The encoding a request with these headers is in.
    pub fn of(headers: Option<&async_nats::HeaderMap>) -> Encoding {
        match headers.and_then(|h| h.get("Content-Type")).map(|v| v.as_str()) {
            Some("application/json") => Encoding::Json,
            _ => Encoding::Protobuf,
        }
    }

    /// The `Content-Type` a request in this encoding carries, as signed
    /// ("" for none).
    fn content_type(self) -> &'static str {
        match self {
            Encoding::Protobuf => "",
            Encoding::Json => "application/json",
        }
    }
}

impl Reply {
    /// The reply's body in `encoding`.
    pub fn encode(self, encoding: Encoding) -> Vec<u8> {
        match encoding {
            Encoding::Json => serde_json::to_vec(&self).expect("replies serialise"),
            Encoding::Protobuf => prost::Message::encode_to_vec(&self.into_protobuf()),
        }
    }

    /// Reads a reply's body in `encoding`. One that does not decode, or
    /// names no result, is an `unavailable` rejection saying so: the
    /// command's outcome is unknown.
    pub fn decode(encoding: Encoding, body: &[u8]) -> Result<Reply, Rejection> {
        let unreadable = |why: String| {
            Rejection::new(Code::Unavailable, format!("an unreadable reply from the command service: {why}"))
        };
        match encoding {
            Encoding::Json => serde_json::from_slice(body).map_err(|e| unreadable(format!("not a JSON reply: {e}"))),
            Encoding::Protobuf => {
                let reply = <agentlog_core::schema::CommandReply as prost::Message>::decode(body)
                    .map_err(|e| unreadable(format!("not a protobuf CommandReply: {e}")))?;
                Reply::from_protobuf(reply).ok_or_else(|| unreadable("a CommandReply with no result".into()))
            }
        }
    }

    /// As a protobuf `CommandReply`.
    pub fn into_protobuf(self) -> agentlog_core::schema::CommandReply {
        use agentlog_core::schema::{CommandAccepted, CommandRejected, command_reply::Result as Outcome};
        let result = match self {
            Reply::Accepted(a) => Outcome::Accepted(CommandAccepted {
                command: a.command,
                stream: a.stream,
                first_seq: a.first_seq,
                last_seq: a.last_seq,
                stream_version: a.stream_version,
                duplicate: a.duplicate,
                events: a.events,
                session_id: a.session_id.unwrap_or_default(),
                run: a.run.map(|r| agentlog_core::schema::RunResult {
                    module_hash: r.module_hash,
                    output: r.output,
                    output_hash: r.output_hash,
                    fuel_used: r.fuel_used,
                    charge_budget_id: r.charge.as_ref().map(|c| c.budget_id.clone()).unwrap_or_default(),
                    charged: r.charge.as_ref().map_or(0, |c| c.amount),
                    charge_seq: r.charge.as_ref().map_or(0, |c| c.seq),
                }),
            }),
            Reply::Rejected(r) => Outcome::Rejected(CommandRejected { kind: r.kind, code: r.code, message: r.message }),
        };
        agentlog_core::schema::CommandReply { result: Some(result) }
    }

    /// From a protobuf `CommandReply`, the inverse of
    /// [`Reply::into_protobuf`] (a `session_id` or `charge_budget_id` of ""
    /// is none); `None` when it names no result.
    pub fn from_protobuf(reply: agentlog_core::schema::CommandReply) -> Option<Reply> {
        use agentlog_core::schema::command_reply::Result as Outcome;
        Some(match reply.result? {
            Outcome::Accepted(a) => Reply::Accepted(Accepted {
                command: a.command,
                stream: a.stream,
                first_seq: a.first_seq,
                last_seq: a.last_seq,
                stream_version: a.stream_version,
                duplicate: a.duplicate,
                events: a.events,
                session_id: Some(a.session_id).filter(|s| !s.is_empty()),
                run: a.run.map(|r| RunResult {
                    module_hash: r.module_hash,
                    output: r.output,
                    output_hash: r.output_hash,
                    fuel_used: r.fuel_used,
                    charge: Some(r.charge_budget_id).filter(|b| !b.is_empty()).map(|budget_id| Charge {
                        budget_id,
                        amount: r.charged,
                        seq: r.charge_seq,
                    }),
                }),
            }),
            Outcome::Rejected(r) => Reply::Rejected(RejectedReply { kind: r.kind, code: r.code, message: r.message }),
        })
    }
}

/// Parses one request as the service receives it (its subject, headers and
/// body) into a handler request, or the rejection to reply. Never panics,
/// whatever the bytes.
pub fn parse_request(
    subject: &str,
    headers: Option<&async_nats::HeaderMap>,
    payload: &[u8],
) -> Result<Request, Rejection> {
    let name = subject.strip_prefix(SUBJECT_PREFIX).and_then(|s| s.strip_prefix('.')).unwrap_or("");
    let header = |name: &str| headers.and_then(|h| h.get(name)).map(|v| v.as_str().to_owned());
    let command = match Encoding::of(headers) {
        Encoding::Json => {
            let fields: serde_json::Value = serde_json::from_slice(payload).map_err(|e| {
                Rejection::invalid(format!("the body is not JSON (Content-Type: application/json): {e}"))
            })?;
            Command::from_json(name, fields)?
        }
        Encoding::Protobuf => Command::from_protobuf(name, payload)?,
    };
    let mut request = Request::new(command, header(HEADER_ACTOR).unwrap_or_else(|| "anonymous".into()));
    request.credential = match Signed::from_headers(header, subject, payload)? {
        Some(signed) => Credential::Signed(signed),
        None => Credential::Unsigned,
    };
    request.idempotency_key = header(HEADER_IDEMPOTENCY_KEY);
    if let Some(id) = header(HEADER_CORRELATION_ID) {
        let id =
            id.parse::<CorrelationId>().map_err(|e| Rejection::invalid(format!("{HEADER_CORRELATION_ID}: {e}")))?;
        request.correlation_id = Some(id);
    }
    Ok(request)
}

/// The command service: subscribed (so requests already queue for it)
/// from [`Service::bind`] on, answering from [`Service::run`].
///
/// It runs as shards, one per worker of the async runtime, each a queue
/// subscription of its own and one task that answers its requests as
/// futures of that task rather than a task each. The requests that are
/// ready together are then decided in one turn of the task, so their
/// JetStream publishes, and later their replies, reach the NATS
/// connection together and leave in one socket write: with a task per
/// request, the runtime ran the connection's task right after each request
/// woke it (tokio runs the task just woken next), and each publish and each
/// reply was a write of its own (docs/BENCHMARKS.md, issue 16).
pub struct Service<L: Log> {
    client: async_nats::Client,
    shards: Vec<async_nats::Subscriber>,
    handler: Arc<Handler<L>>,
}

/// Returns once the server has read everything `client` sent before (its
/// subscriptions above all), so that a request another connection sends
/// from now on finds them. async-nats's `flush` only writes the socket;
/// this is a round trip: a message to a fresh inbox of this connection,
/// which the server delivers only after it has read what came before it
/// (it reads each connection in order). Without it a request sent right
/// after a service subscribed could be answered "no responders".
pub async fn server_has_read(client: &async_nats::Client) -> Result<(), async_nats::SubscribeError> {
    let failed = |e: String| async_nats::SubscribeError::with_source(async_nats::SubscribeErrorKind::Other, e);
    let inbox = client.new_inbox();
    let mut echo = client.subscribe(inbox.clone()).await?;
    client.publish(inbox, bytes::Bytes::new()).await.map_err(|e| failed(e.to_string()))?;
    match tokio::time::timeout(Duration::from_secs(30), echo.next()).await {
        Ok(Some(_)) => Ok(()),
        Ok(None) => Err(failed("the connection closed before the server echoed a message".into())),
        Err(_) => Err(failed("the server did not echo a message within 30 s".into())),
    }
}

impl<L: Log> std::fmt::Debug for Service<L> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Service").finish_non_exhaustive()
    }
}

impl<L: Log> Service<L> {
    /// Joins the queue group on `agentlog.cmd.*`.
    pub async fn bind(
        client: async_nats::Client,
        handler: Arc<Handler<L>>,
    ) -> Result<Self, async_nats::SubscribeError> {
        // One shard per worker, so that shards decide on every core.
        let workers = tokio::runtime::Handle::try_current().map_or(1, |runtime| runtime.metrics().num_workers()).max(1);
        let mut shards = Vec::with_capacity(workers);
        for _ in 0..workers {
            shards.push(client.queue_subscribe(format!("{SUBJECT_PREFIX}.*"), QUEUE_GROUP.into()).await?);
        }
        // A request sent after `bind` returns reaches this service.
        server_has_read(&client).await?;
        metrics::counter!(METRIC_COMMANDS, "result" => "accepted").increment(0);
        metrics::counter!(METRIC_COMMANDS, "result" => "rejected").increment(0);
        metrics::counter!(METRIC_RETRIES_EXHAUSTED).increment(0);
        metrics::counter!(crate::handler::METRIC_RACES_LOST).increment(0);
        Ok(Service { client, shards, handler })
    }

    /// Answers commands, at most [`MAX_IN_FLIGHT`] at once, until
    /// `shutdown` turns true; then stops taking new ones and returns once
    /// those in flight have been answered. Returns early only if NATS ends
    /// the subscriptions.
    pub async fn run(self, shutdown: watch::Receiver<bool>) {
        let Service { client, shards, handler } = self;
        let limit = MAX_IN_FLIGHT.div_ceil(shards.len());
        let shards: Vec<_> = shards
            .into_iter()
            .map(|requests| tokio::spawn(run_shard(client.clone(), requests, handler.clone(), shutdown.clone(), limit)))
            .collect();
        for shard in shards {
            if let Err(e) = shard.await {
                tracing::error!(message = "a command service shard failed", error = %e);
            }
        }
        let _ = client.flush().await;
    }
}

/// One shard's requests, at most `limit` at once, each answered as a future
/// of this task (see [`Service`]), until `shutdown` or the end of the
/// subscription; then the answers in flight are finished.
async fn run_shard<L: Log>(
    client: async_nats::Client,
    mut requests: async_nats::Subscriber,
    handler: Arc<Handler<L>>,
    mut shutdown: watch::Receiver<bool>,
    limit: usize,
) {
    let mut in_flight = futures_util::stream::FuturesUnordered::new();
    loop {
        tokio::select! {
            message = requests.next(), if in_flight.len() < limit => {
                let Some(message) = message else { break };
                let Some(reply_to) = message.reply.clone() else { continue };
                in_flight.push(answer_guarded(client.clone(), handler.clone(), message, reply_to));
            }
            Some(()) = in_flight.next(), if !in_flight.is_empty() => {}
            _ = shutdown.wait_for(|stop| *stop) => break,
        }
    }
    // Stop receiving, then answer every command in flight.
    let _ = requests.unsubscribe().await;
    while in_flight.next().await.is_some() {}
}

/// [`answer`], counted in flight, with a panic kept to the one command (it
/// gets no reply, and its producer retries with the same key), as when each
/// command was a task of its own.
async fn answer_guarded<L: Log>(
    client: async_nats::Client,
    handler: Arc<Handler<L>>,
    message: async_nats::Message,
    reply_to: async_nats::Subject,
) {
    use futures_util::FutureExt as _;
    metrics::gauge!(METRIC_IN_FLIGHT).increment(1);
    let answered = std::panic::AssertUnwindSafe(answer(client, handler, message, reply_to)).catch_unwind().await;
    metrics::gauge!(METRIC_IN_FLIGHT).decrement(1);
    if let Err(panic) = answered {
        let what = panic
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_default();
        tracing::error!(message = "deciding a command panicked; it gets no reply", panic = %what);
    }
}

/// Decides one request and publishes its reply.
async fn answer<L: Log>(
    client: async_nats::Client,
    handler: Arc<Handler<L>>,
    message: async_nats::Message,
    reply_to: async_nats::Subject,
) {
    let encoding = Encoding::of(message.headers.as_ref());
    let outcome = match parse_request(message.subject.as_str(), message.headers.as_ref(), &message.payload) {
        // Boxed: the decision's future is a few KB, which every future
        // holding it (the shard's set of answers) would be as large as.
        Ok(request) => Box::pin(handler.execute(request)).await,
        Err(rejection) => Err(rejection),
    };
    let reply = match outcome {
        Ok(accepted) => {
            metrics::counter!(METRIC_COMMANDS, "result" => "accepted").increment(1);
            Reply::Accepted(accepted)
        }
        Err(rejection) => {
            metrics::counter!(METRIC_COMMANDS, "result" => "rejected").increment(1);
            if rejection.code == Code::RetriesExhausted {
                metrics::counter!(METRIC_RETRIES_EXHAUSTED).increment(1);
            }
            tracing::debug!(message = "command rejected", kind = %rejection.kind, code = %rejection.code);
            Reply::Rejected((&rejection).into())
        }
    };
    let _ = client.publish(reply_to, reply.encode(encoding).into()).await;
}

/// A request as the client sends it: its command's body, with its actor,
/// idempotency key and correlation id as headers, and signed when there is
/// a signer (a fresh nonce and the signer's time each time one is made).
#[derive(Clone, Debug)]
pub struct Message {
    pub subject: String,
    pub headers: async_nats::HeaderMap,
    pub payload: Vec<u8>,
}

impl Message {
    /// The request in protobuf, the default. A command that fails
    /// validation goes as JSON instead: protobuf cannot carry it as it is
    /// (a zero that means "the default" there, an empty optional id), and
    /// sent as protobuf it could arrive as another, valid command; as JSON
    /// the service refuses it as written.
    pub fn new(request: &Request, signer: Option<&Signer>) -> Message {
        let encoding = match request.command.validate() {
            Ok(()) => Encoding::Protobuf,
            Err(_) => Encoding::Json,
        };
        Message::encoded(request, signer, encoding)
    }

    /// The request as JSON, with `Content-Type: application/json`.
    pub fn json(request: &Request, signer: Option<&Signer>) -> Message {
        Message::encoded(request, signer, Encoding::Json)
    }

    /// The request in `encoding`, whatever its command.
    pub fn encoded(request: &Request, signer: Option<&Signer>, encoding: Encoding) -> Message {
        let command = &request.command;
        let mut headers = async_nats::HeaderMap::new();
        let content_type = encoding.content_type();
        if !content_type.is_empty() {
            headers.insert("Content-Type", content_type);
        }
        headers.insert(HEADER_ACTOR, request.actor.as_str());
        if let Some(key) = &request.idempotency_key {
            headers.insert(HEADER_IDEMPOTENCY_KEY, key.as_str());
        }
        let correlation = request.correlation_id.map(|id| id.to_string()).unwrap_or_default();
        if !correlation.is_empty() {
            headers.insert(HEADER_CORRELATION_ID, correlation.as_str());
        }
        let subject = format!("{SUBJECT_PREFIX}.{}", command.name());
        let payload = match encoding {
            Encoding::Protobuf => command.to_protobuf(),
            Encoding::Json => serde_json::to_vec(&command.to_json()).expect("commands serialise"),
        };
        if let Some(signer) = signer {
            let key = request.idempotency_key.as_deref().unwrap_or_default();
            let signed = signer.sign(&subject, content_type, key, &correlation, &payload);
            headers.insert(HEADER_KEY_ID, signed.key_id.as_str());
            headers.insert(HEADER_NONCE, signed.nonce.as_str());
            headers.insert(HEADER_TIMESTAMP, signed.timestamp.as_str());
            headers.insert(HEADER_SIGNATURE, signed.signature.as_str());
        }
        Message { subject, headers, payload }
    }

    /// The request the service makes of it.
    pub fn parse(&self) -> Result<Request, Rejection> {
        parse_request(&self.subject, Some(&self.headers), &self.payload)
    }

    /// The encoding its body is in, and its reply will be.
    pub fn encoding(&self) -> Encoding {
        Encoding::of(Some(&self.headers))
    }
}

/// The Rust client of the command service.
#[derive(Clone, Debug)]
pub struct Client {
    nats: async_nats::Client,
    actor: String,
    timeout: Duration,
    signer: Option<Signer>,
}

impl crate::Executor for Client {
    async fn execute(&self, request: Request) -> Result<Accepted, Rejection> {
        self.send(&request).await
    }
}

impl Client {
    pub fn new(nats: async_nats::Client, actor: impl Into<String>) -> Self {
        Client { nats, actor: actor.into(), timeout: Duration::from_secs(10), signer: None }
    }

    /// Signs every request with `signer` (a node in signed mode requires
    /// it); the actor is then the signer's key id.
    pub fn with_signer(mut self, signer: Signer) -> Self {
        self.actor = signer.key_id().to_owned();
        self.signer = Some(signer);
        self
    }

    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Sends one command; a NATS failure or a timeout is a `platform`
    /// rejection (`unavailable`): send it again with the same key.
    pub async fn execute(&self, command: &Command, idempotency_key: Option<&str>) -> Result<Accepted, Rejection> {
        let mut request = Request::new(command.clone(), self.actor.clone());
        request.idempotency_key = idempotency_key.map(str::to_owned);
        self.send(&request).await
    }

    /// Sends one request with its own actor, key and correlation id.
    pub async fn send(&self, request: &Request) -> Result<Accepted, Rejection> {
        let message = Message::new(request, self.signer.as_ref());
        let encoding = message.encoding();
        let Message { subject, headers, payload } = message;
        let request = async_nats::Request::new().headers(headers).payload(payload.into()).timeout(Some(self.timeout));
        let reply = self
            .nats
            .send_request(subject, request)
            .await
            .map_err(|e| Rejection::new(Code::Unavailable, format!("no answer from the command service: {e}")))?;
        match Reply::decode(encoding, &reply.payload)? {
            Reply::Accepted(accepted) => Ok(accepted),
            Reply::Rejected(r) => Err(rejection_from(&r)),
        }
    }
}

fn rejection_from(r: &RejectedReply) -> Rejection {
    // A code this build does not know (a newer server) is reported as
    // unavailable, with the server's message.
    let code = Code::parse(&r.code).unwrap_or(Code::Unavailable);
    Rejection::new(code, r.message.clone())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use agentlog_core::{ManualClock, SeededIdGen, Timestamp};

    use super::*;
    use crate::command::{AllocateBudget, OpenSession};

    fn accepted(session_id: Option<&str>, run: Option<RunResult>) -> Reply {
        Reply::Accepted(Accepted {
            command: "run_module".into(),
            stream: "agent/a1".into(),
            first_seq: 41,
            last_seq: 42,
            stream_version: 7,
            duplicate: true,
            events: vec!["sandbox_run_completed".into(), "budget_debited".into()],
            session_id: session_id.map(str::to_owned),
            run,
        })
    }

    fn run(charge: Option<Charge>) -> RunResult {
        RunResult {
            module_hash: "ab".repeat(32),
            output: b"\0hello\xff".to_vec(),
            output_hash: "cd".repeat(32),
            fuel_used: 16_384,
            charge,
        }
    }

    /// Each reply the service gives reads back as itself, from protobuf
    /// and from JSON.
    #[test]
    fn replies_read_back_as_themselves_in_either_encoding() {
        let charge = Charge { budget_id: "b1".into(), amount: 17, seq: 43 };
        let replies = [
            accepted(Some("s1"), Some(run(Some(charge.clone())))),
            accepted(None, Some(run(None))),
            accepted(Some("s1"), None),
            accepted(None, None),
            Reply::Rejected(RejectedReply {
                kind: "domain".into(),
                code: "already_claimed".into(),
                message: "task t1 is already claimed by a2".into(),
            }),
        ];
        for reply in replies {
            assert_eq!(Reply::from_protobuf(reply.clone().into_protobuf()).as_ref(), Some(&reply));
            for encoding in [Encoding::Protobuf, Encoding::Json] {
                let body = reply.clone().encode(encoding);
                assert_eq!(Reply::decode(encoding, &body).as_ref(), Ok(&reply), "{encoding:?}");
            }
        }
        // The charge's fields on the wire are the ones docs/PROTOCOL.md names.
        let charged = accepted(None, Some(run(Some(charge))));
        let Some(agentlog_core::schema::command_reply::Result::Accepted(a)) = charged.into_protobuf().result else {
            panic!("an accepted reply");
        };
        let run = a.run.expect("a run");
        assert_eq!((run.charge_budget_id.as_str(), run.charged, run.charge_seq), ("b1", 17, 43));
    }

    #[test]
    fn a_reply_that_does_not_read_is_unavailable_and_says_why() {
        let unreadable = |encoding, body: &[u8]| {
            let rejection = Reply::decode(encoding, body).unwrap_err();
            assert_eq!(rejection.code, Code::Unavailable, "{rejection}");
            rejection.message
        };
        let empty = prost::Message::encode_to_vec(&agentlog_core::schema::CommandReply { result: None });
        assert!(unreadable(Encoding::Protobuf, &empty).contains("no result"));
        assert!(unreadable(Encoding::Protobuf, b"\xff\xff\xff").contains("not a protobuf CommandReply"));
        assert!(unreadable(Encoding::Json, b"\x0a\x00").contains("not a JSON reply"));
    }

    fn signer() -> Signer {
        let clock = Arc::new(ManualClock::new(Timestamp::from_nanos(1_767_225_600_000_000_000)));
        Signer::new("ops", [1; 32], clock, Arc::new(SeededIdGen::new(1)))
    }

    /// What the service makes of `message`: the command, and a signature
    /// that verifies as the signer's.
    fn received(message: &Message) -> Command {
        let request = message.parse().unwrap_or_else(|r| panic!("{}: {r}", message.subject));
        let Credential::Signed(signed) = &request.credential else { panic!("{}: unsigned", message.subject) };
        signed.verify(&signer().public_key()).expect("the signature verifies");
        request.command
    }

    #[test]
    fn the_client_sends_protobuf_and_json_only_what_protobuf_would_change() {
        let allocate = Command::from(AllocateBudget { budget_id: "b1".into(), amount: 10 });
        let request = Request::new(allocate.clone(), "ops").with_idempotency_key("k1");
        let message = Message::new(&request, Some(&signer()));
        assert_eq!(message.encoding(), Encoding::Protobuf);
        assert!(message.headers.get("Content-Type").is_none(), "protobuf goes without a Content-Type");
        assert_eq!(message.payload, allocate.to_protobuf());
        assert_eq!(received(&message), allocate);

        let message = Message::json(&request, Some(&signer()));
        assert_eq!(message.headers.get("Content-Type").map(|v| v.as_str()), Some("application/json"));
        assert_eq!(received(&message), allocate);

        // A heartbeat timeout of 0 is refused as written; in protobuf 0
        // would mean the default, and the command would be accepted.
        let zero = Command::from(OpenSession { agent_id: "a1".into(), session_id: None, heartbeat_timeout_ms: 0 });
        assert!(zero.validate().is_err());
        let request = Request::new(zero.clone(), "ops");
        let message = Message::new(&request, Some(&signer()));
        assert_eq!(message.encoding(), Encoding::Json);
        assert_eq!(received(&message), zero);
        let as_protobuf = Message::encoded(&request, Some(&signer()), Encoding::Protobuf);
        assert_ne!(received(&as_protobuf), zero);
    }
}
