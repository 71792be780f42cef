//! `agentlog demo`: the seeded workload on the embedded log, then a summary;
//! or, with `--nats`, the same workload sent as commands to a running
//! `agentlog serve`.
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

use agentlog_commands::wire::Client;
use agentlog_commands::{Accepted, Code, Command, Executor, Rejection, Request, sim};
use agentlog_log::chain::to_hex;
use agentlog_log::jetstream::StreamReader;
use agentlog_log::{EmbeddedLog, Envelope, Log, ManualClock, Options};
use agentlog_projections::{ProjectionStore, Views, ticker};
use anyhow::{Context, bail};

use crate::principals::Principals;
use crate::progress;

#[derive(clap::Args)]
pub struct Args {
    /// Seed of the workload: the same seed gives the same log, byte for byte.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    #[arg(long, default_value_t = 8)]
    agents: usize,
    #[arg(long, default_value_t = 500)]
    tasks: usize,
    /// Simulated days (each a whole UTC day).
    #[arg(long, default_value_t = 3)]
    days: u32,
    /// Where to write the log (must be new or empty); a fresh temporary
    /// directory when absent.
    #[arg(long)]
    data: Option<PathBuf>,
    /// Print the summary as one JSON object.
    #[arg(long)]
    json: bool,
    /// fsync every commit. By default the demo syncs once at the end: it is
    /// a simulation, and a process crash loses nothing either way.
    #[arg(long)]
    sync: bool,
    /// Send the workload as commands to the command service of a running
    /// `agentlog serve` on this NATS server, instead of an embedded log. The
    /// service decides on its own clock, so no agent vanishes and the
    /// workload sends no expiry commands; the log is not reproducible.
    #[arg(long, env = "AGENTLOG_NATS_URL", conflicts_with_all = ["data", "sync"])]
    nats: Option<String>,
    /// An admin's key file (`agentlog keygen`), for a node in signed mode:
    /// it registers an orchestrator and one principal per agent for this
    /// run, and each command is signed by the principal it needs. Not used
    /// on the embedded log.
    #[arg(long, env = "AGENTLOG_KEY")]
    key: Option<PathBuf>,
}

/// The command service as the workload's target.
struct Service {
    client: Client,
    /// On a node in signed mode, who signs what.
    principals: Option<Principals>,
    reader: StreamReader,
}

impl Executor for Service {
    async fn execute(&self, request: Request) -> Result<Accepted, Rejection> {
        let Some(principals) = &self.principals else { return self.client.send(&request).await };
        let accepted = principals.client_for(&request).await?.send(&request).await?;
        if let (Command::OpenSession(open), Some(session_id)) = (&request.command, &accepted.session_id) {
            principals.opened(session_id, &open.agent_id);
        }
        Ok(accepted)
    }
}

impl sim::Target for Service {
    async fn read_stream(&self, stream: &str) -> Result<Vec<Envelope>, Rejection> {
        self.reader
            .read_aggregate(stream)
            .await
            .map_err(|e| Rejection::new(Code::Unavailable, format!("cannot read {stream} from JetStream: {e}")))
    }
}

async fn run_nats(args: &Args, url: &str) -> anyhow::Result<ExitCode> {
    let nats =
        agentlog_log::jetstream::connect(url).await.with_context(|| format!("cannot connect to NATS at {url}"))?;
    let reader = StreamReader::open(url, "AGENTLOG").await?;
    let client = Client::new(nats, "demo");
    let principals = match &args.key {
        Some(key) => Some(Principals::new(client.clone().with_signer(crate::keys::load(key)?))?),
        None => None,
    };
    let service = Service { client, principals, reader };
    if !args.json {
        eprintln!("sending the demo workload to the command service at {url}");
    }
    // Only the workload's own schedule runs on this clock; the service
    // decides on its own.
    let clock = ManualClock::new(sim::START);
    let config =
        sim::Config { seed: args.seed, agents: args.agents, tasks: args.tasks, days: args.days, sim_clock: false };
    let (summary, elapsed) = simulate(&service, &sim::NoTicker, &clock, config, "sending", args.json).await?;
    let last_seq = service.reader.last_seq(None).await?;
    if args.json {
        let out = serde_json::json!({
            "nats": url,
            "last_seq": last_seq,
            "elapsed_seconds": elapsed.as_secs_f64(),
            "summary": summary,
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(ExitCode::SUCCESS);
    }
    print_summary(args, &summary, &format!("the stream's last seq is now {last_seq}"));
    println!(
        "  took {:.2} s ({:.0} commands/s, one at a time). Look closer: agentlog tail --nats {url}",
        elapsed.as_secs_f64(),
        summary.commands as f64 / elapsed.as_secs_f64().max(1e-9),
    );
    Ok(ExitCode::SUCCESS)
}

pub async fn run(args: Args) -> anyhow::Result<ExitCode> {
    if let Some(url) = &args.nats {
        return run_nats(&args, url).await;
    }
    let data = match &args.data {
        Some(dir) => dir.clone(),
        None => tempfile::Builder::new()
            .prefix("agentlog-demo-")
            .tempdir()
            .context("cannot create a temporary directory for the demo")?
            .keep(),
    };
    if !args.json {
        eprintln!("writing the demo log to {} (embedded RocksDB)", data.display());
    }
    let log = Arc::new(EmbeddedLog::open(&data, Options { sync: args.sync, ..Options::default() })?);
    let existing = log.head().await?.last_seq;
    if existing > 0 {
        bail!(
            "{} already holds {existing} events; the demo needs an empty log to be reproducible: pass a new --data or leave it out",
            data.display()
        );
    }
    // The projections follow the log while the workload runs.
    let views = Arc::new(Views::default());
    let projections = ProjectionStore::open(&agentlog_projections::store::dir(&data))?;
    let (stop_projections, stop) = tokio::sync::watch::channel(false);
    let worker = tokio::spawn({
        let (log, views) = (log.clone(), views.clone());
        async move { agentlog_projections::follow(&*log, &views, &projections, Default::default(), stop).await }
    });
    let clock = Arc::new(ManualClock::new(sim::START));
    let handler = sim::handler(log.clone(), clock.clone(), args.seed);
    let config =
        sim::Config { seed: args.seed, agents: args.agents, tasks: args.tasks, days: args.days, sim_clock: true };
    // Deadlines are judged by the real ticker, on the world view of the log.
    let ticker = ticker::OnSource::new(&handler, &**log.store());
    let (summary, elapsed) = simulate(&handler, &ticker, &clock, config, "simulating", args.json).await?;
    log.sync()?;
    let head = log.head().await?;
    let head_hash = to_hex(&head.hash);
    views.wait_for(head.last_seq, std::time::Duration::from_secs(60)).await?;
    let _ = stop_projections.send(true);
    worker.await.context("the projection worker panicked")??;
    let projection_hashes: std::collections::BTreeMap<&str, String> =
        views.status().into_iter().map(|s| (s.name, s.state_hash)).collect();
    if args.json {
        let out = serde_json::json!({
            "events": head.last_seq,
            "last_seq": head.last_seq,
            "head_hash": head_hash,
            "projections": projection_hashes,
            "data": data,
            "elapsed_seconds": elapsed.as_secs_f64(),
            "summary": summary,
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(ExitCode::SUCCESS);
    }
    print_summary(&args, &summary, &format!("{} written, last seq {}", head.last_seq, head.last_seq));
    println!("  head hash     {head_hash}");
    for (name, hash) in &projection_hashes {
        println!("  {:<13} {hash}", format!("{name} view"));
    }
    println!();
    println!(
        "  took {:.2} s ({:.0} events/s). Look closer: agentlog tail --data {d} | agentlog verify --data {d}",
        elapsed.as_secs_f64(),
        head.last_seq as f64 / elapsed.as_secs_f64().max(1e-9),
        d = data.display()
    );
    Ok(ExitCode::SUCCESS)
}

fn print_summary(args: &Args, summary: &sim::Summary, events: &str) {
    let rejected: u64 = summary.rejected.values().sum();
    let reasons: Vec<String> = summary.rejected.iter().map(|(code, n)| format!("{code} {n}")).collect();
    println!(
        "agentlog demo: seed {}, {} agents, {} tasks, {} simulated days",
        args.seed, args.agents, args.tasks, args.days
    );
    println!("  simulated     {} .. {}", summary.simulated_from, summary.simulated_to);
    println!("  events        {events}");
    println!(
        "  commands      {} sent, {} accepted, {} rejected ({})",
        summary.commands,
        summary.accepted,
        rejected,
        reasons.join(", ")
    );
    println!("  claims        {} won, {} lost in races", summary.claims_won, summary.claims_lost);
    println!(
        "  tasks         {} created, {} completed, {} failed for good",
        summary.tasks_created, summary.tasks_completed, summary.tasks_failed
    );
    println!(
        "  sessions      {} opened, {} abandoned, {} leases expired by the ticker",
        summary.sessions_opened, summary.sessions_abandoned, summary.leases_expired
    );
    println!(
        "  budget        {} allocated, {} spent, {} refunded, circuit opened {} times",
        summary.budget_allocated, summary.budget_spent, summary.budget_refunded, summary.circuits_opened
    );
    println!();
    println!(
        "  {:<10} {:<26} {:>9} {:>6} {:>8} {:>10} {:>11}",
        "agent", "capabilities", "completed", "failed", "success", "claims won", "claims lost"
    );
    for a in &summary.agents {
        println!(
            "  {:<10} {:<26} {:>9} {:>6} {:>7.1}% {:>10} {:>11}",
            a.agent_id,
            a.capabilities.join(","),
            a.completed,
            a.failed,
            a.success_rate * 100.0,
            a.claims_won,
            a.claims_lost
        );
    }
}

/// Runs the workload against `target` with a progress bar; the summary and
/// how long it took.
async fn simulate<T: sim::Target, K: sim::Ticker>(
    target: &T,
    ticker: &K,
    clock: &ManualClock,
    config: sim::Config,
    what: &str,
    json: bool,
) -> anyhow::Result<(sim::Summary, std::time::Duration)> {
    let bar = progress::bar(0, what, json);
    let started = Instant::now();
    let summary = sim::run(target, ticker, clock, config, &mut |done, total| {
        bar.set_length(total);
        bar.set_position(done);
    })
    .await?;
    bar.finish_and_clear();
    Ok((summary, started.elapsed()))
}
