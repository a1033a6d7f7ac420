//! The consumer: reads assigned partitions from explicit positions.
//!
//! Each assigned partition has its own fetch task that long-polls the
//! partition's leader (`FetchRequest` with `max_wait`/`min_bytes`, routed by
//! [`Client::request_to_leader`] on the shared [`Client`]),
//! decodes the returned batches without copying record bytes (keys and values
//! are `Bytes` slices of the fetch response), and hands the records to
//! [`Consumer::poll`] through one channel. At most `prefetch` fetch results per
//! partition are buffered (a permit per result, released when `poll` hands the
//! records out), so memory is bounded by `prefetch * partitions *
//! max_bytes_per_fetch`.
//!
//! In a cluster, leaders move: `NOT_LEADER`, `LEADER_NOT_AVAILABLE`,
//! `SHUTTING_DOWN`, an unreachable leader, a lost connection or a timeout make
//! the fetch task refresh the metadata and retry with backoff, without
//! reporting anything to [`Consumer::poll`]; the partition resumes from the
//! same position on the new leader.
//!
//! The consumer owns its positions: nothing is committed to the broker.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use eddy_protocol::batch::{split_batches, BatchView, Header, BATCH_HEADER_BYTES};
use eddy_protocol::limits::MAX_FETCH_WAIT_MS;
use eddy_protocol::messages::{FetchRequest, FetchResponse, ListOffsetsRequest, MetadataRequest, OffsetSpec};
use eddy_protocol::ErrorCode;
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::admin::find_topic;
use crate::client::Client;
use crate::error::ClientError;

/// Where a batch header stores the batch length (see `eddy_protocol::batch`).
const BATCH_LENGTH_OFFSET: usize = 8;
/// First pause after a failed fetch; doubled per consecutive failure.
const MIN_BACKOFF: Duration = Duration::from_millis(100);
/// Longest pause between retries of a failing fetch.
const MAX_BACKOFF: Duration = Duration::from_secs(2);
/// A fetch that returns nothing faster than this is followed by a pause of
/// this length, so a broker that does not long-poll is not hammered.
const EMPTY_FETCH_PAUSE: Duration = Duration::from_millis(10);

/// Where to start reading a partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartOffset {
    /// The first offset still stored (log start).
    Earliest,
    /// The log end: only records produced from now on.
    Latest,
    /// This offset; if it is out of range, [`ConsumerConfig::offset_reset`] applies.
    At(u64),
}

/// What to do when the fetch position is outside the partition's log (e.g.
/// deleted by retention).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OffsetReset {
    /// Jump to the log start.
    Earliest,
    /// Jump to the log end.
    Latest,
    /// Report the `OffsetOutOfRange` error from [`Consumer::poll`] and stop
    /// fetching the partition (assign it again to resume).
    None,
}

/// How the consumer fetches.
#[derive(Debug, Clone)]
pub struct ConsumerConfig {
    /// Most bytes of batches one fetch asks for (at least one batch comes back).
    pub max_bytes_per_fetch: u32,
    /// How long the broker may hold a fetch waiting for data (capped at 30 s).
    pub max_wait: Duration,
    /// Bytes the broker waits for before answering early.
    pub min_bytes: u32,
    /// What to do when the position is out of range.
    pub offset_reset: OffsetReset,
    /// Fetch results buffered per partition ahead of [`Consumer::poll`].
    pub prefetch: usize,
}

impl Default for ConsumerConfig {
    fn default() -> Self {
        Self {
            max_bytes_per_fetch: 4 * 1024 * 1024,
            max_wait: Duration::from_millis(500),
            min_bytes: 1,
            offset_reset: OffsetReset::Earliest,
            prefetch: 4,
        }
    }
}

/// One record read from a partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumerRecord {
    /// The topic it was read from.
    pub topic: String,
    /// The partition it was read from.
    pub partition: u32,
    /// Its offset in the partition.
    pub offset: u64,
    /// Milliseconds since the Unix epoch, as the producer set it.
    pub timestamp: i64,
    /// The key, if any (a slice of the fetch response, not a copy).
    pub key: Option<Bytes>,
    /// The value (a slice of the fetch response, not a copy).
    pub value: Bytes,
    /// Headers in the producer's order.
    pub headers: Vec<Header>,
}

/// What a fetch task hands to `poll`.
enum FetchEventKind {
    Records(Vec<ConsumerRecord>),
    /// The position was reset to this offset (offset out of range).
    Reset(u64),
    Error(ClientError),
}

struct FetchEvent {
    assignment: u64,
    kind: FetchEventKind,
    /// Held until `poll` hands the records out: bounds buffering per partition.
    _permit: Option<OwnedSemaphorePermit>,
}

struct Assigned {
    topic: String,
    partition: u32,
    position: u64,
    task: JoinHandle<()>,
}

/// Reads records from explicitly assigned partitions. Records of one partition
/// come out of [`Consumer::poll`] in offset order, each exactly once per
/// assignment; dropping the consumer stops its fetch tasks.
pub struct Consumer {
    client: Client,
    config: ConsumerConfig,
    tx: mpsc::UnboundedSender<FetchEvent>,
    rx: mpsc::UnboundedReceiver<FetchEvent>,
    assignments: HashMap<u64, Assigned>,
    next_assignment: u64,
    /// An error met while draining after records were collected; returned by the next poll.
    pending_error: Option<ClientError>,
}

impl std::fmt::Debug for Consumer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Consumer").field("assignment", &self.assignment()).finish_non_exhaustive()
    }
}

impl Drop for Consumer {
    fn drop(&mut self) {
        for a in self.assignments.values() {
            a.task.abort();
        }
    }
}

impl Consumer {
    /// A consumer with no assignment, reading through `client`.
    pub fn new(client: Client, config: ConsumerConfig) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        Self { client, config, tx, rx, assignments: HashMap::new(), next_assignment: 0, pending_error: None }
    }

    /// Starts reading `topic`/`partition` from `start` (Earliest and Latest are
    /// resolved with a ListOffsets request now). Re-assigning a partition
    /// restarts it from `start`.
    pub async fn assign(&mut self, topic: &str, partition: u32, start: StartOffset) -> Result<(), ClientError> {
        let offset = resolve_start(&self.client, topic, partition, start).await?;
        self.start(topic, partition, offset);
        Ok(())
    }

    /// Assigns every partition of `topic` from `start` (`At(n)` applies to each)
    /// and returns the partition ids.
    pub async fn assign_all(&mut self, topic: &str, start: StartOffset) -> Result<Vec<u32>, ClientError> {
        let resp = self.client.request(&MetadataRequest { topics: Some(vec![topic.to_string()]) }).await?;
        let mut partitions: Vec<u32> = find_topic(resp, topic)?.partitions.iter().map(|p| p.partition).collect();
        partitions.sort_unstable();
        let offsets =
            futures::future::try_join_all(partitions.iter().map(|&p| resolve_start(&self.client, topic, p, start)))
                .await?;
        for (&p, offset) in partitions.iter().zip(offsets) {
            self.start(topic, p, offset);
        }
        Ok(partitions)
    }

    /// Stops reading `topic`/`partition`; records of it not yet polled are dropped.
    pub fn unassign(&mut self, topic: &str, partition: u32) {
        let ids: Vec<u64> = self
            .assignments
            .iter()
            .filter(|(_, a)| a.topic == topic && a.partition == partition)
            .map(|(&id, _)| id)
            .collect();
        for id in ids {
            if let Some(a) = self.assignments.remove(&id) {
                a.task.abort();
            }
        }
    }

    /// The assigned partitions, sorted.
    pub fn assignment(&self) -> Vec<(String, u32)> {
        let mut out: Vec<(String, u32)> = self.assignments.values().map(|a| (a.topic.clone(), a.partition)).collect();
        out.sort();
        out
    }

    /// The next offset [`Consumer::poll`] will return for a partition (moved
    /// when records are handed out, not when they are prefetched), or `None`
    /// if it is not assigned.
    pub fn position(&self, topic: &str, partition: u32) -> Option<u64> {
        self.assignments.values().find(|a| a.topic == topic && a.partition == partition).map(|a| a.position)
    }

    /// Waits up to `timeout` for records and returns those available then
    /// (an empty Vec on timeout). Leader changes, unreachable brokers, lost
    /// connections and timeouts are retried silently (see the module docs).
    /// Any other fetch error is returned once; the partition's fetching then
    /// retries with backoff, except for unknown topics or partitions (and
    /// out-of-range offsets with [`OffsetReset::None`]), which stop it.
    pub async fn poll(&mut self, timeout: Duration) -> Result<Vec<ConsumerRecord>, ClientError> {
        if let Some(err) = self.pending_error.take() {
            return Err(err);
        }
        let deadline = Instant::now() + timeout;
        let mut out = Vec::new();
        while out.is_empty() {
            let event = match tokio::time::timeout_at(deadline, self.rx.recv()).await {
                Ok(Some(event)) => event,
                // The consumer holds a sender, so the channel never closes.
                Ok(None) | Err(_) => return Ok(out),
            };
            if let Some(err) = self.apply(event, &mut out) {
                return Err(err);
            }
        }
        while let Ok(event) = self.rx.try_recv() {
            if let Some(err) = self.apply(event, &mut out) {
                self.pending_error = Some(err);
                break;
            }
        }
        Ok(out)
    }

    /// Applies one fetch event; returns its error, if it carries one.
    fn apply(&mut self, event: FetchEvent, out: &mut Vec<ConsumerRecord>) -> Option<ClientError> {
        // Events of a partition unassigned (or re-assigned) since are dropped.
        let assigned = self.assignments.get_mut(&event.assignment)?;
        match event.kind {
            FetchEventKind::Records(records) => {
                if let Some(last) = records.last() {
                    assigned.position = last.offset + 1;
                }
                if out.is_empty() {
                    *out = records;
                } else {
                    out.extend(records);
                }
                None
            }
            FetchEventKind::Reset(offset) => {
                assigned.position = offset;
                None
            }
            FetchEventKind::Error(err) => Some(err),
        }
    }

    fn start(&mut self, topic: &str, partition: u32, offset: u64) {
        self.unassign(topic, partition);
        let assignment = self.next_assignment;
        self.next_assignment += 1;
        let fetcher = Fetcher {
            client: self.client.clone(),
            config: self.config.clone(),
            topic: topic.to_string(),
            partition,
            offset,
            assignment,
            tx: self.tx.clone(),
            permits: Arc::new(Semaphore::new(self.config.prefetch.max(1))),
        };
        let task = tokio::spawn(fetcher.run());
        self.assignments.insert(assignment, Assigned { topic: topic.to_string(), partition, position: offset, task });
    }
}

async fn resolve_start(client: &Client, topic: &str, partition: u32, start: StartOffset) -> Result<u64, ClientError> {
    let spec = match start {
        StartOffset::At(offset) => return Ok(offset),
        StartOffset::Earliest => OffsetSpec::Earliest,
        StartOffset::Latest => OffsetSpec::Latest,
    };
    let req = ListOffsetsRequest { topic: topic.to_string(), partition, spec };
    Ok(client.request_to_leader(topic, partition, &req).await?.offset)
}

/// Failures that a cluster produces in normal operation (leader changes,
/// broker restarts) and that a retry against the current leader cures: never
/// reported to `poll`.
pub(crate) fn is_transient(err: &ClientError) -> bool {
    match err {
        ClientError::Connect { .. } | ClientError::Transport(_) | ClientError::Timeout(_) => true,
        ClientError::Broker { code, .. } => matches!(
            code,
            ErrorCode::NotLeader
                | ErrorCode::LeaderNotAvailable
                | ErrorCode::ShuttingDown
                | ErrorCode::NotController
                | ErrorCode::FencedLeaderEpoch
        ),
        _ => false,
    }
}

/// Decodes a fetch response's batches into records at or after `from`, in
/// offset order. Records before `from` (a batch may start before it) and any
/// offset that does not increase are skipped. Returns the records decoded
/// before the first malformed batch along with its error.
fn decode_records(
    topic: &str,
    partition: u32,
    from: u64,
    records: Bytes,
) -> (Vec<ConsumerRecord>, Option<ClientError>) {
    let mut out = Vec::new();
    let mut next = from;
    for view in split_batches(records) {
        let view = match view {
            Ok(v) => v,
            Err(e) => return (out, Some(ClientError::Decode(format!("{topic}/{partition} at offset {next}: {e}")))),
        };
        let Some(batch_end) = view.base_offset().checked_add(u64::from(view.record_count())) else {
            let err = format!("{topic}/{partition}: batch base offset {} overflows", view.base_offset());
            return (out, Some(ClientError::Decode(err)));
        };
        if batch_end <= next {
            continue;
        }
        out.reserve(view.record_count() as usize);
        for record in view.records() {
            let record = match record {
                Ok(r) => r,
                Err(e) => {
                    return (out, Some(ClientError::Decode(format!("{topic}/{partition} at offset {next}: {e}"))))
                }
            };
            if record.offset < next {
                continue;
            }
            next = record.offset + 1;
            out.push(ConsumerRecord {
                topic: topic.to_string(),
                partition,
                offset: record.offset,
                timestamp: record.timestamp,
                key: record.key,
                value: record.value,
                headers: record.headers,
            });
        }
    }
    (out, None)
}

/// A fetch sent ahead for `offset`; aborted when dropped unused.
struct Ahead {
    offset: u64,
    handle: JoinHandle<Result<FetchResponse, ClientError>>,
}

impl Drop for Ahead {
    fn drop(&mut self) {
        self.handle.abort();
    }
}

/// The offset after the last batch of a fetch response, read from the batch
/// headers only (no CRC, no record walk): where the next fetch will start if
/// the response decodes cleanly. None if there is no whole batch.
fn next_offset_hint(records: &Bytes) -> Option<u64> {
    let mut pos = 0usize;
    let mut next = None;
    while records.len() - pos >= BATCH_HEADER_BYTES {
        let len_at = pos + BATCH_LENGTH_OFFSET;
        let len = u32::from_le_bytes(records[len_at..len_at + 4].try_into().ok()?) as usize;
        if len < BATCH_HEADER_BYTES || len > records.len() - pos {
            break;
        }
        let view = BatchView::trusted(records.slice(pos..pos + len)).ok()?;
        next = view.base_offset().checked_add(u64::from(view.record_count()));
        pos += len;
    }
    next
}

/// The fetch loop of one assigned partition.
struct Fetcher {
    client: Client,
    config: ConsumerConfig,
    topic: String,
    partition: u32,
    offset: u64,
    assignment: u64,
    tx: mpsc::UnboundedSender<FetchEvent>,
    permits: Arc<Semaphore>,
}

impl Fetcher {
    /// Sends an event to `poll`; false if the consumer is gone.
    fn emit(&self, kind: FetchEventKind, permit: Option<OwnedSemaphorePermit>) -> bool {
        self.tx.send(FetchEvent { assignment: self.assignment, kind, _permit: permit }).is_ok()
    }

    fn request(&self, offset: u64) -> FetchRequest {
        FetchRequest {
            topic: self.topic.clone(),
            partition: self.partition,
            offset,
            max_bytes: self.config.max_bytes_per_fetch,
            min_bytes: self.config.min_bytes,
            max_wait_ms: self.max_wait_ms(),
        }
    }

    fn max_wait_ms(&self) -> u32 {
        u32::try_from(self.config.max_wait.as_millis()).unwrap_or(u32::MAX).min(MAX_FETCH_WAIT_MS)
    }

    /// Sends the fetch for `offset` from its own task, so that it travels while
    /// the previous response is decoded.
    fn fetch_ahead(&self, offset: u64, limit: Duration) -> Ahead {
        let client = self.client.clone();
        let req = self.request(offset);
        let handle = tokio::spawn(async move {
            let (topic, partition) = (req.topic.clone(), req.partition);
            client.request_to_leader_with_timeout(&topic, partition, &req, limit).await
        });
        Ahead { offset, handle }
    }

    async fn run(mut self) {
        let limit = self.client.config().request_timeout + Duration::from_millis(u64::from(self.max_wait_ms()));
        let mut backoff = MIN_BACKOFF;
        // Errors are reported once per run of consecutive failures.
        let mut failing = false;
        // The next fetch, sent before the current response was decoded. At most
        // one, so a partition buffers at most `prefetch + 1` responses.
        let mut ahead: Option<Ahead> = None;
        loop {
            let Ok(permit) = self.permits.clone().acquire_owned().await else {
                return;
            };
            let started = Instant::now();
            let result = match ahead.take() {
                Some(mut a) if a.offset == self.offset => match (&mut a.handle).await {
                    Ok(result) => result,
                    Err(e) => Err(ClientError::Transport(format!("fetch task failed: {e}"))),
                },
                // Dropping a stale fetch-ahead aborts it.
                _ => {
                    let req = self.request(self.offset);
                    self.client.request_to_leader_with_timeout(&self.topic, self.partition, &req, limit).await
                }
            };
            let err = match result {
                Ok(resp) => {
                    if let Some(next) = next_offset_hint(&resp.records).filter(|&n| n > self.offset) {
                        ahead = Some(self.fetch_ahead(next, limit));
                    }
                    let (records, err) = decode_records(&self.topic, self.partition, self.offset, resp.records);
                    let got_records = !records.is_empty();
                    if let Some(last) = records.last() {
                        self.offset = last.offset + 1;
                        if !self.emit(FetchEventKind::Records(records), Some(permit)) {
                            return;
                        }
                    } else {
                        drop(permit);
                    }
                    match err {
                        None => {
                            failing = false;
                            backoff = MIN_BACKOFF;
                            if !got_records && started.elapsed() < EMPTY_FETCH_PAUSE {
                                tokio::time::sleep(EMPTY_FETCH_PAUSE).await;
                            }
                            continue;
                        }
                        Some(_) if got_records => continue, // Retry from the bad batch; report it then.
                        Some(err) => err,
                    }
                }
                Err(err) => {
                    drop(permit);
                    err
                }
            };
            ahead = None;
            match err.code() {
                Some(ErrorCode::OffsetOutOfRange) => match self.reset(&err).await {
                    Ok(true) => continue,
                    Ok(false) => return,
                    Err(reset_err) => {
                        if !failing && !self.emit(FetchEventKind::Error(reset_err), None) {
                            return;
                        }
                    }
                },
                Some(ErrorCode::UnknownTopic | ErrorCode::UnknownPartition) => {
                    tracing::warn!(topic = %self.topic, partition = self.partition, error = %err, "stopping fetches");
                    self.emit(FetchEventKind::Error(err), None);
                    return;
                }
                _ if is_transient(&err) => {
                    // The client refreshed the metadata; the next fetch goes to the new leader.
                    tracing::debug!(topic = %self.topic, partition = self.partition, error = %err, ?backoff, "fetch failed; retrying");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                    continue;
                }
                _ => {
                    tracing::debug!(topic = %self.topic, partition = self.partition, error = %err, ?backoff, "fetch failed");
                    if !failing && !self.emit(FetchEventKind::Error(err), None) {
                        return;
                    }
                }
            }
            failing = true;
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }

    /// Applies the offset reset policy to an OffsetOutOfRange error. Ok(true):
    /// fetching goes on from the new position; Ok(false): the task stops.
    async fn reset(&mut self, err: &ClientError) -> Result<bool, ClientError> {
        let ClientError::Broker { log_start, log_end, .. } = err else {
            return Ok(true);
        };
        let (known, spec) = match self.config.offset_reset {
            OffsetReset::None => {
                self.emit(FetchEventKind::Error(err.clone()), None);
                return Ok(false);
            }
            OffsetReset::Earliest => (*log_start, StartOffset::Earliest),
            OffsetReset::Latest => (*log_end, StartOffset::Latest),
        };
        let offset = match known {
            Some(offset) => offset,
            None => resolve_start(&self.client, &self.topic, self.partition, spec).await?,
        };
        tracing::warn!(
            topic = %self.topic,
            partition = self.partition,
            from = self.offset,
            to = offset,
            "fetch offset out of range; resetting"
        );
        self.offset = offset;
        Ok(self.emit(FetchEventKind::Reset(offset), None))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::BytesMut;
    use eddy_protocol::batch::{stamp_base_offset, BatchBuilder};

    fn batch(base: u64, count: u32) -> Bytes {
        let mut b = BatchBuilder::with_capacity(256);
        for i in 0..count {
            b.push(
                Some(format!("k{i}").as_bytes()),
                format!("v{}", base + u64::from(i)).as_bytes(),
                1000 + i64::from(i),
                &[],
            );
        }
        let mut raw = BytesMut::from(&b.finish(0, 0)[..]);
        stamp_base_offset(&mut raw, base);
        raw.freeze()
    }

    fn concat(parts: &[Bytes]) -> Bytes {
        let mut all = BytesMut::new();
        for p in parts {
            all.extend_from_slice(p);
        }
        all.freeze()
    }

    #[test]
    fn records_before_the_requested_offset_are_skipped() {
        let data = concat(&[batch(10, 5), batch(15, 3)]);
        let (records, err) = decode_records("t", 2, 12, data);
        assert!(err.is_none());
        let offsets: Vec<u64> = records.iter().map(|r| r.offset).collect();
        assert_eq!(offsets, vec![12, 13, 14, 15, 16, 17]);
        assert_eq!(records[0].value, Bytes::from_static(b"v12"));
        assert_eq!(records[0].key.as_deref(), Some(&b"k2"[..]));
        assert_eq!((records[0].topic.as_str(), records[0].partition, records[0].timestamp), ("t", 2, 1002));
    }

    #[test]
    fn whole_batches_before_the_offset_and_repeats_are_dropped() {
        let data = concat(&[batch(0, 4), batch(4, 2), batch(4, 2)]);
        let (records, err) = decode_records("t", 0, 4, data);
        assert!(err.is_none());
        assert_eq!(records.iter().map(|r| r.offset).collect::<Vec<_>>(), vec![4, 5]);
    }

    #[test]
    fn corrupt_batch_keeps_the_records_before_it() {
        let good = batch(0, 2);
        let mut bad = BytesMut::from(&batch(2, 2)[..]);
        let last = bad.len() - 1;
        bad[last] ^= 0xff;
        let (records, err) = decode_records("t", 0, 0, concat(&[good, bad.freeze()]));
        assert_eq!(records.len(), 2);
        assert!(matches!(err, Some(ClientError::Decode(_))));
        let (records, err) = decode_records("t", 0, 0, Bytes::from_static(b"short"));
        assert!(records.is_empty() && err.is_some());
    }

    #[test]
    fn values_are_slices_of_the_response() {
        let data = batch(0, 1);
        let range = data.as_ptr() as usize..data.as_ptr() as usize + data.len();
        let (records, _) = decode_records("t", 0, 0, data.clone());
        assert!(range.contains(&(records[0].value.as_ptr() as usize)), "value was copied");
    }

    #[test]
    fn next_offset_hint_reads_batch_headers_only() {
        assert_eq!(next_offset_hint(&concat(&[batch(10, 5), batch(15, 3)])), Some(18));
        assert_eq!(next_offset_hint(&Bytes::new()), None);
        let mut partial = BytesMut::from(&batch(10, 5)[..]);
        partial.extend_from_slice(&batch(15, 3)[..40]);
        assert_eq!(next_offset_hint(&partial.freeze()), Some(15));
        let mut huge = BytesMut::from(&batch(0, 2)[..]);
        huge[..8].copy_from_slice(&u64::MAX.to_le_bytes());
        assert_eq!(next_offset_hint(&huge.clone().freeze()), None);
        let (records, err) = decode_records("t", 0, 0, huge.freeze());
        assert!(records.is_empty() && matches!(err, Some(ClientError::Decode(_))));
    }

    #[test]
    fn config_defaults() {
        let c = ConsumerConfig::default();
        assert_eq!(c.max_bytes_per_fetch, 4 * 1024 * 1024);
        assert_eq!(c.max_wait, Duration::from_millis(500));
        assert_eq!((c.min_bytes, c.offset_reset, c.prefetch), (1, OffsetReset::Earliest, 4));
    }
}
