//! Request dispatch: decodes a frame, runs the request against the store, and
//! encodes the response frame. One function per API key; the processor
//! requests (30-37) are in `handlers/processors.rs`.
//!
//! In a cluster: produce, fetch and list-offsets are served by the partition
//! leader only (NOT_LEADER elsewhere); requests on cluster-wide state (admin,
//! groups, processors, producer ids) are served by the controller and
//! forwarded to it by every other broker; Raft, replica-fetch, metadata-write
//! and heartbeat requests come from other brokers.

mod access;
mod processors;
mod security;

use std::sync::Arc;
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use eddy_protocol::batch::{BatchError, BatchLimits, BatchView};
use eddy_protocol::codec::{from_bytes, to_bytes, DecodeError, Wire};
use eddy_protocol::frame::{response_frame, split_request, ApiKey, PROTOCOL_VERSION};
use eddy_protocol::limits::{MAX_FETCH_WAIT_MS, MAX_FRAME_BYTES, MAX_PARTITIONS, MAX_TOPIC_NAME_BYTES};
use eddy_protocol::messages::*;
use eddy_protocol::{ErrorCode, ErrorResponse};
use tokio::sync::watch;
use tracing::debug;

use super::PendingResponse;
use crate::auth::authorizer::Resource;
use crate::auth::{Principal, Session};
use crate::cluster::{plan, Cluster, Refusal};
use crate::groups::coordinator::GroupError;
use crate::groups::GroupService;
use crate::replication::ReplicaManager;
use crate::store::{MetaCommand, Store, StoreError, TopicConfig, TopicState};
pub use access::Caller;
use eddy_protocol::security::{ForwardRequest, Operation, ResourceType};
pub use processors::{
    validate_processor_name, LOGS_RETENTION_MS, MAX_MODULE_BYTES, MAX_PARAMS_BYTES, MAX_PROCESSOR_INPUTS,
    MAX_PROCESSOR_NAME_BYTES, MAX_PROCESSOR_PARALLELISM, MAX_STATE_SCAN_BYTES,
};
pub use security::AuthContext;

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

impl From<Refusal> for Failure {
    fn from(r: Refusal) -> Self {
        Self::new(r.code, r.message)
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

/// A replica-fetch response frame as two chunks: the fields, and the stored
/// records as they are (no copy into a frame buffer).
fn replica_fetch_frame(result: Result<ReplicaFetchResponse, Failure>) -> Vec<Bytes> {
    let resp = match result {
        Ok(resp) => resp,
        Err(f) => return vec![error_frame(f.code, f.body)],
    };
    let records = resp.records.clone();
    // Encoded with empty records, the fields end with the records' u32 length (0).
    let fields = to_bytes(&ReplicaFetchResponse { records: Bytes::new(), ..resp });
    let fields = &fields[..fields.len() - 4];
    let body_len = 2 + fields.len() + 4 + records.len();
    let mut head = BytesMut::with_capacity(4 + 2 + fields.len() + 4);
    head.put_u32_le(body_len as u32);
    head.put_u16_le(0);
    head.put_slice(fields);
    head.put_u32_le(records.len() as u32);
    vec![head.freeze(), records]
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
    cluster: Arc<Cluster>,
    replicas: Arc<ReplicaManager>,
    config: HandlerConfig,
    auth: AuthContext,
    shutdown: watch::Receiver<bool>,
}

/// Requests on cluster-wide state: served by the controller, forwarded to it by other brokers.
fn served_by_controller(key: ApiKey) -> bool {
    matches!(
        key,
        ApiKey::InitProducerId
            | ApiKey::CreateTopic
            | ApiKey::DeleteTopic
            | ApiKey::CreatePartitions
            | ApiKey::JoinGroup
            | ApiKey::Heartbeat
            | ApiKey::LeaveGroup
            | ApiKey::OffsetCommit
            | ApiKey::OffsetFetch
            | ApiKey::ListGroups
            | ApiKey::DescribeGroup
            | ApiKey::DeployProcessor
            | ApiKey::ListProcessors
            | ApiKey::DescribeProcessor
            | ApiKey::DeleteProcessor
            | ApiKey::FetchProcessorModule
            | ApiKey::CommitProcessorBatch
            | ApiKey::StateScan
            | ApiKey::StopProcessor
    )
}

/// Longest an acks=all produce waits for the in-sync replicas.
const MAX_PRODUCE_TIMEOUT: Duration = Duration::from_secs(60);

impl Handlers {
    /// Handlers over `store`; deploys validate modules on `runtime`;
    /// replication and cluster duties through `replicas`.
    pub fn new(
        store: Arc<Store>,
        groups: Arc<GroupService>,
        runtime: Arc<eddy_runtime::Runtime>,
        replicas: Arc<ReplicaManager>,
        config: HandlerConfig,
        auth: AuthContext,
        shutdown: watch::Receiver<bool>,
    ) -> Self {
        let cluster = replicas.cluster().clone();
        Self { store, groups, runtime, cluster, replicas, config, auth, shutdown }
    }

    /// Handles one request frame (length prefix removed). Returns the pending
    /// response, or none for requests that get no answer (acks=0 produce).
    /// Work that must happen in request order (queueing appends) is done before
    /// this returns; the rest happens when the response future runs.
    pub async fn dispatch(self: &Arc<Self>, frame: Bytes, session: &Arc<Session>) -> Option<PendingResponse> {
        let frame_len = frame.len();
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
        if key == ApiKey::Authenticate {
            return Some(ready(frame_of(self.authenticate(payload, session).await)));
        }
        // Everything else runs as the connection's principal, once it has one.
        let principal = match session.principal().await {
            Ok(p) => p,
            Err(why) => return Some(ready(error_frame(ErrorCode::AuthenticationFailed, ErrorResponse::message(why)))),
        };
        let caller = Caller { principal, remote: session.remote() };
        if key.is_inter_broker() {
            if let Err(f) = self.inter_broker(&caller, key, None) {
                return Some(ready(error_frame(f.code, f.body)));
            }
            if key == ApiKey::Forward {
                return Some(self.serve_forward(payload, caller).await);
            }
        }
        self.dispatch_as(key, header.api_version, frame_len, payload, caller).await
    }

    /// Serves a request forwarded by another broker as the principal it names.
    async fn serve_forward(self: &Arc<Self>, payload: Bytes, broker: Caller) -> PendingResponse {
        let fail = |code, message: String| ready(error_frame(code, ErrorResponse::message(message)));
        let req: ForwardRequest = match from_bytes(payload) {
            Ok(r) => r,
            Err(e) => return fail(ErrorCode::MalformedRequest, format!("cannot decode a forwarded request: {e}")),
        };
        let Some(principal) = Principal::parse(&req.principal) else {
            return fail(ErrorCode::MalformedRequest, format!("forwarded principal {:?} is not one", req.principal));
        };
        let inner = req.frame;
        if inner.len() < 4 + 4 {
            return fail(ErrorCode::MalformedRequest, "a forwarded frame is too short".into());
        }
        let (header, payload) = match split_request(inner.slice(4..)) {
            Ok(parts) => parts,
            Err(e) => return fail(ErrorCode::MalformedRequest, e.to_string()),
        };
        let key = ApiKey::from_u16(header.api_key);
        let Some(key) = key.filter(|k| served_by_controller(*k)) else {
            return fail(ErrorCode::InvalidRequest, format!("API key {} is never forwarded", header.api_key));
        };
        let caller = Caller { principal: Arc::new(principal), remote: broker.remote };
        match self.dispatch_as(key, header.api_version, inner.len() - 4, payload, caller).await {
            Some(response) => response,
            None => fail(ErrorCode::InvalidRequest, "a forwarded request had no answer".into()),
        }
    }

    /// Dispatches a decoded request as `caller` (authenticated already).
    async fn dispatch_as(
        self: &Arc<Self>,
        key: ApiKey,
        api_version: u16,
        frame_len: usize,
        payload: Bytes,
        caller: Caller,
    ) -> Option<PendingResponse> {
        let this = self.clone();
        let remote = caller.remote;
        if served_by_controller(key) && !self.cluster.is_controller() {
            // The whole frame again, length prefix included, for the controller.
            let mut full = BytesMut::with_capacity(4 + frame_len);
            full.put_u32_le(frame_len as u32);
            full.put_u16_le(key as u16);
            full.put_u16_le(api_version);
            full.extend_from_slice(&payload);
            let full = full.freeze();
            let principal = caller.principal.to_string();
            return Some(Box::pin(async move { vec![this.cluster.forward(full, principal).await] }));
        }
        let c = caller;
        match key {
            ApiKey::Produce => self.produce(payload, &c).await,
            ApiKey::Fetch => Some(Box::pin(async move { fetch_frame(this.fetch(payload, &c).await) })),
            ApiKey::ListOffsets => Some(ready(frame_of(self.list_offsets(payload, &c)))),
            ApiKey::Metadata => Some(ready(frame_of(self.metadata(payload, &c)))),
            ApiKey::CreateTopic => Some(Box::pin(async move { vec![frame_of(this.create_topic(payload, &c).await)] })),
            ApiKey::DeleteTopic => Some(Box::pin(async move { vec![frame_of(this.delete_topic(payload, &c).await)] })),
            ApiKey::CreatePartitions => {
                Some(Box::pin(async move { vec![frame_of(this.create_partitions(payload, &c).await)] }))
            }
            ApiKey::JoinGroup => Some(Box::pin(async move {
                let r = async {
                    let req: JoinGroupRequest = from_bytes(payload)?;
                    this.check(&c, Operation::Read, Resource::group(&req.group))?;
                    for topic in &req.topics {
                        this.check(&c, Operation::Read, Resource::topic(topic))?;
                    }
                    Ok(this.groups.join(req, remote.to_string()).await?)
                };
                vec![frame_of(r.await)]
            })),
            ApiKey::Heartbeat => Some(Box::pin(async move {
                let r = async {
                    let req: HeartbeatRequest = from_bytes(payload)?;
                    this.check(&c, Operation::Read, Resource::group(&req.group))?;
                    this.groups.heartbeat(req).await?;
                    Ok(Empty)
                };
                vec![frame_of(r.await)]
            })),
            ApiKey::LeaveGroup => {
                Some(ready(frame_of(from_bytes::<LeaveGroupRequest>(payload).map_err(Failure::from).and_then(|req| {
                    self.check(&c, Operation::Read, Resource::group(&req.group))?;
                    Ok(self.groups.leave(req).map(|()| Empty)?)
                }))))
            }
            ApiKey::OffsetCommit => Some(Box::pin(async move {
                let r = async {
                    let req: OffsetCommitRequest = from_bytes(payload)?;
                    this.check(&c, Operation::Read, Resource::group(&req.group))?;
                    let topics: std::collections::BTreeSet<&str> =
                        req.offsets.iter().map(|o| o.topic.as_str()).collect();
                    for topic in topics {
                        this.check(&c, Operation::Read, Resource::topic(topic))?;
                    }
                    this.groups.commit(req).await?;
                    Ok(Empty)
                };
                vec![frame_of(r.await)]
            })),
            ApiKey::OffsetFetch => Some(ready(frame_of(
                from_bytes::<OffsetFetchRequest>(payload).map_err(Failure::from).and_then(|req| {
                    self.check(&c, Operation::Describe, Resource::group(&req.group))?;
                    let mut resp = self.groups.fetch_offsets(req);
                    resp.offsets.retain(|o| self.may(&c, Operation::Describe, Resource::topic(&o.topic)));
                    Ok(resp)
                }),
            ))),
            ApiKey::ListGroups => {
                Some(ready(frame_of(from_bytes::<ListGroupsRequest>(payload).map_err(Failure::from).map(|req| {
                    let mut resp = self.groups.list(req);
                    resp.groups.retain(|g| self.may(&c, Operation::Describe, Resource::group(&g.group)));
                    resp
                }))))
            }
            ApiKey::DescribeGroup => Some(ready(frame_of(
                from_bytes::<DescribeGroupRequest>(payload).map_err(Failure::from).and_then(|req| {
                    self.check(&c, Operation::Describe, Resource::group(&req.group))?;
                    Ok(self.groups.describe(req)?)
                }),
            ))),
            ApiKey::DeployProcessor => {
                Some(Box::pin(async move { vec![frame_of(this.deploy_processor(payload, &c).await)] }))
            }
            ApiKey::ListProcessors => Some(ready(frame_of(self.list_processors(payload, &c)))),
            ApiKey::DescribeProcessor => Some(ready(frame_of(self.describe_processor(payload, &c)))),
            ApiKey::DeleteProcessor => {
                Some(Box::pin(async move { vec![frame_of(this.delete_processor(payload, &c).await)] }))
            }
            ApiKey::FetchProcessorModule => {
                Some(Box::pin(async move { vec![frame_of(this.fetch_processor_module(payload, &c).await)] }))
            }
            ApiKey::CommitProcessorBatch => {
                Some(Box::pin(async move { vec![frame_of(this.commit_processor_batch(payload, &c).await)] }))
            }
            ApiKey::StateScan => Some(Box::pin(async move { vec![frame_of(this.state_scan(payload, &c).await)] })),
            ApiKey::StopProcessor => {
                Some(Box::pin(async move { vec![frame_of(this.stop_processor(payload, &c).await)] }))
            }
            ApiKey::InitProducerId => {
                Some(Box::pin(async move { vec![frame_of(this.init_producer_id(payload, &c).await)] }))
            }
            ApiKey::CreateUser => Some(Box::pin(async move { vec![frame_of(this.create_user(payload, &c).await)] })),
            ApiKey::DeleteUser => Some(Box::pin(async move { vec![frame_of(this.delete_user(payload, &c).await)] })),
            ApiKey::ListUsers => Some(ready(frame_of(self.list_users(payload, &c)))),
            ApiKey::CreateAcls => Some(Box::pin(async move { vec![frame_of(this.create_acls(payload, &c).await)] })),
            ApiKey::DeleteAcls => Some(Box::pin(async move { vec![frame_of(this.delete_acls(payload, &c).await)] })),
            ApiKey::ListAcls => Some(ready(frame_of(self.list_acls(payload, &c)))),
            ApiKey::ReplicaFetch => Some(Box::pin(async move {
                let r = async {
                    let req: ReplicaFetchRequest = from_bytes(payload)?;
                    this.inter_broker(&c, key, Some(req.replica_id))?;
                    Ok(this.replicas.serve_fetch(req, this.shutdown.clone()).await?)
                };
                replica_fetch_frame(r.await)
            })),
            ApiKey::RaftAppend | ApiKey::RaftVote | ApiKey::RaftSnapshot => Some(Box::pin(async move {
                let r = async {
                    let from = this.inter_broker(&c, key, None)?;
                    let msg: RaftMessage = from_bytes(payload)?;
                    Ok(this.cluster.serve_raft(key, msg.payload, from).await?)
                };
                vec![frame_of(r.await)]
            })),
            ApiKey::MetadataWrite => Some(Box::pin(async move {
                let r = async {
                    this.inter_broker(&c, key, None)?;
                    let msg: RaftMessage = from_bytes(payload)?;
                    Ok(this.cluster.serve_metadata_write(msg.payload).await?)
                };
                vec![frame_of(r.await)]
            })),
            ApiKey::BrokerHeartbeat => Some(ready(frame_of(
                from_bytes::<BrokerHeartbeatRequest>(payload).map_err(Failure::from).and_then(|req| {
                    self.inter_broker(&c, key, Some(req.broker_id))?;
                    Ok(self.cluster.serve_heartbeat(req)?)
                }),
            ))),
            // Answered before a principal exists, or by `dispatch` itself.
            ApiKey::Authenticate | ApiKey::Forward => Some(ready(error_frame(
                ErrorCode::InvalidRequest,
                ErrorResponse::message(format!("{key:?} cannot be forwarded or nested")),
            ))),
        }
    }

    fn batch_limits(&self) -> BatchLimits {
        BatchLimits {
            max_batch_bytes: self.config.max_batch_bytes as usize,
            max_record_bytes: self.config.max_record_bytes as usize,
        }
    }

    async fn produce(self: &Arc<Self>, payload: Bytes, caller: &Caller) -> Option<PendingResponse> {
        let req: ProduceRequest = match from_bytes(payload) {
            Ok(r) => r,
            Err(e) => return Some(ready(frame_of::<Empty>(Err(e.into())))),
        };
        if let Err(f) = self.check(caller, Operation::Write, Resource::topic(&req.topic)) {
            // Every partition of the request fails alike (acks=0: nobody to tell).
            if req.acks == Acks::None {
                return None;
            }
            return Some(ready(frame_of(Ok(ProduceResponse {
                partitions: req
                    .partitions
                    .iter()
                    .map(|p| PartitionProduceResponse {
                        partition: p.partition,
                        error_code: f.code as u16,
                        error_message: f.body.message.clone(),
                        base_offset: 0,
                    })
                    .collect(),
            }))));
        }
        let limits = self.batch_limits();
        let mut parts = Vec::with_capacity(req.partitions.len());
        for pb in req.partitions {
            let partition = pb.partition;
            let queued = match self.check_produce(&req.topic, partition, req.acks) {
                Err(f) => Err(f),
                Ok(epoch) => match BatchView::validate(pb.batch, limits) {
                    Ok(view) => {
                        self.store.append(&req.topic, partition, view.into_bytes(), epoch).await.map_err(Failure::from)
                    }
                    Err(e @ (BatchError::RecordTooLarge { .. } | BatchError::BatchTooLarge { .. })) => {
                        Err(Failure::new(ErrorCode::RecordTooLarge, format!("{}/{partition}: {e}", req.topic)))
                    }
                    Err(e) => Err(Failure::new(
                        ErrorCode::CorruptBatch,
                        format!("{}/{partition}: corrupt batch refused: {e}", req.topic),
                    )),
                },
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
        let this = self.clone();
        let timeout =
            Duration::from_millis(u64::from(req.timeout_ms)).clamp(Duration::from_millis(1), MAX_PRODUCE_TIMEOUT);
        Some(Box::pin(async move {
            let mut out = Vec::with_capacity(parts.len());
            for (partition, queued) in parts {
                let result = match queued {
                    Ok(durable) => match durable.await.map_err(Failure::from) {
                        Ok(appended) if req.acks == Acks::All => this
                            .replicas
                            .wait_replicated(&req.topic, partition, appended.next_offset, timeout)
                            .await
                            .map(|()| appended.base_offset)
                            .map_err(Failure::from),
                        Ok(appended) => Ok(appended.base_offset),
                        Err(f) => Err(f),
                    },
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

    /// Checks that this broker may append to `topic/partition` now (it leads
    /// it; for acks=all, the ISR is large enough) and returns the leader
    /// epoch to stamp.
    fn check_produce(&self, topic: &str, partition: u32, acks: Acks) -> Result<u32, Failure> {
        let (t, _) = self.replicas.leader_partition(topic, partition)?;
        let a = &t.config.assignments[partition as usize];
        let min = t.config.min_insync_replicas.max(1) as usize;
        if acks == Acks::All && a.isr.len() < min {
            return Err(Failure::new(
                ErrorCode::NotEnoughReplicas,
                format!(
                    "{topic}/{partition} has {} in-sync replicas ({:?}), fewer than its min-insync-replicas {min}",
                    a.isr.len(),
                    a.isr
                ),
            ));
        }
        Ok(a.leader_epoch)
    }

    async fn fetch(&self, payload: Bytes, caller: &Caller) -> Result<FetchResponse, Failure> {
        let req: FetchRequest = from_bytes(payload)?;
        self.check(caller, Operation::Read, Resource::topic(&req.topic))?;
        let max_bytes = req.max_bytes.clamp(1, MAX_FRAME_BYTES - 1024) as usize;
        let max_wait = Duration::from_millis(u64::from(req.max_wait_ms.min(MAX_FETCH_WAIT_MS)));
        let (_, partition) = self.replicas.leader_partition(&req.topic, req.partition)?;
        let mut changes = partition.subscribe_hw();
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

    fn list_offsets(&self, payload: Bytes, caller: &Caller) -> Result<ListOffsetsResponse, Failure> {
        let req: ListOffsetsRequest = from_bytes(payload)?;
        self.check(caller, Operation::Read, Resource::topic(&req.topic))?;
        let (_, p) = self.replicas.leader_partition(&req.topic, req.partition)?;
        let offset = match req.spec {
            OffsetSpec::Earliest => p.offsets().log_start,
            // Consumers can read up to the high watermark only.
            OffsetSpec::Latest => p.high_watermark(),
        };
        Ok(ListOffsetsResponse { offset })
    }

    /// The log start and high watermark of a partition, from its leader
    /// (this broker, or asked over the network).
    pub(crate) async fn partition_bounds(&self, topic: &str, partition: u32) -> Result<(u64, u64), Failure> {
        let (t, p) = self.store.partition(topic, partition)?;
        let leader = t.config.assignments.get(partition as usize).map_or(0, |a| a.leader);
        if leader == self.cluster.broker_id() {
            return Ok((p.offsets().log_start, p.high_watermark()));
        }
        let peer = self.cluster.peers().get(leader).ok_or_else(|| {
            Failure::new(ErrorCode::LeaderNotAvailable, format!("{topic}/{partition} has no leader now; retry shortly"))
        })?;
        let ask = |spec| ListOffsetsRequest { topic: topic.to_string(), partition, spec };
        let timeout = Duration::from_secs(10);
        let unavailable = |e: crate::cluster::peer::PeerError| {
            Failure::new(ErrorCode::LeaderNotAvailable, format!("cannot ask the leader of {topic}/{partition}: {e}"))
        };
        let start = peer.request(&ask(OffsetSpec::Earliest), timeout).await.map_err(unavailable)?.offset;
        let end = peer.request(&ask(OffsetSpec::Latest), timeout).await.map_err(unavailable)?.offset;
        Ok((start, end))
    }

    fn topic_metadata(&self, t: &TopicState) -> TopicMetadata {
        TopicMetadata {
            name: t.config.name.clone(),
            replication_factor: t.config.replication_factor,
            min_insync_replicas: t.config.min_insync_replicas,
            retention_ms: t.config.retention_ms,
            retention_bytes: t.config.retention_bytes,
            partitions: t
                .partitions
                .iter()
                .enumerate()
                .map(|(i, p)| {
                    let o = p.offsets();
                    let a = t.config.assignments.get(i);
                    PartitionMetadata {
                        partition: i as u32,
                        leader: a.map_or(0, |a| a.leader),
                        leader_epoch: a.map_or(0, |a| a.leader_epoch),
                        replicas: a.map(|a| a.replicas.clone()).unwrap_or_default(),
                        isr: a.map(|a| a.isr.clone()).unwrap_or_default(),
                        log_start: o.log_start,
                        log_end: o.log_end,
                        size_bytes: o.size_bytes,
                    }
                })
                .collect(),
        }
    }

    /// Lists only what the caller may describe; a named topic it may not
    /// describe is refused with AUTHORIZATION_FAILED whether it exists or
    /// not (Kafka's rule: no existence leak).
    fn metadata(&self, payload: Bytes, caller: &Caller) -> Result<MetadataResponse, Failure> {
        let req: MetadataRequest = from_bytes(payload)?;
        let catalog = self.store.catalog();
        let visible = |name: &str| self.may(caller, Operation::Describe, Resource::topic(name));
        let topics = match req.topics {
            None => catalog.values().filter(|t| visible(&t.config.name)).map(|t| self.topic_metadata(t)).collect(),
            Some(names) => names
                .iter()
                .map(|n| {
                    self.check(caller, Operation::Describe, Resource::topic(n))?;
                    catalog
                        .get(n)
                        .map(|t| self.topic_metadata(t))
                        .ok_or_else(|| Failure::from(StoreError::UnknownTopic(n.clone())))
                })
                .collect::<Result<_, _>>()?,
        };
        let mut brokers = self.cluster.brokers();
        // Clients reach this broker at its advertised address.
        if let Some(me) = brokers.iter_mut().find(|b| b.id == self.config.broker_id) {
            me.addr = self.config.advertised_addr.clone();
        }
        Ok(MetadataResponse { brokers, controller: self.cluster.controller().unwrap_or(0), topics })
    }

    async fn init_producer_id(&self, payload: Bytes, caller: &Caller) -> Result<InitProducerIdResponse, Failure> {
        let req: InitProducerIdRequest = from_bytes(payload)?;
        self.check_any(caller, Operation::Write, ResourceType::Topic)?;
        let output = self.cluster.propose(MetaCommand::AllocateProducerId).await?;
        let producer_id = output.into_producer_id()?;
        debug!(client = %req.client_id, producer_id, "producer id allocated");
        Ok(InitProducerIdResponse { producer_id })
    }

    /// Validates and creates a topic through the metadata log, its replicas
    /// spread over the live brokers.
    pub(crate) async fn create_topic_replicated(
        &self,
        name: String,
        partitions: u32,
        replication_factor: u16,
        min_insync_replicas: u16,
        retention_ms: Option<u64>,
        retention_bytes: Option<u64>,
    ) -> Result<TopicMetadata, Failure> {
        validate_topic_name(&name)?;
        if partitions == 0 || partitions > MAX_PARTITIONS {
            return Err(Failure::new(
                ErrorCode::InvalidPartitions,
                format!("partition count {partitions} is outside 1..={MAX_PARTITIONS}"),
            ));
        }
        if replication_factor == 0 {
            return Err(Failure::new(ErrorCode::InvalidReplicationFactor, "replication factor must be at least 1"));
        }
        let live: Vec<u32> = self.cluster.live_brokers().into_iter().collect();
        if usize::from(replication_factor) > live.len() {
            return Err(Failure::new(
                ErrorCode::InvalidReplicationFactor,
                format!("replication factor {replication_factor} larger than available brokers {}", live.len()),
            ));
        }
        let min_insync_replicas = if min_insync_replicas == 0 { 1 } else { min_insync_replicas };
        if min_insync_replicas > replication_factor {
            return Err(Failure::new(
                ErrorCode::InvalidRequest,
                format!(
                    "min-insync-replicas {min_insync_replicas} is larger than the replication factor                      {replication_factor}: acks=all produces could never succeed"
                ),
            ));
        }
        let assignments = plan::assign_replicas(&live, 0, partitions, replication_factor, plan::name_offset(&name));
        let config = TopicConfig {
            name: name.clone(),
            id: 0,
            partitions,
            replication_factor,
            min_insync_replicas,
            retention_ms,
            retention_bytes,
            assignments,
        };
        self.cluster.propose_everywhere(MetaCommand::CreateTopic { config }).await?;
        let topic = self.store.topic(&name)?;
        Ok(self.topic_metadata(&topic))
    }

    async fn create_topic(&self, payload: Bytes, caller: &Caller) -> Result<TopicMetadata, Failure> {
        let req: CreateTopicRequest = from_bytes(payload)?;
        if !self.may(caller, Operation::Create, Resource::cluster()) {
            self.check(caller, Operation::Create, Resource::topic(&req.name))?;
        }
        self.create_topic_replicated(
            req.name,
            req.partitions,
            req.replication_factor,
            req.min_insync_replicas,
            req.retention_ms,
            req.retention_bytes,
        )
        .await
    }

    async fn delete_topic(&self, payload: Bytes, caller: &Caller) -> Result<Empty, Failure> {
        let req: DeleteTopicRequest = from_bytes(payload)?;
        self.check(caller, Operation::Delete, Resource::topic(&req.name))?;
        self.cluster.propose_everywhere(MetaCommand::DeleteTopic { name: req.name }).await?;
        Ok(Empty)
    }

    async fn create_partitions(&self, payload: Bytes, caller: &Caller) -> Result<TopicMetadata, Failure> {
        let req: CreatePartitionsRequest = from_bytes(payload)?;
        self.check(caller, Operation::Alter, Resource::topic(&req.name))?;
        if req.count > MAX_PARTITIONS {
            return Err(Failure::new(
                ErrorCode::InvalidPartitions,
                format!("partition count {} is over the limit of {MAX_PARTITIONS}", req.count),
            ));
        }
        let topic = self.store.topic(&req.name)?;
        let current = topic.config.partitions;
        if req.count <= current {
            return Err(Failure::new(
                ErrorCode::InvalidPartitions,
                format!(
                    "topic '{}' has {current} partitions; the count can only grow (asked for {})",
                    req.name, req.count
                ),
            ));
        }
        let live: Vec<u32> = self.cluster.live_brokers().into_iter().collect();
        let rf = topic.config.replication_factor;
        if usize::from(rf) > live.len() {
            return Err(Failure::new(
                ErrorCode::InvalidReplicationFactor,
                format!("replication factor {rf} larger than available brokers {}", live.len()),
            ));
        }
        let assignments = plan::assign_replicas(&live, current, req.count - current, rf, plan::name_offset(&req.name));
        self.cluster
            .propose_everywhere(MetaCommand::AddPartitions { name: req.name.clone(), count: req.count, assignments })
            .await?;
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
    fn replica_fetch_frames_without_a_copy_encode_like_the_codec() {
        for diverging_epoch in [None, Some(7)] {
            let resp = ReplicaFetchResponse {
                high_watermark: 42,
                log_start: 3,
                diverging_epoch,
                diverging_end_offset: 9,
                records: Bytes::from_static(b"some stored batches"),
            };
            let expected = response_frame(0, &to_bytes(&resp));
            assert_eq!(replica_fetch_frame(Ok(resp)).concat(), expected.to_vec());
        }
    }

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
