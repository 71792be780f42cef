//! `agentlog serve`: reads the configuration and flags, starts the node
//! (agentlog-node), and stops it on SIGTERM or Ctrl-C. The exit code says
//! how it ended: 0 when stopped and drained, non-zero when a component
//! failed or draining took longer than `shutdown.drain-timeout-seconds`.
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use agentlog_log::{HybridClock, RandomIdGen};
use agentlog_node::{Config, Exit, Node};
use anyhow::Context;

/// Where a node's configuration comes from: the file, the environment, and
/// these flags over both (docs/CONFIG.md). `serve` and `mirror rebuild`
/// read it alike.
#[derive(clap::Args)]
pub struct NodeArgs {
    /// The configuration file (TOML).
    #[arg(long)]
    config: Option<PathBuf>,
    /// The NATS server or cluster member (`nats.url`).
    #[arg(long)]
    nats: Option<String>,
    /// The node's data directory: its mirror of the stream (`data`).
    #[arg(long)]
    data: Option<PathBuf>,
}

impl NodeArgs {
    pub fn load(self) -> anyhow::Result<Config> {
        let mut config = Config::load(self.config.as_deref(), |name| std::env::var(name).ok())?;
        if let Some(url) = self.nats {
            config.nats.url = url;
        }
        if let Some(data) = self.data {
            config.data = data;
        }
        Ok(config)
    }
}

/// Each flag overrides the configuration file and the environment
/// (docs/CONFIG.md).
#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    node: NodeArgs,
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
    let mut config = args.node.load()?;
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
    let mut terminate =
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).context("cannot watch SIGTERM")?;
    let mut signalled = Box::pin(async move {
        tokio::select! {
            _ = terminate.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
    });
    let start = Node::start(config, Arc::new(HybridClock::system()), Arc::new(RandomIdGen::new()));
    let node = tokio::select! {
        started = start => started.context("cannot start the node")?,
        _ = &mut signalled => {
            tracing::info!(message = "stopped while starting");
            return Ok(ExitCode::FAILURE);
        }
    };
    let handle = node.handle();
    tokio::spawn(async move {
        signalled.await;
        handle.stop();
    });
    let exit = node.run().await;
    match &exit {
        Exit::Stopped => Ok(ExitCode::SUCCESS),
        // Some component did not finish: exit now rather than wait for it
        // (the runtime would wait for its blocking work).
        Exit::DrainTimedOut { .. } => std::process::exit(1),
        Exit::Failed { component, reason } => {
            eprintln!("agentlog serve: {component} failed: {reason}");
            Ok(ExitCode::FAILURE)
        }
    }
}
