//! The producer's background task: the I/O glue around [`Batcher`] and the
//! per-partition delivery state.
//!
//! It receives commands from the [`super::Producer`] handles, feeds records
//! and time into the batcher, fetches metadata when the batcher asks, and
//! sends the closed batches to their partition's leader: one pipelined stream
//! per leader broker, each driven by a task of its own (`stream_task`) that
//! writes the requests handed to it and passes the responses back in order.
//!
//! Per partition it keeps every unacknowledged batch in sequence order
//! ([`PartState`]). The rules that keep records in order and written once:
//!
//! * a partition's batches are in flight on at most one stream at a time;
//!   when its leader changes, later batches wait until the earlier ones are
//!   answered;
//! * after a failure the partition is *recovering*: nothing more is sent for
//!   it until all its in-flight batches are answered and `retry_backoff` has
//!   passed; then (metadata refreshed) every unacknowledged batch is sent
//!   again, in order, with the same bytes;
//! * a batch fails for good on a non-retriable error or when its delivery
//!   timeout has passed at a resend; the partition then goes on under a fresh
//!   producer id: its unacknowledged batches that may have been written fail
//!   too (they cannot be resent safely under another id), the others are
//!   rebuilt with the new id and sequences from 0.
//!
//! Without idempotence, a batch whose request was written is never sent
//! again: any failure fails its records.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use eddy_protocol::batch::{BatchBuilder, BatchView};
use eddy_protocol::messages::{Acks, InitProducerIdRequest};
use eddy_protocol::ErrorCode;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use super::batcher::{
    batch_outcomes, encode_produce, record_metadata, BatchConfig, Batcher, Completion, FlushTracker, Pending,
    ReadyRequest,
};
use super::{ProducerConfig, ProducerRecord, RecordMetadata};
use crate::client::{read_response_frame, Client};
use crate::error::{self, ClientError};

/// `timeout_ms` sent in every produce request: how long the broker may wait
/// for replicas before answering Timeout.
const PRODUCE_TIMEOUT_MS: u32 = 30_000;

/// Commands received per wake-up, to amortize the task's bookkeeping.
const RECV_CHUNK: usize = 1024;

/// Bytes of batches that wait unsent (partitions recovering or without a
/// leader) beyond which no more records are taken: the bound on what a
/// failover buffers.
const MAX_UNSENT_BYTES: usize = 64 * 1024 * 1024;

/// What a [`super::Producer`] handle asks of the task.
pub(crate) enum Command {
    Record(ProducerRecord, Completion),
    Flush(oneshot::Sender<()>),
    Close(oneshot::Sender<()>),
}

/// What a stream task reports.
enum StreamEvent {
    /// The next response, in request order.
    Frame(u16, Bytes),
    /// The next request was written (acks=None only: no response will come).
    Written,
    /// The stream is gone; `written`: some request may have reached the broker.
    Failed { err: ClientError, written: bool },
}

/// Results of background requests.
enum Aux {
    PartitionCount(Arc<str>, Result<u32, ClientError>),
    Refreshed,
    ProducerId(Result<u64, ClientError>),
}

/// A reference to one batch: partition index and batch id.
type BatchRef = (usize, u64);

/// A request waiting for room on its stream.
struct Outgoing {
    topic: Arc<str>,
    batches: Vec<BatchRef>,
}

/// A request handed to its stream task and not answered yet.
struct InFlight {
    sent_at: Instant,
    batches: Vec<BatchRef>,
}

/// The pipelined stream to one broker.
struct Stream {
    generation: u64,
    tx: mpsc::UnboundedSender<Vec<Bytes>>,
    task: JoinHandle<()>,
    in_flight: VecDeque<InFlight>,
    queue: VecDeque<Outgoing>,
}

/// One unacknowledged batch.
struct Batch {
    id: u64,
    bytes: Bytes,
    record_count: u32,
    pending: Vec<Pending>,
    created: Instant,
    /// Queued on a stream or in flight.
    sent: bool,
    /// Some attempt may have been written without a settling answer.
    maybe_written: bool,
    last_error: Option<ClientError>,
}

/// Delivery state of one partition. See the module docs.
struct PartState {
    topic: Arc<str>,
    partition: u32,
    /// Unacknowledged batches, in sequence order.
    batches: VecDeque<Batch>,
    /// Batches of `batches` with `sent` set.
    in_flight: usize,
    /// The broker those are sent to (meaningful while `in_flight > 0`).
    stream_broker: u32,
    /// Cached leader (0: none) and the client metadata version it was read at.
    leader: u32,
    leader_version: u64,
    /// Producer id of its batches (0 without idempotence).
    producer_id: u64,
    recovering: bool,
    retry_at: Instant,
    /// A batch failed for good: go on under a fresh producer id.
    needs_new_id: bool,
    /// In `Driver::held`.
    held: bool,
}

pub(crate) struct Driver {
    client: Client,
    config: ProducerConfig,
    idempotent: bool,
    batcher: Batcher,
    tracker: FlushTracker,
    parts: Vec<PartState>,
    part_index: HashMap<(Arc<str>, u32), usize>,
    /// Partitions with batches that wait for a retry time, a leader or a producer id.
    held: Vec<usize>,
    streams: HashMap<u32, Stream>,
    next_generation: u64,
    next_batch_id: u64,
    unsent_bytes: usize,
    events_tx: mpsc::UnboundedSender<(u64, StreamEvent)>,
    events_rx: mpsc::UnboundedReceiver<(u64, StreamEvent)>,
    aux_tx: mpsc::UnboundedSender<Aux>,
    aux_rx: mpsc::UnboundedReceiver<Aux>,
    refreshing: bool,
    /// The newest producer id obtained after the first, if any.
    fresh_id: Option<u64>,
    requesting_id: bool,
    background: Vec<JoinHandle<()>>,
    /// No more commands will be taken (close requested or every handle dropped).
    inputs_done: bool,
    close_acks: Vec<oneshot::Sender<()>>,
}

/// Whether an error answer (or failure) leaves the batch possibly written.
fn maybe_written_by(err: &ClientError) -> bool {
    match err {
        ClientError::Broker { code, .. } => {
            matches!(code, ErrorCode::Timeout | ErrorCode::StorageError | ErrorCode::Internal)
        }
        ClientError::Connect { .. } => false,
        _ => true,
    }
}

/// Whether a failed batch may be sent again (idempotent producer).
fn is_retriable(err: &ClientError) -> bool {
    err.is_retriable() || matches!(err, ClientError::Decode(_))
}

impl Driver {
    pub fn new(client: Client, config: ProducerConfig, producer_id: u64) -> Self {
        let seed =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(0);
        let batcher = Batcher::new(
            BatchConfig { max_batch_bytes: config.max_batch_bytes, linger: config.linger, producer_id },
            seed,
        );
        let (events_tx, events_rx) = mpsc::unbounded_channel();
        let (aux_tx, aux_rx) = mpsc::unbounded_channel();
        Self {
            client,
            idempotent: producer_id != 0,
            config,
            batcher,
            tracker: FlushTracker::default(),
            parts: Vec::new(),
            part_index: HashMap::new(),
            held: Vec::new(),
            streams: HashMap::new(),
            next_generation: 0,
            next_batch_id: 0,
            unsent_bytes: 0,
            events_tx,
            events_rx,
            aux_tx,
            aux_rx,
            refreshing: false,
            fresh_id: None,
            requesting_id: false,
            background: Vec::new(),
            inputs_done: false,
            close_acks: Vec::new(),
        }
    }

    /// Runs until closed (or every handle is dropped) and every record is done.
    pub async fn run(mut self, mut commands: mpsc::Receiver<Command>) {
        let mut buf = Vec::with_capacity(RECV_CHUNK);
        loop {
            // Backpressure: stop taking records while the pipelines are backed
            // up, too many records wait for metadata or too many bytes wait
            // unsent; the bounded queue then fills.
            let accepting = !self.inputs_done
                && self.queued_requests() < self.config.max_in_flight
                && self.batcher.parked_len() < self.config.buffer_records
                && self.unsent_bytes < MAX_UNSENT_BYTES;
            let wakeup = self.next_wakeup();
            let far = Instant::now() + Duration::from_secs(3600);
            let sleep = tokio::time::sleep_until(tokio::time::Instant::from_std(wakeup.unwrap_or(far)));
            tokio::select! {
                biased;
                Some((generation, event)) = self.events_rx.recv() => self.on_stream_event(generation, event),
                Some(aux) = self.aux_rx.recv() => self.on_aux(aux),
                n = commands.recv_many(&mut buf, RECV_CHUNK), if accepting => {
                    if n == 0 {
                        self.inputs_done = true;
                        self.batcher.close_all();
                    }
                    let now = Instant::now();
                    for command in buf.drain(..) {
                        self.on_command(command, now, &mut commands);
                    }
                }
                _ = sleep, if wakeup.is_some() => {}
            }
            self.step();
            if self.inputs_done && self.is_drained() {
                break;
            }
        }
        self.shutdown().await;
    }

    fn queued_requests(&self) -> usize {
        self.streams.values().map(|s| s.queue.len()).sum()
    }

    fn request_timeout(&self) -> Duration {
        self.client.config().request_timeout
    }

    fn next_wakeup(&self) -> Option<Instant> {
        let limit = self.request_timeout();
        let timeouts = self.streams.values().filter_map(|s| s.in_flight.front().map(|f| f.sent_at + limit));
        let retries = self.held.iter().map(|&p| self.parts[p].retry_at);
        self.batcher.next_deadline().into_iter().chain(timeouts).chain(retries).min()
    }

    fn is_drained(&self) -> bool {
        self.batcher.is_idle()
            && self.parts.iter().all(|p| p.batches.is_empty())
            && self.streams.values().all(|s| s.in_flight.is_empty() && s.queue.is_empty())
    }

    fn on_command(&mut self, command: Command, now: Instant, commands: &mut mpsc::Receiver<Command>) {
        match command {
            Command::Record(record, tx) => {
                let pending = Pending { tx, epoch: self.tracker.add() };
                if let Some((pending, err)) = self.batcher.push(record, pending, now) {
                    self.complete(pending, Err(err));
                }
            }
            Command::Flush(waiter) => {
                let epoch = self.tracker.flush(waiter);
                self.batcher.close_through_epoch(epoch);
            }
            Command::Close(ack) => {
                self.close_acks.push(ack);
                self.inputs_done = true;
                // Later sends fail at once; records already queued behind the
                // close are dropped with the receiver (their futures resolve
                // to ProducerClosed).
                commands.close();
                self.batcher.close_all();
            }
        }
    }

    fn complete(&mut self, pending: Pending, result: Result<RecordMetadata, ClientError>) {
        self.tracker.done(pending.epoch);
        // The caller may have dropped its DeliveryFuture; that is fine.
        let _ = pending.tx.send(result);
    }

    fn fail_all(&mut self, pending: Vec<Pending>, err: &ClientError) {
        for p in pending {
            self.complete(p, Err(err.clone()));
        }
    }

    /// Everything done after each wake-up: timeouts, metadata requests,
    /// polling ready batches, resuming held partitions and feeding the streams.
    fn step(&mut self) {
        let now = Instant::now();
        let limit = self.request_timeout();
        let expired: Vec<u32> = self
            .streams
            .iter()
            .filter(|(_, s)| s.in_flight.front().is_some_and(|f| now >= f.sent_at + limit))
            .map(|(&b, _)| b)
            .collect();
        for broker in expired {
            let err = ClientError::Timeout(limit);
            tracing::warn!(broker, error = %err, "produce request unanswered; abandoning the stream");
            self.fail_stream(broker, err, true);
        }
        while let Some(topic) = self.batcher.poll_metadata() {
            self.fetch_partition_count(topic);
        }
        if let Some(epoch) = self.tracker.max_waiting_epoch() {
            self.batcher.close_through_epoch(epoch);
        }
        for request in self.batcher.poll_ready(now) {
            self.register(request, now);
        }
        let held = std::mem::take(&mut self.held);
        for &p in &held {
            self.parts[p].held = false;
        }
        for p in held {
            self.try_resume(p, now);
        }
        let brokers: Vec<u32> = self.streams.keys().copied().collect();
        for broker in brokers {
            self.pump(broker);
        }
        self.tracker.resolve();
    }

    fn fetch_partition_count(&mut self, topic: Arc<str>) {
        let client = self.client.clone();
        let tx = self.aux_tx.clone();
        self.background.retain(|h| !h.is_finished());
        self.background.push(tokio::spawn(async move {
            let result = client.refresh_metadata().await.and_then(|()| {
                client.cached_partition_count(&topic).ok_or_else(|| {
                    ClientError::broker(ErrorCode::UnknownTopic, format!("topic {topic} does not exist"))
                })
            });
            let _ = tx.send(Aux::PartitionCount(topic, result));
        }));
    }

    /// Starts a metadata refresh unless one is under way.
    fn want_refresh(&mut self) {
        if self.refreshing {
            return;
        }
        self.refreshing = true;
        let client = self.client.clone();
        let tx = self.aux_tx.clone();
        self.background.retain(|h| !h.is_finished());
        self.background.push(tokio::spawn(async move {
            if let Err(e) = client.refresh_metadata().await {
                tracing::debug!(error = %e, "metadata refresh failed");
            }
            let _ = tx.send(Aux::Refreshed);
        }));
    }

    /// Asks for a fresh producer id unless a request is under way; retried
    /// with backoff until it succeeds (or the producer stops).
    fn want_producer_id(&mut self) {
        if self.requesting_id {
            return;
        }
        self.requesting_id = true;
        let client = self.client.clone();
        let tx = self.aux_tx.clone();
        let backoff = self.config.retry_backoff.max(Duration::from_millis(10));
        self.background.push(tokio::spawn(async move {
            let req = InitProducerIdRequest { client_id: super::client_id() };
            loop {
                match client.request(&req).await {
                    Ok(resp) if resp.producer_id != 0 => {
                        let _ = tx.send(Aux::ProducerId(Ok(resp.producer_id)));
                        return;
                    }
                    Ok(_) => tracing::warn!("the cluster gave producer id 0; asking again"),
                    Err(e) => tracing::warn!(error = %e, "cannot get a new producer id; retrying"),
                }
                tokio::time::sleep(backoff).await;
            }
        }));
    }

    fn on_aux(&mut self, aux: Aux) {
        match aux {
            Aux::PartitionCount(topic, result) => {
                let failed = self.batcher.on_metadata(&topic, result, Instant::now());
                for (pending, err) in failed {
                    self.complete(pending, Err(err));
                }
            }
            Aux::Refreshed => self.refreshing = false,
            Aux::ProducerId(result) => {
                self.requesting_id = false;
                if let Ok(id) = result {
                    tracing::info!(producer_id = id, "new producer id");
                    self.fresh_id = Some(id);
                }
            }
        }
    }

    /// The partition's index, creating its state on first use.
    fn part(&mut self, topic: &Arc<str>, partition: u32) -> usize {
        if let Some(&p) = self.part_index.get(&(topic.clone(), partition)) {
            return p;
        }
        let p = self.parts.len();
        self.parts.push(PartState {
            topic: topic.clone(),
            partition,
            batches: VecDeque::new(),
            in_flight: 0,
            stream_broker: 0,
            leader: 0,
            leader_version: u64::MAX,
            producer_id: 0,
            recovering: false,
            retry_at: Instant::now(),
            needs_new_id: false,
            held: false,
        });
        self.part_index.insert((topic.clone(), partition), p);
        p
    }

    /// The partition's leader, re-read from the client when its metadata changed.
    fn leader_of(&mut self, p: usize) -> u32 {
        let version = self.client.metadata_version();
        let part = &mut self.parts[p];
        if part.leader_version != version {
            part.leader = self.client.cached_leader(&part.topic, part.partition);
            part.leader_version = version;
        }
        part.leader
    }

    /// Stops sending for partition `p` for at least `retry_backoff`; it is
    /// resumed by [`Driver::step`] (see [`Driver::try_resume`]).
    fn hold(&mut self, p: usize, now: Instant) {
        let part = &mut self.parts[p];
        part.recovering = true;
        part.retry_at = part.retry_at.max(now + self.config.retry_backoff);
        self.keep_held(p);
    }

    fn keep_held(&mut self, p: usize) {
        let part = &mut self.parts[p];
        if !part.held {
            part.held = true;
            self.held.push(p);
        }
    }

    /// Takes on the batches of a request polled from the batcher and sends
    /// those whose partition is ready, grouped per leader.
    fn register(&mut self, request: ReadyRequest, now: Instant) {
        let mut by_leader: Vec<(u32, Vec<BatchRef>)> = Vec::new();
        for ready in request.batches {
            let p = self.part(&request.topic, ready.partition);
            let id = self.next_batch_id;
            self.next_batch_id += 1;
            let record_count = ready.pending.len() as u32;
            let producer_id = if self.idempotent { batch_producer_id(&ready.batch) } else { 0 };
            self.parts[p].producer_id = producer_id;
            self.unsent_bytes += ready.batch.len();
            self.parts[p].batches.push_back(Batch {
                id,
                bytes: ready.batch,
                record_count,
                pending: ready.pending,
                created: ready.created,
                sent: false,
                maybe_written: false,
                last_error: None,
            });
            let leader = self.leader_of(p);
            let part = &self.parts[p];
            let only_unsent = part.batches.len() == part.in_flight + 1;
            let same_stream = part.in_flight == 0 || part.stream_broker == leader;
            if part.recovering || part.needs_new_id {
                self.keep_held(p);
                continue; // Resumed later, in order.
            }
            if !only_unsent {
                continue; // Goes out after the earlier unsent batches, whoever sends those.
            }
            if leader == 0 {
                self.want_refresh();
                self.hold(p, now);
                continue;
            }
            if !same_stream {
                continue; // Sent once the old leader has answered the earlier batches.
            }
            self.mark_sent(p, id, leader);
            match by_leader.iter_mut().find(|(l, _)| *l == leader) {
                Some((_, refs)) => refs.push((p, id)),
                None => by_leader.push((leader, vec![(p, id)])),
            }
        }
        for (leader, batches) in by_leader {
            self.stream(leader).queue.push_back(Outgoing { topic: request.topic.clone(), batches });
        }
    }

    fn mark_sent(&mut self, p: usize, id: u64, broker: u32) {
        let part = &mut self.parts[p];
        // Batches are sent in order: the one to send is at the back or near it.
        if let Some(b) = part.batches.iter_mut().rev().find(|b| b.id == id) {
            debug_assert!(!b.sent);
            b.sent = true;
            self.unsent_bytes -= b.bytes.len();
            part.in_flight += 1;
            part.stream_broker = broker;
        }
    }

    /// Marks a sent batch unsent again (its request failed or was withdrawn);
    /// returns its index in the partition's queue.
    fn mark_unsent(&mut self, p: usize, id: u64) -> Option<usize> {
        let part = &mut self.parts[p];
        let i = part.batches.iter().position(|b| b.id == id)?;
        let b = &mut part.batches[i];
        if b.sent {
            b.sent = false;
            self.unsent_bytes += b.bytes.len();
            part.in_flight -= 1;
        }
        Some(i)
    }

    /// Removes an unsent batch from its partition.
    fn remove(&mut self, p: usize, i: usize) -> Option<Batch> {
        let b = self.parts[p].batches.remove(i)?;
        debug_assert!(!b.sent);
        self.unsent_bytes -= b.bytes.len();
        Some(b)
    }

    /// Sends a held partition's batches again if it may: every earlier
    /// request answered, its backoff over, a leader known and (after a
    /// batch failed for good) a fresh producer id in place. Expired batches
    /// fail first.
    fn try_resume(&mut self, p: usize, now: Instant) {
        let part = &self.parts[p];
        if part.in_flight > 0 {
            return; // Resumed when the last answer comes (`on_response`, `batch_failed`).
        }
        if part.recovering && now < part.retry_at {
            return self.keep_held(p);
        }
        self.parts[p].recovering = false;
        self.expire(p, now);
        if self.parts[p].needs_new_id && !self.switch_producer_id(p) {
            self.want_producer_id();
            return self.hold(p, now);
        }
        if self.parts[p].batches.is_empty() {
            return;
        }
        let leader = self.leader_of(p);
        if leader == 0 {
            self.want_refresh();
            return self.hold(p, now);
        }
        let ids: Vec<u64> = self.parts[p].batches.iter().filter(|b| !b.sent).map(|b| b.id).collect();
        let topic = self.parts[p].topic.clone();
        for id in ids {
            self.mark_sent(p, id, leader);
            // One batch per request: a request carries at most one batch of a partition.
            self.stream(leader).queue.push_back(Outgoing { topic: topic.clone(), batches: vec![(p, id)] });
        }
    }

    /// Fails the batches of a partition whose delivery timeout has passed.
    fn expire(&mut self, p: usize, now: Instant) {
        let timeout = self.config.delivery_timeout;
        let mut i = 0;
        while i < self.parts[p].batches.len() {
            let b = &self.parts[p].batches[i];
            if b.sent || now < b.created + timeout {
                i += 1;
                continue;
            }
            let err = b.last_error.clone().unwrap_or(ClientError::Timeout(timeout));
            tracing::warn!(
                topic = %self.parts[p].topic,
                partition = self.parts[p].partition,
                error = %err,
                "delivery timeout passed; failing the batch"
            );
            self.fail_for_good(p, i, &err);
        }
    }

    /// Fails batch `i` of partition `p` (unsent) with `err`.
    fn fail_for_good(&mut self, p: usize, i: usize, err: &ClientError) {
        if let Some(batch) = self.remove(p, i) {
            self.fail_all(batch.pending, err);
            if self.idempotent {
                self.parts[p].needs_new_id = true;
            }
        }
    }

    /// Moves partition `p` (nothing in flight) to the fresh producer id, if
    /// there is one it has not used: batches that may have been written fail,
    /// the others are rebuilt with the new id and sequences from 0. False if
    /// a fresh id is needed first.
    fn switch_producer_id(&mut self, p: usize) -> bool {
        let Some(id) = self.fresh_id.filter(|&id| id != self.parts[p].producer_id) else {
            return false;
        };
        debug_assert_eq!(self.parts[p].in_flight, 0);
        let mut i = 0;
        let mut next = 0u32;
        while i < self.parts[p].batches.len() {
            if self.parts[p].batches[i].maybe_written {
                let err = self.parts[p].batches[i].last_error.clone().unwrap_or_else(|| {
                    ClientError::broker(ErrorCode::OutOfOrderSequence, "an earlier batch of the partition failed")
                });
                if let Some(batch) = self.remove(p, i) {
                    self.fail_all(batch.pending, &err);
                }
                continue;
            }
            let b = &mut self.parts[p].batches[i];
            match rebuild(&b.bytes, id, next) {
                Ok(bytes) => {
                    debug_assert_eq!(bytes.len(), b.bytes.len());
                    b.bytes = bytes;
                    next = next.wrapping_add(b.record_count);
                    i += 1;
                }
                Err(err) => {
                    if let Some(batch) = self.remove(p, i) {
                        self.fail_all(batch.pending, &err);
                    }
                }
            }
        }
        let part = &mut self.parts[p];
        tracing::info!(topic = %part.topic, partition = part.partition, producer_id = id, "partition restarts its sequence");
        part.producer_id = id;
        part.needs_new_id = false;
        self.batcher.restart_sequence(&part.topic, part.partition, id, next);
        true
    }

    /// The stream to `broker`, started if there is none.
    fn stream(&mut self, broker: u32) -> &mut Stream {
        if !self.streams.contains_key(&broker) {
            let generation = self.next_generation;
            self.next_generation += 1;
            let (tx, rx) = mpsc::unbounded_channel();
            let task = tokio::spawn(stream_task(
                self.client.clone(),
                broker,
                generation,
                self.config.acks,
                self.request_timeout(),
                rx,
                self.events_tx.clone(),
            ));
            self.streams
                .insert(broker, Stream { generation, tx, task, in_flight: VecDeque::new(), queue: VecDeque::new() });
        }
        self.streams.get_mut(&broker).expect("inserted above")
    }

    /// Hands queued requests to the stream task while the pipeline has room.
    /// Batches of partitions that started recovering meanwhile are withdrawn.
    fn pump(&mut self, broker: u32) {
        loop {
            let Some(stream) = self.streams.get_mut(&broker) else {
                return;
            };
            if stream.in_flight.len() >= self.config.max_in_flight {
                return;
            }
            let Some(out) = stream.queue.pop_front() else {
                return;
            };
            let mut batches = Vec::with_capacity(out.batches.len());
            let mut refs = Vec::with_capacity(out.batches.len());
            for (p, id) in out.batches {
                let part = &self.parts[p];
                if part.recovering || part.needs_new_id {
                    self.mark_unsent(p, id);
                    continue;
                }
                if let Some(b) = part.batches.iter().rev().find(|b| b.id == id) {
                    batches.push((part.partition, b.bytes.clone()));
                    refs.push((p, id));
                }
            }
            if refs.is_empty() {
                continue;
            }
            let chunks = encode_produce(&out.topic, self.config.acks, PRODUCE_TIMEOUT_MS, &batches);
            let Some(stream) = self.streams.get_mut(&broker) else {
                return;
            };
            // If the task has ended, its failure event is on its way and fails these.
            let _ = stream.tx.send(chunks);
            stream.in_flight.push_back(InFlight { sent_at: Instant::now(), batches: refs });
        }
    }

    fn on_stream_event(&mut self, generation: u64, event: StreamEvent) {
        let Some(broker) = self.streams.iter().find(|(_, s)| s.generation == generation).map(|(&b, _)| b) else {
            return; // From a stream already abandoned.
        };
        match event {
            StreamEvent::Frame(code, payload) => {
                let request = self.streams.get_mut(&broker).and_then(|s| s.in_flight.pop_front());
                match request {
                    Some(request) => self.on_response(request, code, payload),
                    None => {
                        self.fail_stream(broker, ClientError::Decode("produce response without a request".into()), true)
                    }
                }
            }
            StreamEvent::Written => {
                if let Some(request) = self.streams.get_mut(&broker).and_then(|s| s.in_flight.pop_front()) {
                    for (p, id) in request.batches {
                        if let Some(i) = self.mark_unsent(p, id) {
                            if let Some(batch) = self.remove(p, i) {
                                let partition = self.parts[p].partition;
                                for pending in batch.pending {
                                    self.complete(pending, Ok(RecordMetadata { partition, offset: None }));
                                }
                            }
                        }
                    }
                }
            }
            StreamEvent::Failed { err, written } => self.fail_stream(broker, err, written),
        }
    }

    /// Abandons the stream to `broker`: every batch on it failed with `err`.
    fn fail_stream(&mut self, broker: u32, err: ClientError, written: bool) {
        let Some(stream) = self.streams.remove(&broker) else {
            return;
        };
        stream.task.abort();
        if !stream.in_flight.is_empty() {
            tracing::warn!(broker, error = %err, requests = stream.in_flight.len(), "produce stream failed");
        }
        self.want_refresh();
        let now = Instant::now();
        for request in stream.in_flight {
            for (p, id) in request.batches {
                self.batch_failed(p, id, err.clone(), written, now);
            }
        }
        // Never handed to the stream: not written.
        for out in stream.queue {
            for (p, id) in out.batches {
                if let Some(i) = self.mark_unsent(p, id) {
                    self.parts[p].batches[i].last_error = Some(err.clone());
                }
                self.hold(p, now);
            }
        }
    }

    /// A sent batch failed: retry it (idempotent, retriable) or fail it.
    fn batch_failed(&mut self, p: usize, id: u64, err: ClientError, may_be_written: bool, now: Instant) {
        let Some(i) = self.mark_unsent(p, id) else {
            return;
        };
        if !self.idempotent || self.config.acks == Acks::None {
            // Not retried: the request was written and the broker may have applied it.
            if let Some(batch) = self.remove(p, i) {
                self.fail_all(batch.pending, &err);
            }
            self.try_resume(p, now);
            return;
        }
        let batch = &mut self.parts[p].batches[i];
        batch.maybe_written |= may_be_written;
        batch.last_error = Some(err.clone());
        if is_retriable(&err) {
            tracing::debug!(
                topic = %self.parts[p].topic,
                partition = self.parts[p].partition,
                error = %err,
                "produce failed; the partition will resend"
            );
            self.hold(p, now);
        } else {
            self.fail_for_good(p, i, &err);
            self.hold(p, now);
        }
    }

    fn on_response(&mut self, request: InFlight, code: u16, payload: Bytes) {
        let partitions: Vec<u32> = request.batches.iter().map(|&(p, _)| self.parts[p].partition).collect();
        let outcomes = batch_outcomes(code, payload, &partitions);
        let now = Instant::now();
        let mut touched = Vec::with_capacity(request.batches.len());
        for ((p, id), outcome) in request.batches.into_iter().zip(outcomes) {
            touched.push(p);
            match outcome {
                Ok(base) => {
                    let Some(i) = self.mark_unsent(p, id) else {
                        continue;
                    };
                    if let Some(batch) = self.remove(p, i) {
                        let partition = self.parts[p].partition;
                        for (k, pending) in batch.pending.into_iter().enumerate() {
                            let result = record_metadata(partition, base, k);
                            self.complete(pending, result);
                        }
                    }
                }
                Err(err) => {
                    match err.code() {
                        Some(ErrorCode::UnknownTopic | ErrorCode::UnknownPartition) => {
                            let topic = self.parts[p].topic.clone();
                            self.batcher.request_refresh(&topic);
                        }
                        Some(ErrorCode::NotLeader | ErrorCode::LeaderNotAvailable | ErrorCode::FencedLeaderEpoch) => {
                            self.want_refresh()
                        }
                        _ => {}
                    }
                    let written = maybe_written_by(&err);
                    self.batch_failed(p, id, err, written, now);
                }
            }
        }
        // A partition whose earlier batches were all answered may send what waited.
        for p in touched {
            if self.parts[p].in_flight == 0 && self.parts[p].batches.iter().any(|b| !b.sent) {
                self.try_resume(p, now);
            }
        }
    }

    /// Ends every stream cleanly (each task finishes its send side and waits,
    /// bounded, until the broker has received everything written) and
    /// acknowledges the close requests.
    async fn shutdown(mut self) {
        let limit = self.request_timeout();
        for (_, stream) in self.streams.drain() {
            drop(stream.tx);
            let mut task = stream.task;
            if tokio::time::timeout(limit + Duration::from_secs(1), &mut task).await.is_err() {
                task.abort();
            }
        }
        for h in self.background.drain(..) {
            h.abort();
        }
        self.tracker.resolve();
        for ack in self.close_acks.drain(..) {
            let _ = ack.send(());
        }
        tracing::debug!("producer stopped");
    }
}

/// The producer id stamped in a batch.
fn batch_producer_id(bytes: &Bytes) -> u64 {
    eddy_protocol::batch::batch_info(bytes).map(|i| i.producer_id).unwrap_or(0)
}

/// Re-encodes a batch with another producer id and base sequence (the CRC
/// covers both). Only on the rare path of a sequence restart.
fn rebuild(bytes: &Bytes, producer_id: u64, base_sequence: u32) -> Result<Bytes, ClientError> {
    let view = BatchView::trusted(bytes.clone()).map_err(|e| ClientError::Decode(e.to_string()))?;
    let mut builder = BatchBuilder::with_capacity(bytes.len());
    for record in view.records() {
        let r = record.map_err(|e| ClientError::Decode(e.to_string()))?;
        builder.push(r.key.as_deref(), &r.value, r.timestamp, &r.headers);
    }
    Ok(builder.finish(producer_id, base_sequence))
}

/// Drives the pipelined stream to one broker: opens it, writes each request
/// handed over in order, and reports responses (in order) and failures.
async fn stream_task(
    client: Client,
    broker: u32,
    generation: u64,
    acks: Acks,
    limit: Duration,
    mut requests: mpsc::UnboundedReceiver<Vec<Bytes>>,
    events: mpsc::UnboundedSender<(u64, StreamEvent)>,
) {
    let report = |event| {
        let _ = events.send((generation, event));
    };
    let opened = match client.broker(broker) {
        Some(b) => match tokio::time::timeout(limit, b.open_stream()).await {
            Ok(result) => result,
            Err(_) => Err(ClientError::Timeout(limit)),
        },
        None => Err(ClientError::broker(ErrorCode::LeaderNotAvailable, format!("broker {broker} is not known"))),
    };
    let (mut send, mut recv) = match opened {
        Ok(s) => s,
        Err(err) => {
            tracing::debug!(broker, error = %err, "cannot open a produce stream");
            return report(StreamEvent::Failed { err, written: false });
        }
    };
    let reader_events = events.clone();
    let reader = AbortOnDrop(tokio::spawn(async move {
        loop {
            let event = match read_response_frame(&mut recv).await {
                Ok(Some((code, payload))) => StreamEvent::Frame(code, payload),
                Ok(None) => StreamEvent::Failed {
                    err: ClientError::Transport("broker ended the produce stream".into()),
                    written: true,
                },
                Err(err) => StreamEvent::Failed { err, written: true },
            };
            let last = !matches!(event, StreamEvent::Frame(..));
            if reader_events.send((generation, event)).is_err() || last {
                return;
            }
        }
    }));
    while let Some(mut chunks) = requests.recv().await {
        let err = match tokio::time::timeout(limit, send.write_all_chunks(&mut chunks)).await {
            Ok(Ok(())) => {
                if acks == Acks::None {
                    report(StreamEvent::Written);
                }
                continue;
            }
            Ok(Err(e)) => error::write_error(e),
            Err(_) => ClientError::Timeout(limit),
        };
        let _ = send.reset(0u32.into());
        return report(StreamEvent::Failed { err, written: true });
    }
    // The driver is done with this stream: end it cleanly.
    if send.finish().is_ok() {
        let _ = tokio::time::timeout(limit, send.stopped()).await;
    }
    drop(reader);
}

/// Aborts a task when dropped.
struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use eddy_protocol::batch::Header;

    #[test]
    fn a_rebuilt_batch_keeps_its_records_under_a_new_id_and_sequence() {
        let mut b = BatchBuilder::with_capacity(256);
        b.push(Some(b"k"), b"v1", 10, &[Header { key: "h".into(), value: Bytes::from_static(b"x") }]);
        b.push(None, b"v2", 12, &[]);
        let original = b.finish(5, 40);
        let rebuilt = rebuild(&original, 6, 0).unwrap();
        assert_eq!(rebuilt.len(), original.len());
        let (old, new) = (BatchView::trusted(original).unwrap(), BatchView::trusted(rebuilt.clone()).unwrap());
        assert_eq!((new.producer_id(), new.base_sequence(), new.record_count()), (6, 0, 2));
        let records = |v: &BatchView| v.records().map(|r| r.unwrap()).collect::<Vec<_>>();
        assert_eq!(records(&old), records(&new));
        // The CRC was recomputed: the broker's validation accepts it.
        let limits = eddy_protocol::batch::BatchLimits { max_batch_bytes: 1 << 20, max_record_bytes: 1 << 20 };
        BatchView::validate(rebuilt, limits).unwrap();
    }

    #[test]
    fn only_answers_that_settle_nothing_leave_a_batch_possibly_written() {
        let broker = |code| ClientError::broker(code, "x");
        for code in [ErrorCode::Timeout, ErrorCode::StorageError, ErrorCode::Internal] {
            assert!(maybe_written_by(&broker(code)), "{code}");
        }
        for code in [ErrorCode::NotLeader, ErrorCode::OutOfOrderSequence, ErrorCode::NotEnoughReplicas] {
            assert!(!maybe_written_by(&broker(code)), "{code}");
        }
        assert!(maybe_written_by(&ClientError::Transport("lost".into())));
        assert!(!maybe_written_by(&ClientError::Connect { addr: "a:1".into(), reason: "down".into() }));
        assert!(is_retriable(&broker(ErrorCode::NotController)));
        assert!(!is_retriable(&broker(ErrorCode::CorruptBatch)));
    }
}
