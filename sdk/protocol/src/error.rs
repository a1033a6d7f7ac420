//! Stable numeric error codes and the error body sent back to clients.

use crate::wire_struct;

/// Every error a broker can answer with. The numbers are part of the wire
/// protocol and never change meaning.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u16)]
pub enum ErrorCode {
    /// Not an error.
    None = 0,
    /// An unexpected broker-side failure; the message says what.
    Internal = 1,
    /// The frame or message could not be decoded.
    MalformedRequest = 2,
    /// The API key is not one this broker knows.
    UnknownApiKey = 3,
    /// The API version is not one this broker speaks for that key.
    UnsupportedVersion = 4,
    /// A record batch failed validation (CRC mismatch, bad layout).
    CorruptBatch = 5,
    /// A record or batch is larger than the broker accepts.
    RecordTooLarge = 6,
    /// The topic does not exist.
    UnknownTopic = 7,
    /// The partition does not exist in the topic.
    UnknownPartition = 8,
    /// The requested offset is outside the log; the body carries the log start.
    OffsetOutOfRange = 9,
    /// A topic of that name exists already.
    TopicAlreadyExists = 10,
    /// The topic name is empty, too long, or has characters outside `[A-Za-z0-9._-]`.
    InvalidTopicName = 11,
    /// A partition count is zero, too large, or would shrink the topic.
    InvalidPartitions = 12,
    /// The replication factor is zero or larger than the live brokers.
    InvalidReplicationFactor = 13,
    /// The broker's storage failed; nothing from this request was acknowledged.
    StorageError = 14,
    /// The broker is shutting down; retry against another broker or later.
    ShuttingDown = 15,
    /// A request field has an invalid value; the message says which.
    InvalidRequest = 16,
    /// Fewer in-sync replicas than the topic's min-insync-replicas.
    NotEnoughReplicas = 17,
    /// The request did not finish in time.
    Timeout = 18,
    /// The group is rebalancing: commit what you processed, then join again.
    RebalanceInProgress = 19,
    /// The member id is not (or no longer) in the group: join again as a new member.
    UnknownMember = 20,
    /// The generation is not the group's current one: the caller's assignment is stale.
    IllegalGeneration = 21,
    /// The member does not own the partition it tried to commit for.
    NotPartitionOwner = 22,
    /// No group of that name has members or committed offsets.
    UnknownGroup = 23,
    /// A group id is empty or too long, or a timeout is out of range.
    InvalidGroup = 24,
    /// No processor of that name (or version) is deployed.
    UnknownProcessor = 25,
    /// A processor deployment is invalid: bad name, module that is not a
    /// component of the processor world, missing topic; the message says which.
    InvalidProcessor = 26,
    /// This broker is not the leader of the partition: refresh metadata and
    /// send to the leader it names.
    NotLeader = 27,
    /// The partition has no leader right now (an election is under way, or
    /// every in-sync replica is down): retry after a short wait.
    LeaderNotAvailable = 28,
    /// The cluster's metadata quorum has no controller this broker can reach
    /// (an election is under way): retry after a short wait.
    NotController = 29,
    /// A producer batch's sequence number is not the next one the partition
    /// expects: an earlier batch is missing. The producer resends in order.
    OutOfOrderSequence = 30,
    /// A replica's leader epoch is older (or newer) than the partition's:
    /// it must refresh its view of the partition before fetching again.
    FencedLeaderEpoch = 31,
    /// A request that only brokers may send came from a connection that did
    /// not prove a broker identity, or names another broker than the one it
    /// proved (a `replica_id`, `broker_id` or Raft node id that is not its own).
    ClusterAuthorizationFailed = 32,
    /// The connection has not authenticated (or its authentication failed):
    /// wrong password, unknown user, replayed or malformed exchange.
    AuthenticationFailed = 33,
    /// The authenticated principal may not perform the operation on the
    /// resource; the message names both.
    AuthorizationFailed = 34,
    /// No user of that name exists.
    UnknownUser = 35,
    /// A user of that name exists already.
    UserAlreadyExists = 36,
}

impl ErrorCode {
    /// The code for a wire value; unknown values map to `Internal`.
    pub fn from_u16(v: u16) -> Self {
        use ErrorCode::*;
        match v {
            0 => None,
            2 => MalformedRequest,
            3 => UnknownApiKey,
            4 => UnsupportedVersion,
            5 => CorruptBatch,
            6 => RecordTooLarge,
            7 => UnknownTopic,
            8 => UnknownPartition,
            9 => OffsetOutOfRange,
            10 => TopicAlreadyExists,
            11 => InvalidTopicName,
            12 => InvalidPartitions,
            13 => InvalidReplicationFactor,
            14 => StorageError,
            15 => ShuttingDown,
            16 => InvalidRequest,
            17 => NotEnoughReplicas,
            18 => Timeout,
            19 => RebalanceInProgress,
            20 => UnknownMember,
            21 => IllegalGeneration,
            22 => NotPartitionOwner,
            23 => UnknownGroup,
            24 => InvalidGroup,
            25 => UnknownProcessor,
            26 => InvalidProcessor,
            27 => NotLeader,
            28 => LeaderNotAvailable,
            29 => NotController,
            30 => OutOfOrderSequence,
            31 => FencedLeaderEpoch,
            32 => ClusterAuthorizationFailed,
            33 => AuthenticationFailed,
            34 => AuthorizationFailed,
            35 => UnknownUser,
            36 => UserAlreadyExists,
            _ => Internal,
        }
    }

    /// Whether a client may retry the same request and expect it to succeed.
    pub fn is_retriable(self) -> bool {
        matches!(
            self,
            Self::ShuttingDown
                | Self::Timeout
                | Self::NotEnoughReplicas
                | Self::StorageError
                | Self::NotLeader
                | Self::LeaderNotAvailable
                | Self::NotController
                | Self::OutOfOrderSequence
                | Self::FencedLeaderEpoch
        )
    }

    /// A short stable name, e.g. `UNKNOWN_TOPIC`.
    pub fn name(self) -> &'static str {
        use ErrorCode::*;
        match self {
            None => "NONE",
            Internal => "INTERNAL",
            MalformedRequest => "MALFORMED_REQUEST",
            UnknownApiKey => "UNKNOWN_API_KEY",
            UnsupportedVersion => "UNSUPPORTED_VERSION",
            CorruptBatch => "CORRUPT_BATCH",
            RecordTooLarge => "RECORD_TOO_LARGE",
            UnknownTopic => "UNKNOWN_TOPIC",
            UnknownPartition => "UNKNOWN_PARTITION",
            OffsetOutOfRange => "OFFSET_OUT_OF_RANGE",
            TopicAlreadyExists => "TOPIC_ALREADY_EXISTS",
            InvalidTopicName => "INVALID_TOPIC_NAME",
            InvalidPartitions => "INVALID_PARTITIONS",
            InvalidReplicationFactor => "INVALID_REPLICATION_FACTOR",
            StorageError => "STORAGE_ERROR",
            ShuttingDown => "SHUTTING_DOWN",
            InvalidRequest => "INVALID_REQUEST",
            NotEnoughReplicas => "NOT_ENOUGH_REPLICAS",
            Timeout => "TIMEOUT",
            RebalanceInProgress => "REBALANCE_IN_PROGRESS",
            UnknownMember => "UNKNOWN_MEMBER",
            IllegalGeneration => "ILLEGAL_GENERATION",
            NotPartitionOwner => "NOT_PARTITION_OWNER",
            UnknownGroup => "UNKNOWN_GROUP",
            InvalidGroup => "INVALID_GROUP",
            UnknownProcessor => "UNKNOWN_PROCESSOR",
            InvalidProcessor => "INVALID_PROCESSOR",
            NotLeader => "NOT_LEADER",
            LeaderNotAvailable => "LEADER_NOT_AVAILABLE",
            NotController => "NOT_CONTROLLER",
            OutOfOrderSequence => "OUT_OF_ORDER_SEQUENCE",
            FencedLeaderEpoch => "FENCED_LEADER_EPOCH",
            ClusterAuthorizationFailed => "CLUSTER_AUTHORIZATION_FAILED",
            AuthenticationFailed => "AUTHENTICATION_FAILED",
            AuthorizationFailed => "AUTHORIZATION_FAILED",
            UnknownUser => "UNKNOWN_USER",
            UserAlreadyExists => "USER_ALREADY_EXISTS",
        }
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

wire_struct! {
    /// The body of a failed response (or of a failed part of a response).
    pub struct ErrorResponse {
        /// What went wrong, for people.
        pub message: String,
        /// For `OffsetOutOfRange`: the partition's current log start.
        pub log_start: Option<u64>,
        /// For `OffsetOutOfRange`: the partition's current log end.
        pub log_end: Option<u64>,
    }
}

impl ErrorResponse {
    /// An error body with only a message.
    pub fn message(message: impl Into<String>) -> Self {
        Self { message: message.into(), log_start: None, log_end: None }
    }
}
