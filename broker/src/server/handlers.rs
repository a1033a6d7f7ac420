//! Request dispatch: decodes a frame, runs the request against the store, and
//! encodes the response frame. One function per API key; the processor
//! requests (30-37) are in `handlers/processors.rs`.

mod processors;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::{BufMut, Bytes};
use eddy_protocol::batch::{BatchError, BatchLimits, BatchView};
use eddy_protocol::codec::{from_bytes, to_bytes, DecodeError, Wire};
use eddy_protocol::frame::{response_frame, split_request, ApiKey, PROTOCOL_VERSION};
use eddy_protocol::limits::{MAX_FETCH_WAIT_MS, MAX_FRAME_BYTES, MAX_PARTITIONS, MAX_TOPIC_NAME_BYTES};
use eddy_protocol::messages::*;
use eddy_protocol::{ErrorCode, ErrorResponse};
use tokio::sync::watch;
use tracing::debug;

use super::PendingResponse;
use crate::groups::coordinator::GroupError;
use crate::groups::GroupService;
use crate::store::{Store, StoreError, TopicConfig, TopicState};
pub use processors::{
    validate_processor_name, LOGS_RETENTION_MS, MAX_MODULE_BYTES, MAX_PARAMS_BYTES, MAX_PROCESSOR_INPUTS,
    MAX_PROCESSOR_NAME_BYTES, MAX_PROCESSOR_PARALLELISM, MAX_STATE_SCAN_BYTES,
};

/// A failed request: code and body.
#[derive(Debug)]
pub struct Failure {
    /// Wire error code.
    pub code: ErrorCode,
    /// Message and details.
    pub body: ErrorResponse,
}

impl Failure {
    /// A failure with only a message.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self { code, body: ErrorResponse::message(message) }
    }
}

impl From<StoreError> for Failure {
    fn from(e: StoreError) -> Self {
        let code = e.code();
        let mut body = ErrorResponse::message(e.to_string());
        if let StoreError::OffsetOutOfRange { log_start, log_end, .. } = e {
            body.log_start = Some(log_start);
            body.log_end = Some(log_end);
        }
        Self { code, body }
    }
}

impl From<GroupError> for Failure {
    fn from(e: GroupError) -> Self {
        Self::new(e.code, e.message)
    }
}

impl From<DecodeError> for Failure {
    fn from(e: DecodeError) -> Self {
        Self::new(ErrorCode::MalformedRequest, format!("cannot decode request: {e}"))
    }
}

/// Encodes an error response frame.
pub fn error_frame(code: ErrorCode, body: ErrorResponse) -> Bytes {
    response_frame(code as u16, &to_bytes(&body))
}

fn frame_of<T: Wire>(result: Result<T, Failure>) -> Bytes {
    match result {
        Ok(body) => response_frame(0, &to_bytes(&body)),
        Err(f) => error_frame(f.code, f.body),
    }
}

fn ready(frame: Bytes) -> PendingResponse {
    Box::pin(async move { vec![frame] })
}

/// A fetch response frame as two chunks: a small header and the stored
/// records, which are sent as they are (no copy into a frame buffer).
fn fetch_frame(result: Result<FetchResponse, Failure>) -> Vec<Bytes> {
    let resp = match result {
        Ok(resp) => resp,
        Err(f) => return vec![error_frame(f.code, f.body)],
    };
    // Wire layout of FetchResponse: u64 high_watermark, u64 log_start, bytes records.
    let body_len = 2 + 8 + 8 + 4 + resp.records.len();
    let mut header = bytes::BytesMut::with_capacity(4 + body_len - resp.records.len());
    header.put_u32_le(body_len as u32);
    header.put_u16_le(0);
    header.put_u64_le(resp.high_watermark);
    header.put_u64_le(resp.log_start);
    header.put_u32_le(resp.records.len() as u32);
    vec![header.freeze(), resp.records]
}

/// Limits and identity the handlers apply.
#[derive(Debug, Clone)]
pub struct HandlerConfig {
    /// This broker's id.
    pub broker_id: u32,
    /// Address clients reach this broker at.
    pub advertised_addr: String,
    /// Largest batch accepted.
    pub max_batch_bytes: u32,
    /// Largest record accepted.
    pub max_record_bytes: u32,
}

/// Everything a request needs: the store, limits, and the shutdown signal that
/// cuts long polls short.
pub struct Handlers {
    store: Arc<Store>,
    groups: Arc<GroupService>,
    runtime: Arc<eddy_runtime::Runtime>,
    config: HandlerConfig,
    shutdown: watch::Receiver<bool>,
}

impl Handlers {
    /// Handlers over `store`; deploys validate modules on `runtime`.
    pub fn new(
        store: Arc<Store>,
        groups: Arc<GroupService>,
        runtime: Arc<eddy_runtime::Runtime>,
        config: HandlerConfig,
        shutdown: watch::Receiver<bool>,
    ) -> Self {
        Self { store, groups, runtime, config, shutdown }
    }

    /// Handles one request frame (length prefix removed). Returns the pending
    /// response, or none for requests that get no answer (acks=0 produce).
    /// Work that must happen in request order (queueing appends) is done before
    /// this returns; the rest happens when the response future runs.
    pub async fn dispatch(self: &Arc<Self>, frame: Bytes, remote: SocketAddr) -> Option<PendingResponse> {
        let (header, payload) = match split_request(frame) {
            Ok(parts) => parts,
            Err(e) => {
                return Some(ready(error_frame(ErrorCode::MalformedRequest, ErrorResponse::message(e.to_string()))))
            }
        };
        let Some(key) = ApiKey::from_u16(header.api_key) else {
            let msg = format!("unknown API key {}; this broker speaks eddy/1", header.api_key);
            return Some(ready(error_frame(ErrorCode::UnknownApiKey, ErrorResponse::message(msg))));
        };
        if header.api_version != PROTOCOL_VERSION {
            let msg = format!(
                "{key:?} version {} is not supported; this broker speaks version {PROTOCOL_VERSION}",
                header.api_version
            );
            return Some(ready(error_frame(ErrorCode::UnsupportedVersion, ErrorResponse::message(msg))));
        }
        let this = self.clone();
        match key {
            ApiKey::Produce => self.produce(payload).await,
            ApiKey::Fetch => Some(Box::pin(async move { fetch_frame(this.fetch(payload).await) })),
            ApiKey::ListOffsets => Some(ready(frame_of(self.list_offsets(payload)))),
            ApiKey::Metadata => Some(ready(frame_of(self.metadata(payload)))),
            ApiKey::CreateTopic => Some(Box::pin(async move { vec![frame_of(this.create_topic(payload).await)] })),
            ApiKey::DeleteTopic => Some(Box::pin(async move { vec![frame_of(this.delete_topic(payload).await)] })),
            ApiKey::CreatePartitions => {
                Some(Box::pin(async move { vec![frame_of(this.create_partitions(payload).await)] }))
            }
            ApiKey::JoinGroup => Some(Box::pin(async move {
                let r = async {
                    let req: JoinGroupRequest = from_bytes(payload)?;
                    Ok(this.groups.join(req, remote.to_string()).await?)
                };
                vec![frame_of(r.await)]
            })),
            ApiKey::Heartbeat => Some(Box::pin(async move {
                let r = async {
                    let req: HeartbeatRequest = from_bytes(payload)?;
                    this.groups.heartbeat(req).await?;
                    Ok(Empty)
                };
                vec![frame_of(r.await)]
            })),
            ApiKey::LeaveGroup => Some(ready(frame_of(
                from_bytes::<LeaveGroupRequest>(payload)
                    .map_err(Failure::from)
                    .and_then(|req| Ok(self.groups.leave(req).map(|()| Empty)?)),
            ))),
            ApiKey::OffsetCommit => Some(Box::pin(async move {
                let r = async {
                    let req: OffsetCommitRequest = from_bytes(payload)?;
                    this.groups.commit(req).await?;
                    Ok(Empty)
                };
                vec![frame_of(r.await)]
            })),
            ApiKey::OffsetFetch => Some(ready(frame_of(
                from_bytes::<OffsetFetchRequest>(payload)
                    .map_err(Failure::from)
                    .map(|req| self.groups.fetch_offsets(req)),
            ))),
            ApiKey::ListGroups => Some(ready(frame_of(
                from_bytes::<ListGroupsRequest>(payload).map_err(Failure::from).map(|req| self.groups.list(req)),
            ))),
            ApiKey::DescribeGroup => Some(ready(frame_of(
                from_bytes::<DescribeGroupRequest>(payload)
                    .map_err(Failure::from)
                    .and_then(|req| Ok(self.groups.describe(req)?)),
            ))),
            ApiKey::DeployProcessor => {
                Some(Box::pin(async move { vec![frame_of(this.deploy_processor(payload).await)] }))
            }
            ApiKey::ListProcessors => Some(ready(frame_of(self.list_processors(payload)))),
            ApiKey::DescribeProcessor => Some(ready(frame_of(self.describe_processor(payload)))),
            ApiKey::DeleteProcessor => {
                Some(Box::pin(async move { vec![frame_of(this.delete_processor(payload).await)] }))
            }
            ApiKey::FetchProcessorModule => {
                Some(Box::pin(async move { vec![frame_of(this.fetch_processor_module(payload).await)] }))
            }
            ApiKey::CommitProcessorBatch => {
                Some(Box::pin(async move { vec![frame_of(this.commit_processor_batch(payload).await)] }))
            }
            ApiKey::StateScan => Some(Box::pin(async move { vec![frame_of(this.state_scan(payload).await)] })),
            ApiKey::StopProcessor => Some(Box::pin(async move { vec![frame_of(this.stop_processor(payload).await)] })),
            ApiKey::InitProducerId
            | ApiKey::ReplicaFetch
            | ApiKey::RaftAppend
            | ApiKey::RaftVote
            | ApiKey::RaftSnapshot
            | ApiKey::MetadataWrite
            | ApiKey::BrokerHeartbeat => {
                let msg = format!("{key:?} is not served by this broker yet");
                Some(ready(error_frame(ErrorCode::UnknownApiKey, ErrorResponse::message(msg))))
            }
        }
    }

    fn batch_limits(&self) -> BatchLimits {
        BatchLimits {
            max_batch_bytes: self.config.max_batch_bytes as usize,
            max_record_bytes: self.config.max_record_bytes as usize,
        }
    }

    async fn produce(&self, payload: Bytes) -> Option<PendingResponse> {
        let req: ProduceRequest = match from_bytes(payload) {
            Ok(r) => r,
            Err(e) => return Some(ready(frame_of::<Empty>(Err(e.into())))),
        };
        let limits = self.batch_limits();
        let mut parts = Vec::with_capacity(req.partitions.len());
        for pb in req.partitions {
            let partition = pb.partition;
            let queued = match BatchView::validate(pb.batch, limits) {
                Ok(view) => self.store.append(&req.topic, partition, view.into_bytes(), 0).await.map_err(Failure::from),
                Err(e @ (BatchError::RecordTooLarge { .. } | BatchError::BatchTooLarge { .. })) => {
                    Err(Failure::new(ErrorCode::RecordTooLarge, format!("{}/{partition}: {e}", req.topic)))
                }
                Err(e) => Err(Failure::new(
                    ErrorCode::CorruptBatch,
                    format!("{}/{partition}: corrupt batch refused: {e}", req.topic),
                )),
            };
            parts.push((partition, queued));
        }
        if req.acks == Acks::None {
            // No response; appends already queued go ahead.
            for (partition, queued) in parts {
                if let Err(f) = queued {
                    debug!(topic = %req.topic, partition, error = %f.body.message, "acks=0 produce failed");
                }
            }
            return None;
        }
        Some(Box::pin(async move {
            let mut out = Vec::with_capacity(parts.len());
            for (partition, queued) in parts {
                let result = match queued {
                    Ok(durable) => durable.await.map(|a| a.base_offset).map_err(Failure::from),
                    Err(f) => Err(f),
                };
                out.push(match result {
                    Ok(base_offset) => {
                        PartitionProduceResponse { partition, error_code: 0, error_message: String::new(), base_offset }
                    }
                    Err(f) => PartitionProduceResponse {
                        partition,
                        error_code: f.code as u16,
                        error_message: f.body.message,
                        base_offset: 0,
                    },
                });
            }
            vec![frame_of(Ok(ProduceResponse { partitions: out }))]
        }))
    }

    async fn fetch(&self, payload: Bytes) -> Result<FetchResponse, Failure> {
        let req: FetchRequest = from_bytes(payload)?;
        let max_bytes = req.max_bytes.clamp(1, MAX_FRAME_BYTES - 1024) as usize;
        let max_wait = Duration::from_millis(u64::from(req.max_wait_ms.min(MAX_FETCH_WAIT_MS)));
        let (_, partition) = self.store.partition(&req.topic, req.partition)?;
        let mut changes = partition.subscribe();
        let mut shutdown = self.shutdown.clone();
        let deadline = tokio::time::Instant::now() + max_wait;
        loop {
            let read = self.store.read(&req.topic, req.partition, req.offset, max_bytes)?;
            if read.records.len() >= req.min_bytes as usize
                || tokio::time::Instant::now() >= deadline
                || *shutdown.borrow()
            {
                return Ok(FetchResponse {
                    high_watermark: read.high_watermark,
                    log_start: read.log_start,
                    records: read.records,
                });
            }
            tokio::select! {
                changed = changes.changed() => if changed.is_err() {
                    // The partition went away (topic deleted).
                    return Err(Failure::new(ErrorCode::UnknownTopic, format!("topic '{}' was deleted", req.topic)));
                },
                _ = tokio::time::sleep_until(deadline) => {}
                _ = shutdown.changed() => {}
            }
        }
    }

    fn list_offsets(&self, payload: Bytes) -> Result<ListOffsetsResponse, Failure> {
        let req: ListOffsetsRequest = from_bytes(payload)?;
        let (_, p) = self.store.partition(&req.topic, req.partition)?;
        let o = p.offsets();
        let offset = match req.spec {
            OffsetSpec::Earliest => o.log_start,
            OffsetSpec::Latest => o.log_end,
        };
        Ok(ListOffsetsResponse { offset })
    }

    fn topic_metadata(&self, t: &TopicState) -> TopicMetadata {
        let id = self.config.broker_id;
        TopicMetadata {
            name: t.config.name.clone(),
            replication_factor: t.config.replication_factor,
            min_insync_replicas: 1,
            retention_ms: t.config.retention_ms,
            retention_bytes: t.config.retention_bytes,
            partitions: t
                .partitions
                .iter()
                .enumerate()
                .map(|(i, p)| {
                    let o = p.offsets();
                    PartitionMetadata {
                        partition: i as u32,
                        leader: id,
                        leader_epoch: 0,
                        replicas: vec![id],
                        isr: vec![id],
                        log_start: o.log_start,
                        log_end: o.log_end,
                        size_bytes: o.size_bytes,
                    }
                })
                .collect(),
        }
    }

    fn metadata(&self, payload: Bytes) -> Result<MetadataResponse, Failure> {
        let req: MetadataRequest = from_bytes(payload)?;
        let catalog = self.store.catalog();
        let topics = match req.topics {
            None => catalog.values().map(|t| self.topic_metadata(t)).collect(),
            Some(names) => names
                .iter()
                .map(|n| {
                    catalog
                        .get(n)
                        .map(|t| self.topic_metadata(t))
                        .ok_or_else(|| Failure::from(StoreError::UnknownTopic(n.clone())))
                })
                .collect::<Result<_, _>>()?,
        };
        let brokers = vec![BrokerInfo { id: self.config.broker_id, addr: self.config.advertised_addr.clone() }];
        Ok(MetadataResponse { brokers, controller: self.config.broker_id, topics })
    }

    async fn create_topic(&self, payload: Bytes) -> Result<TopicMetadata, Failure> {
        let req: CreateTopicRequest = from_bytes(payload)?;
        validate_topic_name(&req.name)?;
        if req.partitions == 0 || req.partitions > MAX_PARTITIONS {
            return Err(Failure::new(
                ErrorCode::InvalidPartitions,
                format!("partition count {} is outside 1..={MAX_PARTITIONS}", req.partitions),
            ));
        }
        let live_brokers = 1;
        if req.replication_factor == 0 {
            return Err(Failure::new(ErrorCode::InvalidReplicationFactor, "replication factor must be at least 1"));
        }
        if u32::from(req.replication_factor) > live_brokers {
            return Err(Failure::new(
                ErrorCode::InvalidReplicationFactor,
                format!("replication factor {} larger than available brokers {live_brokers}", req.replication_factor),
            ));
        }
        let config = TopicConfig {
            name: req.name.clone(),
            id: 0,
            partitions: req.partitions,
            replication_factor: req.replication_factor,
            retention_ms: req.retention_ms,
            retention_bytes: req.retention_bytes,
            min_insync_replicas: 1,
            assignments: Vec::new(),
        };
        self.store.create_topic(config).await?;
        let topic = self.store.topic(&req.name)?;
        Ok(self.topic_metadata(&topic))
    }

    async fn delete_topic(&self, payload: Bytes) -> Result<Empty, Failure> {
        let req: DeleteTopicRequest = from_bytes(payload)?;
        self.store.delete_topic(&req.name).await?;
        Ok(Empty)
    }

    async fn create_partitions(&self, payload: Bytes) -> Result<TopicMetadata, Failure> {
        let req: CreatePartitionsRequest = from_bytes(payload)?;
        if req.count > MAX_PARTITIONS {
            return Err(Failure::new(
                ErrorCode::InvalidPartitions,
                format!("partition count {} is over the limit of {MAX_PARTITIONS}", req.count),
            ));
        }
        self.store.add_partitions(&req.name, req.count).await?;
        let topic = self.store.topic(&req.name)?;
        Ok(self.topic_metadata(&topic))
    }
}

/// Topic names: 1 to 249 bytes of `[A-Za-z0-9._-]`, not `.` or `..`.
pub fn validate_topic_name(name: &str) -> Result<(), Failure> {
    let bad =
        |why: String| Err(Failure::new(ErrorCode::InvalidTopicName, format!("invalid topic name '{name}': {why}")));
    if name.is_empty() {
        return bad("it is empty".into());
    }
    if name.len() > MAX_TOPIC_NAME_BYTES {
        return bad(format!("it is {} bytes long, the limit is {MAX_TOPIC_NAME_BYTES}", name.len()));
    }
    if name == "." || name == ".." {
        return bad("'.' and '..' are reserved".into());
    }
    if let Some(c) = name.chars().find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))) {
        return bad(format!("character {c:?} is not allowed (use letters, digits, '.', '_' and '-')"));
    }
    Ok(())
}

#[cfg(test)]
mod processor_tests;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_names_are_validated() {
        for good in ["a", "orders.v2", "A_b-C.9", &"x".repeat(249)] {
            assert!(validate_topic_name(good).is_ok(), "{good}");
        }
        for bad in ["", ".", "..", "has space", "slash/no", "ümlaut", &"x".repeat(250)] {
            let err = validate_topic_name(bad).unwrap_err();
            assert_eq!(err.code, ErrorCode::InvalidTopicName, "{bad}");
        }
    }
}
