//! eddy-broker: the Eddy server and the `eddy` command.
//!
//! * [`store`]: redb-backed partition logs with group commit and retention.
//! * [`tls`]: the broker's certificate (generated on first start).
//! * [`server`]: the QUIC endpoint, connection and stream handling, request dispatch.
//! * [`broker`]: wiring of the above into a running broker with clean shutdown.
//! * [`cli`]: the `eddy` command line.

pub mod store;
