//! `eddy bench processor`: end-to-end throughput of a deployed processor (input
//! records already stored -> every output acknowledged), the Wasm time per
//! record the worker measured, the same map as a native Rust closure for
//! comparison, and the cold-deploy time (upload, validate, compile, first
//! output acknowledged) of a module the broker has never compiled.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;
use clap::Args;
use eddy_sdk::protocol::messages::{Acks, OffsetSpec};
use eddy_sdk::protocol::processors::{DeployProcessorRequest, ErrorPolicy, StartPosition};
use eddy_sdk::{Admin, Client, NewTopic, Processors, Producer, ProducerConfig, ProducerRecord};
use serde_json::json;

use super::ClientArgs;

/// Options of `eddy bench processor`.
#[derive(Debug, Args)]
pub struct ProcessorBench {
    /// The module to deploy (a map such as the uppercase example).
    #[arg(long)]
    wasm: PathBuf,
    /// Input records to process.
    #[arg(long, default_value_t = 500_000)]
    records: u64,
    /// Value size in bytes.
    #[arg(long, default_value_t = 1024)]
    record_size: usize,
    /// Partitions of the input and output topics.
    #[arg(long, default_value_t = 4)]
    partitions: u32,
    /// Group members per worker.
    #[arg(long, default_value_t = 1)]
    parallelism: u32,
    /// Give up waiting for the outputs after this many seconds.
    #[arg(long, default_value_t = 600)]
    timeout_secs: u64,
    /// Print a JSON summary instead of text.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    client: ClientArgs,
}

/// Runs the benchmark against the broker's workers.
pub async fn run(b: ProcessorBench) -> anyhow::Result<()> {
    let wasm = std::fs::read(&b.wasm).with_context(|| format!("reading {}", b.wasm.display()))?;
    let client = b.client.connect().await?;
    let admin = Admin::new(client.clone());
    let processors = Processors::new(client.clone());
    let run_id = std::process::id();
    let timeout = Duration::from_secs(b.timeout_secs);

    // Cold deploy: a module the broker has never seen (a nonce custom section
    // makes its hash new), one input record, until its output is acknowledged.
    let cold_in = format!("bench-proc-cold-in-{run_id}");
    let cold_out = format!("bench-proc-cold-out-{run_id}");
    create(&admin, &cold_in, 1).await?;
    create(&admin, &cold_out, 1).await?;
    let producer = Producer::new(client.clone(), ProducerConfig { acks: Acks::All, ..Default::default() }).await?;
    producer.send_and_wait(ProducerRecord::new(cold_in.clone(), Bytes::from_static(b"cold start"))).await?;
    let cold_name = format!("bench-cold-{run_id}");
    let started = Instant::now();
    processors.deploy(&deploy_request(&cold_name, &cold_in, &cold_out, 1, with_nonce(&wasm))).await?;
    let deployed = started.elapsed();
    wait_for_outputs(&admin, &cold_out, 1, 1, started, timeout, None).await?;
    let cold = started.elapsed();
    processors.delete(&cold_name).await?;

    // Throughput: preload the input, then deploy from the beginning.
    let input = format!("bench-proc-in-{run_id}");
    let output = format!("bench-proc-out-{run_id}");
    create(&admin, &input, b.partitions).await?;
    create(&admin, &output, b.partitions).await?;
    preload(&client, &input, b.records, b.record_size).await?;
    let name = format!("bench-{run_id}");
    let started = Instant::now();
    processors.deploy(&deploy_request(&name, &input, &output, b.parallelism, wasm.clone())).await?;
    let bar = (!b.json).then(|| super::bench::progress(b.records, "outputs"));
    let first = wait_for_outputs(&admin, &output, b.partitions, b.records, started, timeout, bar.as_ref()).await?;
    let total = started.elapsed();
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    let desc = processors.describe(&name).await?;
    processors.delete(&name).await?;
    let steady = total.saturating_sub(first).as_secs_f64().max(1e-9);
    let rps_total = b.records as f64 / total.as_secs_f64();
    let rps_steady = b.records as f64 / steady;
    let wasm_ns = desc.stats.wasm_nanos as f64 / desc.stats.records_in.max(1) as f64;
    let native_ns = native_uppercase_ns(b.record_size);

    if b.json {
        println!(
            "{}",
            json!({"bench": "processor", "records": b.records, "record_size": b.record_size, "partitions": b.partitions,
                   "parallelism": b.parallelism, "seconds": total.as_secs_f64(), "records_per_sec": rps_total,
                   "records_per_sec_after_first_output": rps_steady, "wasm_ns_per_record": wasm_ns,
                   "native_ns_per_record": native_ns, "batches": desc.stats.batches,
                   "cold_deploy_ms": cold.as_secs_f64() * 1e3, "deploy_request_ms": deployed.as_secs_f64() * 1e3})
        );
    } else {
        println!(
            "processor: {} records of {} B, {} partitions, parallelism {} ({})",
            b.records,
            b.record_size,
            b.partitions,
            b.parallelism,
            b.wasm.display()
        );
        println!(
            "  input -> acknowledged output: {rps_total:.0} records/s over {:.2} s ({rps_steady:.0} records/s after the first output)",
            total.as_secs_f64()
        );
        println!(
            "  in the worker: Wasm {wasm_ns:.0} ns/record ({} batches); the same map as a native closure: {native_ns:.0} ns/record",
            desc.stats.batches
        );
        println!(
            "  cold deploy (upload, validate, compile, first output acknowledged): {:.0} ms (deploy request {:.0} ms)",
            cold.as_secs_f64() * 1e3,
            deployed.as_secs_f64() * 1e3
        );
    }
    Ok(())
}

fn deploy_request(name: &str, input: &str, output: &str, parallelism: u32, wasm: Vec<u8>) -> DeployProcessorRequest {
    DeployProcessorRequest {
        name: name.to_string(),
        inputs: vec![input.to_string()],
        output: output.to_string(),
        parallelism,
        on_error: ErrorPolicy::Skip,
        params: vec![],
        start: StartPosition::Beginning,
        timeout_ms: 0,
        memory_bytes: 0,
        wasm: Bytes::from(wasm),
    }
}

async fn create(admin: &Admin, topic: &str, partitions: u32) -> anyhow::Result<()> {
    admin.create_topic(NewTopic::new(topic, partitions)).await.with_context(|| format!("creating topic {topic}"))?;
    Ok(())
}

/// Appends a custom section with a nonce, so the module's hash (and so its
/// compile-cache key) is new while its code is the same.
fn with_nonce(wasm: &[u8]) -> Vec<u8> {
    let name = b"eddy-bench-nonce";
    let nonce = format!("{}-{:?}", std::process::id(), std::time::SystemTime::now());
    let mut payload = vec![name.len() as u8];
    payload.extend_from_slice(name);
    payload.extend_from_slice(nonce.as_bytes());
    let mut out = wasm.to_vec();
    out.push(0); // custom section id
    let mut len = payload.len();
    loop {
        let byte = (len & 0x7f) as u8;
        len >>= 7;
        if len == 0 {
            out.push(byte);
            break;
        }
        out.push(byte | 0x80);
    }
    out.extend_from_slice(&payload);
    out
}

/// Produces `records` keyed records of lowercase text.
async fn preload(client: &Client, topic: &str, records: u64, size: usize) -> anyhow::Result<()> {
    let producer = Producer::new(client.clone(), ProducerConfig::default()).await?;
    let value = Bytes::from(b"abcdefghijklmnopqrstuvwxyz".iter().cycle().take(size).copied().collect::<Vec<u8>>());
    let mut pending = Vec::new();
    for i in 0..records {
        let record = ProducerRecord::new(topic.to_string(), value.clone()).key(format!("key-{}", i % 1000));
        pending.push(producer.send(record).await?);
        if pending.len() >= 65_536 {
            for p in pending.drain(..) {
                p.await?;
            }
        }
    }
    for p in pending {
        p.await?;
    }
    producer.close().await?;
    Ok(())
}

/// Waits until the output topic holds `want` records; returns when the first appeared.
async fn wait_for_outputs(
    admin: &Admin,
    topic: &str,
    partitions: u32,
    want: u64,
    started: Instant,
    timeout: Duration,
    bar: Option<&indicatif::ProgressBar>,
) -> anyhow::Result<Duration> {
    let mut first = None;
    loop {
        let mut have = 0;
        for p in 0..partitions {
            have += admin.list_offset(topic, p, OffsetSpec::Latest).await?;
        }
        if have > 0 && first.is_none() {
            first = Some(started.elapsed());
        }
        if let Some(bar) = bar {
            bar.set_position(have);
        }
        if have >= want {
            return Ok(first.unwrap_or_default());
        }
        anyhow::ensure!(
            started.elapsed() < timeout,
            "only {have} of {want} outputs in {topic} after {timeout:?}: is a worker running (eddy dev / eddy runtime)?"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// The same map as the uppercase example, as a native closure over the same
/// records (value copied and uppercased into a new buffer, key kept).
fn native_uppercase_ns(size: usize) -> f64 {
    let value = Bytes::from(b"abcdefghijklmnopqrstuvwxyz".iter().cycle().take(size).copied().collect::<Vec<u8>>());
    let key = Bytes::from_static(b"key-1");
    let map = |k: &Bytes, v: &Bytes| (k.clone(), Bytes::from(v.to_ascii_uppercase()));
    let n = 200_000;
    let started = Instant::now();
    let mut sink = 0usize;
    for _ in 0..n {
        let (k, v) = map(&key, std::hint::black_box(&value));
        sink += k.len() + v.len();
    }
    std::hint::black_box(sink);
    started.elapsed().as_nanos() as f64 / n as f64
}
