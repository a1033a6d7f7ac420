//! Reading a whole topic from the beginning with a plain [`Consumer`]: up to
//! the log ends as they are when the read starts, or until a number of
//! records has arrived. The crawler uses it to learn what it already
//! published; the digest to collect recommendations.

use std::collections::HashMap;
use std::time::Duration;

use eddy_sdk::{Admin, Client, ClientError, Consumer, ConsumerConfig, ConsumerRecord, StartOffset};

/// How long a read may go without receiving a record before it gives up.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(10);

/// When a read stops.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadUntil {
    /// At each partition's log end as of the start of the read.
    LogEnd,
    /// Once this many records have been read (waiting for them to be produced).
    Records(u64),
}

/// Why a topic could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// A broker call failed (unknown topic, unreachable broker, ...).
    #[error("reading topic {topic}: {source}")]
    Client {
        /// The topic.
        topic: String,
        /// The SDK error.
        source: ClientError,
    },
    /// No record arrived for `idle` while more were expected.
    #[error("reading topic {topic}: no record for {idle:?} after {read} records, {wanted} expected")]
    Stalled {
        /// The topic.
        topic: String,
        /// Records read before it stalled.
        read: u64,
        /// Records the read was waiting for (the log ends' total, or the count asked for).
        wanted: u64,
        /// The idle timeout that expired.
        idle: Duration,
    },
}

/// Reads `topic` from the earliest offsets and hands every record to `each`
/// (in offset order per partition) until `until` is met. Returns the number
/// of records read. Fails with [`ReadError::Stalled`] if no record arrives
/// for `idle` while some are still expected.
pub async fn read_topic(
    client: &Client,
    topic: &str,
    until: ReadUntil,
    idle: Duration,
    mut each: impl FnMut(ConsumerRecord),
) -> Result<u64, ReadError> {
    let client_error = |source| ReadError::Client { topic: topic.to_string(), source };
    let metadata = Admin::new(client.clone()).describe_topic(topic).await.map_err(client_error)?;
    let mut consumer = Consumer::new(client.clone(), ConsumerConfig::default());
    // Partition -> log end to stop at (LogEnd only).
    let mut ends: HashMap<u32, u64> = HashMap::new();
    let wanted = match until {
        ReadUntil::LogEnd => {
            for p in metadata.partitions.iter().filter(|p| p.log_end > p.log_start) {
                consumer.assign(topic, p.partition, StartOffset::Earliest).await.map_err(client_error)?;
                ends.insert(p.partition, p.log_end);
            }
            metadata.partitions.iter().map(|p| p.log_end - p.log_start).sum()
        }
        ReadUntil::Records(count) => {
            consumer.assign_all(topic, StartOffset::Earliest).await.map_err(client_error)?;
            count
        }
    };
    let mut read = 0u64;
    loop {
        let done = match until {
            ReadUntil::LogEnd => ends.iter().all(|(&p, &end)| consumer.position(topic, p).is_none_or(|pos| pos >= end)),
            ReadUntil::Records(count) => read >= count,
        };
        if done {
            return Ok(read);
        }
        let batch = consumer.poll(idle).await.map_err(client_error)?;
        if batch.is_empty() {
            return Err(ReadError::Stalled { topic: topic.to_string(), read, wanted, idle });
        }
        for record in batch {
            let wanted_here = match until {
                ReadUntil::LogEnd => ends.get(&record.partition).is_some_and(|&end| record.offset < end),
                ReadUntil::Records(count) => read < count,
            };
            if wanted_here {
                read += 1;
                each(record);
            }
        }
        if let ReadUntil::LogEnd = until {
            // Stop fetching partitions that reached their end.
            let finished: Vec<u32> = ends
                .iter()
                .filter(|(&p, &end)| consumer.position(topic, p).is_some_and(|pos| pos >= end))
                .map(|(&p, _)| p)
                .collect();
            for p in finished {
                consumer.unassign(topic, p);
            }
        }
    }
}
