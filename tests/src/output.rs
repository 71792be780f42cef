//! What a test asserts of a process it ran: that it succeeded (then its
//! stdout), or that it failed (then its stderr), printing the other
//! stream when it did not.
use std::process::Output;

/// Its stdout; panics with both streams unless it succeeded.
pub fn ok(output: Output) -> String {
    let out = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(output.status.success(), "stdout: {out}\nstderr: {}", String::from_utf8_lossy(&output.stderr));
    out
}

/// Its stderr; panics with its stdout unless it failed.
pub fn failed(output: Output) -> String {
    assert!(!output.status.success(), "expected a failure, got: {}", String::from_utf8_lossy(&output.stdout));
    String::from_utf8_lossy(&output.stderr).into_owned()
}
