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
    let log = crate::open_log(config).await?;
    let target = log.source_last_seq().await?;
    let stall = Duration::from_secs(config.mirror.catch_up_timeout_seconds.max(1));
    let mut head = log.durable().watch();
    loop {
        let now = head.borrow_and_update().last_seq;
        progress(now, target);
        if now >= target {
            break;
        }
        if let Some(ended) = log.durable().ended() {
            return Err(ended.into());
        }
        match tokio::time::timeout(stall, head.changed()).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) => return Err(agentlog_log::Error::Closed.into()),
            Err(_) => {
                return Err(Error::Log(agentlog_log::Error::Nats {
                    operation: "rebuilding the mirror",
                    message: format!("the mirror stayed at seq {now} of {target} for {} s", stall.as_secs()),
                }));
            }
        }
    }
    log.store().sync_wal()?;
    let head = log.durable().head();
    log.close().await;
    Ok(head)
}
