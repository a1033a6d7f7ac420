//! The SDK against a [`TestCluster`]: control-plane failover between
//! brokers, routing of partition requests to leaders, and the producer's
//! retries and deduplication across leader changes and lost connections.

use std::time::Duration;

use super::*;
use crate::*;

/// Bound on every wait of these tests.
const WAIT: Duration = Duration::from_secs(20);

async fn bounded<T>(what: &str, f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(WAIT, f).await.unwrap_or_else(|_| panic!("{what} took longer than {WAIT:?}"))
}

#[tokio::test]
async fn control_plane_fails_over_to_another_bootstrap_broker() {
    let cluster = TestCluster::start(2).await;
    cluster.broker(1).kill();
    // Broker 1 is first in the bootstrap list and dead: connect goes on to broker 2.
    let config = cluster.config().connect_timeout(Duration::from_millis(300));
    let client = bounded("connect", Client::connect(config)).await.unwrap();
    let admin = Admin::new(client.clone());
    bounded("create", admin.create_topic(NewTopic::new("t", 2))).await.unwrap();
    assert_eq!(bounded("list", admin.list_topics()).await.unwrap().len(), 1);
    assert_eq!(bounded("meta", admin.metadata()).await.unwrap().brokers.len(), 2);
}

#[tokio::test]
async fn control_plane_moves_on_when_the_broker_in_use_dies() {
    let cluster = TestCluster::start(3).await;
    let client = Client::connect(cluster.config().connect_timeout(Duration::from_millis(300))).await.unwrap();
    let admin = Admin::new(client.clone());
    admin.create_topic(NewTopic::new("a", 1)).await.unwrap();
    cluster.broker(1).kill();
    // A read-only request lost with the connection is sent again elsewhere.
    assert_eq!(bounded("list after kill", admin.list_topics()).await.unwrap().len(), 1);
    bounded("create after kill", admin.create_topic(NewTopic::new("b", 1))).await.unwrap();
    // A broker answering SHUTTING_DOWN is skipped too.
    cluster.broker(2).set_shutting_down(true);
    bounded("create while 2 stops", admin.create_topic(NewTopic::new("c", 1))).await.unwrap();
    assert_eq!(admin.list_topics().await.unwrap().len(), 3);
}

#[tokio::test]
async fn not_controller_is_retried_until_a_controller_is_back() {
    let cluster = TestCluster::start(2).await;
    let client = Client::connect(cluster.config()).await.unwrap();
    let admin = Admin::new(client.clone());
    cluster.set_controller_down(true);
    let back = async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        cluster.set_controller_down(false);
    };
    let (created, ()) = bounded("create", futures::future::join(admin.create_topic(NewTopic::new("t", 1)), back)).await;
    created.unwrap();
    // With no controller for longer than the request timeout, the refusal is returned.
    cluster.set_controller_down(true);
    let short = Client::connect(cluster.config().request_timeout(Duration::from_millis(400))).await.unwrap();
    let err = bounded("refused", Admin::new(short).create_topic(NewTopic::new("u", 1))).await.unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::NotController), "{err}");
    assert!(err.is_retriable());
}

#[tokio::test]
async fn partition_requests_go_to_the_leader_and_follow_it() {
    let cluster = TestCluster::start(3).await;
    let client = Client::connect(cluster.config()).await.unwrap();
    Admin::new(client.clone()).create_topic(NewTopic::new("t", 2)).await.unwrap();
    cluster.set_leader("t", 1, 3);
    let req = |partition| ListOffsetsRequest { topic: "t".into(), partition, spec: OffsetSpec::Latest };
    assert_eq!(client.request_to_leader("t", 0, &req(0)).await.unwrap().offset, 0);
    assert_eq!(client.request_to_leader("t", 1, &req(1)).await.unwrap().offset, 0);
    assert_eq!(client.leader("t", 1).await.unwrap().id(), 3);
    assert_eq!(client.cached_leader("t", 0), 1);
    // The leader moves: NOT_LEADER refreshes the cache and the request follows.
    cluster.set_leader("t", 1, 2);
    let version = client.metadata_version();
    assert_eq!(client.request_to_leader("t", 1, &req(1)).await.unwrap().offset, 0);
    assert!(client.metadata_version() > version);
    assert_eq!(client.cached_leader("t", 1), 2);
    // Unknown topics are reported, not retried forever.
    let unknown = ListOffsetsRequest { topic: "nope".into(), partition: 0, spec: OffsetSpec::Latest };
    let err = bounded("unknown", client.request_to_leader("nope", 0, &unknown)).await.unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::UnknownTopic));
    // No leader for longer than the limit: the retriable error comes back.
    cluster.set_leader("t", 0, 0);
    let req0 = req(0);
    let err = client.request_to_leader_with_timeout("t", 0, &req0, Duration::from_millis(400));
    let err = bounded("no leader", err).await.unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::LeaderNotAvailable), "{err}");
}
