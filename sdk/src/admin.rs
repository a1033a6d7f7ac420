//! Topic administration: create, list, describe, grow and delete topics, and
//! look up partition offsets; consumer group listing, description and committed
//! offsets. Each call is one request on the shared [`Client`]: to any broker
//! (with the client's failover), except offset lookups, which go to the
//! partition's leader.

use eddy_protocol::messages::{
    CommittedOffset, CreatePartitionsRequest, CreateTopicRequest, DeleteTopicRequest, DescribeGroupRequest,
    GroupDescription, GroupSummary, ListGroupsRequest, ListOffsetsRequest, MetadataRequest, MetadataResponse,
    OffsetFetchRequest, OffsetSpec, TopicMetadata,
};
use eddy_protocol::ErrorCode;

use crate::client::Client;
use crate::error::ClientError;

/// The settings of a topic to create.
#[derive(Debug, Clone)]
pub struct NewTopic {
    /// Topic name (`[A-Za-z0-9._-]`, at most 249 bytes; checked by the broker).
    pub name: String,
    /// Number of partitions (at least 1).
    pub partitions: u32,
    /// Copies of each partition (at most the number of live brokers).
    pub replication_factor: u16,
    /// acks=all produces fail with `NotEnoughReplicas` while fewer replicas
    /// are in sync; 0 takes the broker's default (1).
    pub min_insync_replicas: u16,
    /// Delete batches older than this; none keeps them forever.
    pub retention_ms: Option<u64>,
    /// Delete the oldest batches while a partition holds more; none means no limit.
    pub retention_bytes: Option<u64>,
}

impl NewTopic {
    /// A topic with `partitions` partitions, replication factor 1 and no retention limit.
    pub fn new(name: impl Into<String>, partitions: u32) -> Self {
        Self {
            name: name.into(),
            partitions,
            replication_factor: 1,
            min_insync_replicas: 0,
            retention_ms: None,
            retention_bytes: None,
        }
    }

    /// Sets the replication factor.
    pub fn replication_factor(mut self, replication_factor: u16) -> Self {
        self.replication_factor = replication_factor;
        self
    }

    /// Sets the minimum number of in-sync replicas for acks=all produces.
    pub fn min_insync_replicas(mut self, min_insync_replicas: u16) -> Self {
        self.min_insync_replicas = min_insync_replicas;
        self
    }

    /// Sets the retention time in milliseconds.
    pub fn retention_ms(mut self, retention_ms: u64) -> Self {
        self.retention_ms = Some(retention_ms);
        self
    }

    /// Sets the retention size per partition in bytes.
    pub fn retention_bytes(mut self, retention_bytes: u64) -> Self {
        self.retention_bytes = Some(retention_bytes);
        self
    }
}

/// Administrative operations on topics. Cheap to create from a [`Client`].
#[derive(Debug, Clone)]
pub struct Admin {
    client: Client,
}

impl Admin {
    /// An admin handle sharing `client`'s connection.
    pub fn new(client: Client) -> Self {
        Self { client }
    }

    /// Creates a topic and returns its metadata as the broker created it.
    /// Fails with `TopicAlreadyExists`, `InvalidTopicName`, `InvalidPartitions`
    /// or `InvalidReplicationFactor` broker errors.
    pub async fn create_topic(&self, topic: NewTopic) -> Result<TopicMetadata, ClientError> {
        let req = CreateTopicRequest {
            name: topic.name,
            partitions: topic.partitions,
            replication_factor: topic.replication_factor,
            min_insync_replicas: topic.min_insync_replicas,
            retention_ms: topic.retention_ms,
            retention_bytes: topic.retention_bytes,
        };
        self.client.request(&req).await
    }

    /// Every topic of the cluster, as the broker lists them.
    pub async fn list_topics(&self) -> Result<Vec<TopicMetadata>, ClientError> {
        Ok(self.metadata().await?.topics)
    }

    /// One topic's metadata; an `UnknownTopic` broker error if it does not exist.
    pub async fn describe_topic(&self, name: &str) -> Result<TopicMetadata, ClientError> {
        let resp = self.client.request(&MetadataRequest { topics: Some(vec![name.to_string()]) }).await?;
        find_topic(resp, name)
    }

    /// Brokers and all topics.
    pub async fn metadata(&self) -> Result<MetadataResponse, ClientError> {
        self.client.request(&MetadataRequest { topics: None }).await
    }

    /// Grows topic `name` to `count` partitions and returns its new metadata.
    /// Shrinking is refused by the broker (`InvalidPartitions`).
    pub async fn create_partitions(&self, name: &str, count: u32) -> Result<TopicMetadata, ClientError> {
        self.client.request(&CreatePartitionsRequest { name: name.to_string(), count }).await
    }

    /// Deletes topic `name` and all its data.
    pub async fn delete_topic(&self, name: &str) -> Result<(), ClientError> {
        self.client.request(&DeleteTopicRequest { name: name.to_string() }).await?;
        Ok(())
    }

    /// The earliest (log start) or latest (log end) offset of a partition,
    /// asked of the partition's leader (following leader changes).
    pub async fn list_offset(&self, topic: &str, partition: u32, spec: OffsetSpec) -> Result<u64, ClientError> {
        let req = ListOffsetsRequest { topic: topic.to_string(), partition, spec };
        Ok(self.client.request_to_leader(topic, partition, &req).await?.offset)
    }

    /// Consumer groups that have members or committed offsets (those whose
    /// name starts with `prefix`, if given), sorted by name.
    pub async fn list_groups(&self, prefix: Option<&str>) -> Result<Vec<GroupSummary>, ClientError> {
        Ok(self.client.request(&ListGroupsRequest { prefix: prefix.map(str::to_string) }).await?.groups)
    }

    /// A group's state, generation, members and per-partition committed offset
    /// and log end; an `UnknownGroup` broker error if it has neither members
    /// nor commits.
    pub async fn describe_group(&self, group: &str) -> Result<GroupDescription, ClientError> {
        self.client.request(&DescribeGroupRequest { group: group.to_string() }).await
    }

    /// A group's committed offsets (of `topics`, or of every topic); partitions
    /// without a commit are absent.
    pub async fn committed_offsets(
        &self,
        group: &str,
        topics: Option<&[String]>,
    ) -> Result<Vec<CommittedOffset>, ClientError> {
        let req = OffsetFetchRequest { group: group.to_string(), topics: topics.map(<[String]>::to_vec) };
        Ok(self.client.request(&req).await?.offsets)
    }
}

/// Picks topic `name` out of a metadata response.
pub(crate) fn find_topic(resp: MetadataResponse, name: &str) -> Result<TopicMetadata, ClientError> {
    resp.topics
        .into_iter()
        .find(|t| t.name == name)
        .ok_or_else(|| ClientError::broker(ErrorCode::UnknownTopic, format!("topic {name} does not exist")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_topic_defaults_and_builders() {
        let t = NewTopic::new("t", 3);
        assert_eq!((t.partitions, t.replication_factor, t.retention_ms, t.retention_bytes), (3, 1, None, None));
        let t = t.replication_factor(3).retention_ms(1000).retention_bytes(1 << 20);
        assert_eq!((t.replication_factor, t.retention_ms, t.retention_bytes), (3, Some(1000), Some(1 << 20)));
    }

    #[test]
    fn missing_topic_in_metadata_is_unknown_topic() {
        let resp = MetadataResponse { brokers: vec![], controller: 0, topics: vec![] };
        let err = find_topic(resp, "nope").unwrap_err();
        assert_eq!(err.code(), Some(ErrorCode::UnknownTopic));
    }
}
