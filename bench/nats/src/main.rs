//! `nats-bench produce | consume`: the workloads of `eddy bench` against NATS
//! JetStream, printing the same one-line JSON summaries, so that
//! `cargo xtask bench-peers` can put the two systems side by side.
//!
//! * `produce` creates the stream `BENCH` (subject `bench`, file storage) if it
//!   is missing and publishes `--records` messages of `--record-size` bytes from
//!   one connection, with at most `--outstanding` publish acknowledgements in
//!   flight. Latency is measured per message, from the call to publish to its
//!   acknowledgement, into an HDR histogram (as `eddy bench produce` does).
//! * `consume` (re)creates the durable pull consumer `bench` on `BENCH`
//!   (deliver all, no acks) and reads `--records` messages from the start of
//!   the stream, pulling batches of 1000.
//!
//! MB is 10^6 bytes of payload.
//!
//! Caveat when comparing: by default NATS JetStream fsyncs its file store only
//! every 2 minutes (`sync_interval`), so a publish acknowledgement does not mean
//! the message is on disk, whereas Eddy acknowledges with acks=1 only after an
//! fsync.

use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use async_nats::jetstream::ErrorCode;
use async_nats::jetstream::{self, consumer, stream};
use bytes::Bytes;
use clap::{Args, Parser, Subcommand};
use futures::StreamExt;
use hdrhistogram::Histogram;
use serde_json::json;

const STREAM: &str = "BENCH";
const SUBJECT: &str = "bench";
const CONSUMER: &str = "bench";
const CONSUMER_NOT_FOUND: ErrorCode = ErrorCode::CONSUMER_NOT_FOUND;
/// Longest wait for any single server response, so that nothing hangs.
const TIMEOUT: Duration = Duration::from_secs(30);
/// Longest wait for the next message while consuming.
const IDLE: Duration = Duration::from_secs(10);

/// The `eddy bench` workloads against NATS JetStream.
#[derive(Debug, Parser)]
#[command(name = "nats-bench")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Publish messages to the stream BENCH and report throughput and publish->ack latency.
    Produce(Produce),
    /// Read the stream BENCH from its start with a durable pull consumer and report throughput.
    Consume(Consume),
}

#[derive(Debug, Args)]
struct Produce {
    /// NATS server URL.
    #[arg(long, default_value = "nats://127.0.0.1:4222")]
    url: String,
    /// Messages to publish in total.
    #[arg(long, default_value_t = 1_000_000)]
    records: u64,
    /// Payload size in bytes.
    #[arg(long, default_value_t = 1024)]
    record_size: usize,
    /// Most publish acknowledgements awaited at once.
    #[arg(long, default_value_t = 256)]
    outstanding: usize,
}

#[derive(Debug, Args)]
struct Consume {
    /// NATS server URL.
    #[arg(long, default_value = "nats://127.0.0.1:4222")]
    url: String,
    /// Stop after this many messages (default: everything stored when the bench starts).
    #[arg(long)]
    records: Option<u64>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Produce(p) => produce(p).await,
        Command::Consume(c) => consume(c).await,
    }
}

async fn connect(url: &str) -> anyhow::Result<async_nats::Client> {
    let options = async_nats::ConnectOptions::new().connection_timeout(TIMEOUT);
    tokio::time::timeout(TIMEOUT, options.connect(url))
        .await
        .with_context(|| format!("connecting to {url}: timed out"))?
        .with_context(|| format!("connecting to {url}"))
}

async fn bench_stream(js: &jetstream::Context) -> anyhow::Result<stream::Stream> {
    let config = stream::Config {
        name: STREAM.into(),
        subjects: vec![SUBJECT.into()],
        storage: stream::StorageType::File,
        ..Default::default()
    };
    js.get_or_create_stream(config).await.context("creating the stream BENCH")
}

async fn produce(p: Produce) -> anyhow::Result<()> {
    anyhow::ensure!(p.outstanding > 0, "--outstanding must be at least 1");
    let client = connect(&p.url).await?;
    // The context holds at most `outstanding` unacknowledged publishes: the next
    // publish waits for a permit, which an acknowledgement frees.
    let js = jetstream::ContextBuilder::new()
        .timeout(TIMEOUT)
        .max_ack_inflight(p.outstanding)
        .backpressure_on_inflight(true)
        .build(client.clone());
    bench_stream(&js).await?;
    let value = Bytes::from(vec![b'x'; p.record_size]);

    // Acknowledgements are awaited by a collector task so that publishing never waits for them
    // (except for a free slot); a single publisher's acks arrive in order.
    let (tx, mut rx) = tokio::sync::mpsc::channel::<(Instant, jetstream::context::PublishAckFuture)>(1 << 16);
    let collector = tokio::spawn(async move {
        let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("valid bounds");
        let mut failed = 0u64;
        while let Some((sent, ack)) = rx.recv().await {
            match ack.await {
                Ok(_) => {
                    let _ = hist.record((sent.elapsed().as_micros() as u64).max(1));
                }
                Err(e) => {
                    if failed == 0 {
                        eprintln!("first failure: {e}");
                    }
                    failed += 1;
                }
            }
        }
        (hist, failed)
    });

    let started = Instant::now();
    for _ in 0..p.records {
        let sent = Instant::now();
        let ack = js.publish(SUBJECT, value.clone()).await.context("publishing")?;
        if tx.send((sent, ack)).await.is_err() {
            bail!("the acknowledgement collector stopped");
        }
    }
    drop(tx);
    let (hist, failed) = tokio::time::timeout(TIMEOUT, collector)
        .await
        .context("waiting for the last acknowledgements: timed out")?
        .context("acknowledgement collector")?;
    let elapsed = started.elapsed().as_secs_f64();
    client.flush().await.context("flushing")?;

    let ok = p.records - failed;
    let rps = ok as f64 / elapsed;
    let mbps = rps * p.record_size as f64 / 1e6;
    let q = |x: f64| hist.value_at_quantile(x) as f64 / 1000.0;
    println!(
        "{}",
        json!({"bench": "produce", "system": "nats", "records": ok, "failed": failed, "record_size": p.record_size,
               "outstanding": p.outstanding, "seconds": elapsed, "records_per_sec": rps, "mb_per_sec": mbps,
               "latency_ms": {"p50": q(0.5), "p99": q(0.99), "p999": q(0.999), "max": hist.max() as f64 / 1000.0}})
    );
    anyhow::ensure!(failed == 0, "{failed} messages were not acknowledged");
    Ok(())
}

async fn consume(c: Consume) -> anyhow::Result<()> {
    let client = connect(&c.url).await?;
    let js = jetstream::ContextBuilder::new().timeout(TIMEOUT).build(client);
    let mut stream = js.get_stream(STREAM).await.context("the stream BENCH (run `nats-bench produce` first)")?;
    let stored = stream.info().await.context("describing the stream BENCH")?.state.messages;
    let target = c.records.unwrap_or(stored).min(stored);
    anyhow::ensure!(target > 0, "the stream BENCH holds no messages; run `nats-bench produce` first");

    // A fresh durable consumer, so that every run reads from the start.
    match stream.delete_consumer(CONSUMER).await {
        Ok(_) => {}
        Err(e) if matches!(e.kind(), stream::ConsumerErrorKind::JetStream(j) if j.error_code() == CONSUMER_NOT_FOUND) =>
            {}
        Err(e) => return Err(e).context("deleting the old bench consumer"),
    }
    let config = consumer::pull::Config {
        durable_name: Some(CONSUMER.into()),
        deliver_policy: consumer::DeliverPolicy::All,
        ack_policy: consumer::AckPolicy::None,
        ..Default::default()
    };
    let consumer: consumer::PullConsumer =
        stream.create_consumer(config).await.context("creating the durable pull consumer")?;

    let started = Instant::now();
    let mut messages = consumer.stream().max_messages_per_batch(1000).messages().await.context("pulling")?;
    let (mut records, mut bytes) = (0u64, 0u64);
    while records < target {
        let Ok(next) = tokio::time::timeout(IDLE, messages.next()).await else {
            bail!("no message for {} s after {records} of {target}", IDLE.as_secs());
        };
        let message = next.context("the pull subscription ended")?.context("pulling")?;
        bytes += message.payload.len() as u64;
        records += 1;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let (rps, mbps) = (records as f64 / elapsed, bytes as f64 / elapsed / 1e6);
    println!(
        "{}",
        json!({"bench": "consume", "system": "nats", "records": records, "bytes": bytes, "seconds": elapsed,
               "records_per_sec": rps, "mb_per_sec": mbps})
    );
    Ok(())
}
