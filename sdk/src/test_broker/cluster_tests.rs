//! The SDK against a [`TestCluster`]: control-plane failover between
//! brokers, routing of partition requests to leaders, and the producer's
//! retries and deduplication across leader changes and lost connections.

use std::collections::HashMap;
use std::time::Duration;

use super::*;
use crate::*;

/// Bound on every wait of these tests.
const WAIT: Duration = Duration::from_secs(20);

async fn bounded<T>(what: &str, f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(WAIT, f).await.unwrap_or_else(|_| panic!("{what} took longer than {WAIT:?}"))
}

#[tokio::test]
async fn control_plane_fails_over_to_another_bootstrap_broker() {
    let cluster = TestCluster::start(2).await;
    cluster.broker(1).kill();
    // Broker 1 is first in the bootstrap list and dead: connect goes on to broker 2.
    let config = cluster.config().connect_timeout(Duration::from_millis(300));
    let client = bounded("connect", Client::connect(config)).await.unwrap();
    let admin = Admin::new(client.clone());
    bounded("create", admin.create_topic(NewTopic::new("t", 2))).await.unwrap();
    assert_eq!(bounded("list", admin.list_topics()).await.unwrap().len(), 1);
    assert_eq!(bounded("meta", admin.metadata()).await.unwrap().brokers.len(), 2);
}

#[tokio::test]
async fn control_plane_moves_on_when_the_broker_in_use_dies() {
    let cluster = TestCluster::start(3).await;
    let client = Client::connect(cluster.config().connect_timeout(Duration::from_millis(300))).await.unwrap();
    let admin = Admin::new(client.clone());
    admin.create_topic(NewTopic::new("a", 1)).await.unwrap();
    cluster.broker(1).kill();
    // A read-only request lost with the connection is sent again elsewhere.
    assert_eq!(bounded("list after kill", admin.list_topics()).await.unwrap().len(), 1);
    bounded("create after kill", admin.create_topic(NewTopic::new("b", 1))).await.unwrap();
    // A broker answering SHUTTING_DOWN is skipped too.
    cluster.broker(2).set_shutting_down(true);
    bounded("create while 2 stops", admin.create_topic(NewTopic::new("c", 1))).await.unwrap();
    assert_eq!(admin.list_topics().await.unwrap().len(), 3);
}

#[tokio::test]
async fn not_controller_is_retried_until_a_controller_is_back() {
    let cluster = TestCluster::start(2).await;
    let client = Client::connect(cluster.config()).await.unwrap();
    let admin = Admin::new(client.clone());
    cluster.set_controller_down(true);
    let back = async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        cluster.set_controller_down(false);
    };
    let (created, ()) = bounded("create", futures::future::join(admin.create_topic(NewTopic::new("t", 1)), back)).await;
    created.unwrap();
    // With no controller for longer than the request timeout, the refusal is returned.
    cluster.set_controller_down(true);
    let short = Client::connect(cluster.config().request_timeout(Duration::from_millis(400))).await.unwrap();
    let err = bounded("refused", Admin::new(short).create_topic(NewTopic::new("u", 1))).await.unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::NotController), "{err}");
    assert!(err.is_retriable());
}

#[tokio::test]
async fn partition_requests_go_to_the_leader_and_follow_it() {
    let cluster = TestCluster::start(3).await;
    let client = Client::connect(cluster.config()).await.unwrap();
    Admin::new(client.clone()).create_topic(NewTopic::new("t", 2)).await.unwrap();
    cluster.set_leader("t", 1, 3);
    let req = |partition| ListOffsetsRequest { topic: "t".into(), partition, spec: OffsetSpec::Latest };
    assert_eq!(client.request_to_leader("t", 0, &req(0)).await.unwrap().offset, 0);
    assert_eq!(client.request_to_leader("t", 1, &req(1)).await.unwrap().offset, 0);
    assert_eq!(client.leader("t", 1).await.unwrap().id(), 3);
    assert_eq!(client.cached_leader("t", 0), 1);
    // The leader moves: NOT_LEADER refreshes the cache and the request follows.
    cluster.set_leader("t", 1, 2);
    let version = client.metadata_version();
    assert_eq!(client.request_to_leader("t", 1, &req(1)).await.unwrap().offset, 0);
    assert!(client.metadata_version() > version);
    assert_eq!(client.cached_leader("t", 1), 2);
    // Unknown topics are reported, not retried forever.
    let unknown = ListOffsetsRequest { topic: "nope".into(), partition: 0, spec: OffsetSpec::Latest };
    let err = bounded("unknown", client.request_to_leader("nope", 0, &unknown)).await.unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::UnknownTopic));
    // No leader for longer than the limit: the retriable error comes back.
    cluster.set_leader("t", 0, 0);
    let req0 = req(0);
    let err = client.request_to_leader_with_timeout("t", 0, &req0, Duration::from_millis(400));
    let err = bounded("no leader", err).await.unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::LeaderNotAvailable), "{err}");
}

/// Small batches, so that a test's records make many requests.
fn small_batches() -> ProducerConfig {
    ProducerConfig { max_batch_bytes: 1024, max_in_flight: 8, ..ProducerConfig::default() }
}

async fn connect(cluster: &TestCluster) -> Client {
    Client::connect(cluster.config().connect_timeout(Duration::from_millis(500))).await.unwrap()
}

/// Sends `count` records `"{tag}-{i}"` to partition `i % partitions` and
/// returns their futures in send order.
async fn send_all(producer: &Producer, topic: &str, partitions: u32, tag: &str, count: u32) -> Vec<DeliveryFuture> {
    let mut futures = Vec::with_capacity(count as usize);
    for i in 0..count {
        let record = ProducerRecord::new(topic, format!("{tag}-{i}")).partition(i % partitions);
        futures.push(producer.send(record).await.unwrap());
    }
    futures
}

/// What each partition must hold, in order: the values sent to it.
fn expected(partitions: u32, tag: &str, count: u32) -> Vec<Vec<Bytes>> {
    let mut out = vec![Vec::new(); partitions as usize];
    for i in 0..count {
        out[(i % partitions) as usize].push(Bytes::from(format!("{tag}-{i}")));
    }
    out
}

/// Awaits every future; all must succeed, with offsets in send order per partition.
async fn all_acked(futures: Vec<DeliveryFuture>) {
    let mut last: HashMap<u32, u64> = HashMap::new();
    for f in futures {
        let meta = bounded("delivery", f).await.unwrap();
        let offset = meta.offset.unwrap();
        if let Some(prev) = last.insert(meta.partition, offset) {
            assert!(offset > prev, "partition {} offsets out of order: {prev} then {offset}", meta.partition);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn producer_sends_each_partition_to_its_leader() {
    let cluster = TestCluster::start(3).await;
    let client = connect(&cluster).await;
    Admin::new(client.clone()).create_topic(NewTopic::new("t", 3)).await.unwrap();
    cluster.set_leader("t", 1, 2);
    cluster.set_leader("t", 2, 3);
    let producer = Producer::new(client, ProducerConfig::default()).await.unwrap();
    let futures = send_all(&producer, "t", 3, "v", 3000).await;
    all_acked(futures).await;
    for p in 0..3 {
        assert_eq!(cluster.values("t", p), expected(3, "v", 3000)[p as usize], "partition {p}");
    }
    for id in 1..=3 {
        assert!(cluster.broker(id).appended_batches() > 0, "broker {id} led a partition but got nothing");
    }
    assert_eq!(cluster.duplicates(), 0);
    producer.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leadership_moves_mid_stream_and_each_record_is_written_once_in_order() {
    let cluster = TestCluster::start(2).await;
    let client = connect(&cluster).await;
    Admin::new(client.clone()).create_topic(NewTopic::new("t", 2)).await.unwrap();
    let producer = Producer::new(client, small_batches()).await.unwrap();
    let total = 20_000;
    let sender = {
        let producer = producer.clone();
        tokio::spawn(async move { send_all(&producer, "t", 2, "v", total).await })
    };
    // Move the leaders while records flow: broker 1 answers NOT_LEADER from now on.
    bounded("first records", async {
        while cluster.broker(1).appended_batches() < 10 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
    cluster.set_default_leader(2);
    let before = cluster.broker(2).appended_batches();
    bounded("records on the new leader", async {
        while cluster.broker(2).appended_batches() < before + 10 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
    // And back, partition 1 only.
    cluster.set_leader("t", 1, 1);
    let futures = bounded("sending", sender).await.unwrap();
    all_acked(futures).await;
    let want = expected(2, "v", total);
    for p in 0..2 {
        assert_eq!(cluster.values("t", p).len(), want[p as usize].len(), "partition {p}: lost or duplicated records");
        assert_eq!(cluster.values("t", p), want[p as usize], "partition {p} out of order");
    }
    assert!(cluster.broker(1).produce_requests() > 0 && cluster.broker(2).appended_batches() > 0);
    producer.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_leader_is_replaced_without_loss_or_duplicates() {
    let cluster = TestCluster::start(2).await;
    let client = connect(&cluster).await;
    Admin::new(client.clone()).create_topic(NewTopic::new("t", 2)).await.unwrap();
    let producer = Producer::new(client, small_batches()).await.unwrap();
    let total = 10_000;
    let sender = {
        let producer = producer.clone();
        tokio::spawn(async move { send_all(&producer, "t", 2, "v", total).await })
    };
    bounded("first records", async {
        while cluster.broker(1).appended_batches() < 10 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
    cluster.set_default_leader(2);
    cluster.broker(1).kill();
    let futures = bounded("sending", sender).await.unwrap();
    all_acked(futures).await;
    let want = expected(2, "v", total);
    for p in 0..2 {
        assert_eq!(cluster.values("t", p), want[p as usize], "partition {p}");
    }
    producer.close().await.unwrap();
}

#[tokio::test]
async fn a_connection_lost_after_the_write_is_resent_and_deduplicated() {
    let cluster = TestCluster::start(1).await;
    let client = connect(&cluster).await;
    Admin::new(client.clone()).create_topic(NewTopic::new("t", 1)).await.unwrap();
    let producer = Producer::new(client, ProducerConfig::default()).await.unwrap();
    producer.send_and_wait(ProducerRecord::new("t", "first")).await.unwrap();
    // The next produce request is appended, then its connection closed unanswered.
    cluster.broker(1).drop_after_append(1);
    let futures = send_all(&producer, "t", 1, "v", 100).await;
    all_acked(futures).await;
    let mut want = vec![Bytes::from_static(b"first")];
    want.extend(expected(1, "v", 100).remove(0));
    assert_eq!(cluster.values("t", 0), want, "a resend was written twice");
    assert!(cluster.duplicates() >= 1, "the resend was not recognised as one");
    producer.close().await.unwrap();
}

#[tokio::test]
async fn the_non_idempotent_producer_never_resends_a_written_batch() {
    let cluster = TestCluster::start(1).await;
    let client = connect(&cluster).await;
    Admin::new(client.clone()).create_topic(NewTopic::new("t", 1)).await.unwrap();
    let config = ProducerConfig { enable_idempotence: false, ..ProducerConfig::default() };
    let producer = Producer::new(client, config).await.unwrap();
    cluster.broker(1).drop_after_append(1);
    let err = bounded("lost", producer.send_and_wait(ProducerRecord::new("t", "once"))).await.unwrap_err();
    assert!(matches!(err, ClientError::Transport(_)), "{err}");
    let meta = bounded("next", producer.send_and_wait(ProducerRecord::new("t", "next"))).await.unwrap();
    assert_eq!(meta.offset, Some(1));
    assert_eq!(cluster.values("t", 0), vec![Bytes::from_static(b"once"), Bytes::from_static(b"next")]);
    assert_eq!(cluster.duplicates(), 0);
    let stored = cluster.brokers[0].shared.state.lock().unwrap().topics["t"][0].batches[0].2.clone();
    assert_eq!(BatchView::trusted(stored).unwrap().producer_id(), 0, "no producer id without idempotence");
    producer.close().await.unwrap();
}

#[tokio::test]
async fn retries_stop_at_the_delivery_timeout_with_the_last_error() {
    let cluster = TestCluster::start(2).await;
    let client = connect(&cluster).await;
    Admin::new(client.clone()).create_topic(NewTopic::new("t", 2)).await.unwrap();
    let config = ProducerConfig { delivery_timeout: Duration::from_millis(600), ..ProducerConfig::default() };
    let producer = Producer::new(client, config).await.unwrap();
    producer.send_and_wait(ProducerRecord::new("t", "ok").partition(0)).await.unwrap();
    // Partition 0 loses its leader; broker 2 is not it either.
    cluster.set_leader("t", 0, 0);
    let lost = send_all(&producer, "t", 1, "lost", 10).await;
    for f in lost {
        let err = bounded("failure", f).await.unwrap_err();
        assert_eq!(err.code(), Some(ErrorCode::LeaderNotAvailable), "{err}");
    }
    // Partition 1 was not affected; partition 0 works again once it has a leader.
    producer.send_and_wait(ProducerRecord::new("t", "other").partition(1)).await.unwrap();
    cluster.set_leader("t", 0, 2);
    let meta = bounded("after", producer.send_and_wait(ProducerRecord::new("t", "after").partition(0))).await.unwrap();
    assert_eq!(meta.offset, Some(1));
    assert_eq!(cluster.values("t", 0), vec![Bytes::from_static(b"ok"), Bytes::from_static(b"after")]);
    producer.close().await.unwrap();
}

#[tokio::test]
async fn the_consumer_follows_the_leader_to_another_broker() {
    let cluster = TestCluster::start(2).await;
    let client = connect(&cluster).await;
    Admin::new(client.clone()).create_topic(NewTopic::new("t", 1)).await.unwrap();
    let producer = Producer::new(client.clone(), ProducerConfig::default()).await.unwrap();
    all_acked(send_all(&producer, "t", 1, "a", 100).await).await;
    let mut consumer = Consumer::new(client, ConsumerConfig::default());
    consumer.assign("t", 0, StartOffset::Earliest).await.unwrap();
    let mut got: Vec<Bytes> = Vec::new();
    while got.len() < 100 {
        let records = bounded("poll", consumer.poll(Duration::from_secs(5))).await.unwrap();
        assert!(!records.is_empty(), "stalled at {}", got.len());
        got.extend(records.into_iter().map(|r| r.value));
    }
    cluster.set_leader("t", 0, 2);
    cluster.broker(1).kill();
    all_acked(send_all(&producer, "t", 1, "b", 100).await).await;
    while got.len() < 200 {
        // No error reaches poll: the leader change is handled inside.
        let records = bounded("poll after failover", consumer.poll(Duration::from_secs(5))).await.unwrap();
        got.extend(records.into_iter().map(|r| r.value));
    }
    let mut want = expected(1, "a", 100).remove(0);
    want.extend(expected(1, "b", 100).remove(0));
    assert_eq!(got, want);
    assert_eq!(consumer.position("t", 0), Some(200));
    producer.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_member_survives_the_coordinator_moving() {
    let cluster = TestCluster::start(2).await;
    let client = connect(&cluster).await;
    Admin::new(client.clone()).create_topic(NewTopic::new("t", 2)).await.unwrap();
    let producer = Producer::new(client.clone(), ProducerConfig::default()).await.unwrap();
    all_acked(send_all(&producer, "t", 2, "a", 100).await).await;
    let config = GroupConfig::new("g")
        .session_timeout(Duration::from_secs(2))
        .auto_commit(Some(Duration::from_millis(100)))
        .rebalance_timeout(Duration::from_secs(2));
    let mut member = GroupConsumer::subscribe(client.clone(), config, &["t".to_string()]).await.unwrap();
    let mut seen = std::collections::BTreeSet::new();
    let poll_until = async |member: &mut GroupConsumer, seen: &mut std::collections::BTreeSet<Bytes>, n| {
        bounded("records", async {
            while seen.len() < n {
                // Every poll succeeds: coordinator trouble never reaches it.
                for r in member.poll(Duration::from_millis(200)).await.unwrap() {
                    seen.insert(r.value);
                }
            }
        })
        .await
    };
    poll_until(&mut member, &mut seen, 100).await;
    // No controller for a while (an election), then broker 1 dies and broker 2 takes over.
    cluster.set_controller_down(true);
    let until = tokio::time::Instant::now() + Duration::from_millis(500);
    while tokio::time::Instant::now() < until {
        member.poll(Duration::from_millis(100)).await.unwrap();
    }
    cluster.set_default_leader(2);
    cluster.broker(1).kill();
    cluster.set_controller_down(false);
    all_acked(send_all(&producer, "t", 2, "b", 100).await).await;
    poll_until(&mut member, &mut seen, 200).await;
    let mut want: std::collections::BTreeSet<Bytes> = expected(2, "a", 100).into_iter().flatten().collect();
    want.extend(expected(2, "b", 100).into_iter().flatten());
    assert_eq!(seen, want, "every record delivered (at least once)");
    bounded("commits", async {
        while cluster.broker(2).committed("g", "t", 0) != Some(100)
            || cluster.broker(2).committed("g", "t", 1) != Some(100)
        {
            member.poll(Duration::from_millis(100)).await.unwrap();
        }
    })
    .await;
    bounded("close", member.close()).await.unwrap();
    producer.close().await.unwrap();
}
