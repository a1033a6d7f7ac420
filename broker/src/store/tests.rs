//! Store tests against real redb files: appends, reads, reopen, retention, admin.

use bytes::Bytes;
use eddy_protocol::batch::{split_batches, BatchBuilder};

use super::*;

/// A durable store in `dir` (shared by the store's and the handlers' tests).
pub(crate) fn config(dir: &Path) -> StoreConfig {
    StoreConfig { path: store_path(dir), durability: DurabilityPolicy::EveryCommit, broker_id: 1 }
}

/// A topic without retention (shared by the store's and the handlers' tests).
pub(crate) fn topic(name: &str, partitions: u32) -> TopicConfig {
    TopicConfig {
        name: name.into(),
        id: 0,
        partitions,
        replication_factor: 1,
        retention_ms: None,
        retention_bytes: None,
        min_insync_replicas: 1,
        assignments: Vec::new(),
    }
}

pub(crate) fn batch(values: &[&str], ts: i64) -> Bytes {
    let mut b = BatchBuilder::with_capacity(64);
    for v in values {
        b.push(None, v.as_bytes(), ts, &[]);
    }
    b.finish(0, 0)
}

pub(crate) fn values(read: &ReadResult, from: u64) -> Vec<String> {
    split_batches(read.records.clone())
        .flat_map(|b| b.unwrap().records().collect::<Vec<_>>())
        .map(|r| r.unwrap())
        .filter(|r| r.offset >= from)
        .map(|r| String::from_utf8(r.value.to_vec()).unwrap())
        .collect()
}

/// Makes every partition a leader whose ISR is itself (high watermark =
/// log end), as the replication layer does on a single node.
pub(crate) fn lead_all(store: &Store) {
    for t in store.catalog().values() {
        for p in &t.partitions {
            p.set_remote_min(u64::MAX);
        }
    }
}

/// A consumer read with every partition led alone (see [`lead_all`]).
pub(crate) fn read(store: &Store, t: &str, p: u32, offset: u64, max_bytes: usize) -> Result<ReadResult, StoreError> {
    lead_all(store);
    store.read(t, p, offset, max_bytes)
}

pub(crate) async fn append(store: &Store, t: &str, p: u32, b: Bytes) -> u64 {
    store.append(t, p, b, 0).await.unwrap().await.unwrap().base_offset
}

#[tokio::test]
async fn appends_get_dense_offsets_and_survive_reopen() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = Store::open(config(dir.path())).unwrap();
        store.create_topic(topic("t", 2)).await.unwrap();
        assert_eq!(append(&store, "t", 0, batch(&["a", "b"], 1)).await, 0);
        assert_eq!(append(&store, "t", 0, batch(&["c"], 1)).await, 2);
        assert_eq!(append(&store, "t", 1, batch(&["x"], 1)).await, 0);
        let read = read(&store, "t", 0, 1, 1 << 20).unwrap();
        assert_eq!(values(&read, 1), ["b", "c"]);
        assert_eq!(read.high_watermark, 3);
        store.close().await;
    }
    let store = Store::open(config(dir.path())).unwrap();
    let (_, p) = store.partition("t", 0).unwrap();
    assert_eq!(p.offsets().log_end, 3);
    assert_eq!(values(&read(&store, "t", 0, 0, 1 << 20).unwrap(), 0), ["a", "b", "c"]);
    assert_eq!(append(&store, "t", 0, batch(&["d"], 1)).await, 3);
    store.close().await;
}

#[tokio::test]
async fn read_respects_max_bytes_but_returns_at_least_one_batch() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(config(dir.path())).unwrap();
    store.create_topic(topic("t", 1)).await.unwrap();
    for i in 0..5 {
        append(&store, "t", 0, batch(&[&format!("v{i}")], 1)).await;
    }
    let one = read(&store, "t", 0, 0, 1).unwrap();
    assert_eq!(values(&one, 0), ["v0"]);
    let all = read(&store, "t", 0, 2, 1 << 20).unwrap();
    assert_eq!(values(&all, 2), ["v2", "v3", "v4"]);
    assert!(read(&store, "t", 0, 5, 100).unwrap().records.is_empty());
    assert!(matches!(read(&store, "t", 0, 6, 100), Err(StoreError::OffsetOutOfRange { log_end: 5, .. })));
    assert!(matches!(read(&store, "nope", 0, 0, 100), Err(StoreError::UnknownTopic(_))));
    assert!(matches!(read(&store, "t", 1, 0, 100), Err(StoreError::UnknownPartition { .. })));
    store.close().await;
}

#[tokio::test]
async fn retention_deletes_whole_old_batches_by_time_and_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(config(dir.path())).unwrap();
    let mut by_time = topic("time", 1);
    by_time.retention_ms = Some(1_000);
    store.create_topic(by_time).await.unwrap();
    append(&store, "time", 0, batch(&["old1", "old2"], 1_000)).await;
    append(&store, "time", 0, batch(&["new"], 10_000)).await;
    let b = batch(&["x"], 1);
    let mut by_bytes = topic("bytes", 1);
    by_bytes.retention_bytes = Some(2 * b.len() as u64);
    store.create_topic(by_bytes).await.unwrap();
    for _ in 0..5 {
        append(&store, "bytes", 0, b.clone()).await;
    }
    assert_eq!(store.enforce_retention(10_500).await.unwrap(), 1 + 3);
    let (_, p) = store.partition("time", 0).unwrap();
    assert_eq!(p.offsets().log_start, 2);
    assert!(matches!(read(&store, "time", 0, 0, 100), Err(StoreError::OffsetOutOfRange { log_start: 2, .. })));
    assert_eq!(values(&read(&store, "time", 0, 2, 100).unwrap(), 2), ["new"]);
    let (_, p) = store.partition("bytes", 0).unwrap();
    assert_eq!(p.offsets().log_start, 3);
    assert_eq!(p.offsets().size_bytes, 2 * b.len() as u64);
    store.close().await;
}

#[tokio::test]
async fn admin_changes_are_validated_and_durable() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = Store::open(config(dir.path())).unwrap();
        store.create_topic(topic("t", 1)).await.unwrap();
        assert!(matches!(store.create_topic(topic("t", 1)).await, Err(StoreError::TopicExists(_))));
        append(&store, "t", 0, batch(&["gone"], 1)).await;
        assert!(matches!(store.add_partitions("t", 1).await, Err(StoreError::InvalidPartitions(_))));
        assert_eq!(store.add_partitions("t", 3).await.unwrap().partitions, 3);
        store.delete_topic("t").await.unwrap();
        assert!(matches!(store.delete_topic("t").await, Err(StoreError::UnknownTopic(_))));
        store.create_topic(topic("t", 2)).await.unwrap();
        store.close().await;
    }
    let store = Store::open(config(dir.path())).unwrap();
    let t = store.topic("t").unwrap();
    assert_eq!(t.config.partitions, 2);
    // The recreated topic does not see the deleted one's data.
    assert!(read(&store, "t", 0, 0, 100).unwrap().records.is_empty());
    store.close().await;
}

#[tokio::test]
async fn many_concurrent_appends_share_commits_and_keep_per_caller_order() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(Store::open(config(dir.path())).unwrap());
    store.create_topic(topic("t", 4)).await.unwrap();
    let mut tasks = Vec::new();
    for p in 0..4u32 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let mut futs = Vec::new();
            for i in 0..200 {
                futs.push(store.append("t", p, batch(&[&format!("{p}-{i}")], 1), 0).await.unwrap());
            }
            let mut offsets = Vec::new();
            for f in futs {
                offsets.push(f.await.unwrap().base_offset);
            }
            offsets
        }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap(), (0..200).collect::<Vec<u64>>());
    }
    let read = read(&store, "t", 3, 0, 1 << 20).unwrap();
    let expected: Vec<String> = (0..200).map(|i| format!("3-{i}")).collect();
    assert_eq!(values(&read, 0), expected);
    store.close().await;
}

#[tokio::test]
async fn committed_offsets_are_validated_durable_and_go_with_their_topic() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = Store::open(config(dir.path())).unwrap();
        store.create_topic(topic("t", 2)).await.unwrap();
        store.create_topic(topic("u", 1)).await.unwrap();
        store
            .commit_offsets("g", vec![("t".into(), 0, 5, "m".into()), ("u".into(), 0, 7, String::new())])
            .await
            .unwrap();
        let bad =
            store.commit_offsets("g", vec![("t".into(), 1, 9, String::new()), ("t".into(), 2, 1, String::new())]).await;
        assert!(matches!(bad, Err(StoreError::UnknownPartition { partition: 2, .. })));
        assert!(!store.committed_offsets("g").contains_key(&("t".to_string(), 1)), "all or nothing");
        assert!(matches!(
            store.commit_offsets("g", vec![("x".into(), 0, 1, String::new())]).await,
            Err(StoreError::UnknownTopic(_))
        ));
        store.close().await;
    }
    let store = Store::open(config(dir.path())).unwrap();
    let g = store.committed_offsets("g");
    assert_eq!(g[&("t".to_string(), 0)], (5, "m".to_string()));
    assert_eq!(g[&("u".to_string(), 0)].0, 7);
    assert_eq!(store.groups_with_offsets(), ["g"]);
    store.delete_topic("u").await.unwrap();
    assert!(!store.committed_offsets("g").contains_key(&("u".to_string(), 0)));
    store.close().await;
    drop(store);
    let store = Store::open(config(dir.path())).unwrap();
    assert_eq!(store.committed_offsets("g").len(), 1);
    store.close().await;
}

/// Model-based test (in the manner of redb's fuzz_redb): random appends,
/// retention passes, truncations, topic deletions and re-creations and
/// reopenings applied
/// both to the store and to an in-memory model of what was acknowledged;
/// after every step every partition reads back exactly as the model says.
#[tokio::test]
async fn random_operations_match_a_model_across_reopens() {
    #[derive(Clone, Default)]
    struct ModelPartition {
        log_start: u64,
        /// (base offset, values, max timestamp, bytes)
        batches: Vec<(u64, Vec<String>, i64, u64)>,
    }
    impl ModelPartition {
        fn log_end(&self) -> u64 {
            self.batches.last().map_or(self.log_start, |(b, v, _, _)| b + v.len() as u64)
        }
        fn size(&self) -> u64 {
            self.batches.iter().map(|b| b.3).sum()
        }
    }
    // A small deterministic generator: the test is reproducible without a seed file.
    let mut rng = 0x2545_f491_4f6c_dd1du64;
    let mut next = move |n: u64| {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng % n
    };
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open(config(dir.path())).unwrap();
    let mut model: BTreeMap<String, Vec<ModelPartition>> = BTreeMap::new();
    let names = ["a", "b", "c"];
    for step in 0..400u32 {
        match next(100) {
            0..=59 => {
                let name = names[next(3) as usize];
                if !model.contains_key(name) {
                    let mut t = topic(name, 1 + next(3) as u32);
                    t.retention_bytes = (next(2) == 0).then_some(600);
                    t.retention_ms = (next(3) == 0).then_some(1_000);
                    store.create_topic(t.clone()).await.unwrap();
                    model.insert(name.into(), vec![ModelPartition::default(); t.partitions as usize]);
                }
                let parts = model.get_mut(name).unwrap();
                let p = next(parts.len() as u64) as u32;
                let values: Vec<String> = (0..1 + next(4)).map(|i| format!("{step}-{i}")).collect();
                let ts = next(20_000) as i64;
                let refs: Vec<&str> = values.iter().map(String::as_str).collect();
                let b = batch(&refs, ts);
                let len = b.len() as u64;
                let base = append(&store, name, p, b).await;
                let mp = &mut parts[p as usize];
                assert_eq!(base, mp.log_end(), "step {step}: dense offsets");
                mp.batches.push((base, values, ts, len));
            }
            60..=69 => {
                let now = 10_000 + next(15_000) as i64;
                store.enforce_retention(now).await.unwrap();
                for (name, parts) in model.iter_mut() {
                    let cfg = store.topic(name).unwrap().config.clone();
                    for mp in parts.iter_mut() {
                        while let Some(first) = mp.batches.first() {
                            let expired = cfg.retention_ms.is_some_and(|ms| first.2 < now - ms as i64);
                            let oversized = cfg.retention_bytes.is_some_and(|max| mp.size() > max);
                            if !(expired || oversized) {
                                break;
                            }
                            mp.log_start = first.0 + first.1.len() as u64;
                            mp.batches.remove(0);
                        }
                    }
                }
            }
            70..=74 => {
                let name = names[next(3) as usize];
                if model.remove(name).is_some() {
                    store.delete_topic(name).await.unwrap();
                }
            }
            75..=79 => {
                if let Some(name) = model.keys().next().cloned() {
                    let grow = model[&name].len() as u32 + 1;
                    store.add_partitions(&name, grow).await.unwrap();
                    model.get_mut(&name).unwrap().push(ModelPartition::default());
                }
            }
            80..=86 => {
                // Truncation to a random offset (whole batches from the end).
                let name = names[next(3) as usize];
                if let Some(parts) = model.get_mut(name) {
                    let p = next(parts.len() as u64) as u32;
                    let mp = &mut parts[p as usize];
                    let offset = mp.log_start.saturating_sub(1) + next(mp.log_end() - mp.log_start + 3);
                    mp.batches.retain(|(b, v, _, _)| b + v.len() as u64 <= offset);
                    let end = store.truncate(name, p, offset).await.unwrap();
                    assert_eq!(end, mp.log_end(), "step {step}: truncation of {name}/{p} to {offset}");
                }
            }
            _ => {
                store.close().await;
                drop(store);
                store = Store::open(config(dir.path())).unwrap();
            }
        }
        // Everything acknowledged and not retained away reads back exactly.
        assert_eq!(store.catalog().keys().cloned().collect::<Vec<_>>(), model.keys().cloned().collect::<Vec<_>>());
        for (name, parts) in &model {
            for (p, mp) in parts.iter().enumerate() {
                let (_, shared) = store.partition(name, p as u32).unwrap();
                let o = shared.offsets();
                assert_eq!(
                    (o.log_start, o.log_end, o.size_bytes),
                    (mp.log_start, mp.log_end(), mp.size()),
                    "step {step} {name}/{p}"
                );
                let read = read(&store, name, p as u32, mp.log_start, 1 << 20).unwrap();
                let expected: Vec<String> = mp.batches.iter().flat_map(|b| b.1.clone()).collect();
                assert_eq!(values(&read, mp.log_start), expected, "step {step} {name}/{p}");
            }
        }
    }
    store.close().await;
}

/// A redb backend over a real file whose writes (and syncs) fail while `fail` is set.
#[derive(Debug)]
struct FailingBackend {
    inner: redb::backends::FileBackend,
    fail: Arc<std::sync::atomic::AtomicBool>,
}

impl redb::StorageBackend for FailingBackend {
    fn len(&self) -> Result<u64, std::io::Error> {
        self.inner.len()
    }
    fn read(&self, offset: u64, out: &mut [u8]) -> Result<(), std::io::Error> {
        self.inner.read(offset, out)
    }
    fn set_len(&self, len: u64) -> Result<(), std::io::Error> {
        self.inner.set_len(len)
    }
    fn sync_data(&self) -> Result<(), std::io::Error> {
        if self.fail.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(std::io::Error::other("injected fsync failure"));
        }
        self.inner.sync_data()
    }
    fn write(&self, offset: u64, data: &[u8]) -> Result<(), std::io::Error> {
        if self.fail.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(std::io::Error::other("injected write failure"));
        }
        self.inner.write(offset, data)
    }
    fn close(&self) -> Result<(), std::io::Error> {
        self.inner.close()
    }
}

/// A failing disk: the batch whose commit failed is answered with a storage
/// error and never becomes visible; nothing acknowledged is lost; after a
/// restart the log continues densely.
#[tokio::test]
async fn injected_write_failures_lose_nothing_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let path = store_path(dir.path());
    let fail = Arc::new(std::sync::atomic::AtomicBool::new(false));
    {
        let file = std::fs::OpenOptions::new().read(true).write(true).create(true).truncate(false).open(&path).unwrap();
        let backend = FailingBackend { inner: redb::backends::FileBackend::new(file).unwrap(), fail: fail.clone() };
        let db = redb::Database::builder().create_with_backend(backend).unwrap();
        let store = Store::from_database(db, DurabilityPolicy::EveryCommit, 1).unwrap();
        store.create_topic(topic("t", 1)).await.unwrap();
        assert_eq!(append(&store, "t", 0, batch(&["a1", "a2"], 1)).await, 0);
        fail.store(true, std::sync::atomic::Ordering::SeqCst);
        let failed = store.append("t", 0, batch(&["lost"], 1), 0).await.unwrap().await;
        assert!(matches!(failed, Err(StoreError::Storage(_))), "{failed:?}");
        // The failed batch is not visible and the log end did not move.
        let (_, p) = store.partition("t", 0).unwrap();
        assert_eq!(p.offsets().log_end, 2);
        assert_eq!(values(&read(&store, "t", 0, 0, 1 << 20).unwrap(), 0), ["a1", "a2"]);
        fail.store(false, std::sync::atomic::Ordering::SeqCst);
        // After the disk recovers, writes either succeed densely or keep failing
        // with a storage error (redb may refuse until reopened); never silently.
        match store.append("t", 0, batch(&["after"], 1), 0).await.unwrap().await {
            Ok(a) => assert_eq!(a.base_offset, 2),
            Err(e) => assert!(matches!(e, StoreError::Storage(_)), "{e:?}"),
        }
        store.close().await;
    }
    let store = Store::open(config(dir.path())).unwrap();
    let (_, p) = store.partition("t", 0).unwrap();
    let end = p.offsets().log_end;
    let read = values(&read(&store, "t", 0, 0, 1 << 20).unwrap(), 0);
    assert_eq!(&read[..2], ["a1", "a2"], "acknowledged records survive");
    assert!(!read.contains(&"lost".to_string()), "the failed batch never appears");
    assert_eq!(append(&store, "t", 0, batch(&["next"], 1)).await, end, "offsets stay dense");
    store.close().await;
}
