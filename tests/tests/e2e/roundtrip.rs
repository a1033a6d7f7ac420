//! 100,000 records across 4 partitions: produce, consume back exactly, restart, check again.

use std::collections::BTreeMap;

use eddy_sdk::protocol::partition::partition_for_key;
use eddy_sdk::{Admin, NewTopic, Producer, ProducerConfig, ProducerRecord};
use eddy_tests::BrokerProcess;

use super::read_all;

const RECORDS: usize = 100_000;
const PARTITIONS: u32 = 4;

fn key(i: usize) -> String {
    format!("key-{}", i % 1000)
}

fn value(i: usize) -> String {
    format!("value-{i}-{}", "x".repeat(i % 200))
}

fn check(by_partition: &BTreeMap<u32, Vec<eddy_sdk::ConsumerRecord>>, sent: &[(u32, u64)]) {
    let total: usize = by_partition.values().map(Vec::len).sum();
    assert_eq!(total, RECORDS);
    for (p, records) in by_partition {
        for (expected_offset, r) in records.iter().enumerate() {
            assert_eq!(r.offset, expected_offset as u64, "partition {p} offsets are dense from 0");
        }
    }
    for (i, (p, offset)) in sent.iter().enumerate() {
        let r = &by_partition[p][*offset as usize];
        assert_eq!(r.key.as_deref(), Some(key(i).as_bytes()), "record {i}");
        assert_eq!(r.value, value(i).as_bytes(), "record {i}");
        assert_eq!(*p, partition_for_key(key(i).as_bytes(), PARTITIONS), "record {i} partitioned by key");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundred_thousand_records_round_trip_and_survive_restart() -> anyhow::Result<()> {
    let mut broker = BrokerProcess::start()?;
    let client = broker.client().await?;
    Admin::new(client.clone()).create_topic(NewTopic::new("orders", PARTITIONS)).await?;
    let producer = Producer::new(client.clone(), ProducerConfig::default()).await?;
    let mut deliveries = Vec::with_capacity(RECORDS);
    for i in 0..RECORDS {
        let record = ProducerRecord::new("orders", value(i)).key(key(i)).header("i", i.to_string());
        deliveries.push(producer.send(record).await?);
    }
    let mut sent = Vec::with_capacity(RECORDS);
    for d in deliveries {
        let meta = d.await?;
        sent.push((meta.partition, meta.offset.expect("acks=1 gives offsets")));
    }
    producer.close().await?;
    // Per key, offsets increase in send order.
    let mut last: BTreeMap<String, u64> = BTreeMap::new();
    for (i, (_, offset)) in sent.iter().enumerate() {
        if let Some(prev) = last.insert(key(i), *offset) {
            assert!(*offset > prev, "per-key order kept for record {i}");
        }
    }
    let read = read_all(&client, "orders", RECORDS).await?;
    check(&read, &sent);
    assert_eq!(read[&0][0].headers[0].key, "i");

    // A clean restart keeps everything.
    let status = broker.terminate()?;
    assert!(status.success(), "SIGTERM exits 0, got {status}; log:\n{}", broker.log());
    broker.restart()?;
    let client = broker.client().await?;
    let read = read_all(&client, "orders", RECORDS).await?;
    check(&read, &sent);
    let topic = Admin::new(client).describe_topic("orders").await?;
    assert_eq!(topic.partitions.iter().map(|p| p.log_end).sum::<u64>(), RECORDS as u64);
    Ok(())
}
