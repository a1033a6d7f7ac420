//! The single writer thread: group commit of appends, replicated appends,
//! truncations, retention, metadata commands (direct or applied from the Raft
//! log) and snapshot installs, one redb write transaction per round.
//!
//! Invariants (checked with `debug_assert!` where cheap):
//! * Offsets are dense: a batch appended to a partition gets base offset equal
//!   to the partition's log end, and the log end grows by its record count.
//!   A truncation only removes whole batches from the end, so the log stays
//!   dense; retention only removes whole batches from the front.
//! * Jobs are applied in queue order; one caller's appends keep their order.
//! * Every job validates before it writes: a job that fails (other than with
//!   a storage error) leaves the round's transaction as it found it. A
//!   storage error fails the whole round.
//! * The catalog readers see, and every reply, come after the transaction that
//!   made the change durable committed. If the commit fails, every job of the
//!   round is answered with a storage error and the writer reloads its state
//!   from the last committed transaction.
//! * The producer state and the leader-epoch cache of a partition change in
//!   the transaction of the batches they describe (see `producers.rs`,
//!   `epochs.rs`).
//! * An applied Raft entry's marks (`raft_applied`) are written in the
//!   transaction of its command, so after a crash the marks and the
//!   replicated tables agree.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::sync::{Arc, RwLock};
use std::time::Instant;

use bytes::Bytes;
use eddy_protocol::batch::{batch_info, stamp_base_offset, stamp_leader_epoch};
use eddy_protocol::limits::MAX_PARTITIONS;
use eddy_protocol::processors::{processor_group, ProcessorDescription};
use redb::{Database, ReadableTable, Table, TableDefinition, WriteTransaction};
use tokio::sync::mpsc;
use tracing::{debug, error, info};

use super::catalog::LogOffsets;
use super::command::{commit_of, deployment_of, rules_of, ApplyEntry, MetaCommand, MetaOutput, PartitionChange};
use super::epochs::EpochCache;
use super::processors::{self, ProcessorMap};
use super::producers::{self, ProducerBatch, Producers, SequenceCheck, PRODUCER_BATCHES, PRODUCER_REBUILD_BATCHES};
use super::security;
use super::snapshot::Snapshot;
use super::{
    log_table_name, AllGroupOffsets, Appended, Catalog, DurabilityPolicy, Job, PartitionAssignment, PartitionState,
    Reply, StoreError, TopicConfig, TopicState, GROUP_OFFSETS, LEADER_EPOCHS, MAX_COMMIT_BYTES, META, PARTITIONS,
    PRODUCERS, RAFT_APPLIED, TOPICS,
};

/// The in-memory views of committed data that the writer updates after each
/// commit and readers use without touching redb.
pub(crate) struct Shared {
    pub(crate) catalog: Arc<RwLock<Arc<Catalog>>>,
    pub(crate) offsets: Arc<RwLock<AllGroupOffsets>>,
    pub(crate) processors: Arc<RwLock<ProcessorMap>>,
    pub(crate) security: Arc<RwLock<Arc<super::SecurityState>>>,
}

/// A change to the shared committed-offsets map, applied after its commit.
enum OffsetChange {
    Set { group: String, topic: String, partition: u32, offset: u64, metadata: String },
    RemoveTopic(String),
    RemoveGroup(String),
}

impl OffsetChange {
    fn set(group: &str, (topic, partition, offset, metadata): (String, u32, u64, String)) -> Self {
        OffsetChange::Set { group: group.to_string(), topic, partition, offset, metadata }
    }
}

/// Processors changed by the round so far (`None`: deleted), ahead of the
/// shared map until the round commits.
type ProcessorChanges = BTreeMap<String, Option<ProcessorDescription>>;

/// What a round changes in the shared views and the per-round tables, made
/// visible (or written) at its end.
#[derive(Default)]
struct Effects {
    /// Partitions whose offsets or epochs changed: their `partitions` rows
    /// are rewritten and their shared states published.
    touched: BTreeSet<(String, u32)>,
    /// (topic, topic id, partition, producer id) whose `producers` row must
    /// be rewritten (or removed if the producer is gone).
    dirty_producers: BTreeSet<(String, u64, u32, u64)>,
    /// Topics were created, deleted or reconfigured: rebuild the catalog.
    metadata_changed: bool,
    /// A snapshot replaced every committed offset (before `offset_changes`).
    offsets_reset: Option<AllGroupOffsets>,
    offset_changes: Vec<OffsetChange>,
    /// A snapshot replaced every processor (before `processor_changes`).
    processors_reset: Option<ProcessorMap>,
    processor_changes: ProcessorChanges,
    /// Users and rules as changed by the round so far (published at its end).
    security: Option<super::SecurityState>,
}

impl Effects {
    /// The round's working copy of users and rules, taken from the shared
    /// view at first use.
    fn security(&mut self, shared: &Shared) -> &mut super::SecurityState {
        self.security.get_or_insert_with(|| (**shared.security.read().expect("security lock poisoned")).clone())
    }

    /// A processor as of this point of the round.
    fn current_processor(&self, shared: &RwLock<ProcessorMap>, name: &str) -> Option<ProcessorDescription> {
        if let Some(changed) = self.processor_changes.get(name) {
            return changed.clone();
        }
        match &self.processors_reset {
            Some(map) => map.get(name).cloned(),
            None => shared.read().expect("processors lock poisoned").get(name).cloned(),
        }
    }
}

/// Reads every committed group offset.
pub(crate) fn load_group_offsets(db: &Database) -> Result<AllGroupOffsets, StoreError> {
    use redb::ReadableDatabase;
    let txn = db.begin_read()?;
    let table = txn.open_table(GROUP_OFFSETS)?;
    let mut out = AllGroupOffsets::new();
    for entry in table.iter()? {
        let (key, value) = entry?;
        let (group, topic, partition) = key.value();
        let (offset, metadata) = value.value();
        out.entry(group.to_string())
            .or_default()
            .insert((topic.to_string(), partition), (offset, metadata.to_string()));
    }
    Ok(out)
}

/// The writer's own copy of the metadata, ahead of the catalog by at most the
/// round being committed.
pub(crate) struct WriterState {
    topics: BTreeMap<String, WTopic>,
    next_topic_id: u64,
    next_producer_id: u64,
    /// This broker's id: the owner of topics stored without assignments.
    broker_id: u32,
    /// Set when the in-memory state could not be reloaded after a failed
    /// commit: it may be ahead of the database, so no write is accepted until
    /// a reload succeeds (fail-stop rather than risk a gap in offsets).
    poisoned: Option<String>,
}

struct WTopic {
    config: TopicConfig,
    parts: Vec<WPart>,
}

/// The writer's state of one partition.
#[derive(Default)]
struct WPart {
    log_start: u64,
    log_end: u64,
    size_bytes: u64,
    epochs: EpochCache,
    producers: Producers,
}

impl WPart {
    fn offsets(&self) -> LogOffsets {
        LogOffsets { log_start: self.log_start, log_end: self.log_end, size_bytes: self.size_bytes }
    }
}

/// Key range of one partition's rows in a (topic id, partition, u32/u64) table.
fn part_range_u32(id: u64, p: u32) -> std::ops::RangeInclusive<(u64, u32, u32)> {
    (id, p, 0)..=(id, p, u32::MAX)
}

fn part_range_u64(id: u64, p: u32) -> std::ops::RangeInclusive<(u64, u32, u64)> {
    (id, p, 0)..=(id, p, u64::MAX)
}

fn log_def(name: &str) -> TableDefinition<'_, u64, &'static [u8]> {
    TableDefinition::new(name)
}

impl WriterState {
    /// Reads the committed metadata, creating the tables on first open.
    /// Topics stored without assignments get single-broker ones of
    /// `broker_id`; partitions with batches but no cached epoch (stored by an
    /// older version) get epoch 0 at the log start.
    pub(crate) fn load(db: &Database, broker_id: u32) -> Result<Self, StoreError> {
        let txn = db.begin_write()?;
        let mut topics = BTreeMap::new();
        let (next_topic_id, next_producer_id);
        {
            let topic_table = txn.open_table(TOPICS)?;
            let part_table = txn.open_table(PARTITIONS)?;
            let meta = txn.open_table(META)?;
            let mut epoch_table = txn.open_table(LEADER_EPOCHS)?;
            let producer_table = txn.open_table(PRODUCERS)?;
            txn.open_table(GROUP_OFFSETS)?;
            txn.open_table(RAFT_APPLIED)?;
            processors::create_tables(&txn)?;
            next_topic_id = meta.get("next_topic_id")?.map(|v| v.value()).unwrap_or(1);
            next_producer_id = meta.get("next_producer_id")?.map(|v| v.value()).unwrap_or(1);
            for entry in topic_table.iter()? {
                let (name, json) = entry?;
                let mut config: TopicConfig = serde_json::from_slice(json.value())
                    .map_err(|e| StoreError::Storage(format!("corrupt config of topic {}: {e}", name.value())))?;
                config.fill_assignments(broker_id);
                let mut parts = Vec::with_capacity(config.partitions as usize);
                for p in 0..config.partitions {
                    let (log_start, log_end, size_bytes) = part_table
                        .get((config.id, p))?
                        .map(|v| v.value())
                        .ok_or_else(|| StoreError::Storage(format!("missing state of {}/{p}", config.name)))?;
                    let mut entries = Vec::new();
                    for e in epoch_table.range(part_range_u32(config.id, p))? {
                        let (key, start) = e?;
                        entries.push((key.value().2, start.value()));
                    }
                    if entries.is_empty() && log_end > log_start {
                        // Written before epochs existed: all of it is epoch 0
                        // (the epoch field of such batches is whatever the
                        // producer left there).
                        entries.push((0, log_start));
                        epoch_table.insert((config.id, p, 0), log_start)?;
                    }
                    let mut producers = Producers::default();
                    for e in producer_table.range(part_range_u64(config.id, p))? {
                        let (key, value) = e?;
                        let batches = producers::decode(value.value()).map_err(|e| {
                            StoreError::Storage(format!("corrupt producer state of {}/{p}: {e}", config.name))
                        })?;
                        producers.insert_loaded(key.value().2, batches);
                    }
                    parts.push(WPart {
                        log_start,
                        log_end,
                        size_bytes,
                        epochs: EpochCache::from_entries(entries),
                        producers,
                    });
                }
                topics.insert(config.name.clone(), WTopic { config, parts });
            }
        }
        txn.commit()?;
        Ok(Self { topics, next_topic_id, next_producer_id, broker_id, poisoned: None })
    }

    /// Ok if `topic` exists and has `partition`, as of this point of the round.
    pub(crate) fn check_partition(&self, topic: &str, partition: u32) -> Result<(), StoreError> {
        let t = self.topics.get(topic).ok_or_else(|| StoreError::UnknownTopic(topic.to_string()))?;
        if partition >= t.config.partitions {
            return Err(StoreError::UnknownPartition {
                topic: topic.to_string(),
                partition,
                count: t.config.partitions,
            });
        }
        Ok(())
    }

    /// A catalog for this state, reusing the shared partition states of `old`
    /// for topics that still exist with the same id (so long polls keep their
    /// subscriptions and the high watermarks stay).
    pub(crate) fn build_catalog(&self, old: &Catalog) -> Catalog {
        self.topics
            .iter()
            .map(|(name, t)| {
                let previous = old.get(name).filter(|o| o.config.id == t.config.id);
                let partitions = t
                    .parts
                    .iter()
                    .enumerate()
                    .map(|(i, part)| match previous.and_then(|o| o.partitions.get(i)) {
                        Some(shared) => {
                            shared.publish(part.offsets(), &part.epochs);
                            shared.clone()
                        }
                        None => Arc::new(PartitionState::new(part.offsets(), part.epochs.clone())),
                    })
                    .collect();
                (name.clone(), Arc::new(TopicState { config: t.config.clone(), partitions }))
            })
            .collect()
    }

    /// The partition `partition` of topic `topic` if it still has id `topic_id`.
    fn part_mut(&mut self, topic: &str, topic_id: u64, partition: u32) -> Result<&mut WPart, StoreError> {
        let t = self
            .topics
            .get_mut(topic)
            .filter(|t| t.config.id == topic_id)
            .ok_or_else(|| StoreError::UnknownTopic(topic.to_string()))?;
        let count = t.config.partitions;
        t.parts.get_mut(partition as usize).ok_or_else(|| StoreError::UnknownPartition {
            topic: topic.to_string(),
            partition,
            count,
        })
    }
}

/// Sends a job's reply once the round's outcome is known (`Some`: the
/// round's storage error).
type SendReply = Box<dyn FnOnce(Option<&StoreError>)>;

/// A reply waiting for the round's commit: sends its result, or the round's
/// storage error in place of a success if the commit failed.
struct Pending(SendReply);

impl Pending {
    fn new<T: 'static>(reply: Reply<T>, result: Result<T, StoreError>) -> Self {
        Pending(Box::new(move |failed| {
            let value = match (failed, result) {
                (Some(err), Ok(_)) => Err(err.clone()),
                (_, result) => result,
            };
            // A receiver that went away (client disconnected) is not an error.
            let _ = reply.send(value);
        }))
    }
}

/// Queues the reply of a job; a storage error aborts the round.
fn settle<T: 'static>(
    pending: &mut Vec<Pending>,
    reply: Reply<T>,
    result: Result<T, StoreError>,
) -> Result<(), StoreError> {
    let fatal = match &result {
        Err(e @ StoreError::Storage(_)) => Some(e.clone()),
        _ => None,
    };
    pending.push(Pending::new(reply, result));
    match fatal {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

fn job_bytes(job: &Job) -> usize {
    match job {
        Job::Append { batch, .. } => batch.len(),
        Job::Replicate { batches, .. } => batches.iter().map(Bytes::len).sum(),
        Job::Execute { command, .. } => super::command::command_bytes(command),
        Job::Apply { entries, .. } => {
            entries.iter().filter_map(|e| e.command.as_ref()).map(super::command::command_bytes).sum()
        }
        Job::InstallSnapshot { snapshot, .. } => snapshot.bytes(),
        _ => 0,
    }
}

/// The writer loop: runs until a `Stop` job or until every sender is gone.
pub(crate) fn run(
    db: Arc<Database>,
    mut state: WriterState,
    shared: Shared,
    mut rx: mpsc::Receiver<Job>,
    durability: DurabilityPolicy,
) {
    let rt = match tokio::runtime::Builder::new_current_thread().enable_time().build() {
        Ok(rt) => rt,
        Err(e) => {
            error!(error = %e, "store writer cannot start its timer");
            return;
        }
    };
    let mut last_sync = Instant::now();
    let mut unsynced = false;
    loop {
        let first = match (durability, unsynced) {
            (DurabilityPolicy::Interval(every), true) => {
                let wait = every.saturating_sub(last_sync.elapsed());
                match rt.block_on(tokio::time::timeout(wait, rx.recv())) {
                    Ok(Some(job)) => job,
                    Ok(None) => break,
                    Err(_) => {
                        // Idle past the interval with unsynced commits: make them durable.
                        match sync_now(&db) {
                            Ok(()) => {
                                unsynced = false;
                                last_sync = Instant::now();
                            }
                            Err(e) => error!(error = %e, "periodic fsync failed"),
                        }
                        continue;
                    }
                }
            }
            _ => match rx.blocking_recv() {
                Some(job) => job,
                None => break,
            },
        };
        let mut bytes = job_bytes(&first);
        let mut jobs = vec![first];
        while bytes < MAX_COMMIT_BYTES {
            match rx.try_recv() {
                Ok(job) => {
                    bytes += job_bytes(&job);
                    jobs.push(job);
                }
                Err(_) => break,
            }
        }
        let immediate = match durability {
            DurabilityPolicy::EveryCommit => true,
            DurabilityPolicy::Interval(every) => last_sync.elapsed() >= every,
        };
        let stop = round(&db, &mut state, &shared, jobs, immediate);
        if immediate {
            last_sync = Instant::now();
            unsynced = false;
        } else {
            unsynced = true;
        }
        if stop {
            break;
        }
    }
    if unsynced {
        if let Err(e) = sync_now(&db) {
            error!(error = %e, "final fsync failed");
        }
    }
    // Anything still queued is refused.
    rx.close();
    while let Ok(job) = rx.try_recv() {
        refuse(job, StoreError::ShuttingDown);
    }
    info!("store writer stopped");
}

fn refuse(job: Job, err: StoreError) {
    let _ = match job {
        Job::Append { reply, .. } => reply.send(Err(err)).map_err(drop),
        Job::Replicate { reply, .. } | Job::Truncate { reply, .. } | Job::Retention { reply, .. } => {
            reply.send(Err(err)).map_err(drop)
        }
        Job::Execute { reply, .. } => reply.send(Err(err)).map_err(drop),
        Job::Apply { reply, .. } => reply.send(Err(err)).map_err(drop),
        Job::InstallSnapshot { reply, .. } | Job::Stop { reply } => reply.send(Err(err)).map_err(drop),
    };
}

/// An empty durable commit: makes earlier non-durable commits durable.
fn sync_now(db: &Database) -> Result<(), StoreError> {
    let mut txn = db.begin_write()?;
    txn.set_durability(redb::Durability::Immediate).map_err(|e| StoreError::Storage(e.to_string()))?;
    txn.commit()?;
    Ok(())
}

type LogTables<'t> = HashMap<(u64, u32), Table<'t, u64, &'static [u8]>>;

/// Applies one round of jobs in one transaction. Returns whether a Stop job was seen.
fn round(db: &Database, state: &mut WriterState, shared: &Shared, jobs: Vec<Job>, immediate: bool) -> bool {
    if let Some(reason) = state.poisoned.clone() {
        match WriterState::load(db, state.broker_id) {
            Ok(reloaded) => {
                info!("store state reloaded; accepting writes again");
                *state = reloaded;
            }
            Err(_) => {
                let err = StoreError::Storage(format!("storage failed earlier ({reason}); restart the broker"));
                let mut stop = false;
                for job in jobs {
                    match job {
                        Job::Stop { reply } => {
                            let _ = reply.send(Ok(()));
                            stop = true;
                        }
                        other => refuse(other, err.clone()),
                    }
                }
                return stop;
            }
        }
    }
    let started = Instant::now();
    let job_count = jobs.len();
    let mut effects = Effects::default();
    let mut pending = Vec::with_capacity(jobs.len());
    let mut stop_reply = None;
    let mut jobs = jobs.into_iter();
    let outcome = (|| -> Result<(), StoreError> {
        let mut txn = db.begin_write()?;
        if !immediate {
            txn.set_durability(redb::Durability::None).map_err(|e| StoreError::Storage(e.to_string()))?;
        }
        {
            let mut tables: LogTables<'_> = HashMap::new();
            let fx = &mut effects;
            for job in jobs.by_ref() {
                if stop_reply.is_some() {
                    refuse(job, StoreError::ShuttingDown);
                    continue;
                }
                match job {
                    Job::Append { topic, topic_id, partition, batch, leader_epoch, reply } => {
                        let r = append(&txn, &mut tables, state, fx, &topic, topic_id, partition, &batch, leader_epoch);
                        settle(&mut pending, reply, r)?;
                    }
                    Job::Replicate { topic, topic_id, partition, batches, reply } => {
                        let r = replicate(&txn, &mut tables, state, fx, &topic, topic_id, partition, &batches);
                        settle(&mut pending, reply, r)?;
                    }
                    Job::Truncate { topic, topic_id, partition, offset, reply } => {
                        let r = truncate(&txn, &mut tables, state, fx, &topic, topic_id, partition, offset);
                        settle(&mut pending, reply, r)?;
                    }
                    Job::Retention { now_ms, reply } => {
                        tables.clear();
                        let r = retention(&txn, state, now_ms, &mut fx.touched);
                        settle(&mut pending, reply, r)?;
                    }
                    Job::Execute { command, reply } => {
                        tables.clear();
                        let r = execute(&txn, state, shared, fx, command);
                        settle(&mut pending, reply, r)?;
                    }
                    Job::Apply { entries, reply } => {
                        tables.clear();
                        let r = apply(&txn, state, shared, fx, entries);
                        settle(&mut pending, reply, r)?;
                    }
                    Job::InstallSnapshot { snapshot, reply } => {
                        tables.clear();
                        let r = install_snapshot(&txn, state, fx, *snapshot);
                        settle(&mut pending, reply, r)?;
                    }
                    Job::Stop { reply } => stop_reply = Some(reply),
                }
            }
            drop(tables);
            write_round_rows(&txn, state, fx)?;
        }
        txn.commit()?;
        Ok(())
    })();
    match outcome {
        Ok(()) => {
            publish(state, shared, effects);
            for p in pending {
                (p.0)(None);
            }
            debug!(jobs = job_count, elapsed_us = started.elapsed().as_micros() as u64, immediate, "group commit");
        }
        Err(e) => {
            error!(error = %e, "write transaction failed; nothing in it was acknowledged");
            let err = match e {
                StoreError::Storage(_) => e,
                other => StoreError::Storage(other.to_string()),
            };
            for p in pending {
                (p.0)(Some(&err));
            }
            // Jobs the failed round never reached are refused too.
            for job in jobs {
                if let Job::Stop { reply } = job {
                    stop_reply = Some(reply);
                } else {
                    refuse(job, err.clone());
                }
            }
            match WriterState::load(db, state.broker_id) {
                Ok(reloaded) => *state = reloaded,
                Err(e) => {
                    error!(error = %e, "cannot reload store state after a failed commit; refusing writes until it can");
                    state.poisoned = Some(e.to_string());
                }
            }
        }
    }
    if let Some(reply) = stop_reply {
        let _ = reply.send(Ok(()));
        return true;
    }
    false
}

/// Writes the per-round rows: the offsets of every touched partition and the
/// state of every producer that changed.
fn write_round_rows(txn: &WriteTransaction, state: &WriterState, fx: &Effects) -> Result<(), StoreError> {
    let mut parts = txn.open_table(PARTITIONS)?;
    for (topic, p) in &fx.touched {
        if let Some(o) = state.topics.get(topic).and_then(|t| t.parts.get(*p as usize).map(|w| (t.config.id, w))) {
            let (id, w) = o;
            parts.insert((id, *p), (w.log_start, w.log_end, w.size_bytes))?;
        }
    }
    let mut table = txn.open_table(PRODUCERS)?;
    for (topic, id, p, producer) in &fx.dirty_producers {
        let Some(part) = state.topics.get(topic).filter(|t| t.config.id == *id).and_then(|t| t.parts.get(*p as usize))
        else {
            // Topic deleted (its rows went with it) or replaced.
            continue;
        };
        let encoded = producers::encode(part.producers.batches(*producer));
        if encoded.is_empty() {
            table.remove((*id, *p, *producer))?;
        } else {
            table.insert((*id, *p, *producer), encoded.as_slice())?;
        }
    }
    Ok(())
}

/// Makes a committed round visible: catalog (or partition states), offsets
/// and processors.
fn publish(state: &WriterState, shared: &Shared, fx: Effects) {
    let catalog = &*shared.catalog;
    if fx.metadata_changed {
        let old = catalog.read().expect("catalog lock poisoned").clone();
        let new = Arc::new(state.build_catalog(&old));
        *catalog.write().expect("catalog lock poisoned") = new;
    } else {
        let current = catalog.read().expect("catalog lock poisoned").clone();
        for (topic, p) in &fx.touched {
            if let (Some(t), Some(shared)) = (state.topics.get(topic), current.get(topic)) {
                if let (Some(part), Some(shared)) = (t.parts.get(*p as usize), shared.partitions.get(*p as usize)) {
                    shared.publish(part.offsets(), &part.epochs);
                }
            }
        }
    }
    if fx.offsets_reset.is_some() || !fx.offset_changes.is_empty() {
        let mut shared = shared.offsets.write().expect("offsets lock poisoned");
        if let Some(all) = fx.offsets_reset {
            *shared = all;
        }
        for change in fx.offset_changes {
            match change {
                OffsetChange::Set { group, topic, partition, offset, metadata } => {
                    shared.entry(group).or_default().insert((topic, partition), (offset, metadata));
                }
                OffsetChange::RemoveTopic(topic) => {
                    for group in shared.values_mut() {
                        group.retain(|(t, _), _| *t != topic);
                    }
                    shared.retain(|_, g| !g.is_empty());
                }
                OffsetChange::RemoveGroup(group) => {
                    shared.remove(&group);
                }
            }
        }
    }
    if let Some(security) = fx.security {
        *shared.security.write().expect("security lock poisoned") = Arc::new(security);
    }
    if fx.processors_reset.is_some() || !fx.processor_changes.is_empty() {
        let mut map = shared.processors.write().expect("processors lock poisoned");
        if let Some(all) = fx.processors_reset {
            *map = all;
        }
        for (name, change) in fx.processor_changes {
            match change {
                Some(d) => map.insert(name, d),
                None => map.remove(&name),
            };
        }
    }
}

fn log_table<'t, 'm>(
    txn: &'t WriteTransaction,
    tables: &'m mut LogTables<'t>,
    topic_id: u64,
    partition: u32,
) -> Result<&'m mut Table<'t, u64, &'static [u8]>, StoreError> {
    use std::collections::hash_map::Entry;
    Ok(match tables.entry((topic_id, partition)) {
        Entry::Occupied(e) => e.into_mut(),
        Entry::Vacant(v) => {
            let name = log_table_name(topic_id, partition);
            v.insert(txn.open_table(log_def(&name))?)
        }
    })
}

/// Records a batch appended at `base` in the partition's epoch cache and
/// producer state (both paths of appending).
#[allow(clippy::too_many_arguments)]
fn note_batch(
    txn: &WriteTransaction,
    p: &mut WPart,
    fx: &mut Effects,
    topic: &str,
    topic_id: u64,
    partition: u32,
    base: u64,
    info: &eddy_protocol::batch::BatchInfo,
) -> Result<(), StoreError> {
    if p.epochs.opens(info.leader_epoch) {
        p.epochs.record(info.leader_epoch, base);
        txn.open_table(LEADER_EPOCHS)?.insert((topic_id, partition, info.leader_epoch), base)?;
    }
    if info.producer_id != 0 {
        let batch =
            ProducerBatch { base_sequence: info.base_sequence, record_count: info.record_count, base_offset: base };
        if let Some(evicted) = p.producers.record(info.producer_id, batch) {
            fx.dirty_producers.insert((topic.to_string(), topic_id, partition, evicted));
        }
        fx.dirty_producers.insert((topic.to_string(), topic_id, partition, info.producer_id));
    }
    Ok(())
}

/// A leader append: dedups idempotent producers, stamps base offset and
/// epoch, writes the batch at the log end.
#[allow(clippy::too_many_arguments)]
fn append<'t>(
    txn: &'t WriteTransaction,
    tables: &mut LogTables<'t>,
    state: &mut WriterState,
    fx: &mut Effects,
    topic: &str,
    topic_id: u64,
    partition: u32,
    batch: &Bytes,
    leader_epoch: u32,
) -> Result<Appended, StoreError> {
    let p = state.part_mut(topic, topic_id, partition)?;
    let mut info =
        batch_info(batch).map_err(|e| StoreError::Storage(format!("unvalidated batch reached the log: {e}")))?;
    debug_assert_eq!(info.length as usize, batch.len());
    debug_assert!(info.record_count > 0);
    if let Some(current) = p.epochs.last_epoch().filter(|&last| leader_epoch < last) {
        return Err(StoreError::FencedLeaderEpoch {
            topic: topic.to_string(),
            partition,
            epoch: leader_epoch,
            current,
        });
    }
    if info.producer_id != 0 {
        match p.producers.check(info.producer_id, info.base_sequence, info.record_count) {
            SequenceCheck::Append => {}
            SequenceCheck::Duplicate(b) => {
                return Ok(Appended {
                    base_offset: b.base_offset,
                    next_offset: b.base_offset + u64::from(b.record_count),
                    duplicate: true,
                })
            }
            SequenceCheck::Stale { expected } => {
                return Err(StoreError::InvalidRequest(format!(
                    "{topic}/{partition}: batch of producer {} with sequence {} ({} records) is behind the next \
                     expected sequence {expected} and matches none of its last {PRODUCER_BATCHES} batches; it was \
                     appended long ago or never",
                    info.producer_id, info.base_sequence, info.record_count
                )))
            }
            SequenceCheck::OutOfOrder { expected } => {
                return Err(StoreError::OutOfOrderSequence {
                    topic: topic.to_string(),
                    partition,
                    producer_id: info.producer_id,
                    expected,
                    got: info.base_sequence,
                })
            }
        }
    }
    let base = p.log_end;
    let table = log_table(txn, tables, topic_id, partition)?;
    let mut slot = table.insert_reserve(base, batch.len())?;
    let dest: &mut [u8] = slot.as_mut();
    dest.copy_from_slice(batch);
    stamp_base_offset(dest, base);
    stamp_leader_epoch(dest, leader_epoch);
    drop(slot);
    p.log_end += u64::from(info.record_count);
    p.size_bytes += batch.len() as u64;
    info.leader_epoch = leader_epoch;
    let next_offset = p.log_end;
    note_batch(txn, p, fx, topic, topic_id, partition, base, &info)?;
    fx.touched.insert((topic.to_string(), partition));
    Ok(Appended { base_offset: base, next_offset, duplicate: false })
}

/// A follower append of the leader's batches (already checked to be whole,
/// contiguous batches): skips those below the log end, refuses a gap, stores
/// the rest byte for byte. Returns the new log end.
#[allow(clippy::too_many_arguments)]
fn replicate<'t>(
    txn: &'t WriteTransaction,
    tables: &mut LogTables<'t>,
    state: &mut WriterState,
    fx: &mut Effects,
    topic: &str,
    topic_id: u64,
    partition: u32,
    batches: &[Bytes],
) -> Result<u64, StoreError> {
    let p = state.part_mut(topic, topic_id, partition)?;
    let mut infos = Vec::with_capacity(batches.len());
    let mut end = p.log_end;
    let mut last_epoch = p.epochs.last_epoch();
    for b in batches {
        let info = batch_info(b).map_err(|e| StoreError::InvalidRequest(format!("{topic}/{partition}: {e}")))?;
        let next = info.base_offset.saturating_add(u64::from(info.record_count));
        if next <= p.log_end {
            continue; // Already here (a refetch overlapping the log end).
        }
        if info.base_offset != end {
            let what = if info.base_offset > end { "leaves a gap after" } else { "overlaps" };
            return Err(StoreError::InvalidRequest(format!(
                "{topic}/{partition}: replicated batch at offsets {}..{next} {what} the log end {end}; fetch from the \
                 log end",
                info.base_offset
            )));
        }
        if let Some(last) = last_epoch.filter(|&last| info.leader_epoch < last) {
            return Err(StoreError::InvalidRequest(format!(
                "{topic}/{partition}: replicated batch at offset {} has leader epoch {} below the log's epoch {last}",
                info.base_offset, info.leader_epoch
            )));
        }
        last_epoch = Some(info.leader_epoch);
        end = next;
        infos.push((b, info));
    }
    if infos.is_empty() {
        return Ok(p.log_end);
    }
    let table = log_table(txn, tables, topic_id, partition)?;
    for (b, info) in &infos {
        debug_assert_eq!(info.base_offset, p.log_end);
        table.insert(info.base_offset, b.as_ref())?;
        p.log_end += u64::from(info.record_count);
        p.size_bytes += b.len() as u64;
    }
    for (_, info) in &infos {
        note_batch(txn, p, fx, topic, topic_id, partition, info.base_offset, info)?;
    }
    fx.touched.insert((topic.to_string(), partition));
    Ok(p.log_end)
}

/// Removes every batch that reaches `offset` or beyond (a straddling batch
/// whole), from the log, the epoch cache and the producer state. Returns the
/// new log end.
#[allow(clippy::too_many_arguments)]
fn truncate<'t>(
    txn: &'t WriteTransaction,
    tables: &mut LogTables<'t>,
    state: &mut WriterState,
    fx: &mut Effects,
    topic: &str,
    topic_id: u64,
    partition: u32,
    offset: u64,
) -> Result<u64, StoreError> {
    let p = state.part_mut(topic, topic_id, partition)?;
    let target = offset.max(p.log_start);
    if target >= p.log_end {
        return Ok(p.log_end);
    }
    let table = log_table(txn, tables, topic_id, partition)?;
    // The batch holding `target` starts at or before it; retention keeps the
    // first batch at the log start, so there is one unless the log is empty.
    let cut = match table.range(..=target)?.next_back() {
        Some(entry) => entry?.0.value().max(p.log_start),
        None => p.log_start,
    };
    let mut removed = Vec::new();
    for entry in table.range(cut..)? {
        let (key, value) = entry?;
        removed.push((key.value(), value.value().len() as u64));
    }
    for (key, _) in &removed {
        table.remove(*key)?;
    }
    let removed_bytes: u64 = removed.iter().map(|r| r.1).sum();
    debug_assert!(removed_bytes <= p.size_bytes);
    p.log_end = cut;
    p.size_bytes -= removed_bytes.min(p.size_bytes);
    debug_assert!(p.log_start <= p.log_end);
    // Producers that lost every remembered batch are rebuilt from the last
    // PRODUCER_REBUILD_BATCHES batches of the remaining log, or dropped.
    let changed = p.producers.truncate(cut);
    let emptied: HashSet<u64> = changed.iter().filter(|c| c.1).map(|c| c.0).collect();
    if !emptied.is_empty() {
        let mut found: HashMap<u64, VecDeque<ProducerBatch>> = HashMap::new();
        for entry in table.range(..cut)?.rev().take(PRODUCER_REBUILD_BATCHES) {
            let (key, value) = entry?;
            let info = batch_info(value.value()).map_err(|e| StoreError::Storage(e.to_string()))?;
            if emptied.contains(&info.producer_id) {
                let batches = found.entry(info.producer_id).or_default();
                if batches.len() < PRODUCER_BATCHES {
                    batches.push_front(ProducerBatch {
                        base_sequence: info.base_sequence,
                        record_count: info.record_count,
                        base_offset: key.value(),
                    });
                }
            }
        }
        for (id, batches) in found {
            p.producers.insert_loaded(id, batches);
        }
    }
    for (id, _) in changed {
        fx.dirty_producers.insert((topic.to_string(), topic_id, partition, id));
    }
    let dropped = p.epochs.truncate(cut);
    let new_end = p.log_end;
    if !dropped.is_empty() {
        let mut epochs = txn.open_table(LEADER_EPOCHS)?;
        for e in dropped {
            epochs.remove((topic_id, partition, e))?;
        }
    }
    fx.touched.insert((topic.to_string(), partition));
    info!(topic, partition, offset, new_end, batches = removed.len(), "log truncated");
    Ok(new_end)
}

fn write_config(txn: &WriteTransaction, config: &TopicConfig) -> Result<(), StoreError> {
    debug_assert_eq!(config.assignments.len(), config.partitions as usize);
    let json = serde_json::to_vec(config).map_err(|e| StoreError::Storage(e.to_string()))?;
    txn.open_table(TOPICS)?.insert(config.name.as_str(), json.as_slice())?;
    Ok(())
}

/// Creates empty partitions (state rows and log tables) `range` of a topic.
fn init_partitions(txn: &WriteTransaction, topic_id: u64, range: std::ops::Range<u32>) -> Result<(), StoreError> {
    let mut parts = txn.open_table(PARTITIONS)?;
    for p in range {
        parts.insert((topic_id, p), (0u64, 0u64, 0u64))?;
        let name = log_table_name(topic_id, p);
        // A leftover of the same name would not be ours: start empty.
        txn.delete_table(log_def(&name))?;
        txn.open_table(log_def(&name))?;
    }
    Ok(())
}

/// Deletes everything local of one partition: log, offsets row, epoch cache
/// and producer state.
fn delete_partition_data(txn: &WriteTransaction, topic_id: u64, p: u32) -> Result<(), StoreError> {
    txn.open_table(PARTITIONS)?.remove((topic_id, p))?;
    let name = log_table_name(topic_id, p);
    txn.delete_table(log_def(&name))?;
    txn.open_table(LEADER_EPOCHS)?.retain_in(part_range_u32(topic_id, p), |_, _| false)?;
    txn.open_table(PRODUCERS)?.retain_in(part_range_u64(topic_id, p), |_, _| false)?;
    Ok(())
}

fn invalid_assignment(topic: &str, partition: usize, message: String) -> StoreError {
    StoreError::InvalidRequest(format!("assignment of {topic}/{partition}: {message}"))
}

/// Checks that `assignments` are valid assignments of partitions `first..`.
fn check_assignments(topic: &str, first: u32, assignments: &[PartitionAssignment]) -> Result<(), StoreError> {
    for (i, a) in assignments.iter().enumerate() {
        a.validate().map_err(|m| invalid_assignment(topic, first as usize + i, m))?;
    }
    Ok(())
}

fn create_topic(
    txn: &WriteTransaction,
    state: &mut WriterState,
    mut config: TopicConfig,
) -> Result<TopicConfig, StoreError> {
    if state.topics.contains_key(&config.name) {
        return Err(StoreError::TopicExists(config.name));
    }
    if config.partitions == 0 || config.partitions > MAX_PARTITIONS {
        return Err(StoreError::InvalidPartitions(format!(
            "topic '{}' needs 1 to {MAX_PARTITIONS} partitions, not {}",
            config.name, config.partitions
        )));
    }
    if config.assignments.len() != config.partitions as usize {
        return Err(StoreError::InvalidRequest(format!(
            "topic '{}' has {} partitions but {} assignments",
            config.name,
            config.partitions,
            config.assignments.len()
        )));
    }
    check_assignments(&config.name, 0, &config.assignments)?;
    config.id = state.next_topic_id;
    state.next_topic_id += 1;
    txn.open_table(META)?.insert("next_topic_id", state.next_topic_id)?;
    write_config(txn, &config)?;
    init_partitions(txn, config.id, 0..config.partitions)?;
    let parts = (0..config.partitions).map(|_| WPart::default()).collect();
    state.topics.insert(config.name.clone(), WTopic { config: config.clone(), parts });
    info!(topic = %config.name, partitions = config.partitions, "topic created");
    Ok(config)
}

fn delete_topic(txn: &WriteTransaction, state: &mut WriterState, name: &str) -> Result<(), StoreError> {
    let t = state.topics.get(name).ok_or_else(|| StoreError::UnknownTopic(name.to_string()))?;
    for p in 0..t.config.partitions {
        delete_partition_data(txn, t.config.id, p)?;
    }
    txn.open_table(TOPICS)?.remove(name)?;
    delete_topic_offsets(txn, name)?;
    state.topics.remove(name);
    info!(topic = %name, "topic deleted");
    Ok(())
}

fn add_partitions(
    txn: &WriteTransaction,
    state: &mut WriterState,
    name: &str,
    count: u32,
    assignments: Vec<PartitionAssignment>,
) -> Result<TopicConfig, StoreError> {
    let t = state.topics.get_mut(name).ok_or_else(|| StoreError::UnknownTopic(name.to_string()))?;
    let current = t.config.partitions;
    if count <= current {
        return Err(StoreError::InvalidPartitions(format!(
            "topic '{name}' has {current} partitions; the count can only grow (asked for {count})"
        )));
    }
    if count > MAX_PARTITIONS {
        return Err(StoreError::InvalidPartitions(format!(
            "partition count {count} is over the limit of {MAX_PARTITIONS}"
        )));
    }
    if assignments.len() != (count - current) as usize {
        return Err(StoreError::InvalidRequest(format!(
            "growing topic '{name}' from {current} to {count} partitions needs {} assignments, not {}",
            count - current,
            assignments.len()
        )));
    }
    check_assignments(name, current, &assignments)?;
    let mut config = t.config.clone();
    config.partitions = count;
    config.assignments.extend(assignments);
    write_config(txn, &config)?;
    init_partitions(txn, config.id, current..count)?;
    t.parts.resize_with(count as usize, WPart::default);
    t.config = config.clone();
    info!(topic = %name, from = current, to = count, "partitions added");
    Ok(config)
}

/// Applies each change whose expectations hold; rewrites the configs of the
/// topics changed. Shapes are validated first (all or nothing).
fn alter_partitions(
    txn: &WriteTransaction,
    state: &mut WriterState,
    changes: &[PartitionChange],
) -> Result<Vec<bool>, StoreError> {
    for c in changes {
        c.assignment.validate().map_err(|m| invalid_assignment(&c.topic, c.partition as usize, m))?;
    }
    let mut results = Vec::with_capacity(changes.len());
    let mut changed = BTreeSet::new();
    for c in changes {
        let current = state.topics.get_mut(&c.topic).and_then(|t| t.config.assignments.get_mut(c.partition as usize));
        let applies = match current {
            Some(a) if a.leader_epoch == c.expected_leader_epoch && a.version == c.expected_version => {
                *a = c.assignment.clone();
                changed.insert(c.topic.as_str());
                true
            }
            _ => false,
        };
        results.push(applies);
    }
    for name in changed {
        write_config(txn, &state.topics[name].config)?;
    }
    Ok(results)
}

/// Deletes whole batches from the front of each partition while they are older
/// than the topic's retention time or the partition is over its retention size.
fn retention(
    txn: &WriteTransaction,
    state: &mut WriterState,
    now_ms: i64,
    touched: &mut BTreeSet<(String, u32)>,
) -> Result<u64, StoreError> {
    let mut deleted = 0;
    for (name, t) in state.topics.iter_mut() {
        let (by_time, by_bytes) = (t.config.retention_ms, t.config.retention_bytes);
        if by_time.is_none() && by_bytes.is_none() {
            continue;
        }
        let cutoff = by_time.map(|ms| now_ms.saturating_sub(i64::try_from(ms).unwrap_or(i64::MAX)));
        for (p, part) in t.parts.iter_mut().enumerate() {
            let table_name = log_table_name(t.config.id, p as u32);
            let mut table = txn.open_table(log_def(&table_name))?;
            let before = deleted;
            loop {
                let Some((key, value)) = table.first()? else { break };
                let base = key.value();
                let info = batch_info(value.value()).map_err(|e| StoreError::Storage(e.to_string()))?;
                drop((key, value));
                let expired = cutoff.is_some_and(|c| info.max_timestamp < c);
                let oversized = by_bytes.is_some_and(|max| part.size_bytes > max);
                if !(expired || oversized) {
                    break;
                }
                table.remove(base)?;
                part.log_start = base + u64::from(info.record_count);
                part.size_bytes -= u64::from(info.length);
                deleted += 1;
                touched.insert((name.clone(), p as u32));
            }
            if deleted > before {
                let pruned = part.epochs.prune_below(part.log_start);
                if !pruned.is_empty() {
                    let mut epochs = txn.open_table(LEADER_EPOCHS)?;
                    for e in pruned {
                        epochs.remove((t.config.id, p as u32, e))?;
                    }
                }
            }
            debug_assert!(part.log_start <= part.log_end);
        }
    }
    if deleted > 0 {
        info!(batches = deleted, "retention deleted old batches");
    }
    Ok(deleted)
}

/// Validates every entry (topic and partition exist), then writes them all.
pub(crate) fn commit_offsets(
    txn: &WriteTransaction,
    state: &WriterState,
    group: &str,
    entries: &[(String, u32, u64, String)],
) -> Result<(), StoreError> {
    for (topic, partition, _, _) in entries {
        state.check_partition(topic, *partition)?;
    }
    let mut table = txn.open_table(GROUP_OFFSETS)?;
    for (topic, partition, offset, metadata) in entries {
        table.insert((group, topic.as_str(), *partition), (*offset, metadata.as_str()))?;
    }
    Ok(())
}

/// Deletes every group's committed offsets of `topic` (a scan of the table:
/// deletions are rare, and the table, not a possibly older in-memory view,
/// is what must lose them).
fn delete_topic_offsets(txn: &WriteTransaction, topic: &str) -> Result<(), StoreError> {
    txn.open_table(GROUP_OFFSETS)?.retain(|(_, t, _), _| t != topic)?;
    Ok(())
}

/// Applies one metadata command. The same code serves the direct store
/// methods and the Raft log: deterministic given the replicated state.
fn execute(
    txn: &WriteTransaction,
    state: &mut WriterState,
    shared: &Shared,
    fx: &mut Effects,
    command: MetaCommand,
) -> Result<MetaOutput, StoreError> {
    match command {
        MetaCommand::CreateTopic { config } => {
            let config = create_topic(txn, state, config)?;
            fx.metadata_changed = true;
            Ok(MetaOutput::Topic(config))
        }
        MetaCommand::DeleteTopic { name } => {
            delete_topic(txn, state, &name)?;
            fx.metadata_changed = true;
            fx.touched.retain(|(t, _)| t != &name);
            fx.offset_changes.push(OffsetChange::RemoveTopic(name));
            Ok(MetaOutput::Done)
        }
        MetaCommand::AddPartitions { name, count, assignments } => {
            let config = add_partitions(txn, state, &name, count, assignments)?;
            fx.metadata_changed = true;
            Ok(MetaOutput::Topic(config))
        }
        MetaCommand::AlterPartitions { changes } => {
            let altered = alter_partitions(txn, state, &changes)?;
            fx.metadata_changed |= altered.iter().any(|&a| a);
            Ok(MetaOutput::Altered(altered))
        }
        MetaCommand::CommitOffsets { group, offsets } => {
            commit_offsets(txn, state, &group, &offsets)?;
            fx.offset_changes.extend(offsets.into_iter().map(|e| OffsetChange::set(&group, e)));
            Ok(MetaOutput::Done)
        }
        MetaCommand::DeployProcessor { description, wasm, initial_offsets } => {
            let deployment = deployment_of(description, wasm, initial_offsets)?;
            let name = deployment.description.name.clone();
            let current = fx.current_processor(&shared.processors, &name);
            let (d, written) = processors::deploy(txn, state, current.as_ref(), deployment)?;
            let group = processor_group(&name);
            fx.offset_changes.extend(written.into_iter().map(|e| OffsetChange::set(&group, e)));
            fx.processor_changes.insert(name, Some(d.clone()));
            Ok(MetaOutput::Processor(d))
        }
        MetaCommand::DeleteProcessor { name } => {
            let current = fx.current_processor(&shared.processors, &name);
            processors::delete(txn, current.as_ref(), &name)?;
            fx.offset_changes.push(OffsetChange::RemoveGroup(processor_group(&name)));
            fx.processor_changes.insert(name, None);
            Ok(MetaOutput::Done)
        }
        MetaCommand::CommitProcessorBatch { name, offsets, state: writes, stats } => {
            let commit = commit_of(name, offsets, writes, stats)?;
            let current = fx.current_processor(&shared.processors, &commit.name);
            let d = processors::commit_batch(txn, state, current.as_ref(), &commit)?;
            let group = processor_group(&commit.name);
            fx.offset_changes.extend(commit.offsets.into_iter().map(|e| OffsetChange::set(&group, e)));
            fx.processor_changes.insert(commit.name, Some(d));
            Ok(MetaOutput::Done)
        }
        MetaCommand::SetProcessorStatus { name, version, status, reason } => {
            let current = fx.current_processor(&shared.processors, &name);
            let updated = processors::set_status(txn, current.as_ref(), &name, version, &status, &reason)?;
            let set = updated.is_some();
            if let Some(d) = updated {
                fx.processor_changes.insert(name, Some(d));
            }
            Ok(MetaOutput::Flag(set))
        }
        // The security functions validate before they change the working
        // copy, so a refused command leaves it as it was.
        MetaCommand::CreateUser { name, credential, replace } => {
            security::create_user(txn, fx.security(shared), &name, &credential, replace)?;
            Ok(MetaOutput::Done)
        }
        MetaCommand::DeleteUser { name } => {
            security::delete_user(txn, fx.security(shared), &name)?;
            Ok(MetaOutput::Done)
        }
        MetaCommand::BootstrapUser { name, credential } => {
            Ok(MetaOutput::Flag(security::bootstrap_user(txn, fx.security(shared), &name, &credential)?))
        }
        MetaCommand::CreateAcls { rules } => {
            security::create_acls(txn, fx.security(shared), &rules_of(rules)?)?;
            Ok(MetaOutput::Done)
        }
        MetaCommand::DeleteAcls { rules } => {
            Ok(MetaOutput::Count(security::delete_acls(txn, fx.security(shared), &rules_of(rules)?)?))
        }
        MetaCommand::AllocateProducerId => {
            let id = state.next_producer_id;
            let next = id
                .checked_add(1)
                .ok_or_else(|| StoreError::InvalidRequest("every producer id has been allocated".into()))?;
            txn.open_table(META)?.insert("next_producer_id", next)?;
            state.next_producer_id = next;
            debug_assert_ne!(id, 0);
            Ok(MetaOutput::ProducerId(id))
        }
    }
}

/// Applies Raft entries in order, each with its applied (and membership)
/// mark. A command's own failure is its entry's result and still advances
/// the marks; a storage failure fails the whole job.
fn apply(
    txn: &WriteTransaction,
    state: &mut WriterState,
    shared: &Shared,
    fx: &mut Effects,
    entries: Vec<ApplyEntry>,
) -> Result<Vec<Result<MetaOutput, StoreError>>, StoreError> {
    let mut results = Vec::with_capacity(entries.len());
    for entry in entries {
        let r = match entry.command {
            Some(command) => execute(txn, state, shared, fx, command),
            None => Ok(MetaOutput::Done),
        };
        if let Err(e @ StoreError::Storage(_)) = r {
            return Err(e);
        }
        let mut marks = txn.open_table(RAFT_APPLIED)?;
        marks.insert("applied", entry.applied.as_ref())?;
        if let Some(m) = &entry.membership {
            marks.insert("membership", m.as_ref())?;
        }
        results.push(r);
    }
    Ok(results)
}

/// Empties a table (in this transaction) and returns it opened.
fn replace_table<'t, K: redb::Key + 'static, V: redb::Value + 'static>(
    txn: &'t WriteTransaction,
    def: TableDefinition<'static, K, V>,
) -> Result<Table<'t, K, V>, StoreError> {
    txn.delete_table(def)?;
    Ok(txn.open_table(def)?)
}

/// Replaces the replicated tables with the snapshot's content. Local topics
/// the snapshot lacks, or has under another id, are deleted with their logs;
/// topics new in it get empty partitions; topics with the same name and id
/// keep their logs, epochs and producer state.
fn install_snapshot(
    txn: &WriteTransaction,
    state: &mut WriterState,
    fx: &mut Effects,
    snap: Snapshot,
) -> Result<(), StoreError> {
    // Validate everything first.
    let bad = |m: String| StoreError::InvalidRequest(format!("invalid snapshot: {m}"));
    let mut names = BTreeMap::new();
    let mut ids = BTreeSet::new();
    for c in &snap.topics {
        if names.insert(c.name.as_str(), c.id).is_some() || !ids.insert(c.id) {
            return Err(bad(format!("topic '{}' or id {} appears twice", c.name, c.id)));
        }
        if c.id == 0 || c.id >= snap.next_topic_id {
            return Err(bad(format!("topic '{}' has id {} (next id {})", c.name, c.id, snap.next_topic_id)));
        }
        if c.partitions == 0 || c.partitions > MAX_PARTITIONS || c.assignments.len() != c.partitions as usize {
            return Err(bad(format!(
                "topic '{}' has {} partitions, {} assignments",
                c.name,
                c.partitions,
                c.assignments.len()
            )));
        }
        check_assignments(&c.name, 0, &c.assignments)?;
    }
    if snap.next_producer_id == 0 {
        return Err(bad("next producer id 0".into()));
    }
    let processors = snap.processor_map()?;
    let offsets = snap.offsets_map();
    // Topics: delete what goes, keep what stays, create what is new.
    let old = std::mem::take(&mut state.topics);
    let mut kept = BTreeMap::new();
    for (name, t) in old {
        if names.get(name.as_str()) == Some(&t.config.id) {
            kept.insert(name, t);
        } else {
            for p in 0..t.config.partitions {
                delete_partition_data(txn, t.config.id, p)?;
            }
            info!(topic = %name, id = t.config.id, "topic removed by snapshot");
        }
    }
    let mut topics = replace_table(txn, TOPICS)?;
    for config in snap.topics {
        let json = serde_json::to_vec(&config).map_err(|e| StoreError::Storage(e.to_string()))?;
        topics.insert(config.name.as_str(), json.as_slice())?;
        let topic = match kept.remove(&config.name) {
            Some(mut t) => {
                let (have, want) = (t.parts.len() as u32, config.partitions);
                if want > have {
                    init_partitions(txn, config.id, have..want)?;
                } else {
                    for p in want..have {
                        delete_partition_data(txn, config.id, p)?;
                    }
                }
                t.parts.resize_with(want as usize, WPart::default);
                t.config = config;
                t
            }
            None => {
                init_partitions(txn, config.id, 0..config.partitions)?;
                let parts = (0..config.partitions).map(|_| WPart::default()).collect();
                WTopic { config, parts }
            }
        };
        state.topics.insert(topic.config.name.clone(), topic);
    }
    drop(topics);
    debug_assert!(kept.is_empty());
    // Counters and the other replicated tables.
    let mut meta = txn.open_table(META)?;
    meta.insert("next_topic_id", snap.next_topic_id)?;
    meta.insert("next_producer_id", snap.next_producer_id)?;
    drop(meta);
    state.next_topic_id = snap.next_topic_id;
    state.next_producer_id = snap.next_producer_id;
    let mut table = replace_table(txn, GROUP_OFFSETS)?;
    for (group, topic, partition, offset, metadata) in &snap.group_offsets {
        table.insert((group.as_str(), topic.as_str(), *partition), (*offset, metadata.as_str()))?;
    }
    drop(table);
    let mut table = replace_table(txn, processors::PROCESSORS)?;
    for (name, description) in &snap.processors {
        table.insert(name.as_str(), description.as_ref())?;
    }
    drop(table);
    let mut table = replace_table(txn, processors::PROCESSOR_STATS)?;
    for (name, stats) in &snap.processor_stats {
        table.insert(name.as_str(), *stats)?;
    }
    drop(table);
    let mut table = replace_table(txn, processors::PROCESSOR_MODULES)?;
    for (name, version, chunk, bytes) in &snap.processor_modules {
        table.insert((name.as_str(), *version, *chunk), bytes.as_ref())?;
    }
    drop(table);
    let mut table = replace_table(txn, processors::PROCESSOR_STATE)?;
    for (name, partition, key, value) in &snap.processor_state {
        table.insert((name.as_str(), *partition, key.as_ref()), value.as_ref())?;
    }
    drop(table);
    fx.security = Some(security::install(txn, &snap.users, &snap.acls, snap.security_bootstrapped)?);
    let mut table = replace_table(txn, RAFT_APPLIED)?;
    if let Some(applied) = &snap.applied {
        table.insert("applied", applied.as_ref())?;
    }
    if let Some(membership) = &snap.membership {
        table.insert("membership", membership.as_ref())?;
    }
    drop(table);
    // The shared views: rebuilt from the snapshot; earlier changes of this
    // round are superseded.
    fx.metadata_changed = true;
    fx.offsets_reset = Some(offsets);
    fx.offset_changes.clear();
    fx.processors_reset = Some(processors);
    fx.processor_changes.clear();
    info!(topics = state.topics.len(), "snapshot installed");
    Ok(())
}
