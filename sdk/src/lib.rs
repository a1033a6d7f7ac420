//! eddy-sdk: the async Rust client of Eddy, over QUIC (quinn + rustls, ALPN `eddy/1`).
//!
//! * [`client`]: [`Client`], a handle to the cluster: one shared QUIC
//!   endpoint, a connection per broker, TLS verification against a CA file,
//!   one stream per request, transparent reconnection, a metadata cache that
//!   routes partition requests to their leader ([`Broker`]) and failover of
//!   control-plane requests between brokers; [`ClientConfig`].
//! * [`admin`]: [`Admin`], topic creation, listing, description, growth,
//!   deletion and offset lookup.
//! * [`producer`]: [`Producer`], batching per partition with linger, Kafka's
//!   key partitioner, sticky partitioning of keyless records, pipelined
//!   produce requests on one ordered stream.
//! * [`consumer`]: [`Consumer`], per-partition long-poll fetching with
//!   prefetch, zero-copy record decoding, offset reset policies.
//! * [`group`]: [`GroupConsumer`], a member of a consumer group: join,
//!   heartbeats, rebalances, committed offsets, at-least-once by default.
//! * [`error`]: [`ClientError`], the one error type of every call.
//!
//! The wire types live in [`protocol`] (the `eddy-protocol` crate).
//!
//! ```no_run
//! use eddy_sdk::{Admin, Client, ClientConfig, NewTopic, Producer, ProducerConfig, ProducerRecord};
//! # async fn demo() -> Result<(), eddy_sdk::ClientError> {
//! let client = Client::connect(ClientConfig::new("127.0.0.1:9092").ca_file("ca.pem")).await?;
//! Admin::new(client.clone()).create_topic(NewTopic::new("events", 3)).await?;
//! let producer = Producer::new(client, ProducerConfig::default()).await?;
//! let meta = producer.send_and_wait(ProducerRecord::new("events", "hello").key("k")).await?;
//! println!("stored at {}/{:?}", meta.partition, meta.offset);
//! producer.close().await
//! # }
//! ```

pub use eddy_protocol as protocol;

pub mod admin;
pub mod client;
pub mod consumer;
pub mod error;
pub mod group;
pub mod processors;
pub mod producer;
pub mod security;

#[cfg(test)]
mod test_broker;

pub use admin::{Admin, NewTopic};
pub use client::{Broker, Client, ClientConfig, Credentials};
pub use consumer::{Consumer, ConsumerConfig, ConsumerRecord, OffsetReset, StartOffset};
pub use eddy_protocol::batch::Header;
pub use eddy_protocol::messages::{
    Acks, AssignmentStrategy, GroupDescription, GroupSummary, MetadataResponse, OffsetSpec, PartitionMetadata,
    TopicMetadata,
};
pub use eddy_protocol::ErrorCode;
pub use error::ClientError;
pub use group::{GroupConfig, GroupConsumer, RebalanceListener};
pub use processors::Processors;
pub use producer::{DeliveryFuture, Producer, ProducerConfig, ProducerRecord, RecordMetadata};
pub use security::Security;

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn is_send_sync<T: Send + Sync>() {}
    fn is_send<T: Send>(_: &T) {}

    #[test]
    fn handles_can_move_between_tasks() {
        is_send_sync::<Client>();
        is_send_sync::<Admin>();
        is_send_sync::<Producer>();
        is_send_sync::<Consumer>();
        is_send_sync::<DeliveryFuture>();
        is_send_sync::<ClientError>();
        is_send_sync::<GroupConfig>();
        fn is_send_only<T: Send>() {}
        is_send_only::<GroupConsumer>();
    }

    /// Type-checked only: every async method's future can be spawned.
    #[allow(dead_code)]
    fn futures_are_send(
        client: Client,
        producer: Producer,
        mut consumer: Consumer,
        admin: Admin,
        mut group: GroupConsumer,
    ) {
        is_send(&Client::connect(ClientConfig::new("x:1")));
        is_send(&client.request(&protocol::messages::MetadataRequest { topics: None }));
        is_send(&client.open_stream());
        is_send(&admin.create_topic(NewTopic::new("t", 1)));
        is_send(&producer.send(ProducerRecord::new("t", "v")));
        is_send(&producer.flush());
        is_send(&producer.clone().close());
        is_send(&consumer.assign_all("t", StartOffset::Earliest));
        is_send(&consumer.poll(Duration::ZERO));
        is_send(&GroupConsumer::subscribe(client.clone(), GroupConfig::new("g"), &[]));
        is_send(&group.poll(Duration::ZERO));
        is_send(&group.commit());
        is_send(&group.commit_offsets(&[]));
        is_send(&group.seek("t", 0, 0));
        is_send(&admin.describe_group("g"));
        is_send(&group.close());
    }
}
