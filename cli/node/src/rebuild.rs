//! A node's mirror (its WAL) recreated from the JetStream stream, for a node
//! whose mirror was lost or damaged: `agentlog mirror rebuild`. The mirror
//! follows the stream from seq 1 into a new directory, exactly as a node's
//! mirror does, until it holds what the stream held when the rebuild began,
//! and is then synced to disk. The projections are not rebuilt here: the
//! node rebuilds them from the new mirror when it starts.
use std::time::Duration;

use agentlog_core::Head;

use crate::Config;
use crate::error::{Error, Result};

/// Rebuilds the mirror at `config.data`, which must not hold a store.
/// `progress` gets the mirror's head and the stream's last seq as it goes.
/// A mirror that makes no progress for `mirror.catch_up_timeout_seconds`
/// fails the rebuild.
pub async fn rebuild_mirror(config: &Config, progress: &mut dyn FnMut(u64, u64)) -> Result<Head> {
    if config.data.join("CURRENT").exists() {
        return Err(Error::Config {
            reason: format!(
                "{} holds a store: move it aside (keep it until the rebuilt mirror verifies) and run the rebuild again",
                config.data.display()
            ),
        });
    }
    let log = crate::open_log(config, false).await?;
    let target = log.source_last_seq().await?;
    let stall = Duration::from_secs(config.mirror.catch_up_timeout_seconds.max(1));
    let mut head = log.durable().watch();
    loop {
        let now = head.borrow_and_update().last_seq;
        progress(now, target);
        if now >= target {
            break;
        }
        tokio::select! {
            changed = tokio::time::timeout(stall, head.changed()) => match changed {
                Ok(Ok(())) => {}
                Ok(Err(_)) => return Err(agentlog_log::Error::Closed.into()),
                Err(_) => {
                    return Err(Error::Stalled { seq: now, target_seq: target, timeout_seconds: stall.as_secs() });
                }
            },
            // The mirror poisoned (a gap, an undecodable event, a failed write).
            ended = log.durable().ended_wait() => return Err(ended.into()),
        }
    }
    log.store().sync_wal()?;
    let head = log.durable().head();
    log.close().await;
    Ok(head)
}
