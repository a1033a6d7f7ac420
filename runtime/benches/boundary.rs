//! Measures what crossing the Wasm boundary costs, to choose per-record or
//! per-batch `process` calls and to check the 300 ns/record budget:
//!
//! * the uppercase map on 1 KiB records through [`Instance::process`] with
//!   batches of 1 (a per-record interface), 10, 100 and 1000 records;
//! * the same map as a native Rust closure producing the same outputs;
//! * loading a module: compiling it vs reading the compiled-module cache, and
//!   creating an instance (instantiate + init).
//!
//! Run with `cargo bench -p eddy-runtime` (the example processors are built
//! or taken from `EDDY_PROCESSORS_DIR`). `--records N` changes the number of
//! records per measurement (default 200,000); medians of 5 runs are printed.
//! `--batch N` measures only batches of N (and the native closure), for
//! profiling; `--value-bytes N` changes the value size (default 1024; 0 shows
//! the fixed cost per record).

#[path = "../tests/common/mod.rs"]
mod common;

use std::hint::black_box;
use std::time::{Duration, Instant};

use bytes::Bytes;
use eddy_runtime::{InputRecord, Instance, LogLevel, OutputRecord, ProcessorLimits, Runtime};

const RUNS: usize = 5;

/// Owned records: (key, value).
fn records(n: usize, value_bytes: usize) -> Vec<(Vec<u8>, Vec<u8>)> {
    (0..n)
        .map(|i| {
            let key = format!("key-{}", i % 100).into_bytes();
            let value = (0..value_bytes).map(|j| b'a' + ((i + j) % 26) as u8).collect();
            (key, value)
        })
        .collect()
}

fn inputs(records: &[(Vec<u8>, Vec<u8>)]) -> Vec<InputRecord<'_>> {
    records
        .iter()
        .enumerate()
        .map(|(i, (key, value))| InputRecord {
            offset: i as u64,
            timestamp_ms: 1_700_000_000_000,
            key: Some(key),
            value,
            headers: &[],
        })
        .collect()
}

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

fn ns_per(d: Duration, n: usize) -> f64 {
    d.as_nanos() as f64 / n as f64
}

/// The native equivalent of `Instance::process` for the uppercase map.
fn native_process(batch: &[InputRecord], f: &dyn Fn(&InputRecord) -> Vec<u8>) -> Vec<Result<Vec<OutputRecord>, ()>> {
    batch
        .iter()
        .map(|r| {
            Ok(vec![OutputRecord {
                key: r.key.map(Bytes::copy_from_slice),
                value: Bytes::from(f(r)),
                headers: Vec::new(),
            }])
        })
        .collect()
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let option =
        |name: &str| args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).and_then(|v| v.parse().ok());
    let n: usize = option("--records").unwrap_or(200_000);
    let only_batch: Option<usize> = option("--batch");
    let value_bytes: usize = option("--value-bytes").unwrap_or(1024);
    let wasm = common::wasm("uppercase");
    let owned = records(n.min(10_000), value_bytes);
    let input = inputs(&owned);

    let rt = Runtime::new(None).expect("runtime");
    let module = rt.load(&wasm).expect("load");
    let mut instance = Instance::new(
        &module,
        ProcessorLimits { call_timeout: Duration::from_secs(10), ..Default::default() },
        vec![],
        Box::new(()),
        Box::new(|_: LogLevel, _: &str| {}),
    )
    .expect("instance");

    println!("uppercase map, {value_bytes}-byte values, {n} records per run, median of {RUNS} runs");
    println!("{:<28} {:>12}", "path", "ns/record");
    let native_fn = |r: &InputRecord<'_>| r.value.to_ascii_uppercase();
    let native = median(
        (0..RUNS)
            .map(|_| {
                let started = Instant::now();
                let mut done = 0;
                while done < n {
                    let batch = &input[..(n - done).min(1000)];
                    black_box(native_process(black_box(batch), &native_fn));
                    done += batch.len();
                }
                started.elapsed()
            })
            .collect(),
    );
    println!("{:<28} {:>12.0}", "native closure", ns_per(native, n));
    let batch_sizes = match only_batch {
        Some(b) => vec![b],
        None => vec![1, 10, 100, 1000],
    };
    for batch_size in batch_sizes {
        // Warm up (grows the module's memory to its steady size).
        black_box(instance.process("in", 0, &input[..batch_size]));
        let elapsed = median(
            (0..RUNS)
                .map(|_| {
                    let started = Instant::now();
                    let mut done = 0;
                    while done < n {
                        let start = done % (input.len() - batch_size + 1);
                        let outcomes = instance.process("in", 0, black_box(&input[start..start + batch_size]));
                        debug_assert!(outcomes.iter().all(Result::is_ok));
                        black_box(outcomes);
                        done += batch_size;
                    }
                    started.elapsed()
                })
                .collect(),
        );
        let per_record = ns_per(elapsed, n);
        println!(
            "{:<28} {:>12.0}   (wasm cost over native: {:.0} ns)",
            format!("wasm, batch of {batch_size}"),
            per_record,
            per_record - ns_per(native, n)
        );
    }

    if only_batch.is_some() {
        return;
    }
    // The filter example dropping every record: records in, nothing out.
    let filter = rt.load(&common::wasm("filter")).expect("load filter");
    let params = vec![("match".to_string(), "no such text".to_string())];
    let mut drop_all =
        Instance::new(&filter, ProcessorLimits::default(), params, Box::new(()), Box::new(|_: LogLevel, _: &str| {}))
            .expect("filter instance");
    let elapsed = median(
        (0..RUNS)
            .map(|_| {
                let started = Instant::now();
                let mut done = 0;
                while done < n {
                    let start = done % (input.len() - 100 + 1);
                    black_box(drop_all.process("in", 0, black_box(&input[start..start + 100])));
                    done += 100;
                }
                started.elapsed()
            })
            .collect(),
    );
    println!(
        "{:<28} {:>12.0}   (records in, nothing out)",
        "wasm filter dropping all, batch of 100",
        ns_per(elapsed, n)
    );

    // Loading: compile vs the on-disk cache, and instance creation.
    let dir = tempfile::tempdir().expect("tempdir");
    let mut compile = Vec::new();
    let mut cached = Vec::new();
    let mut instantiate = Vec::new();
    for _ in 0..RUNS {
        let _ = std::fs::remove_dir_all(dir.path());
        let rt = Runtime::new(Some(dir.path().to_path_buf())).expect("runtime");
        compile.push(rt.load(&wasm).expect("load").load_time());
        drop(rt);
        let rt = Runtime::new(Some(dir.path().to_path_buf())).expect("runtime");
        let module = rt.load(&wasm).expect("load");
        cached.push(module.load_time());
        let started = Instant::now();
        let instance = Instance::new(
            &module,
            ProcessorLimits::default(),
            vec![],
            Box::new(()),
            Box::new(|_: LogLevel, _: &str| {}),
        );
        instantiate.push(started.elapsed());
        drop(instance.expect("instance"));
    }
    println!(
        "load uppercase.wasm ({} KiB): compile {:.1} ms, from the disk cache {:.2} ms; new instance {:.3} ms",
        wasm.len() / 1024,
        median(compile).as_secs_f64() * 1e3,
        median(cached).as_secs_f64() * 1e3,
        median(instantiate).as_secs_f64() * 1e3,
    );
}
