//! SIGKILL while producing: every acknowledged record survives. Retention removes old data.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use eddy_sdk::protocol::messages::{Acks, OffsetSpec};
use eddy_sdk::protocol::ErrorCode;
use eddy_sdk::{Admin, ClientError, NewTopic, Producer, ProducerConfig, ProducerRecord};
use eddy_tests::BrokerProcess;

use super::read_all;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_during_acks_1_produce_loses_no_acknowledged_record() -> anyhow::Result<()> {
    let mut broker = BrokerProcess::start()?;
    let client = broker.client().await?;
    Admin::new(client.clone()).create_topic(NewTopic::new("events", 4)).await?;
    // The broker stays dead: records in flight fail after a short delivery
    // timeout instead of being retried for the default two minutes.
    let config =
        ProducerConfig { acks: Acks::Leader, delivery_timeout: Duration::from_secs(5), ..ProducerConfig::default() };
    let producer = Producer::new(client.clone(), config).await?;
    let acked: Arc<Mutex<Vec<(u32, u64, String)>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let sender = {
        let acked = acked.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut checkers = Vec::new();
            for i in 0..2_000_000u64 {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let value = format!("event-{i}");
                let Ok(delivery) = producer.send(ProducerRecord::new("events", value.clone())).await else { break };
                let acked = acked.clone();
                checkers.push(tokio::spawn(async move {
                    if let Ok(meta) = delivery.await {
                        acked.lock().unwrap().push((meta.partition, meta.offset.unwrap(), value));
                    }
                }));
                if i.is_multiple_of(1000) {
                    tokio::task::yield_now().await;
                }
                if checkers.len() > 20_000 {
                    for c in checkers.drain(..10_000) {
                        let _ = c.await;
                    }
                }
            }
            for c in checkers {
                let _ = c.await;
            }
        })
    };
    // Let a good number of records be acknowledged, then pull the plug.
    let deadline = Instant::now() + Duration::from_secs(60);
    while acked.lock().unwrap().len() < 20_000 {
        assert!(Instant::now() < deadline, "producer made no progress");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    broker.kill();
    stop.store(true, Ordering::Relaxed);
    tokio::time::timeout(Duration::from_secs(60), sender).await??;
    let acked = acked.lock().unwrap().clone();
    assert!(acked.len() >= 20_000);

    broker.restart()?;
    let client = broker.client().await?;
    let admin = Admin::new(client.clone());
    let topic = admin.describe_topic("events").await?;
    let stored: u64 = topic.partitions.iter().map(|p| p.log_end).sum();
    assert!(stored >= acked.len() as u64, "stored {stored} < acknowledged {}", acked.len());
    let read = read_all(&client, "events", stored as usize).await?;
    for (p, offset, value) in &acked {
        let r = read[p].get(*offset as usize).unwrap_or_else(|| panic!("acknowledged {p}/{offset} missing"));
        assert_eq!(r.offset, *offset);
        assert_eq!(r.value, value.as_bytes(), "acknowledged record {p}/{offset} intact");
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_removes_old_batches_and_fetch_below_log_start_says_so() -> anyhow::Result<()> {
    let broker = BrokerProcess::start_with(&["--retention-check-ms", "100"])?;
    let client = broker.client().await?;
    let admin = Admin::new(client.clone());
    admin.create_topic(NewTopic::new("by-bytes", 1).retention_bytes(20_000)).await?;
    admin.create_topic(NewTopic::new("by-time", 1).retention_ms(60_000)).await?;
    // Small batches (no linger) so retention has whole batches to delete.
    let config = ProducerConfig { linger: Duration::ZERO, max_batch_bytes: 2_000, ..ProducerConfig::default() };
    let producer = Producer::new(client.clone(), config).await?;
    for i in 0..200 {
        producer.send(ProducerRecord::new("by-bytes", format!("{i:0>500}"))).await?;
    }
    // Records stamped two minutes ago are past the one-minute retention.
    let old = eddy_broker_now_ms() - 120_000;
    for i in 0..50 {
        producer.send(ProducerRecord::new("by-time", format!("old-{i}")).timestamp(old)).await?;
    }
    producer.flush().await?;
    for i in 0..10 {
        producer.send(ProducerRecord::new("by-time", format!("new-{i}"))).await?;
    }
    producer.close().await?;

    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let bytes = admin.describe_topic("by-bytes").await?.partitions[0].clone();
        let time = admin.describe_topic("by-time").await?.partitions[0].clone();
        if bytes.log_start > 0 && bytes.size_bytes <= 20_000 && time.log_start == 50 {
            assert_eq!(bytes.log_end, 200);
            assert_eq!(time.log_end, 60);
            break;
        }
        assert!(Instant::now() < deadline, "retention did not run: {bytes:?} {time:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let start = admin.list_offset("by-time", 0, OffsetSpec::Earliest).await?;
    assert_eq!(start, 50);
    // Fetching below the log start is refused with the log start.
    let fetch = eddy_sdk::protocol::messages::FetchRequest {
        topic: "by-time".into(),
        partition: 0,
        offset: 0,
        max_bytes: 1 << 20,
        min_bytes: 0,
        max_wait_ms: 0,
    };
    match client.request(&fetch).await {
        Err(ClientError::Broker { code: ErrorCode::OffsetOutOfRange, log_start, .. }) => {
            assert_eq!(log_start, Some(50))
        }
        other => panic!("expected OffsetOutOfRange, got {other:?}"),
    }
    let read = read_all(&client, "by-time", 10).await?;
    assert!(read[&0].iter().all(|r| r.value.starts_with(b"new-")));
    Ok(())
}

fn eddy_broker_now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64
}
