//! eddy-protocol: everything a client and a broker must agree on, and nothing else.
//!
//! * [`frame`]: how requests and responses are delimited on a QUIC stream.
//! * [`codec`]: the primitive encodings (little-endian integers, strings, byte
//!   strings, lists, options) that every message is built from, with checked decoding.
//! * [`messages`]: one request/response pair per API key.
//! * [`processors`]: the processor API (deploy, modules, atomic offsets + state commits).
//! * [`security`]: authentication, users, access-control rules, forwarding.
//! * [`batch`]: the record-batch layout that producers write, brokers validate and
//!   store as-is, and consumers decode.
//! * [`error`]: stable numeric error codes sent back to clients.
//! * [`limits`]: named bounds on everything that is decoded from the network.
//! * [`scram`]: SCRAM-SHA-256 client and server state machines (RFC 5802, RFC 7677).
//!
//! The crate does no I/O: no tokio, no quinn. docs/design.md in the repository
//! describes the same layouts byte by byte for third-party clients.

pub mod batch;
pub mod codec;
pub mod error;
pub mod frame;
pub mod limits;
pub mod messages;
pub mod partition;
pub mod processors;
pub mod scram;
pub mod security;

pub use batch::{BatchBuilder, BatchError, BatchView, Header, Record};
pub use codec::{DecodeError, Decoder, Encoder, Wire};
pub use error::{ErrorCode, ErrorResponse};
pub use frame::{ApiKey, FrameError, RequestHeader, ALPN, PROTOCOL_VERSION};
