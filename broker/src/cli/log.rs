//! `eddy log dump`: what a (stopped) broker holds of one partition, read
//! straight from its data directory: offsets, batch count and a checksum of
//! the stored bytes, to compare replicas of a partition.

use std::path::PathBuf;

use anyhow::Context;
use clap::Subcommand;
use eddy_broker::store::{store_path, DurabilityPolicy, Store, StoreConfig};
use eddy_sdk::protocol::batch::batch_info;
use serde_json::json;

/// Inspect a broker's stored logs.
#[derive(Debug, Subcommand)]
pub enum LogCommand {
    /// Print one partition's log start, log end, batch count, bytes and
    /// CRC-32C of its stored batches as JSON (the broker must be stopped).
    Dump {
        /// The broker's data directory.
        #[arg(long)]
        data_dir: PathBuf,
        /// Topic name.
        topic: String,
        /// Partition number.
        partition: u32,
        /// Only batches ending at or below this offset.
        #[arg(long)]
        until: Option<u64>,
    },
}

/// Runs a log subcommand.
pub async fn run(cmd: LogCommand) -> anyhow::Result<()> {
    let LogCommand::Dump { data_dir, topic, partition, until } = cmd;
    let path = store_path(&data_dir);
    anyhow::ensure!(
        path.exists(),
        "{} does not exist: is {} a broker's data directory?",
        path.display(),
        data_dir.display()
    );
    let store =
        Store::open(StoreConfig { path: path.clone(), durability: DurabilityPolicy::EveryCommit, broker_id: 1 })
            .with_context(|| format!("opening {} (stop the broker first)", path.display()))?;
    let (_, state) = store.partition(&topic, partition)?;
    let offsets = state.offsets();
    let limit = until.unwrap_or(offsets.log_end).min(offsets.log_end);
    let (mut crc, mut batches, mut bytes, mut next) = (0u32, 0u64, 0u64, offsets.log_start);
    while next < limit {
        let read = store.read_replica(&topic, partition, next, 4 << 20)?;
        if read.records.is_empty() {
            break;
        }
        let mut rest = &read.records[..];
        while !rest.is_empty() {
            let info = batch_info(rest)?;
            let end = info.base_offset + u64::from(info.record_count);
            if end > limit {
                next = limit;
                break;
            }
            let len = info.length as usize;
            crc = crc32c::crc32c_append(crc, &rest[..len]);
            batches += 1;
            bytes += len as u64;
            next = end;
            rest = &rest[len..];
        }
    }
    store.close().await;
    println!(
        "{}",
        json!({
            "topic": topic, "partition": partition, "log_start": offsets.log_start, "log_end": offsets.log_end,
            "until": next, "batches": batches, "bytes": bytes, "crc32c": crc,
        })
    );
    Ok(())
}
