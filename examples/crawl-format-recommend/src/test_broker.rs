//! An in-process single-node broker for this crate's tests: `eddy dev`
//! defaults in a temporary directory, on a free port.

use eddy_broker::{Broker, BrokerConfig};
use eddy_sdk::{Admin, Client, ClientConfig, NewTopic};

pub(crate) struct TestBroker {
    broker: Broker,
    pub(crate) client: Client,
    _dir: tempfile::TempDir,
}

impl TestBroker {
    pub(crate) async fn start() -> TestBroker {
        let dir = tempfile::Builder::new().prefix("eddy-pipeline-test-").tempdir().unwrap();
        let mut config = BrokerConfig::new(dir.path());
        config.listen = "127.0.0.1:0".parse().unwrap();
        let broker = Broker::start(config).await.unwrap();
        let client = ClientConfig::new(broker.local_addr().to_string())
            .ca_file(broker.ca_path())
            .client_cert(broker.certificate().0, broker.certificate().1);
        let client = Client::connect(client).await.unwrap();
        TestBroker { broker, client, _dir: dir }
    }

    pub(crate) async fn create_topic(&self, name: &str, partitions: u32) {
        Admin::new(self.client.clone()).create_topic(NewTopic::new(name, partitions)).await.unwrap();
    }

    pub(crate) async fn stop(self) {
        drop(self.client);
        self.broker.shutdown().await;
    }
}
