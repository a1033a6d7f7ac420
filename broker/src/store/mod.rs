//! The broker's storage: one redb database holding topic metadata, per-partition
//! logs and per-partition offsets, and the replicated metadata state machine.
//!
//! Tables (see docs/design.md). Replicated (identical on every broker that
//! applied the same Raft entries, and what a snapshot carries):
//! * `topics`: topic name -> JSON [`TopicConfig`] (with partition assignments).
//! * `meta`: string -> u64 counters (`next_topic_id`, `next_producer_id`).
//! * `group_offsets`: (group, topic, partition) -> (offset, metadata).
//! * `processors`, `processor_stats`, `processor_modules`, `processor_state`:
//!   deployed processors, their counters, modules and state ([`processors`]).
//! * `raft_applied`: `applied` / `membership` -> the Raft glue's opaque marks
//!   of the last applied entry, written with that entry's command.
//!
//! Local (each broker's own copy of the data and what describes it):
//! * `partitions`: (topic id, partition) -> (log start, log end, size in bytes).
//! * `log.<topic id>.<partition>`: base offset -> the stored batch, byte for byte
//!   as the producer wrote it, with base offset and leader epoch stamped in.
//! * `leader_epochs`: (topic id, partition, epoch) -> start offset (`epochs.rs`).
//! * `producers`: (topic id, partition, producer id) -> the producer's last
//!   batches (`producers.rs`).
//!
//! Writes of every kind go through one writer thread (`writer.rs`) that drains
//! every job queued meanwhile into one write transaction: one commit, one fsync,
//! for any number of batches across all partitions (group commit). Nothing is
//! acknowledged or made visible to readers before its transaction committed.
//! Reads run on the caller's thread in their own read transactions.

mod catalog;
mod command;
mod epochs;
pub mod processors;
mod producers;
pub mod security;
mod snapshot;
mod writer;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use eddy_protocol::batch::{batch_info, split_batches};
use redb::{Database, ReadableDatabase, ReadableTableMetadata, TableDefinition};
use tokio::sync::{mpsc, oneshot};

pub use catalog::{Catalog, PartitionAssignment, PartitionOffsets, PartitionState, TopicConfig, TopicState};
pub use command::{ApplyEntry, MetaCommand, MetaOutput, PartitionChange};
use eddy_protocol::processors::ProcessorDescription;
use eddy_protocol::ErrorCode;
pub use processors::{OffsetEntry, ProcessorCommit, ProcessorDeployment, ProcessorMap, StateEntries};
pub use producers::{MAX_PRODUCERS_PER_PARTITION, PRODUCER_BATCHES, PRODUCER_REBUILD_BATCHES};
pub use security::SecurityState;

/// Topic name -> JSON TopicConfig.
pub(crate) const TOPICS: TableDefinition<&str, &[u8]> = TableDefinition::new("topics");
/// (topic id, partition) -> (log start, log end, size bytes).
pub(crate) const PARTITIONS: TableDefinition<(u64, u32), (u64, u64, u64)> = TableDefinition::new("partitions");
/// Named counters.
pub(crate) const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
/// (group, topic, partition) -> (committed offset, metadata).
pub(crate) const GROUP_OFFSETS: TableDefinition<(&str, &str, u32), (u64, &str)> = TableDefinition::new("group_offsets");
/// (topic id, partition, leader epoch) -> offset of the epoch's first batch.
pub(crate) const LEADER_EPOCHS: TableDefinition<(u64, u32, u32), u64> = TableDefinition::new("leader_epochs");
/// (topic id, partition, producer id) -> the producer's last batches, 16 bytes each.
pub(crate) const PRODUCERS: TableDefinition<(u64, u32, u64), &[u8]> = TableDefinition::new("producers");
/// `applied` / `membership` -> opaque marks of the last applied Raft entry.
pub(crate) const RAFT_APPLIED: TableDefinition<&str, &[u8]> = TableDefinition::new("raft_applied");

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
    /// This broker's id (nonzero): topics stored before partition assignments
    /// existed are assigned to it alone, and the direct (single-node)
    /// [`Store::create_topic`] and [`Store::add_partitions`] assign to it.
    pub broker_id: u32,
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
    /// An idempotent producer's batch does not start at the sequence that
    /// follows its last appended batch (a gap: batches were lost in between).
    #[error("out of order sequence for producer {producer_id} on {topic}/{partition}: expected {expected}, got {got}")]
    OutOfOrderSequence { topic: String, partition: u32, producer_id: u64, expected: u32, got: u32 },
    /// A leader append with an epoch older than the partition's last epoch
    /// (the caller is no longer the leader).
    #[error("leader epoch {epoch} of {topic}/{partition} is fenced: the partition is at epoch {current}")]
    FencedLeaderEpoch { topic: String, partition: u32, epoch: u32, current: u32 },
    /// No processor of that name is deployed.
    #[error("no processor named '{0}'; deploy one with `eddy processor deploy`")]
    UnknownProcessor(String),
    /// The processor exists, but `version` is not its current version.
    #[error("processor '{name}' is at version {current}, not {version}; use the current version")]
    ProcessorVersion { name: String, current: u32, version: u32 },
    /// No user of that name.
    #[error("no user named '{0}'")]
    UnknownUser(String),
    /// A user of that name exists already.
    #[error("user '{0}' exists already; use `eddy user passwd` to change its password")]
    UserExists(String),
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
            StoreError::OutOfOrderSequence { .. } => ErrorCode::OutOfOrderSequence,
            StoreError::FencedLeaderEpoch { .. } => ErrorCode::FencedLeaderEpoch,
            StoreError::UnknownProcessor(_) | StoreError::ProcessorVersion { .. } => ErrorCode::UnknownProcessor,
            StoreError::InvalidProcessor(_) => ErrorCode::InvalidProcessor,
            StoreError::UnknownUser(_) => ErrorCode::UnknownUser,
            StoreError::UserExists(_) => ErrorCode::UserAlreadyExists,
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
    /// High watermark when the read started.
    pub high_watermark: u64,
    /// Log start when the read started.
    pub log_start: u64,
    /// Committed local log end when the read started.
    pub log_end: u64,
}

/// Where a leader append went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Appended {
    /// Offset of the batch's first record.
    pub base_offset: u64,
    /// Offset after the batch's last record.
    pub next_offset: u64,
    /// True if an idempotent producer's batch was already in the log: nothing
    /// was written, and the offsets are those of the original append.
    pub duplicate: bool,
}

pub(crate) type Reply<T> = oneshot::Sender<Result<T, StoreError>>;

/// A unit of work for the writer thread.
pub(crate) enum Job {
    Append { topic: String, topic_id: u64, partition: u32, batch: Bytes, leader_epoch: u32, reply: Reply<Appended> },
    Replicate { topic: String, topic_id: u64, partition: u32, batches: Vec<Bytes>, reply: Reply<u64> },
    Truncate { topic: String, topic_id: u64, partition: u32, offset: u64, reply: Reply<u64> },
    Retention { now_ms: i64, reply: Reply<u64> },
    Execute { command: MetaCommand, reply: Reply<MetaOutput> },
    Apply { entries: Vec<ApplyEntry>, reply: Reply<Vec<Result<MetaOutput, StoreError>>> },
    InstallSnapshot { snapshot: Box<snapshot::Snapshot>, reply: Reply<()> },
    Stop { reply: Reply<()> },
}

/// Handle to the store. Cheap to share behind an `Arc`.
pub struct Store {
    db: Arc<Database>,
    broker_id: u32,
    catalog: Arc<RwLock<Arc<Catalog>>>,
    offsets: Arc<RwLock<AllGroupOffsets>>,
    processors: Arc<RwLock<ProcessorMap>>,
    security: Arc<RwLock<Arc<SecurityState>>>,
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
        Self::from_database(db, config.durability, config.broker_id)
    }

    /// Runs the store on an already opened database (a custom redb backend in tests).
    pub(crate) fn from_database(
        db: Database,
        durability: DurabilityPolicy,
        broker_id: u32,
    ) -> Result<Self, StoreError> {
        let db = Arc::new(db);
        let state = writer::WriterState::load(&db, broker_id)?;
        let catalog = Arc::new(RwLock::new(Arc::new(state.build_catalog(&Catalog::new()))));
        let offsets = Arc::new(RwLock::new(writer::load_group_offsets(&db)?));
        let processors = Arc::new(RwLock::new(processors::load(&db)?));
        let security = Arc::new(RwLock::new(security::load(&db)?));
        let (tx, rx) = mpsc::channel(WRITE_QUEUE_JOBS);
        let handle = {
            let shared = writer::Shared {
                catalog: catalog.clone(),
                offsets: offsets.clone(),
                processors: processors.clone(),
                security: security.clone(),
            };
            let db = db.clone();
            std::thread::Builder::new()
                .name("eddy-store-writer".into())
                .spawn(move || writer::run(db, state, shared, rx, durability))
                .map_err(|e| StoreError::Storage(format!("cannot start writer thread: {e}")))?
        };
        Ok(Self {
            db,
            broker_id,
            catalog,
            offsets,
            processors,
            security,
            jobs: tx,
            writer: std::sync::Mutex::new(Some(handle)),
        })
    }

    /// This broker's id, as configured.
    pub fn broker_id(&self) -> u32 {
        self.broker_id
    }

    /// The committed users and access rules now.
    pub fn security(&self) -> Arc<SecurityState> {
        self.security.read().expect("security lock poisoned").clone()
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

    async fn run_job<T>(&self, make: impl FnOnce(Reply<T>) -> Job) -> Result<T, StoreError> {
        self.submit(make).await?.await.unwrap_or(Err(StoreError::ShuttingDown))
    }

    /// Leader append: queues a validated batch and returns a future for where
    /// it went, resolved once the batch is durable. The stored copy gets the
    /// base offset (the log end) and `leader_epoch` stamped in. Batches
    /// queued by one caller are appended in the order of the calls: callers
    /// that need order must await this function (not the returned future)
    /// before queueing the next.
    ///
    /// Batches of an idempotent producer (producer id != 0) are checked
    /// against its last [`PRODUCER_BATCHES`] batches in this partition,
    /// atomically with the append order: a batch already appended (same base
    /// sequence and record count) is not written again and answers
    /// `duplicate: true` with its original offsets; one that does not follow
    /// the producer's last batch fails with [`StoreError::OutOfOrderSequence`]
    /// (a gap) or [`StoreError::InvalidRequest`] (behind, but no longer
    /// remembered). A producer not known here may start at any sequence.
    /// An epoch below the partition's last epoch fails with
    /// [`StoreError::FencedLeaderEpoch`].
    pub async fn append(
        &self,
        topic: &str,
        partition: u32,
        batch: Bytes,
        leader_epoch: u32,
    ) -> Result<impl std::future::Future<Output = Result<Appended, StoreError>>, StoreError> {
        let (t, _) = self.partition(topic, partition)?;
        let topic_id = t.config.id;
        let rx = self
            .submit(|reply| Job::Append { topic: topic.to_string(), topic_id, partition, batch, leader_epoch, reply })
            .await?;
        Ok(async move { rx.await.unwrap_or(Err(StoreError::ShuttingDown)) })
    }

    /// Follower append: `records` are whole batches back to back as the
    /// leader stored them (offsets and epochs stamped). Each is checked
    /// (header, length, CRC) and they must be contiguous; batches wholly below
    /// the local log end are skipped (a refetch overlap); the first other one
    /// must start exactly at the log end (else InvalidRequest, nothing
    /// written). Stored byte for byte with the epoch cache and producer state
    /// updated (no sequence checks). Returns the log end once durable.
    pub async fn append_replicated(&self, topic: &str, partition: u32, records: Bytes) -> Result<u64, StoreError> {
        let (t, p) = self.partition(topic, partition)?;
        let topic_id = t.config.id;
        let mut batches = Vec::new();
        let mut next = None;
        for view in split_batches(records) {
            let view =
                view.map_err(|e| StoreError::InvalidRequest(format!("{topic}/{partition}: replicated batch: {e}")))?;
            if next.is_some_and(|n| n != view.base_offset()) {
                return Err(StoreError::InvalidRequest(format!(
                    "{topic}/{partition}: replicated batches are not contiguous at offset {}",
                    view.base_offset()
                )));
            }
            next = Some(view.base_offset().checked_add(u64::from(view.record_count())).ok_or_else(|| {
                StoreError::InvalidRequest(format!("{topic}/{partition}: replicated batch offset overflows"))
            })?);
            batches.push(view.into_bytes());
        }
        if batches.is_empty() {
            return Ok(p.offsets().log_end);
        }
        self.run_job(|reply| Job::Replicate { topic: topic.to_string(), topic_id, partition, batches, reply }).await
    }

    /// Removes every batch whose records reach `offset` or beyond (a batch
    /// straddling `offset` is removed whole), with the epoch-cache entries
    /// starting at or after the new end and the producer state of the
    /// removed batches (a producer left with no remembered batch is rebuilt
    /// from the last [`PRODUCER_REBUILD_BATCHES`] batches of the remaining
    /// log, or forgotten). An offset at or below the log start empties the
    /// partition at its log start; one at or past the log end changes
    /// nothing. Durable before it returns the new log end; the lower log end
    /// is then published (subscribers notified, high watermark clamped).
    pub async fn truncate(&self, topic: &str, partition: u32, offset: u64) -> Result<u64, StoreError> {
        let (t, _) = self.partition(topic, partition)?;
        let topic_id = t.config.id;
        self.run_job(|reply| Job::Truncate { topic: topic.to_string(), topic_id, partition, offset, reply }).await
    }

    /// The epoch of the last batch of a partition (0 if it has none).
    pub fn last_epoch(&self, topic: &str, partition: u32) -> Result<u32, StoreError> {
        Ok(self.partition(topic, partition)?.1.last_epoch())
    }

    /// Kafka's OffsetsForLeaderEpoch for a partition: the largest cached
    /// epoch `e <= epoch` and its end offset (the start of the next cached
    /// epoch, or the log end if `e` is the last); `(epoch, log_start)` if no
    /// cached epoch is `<= epoch`.
    pub fn epoch_end_offset(&self, topic: &str, partition: u32, epoch: u32) -> Result<(u32, u64), StoreError> {
        Ok(self.partition(topic, partition)?.1.epoch_end_offset(epoch))
    }

    /// Applies one metadata command directly (single node; no Raft marks).
    /// Same semantics as [`Store::apply`] of that command. A broker whose
    /// metadata comes from the Raft log must not use this (nor the direct
    /// methods below built on it): its replicated state would diverge.
    pub async fn execute(&self, command: MetaCommand) -> Result<MetaOutput, StoreError> {
        self.run_job(|reply| Job::Execute { command, reply }).await
    }

    /// Creates a topic (the id field of `config` is assigned by the store).
    /// Empty `assignments` become [`PartitionAssignment::single`] of this
    /// broker for every partition.
    pub async fn create_topic(&self, mut config: TopicConfig) -> Result<TopicConfig, StoreError> {
        if config.assignments.is_empty() {
            config.fill_assignments(self.broker_id);
        }
        self.execute(MetaCommand::CreateTopic { config }).await?.into_topic()
    }

    /// Deletes a topic and all its data.
    pub async fn delete_topic(&self, name: &str) -> Result<(), StoreError> {
        self.execute(MetaCommand::DeleteTopic { name: name.to_string() }).await?.into_done()
    }

    /// Grows a topic to `count` partitions, the new ones assigned to this
    /// broker alone.
    pub async fn add_partitions(&self, name: &str, count: u32) -> Result<TopicConfig, StoreError> {
        let current = self.topic(name)?.config.partitions;
        let single = PartitionAssignment::single(self.broker_id);
        let assignments = vec![single; count.saturating_sub(current) as usize];
        self.execute(MetaCommand::AddPartitions { name: name.to_string(), count, assignments }).await?.into_topic()
    }

    /// Allocates a fresh nonzero producer id directly (single node).
    pub async fn allocate_producer_id(&self) -> Result<u64, StoreError> {
        self.execute(MetaCommand::AllocateProducerId).await?.into_producer_id()
    }

    /// Applies every topic's retention as of `now_ms`; returns the number of batches deleted.
    pub async fn enforce_retention(&self, now_ms: i64) -> Result<u64, StoreError> {
        self.run_job(|reply| Job::Retention { now_ms, reply }).await
    }

    /// Durably records committed positions for `group` (all or none). Fails
    /// with UnknownTopic/UnknownPartition if any entry names no partition.
    pub async fn commit_offsets(
        &self,
        group: &str,
        offsets: Vec<(String, u32, u64, String)>,
    ) -> Result<(), StoreError> {
        self.execute(MetaCommand::CommitOffsets { group: group.to_string(), offsets }).await?.into_done()
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
        self.execute(deployment.into()).await?.into_processor()
    }

    /// Deletes a processor with its counters, module, state and the committed
    /// offsets of group `processor.<name>`, in one transaction.
    /// UnknownProcessor if there is none of that name.
    pub async fn delete_processor(&self, name: &str) -> Result<(), StoreError> {
        self.execute(MetaCommand::DeleteProcessor { name: name.to_string() }).await?.into_done()
    }

    /// Applies a batch commit in one transaction, all or nothing: the offsets
    /// of group `processor.<name>` (visible to [`Store::committed_offsets`]
    /// once this returns), the state writes and the counters. Fails, writing
    /// nothing, with UnknownProcessor, InvalidRequest (a topic that is not an
    /// input) or UnknownTopic/UnknownPartition. Membership is not checked here.
    pub async fn commit_processor_batch(&self, commit: ProcessorCommit) -> Result<(), StoreError> {
        self.execute(commit.into()).await?.into_done()
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
        let command = MetaCommand::SetProcessorStatus {
            name: name.to_string(),
            version,
            status: status.to_string(),
            reason: reason.to_string(),
        };
        self.execute(command).await?.into_flag()
    }

    /// Applies committed Raft entries in order, in one transaction: each
    /// entry's command (if any) together with its `applied` mark (and
    /// `membership` mark, if any), so after a crash the marks and the
    /// replicated tables agree. Returns one result per entry: a command's own
    /// failure (TopicExists, UnknownTopic, UnknownProcessor, ...) is that
    /// entry's `Err` and still advances the marks. The outer `Err` (storage
    /// failure, shutdown) means no entry of the call was applied.
    pub async fn apply(&self, entries: Vec<ApplyEntry>) -> Result<Vec<Result<MetaOutput, StoreError>>, StoreError> {
        if entries.is_empty() {
            return Ok(Vec::new());
        }
        self.run_job(|reply| Job::Apply { entries, reply }).await
    }

    /// The last committed `applied` and `membership` marks (none before the
    /// first entry was applied or a snapshot installed), read in one read
    /// transaction.
    pub fn applied_state(&self) -> Result<(Option<Bytes>, Option<Bytes>), StoreError> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(RAFT_APPLIED)?;
        let applied = table.get("applied")?.map(|v| Bytes::copy_from_slice(v.value()));
        let membership = table.get("membership")?.map(|v| Bytes::copy_from_slice(v.value()));
        Ok((applied, membership))
    }

    /// The replicated state (topics with assignments, counters, group
    /// offsets, processors with counters, modules and state, and the applied
    /// marks), read in one read transaction, so it is exactly the state after
    /// the entry its `applied` mark names. Not in it: partition logs and
    /// offsets, epoch caches, producer state. The encoding is in
    /// `snapshot.rs`; equal replicated states give equal bytes.
    pub fn snapshot(&self) -> Result<Bytes, StoreError> {
        snapshot::Snapshot::read(&self.db, self.broker_id)?.encode()
    }

    /// [`Store::snapshot`] together with the applied and membership marks it
    /// holds (read in the same transaction, so they name exactly the state
    /// in the snapshot even while entries are being applied).
    pub fn snapshot_with_marks(&self) -> Result<(Bytes, Option<Bytes>, Option<Bytes>), StoreError> {
        let snapshot = snapshot::Snapshot::read(&self.db, self.broker_id)?;
        let (applied, membership) = (snapshot.applied.clone(), snapshot.membership.clone());
        Ok((snapshot.encode()?, applied, membership))
    }

    /// Replaces the replicated state with a [`Store::snapshot`]'s, in one
    /// transaction: topics missing from it are deleted with their logs, new
    /// ones get empty partitions, a topic of the same name but another id is
    /// replaced (its logs deleted), topics with the same name and id keep
    /// their logs. Catalog, offsets and processors are rebuilt. A snapshot
    /// that does not decode or is inconsistent fails with InvalidRequest and
    /// changes nothing.
    pub async fn install_snapshot(&self, data: Bytes) -> Result<(), StoreError> {
        let snapshot = Box::new(snapshot::Snapshot::decode(data)?);
        self.run_job(|reply| Job::InstallSnapshot { snapshot, reply }).await
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

    /// Consumer read: whole batches of one partition starting with the batch
    /// that holds `offset`, only batches that end at or below the high
    /// watermark, adding batches while the total stays within `max_bytes` (at
    /// least one batch is returned if any qualifies). An offset between the
    /// high watermark and the log end gives an empty result;
    /// OffsetOutOfRange below the log start or past the log end.
    pub fn read(&self, topic: &str, partition: u32, offset: u64, max_bytes: usize) -> Result<ReadResult, StoreError> {
        self.read_up_to(topic, partition, offset, max_bytes, false)
    }

    /// Follower read: like [`Store::read`], but up to the local log end
    /// (the result still reports the high watermark for the follower).
    pub fn read_replica(
        &self,
        topic: &str,
        partition: u32,
        offset: u64,
        max_bytes: usize,
    ) -> Result<ReadResult, StoreError> {
        self.read_up_to(topic, partition, offset, max_bytes, true)
    }

    fn read_up_to(
        &self,
        topic: &str,
        partition: u32,
        offset: u64,
        max_bytes: usize,
        to_log_end: bool,
    ) -> Result<ReadResult, StoreError> {
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
        let empty = ReadResult {
            records: Bytes::new(),
            high_watermark: offsets.high_watermark,
            log_start: offsets.log_start,
            log_end: offsets.log_end,
        };
        let limit = if to_log_end { offsets.log_end } else { offsets.high_watermark };
        if offset >= limit {
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
            let (key, value) = entry?;
            let value = value.value();
            let info = batch_info(value).map_err(|e| StoreError::Storage(format!("corrupt stored batch: {e}")))?;
            if key.value().saturating_add(u64::from(info.record_count)) > limit {
                break;
            }
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
mod cluster_tests;
#[cfg(test)]
pub(crate) mod processor_tests;
#[cfg(test)]
pub(crate) mod tests;
