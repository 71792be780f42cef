//! SIGKILL a process that is appending under load, reopen, and find every
//! acknowledged event, no partial append, and an intact chain: with sync on
//! and with sync off (a process crash leaves what was written to the OS;
//! only a machine crash can lose what was not fsynced). Repeated on the
//! same directory, so each run also recovers from the one before (a write
//! torn by the kill is an incomplete last record, which the open drops).
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use agentlog_log::wal::{Store, verify};

#[test]
fn sigkill_under_load_loses_no_acknowledged_event_and_leaves_no_partial_one() {
    sigkill_under_load("sync");
}

#[test]
fn sigkill_with_sync_off_loses_no_acknowledged_event_either() {
    sigkill_under_load("nosync");
}

fn sigkill_under_load(sync: &str) {
    let dir = tempfile::tempdir().unwrap();
    let mut acked: Vec<(String, u64, u64, u64)> = Vec::new();
    for run in 0..5u64 {
        let mut child = Command::new(env!("CARGO_BIN_EXE_crash_appender"))
            .arg(dir.path())
            .arg(run.to_string())
            .arg(sync)
            .stdout(Stdio::piped())
            .spawn()
            .expect("start the appender");
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        // Kill at a different point each run, while appends are in flight.
        let kill_after = 200 + run * 150;
        let mut seen = 0;
        while seen < kill_after {
            let line = lines.next().expect("the appender acknowledges appends").unwrap();
            let parts: Vec<&str> = line.split(' ').collect();
            assert_eq!(parts[0], "ack");
            acked.push((
                parts[1].to_owned(),
                parts[2].parse().unwrap(),
                parts[3].parse().unwrap(),
                parts[4].parse().unwrap(),
            ));
            seen += 1;
        }
        child.kill().expect("SIGKILL the appender");
        child.wait().unwrap();

        let store = Store::open(dir.path(), Default::default()).expect("reopen after SIGKILL");
        let report = verify(&store, &mut |_, _| {}).expect("seqs, versions and chain are intact");
        for (stream, first_seq, last_seq, version) in &acked {
            let events = store.read(*first_seq, (*last_seq - *first_seq + 1) as usize).unwrap();
            assert_eq!(
                events.len() as u64,
                last_seq - first_seq + 1,
                "acknowledged seqs {first_seq}..{last_seq} are all there"
            );
            assert!(events.iter().all(|e| &e.stream == stream));
            assert_eq!(events.last().unwrap().stream_version, *version);
        }
        // Every batch in the log is whole: actor `<stream>/b<batch>/<i>of<n>`.
        let mut batches: BTreeMap<String, (u64, u64)> = BTreeMap::new();
        for event in store.read(1, usize::MAX).unwrap() {
            let (batch, part) = event.actor.rsplit_once('/').unwrap();
            let (_, of) = part.split_once("of").unwrap();
            let entry = batches.entry(batch.to_owned()).or_insert((0, of.parse().unwrap()));
            entry.0 += 1;
        }
        for (batch, (found, size)) in &batches {
            assert_eq!(found, size, "batch {batch} is whole");
        }
        assert!(report.events >= acked.len() as u64);
    }
}
