//! Snapshots of the replicated state: what [`Store::snapshot`](super::Store::snapshot)
//! reads in one read transaction and
//! [`Store::install_snapshot`](super::Store::install_snapshot) puts in place.
//!
//! A snapshot holds the replicated tables only: `topics` (configs with their
//! assignments), the `meta` counters `next_topic_id` and `next_producer_id`,
//! `group_offsets`, `processors`, `processor_stats`, `processor_modules`,
//! `processor_state` and the `raft_applied` marks. Partition logs, partition
//! offsets, leader-epoch caches and producer state are local to each broker
//! and never in it.
//!
//! Encoding (the wire codec's primitives: integers little-endian, `Bytes`
//! and `String` with a u32 length prefix, `Option` with a 0/1 byte):
//!
//! ```text
//! magic            8 bytes "EDDYSNP1"
//! next_topic_id    u64
//! next_producer_id u64
//! applied          Option<Bytes>
//! membership       Option<Bytes>
//! topics           u64 count, then per topic: Bytes (the JSON TopicConfig)
//! group_offsets    u64 count, then: String group, String topic, u32 partition, u64 offset, String metadata
//! processors       u64 count, then: String name, Bytes wire ProcessorDescription
//! processor_stats  u64 count, then: String name, 6 x u64
//! processor_modules u64 count, then: String name, u32 version, u32 chunk, Bytes
//! processor_state  u64 count, then: String name, u32 partition, Bytes key, Bytes value
//! users            u64 count, then: String name, Bytes credential
//! acls             u64 count, then: Bytes wire-encoded rule
//! bootstrapped     bool (the first superuser was created)
//! ```
//!
//! Snapshots with magic "EDDYSNP1" (before users and rules existed) end
//! after `processor_state` and are read with no users, no rules and
//! `bootstrapped` false.
//!
//! Rows are written in table key order, so two stores with the same
//! replicated state give byte-identical snapshots.

use bytes::Bytes;
use eddy_protocol::codec::{DecodeError, Decoder, Encoder, Wire};
use redb::{Database, ReadableDatabase, ReadableTable};

use super::catalog::TopicConfig;
use super::processors::{self, ProcessorMap, PROCESSORS, PROCESSOR_MODULES, PROCESSOR_STATE, PROCESSOR_STATS};
use super::{AllGroupOffsets, StoreError, GROUP_OFFSETS, META, RAFT_APPLIED, TOPICS};

const MAGIC: &[u8; 8] = b"EDDYSNP2";
/// The layout without users and rules.
const MAGIC_V1: &[u8; 8] = b"EDDYSNP1";

/// The six processor counters as stored.
pub(crate) type Stats = (u64, u64, u64, u64, u64, u64);

/// The replicated state, decoded.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Snapshot {
    pub(crate) next_topic_id: u64,
    pub(crate) next_producer_id: u64,
    pub(crate) applied: Option<Bytes>,
    pub(crate) membership: Option<Bytes>,
    pub(crate) topics: Vec<TopicConfig>,
    /// (group, topic, partition, offset, metadata)
    pub(crate) group_offsets: Vec<(String, String, u32, u64, String)>,
    /// (name, wire-encoded description)
    pub(crate) processors: Vec<(String, Bytes)>,
    pub(crate) processor_stats: Vec<(String, Stats)>,
    /// (name, version, chunk, bytes)
    pub(crate) processor_modules: Vec<(String, u32, u32, Bytes)>,
    /// (name, partition, key, value)
    pub(crate) processor_state: Vec<(String, u32, Bytes, Bytes)>,
    /// (name, encoded credential)
    pub(crate) users: Vec<(String, Bytes)>,
    /// Wire-encoded rules.
    pub(crate) acls: Vec<Bytes>,
    pub(crate) security_bootstrapped: bool,
}

fn storage(e: impl std::fmt::Display) -> StoreError {
    StoreError::Storage(e.to_string())
}

fn copy(b: &[u8]) -> Bytes {
    Bytes::copy_from_slice(b)
}

impl Snapshot {
    /// Reads the replicated tables in one read transaction. Topic configs
    /// stored without assignments get those of `broker_id` (as at load).
    pub(crate) fn read(db: &Database, broker_id: u32) -> Result<Self, StoreError> {
        let txn = db.begin_read()?;
        let meta = txn.open_table(META)?;
        let counter = |key: &str| -> Result<u64, StoreError> { Ok(meta.get(key)?.map_or(1, |v| v.value())) };
        let applied = txn.open_table(RAFT_APPLIED)?;
        let mark = |key: &str| -> Result<Option<Bytes>, StoreError> { Ok(applied.get(key)?.map(|v| copy(v.value()))) };
        let mut snap = Snapshot {
            next_topic_id: counter("next_topic_id")?,
            next_producer_id: counter("next_producer_id")?,
            security_bootstrapped: meta.get(super::security::BOOTSTRAPPED)?.is_some_and(|v| v.value() != 0),
            applied: mark("applied")?,
            membership: mark("membership")?,
            ..Snapshot::default()
        };
        for entry in txn.open_table(TOPICS)?.iter()? {
            let (name, json) = entry?;
            let mut config: TopicConfig = serde_json::from_slice(json.value())
                .map_err(|e| storage(format!("corrupt config of topic {}: {e}", name.value())))?;
            config.fill_assignments(broker_id);
            snap.topics.push(config);
        }
        for entry in txn.open_table(GROUP_OFFSETS)?.iter()? {
            let (key, value) = entry?;
            let (group, topic, partition) = key.value();
            let (offset, metadata) = value.value();
            snap.group_offsets.push((group.into(), topic.into(), partition, offset, metadata.into()));
        }
        for entry in txn.open_table(PROCESSORS)?.iter()? {
            let (name, value) = entry?;
            snap.processors.push((name.value().into(), copy(value.value())));
        }
        for entry in txn.open_table(PROCESSOR_STATS)?.iter()? {
            let (name, value) = entry?;
            snap.processor_stats.push((name.value().into(), value.value()));
        }
        for entry in txn.open_table(PROCESSOR_MODULES)?.iter()? {
            let (key, value) = entry?;
            let (name, version, chunk) = key.value();
            snap.processor_modules.push((name.into(), version, chunk, copy(value.value())));
        }
        for entry in txn.open_table(PROCESSOR_STATE)?.iter()? {
            let (key, value) = entry?;
            let (name, partition, k) = key.value();
            snap.processor_state.push((name.into(), partition, copy(k), copy(value.value())));
        }
        (snap.users, snap.acls) = super::security::read_rows(&txn)?;
        Ok(snap)
    }

    /// Bytes of the largest parts, for bounding a round's size.
    pub(crate) fn bytes(&self) -> usize {
        self.processor_modules.iter().map(|m| m.3.len()).sum::<usize>()
            + self.processor_state.iter().map(|s| s.2.len() + s.3.len()).sum::<usize>()
    }

    /// The encoding described in the module docs.
    pub(crate) fn encode(&self) -> Result<Bytes, StoreError> {
        let mut enc = Encoder::with_capacity(1024 + self.bytes());
        enc.buf_mut().extend_from_slice(MAGIC);
        enc.put(&self.next_topic_id).put(&self.next_producer_id).put(&self.applied).put(&self.membership);
        enc.put(&(self.topics.len() as u64));
        for t in &self.topics {
            enc.put(&Bytes::from(serde_json::to_vec(t).map_err(storage)?));
        }
        enc.put(&(self.group_offsets.len() as u64));
        for (group, topic, partition, offset, metadata) in &self.group_offsets {
            enc.put(group).put(topic).put(partition).put(offset).put(metadata);
        }
        enc.put(&(self.processors.len() as u64));
        for (name, description) in &self.processors {
            enc.put(name).put(description);
        }
        enc.put(&(self.processor_stats.len() as u64));
        for (name, s) in &self.processor_stats {
            enc.put(name).put(&s.0).put(&s.1).put(&s.2).put(&s.3).put(&s.4).put(&s.5);
        }
        enc.put(&(self.processor_modules.len() as u64));
        for (name, version, chunk, bytes) in &self.processor_modules {
            enc.put(name).put(version).put(chunk).put(bytes);
        }
        enc.put(&(self.processor_state.len() as u64));
        for (name, partition, key, value) in &self.processor_state {
            enc.put(name).put(partition).put(key).put(value);
        }
        enc.put(&(self.users.len() as u64));
        for (name, credential) in &self.users {
            enc.put(name).put(credential);
        }
        enc.put(&(self.acls.len() as u64));
        for rule in &self.acls {
            enc.put(rule);
        }
        enc.put(&self.security_bootstrapped);
        Ok(enc.finish().freeze())
    }

    /// Decodes and checks a snapshot; InvalidRequest says what is wrong.
    pub(crate) fn decode(data: Bytes) -> Result<Self, StoreError> {
        let bad = |e: DecodeError| StoreError::InvalidRequest(format!("corrupt snapshot: {e}"));
        let v1 = data.len() >= MAGIC.len() && &data[..MAGIC.len()] == MAGIC_V1;
        if !v1 && (data.len() < MAGIC.len() || &data[..MAGIC.len()] != MAGIC) {
            return Err(StoreError::InvalidRequest("not an Eddy snapshot (bad magic)".into()));
        }
        let mut dec = Decoder::new(data.slice(MAGIC.len()..));
        let mut snap = Snapshot {
            next_topic_id: dec.get().map_err(bad)?,
            next_producer_id: dec.get().map_err(bad)?,
            applied: dec.get().map_err(bad)?,
            membership: dec.get().map_err(bad)?,
            ..Snapshot::default()
        };
        for _ in 0..count(&mut dec).map_err(bad)? {
            let json: Bytes = dec.get().map_err(bad)?;
            let config: TopicConfig = serde_json::from_slice(&json)
                .map_err(|e| StoreError::InvalidRequest(format!("corrupt snapshot: topic config: {e}")))?;
            snap.topics.push(config);
        }
        for _ in 0..count(&mut dec).map_err(bad)? {
            snap.group_offsets.push((
                dec.get().map_err(bad)?,
                dec.get().map_err(bad)?,
                dec.get().map_err(bad)?,
                dec.get().map_err(bad)?,
                dec.get().map_err(bad)?,
            ));
        }
        for _ in 0..count(&mut dec).map_err(bad)? {
            snap.processors.push((dec.get().map_err(bad)?, dec.get().map_err(bad)?));
        }
        for _ in 0..count(&mut dec).map_err(bad)? {
            let name = dec.get().map_err(bad)?;
            let mut s = [0u64; 6];
            for v in &mut s {
                *v = dec.get().map_err(bad)?;
            }
            snap.processor_stats.push((name, (s[0], s[1], s[2], s[3], s[4], s[5])));
        }
        for _ in 0..count(&mut dec).map_err(bad)? {
            snap.processor_modules.push((
                dec.get().map_err(bad)?,
                dec.get().map_err(bad)?,
                dec.get().map_err(bad)?,
                dec.get().map_err(bad)?,
            ));
        }
        for _ in 0..count(&mut dec).map_err(bad)? {
            snap.processor_state.push((
                dec.get().map_err(bad)?,
                dec.get().map_err(bad)?,
                dec.get().map_err(bad)?,
                dec.get().map_err(bad)?,
            ));
        }
        if !v1 {
            for _ in 0..count(&mut dec).map_err(bad)? {
                snap.users.push((dec.get().map_err(bad)?, dec.get().map_err(bad)?));
            }
            for _ in 0..count(&mut dec).map_err(bad)? {
                snap.acls.push(dec.get().map_err(bad)?);
            }
            snap.security_bootstrapped = dec.get().map_err(bad)?;
        }
        dec.finish().map_err(bad)?;
        snap.processor_map()?;
        Ok(snap)
    }

    /// The processors with their counters, as the shared view holds them.
    pub(crate) fn processor_map(&self) -> Result<ProcessorMap, StoreError> {
        let stats: std::collections::BTreeMap<&str, Stats> =
            self.processor_stats.iter().map(|(n, s)| (n.as_str(), *s)).collect();
        let mut out = ProcessorMap::new();
        for (name, bytes) in &self.processors {
            let mut d = processors::decode_description(name, bytes)
                .map_err(|e| StoreError::InvalidRequest(format!("corrupt snapshot: {e}")))?;
            d.stats = stats.get(name.as_str()).map(|s| processors::stats_of(*s)).unwrap_or_default();
            out.insert(name.clone(), d);
        }
        Ok(out)
    }

    /// The committed offsets, as the shared view holds them.
    pub(crate) fn offsets_map(&self) -> AllGroupOffsets {
        let mut out = AllGroupOffsets::new();
        for (group, topic, partition, offset, metadata) in &self.group_offsets {
            out.entry(group.clone()).or_default().insert((topic.clone(), *partition), (*offset, metadata.clone()));
        }
        out
    }
}

/// Reads a u64 element count and checks it against the bytes left (every
/// element takes at least one byte), so nothing is allocated for a lie.
fn count(dec: &mut Decoder) -> Result<u64, DecodeError> {
    let n = u64::decode(dec)?;
    if n > dec.remaining() as u64 {
        return Err(DecodeError::TooLong { what: "snapshot list", len: n as usize, limit: dec.remaining() });
    }
    Ok(n)
}
