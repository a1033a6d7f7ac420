//! Forwards what modules log to the processor's logs topic
//! (`_eddy.processor.<name>.logs`), one JSON object per record:
//! `{"ts_ms", "level", "processor", "version", "topic", "partition", "message"}`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use eddy_sdk::{Producer, ProducerRecord};
use serde_json::json;
use tokio::sync::mpsc;

use crate::instance::{LogLevel, LogSink};

/// Messages queued for the logs topic before new ones are dropped (and counted).
const LOG_QUEUE: usize = 10_000;

/// One message on its way to the logs topic.
struct LogLine {
    ts_ms: i64,
    level: LogLevel,
    topic: String,
    partition: Option<u32>,
    message: String,
}

/// The name of a level in the logs topic.
fn level_name(level: LogLevel) -> &'static str {
    match level {
        LogLevel::Trace => "TRACE",
        LogLevel::Debug => "DEBUG",
        LogLevel::Info => "INFO",
        LogLevel::Warn => "WARN",
        LogLevel::Error => "ERROR",
    }
}

/// Sends one member's log messages to the logs topic from a task of its own,
/// so that logging never blocks a call into the module.
#[derive(Clone)]
pub(crate) struct LogForwarder {
    tx: mpsc::Sender<LogLine>,
    dropped: Arc<AtomicU64>,
}

impl LogForwarder {
    /// Starts the forwarding task; it ends when every forwarder clone is dropped.
    pub(crate) fn spawn(producer: Producer, logs_topic: String, processor: String, version: u32) -> Self {
        let (tx, mut rx) = mpsc::channel::<LogLine>(LOG_QUEUE);
        let dropped = Arc::new(AtomicU64::new(0));
        let lost = dropped.clone();
        tokio::spawn(async move {
            while let Some(line) = rx.recv().await {
                let mut message = line.message;
                let n = lost.swap(0, Ordering::Relaxed);
                if n > 0 {
                    message = format!("({n} earlier log messages dropped: the log queue was full) {message}");
                }
                let value = json!({
                    "ts_ms": line.ts_ms,
                    "level": level_name(line.level),
                    "processor": processor,
                    "version": version,
                    "topic": line.topic,
                    "partition": line.partition,
                    "message": message,
                });
                let record =
                    ProducerRecord::new(logs_topic.clone(), Bytes::from(value.to_string())).timestamp(line.ts_ms);
                // Logs are best effort: their delivery is not awaited.
                if let Err(e) = producer.send(record).await {
                    tracing::debug!(error = %e, "processor log not sent");
                    return;
                }
            }
        });
        LogForwarder { tx, dropped }
    }

    /// Queues a message about the processor as a whole or one input partition.
    pub(crate) fn log(&self, level: LogLevel, topic: &str, partition: Option<u32>, message: String) {
        let line = LogLine { ts_ms: now_ms(), level, topic: topic.to_string(), partition, message };
        if self.tx.try_send(line).is_err() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// A [`LogSink`] for the instance of one input partition number; its
    /// messages name the topic in `topic` (set before each call).
    pub(crate) fn sink(&self, partition: u32, topic: CurrentTopic) -> Box<dyn LogSink> {
        Box::new(PartitionLog { forwarder: self.clone(), partition, topic })
    }
}

/// The [`LogSink`] of one instance.
struct PartitionLog {
    forwarder: LogForwarder,
    partition: u32,
    topic: CurrentTopic,
}

/// The input topic of the call an instance is running (an instance serves
/// every input of its partition number).
pub(crate) type CurrentTopic = Arc<std::sync::Mutex<String>>;

impl LogSink for PartitionLog {
    fn log(&mut self, level: LogLevel, message: &str) {
        let topic = self.topic.lock().unwrap_or_else(|e| e.into_inner()).clone();
        self.forwarder.log(level, &topic, Some(self.partition), message.to_string());
    }
}

/// Milliseconds since the Unix epoch.
pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}
