//! The producer's background task: the I/O glue around [`Batcher`].
//!
//! It receives commands from the [`super::Producer`] handles, feeds records
//! and time into the batcher, fetches partition counts when the batcher asks,
//! writes the produce requests it polls out on the pipelined stream, and
//! completes records from the responses that the stream's reader task hands
//! back in order.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use eddy_protocol::messages::{Acks, MetadataRequest};
use eddy_protocol::ErrorCode;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use super::batcher::{
    batch_outcomes, encode_produce, record_metadata, BatchConfig, Batcher, Completion, FlushTracker, Pending,
    ReadyRequest,
};
use super::{ProducerConfig, ProducerRecord, RecordMetadata};
use crate::admin::find_topic;
use crate::client::{read_response_frame, Client};
use crate::error::{self, ClientError};

/// `timeout_ms` sent in every produce request: how long the broker may wait
/// for replicas before answering Timeout.
const PRODUCE_TIMEOUT_MS: u32 = 30_000;

/// Commands received per wake-up, to amortize the task's bookkeeping.
const RECV_CHUNK: usize = 1024;

/// What a [`super::Producer`] handle asks of the task.
pub(crate) enum Command {
    Record(ProducerRecord, Completion),
    Flush(oneshot::Sender<()>),
    Close(oneshot::Sender<()>),
}

/// What the reader task of a stream reports.
enum ReaderEvent {
    Frame(u16, Bytes),
    End,
    Failed(ClientError),
}

/// A request written and waiting for its response.
struct InFlight {
    sent_at: Instant,
    topic: Arc<str>,
    batches: Vec<(u32, Vec<Pending>)>,
}

/// The pipelined produce stream and the task reading its responses.
struct PipeStream {
    send: quinn::SendStream,
    generation: u64,
    reader: JoinHandle<()>,
}

pub(crate) struct Driver {
    client: Client,
    config: ProducerConfig,
    batcher: Batcher,
    tracker: FlushTracker,
    /// Requests polled from the batcher, waiting for room in the pipeline.
    queue: VecDeque<ReadyRequest>,
    /// Written requests awaiting responses, oldest first (not used with acks=None).
    in_flight: VecDeque<InFlight>,
    stream: Option<PipeStream>,
    next_generation: u64,
    events_tx: mpsc::UnboundedSender<(u64, ReaderEvent)>,
    events_rx: mpsc::UnboundedReceiver<(u64, ReaderEvent)>,
    meta_tx: mpsc::UnboundedSender<(Arc<str>, Result<u32, ClientError>)>,
    meta_rx: mpsc::UnboundedReceiver<(Arc<str>, Result<u32, ClientError>)>,
    /// No more commands will be taken (close requested or every handle dropped).
    inputs_done: bool,
    close_acks: Vec<oneshot::Sender<()>>,
}

impl Driver {
    pub fn new(client: Client, config: ProducerConfig) -> Self {
        let seed =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(0);
        let batcher =
            Batcher::new(BatchConfig { max_batch_bytes: config.max_batch_bytes, linger: config.linger }, seed);
        let (events_tx, events_rx) = mpsc::unbounded_channel();
        let (meta_tx, meta_rx) = mpsc::unbounded_channel();
        Self {
            client,
            config,
            batcher,
            tracker: FlushTracker::default(),
            queue: VecDeque::new(),
            in_flight: VecDeque::new(),
            stream: None,
            next_generation: 0,
            events_tx,
            events_rx,
            meta_tx,
            meta_rx,
            inputs_done: false,
            close_acks: Vec::new(),
        }
    }

    /// Runs until closed (or every handle is dropped) and every record is done.
    pub async fn run(
        mut self,
        mut commands: mpsc::Receiver<Command>,
        first_stream: (quinn::SendStream, quinn::RecvStream),
    ) {
        self.install_stream(first_stream);
        let mut buf = Vec::with_capacity(RECV_CHUNK);
        loop {
            // Backpressure: stop taking records while the pipeline is backed up
            // or too many records wait for metadata; the bounded queue then fills.
            let accepting = !self.inputs_done
                && self.queue.len() < self.config.max_in_flight
                && self.batcher.parked_len() < self.config.buffer_records;
            let wakeup = self.next_wakeup();
            let far = Instant::now() + std::time::Duration::from_secs(3600);
            let sleep = tokio::time::sleep_until(tokio::time::Instant::from_std(wakeup.unwrap_or(far)));
            tokio::select! {
                biased;
                Some((generation, event)) = self.events_rx.recv() => self.on_stream_event(generation, event),
                Some((topic, result)) = self.meta_rx.recv() => self.on_metadata(&topic, result),
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
            self.step().await;
            if self.inputs_done && self.is_drained() {
                break;
            }
        }
        self.shutdown().await;
    }

    fn next_wakeup(&self) -> Option<Instant> {
        let linger = self.batcher.next_deadline();
        let timeout = self.in_flight.front().map(|f| f.sent_at + self.config_request_timeout());
        match (linger, timeout) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    fn config_request_timeout(&self) -> std::time::Duration {
        self.client.config().request_timeout
    }

    fn is_drained(&self) -> bool {
        self.batcher.is_idle() && self.queue.is_empty() && self.in_flight.is_empty()
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

    /// Everything done after each wake-up: timeouts, metadata requests, polling
    /// ready batches and writing what the pipeline has room for.
    async fn step(&mut self) {
        let now = Instant::now();
        if self.in_flight.front().is_some_and(|f| now >= f.sent_at + self.config_request_timeout()) {
            let err = ClientError::Timeout(self.config_request_timeout());
            tracing::warn!(error = %err, "produce request unanswered; abandoning the stream");
            self.fail_stream(err);
        }
        while let Some(topic) = self.batcher.poll_metadata() {
            self.fetch_metadata(topic);
        }
        if let Some(epoch) = self.tracker.max_waiting_epoch() {
            self.batcher.close_through_epoch(epoch);
        }
        self.queue.extend(self.batcher.poll_ready(now));
        self.write_queued().await;
        self.tracker.resolve();
    }

    fn fetch_metadata(&self, topic: Arc<str>) {
        let client = self.client.clone();
        let tx = self.meta_tx.clone();
        tokio::spawn(async move {
            let req = MetadataRequest { topics: Some(vec![topic.to_string()]) };
            let result =
                client.request(&req).await.and_then(|resp| find_topic(resp, &topic)).map(|t| t.partitions.len() as u32);
            let _ = tx.send((topic, result));
        });
    }

    fn on_metadata(&mut self, topic: &str, result: Result<u32, ClientError>) {
        let failed = self.batcher.on_metadata(topic, result, Instant::now());
        for (pending, err) in failed {
            self.complete(pending, Err(err));
        }
    }

    fn install_stream(&mut self, (send, mut recv): (quinn::SendStream, quinn::RecvStream)) {
        let generation = self.next_generation;
        self.next_generation += 1;
        let events = self.events_tx.clone();
        let reader = tokio::spawn(async move {
            loop {
                let event = match read_response_frame(&mut recv).await {
                    Ok(Some((code, payload))) => ReaderEvent::Frame(code, payload),
                    Ok(None) => ReaderEvent::End,
                    Err(e) => ReaderEvent::Failed(e),
                };
                let last = !matches!(event, ReaderEvent::Frame(..));
                if events.send((generation, event)).is_err() || last {
                    return;
                }
            }
        });
        self.stream = Some(PipeStream { send, generation, reader });
    }

    /// Abandons the current stream and fails every record in flight on it.
    ///
    /// The failed batches are not resent on a new stream: the broker may have
    /// applied them before the stream broke, and resending would duplicate
    /// records. That stays so until the idempotent producer (producer id +
    /// sequence numbers, already reserved in the batch header) lets the broker
    /// drop duplicates.
    fn fail_stream(&mut self, err: ClientError) {
        if let Some(mut stream) = self.stream.take() {
            stream.reader.abort();
            let _ = stream.send.reset(0u32.into());
        }
        let in_flight = std::mem::take(&mut self.in_flight);
        if !in_flight.is_empty() {
            tracing::warn!(error = %err, requests = in_flight.len(), "produce stream failed; failing in-flight records");
        }
        for request in in_flight {
            for (_, pending) in request.batches {
                self.fail_all(pending, &err);
            }
        }
    }

    fn on_stream_event(&mut self, generation: u64, event: ReaderEvent) {
        if self.stream.as_ref().map(|s| s.generation) != Some(generation) {
            return; // From a stream already abandoned.
        }
        match event {
            ReaderEvent::Frame(code, payload) => match self.in_flight.pop_front() {
                Some(request) => self.on_response(request, code, payload),
                None => self.fail_stream(ClientError::Decode("produce response without a request".into())),
            },
            ReaderEvent::End => self.fail_stream(ClientError::Transport("broker ended the produce stream".into())),
            ReaderEvent::Failed(err) => self.fail_stream(err),
        }
    }

    fn on_response(&mut self, request: InFlight, code: u16, payload: Bytes) {
        let partitions: Vec<u32> = request.batches.iter().map(|b| b.0).collect();
        let outcomes = batch_outcomes(code, payload, &partitions);
        for ((partition, pending), outcome) in request.batches.into_iter().zip(outcomes) {
            match outcome {
                Ok(base) => {
                    for (i, p) in pending.into_iter().enumerate() {
                        let result = record_metadata(partition, base, i);
                        self.complete(p, result);
                    }
                }
                Err(err) => {
                    if matches!(err.code(), Some(ErrorCode::UnknownTopic | ErrorCode::UnknownPartition)) {
                        self.batcher.request_refresh(&request.topic);
                    }
                    // Not retried, even when retriable: see fail_stream.
                    self.fail_all(pending, &err);
                }
            }
        }
    }

    /// Writes queued requests while the pipeline has room, opening a stream
    /// (and reconnecting) if needed.
    async fn write_queued(&mut self) {
        let acks = self.config.acks;
        let limit = self.config_request_timeout();
        loop {
            if acks != Acks::None && self.in_flight.len() >= self.config.max_in_flight {
                return;
            }
            let Some(request) = self.queue.pop_front() else {
                return;
            };
            if self.stream.is_none() {
                match tokio::time::timeout(limit, self.client.open_stream()).await {
                    Ok(Ok(stream)) => self.install_stream(stream),
                    Ok(Err(err)) => return self.fail_queued(request, err),
                    Err(_) => return self.fail_queued(request, ClientError::Timeout(limit)),
                }
            }
            let Some(stream) = self.stream.as_mut() else {
                return self.fail_queued(request, ClientError::Transport("no produce stream".into()));
            };
            let mut chunks = encode_produce(&request.topic, acks, PRODUCE_TIMEOUT_MS, &request.batches);
            let written = tokio::time::timeout(limit, stream.send.write_all_chunks(&mut chunks)).await;
            let batches: Vec<(u32, Vec<Pending>)> =
                request.batches.into_iter().map(|b| (b.partition, b.pending)).collect();
            let err = match written {
                Ok(Ok(())) if acks == Acks::None => {
                    // No response will come: written is all we will ever know.
                    for (partition, pending) in batches {
                        for p in pending {
                            self.complete(p, Ok(RecordMetadata { partition, offset: None }));
                        }
                    }
                    continue;
                }
                Ok(Ok(())) => {
                    self.in_flight.push_back(InFlight { sent_at: Instant::now(), topic: request.topic, batches });
                    continue;
                }
                Ok(Err(e)) => error::write_error(e),
                Err(_) => ClientError::Timeout(limit),
            };
            // Part of the request may have reached the broker: fail, never resend.
            for (_, pending) in batches {
                self.fail_all(pending, &err);
            }
            self.fail_stream(err);
        }
    }

    /// Fails `first` and every queued request: no stream could be opened.
    fn fail_queued(&mut self, first: ReadyRequest, err: ClientError) {
        tracing::warn!(error = %err, "cannot open a produce stream; failing ready batches");
        let queued = std::mem::take(&mut self.queue);
        for request in std::iter::once(first).chain(queued) {
            for batch in request.batches {
                self.fail_all(batch.pending, &err);
            }
        }
    }

    /// Ends the stream cleanly, waits (bounded) until the broker has received
    /// everything written, and acknowledges the close requests.
    async fn shutdown(mut self) {
        if let Some(mut stream) = self.stream.take() {
            if stream.send.finish().is_ok() {
                let limit = self.config_request_timeout();
                let _ = tokio::time::timeout(limit, stream.send.stopped()).await;
            }
            stream.reader.abort();
        }
        self.tracker.resolve();
        for ack in self.close_acks.drain(..) {
            let _ = ack.send(());
        }
        tracing::debug!("producer stopped");
    }
}
