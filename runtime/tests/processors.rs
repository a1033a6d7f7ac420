//! The runtime against the example processors: the three real ones, the hostile
//! ones (each failure ends one call and names the right error while the next
//! records still work), modules that must be refused, the compiled-module
//! cache, and the sandbox.

mod common;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use common::{process, record, wasm};
use eddy_runtime::{
    Instance, LogLevel, LogSink, ModuleOrigin, OutputRecord, ProcessError, ProcessorLimits, RecordOutcome, Runtime,
    RuntimeError,
};

fn runtime() -> Runtime {
    Runtime::new(None).expect("runtime")
}

type Logs = Arc<Mutex<Vec<(LogLevel, String)>>>;

fn log_sink() -> (Logs, Box<dyn LogSink>) {
    let logs: Logs = Arc::default();
    let sink = logs.clone();
    (logs, Box::new(move |level: LogLevel, message: &str| sink.lock().unwrap().push((level, message.to_string()))))
}

fn instance(rt: &Runtime, name: &str, params: &[(&str, &str)]) -> Instance {
    let module = rt.load(&wasm(name)).expect("load");
    let params = params.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    Instance::new(&module, ProcessorLimits::default(), params, Box::new(()), log_sink().1).expect("instance")
}

fn values(outcome: &RecordOutcome) -> Vec<String> {
    outcome.as_ref().expect("ok outcome").iter().map(|o| String::from_utf8(o.value.to_vec()).unwrap()).collect()
}

fn output(key: Option<&str>, value: &str, headers: &[(&str, &[u8])]) -> OutputRecord {
    OutputRecord {
        key: key.map(|k| Bytes::copy_from_slice(k.as_bytes())),
        value: Bytes::copy_from_slice(value.as_bytes()),
        headers: headers.iter().map(|(n, v)| (n.to_string(), v.to_vec())).collect(),
    }
}

#[test]
fn uppercase_maps_each_record_and_keeps_its_key() {
    let rt = runtime();
    let mut inst = instance(&rt, "uppercase", &[]);
    let batch = vec![record(0, Some("k1"), "hello"), record(1, None, "World 42"), record(2, Some("k3"), "")];
    let outcomes = process(&mut inst, &batch);
    assert_eq!(
        outcomes,
        vec![
            Ok(vec![output(Some("k1"), "HELLO", &[])]),
            Ok(vec![output(None, "WORLD 42", &[])]),
            Ok(vec![output(Some("k3"), "", &[])]),
        ]
    );
    assert!(process(&mut inst, &[]).is_empty());
    assert!(inst.take_state_writes().is_empty());
}

#[test]
fn filter_keeps_matching_records_unchanged_and_gets_its_param() {
    let rt = runtime();
    let mut inst = instance(&rt, "filter", &[("match", "foo")]);
    let batch = vec![record(0, Some("a"), "foo bar"), record(1, Some("b"), "baz"), record(2, None, "xfoo")];
    let out = process(&mut inst, &batch);
    assert_eq!(out.len(), 3);
    assert_eq!(out[0], Ok(vec![output(Some("a"), "foo bar", common::HEADERS)]));
    assert_eq!(out[1], Ok(vec![]));
    assert_eq!(values(&out[2]), vec!["xfoo"]);
}

#[test]
fn init_errors_refuse_the_instance_with_the_modules_message() {
    let rt = runtime();
    let module = rt.load(&wasm("filter")).unwrap();
    let err = Instance::new(&module, ProcessorLimits::default(), vec![], Box::new(()), log_sink().1).err().unwrap();
    match err {
        RuntimeError::Init(message) => assert!(message.contains("missing parameter `match`"), "{message}"),
        other => panic!("expected an init error, got {other:?}"),
    }
}

#[test]
fn word_count_counts_in_state_and_reads_its_own_writes() {
    let rt = runtime();
    let module = rt.load(&wasm("word-count")).unwrap();
    // Committed state: "k" has seen "hello" 5 times.
    let committed = BTreeMap::from([(b"k\0hello".to_vec(), 5u64.to_le_bytes().to_vec())]);
    let mut inst =
        Instance::new(&module, ProcessorLimits::default(), vec![], Box::new(committed), log_sink().1).unwrap();

    let out = process(&mut inst, &[record(0, Some("k"), "hello world hello"), record(1, Some("other"), "hello")]);
    assert_eq!(values(&out[0]), vec!["hello 6", "world 1", "hello 7"]);
    assert_eq!(out[0].as_ref().unwrap()[0].key.as_deref(), Some(&b"k"[..]));
    assert_eq!(values(&out[1]), vec!["hello 1"]);

    // Not yet taken: the next batch sees the writes.
    let out = process(&mut inst, &[record(2, Some("k"), "world")]);
    assert_eq!(values(&out[0]), vec!["world 2"]);

    let writes = inst.take_state_writes();
    assert_eq!(
        writes,
        vec![
            (b"k\0hello".to_vec(), Some(7u64.to_le_bytes().to_vec())),
            (b"k\0world".to_vec(), Some(2u64.to_le_bytes().to_vec())),
            (b"other\0hello".to_vec(), Some(1u64.to_le_bytes().to_vec())),
        ]
    );
    assert!(inst.take_state_writes().is_empty());
}

#[test]
fn the_state_write_limit_traps_and_discards_that_calls_writes() {
    let rt = runtime();
    let module = rt.load(&wasm("word-count")).unwrap();
    // Each counter write is key "k\0<word>" + 8 bytes.
    let limits = ProcessorLimits { max_state_write_bytes: 40, ..Default::default() };
    let mut inst = Instance::new(&module, limits, vec![], Box::new(()), log_sink().1).unwrap();
    let outcomes = process(&mut inst, &[record(0, Some("k"), "a b")]);
    assert_eq!(values(&outcomes[0]), vec!["a 1", "b 1"]);
    let outcomes = process(&mut inst, &[record(1, Some("k"), "c d e f")]);
    assert!(matches!(&outcomes[0], Err(ProcessError::Trap(m)) if m.contains("state limit")), "{:?}", outcomes[0]);
    // The failed call's writes are gone; the instance goes on and reads the
    // successful call's writes.
    let outcomes = process(&mut inst, &[record(2, Some("k"), "a")]);
    assert_eq!(values(&outcomes[0]), vec!["a 2"]);
    let keys: Vec<Vec<u8>> = inst.take_state_writes().into_iter().map(|(k, _)| k).collect();
    assert_eq!(keys, vec![b"k\0a".to_vec(), b"k\0b".to_vec()]);
}

#[test]
fn a_non_utf8_record_is_a_guest_error_for_that_record_only() {
    let rt = runtime();
    let mut inst = instance(&rt, "word-count", &[]);
    let mut bad = record(1, Some("k"), "");
    bad.value = vec![0xff, 0xfe];
    let out = process(&mut inst, &[record(0, Some("k"), "a"), bad, record(2, Some("k"), "a")]);
    assert_eq!(values(&out[0]), vec!["a 1"]);
    assert!(matches!(&out[1], Err(ProcessError::Guest(m)) if m.contains("not UTF-8")), "{:?}", out[1]);
    assert_eq!(values(&out[2]), vec!["a 2"]);
    assert_eq!(inst.restarts(), 0);
}

/// Runs `[ok, bad, ok]` as one batch, then `[ok]`, and returns the bad record's
/// error after checking that the others got their outputs.
fn hostile(name: &str, bad: &str, limits: ProcessorLimits) -> (ProcessError, Logs, u64) {
    let rt = runtime();
    let module = rt.load(&wasm(name)).unwrap();
    let (logs, sink) = log_sink();
    let mut inst = Instance::new(&module, limits, vec![], Box::new(()), sink).unwrap();
    let out = process(&mut inst, &[record(0, None, "fine"), record(1, None, bad), record(2, None, "also fine")]);
    assert_eq!(out.len(), 3);
    assert_eq!(values(&out[0]), vec!["fine"], "{name}");
    assert_eq!(values(&out[2]), vec!["also fine"], "{name}");
    let error = out[1].clone().expect_err("the bad record fails");
    let next = process(&mut inst, &[record(3, None, "after")]);
    assert_eq!(values(&next[0]), vec!["after"], "{name}: the instance works after the failure");
    (error, logs, inst.restarts())
}

#[test]
fn an_infinite_loop_times_out() {
    let limits = ProcessorLimits { call_timeout: Duration::from_millis(50), ..Default::default() };
    let started = std::time::Instant::now();
    let (error, _, restarts) = hostile("infinite-loop", "loop", limits);
    assert_eq!(error, ProcessError::Timeout);
    assert_eq!(restarts, 2, "once after the batch, once after the record");
    assert!(started.elapsed() < Duration::from_secs(5), "took {:?}", started.elapsed());
}

#[test]
fn a_memory_bomb_hits_the_memory_limit() {
    let limits = ProcessorLimits { max_memory_bytes: 16 << 20, ..Default::default() };
    let (error, _, _) = hostile("memory-bomb", "bomb", limits);
    assert_eq!(error, ProcessError::MemoryLimit);
}

#[test]
fn traps_are_reported_with_their_cause() {
    let (error, _, _) = hostile("trap", "trap", ProcessorLimits::default());
    assert!(matches!(&error, ProcessError::Trap(m) if m.contains("unreachable")), "{error:?}");
    let (error, _, _) = hostile("trap", "oob", ProcessorLimits::default());
    assert!(matches!(&error, ProcessError::Trap(m) if m.contains("out of bounds")), "{error:?}");
}

#[test]
fn a_panic_is_a_trap_carrying_the_panic_message() {
    let (error, logs, _) = hostile("panic", "please panic", ProcessorLimits::default());
    assert!(
        matches!(&error, ProcessError::Trap(m) if m.contains("panicked at") && m.contains("record 1 asked for it")),
        "{error:?}"
    );
    let logs = logs.lock().unwrap();
    assert!(logs.iter().any(|(level, m)| *level == LogLevel::Error && m.contains("record 1 asked for it")), "{logs:?}");
}

#[test]
fn an_error_return_fails_only_its_record_without_a_restart() {
    let (error, _, restarts) = hostile("error-return", "error!", ProcessorLimits::default());
    assert_eq!(error, ProcessError::Guest("record 1 is not acceptable".into()));
    assert_eq!(restarts, 0);
}

#[test]
fn the_sandbox_grants_no_clock_files_or_environment() {
    let rt = runtime();
    let module = rt.load(&wasm("sandbox-probe")).unwrap();
    let (logs, sink) = log_sink();
    let mut inst = Instance::new(&module, ProcessorLimits::default(), vec![], Box::new(()), sink).unwrap();
    let out = process(
        &mut inst,
        &[
            record(0, None, "file"),
            record(1, None, "env"),
            record(2, None, "hashmap"),
            record(3, None, "print"),
            record(4, None, "clock"),
        ],
    );
    assert!(values(&out[0])[0].starts_with("denied:"), "{:?}", out[0]);
    assert_eq!(values(&out[1]), vec!["0 variables"]);
    assert_eq!(values(&out[2]), vec!["9"]);
    assert_eq!(values(&out[3]), vec!["printed"]);
    assert!(matches!(&out[4], Err(ProcessError::Trap(m)) if m.contains("wasi:clocks/wall-clock")), "{:?}", out[4]);
    let logs = logs.lock().unwrap();
    assert!(logs.contains(&(LogLevel::Info, "hello from stdout".into())), "{logs:?}");
    assert!(logs.contains(&(LogLevel::Warn, "hello from stderr".into())), "{logs:?}");
}

fn load_error(bytes: &[u8]) -> String {
    match runtime().load(bytes) {
        Err(RuntimeError::InvalidModule(message)) => message,
        Err(other) => panic!("expected InvalidModule, got {other:?}"),
        Ok(_) => panic!("loaded an invalid module"),
    }
}

#[test]
fn modules_that_are_not_processors_are_refused_with_a_clear_error() {
    assert!(load_error(b"definitely not wasm").contains("not a WebAssembly binary"));
    let core = wat::parse_str("(module (func (export \"process\")))").unwrap();
    assert!(load_error(&core).contains("core Wasm module"));
    let mut truncated = wasm("uppercase");
    truncated.truncate(truncated.len() / 2);
    assert!(load_error(&truncated).contains("not a valid Wasm component"));
    let empty = wat::parse_str("(component)").unwrap();
    let message = load_error(&empty);
    assert!(message.contains("does not export the eddy:processor@0.1.0 world"), "{message}");
    let foreign = wat::parse_str(r#"(component (import "acme:db/query" (instance)))"#).unwrap();
    let message = load_error(&foreign);
    assert!(message.contains("imports `acme:db/query`"), "{message}");
    let wrong_type = wat::parse_str(
        r#"(component
             (core module $m (func (export "f")))
             (core instance $i (instantiate $m))
             (func $f (canon lift (core func $i "f")))
             (export "init" (func $f))
             (export "process" (func $f)))"#,
    )
    .unwrap();
    let message = load_error(&wrong_type);
    assert!(message.contains("does not export the eddy:processor@0.1.0 world"), "{message}");
}

#[test]
fn compiled_modules_are_cached_in_memory_and_on_disk() {
    let dir = tempfile::tempdir().unwrap();
    let bytes = wasm("uppercase");

    let rt = Runtime::new(Some(dir.path().to_path_buf())).unwrap();
    let first = rt.load(&bytes).unwrap();
    assert_eq!(first.origin(), ModuleOrigin::Compiled);
    let again = rt.load(&bytes).unwrap();
    assert!(Arc::ptr_eq(&first, &again), "a module in use is not loaded twice");
    let compile_time = first.load_time();
    drop((first, again, rt));

    // A restart: the compiled module comes from the cache directory.
    let rt = Runtime::new(Some(dir.path().to_path_buf())).unwrap();
    let cached = rt.load(&bytes).unwrap();
    assert_eq!(cached.origin(), ModuleOrigin::DiskCache);
    assert!(cached.load_time() < compile_time, "cached {:?} vs compiled {compile_time:?}", cached.load_time());
    let mut inst = Instance::new(&cached, ProcessorLimits::default(), vec![], Box::new(()), log_sink().1).unwrap();
    assert_eq!(values(&process(&mut inst, &[record(0, None, "cached")])[0]), vec!["CACHED"]);
    drop((inst, cached, rt));

    // A corrupt entry is ignored and replaced.
    let entries: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().path()).collect();
    assert_eq!(entries.len(), 1, "{entries:?}");
    let mut data = std::fs::read(&entries[0]).unwrap();
    let middle = data.len() / 2;
    data[middle] ^= 0xff;
    std::fs::write(&entries[0], &data).unwrap();
    let rt = Runtime::new(Some(dir.path().to_path_buf())).unwrap();
    assert_eq!(rt.load(&bytes).unwrap().origin(), ModuleOrigin::Compiled);
    let rt = Runtime::new(Some(dir.path().to_path_buf())).unwrap();
    assert_eq!(rt.load(&bytes).unwrap().origin(), ModuleOrigin::DiskCache);
}

#[test]
fn instances_outlive_the_runtime_and_keep_their_deadlines() {
    let rt = runtime();
    let module = rt.load(&wasm("infinite-loop")).unwrap();
    drop(rt);
    let limits = ProcessorLimits { call_timeout: Duration::from_millis(20), ..Default::default() };
    let mut inst = Instance::new(&module, limits, vec![], Box::new(()), log_sink().1).unwrap();
    assert_eq!(process(&mut inst, &[record(0, None, "loop")]), vec![Err(ProcessError::Timeout)]);
}

#[test]
fn printing_works_when_called_from_inside_a_tokio_runtime() {
    let rt = runtime();
    let module = rt.load(&wasm("sandbox-probe")).unwrap();
    let mut inst = Instance::new(&module, ProcessorLimits::default(), vec![], Box::new(()), log_sink().1).unwrap();
    let tokio = tokio::runtime::Builder::new_current_thread().build().unwrap();
    let out = tokio.block_on(async { process(&mut inst, &[record(0, None, "print"), record(1, None, "file")]) });
    assert_eq!(values(&out[0]), vec!["printed"]);
}
