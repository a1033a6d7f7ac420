//! `eddy bench produce | consume`: throughput and latency percentiles with progress.
//!
//! Produce latency is measured per record from the moment it was due to be
//! sent (with `--rate`, its scheduled time; otherwise the call to `send`) to
//! its acknowledgement, into an HDR histogram.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;
use clap::{Args, Subcommand};
use eddy_sdk::protocol::messages::Acks;
use eddy_sdk::{
    Admin, ClientError, Consumer, ConsumerConfig, GroupConfig, GroupConsumer, NewTopic, OffsetReset, Producer,
    ProducerConfig, ProducerRecord, StartOffset,
};
use hdrhistogram::Histogram;
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::json;

use super::common::parse_acks;
use super::ClientArgs;

/// Benchmarks.
#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Produce records as fast as possible (or at --rate) and report throughput and latency.
    Produce(ProduceBench),
    /// Read a topic from the start and report throughput (with --group, as N group members).
    Consume(ConsumeBench),
    /// Time rebalances: from a member joining (or leaving) until every member consumes again.
    Rebalance(RebalanceBench),
    /// Deploy a processor on preloaded input and time input -> acknowledged output, and a cold deploy.
    Processor(super::bench_processor::ProcessorBench),
    /// Kill a partition leader (SIGKILL) and time the first acks=all produce on the new leader.
    Failover(super::bench_failover::FailoverBench),
}

/// Options of `eddy bench rebalance`.
#[derive(Debug, Args)]
pub struct RebalanceBench {
    /// Topic the members subscribe to (created with --partitions if missing).
    #[arg(long, default_value = "bench")]
    topic: String,
    /// Partitions if the topic is created.
    #[arg(long, default_value_t = 4)]
    partitions: u32,
    /// Members already consuming when the measured member joins.
    #[arg(long, default_value_t = 3)]
    members: u32,
    /// Join/leave cycles to time.
    #[arg(long, default_value_t = 10)]
    rounds: u32,
    /// Print a JSON summary instead of text.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    client: ClientArgs,
}

/// Options of `eddy bench produce`.
#[derive(Debug, Args)]
pub struct ProduceBench {
    /// Topic (created with --partitions if missing).
    #[arg(long, default_value = "bench")]
    topic: String,
    /// Records to send in total.
    #[arg(long, default_value_t = 1_000_000)]
    records: u64,
    /// Value size in bytes.
    #[arg(long, default_value_t = 1024)]
    record_size: usize,
    /// Partitions of the topic if it is created.
    #[arg(long, default_value_t = 4)]
    partitions: u32,
    /// Replication factor of the topic if it is created.
    #[arg(long, default_value_t = 1)]
    replication: u16,
    /// min-insync-replicas of the topic if it is created (0: the default, 1).
    #[arg(long, default_value_t = 0)]
    min_insync_replicas: u16,
    /// Acknowledgements: 0, 1 or all.
    #[arg(long, default_value = "1", value_parser = parse_acks)]
    acks: Acks,
    /// Concurrent producers, each with its own connection.
    #[arg(long, default_value_t = 1)]
    producers: u32,
    /// Target records per second across all producers (0: as fast as possible).
    #[arg(long, default_value_t = 0)]
    rate: u64,
    /// Producer linger in ms.
    #[arg(long, default_value_t = 5)]
    linger_ms: u64,
    /// Producer max batch bytes.
    #[arg(long, default_value_t = 65_280)]
    batch_bytes: usize,
    /// Print a JSON summary instead of text.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    client: ClientArgs,
}

/// Options of `eddy bench consume`.
#[derive(Debug, Args)]
pub struct ConsumeBench {
    /// Topic to read from its start.
    #[arg(long, default_value = "bench")]
    topic: String,
    /// Stop after this many records (default: everything stored when the bench starts).
    #[arg(long)]
    records: Option<u64>,
    /// Max bytes per fetch.
    #[arg(long, default_value_t = 4 * 1024 * 1024)]
    fetch_bytes: u32,
    /// Consume as members of this consumer group (a fresh group reads from the start).
    #[arg(long)]
    group: Option<String>,
    /// Group members (each with its own connection); needs --group.
    #[arg(long, default_value_t = 1, requires = "group")]
    members: u32,
    /// Print a JSON summary instead of text.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    client: ClientArgs,
}

/// Runs a benchmark.
pub async fn run(cmd: BenchCommand) -> anyhow::Result<()> {
    match cmd {
        BenchCommand::Produce(b) => produce(b).await,
        BenchCommand::Consume(b) if b.group.is_some() => consume_group(b).await,
        BenchCommand::Consume(b) => consume(b).await,
        BenchCommand::Rebalance(b) => rebalance(b).await,
        BenchCommand::Processor(b) => super::bench_processor::run(b).await,
        BenchCommand::Failover(b) => super::bench_failover::run(b).await,
    }
}

/// A progress bar for `total` items.
pub(super) fn progress(total: u64, what: &str) -> ProgressBar {
    let bar = ProgressBar::new(total);
    bar.set_style(
        ProgressStyle::with_template("{prefix} [{bar:40}] {human_pos}/{human_len} {per_sec} eta {eta}")
            .expect("valid template")
            .progress_chars("=> "),
    );
    bar.set_prefix(what.to_string());
    bar
}

fn acks_name(a: Acks) -> &'static str {
    match a {
        Acks::None => "0",
        Acks::Leader => "1",
        Acks::All => "all",
    }
}

async fn produce(b: ProduceBench) -> anyhow::Result<()> {
    anyhow::ensure!(b.producers > 0, "--producers must be at least 1");
    let admin = Admin::new(b.client.connect().await?);
    let topic = NewTopic::new(b.topic.clone(), b.partitions)
        .replication_factor(b.replication)
        .min_insync_replicas(b.min_insync_replicas);
    match admin.create_topic(topic).await {
        Ok(_) => {}
        Err(ClientError::Broker { code: eddy_sdk::protocol::ErrorCode::TopicAlreadyExists, .. }) => {}
        Err(e) => return Err(e).context("creating the bench topic"),
    }
    let value = Bytes::from(vec![b'x'; b.record_size]);
    let bar = if b.json { ProgressBar::hidden() } else { progress(b.records, "produce") };
    let started = Instant::now();
    let mut tasks = Vec::new();
    for i in 0..b.producers {
        let share = b.records / u64::from(b.producers) + u64::from(u64::from(i) < b.records % u64::from(b.producers));
        let client = b.client.connect().await?;
        let config = ProducerConfig {
            acks: b.acks,
            linger: Duration::from_millis(b.linger_ms),
            max_batch_bytes: b.batch_bytes,
            ..ProducerConfig::default()
        };
        let producer = Producer::new(client, config).await?;
        let rate = if b.rate == 0 { 0.0 } else { b.rate as f64 / f64::from(b.producers) };
        tasks.push(tokio::spawn(produce_one(
            producer,
            b.topic.clone(),
            value.clone(),
            share,
            rate,
            bar.clone(),
            started,
        )));
    }
    let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("valid bounds");
    let mut failed = 0;
    for t in tasks {
        let (h, f) = t.await.context("producer task")??;
        hist.add(h).expect("same bounds");
        failed += f;
    }
    let elapsed = started.elapsed().as_secs_f64();
    bar.finish_and_clear();
    let ok = b.records - failed;
    let rps = ok as f64 / elapsed;
    let mbps = rps * b.record_size as f64 / 1e6;
    let q = |p: f64| hist.value_at_quantile(p) as f64 / 1000.0;
    if b.json {
        println!(
            "{}",
            json!({"bench": "produce", "records": ok, "failed": failed, "record_size": b.record_size, "partitions": b.partitions,
                   "acks": acks_name(b.acks), "producers": b.producers, "seconds": elapsed, "records_per_sec": rps, "mb_per_sec": mbps,
                   "latency_ms": {"p50": q(0.5), "p99": q(0.99), "p999": q(0.999), "max": hist.max() as f64 / 1000.0}})
        );
    } else {
        println!(
            "produce: {ok} records of {} B to {} ({} partitions), acks={}, {} producer(s){}",
            b.record_size,
            b.topic,
            b.partitions,
            acks_name(b.acks),
            b.producers,
            if b.rate > 0 { format!(", target {} records/s", b.rate) } else { String::new() }
        );
        println!("  throughput: {rps:.0} records/s, {mbps:.1} MB/s ({elapsed:.2} s)");
        println!(
            "  latency ms: p50 {:.2}  p99 {:.2}  p99.9 {:.2}  max {:.2}",
            q(0.5),
            q(0.99),
            q(0.999),
            hist.max() as f64 / 1000.0
        );
        if failed > 0 {
            println!("  FAILED: {failed} records were not acknowledged");
        }
    }
    anyhow::ensure!(failed == 0, "{failed} records were not acknowledged");
    Ok(())
}

async fn produce_one(
    producer: Producer,
    topic: String,
    value: Bytes,
    count: u64,
    rate: f64,
    bar: ProgressBar,
    started: Instant,
) -> anyhow::Result<(Histogram<u64>, u64)> {
    // Acknowledgements are awaited by a collector so that sending never waits for them.
    let (tx, mut rx) = tokio::sync::mpsc::channel::<(Instant, eddy_sdk::DeliveryFuture)>(1 << 16);
    let bar2 = bar.clone();
    let collector = tokio::spawn(async move {
        let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("valid bounds");
        let mut failed = 0u64;
        let mut done = 0u64;
        while let Some((due, delivery)) = rx.recv().await {
            match delivery.await {
                Ok(_) => {
                    let _ = hist.record((due.elapsed().as_micros() as u64).max(1));
                }
                Err(e) => {
                    if failed == 0 {
                        eprintln!("first failure: {e}");
                    }
                    failed += 1;
                }
            }
            done += 1;
            if done.is_multiple_of(1024) {
                bar2.inc(1024);
            }
        }
        bar2.inc(done % 1024);
        (hist, failed)
    });
    let shared_value = Arc::new(value);
    for i in 0..count {
        let due = if rate > 0.0 {
            let due = started + Duration::from_secs_f64(i as f64 / rate);
            if due > Instant::now() {
                tokio::time::sleep_until(due.into()).await;
            }
            due
        } else {
            Instant::now()
        };
        let record = ProducerRecord::new(topic.clone(), (*shared_value).clone());
        let delivery = producer.send(record).await?;
        if tx.send((due, delivery)).await.is_err() {
            break;
        }
    }
    drop(tx);
    producer.flush().await?;
    let result = collector.await.context("latency collector")?;
    producer.close().await?;
    Ok(result)
}

async fn consume(b: ConsumeBench) -> anyhow::Result<()> {
    let client = b.client.connect().await?;
    let topic = Admin::new(client.clone()).describe_topic(&b.topic).await?;
    let stored: u64 = topic.partitions.iter().map(|p| p.log_end - p.log_start).sum();
    let target = b.records.unwrap_or(stored).min(stored);
    anyhow::ensure!(target > 0, "topic {} holds no records; run `eddy bench produce` first", b.topic);
    let config = ConsumerConfig { max_bytes_per_fetch: b.fetch_bytes, ..ConsumerConfig::default() };
    let mut consumer = Consumer::new(client, config);
    consumer.assign_all(&b.topic, StartOffset::Earliest).await?;
    let bar = if b.json { ProgressBar::hidden() } else { progress(target, "consume") };
    let started = Instant::now();
    let (mut records, mut bytes) = (0u64, 0u64);
    while records < target {
        let batch = consumer.poll(Duration::from_secs(10)).await?;
        anyhow::ensure!(!batch.is_empty(), "no records for 10 s after {records} of {target}");
        for r in &batch {
            bytes += (r.value.len() + r.key.as_ref().map_or(0, |k| k.len())) as u64;
        }
        records += batch.len() as u64;
        bar.inc(batch.len() as u64);
    }
    let elapsed = started.elapsed().as_secs_f64();
    bar.finish_and_clear();
    let (rps, mbps) = (records as f64 / elapsed, bytes as f64 / elapsed / 1e6);
    if b.json {
        println!(
            "{}",
            json!({"bench": "consume", "records": records, "bytes": bytes, "seconds": elapsed, "records_per_sec": rps, "mb_per_sec": mbps})
        );
    } else {
        println!(
            "consume: {records} records, {:.1} MB from {} partitions of {}",
            bytes as f64 / 1e6,
            topic.partitions.len(),
            b.topic
        );
        println!("  throughput: {rps:.0} records/s, {mbps:.1} MB/s ({elapsed:.2} s)");
    }
    Ok(())
}

fn group_config(group: &str, fetch_bytes: u32) -> GroupConfig {
    let mut config =
        GroupConfig::new(group).auto_commit(Some(Duration::from_secs(1))).offset_reset(OffsetReset::Earliest);
    config.consumer.max_bytes_per_fetch = fetch_bytes;
    config
}

async fn consume_group(b: ConsumeBench) -> anyhow::Result<()> {
    let group = b.group.clone().expect("checked by the caller");
    let client = b.client.connect().await?;
    let topic = Admin::new(client).describe_topic(&b.topic).await?;
    let stored: u64 = topic.partitions.iter().map(|p| p.log_end - p.log_start).sum();
    let target = b.records.unwrap_or(stored).min(stored);
    anyhow::ensure!(target > 0, "topic {} holds no records; run `eddy bench produce` first", b.topic);
    let bar = if b.json { ProgressBar::hidden() } else { progress(target, "consume") };
    let counted = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let bytes = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..b.members {
        let client = b.client.connect().await?;
        let mut member =
            GroupConsumer::subscribe(client, group_config(&group, b.fetch_bytes), std::slice::from_ref(&b.topic))
                .await?;
        let (counted, bytes, bar) = (counted.clone(), bytes.clone(), bar.clone());
        tasks.push(tokio::spawn(async move {
            use std::sync::atomic::Ordering::Relaxed;
            while counted.load(Relaxed) < target {
                let records = member.poll(Duration::from_millis(200)).await?;
                let n: u64 =
                    records.iter().map(|r| (r.value.len() + r.key.as_ref().map_or(0, |k| k.len())) as u64).sum();
                bytes.fetch_add(n, Relaxed);
                counted.fetch_add(records.len() as u64, Relaxed);
                bar.inc(records.len() as u64);
            }
            member.close().await?;
            anyhow::Ok(())
        }));
    }
    for t in tasks {
        tokio::time::timeout(Duration::from_secs(600), t).await.context("group bench timed out")???;
    }
    let elapsed = started.elapsed().as_secs_f64();
    bar.finish_and_clear();
    let records = counted.load(std::sync::atomic::Ordering::Relaxed);
    let bytes = bytes.load(std::sync::atomic::Ordering::Relaxed);
    let (rps, mbps) = (records as f64 / elapsed, bytes as f64 / elapsed / 1e6);
    if b.json {
        println!(
            "{}",
            json!({"bench": "consume", "group": group, "members": b.members, "records": records, "bytes": bytes, "seconds": elapsed, "records_per_sec": rps, "mb_per_sec": mbps})
        );
    } else {
        println!("consume: {records} records, {:.1} MB by {} members of group {group}", bytes as f64 / 1e6, b.members);
        println!("  throughput: {rps:.0} records/s, {mbps:.1} MB/s ({elapsed:.2} s, joins and rebalances included)");
    }
    Ok(())
}

/// One consuming member of the rebalance bench: polls in a loop and publishes
/// the generation of its latest poll.
fn spawn_member(
    mut member: GroupConsumer,
    generation: Arc<std::sync::atomic::AtomicU32>,
    stop: Arc<std::sync::atomic::AtomicBool>,
) -> tokio::task::JoinHandle<anyhow::Result<()>> {
    use std::sync::atomic::Ordering::Relaxed;
    tokio::spawn(async move {
        while !stop.load(Relaxed) {
            member.poll(Duration::from_millis(20)).await?;
            generation.store(member.generation(), Relaxed);
        }
        member.close().await?;
        Ok(())
    })
}

async fn rebalance(b: RebalanceBench) -> anyhow::Result<()> {
    use std::sync::atomic::{AtomicBool, AtomicU32, Ordering::Relaxed};
    let admin = Admin::new(b.client.connect().await?);
    match admin.create_topic(NewTopic::new(b.topic.clone(), b.partitions)).await {
        Ok(_) | Err(ClientError::Broker { code: eddy_sdk::protocol::ErrorCode::TopicAlreadyExists, .. }) => {}
        Err(e) => return Err(e).context("creating the bench topic"),
    }
    let group = format!("bench-rebalance-{}", std::process::id());
    let config = || group_config(&group, 1 << 20).session_timeout(Duration::from_secs(10));
    let stop = Arc::new(AtomicBool::new(false));
    let mut gens = Vec::new();
    let mut tasks = Vec::new();
    for _ in 0..b.members {
        let member =
            GroupConsumer::subscribe(b.client.connect().await?, config(), std::slice::from_ref(&b.topic)).await?;
        let generation = Arc::new(AtomicU32::new(member.generation()));
        tasks.push(spawn_member(member, generation.clone(), stop.clone()));
        gens.push(generation);
    }
    // Let the initial joins settle.
    let settle = Instant::now();
    loop {
        let g: Vec<u32> = gens.iter().map(|g| g.load(Relaxed)).collect();
        if g.iter().all(|x| *x == g[0]) && settle.elapsed() > Duration::from_millis(300) {
            break;
        }
        anyhow::ensure!(settle.elapsed() < Duration::from_secs(30), "members did not settle: generations {g:?}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let mut hist = Histogram::<u64>::new_with_bounds(1, 600_000_000, 3).expect("valid bounds");
    let wait_all = |target: u32, started: Instant, extra: Option<Arc<AtomicU32>>| {
        let gens = gens.clone();
        async move {
            loop {
                let done = gens.iter().chain(extra.iter()).all(|g| g.load(Relaxed) >= target);
                if done {
                    return Ok(started.elapsed());
                }
                anyhow::ensure!(started.elapsed() < Duration::from_secs(60), "rebalance did not finish in 60 s");
                tokio::time::sleep(Duration::from_micros(200)).await;
            }
        }
    };
    for _ in 0..b.rounds {
        // Join: from the subscribe call until every member polled in the new generation.
        let started = Instant::now();
        let member =
            GroupConsumer::subscribe(b.client.connect().await?, config(), std::slice::from_ref(&b.topic)).await?;
        let target = member.generation();
        let generation = Arc::new(AtomicU32::new(target));
        let joined_stop = Arc::new(AtomicBool::new(false));
        let task = spawn_member(member, generation.clone(), joined_stop.clone());
        let took = wait_all(target, started, Some(generation)).await?;
        hist.record(took.as_micros() as u64).ok();
        // Leave: the measured member closes; the rest consume again in a newer generation.
        joined_stop.store(true, Relaxed);
        let started = Instant::now();
        task.await.context("member task")??;
        let next = target + 1;
        let took = wait_all(next, started, None).await?;
        hist.record(took.as_micros() as u64).ok();
    }
    stop.store(true, Relaxed);
    for t in tasks {
        t.await.context("member task")??;
    }
    let q = |p: f64| hist.value_at_quantile(p) as f64 / 1000.0;
    if b.json {
        println!(
            "{}",
            json!({"bench": "rebalance", "members": b.members, "rebalances": hist.len(), "ms": {"p50": q(0.5), "p99": q(0.99), "max": hist.max() as f64 / 1000.0}})
        );
    } else {
        println!(
            "rebalance: {} joins/leaves with {} other members on {} partitions",
            hist.len(),
            b.members,
            b.partitions
        );
        println!(
            "  until every member consumes again, ms: p50 {:.1}  p99 {:.1}  max {:.1}",
            q(0.5),
            q(0.99),
            hist.max() as f64 / 1000.0
        );
    }
    Ok(())
}
