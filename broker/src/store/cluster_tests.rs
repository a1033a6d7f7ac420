//! Store tests of what replication needs: idempotent-producer dedup, follower
//! appends, the leader-epoch cache, truncation, the high watermark, the
//! replicated state machine (apply) and snapshots. Against real redb files.

use bytes::Bytes;
use eddy_protocol::batch::{split_batches, BatchBuilder};
use eddy_protocol::processors::STATUS_STOPPED;

use super::processor_tests::{commit, deployment, put, stats, wasm, writes};
use super::tests::{append, batch, config, lead_all, read, topic, values};
use super::*;

/// A batch of an idempotent producer.
fn pbatch(values: &[&str], producer_id: u64, base_sequence: u32) -> Bytes {
    let mut b = BatchBuilder::with_capacity(64);
    for v in values {
        b.push(None, v.as_bytes(), 1, &[]);
    }
    b.finish(producer_id, base_sequence)
}

async fn leader_append(store: &Store, t: &str, p: u32, b: Bytes, epoch: u32) -> Result<Appended, StoreError> {
    store.append(t, p, b, epoch).await?.await
}

fn assigned(replicas: &[u32]) -> PartitionAssignment {
    PartitionAssignment {
        replicas: replicas.to_vec(),
        leader: replicas[0],
        leader_epoch: 0,
        isr: replicas.to_vec(),
        version: 0,
    }
}

fn cluster_topic(name: &str, partitions: u32, replicas: &[u32]) -> TopicConfig {
    TopicConfig {
        replication_factor: replicas.len() as u16,
        min_insync_replicas: 2,
        assignments: vec![assigned(replicas); partitions as usize],
        ..topic(name, partitions)
    }
}

fn entry(n: u64, command: Option<MetaCommand>) -> ApplyEntry {
    ApplyEntry { applied: Bytes::from(n.to_le_bytes().to_vec()), membership: None, command }
}

#[tokio::test]
async fn duplicates_answer_the_original_offsets_and_write_nothing() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = Store::open(config(dir.path())).unwrap();
        store.create_topic(topic("t", 1)).await.unwrap();
        append(&store, "t", 0, batch(&["plain"], 1)).await;
        let first = leader_append(&store, "t", 0, pbatch(&["a", "b"], 7, 0), 0).await.unwrap();
        assert_eq!(first, Appended { base_offset: 1, next_offset: 3, duplicate: false });
        let again = leader_append(&store, "t", 0, pbatch(&["a", "b"], 7, 0), 0).await.unwrap();
        assert_eq!(again, Appended { base_offset: 1, next_offset: 3, duplicate: true });
        assert_eq!(store.batch_count("t", 0).unwrap(), 2);
        assert_eq!(store.partition("t", 0).unwrap().1.offsets().log_end, 3);
        // Two copies of the next batch queued together (behind a filler the
        // writer commits first, so that both are drained into one round).
        let filler = store.append("t", 0, batch(&["filler"], 1), 0).await.unwrap();
        let f1 = store.append("t", 0, pbatch(&["c"], 7, 2), 0).await.unwrap();
        let f2 = store.append("t", 0, pbatch(&["c"], 7, 2), 0).await.unwrap();
        assert_eq!(filler.await.unwrap().base_offset, 3);
        let (r1, r2) = (f1.await.unwrap(), f2.await.unwrap());
        assert_eq!((r1.base_offset, r1.duplicate), (4, false));
        assert_eq!((r2.base_offset, r2.duplicate), (4, true));
        // A gap and a stale sequence are refused.
        let gap = leader_append(&store, "t", 0, pbatch(&["x"], 7, 10), 0).await;
        assert!(
            matches!(gap, Err(StoreError::OutOfOrderSequence { producer_id: 7, expected: 3, got: 10, .. })),
            "{gap:?}"
        );
        assert_eq!(gap.unwrap_err().code(), ErrorCode::OutOfOrderSequence);
        let stale = leader_append(&store, "t", 0, pbatch(&["x"], 7, 1), 0).await;
        assert!(matches!(stale, Err(StoreError::InvalidRequest(_))), "{stale:?}");
        // Another producer starts anywhere.
        let other = leader_append(&store, "t", 0, pbatch(&["y"], 8, 1_000), 0).await.unwrap();
        assert_eq!(other.base_offset, 5);
        store.close().await;
    }
    let store = Store::open(config(dir.path())).unwrap();
    let again = leader_append(&store, "t", 0, pbatch(&["c"], 7, 2), 0).await.unwrap();
    assert_eq!(again, Appended { base_offset: 4, next_offset: 5, duplicate: true }, "survives reopen");
    let next = leader_append(&store, "t", 0, pbatch(&["d"], 7, 3), 0).await.unwrap();
    assert_eq!((next.base_offset, next.duplicate), (6, false));
    assert_eq!(values(&read(&store, "t", 0, 0, 1 << 20).unwrap(), 0), ["plain", "a", "b", "filler", "c", "y", "d"]);
    store.close().await;
}

#[tokio::test]
async fn epoch_cache_answers_offsets_for_leader_epoch() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = Store::open(config(dir.path())).unwrap();
        store.create_topic(topic("t", 1)).await.unwrap();
        assert_eq!(store.last_epoch("t", 0).unwrap(), 0);
        assert_eq!(store.epoch_end_offset("t", 0, 3).unwrap(), (3, 0));
        leader_append(&store, "t", 0, batch(&["a", "b"], 1), 1).await.unwrap(); // 0..2 epoch 1
        leader_append(&store, "t", 0, batch(&["c"], 1), 1).await.unwrap(); // 2..3 epoch 1
        leader_append(&store, "t", 0, batch(&["d", "e"], 1), 3).await.unwrap(); // 3..5 epoch 3
        leader_append(&store, "t", 0, batch(&["f"], 1), 5).await.unwrap(); // 5..6 epoch 5
        let fenced = leader_append(&store, "t", 0, batch(&["old"], 1), 4).await;
        assert!(matches!(fenced, Err(StoreError::FencedLeaderEpoch { epoch: 4, current: 5, .. })), "{fenced:?}");
        store.close().await;
    }
    let store = Store::open(config(dir.path())).unwrap();
    assert_eq!(store.last_epoch("t", 0).unwrap(), 5);
    assert_eq!(store.epoch_end_offset("t", 0, 0).unwrap(), (0, 0));
    assert_eq!(store.epoch_end_offset("t", 0, 1).unwrap(), (1, 3));
    assert_eq!(store.epoch_end_offset("t", 0, 2).unwrap(), (1, 3));
    assert_eq!(store.epoch_end_offset("t", 0, 4).unwrap(), (3, 5));
    assert_eq!(store.epoch_end_offset("t", 0, 9).unwrap(), (5, 6));
    // The stored copies carry their epochs.
    let epochs: Vec<u32> = split_batches(store.read_replica("t", 0, 0, 1 << 20).unwrap().records)
        .map(|b| b.unwrap().leader_epoch())
        .collect();
    assert_eq!(epochs, [1, 1, 3, 5]);
    store.close().await;
}

#[tokio::test]
async fn followers_store_the_leaders_batches_byte_for_byte() {
    let dir = tempfile::tempdir().unwrap();
    let leader = Store::open(config(&dir.path().join("leader"))).unwrap();
    let follower = Store::open(StoreConfig { broker_id: 2, ..config(&dir.path().join("follower")) }).unwrap();
    for s in [&leader, &follower] {
        s.create_topic(topic("t", 1)).await.unwrap();
    }
    leader_append(&leader, "t", 0, pbatch(&["a", "b"], 9, 0), 1).await.unwrap();
    leader_append(&leader, "t", 0, batch(&["c"], 1), 2).await.unwrap();
    let first = leader.read_replica("t", 0, 0, 1 << 20).unwrap();
    assert_eq!(first.log_end, 3);
    assert_eq!(follower.append_replicated("t", 0, first.records.clone()).await.unwrap(), 3);
    // A refetch overlapping the log end skips what is there.
    leader_append(&leader, "t", 0, pbatch(&["d"], 9, 2), 2).await.unwrap();
    let overlap = leader.read_replica("t", 0, 0, 1 << 20).unwrap();
    assert_eq!(follower.append_replicated("t", 0, overlap.records.clone()).await.unwrap(), 4);
    assert_eq!(follower.append_replicated("t", 0, overlap.records.clone()).await.unwrap(), 4);
    assert_eq!(follower.read_replica("t", 0, 0, 1 << 20).unwrap().records, overlap.records, "byte for byte");
    assert_eq!(follower.batch_count("t", 0).unwrap(), 3);
    // A gap is refused and writes nothing.
    leader_append(&leader, "t", 0, batch(&["e"], 1), 2).await.unwrap();
    leader_append(&leader, "t", 0, batch(&["f"], 1), 2).await.unwrap();
    let tail = leader.read_replica("t", 0, 5, 1 << 20).unwrap();
    let gap = follower.append_replicated("t", 0, tail.records).await;
    assert!(matches!(gap, Err(StoreError::InvalidRequest(ref m)) if m.contains("gap")), "{gap:?}");
    assert_eq!(follower.partition("t", 0).unwrap().1.offsets().log_end, 4);
    // Corrupt bytes are refused.
    let mut corrupt = overlap.records.to_vec();
    let last = corrupt.len() - 1;
    corrupt[last] ^= 0xff;
    assert!(matches!(
        follower.append_replicated("t", 0, Bytes::from(corrupt)).await,
        Err(StoreError::InvalidRequest(_))
    ));
    // Epochs and producer state followed.
    assert_eq!(follower.last_epoch("t", 0).unwrap(), 2);
    assert_eq!(follower.epoch_end_offset("t", 0, 1).unwrap(), (1, 2));
    // Promoted to leader, the follower knows producer 9's batches.
    let dup = leader_append(&follower, "t", 0, pbatch(&["d"], 9, 2), 3).await.unwrap();
    assert_eq!(dup, Appended { base_offset: 3, next_offset: 4, duplicate: true });
    let gap = leader_append(&follower, "t", 0, pbatch(&["z"], 9, 5), 3).await;
    assert!(matches!(gap, Err(StoreError::OutOfOrderSequence { expected: 3, .. })), "{gap:?}");
    // The follower's high watermark comes from the leader, capped at its log end.
    let (_, p) = follower.partition("t", 0).unwrap();
    p.set_high_watermark(6);
    assert_eq!(p.high_watermark(), 4);
    leader.close().await;
    follower.close().await;
}

#[tokio::test]
async fn consumers_read_up_to_the_high_watermark() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(config(dir.path())).unwrap();
    store.create_topic(topic("t", 1)).await.unwrap();
    let (_, p) = store.partition("t", 0).unwrap();
    let mut hw = p.subscribe_hw();
    append(&store, "t", 0, batch(&["a"], 1)).await; // 0..1
    append(&store, "t", 0, batch(&["b", "c"], 1)).await; // 1..3
    append(&store, "t", 0, batch(&["d"], 1)).await; // 3..4
    assert_eq!(p.high_watermark(), 0, "nothing is replicated yet");
    let r = store.read("t", 0, 0, 1 << 20).unwrap();
    assert!(r.records.is_empty());
    assert_eq!((r.high_watermark, r.log_end), (0, 4));
    assert!(store.read("t", 0, 2, 1 << 20).unwrap().records.is_empty(), "between hw and log end: empty");
    p.set_remote_min(3);
    assert!(hw.has_changed().unwrap());
    assert_eq!(*hw.borrow_and_update(), 3);
    let r = store.read("t", 0, 0, 1 << 20).unwrap();
    assert_eq!(values(&r, 0), ["a", "b", "c"]);
    assert_eq!(r.high_watermark, 3);
    assert!(store.read("t", 0, 3, 1 << 20).unwrap().records.is_empty());
    assert_eq!(values(&store.read_replica("t", 0, 0, 1 << 20).unwrap(), 0), ["a", "b", "c", "d"]);
    // Never lowered by a lower remote minimum; raised by appends up to it.
    p.set_remote_min(1);
    assert_eq!(p.high_watermark(), 3);
    p.set_remote_min(u64::MAX);
    assert_eq!(p.high_watermark(), 4);
    append(&store, "t", 0, batch(&["e"], 1)).await;
    assert_eq!(p.offsets().high_watermark, 5, "a leader alone in its ISR follows its log end");
    store.close().await;
}

#[tokio::test]
async fn truncation_removes_whole_batches_epochs_and_producer_state() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = Store::open(config(dir.path())).unwrap();
        store.create_topic(topic("t", 1)).await.unwrap();
        leader_append(&store, "t", 0, batch(&["a", "b"], 1), 1).await.unwrap(); // 0..2 e1
        leader_append(&store, "t", 0, pbatch(&["c", "d", "e"], 9, 0), 2).await.unwrap(); // 2..5 e2
        leader_append(&store, "t", 0, pbatch(&["f"], 9, 3), 3).await.unwrap(); // 5..6 e3
        let (_, p) = store.partition("t", 0).unwrap();
        lead_all(&store);
        assert_eq!(p.high_watermark(), 6);
        let mut ends = p.subscribe();
        ends.borrow_and_update();
        // Offset 3 lies inside the batch 2..5: it goes whole.
        assert_eq!(store.truncate("t", 0, 3).await.unwrap(), 2);
        assert!(ends.has_changed().unwrap(), "subscribers see the log end go down");
        assert_eq!(*ends.borrow_and_update(), 2);
        assert_eq!(p.offsets().log_end, 2);
        assert_eq!(p.high_watermark(), 2, "the high watermark clamps");
        assert_eq!(store.batch_count("t", 0).unwrap(), 1);
        assert_eq!(store.last_epoch("t", 0).unwrap(), 1);
        assert_eq!(store.epoch_end_offset("t", 0, 2).unwrap(), (1, 2));
        // Producer 9 has no batch left: it is forgotten, any sequence goes.
        let r = leader_append(&store, "t", 0, pbatch(&["g"], 9, 100), 4).await.unwrap();
        assert_eq!((r.base_offset, r.duplicate), (2, false));
        // Truncating at or past the log end changes nothing.
        assert_eq!(store.truncate("t", 0, 10).await.unwrap(), 3);
        store.close().await;
    }
    let store = Store::open(config(dir.path())).unwrap();
    let (_, p) = store.partition("t", 0).unwrap();
    assert_eq!(p.offsets().log_end, 3);
    assert_eq!(p.offsets().size_bytes, store.read_replica("t", 0, 0, 1 << 20).unwrap().records.len() as u64);
    assert_eq!(store.last_epoch("t", 0).unwrap(), 4);
    assert_eq!(store.epoch_end_offset("t", 0, 3).unwrap(), (1, 2));
    assert_eq!(values(&read(&store, "t", 0, 0, 1 << 20).unwrap(), 0), ["a", "b", "g"]);
    // Below the log start: the partition empties at its log start.
    assert_eq!(store.truncate("t", 0, 0).await.unwrap(), 0);
    assert_eq!(store.batch_count("t", 0).unwrap(), 0);
    assert_eq!((p.offsets().log_end, p.offsets().size_bytes, p.high_watermark()), (0, 0, 0));
    assert_eq!(store.last_epoch("t", 0).unwrap(), 0);
    store.close().await;
}

#[tokio::test]
async fn truncation_rebuilds_a_producer_from_the_remaining_log() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(config(dir.path())).unwrap();
    store.create_topic(topic("t", 1)).await.unwrap();
    let n = PRODUCER_BATCHES as u32 + 6;
    for seq in 0..n {
        leader_append(&store, "t", 0, pbatch(&["v"], 5, seq), 0).await.unwrap();
    }
    // Every remembered batch (the last 64) is cut; the 6 before are rescanned.
    assert_eq!(store.truncate("t", 0, 6).await.unwrap(), 6);
    let dup = leader_append(&store, "t", 0, pbatch(&["v"], 5, 5), 0).await.unwrap();
    assert_eq!(dup, Appended { base_offset: 5, next_offset: 6, duplicate: true });
    let gap = leader_append(&store, "t", 0, pbatch(&["v"], 5, 7), 0).await;
    assert!(matches!(gap, Err(StoreError::OutOfOrderSequence { expected: 6, .. })), "{gap:?}");
    let next = leader_append(&store, "t", 0, pbatch(&["v"], 5, 6), 0).await.unwrap();
    assert_eq!((next.base_offset, next.duplicate), (6, false));
    store.close().await;
}

/// Entries covering every command kind, applied to a fresh store.
fn every_command() -> Vec<ApplyEntry> {
    let mut deploy = deployment("p", wasm(70_000, 3), &[(0, 4)]);
    deploy.description.inputs = vec!["in".into()];
    let commands = vec![
        Some(MetaCommand::CreateTopic { config: cluster_topic("in", 2, &[1, 2]) }),
        Some(MetaCommand::CreateTopic { config: cluster_topic("out", 1, &[2, 1]) }),
        Some(MetaCommand::CreateTopic { config: cluster_topic("in", 1, &[1]) }), // TopicExists
        Some(MetaCommand::CreateTopic {
            config: TopicConfig { assignments: Vec::new(), ..cluster_topic("x", 2, &[1]) },
        }),
        Some(MetaCommand::AddPartitions { name: "in".into(), count: 3, assignments: vec![assigned(&[2, 1])] }),
        Some(MetaCommand::AlterPartitions {
            changes: vec![
                PartitionChange {
                    topic: "in".into(),
                    partition: 0,
                    expected_leader_epoch: 0,
                    expected_version: 0,
                    assignment: PartitionAssignment {
                        leader: 2,
                        leader_epoch: 1,
                        isr: vec![2],
                        version: 1,
                        ..assigned(&[1, 2])
                    },
                },
                PartitionChange {
                    topic: "in".into(),
                    partition: 1,
                    expected_leader_epoch: 0,
                    expected_version: 7,
                    assignment: assigned(&[2]),
                },
                PartitionChange {
                    topic: "nope".into(),
                    partition: 0,
                    expected_leader_epoch: 0,
                    expected_version: 0,
                    assignment: assigned(&[2]),
                },
            ],
        }),
        Some(MetaCommand::CommitOffsets { group: "g".into(), offsets: vec![("in".into(), 2, 9, "m".into())] }),
        Some(MetaCommand::CommitOffsets { group: "g".into(), offsets: vec![("in".into(), 5, 9, String::new())] }), // UnknownPartition
        Some(deploy.into()),
        Some(commit("p", &[(1, 7)], vec![writes(1, vec![put("k", "v")])], stats(3, 1)).into()),
        Some(MetaCommand::SetProcessorStatus {
            name: "p".into(),
            version: 1,
            status: STATUS_STOPPED.into(),
            reason: "r".into(),
        }),
        Some(MetaCommand::SetProcessorStatus {
            name: "p".into(),
            version: 9,
            status: STATUS_STOPPED.into(),
            reason: String::new(),
        }),
        Some(MetaCommand::AllocateProducerId),
        Some(MetaCommand::AllocateProducerId),
        None,
        Some(MetaCommand::CreateTopic { config: cluster_topic("tmp", 1, &[1]) }),
        Some(MetaCommand::DeleteTopic { name: "tmp".into() }),
        Some(MetaCommand::DeleteProcessor { name: "q".into() }), // UnknownProcessor
    ];
    commands.into_iter().zip(1..).map(|(c, n)| entry(n, c)).collect()
}

#[tokio::test]
async fn apply_runs_every_command_deterministically_with_per_entry_errors() {
    let dir = tempfile::tempdir().unwrap();
    let entries = every_command();
    let count = entries.len() as u64;
    let snapshot;
    {
        let store = Store::open(config(&dir.path().join("a"))).unwrap();
        assert_eq!(store.applied_state().unwrap(), (None, None));
        let mut entries = entries.clone();
        entries[0].membership = Some(Bytes::from_static(b"members"));
        let mut results = store.apply(entries).await.unwrap().into_iter();
        let mut next = || results.next().unwrap();
        let t = next().unwrap().into_topic().unwrap();
        assert_eq!((t.id, t.assignments.len()), (1, 2));
        assert_eq!(next().unwrap().into_topic().unwrap().id, 2);
        assert!(matches!(next(), Err(StoreError::TopicExists(_))));
        assert!(matches!(next(), Err(StoreError::InvalidRequest(_))), "assignments must match partitions");
        assert_eq!(next().unwrap().into_topic().unwrap().partitions, 3);
        assert_eq!(next().unwrap().into_altered().unwrap(), [true, false, false]);
        next().unwrap().into_done().unwrap();
        assert!(matches!(next(), Err(StoreError::UnknownPartition { .. })));
        let d = next().unwrap().into_processor().unwrap();
        assert_eq!(d.version, 1);
        next().unwrap().into_done().unwrap();
        assert!(next().unwrap().into_flag().unwrap());
        assert!(!next().unwrap().into_flag().unwrap());
        assert_eq!(next().unwrap().into_producer_id().unwrap(), 1);
        assert_eq!(next().unwrap().into_producer_id().unwrap(), 2);
        next().unwrap().into_done().unwrap();
        assert_eq!(next().unwrap().into_topic().unwrap().id, 3, "ids are not reused after a failed create");
        next().unwrap().into_done().unwrap();
        assert!(matches!(next(), Err(StoreError::UnknownProcessor(_))));
        // The catalog shows the altered leader.
        let a = &store.topic("in").unwrap().config.assignments;
        assert_eq!((a[0].leader, a[0].leader_epoch, a[0].version), (2, 1, 1));
        assert_eq!(a[2].replicas, [2, 1]);
        assert!(store.topic("tmp").is_err());
        assert_eq!(store.committed_offsets("g")[&("in".to_string(), 2)].0, 9);
        assert_eq!(store.processor("p").unwrap().status, STATUS_STOPPED);
        assert_eq!(store.processor("p").unwrap().stats.records_in, 3);
        let marks = store.applied_state().unwrap();
        assert_eq!(marks, (Some(Bytes::from(count.to_le_bytes().to_vec())), Some(Bytes::from_static(b"members"))));
        snapshot = store.snapshot().unwrap();
        store.close().await;
    }
    // After a reopen the marks and the state are the same.
    let store = Store::open(config(&dir.path().join("a"))).unwrap();
    assert_eq!(store.applied_state().unwrap().0, Some(Bytes::from(count.to_le_bytes().to_vec())));
    assert_eq!(store.snapshot().unwrap(), snapshot);
    // The next entry carries on from the counters.
    let r = store.apply(vec![entry(count + 1, Some(MetaCommand::AllocateProducerId))]).await.unwrap();
    assert_eq!(r[0].clone().unwrap().into_producer_id().unwrap(), 3);
    store.close().await;
    // Another broker applying the same entries reaches the same state.
    let other = Store::open(StoreConfig { broker_id: 2, ..config(&dir.path().join("b")) }).unwrap();
    let mut entries = every_command();
    entries[0].membership = Some(Bytes::from_static(b"members"));
    // Spread over several calls this time.
    let rest = entries.split_off(5);
    other.apply(entries).await.unwrap();
    other.apply(rest).await.unwrap();
    assert_eq!(other.snapshot().unwrap(), snapshot, "deterministic");
    other.close().await;
}

#[tokio::test]
async fn alter_partitions_checks_the_expected_epoch_and_version() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(config(dir.path())).unwrap();
    store.execute(MetaCommand::CreateTopic { config: cluster_topic("t", 1, &[1, 2, 3]) }).await.unwrap();
    let change = |epoch: u32, version: u32, leader: u32| PartitionChange {
        topic: "t".into(),
        partition: 0,
        expected_leader_epoch: epoch,
        expected_version: version,
        assignment: PartitionAssignment {
            leader,
            leader_epoch: epoch + 1,
            version: version + 1,
            ..assigned(&[1, 2, 3])
        },
    };
    let alter = |changes| store.execute(MetaCommand::AlterPartitions { changes });
    assert_eq!(alter(vec![change(0, 0, 2), change(0, 0, 3)]).await.unwrap().into_altered().unwrap(), [true, false]);
    assert_eq!(alter(vec![change(1, 1, 3)]).await.unwrap().into_altered().unwrap(), [true]);
    assert_eq!(alter(vec![change(1, 1, 1)]).await.unwrap().into_altered().unwrap(), [false], "stale version");
    let a = store.topic("t").unwrap().config.assignments[0].clone();
    assert_eq!((a.leader, a.leader_epoch, a.version), (3, 2, 2));
    // A malformed assignment fails the whole command, changing nothing.
    let mut bad = change(2, 2, 9);
    bad.assignment.leader = 9;
    assert!(matches!(alter(vec![change(2, 2, 1), bad]).await, Err(StoreError::InvalidRequest(_))));
    assert_eq!(store.topic("t").unwrap().config.assignments[0], a);
    store.close().await;
    drop(store);
    let store = Store::open(config(dir.path())).unwrap();
    assert_eq!(store.topic("t").unwrap().config.assignments[0], a, "durable");
    store.close().await;
}

#[tokio::test]
async fn snapshots_reproduce_the_replicated_state() {
    let dir = tempfile::tempdir().unwrap();
    let source = Store::open(config(&dir.path().join("source"))).unwrap();
    source.apply(every_command()).await.unwrap();
    append(&source, "in", 0, batch(&["local"], 1)).await;
    let snap = source.snapshot().unwrap();
    // A fresh store.
    let fresh = Store::open(StoreConfig { broker_id: 2, ..config(&dir.path().join("fresh")) }).unwrap();
    fresh.install_snapshot(snap.clone()).await.unwrap();
    assert_eq!(fresh.snapshot().unwrap(), snap);
    assert_eq!(fresh.applied_state().unwrap(), source.applied_state().unwrap());
    for name in ["in", "out"] {
        assert_eq!(fresh.topic(name).unwrap().config, source.topic(name).unwrap().config);
    }
    assert_eq!(fresh.partition("in", 0).unwrap().1.offsets().log_end, 0, "logs are not in snapshots");
    assert_eq!(fresh.committed_offsets("g"), source.committed_offsets("g"));
    assert_eq!(fresh.committed_offsets("processor.p"), source.committed_offsets("processor.p"));
    assert_eq!(fresh.processors(), source.processors());
    assert_eq!(fresh.processor_module("p", 1).unwrap(), source.processor_module("p", 1).unwrap());
    assert_eq!(fresh.state_scan("p", 1, None, 1 << 20).unwrap(), source.state_scan("p", 1, None, 1 << 20).unwrap());
    let id = fresh.execute(MetaCommand::AllocateProducerId).await.unwrap().into_producer_id().unwrap();
    assert_eq!(id, 3, "counters come along");
    // A store with local data: same topics keep their logs, others go.
    append(&fresh, "in", 1, batch(&["kept"], 1)).await;
    append(&fresh, "out", 0, batch(&["replaced"], 1)).await;
    fresh.create_topic(topic("gone", 1)).await.unwrap();
    source.delete_topic("out").await.unwrap();
    source.execute(MetaCommand::CreateTopic { config: cluster_topic("out", 1, &[1]) }).await.unwrap();
    source.delete_processor("p").await.unwrap();
    let snap = source.snapshot().unwrap();
    let (_, kept) = fresh.partition("in", 1).unwrap();
    let kept_ends = kept.subscribe();
    fresh.install_snapshot(snap.clone()).await.unwrap();
    assert_eq!(fresh.snapshot().unwrap(), snap);
    assert!(fresh.topic("gone").is_err());
    assert_eq!(values(&read(&fresh, "in", 1, 0, 1 << 20).unwrap(), 0), ["kept"]);
    assert_eq!(fresh.topic("out").unwrap().config.id, source.topic("out").unwrap().config.id);
    assert!(read(&fresh, "out", 0, 0, 1 << 20).unwrap().records.is_empty(), "replaced topic starts empty");
    assert!(fresh.processors().is_empty());
    assert!(fresh.committed_offsets("processor.p").is_empty());
    assert!(!kept_ends.has_changed().unwrap(), "subscriptions of kept partitions survive");
    // Reopened, the same.
    fresh.close().await;
    drop(fresh);
    let fresh = Store::open(StoreConfig { broker_id: 2, ..config(&dir.path().join("fresh")) }).unwrap();
    assert_eq!(fresh.snapshot().unwrap(), snap);
    assert_eq!(values(&read(&fresh, "in", 1, 0, 1 << 20).unwrap(), 0), ["kept"]);
    // Garbage is refused.
    assert!(matches!(fresh.install_snapshot(Bytes::from_static(b"junk")).await, Err(StoreError::InvalidRequest(_))));
    assert!(matches!(fresh.install_snapshot(snap.slice(..snap.len() - 3)).await, Err(StoreError::InvalidRequest(_))));
    assert_eq!(fresh.snapshot().unwrap(), snap);
    fresh.close().await;
    source.close().await;
}

#[tokio::test]
async fn topics_of_older_versions_get_single_broker_assignments() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = Store::open(config(dir.path())).unwrap();
        store.create_topic(topic("t", 2)).await.unwrap();
        append(&store, "t", 0, batch(&["a"], 1)).await;
        store.close().await;
        // Rewrite the config as an older version stored it, and drop the epochs.
        let txn = store.db.begin_write().unwrap();
        {
            let json = br#"{"name":"t","id":1,"partitions":2,"replication_factor":1,"retention_ms":null,"retention_bytes":null}"#;
            txn.open_table(TOPICS).unwrap().insert("t", json.as_slice()).unwrap();
            txn.open_table(LEADER_EPOCHS).unwrap().retain(|_, _| false).unwrap();
        }
        txn.commit().unwrap();
    }
    let store = Store::open(StoreConfig { broker_id: 4, ..config(dir.path()) }).unwrap();
    let c = store.topic("t").unwrap().config.clone();
    assert_eq!(c.min_insync_replicas, 1);
    assert_eq!(c.assignments, vec![PartitionAssignment::single(4); 2]);
    assert_eq!(store.epoch_end_offset("t", 0, 0).unwrap(), (0, 1), "old data is epoch 0 from the log start");
    store.close().await;
}
