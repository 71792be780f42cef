//! Plants an incident into a log, for docs/REPLAY.md's walk-through: two
//! claims of one task written past the handler (which would refuse the
//! second) after the log's last event, copies of the task's first claim
//! (`agentlog_tests::incident::plant_replayed_claim`). Only for logs made
//! to practise on: it writes into the WAL directly. The task's events must
//! still be in the WAL (plant before pruning).
//!
//! `cargo run --release -p agentlog-replay --example plant -- DATA_DIR [TASK_ID]`
fn main() -> std::process::ExitCode {
    let mut args = std::env::args().skip(1);
    let Some(data) = args.next() else {
        eprintln!("usage: plant DATA_DIR [TASK_ID]");
        return std::process::ExitCode::FAILURE;
    };
    let task = args.next().unwrap_or_else(|| "task-00001".to_owned());
    match agentlog_tests::incident::plant_replayed_claim(std::path::Path::new(&data), &task) {
        Ok((first, second)) => {
            println!("planted two claims of {task} at seqs {first} and {second}");
            std::process::ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
