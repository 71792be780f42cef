//! Queries over NATS request/reply (feature `nats`): `agentlog serve`
//! answers `agentlog.q.<query>` (tasks, task, ready, sessions, agents,
//! agent, budgets, violations, reputation, match) from its views. The body
//! is optional JSON `{"id": "...", "wait_for": seq, "timeout_ms": ms}`; the
//! reply is JSON `{"seq": n, "result": ...}` or `{"error": {"kind",
//! "message"}}`. Every node answers from its own views, in one queue group.
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use tokio::sync::{Semaphore, watch};

use crate::error::{Error, Result};
use crate::query::{self, Answer, Page, Query};
use crate::views::Views;

pub const SUBJECT_PREFIX: &str = "agentlog.q";
pub const QUEUE_GROUP: &str = "agentlog-queries";
/// The longest a query may wait for its view to reach `wait_for`.
pub const MAX_WAIT: Duration = Duration::from_secs(30);

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Request {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// Wait until the view reflects this log sequence before answering.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wait_for: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
    /// For a collection: which page (`limit`, `after`, `state`).
    #[serde(flatten)]
    pub page: Page,
}

impl Request {
    pub fn for_query(query: &Query) -> Request {
        let id = match query {
            Query::Task { id } | Query::Agent { id } => Some(id.clone()),
            Query::Match { task_id } => Some(task_id.clone()),
            _ => None,
        };
        Request { id, page: query.page().cloned().unwrap_or_default(), ..Request::default() }
    }
}

#[derive(Serialize, Deserialize)]
#[serde(untagged)]
enum Reply {
    Answer(Answer),
    Error { error: ErrorReply },
}

#[derive(Serialize, Deserialize)]
struct ErrorReply {
    kind: String,
    message: String,
}

async fn respond(views: &Views, name: &str, body: &[u8]) -> Result<Answer> {
    let request: Request = if body.is_empty() {
        Request::default()
    } else {
        serde_json::from_slice(body)
            .map_err(|e| Error::BadQuery { reason: format!("the body is not the query JSON: {e}") })?
    };
    let query = Query::parse(name, request.id.as_deref(), request.page)?;
    if let Some(seq) = request.wait_for {
        let timeout = Duration::from_millis(request.timeout_ms.unwrap_or(5_000)).min(MAX_WAIT);
        views.wait_for(seq, timeout).await?;
    }
    query::answer(views, &query)
}

/// Most queries one node answers at once; beyond it requests wait in NATS.
pub const MAX_IN_FLIGHT: usize = 256;

/// The query service: subscribed from [`Service::bind`] on (requests
/// already queue for it), answering from [`Service::run`].
pub struct Service {
    client: async_nats::Client,
    requests: async_nats::Subscriber,
    views: Arc<Views>,
}

impl std::fmt::Debug for Service {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Service").finish_non_exhaustive()
    }
}

impl Service {
    /// Joins the queue group on `agentlog.q.*`.
    pub async fn bind(
        client: async_nats::Client,
        views: Arc<Views>,
    ) -> std::result::Result<Self, async_nats::SubscribeError> {
        let requests = client.queue_subscribe(format!("{SUBJECT_PREFIX}.*"), QUEUE_GROUP.into()).await?;
        // A query sent after `bind` returns reaches this service.
        agentlog_commands::wire::server_has_read(&client).await?;
        Ok(Service { client, requests, views })
    }

    /// Answers queries, at most [`MAX_IN_FLIGHT`] at once, until `shutdown`
    /// turns true; then stops taking new ones and returns once those in
    /// flight have been answered.
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) {
        let Service { client, mut requests, views } = self;
        let slots = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
        loop {
            let message = tokio::select! {
                message = requests.next() => match message { Some(m) => m, None => break },
                _ = shutdown.wait_for(|stop| *stop) => break,
            };
            let Some(reply_to) = message.reply.clone() else { continue };
            let permit = slots.clone().acquire_owned().await.expect("the semaphore is never closed");
            let (client, views) = (client.clone(), views.clone());
            tokio::spawn(async move {
                let name = message.subject.as_str().strip_prefix(SUBJECT_PREFIX).and_then(|s| s.strip_prefix('.'));
                let reply = match respond(&views, name.unwrap_or_default(), &message.payload).await {
                    Ok(answer) => Reply::Answer(answer),
                    Err(e) => Reply::Error {
                        error: ErrorReply { kind: e.kind().as_str().to_owned(), message: e.to_string() },
                    },
                };
                let _ = client.publish(reply_to, serde_json::to_vec(&reply).expect("replies serialise").into()).await;
                drop(permit);
            });
        }
        let _ = requests.unsubscribe().await;
        let _ = slots.acquire_many(MAX_IN_FLIGHT as u32).await;
        let _ = client.flush().await;
    }
}

/// Reads a reply: the answer, or the error's message.
pub fn parse_reply(payload: &[u8]) -> std::result::Result<Answer, String> {
    match serde_json::from_slice::<Reply>(payload) {
        Ok(Reply::Answer(answer)) => Ok(answer),
        Ok(Reply::Error { error }) => Err(format!("{} ({})", error.message, error.kind)),
        Err(e) => Err(format!("an unreadable reply from the query service: {e}")),
    }
}
