//! agentlog-node: what `agentlog serve` runs, as a library. [`Node::start`]
//! opens the mirror, binds every service (the NATS subscriptions of the
//! command and query services, the HTTP listener) and only then spawns the
//! components, each supervised; [`Node::run`] waits until it is stopped
//! through a [`Handle`] or a component fails, then drains within the
//! configured bound.
//!
//! Failures come in two kinds (docs/OPERATIONS.md lists them). Transient: a
//! lost NATS connection — the client reconnects by itself, the mirror
//! follows again from its head, and `/ready` answers 503 naming `nats`
//! until it is back. Fatal: the mirror poisoned (a failed write, a gap, an
//! undecodable event), the projection worker failing, a service whose
//! subscription ended, a panic — logged with its cause, `/ready` answers
//! 503 naming the component, the node drains and [`Node::run`] says why, so
//! the process exits non-zero instead of answering on a broken state.
pub mod backup;
pub mod config;
pub mod control;
pub mod error;
pub mod health;
pub mod http;
pub mod metrics;
pub mod nightly;
pub mod rebuild;

use std::collections::BTreeSet;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use agentlog_commands::{Handler, wire};
use agentlog_core::{Clock, HybridClock, IdGen, Log, Timestamp};
use agentlog_log::jetstream::{JetStreamLog, Options};
use agentlog_projections::{ProjectionStore, Views, service, ticker};
use futures_util::FutureExt;
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::sync::watch;
use tokio::task::JoinSet;

pub use config::Config;
pub use error::{Error, Result};
use health::{Health, State};

/// How long `start` waits for NATS JetStream to answer (it may still be
/// starting, or a cluster electing its JetStream leader).
const NATS_START_TIMEOUT: Duration = Duration::from_secs(60);
/// How often the node looks at its NATS connection.
const CONNECTION_CHECK: Duration = Duration::from_millis(500);

type Outcome = std::result::Result<(), String>;

/// How a node ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Exit {
    /// Stopped through its handle, and drained.
    Stopped,
    /// A component failed (fatal); the rest drained.
    Failed { component: &'static str, reason: String },
    /// Draining took longer than `shutdown.drain-timeout-seconds`; these
    /// components had not finished.
    DrainTimedOut { waiting: Vec<&'static str> },
}

impl Exit {
    pub fn is_success(&self) -> bool {
        *self == Exit::Stopped
    }
}

/// Stops a running node (cheap to clone).
#[derive(Clone, Debug)]
pub struct Handle {
    stop: watch::Sender<bool>,
}

impl Handle {
    /// Stop taking commands and queries, answer those in flight, save the
    /// views, and end [`Node::run`].
    pub fn stop(&self) {
        self.stop.send_replace(true);
    }
}

pub struct Node {
    http_addr: Option<SocketAddr>,
    stop: watch::Sender<bool>,
    tasks: JoinSet<(&'static str, Outcome)>,
    running: Arc<Mutex<BTreeSet<&'static str>>>,
    health: Arc<Health>,
    log: Arc<JetStreamLog>,
    views: Arc<Views>,
    drain_timeout: Duration,
    http: Option<tokio::task::JoinHandle<()>>,
    control: Option<tokio::task::JoinHandle<()>>,
    /// Removes the socket's file when the node is dropped.
    _control_socket: control::SocketFile,
}

impl Drop for Node {
    fn drop(&mut self) {
        if let Some(http) = self.http.take() {
            http.abort();
        }
        if let Some(control) = self.control.take() {
            control.abort();
        }
    }
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node").field("http_addr", &self.http_addr).finish_non_exhaustive()
    }
}

/// What `/ready` and `/metrics` answer from.
struct Endpoints {
    health: Arc<Health>,
    log: Arc<JetStreamLog>,
    views: Arc<Views>,
    prometheus: PrometheusHandle,
}

impl http::Endpoints for Endpoints {
    fn not_ready(&self) -> Option<String> {
        self.health.not_ready()
    }

    fn metrics(&self) -> Pin<Box<dyn Future<Output = String> + Send + '_>> {
        Box::pin(async move {
            let mirror = self.log.durable().head().last_seq;
            let views = self.views.position();
            ::metrics::gauge!(metrics::MIRROR_SEQ).set(mirror as f64);
            ::metrics::gauge!(metrics::PROJECTION_SEQ).set(views as f64);
            ::metrics::gauge!(metrics::PROJECTION_LAG_EVENTS).set(mirror.saturating_sub(views) as f64);
            // The stream's end is a NATS round trip: bounded, and left as it
            // was when NATS does not answer (`/ready` says why).
            if let Ok(Ok(source)) = tokio::time::timeout(Duration::from_secs(2), self.log.source_last_seq()).await {
                ::metrics::gauge!(metrics::MIRROR_LAG_EVENTS).set(source.saturating_sub(mirror) as f64);
            }
            ::metrics::gauge!(metrics::NODE_READY).set(if self.health.not_ready().is_none() { 1.0 } else { 0.0 });
            self.prometheus.render()
        })
    }
}

fn redact(url: &str) -> String {
    match (url.split_once("://"), url.rsplit_once('@')) {
        (Some((scheme, _)), Some((_, host))) => format!("{scheme}://***@{host}"),
        _ => url.to_owned(),
    }
}

pub(crate) async fn open_log(config: &Config, create_stream: bool) -> Result<JetStreamLog> {
    let mut options = Options::new(&config.nats.url, &config.data);
    options.stream = config.stream.name.clone();
    options.replicas = config.stream.replicas;
    options.duplicate_window = Duration::from_secs(config.stream.duplicate_window_seconds);
    options.mirror_sync = config.mirror.sync;
    options.catch_up_timeout = Duration::from_secs(config.mirror.catch_up_timeout_seconds);
    options.auth = config.auth();
    options.create_stream = create_stream;
    let opening = async {
        loop {
            match JetStreamLog::open(options.clone()).await {
                Err(e @ agentlog_log::Error::Nats { .. }) => {
                    tracing::warn!(message = "waiting for NATS JetStream", error = %e);
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
                opened => return opened,
            }
        }
    };
    match tokio::time::timeout(NATS_START_TIMEOUT, opening).await {
        Ok(opened) => Ok(opened?),
        Err(_) => Err(Error::Log(agentlog_log::Error::Nats {
            operation: "opening the stream",
            message: format!("JetStream did not answer within {} s", NATS_START_TIMEOUT.as_secs()),
        })),
    }
}

impl Node {
    /// Opens the mirror and the views, binds every service, then spawns
    /// the components. `clock` decides (it is moved past the log's last
    /// event first, so decisions never go back in time after a restart);
    /// `ids` names new events.
    pub async fn start(config: Config, clock: Arc<HybridClock>, ids: Arc<dyn IdGen>) -> Result<Node> {
        let prometheus = metrics::recorder()?;
        let log = Arc::new(open_log(&config, true).await?);
        let nats = agentlog_log::jetstream::connect_with(&config.nats.url, &config.auth()).await?;

        let head = log.head().await?;
        if let Some(last) = log.read(head.last_seq, 1).await?.first() {
            clock.observe(Timestamp::from_nanos(last.ts));
        }
        let clock: Arc<dyn Clock> = clock;
        let sandbox = agentlog_sandbox::Sandbox::new(agentlog_sandbox::Limits::default())?;
        let mut handler = Handler::new(log.clone(), clock.clone(), ids).with_modules(Arc::new(sandbox));
        match config.auth.required()? {
            Some(auth) => {
                if auth.admins.is_empty() {
                    tracing::warn!(
                        message = "auth.mode = signed with no auth.admins: only principals already registered in the log can send commands; name a bootstrap admin (docs/CONFIG.md) to register the first"
                    );
                }
                tracing::info!(
                    message = "commands must be signed",
                    bootstrap_admins = auth.admins.len(),
                    skew_seconds = config.auth.skew_seconds
                );
                handler = handler.with_auth(Arc::new(auth));
            }
            None => tracing::warn!(
                message = "auth.mode = open: commands are NOT authenticated and act as whatever Agentlog-Actor they name; for development only"
            ),
        }
        let handler = Arc::new(handler);
        let projections = Arc::new(
            ProjectionStore::open(&agentlog_projections::store::dir(&config.data))?
                .with_cache_entities(config.projections.cache_entities),
        );
        let views = Arc::new(Views::load(&projections, &**log.store())?);

        // Bind everything before spawning anything: once `start` returns,
        // requests queue for the services and the HTTP address is taken.
        let subscribe = |service: &'static str| {
            move |e: async_nats::SubscribeError| Error::Subscribe { service, message: e.to_string() }
        };
        let commands = wire::Service::bind(nats.clone(), handler.clone()).await.map_err(subscribe("command"))?;
        let queries = service::Service::bind(nats.clone(), views.clone()).await.map_err(subscribe("query"))?;
        let listener = match config.http.as_str() {
            "off" => None,
            addr => Some(
                tokio::net::TcpListener::bind(addr)
                    .await
                    .map_err(|source| Error::Listen { addr: addr.to_owned(), source })?,
            ),
        };
        let http_addr = listener.as_ref().and_then(|l| l.local_addr().ok());
        let (control, control_socket) = control::bind(&config.data)?;

        let (stop, stopped) = watch::channel(false);
        let health = Arc::new(Health::default());
        let mut node = Node {
            http_addr,
            stop,
            tasks: JoinSet::new(),
            running: Arc::default(),
            health: health.clone(),
            log: log.clone(),
            views: views.clone(),
            drain_timeout: Duration::from_secs(config.shutdown.drain_timeout_seconds),
            http: None,
            control: None,
            _control_socket: control_socket,
        };

        // The mirror: ready once it has what the stream held at start;
        // poisoned is fatal.
        health.set("mirror", State::Starting("catching up with the stream".into()));
        node.supervise("mirror", {
            let (log, health, mut stopped) = (log.clone(), health.clone(), stopped.clone());
            async move {
                let catch_up = async {
                    loop {
                        let caught_up = match log.source_last_seq().await {
                            Ok(last) => log.caught_up(last).await,
                            Err(e) => Err(e),
                        };
                        match caught_up {
                            Ok(_) => break health.set("mirror", State::Ready),
                            Err(agentlog_log::Error::Nats { .. }) => tokio::time::sleep(Duration::from_secs(1)).await,
                            // Poisoned: the arm below reports it.
                            Err(_) => break,
                        }
                    }
                    std::future::pending::<()>().await
                };
                tokio::select! {
                    ended = log.durable().ended_wait() => match ended {
                        agentlog_log::Error::Closed => Ok(()),
                        poisoned => Err(poisoned.to_string()),
                    },
                    _ = catch_up => Ok(()),
                    _ = stopped.wait_for(|s| *s) => Ok(()),
                }
            }
        });

        // NATS: a lost connection is transient; the client reconnects.
        health.set("nats", State::Starting("connecting".into()));
        node.supervise("nats", {
            let (log, nats, health, mut stopped) = (log.clone(), nats.clone(), health.clone(), stopped.clone());
            async move {
                let mut every = tokio::time::interval(CONNECTION_CHECK);
                let mut was_up = true;
                loop {
                    tokio::select! {
                        _ = every.tick() => {}
                        _ = stopped.wait_for(|s| *s) => return Ok(()),
                    }
                    let up = log.connected() && nats.connection_state() == async_nats::connection::State::Connected;
                    if up != was_up {
                        if up {
                            tracing::info!(message = "NATS connection back");
                        } else {
                            tracing::warn!(message = "NATS connection lost; reconnecting");
                        }
                        was_up = up;
                    }
                    let state = if up { State::Ready } else { State::Degraded("disconnected; reconnecting".into()) };
                    health.set("nats", state);
                }
            }
        });

        // The views follow this node's mirror; their worker failing is fatal.
        health.set("projections", State::Ready);
        node.supervise("projections", {
            let (log, views, projections, stopped) = (log.clone(), views.clone(), projections.clone(), stopped.clone());
            let cadence = config.projections.cadence();
            async move {
                agentlog_projections::follow(&*log, &views, &projections, cadence, stopped)
                    .await
                    .map_err(|e| e.to_string())
            }
        });

        // A service that returns before the node stops had its subscription
        // ended by NATS: the supervisor reports it as stopped on its own.
        health.set("commands", State::Ready);
        node.supervise("commands", commands.run(stopped.clone()).map(Ok));
        health.set("queries", State::Ready);
        node.supervise("queries", queries.run(stopped.clone()).map(Ok));

        // Deadlines that pass become expire commands, decided like any
        // other; a refused tick is tried again on the next one.
        if config.ticker.interval_ms > 0 {
            let every = Duration::from_millis(config.ticker.interval_ms);
            let (handler, views, clock, stopped) = (handler.clone(), views.clone(), clock.clone(), stopped.clone());
            node.supervise("ticker", async move {
                let report = |ticked: std::result::Result<ticker::Ticked, agentlog_commands::Rejection>| match ticked {
                    Ok(t) => {
                        let expired = |what: &'static str, n: usize| {
                            ::metrics::counter!(metrics::TICKER_EXPIRED, "what" => what).increment(n as u64);
                        };
                        expired("session", t.sessions_expired.len());
                        expired("lease", t.leases_expired.len());
                        expired("skipped", usize::try_from(t.skipped).unwrap_or(usize::MAX));
                        if !t.sessions_expired.is_empty() || !t.leases_expired.is_empty() {
                            tracing::info!(
                                message = "deadlines passed",
                                sessions_expired = t.sessions_expired.len(),
                                leases_expired = t.leases_expired.len()
                            );
                        }
                    }
                    Err(e) => tracing::warn!(message = "the ticker will try again", error = %e),
                };
                // The ticker acts as the `ticker` principal: expiries only.
                let as_ticker = agentlog_commands::executor::AsPrincipal {
                    executor: &*handler,
                    principal: agentlog_commands::Principal::ticker(),
                };
                ticker::run(&as_ticker, &views, &*clock, every, stopped, report).await;
                Ok(())
            });
        }

        // Each closed day becomes Parquet, at startup and then nightly.
        if config.archive.enabled {
            let at = config.archive.at.parse().map_err(|e| Error::Config { reason: format!("archive.at: {e}") })?;
            let (store, root) = (log.store().clone(), config.archive.root(&config.data));
            node.supervise("archive", {
                let (clock, stopped) = (clock.clone(), stopped.clone());
                async move {
                    nightly::run(store, root, at, clock, stopped).await;
                    Ok(())
                }
            });
        }

        // HTTP is not drained: it answers `/ready` (503, saying why) until
        // the node has drained, and is ended last.
        node.http = listener.map(|listener| {
            let endpoints =
                Arc::new(Endpoints { health: health.clone(), log: log.clone(), views: views.clone(), prometheus });
            tokio::spawn(http::serve(listener, endpoints))
        });

        // The control socket (backups through this node's own handles), like
        // HTTP, is not drained and ends last.
        let stores = control::Stores { wal: log.store().clone(), projections };
        node.control = Some(tokio::spawn(control::serve(control, Arc::new(stores))));

        // Readiness as it changes, in the log.
        node.supervise("readiness", {
            let (health, mut stopped) = (health.clone(), stopped.clone());
            let mut changes = health.changes();
            async move {
                let mut was: Option<bool> = None;
                loop {
                    let ready = health.not_ready();
                    if was != Some(ready.is_none()) {
                        match &ready {
                            None => tracing::info!(message = "ready"),
                            Some(why) => tracing::warn!(message = "not ready", why = %why),
                        }
                        was = Some(ready.is_none());
                    }
                    tokio::select! {
                        _ = changes.changed() => {}
                        _ = stopped.wait_for(|s| *s) => return Ok(()),
                    }
                }
            }
        });

        tracing::info!(
            message = "node started",
            nats = %redact(&config.nats.url),
            data = %config.data.display(),
            stream = %config.stream.name,
            http = %http_addr.map_or("off".to_owned(), |a| a.to_string()),
            control = %control::socket(&config.data).display(),
            mirror_seq = head.last_seq,
        );
        Ok(node)
    }

    /// Runs `component` until it ends; ending before the node stops is a
    /// failure, and so is a panic.
    fn supervise(&mut self, component: &'static str, work: impl Future<Output = Outcome> + Send + 'static) {
        let running = self.running.clone();
        running.lock().unwrap_or_else(|p| p.into_inner()).insert(component);
        self.tasks.spawn(async move {
            let outcome = match tokio::spawn(work).await {
                Ok(outcome) => outcome,
                Err(e) => Err(format!("panicked: {e}")),
            };
            running.lock().unwrap_or_else(|p| p.into_inner()).remove(component);
            (component, outcome)
        });
    }

    /// Where `/health`, `/ready` and `/metrics` are served (`None` with
    /// `http = "off"`).
    pub fn http_addr(&self) -> Option<SocketAddr> {
        self.http_addr
    }

    pub fn handle(&self) -> Handle {
        Handle { stop: self.stop.clone() }
    }

    /// Whether every component is ready, as it changes.
    pub fn ready(&self) -> watch::Receiver<bool> {
        self.health.ready()
    }

    /// What `/ready` answers, readable after the node has ended too.
    pub fn health(&self) -> Arc<Health> {
        self.health.clone()
    }

    /// Runs until stopped through a [`Handle`] or until a component fails,
    /// then drains: every component gets `shutdown.drain-timeout-seconds`
    /// to finish (commands and queries in flight answered, views saved).
    pub async fn run(mut self) -> Exit {
        let mut stopped = self.stop.subscribe();
        let failure = tokio::select! {
            biased;
            _ = stopped.wait_for(|s| *s) => None,
            joined = self.tasks.join_next() => match joined {
                // Components end when the node stops: one that ends first
                // only ended because of the stop.
                Some(Ok((component, outcome))) if *self.stop.borrow() => {
                    if let Err(reason) = outcome {
                        tracing::warn!(message = "a component failed while stopping", component, reason = %reason);
                    }
                    None
                }
                Some(Ok((component, Err(reason)))) => Some((component, reason)),
                Some(Ok((component, Ok(())))) => {
                    Some((component, "stopped on its own before the node was stopped".to_owned()))
                }
                Some(Err(e)) => Some(("supervisor", e.to_string())),
                None => None,
            },
        };
        // A poisoned mirror fails everything that reads it, and any of them
        // may notice first: name the cause, not the first to see it.
        let failure = failure.map(|(component, reason)| match self.log.durable().poisoned() {
            Some(poisoned) => ("mirror", poisoned.to_string()),
            None => (component, reason),
        });
        if let Some((component, reason)) = &failure {
            tracing::error!(message = "a component failed; the node drains and exits", component, reason = %reason);
            ::metrics::counter!(metrics::COMPONENT_FAILURES, "component" => *component).increment(1);
            self.health.set(component, State::Failed(reason.clone()));
        } else {
            tracing::info!(message = "stopping: answering what is in flight");
        }
        self.stop.send_replace(true);
        let drained = tokio::time::timeout(self.drain_timeout, async {
            while let Some(joined) = self.tasks.join_next().await {
                if let Ok((component, Err(reason))) = joined {
                    tracing::warn!(message = "a component failed while draining", component, reason = %reason);
                }
            }
        })
        .await;
        if drained.is_err() {
            let waiting: Vec<&'static str> =
                self.running.lock().unwrap_or_else(|p| p.into_inner()).iter().copied().collect();
            tracing::error!(
                message = "draining took too long; exiting anyway",
                drain_timeout_seconds = self.drain_timeout.as_secs(),
                waiting = ?waiting
            );
            self.tasks.abort_all();
            return Exit::DrainTimedOut { waiting };
        }
        tracing::info!(
            message = "stopped",
            mirror_seq = self.log.durable().head().last_seq,
            views_seq = self.views.position()
        );
        match failure {
            Some((component, reason)) => Exit::Failed { component, reason },
            None => Exit::Stopped,
        }
    }
}
