//! The metrics the storage crate records, named in one place. They go
//! through the `metrics` facade: whoever runs the log (the node) installs a
//! recorder and renders them; without one they cost a load and a branch.
//! Each is recorded once per group or batch, never per event.

/// Events one group commit of the embedded writer wrote (histogram).
pub const WAL_GROUP_EVENTS: &str = "agentlog_wal_group_events";
/// How long one fsync of the WAL took, in seconds (histogram).
pub const WAL_FSYNC_SECONDS: &str = "agentlog_wal_fsync_seconds";
/// Times a WAL stopped taking writes for good (counter).
pub const WAL_POISONED: &str = "agentlog_wal_poisoned_total";
/// Events one write of the mirror carried (histogram).
pub const MIRROR_BATCH_EVENTS: &str = "agentlog_mirror_batch_events";
/// Times the mirror followed the stream again after a NATS failure or a
/// stalled consumer (counter).
pub const MIRROR_RESTARTS: &str = "agentlog_mirror_restarts_total";
