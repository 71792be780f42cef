//! Plants an incident into a log, for docs/REPLAY.md's walk-through: two
//! claims of one task written past the handler (which would refuse the
//! second) after the log's last event, copies of the task's first claim.
//! Only for logs made to practise on: it writes into the WAL directly. The
//! task's events must still be in the WAL (plant before pruning).
//!
//! `cargo run --release -p agentlog-replay --example plant -- DATA_DIR [TASK_ID]`
use agentlog_core::{Body, EventSource};
use agentlog_log::wal::{RawWriter, Store, StoreOptions};

fn main() -> std::process::ExitCode {
    match plant() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn plant() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let data = args.next().ok_or("usage: plant DATA_DIR [TASK_ID]")?;
    let task = args.next().unwrap_or_else(|| "task-00001".to_owned());
    let store = Store::open(std::path::Path::new(&data), StoreOptions::default())?;
    let stream = format!("task/{task}");
    let events = store.read_stream(&stream, 1, 10_000)?;
    let claim = events
        .iter()
        .find(|e| matches!(e.body, Some(Body::TaskClaimed(_))))
        .ok_or_else(|| format!("{stream} was never claimed: pick a task that was"))?
        .clone();
    let version = events.last().map_or(0, |e| e.stream_version);
    let head = store.head()?;
    let last_ts = EventSource::read(&store, head.last_seq, 1)?.remove(0).ts;
    let mut writer = RawWriter::new(&store)?;
    for n in 1..=2u64 {
        let mut event_id = claim.event_id.clone();
        event_id[15] ^= n as u8;
        writer.sealed(agentlog_core::Envelope {
            seq: head.last_seq + n,
            stream_version: version + n,
            ts: last_ts,
            event_id,
            ..claim.clone()
        });
    }
    writer.write()?;
    println!("planted two claims of {task} at seqs {} and {}", head.last_seq + 1, head.last_seq + 2);
    Ok(())
}
