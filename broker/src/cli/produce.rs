//! `eddy produce`: one record per line of standard input.

use anyhow::Context;
use bytes::Bytes;
use clap::Args;
use eddy_sdk::protocol::messages::Acks;
use eddy_sdk::{Producer, ProducerConfig, ProducerRecord};
use tokio::io::{AsyncBufReadExt, BufReader};

use super::common::parse_acks;
use super::ClientArgs;

/// Options of `eddy produce`.
#[derive(Debug, Args)]
pub struct ProduceArgs {
    /// Topic to produce to.
    topic: String,
    /// Key for every record.
    #[arg(long, conflicts_with = "key_separator")]
    key: Option<String>,
    /// Split each line at the first SEP into key and value.
    #[arg(long)]
    key_separator: Option<String>,
    /// Partition for every record (default: by key, else sticky batches).
    #[arg(long)]
    partition: Option<u32>,
    /// Acknowledgements: 0, 1 or all.
    #[arg(long, default_value = "1", value_parser = parse_acks)]
    acks: Acks,
    #[command(flatten)]
    client: ClientArgs,
}

/// Reads stdin to the end, producing each line; fails if any record was not acknowledged.
pub async fn run(args: ProduceArgs) -> anyhow::Result<()> {
    let client = args.client.connect().await?;
    let config = ProducerConfig { acks: args.acks, ..ProducerConfig::default() };
    let producer = Producer::new(client, config).await?;
    // Deliveries are checked by a second task so that reading stdin never waits for acks.
    let (tx, mut rx) = tokio::sync::mpsc::channel::<(u64, eddy_sdk::DeliveryFuture)>(65_536);
    let checker = tokio::spawn(async move {
        let (mut ok, mut failed) = (0u64, 0u64);
        while let Some((line, delivery)) = rx.recv().await {
            match delivery.await {
                Ok(_) => ok += 1,
                Err(e) => {
                    failed += 1;
                    eprintln!("line {line}: not acknowledged: {e}");
                }
            }
        }
        (ok, failed)
    });
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    let mut n = 0u64;
    let mut refused = 0u64;
    while let Some(line) = lines.next_line().await.context("reading standard input")? {
        n += 1;
        let (key, value) = match (&args.key, &args.key_separator) {
            (Some(k), _) => (Some(Bytes::from(k.clone())), line),
            (None, Some(sep)) => match line.split_once(sep.as_str()) {
                Some((k, v)) => (Some(Bytes::from(k.to_string())), v.to_string()),
                None => (None, line),
            },
            (None, None) => (None, line),
        };
        let mut record = ProducerRecord::new(args.topic.clone(), value);
        if let Some(k) = key {
            record = record.key(k);
        }
        if let Some(p) = args.partition {
            record = record.partition(p);
        }
        match producer.send(record).await {
            Ok(delivery) => {
                if tx.send((n, delivery)).await.is_err() {
                    break;
                }
            }
            Err(e) => {
                refused += 1;
                eprintln!("line {n}: not sent: {e}");
            }
        }
    }
    drop(tx);
    producer.close().await.context("flushing the producer")?;
    let (ok, failed) = checker.await.context("delivery checker")?;
    let failed = failed + refused;
    if failed > 0 {
        anyhow::bail!("{failed} of {n} records were not acknowledged");
    }
    if args.acks != Acks::None {
        eprintln!("produced {ok} records to {}", args.topic);
    }
    Ok(())
}
