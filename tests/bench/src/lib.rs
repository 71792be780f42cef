//! agentlog-bench: every benchmark of agentlog, in a crate of its own (the
//! CLI's `agentlog bench …` only calls [`run`]). Prints figures; asserts
//! nothing (docs/BENCHMARKS.md).
//!
//! This module is the default benchmark: the embedded log's append
//! throughput with 1, 8 and 64 producers, sync on and off; the claim
//! command's latency; and, in the same run on the same disk, raw RocksDB
//! `WriteBatch` throughput with the same event bytes, so the log's overhead
//! is a ratio. `distributed`, `projections`, `archive`, `recovery`, `scale`,
//! `replay` and `sandbox` are the others.
#![allow(clippy::disallowed_methods)] // benchmarks time things with the wall clock
mod archive;
mod distributed;
mod floor;
mod hot;
mod idempotency;
mod projections;
mod recovery;
mod replay;
mod sandbox;
mod scale;

use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

use agentlog_commands::command::{ClaimTask, CreateTask, OpenSession, RegisterAgent};
use agentlog_commands::{Command, Handler, Request};
use agentlog_log::rocksdb;
use agentlog_log::schema::{self, SCHEMA_VERSION};
use agentlog_log::{
    AppendRequest, Body, EmbeddedLog, Envelope, EventId, ExpectedVersion, HybridClock, Log, Options, RandomIdGen,
    SeededIdGen, Timestamp,
};
use anyhow::Context;
use hdrhistogram::Histogram;
use serde_json::json;

#[derive(clap::Args)]
pub struct Args {
    /// Events per configuration with sync off.
    #[arg(long, default_value_t = 200_000)]
    events: u64,
    /// Events per configuration with sync on (each commit waits for fsync).
    #[arg(long, default_value_t = 50_000)]
    synced_events: u64,
    /// Runs of each throughput figure; the median is reported.
    #[arg(long, default_value_t = 3)]
    repeat: usize,
    /// Claims to time (with --distributed: of each mode, open and signed,
    /// at most 5,000).
    #[arg(long, default_value_t = 5_000)]
    claims: u64,
    /// With --distributed: how long two nodes take 64 producers' debits on
    /// one budget (the figure for `retries_exhausted` across nodes).
    #[arg(long, default_value_t = 30)]
    hot_seconds: u64,
    /// Where to put the temporary stores (a directory on the disk to measure).
    #[arg(long)]
    dir: Option<std::path::PathBuf>,
    #[arg(long)]
    json: bool,
    /// Measure distributed mode instead (starts its own nats-server).
    #[arg(long, conflicts_with = "projections")]
    distributed: bool,
    /// Measure the projections instead: folds, rebuilds, queries (in process
    /// and over NATS, with its own nats-server) and command-to-view latency.
    /// On the simulation's log of about --events events, or on --data.
    #[arg(long)]
    projections: bool,
    /// Measure the archive instead: archive and scan throughput, bytes per
    /// event, against DuckDB writing the same rows (python3 with duckdb).
    #[arg(long, conflicts_with_all = ["projections", "distributed"])]
    archive: bool,
    /// Measure disaster recovery instead: backup (full and incremental),
    /// restore and the deep check at a quarter, half and all of
    /// --recovery-events.
    #[arg(long, conflicts_with_all = ["projections", "distributed", "archive"])]
    recovery: bool,
    /// Measure a node as the world grows instead: command throughput,
    /// command → view latency, checkpoint cost, memory and rebuild rate at
    /// each decade of tasks up to --scale-tasks (starts its own nats-server).
    #[arg(long, conflicts_with_all = ["projections", "distributed", "archive", "recovery"])]
    scale: bool,
    /// The largest world --scale grows (tasks).
    #[arg(long, default_value_t = 100_000)]
    scale_tasks: u64,
    /// With --scale: checkpoint after this many unsaved events (the node's
    /// `projections.checkpoint-events`); 1 reproduces the worker before
    /// issue 12, which saved whenever it caught up.
    #[arg(long, default_value_t = agentlog_projections::Cadence::default().events)]
    scale_checkpoint_events: u64,
    /// With --scale: settled entities each family keeps in memory (the
    /// node's `projections.cache-entities`).
    #[arg(long, default_value_t = agentlog_projections::store::DEFAULT_CACHE_ENTITIES)]
    scale_cache_entities: usize,
    /// Measure incident replay instead: folds from the WAL and from the
    /// archive alone, `replay check`, and `replay state` (the first pass
    /// that takes snapshots, then jumps to random points), on the
    /// simulation's log of about --replay-events events or on --data.
    #[arg(long, conflicts_with_all = ["projections", "distributed", "archive", "recovery", "scale"])]
    replay: bool,
    /// The simulation log --replay measures (events, about).
    #[arg(long, default_value_t = 1_000_000)]
    replay_events: u64,
    /// Measure the WASM sandbox instead: compile time of a first-seen
    /// module, warm runs of a small one, run_module commands.
    #[arg(long, conflicts_with_all = ["projections", "distributed", "archive", "recovery", "scale", "replay"])]
    sandbox: bool,
    /// Warm runs --sandbox makes (a quarter as many commands).
    #[arg(long, default_value_t = 20_000)]
    sandbox_runs: u64,
    /// The largest log --recovery measures.
    #[arg(long, default_value_t = 1_000_000)]
    recovery_events: u64,
    /// With --projections or --archive: an existing log (a data directory)
    /// instead of the simulation's.
    #[arg(long)]
    data: Option<std::path::PathBuf>,
}

/// Events per raw RocksDB batch: about what one group commit carries with
/// 64 producers.
const RAW_BATCH: usize = 64;

/// A plain JetStream stream `name` (file storage, no limits, no consumer)
/// on the subjects `<name in lower case>.>`: what raw publishes go to.
pub(crate) async fn plain_stream(js: &async_nats::jetstream::Context, name: &str) -> anyhow::Result<()> {
    js.create_stream(async_nats::jetstream::stream::Config {
        name: name.into(),
        subjects: vec![format!("{}.>", name.to_lowercase())],
        ..Default::default()
    })
    .await?;
    Ok(())
}

/// Event `n` of a stream of one event per microsecond (faster than the log
/// appends, so ids are at least as clustered in time as in production, where
/// UUIDv7 ids follow the clock).
pub(crate) fn sample_event(n: u64) -> Envelope {
    let ts = Timestamp::from_nanos(1_767_225_600_000_000_000 + n * 1_000);
    let id = EventId::new(ts, &SeededIdGen::new(n));
    Envelope {
        event_id: id.as_bytes().to_vec(),
        ts: ts.as_nanos(),
        correlation_id: id.as_bytes().to_vec(),
        session_id: id.as_bytes().to_vec(),
        actor: "agent-07".into(),
        schema_version: SCHEMA_VERSION,
        body: Some(Body::ActionRecorded(schema::ActionRecorded {
            agent_id: "agent-07".into(),
            session_id: id.to_string(),
            task_id: format!("task-{n:05}"),
            kind: schema::ActionKind::Act as i32,
            cost: 17,
            outcome: schema::Outcome::Succeeded as i32,
            detail: "called the search tool".into(),
        })),
        ..Envelope::default()
    }
}

/// The bytes the log stores for an event (with seq, version and hash).
fn stored_bytes(n: u64) -> Vec<u8> {
    let mut event = sample_event(n);
    event.stream = "agent/agent-07".into();
    event.seq = n + 1;
    event.stream_version = n + 1;
    agentlog_log::chain::seal_encoded(&[7; 32], &event).0
}

/// The median of several runs of one measurement (the VM's disk and CPU are
/// shared, and single runs swing by a third).
fn median(runs: impl IntoIterator<Item = anyhow::Result<f64>>) -> anyhow::Result<f64> {
    let mut rates = runs.into_iter().collect::<anyhow::Result<Vec<f64>>>()?;
    rates.sort_by(f64::total_cmp);
    rates.get(rates.len() / 2).copied().context("at least one run")
}

/// Total size of the files under `dir`, recursively.
pub(crate) fn tree_size(dir: &Path) -> anyhow::Result<u64> {
    crate::archive::size_of(dir, &[])
}

/// Raw RocksDB: `batch` events per `WriteBatch`, pre-encoded. With
/// `indexed`, each event also gets the WAL's two index entries (stream
/// version → seq, event id → seq) in their own column families, as the log
/// writes them: the cost of the layout itself, without agentlog's code.
fn raw_rocksdb(dir: &Path, events: u64, batch: usize, sync: bool, indexed: bool) -> anyhow::Result<f64> {
    let mut opts = rocksdb::Options::default();
    opts.create_if_missing(true);
    opts.create_missing_column_families(true);
    let db = rocksdb::DB::open_cf(&opts, dir, ["streams", "ids"])?;
    let (streams, ids) = (db.cf_handle("streams").context("streams")?, db.cf_handle("ids").context("ids")?);
    let events_data: Vec<(Vec<u8>, Vec<u8>)> =
        (0..1024).map(|n| (stored_bytes(n), sample_event(n).event_id.to_vec())).collect();
    let prefixes: Vec<Vec<u8>> = (0..8)
        .map(|p| {
            let stream = format!("agent/p{p}");
            let mut prefix = (stream.len() as u16).to_be_bytes().to_vec();
            prefix.extend_from_slice(stream.as_bytes());
            prefix
        })
        .collect();
    let mut write = rocksdb::WriteOptions::default();
    write.set_sync(sync);
    let started = Instant::now();
    let mut seq = 0u64;
    while seq < events {
        let mut wb = rocksdb::WriteBatch::default();
        for _ in 0..batch {
            seq += 1;
            let (bytes, id) = &events_data[(seq % 1024) as usize];
            wb.put(seq.to_be_bytes(), bytes);
            if indexed {
                // `u16 length ‖ stream ‖ version`, eight streams in turn.
                let mut stream_key = prefixes[(seq % 8) as usize].clone();
                stream_key.extend_from_slice(&(seq / 8 + 1).to_be_bytes());
                wb.put_cf(streams, stream_key, seq.to_be_bytes());
                let mut id = id.clone();
                id[8..].copy_from_slice(&seq.to_be_bytes());
                wb.put_cf(ids, id, seq.to_be_bytes());
            }
        }
        db.write_opt(wb, &write)?;
    }
    Ok(seq as f64 / started.elapsed().as_secs_f64())
}

/// `producers` tasks each append `events / producers` events to their own
/// stream, `per_append` events at a time. The requests are built before the
/// clock starts: this measures the log, not the producers.
async fn embedded_appends(dir: &Path, events: u64, producers: u64, per_append: u64, sync: bool) -> anyhow::Result<f64> {
    let log = Arc::new(EmbeddedLog::open(dir, Options { sync, ..Options::default() })?);
    let appends_per_producer = events / producers / per_append;
    let requests: Vec<Vec<AppendRequest>> = (0..producers)
        .map(|p| {
            let stream = format!("agent/p{p}");
            (0..appends_per_producer)
                .map(|a| AppendRequest {
                    stream: stream.clone(),
                    expected: ExpectedVersion::Any,
                    events: (0..per_append)
                        .map(|e| sample_event((p * appends_per_producer + a) * per_append + e))
                        .collect(),
                    idempotency_key: None,
                })
                .collect()
        })
        .collect();
    let started = Instant::now();
    let tasks: Vec<_> = requests
        .into_iter()
        .map(|requests| {
            let log = log.clone();
            tokio::spawn(async move {
                for request in requests {
                    log.append(request).await?;
                }
                Ok::<_, agentlog_log::Error>(())
            })
        })
        .collect();
    for task in tasks {
        task.await??;
    }
    Ok((appends_per_producer * per_append * producers) as f64 / started.elapsed().as_secs_f64())
}

/// One 223-byte put per synced write, one after another: the disk's fsync
/// latency as RocksDB sees it, which bounds a synced claim's latency.
fn raw_synced_write_latency(dir: &Path, writes: u64) -> anyhow::Result<Latency> {
    let mut opts = rocksdb::Options::default();
    opts.create_if_missing(true);
    let db = rocksdb::DB::open(&opts, dir)?;
    let value = stored_bytes(0);
    let mut write = rocksdb::WriteOptions::default();
    write.set_sync(true);
    let mut histogram = Histogram::<u64>::new(3)?;
    for seq in 0..writes {
        let started = Instant::now();
        db.put_opt(seq.to_be_bytes(), &value, &write)?;
        histogram.record(u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX))?;
    }
    Ok(Latency::from(&histogram))
}

pub(crate) struct Latency {
    pub p50_us: f64,
    pub p99_us: f64,
    pub max_us: f64,
}

impl From<&Histogram<u64>> for Latency {
    fn from(histogram: &Histogram<u64>) -> Self {
        let us = |ns: u64| ns as f64 / 1000.0;
        Latency {
            p50_us: us(histogram.value_at_quantile(0.5)),
            p99_us: us(histogram.value_at_quantile(0.99)),
            max_us: us(histogram.max()),
        }
    }
}

async fn claim_latency(dir: &Path, claims: u64, sync: bool) -> anyhow::Result<Latency> {
    let log = Arc::new(EmbeddedLog::open(dir, Options { sync, ..Options::default() })?);
    let handler = Handler::new(log, Arc::new(HybridClock::system()), Arc::new(RandomIdGen::new()));
    let exec = |command: Command| handler.execute(Request::new(command, "bench"));
    exec(Command::RegisterAgent(RegisterAgent {
        agent_id: "a".into(),
        name: String::new(),
        capabilities: vec!["code".into()],
    }))
    .await?;
    let session = exec(Command::OpenSession(OpenSession {
        agent_id: "a".into(),
        session_id: None,
        heartbeat_timeout_ms: 3_600_000,
    }))
    .await?
    .session_id
    .context("open_session names its session")?;
    for t in 0..claims {
        let command = Command::CreateTask(CreateTask {
            task_id: format!("t{t}"),
            title: String::new(),
            priority: 0,
            required_capabilities: vec!["code".into()],
            dependencies: vec![],
            max_attempts: 3,
        });
        exec(command).await?;
    }
    let mut histogram = Histogram::<u64>::new(3)?;
    for t in 0..claims {
        let command = Command::ClaimTask(ClaimTask {
            task_id: format!("t{t}"),
            agent_id: "a".into(),
            session_id: session.clone(),
            lease_ms: 60_000,
        });
        let started = Instant::now();
        exec(command).await?;
        histogram.record(u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX))?;
    }
    Ok(Latency::from(&histogram))
}

pub async fn run(args: Args) -> anyhow::Result<ExitCode> {
    if agentlog_log::EXPENSIVE_CHECKS {
        eprintln!(
            "warning: this agentlog was built with the test-only expensive checks (as `cargo test` builds it): \
             its figures are not production's; build it with `cargo build --release` to measure"
        );
    }
    if args.distributed {
        crate::distributed::run(
            args.events.min(100_000),
            args.claims.min(5_000),
            args.hot_seconds,
            args.dir.as_deref(),
            args.json,
        )
        .await?;
        return Ok(ExitCode::SUCCESS);
    }
    if args.archive {
        crate::archive::run(args.data.as_deref(), args.events, args.dir.as_deref(), args.json).await?;
        return Ok(ExitCode::SUCCESS);
    }
    if args.scale {
        let cadence = agentlog_projections::Cadence {
            events: args.scale_checkpoint_events.max(1),
            ..agentlog_projections::Cadence::default()
        };
        crate::scale::run(args.scale_tasks, cadence, args.scale_cache_entities, args.dir.as_deref(), args.json).await?;
        return Ok(ExitCode::SUCCESS);
    }
    if args.sandbox {
        crate::sandbox::run(args.sandbox_runs, args.json).await?;
        return Ok(ExitCode::SUCCESS);
    }
    if args.replay {
        crate::replay::run(args.data.as_deref(), args.replay_events, args.dir.as_deref(), args.json).await?;
        return Ok(ExitCode::SUCCESS);
    }
    if args.recovery {
        crate::recovery::run(args.recovery_events, args.dir.as_deref(), args.json).await?;
        return Ok(ExitCode::SUCCESS);
    }
    if args.projections {
        let source = crate::projections::Source { data: args.data.clone(), events: args.events };
        crate::projections::run(source, args.claims, args.dir.as_deref(), args.json).await?;
        return Ok(ExitCode::SUCCESS);
    }
    let root = match &args.dir {
        Some(dir) => tempfile::tempdir_in(dir)?,
        None => tempfile::tempdir()?,
    };
    // Each measurement gets a new store, and the one before is deleted
    // first: its dirty pages are dropped instead of being written back
    // while the next measurement runs.
    let mut runs = 0;
    let mut fresh = move || {
        let _ = std::fs::remove_dir_all(root.path().join(format!("run-{runs}")));
        runs += 1;
        root.path().join(format!("run-{runs}"))
    };
    let say = |what: &str| {
        if !args.json {
            eprintln!("measuring {what} ...");
        }
    };
    let mut figures = serde_json::Map::new();

    say("raw RocksDB WriteBatch (sync off)");
    let repeat = args.repeat.max(1);
    let raw_off = median((0..repeat).map(|_| raw_rocksdb(&fresh(), args.events, RAW_BATCH, false, false)))?;
    let raw_indexed_off = median((0..repeat).map(|_| raw_rocksdb(&fresh(), args.events, RAW_BATCH, false, true)))?;
    say("raw RocksDB synced write latency");
    let fsync = raw_synced_write_latency(&fresh(), args.claims.min(2000))?;
    figures.insert("raw_rocksdb_synced_write_p50_us".into(), json!((fsync.p50_us * 10.0).round() / 10.0));
    figures.insert("raw_rocksdb_synced_write_p99_us".into(), json!((fsync.p99_us * 10.0).round() / 10.0));
    say("raw RocksDB WriteBatch (sync on)");
    let raw_on_1 = median((0..repeat).map(|_| raw_rocksdb(&fresh(), args.synced_events / 10, 1, true, false)))?;
    let raw_on_batch = median((0..repeat).map(|_| raw_rocksdb(&fresh(), args.synced_events, RAW_BATCH, true, false)))?;
    figures.insert("raw_rocksdb_batch64_sync_off_events_per_s".into(), json!(raw_off.round()));
    figures.insert("raw_rocksdb_indexed_batch64_sync_off_events_per_s".into(), json!(raw_indexed_off.round()));
    figures.insert("raw_rocksdb_batch1_sync_on_events_per_s".into(), json!(raw_on_1.round()));
    figures.insert("raw_rocksdb_batch64_sync_on_events_per_s".into(), json!(raw_on_batch.round()));

    let mut table = Vec::new();
    for sync in [false, true] {
        let events = if sync { args.synced_events } else { args.events };
        for producers in [1u64, 8, 64] {
            // A single synced producer waits one fsync per event: fewer events.
            let events = if sync && producers == 1 { events / 10 } else { events };
            say(&format!("embedded append, {producers} producers, sync {}", if sync { "on" } else { "off" }));
            let mut runs = Vec::new();
            for _ in 0..repeat {
                runs.push(embedded_appends(&fresh(), events, producers, 1, sync).await);
            }
            let rate = median(runs)?;
            figures.insert(
                format!("append_p{producers}_sync_{}_events_per_s", if sync { "on" } else { "off" }),
                json!(rate.round()),
            );
            table.push((sync, producers, rate));
        }
    }
    let rate = |sync: bool, producers: u64| table.iter().find(|r| r.0 == sync && r.1 == producers).map_or(0.0, |r| r.2);
    let best_off = [1, 8, 64].iter().map(|p| rate(false, *p)).fold(0.0, f64::max);
    let ratio_off = best_off / raw_off;
    say(&format!("embedded append, 8 producers x {RAW_BATCH} events per append, sync off"));
    let mut runs = Vec::new();
    for _ in 0..repeat {
        runs.push(embedded_appends(&fresh(), args.events, 8, RAW_BATCH as u64, false).await);
    }
    let batched_off = median(runs)?;
    let ratio_batched = batched_off / raw_off;
    let ratio_batched_indexed = batched_off / raw_indexed_off;
    figures.insert(format!("append_p8_batch{RAW_BATCH}_sync_off_events_per_s"), json!(batched_off.round()));
    figures.insert("append_batched_sync_off_vs_raw_ratio".into(), json!((ratio_batched * 1000.0).round() / 1000.0));
    figures.insert(
        "append_batched_sync_off_vs_raw_indexed_ratio".into(),
        json!((ratio_batched_indexed * 1000.0).round() / 1000.0),
    );
    let group_gain = rate(true, 64) / rate(true, 1);
    figures.insert("append_best_sync_off_vs_raw_ratio".into(), json!((ratio_off * 1000.0).round() / 1000.0));
    figures.insert("append_sync_on_p64_vs_p1_ratio".into(), json!((group_gain * 10.0).round() / 10.0));

    let mut latencies = Vec::new();
    for sync in [true, false] {
        say(&format!("claim latency, sync {}", if sync { "on" } else { "off" }));
        let latency = claim_latency(&fresh(), args.claims, sync).await?;
        let tag = if sync { "on" } else { "off" };
        figures.insert(format!("claim_sync_{tag}_p50_us"), json!((latency.p50_us * 10.0).round() / 10.0));
        figures.insert(format!("claim_sync_{tag}_p99_us"), json!((latency.p99_us * 10.0).round() / 10.0));
        latencies.push((sync, latency));
    }

    let sizes = [args.events / 2, args.events * 5, args.events * 25].map(|n| n.max(1));
    say(&format!("idempotency look-ups as the table grows to {} keys", sizes[2]));
    let lookups = idempotency::measure(&fresh(), &sizes, |keys| say(&format!("  ... {keys} keys written"))).await?;
    for row in &lookups {
        figures.insert(format!("idempotency_lookup_unseen_at_{}_keys_ns", row.keys), json!(row.unseen_ns.round()));
        figures.insert(format!("idempotency_lookup_seen_at_{}_keys_ns", row.keys), json!(row.seen_ns.round()));
    }

    if args.json {
        println!("{}", serde_json::to_string_pretty(&serde_json::Value::Object(figures))?);
        return Ok(ExitCode::SUCCESS);
    }
    println!("(throughputs: median of {repeat} runs each)");
    println!("raw RocksDB WriteBatch, same event bytes ({} B/event):", stored_bytes(0).len());
    println!("  batch {RAW_BATCH:>3}, sync off  {:>12.0} events/s", raw_off);
    println!(
        "  batch {RAW_BATCH:>3}, sync off, with the WAL's two index entries per event {:>9.0} events/s",
        raw_indexed_off
    );
    println!("  batch   1, sync on   {:>12.0} events/s", raw_on_1);
    println!("  batch {RAW_BATCH:>3}, sync on   {:>12.0} events/s", raw_on_batch);
    println!("embedded log append (one event per append, own stream per producer):");
    for (sync, producers, rate) in &table {
        println!("  {producers:>3} producers, sync {:<3} {:>12.0} events/s", if *sync { "on" } else { "off" }, rate);
    }
    println!("    8 producers x {RAW_BATCH} events per append, sync off {:>9.0} events/s", batched_off);
    println!("  single-event appends, best sync-off rate / raw batch sync-off: {:.2} (target >= 0.50)", ratio_off);
    println!(
        "  {RAW_BATCH}-event appends, sync off / raw batch sync-off:          {:.2} (target >= 0.50)",
        ratio_batched
    );
    println!(
        "  {RAW_BATCH}-event appends, sync off / raw batch with the same index entries: {:.2}",
        ratio_batched_indexed
    );
    println!("  sync on, 64 producers / 1 producer:      {:.1}x (target >= 20x: group commit)", group_gain);
    println!(
        "raw RocksDB synced write (one put, fsync): p50 {:.1} us   p99 {:.1} us   max {:.1} us",
        fsync.p50_us, fsync.p99_us, fsync.max_us
    );
    println!("claim_task through the handler (load task, session, agent; decide; append):");
    for (sync, l) in &latencies {
        println!(
            "  sync {:<3}  p50 {:>8.1} us   p99 {:>8.1} us   max {:>8.1} us  (target p99 < 1000 us)",
            if *sync { "on" } else { "off" },
            l.p50_us,
            l.p99_us,
            l.max_us,
        );
    }
    println!("idempotency table look-ups (every command checks its key before it is appended), mean:");
    for row in &lookups {
        println!(
            "  {:>10} keys   a key never used {:>8.0} ns   a key used {:>8.0} ns",
            row.keys, row.unseen_ns, row.seen_ns
        );
    }
    Ok(ExitCode::SUCCESS)
}
