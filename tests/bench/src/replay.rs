//! `agentlog bench --replay`: incident replay on a log of about
//! `--replay-events` events (the simulation's, or `--data`): both views
//! folded from the WAL's store as a rebuild reads it, from replay's
//! history of the WAL and from its archive alone (three times each; the
//! median is the figure), the archive fold on one thread and its three
//! stages each alone on one thread, `replay check` over the whole history, and
//! `replay state` at seeded random points — the first pass that takes the
//! snapshots, then jumps from them. Prints figures; asserts nothing.
use std::path::Path;
use std::time::Instant;

use agentlog_archive::{Day, Settings};
use agentlog_log::ids::SplitMix64;
use agentlog_log::read_ahead::{read_ahead, read_in_turn};
use agentlog_log::wal::Store;
use agentlog_log::{Envelope, EventSource};
use agentlog_projections::{Live, Reputation, Runner, WorldModel};
use agentlog_replay::point::Entity;
use agentlog_replay::{History, Snapshots};
use anyhow::Context;
use hdrhistogram::Histogram;
use serde_json::json;

use crate::Latency;

/// Points jumped to after the first pass.
const JUMPS: u64 = 20;

/// Times each fold is run: a shared two-core machine varies by 10–20 %
/// from one run to the next, so the median of three is what is compared.
const FOLDS: usize = 3;

/// How a fold has its pages read: [`agentlog_log::read_ahead::read_ahead`]
/// (on threads of their own, as rebuilds and replay's folds read) or
/// [`agentlog_log::read_ahead::read_in_turn`] (on the fold's one thread).
type Reader = fn(&dyn EventSource, u64, u64, &mut dyn FnMut(agentlog_log::Result<&[Envelope]>) -> bool);

/// The rates of [`FOLDS`] folds of both views from seq 1 of `history`, its
/// pages read by `read`, in the order run.
fn fold_rates(history: &dyn EventSource, read: Reader) -> anyhow::Result<Vec<f64>> {
    let head = history.head()?.last_seq;
    let mut rates = Vec::with_capacity(FOLDS);
    for _ in 0..FOLDS {
        let (mut world, mut reputation) = (Live::<WorldModel>::new(), Live::<Reputation>::new());
        let (mut folded, mut failed) = (0, None);
        let started = Instant::now();
        read(history, 1, head, &mut |page| match page {
            Ok(page) => {
                for event in page {
                    world.apply(event);
                    reputation.apply(event);
                }
                folded += page.len() as u64;
                true
            }
            Err(e) => {
                failed = Some(e);
                false
            }
        });
        let elapsed = started.elapsed().as_secs_f64();
        if let Some(e) = failed {
            return Err(e.into());
        }
        anyhow::ensure!(folded == head, "the fold had {folded} of {head} events");
        rates.push(head as f64 / elapsed);
    }
    Ok(rates)
}

/// Events the stages are measured on, at most: they are held in memory.
const STAGE_EVENTS: u64 = 1_000_000;

/// The three stages of a fold from `history` (its first [`STAGE_EVENTS`]
/// events at most), each alone on this one thread, [`FOLDS`] times:
/// reading each event's stored bytes with its chain link checked; decoding
/// them into envelopes decoded before, as the decoding thread decodes a
/// page into a folded one's; and folding both views over decoded events. A
/// fold runs them on three threads at once ([`agentlog_log::read_ahead`]):
/// on a machine with a core for each, the slowest stage sets its rate; on
/// fewer, they share.
struct Stages {
    read: Vec<f64>,
    decode: Vec<f64>,
    fold: Vec<f64>,
}

fn stage_rates(history: &dyn EventSource) -> anyhow::Result<Stages> {
    let events = history.head()?.last_seq.min(STAGE_EVENTS);
    let rate = |started: Instant| events as f64 / started.elapsed().as_secs_f64();
    let want = usize::try_from(events)?;
    let (mut stored, mut ends) = (Vec::new(), Vec::with_capacity(want));
    let mut stages = Stages { read: Vec::new(), decode: Vec::new(), fold: Vec::new() };
    for _ in 0..FOLDS {
        stored.clear();
        ends.clear();
        let started = Instant::now();
        history.for_each_stored(1, want, &mut |seq, bytes| {
            stored.extend_from_slice(bytes);
            ends.push((seq, stored.len()));
            Ok(())
        })?;
        stages.read.push(rate(started));
        anyhow::ensure!(ends.len() == want, "the history gave {} of its first {want} events", ends.len());
    }
    // Decoded as the fold's decoding thread decodes a page: into envelopes
    // decoded before (the first time into none).
    let mut envelopes = Vec::new();
    agentlog_log::read_ahead::decode_page(&stored, &ends, &mut envelopes)?;
    for _ in 0..FOLDS {
        let started = Instant::now();
        agentlog_log::read_ahead::decode_page(&stored, &ends, &mut envelopes)?;
        stages.decode.push(rate(started));
    }
    for _ in 0..FOLDS {
        let (mut world, mut reputation) = (Live::<WorldModel>::new(), Live::<Reputation>::new());
        let started = Instant::now();
        for event in &envelopes {
            world.apply(event);
            reputation.apply(event);
        }
        stages.fold.push(rate(started));
    }
    Ok(stages)
}

fn median(rates: &[f64]) -> f64 {
    let mut sorted = rates.to_vec();
    sorted.sort_by(f64::total_cmp);
    sorted[sorted.len() / 2]
}

/// "median events/s (run, run, run)".
fn rates_line(rates: &[f64]) -> String {
    let runs: Vec<String> = rates.iter().map(|r| format!("{r:.0}")).collect();
    format!("{:>12.0} events/s median of {}", median(rates), runs.join(", "))
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
    let rebuild_rates = fold_rates(&Store::open_read_only(&data)?, read_ahead)?;
    say("folding from the WAL");
    let wal_rates = fold_rates(&wal, read_ahead)?;
    say("folding from the archive alone");
    let archive_rates = fold_rates(&archived, read_ahead)?;
    say("folding from the archive alone on one thread");
    let one_thread_rates = fold_rates(&archived, read_in_turn)?;
    say("the archive fold's stages, each alone on one thread");
    let stages = stage_rates(&archived)?;

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
                "rebuild_from_wal_events_per_second": median(&rebuild_rates),
                "fold_from_wal_events_per_second": median(&wal_rates),
                "fold_from_archive_events_per_second": median(&archive_rates),
                "rebuild_from_wal_runs": rebuild_rates,
                "fold_from_wal_runs": wal_rates,
                "fold_from_archive_runs": archive_rates,
                "fold_from_archive_one_thread_events_per_second": median(&one_thread_rates),
                "fold_from_archive_one_thread_runs": one_thread_rates,
                "archive_stages_alone_events_per_second": {
                    "read_and_check": median(&stages.read),
                    "decode": median(&stages.decode),
                    "fold": median(&stages.fold),
                },
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
            "  rebuild (the WAL's store)    {} (what `projections rebuild` folds from)",
            rates_line(&rebuild_rates)
        );
        println!("  fold from the WAL            {} (replay's history: every link checked)", rates_line(&wal_rates));
        println!("  fold from the archive alone  {}", rates_line(&archive_rates));
        println!("    the same on one thread     {}", rates_line(&one_thread_rates));
        println!("  its stages, each alone on one thread (the first {STAGE_EVENTS} events at most):");
        println!("    read, chain checked        {}", rates_line(&stages.read));
        println!("    decode, into envelopes     {}", rates_line(&stages.decode));
        println!("    fold (both views)          {}", rates_line(&stages.fold));
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
