//! openraft's RPCs over the brokers' QUIC connections.
//!
//! Each RPC is one request frame (API keys 41-43) whose payload is the
//! postcard-encoded openraft request; the answer's payload is the encoded
//! `Result` of the receiving node's Raft call, so a refusal (a higher term,
//! say) reaches the sender as openraft's own error.

use std::sync::Arc;

use bytes::Bytes;
use eddy_protocol::messages::{RaftAppendRequest, RaftMessage, RaftSnapshotRequest, RaftVoteRequest, Request};
use openraft::error::{InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse, VoteRequest,
    VoteResponse,
};
use openraft::BasicNode;

use super::types::{NodeId, TypeConfig};
use super::{decode, encode};
use crate::cluster::peer::{PeerClient, PeerError, Peers};

/// Makes one [`PeerNetwork`] per target broker.
pub struct Network {
    peers: Arc<Peers>,
}

impl Network {
    /// RPCs go through `peers`.
    pub fn new(peers: Arc<Peers>) -> Self {
        Self { peers }
    }
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = PeerNetwork;

    async fn new_client(&mut self, target: NodeId, _node: &BasicNode) -> PeerNetwork {
        let peer = u32::try_from(target).ok().and_then(|id| self.peers.get(id));
        PeerNetwork { target, peer }
    }
}

/// The RPC client to one other broker.
pub struct PeerNetwork {
    target: NodeId,
    peer: Option<Arc<PeerClient>>,
}

type RpcResult<T, E> = Result<T, RPCError<NodeId, BasicNode, RaftError<NodeId, E>>>;

impl PeerNetwork {
    async fn call<R, Req, Resp, E>(
        &self,
        wrap: fn(RaftMessage) -> R,
        req: &Req,
        option: RPCOption,
    ) -> RpcResult<Resp, E>
    where
        R: Request<Response = RaftMessage>,
        Req: serde::Serialize,
        Resp: serde::de::DeserializeOwned,
        E: std::error::Error + serde::de::DeserializeOwned,
    {
        let Some(peer) = &self.peer else {
            let e = PeerError::Unreachable { id: self.target as u32, addr: String::new(), reason: "not a peer".into() };
            return Err(RPCError::Unreachable(Unreachable::new(&e)));
        };
        let payload = encode(req).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        let answer = peer.request(&wrap(RaftMessage { payload: Bytes::from(payload) }), option.hard_ttl()).await;
        let answer = match answer {
            Ok(answer) => answer,
            Err(e @ PeerError::Timeout { .. }) | Err(e @ PeerError::Unreachable { .. }) => {
                return Err(RPCError::Unreachable(Unreachable::new(&e)))
            }
            Err(e) => return Err(RPCError::Network(NetworkError::new(&e))),
        };
        let result: Result<Resp, RaftError<NodeId, E>> =
            decode(&answer.payload).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        result.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }
}

impl RaftNetwork<TypeConfig> for PeerNetwork {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> RpcResult<AppendEntriesResponse<NodeId>, openraft::error::Infallible> {
        self.call(RaftAppendRequest, &rpc, option).await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> RpcResult<InstallSnapshotResponse<NodeId>, InstallSnapshotError> {
        self.call(RaftSnapshotRequest, &rpc, option).await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> RpcResult<VoteResponse<NodeId>, openraft::error::Infallible> {
        self.call(RaftVoteRequest, &rpc, option).await
    }
}
