//! The sandbox's commands through the real handler on a real embedded log:
//! `register_module` validates before it records (naming a refused import,
//! appending nothing), `run_module` records the run's input, output, fuel
//! and engine on the agent's stream — or the trap, answered with kind
//! `agent` — and a retry with the same key runs nothing again. Then every
//! recorded run is executed again from the log alone and compared, and a
//! run recorded with an output its module never gives is named by its seq.
use std::sync::Arc;

use agentlog_commands::module::{ModuleKind, RegisterModule, RunModule, content_hash};
use agentlog_commands::{Code, Command, Handler, Policy, Request};
use agentlog_core::schema::SandboxRunCompleted;
use agentlog_core::{AppendRequest, Body, ExpectedVersion, Kind, Log};
use agentlog_log::{EmbeddedLog, EventSource, ManualClock};
use agentlog_sandbox::{Limits, Sandbox};

use agentlog_sandbox::examples::{ECHO, SPIN};

const WASI: &str = r#"(module
  (import "wasi_snapshot_preview1" "fd_write" (func (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (func (export "alloc") (param i32) (result i32) (i32.const 0))
  (func (export "run") (param i32 i32) (result i64) (i64.const 0)))"#;

fn wasm(wat: &str) -> Vec<u8> {
    agentlog_sandbox::module_from_file(wat.as_bytes()).expect("the test module is WAT")
}

struct World {
    handler: Arc<Handler<EmbeddedLog>>,
    log: Arc<EmbeddedLog>,
    sandbox: Arc<Sandbox>,
    agent: String,
    session: String,
    _dir: tempfile::TempDir,
}

async fn world() -> World {
    let dir = tempfile::tempdir().unwrap();
    let log = agentlog_tests::open_log(dir.path());
    let clock = Arc::new(ManualClock::new(agentlog_tests::T0));
    let sandbox = Arc::new(Sandbox::new(Limits::default()).unwrap());
    let handler = agentlog_tests::handler(log.clone(), clock, 7, Policy::default());
    let handler = Arc::new(Arc::into_inner(handler).expect("only this test holds it").with_modules(sandbox.clone()));
    let (agent, session) = agentlog_tests::agents_with_sessions(&handler, 1, &[]).await.remove(0);
    World { handler, log, sandbox, agent, session, _dir: dir }
}

async fn register(
    world: &World,
    name: &str,
    kind: ModuleKind,
    wat: &str,
) -> Result<String, agentlog_commands::Rejection> {
    let module = wasm(wat);
    let hash = content_hash(&module);
    let command = Command::RegisterModule(RegisterModule { name: name.into(), kind, module });
    world.handler.execute(Request::new(command, "test")).await.map(|_| hash)
}

fn run(world: &World, module_hash: &str, input: &[u8], fuel: u64) -> Request {
    let command = Command::RunModule(RunModule {
        module_hash: module_hash.into(),
        agent_id: world.agent.clone(),
        session_id: world.session.clone(),
        task_id: "task-1".into(),
        input: input.to_vec(),
        fuel,
        budget_id: String::new(),
    });
    Request::new(command, "test")
}

async fn head(world: &World) -> u64 {
    world.log.head().await.unwrap().last_seq
}

#[tokio::test]
async fn a_module_is_validated_before_it_is_recorded_and_registered_once() {
    let world = world().await;
    let before = head(&world).await;
    let refused = register(&world, "wasi", ModuleKind::Action, WASI).await.unwrap_err();
    assert_eq!((refused.kind, refused.code), (Kind::Invalid, Code::InvalidModule), "{refused}");
    assert!(refused.message.contains("`wasi_snapshot_preview1`.`fd_write`"), "names the import: {refused}");
    let garbage = RegisterModule { name: "junk".into(), kind: ModuleKind::Action, module: b"\0asm\x01junk".to_vec() };
    let refused = world.handler.execute(Request::new(garbage.into(), "test")).await.unwrap_err();
    assert_eq!(refused.code, Code::InvalidModule, "{refused}");
    let huge = RegisterModule { name: "huge".into(), kind: ModuleKind::Action, module: vec![0; 768 * 1024 + 1] };
    let refused = world.handler.execute(Request::new(huge.into(), "test")).await.unwrap_err();
    assert_eq!(refused.code, Code::TooLarge, "{refused}");
    assert_eq!(head(&world).await, before, "a refused module appends nothing");

    let hash = register(&world, "echo", ModuleKind::Action, ECHO).await.unwrap();
    let events = world.log.read_stream(&format!("module/{hash}"), 1, 10).await.unwrap();
    let Some(Body::SandboxModuleRegistered(registered)) = &events[0].body else { panic!("{events:?}") };
    assert_eq!(registered.module, wasm(ECHO), "the log holds the module itself");
    assert_eq!((registered.name.as_str(), registered.size_bytes), ("echo", wasm(ECHO).len() as u64));
    let again = register(&world, "echo-again", ModuleKind::Action, ECHO).await.unwrap_err();
    assert_eq!(again.code, Code::AlreadyExists, "{again}");
}

#[tokio::test]
async fn a_run_records_its_input_output_fuel_and_engine_and_a_retry_runs_nothing() {
    let world = world().await;
    let hash = register(&world, "echo", ModuleKind::Action, ECHO).await.unwrap();
    let accepted = world.handler.execute(run(&world, &hash, b"hello", 1_000).with_idempotency_key("run-1")).await;
    let accepted = accepted.unwrap();
    assert_eq!(accepted.stream, format!("agent/{}", world.agent), "a run is on its agent's stream");
    let result = accepted.run.clone().expect("a run answers with its result");
    assert_eq!(result.output, b"hello");
    assert_eq!(result.output_hash, content_hash(b"hello"));
    let event = &world.log.read(accepted.first_seq, 1).await.unwrap()[0];
    let Some(Body::SandboxRunCompleted(recorded)) = &event.body else { panic!("{event:?}") };
    assert_eq!(recorded.input, b"hello");
    assert_eq!(recorded.input_hash, content_hash(b"hello"));
    assert_eq!((recorded.fuel_used, recorded.fuel_limit), (result.fuel_used, 1_000));
    assert!(recorded.fuel_used > 0);
    assert_eq!(recorded.engine_hash, world.sandbox.engine_hash());
    assert_eq!((recorded.agent_id.as_str(), recorded.task_id.as_str()), (world.agent.as_str(), "task-1"));

    let before = head(&world).await;
    let retry = world.handler.execute(run(&world, &hash, b"hello", 1_000).with_idempotency_key("run-1")).await;
    let retry = retry.unwrap();
    assert!(retry.duplicate);
    assert_eq!(retry.run, Some(result), "the retry gives the first result");
    assert_eq!(head(&world).await, before, "and appends nothing");
}

#[tokio::test]
async fn a_trapped_run_is_recorded_and_answered_as_the_agents_failure() {
    let world = world().await;
    let hash = register(&world, "spin", ModuleKind::Action, SPIN).await.unwrap();
    let request = run(&world, &hash, b"", 5_000).with_idempotency_key("spin-1");
    let refused = world.handler.execute(request.clone()).await.unwrap_err();
    assert_eq!((refused.kind, refused.code), (Kind::Agent, Code::ModuleTrapped), "{refused}");
    assert!(refused.message.contains("out_of_fuel") && refused.message.contains("5000 of 5000"), "{refused}");
    let last = head(&world).await;
    let event = &world.log.read(last, 1).await.unwrap()[0];
    let Some(Body::SandboxRunTrapped(trapped)) = &event.body else { panic!("{event:?}") };
    assert_eq!((trapped.trap.as_str(), trapped.fuel_used, trapped.fuel_limit), ("out_of_fuel", 5_000, 5_000));
    let again = world.handler.execute(request).await.unwrap_err();
    assert_eq!(again.code, Code::ModuleTrapped, "the key's first result again: {again}");
    assert_eq!(head(&world).await, last, "recorded once");
}

#[tokio::test]
async fn only_a_registered_action_runs_and_only_in_the_agents_live_session() {
    let world = world().await;
    let policy = register(&world, "a-policy", ModuleKind::Policy, ECHO.replace("1024", "2048").as_str()).await.unwrap();
    let before = head(&world).await;
    let wrong = world.handler.execute(run(&world, &policy, b"x", 1_000)).await.unwrap_err();
    assert_eq!(wrong.code, Code::WrongModuleKind, "{wrong}");
    let unknown = world.handler.execute(run(&world, &"0".repeat(64), b"x", 1_000)).await.unwrap_err();
    assert_eq!(unknown.code, Code::NotFound, "{unknown}");
    let hash = register(&world, "echo", ModuleKind::Action, ECHO).await.unwrap();
    let before_other = head(&world).await;
    // Another agent's session.
    let other = agentlog_tests::agents_with_sessions(&world.handler, 2, &[]).await.remove(1);
    let mut stolen = run(&world, &hash, b"x", 1_000);
    if let Command::RunModule(r) = &mut stolen.command {
        r.session_id = other.1;
    }
    let refused = world.handler.execute(stolen).await.unwrap_err();
    assert_eq!(refused.code, Code::SessionMismatch, "{refused}");
    let bad = world.handler.execute(run(&world, "not-a-hash", b"x", 1_000)).await.unwrap_err();
    assert_eq!(bad.code, Code::InvalidCommand, "{bad}");
    let too_much = world.handler.execute(run(&world, &hash, &vec![0; 256 * 1024 + 1], 1_000)).await.unwrap_err();
    assert_eq!(too_much.code, Code::TooLarge, "{too_much}");
    assert!(before_other > before);
    let events = world.log.read(before + 1, 100).await.unwrap();
    assert!(
        !events.iter().any(|e| matches!(e.body, Some(Body::SandboxRunCompleted(_) | Body::SandboxRunTrapped(_)))),
        "no refused run is recorded: {events:?}"
    );
}

#[tokio::test]
async fn without_a_sandbox_the_commands_are_unavailable() {
    let dir = tempfile::tempdir().unwrap();
    let log = agentlog_tests::open_log(dir.path());
    let clock = Arc::new(ManualClock::new(agentlog_tests::T0));
    let handler = agentlog_tests::handler(log, clock, 7, Policy::default());
    let command =
        Command::RegisterModule(RegisterModule { name: "e".into(), kind: ModuleKind::Action, module: wasm(ECHO) });
    let refused = handler.execute(Request::new(command, "test")).await.unwrap_err();
    assert_eq!((refused.kind, refused.code), (Kind::Platform, Code::Unavailable), "{refused}");
}

#[tokio::test]
async fn every_recorded_run_runs_again_the_same_and_a_forged_one_is_named_by_its_seq() {
    let world = world().await;
    let echo = register(&world, "echo", ModuleKind::Action, ECHO).await.unwrap();
    let spin = register(&world, "spin", ModuleKind::Action, SPIN).await.unwrap();
    for i in 0..20u32 {
        world.handler.execute(run(&world, &echo, &i.to_le_bytes(), 1_000)).await.unwrap();
    }
    world.handler.execute(run(&world, &spin, b"", 777)).await.unwrap_err();
    let head_seq = head(&world).await;
    // A second sandbox, as another process would have.
    let fresh = Sandbox::new(Limits::default()).unwrap();
    let rerun = agentlog_sandbox::rerun(&**world.log.store(), 1, head_seq, &fresh, &mut |_, _| {}).unwrap();
    assert_eq!((rerun.modules, rerun.compared, rerun.aborted), (2, 21, 0));
    assert!(rerun.ok(), "{rerun:?}");
    // A history that begins after the registrations (a pruned WAL): the
    // runs are counted as not compared, not as differences.
    let first_run = head_seq - 20;
    let later = agentlog_sandbox::rerun(&**world.log.store(), first_run, head_seq, &fresh, &mut |_, _| {}).unwrap();
    assert_eq!((later.modules, later.compared, later.module_before_history), (0, 0, 21));
    assert!(later.ok(), "{later:?}");

    // A run its module would not give, appended past the handler.
    let mut forged = SandboxRunCompleted {
        module_hash: echo.clone(),
        fuel_used: 16,
        output_hash: content_hash(b"forged"),
        agent_id: world.agent.clone(),
        session_id: world.session.clone(),
        input: b"real".to_vec(),
        input_hash: content_hash(b"real"),
        output: b"forged".to_vec(),
        engine_hash: fresh.engine_hash(),
        fuel_limit: 1_000,
        ..SandboxRunCompleted::default()
    };
    let honest = match fresh.run(&wasm(ECHO), b"real", 1_000).unwrap() {
        agentlog_sandbox::Outcome::Completed { fuel_used, .. } => fuel_used,
        other => panic!("{other:?}"),
    };
    forged.fuel_used = honest;
    let ts = agentlog_tests::T0.as_nanos() + 1;
    let event_id =
        agentlog_core::EventId::new(agentlog_core::Timestamp::from_nanos(ts), &agentlog_core::SeededIdGen::new(9));
    let envelope = agentlog_core::Envelope {
        event_id: event_id.as_bytes().to_vec(),
        ts,
        schema_version: agentlog_core::schema::SCHEMA_VERSION,
        body: Some(Body::SandboxRunCompleted(forged)),
        ..agentlog_core::Envelope::default()
    };
    let request = AppendRequest {
        stream: format!("agent/{}", world.agent),
        expected: ExpectedVersion::Any,
        events: vec![envelope],
        idempotency_key: None,
    };
    let seq = world.log.append(request).await.unwrap().last_seq;
    let head_seq = head(&world).await;
    let rerun = agentlog_sandbox::rerun(&**world.log.store(), 1, head_seq, &fresh, &mut |_, _| {}).unwrap();
    let divergence = rerun.divergence.expect("the forged run differs");
    assert_eq!(divergence.seq, seq);
    assert!(divergence.what.contains("output_hash"), "{}", divergence.what);
    assert_eq!(EventSource::head(&**world.log.store()).unwrap().last_seq, head_seq, "re-running writes nothing");
}

#[tokio::test]
async fn a_run_is_refused_once_its_session_is_closed() {
    let world = world().await;
    let hash = register(&world, "echo", ModuleKind::Action, ECHO).await.unwrap();
    let close = agentlog_commands::command::CloseSession { session_id: world.session.clone(), reason: String::new() };
    agentlog_tests::send(&world.handler, close.into()).await;
    let refused = world.handler.execute(run(&world, &hash, b"x", 1_000)).await.unwrap_err();
    assert_eq!(refused.code, Code::SessionNotLive, "{refused}");
}

fn charged_to(mut request: Request, budget: &str) -> Request {
    if let Command::RunModule(run) = &mut request.command {
        run.budget_id = budget.into();
    }
    request
}

async fn balance(world: &World, budget: &str) -> u64 {
    world.handler.budget(budget).await.unwrap().balance
}

#[tokio::test]
async fn a_run_charged_to_a_budget_is_debited_its_fuel_once_whatever_the_retries() {
    let world = world().await;
    let echo = register(&world, "echo", ModuleKind::Action, ECHO).await.unwrap();
    let spin = register(&world, "spin", ModuleKind::Action, SPIN).await.unwrap();
    let allocate = agentlog_commands::command::AllocateBudget { budget_id: "b1".into(), amount: 100 };
    agentlog_tests::send(&world.handler, allocate.into()).await;

    // More than the budget could pay for: refused before it runs.
    let before = head(&world).await;
    let refused = world.handler.execute(charged_to(run(&world, &echo, b"x", 200_000), "b1")).await.unwrap_err();
    assert_eq!(refused.code, Code::InsufficientBudget, "{refused}");
    assert_eq!(head(&world).await, before, "nothing ran, nothing is recorded");

    let request = charged_to(run(&world, &echo, b"hello", 10_000), "b1").with_idempotency_key("paid-1");
    let accepted = world.handler.execute(request.clone()).await.unwrap();
    let result = accepted.run.clone().unwrap();
    let charge = result.charge.clone().expect("the run was charged");
    assert_eq!((charge.budget_id.as_str(), charge.amount), ("b1", result.fuel_used.div_ceil(1_000)));
    assert_eq!(balance(&world, "b1").await, 100 - charge.amount);
    let debit = &world.log.read(charge.seq, 1).await.unwrap()[0];
    let run_event = &world.log.read(accepted.first_seq, 1).await.unwrap()[0];
    let Some(Body::BudgetDebited(debited)) = &debit.body else { panic!("{debit:?}") };
    assert_eq!(debited.amount, charge.amount);
    assert_eq!(debit.causation_id, run_event.event_id, "the debit names the run that caused it");
    assert_eq!(debit.correlation_id, run_event.correlation_id);

    let retry = world.handler.execute(request).await.unwrap();
    assert_eq!(retry.run, Some(result), "a retry gives the first result, its charge included");
    assert_eq!(balance(&world, "b1").await, 100 - charge.amount, "and debits nothing more");

    // A run recorded without its debit (its first attempt stopped after
    // the run): the retry charges it, once.
    let first = world.handler.execute(run(&world, &echo, b"later", 10_000).with_idempotency_key("paid-2")).await;
    assert!(first.unwrap().run.unwrap().charge.is_none());
    let settle = charged_to(run(&world, &echo, b"later", 10_000), "b1").with_idempotency_key("paid-2");
    let settled = world.handler.execute(settle.clone()).await.unwrap();
    let second_charge = settled.run.unwrap().charge.expect("charged by the retry");
    world.handler.execute(settle).await.unwrap();
    assert_eq!(balance(&world, "b1").await, 100 - charge.amount - second_charge.amount);

    // A trapped run is charged too, as failed work.
    let trapped = world.handler.execute(charged_to(run(&world, &spin, b"", 5_000), "b1")).await.unwrap_err();
    assert_eq!(trapped.code, Code::ModuleTrapped, "{trapped}");
    assert!(trapped.message.contains("5 was charged to budget b1"), "{trapped}");
    let last = &world.log.read(head(&world).await, 1).await.unwrap()[0];
    let Some(Body::BudgetDebited(debited)) = &last.body else { panic!("{last:?}") };
    assert_eq!((debited.amount, debited.outcome), (5, agentlog_core::schema::Outcome::Failed as i32));
}

/// A run takes CPU for up to its deadline; meanwhile the node's other
/// commands go on: on one async worker, a heartbeat sent while a module
/// loops until its deadline is answered before the run ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn a_long_run_does_not_hold_up_other_commands() {
    let world = Arc::new(world().await);
    let spin = register(&world, "spin", ModuleKind::Action, SPIN).await.unwrap();
    let (done, mut finished) = tokio::sync::mpsc::unbounded_channel();
    let running = {
        let (world, done) = (world.clone(), done.clone());
        tokio::spawn(async move {
            let outcome = world.handler.execute(run(&world, &spin, b"", agentlog_commands::module::MAX_FUEL)).await;
            done.send("the run").unwrap();
            outcome
        })
    };
    // Started: the sandbox counts it among the runs under way.
    let under_way = async {
        while world.sandbox.peak_running() == 0 {
            tokio::task::yield_now().await;
        }
    };
    tokio::time::timeout(std::time::Duration::from_secs(10), under_way).await.expect("the run never started");
    let heartbeat = {
        let world = world.clone();
        tokio::spawn(async move {
            let beat = agentlog_commands::command::Heartbeat { session_id: world.session.clone() };
            let outcome = world.handler.execute(Request::new(beat.into(), "test")).await;
            done.send("the heartbeat").unwrap();
            outcome
        })
    };
    assert_eq!(finished.recv().await, Some("the heartbeat"), "answered while the module still ran");
    heartbeat.await.unwrap().unwrap();
    let aborted = running.await.unwrap().unwrap_err();
    assert!(aborted.message.contains("deadline"), "{aborted}");
}
