//! `/health`, `/ready` and `/metrics` over HTTP/1.1, served by hyper. Every
//! connection is bounded: at most [`MAX_CONNECTIONS`] at once (the accept
//! loop waits for a slot), the request head must arrive within
//! [`HEADER_READ_TIMEOUT`], and a connection lives at most
//! [`CONNECTION_LIMIT`]. The listener is bound in `Node::start`, before
//! anything is spawned, so the address is known (and taken) at once.
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

/// Most connections served at once.
pub const MAX_CONNECTIONS: usize = 64;
/// How long a client may take to send a request's head.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(5);
/// The longest one connection is kept, whatever it does.
pub const CONNECTION_LIMIT: Duration = Duration::from_secs(30);

/// What the endpoints answer from.
pub trait Endpoints: Send + Sync + 'static {
    /// `None` when ready; otherwise why not, one line per component.
    fn not_ready(&self) -> Option<String>;
    /// The Prometheus text exposition of every metric, read at the time of
    /// the request.
    fn metrics(&self) -> Pin<Box<dyn Future<Output = String> + Send + '_>>;
}

fn text(status: StatusCode, body: String, content_type: &'static str) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header("content-type", content_type)
        .body(Full::new(Bytes::from(body)))
        .expect("a response from constant parts")
}

async fn respond(endpoints: &dyn Endpoints, method: hyper::Method, path: &str) -> Response<Full<Bytes>> {
    const PLAIN: &str = "text/plain; charset=utf-8";
    if method != hyper::Method::GET {
        return text(StatusCode::METHOD_NOT_ALLOWED, "GET only\n".into(), PLAIN);
    }
    match path {
        "/health" => text(StatusCode::OK, "ok\n".into(), PLAIN),
        "/ready" => match endpoints.not_ready() {
            None => text(StatusCode::OK, "ready\n".into(), PLAIN),
            Some(why) => text(StatusCode::SERVICE_UNAVAILABLE, format!("not ready\n{why}\n"), PLAIN),
        },
        "/metrics" => text(StatusCode::OK, endpoints.metrics().await, "text/plain; version=0.0.4"),
        _ => text(StatusCode::NOT_FOUND, "try /health, /ready or /metrics\n".into(), PLAIN),
    }
}

/// Serves until the task is aborted: the node keeps answering `/ready`
/// (503, naming why) while it drains, and ends this last.
pub async fn serve(listener: TcpListener, endpoints: Arc<dyn Endpoints>) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let permit = slots.clone().acquire_owned().await.expect("the semaphore is never closed");
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                // Out of file descriptors and the like: pass, and let the
                // next accept try again.
                tracing::warn!(message = "http accept failed", error = %e);
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let endpoints = endpoints.clone();
        tokio::spawn(async move {
            let service = service_fn(move |request: Request<Incoming>| {
                let endpoints = endpoints.clone();
                let (method, path) = (request.method().clone(), request.uri().path().to_owned());
                async move { Ok::<_, Infallible>(respond(&*endpoints, method, &path).await) }
            });
            let connection = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_READ_TIMEOUT)
                .serve_connection(TokioIo::new(stream), service);
            let _ = tokio::time::timeout(CONNECTION_LIMIT, connection).await;
            drop(permit);
        });
    }
}
