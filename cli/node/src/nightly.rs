//! The nightly archive of a node: every closed UTC day not archived yet is
//! written at startup (catching up on nights the node was down), then every
//! day at `archive.at` UTC, reading the time from the node's `Clock`. A
//! failed run is logged and counted, and tried again the next night: the
//! archive is behind, but nothing is lost (the WAL keeps every event).
use std::path::PathBuf;
use std::sync::Arc;

use agentlog_archive::{AtTime, Day, Settings};
use agentlog_core::Clock;
use agentlog_log::wal::Store;

/// The nightly job of `serve`: archives at startup (catching up on nights the
/// node was down), then every day at `at` UTC, reading the time from `clock`.
pub async fn run(
    store: Arc<Store>,
    root: PathBuf,
    at: AtTime,
    clock: Arc<dyn Clock>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    loop {
        let today = Day::of(clock.now());
        if let Some(through) = today.previous() {
            let (store, root) = (store.clone(), root.clone());
            let job = tokio::task::spawn_blocking(move || {
                agentlog_archive::run(&*store, &root, through, &Settings::default(), &mut |_| {})
            });
            // On shutdown, stop waiting: a run killed midway leaves only
            // `.staging`, which the next run clears.
            let finished = tokio::select! {
                finished = job => finished,
                _ = stop.changed() => return,
            };
            match finished {
                Ok(Ok(report)) => {
                    metrics::counter!(crate::metrics::ARCHIVE_DAYS).increment(report.written.len() as u64);
                    for written in &report.written {
                        tracing::info!(
                            message = "archived a day",
                            date = %written.manifest.date,
                            events = written.manifest.rows,
                            files = written.manifest.files.len(),
                            bytes = written.bytes()
                        );
                    }
                }
                Ok(Err(e)) => {
                    metrics::counter!(crate::metrics::ARCHIVE_FAILURES).increment(1);
                    tracing::error!(message = "the nightly archive failed; it runs again tomorrow", error = %e)
                }
                Err(e) => {
                    metrics::counter!(crate::metrics::ARCHIVE_FAILURES).increment(1);
                    tracing::error!(message = "the nightly archive panicked", error = %e)
                }
            }
        }
        // Sleep until the next run, waking each minute to read the clock
        // again (it may be stepped), and at once on shutdown.
        let next = at.next_after(clock.now());
        loop {
            let now = clock.now();
            if now >= next {
                break;
            }
            let wait = next.saturating_since(now).min(std::time::Duration::from_secs(60));
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = stop.changed() => return,
            }
            if *stop.borrow() {
                return;
            }
        }
    }
}
