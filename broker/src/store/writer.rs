//! The single writer thread: group commit of appends, admin changes, retention,
//! offset commits and processor changes, one redb write transaction per round.
//!
//! Invariants (checked with `debug_assert!` where cheap):
//! * Offsets are dense: a batch appended to a partition gets base offset equal
//!   to the partition's log end, and the log end grows by its record count.
//! * Jobs are applied in queue order; one caller's appends keep their order.
//! * The catalog readers see, and every reply, come after the transaction that
//!   made the change durable committed. If the commit fails, every job of the
//!   round is answered with a storage error and the writer reloads its state
//!   from the last committed transaction.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, RwLock};
use std::time::Instant;

use bytes::Bytes;
use eddy_protocol::batch::{batch_info, stamp_base_offset};
use eddy_protocol::processors::{processor_group, ProcessorDescription};
use redb::{Database, ReadableTable, Table, TableDefinition, WriteTransaction};
use tokio::sync::mpsc;
use tracing::{debug, error, info};

use super::processors::{self, ProcessorMap};
use super::{
    log_table_name, AllGroupOffsets, Catalog, DurabilityPolicy, Job, PartitionOffsets, PartitionState, Reply,
    StoreError, TopicConfig, TopicState, GROUP_OFFSETS, MAX_COMMIT_BYTES, META, PARTITIONS, TOPICS,
};

/// The in-memory views of committed data that the writer updates after each
/// commit and readers use without touching redb.
pub(crate) struct Shared {
    pub(crate) catalog: Arc<RwLock<Arc<Catalog>>>,
    pub(crate) offsets: Arc<RwLock<AllGroupOffsets>>,
    pub(crate) processors: Arc<RwLock<ProcessorMap>>,
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

/// A processor as of this point of the round.
fn current_processor(
    changes: &ProcessorChanges,
    shared: &RwLock<ProcessorMap>,
    name: &str,
) -> Option<ProcessorDescription> {
    match changes.get(name) {
        Some(changed) => changed.clone(),
        None => shared.read().expect("processors lock poisoned").get(name).cloned(),
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
    /// Set when the in-memory state could not be reloaded after a failed
    /// commit: it may be ahead of the database, so no write is accepted until
    /// a reload succeeds (fail-stop rather than risk a gap in offsets).
    poisoned: Option<String>,
}

#[derive(Clone)]
struct WTopic {
    config: TopicConfig,
    parts: Vec<PartitionOffsets>,
}

impl WriterState {
    /// Reads the committed metadata, creating the metadata tables on first open.
    pub(crate) fn load(db: &Database) -> Result<Self, StoreError> {
        let txn = db.begin_write()?;
        let mut topics = BTreeMap::new();
        let next_topic_id;
        {
            let topic_table = txn.open_table(TOPICS)?;
            let part_table = txn.open_table(PARTITIONS)?;
            let meta = txn.open_table(META)?;
            txn.open_table(GROUP_OFFSETS)?;
            processors::create_tables(&txn)?;
            next_topic_id = meta.get("next_topic_id")?.map(|v| v.value()).unwrap_or(1);
            for entry in topic_table.iter()? {
                let (name, json) = entry?;
                let config: TopicConfig = serde_json::from_slice(json.value())
                    .map_err(|e| StoreError::Storage(format!("corrupt config of topic {}: {e}", name.value())))?;
                let mut parts = Vec::with_capacity(config.partitions as usize);
                for p in 0..config.partitions {
                    let (log_start, log_end, size_bytes) = part_table
                        .get((config.id, p))?
                        .map(|v| v.value())
                        .ok_or_else(|| StoreError::Storage(format!("missing state of {}/{p}", config.name)))?;
                    parts.push(PartitionOffsets { log_start, log_end, size_bytes });
                }
                topics.insert(config.name.clone(), WTopic { config, parts });
            }
        }
        txn.commit()?;
        Ok(Self { topics, next_topic_id, poisoned: None })
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
    /// for topics that still exist (so long polls keep their subscriptions).
    pub(crate) fn build_catalog(&self, old: &Catalog) -> Catalog {
        self.topics
            .iter()
            .map(|(name, t)| {
                let previous = old.get(name).filter(|o| o.config.id == t.config.id);
                let partitions = t
                    .parts
                    .iter()
                    .enumerate()
                    .map(|(i, offsets)| match previous.and_then(|o| o.partitions.get(i)) {
                        Some(shared) => {
                            shared.publish(*offsets);
                            shared.clone()
                        }
                        None => Arc::new(PartitionState::new(*offsets)),
                    })
                    .collect();
                (name.clone(), Arc::new(TopicState { config: t.config.clone(), partitions }))
            })
            .collect()
    }
}

/// A reply waiting for the round's commit.
enum Pending {
    Offset(Reply<u64>, Result<u64, StoreError>),
    Config(Reply<TopicConfig>, Result<TopicConfig, StoreError>),
    Unit(Reply<()>, Result<(), StoreError>),
    Count(Reply<u64>, Result<u64, StoreError>),
    Description(Reply<ProcessorDescription>, Result<ProcessorDescription, StoreError>),
    Flag(Reply<bool>, Result<bool, StoreError>),
}

impl Pending {
    fn fail_if_ok(self, err: &StoreError) -> Self {
        match self {
            Pending::Offset(r, Ok(_)) => Pending::Offset(r, Err(err.clone())),
            Pending::Config(r, Ok(_)) => Pending::Config(r, Err(err.clone())),
            Pending::Unit(r, Ok(_)) => Pending::Unit(r, Err(err.clone())),
            Pending::Count(r, Ok(_)) => Pending::Count(r, Err(err.clone())),
            Pending::Description(r, Ok(_)) => Pending::Description(r, Err(err.clone())),
            Pending::Flag(r, Ok(_)) => Pending::Flag(r, Err(err.clone())),
            other => other,
        }
    }

    fn send(self) {
        // A receiver that went away (client disconnected) is not an error.
        let _ = match self {
            Pending::Offset(r, v) => r.send(v).map_err(drop),
            Pending::Config(r, v) => r.send(v).map_err(drop),
            Pending::Unit(r, v) => r.send(v).map_err(drop),
            Pending::Count(r, v) => r.send(v).map_err(drop),
            Pending::Description(r, v) => r.send(v).map_err(drop),
            Pending::Flag(r, v) => r.send(v).map_err(drop),
        };
    }
}

fn job_bytes(job: &Job) -> usize {
    match job {
        Job::Append { batch, .. } => batch.len(),
        Job::DeployProcessor { deployment, .. } => processors::deployment_bytes(deployment),
        Job::CommitProcessorBatch { commit, .. } => processors::commit_bytes(commit),
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
    match job {
        Job::Append { reply, .. } | Job::Retention { reply, .. } => drop(reply.send(Err(err))),
        Job::CreateTopic { reply, .. } | Job::AddPartitions { reply, .. } => drop(reply.send(Err(err))),
        Job::DeleteTopic { reply, .. } | Job::Stop { reply } | Job::CommitOffsets { reply, .. } => {
            drop(reply.send(Err(err)))
        }
        Job::DeleteProcessor { reply, .. } | Job::CommitProcessorBatch { reply, .. } => drop(reply.send(Err(err))),
        Job::DeployProcessor { reply, .. } => drop(reply.send(Err(err))),
        Job::SetProcessorStatus { reply, .. } => drop(reply.send(Err(err))),
    }
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
    let (catalog, offsets) = (&*shared.catalog, &*shared.offsets);
    let mut offset_changes: Vec<OffsetChange> = Vec::new();
    let mut processor_changes = ProcessorChanges::new();
    if let Some(reason) = state.poisoned.clone() {
        match WriterState::load(db) {
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
    let mut pending = Vec::with_capacity(jobs.len());
    let mut stop_reply = None;
    let mut touched = BTreeSet::new();
    let mut metadata_changed = false;
    let mut jobs = jobs.into_iter();
    let outcome = (|| -> Result<(), StoreError> {
        let mut txn = db.begin_write()?;
        if !immediate {
            txn.set_durability(redb::Durability::None).map_err(|e| StoreError::Storage(e.to_string()))?;
        }
        {
            let mut tables: LogTables<'_> = HashMap::new();
            for job in jobs.by_ref() {
                if stop_reply.is_some() {
                    refuse(job, StoreError::ShuttingDown);
                    continue;
                }
                match job {
                    Job::Append { topic, topic_id, partition, batch, reply } => {
                        let r = append(&txn, &mut tables, state, &topic, topic_id, partition, &batch);
                        match r {
                            Ok(base) => {
                                touched.insert((topic, partition));
                                pending.push(Pending::Offset(reply, Ok(base)));
                            }
                            Err(e @ StoreError::Storage(_)) => {
                                pending.push(Pending::Offset(reply, Err(e.clone())));
                                return Err(e);
                            }
                            Err(e) => pending.push(Pending::Offset(reply, Err(e))),
                        }
                    }
                    Job::CreateTopic { config, reply } => {
                        tables.clear();
                        let r = create_topic(&txn, state, config);
                        metadata_changed |= r.is_ok();
                        let fatal = matches!(r, Err(StoreError::Storage(_)));
                        pending.push(Pending::Config(reply, r));
                        if fatal {
                            return Err(StoreError::Storage("create topic failed".into()));
                        }
                    }
                    Job::DeleteTopic { name, reply } => {
                        tables.clear();
                        let r = delete_topic(&txn, state, &name).and_then(|()| {
                            delete_topic_offsets(&txn, offsets, &name)?;
                            offset_changes.push(OffsetChange::RemoveTopic(name.clone()));
                            Ok(())
                        });
                        metadata_changed |= r.is_ok();
                        touched.retain(|(t, _)| t != &name);
                        let fatal = matches!(r, Err(StoreError::Storage(_)));
                        pending.push(Pending::Unit(reply, r));
                        if fatal {
                            return Err(StoreError::Storage("delete topic failed".into()));
                        }
                    }
                    Job::AddPartitions { name, count, reply } => {
                        tables.clear();
                        let r = add_partitions(&txn, state, &name, count);
                        metadata_changed |= r.is_ok();
                        let fatal = matches!(r, Err(StoreError::Storage(_)));
                        pending.push(Pending::Config(reply, r));
                        if fatal {
                            return Err(StoreError::Storage("add partitions failed".into()));
                        }
                    }
                    Job::Retention { now_ms, reply } => {
                        tables.clear();
                        let r = retention(&txn, state, now_ms, &mut touched);
                        let fatal = matches!(r, Err(StoreError::Storage(_)));
                        pending.push(Pending::Count(reply, r));
                        if fatal {
                            return Err(StoreError::Storage("retention failed".into()));
                        }
                    }
                    Job::CommitOffsets { group, offsets: entries, reply } => {
                        let r = commit_offsets(&txn, state, &group, &entries);
                        let fatal = matches!(r, Err(StoreError::Storage(_)));
                        if r.is_ok() {
                            offset_changes.extend(entries.into_iter().map(|e| OffsetChange::set(&group, e)));
                        }
                        pending.push(Pending::Unit(reply, r));
                        if fatal {
                            return Err(StoreError::Storage("offset commit failed".into()));
                        }
                    }
                    Job::DeployProcessor { deployment, reply } => {
                        let name = deployment.description.name.clone();
                        let current = current_processor(&processor_changes, &shared.processors, &name);
                        let r = processors::deploy(&txn, state, current.as_ref(), deployment).map(|(d, written)| {
                            let group = processor_group(&name);
                            offset_changes.extend(written.into_iter().map(|e| OffsetChange::set(&group, e)));
                            processor_changes.insert(name, Some(d.clone()));
                            d
                        });
                        let fatal = matches!(r, Err(StoreError::Storage(_)));
                        pending.push(Pending::Description(reply, r));
                        if fatal {
                            return Err(StoreError::Storage("processor deployment failed".into()));
                        }
                    }
                    Job::DeleteProcessor { name, reply } => {
                        let current = current_processor(&processor_changes, &shared.processors, &name);
                        let r = processors::delete(&txn, current.as_ref(), &name).map(|()| {
                            offset_changes.push(OffsetChange::RemoveGroup(processor_group(&name)));
                            processor_changes.insert(name, None);
                        });
                        let fatal = matches!(r, Err(StoreError::Storage(_)));
                        pending.push(Pending::Unit(reply, r));
                        if fatal {
                            return Err(StoreError::Storage("processor deletion failed".into()));
                        }
                    }
                    Job::CommitProcessorBatch { commit, reply } => {
                        let current = current_processor(&processor_changes, &shared.processors, &commit.name);
                        let r = processors::commit_batch(&txn, state, current.as_ref(), &commit).map(|d| {
                            let group = processor_group(&commit.name);
                            offset_changes.extend(commit.offsets.into_iter().map(|e| OffsetChange::set(&group, e)));
                            processor_changes.insert(commit.name, Some(d));
                        });
                        let fatal = matches!(r, Err(StoreError::Storage(_)));
                        pending.push(Pending::Unit(reply, r));
                        if fatal {
                            return Err(StoreError::Storage("processor batch commit failed".into()));
                        }
                    }
                    Job::SetProcessorStatus { name, version, status, reason, reply } => {
                        let current = current_processor(&processor_changes, &shared.processors, &name);
                        let r = processors::set_status(&txn, current.as_ref(), &name, version, &status, &reason).map(
                            |updated| match updated {
                                Some(d) => {
                                    processor_changes.insert(name, Some(d));
                                    true
                                }
                                None => false,
                            },
                        );
                        let fatal = matches!(r, Err(StoreError::Storage(_)));
                        pending.push(Pending::Flag(reply, r));
                        if fatal {
                            return Err(StoreError::Storage("processor status change failed".into()));
                        }
                    }
                    Job::Stop { reply } => stop_reply = Some(reply),
                }
            }
            let mut parts = txn.open_table(PARTITIONS)?;
            for (topic, p) in &touched {
                if let Some(t) = state.topics.get(topic) {
                    let o = t.parts[*p as usize];
                    parts.insert((t.config.id, *p), (o.log_start, o.log_end, o.size_bytes))?;
                }
            }
        }
        txn.commit()?;
        Ok(())
    })();
    match outcome {
        Ok(()) => {
            if metadata_changed {
                let old = catalog.read().expect("catalog lock poisoned").clone();
                let new = Arc::new(state.build_catalog(&old));
                *catalog.write().expect("catalog lock poisoned") = new;
            } else {
                let current = catalog.read().expect("catalog lock poisoned").clone();
                for (topic, p) in &touched {
                    if let (Some(t), Some(shared)) = (state.topics.get(topic), current.get(topic)) {
                        shared.partitions[*p as usize].publish(t.parts[*p as usize]);
                    }
                }
            }
            if !offset_changes.is_empty() {
                let mut shared = offsets.write().expect("offsets lock poisoned");
                for change in offset_changes {
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
            if !processor_changes.is_empty() {
                let mut map = shared.processors.write().expect("processors lock poisoned");
                for (name, change) in processor_changes {
                    match change {
                        Some(d) => map.insert(name, d),
                        None => map.remove(&name),
                    };
                }
            }
            for p in pending {
                p.send();
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
                p.fail_if_ok(&err).send();
            }
            // Jobs the failed round never reached are refused too.
            for job in jobs {
                if let Job::Stop { reply } = job {
                    stop_reply = Some(reply);
                } else {
                    refuse(job, err.clone());
                }
            }
            match WriterState::load(db) {
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
            v.insert(txn.open_table(TableDefinition::<u64, &[u8]>::new(&name))?)
        }
    })
}

#[allow(clippy::too_many_arguments)]
fn append<'t>(
    txn: &'t WriteTransaction,
    tables: &mut LogTables<'t>,
    state: &mut WriterState,
    topic: &str,
    topic_id: u64,
    partition: u32,
    batch: &Bytes,
) -> Result<u64, StoreError> {
    let t = state
        .topics
        .get_mut(topic)
        .filter(|t| t.config.id == topic_id)
        .ok_or_else(|| StoreError::UnknownTopic(topic.to_string()))?;
    let count = t.config.partitions;
    let p = t.parts.get_mut(partition as usize).ok_or_else(|| StoreError::UnknownPartition {
        topic: topic.to_string(),
        partition,
        count,
    })?;
    let info = batch_info(batch).map_err(|e| StoreError::Storage(format!("unvalidated batch reached the log: {e}")))?;
    debug_assert_eq!(info.length as usize, batch.len());
    debug_assert!(info.record_count > 0);
    let base = p.log_end;
    let table = log_table(txn, tables, topic_id, partition)?;
    let mut slot = table.insert_reserve(base, batch.len())?;
    let dest: &mut [u8] = slot.as_mut();
    dest.copy_from_slice(batch);
    stamp_base_offset(dest, base);
    drop(slot);
    p.log_end += u64::from(info.record_count);
    p.size_bytes += batch.len() as u64;
    Ok(base)
}

fn write_config(txn: &WriteTransaction, config: &TopicConfig) -> Result<(), StoreError> {
    let json = serde_json::to_vec(config).map_err(|e| StoreError::Storage(e.to_string()))?;
    txn.open_table(TOPICS)?.insert(config.name.as_str(), json.as_slice())?;
    Ok(())
}

fn init_partitions(txn: &WriteTransaction, topic_id: u64, range: std::ops::Range<u32>) -> Result<(), StoreError> {
    let mut parts = txn.open_table(PARTITIONS)?;
    for p in range {
        parts.insert((topic_id, p), (0u64, 0u64, 0u64))?;
        let name = log_table_name(topic_id, p);
        txn.open_table(TableDefinition::<u64, &[u8]>::new(&name))?;
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
    config.id = state.next_topic_id;
    state.next_topic_id += 1;
    txn.open_table(META)?.insert("next_topic_id", state.next_topic_id)?;
    write_config(txn, &config)?;
    init_partitions(txn, config.id, 0..config.partitions)?;
    let parts = vec![PartitionOffsets { log_start: 0, log_end: 0, size_bytes: 0 }; config.partitions as usize];
    state.topics.insert(config.name.clone(), WTopic { config: config.clone(), parts });
    info!(topic = %config.name, partitions = config.partitions, "topic created");
    Ok(config)
}

fn delete_topic(txn: &WriteTransaction, state: &mut WriterState, name: &str) -> Result<(), StoreError> {
    let t = state.topics.get(name).ok_or_else(|| StoreError::UnknownTopic(name.to_string()))?;
    let id = t.config.id;
    let mut parts = txn.open_table(PARTITIONS)?;
    for p in 0..t.config.partitions {
        parts.remove((id, p))?;
        let table = log_table_name(id, p);
        txn.delete_table(TableDefinition::<u64, &[u8]>::new(&table))?;
    }
    txn.open_table(TOPICS)?.remove(name)?;
    state.topics.remove(name);
    info!(topic = %name, "topic deleted");
    Ok(())
}

fn add_partitions(
    txn: &WriteTransaction,
    state: &mut WriterState,
    name: &str,
    count: u32,
) -> Result<TopicConfig, StoreError> {
    let t = state.topics.get_mut(name).ok_or_else(|| StoreError::UnknownTopic(name.to_string()))?;
    let current = t.config.partitions;
    if count <= current {
        return Err(StoreError::InvalidPartitions(format!(
            "topic '{name}' has {current} partitions; the count can only grow (asked for {count})"
        )));
    }
    let mut config = t.config.clone();
    config.partitions = count;
    write_config(txn, &config)?;
    init_partitions(txn, config.id, current..count)?;
    t.parts.resize(count as usize, PartitionOffsets { log_start: 0, log_end: 0, size_bytes: 0 });
    t.config = config.clone();
    info!(topic = %name, from = current, to = count, "partitions added");
    Ok(config)
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
        for (p, offsets) in t.parts.iter_mut().enumerate() {
            let table_name = log_table_name(t.config.id, p as u32);
            let mut table = txn.open_table(TableDefinition::<u64, &[u8]>::new(&table_name))?;
            loop {
                let Some((key, value)) = table.first()? else { break };
                let base = key.value();
                let info = batch_info(value.value()).map_err(|e| StoreError::Storage(e.to_string()))?;
                drop((key, value));
                let expired = cutoff.is_some_and(|c| info.max_timestamp < c);
                let oversized = by_bytes.is_some_and(|max| offsets.size_bytes > max);
                if !(expired || oversized) {
                    break;
                }
                table.remove(base)?;
                offsets.log_start = base + u64::from(info.record_count);
                offsets.size_bytes -= u64::from(info.length);
                deleted += 1;
                touched.insert((name.clone(), p as u32));
            }
            debug_assert!(offsets.log_start <= offsets.log_end);
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

fn delete_topic_offsets(
    txn: &WriteTransaction,
    offsets: &RwLock<AllGroupOffsets>,
    topic: &str,
) -> Result<(), StoreError> {
    let keys: Vec<(String, u32)> = {
        let shared = offsets.read().expect("offsets lock poisoned");
        shared
            .iter()
            .flat_map(|(g, o)| o.keys().filter(|(t, _)| t == topic).map(move |(_, p)| (g.clone(), *p)))
            .collect()
    };
    let mut table = txn.open_table(GROUP_OFFSETS)?;
    for (group, partition) in keys {
        table.remove((group.as_str(), topic, partition))?;
    }
    Ok(())
}
