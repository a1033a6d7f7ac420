//! [`Runtime`]: the wasmtime engine configured for processors, the epoch ticker
//! that enforces call deadlines, and the caches of compiled modules.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::thread::JoinHandle;
use std::time::Duration;

use wasmtime::{Config, Engine, OptLevel};

use crate::error::RuntimeError;
use crate::module::{Module, ModuleId};

/// How often the engine's epoch advances: the resolution of call deadlines.
/// A call gets its timeout rounded up to whole ticks plus one (it may start
/// just before a tick).
pub const EPOCH_TICK: Duration = Duration::from_millis(5);

/// The number of epoch ticks a call with `timeout` may run.
pub(crate) fn deadline_ticks(timeout: Duration) -> u64 {
    let tick = EPOCH_TICK.as_nanos();
    (timeout.as_nanos().div_ceil(tick) as u64).max(1) + 1
}

/// The processor runtime: one per process, shared by all workers.
///
/// Holds the wasmtime engine (component model, `concurrency_support(false)`,
/// epoch interruption), a background thread that advances the epoch every
/// [`EPOCH_TICK`] (stopped when the runtime is dropped), the in-memory table of
/// loaded modules, and optionally a directory of compiled modules so that a
/// restart does not recompile.
pub struct Runtime {
    pub(crate) engine: Engine,
    cache_dir: Option<PathBuf>,
    loaded: Mutex<HashMap<ModuleId, Weak<Module>>>,
    /// Shared with every module, so deadlines keep working while any instance
    /// lives, even after the runtime is dropped.
    pub(crate) ticker: Arc<Ticker>,
}

impl Runtime {
    /// A runtime. With `EDDY_WASM_PERFMAP` set in the environment, compiled
    /// functions are listed in /tmp/perf-<pid>.map for `perf`. `cache_dir`, if given, holds compiled modules (created if
    /// missing; a corrupt or outdated entry is recompiled and replaced). It must
    /// be private to this runtime: loading a compiled module trusts its
    /// contents, which are checked against a SHA-256 trailer before use.
    pub fn new(cache_dir: Option<PathBuf>) -> Result<Self, RuntimeError> {
        let mut config = Config::new();
        config
            .wasm_component_model(true)
            // Calls into a component cost ~3x less without the async machinery
            // (shared/MEASURED.md); processors are synchronous.
            .concurrency_support(false)
            .epoch_interruption(true)
            .cranelift_opt_level(OptLevel::Speed)
            .parallel_compilation(true);
        if std::env::var_os("EDDY_WASM_PERFMAP").is_some() {
            // For `perf`: names compiled Wasm functions in /tmp/perf-<pid>.map.
            config.profiler(wasmtime::ProfilingStrategy::PerfMap);
        }
        let engine = Engine::new(&config).map_err(|e| RuntimeError::Engine(format!("{e:#}")))?;
        if let Some(dir) = &cache_dir {
            std::fs::create_dir_all(dir).map_err(|source| RuntimeError::CacheDir { path: dir.clone(), source })?;
        }
        let ticker = Ticker::start(engine.clone()).map_err(|e| RuntimeError::Engine(format!("epoch thread: {e}")))?;
        Ok(Runtime { engine, cache_dir, loaded: Mutex::new(HashMap::new()), ticker: Arc::new(ticker) })
    }

    /// Loads a processor module: validates it against the `eddy:processor`
    /// world and prepares it for instantiation.
    ///
    /// A module already loaded (same bytes) and still in use is returned as
    /// is; otherwise the compiled form is read from the cache directory, or the
    /// module is compiled (tens of milliseconds for the examples) and the
    /// result cached. [`Module::origin`] says which happened.
    ///
    /// Errors: [`RuntimeError::InvalidModule`], with a message saying what is
    /// wrong (not Wasm, a core module rather than a component, a missing or
    /// mistyped export, an import Eddy does not provide).
    pub fn load(&self, wasm: &[u8]) -> Result<Arc<Module>, RuntimeError> {
        let id = ModuleId::of(wasm);
        if let Some(module) = self.loaded.lock().unwrap_or_else(|e| e.into_inner()).get(&id).and_then(Weak::upgrade) {
            return Ok(module);
        }
        let module = Arc::new(Module::load(self, id, wasm, self.cache_dir.as_deref())?);
        let mut loaded = self.loaded.lock().unwrap_or_else(|e| e.into_inner());
        loaded.retain(|_, m| m.strong_count() > 0);
        loaded.insert(id, Arc::downgrade(&module));
        Ok(module)
    }

    /// The wasmtime engine.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }
}

/// The thread that advances the engine's epoch every [`EPOCH_TICK`]; stopped
/// (and joined) when dropped.
pub(crate) struct Ticker {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Ticker {
    fn start(engine: Engine) -> std::io::Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::Builder::new().name("eddy-epoch".into()).spawn(move || {
            while !flag.load(Ordering::Relaxed) {
                std::thread::sleep(EPOCH_TICK);
                engine.increment_epoch();
            }
        })?;
        Ok(Ticker { stop, thread: Some(thread) })
    }
}

impl Drop for Ticker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deadlines_round_up_plus_one_tick() {
        assert_eq!(deadline_ticks(Duration::from_millis(100)), 21);
        assert_eq!(deadline_ticks(Duration::from_millis(101)), 22);
        assert_eq!(deadline_ticks(Duration::ZERO), 2);
    }
}
