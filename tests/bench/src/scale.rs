//! `agentlog bench --scale`: what a command costs as the world grows. One
//! node as `serve` runs it (JetStream log with its mirror, the command
//! service, the projection worker at its default cadence) on a nats-server
//! this starts. The world is grown by `create_task` commands (64 in
//! flight) to each decade of tasks up to `--scale-tasks`; at each size:
//! the rate of that growth, the command → view latency of commands sent one
//! at a time for 6 s (each followed by a read-your-write wait on the views;
//! longer than a checkpoint interval, so its pause is in the tail),
//! the cost and size of one checkpoint (`--scale-checkpoint-events 1`
//! reproduces the worker that saved whenever it caught up), the process's
//! resident memory, what RocksDB holds of it (both stores: memtables,
//! block caches, table readers) and the entities the views hold in memory
//! after that checkpoint, and how fast both views rebuild from the mirror
//! into a new projection store with the same cache bound, as `agentlog
//! projections rebuild` does. Prints figures; asserts nothing.
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use agentlog_commands::command::{AllocateBudget, CreateTask};
use agentlog_commands::wire::{self, Client};
use agentlog_commands::{Command as Cmd, Handler};
use agentlog_log::jetstream::{JetStreamLog, Options as JsOptions};
use agentlog_log::{HybridClock, Log, RandomIdGen};
use agentlog_projections::{Cadence, Live, ProjectionStore, Reputation, Runner, Views, WorldModel};
use agentlog_tests::nats::NatsServer;
use anyhow::Context;
use hdrhistogram::Histogram;
use serde_json::json;

use crate::Latency;

/// Commands kept in flight while the world grows.
const IN_FLIGHT: usize = 64;
/// Commands are timed one at a time at each size for at least this long,
/// longer than the default checkpoint interval, so a checkpoint's pause
/// shows in the tail.
const PROBE_FOR: Duration = Duration::from_secs(6);

/// The process's resident memory, from /proc (Linux).
fn resident_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse::<u64>().ok().map(|kb| kb * 1024)
}

/// Creates tasks `from..to` through the service, `IN_FLIGHT` at a time.
async fn grow(client: &Client, from: u64, to: u64) -> anyhow::Result<f64> {
    let started = Instant::now();
    let mut next = from;
    let mut flying = tokio::task::JoinSet::new();
    while next < to || !flying.is_empty() {
        while next < to && flying.len() < IN_FLIGHT {
            let client = client.clone();
            let command = Cmd::CreateTask(CreateTask {
                task_id: format!("task-{next:08}"),
                title: String::new(),
                priority: i32::try_from(next % 10).unwrap_or(0),
                required_capabilities: vec!["code".into()],
                dependencies: vec![],
                max_attempts: 3,
            });
            flying.spawn(async move { client.execute(&command, None).await });
            next += 1;
        }
        if let Some(done) = flying.join_next().await {
            done?.map_err(|r| anyhow::anyhow!("create_task refused: {r}"))?;
        }
    }
    Ok((to - from) as f64 / started.elapsed().as_secs_f64())
}

pub async fn run(
    max_tasks: u64,
    cadence: Cadence,
    cache_entities: usize,
    dir: Option<&Path>,
    json_out: bool,
) -> anyhow::Result<()> {
    let root = match dir {
        Some(dir) => tempfile::tempdir_in(dir)?,
        None => tempfile::tempdir()?,
    };
    let server = NatsServer::start_in(Some(root.path()), "");
    let url = server.url();
    let data = root.path().join("node");
    let log = Arc::new(JetStreamLog::open(JsOptions::new(&url, &data)).await?);
    let handler = Arc::new(Handler::new(log.clone(), Arc::new(HybridClock::system()), Arc::new(RandomIdGen::new())));
    let (stop_tx, stop) = tokio::sync::watch::channel(false);
    let store =
        Arc::new(ProjectionStore::open(&agentlog_projections::store::dir(&data))?.with_cache_entities(cache_entities));
    let views = Arc::new(Views::default());
    let worker = tokio::spawn({
        let (log, views, store, stop) = (log.clone(), views.clone(), store.clone(), stop.clone());
        async move { agentlog_projections::follow(&*log, &views, &store, cadence, stop).await }
    });
    let service = wire::Service::bind(async_nats::connect(&url).await?, handler).await?;
    let service = tokio::spawn(service.run(stop));
    let client = Client::new(async_nats::connect(&url).await?, "bench");

    if !json_out {
        println!(
            "a node as serve runs it, the world grown by create_task through the service (64 in flight); checkpoints every {} events or {} ms",
            cadence.events,
            cadence.interval.as_millis()
        );
        println!(
            "  {:>9} {:>9} | {:>10} | {:>12} {:>9} {:>9} | {:>11} {:>10} | {:>7} {:>8} {:>10} | {:>10}",
            "tasks",
            "events",
            "create/s",
            "cmd→view p50",
            "p99",
            "max",
            "checkpoint",
            "size",
            "RSS MB",
            "RocksDB",
            "in memory",
            "rebuild/s"
        );
    }
    let mut rows = Vec::new();
    let mut have = 0u64;
    let mut size = 1_000u64;
    while size <= max_tasks {
        let create_rate = grow(&client, have, size).await?;
        have = size;

        // Command → view, one at a time: a debit-free command on a small
        // aggregate, then a read-your-write wait on this node's views.
        let mut histogram = Histogram::<u64>::new(3)?;
        let probing = Instant::now();
        let mut n = 0u64;
        while probing.elapsed() < PROBE_FOR {
            n += 1;
            let command = Cmd::AllocateBudget(AllocateBudget { budget_id: format!("probe-{}", n % 8), amount: 1 });
            let started = Instant::now();
            let accepted = client.execute(&command, None).await.map_err(|r| anyhow::anyhow!("{r}"))?;
            views.wait_for(accepted.last_seq, Duration::from_secs(30)).await?;
            histogram.record(u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX))?;
        }
        let latency = Latency::from(&histogram);

        let events = log.head().await?.last_seq;
        let started = Instant::now();
        let checkpoint_bytes = views.save(&store)?;
        let checkpoint_seconds = started.elapsed().as_secs_f64();
        let resident = resident_bytes().unwrap_or(0);
        let (mirror_memory, store_memory) = (log.store().memory(), store.memory());
        let in_memory: usize = views.resident().iter().map(|(_, _, n)| n).sum();

        let rebuilt_into = tempfile::tempdir_in(root.path())?;
        let rebuilt = ProjectionStore::open(rebuilt_into.path())?.with_cache_entities(cache_entities);
        let (mut world, mut reputation) = (Live::<WorldModel>::new(), Live::<Reputation>::new());
        let mut runners: [&mut dyn Runner; 2] = [&mut world, &mut reputation];
        let started = Instant::now();
        rebuilt.rebuild(&**log.store(), &mut runners, events, &mut |_| {}).context("rebuilding from the mirror")?;
        let rebuild_rate = events as f64 / started.elapsed().as_secs_f64();
        drop((world, reputation, rebuilt, rebuilt_into));

        if !json_out {
            println!(
                "  {:>9} {:>9} | {:>10.0} | {:>9.2} ms {:>6.2} ms {:>6.1} ms | {:>9.1} ms {:>7.1} MB | {:>7.0} {:>5.0} MB {:>10} | {:>10.0}",
                size,
                events,
                create_rate,
                latency.p50_us / 1000.0,
                latency.p99_us / 1000.0,
                latency.max_us / 1000.0,
                checkpoint_seconds * 1000.0,
                checkpoint_bytes as f64 / 1e6,
                resident as f64 / 1e6,
                (mirror_memory.total() + store_memory.total()) as f64 / 1e6,
                in_memory,
                rebuild_rate
            );
        }
        rows.push(json!({
            "tasks": size,
            "events": events,
            "create_task_per_second": create_rate,
            "command_to_view_p50_us": latency.p50_us,
            "command_to_view_p99_us": latency.p99_us,
            "command_to_view_max_us": latency.max_us,
            "checkpoint_seconds": checkpoint_seconds,
            "checkpoint_bytes": checkpoint_bytes,
            "resident_bytes": resident,
            "rocksdb_bytes": {
                "mirror": { "memtables": mirror_memory.memtables, "block_cache": mirror_memory.block_cache, "table_readers": mirror_memory.table_readers },
                "projections": { "memtables": store_memory.memtables, "block_cache": store_memory.block_cache, "table_readers": store_memory.table_readers },
            },
            "entities_in_memory": in_memory,
            "rebuild_events_per_second": rebuild_rate,
        }));
        size *= 10;
    }
    let _ = stop_tx.send(true);
    let _ = service.await;
    worker.await?.context("the projection worker")?;
    if json_out {
        println!("{}", json!({ "scale": rows }));
    } else {
        println!(
            "  checkpoint: one save of both views: the entities changed since the worker's last save, and the positions"
        );
        println!(
            "  RocksDB: what the mirror's and the projection store's memtables, block caches and table readers hold of the RSS"
        );
        println!(
            "  in memory: entities the views hold after it (at most {cache_entities} settled ones per family: --scale-cache-entities)"
        );
        println!("  rebuild: both views from seq 1 into a new projection store with the same cache bound");
    }
    Ok(())
}
