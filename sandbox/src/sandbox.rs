//! The runner: one wasmtime engine configured for determinism, a bounded
//! cache of compiled modules by content hash, and a thread that advances
//! the engine's epoch, so a run past its wall-clock deadline is aborted.
//!
//! Deterministic configuration: fuel metering for all work, NaN
//! canonicalisation, relaxed SIMD off, threads off (not built in), one
//! 32-bit memory and table of fixed caps, a fixed WASM stack, no host
//! function at all.
//! Fuel, output and traps are then functions of the module, the input and
//! the fuel limit; only whether the deadline passed depends on the
//! machine, and such a run yields no result ([`Outcome::DeadlineExceeded`]).
use std::collections::{HashMap, VecDeque};
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::Duration;

use wasmtime::{
    Config, Engine, Instance, InstanceAllocationStrategy, Module, PoolingAllocationConfig, ResourceLimiter, Store, Trap,
};

use crate::error::{Error, Result};
use crate::limits::{Limits, PAGE_BYTES};
use crate::validate::{self, Validated};

/// How a run that produced no output ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TrapKind {
    OutOfFuel,
    /// A memory or table grown past the sandbox's cap.
    ResourceLimit,
    StackOverflow,
    MemoryOutOfBounds,
    Unreachable,
    IntegerDivisionByZero,
    IntegerOverflow,
    BadConversionToInteger,
    IndirectCall,
    /// `run` returned an output that is not inside its memory, or larger
    /// than the output limit.
    BadOutput,
    /// Any other trap, by wasmtime's description.
    Other(String),
}

impl TrapKind {
    /// Its name in events (`sandbox_run_trapped.trap`).
    pub fn name(&self) -> &str {
        match self {
            TrapKind::OutOfFuel => "out_of_fuel",
            TrapKind::ResourceLimit => "resource_limit",
            TrapKind::StackOverflow => "stack_overflow",
            TrapKind::MemoryOutOfBounds => "memory_out_of_bounds",
            TrapKind::Unreachable => "unreachable",
            TrapKind::IntegerDivisionByZero => "integer_division_by_zero",
            TrapKind::IntegerOverflow => "integer_overflow",
            TrapKind::BadConversionToInteger => "bad_conversion_to_integer",
            TrapKind::IndirectCall => "indirect_call",
            TrapKind::BadOutput => "bad_output",
            TrapKind::Other(what) => what,
        }
    }
}

/// How a run ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    Completed {
        output: Vec<u8>,
        /// blake3 of the output, hex.
        output_hash: String,
        fuel_used: u64,
    },
    Trapped {
        trap: TrapKind,
        fuel_used: u64,
    },
    /// Aborted at its wall-clock deadline: no result, and nothing about
    /// it is deterministic but that it was aborted (not even the fuel it
    /// had used by then).
    DeadlineExceeded {
        fuel_used: u64,
    },
}

/// The store's limits; remembers whether a growth was refused, so the
/// trap it causes is named [`TrapKind::ResourceLimit`].
struct Limiter {
    max_memory_bytes: usize,
    max_table_elements: usize,
    refused: bool,
}

impl ResourceLimiter for Limiter {
    fn memory_growing(&mut self, _current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        if desired > self.max_memory_bytes {
            self.refused = true;
            return Err(wasmtime::format_err!("memory grown to {desired} bytes, past the sandbox's cap"));
        }
        Ok(true)
    }

    fn table_growing(&mut self, _current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        if desired > self.max_table_elements {
            self.refused = true;
            return Err(wasmtime::format_err!("table grown to {desired} elements, past the sandbox's cap"));
        }
        Ok(true)
    }

    fn instances(&self) -> usize {
        1
    }

    fn tables(&self) -> usize {
        1
    }

    fn memories(&self) -> usize {
        1
    }
}

/// Compiled modules by content hash, the oldest compiled dropped first.
#[derive(Default)]
struct Cache {
    modules: HashMap<String, (Module, Validated)>,
    order: VecDeque<String>,
}

/// The most a module's instance state (its globals, function references
/// and the like, not its memory) may take in a pool slot.
const MAX_INSTANCE_BYTES: usize = 4 << 20;

/// Bytes of a slot's memory (and table) kept mapped between runs.
const KEEP_RESIDENT_BYTES: usize = 1 << 20;

/// How many runs are under way, and the most there ever were at once.
#[derive(Default)]
struct Running {
    now: Mutex<(usize, usize)>,
    freed: Condvar,
}

/// A turn to run, given back when dropped.
struct Turn<'a>(&'a Running);

impl Running {
    fn take(&self, max: usize) -> Turn<'_> {
        let mut now = self.now.lock().unwrap_or_else(PoisonError::into_inner);
        while now.0 >= max.max(1) {
            now = self.freed.wait(now).unwrap_or_else(PoisonError::into_inner);
        }
        now.0 += 1;
        now.1 = now.1.max(now.0);
        Turn(self)
    }
}

impl Drop for Turn<'_> {
    fn drop(&mut self) {
        self.0.now.lock().unwrap_or_else(PoisonError::into_inner).0 -= 1;
        self.0.freed.notify_one();
    }
}

pub struct Sandbox {
    engine: Engine,
    limits: Limits,
    cache: Mutex<Cache>,
    running: Running,
    compiled: AtomicU64,
    stop: Arc<AtomicBool>,
    ticker: Option<std::thread::JoinHandle<()>>,
}

impl std::fmt::Debug for Sandbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sandbox").field("limits", &self.limits).finish_non_exhaustive()
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(ticker) = self.ticker.take() {
            let _ = ticker.join();
        }
    }
}

impl Sandbox {
    pub fn new(limits: Limits) -> Result<Sandbox> {
        let mut config = Config::new();
        config
            .consume_fuel(true)
            .epoch_interruption(true)
            .cranelift_nan_canonicalization(true)
            .wasm_relaxed_simd(false)
            .wasm_multi_memory(false)
            .wasm_memory64(false)
            .max_wasm_stack(limits.max_stack_bytes);
        // One preallocated slot per run allowed at once (`max_running`):
        // instantiating takes a slot instead of mapping fresh memory.
        let slots = u32::try_from(limits.max_running.max(1)).unwrap_or(u32::MAX);
        let mut pool = PoolingAllocationConfig::new();
        pool.total_core_instances(slots)
            .total_memories(slots)
            .total_tables(slots)
            .max_memories_per_module(1)
            .max_tables_per_module(1)
            .max_core_instance_size(MAX_INSTANCE_BYTES)
            .max_memory_size(usize::try_from(limits.max_memory_pages * PAGE_BYTES).unwrap_or(usize::MAX))
            .table_elements(limits.max_table_elements)
            // A small module's memory and table are zeroed in place after a
            // run rather than handed back to the kernel and faulted in
            // again by the next.
            .linear_memory_keep_resident(KEEP_RESIDENT_BYTES)
            .table_keep_resident(KEEP_RESIDENT_BYTES);
        config.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
        let engine = Engine::new(&config).map_err(Error::engine("configuring the engine"))?;
        let stop = Arc::new(AtomicBool::new(false));
        let ticker = std::thread::Builder::new()
            .name("sandbox-epoch".into())
            .spawn({
                let (engine, stop, tick) = (engine.clone(), stop.clone(), Duration::from_millis(limits.tick_ms));
                move || {
                    while !stop.load(Ordering::Relaxed) {
                        std::thread::sleep(tick);
                        engine.increment_epoch();
                    }
                }
            })
            .map_err(|e| Error::Engine { operation: "starting the epoch thread", reason: e.to_string() })?;
        Ok(Sandbox {
            engine,
            limits,
            cache: Mutex::default(),
            running: Running::default(),
            compiled: AtomicU64::new(0),
            stop,
            ticker: Some(ticker),
        })
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// What a compiled module depends on of this engine (its version and
    /// configuration), hex: recorded with each run, so a replay knows
    /// whether it re-executes on the same engine.
    pub fn engine_hash(&self) -> String {
        let mut hasher = std::hash::DefaultHasher::new();
        self.engine.precompile_compatibility_hash().hash(&mut hasher);
        format!("{:016x}", hasher.finish())
    }

    /// The most runs there were at once so far (at most
    /// [`Limits::max_running`]).
    pub fn peak_running(&self) -> usize {
        self.running.now.lock().unwrap_or_else(PoisonError::into_inner).1
    }

    /// Whether the module whose blake3 is `hash` is compiled and cached.
    pub fn is_compiled(&self, hash: &str) -> bool {
        self.cache.lock().unwrap_or_else(PoisonError::into_inner).modules.contains_key(hash)
    }

    /// Modules compiled so far (cache misses).
    pub fn compilations(&self) -> u64 {
        self.compiled.load(Ordering::Relaxed)
    }

    /// Accepts `bytes` as a module or refuses it, naming why
    /// ([`crate::validate`]); an accepted one is compiled and cached.
    pub fn validate(&self, bytes: &[u8]) -> Result<Validated> {
        self.module(blake3::hash(bytes).to_hex().as_ref(), bytes).map(|(_, validated)| validated)
    }

    /// The compiled module `bytes`, whose blake3 is `hash`.
    fn module(&self, hash: &str, bytes: &[u8]) -> Result<(Module, Validated)> {
        validate::size(bytes, &self.limits)?;
        let cached = || self.cache.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(found) = cached().modules.get(hash) {
            return Ok(found.clone());
        }
        validate::declared(bytes, &self.limits)?;
        let module = Module::from_binary(&self.engine, bytes)
            .map_err(|e| Error::refused(format!("it is not a valid WASM module this sandbox runs: {e:#}")))?;
        self.compiled.fetch_add(1, Ordering::Relaxed);
        let validated = validate::check(&module, hash, bytes)?;
        let mut cache = cached();
        if !cache.modules.contains_key(hash) {
            while cache.order.len() >= self.limits.cached_modules.max(1) {
                let oldest = cache.order.pop_front().expect("not empty");
                cache.modules.remove(&oldest);
            }
            cache.order.push_back(hash.to_owned());
            cache.modules.insert(hash.to_owned(), (module.clone(), validated.clone()));
        }
        Ok((module, validated))
    }

    /// Runs `module` (its bytes; compiled once, by content hash) on
    /// `input` with at most `fuel` units of fuel.
    pub fn run(&self, module: &[u8], input: &[u8], fuel: u64) -> Result<Outcome> {
        self.run_hashed(blake3::hash(module).to_hex().as_ref(), module, input, fuel)
    }

    /// [`Sandbox::run`] on a module whose blake3 (hex) the caller knows,
    /// as a registered module's is: the bytes are not hashed again.
    pub fn run_hashed(&self, module_hash: &str, module: &[u8], input: &[u8], fuel: u64) -> Result<Outcome> {
        if input.len() > self.limits.max_io_bytes {
            return Err(Error::refused(format!(
                "the input is {} bytes, more than the {} a run takes",
                input.len(),
                self.limits.max_io_bytes
            )));
        }
        let (module, _) = self.module(module_hash, module)?;
        // The deadline counts from here: waiting for a turn is not running.
        let _turn = self.running.take(self.limits.max_running);
        let limiter = Limiter {
            max_memory_bytes: usize::try_from(self.limits.max_memory_pages * PAGE_BYTES).unwrap_or(usize::MAX),
            max_table_elements: self.limits.max_table_elements,
            refused: false,
        };
        let mut store = Store::new(&self.engine, limiter);
        store.limiter(|limiter| limiter);
        store.set_fuel(fuel).map_err(Error::engine("setting the fuel"))?;
        store.set_epoch_deadline(self.limits.deadline_ticks);
        store.epoch_deadline_trap();
        let ended = |store: &Store<Limiter>, error: wasmtime::Error| ended(store, fuel, &error);
        // Instantiation (data segments, a start function) has the same
        // fuel, but what it uses is not the run's: the fuel a result
        // records is the run's alone, so a change in how an engine charges
        // instantiation cannot change it.
        let instance = match Instance::new(&mut store, &module, &[]) {
            Ok(instance) => instance,
            Err(e) => return Ok(ended(&store, e)),
        };
        store.set_fuel(fuel).map_err(Error::engine("setting the fuel"))?;
        let memory = instance.get_memory(&mut store, "memory").expect("validated: it exports `memory`");
        let alloc = instance
            .get_typed_func::<i32, i32>(&mut store, "alloc")
            .map_err(Error::engine("finding `alloc`, which validation found"))?;
        let run = instance
            .get_typed_func::<(i32, i32), i64>(&mut store, "run")
            .map_err(Error::engine("finding `run`, which validation found"))?;
        let len = i32::try_from(input.len()).expect("input within max_io_bytes");
        let ptr = match alloc.call(&mut store, len) {
            Ok(ptr) => ptr,
            Err(e) => return Ok(ended(&store, e)),
        };
        if memory.write(&mut store, ptr as u32 as usize, input).is_err() {
            return Ok(Outcome::Trapped { trap: TrapKind::MemoryOutOfBounds, fuel_used: used(&store, fuel) });
        }
        let packed = match run.call(&mut store, (ptr, len)) {
            Ok(packed) => packed as u64,
            Err(e) => return Ok(ended(&store, e)),
        };
        let (out_ptr, out_len) = ((packed >> 32) as usize, (packed & 0xffff_ffff) as usize);
        let fuel_used = used(&store, fuel);
        if out_len > self.limits.max_io_bytes {
            return Ok(Outcome::Trapped { trap: TrapKind::BadOutput, fuel_used });
        }
        let mut output = vec![0; out_len];
        if memory.read(&store, out_ptr, &mut output).is_err() {
            return Ok(Outcome::Trapped { trap: TrapKind::BadOutput, fuel_used });
        }
        let output_hash = blake3::hash(&output).to_hex().to_string();
        Ok(Outcome::Completed { output, output_hash, fuel_used })
    }
}

fn used(store: &Store<Limiter>, fuel: u64) -> u64 {
    fuel - store.get_fuel().unwrap_or(0)
}

/// What a run that stopped with `error` is recorded as.
fn ended(store: &Store<Limiter>, fuel: u64, error: &wasmtime::Error) -> Outcome {
    let fuel_used = used(store, fuel);
    if store.data().refused {
        return Outcome::Trapped { trap: TrapKind::ResourceLimit, fuel_used };
    }
    let trap = match error.downcast_ref::<Trap>() {
        Some(Trap::Interrupt) => return Outcome::DeadlineExceeded { fuel_used },
        Some(Trap::OutOfFuel) => TrapKind::OutOfFuel,
        Some(Trap::StackOverflow) => TrapKind::StackOverflow,
        Some(Trap::MemoryOutOfBounds) => TrapKind::MemoryOutOfBounds,
        Some(Trap::UnreachableCodeReached) => TrapKind::Unreachable,
        Some(Trap::IntegerDivisionByZero) => TrapKind::IntegerDivisionByZero,
        Some(Trap::IntegerOverflow) => TrapKind::IntegerOverflow,
        Some(Trap::BadConversionToInteger) => TrapKind::BadConversionToInteger,
        Some(Trap::IndirectCallToNull | Trap::BadSignature | Trap::TableOutOfBounds) => TrapKind::IndirectCall,
        Some(other) => TrapKind::Other(other.to_string()),
        None => TrapKind::Other(format!("{error:#}")),
    };
    Outcome::Trapped { trap, fuel_used }
}
