//! `agentlog bench --sandbox`: the WASM sandbox's costs. The compile time
//! of a first-seen module (a small one, and one near the size limit); runs
//! of a small action module on a warm (compiled, cached) module, one thread
//! (latency) and as many threads as cores (throughput); `run_module`
//! commands through the handler on the embedded log, sync off, so the
//! figure is the command path's and not the disk's; and `debit_budget`
//! without a policy and with one bound, which is what a policy check adds
//! to a command. Prints figures; asserts nothing.
use std::sync::Arc;
use std::time::Instant;

use agentlog_commands::command::{AllocateBudget, DebitBudget, OpenSession, RegisterAgent};
use agentlog_commands::module::{ModuleKind, RegisterModule, RunModule};
use agentlog_commands::policy::BindPolicy;
use agentlog_commands::{Command, Handler, Request};
use agentlog_log::{EmbeddedLog, HybridClock, Options, RandomIdGen};
use agentlog_sandbox::{Limits, Sandbox};
use hdrhistogram::Histogram;
use serde_json::json;

use crate::Latency;

/// The per-debit limit of docs/SANDBOX.md.
const DEBIT_LIMIT: &str = include_str!("../../../docs/policies/debit-limit.wat");

use agentlog_sandbox::examples::ECHO;

/// A module of `functions` small functions beside echo's exports: what a
/// compiler makes of a larger program, near the size limit.
fn large(functions: usize) -> String {
    let mut text = ECHO.trim_end().strip_suffix(')').expect("a module ends with )").to_owned();
    for i in 0..functions {
        text.push_str(&format!(
            "\n  (func $f{i} (param i32) (result i32) (i32.add (i32.mul (local.get 0) (i32.const {i})) (i32.const 7)))"
        ));
    }
    text.push(')');
    text
}

pub async fn run(runs: u64, json_out: bool) -> anyhow::Result<()> {
    let echo = agentlog_sandbox::module_from_file(ECHO.as_bytes())?;
    let big = agentlog_sandbox::module_from_file(large(30_000).as_bytes())?;

    // Compile time of a module the sandbox has not seen (a new sandbox
    // each time, so nothing is cached).
    let compile = |module: &[u8]| -> anyhow::Result<f64> {
        let sandbox = Sandbox::new(Limits::default())?;
        let started = Instant::now();
        sandbox.validate(module)?;
        Ok(started.elapsed().as_secs_f64() * 1000.0)
    };
    let compile_small_ms = compile(&echo)?;
    let compile_large_ms = compile(&big)?;

    // Warm runs, one thread: latency.
    let sandbox = Arc::new(Sandbox::new(Limits::default())?);
    sandbox.validate(&echo)?;
    let input = vec![7u8; 256];
    let mut histogram = Histogram::<u64>::new(3)?;
    let started = Instant::now();
    for _ in 0..runs {
        let t = Instant::now();
        sandbox.run(&echo, &input, 1_000_000)?;
        histogram.record(u64::try_from(t.elapsed().as_nanos()).unwrap_or(u64::MAX))?;
    }
    let one_thread = runs as f64 / started.elapsed().as_secs_f64();
    let latency = Latency::from(&histogram);

    // Warm runs on every core.
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    let started = Instant::now();
    std::thread::scope(|scope| {
        for _ in 0..cores {
            scope.spawn(|| {
                for _ in 0..runs / cores as u64 {
                    sandbox.run(&echo, &input, 1_000_000).expect("the echo module runs");
                }
            });
        }
    });
    let all_cores = (runs / cores as u64 * cores as u64) as f64 / started.elapsed().as_secs_f64();

    // run_module through the handler: decided, run, recorded.
    let dir = tempfile::tempdir()?;
    let log = Arc::new(EmbeddedLog::open(dir.path(), Options { sync: false, ..Options::default() })?);
    let handler =
        Handler::new(log, Arc::new(HybridClock::system()), Arc::new(RandomIdGen::new())).with_modules(sandbox.clone());
    let exec = |command: Command| handler.execute(Request::new(command, "bench"));
    exec(RegisterAgent { agent_id: "a".into(), name: String::new(), capabilities: vec![] }.into()).await?;
    let opened =
        exec(OpenSession { agent_id: "a".into(), session_id: None, heartbeat_timeout_ms: 3_600_000 }.into()).await?;
    let session = opened.session_id.unwrap_or_default();
    let registered =
        exec(RegisterModule { name: "echo".into(), kind: ModuleKind::Action, module: echo.clone() }.into()).await?;
    let module_hash = registered.stream.trim_start_matches("module/").to_owned();
    let commands = (runs / 4).max(1);
    let mut command_histogram = Histogram::<u64>::new(3)?;
    let started = Instant::now();
    for _ in 0..commands {
        let run = RunModule {
            module_hash: module_hash.clone(),
            agent_id: "a".into(),
            session_id: session.clone(),
            task_id: String::new(),
            input: input.clone(),
            fuel: 1_000_000,
            budget_id: String::new(),
        };
        let t = Instant::now();
        exec(run.into()).await?;
        command_histogram.record(u64::try_from(t.elapsed().as_nanos()).unwrap_or(u64::MAX))?;
    }
    let command_rate = commands as f64 / started.elapsed().as_secs_f64();
    let command_latency = Latency::from(&command_histogram);

    // A policy check: debit_budget without a policy, then with
    // docs/policies/debit-limit.wat bound to it (warm: compiled, cached).
    exec(AllocateBudget { budget_id: "b".into(), amount: u64::MAX / 2 }.into()).await?;
    let debit = || DebitBudget {
        budget_id: "b".into(),
        amount: 1,
        agent_id: "a".into(),
        session_id: session.clone(),
        task_id: String::new(),
        reason: String::new(),
        failed: false,
    };
    let debits = |label: &'static str| {
        let exec = &exec;
        let debit = &debit;
        async move {
            let mut histogram = Histogram::<u64>::new(3)?;
            for _ in 0..commands {
                let t = Instant::now();
                exec(debit().into()).await.map_err(|r| anyhow::anyhow!("{label}: {r}"))?;
                histogram.record(u64::try_from(t.elapsed().as_nanos()).unwrap_or(u64::MAX))?;
            }
            anyhow::Ok(Latency::from(&histogram))
        }
    };
    let unpoliced = debits("without a policy").await?;
    let limit = agentlog_sandbox::module_from_file(DEBIT_LIMIT.as_bytes())?;
    let registered =
        exec(RegisterModule { name: "debit-limit".into(), kind: ModuleKind::Policy, module: limit }.into()).await?;
    let policy_hash = registered.stream.trim_start_matches("module/").to_owned();
    exec(BindPolicy { command: "debit_budget".into(), module_hash: policy_hash }.into()).await?;
    let policed = debits("with a policy").await?;

    // The check alone, as the handler makes it: the input built (a debit
    // and its budget's state) and the policy run on it.
    let limit = agentlog_sandbox::module_from_file(DEBIT_LIMIT.as_bytes())?;
    let limit_hash = agentlog_commands::module::content_hash(&limit);
    let (_, budget) = handler.load("budget/b").await?;
    let command: Command = debit().into();
    let mut check_histogram = Histogram::<u64>::new(3)?;
    for i in 0..runs {
        let t = Instant::now();
        let input = agentlog_commands::policy::input(&command, "bench", i, "budget/b", &budget);
        let outcome = sandbox.run_hashed(&limit_hash, &limit, &input, agentlog_commands::policy::POLICY_FUEL)?;
        check_histogram.record(u64::try_from(t.elapsed().as_nanos()).unwrap_or(u64::MAX))?;
        if !matches!(outcome, agentlog_sandbox::Outcome::Completed { .. }) {
            anyhow::bail!("the policy did not complete: {outcome:?}");
        }
    }
    let check = Latency::from(&check_histogram);

    if json_out {
        println!(
            "{}",
            json!({
                "compile_small_ms": compile_small_ms, "small_bytes": echo.len(),
                "compile_large_ms": compile_large_ms, "large_bytes": big.len(),
                "warm_runs_per_second_one_thread": one_thread,
                "warm_run_p50_us": latency.p50_us, "warm_run_p99_us": latency.p99_us,
                "warm_runs_per_second_all_cores": all_cores, "cores": cores,
                "run_module_commands_per_second": command_rate,
                "run_module_p50_us": command_latency.p50_us, "run_module_p99_us": command_latency.p99_us,
                "debit_p50_us": unpoliced.p50_us, "debit_p99_us": unpoliced.p99_us,
                "debit_with_policy_p50_us": policed.p50_us, "debit_with_policy_p99_us": policed.p99_us,
                "policy_check_p50_us": check.p50_us, "policy_check_p99_us": check.p99_us,
            })
        );
    } else {
        println!("sandbox (wasmtime, fuel metering, the echo module on 256 bytes of input):");
        println!("  compile, first seen        {compile_small_ms:>10.2} ms ({} bytes)", echo.len());
        println!("  compile, first seen        {compile_large_ms:>10.2} ms ({} bytes)", big.len());
        println!(
            "  warm runs, one thread      {one_thread:>10.0} runs/s (p50 {:.1} µs, p99 {:.1} µs)",
            latency.p50_us, latency.p99_us
        );
        println!("  warm runs, {cores} threads        {all_cores:>10.0} runs/s");
        println!(
            "  run_module commands        {command_rate:>10.0} /s (p50 {:.1} µs, p99 {:.1} µs; embedded log, sync off)",
            command_latency.p50_us, command_latency.p99_us
        );
        println!("  debit_budget, no policy    p50 {:>7.1} µs, p99 {:>7.1} µs", unpoliced.p50_us, unpoliced.p99_us);
        println!(
            "  debit_budget, a policy     p50 {:>7.1} µs, p99 {:>7.1} µs (docs/policies/debit-limit.wat; adds {:.1} µs p50, {:.1} µs p99)",
            policed.p50_us,
            policed.p99_us,
            policed.p50_us - unpoliced.p50_us,
            policed.p99_us - unpoliced.p99_us
        );
        println!(
            "  a policy check alone       p50 {:>7.1} µs, p99 {:>7.1} µs (its input built, the module run; {runs} checks)",
            check.p50_us, check.p99_us
        );
    }
    Ok(())
}
