//! Request and response bodies, one pair per [`ApiKey`]. Field order is wire order.

use bytes::Bytes;

use crate::codec::{DecodeError, Decoder, Encoder, Wire};
use crate::frame::ApiKey;
use crate::wire_struct;

/// A request body and the response it gets.
pub trait Request: Wire {
    /// The API key this body is sent under.
    const KEY: ApiKey;
    /// The body of a successful response.
    type Response: Wire;
}

/// How many replicas must have a produced batch before the broker answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Acks {
    /// The broker sends no response at all; the producer learns of nothing.
    None,
    /// The partition leader has the batch on disk (under the durability policy).
    Leader,
    /// Every in-sync replica has the batch.
    All,
}

impl Wire for Acks {
    fn encode(&self, enc: &mut Encoder) {
        enc.put(&match self {
            Acks::None => 0u8,
            Acks::Leader => 1u8,
            Acks::All => 2u8,
        });
    }
    fn decode(dec: &mut Decoder) -> Result<Self, DecodeError> {
        match dec.get::<u8>()? {
            0 => Ok(Acks::None),
            1 => Ok(Acks::Leader),
            2 => Ok(Acks::All),
            v => Err(DecodeError::InvalidValue { what: "acks", value: v.into() }),
        }
    }
}

/// Which end of a partition's log an offset query asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OffsetSpec {
    /// The log start: the first offset still stored.
    Earliest,
    /// The log end: the offset the next record will get.
    Latest,
}

impl Wire for OffsetSpec {
    fn encode(&self, enc: &mut Encoder) {
        enc.put(&match self {
            OffsetSpec::Earliest => 0u8,
            OffsetSpec::Latest => 1u8,
        });
    }
    fn decode(dec: &mut Decoder) -> Result<Self, DecodeError> {
        match dec.get::<u8>()? {
            0 => Ok(OffsetSpec::Earliest),
            1 => Ok(OffsetSpec::Latest),
            v => Err(DecodeError::InvalidValue { what: "offset spec", value: v.into() }),
        }
    }
}

/// An empty body.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Empty;

impl Wire for Empty {
    fn encode(&self, _enc: &mut Encoder) {}
    fn decode(_dec: &mut Decoder) -> Result<Self, DecodeError> {
        Ok(Empty)
    }
}

wire_struct! {
    /// One partition's batch inside a produce request.
    pub struct PartitionBatch {
        pub partition: u32,
        /// One record batch in the layout of [`crate::batch`].
        pub batch: Bytes,
    }
}

wire_struct! {
    /// Appends batches to partitions of one topic.
    pub struct ProduceRequest {
        pub topic: String,
        pub acks: Acks,
        /// How long the broker may wait for replicas (acks=all) before answering Timeout.
        pub timeout_ms: u32,
        pub partitions: Vec<PartitionBatch>,
    }
}

wire_struct! {
    /// The outcome for one partition of a produce request.
    pub struct PartitionProduceResponse {
        pub partition: u32,
        /// 0 on success, else an [`crate::ErrorCode`].
        pub error_code: u16,
        /// Empty on success.
        pub error_message: String,
        /// Offset given to the batch's first record (valid on success).
        pub base_offset: u64,
    }
}

wire_struct! {
    /// Per-partition outcomes, in request order.
    pub struct ProduceResponse {
        pub partitions: Vec<PartitionProduceResponse>,
    }
}

impl Request for ProduceRequest {
    const KEY: ApiKey = ApiKey::Produce;
    type Response = ProduceResponse;
}

wire_struct! {
    /// Reads batches from one partition starting at `offset`.
    pub struct FetchRequest {
        pub topic: String,
        pub partition: u32,
        pub offset: u64,
        /// Stop adding batches past this many bytes (at least one batch is returned).
        pub max_bytes: u32,
        /// Wait until at least this many bytes are available...
        pub min_bytes: u32,
        /// ...or this long has passed (capped at MAX_FETCH_WAIT_MS).
        pub max_wait_ms: u32,
    }
}

wire_struct! {
    /// Whole batches; the first may start before the requested offset.
    pub struct FetchResponse {
        /// Offset after the last record a consumer may read.
        pub high_watermark: u64,
        /// First offset still stored.
        pub log_start: u64,
        /// Zero or more batches back to back.
        pub records: Bytes,
    }
}

impl Request for FetchRequest {
    const KEY: ApiKey = ApiKey::Fetch;
    type Response = FetchResponse;
}

wire_struct! {
    /// Asks for the earliest or latest offset of a partition.
    pub struct ListOffsetsRequest {
        pub topic: String,
        pub partition: u32,
        pub spec: OffsetSpec,
    }
}

wire_struct! {
    /// The offset asked for.
    pub struct ListOffsetsResponse {
        pub offset: u64,
    }
}

impl Request for ListOffsetsRequest {
    const KEY: ApiKey = ApiKey::ListOffsets;
    type Response = ListOffsetsResponse;
}

wire_struct! {
    /// A broker of the cluster.
    pub struct BrokerInfo {
        pub id: u32,
        /// `host:port` clients connect to.
        pub addr: String,
    }
}

wire_struct! {
    /// State of one partition.
    pub struct PartitionMetadata {
        pub partition: u32,
        /// Broker id of the leader; 0 while the partition has none.
        pub leader: u32,
        /// Bumped by the controller every time the leader changes.
        pub leader_epoch: u32,
        /// Brokers holding a copy, the preferred leader first.
        pub replicas: Vec<u32>,
        /// In-sync replicas: those that have every record up to the high watermark.
        pub isr: Vec<u32>,
        pub log_start: u64,
        pub log_end: u64,
        /// Bytes of stored batches.
        pub size_bytes: u64,
    }
}

wire_struct! {
    /// Configuration and state of one topic.
    pub struct TopicMetadata {
        pub name: String,
        pub replication_factor: u16,
        /// acks=all produce requests fail with NOT_ENOUGH_REPLICAS while a
        /// partition has fewer in-sync replicas than this.
        pub min_insync_replicas: u16,
        /// Records older than this are deleted; none means forever.
        pub retention_ms: Option<u64>,
        /// Oldest batches are deleted while a partition holds more; none means no limit.
        pub retention_bytes: Option<u64>,
        pub partitions: Vec<PartitionMetadata>,
    }
}

wire_struct! {
    /// Describes the named topics, or all topics when `topics` is none.
    pub struct MetadataRequest {
        pub topics: Option<Vec<String>>,
    }
}

wire_struct! {
    /// Brokers and topics.
    pub struct MetadataResponse {
        /// Every broker of the cluster, live or not.
        pub brokers: Vec<BrokerInfo>,
        /// Broker id of the controller (the metadata quorum's leader); 0 if none now.
        pub controller: u32,
        pub topics: Vec<TopicMetadata>,
    }
}

impl Request for MetadataRequest {
    const KEY: ApiKey = ApiKey::Metadata;
    type Response = MetadataResponse;
}

wire_struct! {
    /// Creates a topic.
    pub struct CreateTopicRequest {
        pub name: String,
        pub partitions: u32,
        pub replication_factor: u16,
        /// 0 picks the default (1, as in Kafka); at most the replication factor.
        pub min_insync_replicas: u16,
        pub retention_ms: Option<u64>,
        pub retention_bytes: Option<u64>,
    }
}

impl Request for CreateTopicRequest {
    const KEY: ApiKey = ApiKey::CreateTopic;
    type Response = TopicMetadata;
}

wire_struct! {
    /// Deletes a topic and all its data.
    pub struct DeleteTopicRequest {
        pub name: String,
    }
}

impl Request for DeleteTopicRequest {
    const KEY: ApiKey = ApiKey::DeleteTopic;
    type Response = Empty;
}

wire_struct! {
    /// Grows a topic to `count` partitions (never shrinks).
    pub struct CreatePartitionsRequest {
        pub name: String,
        pub count: u32,
    }
}

impl Request for CreatePartitionsRequest {
    const KEY: ApiKey = ApiKey::CreatePartitions;
    type Response = TopicMetadata;
}

/// How a group's partitions are spread over its members.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum AssignmentStrategy {
    /// Keep each member's partitions across rebalances where the fair share allows;
    /// move as few partitions as possible.
    #[default]
    Sticky,
    /// Per topic, contiguous ranges of partitions to members sorted by id.
    Range,
    /// All partitions of all topics dealt to members in turn.
    RoundRobin,
}

impl AssignmentStrategy {
    /// The strategy's name as shown by the CLI.
    pub fn name(self) -> &'static str {
        match self {
            AssignmentStrategy::Sticky => "sticky",
            AssignmentStrategy::Range => "range",
            AssignmentStrategy::RoundRobin => "roundrobin",
        }
    }
}

impl Wire for AssignmentStrategy {
    fn encode(&self, enc: &mut Encoder) {
        enc.put(&match self {
            AssignmentStrategy::Sticky => 0u8,
            AssignmentStrategy::Range => 1u8,
            AssignmentStrategy::RoundRobin => 2u8,
        });
    }
    fn decode(dec: &mut Decoder) -> Result<Self, DecodeError> {
        match dec.get::<u8>()? {
            0 => Ok(AssignmentStrategy::Sticky),
            1 => Ok(AssignmentStrategy::Range),
            2 => Ok(AssignmentStrategy::RoundRobin),
            v => Err(DecodeError::InvalidValue { what: "assignment strategy", value: v.into() }),
        }
    }
}

wire_struct! {
    /// Partitions of one topic.
    pub struct TopicPartitions {
        pub topic: String,
        pub partitions: Vec<u32>,
    }
}

wire_struct! {
    /// Joins (or rejoins) a consumer group. The broker holds the request until
    /// the rebalance it starts or joins has completed, then answers with the
    /// member's id, the new generation and the member's partitions.
    pub struct JoinGroupRequest {
        pub group: String,
        /// Empty for a new member; the id from an earlier join to rejoin.
        pub member_id: String,
        /// Free text shown by `eddy group describe`.
        pub client_id: String,
        /// Topics the member subscribes to.
        pub topics: Vec<String>,
        pub strategy: AssignmentStrategy,
        /// The member is removed when no heartbeat arrives for this long.
        pub session_timeout_ms: u32,
        /// How long a rebalance waits for this member to rejoin.
        pub rebalance_timeout_ms: u32,
    }
}

wire_struct! {
    /// The member's place in the new generation.
    pub struct JoinGroupResponse {
        pub member_id: String,
        pub generation: u32,
        /// The strategy the group used.
        pub strategy: AssignmentStrategy,
        /// This member's partitions for this generation (empty: idle member).
        pub assignment: Vec<TopicPartitions>,
        /// Members in the generation.
        pub member_count: u32,
    }
}

impl Request for JoinGroupRequest {
    const KEY: ApiKey = ApiKey::JoinGroup;
    type Response = JoinGroupResponse;
}

wire_struct! {
    /// Keeps a member alive. Answered when `max_wait_ms` has passed, or at once
    /// with REBALANCE_IN_PROGRESS when a rebalance starts (a long poll, so that
    /// members learn of rebalances without delay).
    pub struct HeartbeatRequest {
        pub group: String,
        pub member_id: String,
        pub generation: u32,
        pub max_wait_ms: u32,
    }
}

impl Request for HeartbeatRequest {
    const KEY: ApiKey = ApiKey::Heartbeat;
    type Response = Empty;
}

wire_struct! {
    /// Leaves a group at once (its partitions are reassigned without waiting for the session timeout).
    pub struct LeaveGroupRequest {
        pub group: String,
        pub member_id: String,
    }
}

impl Request for LeaveGroupRequest {
    const KEY: ApiKey = ApiKey::LeaveGroup;
    type Response = Empty;
}

wire_struct! {
    /// One committed position: the offset of the next record to consume.
    pub struct CommittedOffset {
        pub topic: String,
        pub partition: u32,
        pub offset: u64,
        pub metadata: String,
    }
}

wire_struct! {
    /// Commits positions durably. A member commits with its id and generation
    /// and only for partitions it owns in that generation; with an empty member
    /// id and generation 0 anyone may commit for a group that has no members
    /// (tools that reset offsets). All entries are checked before any is written.
    pub struct OffsetCommitRequest {
        pub group: String,
        pub member_id: String,
        pub generation: u32,
        pub offsets: Vec<CommittedOffset>,
    }
}

impl Request for OffsetCommitRequest {
    const KEY: ApiKey = ApiKey::OffsetCommit;
    type Response = Empty;
}

wire_struct! {
    /// Reads committed positions of a group (of the given topics, or all).
    pub struct OffsetFetchRequest {
        pub group: String,
        pub topics: Option<Vec<String>>,
    }
}

wire_struct! {
    /// Committed positions; partitions without a commit are absent.
    pub struct OffsetFetchResponse {
        pub offsets: Vec<CommittedOffset>,
    }
}

impl Request for OffsetFetchRequest {
    const KEY: ApiKey = ApiKey::OffsetFetch;
    type Response = OffsetFetchResponse;
}

wire_struct! {
    /// One group in a listing.
    pub struct GroupSummary {
        pub group: String,
        /// `Empty`, `PreparingRebalance` or `Stable`.
        pub state: String,
        pub generation: u32,
        pub member_count: u32,
    }
}

wire_struct! {
    /// Lists groups that have members or committed offsets.
    pub struct ListGroupsRequest {
        pub prefix: Option<String>,
    }
}

wire_struct! {
    /// The groups, sorted by name.
    pub struct ListGroupsResponse {
        pub groups: Vec<GroupSummary>,
    }
}

impl Request for ListGroupsRequest {
    const KEY: ApiKey = ApiKey::ListGroups;
    type Response = ListGroupsResponse;
}

wire_struct! {
    /// Describes one group.
    pub struct DescribeGroupRequest {
        pub group: String,
    }
}

wire_struct! {
    /// One member of a group.
    pub struct MemberDescription {
        pub member_id: String,
        pub client_id: String,
        /// Remote address of the member's connection.
        pub host: String,
        pub assignment: Vec<TopicPartitions>,
    }
}

wire_struct! {
    /// One partition a group consumes or has committed for.
    pub struct GroupPartition {
        pub topic: String,
        pub partition: u32,
        /// Member that owns it in the current generation.
        pub owner: Option<String>,
        pub committed: Option<u64>,
        /// Current log end; lag = log_end - committed.
        pub log_end: u64,
    }
}

wire_struct! {
    /// State, generation, members and per-partition positions.
    pub struct GroupDescription {
        pub group: String,
        pub state: String,
        pub generation: u32,
        pub strategy: AssignmentStrategy,
        pub members: Vec<MemberDescription>,
        pub partitions: Vec<GroupPartition>,
    }
}

impl Request for DescribeGroupRequest {
    const KEY: ApiKey = ApiKey::DescribeGroup;
    type Response = GroupDescription;
}

wire_struct! {
    /// Asks the cluster for a new idempotent producer id.
    pub struct InitProducerIdRequest {
        /// Free text for logs.
        pub client_id: String,
    }
}

wire_struct! {
    /// A producer id no other producer of the cluster has had.
    pub struct InitProducerIdResponse {
        pub producer_id: u64,
    }
}

impl Request for InitProducerIdRequest {
    const KEY: ApiKey = ApiKey::InitProducerId;
    type Response = InitProducerIdResponse;
}

// ---- Between brokers (API keys 40-49). Clients never send these. ----

wire_struct! {
    /// A follower's fetch from the partition leader. The leader checks that
    /// the follower's log agrees with its own at `fetch_offset` (by the
    /// epoch of the follower's last batch) before sending records.
    pub struct ReplicaFetchRequest {
        pub topic: String,
        pub partition: u32,
        /// The fetching broker.
        pub replica_id: u32,
        /// The leader epoch the follower knows; the leader refuses others
        /// with FENCED_LEADER_EPOCH.
        pub leader_epoch: u32,
        /// The follower's log end: everything below it is on the follower.
        pub fetch_offset: u64,
        /// Leader epoch of the follower's last batch (0 for an empty log).
        pub last_fetched_epoch: u32,
        pub max_bytes: u32,
        pub max_wait_ms: u32,
    }
}

wire_struct! {
    /// Records for a follower, or where its log diverged from the leader's.
    pub struct ReplicaFetchResponse {
        /// The leader's high watermark.
        pub high_watermark: u64,
        pub log_start: u64,
        /// Set when the follower's log does not agree with the leader's: the
        /// follower truncates to `diverging_end_offset` (its own end for that
        /// epoch, if lower) and fetches again. No records come with it.
        pub diverging_epoch: Option<u32>,
        pub diverging_end_offset: u64,
        /// Whole batches, as stored by the leader (offsets and epochs stamped).
        pub records: Bytes,
    }
}

impl Request for ReplicaFetchRequest {
    const KEY: ApiKey = ApiKey::ReplicaFetch;
    type Response = ReplicaFetchResponse;
}

wire_struct! {
    /// An opaque message of the metadata quorum (openraft's append-entries,
    /// vote and snapshot requests and responses, encoded by the broker).
    pub struct RaftMessage {
        pub payload: Bytes,
    }
}

/// A Raft append-entries request (payload: encoded by the broker).
#[derive(Debug, Clone, PartialEq)]
pub struct RaftAppendRequest(pub RaftMessage);
/// A Raft vote request.
#[derive(Debug, Clone, PartialEq)]
pub struct RaftVoteRequest(pub RaftMessage);
/// A Raft install-snapshot request (one chunk).
#[derive(Debug, Clone, PartialEq)]
pub struct RaftSnapshotRequest(pub RaftMessage);
/// A command for the metadata log, sent to the controller by a broker that
/// is not the controller itself.
#[derive(Debug, Clone, PartialEq)]
pub struct MetadataWriteRequest(pub RaftMessage);

macro_rules! raft_request {
    ($t:ident, $key:ident) => {
        impl Wire for $t {
            fn encode(&self, enc: &mut Encoder) {
                self.0.encode(enc);
            }
            fn decode(dec: &mut Decoder) -> Result<Self, DecodeError> {
                Ok($t(RaftMessage::decode(dec)?))
            }
        }
        impl Request for $t {
            const KEY: ApiKey = ApiKey::$key;
            type Response = RaftMessage;
        }
    };
}
raft_request!(RaftAppendRequest, RaftAppend);
raft_request!(RaftVoteRequest, RaftVote);
raft_request!(RaftSnapshotRequest, RaftSnapshot);
raft_request!(MetadataWriteRequest, MetadataWrite);

wire_struct! {
    /// A broker's periodic sign of life to the controller.
    pub struct BrokerHeartbeatRequest {
        pub broker_id: u32,
        /// Index of the last metadata-log entry the broker has applied.
        pub applied_index: u64,
    }
}

wire_struct! {
    /// The controller's answer: how far the metadata log is applied on the
    /// controller. A starting broker serves as a leader only once it has
    /// applied at least this much (it is "caught up").
    pub struct BrokerHeartbeatResponse {
        pub controller_applied_index: u64,
    }
}

impl Request for BrokerHeartbeatRequest {
    const KEY: ApiKey = ApiKey::BrokerHeartbeat;
    type Response = BrokerHeartbeatResponse;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::{from_bytes, to_bytes};

    #[test]
    fn produce_request_round_trips() {
        let req = ProduceRequest {
            topic: "t".into(),
            acks: Acks::All,
            timeout_ms: 5,
            partitions: vec![PartitionBatch { partition: 3, batch: Bytes::from_static(b"batch") }],
        };
        assert_eq!(from_bytes::<ProduceRequest>(to_bytes(&req)).unwrap(), req);
    }

    #[test]
    fn bad_enum_values_are_refused() {
        let mut enc = Encoder::default();
        enc.put(&"t".to_string()).put(&9u8);
        assert!(from_bytes::<ProduceRequest>(enc.finish().freeze()).is_err());
    }
}
