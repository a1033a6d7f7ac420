//! Replicated clusters: three real `eddy broker` processes on 127.0.0.1 with
//! one cluster CA, killed with SIGKILL or paused with SIGSTOP while a
//! producer writes with acks=all. Every acknowledged record must survive,
//! exactly once and in order, and the replicas of a partition must end
//! byte-identical.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use eddy_sdk::protocol::messages::Acks;
use eddy_sdk::{
    Admin, Client, ClientError, Consumer, ConsumerConfig, ErrorCode, GroupConfig, GroupConsumer, NewTopic, Producer,
    ProducerConfig, ProducerRecord, StartOffset, TopicMetadata,
};
use eddy_tests::{processor_wasm, ClusterProcess, Deadline};

/// Creates a topic, retrying while the cluster is still electing or not every broker is live yet.
async fn create_topic(admin: &Admin, topic: NewTopic) -> anyhow::Result<TopicMetadata> {
    let deadline = Deadline::after(Duration::from_secs(60));
    loop {
        match admin.create_topic(topic.clone()).await {
            Ok(t) => return Ok(t),
            Err(e) if e.is_retriable() || e.code() == Some(ErrorCode::InvalidReplicationFactor) => {
                deadline.check(|| format!("creating topic {} ({e})", topic.name))?;
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// The topic's metadata, retrying transient failures (a broker just died).
async fn describe(admin: &Admin, topic: &str) -> anyhow::Result<TopicMetadata> {
    let deadline = Deadline::after(Duration::from_secs(30));
    loop {
        match admin.describe_topic(topic).await {
            Ok(t) => return Ok(t),
            Err(e) => {
                deadline.check(|| format!("describing {topic}: {e}"))?;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// Waits until every partition of `topic` has a leader and all its replicas in sync.
async fn wait_full_isr(admin: &Admin, topic: &str, limit: Duration) -> anyhow::Result<TopicMetadata> {
    let deadline = Deadline::after(limit);
    loop {
        let t = describe(admin, topic).await?;
        if t.partitions.iter().all(|p| p.leader != 0 && p.isr.len() == p.replicas.len()) {
            return Ok(t);
        }
        deadline.check(|| format!("every replica of {topic} back in sync: {:?}", t.partitions))?;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn producer_config() -> ProducerConfig {
    ProducerConfig { acks: Acks::All, ..ProducerConfig::default() }
}

/// Sends `total` records `"<prefix>-<i>"` at about `per_second`, keyless;
/// returns every delivery result and counts acknowledgements in `acked`.
fn spawn_sender(
    producer: Producer,
    topic: &'static str,
    prefix: &'static str,
    total: usize,
    per_second: usize,
    acked: Arc<AtomicUsize>,
) -> tokio::task::JoinHandle<Vec<(usize, Result<eddy_sdk::RecordMetadata, ClientError>)>> {
    tokio::spawn(async move {
        let mut waiting = Vec::with_capacity(total);
        let chunk = (per_second / 50).max(1);
        for i in 0..total {
            let record = ProducerRecord::new(topic, format!("{prefix}-{i}"));
            match producer.send(record).await {
                Ok(delivery) => {
                    let acked = acked.clone();
                    waiting.push(tokio::spawn(async move {
                        let r = delivery.await;
                        if r.is_ok() {
                            acked.fetch_add(1, Ordering::Relaxed);
                        }
                        (i, r)
                    }));
                }
                Err(e) => waiting.push(tokio::spawn(async move { (i, Err(e)) })),
            }
            if i % chunk == chunk - 1 {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        let mut out = Vec::with_capacity(total);
        for w in waiting {
            out.push(w.await.expect("delivery task"));
        }
        let _ = producer.close().await;
        out
    })
}

/// Reads every record of `topic` from the start until `expected` arrived.
async fn read_values(client: &Client, topic: &str, expected: usize) -> anyhow::Result<BTreeMap<u32, Vec<String>>> {
    let mut consumer = Consumer::new(client.clone(), ConsumerConfig::default());
    consumer.assign_all(topic, StartOffset::Earliest).await?;
    let mut by_partition: BTreeMap<u32, Vec<String>> = BTreeMap::new();
    let mut total = 0;
    let deadline = Deadline::after(Duration::from_secs(120));
    while total < expected {
        deadline.check(|| format!("{expected} records of {topic}, got {total}"))?;
        for r in consumer.poll(Duration::from_secs(2)).await? {
            by_partition.entry(r.partition).or_default().push(String::from_utf8(r.value.to_vec())?);
            total += 1;
        }
    }
    let extra = consumer.poll(Duration::from_millis(500)).await?;
    anyhow::ensure!(extra.is_empty(), "{} records beyond the {expected} expected", extra.len());
    Ok(by_partition)
}

/// Checks that every acknowledged `prefix-i` is in the log exactly once, in
/// send order within its partition, and nothing else is.
fn check_log(
    log: &BTreeMap<u32, Vec<String>>,
    prefix: &str,
    results: &[(usize, Result<eddy_sdk::RecordMetadata, ClientError>)],
) -> anyhow::Result<()> {
    let mut seen: BTreeMap<usize, usize> = BTreeMap::new();
    for (partition, values) in log {
        let mut last = None;
        for v in values {
            let i: usize = v
                .strip_prefix(&format!("{prefix}-"))
                .and_then(|n| n.parse().ok())
                .ok_or_else(|| anyhow::anyhow!("unexpected record {v} in partition {partition}"))?;
            *seen.entry(i).or_default() += 1;
            anyhow::ensure!(last < Some(i), "partition {partition}: {v} after {prefix}-{last:?}: out of order");
            last = Some(i);
        }
    }
    for (i, result) in results {
        if let Ok(meta) = result {
            let copies = seen.get(i).copied().unwrap_or(0);
            anyhow::ensure!(copies == 1, "acknowledged {prefix}-{i} ({meta:?}) is in the log {copies} times");
        }
    }
    if let Some((i, n)) = seen.iter().find(|(_, n)| **n > 1) {
        anyhow::bail!("{prefix}-{i} is in the log {n} times");
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_a_partition_leader_under_acks_all_loses_no_acknowledged_record() -> anyhow::Result<()> {
    const TOTAL: usize = 50_000;
    let mut cluster = ClusterProcess::start(3, &["--no-runtime"]).await?;
    let client = cluster.client().await?;
    let admin = Admin::new(client.clone());
    let err = admin.create_topic(NewTopic::new("too-many", 1).replication_factor(4)).await.unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::InvalidReplicationFactor), "{err}");
    assert!(err.to_string().contains("larger than available brokers 3"), "{err}");
    create_topic(&admin, NewTopic::new("events", 2).replication_factor(3).min_insync_replicas(2)).await?;

    let producer = Producer::new(client.clone(), producer_config()).await?;
    let acked = Arc::new(AtomicUsize::new(0));
    let sender = spawn_sender(producer, "events", "e", TOTAL, 5_000, acked.clone());
    let deadline = Deadline::after(Duration::from_secs(60));
    while acked.load(Ordering::Relaxed) < TOTAL / 3 {
        deadline.check(|| format!("a third of the records acknowledged ({})", acked.load(Ordering::Relaxed)))?;
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let leader = describe(&admin, "events").await?.partitions[0].leader;
    assert_ne!(leader, 0);
    cluster.broker_mut(leader).kill();
    let at_kill = acked.load(Ordering::Relaxed);
    tokio::time::sleep(Duration::from_secs(3)).await;
    cluster.broker_mut(leader).restart()?;

    let results = tokio::time::timeout(Duration::from_secs(240), sender).await??;
    let failed: Vec<_> = results.iter().filter(|(_, r)| r.is_err()).take(5).collect();
    assert!(failed.is_empty(), "the producer must resume on its own; failures: {failed:?}\n{}", cluster.logs());
    assert!(acked.load(Ordering::Relaxed) > at_kill, "records were acknowledged after the kill");
    let new_leader = describe(&admin, "events").await?.partitions[0].leader;
    assert!(new_leader != 0, "partition 0 has a leader again");

    let log = read_values(&client, "events", TOTAL).await?;
    check_log(&log, "e", &results)?;
    wait_full_isr(&admin, "events", Duration::from_secs(60)).await?;
    Ok(())
}

/// Stops every broker, then compares each partition's stored log across its replicas.
fn assert_replicas_identical(cluster: &mut ClusterProcess, topic: &TopicMetadata) -> anyhow::Result<()> {
    for id in cluster.ids() {
        cluster.broker_mut(id).terminate()?;
    }
    for p in &topic.partitions {
        let mut dumps = BTreeSet::new();
        for r in &p.replicas {
            let dir = cluster.broker(*r).dir().to_str().expect("UTF-8 temp path").to_string();
            let out =
                eddy_tests::eddy(&["log", "dump", "--data-dir", &dir, &topic.name, &p.partition.to_string()], b"")?;
            anyhow::ensure!(out.status.success(), "log dump failed: {}", String::from_utf8_lossy(&out.stderr));
            let v: serde_json::Value = serde_json::from_slice(&out.stdout)?;
            dumps.insert((v["log_end"].as_u64(), v["batches"].as_u64(), v["crc32c"].as_u64()));
        }
        anyhow::ensure!(dumps.len() == 1, "replicas of {}/{} differ: {dumps:?}", topic.name, p.partition);
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolling_restart_under_load_loses_nothing_and_forks_no_log() -> anyhow::Result<()> {
    const TOTAL: usize = 40_000;
    let mut cluster = ClusterProcess::start(3, &["--no-runtime"]).await?;
    let client = cluster.client().await?;
    let admin = Admin::new(client.clone());
    create_topic(&admin, NewTopic::new("rolling", 3).replication_factor(3).min_insync_replicas(2)).await?;
    let producer = Producer::new(client.clone(), producer_config()).await?;
    let acked = Arc::new(AtomicUsize::new(0));
    let sender = spawn_sender(producer, "rolling", "r", TOTAL, 1_500, acked.clone());
    for id in cluster.ids() {
        tokio::time::sleep(Duration::from_secs(2)).await;
        cluster.broker_mut(id).kill();
        tokio::time::sleep(Duration::from_secs(2)).await;
        cluster.broker_mut(id).restart()?;
        wait_full_isr(&admin, "rolling", Duration::from_secs(90))
            .await
            .map_err(|e| anyhow::anyhow!("{e}\n{}", cluster.logs()))?;
    }
    let results = tokio::time::timeout(Duration::from_secs(240), sender).await??;
    let failed: Vec<_> = results.iter().filter(|(_, r)| r.is_err()).take(5).collect();
    assert!(failed.is_empty(), "failures: {failed:?}");
    let log = read_values(&client, "rolling", TOTAL).await?;
    check_log(&log, "r", &results)?;
    let topic = wait_full_isr(&admin, "rolling", Duration::from_secs(60)).await?;
    client.close().await;
    assert_replicas_identical(&mut cluster, &topic)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_follower_leaves_the_isr_and_rejoins_when_resumed() -> anyhow::Result<()> {
    let cluster = ClusterProcess::start(3, &["--no-runtime", "--replica-lag-time-ms", "2000"]).await?;
    let client = cluster.client().await?;
    let admin = Admin::new(client.clone());
    create_topic(&admin, NewTopic::new("paused", 1).replication_factor(3).min_insync_replicas(2)).await?;
    create_topic(&admin, NewTopic::new("strict", 1).replication_factor(3).min_insync_replicas(3)).await?;
    let producer = Producer::new(client.clone(), producer_config()).await?;
    for i in 0..100 {
        producer.send_and_wait(ProducerRecord::new("paused", format!("before-{i}"))).await?;
    }
    // Pause a follower of "paused" that is not the controller, when there is one.
    let leader = describe(&admin, "paused").await?.partitions[0].leader;
    let controller = admin.metadata().await?.controller;
    let mut followers: Vec<u32> = cluster.ids().into_iter().filter(|id| *id != leader).collect();
    followers.sort_by_key(|id| *id == controller);
    let paused = followers[0];
    cluster.broker(paused).signal(libc::SIGSTOP)?;

    let deadline = Deadline::after(Duration::from_secs(30));
    loop {
        let t = describe(&admin, "paused").await?;
        if !t.partitions[0].isr.contains(&paused) {
            break;
        }
        deadline.check(|| format!("broker {paused} to leave the ISR: {:?}", t.partitions[0]))?;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // acks=all goes on with the two in-sync replicas ...
    for i in 0..1_000 {
        producer.send_and_wait(ProducerRecord::new("paused", format!("during-{i}"))).await?;
    }
    // ... and a topic that needs three in sync refuses with a typed error.
    let strict =
        Producer::new(client.clone(), ProducerConfig { delivery_timeout: Duration::from_secs(3), ..producer_config() })
            .await?;
    let deadline = Deadline::after(Duration::from_secs(30));
    loop {
        match strict.send_and_wait(ProducerRecord::new("strict", "x")).await {
            Err(e) if e.code() == Some(ErrorCode::NotEnoughReplicas) => break,
            other => {
                deadline.check(|| format!("NOT_ENOUGH_REPLICAS from the strict topic, got {other:?}"))?;
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
    cluster.broker(paused).signal(libc::SIGCONT)?;
    let t = wait_full_isr(&admin, "paused", Duration::from_secs(60)).await?;
    assert!(t.partitions[0].isr.contains(&paused), "broker {paused} rejoined the ISR");
    let log = read_values(&client, "paused", 1_100).await?;
    assert_eq!(log[&0].len(), 1_100);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_group_and_a_processor_keep_working_across_a_broker_loss() -> anyhow::Result<()> {
    const EACH: usize = 1_000;
    let mut cluster = ClusterProcess::start(3, &["--processor-session-timeout-ms", "3000"]).await?;
    let client = cluster.client().await?;
    let admin = Admin::new(client.clone());
    for name in ["words", "shouts"] {
        create_topic(&admin, NewTopic::new(name, 2).replication_factor(3).min_insync_replicas(2)).await?;
    }
    let wasm = processor_wasm("uppercase");
    let out = cluster.cli(
        &[
            "processor",
            "deploy",
            "upper",
            "--wasm",
            wasm.to_str().expect("UTF-8 path"),
            "--input",
            "words",
            "--output",
            "shouts",
            "--from-beginning",
        ],
        b"",
    )?;
    assert!(out.status.success(), "deploy failed: {}", String::from_utf8_lossy(&out.stderr));

    // A group member that records everything it is given.
    let seen: Arc<Mutex<BTreeSet<String>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let member = {
        let (client, seen, stop) = (client.clone(), seen.clone(), stop.clone());
        tokio::spawn(async move {
            let mut group =
                GroupConsumer::subscribe(client, GroupConfig::new("readers"), &["words".to_string()]).await?;
            while !stop.load(Ordering::Relaxed) {
                for r in group.poll(Duration::from_millis(500)).await? {
                    seen.lock().unwrap().insert(String::from_utf8_lossy(&r.value).into_owned());
                }
                group.commit().await.ok();
            }
            group.close().await?;
            anyhow::Ok(())
        })
    };
    let producer = Producer::new(client.clone(), producer_config()).await?;
    for i in 0..EACH {
        producer.send(ProducerRecord::new("words", format!("word-{i}"))).await?.await?;
    }
    // Lose the controller: it coordinates the group and holds processor members.
    let controller = admin.metadata().await?.controller;
    cluster.broker_mut(controller).kill();
    for i in EACH..2 * EACH {
        producer.send(ProducerRecord::new("words", format!("word-{i}"))).await?.await?;
    }
    cluster.broker_mut(controller).restart()?;
    let expected: BTreeSet<String> = (0..2 * EACH).map(|i| format!("word-{i}")).collect();
    let deadline = Deadline::after(Duration::from_secs(120));
    loop {
        let missing = expected.difference(&seen.lock().unwrap()).count();
        if missing == 0 {
            break;
        }
        deadline.check(|| format!("the group member to see every record ({missing} missing)\n{}", cluster.logs()))?;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    stop.store(true, Ordering::Relaxed);
    member.await??;

    // The processor's output holds every input, uppercased (at least once).
    let mut consumer = Consumer::new(client.clone(), ConsumerConfig::default());
    consumer.assign_all("shouts", StartOffset::Earliest).await?;
    let mut shouted = BTreeSet::new();
    let deadline = Deadline::after(Duration::from_secs(120));
    while shouted.len() < 2 * EACH {
        deadline.check(|| format!("every input processed ({} of {})\n{}", shouted.len(), 2 * EACH, cluster.logs()))?;
        for r in consumer.poll(Duration::from_secs(1)).await? {
            shouted.insert(String::from_utf8_lossy(&r.value).into_owned());
        }
    }
    let want: BTreeSet<String> = (0..2 * EACH).map(|i| format!("WORD-{i}")).collect();
    assert_eq!(shouted, want);
    Ok(())
}
