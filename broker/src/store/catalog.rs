//! The in-memory view of what is committed: topics, their configuration and
//! partition assignments, and each partition's log start, log end, size, high
//! watermark and leader-epoch cache.
//!
//! Only the store's writer thread changes the log offsets and epochs, and only
//! after the redb transaction that made a change durable has committed, so
//! readers never see an offset that a crash could take back. The high
//! watermark is also moved by the replication layer
//! ([`PartitionState::set_remote_min`], [`PartitionState::set_high_watermark`]).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use super::epochs::EpochCache;

/// Where the copies of one partition live and who leads it. Part of the
/// replicated cluster metadata (stored in the topic's config).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionAssignment {
    /// Broker ids holding a copy, preferred leader first.
    pub replicas: Vec<u32>,
    /// The current leader; 0 = no leader now.
    pub leader: u32,
    /// Bumped on every leader change.
    pub leader_epoch: u32,
    /// In-sync replicas (a subset of `replicas`).
    pub isr: Vec<u32>,
    /// Bumped on every change of this assignment (leader or ISR).
    pub version: u32,
}

impl PartitionAssignment {
    /// A partition held by `broker_id` alone, led by it at epoch 0: what
    /// topics stored before assignments existed get at load, and what a
    /// single-node [`Store::create_topic`](super::Store::create_topic) uses.
    pub fn single(broker_id: u32) -> Self {
        Self { replicas: vec![broker_id], leader: broker_id, leader_epoch: 0, isr: vec![broker_id], version: 0 }
    }

    /// Checks the shape: at least one replica, no id 0 and no duplicate among
    /// the replicas, the leader 0 or a replica, the ISR a duplicate-free
    /// subset of the replicas. The message says what is wrong.
    pub fn validate(&self) -> Result<(), String> {
        if self.replicas.is_empty() {
            return Err("an assignment needs at least one replica".into());
        }
        let mut seen = std::collections::BTreeSet::new();
        for &r in &self.replicas {
            if r == 0 {
                return Err("broker id 0 cannot hold a replica".into());
            }
            if !seen.insert(r) {
                return Err(format!("broker {r} is listed twice among the replicas"));
            }
        }
        if self.leader != 0 && !seen.contains(&self.leader) {
            return Err(format!("leader {} is not a replica {:?}", self.leader, self.replicas));
        }
        let mut in_sync = std::collections::BTreeSet::new();
        for &r in &self.isr {
            if !seen.contains(&r) || !in_sync.insert(r) {
                return Err(format!("ISR {:?} is not a subset of the replicas {:?}", self.isr, self.replicas));
            }
        }
        Ok(())
    }
}

fn default_min_insync_replicas() -> u16 {
    1
}

/// A topic's configuration as stored in the `topics` table (JSON).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicConfig {
    /// The topic's name.
    pub name: String,
    /// Internal id; names of log tables use it so that a deleted and recreated
    /// topic never sees old data.
    pub id: u64,
    /// Number of partitions.
    pub partitions: u32,
    /// Replication factor.
    pub replication_factor: u16,
    /// Time retention in ms; none keeps records forever.
    pub retention_ms: Option<u64>,
    /// Size retention per partition in bytes; none means unbounded.
    pub retention_bytes: Option<u64>,
    /// Fewest in-sync replicas an acks=all produce needs (default 1).
    #[serde(default = "default_min_insync_replicas")]
    pub min_insync_replicas: u16,
    /// One assignment per partition, indexed by partition number. Configs
    /// stored before assignments existed have none on disk; the store fills
    /// them in at load ([`PartitionAssignment::single`] of its broker id), so
    /// every config the store hands out has exactly `partitions` of them.
    #[serde(default)]
    pub assignments: Vec<PartitionAssignment>,
}

impl TopicConfig {
    /// Gives partitions without an assignment the single-broker one of
    /// `broker_id` (configs written by older versions). Deterministic given
    /// the config and `broker_id`.
    pub(crate) fn fill_assignments(&mut self, broker_id: u32) {
        let missing = (self.partitions as usize).saturating_sub(self.assignments.len());
        self.assignments.extend(std::iter::repeat_n(PartitionAssignment::single(broker_id), missing));
    }
}

/// Committed state of one partition, shared with readers.
///
/// Invariants: `log_start <= high_watermark <= log_end` whenever no update is
/// in flight (every change of the log end or the high watermark happens under
/// the high watermark channel's lock, so updates never interleave).
#[derive(Debug)]
pub struct PartitionState {
    log_start: AtomicU64,
    log_end: AtomicU64,
    size_bytes: AtomicU64,
    high_watermark: AtomicU64,
    remote_min: AtomicU64,
    end_tx: watch::Sender<u64>,
    /// Its lock serializes every change of `log_end` and `high_watermark`.
    hw_tx: watch::Sender<u64>,
    epochs: RwLock<EpochCache>,
}

/// A point-in-time copy of a partition's offsets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartitionOffsets {
    /// First offset still stored.
    pub log_start: u64,
    /// Offset the next record will get (everything below is committed locally).
    pub log_end: u64,
    /// Bytes of stored batches.
    pub size_bytes: u64,
    /// Offsets below it are visible to consumers (replicated to the ISR).
    pub high_watermark: u64,
}

/// What the writer publishes for a partition after a commit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct LogOffsets {
    pub(crate) log_start: u64,
    pub(crate) log_end: u64,
    pub(crate) size_bytes: u64,
}

impl PartitionState {
    /// A partition as loaded or created: high watermark at the log start,
    /// remote minimum 0 (nothing is visible to consumers until the
    /// replication layer raises one of them).
    pub(crate) fn new(offsets: LogOffsets, epochs: EpochCache) -> Self {
        let (end_tx, _) = watch::channel(offsets.log_end);
        let (hw_tx, _) = watch::channel(offsets.log_start);
        Self {
            log_start: AtomicU64::new(offsets.log_start),
            log_end: AtomicU64::new(offsets.log_end),
            size_bytes: AtomicU64::new(offsets.size_bytes),
            high_watermark: AtomicU64::new(offsets.log_start),
            remote_min: AtomicU64::new(0),
            end_tx,
            hw_tx,
            epochs: RwLock::new(epochs),
        }
    }

    /// The committed offsets now.
    pub fn offsets(&self) -> PartitionOffsets {
        PartitionOffsets {
            log_start: self.log_start.load(Ordering::Acquire),
            log_end: self.log_end.load(Ordering::Acquire),
            size_bytes: self.size_bytes.load(Ordering::Acquire),
            high_watermark: self.high_watermark.load(Ordering::Acquire),
        }
    }

    /// A receiver that changes whenever the log end moves, up (appends) or
    /// down (truncation). Its sender goes away when the topic is deleted.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.end_tx.subscribe()
    }

    /// The high watermark now: consumers see offsets below it.
    pub fn high_watermark(&self) -> u64 {
        self.high_watermark.load(Ordering::Acquire)
    }

    /// A receiver that changes whenever the high watermark changes. Its
    /// sender goes away when the topic is deleted.
    pub fn subscribe_hw(&self) -> watch::Receiver<u64> {
        self.hw_tx.subscribe()
    }

    /// Leader side: the lowest log end among the other in-sync replicas
    /// (`u64::MAX` when the ISR is this broker alone). Raises the high
    /// watermark to `min(log_end, remote_min)` if that is higher; never
    /// lowers it.
    pub fn set_remote_min(&self, remote_min: u64) {
        self.remote_min.store(remote_min, Ordering::Release);
        self.update_hw(|hw, end, start| hw.max(end.min(remote_min)).max(start));
    }

    /// Follower side: sets the high watermark learned from the leader,
    /// capped at the local log end (it may go down, as the leader's may
    /// after a leader change).
    pub fn set_high_watermark(&self, high_watermark: u64) {
        self.update_hw(|_, end, start| high_watermark.min(end).max(start));
    }

    /// The epoch of the last batch in the log (0 if it has none).
    pub fn last_epoch(&self) -> u32 {
        self.epochs.read().expect("epochs lock poisoned").last_epoch().unwrap_or(0)
    }

    /// Kafka's OffsetsForLeaderEpoch: the largest cached epoch `e <= epoch`
    /// and the offset where it ends (the start of the next cached epoch, or
    /// the log end if `e` is the last); `(epoch, log_start)` if no cached
    /// epoch is `<= epoch`.
    pub fn epoch_end_offset(&self, epoch: u32) -> (u32, u64) {
        let cache = self.epochs.read().expect("epochs lock poisoned");
        let o = self.offsets();
        cache.end_offset(epoch, o.log_start, o.log_end)
    }

    /// Runs `f(hw, log_end, log_start)` under the channel lock and stores
    /// its result as the high watermark; notifies subscribers if it changed.
    fn update_hw(&self, f: impl FnOnce(u64, u64, u64) -> u64) {
        self.hw_tx.send_if_modified(|hw| {
            let end = self.log_end.load(Ordering::Acquire);
            let start = self.log_start.load(Ordering::Acquire);
            let new = f(*hw, end, start).min(end);
            debug_assert!(new >= start.min(end));
            self.high_watermark.store(new, Ordering::Release);
            let changed = new != *hw;
            *hw = new;
            changed
        });
    }

    /// Publishes offsets and epochs made durable by a committed transaction.
    /// A lower log end (truncation) clamps the high watermark to it; a higher
    /// one raises it to `min(log_end, remote_min)` if that is higher.
    pub(crate) fn publish(&self, offsets: LogOffsets, epochs: &EpochCache) {
        debug_assert!(offsets.log_start <= offsets.log_end);
        {
            let mut cache = self.epochs.write().expect("epochs lock poisoned");
            if *cache != *epochs {
                cache.clone_from(epochs);
            }
        }
        self.size_bytes.store(offsets.size_bytes, Ordering::Release);
        let mut old_end = 0;
        self.hw_tx.send_if_modified(|hw| {
            self.log_start.store(offsets.log_start, Ordering::Release);
            old_end = self.log_end.swap(offsets.log_end, Ordering::AcqRel);
            let remote_min = self.remote_min.load(Ordering::Acquire);
            let new = if offsets.log_end < old_end {
                (*hw).min(offsets.log_end)
            } else {
                (*hw).max(offsets.log_end.min(remote_min))
            }
            .max(offsets.log_start)
            .min(offsets.log_end);
            self.high_watermark.store(new, Ordering::Release);
            let changed = new != *hw;
            *hw = new;
            changed
        });
        if offsets.log_end != old_end {
            self.end_tx.send_replace(offsets.log_end);
        }
    }
}

/// A topic and its partitions' shared state.
#[derive(Debug)]
pub struct TopicState {
    /// Configuration, with one assignment per partition.
    pub config: TopicConfig,
    /// One entry per partition, indexed by partition number.
    pub partitions: Vec<Arc<PartitionState>>,
}

/// All topics, by name. Replaced wholesale (copy on write) on admin changes.
pub type Catalog = BTreeMap<String, Arc<TopicState>>;
