//! The producer: batches records per partition and pipelines produce requests
//! to each partition's leader, idempotently.
//!
//! [`Producer::send`] only enqueues a record on a bounded queue (waiting when
//! it is full, which is the backpressure) and returns a [`DeliveryFuture`]. A
//! background task owns everything else: the partitioner and per-partition
//! batches (the `batcher` module, a state machine with no I/O), a per-topic
//! partition count cache, and one long-lived bidirectional stream per leader
//! broker on which produce requests go back to back, up to `max_in_flight`
//! unanswered per stream. A broker answers them in order, so per-partition
//! order holds under pipelining. Each partition's batches go to its leader,
//! as the [`Client`]'s metadata cache names it.
//!
//! # Delivery guarantees
//!
//! With [`ProducerConfig::enable_idempotence`] (the default), the producer
//! gets a producer id from the cluster when it starts and stamps every batch
//! with it and a per-partition sequence number. A batch that fails with a
//! retriable error (`NOT_LEADER`, `LEADER_NOT_AVAILABLE`,
//! `NOT_ENOUGH_REPLICAS`, `OUT_OF_ORDER_SEQUENCE`, `TIMEOUT`, `SHUTTING_DOWN`,
//! `STORAGE_ERROR`, `NOT_CONTROLLER`), or whose stream or connection fails, is
//! sent again with the same bytes to the partition's current leader after
//! `retry_backoff` (metadata refreshed first), until `delivery_timeout` has
//! passed since its first record was sent; the leader recognises a resend of
//! a batch it has and answers its original offset. Per partition, resends go
//! out in sequence order before any later batch. So **each acknowledged
//! record is written exactly once, and a partition's records are stored in
//! the order they were sent, across retries and leader failover**. A record
//! that fails (non-retriable error, or the delivery timeout passed) may or may
//! not be stored if its batch had been written before.
//!
//! Without idempotence, delivery is at most once per `send`: a batch whose
//! request was written is never written again, even if its connection fails
//! before the answer; its records fail instead (a resend could duplicate
//! them). Batches never written are still routed to a new leader.
//!
//! With [`Acks::None`] there is no answer, hence no retry: a record counts as
//! delivered once its request is written.

mod batcher;
mod driver;

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use eddy_protocol::batch::{BatchBuilder, Header, BATCH_HEADER_BYTES};
use eddy_protocol::limits::{DEFAULT_MAX_RECORD_BYTES, MAX_FRAME_BYTES, MAX_HEADERS_PER_RECORD};
use eddy_protocol::messages::{Acks, InitProducerIdRequest};
use eddy_protocol::ErrorCode;
use tokio::sync::{mpsc, oneshot};

use crate::client::Client;
use crate::error::ClientError;
use driver::Command;

/// How the producer batches and sends.
#[derive(Debug, Clone)]
pub struct ProducerConfig {
    /// Which replicas must have a batch before it counts as delivered.
    /// With [`Acks::None`] the broker does not answer and offsets are unknown.
    pub acks: Acks,
    /// How long a batch may wait for more records after its first one.
    pub linger: Duration,
    /// Largest batch, header included; a record larger than this is sent alone.
    /// The default, 65,280 bytes, keeps a batch just under redb's 65,408-byte
    /// value size that fits a page.
    pub max_batch_bytes: usize,
    /// Most produce requests written and not yet answered, per broker stream.
    pub max_in_flight: usize,
    /// Capacity of the queue between [`Producer::send`] and the batching task.
    pub buffer_records: usize,
    /// Largest encoded record accepted by [`Producer::send`].
    pub max_record_bytes: usize,
    /// Idempotent delivery with retries (see the module docs). Needs a
    /// cluster that serves `InitProducerId`; against a broker that does not
    /// know the request (`UNKNOWN_API_KEY`) the producer runs without
    /// idempotence and logs a warning.
    pub enable_idempotence: bool,
    /// Pause before a failed batch is sent again.
    pub retry_backoff: Duration,
    /// Longest a record may take from `send` to its outcome (retries
    /// included, idempotent producer); then it fails with the last error.
    pub delivery_timeout: Duration,
}

impl Default for ProducerConfig {
    fn default() -> Self {
        Self {
            acks: Acks::Leader,
            linger: Duration::from_millis(5),
            max_batch_bytes: 65_280,
            max_in_flight: 32,
            buffer_records: 65_536,
            max_record_bytes: DEFAULT_MAX_RECORD_BYTES as usize,
            enable_idempotence: true,
            retry_backoff: Duration::from_millis(100),
            delivery_timeout: Duration::from_secs(120),
        }
    }
}

impl ProducerConfig {
    fn validate(&self) -> Result<(), ClientError> {
        let err = |m: String| Err(ClientError::Config(m));
        if self.max_batch_bytes <= BATCH_HEADER_BYTES || self.max_batch_bytes > MAX_FRAME_BYTES as usize / 2 {
            return err(format!(
                "max_batch_bytes {} must be within {}..={}",
                self.max_batch_bytes,
                BATCH_HEADER_BYTES + 1,
                MAX_FRAME_BYTES / 2
            ));
        }
        if self.max_record_bytes == 0 || self.max_record_bytes > MAX_FRAME_BYTES as usize / 2 {
            return err(format!(
                "max_record_bytes {} must be within 1..={}",
                self.max_record_bytes,
                MAX_FRAME_BYTES / 2
            ));
        }
        if self.max_in_flight == 0 {
            return err("max_in_flight must be at least 1".into());
        }
        if self.buffer_records == 0 {
            return err("buffer_records must be at least 1".into());
        }
        if self.delivery_timeout.is_zero() {
            return err("delivery_timeout must be positive".into());
        }
        Ok(())
    }
}

/// One record to produce.
#[derive(Debug, Clone)]
pub struct ProducerRecord {
    /// Destination topic.
    pub topic: String,
    /// Explicit partition; else chosen from the key, else sticky round robin.
    pub partition: Option<u32>,
    /// Optional key; records with equal keys go to the same partition.
    pub key: Option<Bytes>,
    /// The payload.
    pub value: Bytes,
    /// Milliseconds since the Unix epoch; `send` fills in the current time.
    pub timestamp: Option<i64>,
    /// Ordered headers.
    pub headers: Vec<Header>,
}

impl ProducerRecord {
    /// A keyless record with no headers, stamped at send time.
    pub fn new(topic: impl Into<String>, value: impl Into<Bytes>) -> Self {
        Self {
            topic: topic.into(),
            partition: None,
            key: None,
            value: value.into(),
            timestamp: None,
            headers: Vec::new(),
        }
    }

    /// Sets the key.
    pub fn key(mut self, key: impl Into<Bytes>) -> Self {
        self.key = Some(key.into());
        self
    }

    /// Sends to this partition regardless of the key.
    pub fn partition(mut self, partition: u32) -> Self {
        self.partition = Some(partition);
        self
    }

    /// Sets the timestamp (ms since the Unix epoch).
    pub fn timestamp(mut self, ms: i64) -> Self {
        self.timestamp = Some(ms);
        self
    }

    /// Appends a header.
    pub fn header(mut self, key: impl Into<String>, value: impl Into<Bytes>) -> Self {
        self.headers.push(Header { key: key.into(), value: value.into() });
        self
    }
}

/// Where a record was stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordMetadata {
    /// The partition the record went to.
    pub partition: u32,
    /// Its offset in the partition; `None` with [`Acks::None`].
    pub offset: Option<u64>,
}

/// Resolves with the outcome of one sent record. Dropping it does not cancel
/// the record. Resolves to [`ClientError::ProducerClosed`] if the producer
/// stopped before handling the record.
#[derive(Debug)]
pub struct DeliveryFuture {
    rx: oneshot::Receiver<Result<RecordMetadata, ClientError>>,
}

impl Future for DeliveryFuture {
    type Output = Result<RecordMetadata, ClientError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.rx).poll(cx).map(|r| r.unwrap_or(Err(ClientError::ProducerClosed)))
    }
}

/// A handle to a producer. Cheap to clone; clones feed the same batching task.
#[derive(Clone)]
pub struct Producer {
    tx: mpsc::Sender<Command>,
    max_record_bytes: usize,
}

impl std::fmt::Debug for Producer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Producer").field("closed", &self.tx.is_closed()).finish_non_exhaustive()
    }
}

impl Producer {
    /// Starts a producer on `client`: checks the configuration, asks the
    /// cluster for a producer id (idempotence on) or for metadata (off), so
    /// that an unreachable cluster fails here, and spawns the batching task.
    /// Must be called within a tokio runtime.
    pub async fn new(client: Client, config: ProducerConfig) -> Result<Producer, ClientError> {
        config.validate()?;
        let producer_id = if config.enable_idempotence {
            match client.request(&InitProducerIdRequest { client_id: client_id() }).await {
                Ok(resp) if resp.producer_id != 0 => resp.producer_id,
                Ok(_) => return Err(ClientError::Decode("the cluster gave producer id 0".into())),
                Err(e) if e.code() == Some(ErrorCode::UnknownApiKey) => {
                    tracing::warn!(error = %e, "the broker does not serve producer ids; producing without idempotence");
                    client.refresh_metadata().await?;
                    0
                }
                Err(e) => return Err(e),
            }
        } else {
            client.refresh_metadata().await?;
            0
        };
        tracing::debug!(producer_id, "producer started");
        let (tx, rx) = mpsc::channel(config.buffer_records);
        let max_record_bytes = config.max_record_bytes;
        tokio::spawn(driver::Driver::new(client, config, producer_id).run(rx));
        Ok(Producer { tx, max_record_bytes })
    }

    /// Enqueues a record and returns a future of its outcome. Waits only while
    /// the queue is full. Fails at once with [`ClientError::RecordTooLarge`]
    /// for a record over `max_record_bytes` and with
    /// [`ClientError::ProducerClosed`] after [`Producer::close`].
    pub async fn send(&self, mut record: ProducerRecord) -> Result<DeliveryFuture, ClientError> {
        let size = BatchBuilder::record_size(record.key.as_deref(), &record.value, &record.headers);
        if size > self.max_record_bytes {
            return Err(ClientError::RecordTooLarge { size, max: self.max_record_bytes });
        }
        if record.headers.len() > MAX_HEADERS_PER_RECORD {
            return Err(ClientError::Config(format!(
                "record has {} headers, at most {MAX_HEADERS_PER_RECORD} are allowed",
                record.headers.len()
            )));
        }
        if record.timestamp.is_none() {
            record.timestamp = Some(now_ms());
        }
        let (tx, rx) = oneshot::channel();
        self.tx.send(Command::Record(record, tx)).await.map_err(|_| ClientError::ProducerClosed)?;
        Ok(DeliveryFuture { rx })
    }

    /// Sends a record and waits for its outcome.
    pub async fn send_and_wait(&self, record: ProducerRecord) -> Result<RecordMetadata, ClientError> {
        self.send(record).await?.await
    }

    /// Sends every record enqueued before this call without waiting for linger,
    /// and resolves once each of them has been acknowledged or has failed
    /// (their own futures tell which).
    pub async fn flush(&self) -> Result<(), ClientError> {
        let (tx, rx) = oneshot::channel();
        self.tx.send(Command::Flush(tx)).await.map_err(|_| ClientError::ProducerClosed)?;
        rx.await.map_err(|_| ClientError::ProducerClosed)
    }

    /// Flushes, then stops the batching task and ends the produce stream.
    /// Records sent through other clones after this fail with
    /// [`ClientError::ProducerClosed`]. Closing a closed producer succeeds.
    pub async fn close(self) -> Result<(), ClientError> {
        let (tx, rx) = oneshot::channel();
        if self.tx.send(Command::Close(tx)).await.is_err() {
            return Ok(());
        }
        // The task drops the sender only if it ends without acknowledging,
        // which it does only when another close already stopped it.
        let _ = rx.await;
        Ok(())
    }
}

/// The client id sent with `InitProducerId`.
fn client_id() -> String {
    format!("eddy-producer-{}", std::process::id())
}

fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_builder_sets_fields() {
        let r = ProducerRecord::new("t", "v").key("k").partition(3).timestamp(9).header("h", "x");
        assert_eq!(r.topic, "t");
        assert_eq!(r.key.as_deref(), Some(&b"k"[..]));
        assert_eq!((r.partition, r.timestamp), (Some(3), Some(9)));
        assert_eq!(r.headers, vec![Header { key: "h".into(), value: Bytes::from_static(b"x") }]);
    }

    #[test]
    fn config_defaults_and_validation() {
        let c = ProducerConfig::default();
        assert_eq!(c.acks, Acks::Leader);
        assert_eq!(c.max_batch_bytes, 65_280);
        assert!(c.enable_idempotence);
        assert_eq!((c.retry_backoff, c.delivery_timeout), (Duration::from_millis(100), Duration::from_secs(120)));
        assert!(c.validate().is_ok());
        for bad in [
            ProducerConfig { max_in_flight: 0, ..ProducerConfig::default() },
            ProducerConfig { buffer_records: 0, ..ProducerConfig::default() },
            ProducerConfig { max_batch_bytes: 10, ..ProducerConfig::default() },
            ProducerConfig { max_record_bytes: 0, ..ProducerConfig::default() },
            ProducerConfig { delivery_timeout: Duration::ZERO, ..ProducerConfig::default() },
        ] {
            assert!(matches!(bad.validate(), Err(ClientError::Config(_))));
        }
    }
}
