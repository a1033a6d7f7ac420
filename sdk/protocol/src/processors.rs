//! Request and response bodies of the processor API (API keys 30-39): deploying
//! Wasm processors, reading their modules, and the worker's atomic
//! "offsets + state" commit.

use bytes::Bytes;

use crate::codec::{DecodeError, Decoder, Encoder, Wire};
use crate::frame::ApiKey;
use crate::messages::{CommittedOffset, Empty, Request};
use crate::wire_struct;

/// The consumer group a processor's workers join: `processor.<name>`.
pub fn processor_group(name: &str) -> String {
    format!("processor.{name}")
}

/// The topic a processor's log messages go to: `_eddy.processor.<name>.logs`.
pub fn processor_logs_topic(name: &str) -> String {
    format!("_eddy.processor.{name}.logs")
}

/// The dead-letter topic of an output topic: `<output>.dlq`.
pub fn dead_letter_topic(output: &str) -> String {
    format!("{output}.dlq")
}

/// Headers a dead-lettered record carries, besides its own.
pub mod dlq_headers {
    /// What kind of failure: `timeout`, `memory-limit`, `trap` or `error`.
    pub const ERROR_KIND: &str = "eddy.error.kind";
    /// The failure's message.
    pub const ERROR_MESSAGE: &str = "eddy.error.message";
    /// The input topic the record came from.
    pub const SOURCE_TOPIC: &str = "eddy.source.topic";
    /// Its input partition, in decimal.
    pub const SOURCE_PARTITION: &str = "eddy.source.partition";
    /// Its input offset, in decimal.
    pub const SOURCE_OFFSET: &str = "eddy.source.offset";
    /// The processor that failed on it.
    pub const PROCESSOR: &str = "eddy.processor";
}

/// What a processor does with a record the module failed on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum ErrorPolicy {
    /// Write the input record to `<output>.dlq` with headers saying why, and go on.
    #[default]
    DeadLetter,
    /// Count it and go on.
    Skip,
    /// Stop the processor before the record; nothing at or after it is committed.
    Stop,
}

impl ErrorPolicy {
    /// The policy's name on the command line: `dlq`, `skip` or `stop`.
    pub fn name(self) -> &'static str {
        match self {
            ErrorPolicy::DeadLetter => "dlq",
            ErrorPolicy::Skip => "skip",
            ErrorPolicy::Stop => "stop",
        }
    }

    /// The policy of a command-line name.
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "dlq" => Some(ErrorPolicy::DeadLetter),
            "skip" => Some(ErrorPolicy::Skip),
            "stop" => Some(ErrorPolicy::Stop),
            _ => None,
        }
    }
}

impl Wire for ErrorPolicy {
    fn encode(&self, enc: &mut Encoder) {
        enc.put(&match self {
            ErrorPolicy::DeadLetter => 0u8,
            ErrorPolicy::Skip => 1u8,
            ErrorPolicy::Stop => 2u8,
        });
    }
    fn decode(dec: &mut Decoder) -> Result<Self, DecodeError> {
        match dec.get::<u8>()? {
            0 => Ok(ErrorPolicy::DeadLetter),
            1 => Ok(ErrorPolicy::Skip),
            2 => Ok(ErrorPolicy::Stop),
            v => Err(DecodeError::InvalidValue { what: "error policy", value: v.into() }),
        }
    }
}

/// Where the first deployment of a processor starts reading its inputs.
/// Redeployments always resume from the committed offsets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum StartPosition {
    /// Each input partition's log start.
    Beginning,
    /// Each input partition's log end at deploy time (only records produced later).
    #[default]
    End,
    /// This offset in every input partition (clamped to the log).
    Offset(u64),
}

impl Wire for StartPosition {
    fn encode(&self, enc: &mut Encoder) {
        match self {
            StartPosition::Beginning => {
                enc.put(&0u8);
            }
            StartPosition::End => {
                enc.put(&1u8);
            }
            StartPosition::Offset(offset) => {
                enc.put(&2u8).put(offset);
            }
        }
    }
    fn decode(dec: &mut Decoder) -> Result<Self, DecodeError> {
        match dec.get::<u8>()? {
            0 => Ok(StartPosition::Beginning),
            1 => Ok(StartPosition::End),
            2 => Ok(StartPosition::Offset(dec.get()?)),
            v => Err(DecodeError::InvalidValue { what: "start position", value: v.into() }),
        }
    }
}

wire_struct! {
    /// One `--param key=value` handed to the module's `init`.
    pub struct ProcessorParam {
        pub key: String,
        pub value: String,
    }
}

wire_struct! {
    /// Deploys (or redeploys) a processor. The broker validates the module
    /// against the processor world before accepting it, stores it, and bumps
    /// the version; workers pick the new version up and resume from the
    /// committed offsets. `timeout_ms` and `memory_bytes` of 0 mean the defaults.
    pub struct DeployProcessorRequest {
        pub name: String,
        pub inputs: Vec<String>,
        pub output: String,
        /// Group members per worker process (1..=64).
        pub parallelism: u32,
        pub on_error: ErrorPolicy,
        pub params: Vec<ProcessorParam>,
        /// Only used by the first deployment of this name.
        pub start: StartPosition,
        /// Deadline of one call into the module.
        pub timeout_ms: u32,
        /// Memory cap of one instance.
        pub memory_bytes: u64,
        /// The component's bytes.
        pub wasm: Bytes,
    }
}

wire_struct! {
    /// Counters of a processor, summed over all workers since its first deployment.
    /// Updated in the same transaction as the offsets they describe.
    #[derive(Default)]
    pub struct ProcessorStats {
        /// Input records whose processing was committed.
        pub records_in: u64,
        /// Output records acknowledged before the commit.
        pub records_out: u64,
        /// Input records the module failed on (all policies).
        pub errors: u64,
        /// Input records written to the dead-letter topic.
        pub dead_lettered: u64,
        /// Committed batches.
        pub batches: u64,
        /// CPU time the worker threads spent running the module for those records (input
        /// conversion, calls, outputs), in nanoseconds.
        pub wasm_nanos: u64,
    }
}

impl ProcessorStats {
    /// Adds another set of counters to this one.
    pub fn add(&mut self, other: &ProcessorStats) {
        self.records_in += other.records_in;
        self.records_out += other.records_out;
        self.errors += other.errors;
        self.dead_lettered += other.dead_lettered;
        self.batches += other.batches;
        self.wasm_nanos += other.wasm_nanos;
    }
}

/// Status value of a processor that workers run.
pub const STATUS_RUNNING: &str = "running";
/// Status value of a processor stopped by its `stop` error policy; a redeploy runs it again.
pub const STATUS_STOPPED: &str = "stopped";

wire_struct! {
    /// A deployed processor: its configuration, version, status and counters.
    pub struct ProcessorDescription {
        pub name: String,
        /// 1 for the first deployment, +1 for each redeployment.
        pub version: u32,
        pub inputs: Vec<String>,
        pub output: String,
        pub parallelism: u32,
        pub on_error: ErrorPolicy,
        pub params: Vec<ProcessorParam>,
        pub timeout_ms: u32,
        pub memory_bytes: u64,
        /// Hex SHA-256 of the module.
        pub module_id: String,
        pub module_bytes: u64,
        pub deployed_at_ms: i64,
        /// [`STATUS_RUNNING`] or [`STATUS_STOPPED`].
        pub status: String,
        /// Why it stopped (empty while running).
        pub status_reason: String,
        pub stats: ProcessorStats,
        /// The principal that deployed this version (`User:alice`); empty for
        /// deployments stored before principals existed.
        pub deployed_by: String,
    }
}

impl Request for DeployProcessorRequest {
    const KEY: ApiKey = ApiKey::DeployProcessor;
    type Response = ProcessorDescription;
}

wire_struct! {
    /// Lists every deployed processor.
    pub struct ListProcessorsRequest {}
}

wire_struct! {
    /// The processors, sorted by name.
    pub struct ListProcessorsResponse {
        pub processors: Vec<ProcessorDescription>,
    }
}

impl Request for ListProcessorsRequest {
    const KEY: ApiKey = ApiKey::ListProcessors;
    type Response = ListProcessorsResponse;
}

wire_struct! {
    /// Describes one processor (`UNKNOWN_PROCESSOR` if there is none of that name).
    pub struct DescribeProcessorRequest {
        pub name: String,
    }
}

impl Request for DescribeProcessorRequest {
    const KEY: ApiKey = ApiKey::DescribeProcessor;
    type Response = ProcessorDescription;
}

wire_struct! {
    /// Deletes a processor with its module, state, counters and committed offsets.
    /// Its workers stop; its logs and dead-letter topics are kept.
    pub struct DeleteProcessorRequest {
        pub name: String,
    }
}

impl Request for DeleteProcessorRequest {
    const KEY: ApiKey = ApiKey::DeleteProcessor;
    type Response = Empty;
}

wire_struct! {
    /// Reads the module of a processor version (`UNKNOWN_PROCESSOR` if that
    /// version is not the current one).
    pub struct FetchProcessorModuleRequest {
        pub name: String,
        pub version: u32,
    }
}

wire_struct! {
    /// The component's bytes.
    pub struct FetchProcessorModuleResponse {
        pub wasm: Bytes,
    }
}

impl Request for FetchProcessorModuleRequest {
    const KEY: ApiKey = ApiKey::FetchProcessorModule;
    type Response = FetchProcessorModuleResponse;
}

wire_struct! {
    /// One state key and its value (`None`: deleted).
    pub struct StateEntry {
        pub key: Bytes,
        pub value: Option<Bytes>,
    }
}

wire_struct! {
    /// The state changes one batch made in one input partition. State is kept
    /// per processor and input partition number, shared by all the inputs of a
    /// processor (they are co-partitioned: partition p of every input goes to
    /// the same group member).
    pub struct PartitionStateWrites {
        pub partition: u32,
        pub writes: Vec<StateEntry>,
    }
}

wire_struct! {
    /// A worker's commit after the outputs of a batch were acknowledged: the
    /// group member's input offsets, the state changes the batch made, and the
    /// counters, applied in one broker transaction (all or nothing). Checked
    /// like an offset commit: the member must own every partition named (for
    /// state: partition p of every input that has one), in the group's current
    /// generation.
    pub struct CommitProcessorBatchRequest {
        pub name: String,
        pub member_id: String,
        pub generation: u32,
        pub offsets: Vec<CommittedOffset>,
        pub state: Vec<PartitionStateWrites>,
        pub stats: ProcessorStats,
    }
}

impl Request for CommitProcessorBatchRequest {
    const KEY: ApiKey = ApiKey::CommitProcessorBatch;
    type Response = Empty;
}

wire_struct! {
    /// Reads the committed state of one processor and input partition number
    /// in key order, starting after `after` (from the first key if `None`), up
    /// to about `max_bytes` of keys and values (at least one entry if any remain).
    pub struct StateScanRequest {
        pub name: String,
        pub partition: u32,
        pub after: Option<Bytes>,
        pub max_bytes: u32,
    }
}

wire_struct! {
    /// Entries in key order (values always `Some`); `more` if entries remain after them.
    pub struct StateScanResponse {
        pub entries: Vec<StateEntry>,
        pub more: bool,
    }
}

impl Request for StateScanRequest {
    const KEY: ApiKey = ApiKey::StateScan;
    type Response = StateScanResponse;
}

wire_struct! {
    /// Marks a processor version stopped (its `stop` policy met a failing
    /// record); workers stop it. Ignored if `version` is no longer current.
    pub struct StopProcessorRequest {
        pub name: String,
        pub version: u32,
        pub reason: String,
    }
}

impl Request for StopProcessorRequest {
    const KEY: ApiKey = ApiKey::StopProcessor;
    type Response = Empty;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::{from_bytes, to_bytes};

    #[test]
    fn deploy_request_round_trips() {
        let req = DeployProcessorRequest {
            name: "upper".into(),
            inputs: vec!["in".into()],
            output: "out".into(),
            parallelism: 2,
            on_error: ErrorPolicy::Skip,
            params: vec![ProcessorParam { key: "k".into(), value: "v".into() }],
            start: StartPosition::Offset(7),
            timeout_ms: 0,
            memory_bytes: 0,
            wasm: Bytes::from_static(b"\0asm"),
        };
        assert_eq!(from_bytes::<DeployProcessorRequest>(to_bytes(&req)).unwrap(), req);
    }

    #[test]
    fn policies_round_trip_by_name() {
        for policy in [ErrorPolicy::DeadLetter, ErrorPolicy::Skip, ErrorPolicy::Stop] {
            assert_eq!(ErrorPolicy::from_name(policy.name()), Some(policy));
        }
        assert_eq!(ErrorPolicy::from_name("retry"), None);
    }
}
