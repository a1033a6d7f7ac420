//! `cargo xtask demo`: starts an embedded single-node Eddy with `eddy dev`
//! defaults (in a temporary data directory, on a free port), creates a topic,
//! produces records, consumes them back and shuts down cleanly.
//!
//! With `--broker HOST:PORT --ca FILE` it runs the same round trip against an
//! existing broker instead.

use std::time::Duration;

use anyhow::Context;
use eddy_broker::{Broker, BrokerConfig};
use eddy_sdk::{
    Admin, Client, ClientConfig, Consumer, ConsumerConfig, NewTopic, Producer, ProducerConfig, ProducerRecord,
    StartOffset,
};

const TOPIC: &str = "demo.greetings";
const RECORDS: usize = 1_000;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt().with_env_filter(std::env::var("EDDY_LOG").unwrap_or_else(|_| "warn".into())).init();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let flag = |name: &str| args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).cloned();

    let tempdir = tempfile::Builder::new().prefix("eddy-demo-").tempdir()?;
    let (broker, config) = match flag("--broker") {
        Some(addr) => {
            let ca = flag("--ca").context("--broker needs --ca FILE (the broker's <data-dir>/tls/ca.pem)")?;
            println!("[1/4] using the broker at {addr}");
            (None, ClientConfig::new(addr).ca_file(ca))
        }
        None => {
            let mut config = BrokerConfig::new(tempdir.path());
            config.listen = "127.0.0.1:0".parse()?;
            let broker = Broker::start(config).await.context("starting the embedded broker")?;
            println!(
                "[1/4] embedded Eddy broker listening on {} (data in {})",
                broker.local_addr(),
                tempdir.path().display()
            );
            let client = ClientConfig::new(broker.local_addr().to_string()).ca_file(broker.ca_path());
            (Some(broker), client)
        }
    };

    let client = Client::connect(config).await?;
    let admin = Admin::new(client.clone());
    if admin.describe_topic(TOPIC).await.is_err() {
        admin.create_topic(NewTopic::new(TOPIC, 3)).await?;
    }
    println!("[2/4] topic {TOPIC} with 3 partitions");

    let producer = Producer::new(client.clone(), ProducerConfig::default()).await?;
    let start = std::time::Instant::now();
    let mut deliveries = Vec::new();
    for i in 0..RECORDS {
        let user = format!("user-{}", i % 7);
        let record = ProducerRecord::new(TOPIC, format!("hello #{i} from {user}")).key(user);
        deliveries.push(producer.send(record).await?);
    }
    let mut first_offsets = Vec::new();
    for d in deliveries {
        first_offsets.push(d.await?);
    }
    producer.close().await?;
    println!("[3/4] produced {RECORDS} records in {:.1} ms (acks=1, durable)", start.elapsed().as_secs_f64() * 1e3);

    let mut consumer = Consumer::new(client.clone(), ConsumerConfig::default());
    let partitions = consumer.assign_all(TOPIC, StartOffset::Earliest).await?;
    let mut received = Vec::new();
    while received.len() < RECORDS {
        let batch = consumer.poll(Duration::from_secs(10)).await?;
        anyhow::ensure!(!batch.is_empty(), "no records arrived for 10 s");
        received.extend(batch);
    }
    println!("[4/4] consumed {} records from partitions {partitions:?}; a few of them:", received.len());
    for r in received.iter().filter(|r| r.offset < 2) {
        println!(
            "      {}/{} offset {}  key {}  value {}",
            r.topic,
            r.partition,
            r.offset,
            String::from_utf8_lossy(r.key.as_deref().unwrap_or_default()),
            String::from_utf8_lossy(&r.value)
        );
    }
    drop(consumer);
    drop(client);
    if let Some(broker) = broker {
        broker.shutdown().await;
        println!("embedded broker shut down cleanly");
    }
    Ok(())
}
