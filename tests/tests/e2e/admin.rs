//! Topic administration and TLS verification against a real broker.

use eddy_sdk::protocol::messages::OffsetSpec;
use eddy_sdk::protocol::ErrorCode;
use eddy_sdk::{Admin, Client, ClientConfig, ClientError, NewTopic};
use eddy_tests::BrokerProcess;

fn code(r: Result<impl std::fmt::Debug, ClientError>) -> (ErrorCode, String) {
    match r {
        Err(ClientError::Broker { code, message, .. }) => (code, message),
        other => panic!("expected a broker error, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topics_are_created_listed_described_grown_and_deleted() -> anyhow::Result<()> {
    let broker = BrokerProcess::start()?;
    let admin = Admin::new(broker.client().await?);
    let t = admin.create_topic(NewTopic::new("a.b_c-1", 3).retention_ms(1000).retention_bytes(5000)).await?;
    assert_eq!(t.partitions.len(), 3);
    assert_eq!((t.retention_ms, t.retention_bytes), (Some(1000), Some(5000)));
    assert!(t.partitions.iter().all(|p| p.leader == 1 && p.log_start == 0 && p.log_end == 0));
    admin.create_topic(NewTopic::new("second", 1)).await?;
    let names: Vec<String> = admin.list_topics().await?.into_iter().map(|t| t.name).collect();
    assert_eq!(names, ["a.b_c-1", "second"]);

    assert_eq!(code(admin.create_topic(NewTopic::new("second", 1)).await).0, ErrorCode::TopicAlreadyExists);
    for bad in ["", "white space", "slash/y", &"n".repeat(250)] {
        assert_eq!(code(admin.create_topic(NewTopic::new(bad, 1)).await).0, ErrorCode::InvalidTopicName, "{bad:?}");
    }
    assert_eq!(code(admin.create_topic(NewTopic::new("zero", 0)).await).0, ErrorCode::InvalidPartitions);
    let (c, msg) = code(admin.create_topic(NewTopic::new("rf", 1).replication_factor(3)).await);
    assert_eq!(c, ErrorCode::InvalidReplicationFactor);
    assert_eq!(msg, "replication factor 3 larger than available brokers 1");

    assert_eq!(admin.create_partitions("second", 4).await?.partitions.len(), 4);
    let (c, msg) = code(admin.create_partitions("second", 2).await);
    assert_eq!(c, ErrorCode::InvalidPartitions);
    assert!(msg.contains("can only grow"), "{msg}");
    assert_eq!(admin.describe_topic("second").await?.partitions.len(), 4);
    assert_eq!(admin.list_offset("second", 3, OffsetSpec::Latest).await?, 0);

    admin.delete_topic("second").await?;
    assert_eq!(code(admin.describe_topic("second").await).0, ErrorCode::UnknownTopic);
    assert_eq!(code(admin.delete_topic("second").await).0, ErrorCode::UnknownTopic);
    assert_eq!(code(admin.list_offset("a.b_c-1", 7, OffsetSpec::Latest).await).0, ErrorCode::UnknownPartition);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_with_the_wrong_ca_is_refused_with_a_clear_error() -> anyhow::Result<()> {
    let broker = BrokerProcess::start()?;
    let other = BrokerProcess::start()?;
    let config = ClientConfig::new(broker.addr().to_string()).ca_file(other.ca());
    match Client::connect(config).await {
        Err(e @ ClientError::Tls { .. }) => {
            let text = e.to_string();
            assert!(text.contains("--ca"), "{text}");
        }
        Err(e) => panic!("expected a TLS error, got {e}"),
        Ok(_) => panic!("connected with the wrong CA"),
    }
    // The right CA works.
    Admin::new(broker.client().await?).list_topics().await?;
    Ok(())
}
