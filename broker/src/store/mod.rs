//! The broker's storage: one redb database holding topic metadata, per-partition
//! logs and per-partition offsets.
//!
//! Tables (see docs/design.md):
//! * `topics`: topic name -> JSON [`TopicConfig`].
//! * `partitions`: (topic id, partition) -> (log start, log end, size in bytes).
//! * `log.<topic id>.<partition>`: base offset -> the stored batch, byte for byte
//!   as the producer wrote it, with the base offset stamped in.
//! * `meta`: string -> u64 counters (`next_topic_id`).
//! * `group_offsets`: (group, topic, partition) -> (offset, metadata).
//! * `processors`, `processor_stats`, `processor_modules`, `processor_state`:
//!   deployed processors, their counters, modules and state ([`processors`]).
//!
//! Writes of every kind go through one writer thread (`writer.rs`) that drains
//! every job queued meanwhile into one write transaction: one commit, one fsync,
//! for any number of batches across all partitions (group commit). Nothing is
//! acknowledged or made visible to readers before its transaction committed.
//! Reads run on the caller's thread in their own read transactions.

mod catalog;
pub mod processors;
mod writer;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use redb::{Database, ReadableDatabase, ReadableTableMetadata, TableDefinition};
use tokio::sync::{mpsc, oneshot};

pub use catalog::{Catalog, PartitionOffsets, PartitionState, TopicConfig, TopicState};
use eddy_protocol::processors::ProcessorDescription;
use eddy_protocol::ErrorCode;
pub use processors::{OffsetEntry, ProcessorCommit, ProcessorDeployment, ProcessorMap, StateEntries};

/// Topic name -> JSON TopicConfig.
pub(crate) const TOPICS: TableDefinition<&str, &[u8]> = TableDefinition::new("topics");
/// (topic id, partition) -> (log start, log end, size bytes).
pub(crate) const PARTITIONS: TableDefinition<(u64, u32), (u64, u64, u64)> = TableDefinition::new("partitions");
/// Named counters.
pub(crate) const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
/// (group, topic, partition) -> (committed offset, metadata).
pub(crate) const GROUP_OFFSETS: TableDefinition<(&str, &str, u32), (u64, &str)> = TableDefinition::new("group_offsets");

/// Committed positions of one group: (topic, partition) -> (offset, metadata).
pub type GroupOffsets = BTreeMap<(String, u32), (u64, String)>;
/// Committed positions of all groups.
pub type AllGroupOffsets = BTreeMap<String, GroupOffsets>;

/// Name of the log table of one partition.
pub(crate) fn log_table_name(topic_id: u64, partition: u32) -> String {
    format!("log.{topic_id}.{partition}")
}

/// Most jobs the writer queue holds before producers wait.
pub const WRITE_QUEUE_JOBS: usize = 4096;
/// Most batch bytes one group commit covers (bounds commit latency and memory).
pub const MAX_COMMIT_BYTES: usize = 32 * 1024 * 1024;

/// When an acknowledged write is on disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DurabilityPolicy {
    /// Every group commit is fsynced before anything in it is acknowledged:
    /// `kill -9` or power loss loses no acknowledged record. The default.
    EveryCommit,
    /// Relaxed: commits are fsynced at most once per interval; records
    /// acknowledged within the last interval can be lost on power loss or
    /// `kill -9`. Faster for small batches.
    Interval(Duration),
}

/// How to open the store.
#[derive(Debug, Clone)]
pub struct StoreConfig {
    /// Path of the redb file.
    pub path: PathBuf,
    /// When acknowledged writes are durable.
    pub durability: DurabilityPolicy,
}

/// What went wrong in the store.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// No such topic.
    #[error("unknown topic '{0}'")]
    UnknownTopic(String),
    /// No such partition.
    #[error("unknown partition {partition} of topic '{topic}' (it has {count} partitions)")]
    UnknownPartition { topic: String, partition: u32, count: u32 },
    /// Topic exists already.
    #[error("topic '{0}' already exists")]
    TopicExists(String),
    /// Bad partition count.
    #[error("{0}")]
    InvalidPartitions(String),
    /// Offset outside the stored log.
    #[error("offset {offset} is out of range for {topic}/{partition}: log start {log_start}, log end {log_end}")]
    OffsetOutOfRange { topic: String, partition: u32, offset: u64, log_start: u64, log_end: u64 },
    /// No processor of that name is deployed.
    #[error("no processor named '{0}'; deploy one with `eddy processor deploy`")]
    UnknownProcessor(String),
    /// The processor exists, but `version` is not its current version.
    #[error("processor '{name}' is at version {current}, not {version}; use the current version")]
    ProcessorVersion { name: String, current: u32, version: u32 },
    /// A processor deployment was refused; the message says why.
    #[error("{0}")]
    InvalidProcessor(String),
    /// A request names something it may not (the message says what).
    #[error("{0}")]
    InvalidRequest(String),
    /// redb failed; nothing of the failed transaction was acknowledged.
    #[error("storage failure: {0}")]
    Storage(String),
    /// The store is closing.
    #[error("the broker is shutting down")]
    ShuttingDown,
}

impl StoreError {
    /// The wire error code for this error.
    pub fn code(&self) -> ErrorCode {
        match self {
            StoreError::UnknownTopic(_) => ErrorCode::UnknownTopic,
            StoreError::UnknownPartition { .. } => ErrorCode::UnknownPartition,
            StoreError::TopicExists(_) => ErrorCode::TopicAlreadyExists,
            StoreError::InvalidPartitions(_) => ErrorCode::InvalidPartitions,
            StoreError::OffsetOutOfRange { .. } => ErrorCode::OffsetOutOfRange,
            StoreError::UnknownProcessor(_) | StoreError::ProcessorVersion { .. } => ErrorCode::UnknownProcessor,
            StoreError::InvalidProcessor(_) => ErrorCode::InvalidProcessor,
            StoreError::InvalidRequest(_) => ErrorCode::InvalidRequest,
            StoreError::Storage(_) => ErrorCode::StorageError,
            StoreError::ShuttingDown => ErrorCode::ShuttingDown,
        }
    }
}

impl<E: Into<redb::Error>> From<E> for StoreError {
    fn from(e: E) -> Self {
        StoreError::Storage(e.into().to_string())
    }
}

/// The result of a read.
#[derive(Debug, Clone)]
pub struct ReadResult {
    /// Whole batches back to back; the first contains the requested offset.
    pub records: Bytes,
    /// Committed log end when the read started.
    pub high_watermark: u64,
    /// Log start when the read started.
    pub log_start: u64,
}

pub(crate) type Reply<T> = oneshot::Sender<Result<T, StoreError>>;

/// A unit of work for the writer thread.
pub(crate) enum Job {
    Append { topic: String, topic_id: u64, partition: u32, batch: Bytes, reply: Reply<u64> },
    CreateTopic { config: TopicConfig, reply: Reply<TopicConfig> },
    DeleteTopic { name: String, reply: Reply<()> },
    AddPartitions { name: String, count: u32, reply: Reply<TopicConfig> },
    Retention { now_ms: i64, reply: Reply<u64> },
    CommitOffsets { group: String, offsets: Vec<(String, u32, u64, String)>, reply: Reply<()> },
    DeployProcessor { deployment: ProcessorDeployment, reply: Reply<ProcessorDescription> },
    DeleteProcessor { name: String, reply: Reply<()> },
    CommitProcessorBatch { commit: ProcessorCommit, reply: Reply<()> },
    SetProcessorStatus { name: String, version: u32, status: String, reason: String, reply: Reply<bool> },
    Stop { reply: Reply<()> },
}

/// Handle to the store. Cheap to share behind an `Arc`.
pub struct Store {
    db: Arc<Database>,
    catalog: Arc<RwLock<Arc<Catalog>>>,
    offsets: Arc<RwLock<AllGroupOffsets>>,
    processors: Arc<RwLock<ProcessorMap>>,
    jobs: mpsc::Sender<Job>,
    writer: std::sync::Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl Store {
    /// Opens (or creates) the database, loads the catalog and starts the writer thread.
    pub fn open(config: StoreConfig) -> Result<Self, StoreError> {
        if let Some(dir) = config.path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| StoreError::Storage(format!("{}: {e}", dir.display())))?;
        }
        let db = Database::builder().create(&config.path)?;
        Self::from_database(db, config.durability)
    }

    /// Runs the store on an already opened database (a custom redb backend in tests).
    pub(crate) fn from_database(db: Database, durability: DurabilityPolicy) -> Result<Self, StoreError> {
        let db = Arc::new(db);
        let state = writer::WriterState::load(&db)?;
        let catalog = Arc::new(RwLock::new(Arc::new(state.build_catalog(&Catalog::new()))));
        let offsets = Arc::new(RwLock::new(writer::load_group_offsets(&db)?));
        let processors = Arc::new(RwLock::new(processors::load(&db)?));
        let (tx, rx) = mpsc::channel(WRITE_QUEUE_JOBS);
        let handle = {
            let shared =
                writer::Shared { catalog: catalog.clone(), offsets: offsets.clone(), processors: processors.clone() };
            let db = db.clone();
            std::thread::Builder::new()
                .name("eddy-store-writer".into())
                .spawn(move || writer::run(db, state, shared, rx, durability))
                .map_err(|e| StoreError::Storage(format!("cannot start writer thread: {e}")))?
        };
        Ok(Self { db, catalog, offsets, processors, jobs: tx, writer: std::sync::Mutex::new(Some(handle)) })
    }

    /// The committed catalog now.
    pub fn catalog(&self) -> Arc<Catalog> {
        self.catalog.read().expect("catalog lock poisoned").clone()
    }

    /// One topic's committed state.
    pub fn topic(&self, name: &str) -> Result<Arc<TopicState>, StoreError> {
        self.catalog().get(name).cloned().ok_or_else(|| StoreError::UnknownTopic(name.to_string()))
    }

    /// One partition's committed state.
    pub fn partition(&self, topic: &str, partition: u32) -> Result<(Arc<TopicState>, Arc<PartitionState>), StoreError> {
        let t = self.topic(topic)?;
        let p = t.partitions.get(partition as usize).cloned().ok_or_else(|| StoreError::UnknownPartition {
            topic: topic.to_string(),
            partition,
            count: t.config.partitions,
        })?;
        Ok((t, p))
    }

    async fn submit<T>(
        &self,
        make: impl FnOnce(Reply<T>) -> Job,
    ) -> Result<oneshot::Receiver<Result<T, StoreError>>, StoreError> {
        let (tx, rx) = oneshot::channel();
        self.jobs.send(make(tx)).await.map_err(|_| StoreError::ShuttingDown)?;
        Ok(rx)
    }

    /// Queues a validated batch for appending and returns a future for its base
    /// offset, resolved once the batch is durable. Batches queued by one caller
    /// are appended in the order of the calls: callers that need order must
    /// await this function (not the returned future) before queueing the next.
    pub async fn append(
        &self,
        topic: &str,
        partition: u32,
        batch: Bytes,
    ) -> Result<impl std::future::Future<Output = Result<u64, StoreError>>, StoreError> {
        let (t, _) = self.partition(topic, partition)?;
        let topic_id = t.config.id;
        let rx =
            self.submit(|reply| Job::Append { topic: topic.to_string(), topic_id, partition, batch, reply }).await?;
        Ok(async move { rx.await.unwrap_or(Err(StoreError::ShuttingDown)) })
    }

    async fn run_job<T>(&self, make: impl FnOnce(Reply<T>) -> Job) -> Result<T, StoreError> {
        self.submit(make).await?.await.unwrap_or(Err(StoreError::ShuttingDown))
    }

    /// Creates a topic (the id field of `config` is assigned by the store).
    pub async fn create_topic(&self, config: TopicConfig) -> Result<TopicConfig, StoreError> {
        self.run_job(|reply| Job::CreateTopic { config, reply }).await
    }

    /// Deletes a topic and all its data.
    pub async fn delete_topic(&self, name: &str) -> Result<(), StoreError> {
        self.run_job(|reply| Job::DeleteTopic { name: name.to_string(), reply }).await
    }

    /// Grows a topic to `count` partitions.
    pub async fn add_partitions(&self, name: &str, count: u32) -> Result<TopicConfig, StoreError> {
        self.run_job(|reply| Job::AddPartitions { name: name.to_string(), count, reply }).await
    }

    /// Applies every topic's retention as of `now_ms`; returns the number of batches deleted.
    pub async fn enforce_retention(&self, now_ms: i64) -> Result<u64, StoreError> {
        self.run_job(|reply| Job::Retention { now_ms, reply }).await
    }

    /// Durably records committed positions for `group` (all or none). Fails
    /// with UnknownTopic/UnknownPartition if any entry names no partition.
    /// This is the seam for replicated offsets: callers see only this call
    /// and [`Store::committed_offsets`].
    pub async fn commit_offsets(
        &self,
        group: &str,
        offsets: Vec<(String, u32, u64, String)>,
    ) -> Result<(), StoreError> {
        self.run_job(|reply| Job::CommitOffsets { group: group.to_string(), offsets, reply }).await
    }

    /// The durably committed positions of `group` (empty if none).
    pub fn committed_offsets(&self, group: &str) -> GroupOffsets {
        self.offsets.read().expect("offsets lock poisoned").get(group).cloned().unwrap_or_default()
    }

    /// Groups that have committed positions.
    pub fn groups_with_offsets(&self) -> Vec<String> {
        self.offsets.read().expect("offsets lock poisoned").keys().cloned().collect()
    }

    /// Stores a processor deployment durably, in one transaction: the
    /// description with the next version (1 for a first deployment), the
    /// module (replacing the previous version's), and for a first deployment
    /// the initial offsets of group `processor.<name>` (all validated first:
    /// UnknownTopic/UnknownPartition and nothing is written). A redeployment
    /// keeps the counters and sets the status to running. Returns what was stored.
    pub async fn deploy_processor(&self, deployment: ProcessorDeployment) -> Result<ProcessorDescription, StoreError> {
        self.run_job(|reply| Job::DeployProcessor { deployment, reply }).await
    }

    /// Deletes a processor with its counters, module, state and the committed
    /// offsets of group `processor.<name>`, in one transaction.
    /// UnknownProcessor if there is none of that name.
    pub async fn delete_processor(&self, name: &str) -> Result<(), StoreError> {
        self.run_job(|reply| Job::DeleteProcessor { name: name.to_string(), reply }).await
    }

    /// Applies a batch commit in one transaction, all or nothing: the offsets
    /// of group `processor.<name>` (visible to [`Store::committed_offsets`]
    /// once this returns), the state writes and the counters. Fails, writing
    /// nothing, with UnknownProcessor, InvalidRequest (a topic that is not an
    /// input) or UnknownTopic/UnknownPartition. Membership is not checked here.
    pub async fn commit_processor_batch(&self, commit: ProcessorCommit) -> Result<(), StoreError> {
        self.run_job(|reply| Job::CommitProcessorBatch { commit, reply }).await
    }

    /// Durably sets the status and reason of a processor's `version`. Returns
    /// false, writing nothing, if `version` is not the current one;
    /// UnknownProcessor if there is no processor of that name.
    pub async fn set_processor_status(
        &self,
        name: &str,
        version: u32,
        status: &str,
        reason: &str,
    ) -> Result<bool, StoreError> {
        self.run_job(|reply| Job::SetProcessorStatus {
            name: name.to_string(),
            version,
            status: status.to_string(),
            reason: reason.to_string(),
            reply,
        })
        .await
    }

    /// Every deployed processor as committed, with its counters, sorted by name.
    pub fn processors(&self) -> Vec<ProcessorDescription> {
        self.processors.read().expect("processors lock poisoned").values().cloned().collect()
    }

    /// One deployed processor as committed, with its counters; UnknownProcessor if none.
    pub fn processor(&self, name: &str) -> Result<ProcessorDescription, StoreError> {
        self.processors
            .read()
            .expect("processors lock poisoned")
            .get(name)
            .cloned()
            .ok_or_else(|| StoreError::UnknownProcessor(name.to_string()))
    }

    /// The module of a processor's `version`, read in one read transaction:
    /// UnknownProcessor if there is no such processor, ProcessorVersion if
    /// `version` is not the current one. Blocks on disk reads (up to the
    /// module's size).
    pub fn processor_module(&self, name: &str, version: u32) -> Result<Bytes, StoreError> {
        processors::read_module(&self.db, name, version)
    }

    /// Committed state of processor `name` for one input partition, in key
    /// order, after key `after` (from the first key if `None`), read in one
    /// read transaction: entries up to about `max_bytes` of keys and values
    /// (at least one if any remain, at most `MAX_LIST_LEN`), and whether more
    /// remain. UnknownProcessor if there is no such processor.
    pub fn state_scan(
        &self,
        name: &str,
        partition: u32,
        after: Option<&[u8]>,
        max_bytes: usize,
    ) -> Result<(StateEntries, bool), StoreError> {
        processors::scan_state(&self.db, name, partition, after, max_bytes)
    }

    /// Reads whole batches of one partition starting with the batch that holds
    /// `offset`, adding batches while the total stays within `max_bytes` (at
    /// least one batch is returned if any exists at or after `offset`).
    pub fn read(&self, topic: &str, partition: u32, offset: u64, max_bytes: usize) -> Result<ReadResult, StoreError> {
        let (t, p) = self.partition(topic, partition)?;
        let offsets = p.offsets();
        let out_of_range = |o: PartitionOffsets| StoreError::OffsetOutOfRange {
            topic: topic.to_string(),
            partition,
            offset,
            log_start: o.log_start,
            log_end: o.log_end,
        };
        if offset < offsets.log_start || offset > offsets.log_end {
            return Err(out_of_range(offsets));
        }
        let empty = ReadResult { records: Bytes::new(), high_watermark: offsets.log_end, log_start: offsets.log_start };
        if offset == offsets.log_end {
            return Ok(empty);
        }
        let txn = self.db.begin_read()?;
        let name = log_table_name(t.config.id, partition);
        let table = match txn.open_table(TableDefinition::<u64, &[u8]>::new(&name)) {
            Ok(table) => table,
            // Deleted since we looked it up.
            Err(redb::TableError::TableDoesNotExist(_)) => return Err(StoreError::UnknownTopic(topic.to_string())),
            Err(e) => return Err(e.into()),
        };
        let start = match table.range(..=offset)?.next_back() {
            Some(entry) => entry?.0.value(),
            // Retention removed the batch since the offsets were read.
            None => return Err(out_of_range(p.offsets())),
        };
        let mut buf = BytesMut::new();
        for entry in table.range(start..)? {
            let (_, value) = entry?;
            let value = value.value();
            if !buf.is_empty() && buf.len() + value.len() > max_bytes {
                break;
            }
            buf.extend_from_slice(value);
            if buf.len() >= max_bytes {
                break;
            }
        }
        if buf.is_empty() {
            return Ok(empty);
        }
        Ok(ReadResult { records: buf.freeze(), ..empty })
    }

    /// Commits every job queued so far, then stops the writer thread. Later
    /// writes fail with [`StoreError::ShuttingDown`].
    pub async fn close(&self) {
        let _ = self.run_job(|reply| Job::Stop { reply }).await;
        let handle = self.writer.lock().expect("writer lock poisoned").take();
        if let Some(handle) = handle {
            let _ = tokio::task::spawn_blocking(move || handle.join()).await;
        }
    }

    /// Path-independent check used by tests: the number of stored batches in a partition.
    pub fn batch_count(&self, topic: &str, partition: u32) -> Result<u64, StoreError> {
        let (t, _) = self.partition(topic, partition)?;
        let txn = self.db.begin_read()?;
        let name = log_table_name(t.config.id, partition);
        let table = txn.open_table(TableDefinition::<u64, &[u8]>::new(&name))?;
        Ok(table.len()?)
    }
}

/// The default store file inside a data directory.
pub fn store_path(data_dir: &Path) -> PathBuf {
    data_dir.join("eddy.redb")
}

#[cfg(test)]
mod processor_tests;
#[cfg(test)]
pub(crate) mod tests;
