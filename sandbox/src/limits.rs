//! What a module may be and use: fixed for a sandbox, so a run's outcome
//! depends on the module, the input and the fuel alone.

/// A WASM page.
pub const PAGE_BYTES: u64 = 64 * 1024;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// A module's size. An event is at most 1 MiB and a module is recorded
    /// whole in one (`sandbox_module_registered`), with room for the rest.
    pub max_module_bytes: usize,
    /// Each linear memory's size, declared or grown to.
    pub max_memory_pages: u64,
    /// Each table's elements.
    pub max_table_elements: usize,
    /// Bytes of input and of output.
    pub max_io_bytes: usize,
    /// WASM call stack (bytes of the host stack wasmtime lets it use).
    pub max_stack_bytes: usize,
    /// Epoch ticks a run may take (one a [`Limits::tick_ms`]) before it is
    /// aborted.
    pub deadline_ticks: u64,
    pub tick_ms: u64,
    /// Compiled modules kept in memory.
    pub cached_modules: usize,
    /// Runs at once; more wait their turn. With the memory cap, what bounds
    /// the memory runs take however many are asked for at once.
    pub max_running: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_module_bytes: agentlog_commands::module::MAX_MODULE_BYTES,
            max_memory_pages: 256, // 16 MiB
            max_table_elements: 10_000,
            max_io_bytes: agentlog_commands::module::MAX_IO_BYTES,
            max_stack_bytes: 512 * 1024,
            deadline_ticks: 100,
            tick_ms: 10,
            cached_modules: 64,
            max_running: 8,
        }
    }
}
