//! 1,000 runs asked for at once, each touching all the memory a run may
//! have (16 MiB): every one completes with the same result, at most
//! `Limits::max_running` run at a time, and the process's peak memory
//! stays within what that many runs can take. (Its own test binary, so
//! that no other test's memory counts.)
use agentlog_sandbox::{Limits, Outcome, Sandbox};

/// Grows its memory to the cap (256 pages) and writes every byte of it.
const TOUCH_ALL: &str = r#"(module
  (memory (export "memory") 1)
  (func (export "alloc") (param i32) (result i32) (i32.const 1024))
  (func (export "run") (param i32 i32) (result i64)
    (drop (memory.grow (i32.const 255)))
    (memory.fill (i32.const 0) (i32.const 1) (i32.const 16777216))
    (i64.const 0x0000040000000004)))"#;

/// Bytes of the process's peak resident set (`VmHWM`).
fn peak_rss() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).expect("Linux reports VmHWM");
    line.split_whitespace().nth(1).unwrap().parse::<u64>().unwrap() * 1024
}

#[test]
fn a_thousand_runs_at_once_take_turns_and_the_memory_they_take_stays_bounded() {
    let module = agentlog_sandbox::module_from_file(TOUCH_ALL.as_bytes()).unwrap();
    let limits = Limits::default();
    let sandbox = Sandbox::new(limits).unwrap();
    let first = sandbox.run(&module, b"", 100_000_000).unwrap();
    assert!(matches!(first, Outcome::Completed { .. }), "{first:?}");
    let before = peak_rss();
    let outcomes: Vec<Outcome> = std::thread::scope(|scope| {
        let runs: Vec<_> =
            (0..1_000).map(|_| scope.spawn(|| sandbox.run(&module, b"", 100_000_000).unwrap())).collect();
        runs.into_iter().map(|run| run.join().unwrap()).collect()
    });
    assert!(outcomes.iter().all(|o| *o == first), "every run gives the first's result");
    assert!(sandbox.peak_running() <= limits.max_running, "{} at once", sandbox.peak_running());
    let grown = peak_rss().saturating_sub(before);
    let bound = limits.max_running as u64 * limits.max_memory_pages * 64 * 1024 + 128 * 1024 * 1024;
    assert!(grown <= bound, "the peak grew by {grown} bytes; {} runs at once may take {bound}", limits.max_running);
}
