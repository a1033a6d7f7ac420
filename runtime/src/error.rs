//! Errors: [`RuntimeError`] for loading modules and starting instances,
//! [`ProcessError`] for what went wrong with one input record.

use std::path::PathBuf;

/// Loading a module or starting an instance failed.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// The bytes are not a processor: not Wasm, a core module instead of a
    /// component, a component that does not implement the `eddy:processor` world,
    /// or one that imports what Eddy does not provide. The message says which.
    #[error("invalid processor module: {0}")]
    InvalidModule(String),
    /// The wasmtime engine could not be configured (a bug or an unsupported host).
    #[error("cannot set up the Wasm engine: {0}")]
    Engine(String),
    /// The compiled-module cache directory could not be created.
    #[error("cannot use the module cache directory {path}: {source}")]
    CacheDir {
        /// The directory.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// Instantiating the module failed (for example its initial memory is over
    /// the memory limit).
    #[error("cannot instantiate the processor: {0}")]
    Instantiate(String),
    /// The module's `init` returned an error, trapped or timed out. For an error
    /// return the message is the module's own (say, a missing parameter).
    #[error("processor init failed: {0}")]
    Init(String),
}

/// Why one input record produced no outputs. The worker applies the processor's
/// error policy (dead-letter, skip or stop) to that record alone.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProcessError {
    /// The call ran past [`ProcessorLimits::call_timeout`](crate::ProcessorLimits::call_timeout).
    #[error("timed out")]
    Timeout,
    /// The module tried to grow its memory past
    /// [`ProcessorLimits::max_memory_bytes`](crate::ProcessorLimits::max_memory_bytes).
    #[error("memory limit exceeded")]
    MemoryLimit,
    /// The module trapped: a panic (the message starts with the panic's
    /// `panicked at ...`), `unreachable`, an out-of-bounds access, a call to a
    /// WASI function the sandbox denies, a state limit, and so on.
    #[error("trapped: {0}")]
    Trap(String),
    /// The module returned an error for this record; the message is its own.
    #[error("processor error: {0}")]
    Guest(String),
}

impl ProcessError {
    /// A short stable name for the kind of error (for dead-letter headers and
    /// metrics): `timeout`, `memory-limit`, `trap` or `error`.
    pub fn kind(&self) -> &'static str {
        match self {
            ProcessError::Timeout => "timeout",
            ProcessError::MemoryLimit => "memory-limit",
            ProcessError::Trap(_) => "trap",
            ProcessError::Guest(_) => "error",
        }
    }
}
