//! `agentlog projections status|rebuild|verify`: the views' checkpoints in
//! `<data>/projections`, against the log in `<data>` (the embedded log or a
//! node's mirror).
use std::process::ExitCode;

use agentlog_log::chain::to_hex;
use agentlog_log::wal::Store;
use agentlog_projections::reputation::Reputation;
use agentlog_projections::views::NAMES;
use agentlog_projections::{Checkpoint, Live, Projection, ProjectionStore, Runner, WorldModel, store};
use anyhow::bail;

use crate::{DataArg, progress};

#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: Sub,
}

#[derive(clap::Subcommand)]
enum Sub {
    /// Each projection's position, lag behind the log, and state hash.
    Status {
        #[command(flatten)]
        data: DataArg,
        #[arg(long)]
        json: bool,
    },
    /// Fold the log from sequence 1 into one projection (or all) and save it.
    Rebuild {
        /// world or reputation; all when absent.
        name: Option<String>,
        #[command(flatten)]
        data: DataArg,
        /// Settled entities each family keeps in memory while rebuilding
        /// (a node's `projections.cache-entities`). More is faster on a
        /// large world (fewer reads of entities not in memory, fewer saves
        /// on the way) and costs memory in proportion.
        #[arg(long, default_value_t = store::DEFAULT_CACHE_ENTITIES)]
        cache_entities: usize,
    },
    /// Rebuild each projection in memory up to its checkpoint and compare the
    /// state hash; exits non-zero naming the first that differs.
    Verify {
        #[command(flatten)]
        data: DataArg,
        #[arg(long)]
        json: bool,
    },
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    match args.command {
        Sub::Status { data, json } => status(&data, json),
        Sub::Rebuild { name, data, cache_entities } => rebuild(&data, name.as_deref(), cache_entities),
        Sub::Verify { data, json } => verify(&data, json),
    }
}

fn checkpoints(data: &DataArg) -> anyhow::Result<Vec<(&'static str, Option<Checkpoint>)>> {
    let store = ProjectionStore::open_read_only(&store::dir(&data.data))?;
    NAMES.iter().map(|name| Ok((*name, store.as_ref().map(|s| s.checkpoint(name)).transpose()?.flatten()))).collect()
}

fn status(data: &DataArg, json: bool) -> anyhow::Result<ExitCode> {
    let head = Store::open_read_only(&data.data)?.head()?.last_seq;
    let rows: Vec<serde_json::Value> = checkpoints(data)?
        .into_iter()
        .map(|(name, checkpoint)| {
            let checkpoint = checkpoint.unwrap_or_default();
            serde_json::json!({
                "name": name,
                "position": checkpoint.position,
                "lag": head.saturating_sub(checkpoint.position),
                "state_hash": checkpoint.state_hash,
            })
        })
        .collect();
    if json {
        println!("{}", serde_json::json!({ "log_head": head, "projections": rows }));
        return Ok(ExitCode::SUCCESS);
    }
    println!("log head: seq {head}");
    println!("  {:<12} {:>10} {:>8}  state hash", "projection", "position", "lag");
    for row in rows {
        println!(
            "  {:<12} {:>10} {:>8}  {}",
            row["name"].as_str().unwrap_or_default(),
            row["position"].as_u64().unwrap_or_default(),
            row["lag"].as_u64().unwrap_or_default(),
            row["state_hash"].as_str().filter(|h| !h.is_empty()).unwrap_or("(never saved)")
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn rebuild(data: &DataArg, name: Option<&str>, cache_entities: usize) -> anyhow::Result<ExitCode> {
    if let Some(name) = name
        && !NAMES.contains(&name)
    {
        bail!(agentlog_projections::Error::UnknownProjection { name: name.to_owned(), known: NAMES.join(", ") });
    }
    let wal = Store::open_read_only(&data.data)?;
    let head = wal.head()?.last_seq;
    let store = ProjectionStore::open(&store::dir(&data.data))?.with_cache_entities(cache_entities);
    let mut world: Live<WorldModel> = store.load().unwrap_or_else(|_| Live::new());
    let mut reputation: Live<Reputation> = store.load().unwrap_or_else(|_| Live::new());
    let mut runners: Vec<&mut dyn Runner> = Vec::new();
    if name.is_none_or(|n| n == "world") {
        runners.push(&mut world);
    }
    if name.is_none_or(|n| n == "reputation") {
        runners.push(&mut reputation);
    }
    let names: Vec<&str> = runners.iter().map(|r| r.name()).collect();
    let bar = progress::bar(head, "rebuilding", false);
    let started = std::time::Instant::now();
    store.rebuild(&wal, &mut runners, head, &mut |done| bar.set_position(done))?;
    bar.finish_and_clear();
    let elapsed = started.elapsed().as_secs_f64();
    println!(
        "rebuilt {} from seq 1 to {head} in {elapsed:.2} s ({:.0} events/s)",
        names.join(" and "),
        head as f64 / elapsed.max(1e-9)
    );
    Ok(ExitCode::SUCCESS)
}

/// One projection's checkpoint against the log and against the store:
/// rebuilt in memory from seq 1 to the checkpoint's position, and every
/// entity the store holds of it summed, each hash compared with the
/// checkpoint's.
pub(crate) struct Compared {
    pub name: &'static str,
    /// `None` when the projection was never saved: nothing to compare.
    pub checkpoint: Option<Checkpoint>,
    pub rebuilt_hash: String,
    /// The hash of what the store holds, from every stored entity.
    pub stored_hash: String,
}

impl Compared {
    pub fn ok(&self) -> bool {
        self.checkpoint.as_ref().is_none_or(|c| c.state_hash == self.rebuilt_hash && c.state_hash == self.stored_hash)
    }

    pub fn describe(&self) -> String {
        match &self.checkpoint {
            None => format!("{}: never saved, nothing to compare", self.name),
            Some(c) if self.ok() => format!("{}: ok at seq {}, state hash {}", self.name, c.position, c.state_hash),
            Some(c) => format!(
                "{}: MISMATCH at seq {}: checkpoint {} rebuilt {} stored {}",
                self.name, c.position, c.state_hash, self.rebuilt_hash, self.stored_hash
            ),
        }
    }

    pub fn json(&self) -> serde_json::Value {
        match &self.checkpoint {
            None => serde_json::json!({ "name": self.name, "ok": true, "checked": false }),
            Some(c) => serde_json::json!({
                "name": self.name,
                "ok": self.ok(),
                "checked": true,
                "position": c.position,
                "live_state_hash": c.state_hash,
                "rebuilt_state_hash": self.rebuilt_hash,
                "stored_state_hash": self.stored_hash,
            }),
        }
    }
}

/// Compares every saved projection in `store` with the log in `wal`.
pub(crate) fn compare(wal: &Store, store: Option<&ProjectionStore>) -> anyhow::Result<Vec<Compared>> {
    let mut compared = Vec::new();
    for name in NAMES {
        let checkpoint = store.map(|s| s.checkpoint(name)).transpose()?.flatten();
        let (mut rebuilt_hash, mut stored_hash) = (String::new(), String::new());
        if let (Some(checkpoint), Some(store)) = (&checkpoint, store) {
            stored_hash = if name == "world" {
                stored_hash_of::<WorldModel>(store)?
            } else {
                stored_hash_of::<Reputation>(store)?
            };
            let mut world: Live<WorldModel> = Live::new();
            let mut reputation: Live<Reputation> = Live::new();
            let runner: &mut dyn Runner = if name == "world" { &mut world } else { &mut reputation };
            let reached = agentlog_projections::rebuild(wal, &mut [&mut *runner], checkpoint.position, &mut |_, _| {})?;
            rebuilt_hash = if reached == checkpoint.position {
                to_hex(&runner.state_hash())
            } else {
                format!("(the log ends at seq {reached})")
            };
        }
        compared.push(Compared { name, checkpoint, rebuilt_hash, stored_hash });
    }
    Ok(compared)
}

/// The state hash of what the store holds of `P`, from every stored entity
/// (a load trusts its checkpoint's per-family sums; this does not).
fn stored_hash_of<P: Projection>(store: &ProjectionStore) -> anyhow::Result<String> {
    let live: Live<P> = store.load()?;
    Ok(to_hex(&agentlog_projections::state_hash_from_scratch(&live.state)))
}

fn verify(data: &DataArg, json: bool) -> anyhow::Result<ExitCode> {
    let wal = Store::open_read_only(&data.data)?;
    let store = ProjectionStore::open_read_only(&store::dir(&data.data))?;
    let compared = compare(&wal, store.as_ref())?;
    let first_bad = compared.iter().find(|c| !c.ok()).map(|c| c.name);
    if json {
        let results: Vec<serde_json::Value> = compared.iter().map(Compared::json).collect();
        println!(
            "{}",
            serde_json::json!({ "ok": first_bad.is_none(), "first_mismatch": first_bad, "projections": results })
        );
    } else {
        for c in &compared {
            println!("{}", c.describe());
        }
    }
    Ok(if first_bad.is_some() { ExitCode::FAILURE } else { ExitCode::SUCCESS })
}
