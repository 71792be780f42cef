//! The `agentlog` command line. Thin: it parses flags, opens what the
//! command needs, calls the library crates and prints the result. It is the
//! one place that picks the production clock and id source, and the one
//! crate that may time things with the wall clock (progress bars).
#![allow(clippy::disallowed_methods)]

/// What every command prints goes through this `println!`, which shadows
/// std's: when stdout's reader stops early (`agentlog verify | head`), the
/// rest of the output is dropped and the command finishes its work and
/// exits as it would have, instead of panicking on the closed pipe.
macro_rules! println {
    () => {
        $crate::stdout_line(format_args!(""))
    };
    ($($arg:tt)*) => {
        $crate::stdout_line(format_args!($($arg)*))
    };
}

mod archive;
mod backup;
mod cmd;
mod demo;
mod inspect;
mod keys;
mod mirror;
mod principals;
mod progress;
mod projections;
mod query;
mod replay;
mod sandbox;
mod serve;
mod verify;

use std::path::PathBuf;
use std::process::ExitCode;

/// Folding, decoding and the command path allocate many small strings:
/// mimalloc serves them about twice as fast as glibc's malloc
/// (`agentlog bench --projections`).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "agentlog", version, about = "The event-sourced ledger a multi-agent system runs on")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Args, Clone)]
struct DataArg {
    /// The data directory (the embedded RocksDB log).
    #[arg(long, env = "AGENTLOG_DATA", default_value = "agentlog-data")]
    data: PathBuf,
}

#[derive(Subcommand)]
enum Command {
    /// Run a seeded multi-agent workload on the embedded log and summarise it.
    Demo(demo::Args),
    /// Print events from the log.
    Tail(inspect::TailArgs),
    /// Send one command: `agentlog cmd claim_task '{"task_id":"t1",...}'`.
    Cmd(cmd::Args),
    /// Make an ed25519 key for signing commands (`cmd --key`), and print
    /// the public key an admin registers.
    Keygen(keys::Args),
    /// Count what the log holds.
    Stats(inspect::StatsArgs),
    /// Check sequence continuity, stream versions and the hash chain; with
    /// --deep also every stored checksum, the projections and the archive.
    Verify(verify::VerifyArgs),
    /// Measure append throughput and claim latency against raw RocksDB.
    Bench(agentlog_bench::Args),
    /// Run a distributed node: mirror the JetStream stream, answer commands
    /// over NATS, serve /health, /ready and /metrics.
    Serve(serve::Args),
    /// The projections' checkpoints: status, rebuild, verify.
    Projections(projections::Args),
    /// Ask the world model and reputation views.
    Query(query::Args),
    /// The Parquet archive: run (archive closed days), verify, prune, scan.
    Archive(archive::Args),
    /// Back up a data directory (the log and the projections) while it is
    /// written; through the running node when one holds it.
    Backup(backup::BackupArgs),
    /// Restore a backup into a new data directory and verify it.
    Restore(backup::RestoreArgs),
    /// A distributed node's mirror: rebuild it from the JetStream stream.
    Mirror(mirror::Args),
    /// Incident replay over the archive and the WAL: the events, and the
    /// views as they were at any point. Never writes to what it reads.
    Replay(replay::Args),
    /// WASM modules: register, run (an action module, for an agent), bind
    /// and unbind (a policy module, to a command type), list, inspect.
    Sandbox(sandbox::Args),
}

/// Set once stdout's reader has gone: nothing more is written.
static STDOUT_CLOSED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// One line to stdout ([`println!`]); a closed pipe drops this line and
/// every later one.
fn stdout_line(line: std::fmt::Arguments<'_>) {
    use std::io::Write;
    use std::sync::atomic::Ordering;
    if STDOUT_CLOSED.load(Ordering::Relaxed) {
        return;
    }
    let mut out = std::io::stdout().lock();
    if let Err(e) = out.write_fmt(format_args!("{line}\n")) {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            STDOUT_CLOSED.store(true, Ordering::Relaxed);
        } else {
            eprintln!("error: cannot write to stdout: {e}");
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Leave a core to the log's writer and syncer threads: on a small
    // machine they are the bottleneck, and async workers competing with them
    // halve append throughput (docs/BENCHMARKS.md).
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    let workers = std::env::var("TOKIO_WORKER_THREADS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| cores.saturating_sub(1).max(1));
    let runtime = match tokio::runtime::Builder::new_multi_thread().worker_threads(workers).enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Demo(args) => demo::run(args).await,
            Command::Tail(args) => match args.nats_url() {
                Some(url) => inspect::tail_nats(args, &url).await,
                None => inspect::tail(args),
            },
            Command::Cmd(args) => cmd::run(args).await,
            Command::Keygen(args) => keys::keygen(args),
            Command::Stats(args) => inspect::stats(args),
            Command::Verify(args) => verify::verify(args),
            Command::Bench(args) => agentlog_bench::run(args).await,
            Command::Serve(args) => serve::run(args).await,
            Command::Projections(args) => projections::run(args),
            Command::Query(args) => query::run(args).await,
            Command::Archive(args) => archive::run(args),
            Command::Backup(args) => backup::backup(args).await,
            Command::Restore(args) => backup::restore(args),
            Command::Mirror(args) => mirror::run(args).await,
            Command::Replay(args) => replay::run(args).await,
            Command::Sandbox(args) => sandbox::run(args).await,
        }
    });
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
