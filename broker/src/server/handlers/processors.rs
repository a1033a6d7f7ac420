//! The processor requests (API keys 30-37): deploy, list, describe, delete,
//! module fetch, batch commit, state scan and stop.
//!
//! A deploy is validated completely (name, topics, limits, and the module
//! compiled against the processor world) before anything is created or
//! stored. A batch commit is checked exactly like an offset commit of group
//! `processor.<name>` ([`GroupService::check_commit`](crate::groups::GroupService::check_commit)),
//! then applied in one transaction on every broker: deployments, commits and
//! status changes are commands of the metadata log (see [`crate::cluster`]).

use std::collections::BTreeSet;
use std::sync::Arc;

use bytes::Bytes;
use eddy_protocol::codec::from_bytes;
use eddy_protocol::messages::Empty;
use eddy_protocol::processors::*;
use eddy_protocol::ErrorCode;
use eddy_runtime::{ProcessorLimits, RuntimeError};

use super::access::Caller;
use super::{Failure, Handlers};
use crate::auth::authorizer::Resource;
use crate::store::processors::OffsetEntry;
use crate::store::{MetaCommand, ProcessorCommit, ProcessorDeployment, Store, StoreError};
use eddy_protocol::security::Operation;

/// Longest processor name, in bytes (its logs topic name must stay under the topic name limit).
pub const MAX_PROCESSOR_NAME_BYTES: usize = 200;
/// Most input topics of one processor.
pub const MAX_PROCESSOR_INPUTS: usize = 16;
/// Most group members per worker process.
pub const MAX_PROCESSOR_PARALLELISM: u32 = 64;
/// Largest module accepted.
pub const MAX_MODULE_BYTES: usize = 32 * 1024 * 1024;
/// Most bytes of parameter keys and values together.
pub const MAX_PARAMS_BYTES: usize = 64 * 1024;
/// Most bytes one state scan returns (larger requests are clamped).
pub const MAX_STATE_SCAN_BYTES: u32 = 16 * 1024 * 1024;
/// Retention of a processor's logs topic: 7 days.
pub const LOGS_RETENTION_MS: u64 = 7 * 24 * 60 * 60 * 1000;

fn invalid(message: impl Into<String>) -> Failure {
    Failure::new(ErrorCode::InvalidProcessor, message)
}

/// Processor names: 1 to [`MAX_PROCESSOR_NAME_BYTES`] bytes of `[A-Za-z0-9._-]`.
pub fn validate_processor_name(name: &str) -> Result<(), Failure> {
    let bad = |why: String| Err(invalid(format!("invalid processor name '{name}': {why}")));
    if name.is_empty() {
        return bad("it is empty".into());
    }
    if name.len() > MAX_PROCESSOR_NAME_BYTES {
        return bad(format!("it is {} bytes long, the limit is {MAX_PROCESSOR_NAME_BYTES}", name.len()));
    }
    if let Some(c) = name.chars().find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))) {
        return bad(format!("character {c:?} is not allowed (use letters, digits, '.', '_' and '-')"));
    }
    Ok(())
}

/// Runs a blocking store read off the async threads.
async fn blocking<T: Send + 'static>(
    store: &Arc<Store>,
    read: impl FnOnce(&Store) -> Result<T, StoreError> + Send + 'static,
) -> Result<T, Failure> {
    let store = store.clone();
    tokio::task::spawn_blocking(move || read(&store))
        .await
        .map_err(|e| Failure::new(ErrorCode::Internal, format!("read task failed: {e}")))?
        .map_err(Failure::from)
}

/// The store's deployment of a request: its configuration, the module's id,
/// when it was deployed; the store fills in version, size, status and counters.
pub(super) fn deployment_of(
    req: DeployProcessorRequest,
    module_id: String,
    deployed_at_ms: i64,
    initial_offsets: Vec<OffsetEntry>,
    deployed_by: String,
) -> ProcessorDeployment {
    let description = ProcessorDescription {
        name: req.name,
        version: 0,
        inputs: req.inputs,
        output: req.output,
        parallelism: req.parallelism,
        on_error: req.on_error,
        params: req.params,
        timeout_ms: req.timeout_ms,
        memory_bytes: req.memory_bytes,
        module_id,
        module_bytes: 0,
        deployed_at_ms,
        status: String::new(),
        status_reason: String::new(),
        stats: ProcessorStats::default(),
        deployed_by,
    };
    ProcessorDeployment { description, wasm: req.wasm, initial_offsets }
}

impl Handlers {
    /// Checks everything about a deployment that does not need the module.
    fn check_deployment(&self, req: &DeployProcessorRequest) -> Result<(), Failure> {
        validate_processor_name(&req.name)?;
        let name = &req.name;
        if req.inputs.is_empty() || req.inputs.len() > MAX_PROCESSOR_INPUTS {
            return Err(invalid(format!(
                "processor {name} has {} input topics; give 1 to {MAX_PROCESSOR_INPUTS}",
                req.inputs.len()
            )));
        }
        let missing = |what: &str, topic: &str| {
            Failure::new(
                ErrorCode::UnknownTopic,
                format!("{what} topic {topic} does not exist: create it with `eddy topic create {topic}`"),
            )
        };
        let mut seen = BTreeSet::new();
        let mut partition_counts = Vec::new();
        for input in &req.inputs {
            if !seen.insert(input.as_str()) {
                return Err(invalid(format!("input topic {input} is listed twice; list each input once")));
            }
            match self.store.topic(input) {
                Ok(topic) => partition_counts.push((input.as_str(), topic.config.partitions)),
                Err(_) => return Err(missing("input", input)),
            }
        }
        // State is per input partition number, shared by the inputs: they must
        // be co-partitioned (like the inputs of a Kafka Streams join).
        if partition_counts.windows(2).any(|w| w[0].1 != w[1].1) {
            let counts: Vec<String> = partition_counts.iter().map(|(t, n)| format!("{t} has {n}")).collect();
            return Err(invalid(format!(
                "the inputs must have the same number of partitions (partition p of every input is processed \
                 together, with one state): {}; add partitions with `eddy topic alter`",
                counts.join(", ")
            )));
        }
        if self.store.topic(&req.output).is_err() {
            return Err(missing("output", &req.output));
        }
        if seen.contains(req.output.as_str()) {
            return Err(invalid(format!(
                "output topic {} is also an input: a processor cannot write to a topic it reads",
                req.output
            )));
        }
        if req.on_error == ErrorPolicy::DeadLetter {
            let dlq = dead_letter_topic(&req.output);
            if super::validate_topic_name(&dlq).is_err() {
                return Err(invalid(format!(
                    "the dead-letter topic name {dlq} is not a valid topic name; use a shorter output topic \
                     or another error policy (skip or stop)"
                )));
            }
            if seen.contains(dlq.as_str()) {
                return Err(invalid(format!(
                    "the dead-letter topic {dlq} is also an input; failed records would be read again"
                )));
            }
        }
        if req.parallelism == 0 || req.parallelism > MAX_PROCESSOR_PARALLELISM {
            return Err(invalid(format!("parallelism {} is outside 1..={MAX_PROCESSOR_PARALLELISM}", req.parallelism)));
        }
        if req.wasm.is_empty() {
            return Err(invalid("the module is empty; give the .wasm file of a processor component"));
        }
        if req.wasm.len() > MAX_MODULE_BYTES {
            return Err(invalid(format!(
                "the module is {} bytes, over the limit of {MAX_MODULE_BYTES}; build it in release mode \
                 (and strip debug info)",
                req.wasm.len()
            )));
        }
        let params_bytes: usize = req.params.iter().map(|p| p.key.len() + p.value.len()).sum();
        if params_bytes > MAX_PARAMS_BYTES {
            return Err(invalid(format!(
                "parameters take {params_bytes} bytes, over the limit of {MAX_PARAMS_BYTES}; \
                 pass large data through a topic instead"
            )));
        }
        Ok(())
    }

    /// Compiles the module on the shared runtime (caching it for workers);
    /// returns its id (hex SHA-256).
    async fn validate_module(&self, name: &str, wasm: Bytes) -> Result<String, Failure> {
        let runtime = self.runtime.clone();
        let loaded = tokio::task::spawn_blocking(move || runtime.load(&wasm).map(|m| m.id().to_string()))
            .await
            .map_err(|e| Failure::new(ErrorCode::Internal, format!("validating the module failed: {e}")))?;
        match loaded {
            Ok(id) => Ok(id),
            Err(e @ RuntimeError::InvalidModule(_)) => Err(invalid(format!("processor {name}: {e}"))),
            Err(e) => Err(Failure::new(ErrorCode::Internal, format!("cannot validate the module: {e}"))),
        }
    }

    /// Creates a one-partition topic, replicated on up to three brokers,
    /// unless it exists (losing a creation race is fine).
    async fn ensure_topic(&self, name: String, retention_ms: Option<u64>) -> Result<(), Failure> {
        if self.store.topic(&name).is_ok() {
            return Ok(());
        }
        let rf = self.cluster.live_brokers().len().clamp(1, 3) as u16;
        match self.create_topic_replicated(name, 1, rf, 0, retention_ms, None).await {
            Ok(_) => Ok(()),
            Err(f) if f.code == ErrorCode::TopicAlreadyExists => Ok(()),
            Err(f) => Err(f),
        }
    }

    /// Deploying needs `create` on the processor, `read` on every input and
    /// `write` on the output: a processor can never be given more rights
    /// than its deployer has.
    pub(super) async fn deploy_processor(
        &self,
        payload: Bytes,
        caller: &Caller,
    ) -> Result<ProcessorDescription, Failure> {
        let req: DeployProcessorRequest = from_bytes(payload)?;
        self.check(caller, Operation::Create, Resource::processor(&req.name))?;
        for input in &req.inputs {
            self.check(caller, Operation::Read, Resource::topic(input))?;
        }
        self.check(caller, Operation::Write, Resource::topic(&req.output))?;
        self.check_deployment(&req)?;
        tracing::info!(processor = %req.name, deployer = %caller.principal, "deploying a processor");
        let module_id = self.validate_module(&req.name, req.wasm.clone()).await?;
        if req.on_error == ErrorPolicy::DeadLetter {
            self.ensure_topic(dead_letter_topic(&req.output), None).await?;
        }
        self.ensure_topic(processor_logs_topic(&req.name), Some(LOGS_RETENTION_MS)).await?;
        // Used only if this is the first deployment (the store decides, atomically).
        let mut initial_offsets = Vec::new();
        for input in &req.inputs {
            let topic = self.store.topic(input)?;
            for partition in 0..topic.config.partitions {
                // The partition leaders know the log ends: ask them.
                let (log_start, log_end) = self.partition_bounds(input, partition).await?;
                let offset = match req.start {
                    StartPosition::Beginning => log_start,
                    StartPosition::End => log_end,
                    StartPosition::Offset(n) => n.clamp(log_start, log_end),
                };
                initial_offsets.push((input.clone(), partition, offset, String::new()));
            }
        }
        let deployment = deployment_of(req, module_id, crate::now_ms(), initial_offsets, caller.principal.to_string());
        let output = self.cluster.propose(MetaCommand::from(deployment)).await?;
        Ok(output.into_processor()?)
    }

    pub(super) fn list_processors(&self, payload: Bytes, caller: &Caller) -> Result<ListProcessorsResponse, Failure> {
        let ListProcessorsRequest {} = from_bytes(payload)?;
        let mut processors = self.store.processors();
        processors.retain(|p| self.may(caller, Operation::Describe, Resource::processor(&p.name)));
        Ok(ListProcessorsResponse { processors })
    }

    pub(super) fn describe_processor(&self, payload: Bytes, caller: &Caller) -> Result<ProcessorDescription, Failure> {
        let req: DescribeProcessorRequest = from_bytes(payload)?;
        self.check(caller, Operation::Describe, Resource::processor(&req.name))?;
        Ok(self.store.processor(&req.name)?)
    }

    pub(super) async fn delete_processor(&self, payload: Bytes, caller: &Caller) -> Result<Empty, Failure> {
        let req: DeleteProcessorRequest = from_bytes(payload)?;
        self.check(caller, Operation::Delete, Resource::processor(&req.name))?;
        self.cluster.propose(MetaCommand::DeleteProcessor { name: req.name }).await?;
        Ok(Empty)
    }

    pub(super) async fn fetch_processor_module(
        &self,
        payload: Bytes,
        caller: &Caller,
    ) -> Result<FetchProcessorModuleResponse, Failure> {
        let req: FetchProcessorModuleRequest = from_bytes(payload)?;
        self.check(caller, Operation::Read, Resource::processor(&req.name))?;
        let wasm = blocking(&self.store, move |store| store.processor_module(&req.name, req.version)).await?;
        Ok(FetchProcessorModuleResponse { wasm })
    }

    /// Needs `write` on the processor (its worker, or a broker); offsets
    /// only of the processor's own inputs.
    pub(super) async fn commit_processor_batch(&self, payload: Bytes, caller: &Caller) -> Result<Empty, Failure> {
        let req: CommitProcessorBatchRequest = from_bytes(payload)?;
        self.check(caller, Operation::Write, Resource::processor(&req.name))?;
        let processor = self.store.processor(&req.name)?;
        if let Some(o) = req.offsets.iter().find(|o| !processor.inputs.contains(&o.topic)) {
            return Err(Failure::new(
                ErrorCode::AuthorizationFailed,
                format!("processor '{}' may commit offsets of its inputs only, not of topic '{}'", req.name, o.topic),
            ));
        }
        let limits = ProcessorLimits::default();
        for p in &req.state {
            for w in &p.writes {
                if w.key.len() > limits.max_state_key_bytes {
                    return Err(Failure::new(
                        ErrorCode::InvalidRequest,
                        format!(
                            "a state key of partition {} is {} bytes, over the limit of {}",
                            p.partition,
                            w.key.len(),
                            limits.max_state_key_bytes
                        ),
                    ));
                }
                let value_len = w.value.as_ref().map_or(0, Bytes::len);
                if value_len > limits.max_state_value_bytes {
                    return Err(Failure::new(
                        ErrorCode::InvalidRequest,
                        format!(
                            "a state value of partition {} is {value_len} bytes, over the limit of {}",
                            p.partition, limits.max_state_value_bytes
                        ),
                    ));
                }
            }
        }
        // The member must own every partition it commits offsets for, and for
        // state of partition p, partition p of every input that has one (the
        // inputs are co-partitioned; the state is shared by them).
        let mut partitions: BTreeSet<(String, u32)> =
            req.offsets.iter().map(|o| (o.topic.clone(), o.partition)).collect();
        for p in &req.state {
            for input in &processor.inputs {
                if self.store.partition(input, p.partition).is_ok() {
                    partitions.insert((input.clone(), p.partition));
                }
            }
        }
        let partitions: Vec<(String, u32)> = partitions.into_iter().collect();
        self.groups.check_commit(&processor_group(&req.name), &req.member_id, req.generation, &partitions)?;
        let commit = ProcessorCommit {
            name: req.name,
            offsets: req.offsets.into_iter().map(|o| (o.topic, o.partition, o.offset, o.metadata)).collect(),
            state: req.state,
            stats: req.stats,
        };
        self.cluster.propose(MetaCommand::from(commit)).await?;
        Ok(Empty)
    }

    pub(super) async fn state_scan(&self, payload: Bytes, caller: &Caller) -> Result<StateScanResponse, Failure> {
        let req: StateScanRequest = from_bytes(payload)?;
        self.check(caller, Operation::Read, Resource::processor(&req.name))?;
        let max_bytes = req.max_bytes.clamp(1, MAX_STATE_SCAN_BYTES) as usize;
        let (entries, more) = blocking(&self.store, move |store| {
            store.state_scan(&req.name, req.partition, req.after.as_deref(), max_bytes)
        })
        .await?;
        let entries = entries.into_iter().map(|(key, value)| StateEntry { key, value: Some(value) }).collect();
        Ok(StateScanResponse { entries, more })
    }

    pub(super) async fn stop_processor(&self, payload: Bytes, caller: &Caller) -> Result<Empty, Failure> {
        let req: StopProcessorRequest = from_bytes(payload)?;
        self.check(caller, Operation::Alter, Resource::processor(&req.name))?;
        let command = MetaCommand::SetProcessorStatus {
            name: req.name,
            version: req.version,
            status: STATUS_STOPPED.to_string(),
            reason: req.reason,
        };
        self.cluster.propose(command).await?;
        Ok(Empty)
    }
}
