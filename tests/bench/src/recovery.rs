//! `agentlog bench --recovery`: what disaster recovery costs as the log
//! grows. One embedded log is grown to a quarter, a half and all of
//! `--events` (default 1,000,000) by 64 producers; at each size, while the
//! log stays open as a running node's would: a full backup, an incremental
//! one after 1% more events, a restore into a new directory (which
//! verifies the whole chain), and the deep check (`verify --deep`'s read of
//! every key with checksums, then the chain). The projection store is not in
//! these figures (it is small next to the log; `agentlog bench
//! --projections` measures rebuilding it). Then, on its own nats-server, a
//! distributed node's mirror rebuilt from the JetStream stream
//! (`agentlog mirror rebuild`) at the same three sizes.
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use agentlog_log::jetstream::JetStreamLog;
use agentlog_log::wal::verify;
use agentlog_log::{AppendRequest, EmbeddedLog, ExpectedVersion, Log, Options};
use agentlog_node::backup;
use agentlog_tests::nats::NatsServer;
use serde_json::json;

use crate::sample_event;

const PRODUCERS: u64 = 64;
const PER_APPEND: u64 = 4;

/// Appends events `from..to` (sample events, 64 producers on their own
/// streams, `per_append` events an append).
async fn grow<L: Log + 'static>(log: &Arc<L>, from: u64, to: u64, per_append: u64) -> anyhow::Result<()> {
    let share = (to - from) / PRODUCERS;
    let tasks: Vec<_> = (0..PRODUCERS)
        .map(|p| {
            let log = log.clone();
            // The last producer also takes what does not divide evenly.
            let end = if p + 1 == PRODUCERS { to } else { from + (p + 1) * share };
            tokio::spawn(async move {
                let mut n = from + p * share;
                while n < end {
                    let count = per_append.min(end - n);
                    let request = AppendRequest {
                        stream: format!("agent/p{p}"),
                        expected: ExpectedVersion::Any,
                        events: (n..n + count).map(sample_event).collect(),
                        idempotency_key: None,
                    };
                    log.append(request).await?;
                    n += count;
                }
                Ok::<_, agentlog_log::Error>(())
            })
        })
        .collect();
    for task in tasks {
        task.await??;
    }
    Ok(())
}

fn size_of(dir: &Path) -> anyhow::Result<u64> {
    let mut total = 0;
    for entry in std::fs::read_dir(dir)? {
        let meta = entry?.metadata()?;
        total += if meta.is_dir() { 0 } else { meta.len() };
    }
    Ok(total)
}

fn seconds<T>(work: impl FnOnce() -> anyhow::Result<T>) -> anyhow::Result<(f64, T)> {
    let started = Instant::now();
    let out = work()?;
    Ok((started.elapsed().as_secs_f64(), out))
}

pub async fn run(events: u64, dir: Option<&Path>, json_out: bool) -> anyhow::Result<()> {
    let root = match dir {
        Some(dir) => tempfile::tempdir_in(dir)?,
        None => tempfile::tempdir()?,
    };
    let data = root.path().join("data");
    let log = Arc::new(EmbeddedLog::open(&data, Options { sync: false, ..Options::default() })?);
    if !json_out {
        println!(
            "disaster recovery as the log grows (embedded log, sync off while growing; backups fsync their files)"
        );
        println!(
            "  {:>9} {:>9} | {:>8} {:>9} | {:>8} {:>9} | {:>8} | {:>8}",
            "events", "WAL MB", "backup s", "backup MB", "incr. s", "incr. MB", "restore s", "deep s"
        );
    }
    let mut rows = Vec::new();
    let mut have = 0u64;
    for (step, size) in [events / 4, events / 2, events].into_iter().enumerate() {
        grow(&log, have, size, PER_APPEND).await?;
        have = size;
        log.sync()?;
        let head = log.store().head()?.last_seq;
        let wal_bytes = size_of(&data)?;
        let backups = root.path().join(format!("backups-{step}"));
        let store = log.store().clone();
        let (full_s, full) = seconds(|| Ok(backup::take(&store, None, &backups, None)?))?;
        let full_bytes = crate::tree_size(&backups)?;

        // 1% more events, then the next backup into the same directory.
        grow(&log, have, have + size / 100, PER_APPEND).await?;
        have += size / 100;
        let (incremental_s, _) = seconds(|| Ok(backup::take(&store, None, &backups, None)?))?;
        let incremental_bytes = crate::tree_size(&backups)? - full_bytes;

        let restored = root.path().join(format!("restored-{step}"));
        let (restore_s, back) = seconds(|| Ok(backup::restore(&backups, None, &restored, &mut |_, _| {})?))?;
        anyhow::ensure!(back.last_seq >= head, "the restore holds the backup's events");
        let (deep_s, _) = seconds(|| {
            let scans = store.deep_scan(&mut |_, _| {});
            anyhow::ensure!(scans.iter().all(|s| s.damage.is_none()), "no damage: {scans:?}");
            Ok(verify(&store, &mut |_, _| {})?)
        })?;
        let row = json!({
            "events": head,
            "wal_bytes": wal_bytes,
            "backup_seconds": full_s,
            "backup_bytes": full_bytes,
            "backup_head_before": full.head_before,
            "incremental_events": size / 100,
            "incremental_seconds": incremental_s,
            "incremental_bytes": incremental_bytes,
            "restore_seconds": restore_s,
            "restored_events_verified": back.events_verified,
            "deep_check_seconds": deep_s,
        });
        if !json_out {
            println!(
                "  {:>9} {:>9.1} | {:>8.2} {:>9.1} | {:>8.2} {:>9.1} | {:>9.2} | {:>8.2}",
                head,
                wal_bytes as f64 / 1e6,
                full_s,
                full_bytes as f64 / 1e6,
                incremental_s,
                incremental_bytes as f64 / 1e6,
                restore_s,
                deep_s
            );
        }
        rows.push(row);
        std::fs::remove_dir_all(&restored)?;
    }
    drop(log);
    let mirror_rows = mirror_rebuilds(events, root.path(), json_out).await?;
    if json_out {
        println!("{}", json!({ "recovery": rows, "mirror_rebuild": mirror_rows }));
    } else {
        println!("  restore s: the backup copied back with its checksums checked, then the whole chain verified");
        println!("  deep s: every key of every column family read with checksums on and no cache, then the chain");
    }
    Ok(())
}

/// A mirror rebuilt from the stream (`agentlog_node::rebuild`) as the
/// stream grows to a quarter, a half and all of `events`.
async fn mirror_rebuilds(events: u64, root: &Path, json_out: bool) -> anyhow::Result<Vec<serde_json::Value>> {
    let server = NatsServer::start_in(Some(root), "");
    let mut options = agentlog_log::jetstream::Options::new(server.url(), root.join("publisher"));
    options.catch_up_timeout = std::time::Duration::from_secs(600);
    let publisher = Arc::new(JetStreamLog::open(options).await?);
    if !json_out {
        println!("a node's mirror rebuilt from the JetStream stream (one nats-server, file storage)");
        println!("  {:>9} | {:>10} | {:>10}", "events", "rebuild s", "events/s");
    }
    let mut rows = Vec::new();
    let mut have = 0;
    for (step, size) in [events / 4, events / 2, events].into_iter().enumerate() {
        // One event a publish: JetStream bounds atomic batches in flight.
        grow(&publisher, have, size, 1).await?;
        have = size;
        let mut config = agentlog_node::Config::load(None, |_| None)?;
        config.nats.url = server.url();
        config.data = root.join(format!("mirror-{step}"));
        config.mirror.catch_up_timeout_seconds = 600;
        let started = Instant::now();
        let head = agentlog_node::rebuild::rebuild_mirror(&config, &mut |_, _| {}).await?;
        let seconds = started.elapsed().as_secs_f64();
        anyhow::ensure!(head.last_seq == size, "the rebuilt mirror holds the stream");
        if !json_out {
            println!("  {:>9} | {:>10.2} | {:>10.0}", size, seconds, size as f64 / seconds);
        }
        rows.push(json!({ "events": size, "seconds": seconds }));
        std::fs::remove_dir_all(&config.data)?;
    }
    Ok(rows)
}
