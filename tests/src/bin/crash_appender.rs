//! Child process for the SIGKILL crash test: appends batches of 1 to 5
//! events from several concurrent producers to the embedded log in the
//! directory given as the first argument, and prints one line per
//! acknowledged append — `ack <stream> <first_seq> <last_seq> <version>` —
//! until it is killed. A third argument `nosync` runs the log with sync
//! off (acknowledged once written to the OS, before any fsync).
use std::io::Write;
use std::sync::Arc;

use agentlog_log::testing::fresh_event;
use agentlog_log::{AppendRequest, EmbeddedLog, ExpectedVersion, Log, Options};

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let dir = std::env::args().nth(1).expect("usage: crash_appender DIR RUN");
    let run: u64 = std::env::args().nth(2).and_then(|r| r.parse().ok()).expect("usage: crash_appender DIR RUN");
    let sync = std::env::args().nth(3).as_deref() != Some("nosync");
    let log =
        Arc::new(EmbeddedLog::open(std::path::Path::new(&dir), Options { sync, ..Options::default() }).expect("open"));
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<String>();
    for producer in 0..8u64 {
        let (log, tx) = (log.clone(), tx.clone());
        tokio::spawn(async move {
            let stream = format!("crash/r{run}p{producer}");
            for batch in 0u64.. {
                let size = 1 + (batch * 7 + producer) % 5;
                let events = (0..size)
                    .map(|i| {
                        let mut event = fresh_event(&stream, ((run * 8 + producer) << 32) | (batch << 4) | i);
                        // Names the batch and its size, so the parent can
                        // check that no batch was written in part.
                        event.actor = format!("{stream}/b{batch}/{i}of{size}");
                        event
                    })
                    .collect();
                // The first batch creates the stream; only this producer
                // writes it, so later batches append at any version.
                let expected = if batch == 0 { ExpectedVersion::Exact(0) } else { ExpectedVersion::Any };
                let request = AppendRequest { stream: stream.clone(), expected, events, idempotency_key: None };
                let appended = log.append(request).await.expect("append");
                let _ = tx.send(format!(
                    "ack {stream} {} {} {}",
                    appended.first_seq, appended.last_seq, appended.stream_version
                ));
            }
        });
    }
    drop(tx);
    let mut stdout = std::io::stdout().lock();
    while let Some(line) = rx.recv().await {
        writeln!(stdout, "{line}").expect("stdout");
        stdout.flush().expect("stdout");
    }
}
