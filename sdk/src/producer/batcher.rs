//! The producer's batching state machine, with no I/O and no clock: the caller
//! passes `now` in and polls outputs, in the manner of quinn-proto.
//!
//! It owns, per topic: the partition count learned from metadata, the
//! partitioner state (sticky partition for keyless records), one open
//! [`BatchBuilder`] per partition, the closed batches waiting to be sent, and
//! the records parked while the topic's metadata is being fetched. Outputs are
//! polled: [`Batcher::poll_metadata`] (topics whose partition count is needed)
//! and [`Batcher::poll_ready`] (produce requests to write, grouped per topic).
//!
//! Idempotence: each partition has a producer id and the sequence number of
//! its next record. Closing a batch stamps both into it (the CRC covers
//! them) and advances the sequence by the batch's record count, wrapping. The
//! driver restarts a partition's sequence under a new producer id after a
//! batch of it failed for good ([`Batcher::restart_sequence`]).
//!
//! Invariants:
//! * records of one partition leave in the order they were pushed: batches of a
//!   partition are closed in order, queued in order, and a request carries at
//!   most one batch per partition, so that later batches go in later requests;
//! * the sequences of a partition's batches follow each other in closing order;
//! * while a topic waits for metadata every new record of it is parked behind
//!   the earlier ones, so parking never reorders a partition.
//!
//! Also here, equally free of I/O: the [`FlushTracker`] behind
//! `Producer::flush`, the zero-copy encoding of a produce request, and the
//! mapping of a produce response to per-record offsets.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes, BytesMut};
use eddy_protocol::batch::{BatchBuilder, BATCH_HEADER_BYTES};
use eddy_protocol::frame::{ApiKey, PROTOCOL_VERSION, REQUEST_HEADER_BYTES};
use eddy_protocol::limits::{MAX_LIST_LEN, MAX_RECORDS_PER_BATCH};
use eddy_protocol::messages::{Acks, ProduceResponse};
use eddy_protocol::partition::partition_for_key;
use eddy_protocol::ErrorCode;
use tokio::sync::oneshot;

use super::{ProducerRecord, RecordMetadata};
use crate::error::{decode_response, ClientError};

/// Largest produce request the producer builds (batch bytes), well under the
/// protocol's frame limit: batches ready at once are split across requests.
pub(crate) const MAX_REQUEST_BYTES: usize = 16 * 1024 * 1024;

/// Cached partition counts older than this are refreshed in the background.
pub(crate) const METADATA_MAX_AGE: Duration = Duration::from_secs(300);

/// An explicit partition beyond the cached count triggers a metadata refresh
/// only if the cache is at least this old; otherwise the record fails at once.
pub(crate) const METADATA_MIN_REFRESH: Duration = Duration::from_secs(1);

/// Where a record's outcome goes.
pub(crate) type Completion = oneshot::Sender<Result<RecordMetadata, ClientError>>;

/// A record waiting for its outcome: its completion and the flush epoch it was
/// enqueued in.
#[derive(Debug)]
pub(crate) struct Pending {
    pub tx: Completion,
    pub epoch: u64,
}

/// A closed batch of one partition, ready to be sent.
#[derive(Debug)]
pub(crate) struct ReadyBatch {
    pub partition: u32,
    pub batch: Bytes,
    /// One entry per record, in record order.
    pub pending: Vec<Pending>,
    /// When its first record was added: the start of its delivery timeout.
    pub created: Instant,
}

/// Batches of one topic to send together in one produce request.
#[derive(Debug)]
pub(crate) struct ReadyRequest {
    pub topic: Arc<str>,
    /// At most one batch per partition.
    pub batches: Vec<ReadyBatch>,
    /// Sum of the batch sizes.
    pub bytes: usize,
}

/// Batching limits and the producer id.
#[derive(Debug, Clone, Copy)]
pub(crate) struct BatchConfig {
    pub max_batch_bytes: usize,
    pub linger: Duration,
    /// Stamped into every batch with its sequence; 0: not idempotent (no sequences).
    pub producer_id: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TopicState {
    /// No partition count; the next record asks for metadata.
    Unknown,
    /// Metadata requested; records are parked.
    Waiting,
    /// Partition count known.
    Ready,
}

#[derive(Debug)]
struct OpenBatch {
    id: u64,
    builder: BatchBuilder,
    pending: Vec<Pending>,
    opened: Instant,
}

/// A partition's idempotence state: the producer id and the next sequence.
#[derive(Debug, Clone, Copy)]
struct Sequence {
    producer_id: u64,
    next: u32,
}

#[derive(Debug)]
struct TopicAcc {
    name: Arc<str>,
    state: TopicState,
    partitions: u32,
    fetched_at: Option<Instant>,
    /// A metadata request for this topic is outstanding.
    refreshing: bool,
    sticky: u32,
    /// Indexed by partition; at least `partitions` long.
    open: Vec<Option<OpenBatch>>,
    /// Per partition: the serial of the last request a batch was grouped into.
    stamp: Vec<u64>,
    /// Per partition: producer id and next sequence.
    seq: Vec<Sequence>,
    ready: VecDeque<ReadyBatch>,
    /// In `ready_topics` already.
    queued: bool,
    parked: VecDeque<(ProducerRecord, Pending)>,
}

/// What the partitioner decided for one record.
enum Choice {
    Partition(u32),
    /// A keyless record: the topic's sticky partition.
    Sticky,
    /// The explicit partition is beyond a stale cached count: refresh, then decide.
    Refresh,
    Fail(ClientError),
}

/// The producer's accumulators and partitioner. See the module docs.
#[derive(Debug)]
pub(crate) struct Batcher {
    cfg: BatchConfig,
    seed: u32,
    topics: Vec<TopicAcc>,
    index: HashMap<Arc<str>, usize>,
    last_topic: Option<usize>,
    /// Linger deadlines in batch-opening order (monotonic because `now` is).
    deadlines: VecDeque<(Instant, usize, u32, u64)>,
    next_batch_id: u64,
    next_request_serial: u64,
    ready_topics: Vec<usize>,
    metadata_wanted: Vec<usize>,
    open_count: usize,
    parked_count: usize,
}

impl Batcher {
    /// A batcher; `seed` picks each topic's first sticky partition.
    pub fn new(cfg: BatchConfig, seed: u32) -> Self {
        debug_assert!(cfg.max_batch_bytes > BATCH_HEADER_BYTES);
        Self {
            cfg,
            seed,
            topics: Vec::new(),
            index: HashMap::new(),
            last_topic: None,
            deadlines: VecDeque::new(),
            next_batch_id: 0,
            next_request_serial: 0,
            ready_topics: Vec::new(),
            metadata_wanted: Vec::new(),
            open_count: 0,
            parked_count: 0,
        }
    }

    fn topic_index(&mut self, name: &str) -> usize {
        if let Some(t) = self.last_topic {
            if &*self.topics[t].name == name {
                return t;
            }
        }
        let t = match self.index.get(name) {
            Some(&t) => t,
            None => {
                let name: Arc<str> = Arc::from(name);
                self.topics.push(TopicAcc {
                    name: name.clone(),
                    state: TopicState::Unknown,
                    partitions: 0,
                    fetched_at: None,
                    refreshing: false,
                    sticky: 0,
                    open: Vec::new(),
                    stamp: Vec::new(),
                    seq: Vec::new(),
                    ready: VecDeque::new(),
                    queued: false,
                    parked: VecDeque::new(),
                });
                let t = self.topics.len() - 1;
                self.index.insert(name, t);
                t
            }
        };
        self.last_topic = Some(t);
        t
    }

    fn want_metadata(&mut self, t: usize) {
        let topic = &mut self.topics[t];
        if !topic.refreshing {
            topic.refreshing = true;
            self.metadata_wanted.push(t);
        }
    }

    fn park(&mut self, t: usize, record: ProducerRecord, pending: Pending) {
        self.topics[t].parked.push_back((record, pending));
        self.parked_count += 1;
    }

    /// Adds a record. Returns it back with an error if it fails without being
    /// sent (explicit partition that does not exist).
    pub fn push(&mut self, record: ProducerRecord, pending: Pending, now: Instant) -> Option<(Pending, ClientError)> {
        let t = self.topic_index(&record.topic);
        match self.topics[t].state {
            TopicState::Unknown => {
                self.topics[t].state = TopicState::Waiting;
                self.want_metadata(t);
                self.park(t, record, pending);
                None
            }
            TopicState::Waiting => {
                self.park(t, record, pending);
                None
            }
            TopicState::Ready => {
                debug_assert!(self.topics[t].parked.is_empty());
                let stale = self.topics[t].fetched_at.is_none_or(|at| now.duration_since(at) >= METADATA_MAX_AGE);
                if stale {
                    self.want_metadata(t);
                }
                self.place(t, record, pending, now)
            }
        }
    }

    /// Chooses the partition of a record of a `Ready` topic and appends it.
    fn place(
        &mut self,
        t: usize,
        record: ProducerRecord,
        pending: Pending,
        now: Instant,
    ) -> Option<(Pending, ClientError)> {
        match self.choose(t, &record, now) {
            Choice::Partition(p) => {
                self.append(t, p, record, pending, now);
                None
            }
            Choice::Sticky => {
                // A record that does not fit the sticky partition's batch closes
                // it, which moves the sticky partition on: it starts the next
                // partition's batch instead of a new one on the same partition.
                let p = self.topics[t].sticky;
                if self.must_close(t, p, self.record_size(&record)) {
                    self.close(t, p);
                }
                let p = self.topics[t].sticky;
                self.append(t, p, record, pending, now);
                None
            }
            Choice::Refresh => {
                self.topics[t].state = TopicState::Waiting;
                self.want_metadata(t);
                self.park(t, record, pending);
                None
            }
            Choice::Fail(err) => Some((pending, err)),
        }
    }

    fn choose(&self, t: usize, record: &ProducerRecord, now: Instant) -> Choice {
        let topic = &self.topics[t];
        let n = topic.partitions;
        match (record.partition, &record.key) {
            (Some(p), _) if p < n => Choice::Partition(p),
            (Some(p), _) => {
                let fresh = topic.fetched_at.is_some_and(|at| now.duration_since(at) < METADATA_MIN_REFRESH);
                if fresh {
                    Choice::Fail(ClientError::broker(
                        ErrorCode::UnknownPartition,
                        format!("partition {p} does not exist in topic {} ({n} partitions)", topic.name),
                    ))
                } else {
                    Choice::Refresh
                }
            }
            (None, Some(key)) => Choice::Partition(partition_for_key(key, n)),
            (None, None) => Choice::Sticky,
        }
    }

    fn record_size(&self, record: &ProducerRecord) -> usize {
        BatchBuilder::record_size(record.key.as_deref(), &record.value, &record.headers)
    }

    /// Whether partition `p`'s open batch has no room for a record of `size` bytes.
    fn must_close(&self, t: usize, p: u32, size: usize) -> bool {
        self.topics[t].open[p as usize].as_ref().is_some_and(|b| {
            b.builder.len() + size > self.cfg.max_batch_bytes || b.builder.record_count() >= MAX_RECORDS_PER_BATCH
        })
    }

    fn append(&mut self, t: usize, p: u32, record: ProducerRecord, pending: Pending, now: Instant) {
        let max = self.cfg.max_batch_bytes;
        let key = record.key.as_deref();
        let size = self.record_size(&record);
        let pi = p as usize;
        if self.must_close(t, p, size) {
            self.close(t, p);
        }
        if self.topics[t].open[pi].is_none() {
            // A record larger than a whole batch goes alone into its own batch.
            let capacity = if BATCH_HEADER_BYTES + size > max { size } else { max - BATCH_HEADER_BYTES };
            let id = self.next_batch_id;
            self.next_batch_id += 1;
            self.topics[t].open[pi] = Some(OpenBatch {
                id,
                builder: BatchBuilder::with_capacity(capacity),
                pending: Vec::new(),
                opened: now,
            });
            self.deadlines.push_back((now + self.cfg.linger, t, p, id));
            self.open_count += 1;
        }
        let Some(batch) = self.topics[t].open[pi].as_mut() else {
            unreachable!("batch opened above");
        };
        let timestamp = record.timestamp.unwrap_or_else(super::now_ms);
        batch.builder.push(key, &record.value, timestamp, &record.headers);
        batch.pending.push(pending);
        if batch.builder.len() >= max {
            self.close(t, p);
        }
    }

    /// Closes the open batch of partition `p`, queueing it for sending. Moves
    /// the topic's sticky partition on if it was this one.
    fn close(&mut self, t: usize, p: u32) {
        let topic = &mut self.topics[t];
        let Some(open) = topic.open[p as usize].take() else {
            return;
        };
        self.open_count -= 1;
        let seq = &mut topic.seq[p as usize];
        let count = open.builder.record_count();
        let batch = if seq.producer_id == 0 {
            open.builder.finish(0, 0)
        } else {
            let base = seq.next;
            seq.next = base.wrapping_add(count);
            open.builder.finish(seq.producer_id, base)
        };
        topic.ready.push_back(ReadyBatch { partition: p, batch, pending: open.pending, created: open.opened });
        if topic.sticky == p && topic.partitions > 0 {
            topic.sticky = (p + 1) % topic.partitions;
        }
        if !topic.queued {
            topic.queued = true;
            self.ready_topics.push(t);
        }
    }

    /// Closes every open batch holding a record of flush epoch `epoch` or older.
    pub fn close_through_epoch(&mut self, epoch: u64) {
        if self.open_count == 0 {
            return;
        }
        for t in 0..self.topics.len() {
            for p in 0..self.topics[t].open.len() {
                let due = self.topics[t].open[p]
                    .as_ref()
                    .is_some_and(|b| b.pending.first().is_some_and(|first| first.epoch <= epoch));
                if due {
                    self.close(t, p as u32);
                }
            }
        }
    }

    /// Closes every open batch (flush, close).
    pub fn close_all(&mut self) {
        self.close_through_epoch(u64::MAX);
    }

    /// When the earliest open batch reaches its linger time (possibly already
    /// closed, in which case polling then is merely useless).
    pub fn next_deadline(&self) -> Option<Instant> {
        self.deadlines.front().map(|d| d.0)
    }

    /// Closes batches whose linger has elapsed and returns every closed batch,
    /// grouped into produce requests: per topic, in closing order, at most one
    /// batch per partition and [`MAX_REQUEST_BYTES`] per request.
    pub fn poll_ready(&mut self, now: Instant) -> Vec<ReadyRequest> {
        while let Some(&(at, t, p, id)) = self.deadlines.front() {
            if at > now {
                break;
            }
            self.deadlines.pop_front();
            if self.topics[t].open[p as usize].as_ref().is_some_and(|b| b.id == id) {
                self.close(t, p);
            }
        }
        let mut out = Vec::new();
        let mut serial = self.next_request_serial;
        for t in self.ready_topics.drain(..) {
            let topic = &mut self.topics[t];
            topic.queued = false;
            let mut current: Option<ReadyRequest> = None;
            while let Some(batch) = topic.ready.pop_front() {
                let pi = batch.partition as usize;
                let fits = current.as_ref().is_some_and(|r| {
                    r.bytes + batch.batch.len() <= MAX_REQUEST_BYTES
                        && r.batches.len() < MAX_LIST_LEN
                        && topic.stamp[pi] != serial
                });
                if !fits {
                    out.extend(current.take());
                    serial += 1;
                    current = Some(ReadyRequest { topic: topic.name.clone(), batches: Vec::new(), bytes: 0 });
                }
                if let Some(req) = current.as_mut() {
                    topic.stamp[pi] = serial;
                    req.bytes += batch.batch.len();
                    req.batches.push(batch);
                }
            }
            out.extend(current);
        }
        self.next_request_serial = serial;
        out
    }

    /// The next topic whose partition count is wanted, if any. Each is
    /// returned once until [`Batcher::on_metadata`] answers it.
    pub fn poll_metadata(&mut self) -> Option<Arc<str>> {
        self.metadata_wanted.pop().map(|t| self.topics[t].name.clone())
    }

    /// Asks for fresh metadata of `topic` (after an UnknownTopic or
    /// UnknownPartition answer); records keep flowing meanwhile.
    pub fn request_refresh(&mut self, topic: &str) {
        if let Some(&t) = self.index.get(topic) {
            if self.topics[t].state == TopicState::Ready {
                self.want_metadata(t);
            }
        }
    }

    /// Feeds the outcome of a metadata request for `topic`: the partition count
    /// or an error. Parked records are placed (or failed, returned here).
    pub fn on_metadata(
        &mut self,
        topic: &str,
        result: Result<u32, ClientError>,
        now: Instant,
    ) -> Vec<(Pending, ClientError)> {
        let Some(&t) = self.index.get(topic) else {
            return Vec::new();
        };
        self.topics[t].refreshing = false;
        let result = match result {
            Ok(0) => Err(ClientError::broker(ErrorCode::InvalidPartitions, format!("topic {topic} has no partitions"))),
            other => other,
        };
        let mut failed = Vec::new();
        match result {
            Ok(n) => {
                let first = self.topics[t].fetched_at.is_none();
                let acc = &mut self.topics[t];
                if acc.open.len() < n as usize {
                    acc.open.resize_with(n as usize, || None);
                    acc.stamp.resize(n as usize, 0);
                    acc.seq.resize(n as usize, Sequence { producer_id: self.cfg.producer_id, next: 0 });
                }
                if n != acc.partitions {
                    tracing::debug!(topic, partitions = n, "partition count updated");
                }
                acc.partitions = n;
                if first {
                    acc.sticky = ((u64::from(self.seed) + t as u64) % u64::from(n)) as u32;
                } else if acc.sticky >= n {
                    acc.sticky = 0;
                }
                acc.fetched_at = Some(now);
                acc.state = TopicState::Ready;
                let parked = std::mem::take(&mut acc.parked);
                self.parked_count -= parked.len();
                for (record, pending) in parked {
                    if self.topics[t].state != TopicState::Ready {
                        // An earlier replayed record asked for a refresh: keep order.
                        self.park(t, record, pending);
                        continue;
                    }
                    failed.extend(self.place(t, record, pending, now));
                }
            }
            Err(err) => {
                let acc = &mut self.topics[t];
                match acc.state {
                    TopicState::Waiting => {
                        tracing::debug!(topic, error = %err, "metadata lookup failed; failing parked records");
                        acc.state = TopicState::Unknown;
                        let parked = std::mem::take(&mut acc.parked);
                        self.parked_count -= parked.len();
                        failed.extend(parked.into_iter().map(|(_, pending)| (pending, err.clone())));
                    }
                    TopicState::Ready if err.code() == Some(ErrorCode::UnknownTopic) => {
                        acc.state = TopicState::Unknown;
                    }
                    _ => tracing::debug!(topic, error = %err, "background metadata refresh failed"),
                }
            }
        }
        failed
    }

    /// Makes the next batch closed for `topic`/`partition` carry
    /// `producer_id` and sequence `next` (the driver rebuilt the partition's
    /// unsent batches under a new producer id up to `next`). A partition not
    /// known yet is left alone.
    pub fn restart_sequence(&mut self, topic: &str, partition: u32, producer_id: u64, next: u32) {
        let Some(&t) = self.index.get(topic) else {
            return;
        };
        if let Some(seq) = self.topics[t].seq.get_mut(partition as usize) {
            *seq = Sequence { producer_id, next };
        }
    }

    /// Records parked waiting for metadata.
    pub fn parked_len(&self) -> usize {
        self.parked_count
    }

    /// Whether no record is held: none open, closed-but-unpolled or parked.
    pub fn is_idle(&self) -> bool {
        self.open_count == 0 && self.ready_topics.is_empty() && self.parked_count == 0
    }
}

/// Tracks, per flush epoch, how many enqueued records are still outstanding,
/// so that a flush resolves once every record enqueued before it is done.
#[derive(Debug)]
pub(crate) struct FlushTracker {
    /// Epoch of `counts[0]`.
    base: u64,
    /// Outstanding records per epoch; never empty, the last is the current epoch.
    counts: VecDeque<u64>,
    /// Waiters and the epoch they wait for.
    waiters: Vec<(u64, oneshot::Sender<()>)>,
}

impl Default for FlushTracker {
    fn default() -> Self {
        Self { base: 0, counts: VecDeque::from([0]), waiters: Vec::new() }
    }
}

impl FlushTracker {
    fn current(&self) -> u64 {
        self.base + self.counts.len() as u64 - 1
    }

    /// Counts a new record in the current epoch and returns that epoch.
    pub fn add(&mut self) -> u64 {
        if let Some(c) = self.counts.back_mut() {
            *c += 1;
        }
        self.current()
    }

    /// Marks one record of `epoch` done.
    pub fn done(&mut self, epoch: u64) {
        let i = epoch.checked_sub(self.base).and_then(|i| usize::try_from(i).ok());
        match i.and_then(|i| self.counts.get_mut(i)) {
            Some(c) if *c > 0 => *c -= 1,
            _ => debug_assert!(false, "record of epoch {epoch} completed twice"),
        }
    }

    /// Registers a flush: `waiter` fires when every record counted so far is done.
    pub fn flush(&mut self, waiter: oneshot::Sender<()>) -> u64 {
        let epoch = self.current();
        self.counts.push_back(0);
        self.waiters.push((epoch, waiter));
        epoch
    }

    /// The newest epoch a flush waits for, if any flush is pending.
    pub fn max_waiting_epoch(&self) -> Option<u64> {
        self.waiters.iter().map(|w| w.0).max()
    }

    /// Retires finished epochs and fires the waiters whose epoch is done.
    pub fn resolve(&mut self) {
        while self.counts.len() > 1 && self.counts[0] == 0 {
            self.counts.pop_front();
            self.base += 1;
        }
        let mut i = 0;
        while i < self.waiters.len() {
            if self.waiters[i].0 < self.base {
                let (_, waiter) = self.waiters.swap_remove(i);
                let _ = waiter.send(());
            } else {
                i += 1;
            }
        }
    }
}

/// Encodes a produce request frame as chunks that share the batches' bytes
/// instead of copying them. Concatenated, the chunks equal
/// `frame::request_frame(ApiKey::Produce, &to_bytes(&ProduceRequest { .. }))`.
pub(crate) fn encode_produce(topic: &str, acks: Acks, timeout_ms: u32, batches: &[(u32, Bytes)]) -> Vec<Bytes> {
    let payload_len: usize = 4 + topic.len() + 1 + 4 + 4 + batches.iter().map(|b| 4 + 4 + b.1.len()).sum::<usize>();
    let mut head = BytesMut::with_capacity(4 + REQUEST_HEADER_BYTES + 4 + topic.len() + 9 + 8);
    head.put_u32_le((REQUEST_HEADER_BYTES + payload_len) as u32);
    head.put_u16_le(ApiKey::Produce as u16);
    head.put_u16_le(PROTOCOL_VERSION);
    head.put_u32_le(topic.len() as u32);
    head.put_slice(topic.as_bytes());
    head.put_u8(match acks {
        Acks::None => 0,
        Acks::Leader => 1,
        Acks::All => 2,
    });
    head.put_u32_le(timeout_ms);
    head.put_u32_le(batches.len() as u32);
    let mut chunks = Vec::with_capacity(1 + 2 * batches.len());
    for (i, (partition, batch)) in batches.iter().enumerate() {
        if i > 0 {
            head = BytesMut::with_capacity(8);
        }
        head.put_u32_le(*partition);
        head.put_u32_le(batch.len() as u32);
        chunks.push(head.split().freeze());
        chunks.push(batch.clone());
    }
    if batches.is_empty() {
        chunks.push(head.freeze());
    }
    chunks
}

/// Maps a produce response frame to one outcome per batch of the request
/// (partitions in request order): the base offset the broker gave the batch,
/// or the error for that partition (or for the whole request).
pub(crate) fn batch_outcomes(code: u16, payload: Bytes, partitions: &[u32]) -> Vec<Result<u64, ClientError>> {
    let resp = match decode_response::<ProduceResponse>(code, payload) {
        Ok(r) => r,
        Err(e) => return vec![Err(e); partitions.len()],
    };
    partitions
        .iter()
        .enumerate()
        .map(|(i, &p)| {
            let outcome = match resp.partitions.get(i) {
                Some(o) if o.partition == p => Some(o),
                _ => resp.partitions.iter().find(|o| o.partition == p),
            };
            match outcome {
                None => Err(ClientError::Decode(format!("produce response has no outcome for partition {p}"))),
                Some(o) if o.error_code == ErrorCode::None as u16 => Ok(o.base_offset),
                Some(o) => Err(ClientError::broker(ErrorCode::from_u16(o.error_code), o.error_message.clone())),
            }
        })
        .collect()
}

/// The metadata of record `index` of a batch stored at `base`.
pub(crate) fn record_metadata(partition: u32, base: u64, index: usize) -> Result<RecordMetadata, ClientError> {
    base.checked_add(index as u64)
        .map(|offset| RecordMetadata { partition, offset: Some(offset) })
        .ok_or_else(|| ClientError::Decode(format!("base offset {base} overflows")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use eddy_protocol::batch::split_batches;
    use eddy_protocol::codec::to_bytes;
    use eddy_protocol::frame::request_frame;
    use eddy_protocol::messages::{PartitionBatch, PartitionProduceResponse, ProduceRequest};
    use eddy_protocol::ErrorResponse;

    const CFG: BatchConfig = BatchConfig { max_batch_bytes: 1000, linger: Duration::from_millis(5), producer_id: 0 };

    fn pending(tracker: &mut FlushTracker) -> (Pending, oneshot::Receiver<Result<RecordMetadata, ClientError>>) {
        let (tx, rx) = oneshot::channel();
        (Pending { tx, epoch: tracker.add() }, rx)
    }

    fn rec(value_len: usize) -> ProducerRecord {
        ProducerRecord::new("t", vec![b'v'; value_len]).timestamp(1)
    }

    /// A batcher whose topic "t" has `n` partitions, known at `now`.
    fn ready_batcher(n: u32, now: Instant) -> Batcher {
        let mut b = Batcher::new(CFG, 0);
        let mut tr = FlushTracker::default();
        let (p, _rx) = pending(&mut tr);
        assert!(b.push(rec(1), p, now).is_none());
        assert_eq!(b.poll_metadata().as_deref(), Some("t"));
        assert!(b.on_metadata("t", Ok(n), now).is_empty());
        b.close_all();
        b.poll_ready(now);
        b
    }

    fn partitions_of(reqs: &[ReadyRequest]) -> Vec<Vec<(u32, u32)>> {
        reqs.iter()
            .map(|r| {
                r.batches
                    .iter()
                    .map(|b| {
                        let view = split_batches(b.batch.clone()).next().unwrap().unwrap();
                        (b.partition, view.record_count())
                    })
                    .collect()
            })
            .collect()
    }

    #[test]
    fn records_park_until_metadata_then_flow_in_order() {
        let now = Instant::now();
        let mut b = Batcher::new(CFG, 0);
        let mut tr = FlushTracker::default();
        for _ in 0..3 {
            let (p, _) = pending(&mut tr);
            assert!(b.push(rec(10), p, now).is_none());
        }
        assert_eq!(b.parked_len(), 3);
        assert_eq!(b.poll_metadata().as_deref(), Some("t"));
        assert_eq!(b.poll_metadata(), None, "one metadata request per topic");
        assert!(b.poll_ready(now + Duration::from_secs(1)).is_empty());
        assert!(b.on_metadata("t", Ok(4), now).is_empty());
        assert_eq!(b.parked_len(), 0);
        let reqs = b.poll_ready(now + CFG.linger);
        assert_eq!(partitions_of(&reqs), vec![vec![(0, 3)]], "sticky: all keyless records in one partition");
        assert!(b.is_idle());
    }

    #[test]
    fn metadata_failure_fails_parked_records() {
        let now = Instant::now();
        let mut b = Batcher::new(CFG, 0);
        let mut tr = FlushTracker::default();
        let (p, _) = pending(&mut tr);
        b.push(rec(1), p, now);
        let failed = b.on_metadata("t", Err(ClientError::broker(ErrorCode::UnknownTopic, "no")), now);
        assert_eq!(failed.len(), 1);
        assert_eq!(failed[0].1.code(), Some(ErrorCode::UnknownTopic));
        assert!(b.is_idle());
        // The next record asks again.
        let (p, _) = pending(&mut tr);
        b.push(rec(1), p, now);
        assert_eq!(b.poll_metadata().as_deref(), Some("t"));
    }

    #[test]
    fn sticky_partition_moves_on_when_its_batch_is_sent() {
        let now = Instant::now();
        let mut b = ready_batcher(3, now);
        let mut tr = FlushTracker::default();
        // The warm-up batch went to partition 0, so the sticky partition is now 1.
        // Each record is ~110 bytes: 8 fit under 1000 bytes with the header.
        let mut seen = Vec::new();
        for _ in 0..20 {
            let (p, _) = pending(&mut tr);
            assert!(b.push(rec(100), p, now).is_none());
        }
        for r in b.poll_ready(now) {
            for batch in r.batches {
                seen.push((batch.partition, batch.pending.len()));
            }
        }
        assert_eq!(seen, vec![(1, 8), (2, 8)], "full batches close and the next partition takes over");
        let reqs = b.poll_ready(now + CFG.linger);
        assert_eq!(partitions_of(&reqs), vec![vec![(0, 4)]], "round robin wraps; linger sends the rest");
        // Sending the sticky partition's batch (here by flush) moves it on too.
        let (p, _) = pending(&mut tr);
        b.push(rec(10), p, now);
        b.close_all();
        let reqs = b.poll_ready(now);
        assert_eq!(partitions_of(&reqs), vec![vec![(1, 1)]], "sticky moved on when partition 0's batch was sent");
    }

    #[test]
    fn keyed_and_explicit_records_choose_their_partition() {
        let now = Instant::now();
        let mut b = ready_batcher(8, now);
        let mut tr = FlushTracker::default();
        let (p, _) = pending(&mut tr);
        b.push(rec(1).key("user-42"), p, now);
        let (p, _) = pending(&mut tr);
        b.push(rec(1).partition(5), p, now);
        b.close_all();
        let reqs = b.poll_ready(now);
        let mut got: Vec<u32> = reqs.iter().flat_map(|r| r.batches.iter().map(|b| b.partition)).collect();
        got.sort();
        let mut want = vec![partition_for_key(b"user-42", 8), 5];
        want.sort();
        assert_eq!(got, want);
    }

    #[test]
    fn explicit_partition_out_of_range_fails_or_refreshes() {
        let now = Instant::now();
        let mut b = ready_batcher(2, now);
        let mut tr = FlushTracker::default();
        // Fresh metadata: fail at once, without sending.
        let (p, _) = pending(&mut tr);
        let (_, err) = b.push(rec(1).partition(2), p, now).expect("must fail");
        assert_eq!(err.code(), Some(ErrorCode::UnknownPartition));
        // Stale metadata: park and refresh; a grown topic then accepts it.
        let later = now + METADATA_MIN_REFRESH;
        let (p, _) = pending(&mut tr);
        assert!(b.push(rec(1).partition(2), p, later).is_none());
        let (p, _) = pending(&mut tr);
        assert!(b.push(rec(1), p, later).is_none(), "later records park behind it");
        assert_eq!(b.parked_len(), 2);
        assert_eq!(b.poll_metadata().as_deref(), Some("t"));
        assert!(b.on_metadata("t", Ok(3), later).is_empty());
        b.close_all();
        let reqs = b.poll_ready(later);
        let got: Vec<u32> = reqs.iter().flat_map(|r| r.batches.iter().map(|b| b.partition)).collect();
        assert!(got.contains(&2), "{got:?}");
        // Still too large after a refresh: fail.
        let (p, _) = pending(&mut tr);
        let later = later + METADATA_MIN_REFRESH;
        assert!(b.push(rec(1).partition(9), p, later).is_none());
        b.poll_metadata();
        let failed = b.on_metadata("t", Ok(3), later);
        assert_eq!(failed.len(), 1);
        assert_eq!(failed[0].1.code(), Some(ErrorCode::UnknownPartition));
    }

    #[test]
    fn closed_batches_carry_consecutive_sequences_per_partition() {
        let now = Instant::now();
        let mut b = Batcher::new(BatchConfig { producer_id: 77, ..CFG }, 0);
        let mut tr = FlushTracker::default();
        let (p, _) = pending(&mut tr);
        b.push(rec(1).partition(0), p, now);
        b.poll_metadata();
        assert!(b.on_metadata("t", Ok(2), now).is_empty());
        let mut push = |b: &mut Batcher, partition: u32, n: usize| {
            for _ in 0..n {
                let (p, _) = pending(&mut tr);
                assert!(b.push(rec(1).partition(partition), p, now).is_none());
            }
            b.close_all();
        };
        push(&mut b, 0, 2);
        push(&mut b, 1, 4);
        push(&mut b, 0, 1);
        let mut seen: Vec<(u32, u64, u32, u32)> = Vec::new();
        for r in b.poll_ready(now) {
            for batch in r.batches {
                let view = split_batches(batch.batch.clone()).next().unwrap().unwrap();
                seen.push((batch.partition, view.producer_id(), view.base_sequence(), view.record_count()));
                assert_eq!(batch.created, now);
            }
        }
        seen.sort();
        // Partition 0: the first record and the next two share the first batch.
        assert_eq!(seen, vec![(0, 77, 0, 3), (0, 77, 3, 1), (1, 77, 0, 4)]);
        // A restart under a new producer id.
        b.restart_sequence("t", 1, 78, 5);
        push(&mut b, 1, 2);
        let reqs = b.poll_ready(now);
        let view = split_batches(reqs[0].batches[0].batch.clone()).next().unwrap().unwrap();
        assert_eq!((view.producer_id(), view.base_sequence(), view.record_count()), (78, 5, 2));
        // Sequences wrap.
        b.restart_sequence("t", 1, 78, u32::MAX);
        push(&mut b, 1, 2);
        push(&mut b, 1, 1);
        let seqs: Vec<u32> = b
            .poll_ready(now)
            .iter()
            .flat_map(|r| {
                r.batches.iter().map(|x| split_batches(x.batch.clone()).next().unwrap().unwrap().base_sequence())
            })
            .collect();
        assert_eq!(seqs, vec![u32::MAX, 1]);
    }

    #[test]
    fn linger_closes_a_batch_only_after_its_first_record_aged() {
        let t0 = Instant::now();
        let mut b = ready_batcher(1, t0);
        let mut tr = FlushTracker::default();
        let (p, _) = pending(&mut tr);
        b.push(rec(10), p, t0);
        assert_eq!(b.next_deadline(), Some(t0 + CFG.linger));
        let (p, _) = pending(&mut tr);
        b.push(rec(10), p, t0 + Duration::from_millis(4));
        assert!(b.poll_ready(t0 + Duration::from_millis(4)).is_empty());
        let reqs = b.poll_ready(t0 + CFG.linger);
        assert_eq!(partitions_of(&reqs), vec![vec![(0, 2)]]);
        assert_eq!(b.next_deadline(), None);
    }

    #[test]
    fn oversized_record_goes_alone_and_full_batches_close_early() {
        let now = Instant::now();
        let mut b = ready_batcher(1, now);
        let mut tr = FlushTracker::default();
        let (p, _) = pending(&mut tr);
        b.push(rec(10), p, now);
        let (p, _) = pending(&mut tr);
        b.push(rec(5000), p, now);
        let (p, _) = pending(&mut tr);
        b.push(rec(10), p, now);
        // The small batch closed to make room, the big one closed because it is full;
        // they go in separate requests (one batch per partition per request).
        let reqs = b.poll_ready(now);
        assert_eq!(partitions_of(&reqs), vec![vec![(0, 1)], vec![(0, 1)]]);
        assert!(reqs[1].batches[0].batch.len() > CFG.max_batch_bytes);
        let reqs = b.poll_ready(now + CFG.linger);
        assert_eq!(partitions_of(&reqs), vec![vec![(0, 1)]]);
    }

    #[test]
    fn ready_batches_of_a_topic_are_grouped_one_per_partition() {
        let now = Instant::now();
        let mut b = ready_batcher(3, now);
        let mut tr = FlushTracker::default();
        for p_id in [0u32, 1, 2, 0, 0] {
            let (p, _) = pending(&mut tr);
            b.push(rec(10).partition(p_id), p, now);
            if p_id == 0 {
                b.close_through_epoch(u64::MAX);
            }
        }
        b.close_all();
        let reqs = b.poll_ready(now);
        let parts: Vec<Vec<u32>> = reqs.iter().map(|r| r.batches.iter().map(|b| b.partition).collect()).collect();
        // Closing order: 0, (1, 2 at close_all after 0 #2)... each request has distinct partitions
        // and partition 0's batches stay in order across requests.
        for r in &parts {
            let mut s = r.clone();
            s.sort();
            s.dedup();
            assert_eq!(s.len(), r.len(), "{parts:?}");
        }
        assert_eq!(parts.iter().flatten().filter(|&&p| p == 0).count(), 3);
    }

    #[test]
    fn flush_closes_only_batches_with_records_from_before_it() {
        let now = Instant::now();
        let mut b = ready_batcher(2, now);
        let mut tr = FlushTracker::default();
        let (p, _) = pending(&mut tr);
        b.push(rec(10).partition(0), p, now);
        let (w, mut wrx) = oneshot::channel();
        let epoch = tr.flush(w);
        let (p, _) = pending(&mut tr);
        b.push(rec(10).partition(1), p, now);
        b.close_through_epoch(epoch);
        let reqs = b.poll_ready(now);
        assert_eq!(partitions_of(&reqs), vec![vec![(0, 1)]]);
        tr.resolve();
        assert!(wrx.try_recv().is_err(), "record of the flushed epoch still outstanding");
        for batch in reqs.into_iter().flat_map(|r| r.batches) {
            for pd in batch.pending {
                tr.done(pd.epoch);
            }
        }
        tr.resolve();
        assert!(wrx.try_recv().is_ok());
    }

    #[test]
    fn flush_tracker_waits_for_every_earlier_epoch() {
        let mut tr = FlushTracker::default();
        let a = tr.add();
        let (w1, mut r1) = oneshot::channel();
        tr.flush(w1);
        let b = tr.add();
        let (w2, mut r2) = oneshot::channel();
        tr.flush(w2);
        tr.done(b);
        tr.resolve();
        assert!(r1.try_recv().is_err() && r2.try_recv().is_err());
        tr.done(a);
        tr.resolve();
        assert!(r1.try_recv().is_ok() && r2.try_recv().is_ok());
        let (w3, mut r3) = oneshot::channel();
        tr.flush(w3);
        tr.resolve();
        assert!(r3.try_recv().is_ok(), "a flush with nothing outstanding resolves at once");
    }

    #[test]
    fn chunked_produce_encoding_matches_the_codec() {
        let mut bb = BatchBuilder::with_capacity(64);
        bb.push(Some(b"k"), b"value", 5, &[]);
        let batch = bb.finish(0, 0);
        let batches: Vec<(u32, Bytes)> = [3u32, 7].iter().map(|&p| (p, batch.clone())).collect();
        for acks in [Acks::None, Acks::Leader, Acks::All] {
            let chunks = encode_produce("topic-a", acks, 30_000, &batches);
            let joined: Vec<u8> = chunks.iter().flat_map(|c| c.iter().copied()).collect();
            let req = ProduceRequest {
                topic: "topic-a".into(),
                acks,
                timeout_ms: 30_000,
                partitions: batches.iter().map(|b| PartitionBatch { partition: b.0, batch: b.1.clone() }).collect(),
            };
            assert_eq!(joined, request_frame(ApiKey::Produce, &to_bytes(&req)).to_vec());
        }
        let joined: Vec<u8> = encode_produce("t", Acks::Leader, 1, &[]).concat();
        let empty = ProduceRequest { topic: "t".into(), acks: Acks::Leader, timeout_ms: 1, partitions: vec![] };
        assert_eq!(joined, request_frame(ApiKey::Produce, &to_bytes(&empty)).to_vec());
    }

    #[test]
    fn produce_responses_map_to_record_offsets() {
        let resp = ProduceResponse {
            partitions: vec![
                PartitionProduceResponse {
                    partition: 4,
                    error_code: 0,
                    error_message: String::new(),
                    base_offset: 100,
                },
                PartitionProduceResponse {
                    partition: 1,
                    error_code: ErrorCode::NotEnoughReplicas as u16,
                    error_message: "isr".into(),
                    base_offset: 0,
                },
            ],
        };
        // Outcomes are matched by partition even if the order differs.
        let out = batch_outcomes(0, to_bytes(&resp), &[1, 4, 9]);
        assert_eq!(out[0].as_ref().unwrap_err().code(), Some(ErrorCode::NotEnoughReplicas));
        assert_eq!(*out[1].as_ref().unwrap(), 100);
        assert!(matches!(out[2], Err(ClientError::Decode(_))));
        assert_eq!(record_metadata(4, 100, 2).unwrap(), RecordMetadata { partition: 4, offset: Some(102) });
        assert!(record_metadata(4, u64::MAX, 1).is_err());
        // A whole-request error applies to every batch.
        let body = to_bytes(&ErrorResponse::message("gone"));
        let out = batch_outcomes(ErrorCode::UnknownTopic as u16, body, &[0, 1]);
        assert!(out.iter().all(|o| o.as_ref().unwrap_err().code() == Some(ErrorCode::UnknownTopic)));
    }
}
