//! `agentlog bench --distributed`: the JetStream side, against a nats-server
//! it starts itself (file storage, a temporary store, a free loopback port).
//! Raw pipelined JetStream publishes are the baseline; then appends through
//! the `Log` trait, commands through the service, claim latency through the
//! service, and how long a second node's mirror takes to have an event while
//! the first appends at about half its peak rate. Prints; asserts nothing.
use std::sync::Arc;
use std::time::{Duration, Instant};

use agentlog_commands::command::{AllocateBudget, ClaimTask, CreateTask, OpenSession, RegisterAgent};
use agentlog_commands::wire::{self, Client};
use agentlog_commands::{Command as Cmd, Handler};
use agentlog_log::jetstream::{JetStreamLog, Options};
use agentlog_log::{AppendRequest, ExpectedVersion, HybridClock, Log, RandomIdGen};
use agentlog_tests::nats::NatsServer;
use anyhow::Context;
use hdrhistogram::Histogram;

use crate::{Latency, sample_event};

/// Pipelined publishes of the same event bytes to a plain stream.
async fn raw_publish(url: &str, events: u64) -> anyhow::Result<f64> {
    let client = async_nats::connect(url).await?;
    let js = async_nats::jetstream::ContextBuilder::new()
        .max_ack_inflight(4096)
        .backpressure_on_inflight(true)
        .build(client);
    js.create_stream(async_nats::jetstream::stream::Config {
        name: "RAW".into(),
        subjects: vec!["raw.>".into()],
        ..Default::default()
    })
    .await?;
    let payload: bytes::Bytes = agentlog_log::codec::encode(&sample_event(1)).into();
    let started = Instant::now();
    let mut acks = std::collections::VecDeque::new();
    for i in 0..events {
        acks.push_back(js.publish(format!("raw.s{}", i % 64), payload.clone()).await?);
        if acks.len() >= 4096 {
            acks.pop_front().expect("an ack").await?;
        }
    }
    for ack in acks {
        ack.await?;
    }
    Ok(events as f64 / started.elapsed().as_secs_f64())
}

async fn log_appends(log: &Arc<JetStreamLog>, events: u64, producers: u64) -> anyhow::Result<f64> {
    let started = Instant::now();
    let tasks: Vec<_> = (0..producers)
        .map(|p| {
            let log = log.clone();
            tokio::spawn(async move {
                for i in 0..events / producers {
                    let request = AppendRequest {
                        stream: format!("agent/bench{p}"),
                        expected: ExpectedVersion::Any,
                        events: vec![sample_event(p * 1_000_000 + i)],
                        idempotency_key: None,
                    };
                    log.append(request).await?;
                }
                Ok::<_, agentlog_log::Error>(())
            })
        })
        .collect();
    for task in tasks {
        task.await??;
    }
    Ok((events / producers * producers) as f64 / started.elapsed().as_secs_f64())
}

async fn service_commands(client: &Client, commands: u64, producers: u64) -> anyhow::Result<f64> {
    let started = Instant::now();
    let tasks: Vec<_> = (0..producers)
        .map(|p| {
            let client = client.clone();
            tokio::spawn(async move {
                for _ in 0..commands / producers {
                    let command = Cmd::AllocateBudget(AllocateBudget { budget_id: format!("bench-{p}"), amount: 1 });
                    client.execute(&command, None).await?;
                }
                Ok::<_, agentlog_commands::Rejection>(())
            })
        })
        .collect();
    for task in tasks {
        task.await??;
    }
    Ok((commands / producers * producers) as f64 / started.elapsed().as_secs_f64())
}

async fn claim_latency(client: &Client, claims: u64) -> anyhow::Result<Latency> {
    client
        .execute(
            &Cmd::RegisterAgent(RegisterAgent { agent_id: "a".into(), name: String::new(), capabilities: vec![] }),
            None,
        )
        .await?;
    let open =
        Cmd::OpenSession(OpenSession { agent_id: "a".into(), session_id: None, heartbeat_timeout_ms: 3_600_000 });
    let session = client.execute(&open, None).await?.session_id.context("a session id")?;
    let mut histogram = Histogram::<u64>::new(3)?;
    for t in 0..claims {
        let task_id = format!("lt{t}");
        let create = Cmd::CreateTask(CreateTask {
            task_id: task_id.clone(),
            title: String::new(),
            priority: 0,
            required_capabilities: vec![],
            dependencies: vec![],
            max_attempts: 3,
        });
        client.execute(&create, None).await?;
        let claim =
            Cmd::ClaimTask(ClaimTask { task_id, agent_id: "a".into(), session_id: session.clone(), lease_ms: 60_000 });
        let started = Instant::now();
        client.execute(&claim, None).await?;
        histogram.record(u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX))?;
    }
    Ok(Latency::from(&histogram))
}

/// Node A appends at `rate` events/s; for each, how long until node B's
/// mirror has it.
async fn mirror_lag(a: &Arc<JetStreamLog>, b: &Arc<JetStreamLog>, rate: f64, seconds: u64) -> anyhow::Result<Latency> {
    let mut histogram = Histogram::<u64>::new(3)?;
    let interval = Duration::from_secs_f64(1.0 / rate.max(1.0));
    let started = Instant::now();
    let mut waits = tokio::task::JoinSet::new();
    let mut n = 0u64;
    while started.elapsed() < Duration::from_secs(seconds) {
        let due = started + interval.mul_f64(n as f64);
        tokio::time::sleep_until(due.into()).await;
        let (a, b) = (a.clone(), b.clone());
        waits.spawn(async move {
            let request = AppendRequest {
                stream: format!("agent/lag{n}"),
                expected: ExpectedVersion::Any,
                events: vec![sample_event(n)],
                idempotency_key: None,
            };
            let appended = a.append(request).await?;
            let acked = Instant::now();
            b.caught_up(appended.last_seq).await?;
            Ok::<_, agentlog_log::Error>(acked.elapsed())
        });
        n += 1;
    }
    while let Some(lag) = waits.join_next().await {
        histogram.record(u64::try_from(lag??.as_nanos()).unwrap_or(u64::MAX))?;
    }
    Ok(Latency::from(&histogram))
}

pub async fn run(events: u64, claims: u64, dir: Option<&std::path::Path>, json: bool) -> anyhow::Result<()> {
    let say = |what: &str| {
        if !json {
            eprintln!("measuring {what} ...");
        }
    };
    let server = NatsServer::start_in(dir, "");
    let url = server.url();
    let mirrors = (tempfile::tempdir()?, tempfile::tempdir()?);
    say("raw pipelined JetStream publish");
    let raw = raw_publish(&url, events).await?;
    let a = Arc::new(JetStreamLog::open(Options::new(&url, mirrors.0.path())).await?);
    say("appends through the Log trait (64 producers)");
    let appends = log_appends(&a, events, 64).await?;
    let handler = Arc::new(Handler::new(a.clone(), Arc::new(HybridClock::system()), Arc::new(RandomIdGen::new())));
    let (stop_tx, stop) = tokio::sync::watch::channel(false);
    let service = wire::Service::bind(async_nats::connect(&url).await?, handler).await?;
    let service = tokio::spawn(service.run(stop));
    let client = Client::new(async_nats::connect(&url).await?, "bench");
    say("commands through the service (64 producers)");
    let commands = service_commands(&client, events / 2, 64).await?;
    say("claim latency through the service");
    let claim = claim_latency(&client, claims).await?;
    say("a second node's mirror lag at half the peak append rate");
    // Opened only now, so that the throughput figures are one node's.
    let b = Arc::new(JetStreamLog::open(Options::new(&url, mirrors.1.path())).await?);
    b.caught_up(a.head().await?.last_seq).await?;
    let lag = mirror_lag(&a, &b, appends / 2.0, 5).await?;
    let _ = stop_tx.send(true);
    let _ = service.await;

    let figures = serde_json::json!({
        "raw_jetstream_pipelined_publish_per_s": raw.round(),
        "log_append_p64_events_per_s": appends.round(),
        "log_append_vs_raw_ratio": (appends / raw * 1000.0).round() / 1000.0,
        "service_commands_p64_per_s": commands.round(),
        "service_vs_raw_ratio": (commands / raw * 1000.0).round() / 1000.0,
        "service_claim_p50_us": (claim.p50_us * 10.0).round() / 10.0,
        "service_claim_p99_us": (claim.p99_us * 10.0).round() / 10.0,
        "mirror_lag_at_half_peak_p50_us": (lag.p50_us * 10.0).round() / 10.0,
        "mirror_lag_at_half_peak_p99_us": (lag.p99_us * 10.0).round() / 10.0,
    });
    if json {
        println!("{}", serde_json::to_string_pretty(&figures)?);
        return Ok(());
    }
    println!("distributed mode, one local nats-server (file storage):");
    println!("  raw async-nats JetStream publish, pipelined (4096 in flight) {raw:>10.0} msgs/s");
    println!(
        "  appends through the Log trait, 64 producers                 {appends:>10.0} events/s  ({:.2} of raw; target >= 0.70)",
        appends / raw
    );
    println!(
        "  commands through the service, 64 producers                  {commands:>10.0} commands/s ({:.2} of raw; target >= 0.40)",
        commands / raw
    );
    println!(
        "  claim through the service: p50 {:.1} us, p99 {:.1} us (target p99 < 5000 us)",
        claim.p50_us, claim.p99_us
    );
    println!(
        "  second node's mirror lag at {:.0} appends/s: p50 {:.1} us, p99 {:.1} us (target p99 < 100000 us)",
        appends / 2.0,
        lag.p50_us,
        lag.p99_us
    );
    Ok(())
}
