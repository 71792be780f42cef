//! The node's metrics: every name it records, declared here (the command
//! service declares its own in `agentlog_commands::wire`), recorded through
//! the `metrics` facade and rendered by the Prometheus exporter. Gauges of
//! positions are read at scrape time, so `/metrics` never answers stale.
use std::sync::OnceLock;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

use crate::error::{Error, Result};

/// The last sequence in the node's mirror.
pub const MIRROR_SEQ: &str = "agentlog_mirror_seq";
/// Events in the stream the mirror does not have yet.
pub const MIRROR_LAG_EVENTS: &str = "agentlog_mirror_lag_events";
/// The last sequence every view reflects.
pub const PROJECTION_SEQ: &str = "agentlog_projection_seq";
/// Events in the mirror the views do not reflect yet.
pub const PROJECTION_LAG_EVENTS: &str = "agentlog_projection_lag_events";
/// 1 when `/ready` answers 200, else 0.
pub const NODE_READY: &str = "agentlog_node_ready";
/// Components that failed (fatal), by component.
pub const COMPONENT_FAILURES: &str = "agentlog_component_failures_total";
/// Ticker outcomes: sessions and leases expired, refusals skipped.
pub const TICKER_EXPIRED: &str = "agentlog_ticker_expired_total";
/// Days the nightly archive wrote.
pub const ARCHIVE_DAYS: &str = "agentlog_archive_days_total";
/// Nightly archive runs that failed.
pub const ARCHIVE_FAILURES: &str = "agentlog_archive_failures_total";
/// Backups the node took through its control socket, by outcome (`taken`,
/// `failed`).
pub const BACKUPS: &str = "agentlog_backups_total";
/// How long each backup took (histogram).
pub const BACKUP_SECONDS: &str = "agentlog_backup_seconds";

/// The process's Prometheus recorder, installed on first use (one per
/// process: the `metrics` facade has one global recorder).
pub fn recorder() -> Result<PrometheusHandle> {
    static HANDLE: OnceLock<std::result::Result<PrometheusHandle, String>> = OnceLock::new();
    HANDLE
        .get_or_init(|| PrometheusBuilder::new().install_recorder().map_err(|e| e.to_string()))
        .clone()
        .map_err(|reason| Error::Metrics { reason })
}
