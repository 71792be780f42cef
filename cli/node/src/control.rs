//! The node's control socket: a Unix socket at `<data>/control.sock`,
//! HTTP/1.1 served by hyper, through which a running node does what needs
//! its own database handles (RocksDB's lock keeps every other process out
//! of a store it has open). Today: `POST /backup`. Whoever may open the data
//! directory may use it (the socket is the owner's only, mode 0600), which
//! is who could copy the files anyway; nothing of it is reachable over the
//! network. Requests are served one at a time, so two backups never share
//! a backup directory at once.
use std::convert::Infallible;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use agentlog_log::wal::Store;
use agentlog_projections::ProjectionStore;
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use serde::{Deserialize, Serialize};
use tokio::net::{UnixListener, UnixStream};

use crate::backup::{self, Report};
use crate::error::{Error, Result};
use crate::metrics;

/// How long a client may take to send a request's head.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(5);
/// The largest request body read.
const MAX_BODY_BYTES: usize = 64 * 1024;
/// How long a client may take to send a request's body.
const BODY_READ_TIMEOUT: Duration = Duration::from_secs(5);
/// How long the client waits to connect and hand over its request; the
/// backup itself takes as long as the store needs.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Where a data directory's control socket is.
pub fn socket(data: &Path) -> PathBuf {
    data.join("control.sock")
}

/// `POST /backup`'s body.
#[derive(Debug, Serialize, Deserialize)]
pub struct BackupRequest {
    /// The backup directory (absolute: the node's working directory is not
    /// the caller's).
    pub to: PathBuf,
    pub keep: Option<usize>,
}

/// What the socket needs from the node.
pub struct Stores {
    pub wal: Arc<Store>,
    pub projections: Arc<ProjectionStore>,
}

/// The control socket's file, removed when this is dropped: whether the
/// node ends or fails to start after binding it, no stale socket is left.
#[derive(Debug)]
pub struct SocketFile {
    path: PathBuf,
}

impl Drop for SocketFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Binds the control socket of `data`, replacing a stale one (the caller
/// holds the store's lock, so no other node is using it). The socket is
/// bound inside a directory only the owner may enter, made private, and
/// then moved into place, so it is never reachable with wider permissions.
pub fn bind(data: &Path) -> Result<(UnixListener, SocketFile)> {
    use std::os::unix::fs::DirBuilderExt;
    let path = socket(data);
    let failed = |source: std::io::Error| Error::ControlSocket { path: path.clone(), source };
    match std::fs::remove_file(&path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(failed(e)),
    }
    let private = data.join(".control-socket.new");
    let _ = std::fs::remove_dir_all(&private);
    std::fs::DirBuilder::new().mode(0o700).create(&private).map_err(failed)?;
    let bound = (|| {
        let staged = private.join("control.sock");
        let listener = UnixListener::bind(&staged)?;
        std::fs::set_permissions(&staged, std::fs::Permissions::from_mode(0o600))?;
        std::fs::rename(&staged, &path)?;
        Ok(listener)
    })();
    let _ = std::fs::remove_dir_all(&private);
    let listener = bound.map_err(failed)?;
    Ok((listener, SocketFile { path }))
}

fn json(status: StatusCode, body: &impl Serialize) -> Response<Full<Bytes>> {
    let body = serde_json::to_vec(body).expect("responses serialise");
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body)))
        .expect("a response from constant parts")
}

fn refused(status: StatusCode, error: String) -> Response<Full<Bytes>> {
    json(status, &serde_json::json!({ "error": error }))
}

async fn respond(stores: &Arc<Stores>, request: Request<Incoming>) -> Response<Full<Bytes>> {
    if (request.method(), request.uri().path()) != (&hyper::Method::POST, "/backup") {
        return refused(StatusCode::NOT_FOUND, "the control socket answers POST /backup".into());
    }
    let body = match tokio::time::timeout(
        BODY_READ_TIMEOUT,
        Limited::new(request.into_body(), MAX_BODY_BYTES).collect(),
    )
    .await
    {
        Ok(Ok(body)) => body.to_bytes(),
        Ok(Err(e)) => return refused(StatusCode::BAD_REQUEST, format!("cannot read the request: {e}")),
        Err(_) => return refused(StatusCode::REQUEST_TIMEOUT, "the request's body did not arrive in time".into()),
    };
    let wanted: BackupRequest = match serde_json::from_slice(&body) {
        Ok(wanted) => wanted,
        Err(e) => return refused(StatusCode::BAD_REQUEST, format!("the body is not a backup request: {e}")),
    };
    if !wanted.to.is_absolute() {
        return refused(StatusCode::BAD_REQUEST, format!("{} is not an absolute path", wanted.to.display()));
    }
    let stores = stores.clone();
    tracing::info!(message = "backup started", to = %wanted.to.display());
    #[allow(clippy::disallowed_methods)]
    let started = std::time::Instant::now(); // a metric, never state
    let taken = tokio::task::spawn_blocking(move || {
        backup::take(&stores.wal, Some(&stores.projections), &wanted.to, wanted.keep)
    })
    .await;
    let outcome = if matches!(taken, Ok(Ok(_))) { "taken" } else { "failed" };
    ::metrics::counter!(metrics::BACKUPS, "outcome" => outcome).increment(1);
    ::metrics::histogram!(metrics::BACKUP_SECONDS).record(started.elapsed().as_secs_f64());
    match taken {
        Ok(Ok(report)) => {
            tracing::info!(message = "backup taken", backup_id = report.backup_id, head_before = report.head_before);
            json(StatusCode::OK, &report)
        }
        Ok(Err(e)) => {
            tracing::warn!(message = "backup failed", error = %e);
            let status = match e.kind() {
                agentlog_core::Kind::Invalid => StatusCode::BAD_REQUEST,
                _ => StatusCode::INTERNAL_SERVER_ERROR,
            };
            refused(status, e.to_string())
        }
        Err(e) => refused(StatusCode::INTERNAL_SERVER_ERROR, format!("the backup panicked: {e}")),
    }
}

/// Serves the control socket until the task is aborted, one connection at
/// a time.
pub async fn serve(listener: UnixListener, stores: Arc<Stores>) {
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                tracing::warn!(message = "control socket accept failed", error = %e);
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let stores = stores.clone();
        let service = service_fn(move |request| {
            let stores = stores.clone();
            async move { Ok::<_, Infallible>(respond(&stores, request).await) }
        });
        let connection = http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(HEADER_READ_TIMEOUT)
            .serve_connection(TokioIo::new(stream), service);
        if let Err(e) = connection.await {
            tracing::debug!(message = "control connection ended", error = %e);
        }
    }
}

/// Asks the node that holds `data` to back it up into `to`.
pub async fn request_backup(data: &Path, to: &Path, keep: Option<usize>) -> Result<Report> {
    let path = socket(data);
    let unreachable = |reason: String| Error::Control { socket: path.clone(), reason };
    let connecting = async {
        let stream = UnixStream::connect(&path).await.map_err(|e| unreachable(e.to_string()))?;
        hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.map_err(|e| unreachable(e.to_string()))
    };
    let (mut sender, connection) = tokio::time::timeout(CONNECT_TIMEOUT, connecting)
        .await
        .map_err(|_| unreachable(format!("no answer within {} s", CONNECT_TIMEOUT.as_secs())))??;
    tokio::spawn(connection);
    let body = serde_json::to_vec(&BackupRequest { to: to.to_owned(), keep }).expect("requests serialise");
    let request = Request::post("/backup")
        .header("host", "agentlog")
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body)))
        .expect("a request from constant parts");
    let response = sender.send_request(request).await.map_err(|e| unreachable(e.to_string()))?;
    let status = response.status();
    let bytes = response.into_body().collect().await.map_err(|e| unreachable(e.to_string()))?.to_bytes();
    if status != StatusCode::OK {
        let answer: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or_default();
        let error =
            answer["error"].as_str().map_or_else(|| String::from_utf8_lossy(&bytes).into_owned(), str::to_owned);
        return Err(Error::BackupRefused { reason: error });
    }
    serde_json::from_slice(&bytes).map_err(|e| unreachable(format!("an answer that is not a backup report: {e}")))
}
