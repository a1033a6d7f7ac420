//! End-to-end tests: real `eddy` processes on 127.0.0.1, real redb files, real
//! QUIC, SIGKILL for faults. One test binary; one module per area.

mod admin;
mod bad_input;
mod cli;
mod cluster;
mod durability;
mod groups;
mod pipeline;
mod pipeline_processors;
mod pipeline_reference;
mod processor_cli;
mod processors;
mod roundtrip;
mod security;

use std::collections::BTreeMap;
use std::time::Duration;

use eddy_sdk::{Client, Consumer, ConsumerConfig, ConsumerRecord, StartOffset};

/// Reads every record of `topic` from the earliest offset until `expected`
/// records arrived (or 60 s without progress), grouped by partition.
pub async fn read_all(
    client: &Client,
    topic: &str,
    expected: usize,
) -> anyhow::Result<BTreeMap<u32, Vec<ConsumerRecord>>> {
    let mut consumer = Consumer::new(client.clone(), ConsumerConfig::default());
    consumer.assign_all(topic, StartOffset::Earliest).await?;
    let mut by_partition: BTreeMap<u32, Vec<ConsumerRecord>> = BTreeMap::new();
    let mut total = 0;
    while total < expected {
        let batch = consumer.poll(Duration::from_secs(60)).await?;
        anyhow::ensure!(!batch.is_empty(), "no records for 60 s after {total} of {expected}");
        total += batch.len();
        for r in batch {
            by_partition.entry(r.partition).or_default().push(r);
        }
    }
    // Nothing beyond what was expected.
    let extra = consumer.poll(Duration::from_millis(300)).await?;
    anyhow::ensure!(extra.is_empty(), "{} unexpected extra records", extra.len());
    Ok(by_partition)
}
