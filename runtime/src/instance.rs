//! [`Instance`]: one running copy of a processor module, for one processor and
//! input partition. Owns the wasmtime store, the state write set and the
//! failure handling: a trap, a timeout or the memory limit ends the call, the
//! instance is re-created, and a failed batch is retried record by record so
//! that only the bad record fails.

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;

use wasmtime::component::ResourceTable;
use wasmtime::{Store, Trap};
use wasmtime_wasi::WasiCtx;

use crate::bindings::eddy::processor::{log as wit_log, state as wit_state, types as wit};
use crate::bindings::Processor;
use crate::error::{ProcessError, RuntimeError};
use crate::limits::{Limiter, ProcessorLimits};
use crate::module::Module;
use crate::sandbox::{self, CapturedOutput};

/// A record handed to a processor, borrowed from wherever the worker keeps it
/// (the batch's bytes are copied once, into the module's memory).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InputRecord<'a> {
    /// Its offset in the batch's topic partition.
    pub offset: u64,
    /// Milliseconds since the Unix epoch, as stored by the broker.
    pub timestamp_ms: i64,
    /// Its key, if it has one.
    pub key: Option<&'a [u8]>,
    /// Its value.
    pub value: &'a [u8],
    /// Its headers, in order.
    pub headers: &'a [(&'a str, &'a [u8])],
}

/// A record a processor produced for one input record, ready to be written to
/// the output topic (with the input record's timestamp). Values of one batch
/// share one buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutputRecord {
    /// The key: the input record's unless the processor set another or none.
    pub key: Option<Bytes>,
    /// The value.
    pub value: Bytes,
    /// The headers, in order.
    pub headers: Vec<(String, Vec<u8>)>,
}

/// What processing one input record gave: its outputs (possibly none), or why
/// it failed.
pub type RecordOutcome = Result<Vec<OutputRecord>, ProcessError>;

/// The committed state of one processor and input partition, as the worker's
/// state store has it. The instance reads through it and keeps its own writes on
/// top ([`Instance::take_state_writes`]).
pub trait StateView: Send {
    /// The committed value under `key`.
    fn get(&self, key: &[u8]) -> Option<Vec<u8>>;
}

/// No state at all: every key is absent.
impl StateView for () {
    fn get(&self, _key: &[u8]) -> Option<Vec<u8>> {
        None
    }
}

impl StateView for BTreeMap<Vec<u8>, Vec<u8>> {
    fn get(&self, key: &[u8]) -> Option<Vec<u8>> {
        BTreeMap::get(self, key).cloned()
    }
}

impl StateView for std::collections::HashMap<Vec<u8>, Vec<u8>> {
    fn get(&self, key: &[u8]) -> Option<Vec<u8>> {
        std::collections::HashMap::get(self, key).cloned()
    }
}

/// The level of a message a processor logged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum LogLevel {
    /// Very detailed tracing.
    Trace,
    /// Debugging detail.
    Debug,
    /// Normal operation (also what the module prints to stdout).
    Info,
    /// Something unusual (also what the module prints to stderr).
    Warn,
    /// A failure (a panic's message is logged at this level by the SDK).
    Error,
}

/// Where a processor's log messages go (the worker sends them to the logs
/// topic). Called on the worker thread, during and right after each call.
pub trait LogSink: Send {
    /// One message.
    fn log(&mut self, level: LogLevel, message: &str);
}

impl<F: FnMut(LogLevel, &str) + Send> LogSink for F {
    fn log(&mut self, level: LogLevel, message: &str) {
        self(level, message)
    }
}

/// A [`LogSink`] that emits `tracing` events (target `eddy_processor`) with the
/// processor's name as a field.
#[derive(Debug, Clone)]
pub struct TracingLog {
    /// The processor's name.
    pub processor: String,
}

impl LogSink for TracingLog {
    fn log(&mut self, level: LogLevel, message: &str) {
        let processor = self.processor.as_str();
        match level {
            LogLevel::Trace => tracing::trace!(target: "eddy_processor", processor, "{message}"),
            LogLevel::Debug => tracing::debug!(target: "eddy_processor", processor, "{message}"),
            LogLevel::Info => tracing::info!(target: "eddy_processor", processor, "{message}"),
            LogLevel::Warn => tracing::warn!(target: "eddy_processor", processor, "{message}"),
            LogLevel::Error => tracing::error!(target: "eddy_processor", processor, "{message}"),
        }
    }
}

/// The host side of a store: what the module's imports reach.
pub(crate) struct Host {
    pub(crate) limiter: Limiter,
    pub(crate) wasi: WasiCtx,
    pub(crate) table: ResourceTable,
    stdout: CapturedOutput,
    stderr: CapturedOutput,
    state: StateOverlay,
    log: LogBuffer,
}

/// Reads through the committed [`StateView`], writes into per-call and pending
/// write sets.
struct StateOverlay {
    view: Box<dyn StateView>,
    /// Writes of successful calls not yet taken by the worker (`None`: deleted).
    pending: BTreeMap<Vec<u8>, Option<Vec<u8>>>,
    pending_bytes: usize,
    /// Writes of the call in progress; merged into `pending` if it succeeds.
    call: BTreeMap<Vec<u8>, Option<Vec<u8>>>,
    /// Upper bound of the bytes `call` holds (rewrites count twice).
    call_bytes: usize,
    max_key_bytes: usize,
    max_value_bytes: usize,
    max_write_bytes: usize,
}

impl StateOverlay {
    fn get(&self, key: &[u8]) -> Option<Vec<u8>> {
        if let Some(v) = self.call.get(key) {
            return v.clone();
        }
        if let Some(v) = self.pending.get(key) {
            return v.clone();
        }
        self.view.get(key)
    }

    fn write(&mut self, key: Vec<u8>, value: Option<Vec<u8>>) -> wasmtime::Result<()> {
        if key.len() > self.max_key_bytes {
            wasmtime::bail!(
                "state limit: a key of {} bytes is over the {}-byte maximum",
                key.len(),
                self.max_key_bytes
            );
        }
        let value_len = value.as_ref().map_or(0, Vec::len);
        if value_len > self.max_value_bytes {
            wasmtime::bail!(
                "state limit: a value of {value_len} bytes is over the {}-byte maximum",
                self.max_value_bytes
            );
        }
        self.call_bytes += key.len() + value_len;
        if self.pending_bytes + self.call_bytes > self.max_write_bytes {
            wasmtime::bail!(
                "state limit: more than {} bytes of uncommitted state writes (commit more often)",
                self.max_write_bytes
            );
        }
        self.call.insert(key, value);
        Ok(())
    }

    fn commit_call(&mut self) {
        for (key, value) in std::mem::take(&mut self.call) {
            let added = key.len() + value.as_ref().map_or(0, Vec::len);
            if let Some(old) = self.pending.insert(key.clone(), value) {
                self.pending_bytes -= key.len() + old.as_ref().map_or(0, Vec::len);
            }
            self.pending_bytes += added;
        }
        self.call_bytes = 0;
    }

    fn discard_call(&mut self) {
        self.call.clear();
        self.call_bytes = 0;
    }
}

/// Forwards log messages to the sink within a per-call byte budget, and keeps
/// the last error-level message of the call (a panic's message, via the SDK).
struct LogBuffer {
    sink: Box<dyn LogSink>,
    budget_per_call: usize,
    budget_left: usize,
    dropped: usize,
    last_error: Option<String>,
}

/// The longest error message kept as the reason of a trap.
const MAX_TRAP_REASON_BYTES: usize = 1024;

impl LogBuffer {
    fn begin_call(&mut self) {
        self.budget_left = self.budget_per_call;
        self.dropped = 0;
        self.last_error = None;
    }

    fn log(&mut self, level: LogLevel, message: &str) {
        if level == LogLevel::Error {
            self.last_error = Some(truncate(message, MAX_TRAP_REASON_BYTES).to_string());
        }
        if self.budget_left == 0 {
            self.dropped += 1;
            return;
        }
        let kept = truncate(message, self.budget_left);
        self.budget_left -= kept.len().max(1).min(self.budget_left);
        self.sink.log(level, kept);
    }

    fn end_call(&mut self) {
        if self.dropped > 0 {
            let note = format!("{} log messages dropped (over the per-call log budget)", self.dropped);
            self.sink.log(LogLevel::Warn, &note);
            self.dropped = 0;
        }
    }
}

/// The longest prefix of `s` of at most `max` bytes, cut at a char boundary.
fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

impl Host {
    fn begin_call(&mut self) {
        self.limiter.refused = false;
        self.log.begin_call();
    }

    /// Moves what the module printed into the log, then closes the call's log.
    fn end_call(&mut self) {
        for (output, level) in [(self.stdout.clone(), LogLevel::Info), (self.stderr.clone(), LogLevel::Warn)] {
            let (bytes, dropped) = output.take();
            for line in String::from_utf8_lossy(&bytes).lines().filter(|l| !l.trim().is_empty()) {
                self.log.log(level, line);
            }
            if dropped > 0 {
                self.log.sink.log(LogLevel::Warn, &format!("{dropped} bytes of output dropped (over the log budget)"));
            }
        }
        self.log.end_call();
    }
}

impl wit_log::Host for Host {
    fn log(&mut self, level: wit_log::Level, message: String) -> wasmtime::Result<()> {
        let level = match level {
            wit_log::Level::Trace => LogLevel::Trace,
            wit_log::Level::Debug => LogLevel::Debug,
            wit_log::Level::Info => LogLevel::Info,
            wit_log::Level::Warn => LogLevel::Warn,
            wit_log::Level::Error => LogLevel::Error,
        };
        self.log.log(level, &message);
        Ok(())
    }
}

impl wit_state::Host for Host {
    fn get(&mut self, key: Vec<u8>) -> wasmtime::Result<Option<Vec<u8>>> {
        if key.len() > self.state.max_key_bytes {
            wasmtime::bail!(
                "state limit: a key of {} bytes is over the {}-byte maximum",
                key.len(),
                self.state.max_key_bytes
            );
        }
        Ok(self.state.get(&key))
    }

    fn put(&mut self, key: Vec<u8>, value: Vec<u8>) -> wasmtime::Result<()> {
        self.state.write(key, Some(value))
    }

    fn delete(&mut self, key: Vec<u8>) -> wasmtime::Result<()> {
        self.state.write(key, None)
    }
}

impl wit::Host for Host {}

/// One instance of a processor module, for one processor and input partition.
///
/// Single-threaded: the worker calls [`process`](Instance::process) with
/// batches in offset order, then [`take_state_writes`](Instance::take_state_writes)
/// and commits those writes atomically with the batch's input offsets.
pub struct Instance {
    module: Arc<Module>,
    limits: ProcessorLimits,
    params: Vec<(String, String)>,
    store: Store<Host>,
    processor: Processor,
    /// False after a trap, a timeout or the memory limit: the store may be in
    /// any state, so the next call re-creates it first.
    healthy: bool,
    /// The batch sent to the module, kept to reuse its buffers.
    batch: wit::InputBatch,
    restarts: u64,
}

impl Instance {
    /// Instantiates `module` with `limits` and runs its `init` with `params`.
    /// `state` is the committed state of this processor and input partition;
    /// `log` receives what the module logs.
    ///
    /// Errors: [`RuntimeError::Instantiate`] if the module cannot start within
    /// the limits, [`RuntimeError::Init`] if its `init` returns an error (the
    /// message is the module's), traps or times out.
    pub fn new(
        module: &Arc<Module>,
        limits: ProcessorLimits,
        params: Vec<(String, String)>,
        state: Box<dyn StateView>,
        log: Box<dyn LogSink>,
    ) -> Result<Self, RuntimeError> {
        let host = new_host(&limits, state, log);
        let (store, processor) = start(module, &limits, &params, host).map_err(|(e, _)| e)?;
        let batch = wit::InputBatch { topic: String::new(), partition: 0, data: Vec::new(), records: Vec::new() };
        Ok(Instance { module: module.clone(), limits, params, store, processor, healthy: true, batch, restarts: 0 })
    }

    /// The module this instance runs.
    pub fn module(&self) -> &Arc<Module> {
        &self.module
    }

    /// How many times the instance was re-created after a trap, a timeout or
    /// the memory limit.
    pub fn restarts(&self) -> u64 {
        self.restarts
    }

    /// Processes records of one topic partition, in offset order, and returns
    /// one outcome per record, in the same order.
    ///
    /// The records go to the module in as few calls as fit its memory (one
    /// call per [`max_call_data_bytes`](Instance::max_call_data_bytes) of keys
    /// and values). If a call traps, times out or hits the memory limit, its
    /// state writes are discarded, the instance is re-created and that call's
    /// records are processed again one record per call, so the failure is
    /// pinned on the record that caused it and the others still get their
    /// outputs. An error the module returns for a record affects that record
    /// only (state writes the module made before returning it are kept).
    pub fn process(&mut self, topic: &str, partition: u32, records: &[InputRecord<'_>]) -> Vec<RecordOutcome> {
        let mut outcomes = Vec::with_capacity(records.len());
        let max_bytes = self.max_call_data_bytes();
        let mut rest = records;
        while !rest.is_empty() {
            // At least one record per call, however large.
            let mut bytes = 0usize;
            let n = rest
                .iter()
                .position(|r| {
                    bytes += r.key.map_or(0, <[u8]>::len) + r.value.len();
                    bytes > max_bytes
                })
                .unwrap_or(rest.len())
                .max(1);
            let (chunk, tail) = rest.split_at(n);
            self.process_chunk(topic, partition, chunk, &mut outcomes);
            rest = tail;
        }
        outcomes
    }

    /// The most key and value bytes sent to the module in one call: a quarter
    /// of its memory limit, leaving room for the outputs. (For speed the
    /// worker should send smaller batches: about 100 KiB per call is the
    /// measured sweet spot, see runtime/benches/boundary.rs.)
    pub fn max_call_data_bytes(&self) -> usize {
        self.limits.max_memory_bytes / 4
    }

    fn process_chunk(
        &mut self,
        topic: &str,
        partition: u32,
        records: &[InputRecord<'_>],
        out: &mut Vec<RecordOutcome>,
    ) {
        match self.call(topic, partition, records) {
            Ok(outcomes) => out.extend(outcomes),
            Err(e) if records.len() == 1 => out.push(Err(e)),
            Err(_) => {
                for record in records {
                    match self.call(topic, partition, std::slice::from_ref(record)) {
                        Ok(outcomes) => out.extend(outcomes),
                        Err(e) => out.push(Err(e)),
                    }
                }
            }
        }
    }

    /// The state writes of the calls processed since the last take, in key
    /// order (`None`: the key was deleted). The caller commits them atomically
    /// with the input offsets of those records. Until taken, the module's reads
    /// see them; once taken, the [`StateView`] given to [`Instance::new`] must
    /// return them (the worker's view of the committed state includes what it
    /// committed).
    pub fn take_state_writes(&mut self) -> Vec<(Vec<u8>, Option<Vec<u8>>)> {
        let state = &mut self.store.data_mut().state;
        state.pending_bytes = 0;
        std::mem::take(&mut state.pending).into_iter().collect()
    }

    /// One call of `process`, re-creating the instance first if needed.
    /// `Err` means the whole call failed (trap, timeout, memory limit).
    fn call(
        &mut self,
        topic: &str,
        partition: u32,
        records: &[InputRecord<'_>],
    ) -> Result<Vec<RecordOutcome>, ProcessError> {
        if !self.healthy {
            self.restart().map_err(|e| ProcessError::Trap(format!("re-creating the instance failed: {e}")))?;
        }
        fill_batch(&mut self.batch, topic, partition, records)?;
        self.store.data_mut().begin_call();
        self.store.set_epoch_deadline(crate::engine::deadline_ticks(self.limits.call_timeout));
        let result = self.processor.call_process(&mut self.store, &self.batch);
        self.store.data_mut().end_call();
        match result.map(|output| outcomes(output, records)) {
            Ok(Ok(outcomes)) => {
                self.store.data_mut().state.commit_call();
                Ok(outcomes)
            }
            Ok(Err(error)) => {
                // The module's memory may cache writes that are now discarded:
                // start it afresh so that it agrees with its state again.
                self.store.data_mut().state.discard_call();
                self.healthy = false;
                Err(error)
            }
            Err(e) => {
                let error = classify(&e, self.store.data());
                tracing::debug!(module = %self.module.id(), error = %error, "processor call failed; re-creating the instance");
                self.store.data_mut().state.discard_call();
                self.healthy = false;
                Err(error)
            }
        }
    }

    /// Replaces the store with a fresh instance (same state view, log sink,
    /// pending writes and params) and runs `init` again.
    fn restart(&mut self) -> Result<(), RuntimeError> {
        let old = self.store.data_mut();
        let state = std::mem::replace(&mut old.state.view, Box::new(()));
        let sink = std::mem::replace(&mut old.log.sink, Box::new(|_: LogLevel, _: &str| {}));
        let pending = std::mem::take(&mut old.state.pending);
        let pending_bytes = std::mem::take(&mut old.state.pending_bytes);
        let mut host = new_host(&self.limits, state, sink);
        host.state.pending = pending;
        host.state.pending_bytes = pending_bytes;
        match start(&self.module, &self.limits, &self.params, host) {
            Ok((store, processor)) => {
                self.store = store;
                self.processor = processor;
                self.healthy = true;
                self.restarts += 1;
                Ok(())
            }
            Err((e, host)) => {
                // Keep the caller's state view, sink and pending writes for the next try.
                let old = self.store.data_mut();
                old.state.view = host.state.view;
                old.log.sink = host.log.sink;
                old.state.pending = host.state.pending;
                old.state.pending_bytes = host.state.pending_bytes;
                Err(e)
            }
        }
    }
}

fn new_host(limits: &ProcessorLimits, state: Box<dyn StateView>, log: Box<dyn LogSink>) -> Host {
    let stdout = CapturedOutput::new(limits.max_log_bytes_per_call);
    let stderr = CapturedOutput::new(limits.max_log_bytes_per_call);
    Host {
        limiter: Limiter::new(limits),
        wasi: sandbox::wasi_ctx(&stdout, &stderr),
        table: ResourceTable::new(),
        stdout,
        stderr,
        state: StateOverlay {
            view: state,
            pending: BTreeMap::new(),
            pending_bytes: 0,
            call: BTreeMap::new(),
            call_bytes: 0,
            max_key_bytes: limits.max_state_key_bytes,
            max_value_bytes: limits.max_state_value_bytes,
            max_write_bytes: limits.max_state_write_bytes,
        },
        log: LogBuffer {
            sink: log,
            budget_per_call: limits.max_log_bytes_per_call,
            budget_left: limits.max_log_bytes_per_call,
            dropped: 0,
            last_error: None,
        },
    }
}

/// Instantiates the module in a new store and runs `init`. On failure the host
/// comes back with the error, so a restart can keep its parts.
#[allow(clippy::result_large_err)]
fn start(
    module: &Arc<Module>,
    limits: &ProcessorLimits,
    params: &[(String, String)],
    host: Host,
) -> Result<(Store<Host>, Processor), (RuntimeError, Host)> {
    let mut store = Store::new(module.engine(), host);
    store.limiter(|h| &mut h.limiter);
    store.epoch_deadline_trap();
    store.set_epoch_deadline(crate::engine::deadline_ticks(limits.init_timeout));
    let processor = match module.pre().instantiate(&mut store) {
        Ok(p) => p,
        Err(e) => {
            let message = match classify(&e, store.data()) {
                ProcessError::MemoryLimit => {
                    format!("its initial memory is over the {}-byte limit", limits.max_memory_bytes)
                }
                other => other.to_string(),
            };
            return Err((RuntimeError::Instantiate(message), store.into_data()));
        }
    };
    store.data_mut().begin_call();
    let result = processor.call_init(&mut store, params);
    store.data_mut().end_call();
    let error = match result {
        Ok(Ok(())) => {
            store.data_mut().state.commit_call();
            return Ok((store, processor));
        }
        Ok(Err(message)) => message,
        Err(e) => classify(&e, store.data()).to_string(),
    };
    Err((RuntimeError::Init(error), store.into_data()))
}

/// Names what ended a failed call.
fn classify(error: &wasmtime::Error, host: &Host) -> ProcessError {
    if host.limiter.refused {
        return ProcessError::MemoryLimit;
    }
    match error.downcast_ref::<Trap>() {
        Some(Trap::Interrupt) => ProcessError::Timeout,
        Some(trap) => ProcessError::Trap(match &host.log.last_error {
            Some(reason) => format!("{reason} ({trap})"),
            None => trap.to_string(),
        }),
        // A host function failed (a state limit, a denied WASI import).
        None => ProcessError::Trap(error.root_cause().to_string()),
    }
}

/// Copies `records` into the batch sent to the module, reusing its buffers.
fn fill_batch(
    batch: &mut wit::InputBatch,
    topic: &str,
    partition: u32,
    records: &[InputRecord<'_>],
) -> Result<(), ProcessError> {
    batch.topic.clear();
    batch.topic.push_str(topic);
    batch.partition = partition;
    batch.data.clear();
    batch.records.clear();
    for r in records {
        let key = r.key.map(|k| append(&mut batch.data, k)).transpose()?;
        let value = append(&mut batch.data, r.value)?;
        let headers = (!r.headers.is_empty())
            .then(|| r.headers.iter().map(|(name, value)| (name.to_string(), value.to_vec())).collect());
        batch.records.push(wit::InputRecord { offset: r.offset, timestamp_ms: r.timestamp_ms, key, value, headers });
    }
    Ok(())
}

fn append(data: &mut Vec<u8>, bytes: &[u8]) -> Result<wit::Span, ProcessError> {
    let too_big = || ProcessError::Trap("a batch's keys and values are over 4 GiB".into());
    let offset = u32::try_from(data.len()).map_err(|_| too_big())?;
    let len = u32::try_from(bytes.len()).map_err(|_| too_big())?;
    offset.checked_add(len).ok_or_else(too_big)?;
    data.extend_from_slice(bytes);
    Ok(wit::Span { offset, len })
}

/// Turns a module's output batch into one outcome per input record: spans
/// become slices of the output `data`, and outputs that inherit the key get
/// their input record's. An output or error naming a record outside the batch
/// fails the call; a span outside `data` fails its record.
fn outcomes(output: wit::OutputBatch, records: &[InputRecord<'_>]) -> Result<Vec<RecordOutcome>, ProcessError> {
    let data = Bytes::from(output.data);
    let mut outcomes: Vec<RecordOutcome> = vec![Ok(Vec::new()); records.len()];
    let outside = |input: u32| {
        ProcessError::Trap(format!(
            "the module returned a result for record {input} of a {}-record batch",
            records.len()
        ))
    };
    for error in output.errors {
        *outcomes.get_mut(error.input as usize).ok_or_else(|| outside(error.input))? =
            Err(ProcessError::Guest(error.message));
    }
    for o in output.outputs {
        let input = records.get(o.input as usize).ok_or_else(|| outside(o.input))?;
        let Ok(outputs) = &mut outcomes[o.input as usize] else { continue };
        let resolved = (|| {
            Ok(OutputRecord {
                key: match o.key {
                    wit::OutputKey::Inherit => input.key.map(Bytes::copy_from_slice),
                    wit::OutputKey::None => None,
                    wit::OutputKey::Set(span) => Some(slice(&data, span)?),
                },
                value: slice(&data, o.value)?,
                headers: o.headers.unwrap_or_default(),
            })
        })();
        match resolved {
            Ok(record) => outputs.push(record),
            Err(e) => outcomes[o.input as usize] = Err(e),
        }
    }
    Ok(outcomes)
}

/// The bytes of `data` that `span` points at.
fn slice(data: &Bytes, span: wit::Span) -> Result<Bytes, ProcessError> {
    let start = span.offset as usize;
    let end = start.checked_add(span.len as usize).filter(|&end| end <= data.len()).ok_or_else(|| {
        ProcessError::Trap(format!(
            "the module returned bytes {start}+{} outside its {}-byte output data",
            span.len,
            data.len()
        ))
    })?;
    Ok(data.slice(start..end))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncate_cuts_at_char_boundaries() {
        assert_eq!(truncate("héllo", 2), "h");
        assert_eq!(truncate("héllo", 3), "hé");
        assert_eq!(truncate("abc", 10), "abc");
    }

    fn overlay(view: BTreeMap<Vec<u8>, Vec<u8>>) -> StateOverlay {
        let l = ProcessorLimits { max_state_write_bytes: 20, ..Default::default() };
        StateOverlay {
            view: Box::new(view),
            pending: BTreeMap::new(),
            pending_bytes: 0,
            call: BTreeMap::new(),
            call_bytes: 0,
            max_key_bytes: l.max_state_key_bytes,
            max_value_bytes: l.max_state_value_bytes,
            max_write_bytes: l.max_state_write_bytes,
        }
    }

    fn span(offset: u32, len: u32) -> wit::Span {
        wit::Span { offset, len }
    }

    fn output(input: u32, key: wit::OutputKey, value: wit::Span) -> wit::OutputRecord {
        wit::OutputRecord { input, key, value, headers: None }
    }

    #[test]
    fn output_batches_become_one_outcome_per_record() {
        let inputs = [
            InputRecord { offset: 0, timestamp_ms: 0, key: Some(b"in-key"), value: b"a", headers: &[] },
            InputRecord { offset: 1, timestamp_ms: 0, key: None, value: b"b", headers: &[] },
            InputRecord { offset: 2, timestamp_ms: 0, key: None, value: b"c", headers: &[] },
            InputRecord { offset: 3, timestamp_ms: 0, key: None, value: b"d", headers: &[] },
        ];
        let batch = wit::OutputBatch {
            data: b"KV1V2".to_vec(),
            outputs: vec![
                output(0, wit::OutputKey::Inherit, span(1, 2)),
                output(0, wit::OutputKey::Set(span(0, 1)), span(3, 2)),
                output(0, wit::OutputKey::None, span(3, 2)),
                output(2, wit::OutputKey::Inherit, span(4, 9)),
            ],
            errors: vec![wit::RecordError { input: 3, message: "no".into() }],
        };
        let outcomes = outcomes(batch, &inputs).unwrap();
        let first = outcomes[0].as_ref().unwrap();
        assert_eq!(first.len(), 3, "outputs keep their order");
        assert_eq!((first[0].key.as_deref(), &first[0].value[..]), (Some(&b"in-key"[..]), &b"V1"[..]));
        assert_eq!((first[1].key.as_deref(), &first[1].value[..]), (Some(&b"K"[..]), &b"V2"[..]));
        assert_eq!(first[2].key, None);
        assert_eq!(outcomes[1], Ok(vec![]), "no output and no error: filtered out");
        assert!(matches!(&outcomes[2], Err(ProcessError::Trap(m)) if m.contains("outside")), "{:?}", outcomes[2]);
        assert_eq!(outcomes[3], Err(ProcessError::Guest("no".into())));

        let stray = wit::OutputBatch {
            data: vec![],
            outputs: vec![output(9, wit::OutputKey::None, span(0, 0))],
            errors: vec![],
        };
        assert!(
            matches!(outcomes_of(stray, &inputs), Err(ProcessError::Trap(m)) if m.contains("record 9 of a 4-record"))
        );
    }

    fn outcomes_of(batch: wit::OutputBatch, inputs: &[InputRecord<'_>]) -> Result<Vec<RecordOutcome>, ProcessError> {
        outcomes(batch, inputs)
    }

    #[test]
    fn state_overlay_reads_own_writes_and_discards_failed_calls() {
        let mut s = overlay(BTreeMap::from([(b"a".to_vec(), b"1".to_vec())]));
        s.write(b"a".to_vec(), Some(b"2".to_vec())).unwrap();
        assert_eq!(s.get(b"a"), Some(b"2".to_vec()));
        s.discard_call();
        assert_eq!(s.get(b"a"), Some(b"1".to_vec()));
        s.write(b"a".to_vec(), None).unwrap();
        s.commit_call();
        assert_eq!(s.get(b"a"), None);
        assert_eq!(s.pending_bytes, 1);
        assert!(s.write(b"b".to_vec(), Some(vec![0; 30])).is_err(), "over the write budget");
    }
}
