//! `eddy consume`: print records of a topic, as text or JSON lines; with
//! `--group`, as a member of a consumer group that commits as it goes.

use std::collections::BTreeMap;
use std::io::Write;
use std::time::{Duration, Instant};

use anyhow::Context;
use base64::Engine;
use clap::Args;
use eddy_sdk::{
    Admin, Client, ClientError, Consumer, ConsumerConfig, ConsumerRecord, ErrorCode, GroupConfig, GroupConsumer,
    OffsetReset, StartOffset,
};
use serde_json::json;

use super::common::interrupted;
use super::ClientArgs;

/// Consecutive retriable poll errors a group member rides out before giving up.
const MAX_CONSECUTIVE_POLL_ERRORS: u32 = 10;

/// Options of `eddy consume`.
#[derive(Debug, Args)]
pub struct ConsumeArgs {
    /// Topic to read.
    topic: String,
    /// Start at the earliest stored record (default: only new records). With
    /// --group: where partitions without a committed offset start.
    #[arg(long, conflicts_with = "offset")]
    from_beginning: bool,
    /// Start at this offset (in each partition read).
    #[arg(long, conflicts_with = "group")]
    offset: Option<u64>,
    /// Read only this partition (default: all).
    #[arg(long, conflicts_with = "group")]
    partition: Option<u32>,
    /// Consume as a member of this consumer group: read the partitions the
    /// group assigns, from its committed offsets, and commit as records are
    /// printed. Ctrl-C or SIGTERM commits and leaves the group.
    #[arg(long)]
    group: Option<String>,
    /// With --group: the member is removed when the broker hears nothing from it for this long.
    #[arg(long, default_value_t = 10_000, requires = "group")]
    session_timeout_ms: u32,
    /// With --group: how long a rebalance waits for members to rejoin.
    #[arg(long, default_value_t = 30_000, requires = "group")]
    rebalance_timeout_ms: u32,
    /// With --group: commit the positions of printed records this often.
    #[arg(long, default_value_t = 1_000, requires = "group")]
    auto_commit_ms: u64,
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

/// Prints records, stopping at --max-records.
struct Printer {
    json: bool,
    max_records: Option<u64>,
    printed: u64,
}

impl Printer {
    fn done(&self) -> bool {
        self.max_records.is_some_and(|max| self.printed >= max)
    }

    /// Prints records until --max-records; returns how many were printed.
    fn print(&mut self, records: &[ConsumerRecord]) -> anyhow::Result<usize> {
        let stdout = std::io::stdout();
        let mut out = stdout.lock();
        let mut n = 0;
        for r in records {
            if self.done() {
                break;
            }
            if self.json {
                writeln!(out, "{}", record_json(r))
            } else {
                writeln!(out, "{}", String::from_utf8_lossy(&r.value))
            }
            .context("writing to standard output")?;
            self.printed += 1;
            n += 1;
        }
        out.flush().context("writing to standard output")?;
        Ok(n)
    }
}

/// How long the next poll may wait under --timeout (idle limit).
fn next_wait(idle_limit: Option<Duration>, last_record: Instant) -> Duration {
    idle_limit
        .map_or(Duration::from_millis(500), |l| l.saturating_sub(last_record.elapsed()))
        .max(Duration::from_millis(1))
}

/// Prints records until --max-records, --timeout, or Ctrl-C / SIGTERM.
pub async fn run(args: ConsumeArgs) -> anyhow::Result<()> {
    let client = args.client.connect().await?;
    match args.group.clone() {
        Some(group) => run_group(&args, client, group).await,
        None => run_plain(&args, client).await,
    }
}

async fn run_plain(args: &ConsumeArgs, client: Client) -> anyhow::Result<()> {
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
    let mut printer = Printer { json: args.json, max_records: args.max_records, printed: 0 };
    let interrupted = interrupted();
    tokio::pin!(interrupted);
    loop {
        if printer.done() || idle_limit.is_some_and(|limit| last_record.elapsed() >= limit) {
            break;
        }
        let records = tokio::select! {
            r = consumer.poll(next_wait(idle_limit, last_record)) => r?,
            _ = &mut interrupted => break,
        };
        if records.is_empty() {
            continue;
        }
        last_record = Instant::now();
        printer.print(&records)?;
    }
    Ok(())
}

/// Whether a commit or leave failed only because the group moved on (the
/// records will be delivered again to their next owner, nothing is broken).
fn is_fenced(err: &ClientError) -> bool {
    matches!(err.code(), Some(ErrorCode::IllegalGeneration | ErrorCode::UnknownMember | ErrorCode::RebalanceInProgress))
}

async fn run_group(args: &ConsumeArgs, client: Client, group: String) -> anyhow::Result<()> {
    let reset = if args.from_beginning { OffsetReset::Earliest } else { OffsetReset::Latest };
    let config = GroupConfig::new(group.clone())
        .client_id(format!("eddy-consume-{}", std::process::id()))
        .session_timeout(Duration::from_millis(args.session_timeout_ms.into()))
        .rebalance_timeout(Duration::from_millis(args.rebalance_timeout_ms.into()))
        .auto_commit(Some(Duration::from_millis(args.auto_commit_ms)))
        .offset_reset(reset);
    // A member of a group on a missing topic would idle silently.
    Admin::new(client.clone()).describe_topic(&args.topic).await?;
    let interrupted = interrupted();
    tokio::pin!(interrupted);
    let topics = [args.topic.clone()];
    let mut member = tokio::select! {
        m = GroupConsumer::subscribe(client, config, &topics) => m.with_context(|| format!("joining group {group}"))?,
        _ = &mut interrupted => return Ok(()),
    };
    let idle_limit = args.timeout.map(Duration::from_secs_f64);
    let mut last_record = Instant::now();
    let mut printer = Printer { json: args.json, max_records: args.max_records, printed: 0 };
    let mut errors = 0;
    let mut failure = None;
    loop {
        if printer.done() || idle_limit.is_some_and(|limit| last_record.elapsed() >= limit) {
            break;
        }
        let records = tokio::select! {
            r = member.poll(next_wait(idle_limit, last_record)) => r,
            _ = &mut interrupted => break,
        };
        let records = match records {
            Ok(records) => {
                errors = 0;
                records
            }
            Err(e) if e.is_retriable() && errors < MAX_CONSECUTIVE_POLL_ERRORS => {
                errors += 1;
                tracing::warn!(error = %e, "poll failed; retrying");
                continue;
            }
            Err(e) => {
                failure = Some(e);
                break;
            }
        };
        if records.is_empty() {
            continue;
        }
        last_record = Instant::now();
        let n = printer.print(&records)?;
        if n < records.len() {
            // --max-records cut the batch: only printed records count as consumed.
            let mut first_unprinted: BTreeMap<(&str, u32), u64> = BTreeMap::new();
            for r in &records[n..] {
                first_unprinted.entry((r.topic.as_str(), r.partition)).or_insert(r.offset);
            }
            for ((topic, partition), offset) in first_unprinted {
                if let Err(e) = member.seek(topic, partition, offset).await {
                    failure = Some(e);
                }
            }
        }
    }
    // Commit what was printed and leave, so the partitions move on at once.
    match member.close().await {
        Ok(()) => {}
        Err(e) if is_fenced(&e) => {
            eprintln!(
                "warning: last commit refused ({e}); the records since the previous commit will be delivered again"
            )
        }
        Err(e) => {
            if failure.is_none() {
                return Err(anyhow::Error::new(e).context(format!("leaving group {group}")));
            }
        }
    }
    match failure {
        Some(e) => Err(e.into()),
        None => Ok(()),
    }
}
