//! `eddy processor logs NAME [--follow]`: print the processor's logs topic
//! (`_eddy.processor.NAME.logs`) from its first record, with a plain consumer
//! (no group, nothing committed). Each record is the JSON object the worker
//! writes (`ts_ms`, `level`, `topic`, `partition`, `message`, ...), printed as
//! `<RFC 3339 time> <LEVEL> [topic/partition] message`.

use std::collections::HashMap;
use std::io::Write;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use eddy_sdk::protocol::messages::OffsetSpec;
use eddy_sdk::protocol::processors::processor_logs_topic;
use eddy_sdk::{Admin, ClientError, Consumer, ConsumerConfig, ConsumerRecord, ErrorCode, StartOffset};

use super::rfc3339_utc;
use crate::cli::common::interrupted;
use crate::cli::ClientArgs;

/// How long one poll waits before checking for the end or an interrupt.
const POLL_WAIT: Duration = Duration::from_millis(500);

/// Options of `eddy processor logs`.
#[derive(Debug, Args)]
pub struct LogsArgs {
    /// Processor name.
    name: String,
    /// Keep printing new messages until Ctrl-C or SIGTERM (default: stop at the
    /// last message logged when the command started).
    #[arg(long)]
    follow: bool,
    /// Print each record's JSON object as stored.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    client: ClientArgs,
}

/// One log record as one line: `<time> <LEVEL> [topic/partition] message`;
/// the bracket holds only the topic when the partition is null and is left out
/// when both are empty. Line breaks in the message print as spaces (`--json`
/// keeps them), so that each record stays one line for `grep`. A value that is
/// not the worker's JSON is printed as is.
fn format_line(value: &[u8]) -> String {
    let Ok(serde_json::Value::Object(v)) = serde_json::from_slice::<serde_json::Value>(value) else {
        return String::from_utf8_lossy(value).into_owned();
    };
    let time = v.get("ts_ms").and_then(serde_json::Value::as_i64).map_or_else(|| "-".to_string(), rfc3339_utc);
    let level = v.get("level").and_then(serde_json::Value::as_str).unwrap_or("-");
    let topic = v.get("topic").and_then(serde_json::Value::as_str).unwrap_or("");
    let partition = v.get("partition").and_then(serde_json::Value::as_u64);
    let message = match v.get("message") {
        Some(serde_json::Value::String(s)) => s.lines().map(str::trim_end).collect::<Vec<_>>().join(" "),
        Some(other) => other.to_string(),
        None => String::new(),
    };
    let place = match (topic, partition) {
        ("", None) => String::new(),
        (topic, None) => format!("[{topic}] "),
        (topic, Some(p)) => format!("[{topic}/{p}] "),
    };
    format!("{time} {level} {place}{message}")
}

/// Where each partition's log ended when the command started (only partitions
/// that hold records after their log start).
async fn ends(admin: &Admin, topic: &str, partitions: &[u32]) -> Result<HashMap<u32, u64>, ClientError> {
    let mut out = HashMap::new();
    for &p in partitions {
        let start = admin.list_offset(topic, p, OffsetSpec::Earliest).await?;
        let end = admin.list_offset(topic, p, OffsetSpec::Latest).await?;
        if end > start {
            out.insert(p, end);
        }
    }
    Ok(out)
}

fn print(records: &[ConsumerRecord], json: bool) -> anyhow::Result<()> {
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    for r in records {
        if json {
            writeln!(out, "{}", String::from_utf8_lossy(&r.value))
        } else {
            writeln!(out, "{}", format_line(&r.value))
        }
        .context("writing to standard output")?;
    }
    out.flush().context("writing to standard output")
}

/// Prints the logs up to their end at the start, or until interrupted with `--follow`.
pub async fn run(args: LogsArgs) -> anyhow::Result<()> {
    let client = args.client.connect().await?;
    let topic = processor_logs_topic(&args.name);
    let no_topic = |e: ClientError| -> anyhow::Error {
        if e.code() == Some(ErrorCode::UnknownTopic) {
            anyhow::anyhow!("processor {} has no logs topic: is it deployed?", args.name)
        } else {
            anyhow::Error::new(e).context(format!("reading {topic}"))
        }
    };
    let mut consumer = Consumer::new(client.clone(), ConsumerConfig::default());
    let partitions = consumer.assign_all(&topic, StartOffset::Earliest).await.map_err(no_topic)?;
    // Without --follow: the partitions still to read, and up to where.
    let mut remaining = if args.follow {
        HashMap::new()
    } else {
        ends(&Admin::new(client), &topic, &partitions).await.map_err(no_topic)?
    };
    let interrupted = interrupted();
    tokio::pin!(interrupted);
    loop {
        if !args.follow && remaining.is_empty() {
            return Ok(());
        }
        let records = tokio::select! {
            r = consumer.poll(POLL_WAIT) => r.map_err(no_topic)?,
            _ = &mut interrupted => return Ok(()),
        };
        if args.follow {
            print(&records, args.json)?;
            continue;
        }
        let wanted: Vec<ConsumerRecord> =
            records.into_iter().filter(|r| remaining.get(&r.partition).is_some_and(|end| r.offset < *end)).collect();
        print(&wanted, args.json)?;
        remaining.retain(|&p, end| consumer.position(&topic, p).is_some_and(|pos| pos < *end));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn worker_records_print_as_time_level_place_message() {
        let v = br#"{"ts_ms":0,"level":"WARN","processor":"p","version":1,"topic":"in","partition":2,"message":"record in/2@5 failed"}"#;
        assert_eq!(format_line(v), "1970-01-01T00:00:00.000Z WARN [in/2] record in/2@5 failed");
        let v = br#"{"ts_ms":0,"level":"ERROR","topic":"in","partition":null,"message":"panicked at a.rs:9:\nboom"}"#;
        assert_eq!(format_line(v), "1970-01-01T00:00:00.000Z ERROR [in] panicked at a.rs:9: boom");
        let v = br#"{"ts_ms":0,"level":"ERROR","topic":"","partition":null,"message":"stopped"}"#;
        assert_eq!(format_line(v), "1970-01-01T00:00:00.000Z ERROR stopped");
    }

    #[test]
    fn other_values_print_raw() {
        assert_eq!(format_line(b"plain text"), "plain text");
        assert_eq!(format_line(b"[1,2]"), "[1,2]");
    }
}
