//! Store tests of processor deployments, batch commits and state, against real
//! redb files.

use bytes::Bytes;
use eddy_protocol::processors::{
    ErrorPolicy, PartitionStateWrites, ProcessorDescription, ProcessorStats, StateEntry, STATUS_RUNNING, STATUS_STOPPED,
};
use redb::{ReadableDatabase, ReadableTableMetadata};

use super::processors::{MODULE_CHUNK_BYTES, PROCESSORS, PROCESSOR_MODULES, PROCESSOR_STATE, PROCESSOR_STATS};
use super::tests::{config, topic};
use super::*;

pub(crate) fn description(name: &str) -> ProcessorDescription {
    ProcessorDescription {
        name: name.into(),
        version: 0,
        inputs: vec!["in".into()],
        output: "out".into(),
        parallelism: 2,
        on_error: ErrorPolicy::Skip,
        params: Vec::new(),
        timeout_ms: 0,
        memory_bytes: 0,
        module_id: "id".into(),
        module_bytes: 0,
        deployed_at_ms: 1,
        status: String::new(),
        status_reason: String::new(),
        stats: ProcessorStats::default(),
        deployed_by: String::new(),
    }
}

/// A module of `len` bytes that differs from any other seed.
pub(crate) fn wasm(len: usize, seed: u8) -> Bytes {
    (0..len).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed)).collect::<Vec<u8>>().into()
}

pub(crate) fn deployment(name: &str, wasm: Bytes, initial: &[(u32, u64)]) -> ProcessorDeployment {
    ProcessorDeployment {
        description: description(name),
        wasm,
        initial_offsets: initial.iter().map(|(p, o)| ("in".to_string(), *p, *o, String::new())).collect(),
    }
}

pub(crate) fn put(key: &str, value: &str) -> StateEntry {
    StateEntry { key: Bytes::copy_from_slice(key.as_bytes()), value: Some(Bytes::copy_from_slice(value.as_bytes())) }
}

fn del(key: &str) -> StateEntry {
    StateEntry { key: Bytes::copy_from_slice(key.as_bytes()), value: None }
}

pub(crate) fn writes(partition: u32, entries: Vec<StateEntry>) -> PartitionStateWrites {
    PartitionStateWrites { partition, writes: entries }
}

pub(crate) fn stats(records_in: u64, batches: u64) -> ProcessorStats {
    ProcessorStats { records_in, batches, ..ProcessorStats::default() }
}

pub(crate) fn commit(
    name: &str,
    offsets: &[(u32, u64)],
    state: Vec<PartitionStateWrites>,
    s: ProcessorStats,
) -> ProcessorCommit {
    ProcessorCommit {
        name: name.into(),
        offsets: offsets.iter().map(|(p, o)| ("in".to_string(), *p, *o, String::new())).collect(),
        state,
        stats: s,
    }
}

fn state_of(store: &Store, name: &str, partition: u32) -> Vec<(String, String)> {
    let (entries, more) = store.state_scan(name, partition, None, usize::MAX).unwrap();
    assert!(!more);
    entries
        .into_iter()
        .map(|(k, v)| (String::from_utf8(k.to_vec()).unwrap(), String::from_utf8(v.to_vec()).unwrap()))
        .collect()
}

fn offsets_of(store: &Store, name: &str) -> Vec<(u32, u64)> {
    store.committed_offsets(&format!("processor.{name}")).into_iter().map(|((_, p), (o, _))| (p, o)).collect()
}

/// Rows of every processor table, to check that a deletion leaves nothing behind.
fn row_counts(store: &Store) -> [u64; 4] {
    let txn = store.db.begin_read().unwrap();
    [
        txn.open_table(PROCESSORS).unwrap().len().unwrap(),
        txn.open_table(PROCESSOR_STATS).unwrap().len().unwrap(),
        txn.open_table(PROCESSOR_MODULES).unwrap().len().unwrap(),
        txn.open_table(PROCESSOR_STATE).unwrap().len().unwrap(),
    ]
}

async fn setup(store: &Store) {
    store.create_topic(topic("in", 2)).await.unwrap();
    store.create_topic(topic("out", 1)).await.unwrap();
}

#[tokio::test]
async fn deploy_chunks_the_module_and_redeploy_bumps_the_version() {
    let dir = tempfile::tempdir().unwrap();
    let v1 = wasm(200 * 1024, 1);
    let v2 = wasm(70 * 1024, 2);
    {
        let store = Store::open(config(dir.path())).unwrap();
        setup(&store).await;
        let d = store.deploy_processor(deployment("p", v1.clone(), &[(0, 3), (1, 0)])).await.unwrap();
        assert_eq!((d.version, d.module_bytes, d.status.as_str()), (1, v1.len() as u64, STATUS_RUNNING));
        assert_eq!(store.processor("p").unwrap(), d);
        assert_eq!(offsets_of(&store, "p"), [(0, 3), (1, 0)]);
        assert_eq!(store.processor_module("p", 1).unwrap(), v1);
        assert_eq!(row_counts(&store)[2], v1.len().div_ceil(MODULE_CHUNK_BYTES) as u64);
        assert_eq!(row_counts(&store)[2], 4, "200 KiB in chunks under 60 KiB");

        // Counters and a stop; a redeploy keeps the counters, runs again, and
        // leaves the committed offsets alone (its initial offsets are ignored).
        store.commit_processor_batch(commit("p", &[(0, 10)], Vec::new(), stats(7, 1))).await.unwrap();
        assert!(store.set_processor_status("p", 1, STATUS_STOPPED, "record 9 failed").await.unwrap());
        assert_eq!(store.processor("p").unwrap().status_reason, "record 9 failed");
        let d2 = store.deploy_processor(deployment("p", v2.clone(), &[(0, 0), (1, 0)])).await.unwrap();
        assert_eq!((d2.version, d2.module_bytes), (2, v2.len() as u64));
        assert_eq!((d2.status.as_str(), d2.status_reason.as_str()), (STATUS_RUNNING, ""));
        assert_eq!(d2.stats, stats(7, 1));
        assert_eq!(offsets_of(&store, "p"), [(0, 10), (1, 0)]);
        assert_eq!(store.processor_module("p", 2).unwrap(), v2);
        assert!(matches!(
            store.processor_module("p", 1),
            Err(StoreError::ProcessorVersion { current: 2, version: 1, .. })
        ));
        assert_eq!(row_counts(&store)[2], 2, "the old version's chunks are gone");
        store.close().await;
    }
    let store = Store::open(config(dir.path())).unwrap();
    let d = store.processor("p").unwrap();
    assert_eq!((d.version, d.stats.clone()), (2, stats(7, 1)));
    assert_eq!(store.processors(), [d]);
    assert_eq!(store.processor_module("p", 2).unwrap(), v2);
    let d3 = store.deploy_processor(deployment("p", v1.clone(), &[])).await.unwrap();
    assert_eq!(d3.version, 3);
    assert!(matches!(store.processor_module("nope", 1), Err(StoreError::UnknownProcessor(_))));
    store.close().await;
}

#[tokio::test]
async fn first_deploy_refuses_offsets_of_missing_partitions_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(config(dir.path())).unwrap();
    setup(&store).await;
    let r = store.deploy_processor(deployment("p", wasm(10, 0), &[(0, 0), (5, 0)])).await;
    assert!(matches!(r, Err(StoreError::UnknownPartition { partition: 5, .. })), "{r:?}");
    assert!(store.processors().is_empty());
    assert_eq!(row_counts(&store), [0, 0, 0, 0]);
    assert!(offsets_of(&store, "p").is_empty());
    store.close().await;
}

#[tokio::test]
async fn delete_removes_everything_of_that_processor_only() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = Store::open(config(dir.path())).unwrap();
        setup(&store).await;
        // Names that share a prefix with "p" must survive its deletion.
        for name in ["p", "p2", "p.x", "o"] {
            store.deploy_processor(deployment(name, wasm(150 * 1024, 3), &[(0, 1), (1, 1)])).await.unwrap();
            let state = vec![writes(0, vec![put("k1", name), put("k2", name)]), writes(1, vec![put("k", name)])];
            store.commit_processor_batch(commit(name, &[(0, 2)], state, stats(1, 1))).await.unwrap();
        }
        store.commit_offsets("processor.p", vec![("out".into(), 0, 9, String::new())]).await.unwrap();
        let before = row_counts(&store);
        store.delete_processor("p").await.unwrap();
        assert!(matches!(store.delete_processor("p").await, Err(StoreError::UnknownProcessor(_))));
        assert!(matches!(store.processor("p"), Err(StoreError::UnknownProcessor(_))));
        assert!(matches!(store.processor_module("p", 1), Err(StoreError::UnknownProcessor(_))));
        assert!(matches!(store.state_scan("p", 0, None, 100), Err(StoreError::UnknownProcessor(_))));
        assert!(store.committed_offsets("processor.p").is_empty());
        assert!(!store.groups_with_offsets().contains(&"processor.p".to_string()));
        let after = row_counts(&store);
        assert_eq!(after, [before[0] - 1, before[1] - 1, before[2] - 3, before[3] - 3]);
        for name in ["p2", "p.x", "o"] {
            assert_eq!(state_of(&store, name, 0), [("k1".into(), name.into()), ("k2".into(), name.into())]);
            assert_eq!(offsets_of(&store, name), [(0, 2), (1, 1)]);
        }
        store.close().await;
    }
    let store = Store::open(config(dir.path())).unwrap();
    assert_eq!(store.processors().iter().map(|d| d.name.as_str()).collect::<Vec<_>>(), ["o", "p.x", "p2"]);
    assert!(store.committed_offsets("processor.p").is_empty());
    // A new deployment of the name starts over: version 1, no state, no counters.
    let d = store.deploy_processor(deployment("p", wasm(10, 4), &[(0, 0), (1, 0)])).await.unwrap();
    assert_eq!((d.version, d.stats), (1, ProcessorStats::default()));
    assert!(state_of(&store, "p", 0).is_empty());
    store.close().await;
}

#[tokio::test]
async fn batch_commits_apply_offsets_state_and_counters_together_and_survive_reopen() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = Store::open(config(dir.path())).unwrap();
        setup(&store).await;
        store.deploy_processor(deployment("p", wasm(10, 0), &[(0, 0), (1, 0)])).await.unwrap();
        let state = vec![writes(0, vec![put("a", "1"), put("b", "2"), put("c", "3")]), writes(1, vec![put("a", "x")])];
        store.commit_processor_batch(commit("p", &[(0, 3), (1, 1)], state, stats(4, 1))).await.unwrap();
        let state = vec![writes(0, vec![del("b"), put("c", "33"), del("never-written")])];
        store.commit_processor_batch(commit("p", &[(0, 5)], state, stats(2, 1))).await.unwrap();
        // Counters only.
        store.commit_processor_batch(commit("p", &[], Vec::new(), stats(0, 1))).await.unwrap();
        assert_eq!(store.processor("p").unwrap().stats, stats(6, 3));

        // Failing commits write nothing at all.
        let failures = [
            commit("nope", &[(0, 99)], vec![writes(0, vec![put("z", "z")])], stats(1, 1)),
            commit("p", &[(0, 99)], vec![writes(7, vec![put("z", "z")])], stats(1, 1)),
            commit("p", &[(0, 99), (3, 1)], vec![writes(0, vec![put("z", "z")])], stats(1, 1)),
            ProcessorCommit {
                offsets: vec![("out".into(), 0, 1, String::new())],
                ..commit("p", &[(0, 99)], vec![writes(0, vec![put("z", "z")])], stats(1, 1))
            },
        ];
        let expected = ["UnknownProcessor", "UnknownPartition", "UnknownPartition", "InvalidRequest"];
        for (c, want) in failures.into_iter().zip(expected) {
            let err = store.commit_processor_batch(c).await.unwrap_err();
            assert!(format!("{err:?}").starts_with(want), "{err:?}");
        }
        assert_eq!(offsets_of(&store, "p"), [(0, 5), (1, 1)]);
        assert_eq!(state_of(&store, "p", 0), [("a".into(), "1".into()), ("c".into(), "33".into())]);
        assert_eq!(store.processor("p").unwrap().stats, stats(6, 3));
        assert!(store.committed_offsets("processor.nope").is_empty());
        store.close().await;
    }
    let store = Store::open(config(dir.path())).unwrap();
    assert_eq!(offsets_of(&store, "p"), [(0, 5), (1, 1)]);
    assert_eq!(state_of(&store, "p", 0), [("a".into(), "1".into()), ("c".into(), "33".into())]);
    assert_eq!(state_of(&store, "p", 1), [("a".into(), "x".into())]);
    assert_eq!(store.processor("p").unwrap().stats, stats(6, 3));
    store.close().await;
}

#[tokio::test]
async fn concurrent_commits_in_one_round_all_count_and_counters_saturate() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(Store::open(config(dir.path())).unwrap());
    setup(&store).await;
    store.deploy_processor(deployment("p", wasm(10, 0), &[])).await.unwrap();
    let tasks: Vec<_> = (0..64u64)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move {
                let state = vec![writes(0, vec![put(&format!("k{i:02}"), "v")])];
                store.commit_processor_batch(commit("p", &[(0, i)], state, stats(1, 1))).await
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    assert_eq!(store.processor("p").unwrap().stats, stats(64, 64));
    assert_eq!(state_of(&store, "p", 0).len(), 64);
    let huge = ProcessorStats { records_in: u64::MAX, wasm_nanos: u64::MAX, ..ProcessorStats::default() };
    store.commit_processor_batch(commit("p", &[], Vec::new(), huge.clone())).await.unwrap();
    store.commit_processor_batch(commit("p", &[], Vec::new(), huge)).await.unwrap();
    let s = store.processor("p").unwrap().stats;
    assert_eq!((s.records_in, s.wasm_nanos, s.batches), (u64::MAX, u64::MAX, 64));
    store.close().await;
}

#[tokio::test]
async fn state_scan_pages_in_key_order_within_one_partition() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(config(dir.path())).unwrap();
    setup(&store).await;
    store.deploy_processor(deployment("p", wasm(10, 0), &[])).await.unwrap();
    store.deploy_processor(deployment("q", wasm(10, 0), &[])).await.unwrap();
    let value = "v".repeat(94);
    let entries: Vec<StateEntry> = (0..100).map(|i| put(&format!("key{i:03}"), &value)).collect();
    let other = vec![writes(1, vec![put("key000", "other partition"), put("zzz", "other")])];
    store
        .commit_processor_batch(commit("p", &[], [vec![writes(0, entries)], other].concat(), stats(0, 1)))
        .await
        .unwrap();
    store.commit_processor_batch(commit("q", &[], vec![writes(0, vec![put("key", "q")])], stats(0, 1))).await.unwrap();

    // 100 bytes per entry (6 of key, 94 of value), 1,000 per page: ten pages of ten.
    let mut seen = Vec::new();
    let mut after: Option<Bytes> = None;
    let mut pages = 0;
    loop {
        let (page, more) = store.state_scan("p", 0, after.as_deref(), 1_000).unwrap();
        assert!(!page.is_empty());
        assert!(page.len() <= 10);
        pages += 1;
        after = page.last().map(|(k, _)| k.clone());
        seen.extend(page.into_iter().map(|(k, _)| String::from_utf8(k.to_vec()).unwrap()));
        if !more {
            break;
        }
    }
    assert_eq!(pages, 10);
    assert_eq!(seen, (0..100).map(|i| format!("key{i:03}")).collect::<Vec<_>>());
    // At least one entry even when it is over max_bytes.
    let (one, more) = store.state_scan("p", 0, None, 1).unwrap();
    assert_eq!((one.len(), more), (1, true));
    // Nothing after the last key; other partitions and processors stay apart.
    let (none, more) = store.state_scan("p", 0, Some(b"key099"), 1_000).unwrap();
    assert!(none.is_empty() && !more);
    assert_eq!(state_of(&store, "p", 1).len(), 2);
    assert!(state_of(&store, "p", 5).is_empty());
    assert_eq!(state_of(&store, "q", 0), [("key".into(), "q".into())]);
    store.close().await;
}

#[tokio::test]
async fn status_changes_apply_to_the_current_version_only() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = Store::open(config(dir.path())).unwrap();
        setup(&store).await;
        store.deploy_processor(deployment("p", wasm(10, 0), &[])).await.unwrap();
        store.deploy_processor(deployment("p", wasm(10, 1), &[])).await.unwrap();
        assert!(!store.set_processor_status("p", 1, STATUS_STOPPED, "stale").await.unwrap());
        assert_eq!(store.processor("p").unwrap().status, STATUS_RUNNING);
        assert!(store.set_processor_status("p", 2, STATUS_STOPPED, "bad record").await.unwrap());
        assert!(matches!(
            store.set_processor_status("nope", 1, STATUS_STOPPED, "").await,
            Err(StoreError::UnknownProcessor(_))
        ));
        store.close().await;
    }
    let store = Store::open(config(dir.path())).unwrap();
    let d = store.processor("p").unwrap();
    assert_eq!((d.status.as_str(), d.status_reason.as_str()), (STATUS_STOPPED, "bad record"));
    store.close().await;
}

#[tokio::test]
async fn inputs_share_the_state_of_a_partition_number() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(config(dir.path())).unwrap();
    setup(&store).await;
    store.create_topic(topic("in2", 1)).await.unwrap();
    let mut d = deployment("p", wasm(10, 0), &[]);
    d.description.inputs.push("in2".into());
    store.deploy_processor(d).await.unwrap();
    let mut c = commit("p", &[(0, 1)], vec![writes(0, vec![put("a", "1")])], stats(1, 1));
    c.offsets.push(("in2".into(), 0, 4, String::new()));
    store.commit_processor_batch(c).await.unwrap();
    store.commit_processor_batch(commit("p", &[], vec![writes(0, vec![put("b", "2")])], stats(0, 1))).await.unwrap();
    assert_eq!(state_of(&store, "p", 0), [("a".into(), "1".into()), ("b".into(), "2".into())]);
    // A partition number no input has is refused, and nothing is written.
    let bad = commit("p", &[], vec![writes(9, vec![put("c", "3")])], stats(0, 1));
    assert!(matches!(store.commit_processor_batch(bad).await, Err(StoreError::UnknownPartition { .. })));
    assert!(state_of(&store, "p", 9).is_empty());
    store.close().await;
}
