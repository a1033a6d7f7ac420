//! The in-memory view of what is committed: topics, their configuration, and
//! each partition's log start, log end and size.
//!
//! Only the store's writer thread changes it, and only after the redb
//! transaction that made a change durable has committed, so readers never see
//! an offset that a crash could take back.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tokio::sync::watch;

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
}

/// Committed state of one partition, shared with readers.
#[derive(Debug)]
pub struct PartitionState {
    log_start: AtomicU64,
    log_end: AtomicU64,
    size_bytes: AtomicU64,
    end_tx: watch::Sender<u64>,
}

/// A point-in-time copy of a partition's offsets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartitionOffsets {
    /// First offset still stored.
    pub log_start: u64,
    /// Offset the next record will get (everything below is committed).
    pub log_end: u64,
    /// Bytes of stored batches.
    pub size_bytes: u64,
}

impl PartitionState {
    pub(crate) fn new(offsets: PartitionOffsets) -> Self {
        let (end_tx, _) = watch::channel(offsets.log_end);
        Self {
            log_start: AtomicU64::new(offsets.log_start),
            log_end: AtomicU64::new(offsets.log_end),
            size_bytes: AtomicU64::new(offsets.size_bytes),
            end_tx,
        }
    }

    /// The committed offsets now.
    pub fn offsets(&self) -> PartitionOffsets {
        PartitionOffsets {
            log_start: self.log_start.load(Ordering::Acquire),
            log_end: self.log_end.load(Ordering::Acquire),
            size_bytes: self.size_bytes.load(Ordering::Acquire),
        }
    }

    /// A receiver that changes whenever the log end moves (for long polls).
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.end_tx.subscribe()
    }

    /// Publishes offsets made durable by a committed transaction.
    pub(crate) fn publish(&self, offsets: PartitionOffsets) {
        self.log_start.store(offsets.log_start, Ordering::Release);
        self.size_bytes.store(offsets.size_bytes, Ordering::Release);
        let old_end = self.log_end.swap(offsets.log_end, Ordering::AcqRel);
        debug_assert!(offsets.log_end >= old_end, "log end moved backwards");
        if offsets.log_end != old_end {
            self.end_tx.send_replace(offsets.log_end);
        }
    }
}

/// A topic and its partitions' shared state.
#[derive(Debug)]
pub struct TopicState {
    /// Configuration.
    pub config: TopicConfig,
    /// One entry per partition, indexed by partition number.
    pub partitions: Vec<Arc<PartitionState>>,
}

/// All topics, by name. Replaced wholesale (copy on write) on admin changes.
pub type Catalog = BTreeMap<String, Arc<TopicState>>;
