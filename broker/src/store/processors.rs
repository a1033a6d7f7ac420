//! Processor deployments in the store: their tables, the writer's processor
//! jobs (applied inside the writer's round transaction, like every write), and
//! the reads of modules and state.
//!
//! Tables:
//! * `processors`: name -> [`ProcessorDescription`] in the wire encoding
//!   (configuration, version, status; its `stats` field is not used there).
//! * `processor_stats`: name -> the six [`ProcessorStats`] counters, rewritten
//!   by every batch commit in the transaction of the offsets it counts.
//! * `processor_modules`: (name, version, chunk) -> up to
//!   [`MODULE_CHUNK_BYTES`] of the current version's module.
//! * `processor_state`: (name, input partition number, key) -> value (shared
//!   by the processor's co-partitioned inputs).
//!
//! Every writer function here validates everything before it writes anything,
//! so a job that fails leaves the round's transaction as it found it.

use std::collections::BTreeMap;
use std::ops::Bound;

use bytes::{Bytes, BytesMut};
use eddy_protocol::codec::{from_bytes, to_bytes};
use eddy_protocol::limits::MAX_LIST_LEN;
use eddy_protocol::processors::{
    processor_group, PartitionStateWrites, ProcessorDescription, ProcessorStats, STATUS_RUNNING,
};
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition, WriteTransaction};

use super::writer::{commit_offsets, WriterState};
use super::{StoreError, GROUP_OFFSETS};

/// Processor name -> wire-encoded [`ProcessorDescription`].
pub(crate) const PROCESSORS: TableDefinition<&str, &[u8]> = TableDefinition::new("processors");
/// Processor name -> (records_in, records_out, errors, dead_lettered, batches, wasm_nanos).
pub(crate) const PROCESSOR_STATS: TableDefinition<&str, (u64, u64, u64, u64, u64, u64)> =
    TableDefinition::new("processor_stats");
/// (processor name, version, chunk index) -> module bytes.
pub(crate) const PROCESSOR_MODULES: TableDefinition<(&str, u32, u32), &[u8]> =
    TableDefinition::new("processor_modules");
/// (processor name, input partition number, key) -> value.
pub(crate) const PROCESSOR_STATE: TableDefinition<(&str, u32, &[u8]), &[u8]> = TableDefinition::new("processor_state");

/// Largest piece of a module stored in one row (redb values stay small).
pub const MODULE_CHUNK_BYTES: usize = 56 * 1024;

/// Deployed processors by name, counters included.
pub type ProcessorMap = BTreeMap<String, ProcessorDescription>;

/// One committed position: (topic, partition, offset, metadata).
pub type OffsetEntry = (String, u32, u64, String);

/// A deployment handed to [`Store::deploy_processor`](super::Store::deploy_processor).
#[derive(Debug, Clone)]
pub struct ProcessorDeployment {
    /// The configuration to store. The caller sets `module_id` (hex SHA-256 of
    /// `wasm`) and `deployed_at_ms`; the store decides `version` (1 for a
    /// first deployment, else the previous one + 1) and sets `module_bytes`,
    /// `status` ([`STATUS_RUNNING`]), `status_reason` (empty) and `stats`
    /// (kept from the previous deployment).
    pub description: ProcessorDescription,
    /// The module.
    pub wasm: Bytes,
    /// Committed positions of group `processor.<name>`, written only by a
    /// first deployment (a redeployment resumes from the committed offsets).
    pub initial_offsets: Vec<OffsetEntry>,
}

/// The work of one processed batch, applied by
/// [`Store::commit_processor_batch`](super::Store::commit_processor_batch) in
/// one transaction: all of it or nothing.
#[derive(Debug, Clone)]
pub struct ProcessorCommit {
    /// The processor.
    pub name: String,
    /// Positions of group `processor.<name>`; every topic must be an input.
    pub offsets: Vec<OffsetEntry>,
    /// State changes per input partition (`None` values delete the key).
    pub state: Vec<PartitionStateWrites>,
    /// Counters to add to the processor's totals (saturating).
    pub stats: ProcessorStats,
}

fn stats_tuple(s: &ProcessorStats) -> (u64, u64, u64, u64, u64, u64) {
    (s.records_in, s.records_out, s.errors, s.dead_lettered, s.batches, s.wasm_nanos)
}

pub(crate) fn stats_of(t: (u64, u64, u64, u64, u64, u64)) -> ProcessorStats {
    ProcessorStats { records_in: t.0, records_out: t.1, errors: t.2, dead_lettered: t.3, batches: t.4, wasm_nanos: t.5 }
}

/// `total + delta`, each counter saturating (a client can send any delta).
fn add_stats(total: &ProcessorStats, delta: &ProcessorStats) -> ProcessorStats {
    ProcessorStats {
        records_in: total.records_in.saturating_add(delta.records_in),
        records_out: total.records_out.saturating_add(delta.records_out),
        errors: total.errors.saturating_add(delta.errors),
        dead_lettered: total.dead_lettered.saturating_add(delta.dead_lettered),
        batches: total.batches.saturating_add(delta.batches),
        wasm_nanos: total.wasm_nanos.saturating_add(delta.wasm_nanos),
    }
}

pub(crate) fn decode_description(name: &str, bytes: &[u8]) -> Result<ProcessorDescription, StoreError> {
    from_bytes(Bytes::copy_from_slice(bytes))
        .or_else(|e| {
            // Stored before `deployed_by` (the last field) existed: read it as empty.
            let mut with_field = bytes.to_vec();
            with_field.extend_from_slice(&0u32.to_le_bytes());
            from_bytes(Bytes::from(with_field)).map_err(|_| e)
        })
        .map_err(|e| StoreError::Storage(format!("corrupt description of processor {name}: {e}")))
}

/// The next string after `s` in byte order (`s + "\0"`): the range
/// `(s, ..)..(next_str(s), ..)` of tuple keys holds exactly the keys whose
/// first element is `s`.
fn next_str(s: &str) -> String {
    format!("{s}\0")
}

/// Reads every deployed processor with its counters.
pub(crate) fn load(db: &Database) -> Result<ProcessorMap, StoreError> {
    let txn = db.begin_read()?;
    let table = txn.open_table(PROCESSORS)?;
    let stats = txn.open_table(PROCESSOR_STATS)?;
    let mut out = ProcessorMap::new();
    for entry in table.iter()? {
        let (name, value) = entry?;
        let name = name.value();
        let mut description = decode_description(name, value.value())?;
        description.stats = stats.get(name)?.map_or_else(ProcessorStats::default, |v| stats_of(v.value()));
        out.insert(name.to_string(), description);
    }
    Ok(out)
}

/// Creates the processor tables if they do not exist yet.
pub(crate) fn create_tables(txn: &WriteTransaction) -> Result<(), StoreError> {
    txn.open_table(PROCESSORS)?;
    txn.open_table(PROCESSOR_STATS)?;
    txn.open_table(PROCESSOR_MODULES)?;
    txn.open_table(PROCESSOR_STATE)?;
    Ok(())
}

fn write_description(txn: &WriteTransaction, d: &ProcessorDescription) -> Result<(), StoreError> {
    let mut stored = d.clone();
    stored.stats = ProcessorStats::default();
    txn.open_table(PROCESSORS)?.insert(d.name.as_str(), to_bytes(&stored).as_ref())?;
    Ok(())
}

fn delete_module_chunks(txn: &WriteTransaction, name: &str) -> Result<(), StoreError> {
    txn.open_table(PROCESSOR_MODULES)?.retain_in((name, 0u32, 0u32)..=(name, u32::MAX, u32::MAX), |_, _| false)?;
    Ok(())
}

/// Stores a deployment. `current` is the processor as of this point of the
/// round. Returns the stored description and the offsets written (the initial
/// offsets on a first deployment, else none).
pub(crate) fn deploy(
    txn: &WriteTransaction,
    state: &WriterState,
    current: Option<&ProcessorDescription>,
    deployment: ProcessorDeployment,
) -> Result<(ProcessorDescription, Vec<OffsetEntry>), StoreError> {
    let ProcessorDeployment { mut description, wasm, initial_offsets } = deployment;
    let name = description.name.clone();
    description.version = match current {
        None => 1,
        Some(c) => c.version.checked_add(1).ok_or_else(|| {
            StoreError::InvalidProcessor(format!("processor {name} is at the last version; delete and redeploy it"))
        })?,
    };
    description.module_bytes = wasm.len() as u64;
    description.status = STATUS_RUNNING.to_string();
    description.status_reason.clear();
    description.stats = current.map_or_else(ProcessorStats::default, |c| c.stats.clone());
    let offsets = if current.is_none() { initial_offsets } else { Vec::new() };
    if wasm.len().div_ceil(MODULE_CHUNK_BYTES) > u32::MAX as usize {
        return Err(StoreError::InvalidProcessor(format!("the module of processor {name} is too large")));
    }
    // Validates the offsets before anything is written; then writes them.
    commit_offsets(txn, state, &processor_group(&name), &offsets)?;
    delete_module_chunks(txn, &name)?;
    {
        let mut modules = txn.open_table(PROCESSOR_MODULES)?;
        for (index, chunk) in (0u32..).zip(wasm.chunks(MODULE_CHUNK_BYTES)) {
            modules.insert((name.as_str(), description.version, index), chunk)?;
        }
    }
    write_description(txn, &description)?;
    if current.is_none() {
        txn.open_table(PROCESSOR_STATS)?.insert(name.as_str(), stats_tuple(&description.stats))?;
    }
    Ok((description, offsets))
}

/// Deletes a processor: description, counters, module, state and the
/// committed offsets of its group.
pub(crate) fn delete(
    txn: &WriteTransaction,
    current: Option<&ProcessorDescription>,
    name: &str,
) -> Result<(), StoreError> {
    if current.is_none() {
        return Err(StoreError::UnknownProcessor(name.to_string()));
    }
    let next = next_str(name);
    txn.open_table(PROCESSORS)?.remove(name)?;
    txn.open_table(PROCESSOR_STATS)?.remove(name)?;
    delete_module_chunks(txn, name)?;
    txn.open_table(PROCESSOR_STATE)?.retain_in((name, 0u32, &[][..])..(next.as_str(), 0u32, &[][..]), |_, _| false)?;
    let group = processor_group(name);
    let next_group = next_str(&group);
    txn.open_table(GROUP_OFFSETS)?
        .retain_in((group.as_str(), "", 0u32)..(next_group.as_str(), "", 0u32), |_, _| false)?;
    Ok(())
}

/// Applies one batch commit. Returns the processor with its new counters.
pub(crate) fn commit_batch(
    txn: &WriteTransaction,
    state: &WriterState,
    current: Option<&ProcessorDescription>,
    commit: &ProcessorCommit,
) -> Result<ProcessorDescription, StoreError> {
    let name = &commit.name;
    let current = current.ok_or_else(|| StoreError::UnknownProcessor(name.clone()))?;
    let not_input = |topic: &str| {
        StoreError::InvalidRequest(format!(
            "processor {name} does not read topic '{topic}' (its inputs are {}); commit only input partitions",
            current.inputs.join(", ")
        ))
    };
    for (topic, partition, _, _) in &commit.offsets {
        if !current.inputs.contains(topic) {
            return Err(not_input(topic));
        }
        state.check_partition(topic, *partition)?;
    }
    for p in &commit.state {
        // Shared by the inputs: some input must have that partition.
        let mut missing = None;
        let found = current.inputs.iter().any(|topic| match state.check_partition(topic, p.partition) {
            Ok(()) => true,
            Err(e) => {
                missing.get_or_insert(e);
                false
            }
        });
        if !found {
            return Err(
                missing.unwrap_or_else(|| StoreError::InvalidRequest(format!("processor {name} has no inputs")))
            );
        }
    }
    // Everything is valid: write.
    commit_offsets(txn, state, &processor_group(name), &commit.offsets)?;
    {
        let mut table = txn.open_table(PROCESSOR_STATE)?;
        for p in &commit.state {
            for w in &p.writes {
                let key = (name.as_str(), p.partition, w.key.as_ref());
                match &w.value {
                    Some(value) => {
                        table.insert(key, value.as_ref())?;
                    }
                    None => {
                        table.remove(key)?;
                    }
                }
            }
        }
    }
    let mut updated = current.clone();
    updated.stats = add_stats(&current.stats, &commit.stats);
    txn.open_table(PROCESSOR_STATS)?.insert(name.as_str(), stats_tuple(&updated.stats))?;
    Ok(updated)
}

/// Sets the status of the current version. Returns the updated processor, or
/// `None` when `version` is not the current one (nothing written).
pub(crate) fn set_status(
    txn: &WriteTransaction,
    current: Option<&ProcessorDescription>,
    name: &str,
    version: u32,
    status: &str,
    reason: &str,
) -> Result<Option<ProcessorDescription>, StoreError> {
    let current = current.ok_or_else(|| StoreError::UnknownProcessor(name.to_string()))?;
    if current.version != version {
        return Ok(None);
    }
    let mut updated = current.clone();
    updated.status = status.to_string();
    updated.status_reason = reason.to_string();
    write_description(txn, &updated)?;
    Ok(Some(updated))
}

/// Reads the module of `version` of a processor in one read transaction.
pub(crate) fn read_module(db: &Database, name: &str, version: u32) -> Result<Bytes, StoreError> {
    let txn = db.begin_read()?;
    let description = match txn.open_table(PROCESSORS)?.get(name)? {
        Some(v) => decode_description(name, v.value())?,
        None => return Err(StoreError::UnknownProcessor(name.to_string())),
    };
    if description.version != version {
        return Err(StoreError::ProcessorVersion { name: name.to_string(), current: description.version, version });
    }
    let expected = usize::try_from(description.module_bytes).unwrap_or(usize::MAX);
    let mut buf = BytesMut::with_capacity(expected.min(64 << 20));
    let table = txn.open_table(PROCESSOR_MODULES)?;
    for (i, entry) in table.range((name, version, 0u32)..=(name, version, u32::MAX))?.enumerate() {
        let (key, value) = entry?;
        if key.value().2 as usize != i {
            return Err(StoreError::Storage(format!("chunk {i} of processor {name} version {version} is missing")));
        }
        buf.extend_from_slice(value.value());
    }
    if buf.len() != expected {
        return Err(StoreError::Storage(format!(
            "module of processor {name} version {version} has {} bytes stored, {expected} expected",
            buf.len()
        )));
    }
    Ok(buf.freeze())
}

/// Entries of one processor's state in one input partition, in key order.
pub type StateEntries = Vec<(Bytes, Bytes)>;

/// Reads committed state after `after` (from the first key if `None`) in key
/// order, up to about `max_bytes` of keys and values and at most
/// `MAX_LIST_LEN` entries, at least one entry if any remain. Returns the
/// entries and whether more remain.
pub(crate) fn scan_state(
    db: &Database,
    name: &str,
    partition: u32,
    after: Option<&[u8]>,
    max_bytes: usize,
) -> Result<(StateEntries, bool), StoreError> {
    let txn = db.begin_read()?;
    if txn.open_table(PROCESSORS)?.get(name)?.is_none() {
        return Err(StoreError::UnknownProcessor(name.to_string()));
    }
    let table = txn.open_table(PROCESSOR_STATE)?;
    let start = match after {
        Some(key) => Bound::Excluded((name, partition, key)),
        None => Bound::Included((name, partition, &[][..])),
    };
    let mut entries = Vec::new();
    let mut bytes = 0usize;
    for entry in table.range::<(&str, u32, &[u8])>((start, Bound::Unbounded))? {
        let (key, value) = entry?;
        let (n, p, k) = key.value();
        if n != name || p != partition {
            return Ok((entries, false));
        }
        let v = value.value();
        let size = k.len() + v.len();
        if !entries.is_empty() && (bytes.saturating_add(size) > max_bytes || entries.len() >= MAX_LIST_LEN) {
            return Ok((entries, true));
        }
        bytes = bytes.saturating_add(size);
        entries.push((Bytes::copy_from_slice(k), Bytes::copy_from_slice(v)));
    }
    Ok((entries, false))
}
