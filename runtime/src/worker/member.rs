//! One member of a processor's consumer group: fetch, process, produce with
//! acks=all, then commit offsets and state in one broker transaction.
//!
//! The loop, per `poll`:
//! 1. Group the records by input partition; open an [`Instance`] for each new
//!    partition with its committed state loaded from the broker.
//! 2. Run the module on a blocking thread, in calls of about
//!    [`CALL_BYTES`] of keys and values; take each instance's state writes.
//! 3. Send the outputs (and dead letters) with acks=all and wait for every
//!    acknowledgement.
//! 4. Commit the next offsets, the state writes and the counters with
//!    `CommitProcessorBatch`; only then apply the writes to the local state.
//!
//! At-least-once with exact state: a crash before step 4 repeats the outputs
//! of the batch later, but the state and offsets move together. A commit the
//! group refuses (a rebalance moved the partition) is certainly not applied:
//! the member forgets the partitions' instances and rewinds to the batch start.
//! Any other failure ends the member; the worker starts a fresh one, which
//! resumes from the committed offsets and state.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use eddy_protocol::messages::{Acks, CommittedOffset};
use eddy_protocol::processors::{
    dead_letter_topic, dlq_headers, processor_group, processor_logs_topic, ErrorPolicy, PartitionStateWrites,
    ProcessorDescription, ProcessorStats, StateEntry,
};
use eddy_sdk::{
    AssignmentStrategy, Client, ClientError, ConsumerRecord, ErrorCode, GroupConfig, GroupConsumer, Header,
    OffsetReset, Processors, Producer, ProducerConfig, ProducerRecord,
};
use tokio::sync::watch;

use super::logs::{CurrentTopic, LogForwarder};
use super::state::SharedState;
use super::WorkerError;
use crate::instance::{InputRecord, Instance, LogLevel, RecordOutcome};
use crate::limits::ProcessorLimits;
use crate::module::Module;

/// Keys and values handed to the module per call (the measured sweet spot is
/// around 100 KiB, see runtime/benches/boundary.rs).
pub(crate) const CALL_BYTES: usize = 128 * 1024;

/// Keys and values processed, produced and committed as one batch (at
/// least one record): bounds the memory and the work a failure repeats.
pub(crate) const BATCH_BYTES: usize = 4 * 1024 * 1024;

/// How long one `poll` waits for records before checking for a stop.
const POLL_WAIT: Duration = Duration::from_millis(200);

/// How a member ended.
#[derive(Debug)]
pub(crate) enum MemberExit {
    /// It was asked to stop and left the group.
    Stopped,
    /// The processor's `stop` policy (or a failing `init`) stopped the processor.
    Halted(String),
    /// It failed; the worker starts another after a pause.
    Failed(WorkerError),
}

/// Everything one member needs.
pub(crate) struct MemberContext {
    pub client: Client,
    pub desc: ProcessorDescription,
    pub module: Arc<Module>,
    pub limits: ProcessorLimits,
    pub client_id: String,
    pub session_timeout: Duration,
}

/// One input partition number's instance and committed state (shared by the
/// processor's co-partitioned inputs).
struct Partition {
    instance: Instance,
    state: SharedState,
    /// The topic its log messages name.
    log_topic: CurrentTopic,
}

/// The records of one input partition number (of any of the inputs, in poll
/// order) in one batch, and what the module made of them.
struct PartitionBatch {
    partition: u32,
    part: Partition,
    records: Vec<ConsumerRecord>,
    outcomes: Vec<RecordOutcome>,
    state_writes: Vec<(Vec<u8>, Option<Vec<u8>>)>,
    wasm_time: Duration,
}

/// What the module made of one partition's records, without the instance.
struct BatchResult {
    partition: u32,
    records: Vec<ConsumerRecord>,
    outcomes: Vec<RecordOutcome>,
    state_writes: Vec<(Vec<u8>, Option<Vec<u8>>)>,
    wasm_time: Duration,
}

impl BatchResult {
    fn split(b: PartitionBatch) -> (Partition, BatchResult) {
        let PartitionBatch { partition, part, records, outcomes, state_writes, wasm_time } = b;
        (part, BatchResult { partition, records, outcomes, state_writes, wasm_time })
    }
}

/// Runs one member until `stop` turns true or it fails.
pub(crate) async fn run(ctx: MemberContext, mut stop: watch::Receiver<bool>) -> MemberExit {
    let mut member = match Member::start(ctx).await {
        Ok(m) => m,
        Err(e) => return MemberExit::Failed(e),
    };
    let exit = loop {
        // Poll only when the backlog is empty, so that everything handed out
        // before a rebalance has been committed (or given up) by then.
        if member.backlog.is_empty() {
            let records = tokio::select! {
                _ = stop.changed() => break MemberExit::Stopped,
                r = member.consumer.poll(POLL_WAIT) => r,
            };
            match records {
                Ok(records) => member.after_poll(records),
                Err(e) => break MemberExit::Failed(WorkerError::Client(e)),
            }
        }
        let batch = member.next_batch();
        let result = if batch.is_empty() { Ok(None) } else { member.handle(batch).await };
        match result {
            Ok(None) => {}
            Ok(Some(halt)) => break halt,
            Err(e) => break MemberExit::Failed(e),
        }
        if *stop.borrow() {
            break MemberExit::Stopped;
        }
    };
    member.close().await;
    exit
}

struct Member {
    ctx: MemberContext,
    consumer: GroupConsumer,
    producer: Producer,
    processors: Processors,
    logs: LogForwarder,
    /// Instances by input partition number.
    parts: HashMap<u32, Partition>,
    dead_letters: String,
    /// Records polled but not processed yet, in poll order.
    backlog: VecDeque<ConsumerRecord>,
    /// The group generation the instances belong to.
    generation: u32,
}

impl Member {
    async fn start(ctx: MemberContext) -> Result<Self, WorkerError> {
        let name = ctx.desc.name.clone();
        let config = GroupConfig::new(processor_group(&name))
            .auto_commit(None)
            .offset_reset(OffsetReset::Earliest)
            .session_timeout(ctx.session_timeout)
            // Range assignment gives partition p of every input to the same
            // member: the inputs are co-partitioned and share p's state.
            .strategy(AssignmentStrategy::Range)
            .client_id(ctx.client_id.clone());
        let producer_config =
            ProducerConfig { acks: Acks::All, linger: Duration::from_millis(1), ..Default::default() };
        let producer = Producer::new(ctx.client.clone(), producer_config).await?;
        let consumer = GroupConsumer::subscribe(ctx.client.clone(), config, &ctx.desc.inputs).await?;
        let logs = LogForwarder::spawn(producer.clone(), processor_logs_topic(&name), name, ctx.desc.version);
        let dead_letters = dead_letter_topic(&ctx.desc.output);
        let processors = Processors::new(ctx.client.clone());
        Ok(Member {
            ctx,
            consumer,
            producer,
            processors,
            logs,
            parts: HashMap::new(),
            dead_letters,
            backlog: VecDeque::new(),
            generation: 0,
        })
    }

    /// Leaves the group and flushes what is queued (logs).
    async fn close(self) {
        if let Err(e) = self.consumer.close().await {
            tracing::debug!(error = %e, "leaving the processor group failed");
        }
        let _ = tokio::time::timeout(Duration::from_secs(5), self.producer.close()).await;
    }

    /// Processes one poll's records. `Some` ends the member (the processor stopped).
    /// Takes a poll's records. After a rebalance every instance is dropped:
    /// another member may have changed a partition's state in between, so it
    /// is read again.
    fn after_poll(&mut self, records: Vec<ConsumerRecord>) {
        if self.consumer.generation() != self.generation {
            self.parts.clear();
            self.generation = self.consumer.generation();
        }
        self.backlog.extend(records);
    }

    /// The next records to process: up to [`BATCH_BYTES`] of keys and values
    /// (at least one record) from the backlog.
    fn next_batch(&mut self) -> Vec<ConsumerRecord> {
        let mut bytes = 0;
        let mut batch = Vec::new();
        while let Some(r) = self.backlog.front() {
            let size = r.key.as_ref().map_or(0, |k| k.len()) + r.value.len();
            if !batch.is_empty() && bytes + size > BATCH_BYTES {
                break;
            }
            bytes += size;
            batch.extend(self.backlog.pop_front());
        }
        batch
    }

    async fn handle(&mut self, records: Vec<ConsumerRecord>) -> Result<Option<MemberExit>, WorkerError> {
        let generation = self.consumer.generation();
        let member_id = self.consumer.member_id().to_string();

        let mut batches = Vec::new();
        for (partition, records) in group_by_partition(records) {
            let part = match self.parts.remove(&partition) {
                Some(p) => p,
                None => match self.open_partition(partition).await? {
                    Ok(p) => p,
                    Err(reason) => return Ok(Some(self.halt(reason).await)),
                },
            };
            batches.push(PartitionBatch {
                partition,
                part,
                records,
                outcomes: Vec::new(),
                state_writes: Vec::new(),
                wasm_time: Duration::ZERO,
            });
        }

        let batches = tokio::task::spawn_blocking(move || {
            let mut batches = batches;
            for b in &mut batches {
                process_partition(b);
            }
            batches
        })
        .await
        .map_err(|e| WorkerError::Internal(format!("processing task failed: {e}")))?;
        // Instances are not Sync: keep them apart while awaiting below.
        let (parts, batches): (Vec<Partition>, Vec<BatchResult>) = batches.into_iter().map(BatchResult::split).unzip();

        // Outputs and dead letters, then wait for every acknowledgement.
        let mut stats = ProcessorStats::default();
        let mut deliveries = Vec::new();
        for b in &batches {
            stats.wasm_nanos += b.wasm_time.as_nanos() as u64;
            for (record, outcome) in b.records.iter().zip(&b.outcomes) {
                stats.records_in += 1;
                match outcome {
                    Ok(outputs) => {
                        for out in outputs {
                            let record = ProducerRecord {
                                topic: self.ctx.desc.output.clone(),
                                partition: None,
                                key: out.key.clone(),
                                value: out.value.clone(),
                                timestamp: Some(record.timestamp),
                                headers: out
                                    .headers
                                    .iter()
                                    .map(|(k, v)| Header { key: k.clone(), value: Bytes::from(v.clone()) })
                                    .collect(),
                            };
                            deliveries.push(self.producer.send(record).await?);
                            stats.records_out += 1;
                        }
                    }
                    Err(e) => {
                        stats.errors += 1;
                        let what = format!(
                            "record {}/{}@{} failed: {}: {e}",
                            record.topic,
                            record.partition,
                            record.offset,
                            e.kind()
                        );
                        match self.ctx.desc.on_error {
                            ErrorPolicy::DeadLetter => {
                                self.logs.log(
                                    LogLevel::Warn,
                                    &record.topic,
                                    Some(record.partition),
                                    format!("{what}; sent to {}", self.dead_letters),
                                );
                                let dead = dead_letter(
                                    &self.dead_letters,
                                    &self.ctx.desc.name,
                                    record,
                                    e.kind(),
                                    &e.to_string(),
                                );
                                deliveries.push(self.producer.send(dead).await?);
                                stats.dead_lettered += 1;
                            }
                            ErrorPolicy::Skip => {
                                self.logs.log(
                                    LogLevel::Warn,
                                    &record.topic,
                                    Some(record.partition),
                                    format!("{what}; skipped"),
                                );
                            }
                            ErrorPolicy::Stop => {
                                let reason = format!("{what}; processor stopped by its on-error policy");
                                return Ok(Some(self.halt(reason).await));
                            }
                        }
                    }
                }
            }
        }
        self.producer.flush().await?;
        for delivery in deliveries {
            delivery.await?;
        }

        // Offsets, state and counters in one broker transaction.
        stats.batches = 1;
        let mut next: HashMap<(String, u32), u64> = HashMap::new();
        for r in batches.iter().flat_map(|b| &b.records) {
            let offset = next.entry((r.topic.clone(), r.partition)).or_default();
            *offset = (*offset).max(r.offset + 1);
        }
        let offsets = next
            .into_iter()
            .map(|((topic, partition), offset)| CommittedOffset { topic, partition, offset, metadata: String::new() })
            .collect();
        let state = batches
            .iter()
            .filter(|b| !b.state_writes.is_empty())
            .map(|b| PartitionStateWrites {
                partition: b.partition,
                writes: b
                    .state_writes
                    .iter()
                    .map(|(k, v)| StateEntry { key: Bytes::from(k.clone()), value: v.clone().map(Bytes::from) })
                    .collect(),
            })
            .collect();
        let name = self.ctx.desc.name.clone();
        match self.processors.commit_batch(&name, &member_id, generation, offsets, state, stats).await {
            Ok(()) => {
                for (b, part) in batches.into_iter().zip(parts) {
                    part.state.apply(b.state_writes);
                    self.parts.insert(b.partition, part);
                }
                Ok(None)
            }
            Err(e) if is_fenced(&e) => {
                // Not applied: a rebalance took the partitions. Rewind so that
                // nothing is skipped if they stay with this member.
                tracing::info!(processor = %name, error = %e, "commit refused by the group; rewinding the batch");
                drop(parts);
                self.rewind(batches.iter().flat_map(|b| &b.records)).await;
                Ok(None)
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Gives up the backlog and seeks every partition with records in it or
    /// in `firsts` (the records of a batch that was not committed, in order)
    /// back to its first uncommitted record; the instances of those partition
    /// numbers are dropped with their state.
    async fn rewind<'a>(&mut self, firsts: impl Iterator<Item = &'a ConsumerRecord>) {
        let mut starts: HashMap<(String, u32), u64> = HashMap::new();
        for r in firsts {
            starts.entry((r.topic.clone(), r.partition)).or_insert(r.offset);
        }
        for r in &self.backlog {
            starts.entry((r.topic.clone(), r.partition)).or_insert(r.offset);
        }
        self.backlog.clear();
        for ((topic, partition), offset) in starts {
            self.parts.remove(&partition);
            // Fails for partitions no longer owned; the next poll rejoins and
            // starts them at the committed offsets.
            let _ = self.consumer.seek(&topic, partition, offset).await;
        }
    }

    /// Loads an input partition's committed state and starts its instance.
    /// The inner `Err` is a module whose `init` fails: the processor cannot run.
    async fn open_partition(&mut self, partition: u32) -> Result<Result<Partition, String>, WorkerError> {
        let entries = self.processors.load_state(&self.ctx.desc.name, partition).await?;
        let state = SharedState::from_entries(entries);
        let module = self.ctx.module.clone();
        let limits = self.ctx.limits.clone();
        let params = self.ctx.desc.params.iter().map(|p| (p.key.clone(), p.value.clone())).collect();
        let view = Box::new(state.clone());
        let log_topic = CurrentTopic::default();
        let sink = self.logs.sink(partition, log_topic.clone());
        let instance = tokio::task::spawn_blocking(move || Instance::new(&module, limits, params, view, sink))
            .await
            .map_err(|e| WorkerError::Internal(format!("instance task failed: {e}")))?;
        match instance {
            Ok(instance) => Ok(Ok(Partition { instance, state, log_topic })),
            Err(e) => Ok(Err(format!("cannot start an instance for input partition {partition}: {e}"))),
        }
    }

    /// Marks the processor stopped with `reason` and ends the member.
    async fn halt(&mut self, reason: String) -> MemberExit {
        let name = &self.ctx.desc.name;
        tracing::error!(processor = %name, %reason, "processor stopped");
        self.logs.log(LogLevel::Error, "", None, reason.clone());
        if let Err(e) = self.processors.stop(name, self.ctx.desc.version, &reason).await {
            tracing::warn!(processor = %name, error = %e, "could not record the processor's stop");
        }
        MemberExit::Halted(reason)
    }
}

/// Whether a commit was refused by the group (and so certainly not applied).
fn is_fenced(e: &ClientError) -> bool {
    matches!(
        e.code(),
        Some(
            ErrorCode::IllegalGeneration
                | ErrorCode::UnknownMember
                | ErrorCode::RebalanceInProgress
                | ErrorCode::NotPartitionOwner
        )
    )
}

/// Splits records by input partition number, keeping their order in each.
fn group_by_partition(records: Vec<ConsumerRecord>) -> Vec<(u32, Vec<ConsumerRecord>)> {
    let mut out: Vec<(u32, Vec<ConsumerRecord>)> = Vec::new();
    for r in records {
        match out.iter_mut().find(|(p, _)| *p == r.partition) {
            Some((_, v)) => v.push(r),
            None => out.push((r.partition, vec![r])),
        }
    }
    out
}

/// Runs the module over one partition's records, in calls of about
/// [`CALL_BYTES`], and takes the state writes. Runs on a blocking thread.
fn process_partition(b: &mut PartitionBatch) {
    let started = thread_cpu_time();
    let mut start = 0;
    while start < b.records.len() {
        // One call: records of one topic, about CALL_BYTES of them.
        let topic = b.records[start].topic.clone();
        let mut bytes = 0;
        let mut end = start;
        while end < b.records.len() && (end == start || (bytes < CALL_BYTES && b.records[end].topic == topic)) {
            let r = &b.records[end];
            bytes += r.key.as_ref().map_or(0, |k| k.len()) + r.value.len();
            end += 1;
        }
        let chunk = &b.records[start..end];
        let headers: Vec<Vec<(&str, &[u8])>> =
            chunk.iter().map(|r| r.headers.iter().map(|h| (h.key.as_str(), &h.value[..])).collect()).collect();
        let inputs: Vec<InputRecord<'_>> = chunk
            .iter()
            .zip(&headers)
            .map(|(r, h)| InputRecord {
                offset: r.offset,
                timestamp_ms: r.timestamp,
                key: r.key.as_deref(),
                value: &r.value,
                headers: h,
            })
            .collect();
        topic.clone_into(&mut b.part.log_topic.lock().unwrap_or_else(|e| e.into_inner()));
        let outcomes = b.part.instance.process(&topic, b.partition, &inputs);
        b.outcomes.extend(outcomes);
        start = end;
    }
    b.state_writes = b.part.instance.take_state_writes();
    b.wasm_time = thread_cpu_time().saturating_sub(started);
}

/// CPU time of the calling thread: the cost of processing, without the time
/// the thread waited for a core (the broker's threads share them).
fn thread_cpu_time() -> Duration {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime only writes the timespec we pass.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    if rc != 0 {
        return Duration::ZERO;
    }
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// The input record as a dead letter: its key, value, timestamp and headers,
/// plus headers saying why and where it came from.
fn dead_letter(topic: &str, processor: &str, record: &ConsumerRecord, kind: &str, message: &str) -> ProducerRecord {
    let mut headers = record.headers.clone();
    let mut add = |k: &str, v: String| headers.push(Header { key: k.to_string(), value: Bytes::from(v) });
    add(dlq_headers::ERROR_KIND, kind.to_string());
    add(dlq_headers::ERROR_MESSAGE, message.to_string());
    add(dlq_headers::SOURCE_TOPIC, record.topic.clone());
    add(dlq_headers::SOURCE_PARTITION, record.partition.to_string());
    add(dlq_headers::SOURCE_OFFSET, record.offset.to_string());
    add(dlq_headers::PROCESSOR, processor.to_string());
    ProducerRecord {
        topic: topic.to_string(),
        partition: None,
        key: record.key.clone(),
        value: record.value.clone(),
        timestamp: Some(record.timestamp),
        headers,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(topic: &str, partition: u32, offset: u64) -> ConsumerRecord {
        ConsumerRecord {
            topic: topic.to_string(),
            partition,
            offset,
            timestamp: 42,
            key: Some(Bytes::from_static(b"k")),
            value: Bytes::from_static(b"v"),
            headers: vec![Header { key: "h".into(), value: Bytes::from_static(b"1") }],
        }
    }

    #[test]
    fn records_are_grouped_by_partition_number_in_poll_order() {
        let records =
            vec![record("a", 0, 5), record("a", 1, 7), record("b", 0, 1), record("a", 0, 6), record("a", 1, 8)];
        let groups = group_by_partition(records);
        let shape: Vec<(u32, Vec<(String, u64)>)> =
            groups.into_iter().map(|(p, rs)| (p, rs.iter().map(|r| (r.topic.clone(), r.offset)).collect())).collect();
        assert_eq!(
            shape,
            vec![
                (0, vec![("a".into(), 5), ("b".into(), 1), ("a".into(), 6)]),
                (1, vec![("a".into(), 7), ("a".into(), 8)])
            ]
        );
    }

    #[test]
    fn a_dead_letter_keeps_the_record_and_says_why_and_where_from() {
        let dead = dead_letter("out.dlq", "upper", &record("in", 3, 17), "trap", "boom");
        assert_eq!(dead.topic, "out.dlq");
        assert_eq!(dead.key.as_deref(), Some(&b"k"[..]));
        assert_eq!(&dead.value[..], b"v");
        assert_eq!(dead.timestamp, Some(42));
        let header =
            |k: &str| dead.headers.iter().find(|h| h.key == k).map(|h| String::from_utf8_lossy(&h.value).into_owned());
        assert_eq!(header("h").as_deref(), Some("1"), "the record's own headers are kept");
        assert_eq!(header(dlq_headers::ERROR_KIND).as_deref(), Some("trap"));
        assert_eq!(header(dlq_headers::ERROR_MESSAGE).as_deref(), Some("boom"));
        assert_eq!(header(dlq_headers::SOURCE_TOPIC).as_deref(), Some("in"));
        assert_eq!(header(dlq_headers::SOURCE_PARTITION).as_deref(), Some("3"));
        assert_eq!(header(dlq_headers::SOURCE_OFFSET).as_deref(), Some("17"));
        assert_eq!(header(dlq_headers::PROCESSOR).as_deref(), Some("upper"));
    }

    fn broker_error(code: ErrorCode) -> ClientError {
        ClientError::Broker { code, message: String::new(), log_start: None, log_end: None }
    }

    #[test]
    fn only_group_refusals_count_as_fenced() {
        assert!(is_fenced(&broker_error(ErrorCode::IllegalGeneration)));
        assert!(is_fenced(&broker_error(ErrorCode::NotPartitionOwner)));
        assert!(!is_fenced(&broker_error(ErrorCode::StorageError)));
        assert!(!is_fenced(&broker_error(ErrorCode::Timeout)));
    }
}
