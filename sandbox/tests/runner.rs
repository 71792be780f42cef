//! The sandbox on real modules (WAT compiled by the `wat` crate): what a
//! run returns, that it is the same every time, and that every way out of
//! the limits ends in a named trap or a refusal, never in a result.
use agentlog_sandbox::{Error, Limits, Outcome, Sandbox, TrapKind};

/// A module with the ABI: a bump allocator from 1024 and `run` with the
/// given body (its params `$ptr` and `$len`, returning an i64), plus
/// `extra` module fields.
fn module(run_body: &str, extra: &str) -> Vec<u8> {
    wat::parse_str(format!(
        r#"(module
            (memory (export "memory") 1)
            (global $next (mut i32) (i32.const 1024))
            (func (export "alloc") (param $len i32) (result i32)
              (local $p i32)
              (local.set $p (global.get $next))
              (global.set $next (i32.add (global.get $next) (local.get $len)))
              (local.get $p))
            (func (export "run") (param $ptr i32) (param $len i32) (result i64)
              {run_body})
            {extra})"#
    ))
    .unwrap()
}

/// `run` returning its input as its output.
fn echo() -> Vec<u8> {
    module(
        "(i64.or (i64.shl (i64.extend_i32_u (local.get $ptr)) (i64.const 32)) (i64.extend_i32_u (local.get $len)))",
        "",
    )
}

fn sandbox() -> Sandbox {
    Sandbox::new(Limits::default()).unwrap()
}

fn refusal(result: agentlog_sandbox::Result<impl std::fmt::Debug>) -> String {
    match result {
        Err(e @ Error::Refused { .. }) => {
            assert_eq!(e.kind(), agentlog_core::Kind::Invalid);
            e.to_string()
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[test]
fn a_run_returns_its_output_and_the_same_fuel_every_time() {
    let sandbox = sandbox();
    let first = sandbox.run(&echo(), b"hello, ledger", 1_000_000).unwrap();
    let Outcome::Completed { output, output_hash, fuel_used } = &first else { panic!("{first:?}") };
    assert_eq!(output, b"hello, ledger");
    assert_eq!(*output_hash, blake3::hash(b"hello, ledger").to_hex().to_string());
    assert!(*fuel_used > 0 && *fuel_used < 1_000_000, "{fuel_used}");
    // The same module, input and fuel: the same outcome, from a new sandbox too.
    assert_eq!(sandbox.run(&echo(), b"hello, ledger", 1_000_000).unwrap(), first);
    assert_eq!(Sandbox::new(Limits::default()).unwrap().run(&echo(), b"hello, ledger", 1_000_000).unwrap(), first);
    assert_eq!(sandbox.engine_hash(), Sandbox::new(Limits::default()).unwrap().engine_hash());
}

#[test]
fn the_fuel_a_run_records_leaves_out_instantiation() {
    let burn = r#"(func $burn (local $i i32)
          (loop $again
            (local.set $i (i32.add (local.get $i) (i32.const 1)))
            (br_if $again (i32.lt_u (local.get $i) (i32.const 1000)))))
        (start $burn)"#;
    let echo_body =
        "(i64.or (i64.shl (i64.extend_i32_u (local.get $ptr)) (i64.const 32)) (i64.extend_i32_u (local.get $len)))";
    let sandbox = sandbox();
    let plain = sandbox.run(&echo(), b"input", 1_000_000).unwrap();
    let started = sandbox.run(&module(echo_body, burn), b"input", 1_000_000).unwrap();
    assert!(matches!(plain, Outcome::Completed { .. }), "{plain:?}");
    assert_eq!(started, plain, "a start function's work is not the run's");
    // A start function past the fuel is the run's trap.
    let spin = module(echo_body, "(func $spin (loop $forever (br $forever))) (start $spin)");
    assert_eq!(
        sandbox.run(&spin, b"input", 10_000).unwrap(),
        Outcome::Trapped { trap: TrapKind::OutOfFuel, fuel_used: 10_000 }
    );
}

#[test]
fn a_loop_runs_out_of_fuel_at_exactly_its_limit() {
    let spin = module("(loop $forever (br $forever)) (i64.const 0)", "");
    let sandbox = sandbox();
    let outcome = sandbox.run(&spin, b"", 50_000).unwrap();
    assert_eq!(outcome, Outcome::Trapped { trap: TrapKind::OutOfFuel, fuel_used: 50_000 });
    assert_eq!(sandbox.run(&spin, b"", 50_000).unwrap(), outcome);
}

#[test]
fn a_run_past_its_deadline_is_aborted_with_no_result() {
    let spin = module("(loop $forever (br $forever)) (i64.const 0)", "");
    let sandbox = Sandbox::new(Limits { deadline_ticks: 3, tick_ms: 10, ..Limits::default() }).unwrap();
    assert!(matches!(sandbox.run(&spin, b"", u64::MAX / 2).unwrap(), Outcome::DeadlineExceeded { .. }));
}

#[test]
fn every_way_past_the_limits_is_a_named_trap() {
    let sandbox = sandbox();
    let fuel = 10_000_000;
    let trap = |body: &str, extra: &str| match sandbox.run(&module(body, extra), b"input", fuel).unwrap() {
        Outcome::Trapped { trap, .. } => trap,
        other => panic!("{body}: {other:?}"),
    };
    // Memory grown past the cap (256 pages), and a table.
    assert_eq!(trap("(drop (memory.grow (i32.const 1000))) (i64.const 0)", ""), TrapKind::ResourceLimit);
    assert_eq!(
        trap("(drop (table.grow $t (ref.null func) (i32.const 100000))) (i64.const 0)", "(table $t 1 funcref)"),
        TrapKind::ResourceLimit
    );
    // Outside its memory.
    assert_eq!(trap("(i32.store (i32.const -16) (i32.const 1)) (i64.const 0)", ""), TrapKind::MemoryOutOfBounds);
    // Recursion without end.
    assert_eq!(trap("(call $down) (i64.const 0)", "(func $down (call $down))"), TrapKind::StackOverflow);
    assert_eq!(trap("unreachable", ""), TrapKind::Unreachable);
    assert_eq!(
        trap("(drop (i32.div_u (i32.const 1) (i32.const 0))) (i64.const 0)", ""),
        TrapKind::IntegerDivisionByZero
    );
    // An output that is not inside its memory, or too large.
    assert_eq!(trap("(i64.const 0x00ffffff00000010)", ""), TrapKind::BadOutput);
    assert_eq!(trap("(i64.const 0x0000000000100000)", ""), TrapKind::BadOutput);
}

#[test]
fn nan_results_are_canonical_so_every_machine_gets_the_same_bits() {
    // 0/0 and an arithmetic NaN with a payload: both the canonical quiet NaN.
    let nan = module(
        "(f32.store (i32.const 0) (f32.div (f32.const 0) (f32.const 0)))
         (f32.store (i32.const 4) (f32.add (f32.const nan:0x200001) (f32.const 1)))
         (i64.const 8)",
        "",
    );
    let Outcome::Completed { output, .. } = sandbox().run(&nan, b"", 1_000_000).unwrap() else { panic!() };
    assert_eq!(output, [0x7fc0_0000u32.to_le_bytes(), 0x7fc0_0000u32.to_le_bytes()].concat());
}

#[test]
fn a_module_is_refused_naming_what_is_wrong() {
    let sandbox = sandbox();
    let imports = wat::parse_str(
        r#"(module (import "wasi_snapshot_preview1" "fd_write" (func (param i32 i32 i32 i32) (result i32))))"#,
    )
    .unwrap();
    let refused = refusal(sandbox.validate(&imports));
    assert!(refused.contains("`wasi_snapshot_preview1`.`fd_write`"), "{refused}");
    let big_memory = wat::parse_str(r#"(module (memory (export "memory") 1000))"#).unwrap();
    let refused = refusal(sandbox.validate(&big_memory));
    assert!(refused.contains("1000 pages") && refused.contains("256 pages"), "{refused}");
    let no_run = wat::parse_str(
        r#"(module (memory (export "memory") 1) (func (export "alloc") (param i32) (result i32) (i32.const 0)))"#,
    )
    .unwrap();
    let refused = refusal(sandbox.validate(&no_run));
    assert!(refused.contains("`run`"), "{refused}");
    let wrong_type = wat::parse_str(
        r#"(module (memory (export "memory") 1)
             (func (export "alloc") (param i32) (result i32) (i32.const 0))
             (func (export "run") (param i32 i32) (result i32) (i32.const 0)))"#,
    )
    .unwrap();
    let refused = refusal(sandbox.validate(&wrong_type));
    assert!(refused.contains("its `run` is") && refused.contains("the ABI says (i32, i32) -> (i64)"), "{refused}");
    assert!(sandbox.validate(&echo()).is_ok());
    let refused = refusal(sandbox.validate(b"\0asm not really"));
    assert!(refused.contains("not a valid WASM module"), "{refused}");
    let small = Sandbox::new(Limits { max_module_bytes: 64, ..Limits::default() }).unwrap();
    let refused = refusal(small.validate(&echo()));
    assert!(refused.contains("more than the 64"), "{refused}");
    let refused = refusal(sandbox.run(&echo(), &vec![0; 300 * 1024], 1_000));
    assert!(refused.contains("input"), "{refused}");
}

#[test]
fn modules_are_compiled_once_by_content_and_the_cache_is_bounded() {
    let sandbox = Sandbox::new(Limits { cached_modules: 1, ..Limits::default() }).unwrap();
    let (a, b) = (echo(), module("(i64.const 0)", ""));
    for _ in 0..3 {
        sandbox.run(&a, b"x", 100_000).unwrap();
    }
    assert_eq!(sandbox.compilations(), 1);
    sandbox.run(&b, b"x", 100_000).unwrap();
    sandbox.run(&a, b"x", 100_000).unwrap();
    assert_eq!(sandbox.compilations(), 3, "one module kept: a was dropped for b, then compiled again");
}
