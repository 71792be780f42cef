//! `agentlog bench --distributed`: the JetStream side, against a nats-server
//! it starts itself (file storage, a temporary store, a free loopback port).
//! Raw pipelined JetStream publishes are the baseline; then appends through
//! the `Log` trait, commands through the service, claim latency through the
//! service, and how long a second node's mirror takes to have an event while
//! the first appends at about half its peak rate. The commands and the claim
//! latency are measured twice: on a node in open mode, and on one that
//! requires signed commands (each request signed by its principal and
//! verified, its nonce checked), with what signing and verifying cost
//! alone; the claims in alternating rounds of the two modes, so that the
//! machine's drift falls on both; beside them the floor they sit on, their
//! NATS visits alone (`floor.rs`). Then hot aggregates through one node and
//! two (`hot.rs`). Prints; asserts nothing.
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use agentlog_commands::command::{AllocateBudget, ClaimTask, CreateTask, OpenSession, RegisterAgent};
use agentlog_commands::wire::{self, Client, Message};
use agentlog_commands::{Auth, Command as Cmd, Handler, Principal, Request, Role, Signer};
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
    crate::plain_stream(&js, "RAW").await?;
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

/// CPU time a process has used so far (user and system), from /proc.
fn cpu_seconds(pid: u32) -> anyhow::Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // The fields after the command name, which is in parentheses and may
    // hold spaces: the first is field 3 (state); utime and stime are 14, 15.
    let fields: Vec<&str> = stat.rsplit_once(')').context("a /proc stat line")?.1.split_whitespace().collect();
    let ticks = fields[11].parse::<u64>()? + fields[12].parse::<u64>()?;
    // /proc counts in USER_HZ, 100 a second on Linux whatever the kernel's HZ.
    Ok(ticks as f64 / 100.0)
}

/// CPU per operation of this process (producers and the service or the
/// responder, all in it) and of nats-server, in µs, over `work`.
#[derive(Clone, Copy, Debug, Default)]
struct Cpu {
    process_us: f64,
    nats_us: f64,
}

async fn measure_cpu<T>(
    nats_pid: u32,
    operations: u64,
    work: impl Future<Output = anyhow::Result<T>>,
) -> anyhow::Result<(T, Cpu)> {
    measure_cpu_of(std::process::id(), nats_pid, operations, work).await
}

/// [`measure_cpu`] of another agentlog process (a `serve`).
async fn measure_cpu_of<T>(
    agentlog_pid: u32,
    nats_pid: u32,
    operations: u64,
    work: impl Future<Output = anyhow::Result<T>>,
) -> anyhow::Result<(T, Cpu)> {
    let before = (cpu_seconds(agentlog_pid)?, cpu_seconds(nats_pid)?);
    let out = work.await?;
    let after = (cpu_seconds(agentlog_pid)?, cpu_seconds(nats_pid)?);
    let per = |spent: f64| spent * 1e6 / operations.max(1) as f64;
    Ok((out, Cpu { process_us: per(after.0 - before.0), nats_us: per(after.1 - before.1) }))
}

/// `agentlog serve` as operators run it (this binary, open mode, no ticker
/// or archive), so its CPU per command is its own, apart from the
/// producers'. Killed when dropped.
struct ServeProcess {
    child: std::process::Child,
    _data: tempfile::TempDir,
}

impl ServeProcess {
    /// Starts it and waits (at most 60 s) for its own word that it is ready.
    fn start(url: &str) -> anyhow::Result<ServeProcess> {
        use std::io::BufRead as _;
        let data = tempfile::tempdir()?;
        let mut child = std::process::Command::new(std::env::current_exe()?)
            .args(["serve", "--nats", url, "--http", "off", "--data"])
            .arg(data.path())
            .envs([
                ("AGENTLOG_AUTH_MODE", "open"),
                ("AGENTLOG_TICKER_INTERVAL_MS", "0"),
                ("AGENTLOG_ARCHIVE_ENABLED", "false"),
            ])
            .stderr(std::process::Stdio::piped())
            .spawn()
            .context("start agentlog serve")?;
        let stderr = child.stderr.take().context("serve's stderr")?;
        let (ready, is_ready) = std::sync::mpsc::channel();
        // Reads serve's log to its end, so the pipe never fills.
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stderr).lines().map_while(Result::ok) {
                if line.contains(r#""message":"ready""#) {
                    let _ = ready.send(());
                }
            }
        });
        let serve = ServeProcess { child, _data: data };
        is_ready
            .recv_timeout(Duration::from_secs(60))
            .context("agentlog serve did not say it was ready within 60 s")?;
        Ok(serve)
    }

    /// Waits (at most 60 s) until serve's views have folded the log up to
    /// `seq`: ready means its mirror caught up, and its projection worker
    /// would otherwise still be folding the earlier phases' events while
    /// its CPU is measured.
    async fn views_at(&self, url: &str, seq: u64) -> anyhow::Result<()> {
        let nats = async_nats::connect(url).await?;
        let body = serde_json::json!({ "wait_for": seq, "timeout_ms": 30_000, "limit": 1 });
        let ask = async_nats::Request::new()
            .payload(serde_json::to_vec(&body)?.into())
            .timeout(Some(Duration::from_secs(60)));
        let reply =
            nats.send_request("agentlog.q.budgets", ask).await.context("serve's views did not answer within 60 s")?;
        let reply: serde_json::Value = serde_json::from_slice(&reply.payload)?;
        anyhow::ensure!(reply.get("error").is_none(), "serve's views did not reach seq {seq}: {reply}");
        Ok(())
    }
}

impl Drop for ServeProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The least a command path can cost on this machine: a responder in Rust
/// that makes one JetStream publish per request (awaiting its ack) and
/// answers, with 64 producers sending requests the size of a command.
async fn request_publish_baseline(url: &str, requests: u64, producers: u64) -> anyhow::Result<f64> {
    use futures_util::StreamExt as _;
    let responder = async_nats::connect(url).await?;
    let js = async_nats::jetstream::new(responder.clone());
    crate::plain_stream(&js, "BASELINE").await?;
    let mut incoming = responder.subscribe("bench.baseline").await?;
    agentlog_commands::wire::server_has_read(&responder).await?;
    let answering = tokio::spawn(async move {
        while let Some(request) = incoming.next().await {
            let (js, responder) = (js.clone(), responder.clone());
            tokio::spawn(async move {
                let Some(reply) = request.reply else { return };
                let stored = match js.publish("baseline.events", request.payload).await {
                    Ok(ack) => ack.await.is_ok(),
                    Err(_) => false,
                };
                let _ = responder.publish(reply, if stored { "ok" } else { "failed" }.into()).await;
            });
        }
    });
    let body: bytes::Bytes = serde_json::to_vec(&AllocateBudget { budget_id: "bench-0".into(), amount: 1 })?.into();
    let client = async_nats::connect(url).await?;
    let started = Instant::now();
    let tasks: Vec<_> = (0..producers)
        .map(|_| {
            let (client, body) = (client.clone(), body.clone());
            tokio::spawn(async move {
                for _ in 0..requests / producers {
                    let reply = client.request("bench.baseline", body.clone()).await?;
                    anyhow::ensure!(&reply.payload[..] == b"ok", "the responder could not publish");
                }
                Ok(())
            })
        })
        .collect();
    for task in tasks {
        task.await??;
    }
    let rate = (requests / producers * producers) as f64 / started.elapsed().as_secs_f64();
    answering.abort();
    Ok(rate)
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

/// `commands` budget allocations by `producers` producers, each on its own
/// budget `<phase>-<producer>` (new in each phase, so no phase first reads
/// what an earlier one appended to its budgets).
async fn service_commands(client: &Client, phase: &str, commands: u64, producers: u64) -> anyhow::Result<f64> {
    let started = Instant::now();
    let tasks: Vec<_> = (0..producers)
        .map(|p| {
            let (client, budget_id) = (client.clone(), format!("{phase}-{p}"));
            tokio::spawn(async move {
                for _ in 0..commands / producers {
                    let command = Cmd::AllocateBudget(AllocateBudget { budget_id: budget_id.clone(), amount: 1 });
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

/// Who sends what: one client in open mode; in signed mode the admin, an
/// orchestrator and agent `agent`'s principal, each with its own key.
struct Senders {
    admin: Client,
    orchestrator: Client,
    agent: Client,
    /// The agent whose claims are measured.
    agent_id: String,
}

/// Rounds of claims, open and signed alternating, that the claim latency of
/// each mode is taken over: the machine's speed drifts by 10–20 % over a
/// run, and even from one minute to the next, and the figure compared is
/// the difference of the two p99s, so the rounds are short.
const CLAIM_ROUNDS: u64 = 10;

/// `claims` claims by `senders`' agent, one at a time, each on a task
/// just created; the histogram of their round trips (ns).
async fn claim_latency(senders: &Senders, claims: u64) -> anyhow::Result<Histogram<u64>> {
    let Senders { admin, orchestrator, agent, agent_id } = senders;
    let register = RegisterAgent { agent_id: agent_id.clone(), name: String::new(), capabilities: vec![] };
    admin.execute(&register.into(), None).await?;
    let open =
        Cmd::OpenSession(OpenSession { agent_id: agent_id.clone(), session_id: None, heartbeat_timeout_ms: 3_600_000 });
    let session = agent.execute(&open, None).await?.session_id.context("a session id")?;
    let mut histogram = Histogram::<u64>::new(3)?;
    for t in 0..claims {
        let task_id = format!("lt-{agent_id}-{t}");
        let create = Cmd::CreateTask(CreateTask {
            task_id: task_id.clone(),
            title: String::new(),
            priority: 0,
            required_capabilities: vec![],
            dependencies: vec![],
            max_attempts: 3,
        });
        orchestrator.execute(&create, None).await?;
        let claim = Cmd::ClaimTask(ClaimTask {
            task_id,
            agent_id: agent_id.clone(),
            session_id: session.clone(),
            lease_ms: 60_000,
        });
        let started = Instant::now();
        agent.execute(&claim, None).await?;
        histogram.record(u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX))?;
    }
    Ok(histogram)
}

/// Claim latency through a service on `log` (its JetStream stream named
/// `stream`), open and signed, and the floor under it (`floor.rs`), in
/// [`CLAIM_ROUNDS`] alternating rounds of `claims / CLAIM_ROUNDS` each (a
/// fresh service, agent and principals each round): (open, signed, floor).
async fn claim_rounds(
    url: &str,
    log: &Arc<JetStreamLog>,
    stream: &str,
    claims: u64,
) -> anyhow::Result<(Latency, Latency, crate::floor::Floor)> {
    let nats = async_nats::connect(url).await?;
    let mut floor = crate::floor::Probe::start(url, log, stream).await?;
    let (mut open, mut signed) = (Histogram::<u64>::new(3)?, Histogram::<u64>::new(3)?);
    for round in 0..CLAIM_ROUNDS {
        let per_round = claims.div_ceil(CLAIM_ROUNDS);
        let (stop, service) = start_service(url, log, None).await?;
        let client = Client::new(nats.clone(), "bench");
        let senders = Senders {
            admin: client.clone(),
            orchestrator: client.clone(),
            agent: client,
            agent_id: format!("open-{round}"),
        };
        open.add(claim_latency(&senders, per_round).await?)?;
        let _ = stop.send(true);
        let _ = service.await;

        let (admin, auth) = bench_admin();
        let (stop, service) = start_service(url, log, Some(auth)).await?;
        let seed = u8::try_from(10 + 2 * round).expect("a few rounds");
        let senders = signed_senders(&nats, admin, &format!("-{round}"), seed).await?;
        signed.add(claim_latency(&senders, per_round).await?)?;
        let _ = stop.send(true);
        let _ = service.await;

        floor.measure(per_round).await?;
    }
    Ok((Latency::from(&open), Latency::from(&signed), floor.floor()))
}

/// A service on `log` (requiring signatures with `auth`), running until
/// its stop is sent.
async fn start_service(
    url: &str,
    log: &Arc<JetStreamLog>,
    auth: Option<Auth>,
) -> anyhow::Result<(tokio::sync::watch::Sender<bool>, tokio::task::JoinHandle<()>)> {
    let mut handler = Handler::new(log.clone(), Arc::new(HybridClock::system()), Arc::new(RandomIdGen::new()));
    if let Some(auth) = auth {
        handler = handler.with_auth(Arc::new(auth));
    }
    let (stop_tx, stop) = tokio::sync::watch::channel(false);
    let service = wire::Service::bind(async_nats::connect(url).await?, Arc::new(handler)).await?;
    let service = tokio::spawn(async move {
        let _ = service.run(stop).await;
    });
    Ok((stop_tx, service))
}

/// The signed node's configured admin: its key, and the node's `Auth`.
fn bench_admin() -> (Signer, Auth) {
    let admin = signer("bench-admin", 1);
    let auth = Auth::new(
        [Principal { public_key: admin.public_key(), ..Principal::in_process("bench-admin", &[Role::Admin]) }],
        agentlog_commands::auth::DEFAULT_SKEW_SECONDS,
    );
    (admin, auth)
}

/// Node A appends at `rate` events/s; for each, how long until node B's
/// mirror has it (the first figure), and how long A's append took (the
/// second): when A's appends queue too, the machine did not keep up with
/// the rate, and B's lag measures that, not the mirror.
async fn mirror_lag(
    a: &Arc<JetStreamLog>,
    b: &Arc<JetStreamLog>,
    rate: f64,
    seconds: u64,
) -> anyhow::Result<(Latency, Latency)> {
    let (mut lags, mut appends) = (Histogram::<u64>::new(3)?, Histogram::<u64>::new(3)?);
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
            let sent = Instant::now();
            let appended = a.append(request).await?;
            let acked = Instant::now();
            b.caught_up(appended.last_seq).await?;
            Ok::<_, agentlog_log::Error>((acked.elapsed(), acked - sent))
        });
        n += 1;
    }
    let ns = |d: Duration| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
    while let Some(waited) = waits.join_next().await {
        let (lag, append) = waited??;
        lags.record(ns(lag))?;
        appends.record(ns(append))?;
    }
    Ok((Latency::from(&lags), Latency::from(&appends)))
}

fn signer(id: &str, seed: u8) -> Signer {
    Signer::new(id, [seed; 32], Arc::new(HybridClock::system()), Arc::new(RandomIdGen::new()))
}

/// The admin of the signed node's configuration, and the orchestrator and
/// agent principals it registers (ids ending in `suffix`, keys from
/// `seed` and `seed + 1`).
async fn signed_senders(nats: &async_nats::Client, admin: Signer, suffix: &str, seed: u8) -> anyhow::Result<Senders> {
    use crate::hot::register_principal;
    let admin = Client::new(nats.clone(), "bench").with_signer(admin);
    let agent_id = format!("signed{suffix}");
    let orchestrator =
        register_principal(&admin, nats, &format!("bench-orchestrator{suffix}"), [seed; 32], Role::Orchestrator, "")
            .await?;
    let agent =
        register_principal(&admin, nats, &format!("bench-agent{suffix}"), [seed + 1; 32], Role::Agent, &agent_id)
            .await?;
    Ok(Senders { admin, orchestrator, agent, agent_id })
}

/// What signing a request (the producer) and verifying it (the node,
/// against the key it prepared once) cost in process, per command: (sign
/// µs, verify µs), medians of `n`.
fn signature_cost(n: u32) -> anyhow::Result<(f64, f64)> {
    let signer = signer("bench", 4);
    let key = agentlog_commands::auth::PreparedKey::new(&signer.public_key()).context("the bench's key")?;
    let command = Cmd::AllocateBudget(AllocateBudget { budget_id: "bench-0".into(), amount: 1 });
    let request = Request::new(command, "bench");
    let (mut sign, mut verify) = (Histogram::<u64>::new(3)?, Histogram::<u64>::new(3)?);
    for _ in 0..n {
        let started = Instant::now();
        let message = Message::new(&request, Some(&signer));
        sign.record(u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX))?;
        let started = Instant::now();
        let agentlog_commands::Credential::Signed(signed) = message.parse()?.credential else {
            anyhow::bail!("the request parsed as unsigned");
        };
        signed.verify_prepared(&key)?;
        verify.record(u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX))?;
    }
    Ok((sign.value_at_quantile(0.5) as f64 / 1e3, verify.value_at_quantile(0.5) as f64 / 1e3))
}

/// Commands (64 producers) through a service on `log`: in open mode, or
/// (with `auth`) requiring signatures, every request signed by the admin.
async fn through_the_service(
    url: &str,
    log: &Arc<JetStreamLog>,
    auth: Option<(Signer, Auth)>,
    commands: u64,
    nats_pid: u32,
) -> anyhow::Result<(f64, Cpu)> {
    let nats = async_nats::connect(url).await?;
    let phase = if auth.is_some() { "signed" } else { "open" };
    let (client, auth) = match auth {
        Some((admin, auth)) => (Client::new(nats, "bench").with_signer(admin), Some(auth)),
        None => (Client::new(nats, "bench"), None),
    };
    let (stop, service) = start_service(url, log, auth).await?;
    let measured = measure_cpu(nats_pid, commands, service_commands(&client, phase, commands, 64)).await?;
    let _ = stop.send(true);
    let _ = service.await;
    Ok(measured)
}

pub async fn run(
    events: u64,
    claims: u64,
    hot_seconds: u64,
    dir: Option<&std::path::Path>,
    json: bool,
) -> anyhow::Result<()> {
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
    say("commands (64 producers) through the service, open mode");
    say("the request/reply + publish baseline (64 producers)");
    let (baseline, baseline_cpu) =
        measure_cpu(server.pid(), events / 2, request_publish_baseline(&url, events / 2, 64)).await?;
    let (commands, cpu) = through_the_service(&url, &a, None, events / 2, server.pid()).await?;
    say("the same with signed commands");
    let (signed_commands, signed_cpu) =
        through_the_service(&url, &a, Some(bench_admin()), events / 2, server.pid()).await?;
    say("claim latency through the service, open and signed, and its NATS visits alone, in alternating rounds");
    let stream = Options::new(&url, mirrors.0.path()).stream;
    let (claim, signed_claim, floor) = claim_rounds(&url, &a, &stream, claims).await?;
    say("signing and verifying alone");
    let (sign_us, verify_us) = signature_cost(20_000)?;
    say("commands through agentlog serve as its own process (64 producers)");
    let serve = ServeProcess::start(&url)?;
    serve.views_at(&url, a.head().await?.last_seq).await?;
    let client = Client::new(async_nats::connect(&url).await?, "bench");
    let (serve_commands, serve_cpu) =
        measure_cpu_of(serve.child.id(), server.pid(), events / 2, service_commands(&client, "serve", events / 2, 64))
            .await?;
    drop(serve);
    say("one budget and one task, 1, 16 and 64 producers, through one node");
    let mut sessions = Vec::new();
    let hot_commands = (events / 16).max(640);
    let mut hot = crate::hot::run(&url, std::slice::from_ref(&a), &mut sessions, hot_commands, None).await?;
    say("the same through one node with signed commands");
    let (admin, auth) = bench_admin();
    let signed = crate::hot::SignedProducers::register(&url, &a, auth, admin).await?;
    hot.extend(crate::hot::run_signed(&url, std::slice::from_ref(&a), &signed, &sessions, hot_commands).await?);
    // Opened only now, so that the figures above are one node's.
    let b = Arc::new(JetStreamLog::open(Options::new(&url, mirrors.1.path())).await?);
    b.caught_up(a.head().await?.last_seq).await?;
    say(&format!("the same through two nodes, then two nodes on one budget for {hot_seconds} s"));
    let long = Some(Duration::from_secs(hot_seconds));
    let both = [a.clone(), b.clone()];
    hot.extend(crate::hot::run(&url, &both, &mut sessions, hot_commands, long).await?);
    say("the same through two nodes with signed commands");
    hot.extend(crate::hot::run_signed(&url, &both, &signed, &sessions, hot_commands).await?);
    say("a second node's mirror lag at half the peak append rate");
    b.caught_up(a.head().await?.last_seq).await?;
    let (lag, lag_appends) = mirror_lag(&a, &b, appends / 2.0, 5).await?;

    let figures = serde_json::json!({
        "raw_jetstream_pipelined_publish_per_s": raw.round(),
        "log_append_p64_events_per_s": appends.round(),
        "log_append_vs_raw_ratio": (appends / raw * 1000.0).round() / 1000.0,
        "service_commands_p64_per_s": commands.round(),
        "service_vs_raw_ratio": (commands / raw * 1000.0).round() / 1000.0,
        "service_claim_p50_us": (claim.p50_us * 10.0).round() / 10.0,
        "service_claim_p99_us": (claim.p99_us * 10.0).round() / 10.0,
        "claim_floor": floor.json(),
        "baseline_request_publish_p64_per_s": baseline.round(),
        "serve_process_commands_p64_per_s": serve_commands.round(),
        "service_vs_baseline_ratio": (commands / baseline * 1000.0).round() / 1000.0,
        "cpu_us_per_command": {
            "baseline": {"process": baseline_cpu.process_us.round(), "nats_server": baseline_cpu.nats_us.round()},
            "open": {"process": cpu.process_us.round(), "nats_server": cpu.nats_us.round()},
            "signed": {"process": signed_cpu.process_us.round(), "nats_server": signed_cpu.nats_us.round()},
            "serve_process": {"serve": serve_cpu.process_us.round(), "nats_server": serve_cpu.nats_us.round()},
        },
        "signed_service_commands_p64_per_s": signed_commands.round(),
        "signed_service_vs_raw_ratio": (signed_commands / raw * 1000.0).round() / 1000.0,
        "signed_service_claim_p50_us": (signed_claim.p50_us * 10.0).round() / 10.0,
        "signed_service_claim_p99_us": (signed_claim.p99_us * 10.0).round() / 10.0,
        "hot_aggregates": hot.iter().map(crate::hot::Figure::json).collect::<Vec<_>>(),
        "sign_p50_us": (sign_us * 100.0).round() / 100.0,
        "verify_p50_us": (verify_us * 100.0).round() / 100.0,
        "mirror_lag_at_half_peak_p50_us": (lag.p50_us * 10.0).round() / 10.0,
        "mirror_lag_at_half_peak_p99_us": (lag.p99_us * 10.0).round() / 10.0,
        "mirror_lag_at_half_peak_max_us": lag.max_us.round(),
        "appends_during_lag_p50_us": (lag_appends.p50_us * 10.0).round() / 10.0,
        "appends_during_lag_p99_us": (lag_appends.p99_us * 10.0).round() / 10.0,
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
        "  request/reply + one publish, Rust responder, 64 producers {baseline:>10.0} requests/s (the baseline; service {:.2} of it, target >= 0.60)",
        commands / baseline
    );
    for (what, cpu) in [("baseline", baseline_cpu), ("open", cpu), ("signed", signed_cpu)] {
        println!(
            "  CPU per command, {what:<8}: this process (producers and service) {:>6.1} us, nats-server {:>6.1} us",
            cpu.process_us, cpu.nats_us
        );
    }
    println!(
        "  commands through agentlog serve (its own process), 64 producers {serve_commands:>6.0} commands/s ({:.2} of the baseline); CPU per command: serve {:.1} us (target <= 40), nats-server {:.1} us",
        serve_commands / baseline,
        serve_cpu.process_us,
        serve_cpu.nats_us
    );
    println!(
        "  claim through the service: p50 {:.1} us, p99 {:.1} us (targets: p99 < 5000 us; issue 16: p99 <= 1000 us)",
        claim.p50_us, claim.p99_us
    );
    let visit = |l: &Latency| format!("p50 {:.0} us, p99 {:.0} us", l.p50_us, l.p99_us);
    println!(
        "  the floor under it, NATS alone, one at a time: request/reply {}; direct get {}; JetStream publish {}; the three in a row {}",
        visit(&floor.request_reply),
        visit(&floor.direct_get),
        visit(&floor.publish),
        visit(&floor.in_a_row)
    );
    println!(
        "  signed: commands through the service, 64 producers          {signed_commands:>10.0} commands/s ({:.2} of raw, {:.2} of open)",
        signed_commands / raw,
        signed_commands / commands
    );
    println!(
        "  signed: claim through the service: p50 {:.1} us, p99 {:.1} us ({:+.1} us p99 against open; target < +100 us)",
        signed_claim.p50_us,
        signed_claim.p99_us,
        signed_claim.p99_us - claim.p99_us
    );
    println!("  signing a request {sign_us:.1} us, verifying it {verify_us:.1} us (p50, in process)");
    for figure in &hot {
        println!(
            "  one {:<6} {} node(s), {:>2} producers{}, {:>4.0} s: {:>6.0} accepted/s, {:>6.0} decided/s; refused: {}; races lost to the other node: {}",
            figure.aggregate.name(),
            figure.nodes,
            figure.producers,
            if figure.signed { ", signed" } else { "" },
            figure.seconds,
            figure.accepted_per_s,
            figure.decided_per_s,
            figure.refused_text(),
            figure.races_lost
        );
    }
    println!(
        "  second node's mirror lag at {:.0} appends/s: p50 {:.1} us, p99 {:.1} us, max {:.0} us (target p99 < 100000 us); \
         node A's appends meanwhile: p50 {:.1} us, p99 {:.1} us (when these queue too, the machine did not keep up with the rate)",
        appends / 2.0,
        lag.p50_us,
        lag.p99_us,
        lag.max_us,
        lag_appends.p50_us,
        lag_appends.p99_us
    );
    Ok(())
}
