//! [`ProcessorLimits`], the per-processor sandbox limits, and the wasmtime
//! [`ResourceLimiter`] that enforces the memory cap.

use std::time::Duration;

use wasmtime::ResourceLimiter;

/// The sandbox limits of one processor instance. Every field has a safe default
/// ([`ProcessorLimits::default`]); a deployment may override them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcessorLimits {
    /// The most linear memory an instance may have, all its memories together.
    /// Growing past it fails, which ends the call with
    /// [`ProcessError::MemoryLimit`](crate::ProcessError::MemoryLimit).
    /// Default 64 MiB.
    pub max_memory_bytes: usize,
    /// The wall-clock budget of one call into the module: one batch, or one
    /// record when a failed batch is retried record by record. Enforced by epoch
    /// interruption with a resolution of [`EPOCH_TICK`](crate::EPOCH_TICK), so a
    /// call may run up to one tick longer. The worker should size batches to
    /// stay well within it (a batch that runs out of time is retried record by
    /// record, each record with the whole budget). Default 100 ms.
    pub call_timeout: Duration,
    /// The budget of `init`. Default 1 s.
    pub init_timeout: Duration,
    /// The most table elements (indirect-call targets) per table. Default 100,000.
    pub max_table_elements: usize,
    /// The largest state key, in bytes; a larger one traps. Default 4 KiB.
    pub max_state_key_bytes: usize,
    /// The largest state value, in bytes; a larger one traps. Default 1 MiB.
    pub max_state_value_bytes: usize,
    /// The most bytes (keys plus values) of uncommitted state writes an instance
    /// holds between two [`Instance::take_state_writes`](crate::Instance::take_state_writes);
    /// past it the call traps. Bounds the host memory a module can make the
    /// worker hold outside the module's own memory cap. Default 16 MiB.
    pub max_state_write_bytes: usize,
    /// The most bytes of log messages (and stdout/stderr output) kept per call;
    /// the rest is dropped and counted in one final message. Default 64 KiB.
    pub max_log_bytes_per_call: usize,
}

impl Default for ProcessorLimits {
    fn default() -> Self {
        ProcessorLimits {
            max_memory_bytes: 64 << 20,
            call_timeout: Duration::from_millis(100),
            init_timeout: Duration::from_secs(1),
            max_table_elements: 100_000,
            max_state_key_bytes: 4 << 10,
            max_state_value_bytes: 1 << 20,
            max_state_write_bytes: 16 << 20,
            max_log_bytes_per_call: 64 << 10,
        }
    }
}

/// Enforces [`ProcessorLimits::max_memory_bytes`] over all the memories of a
/// store and remembers that it refused, so the trap that follows (Rust's
/// allocator aborts when memory cannot grow) is reported as a memory limit.
pub(crate) struct Limiter {
    max_memory_bytes: usize,
    max_table_elements: usize,
    /// Bytes of linear memory the store's memories have, together.
    memory_bytes: usize,
    /// Set when a growth was refused; cleared before each call.
    pub(crate) refused: bool,
}

impl Limiter {
    pub(crate) fn new(limits: &ProcessorLimits) -> Self {
        Limiter {
            max_memory_bytes: limits.max_memory_bytes,
            max_table_elements: limits.max_table_elements,
            memory_bytes: 0,
            refused: false,
        }
    }
}

impl ResourceLimiter for Limiter {
    fn memory_growing(&mut self, current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        debug_assert!(desired >= current);
        let total = self.memory_bytes.saturating_sub(current).saturating_add(desired);
        if total > self.max_memory_bytes {
            self.refused = true;
            return Ok(false);
        }
        self.memory_bytes = total;
        Ok(true)
    }

    fn table_growing(&mut self, _current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        if desired > self.max_table_elements {
            self.refused = true;
            return Ok(false);
        }
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_cap_counts_all_memories_together() {
        let mut l = Limiter::new(&ProcessorLimits { max_memory_bytes: 100, ..Default::default() });
        assert!(l.memory_growing(0, 60, None).unwrap());
        assert!(!l.memory_growing(0, 60, None).unwrap(), "a second memory shares the cap");
        assert!(l.refused);
        assert!(l.memory_growing(60, 100, None).unwrap());
        assert!(!l.memory_growing(100, 101, None).unwrap());
    }
}
