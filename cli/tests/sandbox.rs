//! `agentlog sandbox` as an operator and an agent use it on the embedded
//! log: register a module from WAT text (a WASI import is refused, naming
//! it), run it for an agent in its session, list it, and then, in another
//! process, `agentlog replay verify` runs every recorded run again from the
//! log alone and finds each as recorded. And the same commands over NATS
//! through `agentlog serve`, a policy among them.
mod common;

use std::path::Path;
use std::process::{Command, Output};

use agentlog_tests::output::ok;
use serde_json::Value;

fn agentlog<S: AsRef<std::ffi::OsStr>>(args: &[S]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_agentlog")).args(args).output().expect("run agentlog")
}

/// The JSON a command printed, which failed (a rejection exits non-zero).
fn rejected(output: Output) -> Value {
    let out = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(!output.status.success(), "expected a rejection, got: {out}");
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"))
}

fn json(out: &str) -> Value {
    serde_json::from_str(out).unwrap_or_else(|e| panic!("{e}: {out}"))
}

use agentlog_sandbox::examples::ECHO;

const WASI: &str = r#"(module
  (import "wasi_snapshot_preview1" "random_get" (func (param i32 i32) (result i32)))
  (memory (export "memory") 1))"#;

fn write(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path.to_str().unwrap().to_owned()
}

#[test]
fn a_module_registered_and_run_from_the_cli_runs_again_the_same_in_another_process() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let data = data.to_str().unwrap();
    let (echo, wasi) = (write(dir.path(), "echo.wat", ECHO), write(dir.path(), "wasi.wat", WASI));

    let refused = rejected(agentlog(&["sandbox", "register", &wasi, "--name", "bad", "--data", data, "--json"]));
    assert_eq!((refused["kind"].as_str(), refused["code"].as_str()), (Some("invalid"), Some("invalid_module")));
    assert!(refused["message"].as_str().unwrap().contains("`wasi_snapshot_preview1`.`random_get`"), "{refused}");

    let registered = json(&ok(agentlog(&["sandbox", "register", &echo, "--name", "echo", "--data", data, "--json"])));
    let stream = registered["stream"].as_str().unwrap();
    let hash = stream.strip_prefix("module/").unwrap().to_owned();
    assert_eq!(hash.len(), 64, "{registered}");

    ok(agentlog(&["cmd", "register_agent", r#"{"agent_id":"a1","name":"A","capabilities":[]}"#, "--data", data]));
    let opened = json(&ok(agentlog(&["cmd", "open_session", r#"{"agent_id":"a1"}"#, "--data", data, "--json"])));
    let session = opened["session_id"].as_str().unwrap();

    let run = ["sandbox", "run", &hash, "--agent", "a1", "--session", session, "--data", data, "--json"];
    let ran = json(&ok(agentlog(&[&run[..], &["--input-text", "hello"]].concat())));
    assert_eq!(ran["stream"], "agent/a1");
    assert_eq!(ran["run"]["output"], "aGVsbG8=", "the output, base64: {ran}");
    let fuel_used = ran["run"]["fuel_used"].as_u64().unwrap();
    assert!(fuel_used > 0);
    let trapped = rejected(agentlog(&[&run[..], &["--input-text", "x", "--fuel", "3"]].concat()));
    assert_eq!((trapped["kind"].as_str(), trapped["code"].as_str()), (Some("agent"), Some("module_trapped")));

    let listed = json(&ok(agentlog(&["sandbox", "list", "--data", data, "--json"])));
    let module = &listed["result"][0];
    assert_eq!((module["module_hash"].as_str(), module["name"].as_str()), (Some(hash.as_str()), Some("echo")));
    assert_eq!((module["runs_completed"].as_u64(), module["runs_trapped"].as_u64()), (Some(1), Some(1)));
    assert_eq!(module["fuel_used"].as_u64(), Some(fuel_used + 3));

    let verified = json(&ok(agentlog(&["replay", "verify", "--data", data, "--json"])));
    let runs = &verified["sandbox_runs"];
    assert_eq!((runs["compared"].as_u64(), runs["modules"].as_u64()), (Some(2), Some(1)), "{verified}");
    assert_eq!(runs["ok"], true, "{verified}");
    assert_eq!(verified["ok"], true, "{verified}");
}

#[test]
fn the_sandbox_commands_over_nats_run_and_police_through_serve() {
    let server = agentlog_tests::nats::NatsServer::start();
    let (dir, data) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let node = common::start(&server, data.path());
    let url = server.url();
    let with = |args: &[&str]| -> Vec<String> {
        args.iter().copied().chain(["--nats", url.as_str(), "--json"]).map(str::to_owned).collect()
    };
    let echo = write(dir.path(), "echo.wat", ECHO);
    let limit = dir.path().join("debit-limit.wat");
    std::fs::copy(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/policies/debit-limit.wat"), &limit).unwrap();

    let registered = json(&ok(agentlog(&with(&["sandbox", "register", &echo, "--name", "echo"]))));
    let hash = registered["stream"].as_str().unwrap().strip_prefix("module/").unwrap().to_owned();
    ok(agentlog(&with(&["cmd", "register_agent", r#"{"agent_id":"a1","name":"A","capabilities":[]}"#])));
    let opened = json(&ok(agentlog(&with(&["cmd", "open_session", r#"{"agent_id":"a1"}"#]))));
    let session = opened["session_id"].as_str().unwrap().to_owned();
    let ran = json(&ok(agentlog(&with(&[
        "sandbox",
        "run",
        &hash,
        "--agent",
        "a1",
        "--session",
        &session,
        "--input-text",
        "over nats",
    ]))));
    assert_eq!(ran["run"]["output"], "b3ZlciBuYXRz", "{ran}");

    let policy = json(&ok(agentlog(&with(&[
        "sandbox",
        "register",
        limit.to_str().unwrap(),
        "--name",
        "debit-limit",
        "--kind",
        "policy",
    ]))));
    let policy_hash = policy["stream"].as_str().unwrap().strip_prefix("module/").unwrap().to_owned();
    ok(agentlog(&with(&["sandbox", "bind", "debit_budget", &policy_hash])));
    ok(agentlog(&with(&["cmd", "allocate_budget", r#"{"budget_id":"b1","amount":1000}"#])));
    let debit = format!(r#"{{"budget_id":"b1","amount":600,"agent_id":"a1","session_id":"{session}"}}"#);
    let denied = rejected(agentlog(&with(&["cmd", "debit_budget", &debit])));
    assert_eq!((denied["kind"].as_str(), denied["code"].as_str()), (Some("domain"), Some("policy_denied")));
    assert!(denied["message"].as_str().unwrap().contains("needs the finance role"), "{denied}");
    ok(agentlog(&with(&["cmd", "debit_budget", &debit, "--actor", "finance"])));
    assert_eq!(common::metric(&node, "agentlog_policy_decisions_total{result=\"denied\"}"), 1);
    assert_eq!(common::metric(&node, "agentlog_policy_decisions_total{result=\"allowed\"}"), 1);
}
