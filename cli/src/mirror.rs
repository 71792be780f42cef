//! `agentlog mirror rebuild`: recreates a node's mirror from the JetStream
//! stream (agentlog_node::rebuild), then verifies it.
use std::process::ExitCode;
use std::time::Instant;

use agentlog_log::chain::to_hex;
use agentlog_log::wal::{self, Store};
use anyhow::Context;

use crate::progress;
use crate::serve::NodeArgs;

#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: Sub,
}

#[derive(clap::Subcommand)]
enum Sub {
    /// Recreate the mirror in a new --data directory from the stream, for
    /// a node whose mirror was lost or damaged (stop the node first).
    Rebuild {
        /// As `serve` takes them; `--data` is the new directory (it must not
        /// hold a store).
        #[command(flatten)]
        node: NodeArgs,
        #[arg(long)]
        json: bool,
    },
}

pub async fn run(args: Args) -> anyhow::Result<ExitCode> {
    let Sub::Rebuild { node, json } = args.command;
    let config = node.load()?;
    let started = Instant::now();
    let bar = progress::bar(0, "mirroring", json);
    let head = agentlog_node::rebuild::rebuild_mirror(&config, &mut |done, total| {
        bar.set_length(total);
        bar.set_position(done);
    })
    .await
    .with_context(|| format!("rebuilding the mirror in {}", config.data.display()))?;
    bar.finish_and_clear();
    let mirrored = started.elapsed().as_secs_f64();
    let store = Store::open_read_only(&config.data)?;
    let report = wal::verify(&store, &mut |_, _| {})?;
    let seconds = started.elapsed().as_secs_f64();
    if json {
        let out = serde_json::json!({
            "data": config.data,
            "stream": config.stream.name,
            "last_seq": head.last_seq,
            "head_hash": to_hex(&head.hash),
            "events_verified": report.events,
            "mirror_seconds": mirrored,
            "seconds": seconds,
        });
        println!("{out}");
    } else {
        println!(
            "rebuilt the mirror in {} from the stream {} in {mirrored:.2} s: {} events, verified (seqs continuous, hash chain intact up to head {}) in {seconds:.2} s in all",
            config.data.display(),
            config.stream.name,
            head.last_seq,
            to_hex(&head.hash)
        );
        println!("  start the node on it: its projections are rebuilt from the mirror as it starts");
    }
    Ok(ExitCode::SUCCESS)
}
