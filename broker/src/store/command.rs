//! The replicated metadata state machine's commands: every change to cluster
//! metadata, committed group offsets and processors is a [`MetaCommand`] of
//! the Raft metadata log, applied by every broker to its own store with
//! [`Store::apply`](super::Store::apply).
//!
//! Applying is deterministic: the same sequence of commands gives the same
//! replicated state (topics with their ids and assignments, counters, group
//! offsets, processors) and the same outputs on every broker. Nothing at apply
//! time depends on local log ends, clocks or randomness: whatever a command
//! needs of those (deployment times, assignments) travels inside it.
//!
//! Wire types of `eddy_protocol` that have no serde support travel in their
//! wire encoding (`eddy_protocol::codec::to_bytes`) and are decoded at apply;
//! bytes that do not decode make that entry fail with `InvalidRequest`.

use bytes::Bytes;
use eddy_protocol::codec::{from_bytes, to_bytes};
use eddy_protocol::processors::{PartitionStateWrites, ProcessorDescription, ProcessorStats};
use serde::{Deserialize, Serialize};

use super::catalog::{PartitionAssignment, TopicConfig};
use super::processors::{OffsetEntry, ProcessorCommit, ProcessorDeployment};
use super::StoreError;

/// One replicated change. Apply semantics are those of the store's direct
/// write methods of the same name (they run the same code).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum MetaCommand {
    /// Creates a topic. `config.id` is ignored: the store assigns the next
    /// topic id. `config.assignments` must hold exactly `config.partitions`
    /// valid assignments. Output: [`MetaOutput::Topic`].
    CreateTopic { config: TopicConfig },
    /// Deletes a topic, its logs and its committed offsets. Output: Done.
    DeleteTopic { name: String },
    /// Grows a topic to `count` partitions; `assignments` are those of the
    /// new partitions `old..count`, in order. Output: [`MetaOutput::Topic`].
    AddPartitions { name: String, count: u32, assignments: Vec<PartitionAssignment> },
    /// Conditional leader/ISR changes; output: [`MetaOutput::Altered`].
    AlterPartitions { changes: Vec<PartitionChange> },
    /// Durable positions of `group` (all or none). Output: Done.
    CommitOffsets { group: String, offsets: Vec<OffsetEntry> },
    /// A processor deployment; see [`ProcessorDeployment`].
    /// Output: [`MetaOutput::Processor`].
    DeployProcessor {
        /// Wire-encoded [`ProcessorDescription`].
        description: Bytes,
        /// The module.
        wasm: Bytes,
        /// Positions of group `processor.<name>` for a first deployment.
        initial_offsets: Vec<OffsetEntry>,
    },
    /// Deletes a processor with everything it owns. Output: Done.
    DeleteProcessor { name: String },
    /// A processor batch commit; see [`ProcessorCommit`]. Output: Done.
    CommitProcessorBatch {
        /// The processor.
        name: String,
        /// Positions of group `processor.<name>`.
        offsets: Vec<OffsetEntry>,
        /// Wire-encoded `Vec<PartitionStateWrites>`.
        state: Bytes,
        /// Wire-encoded [`ProcessorStats`] to add.
        stats: Bytes,
    },
    /// Sets the status of a processor's `version`. Output: [`MetaOutput::Flag`]
    /// (false when `version` is not the current one).
    SetProcessorStatus { name: String, version: u32, status: String, reason: String },
    /// Allocates a fresh nonzero producer id (a counter in `meta`, from 1).
    /// Output: [`MetaOutput::ProducerId`].
    AllocateProducerId,
    /// Creates a user with a SCRAM credential (`ScramCredential::to_bytes`),
    /// or replaces an existing user's credential when `replace`. Output: Done.
    CreateUser { name: String, credential: Vec<u8>, replace: bool },
    /// Deletes a user. Output: Done.
    DeleteUser { name: String },
    /// Adds wire-encoded `Vec<AclRule>`. Output: Done.
    CreateAcls { rules: Bytes },
    /// Removes wire-encoded `Vec<AclRule>`. Output: [`MetaOutput::Count`].
    DeleteAcls { rules: Bytes },
    /// Creates the cluster's first superuser unless one was created before.
    /// Output: [`MetaOutput::Flag`] (whether it was created now).
    BootstrapUser { name: String, credential: Vec<u8> },
}

/// One conditional assignment change of [`MetaCommand::AlterPartitions`]:
/// applied only if the partition's current assignment has exactly
/// `expected_leader_epoch` and `expected_version`. The store stores
/// `assignment` as given (the controller bumps epoch and version).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionChange {
    /// Topic name.
    pub topic: String,
    /// Partition number.
    pub partition: u32,
    /// The leader epoch the change was decided against.
    pub expected_leader_epoch: u32,
    /// The assignment version the change was decided against.
    pub expected_version: u32,
    /// The new assignment.
    pub assignment: PartitionAssignment,
}

/// What applying a command produced.
#[derive(Debug, Clone, PartialEq)]
pub enum MetaOutput {
    /// Done; nothing to report.
    Done,
    /// The topic as stored (created or grown).
    Topic(TopicConfig),
    /// The processor as stored (deployed).
    Processor(ProcessorDescription),
    /// A yes/no answer (status set or not).
    Flag(bool),
    /// A fresh producer id.
    ProducerId(u64),
    /// Per change of an AlterPartitions, whether it was applied.
    Altered(Vec<bool>),
    /// How many things the command changed (rules deleted).
    Count(u32),
}

impl MetaOutput {
    fn mismatch(&self, wanted: &str) -> StoreError {
        StoreError::InvalidRequest(format!("expected {wanted} from the command, got {self:?}"))
    }

    /// The topic of [`MetaOutput::Topic`]; InvalidRequest for another variant.
    pub fn into_topic(self) -> Result<TopicConfig, StoreError> {
        match self {
            MetaOutput::Topic(t) => Ok(t),
            other => Err(other.mismatch("a topic")),
        }
    }

    /// The processor of [`MetaOutput::Processor`]; InvalidRequest for another variant.
    pub fn into_processor(self) -> Result<ProcessorDescription, StoreError> {
        match self {
            MetaOutput::Processor(p) => Ok(p),
            other => Err(other.mismatch("a processor")),
        }
    }

    /// The answer of [`MetaOutput::Flag`]; InvalidRequest for another variant.
    pub fn into_flag(self) -> Result<bool, StoreError> {
        match self {
            MetaOutput::Flag(f) => Ok(f),
            other => Err(other.mismatch("a flag")),
        }
    }

    /// The id of [`MetaOutput::ProducerId`]; InvalidRequest for another variant.
    pub fn into_producer_id(self) -> Result<u64, StoreError> {
        match self {
            MetaOutput::ProducerId(id) => Ok(id),
            other => Err(other.mismatch("a producer id")),
        }
    }

    /// The flags of [`MetaOutput::Altered`]; InvalidRequest for another variant.
    pub fn into_altered(self) -> Result<Vec<bool>, StoreError> {
        match self {
            MetaOutput::Altered(a) => Ok(a),
            other => Err(other.mismatch("alter results")),
        }
    }

    /// The number of [`MetaOutput::Count`]; InvalidRequest for another variant.
    pub fn into_count(self) -> Result<u32, StoreError> {
        match self {
            MetaOutput::Count(n) => Ok(n),
            other => Err(other.mismatch("a count")),
        }
    }

    /// Ok for [`MetaOutput::Done`]; InvalidRequest for another variant.
    pub fn into_done(self) -> Result<(), StoreError> {
        match self {
            MetaOutput::Done => Ok(()),
            other => Err(other.mismatch("nothing")),
        }
    }
}

/// One committed Raft log entry to apply: `applied` (and `membership`, if
/// any) are opaque marks the store persists atomically with the entry's
/// command; `command` is `None` for entries without one (blank or membership
/// entries), which only advance the marks.
#[derive(Debug, Clone)]
pub struct ApplyEntry {
    /// The applied mark after this entry (the Raft glue's encoded log id).
    pub applied: Bytes,
    /// The membership mark after this entry, if this entry changes it.
    pub membership: Option<Bytes>,
    /// The command, if any.
    pub command: Option<MetaCommand>,
}

impl From<ProcessorDeployment> for MetaCommand {
    fn from(d: ProcessorDeployment) -> Self {
        MetaCommand::DeployProcessor {
            description: to_bytes(&d.description),
            wasm: d.wasm,
            initial_offsets: d.initial_offsets,
        }
    }
}

impl From<ProcessorCommit> for MetaCommand {
    fn from(c: ProcessorCommit) -> Self {
        MetaCommand::CommitProcessorBatch {
            name: c.name,
            offsets: c.offsets,
            state: to_bytes(&c.state),
            stats: to_bytes(&c.stats),
        }
    }
}

fn corrupt(what: &str, e: impl std::fmt::Display) -> StoreError {
    StoreError::InvalidRequest(format!("the command's {what} does not decode: {e}"))
}

/// Decodes a DeployProcessor command's parts.
pub(crate) fn deployment_of(
    description: Bytes,
    wasm: Bytes,
    initial_offsets: Vec<OffsetEntry>,
) -> Result<ProcessorDeployment, StoreError> {
    let description: ProcessorDescription = from_bytes(description).map_err(|e| corrupt("description", e))?;
    Ok(ProcessorDeployment { description, wasm, initial_offsets })
}

/// Decodes the rules of CreateAcls / DeleteAcls.
pub(crate) fn rules_of(rules: Bytes) -> Result<Vec<eddy_protocol::security::AclRule>, StoreError> {
    from_bytes(rules).map_err(|e| corrupt("rules", e))
}

/// Decodes a CommitProcessorBatch command's parts.
pub(crate) fn commit_of(
    name: String,
    offsets: Vec<OffsetEntry>,
    state: Bytes,
    stats: Bytes,
) -> Result<ProcessorCommit, StoreError> {
    let state: Vec<PartitionStateWrites> = from_bytes(state).map_err(|e| corrupt("state", e))?;
    let stats: ProcessorStats = from_bytes(stats).map_err(|e| corrupt("stats", e))?;
    Ok(ProcessorCommit { name, offsets, state, stats })
}

/// The bytes a command carries, for bounding a round's size.
pub(crate) fn command_bytes(c: &MetaCommand) -> usize {
    match c {
        MetaCommand::DeployProcessor { description, wasm, .. } => description.len() + wasm.len(),
        MetaCommand::CommitProcessorBatch { state, .. } => state.len(),
        MetaCommand::CreateAcls { rules } | MetaCommand::DeleteAcls { rules } => rules.len(),
        _ => 0,
    }
}
