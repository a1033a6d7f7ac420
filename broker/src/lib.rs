//! eddy-broker: the Eddy server and the `eddy` command.
//!
//! * [`store`]: redb-backed partition logs with group commit and retention.
//! * [`tls`]: the broker's certificate (generated on first start).
//! * [`server`]: the QUIC endpoint, connection and stream handling, request dispatch.
//! * [`groups`]: consumer-group coordinator, assignors and committed offsets.
//! * [`cluster`]: the metadata quorum (openraft), the controller, peer connections.
//! * [`replication`]: leader and follower duties of partition replicas.
//! * [`broker`]: wiring of the above into a running broker with clean shutdown.

pub mod auth;
pub mod broker;
pub mod cluster;
pub mod groups;
pub mod replication;
pub mod server;
pub mod store;
pub mod tls;

pub use broker::{Broker, BrokerConfig, BrokerError, DEFAULT_PORT};

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}
