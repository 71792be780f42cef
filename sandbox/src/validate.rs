//! What a module must be to be accepted: within the size limit, importing
//! nothing (the host API is empty: no time, randomness, files or network
//! can reach a module), one memory declared within the cap, and the ABI's
//! exports with their types. Each refusal names what was wrong.
use wasmtime::{ExternType, Module, ValType};

use crate::error::{Error, Result};
use crate::limits::Limits;

/// A module accepted: its content hash and what it declares.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Validated {
    /// blake3 of its bytes, hex.
    pub hash: String,
    pub bytes: usize,
    /// Its memory's declared minimum, in pages.
    pub memory_pages: u64,
}

/// The size check, before anything is parsed.
pub(crate) fn size(bytes: &[u8], limits: &Limits) -> Result<()> {
    if bytes.len() > limits.max_module_bytes {
        return Err(Error::refused(format!(
            "it is {} bytes, more than the {} a module may be (it is recorded whole in one event)",
            bytes.len(),
            limits.max_module_bytes
        )));
    }
    Ok(())
}

fn func_type(module: &Module, name: &str, params: &[ValType], results: &[ValType]) -> Result<()> {
    let want = || format!("({}) -> ({})", names(params), names(results));
    let Some(ExternType::Func(f)) = module.get_export(name) else {
        return Err(Error::refused(format!("it does not export the function `{name}` {}", want())));
    };
    let same = |got: Vec<ValType>, want: &[ValType]| {
        got.len() == want.len() && got.iter().zip(want).all(|(g, w)| ValType::eq(g, w))
    };
    if !same(f.params().collect(), params) || !same(f.results().collect(), results) {
        return Err(Error::refused(format!("its `{name}` is {f}, the ABI says {}", want())));
    }
    Ok(())
}

fn names(types: &[ValType]) -> String {
    types.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ")
}

/// The checks made before compiling, from the module's sections: no
/// import, and each memory 32-bit, unshared and declared within the cap.
/// (A module refused here costs no compilation; the pooling allocator
/// would refuse such a memory with its own words.) Malformed sections are
/// left to the compiler, which names what is wrong.
pub(crate) fn declared(bytes: &[u8], limits: &Limits) -> Result<()> {
    for payload in wasmparser::Parser::new(0).parse_all(bytes) {
        match payload {
            Ok(wasmparser::Payload::ImportSection(imports)) => {
                if let Some(Ok(import)) = imports.into_imports().next() {
                    return Err(no_imports(import.module, import.name));
                }
            }
            Ok(wasmparser::Payload::MemorySection(memories)) => {
                for memory in memories.into_iter().flatten() {
                    memory_within(memory.memory64 || memory.shared, memory.initial, limits)?;
                }
            }
            Ok(wasmparser::Payload::CodeSectionStart { .. }) | Err(_) => break,
            Ok(_) => {}
        }
    }
    Ok(())
}

fn no_imports(module: &str, name: &str) -> Error {
    Error::refused(format!(
        "it imports `{module}`.`{name}`, and the sandbox offers no host functions: a module computes on its input alone"
    ))
}

fn memory_within(wide_or_shared: bool, pages: u64, limits: &Limits) -> Result<()> {
    if wide_or_shared {
        return Err(Error::refused("its memory is 64-bit or shared; only a 32-bit unshared memory is allowed"));
    }
    if pages > limits.max_memory_pages {
        return Err(Error::refused(format!(
            "its memory starts at {pages} pages, more than the {} pages ({} MiB) a module may use",
            limits.max_memory_pages,
            limits.max_memory_pages * crate::limits::PAGE_BYTES / (1024 * 1024)
        )));
    }
    Ok(())
}

/// The checks of a compiled module: the ABI's exports with their types
/// (its size, imports and memories were checked before it was compiled,
/// by [`declared`]; `hash` is its blake3, known to the caller).
pub(crate) fn check(module: &Module, hash: &str, bytes: &[u8]) -> Result<Validated> {
    let Some(ExternType::Memory(memory)) = module.get_export("memory") else {
        return Err(Error::refused("it does not export a memory named `memory`"));
    };
    func_type(module, "alloc", &[ValType::I32], &[ValType::I32])?;
    func_type(module, "run", &[ValType::I32, ValType::I32], &[ValType::I64])?;
    Ok(Validated { hash: hash.to_owned(), bytes: bytes.len(), memory_pages: memory.minimum() })
}
