//! [`Module`]: a processor module validated against the world, compiled and
//! pre-linked, and the on-disk cache of compiled modules.
//!
//! Cache entries are named `<sha256 of the wasm>-<engine compatibility hash>.cwasm`
//! (the hash covers the wasmtime version and the engine settings) and hold
//! wasmtime's serialized component followed by the SHA-256 of those bytes. An
//! entry that is truncated, corrupt or refused by wasmtime is ignored and
//! rewritten. Entries are written to a temporary file and renamed, so a crash
//! never leaves a partial entry under the final name.

use std::fmt;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use wasmtime::component::{Component, HasSelf, Linker};
use wasmtime::Engine;

use crate::bindings::{Processor, ProcessorPre};
use crate::engine::{Runtime, Ticker};
use crate::error::RuntimeError;
use crate::instance::Host;
use crate::sandbox;

/// The identity of a module: the SHA-256 of its bytes.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ModuleId([u8; 32]);

impl ModuleId {
    /// The id of these module bytes.
    pub fn of(wasm: &[u8]) -> Self {
        ModuleId(Sha256::digest(wasm).into())
    }

    /// The raw hash.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl fmt::Display for ModuleId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}

impl fmt::Debug for ModuleId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ModuleId({self})")
    }
}

/// Where a loaded module's compiled code came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModuleOrigin {
    /// Compiled by this load.
    Compiled,
    /// Read from the cache directory (compiled by an earlier run).
    DiskCache,
}

/// A processor module, validated and ready to instantiate. Shared by all the
/// instances that run it ([`Instance::new`](crate::Instance::new)).
pub struct Module {
    id: ModuleId,
    engine: Engine,
    pre: ProcessorPre<Host>,
    origin: ModuleOrigin,
    load_time: Duration,
    _ticker: Arc<Ticker>,
}

impl fmt::Debug for Module {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Module").field("id", &self.id).field("origin", &self.origin).finish_non_exhaustive()
    }
}

impl Module {
    /// The module's id (SHA-256 of its bytes).
    pub fn id(&self) -> &ModuleId {
        &self.id
    }

    /// Whether this load compiled the module or read it from the cache.
    pub fn origin(&self) -> ModuleOrigin {
        self.origin
    }

    /// How long the load took (compiling, or reading the cache), validation and
    /// pre-linking included.
    pub fn load_time(&self) -> Duration {
        self.load_time
    }

    pub(crate) fn engine(&self) -> &Engine {
        &self.engine
    }

    pub(crate) fn pre(&self) -> &ProcessorPre<Host> {
        &self.pre
    }

    pub(crate) fn load(
        rt: &Runtime,
        id: ModuleId,
        wasm: &[u8],
        cache_dir: Option<&Path>,
    ) -> Result<Self, RuntimeError> {
        let started = Instant::now();
        check_header(wasm)?;
        let engine = &rt.engine;
        let cache_path = cache_dir.map(|dir| dir.join(format!("{id}-{:016x}.cwasm", compatibility(engine))));
        let cached = cache_path.as_deref().and_then(|path| read_cached(engine, path));
        let (component, origin) = match cached {
            Some(component) => (component, ModuleOrigin::DiskCache),
            None => {
                let component = Component::new(engine, wasm)
                    .map_err(|e| RuntimeError::InvalidModule(format!("it is not a valid Wasm component: {e:#}")))?;
                (component, ModuleOrigin::Compiled)
            }
        };
        let pre = link(engine, &component)?;
        if let (ModuleOrigin::Compiled, Some(path)) = (origin, &cache_path) {
            if let Err(e) = write_cached(&component, path) {
                tracing::warn!(path = %path.display(), error = %e, "cannot write the compiled-module cache");
            }
        }
        let load_time = started.elapsed();
        tracing::debug!(module = %id, ?origin, ?load_time, "processor module loaded");
        Ok(Module { id, engine: engine.clone(), pre, origin, load_time, _ticker: rt.ticker.clone() })
    }
}

/// Refuses what is not a component before handing it to the compiler, with
/// the advice that fits.
fn check_header(wasm: &[u8]) -> Result<(), RuntimeError> {
    if wasm.len() < 8 || &wasm[..4] != b"\0asm" {
        return Err(RuntimeError::InvalidModule("it is not a WebAssembly binary (no \\0asm header)".into()));
    }
    match wasm[4..8] {
        [0x0d, 0x00, 0x01, 0x00] => Ok(()),
        [0x01, 0x00, 0x00, 0x00] => Err(RuntimeError::InvalidModule(
            "it is a core Wasm module, not a component: build the processor with the eddy-processor SDK for \
             the wasm32-wasip2 target (cargo build --release --target wasm32-wasip2)"
                .into(),
        )),
        _ => Err(RuntimeError::InvalidModule(format!("unknown WebAssembly version/layer {:02x?}", &wasm[4..8]))),
    }
}

/// Links the world and the sandbox's WASI, and checks that the component's
/// imports and exports match the `eddy:processor` world.
fn link(engine: &Engine, component: &Component) -> Result<ProcessorPre<Host>, RuntimeError> {
    let internal = |e: wasmtime::Error| RuntimeError::Engine(format!("linking the host functions: {e:#}"));
    let mut linker = Linker::<Host>::new(engine);
    Processor::add_to_linker::<Host, HasSelf<Host>>(&mut linker, |h| h).map_err(internal)?;
    sandbox::add_wasi(&mut linker).map_err(internal)?;
    sandbox::check_and_deny_imports(&mut linker, component, engine)?;
    let instance_pre = linker.instantiate_pre(component).map_err(|e| {
        RuntimeError::InvalidModule(format!(
            "its imports do not match what Eddy provides (the eddy:processor@{} world and WASI 0.2): {e:#}",
            crate::WORLD_VERSION
        ))
    })?;
    ProcessorPre::new(instance_pre).map_err(|e| {
        RuntimeError::InvalidModule(format!(
            "it does not export the eddy:processor@{} world's `init` and `process` functions: {e:#}",
            crate::WORLD_VERSION
        ))
    })
}

/// A hash of everything that makes a compiled module usable by this engine.
fn compatibility(engine: &Engine) -> u64 {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    engine.precompile_compatibility_hash().hash(&mut hasher);
    hasher.finish()
}

const DIGEST_BYTES: usize = 32;

fn read_cached(engine: &Engine, path: &Path) -> Option<Component> {
    let bytes = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "cannot read a cached module; recompiling");
            return None;
        }
    };
    let Some(body_len) = bytes.len().checked_sub(DIGEST_BYTES) else {
        tracing::warn!(path = %path.display(), "truncated cached module; recompiling");
        return None;
    };
    let (body, digest) = bytes.split_at(body_len);
    if Sha256::digest(body).as_slice() != digest {
        tracing::warn!(path = %path.display(), "corrupt cached module (checksum mismatch); recompiling");
        return None;
    }
    // SAFETY: `Component::deserialize` requires bytes produced by
    // `Component::serialize` of a compatible engine. The cache directory is
    // private to the runtime (documented on `Runtime::new`), entries are
    // written only by `write_cached` under a name that includes the engine's
    // compatibility hash, and the SHA-256 trailer checked above rules out
    // truncation and corruption; wasmtime itself re-checks the version and
    // settings recorded in the artifact.
    match unsafe { Component::deserialize(engine, body) } {
        Ok(component) => Some(component),
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "cached module refused by wasmtime; recompiling");
            None
        }
    }
}

fn write_cached(component: &Component, path: &Path) -> std::io::Result<()> {
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let mut bytes = component.serialize().map_err(std::io::Error::other)?;
    let digest = Sha256::digest(&bytes);
    bytes.extend_from_slice(&digest);
    let tmp: PathBuf =
        path.with_extension(format!("tmp.{}.{}", std::process::id(), SEQ.fetch_add(1, Ordering::Relaxed)));
    std::fs::write(&tmp, &bytes)?;
    std::fs::rename(&tmp, path).inspect_err(|_| {
        let _ = std::fs::remove_file(&tmp);
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_check_explains() {
        let err = |b: &[u8]| check_header(b).unwrap_err().to_string();
        assert!(err(b"hello world").contains("not a WebAssembly binary"));
        assert!(err(b"\0asm\x01\0\0\0").contains("core Wasm module"));
        assert!(check_header(b"\0asm\x0d\0\x01\0").is_ok());
    }

    #[test]
    fn module_id_is_sha256_hex() {
        assert_eq!(ModuleId::of(b"").to_string(), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    }
}
