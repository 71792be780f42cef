//! Modules in WAT that the tests, the benchmark and the CLI's tests run
//! (the echo module is docs/modules/echo.wat, which README's tour
//! registers; the policies are files in docs/policies/).

/// Echoes its input: the smallest module the ABI allows.
pub const ECHO: &str = include_str!("../../docs/modules/echo.wat");

/// Loops for ever: it runs out of fuel (or past its deadline).
pub const SPIN: &str = r#"(module
  (memory (export "memory") 1)
  (func (export "alloc") (param i32) (result i32) (i32.const 1024))
  (func (export "run") (param i32 i32) (result i64) (loop $l (br $l)) (i64.const 0)))"#;
