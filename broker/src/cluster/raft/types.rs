//! The openraft type configuration of Eddy's metadata quorum.

use std::fmt;
use std::io::Cursor;

use crate::store::{MetaCommand, MetaOutput, StoreError};

/// Raft node ids are broker ids.
pub type NodeId = u64;

openraft::declare_raft_types!(
    /// Eddy's metadata log: commands are [`MetaCommand`]s, answers [`ApplyReply`]s.
    pub TypeConfig:
        D = MetaCommand,
        R = ApplyReply,
        NodeId = NodeId,
        Node = openraft::BasicNode,
);

/// What applying one command gave: its output, or the deterministic reason it
/// was refused (the same on every broker).
///
/// Answers only travel from the state machine to the proposer on the same
/// broker, never over the network, so the serde implementations required by
/// openraft's `serde` feature carry nothing: a deserialized reply is an
/// `Internal`-style refusal saying so.
#[derive(Debug, Clone)]
pub struct ApplyReply(pub Result<MetaOutput, StoreError>);

impl fmt::Display for ApplyReply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            Ok(_) => f.write_str("applied"),
            Err(e) => write!(f, "refused: {e}"),
        }
    }
}

impl serde::Serialize for ApplyReply {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_unit()
    }
}

impl<'de> serde::Deserialize<'de> for ApplyReply {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        <() as serde::Deserialize>::deserialize(deserializer)?;
        Ok(ApplyReply(Err(StoreError::Storage("an apply reply does not cross the network".into()))))
    }
}
