//! eddy-runtime: the sandboxed host that runs processors, Wasm components that
//! implement the `eddy:processor` WIT world (`sdk/wit/processor.wit`, written
//! with the `eddy-processor` SDK).
//!
//! * [`Runtime`] (`engine.rs`): one wasmtime engine per process, with the
//!   component model, `concurrency_support(false)` (component calls ~3x
//!   cheaper) and epoch interruption driven by a ticker thread. [`Runtime::load`]
//!   validates a module against the world and compiles it once per version:
//!   modules are cached in memory while in use and, given a directory, on disk
//!   (`module.rs`), so a restart does not recompile.
//! * [`Instance`] (`instance.rs`): one per processor and input partition; a
//!   store with the module pre-linked, its `init` run with the deployment's
//!   parameters. [`Instance::process`] takes a batch and returns one outcome per
//!   record. The state store is read through a [`StateView`] of the committed
//!   state; writes collect in the instance until
//!   [`Instance::take_state_writes`], so the worker commits them atomically with
//!   the input offsets.
//! * The sandbox (`sandbox.rs`, `limits.rs`): no files, sockets, environment or
//!   clocks; a deadline per call, a memory cap, bounded state writes and logs,
//!   all in [`ProcessorLimits`]. An infinite loop, a memory bomb, a trap, a
//!   panic or an error return ends that call only, with a [`ProcessError`]
//!   naming it; after a trap the instance is re-created, and a failed batch is
//!   retried one record per call so that only the bad record fails.
//!
//! The boundary is crossed once per batch: `process: func(batch:
//! input-batch) -> output-batch`, keys and values in one buffer per batch
//! (see `benches/boundary.rs` for why).
//!
//! ```no_run
//! use eddy_runtime::{InputRecord, Instance, ProcessorLimits, Runtime, TracingLog};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let runtime = Runtime::new(Some("/var/lib/eddy/module-cache".into()))?;
//! let module = runtime.load(&std::fs::read("uppercase.wasm")?)?;
//! let log = TracingLog { processor: "upper".into() };
//! let mut instance = Instance::new(&module, ProcessorLimits::default(), vec![], Box::new(()), Box::new(log))?;
//! let records = [InputRecord { offset: 0, timestamp_ms: 0, key: None, value: b"hi", headers: &[] }];
//! for outcome in instance.process("in", 0, &records) {
//!     match outcome {
//!         Ok(outputs) => { /* produce them to the output topic */ }
//!         Err(e) => { /* dead-letter, skip or stop, by policy: e.kind(), e.to_string() */ }
//!     }
//! }
//! let state_writes = instance.take_state_writes(); // commit with the input offsets
//! # Ok(()) }
//! ```
//!
//! A call runs on the caller's thread for up to the call timeout: workers
//! should call [`Instance::process`] from a thread of their own (or
//! `spawn_blocking`), not from an async task. (It is safe there too: the
//! sandbox's WASI never blocks on a Tokio runtime.)

mod engine;
mod error;
mod instance;
mod limits;
mod module;
mod sandbox;
pub mod worker;

/// Host bindings of the `eddy:processor` world.
mod bindings {
    wasmtime::component::bindgen!({
        path: "../sdk/wit",
        world: "processor",
        imports: { default: trappable },
    });
}

pub use engine::{Runtime, EPOCH_TICK};
pub use error::{ProcessError, RuntimeError};
pub use instance::{InputRecord, Instance, LogLevel, LogSink, OutputRecord, RecordOutcome, StateView, TracingLog};
pub use limits::ProcessorLimits;
pub use module::{Module, ModuleId, ModuleOrigin};
pub use worker::{Worker, WorkerConfig, WorkerError};

/// The version of the `eddy:processor` WIT package this runtime implements.
pub const WORLD_VERSION: &str = "0.1.0";

// Workers share the runtime and modules across threads and may move instances.
const _: () = {
    fn send_sync<T: Send + Sync>() {}
    fn send<T: Send>() {}
    #[allow(dead_code)]
    fn check() {
        send_sync::<Runtime>();
        send_sync::<Module>();
        send::<Instance>();
    }
};
