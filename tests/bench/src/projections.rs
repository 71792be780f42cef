//! `agentlog bench --projections`: the projections' figures. On a log the
//! demo's simulation writes (or an existing `--data` log): how fast each
//! projection folds, from events in memory and from the WAL (read, decode,
//! fold); query latency in process and over NATS; and, against a nats-server
//! it starts itself, how long a command takes to be visible in the views of
//! the node that accepted it. Prints figures; asserts nothing.
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use agentlog_commands::command::AllocateBudget;
use agentlog_commands::wire::{self, Client};
use agentlog_commands::{Command as Cmd, Handler, sim};
use agentlog_log::jetstream::{JetStreamLog, Options as JsOptions};
use agentlog_log::wal::Store;
use agentlog_log::{EmbeddedLog, Envelope, HybridClock, ManualClock, Options, RandomIdGen, SeededIdGen};
use agentlog_projections::query::{self, Query};
use agentlog_projections::{Live, Projection, ProjectionStore, Reputation, Runner, Views, WorldModel, rebuild};
use anyhow::Context;
use hdrhistogram::Histogram;

use agentlog_tests::nats::NatsServer;

use crate::Latency;

/// Where the log comes from.
pub struct Source {
    /// An existing data directory (an embedded log or a mirror).
    pub data: Option<PathBuf>,
    /// Otherwise, about how many events the simulation writes.
    pub events: u64,
}

/// Runs of each fold figure; the best is reported (folding is CPU-bound:
/// the best run is the one the other core's noise disturbed least).
const FOLD_RUNS: usize = 3;

fn rate(events: usize, took: Duration) -> f64 {
    events as f64 / took.as_secs_f64().max(1e-9)
}

fn best_of(runs: usize, mut work: impl FnMut() -> Duration) -> Duration {
    (0..runs).map(|_| work()).min().unwrap_or_default()
}

fn fold<P: Projection>(events: &[Envelope]) -> Duration {
    let started = Instant::now();
    let mut live = Live::<P>::new();
    for event in events {
        live.apply(event);
    }
    std::hint::black_box(&live);
    started.elapsed()
}

fn fold_both(events: &[Envelope]) -> Duration {
    fold_both_from((Live::new(), Live::new()), events)
}

/// Both views tracking their changes from the start, as the worker's do
/// between checkpoints once it has saved (a fold from nothing does not
/// track until its first save).
fn fold_both_tracked(events: &[Envelope]) -> Duration {
    let (mut world, mut reputation) = (Live::<WorldModel>::new(), Live::<Reputation>::new());
    world.settle();
    reputation.settle();
    fold_both_from((world, reputation), events)
}

fn fold_both_from(views: (Live<WorldModel>, Live<Reputation>), events: &[Envelope]) -> Duration {
    let started = Instant::now();
    let (mut world, mut reputation) = views;
    for event in events {
        world.apply(event);
        reputation.apply(event);
    }
    std::hint::black_box((&world, &reputation));
    started.elapsed()
}

fn from_wal(wal: &Store, runners: &mut [&mut dyn Runner], through: u64) -> anyhow::Result<Duration> {
    let started = Instant::now();
    rebuild(wal, runners, through, &mut |_, _| {})?;
    Ok(started.elapsed())
}

/// Writes the simulation's log into `dir` (sync off): agents and tasks
/// scaled so the log holds about `events` events.
pub(crate) async fn simulate(dir: &Path, events: u64, json: bool) -> anyhow::Result<Arc<EmbeddedLog>> {
    let log = Arc::new(EmbeddedLog::open(dir, Options { sync: false, ..Options::default() })?);
    let clock = Arc::new(ManualClock::new(sim::START));
    let handler = Handler::new(log.clone(), clock.clone(), Arc::new(SeededIdGen::new(1)));
    // The demo's 8 agents and 500 tasks over 3 days write about 10,000
    // events; tasks scale the log, agents keep the contention alike.
    let tasks = (events / 20).max(500);
    let agents = (tasks / 60).clamp(8, 400) as usize;
    let config = sim::Config { seed: 1, agents, tasks: tasks as usize, days: 3, sim_clock: true };
    if !json {
        eprintln!("writing the simulation's log ...");
    }
    let ticker = agentlog_projections::ticker::OnSource::new(&handler, &**log.store());
    sim::run(&handler, &ticker, &clock, config, &mut |_, _| {}).await?;
    Ok(log)
}

fn latency(mut work: impl FnMut() -> anyhow::Result<()>, runs: u64) -> anyhow::Result<Latency> {
    let mut histogram = Histogram::<u64>::new(3)?;
    for _ in 0..runs {
        let started = Instant::now();
        work()?;
        histogram.record(u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX))?;
    }
    Ok(Latency::from(&histogram))
}

/// The point queries a caller makes most: one task, one agent, the ready
/// queue's head, the budgets, a match.
fn sample_queries(views: &Views) -> Vec<Query> {
    let world = views.world();
    let task = world.state.tasks().nth(world.state.tasks().count() / 2).map(|t| t.task_id.clone());
    let agent = world.state.agents().next().map(|a| a.agent_id.clone());
    let mut queries = vec![Query::Budgets { page: Default::default() }, Query::Ready { page: Default::default() }];
    if let Some(id) = task {
        queries.push(Query::Task { id: id.clone() });
        queries.push(Query::Match { task_id: id });
    }
    if let Some(id) = agent {
        queries.push(Query::Agent { id });
    }
    queries
}

async fn over_nats(url: &str, views: Arc<Views>, queries: &[Query], runs: u64) -> anyhow::Result<Vec<Latency>> {
    let (stop_tx, stop) = tokio::sync::watch::channel(false);
    let service = agentlog_projections::service::Service::bind(async_nats::connect(url).await?, views.clone()).await?;
    let service = tokio::spawn(service.run(stop));
    let client = async_nats::connect(url).await?;
    let mut figures = Vec::new();
    for query in queries {
        let subject = format!("{}.{}", agentlog_projections::service::SUBJECT_PREFIX, query.name());
        let body = bytes::Bytes::from(serde_json::to_vec(&agentlog_projections::service::Request::for_query(query))?);
        let mut histogram = Histogram::<u64>::new(3)?;
        for _ in 0..runs {
            let started = Instant::now();
            let reply = client.request(subject.clone(), body.clone()).await?;
            agentlog_projections::service::parse_reply(&reply.payload).map_err(anyhow::Error::msg)?;
            histogram.record(u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX))?;
        }
        figures.push(Latency::from(&histogram));
    }
    let _ = stop_tx.send(true);
    let _ = service.await;
    Ok(figures)
}

/// A node as `serve` runs it (mirror, command service, projection worker):
/// for each command, the time from sending it to its seq being in the
/// node's views.
async fn command_to_view(url: &str, commands: u64) -> anyhow::Result<Latency> {
    let data = tempfile::tempdir()?;
    let log = Arc::new(JetStreamLog::open(JsOptions::new(url, data.path())).await?);
    let handler = Arc::new(Handler::new(log.clone(), Arc::new(HybridClock::system()), Arc::new(RandomIdGen::new())));
    let (stop_tx, stop) = tokio::sync::watch::channel(false);
    let store = ProjectionStore::open(&agentlog_projections::store::dir(data.path()))?;
    let views = Arc::new(Views::default());
    let worker = tokio::spawn({
        let (log, views, stop) = (log.clone(), views.clone(), stop.clone());
        async move { agentlog_projections::follow(&*log, &views, &store, Default::default(), stop).await }
    });
    let service = wire::Service::bind(async_nats::connect(url).await?, handler).await?;
    let service = tokio::spawn(service.run(stop));
    let client = Client::new(async_nats::connect(url).await?, "bench");
    let mut histogram = Histogram::<u64>::new(3)?;
    for n in 0..commands {
        let command = Cmd::AllocateBudget(AllocateBudget { budget_id: format!("b{}", n % 16), amount: 1 });
        let started = Instant::now();
        let accepted = client.execute(&command, None).await?;
        views.wait_for(accepted.last_seq, Duration::from_secs(10)).await?;
        histogram.record(u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX))?;
    }
    let _ = stop_tx.send(true);
    let _ = service.await;
    worker.await?.context("the projection worker")?;
    Ok(Latency::from(&histogram))
}

pub async fn run(source: Source, queries: u64, dir: Option<&Path>, json: bool) -> anyhow::Result<()> {
    let say = |what: &str| {
        if !json {
            eprintln!("measuring {what} ...");
        }
    };
    let scratch = match dir {
        Some(dir) => tempfile::tempdir_in(dir)?,
        None => tempfile::tempdir()?,
    };
    let (_log, wal): (Option<Arc<EmbeddedLog>>, Arc<Store>) = match &source.data {
        Some(data) => (None, Arc::new(Store::open_read_only(data).context("cannot open the log in --data")?)),
        None => {
            let log = simulate(scratch.path(), source.events, json).await?;
            let store = log.store().clone();
            (Some(log), store)
        }
    };
    let head = wal.head()?.last_seq;
    anyhow::ensure!(head > 0, "the log is empty");

    say("reading and decoding the WAL");
    let mut read = Duration::MAX;
    for _ in 0..FOLD_RUNS {
        read = read.min(from_wal(&wal, &mut [], head)?);
    }
    let events = wal.read(1, usize::try_from(head)?)?;

    say("folds in memory");
    let world_mem = best_of(FOLD_RUNS, || fold::<WorldModel>(&events));
    let reputation_mem = best_of(FOLD_RUNS, || fold::<Reputation>(&events));
    let both_mem = best_of(FOLD_RUNS, || fold_both(&events));
    let both_tracked = best_of(FOLD_RUNS, || fold_both_tracked(&events));

    say("rebuilds from the WAL");
    let (mut world, mut reputation) = (Live::<WorldModel>::new(), Live::<Reputation>::new());
    let mut world_wal = Duration::MAX;
    let mut reputation_wal = Duration::MAX;
    let mut both_wal = Duration::MAX;
    for _ in 0..FOLD_RUNS {
        world_wal = world_wal.min(from_wal(&wal, &mut [&mut world], head)?);
        reputation_wal = reputation_wal.min(from_wal(&wal, &mut [&mut reputation], head)?);
        both_wal = both_wal.min(from_wal(&wal, &mut [&mut world, &mut reputation], head)?);
    }

    say("queries in process");
    let views = Arc::new(Views::default());
    views.catch_up(&*wal)?;
    let sample = sample_queries(&views);
    let mut in_process = Vec::new();
    for query in &sample {
        in_process.push(latency(|| query::answer(&views, query).map(|_| ()).map_err(Into::into), queries)?);
    }

    let server = NatsServer::start_in(dir, "");
    let url = server.url();
    say("queries over NATS");
    let remote = over_nats(&url, views.clone(), &sample, queries.min(5_000)).await?;
    say("command to view, one node as serve runs it");
    let to_view = command_to_view(&url, queries.min(2_000)).await?;

    let n = events.len();
    let query_figures: Vec<serde_json::Value> = sample
        .iter()
        .zip(in_process.iter().zip(&remote))
        .map(|(q, (local, nats))| {
            serde_json::json!({
                "query": q.name(),
                "in_process_p50_us": round1(local.p50_us),
                "in_process_p99_us": round1(local.p99_us),
                "nats_p50_us": round1(nats.p50_us),
                "nats_p99_us": round1(nats.p99_us),
            })
        })
        .collect();
    let figures = serde_json::json!({
        "events": n,
        "wal_read_decode_events_per_s": rate(n, read).round(),
        "fold_in_memory_events_per_s": {
            "world": rate(n, world_mem).round(),
            "reputation": rate(n, reputation_mem).round(),
            "both": rate(n, both_mem).round(),
            "both_tracking_changes": rate(n, both_tracked).round(),
        },
        "rebuild_from_wal_events_per_s": {
            "world": rate(n, world_wal).round(),
            "reputation": rate(n, reputation_wal).round(),
            "both": rate(n, both_wal).round(),
        },
        "queries": query_figures,
        "command_to_view_p50_us": round1(to_view.p50_us),
        "command_to_view_p99_us": round1(to_view.p99_us),
    });
    if json {
        println!("{}", serde_json::to_string_pretty(&figures)?);
        return Ok(());
    }
    println!("projections, on a log of {n} events:");
    println!("  WAL read and decode alone (pages)         {:>10.0} events/s", rate(n, read));
    println!("  fold in memory       world                {:>10.0} events/s", rate(n, world_mem));
    println!("                       reputation           {:>10.0} events/s", rate(n, reputation_mem));
    println!("                       both                 {:>10.0} events/s", rate(n, both_mem));
    println!(
        "                       both, changes tracked{:>10.0} events/s (as the worker folds)",
        rate(n, both_tracked)
    );
    println!("  rebuild from the WAL world                {:>10.0} events/s (target >= 1,000,000)", rate(n, world_wal));
    println!("                       reputation           {:>10.0} events/s", rate(n, reputation_wal));
    println!("                       both                 {:>10.0} events/s", rate(n, both_wal));
    println!("  query latency (target p99 < 100 us in process, < 2000 us over NATS):");
    for (q, (local, nats)) in sample.iter().zip(in_process.iter().zip(&remote)) {
        println!(
            "    {:<8} in process p50 {:>8.1} us  p99 {:>8.1} us   over NATS p50 {:>8.1} us  p99 {:>8.1} us",
            q.name(),
            local.p50_us,
            local.p99_us,
            nats.p50_us,
            nats.p99_us
        );
    }
    println!(
        "  command to view (one node, one command at a time): p50 {:.1} us, p99 {:.1} us (target p99 < 20000 us)",
        to_view.p50_us, to_view.p99_us
    );
    Ok(())
}

fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}
