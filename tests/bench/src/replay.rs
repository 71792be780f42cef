//! `agentlog bench --replay`: incident replay on a log of about
//! `--replay-events` events (the simulation's, or `--data`): both views
//! folded from the WAL's store as a rebuild reads it, from replay's
//! history of the WAL and from its archive alone, `replay check` over the
//! whole history, and `replay state` at seeded random points — the first
//! pass that takes the snapshots, then jumps from them. Prints figures;
//! asserts nothing.
use std::path::Path;
use std::time::Instant;

use agentlog_archive::{Day, Settings};
use agentlog_log::EventSource;
use agentlog_log::ids::SplitMix64;
use agentlog_log::wal::Store;
use agentlog_projections::{Live, Reputation, WorldModel};
use agentlog_replay::point::Entity;
use agentlog_replay::{History, Snapshots};
use anyhow::Context;
use hdrhistogram::Histogram;
use serde_json::json;

use crate::Latency;

/// Points jumped to after the first pass.
const JUMPS: u64 = 20;

fn fold_rate(history: &dyn EventSource) -> anyhow::Result<f64> {
    let head = history.head()?.last_seq;
    let (mut world, mut reputation) = (Live::<WorldModel>::new(), Live::<Reputation>::new());
    let started = Instant::now();
    agentlog_projections::rebuild(history, &mut [&mut world, &mut reputation], head, &mut |_, _| {})?;
    Ok(head as f64 / started.elapsed().as_secs_f64())
}

pub async fn run(data: Option<&Path>, events: u64, dir: Option<&Path>, json_out: bool) -> anyhow::Result<()> {
    let scratch = match dir {
        Some(dir) => tempfile::tempdir_in(dir)?,
        None => tempfile::tempdir()?,
    };
    let say = |what: &str| {
        if !json_out {
            eprintln!("{what} ...");
        }
    };
    let data = match data {
        Some(data) => data.to_owned(),
        None => {
            let dir = scratch.path().join("log");
            drop(crate::projections::simulate(&dir, events, json_out).await?);
            dir
        }
    };
    let archive = scratch.path().join("archive");
    {
        say("archiving every day");
        let store = Store::open_read_only(&data).context("cannot open the log in --data")?;
        let through = Day::of(agentlog_log::Timestamp::from_nanos(u64::MAX));
        agentlog_archive::run(&store, &archive, through, &Settings::default(), &mut |_| {})?;
    }
    let wal = History::open(Some(&data), None)?;
    let archived = History::open(None, Some(&archive))?;
    let head = wal.head()?.last_seq;

    say("rebuilding from the WAL's store, as `projections rebuild` reads it");
    let rebuild_rate = fold_rate(&Store::open_read_only(&data)?)?;
    say("folding from the WAL");
    let wal_rate = fold_rate(&wal)?;
    say("folding from the archive alone");
    let archive_rate = fold_rate(&archived)?;

    say("replay check");
    let started = Instant::now();
    let report = agentlog_replay::check(&wal, &mut |_, _| {})?;
    let check_s = started.elapsed().as_secs_f64();

    say("replay state: the first pass, taking snapshots");
    let cache = scratch.path().join("cache");
    let snapshots = Snapshots::open(&cache, &wal, agentlog_replay::snapshots::DEFAULT_INTERVAL)?;
    let started = Instant::now();
    let at_head = snapshots.state_at(&wal, head, &mut |_, _| {})?;
    let first_pass_s = started.elapsed().as_secs_f64();
    let task = at_head.world.state.tasks().next().map(|t| t.task_id.clone()).context("the log has no task")?;
    drop(at_head);

    say("replay state: jumps to random points, one task each");
    let mut rng = SplitMix64::new(13);
    let mut histogram = Histogram::<u64>::new(3)?;
    let entity = Entity::Task(task);
    for _ in 0..JUMPS {
        let seq = 1 + rng.below(head);
        let started = Instant::now();
        let state = snapshots.state_at(&wal, seq, &mut |_, _| {})?;
        // The lookup `replay state --task` makes (absent before its creation).
        let _ = state.entity(&entity);
        drop(state);
        histogram.record(u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX))?;
    }
    let jumps = Latency::from(&histogram);

    if json_out {
        println!(
            "{}",
            json!({
                "events": head,
                "rebuild_from_wal_events_per_second": rebuild_rate,
                "fold_from_wal_events_per_second": wal_rate,
                "fold_from_archive_events_per_second": archive_rate,
                "check_seconds": check_s,
                "check_broken": report.breaks.len(),
                "state_first_pass_seconds": first_pass_s,
                "snapshot_every": agentlog_replay::snapshots::DEFAULT_INTERVAL,
                "state_jump_p50_ms": jumps.p50_us / 1000.0,
                "state_jump_max_ms": jumps.max_us / 1000.0,
            })
        );
    } else {
        println!("replay on a log of {head} events (both views folded in memory, one thread folding):");
        println!(
            "  rebuild (the WAL's store)    {rebuild_rate:>12.0} events/s (what `projections rebuild` folds from)"
        );
        println!("  fold from the WAL            {wal_rate:>12.0} events/s (replay's history: every link checked)");
        println!("  fold from the archive alone  {archive_rate:>12.0} events/s");
        println!("  replay check                 {check_s:>12.2} s ({} broken)", report.breaks.len());
        println!(
            "  replay state, first pass     {first_pass_s:>12.2} s (a snapshot every {} events)",
            agentlog_replay::snapshots::DEFAULT_INTERVAL
        );
        println!(
            "  replay state, a jump         {:>9.0} ms p50, {:.0} ms max ({JUMPS} seeded random points, one task looked up)",
            jumps.p50_us / 1000.0,
            jumps.max_us / 1000.0
        );
    }
    Ok(())
}
