//! The metadata quorum: openraft over this broker's QUIC port.
//!
//! * [`types`]: the openraft type configuration (node ids are broker ids; the
//!   application data is a [`MetaCommand`](crate::store::MetaCommand)).
//! * [`log_store`]: the Raft log, vote and commit marks in their own redb file
//!   (`<data-dir>/raft.redb`), every append fsynced before it is reported.
//! * [`state_machine`]: applies committed commands to the broker's store,
//!   each atomically with its applied mark, and builds/installs snapshots.
//! * [`network`]: append-entries, vote and snapshot RPCs to the other brokers.
//!
//! Everything the cluster agrees on (brokers' topics and partition
//! assignments, leaders, ISRs, leader epochs, group offsets, processor
//! deployments and state, producer ids) is a command of this log; each broker
//! applies the same commands in the same order to its own store.

// openraft's trait methods return its `StorageError` (over 200 bytes); the
// helpers here return what those methods return.
#[allow(clippy::result_large_err)]
pub mod log_store;
pub mod network;
#[allow(clippy::result_large_err)]
pub mod state_machine;
pub mod types;

pub use types::{ApplyReply, NodeId, TypeConfig};

/// Encodes a value for the Raft log or an RPC (postcard).
pub(crate) fn encode<T: serde::Serialize>(value: &T) -> Result<Vec<u8>, postcard::Error> {
    postcard::to_stdvec(value)
}

/// Decodes a value encoded by [`encode`].
pub(crate) fn decode<'a, T: serde::Deserialize<'a>>(bytes: &'a [u8]) -> Result<T, postcard::Error> {
    postcard::from_bytes(bytes)
}
