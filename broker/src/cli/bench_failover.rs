//! `eddy bench failover`: the time from killing a partition's leader (SIGKILL)
//! to the first acknowledged acks=all produce on the new leader.
//!
//! It produces one record per `1/--rate` seconds to partition 0 of a
//! replicated topic, looks up the partition's leader, sends SIGKILL to that
//! broker's process (its pid comes from `--pids ID=PID,...`, so whoever
//! started the brokers runs this), and waits for the first acknowledgement of
//! a record sent after the kill. The killed broker is left dead: restarting
//! it is the caller's business.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;
use eddy_sdk::protocol::messages::Acks;
use eddy_sdk::{Admin, ClientError, NewTopic, Producer, ProducerConfig, ProducerRecord};
use serde_json::json;

use super::ClientArgs;

/// Options of `eddy bench failover`.
#[derive(Debug, Args)]
pub struct FailoverBench {
    /// Topic (created with one partition, replication 3, min-insync 2 if missing).
    #[arg(long, default_value = "failover")]
    topic: String,
    /// The brokers' process ids as ID=PID,...
    #[arg(long, value_delimiter = ',', required = true)]
    pids: Vec<String>,
    /// Records per second before and after the kill.
    #[arg(long, default_value_t = 1000)]
    rate: u64,
    /// Seconds of producing before the kill.
    #[arg(long, default_value_t = 3)]
    warmup_secs: u64,
    /// Longest wait for the new leader's first acknowledgement, in seconds.
    #[arg(long, default_value_t = 60)]
    limit_secs: u64,
    /// Print a JSON summary instead of text.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    client: ClientArgs,
}

fn parse_pids(pids: &[String]) -> anyhow::Result<BTreeMap<u32, u32>> {
    pids.iter()
        .map(|p| {
            let (id, pid) = p.split_once('=').with_context(|| format!("--pids entry '{p}' is not ID=PID"))?;
            Ok((id.trim().parse()?, pid.trim().parse()?))
        })
        .collect()
}

/// Runs the failover benchmark.
pub async fn run(b: FailoverBench) -> anyhow::Result<()> {
    let pids = parse_pids(&b.pids)?;
    anyhow::ensure!(b.rate > 0, "--rate must be at least 1");
    let client = b.client.connect().await?;
    let admin = Admin::new(client.clone());
    let topic = NewTopic::new(b.topic.clone(), 1).replication_factor(3).min_insync_replicas(2);
    match admin.create_topic(topic).await {
        Ok(_) | Err(ClientError::Broker { code: eddy_sdk::protocol::ErrorCode::TopicAlreadyExists, .. }) => {}
        Err(e) => return Err(e).context("creating the failover topic"),
    }
    let producer =
        Producer::new(client.clone(), ProducerConfig { acks: Acks::All, ..ProducerConfig::default() }).await?;
    let every = Duration::from_secs_f64(1.0 / b.rate as f64);
    // Warm up: every record acknowledged before the kill.
    let warmup_until = Instant::now() + Duration::from_secs(b.warmup_secs);
    let mut sent = 0u64;
    while Instant::now() < warmup_until {
        let mut record = ProducerRecord::new(b.topic.clone(), format!("warmup-{sent}"));
        record.partition = Some(0);
        producer.send_and_wait(record).await.context("producing before the kill")?;
        sent += 1;
        tokio::time::sleep(every).await;
    }
    client.refresh_metadata().await?;
    let leader = admin.describe_topic(&b.topic).await?.partitions[0].leader;
    let pid = *pids.get(&leader).with_context(|| format!("no pid given for the leader, broker {leader}"))?;
    let status = std::process::Command::new("kill").args(["-9", &pid.to_string()]).status()?;
    let killed_at = Instant::now();
    anyhow::ensure!(status.success(), "kill -9 {pid} failed");
    // Keep producing at the rate; the first acknowledgement ends the measurement.
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let sender = {
        let producer = producer.clone();
        let topic = b.topic.clone();
        tokio::spawn(async move {
            for i in 0.. {
                let mut record = ProducerRecord::new(topic.clone(), format!("after-{i}"));
                record.partition = Some(0);
                let Ok(delivery) = producer.send(record).await else { return };
                let tx = tx.clone();
                tokio::spawn(async move {
                    if delivery.await.is_ok() {
                        let _ = tx.send(Instant::now());
                    }
                });
                tokio::time::sleep(every).await;
            }
        })
    };
    let first = tokio::time::timeout(Duration::from_secs(b.limit_secs), rx.recv())
        .await
        .context("no acknowledgement from a new leader in time")?
        .context("the producer stopped")?;
    sender.abort();
    let failover_ms = first.duration_since(killed_at).as_secs_f64() * 1000.0;
    client.refresh_metadata().await?;
    let new_leader = admin.describe_topic(&b.topic).await?.partitions[0].leader;
    if b.json {
        println!(
            "{}",
            json!({"bench": "failover", "killed": leader, "new_leader": new_leader, "failover_ms": failover_ms,
                   "records_before": sent, "rate": b.rate})
        );
    } else {
        println!(
            "failover: killed leader {leader} (pid {pid}); first acks=all produce acknowledged by broker {new_leader} \
             after {failover_ms:.0} ms"
        );
    }
    let _ = producer.close().await;
    Ok(())
}
