//! `eddy consume`: print records of a topic, as text or JSON lines.

use std::io::Write;
use std::time::{Duration, Instant};

use anyhow::Context;
use base64::Engine;
use clap::Args;
use eddy_sdk::{Admin, Consumer, ConsumerConfig, ConsumerRecord, StartOffset};
use serde_json::json;

use super::ClientArgs;

/// Options of `eddy consume`.
#[derive(Debug, Args)]
pub struct ConsumeArgs {
    /// Topic to read.
    topic: String,
    /// Start at the earliest stored record (default: only new records).
    #[arg(long, conflicts_with = "offset")]
    from_beginning: bool,
    /// Start at this offset (in each partition read).
    #[arg(long)]
    offset: Option<u64>,
    /// Read only this partition (default: all).
    #[arg(long)]
    partition: Option<u32>,
    /// Exit after this many records.
    #[arg(long)]
    max_records: Option<u64>,
    /// Exit when no record arrived for this many seconds.
    #[arg(long)]
    timeout: Option<f64>,
    /// One JSON object per line: topic, partition, offset, timestamp, key, value, headers.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    client: ClientArgs,
}

/// A byte string as JSON: a string when it is UTF-8, else `{"base64": "..."}`.
pub fn bytes_json(b: &[u8]) -> serde_json::Value {
    match std::str::from_utf8(b) {
        Ok(s) => json!(s),
        Err(_) => json!({ "base64": base64::engine::general_purpose::STANDARD.encode(b) }),
    }
}

/// The JSON line printed for a record.
pub fn record_json(r: &ConsumerRecord) -> serde_json::Value {
    json!({
        "topic": r.topic,
        "partition": r.partition,
        "offset": r.offset,
        "timestamp": r.timestamp,
        "key": r.key.as_deref().map(bytes_json),
        "value": bytes_json(&r.value),
        "headers": r.headers.iter().map(|h| json!({"key": h.key, "value": bytes_json(&h.value)})).collect::<Vec<_>>(),
    })
}

/// Prints records until --max-records, --timeout, or Ctrl-C.
pub async fn run(args: ConsumeArgs) -> anyhow::Result<()> {
    let client = args.client.connect().await?;
    let start = match (args.from_beginning, args.offset) {
        (true, _) => StartOffset::Earliest,
        (false, Some(o)) => StartOffset::At(o),
        (false, None) => StartOffset::Latest,
    };
    let mut consumer = Consumer::new(client.clone(), ConsumerConfig::default());
    match args.partition {
        Some(p) => {
            Admin::new(client).describe_topic(&args.topic).await?;
            consumer.assign(&args.topic, p, start).await?
        }
        None => {
            consumer.assign_all(&args.topic, start).await?;
        }
    }
    let idle_limit = args.timeout.map(Duration::from_secs_f64);
    let mut last_record = Instant::now();
    let mut printed = 0u64;
    let stdout = std::io::stdout();
    let interrupted = tokio::signal::ctrl_c();
    tokio::pin!(interrupted);
    loop {
        if args.max_records.is_some_and(|max| printed >= max) {
            break;
        }
        if idle_limit.is_some_and(|limit| last_record.elapsed() >= limit) {
            break;
        }
        let wait = idle_limit.map_or(Duration::from_millis(500), |l| l.saturating_sub(last_record.elapsed()));
        let records = tokio::select! {
            r = consumer.poll(wait.max(Duration::from_millis(1))) => r?,
            _ = &mut interrupted => break,
        };
        if records.is_empty() {
            continue;
        }
        last_record = Instant::now();
        let mut out = stdout.lock();
        for r in records {
            if args.max_records.is_some_and(|max| printed >= max) {
                break;
            }
            if args.json {
                writeln!(out, "{}", record_json(&r))
            } else {
                writeln!(out, "{}", String::from_utf8_lossy(&r.value))
            }
            .context("writing to standard output")?;
            printed += 1;
        }
        out.flush().context("writing to standard output")?;
    }
    Ok(())
}
