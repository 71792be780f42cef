//! `agentlog serve`: the distributed node. Follows the JetStream stream into
//! the local mirror (`--data`), answers commands on `agentlog.cmd.*` in a
//! queue group, and serves `/health`, `/ready` and `/metrics` over HTTP.
//! SIGTERM or Ctrl-C stops taking commands, answers those in flight, and
//! exits (the mirror's position is written with every batch it mirrors).
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use agentlog_commands::Handler;
use agentlog_commands::wire::{self, Stats};
use agentlog_log::jetstream::{JetStreamLog, Options};
use agentlog_log::{Clock, HybridClock, Log, RandomIdGen, Timestamp};
use agentlog_projections::{ProjectionStore, Views, ticker};
use anyhow::Context;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::watch;

use crate::config::Config;

/// Each flag overrides the configuration file and the environment
/// (docs/CONFIG.md).
#[derive(clap::Args)]
pub struct Args {
    /// The configuration file (TOML).
    #[arg(long)]
    config: Option<PathBuf>,
    /// The NATS server or cluster member (`nats.url`).
    #[arg(long)]
    nats: Option<String>,
    /// The node's data directory: its mirror of the stream (`data`).
    #[arg(long)]
    data: Option<PathBuf>,
    /// Where to serve /health, /ready and /metrics, or `off` (`http`).
    #[arg(long)]
    http: Option<String>,
    /// Replicas of the stream when this node creates it (`stream.replicas`).
    #[arg(long)]
    replicas: Option<usize>,
    /// Print the effective configuration as TOML and exit.
    #[arg(long)]
    print_config: bool,
}

/// JSON logs on stderr, one object per line; `RUST_LOG` filters them
/// (default `info`).
fn init_logs() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt().json().with_env_filter(filter).with_writer(std::io::stderr).try_init();
}

pub async fn run(args: Args) -> anyhow::Result<ExitCode> {
    let mut config = Config::load(args.config.as_deref(), |name| std::env::var(name).ok())?;
    if let Some(url) = args.nats {
        config.nats.url = url;
    }
    if let Some(data) = args.data {
        config.data = data;
    }
    if let Some(http) = args.http {
        config.http = http;
    }
    if let Some(replicas) = args.replicas {
        config.stream.replicas = replicas;
    }
    if args.print_config {
        print!("{}", toml::to_string(&config)?);
        return Ok(ExitCode::SUCCESS);
    }
    init_logs();
    let mut options = Options::new(&config.nats.url, &config.data);
    options.stream = config.stream.name.clone();
    options.replicas = config.stream.replicas;
    options.duplicate_window = std::time::Duration::from_secs(config.stream.duplicate_window_seconds);
    options.mirror_sync = config.mirror.sync;
    options.catch_up_timeout = std::time::Duration::from_secs(config.mirror.catch_up_timeout_seconds);
    options.auth = config.auth();
    // NATS may still be starting (or a cluster electing its JetStream
    // leader): keep trying for a minute before giving up.
    let started = std::time::Instant::now();
    let log = loop {
        match JetStreamLog::open(options.clone()).await {
            Ok(log) => break Arc::new(log),
            Err(e @ agentlog_log::Error::Nats { .. }) if started.elapsed() < std::time::Duration::from_secs(60) => {
                tracing::warn!(message = "waiting for NATS JetStream", error = %e);
                tokio::time::sleep(std::time::Duration::from_millis(500)).await;
            }
            Err(e) => return Err(anyhow::Error::new(e).context("cannot start the node")),
        }
    };
    let nats = agentlog_log::jetstream::connect_with(&config.nats.url, &options.auth)
        .await
        .context("cannot connect the command service to NATS")?;

    // Decisions never go back in time, even after a restart on a clock that did.
    let clock = HybridClock::system();
    let head = log.head().await?;
    if let Some(last) = log.read(head.last_seq, 1).await?.first() {
        clock.observe(Timestamp::from_nanos(last.ts));
    }
    let clock: Arc<dyn Clock> = Arc::new(clock);
    let handler = Arc::new(Handler::new(log.clone(), clock.clone(), Arc::new(RandomIdGen::new())));
    let stats = Arc::new(Stats::default());
    let ready = Arc::new(AtomicBool::new(false));
    let (stop_tx, stop_rx) = watch::channel(false);

    // Ready once the mirror has what the stream held at start.
    {
        let (log, ready) = (log.clone(), ready.clone());
        tokio::spawn(async move {
            // A long stream takes longer than one catch-up timeout; a
            // poisoned mirror never gets ready (its error is logged).
            loop {
                let caught_up = match log.source_last_seq().await {
                    Ok(last) => log.caught_up(last).await,
                    Err(e) => Err(e),
                };
                match caught_up {
                    Ok(_) => break ready.store(true, Ordering::SeqCst),
                    Err(agentlog_log::Error::Nats { .. }) => {
                        tokio::time::sleep(std::time::Duration::from_secs(1)).await
                    }
                    Err(e) => break tracing::error!(message = "the mirror cannot catch up", error = %e),
                }
            }
        });
    }
    // The views follow this node's mirror; queries are answered from them.
    let projections = ProjectionStore::open(&agentlog_projections::store::dir(&config.data))
        .context("cannot open the projection store")?;
    let views = Arc::new(Views::load(&projections, &**log.store()).context("cannot load the projections")?);
    let worker = tokio::spawn({
        let (log, views, stop) = (log.clone(), views.clone(), stop_rx.clone());
        async move { agentlog_projections::follow(&*log, &views, &projections, stop).await }
    });
    let queries = tokio::spawn(agentlog_projections::service::serve(nats.clone(), views.clone(), stop_rx.clone()));
    if config.http != "off" {
        let listener = tokio::net::TcpListener::bind(&config.http)
            .await
            .with_context(|| format!("cannot listen on {} for /health and /metrics", config.http))?;
        tracing::info!(message = "http listening", addr = %listener.local_addr()?);
        tokio::spawn(http(listener, log.clone(), views.clone(), stats.clone(), ready.clone()));
    }
    // Each closed day becomes Parquet, at startup and then nightly.
    let archive = config.archive.enabled.then(|| {
        let at = config.archive.at.parse().expect("checked when the configuration was loaded");
        let root = config.archive.root(&config.data);
        tokio::spawn(crate::archive::nightly(log.store().clone(), root, at, clock.clone(), stop_rx.clone()))
    });
    // Deadlines that pass become expire commands, decided like any other.
    let ticker = (config.ticker.interval_ms > 0).then(|| {
        let every = std::time::Duration::from_millis(config.ticker.interval_ms);
        let (handler, views, stop) = (handler.clone(), views.clone(), stop_rx.clone());
        tokio::spawn(async move {
            let report = |ticked: Result<ticker::Ticked, agentlog_commands::Rejection>| match ticked {
                Ok(t) if !t.sessions_expired.is_empty() || !t.leases_expired.is_empty() => tracing::info!(
                    message = "deadlines passed",
                    sessions_expired = t.sessions_expired.len(),
                    leases_expired = t.leases_expired.len()
                ),
                Ok(_) => {}
                Err(e) => tracing::warn!(message = "the ticker will try again", error = %e),
            };
            ticker::run(&*handler, &views, &*clock, every, stop, report).await;
        })
    });
    let service = tokio::spawn(wire::serve(nats, handler, stats.clone(), stop_rx));
    tracing::info!(
        message = "serving commands",
        nats = %redact(&config.nats.url),
        data = %config.data.display(),
        stream = %config.stream.name,
        mirror_seq = head.last_seq,
    );

    let mut terminate =
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).context("cannot watch SIGTERM")?;
    tokio::select! {
        _ = terminate.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    tracing::info!(message = "stopping: answering the commands in flight");
    let _ = stop_tx.send(true);
    if let Some(ticker) = ticker {
        ticker.await.context("the ticker panicked")?;
    }
    if let Some(archive) = archive {
        archive.await.context("the nightly archive panicked")?;
    }
    service.await.context("the command service panicked")?.context("the command service failed")?;
    queries.await.context("the query service panicked")?.context("the query service failed")?;
    worker.await.context("the projection worker panicked")?.context("the projection worker failed")?;
    let head = log.head().await?;
    tracing::info!(message = "stopped", mirror_seq = head.last_seq, views_seq = views.position());
    Ok(ExitCode::SUCCESS)
}

/// A deliberately small HTTP/1.1 responder: three GET paths, then close.
async fn http(
    listener: tokio::net::TcpListener,
    log: Arc<JetStreamLog>,
    views: Arc<Views>,
    stats: Arc<Stats>,
    ready: Arc<AtomicBool>,
) {
    loop {
        let Ok((mut socket, _)) = listener.accept().await else { continue };
        let (log, views, stats, ready) = (log.clone(), views.clone(), stats.clone(), ready.clone());
        tokio::spawn(async move {
            // Read the whole head of the request (it may arrive in pieces),
            // at most 8 KiB.
            let mut buffer = Vec::with_capacity(1024);
            let mut chunk = [0u8; 1024];
            while !buffer.windows(4).any(|w| w == b"\r\n\r\n") && buffer.len() < 8192 {
                match socket.read(&mut chunk).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => buffer.extend_from_slice(&chunk[..n]),
                }
            }
            let request = String::from_utf8_lossy(&buffer);
            let path = request.split_whitespace().nth(1).unwrap_or("/");
            let (status, body) = match path {
                "/health" => ("200 OK", "ok\n".to_owned()),
                "/ready" if ready.load(Ordering::SeqCst) => ("200 OK", "ready\n".to_owned()),
                "/ready" => ("503 Service Unavailable", "catching up\n".to_owned()),
                "/metrics" => ("200 OK", metrics(&log, &views, &stats).await),
                _ => ("404 Not Found", "try /health, /ready or /metrics\n".to_owned()),
            };
            let response = format!(
                "HTTP/1.1 {status}\r\ncontent-type: text/plain; version=0.0.4\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = socket.write_all(response.as_bytes()).await;
        });
    }
}

async fn metrics(log: &JetStreamLog, views: &Views, stats: &Stats) -> String {
    let mirror = log.head().await.map(|h| h.last_seq).unwrap_or(0);
    let source = log.source_last_seq().await.unwrap_or(mirror);
    format!(
        "# HELP agentlog_commands_total Commands answered, by result.\n\
         # TYPE agentlog_commands_total counter\n\
         agentlog_commands_total{{result=\"accepted\"}} {}\n\
         agentlog_commands_total{{result=\"rejected\"}} {}\n\
         # HELP agentlog_mirror_seq The last sequence in the node's mirror.\n\
         # TYPE agentlog_mirror_seq gauge\n\
         agentlog_mirror_seq {mirror}\n\
         # HELP agentlog_mirror_lag_events Events in the stream the mirror does not have yet.\n\
         # TYPE agentlog_mirror_lag_events gauge\n\
         agentlog_mirror_lag_events {}\n\
         # HELP agentlog_projection_seq The last sequence every view reflects.\n\
         # TYPE agentlog_projection_seq gauge\n\
         agentlog_projection_seq {}\n\
         # HELP agentlog_projection_lag_events Events in the mirror the views do not reflect yet.\n\
         # TYPE agentlog_projection_lag_events gauge\n\
         agentlog_projection_lag_events {}\n",
        stats.accepted.load(Ordering::Relaxed),
        stats.rejected.load(Ordering::Relaxed),
        source.saturating_sub(mirror),
        views.position(),
        mirror.saturating_sub(views.position()),
    )
}

/// The URL without credentials, for logs.
fn redact(url: &str) -> String {
    match (url.split_once("://"), url.rsplit_once('@')) {
        (Some((scheme, _)), Some((_, host))) => format!("{scheme}://***@{host}"),
        _ => url.to_owned(),
    }
}
