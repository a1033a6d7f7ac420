//! The cluster: the metadata quorum every broker is a voter of, the
//! controller duties of its leader, and the brokers' connections to each
//! other.
//!
//! * [`raft`]: openraft over QUIC, its log in `<data-dir>/raft.redb`, its
//!   state machine the broker's store.
//! * [`peer`]: connections to the other brokers.
//! * [`plan`]: the controller's decisions (replica placement, elections, ISR
//!   changes on broker loss) as pure functions.
//! * [`controller`]: liveness of brokers from their heartbeats, and the loop
//!   that turns [`plan`]'s decisions into metadata commands.
//!
//! The controller is whichever broker leads the metadata quorum. Requests
//! that change or read cluster-wide state (admin, groups, processors,
//! producer ids) are answered by the controller; other brokers forward them
//! there (KIP-590's shape), so clients may send them to any broker.
//!
//! A broker serves as a partition leader only while it is *ready*: it has
//! applied the metadata log at least as far as the controller had when it
//! last answered this broker's heartbeat, within the session timeout. A
//! broker that restarts, or was paused, or lost the controller, therefore
//! never acts on a stale view of who leads what.

pub mod controller;
pub mod peer;
pub mod plan;
pub mod raft;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use eddy_protocol::codec::{from_bytes, to_bytes};
use eddy_protocol::frame::{response_frame, LENGTH_BYTES};
use eddy_protocol::messages::{
    BrokerHeartbeatRequest, BrokerHeartbeatResponse, BrokerInfo, MetadataWriteRequest, RaftMessage,
};
use eddy_protocol::processors::ProcessorDescription;
use eddy_protocol::{ErrorCode, ErrorResponse};
use openraft::error::ClientWriteError;
use openraft::{BasicNode, Raft, SnapshotPolicy};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

use crate::store::{MetaCommand, MetaOutput, Store, StoreError, TopicConfig};
use controller::Liveness;
use peer::{PeerEndpoint, PeerError, Peers};
use raft::log_store::LogStore;
use raft::network::Network;
use raft::state_machine::StateMachine;
use raft::{decode, encode, NodeId, TypeConfig};

/// How long a proposal may wait for the quorum (elections included).
pub const PROPOSE_TIMEOUT: Duration = Duration::from_secs(15);
/// Timeout of one forwarded request, long enough for a group join that
/// waits for its rebalance.
pub const FORWARD_TIMEOUT: Duration = Duration::from_secs(330);
/// The metadata quorum's heartbeat, in ms (elections after 2-4 of them missed).
pub const RAFT_HEARTBEAT_MS: u64 = 250;
/// Longest an admin change waits for every live broker to apply it.
pub const SPREAD_TIMEOUT: Duration = Duration::from_secs(5);

/// How a broker takes part in the cluster.
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    /// This broker's id (at least 1).
    pub broker_id: u32,
    /// Every broker of the cluster (this one included): id -> the
    /// `host:port` that clients and the other brokers reach it at.
    pub brokers: BTreeMap<u32, String>,
    /// Where `raft.redb` and the metadata snapshot live.
    pub data_dir: PathBuf,
    /// The CA file the other brokers' certificates verify against.
    pub ca_path: PathBuf,
    /// This broker's certificate (PEM), presented to the other brokers as
    /// its client certificate: it proves `eddy:broker:<broker_id>`.
    pub cert_path: PathBuf,
    /// Its key.
    pub key_path: PathBuf,
    /// How often brokers heartbeat the controller.
    pub heartbeat_interval: Duration,
    /// A broker silent for this long is dead for the controller: its
    /// partitions get new leaders, it leaves every ISR.
    pub session_timeout: Duration,
    /// How often the controller moves leadership back to preferred replicas
    /// (zero: never).
    pub preferred_leader_interval: Duration,
}

impl ClusterConfig {
    /// A single-broker cluster of broker `id` at `addr`, whose TLS identity
    /// is `identity`.
    pub fn single(id: u32, addr: String, data_dir: PathBuf, identity: &crate::tls::TlsIdentity) -> Self {
        Self {
            broker_id: id,
            brokers: BTreeMap::from([(id, addr)]),
            data_dir,
            ca_path: identity.ca_path.clone(),
            cert_path: identity.cert_path.clone(),
            key_path: identity.key_path.clone(),
            heartbeat_interval: Duration::from_millis(100),
            session_timeout: Duration::from_millis(1000),
            preferred_leader_interval: Duration::from_secs(10),
        }
    }
}

/// Why the cluster could not start.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// The Raft log could not be opened.
    #[error("metadata log {path}: {reason}")]
    Log { path: PathBuf, reason: String },
    /// openraft refused to start.
    #[error("metadata quorum: {0}")]
    Raft(String),
    /// The peer connections could not be set up.
    #[error(transparent)]
    Peer(#[from] PeerError),
}

/// A refused metadata command or forwarded request: code and message, as
/// the client will see them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// Wire code.
    pub code: ErrorCode,
    /// For people.
    pub message: String,
}

impl Refusal {
    /// A refusal with `code` and `message`.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self { code, message: message.into() }
    }
}

impl From<StoreError> for Refusal {
    fn from(e: StoreError) -> Self {
        Self { code: e.code(), message: e.to_string() }
    }
}

/// [`MetaOutput`] as it crosses between brokers (wire types as their encoding).
#[derive(serde::Serialize, serde::Deserialize)]
enum OutputWire {
    Done,
    Topic(TopicConfig),
    Processor(Vec<u8>),
    Flag(bool),
    ProducerId(u64),
    Altered(Vec<bool>),
    Count(u32),
}

type ResultWire = Result<OutputWire, (u16, String)>;

fn output_to_wire(output: MetaOutput) -> OutputWire {
    match output {
        MetaOutput::Done => OutputWire::Done,
        MetaOutput::Topic(t) => OutputWire::Topic(t),
        MetaOutput::Processor(p) => OutputWire::Processor(to_bytes(&p).to_vec()),
        MetaOutput::Flag(f) => OutputWire::Flag(f),
        MetaOutput::ProducerId(id) => OutputWire::ProducerId(id),
        MetaOutput::Altered(a) => OutputWire::Altered(a),
        MetaOutput::Count(n) => OutputWire::Count(n),
    }
}

fn output_from_wire(output: OutputWire) -> Result<MetaOutput, Refusal> {
    Ok(match output {
        OutputWire::Done => MetaOutput::Done,
        OutputWire::Topic(t) => MetaOutput::Topic(t),
        OutputWire::Processor(p) => MetaOutput::Processor(
            from_bytes::<ProcessorDescription>(Bytes::from(p))
                .map_err(|e| Refusal::new(ErrorCode::Internal, format!("forwarded processor answer: {e}")))?,
        ),
        OutputWire::Flag(f) => MetaOutput::Flag(f),
        OutputWire::ProducerId(id) => MetaOutput::ProducerId(id),
        OutputWire::Altered(a) => MetaOutput::Altered(a),
        OutputWire::Count(n) => MetaOutput::Count(n),
    })
}

/// This broker's membership in the cluster.
pub struct Cluster {
    config: ClusterConfig,
    raft: Raft<TypeConfig>,
    peers: Arc<Peers>,
    store: Arc<Store>,
    applied: watch::Receiver<u64>,
    /// Caught up with the controller at the last successful heartbeat.
    caught_up: AtomicBool,
    /// Milliseconds (since `started`) of the last successful heartbeat.
    last_heartbeat_ok_ms: AtomicU64,
    started: Instant,
    liveness: Mutex<Liveness>,
    /// (term, last log index when this broker became controller in that term).
    controller_term: Mutex<(u64, u64)>,
    /// The snapshot being received, for bounding its chunks.
    receiving_snapshot: Mutex<Option<ReceivingSnapshot>>,
}

/// A snapshot whose chunks are arriving.
struct ReceivingSnapshot {
    from: u32,
    id: String,
    received: u64,
}

/// Whether a snapshot chunk may be handed to openraft (see
/// [`Cluster::serve_raft`]); records what arrived.
fn admit_snapshot_chunk(
    receiving: &mut Option<ReceivingSnapshot>,
    from: u32,
    snapshot_id: &str,
    offset: u64,
    len: usize,
) -> Result<(), Refusal> {
    let end = offset.checked_add(len as u64).filter(|end| *end <= MAX_SNAPSHOT_BYTES).ok_or_else(|| {
        Refusal::new(
            ErrorCode::InvalidRequest,
            format!("snapshot chunk at {offset} (+{len} bytes) passes the limit of {MAX_SNAPSHOT_BYTES} bytes"),
        )
    })?;
    if offset == 0 {
        *receiving = Some(ReceivingSnapshot { from, id: snapshot_id.to_string(), received: end });
        return Ok(());
    }
    match receiving.as_mut() {
        Some(r) if r.from == from && r.id == snapshot_id && offset <= r.received => {
            r.received = r.received.max(end);
            Ok(())
        }
        _ => Err(Refusal::new(
            ErrorCode::InvalidRequest,
            format!("snapshot chunk at offset {offset} of {snapshot_id:?} continues no snapshot being received"),
        )),
    }
}

#[cfg(test)]
mod snapshot_chunk_tests {
    use super::*;

    #[test]
    fn chunks_must_continue_the_snapshot_being_received_within_the_limit() {
        let mut r = None;
        // The attack: a second chunk far beyond what arrived.
        admit_snapshot_chunk(&mut r, 2, "s1", 0, 0).unwrap();
        assert!(admit_snapshot_chunk(&mut r, 2, "s1", 1 << 45, 10).is_err());
        // A chunk that starts nothing.
        let mut none = None;
        assert!(admit_snapshot_chunk(&mut none, 2, "s1", 100, 10).is_err());
        // Normal transfer, a resend, another broker's or snapshot's chunk.
        admit_snapshot_chunk(&mut r, 2, "s1", 0, 100).unwrap();
        admit_snapshot_chunk(&mut r, 2, "s1", 100, 100).unwrap();
        admit_snapshot_chunk(&mut r, 2, "s1", 100, 100).unwrap();
        assert!(admit_snapshot_chunk(&mut r, 3, "s1", 200, 1).is_err());
        assert!(admit_snapshot_chunk(&mut r, 2, "s2", 200, 1).is_err());
        // Past the total size, even from offset 0.
        assert!(admit_snapshot_chunk(&mut r, 2, "s3", 0, (MAX_SNAPSHOT_BYTES + 1) as usize).is_err());
        assert!(admit_snapshot_chunk(&mut r, 2, "s1", u64::MAX - 1, 10).is_err());
    }
}

/// Largest metadata snapshot a broker receives (1 GiB): replicated tables
/// only (topics, offsets, processors with modules and state, users, rules).
pub const MAX_SNAPSHOT_BYTES: u64 = 1 << 30;

impl Cluster {
    /// Opens the metadata log, starts this broker's Raft node and, on a
    /// fresh log, initializes the quorum with every configured broker as a
    /// voter (every broker does the same, with the same membership, which
    /// openraft allows).
    pub async fn start(config: ClusterConfig, store: Arc<Store>) -> Result<Arc<Self>, ClusterError> {
        let log_path = config.data_dir.join("raft.redb");
        let log_store = LogStore::open(&log_path)
            .map_err(|e| ClusterError::Log { path: log_path.clone(), reason: e.to_string() })?;
        let (applied_tx, applied) = watch::channel(0u64);
        let state_machine = StateMachine::new(store.clone(), log_store.clone(), applied_tx);
        let endpoint = PeerEndpoint::new(&config.ca_path, &config.cert_path, &config.key_path)?;
        let peers = Arc::new(Peers::new(endpoint, config.broker_id, &config.brokers));
        let raft_config = openraft::Config {
            cluster_name: "eddy".into(),
            // openraft also bounds every append-entries RPC by the heartbeat
            // interval, so it must cover replicating (and fsyncing) the
            // largest entry, a processor module.
            heartbeat_interval: RAFT_HEARTBEAT_MS,
            election_timeout_min: RAFT_HEARTBEAT_MS * 2,
            election_timeout_max: RAFT_HEARTBEAT_MS * 4,
            // Processor state and offsets commits are entries too: compact now and then.
            snapshot_policy: SnapshotPolicy::LogsSinceLast(20_000),
            max_in_snapshot_log_to_keep: 1_000,
            install_snapshot_timeout: 30_000,
            ..Default::default()
        }
        .validate()
        .map_err(|e| ClusterError::Raft(e.to_string()))?;
        let raft = Raft::new(
            NodeId::from(config.broker_id),
            Arc::new(raft_config),
            Network::new(peers.clone()),
            log_store,
            state_machine,
        )
        .await
        .map_err(|e| ClusterError::Raft(e.to_string()))?;
        let initialized = raft.is_initialized().await.map_err(|e| ClusterError::Raft(e.to_string()))?;
        if !initialized {
            let members: BTreeMap<NodeId, BasicNode> =
                config.brokers.iter().map(|(id, addr)| (NodeId::from(*id), BasicNode::new(addr))).collect();
            info!(voters = members.len(), "initializing the metadata quorum");
            if let Err(e) = raft.initialize(members).await {
                // Another broker's leader reached us first: that is fine.
                debug!(error = %e, "quorum already initialized");
            }
        }
        Ok(Arc::new(Self {
            config,
            raft,
            peers,
            store,
            applied,
            caught_up: AtomicBool::new(false),
            last_heartbeat_ok_ms: AtomicU64::new(0),
            started: Instant::now(),
            liveness: Mutex::new(Liveness::default()),
            controller_term: Mutex::new((u64::MAX, 0)),
            receiving_snapshot: Mutex::new(None),
        }))
    }

    /// This broker's id.
    pub fn broker_id(&self) -> u32 {
        self.config.broker_id
    }

    /// The other brokers' connections.
    pub fn peers(&self) -> &Arc<Peers> {
        &self.peers
    }

    /// Every broker of the cluster with the address clients use.
    pub fn brokers(&self) -> Vec<BrokerInfo> {
        self.config.brokers.iter().map(|(id, addr)| BrokerInfo { id: *id, addr: addr.clone() }).collect()
    }

    /// The controller (leader of the metadata quorum) as this broker knows it.
    pub fn controller(&self) -> Option<u32> {
        self.raft.metrics().borrow().current_leader.and_then(|id| u32::try_from(id).ok())
    }

    /// Whether this broker is the controller now.
    pub fn is_controller(&self) -> bool {
        self.controller() == Some(self.config.broker_id)
    }

    /// Index of the last metadata entry applied here.
    pub fn applied_index(&self) -> u64 {
        let from_raft = self.raft.metrics().borrow().last_applied.map_or(0, |l| l.index);
        from_raft.max(*self.applied.borrow())
    }

    /// A receiver that changes whenever metadata entries were applied.
    pub fn subscribe_applied(&self) -> watch::Receiver<u64> {
        self.applied.clone()
    }

    fn elapsed_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    /// Whether this broker may act as a partition leader now (see the module docs).
    pub fn is_ready(&self) -> bool {
        if !self.caught_up.load(Ordering::Acquire) {
            return false;
        }
        let last = self.last_heartbeat_ok_ms.load(Ordering::Acquire);
        self.elapsed_ms().saturating_sub(last) < self.config.session_timeout.as_millis() as u64
    }

    /// The brokers the controller considers alive (meaningful on the controller).
    pub fn live_brokers(&self) -> BTreeSet<u32> {
        let mut live = self.liveness.lock().expect("liveness lock poisoned").live(Instant::now(), &self.config);
        live.insert(self.config.broker_id);
        live
    }

    /// Appends `command` to the metadata log and returns what applying it
    /// gave. Sent to the controller when this broker is not it; retried
    /// through elections until [`PROPOSE_TIMEOUT`] (NOT_CONTROLLER after that).
    pub async fn propose(&self, command: MetaCommand) -> Result<MetaOutput, Refusal> {
        self.propose_at(command).await.map(|(output, _)| output)
    }

    /// [`Cluster::propose`], then waits (at most [`SPREAD_TIMEOUT`]) until
    /// every live broker has applied the command, so that clients asking any
    /// broker next see its effect (a created topic, say).
    pub async fn propose_everywhere(&self, command: MetaCommand) -> Result<MetaOutput, Refusal> {
        let (output, index) = self.propose_at(command).await?;
        if let Some(index) = index {
            let deadline = tokio::time::Instant::now() + SPREAD_TIMEOUT;
            loop {
                let behind = {
                    let liveness = self.liveness.lock().expect("liveness lock poisoned");
                    liveness.behind(index, Instant::now(), &self.config, self.config.broker_id)
                };
                if behind.is_empty() {
                    break;
                }
                if tokio::time::Instant::now() >= deadline {
                    warn!(index, brokers = ?behind, "brokers have not applied a metadata change yet");
                    break;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        Ok(output)
    }

    /// Proposes; the log index of the entry when this broker proposed it itself.
    async fn propose_at(&self, command: MetaCommand) -> Result<(MetaOutput, Option<u64>), Refusal> {
        let deadline = tokio::time::Instant::now() + PROPOSE_TIMEOUT;
        loop {
            let leader = match self.propose_local(command.clone()).await {
                Ok(result) => return result.map(|(output, index)| (output, Some(index))),
                Err(leader) => leader,
            };
            match leader.filter(|l| *l != self.config.broker_id).and_then(|l| self.peers.get(l)) {
                Some(peer) => {
                    let payload = encode(&command).map_err(|e| Refusal::new(ErrorCode::Internal, e.to_string()))?;
                    let req = MetadataWriteRequest(RaftMessage { payload: Bytes::from(payload) });
                    match peer.request(&req, PROPOSE_TIMEOUT).await {
                        Ok(answer) => {
                            let result: ResultWire = decode(&answer.payload)
                                .map_err(|e| Refusal::new(ErrorCode::Internal, format!("controller answer: {e}")))?;
                            return match result {
                                Ok(output) => output_from_wire(output).map(|o| (o, None)),
                                Err((code, message)) => Err(Refusal::new(ErrorCode::from_u16(code), message)),
                            };
                        }
                        Err(e) if e.code().is_none_or(|c| c == ErrorCode::NotController) => {
                            debug!(error = %e, "controller unreachable; retrying the proposal")
                        }
                        Err(PeerError::Remote { code, message, .. }) => return Err(Refusal::new(code, message)),
                        Err(e) => return Err(Refusal::new(ErrorCode::Internal, e.to_string())),
                    }
                }
                None => debug!("no controller; waiting for the election"),
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(Refusal::new(
                    ErrorCode::NotController,
                    format!("no controller answered within {PROPOSE_TIMEOUT:?}; retry when the cluster has a quorum"),
                ));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Proposes on the local Raft node: `Ok` with the applied result if this
    /// node leads, `Err(leader)` (as far as known) if it does not.
    async fn propose_local(&self, command: MetaCommand) -> Result<Result<(MetaOutput, u64), Refusal>, Option<u32>> {
        let rx = match self.raft.client_write_ff(command).await {
            Ok(rx) => rx,
            Err(e) => return Ok(Err(Refusal::new(ErrorCode::ShuttingDown, format!("metadata quorum stopped: {e}")))),
        };
        match rx.await {
            Ok(Ok(response)) => Ok(response.data.0.map(|o| (o, response.log_id.index)).map_err(Refusal::from)),
            Ok(Err(ClientWriteError::ForwardToLeader(f))) => Err(f.leader_id.and_then(|l| u32::try_from(l).ok())),
            Ok(Err(e)) => Ok(Err(Refusal::new(ErrorCode::Internal, e.to_string()))),
            Err(_) => Ok(Err(Refusal::new(ErrorCode::ShuttingDown, "metadata quorum stopped"))),
        }
    }

    /// Serves a MetadataWrite from another broker: proposes locally only
    /// (never forwards again), NOT_CONTROLLER if this broker does not lead.
    pub async fn serve_metadata_write(&self, payload: Bytes) -> Result<RaftMessage, Refusal> {
        let command: MetaCommand = decode(&payload)
            .map_err(|e| Refusal::new(ErrorCode::MalformedRequest, format!("undecodable metadata command: {e}")))?;
        let result: ResultWire = match self.propose_local(command).await {
            Ok(Ok((output, _))) => Ok(output_to_wire(output)),
            Ok(Err(r)) => Err((r.code as u16, r.message)),
            Err(leader) => {
                return Err(Refusal::new(
                    ErrorCode::NotController,
                    format!("broker {} is not the controller (leader: {leader:?})", self.config.broker_id),
                ))
            }
        };
        let payload = encode(&result).map_err(|e| Refusal::new(ErrorCode::Internal, e.to_string()))?;
        Ok(RaftMessage { payload: Bytes::from(payload) })
    }

    /// Serves a Raft RPC from broker `from` (proven by its certificate):
    /// append-entries, vote or a snapshot chunk. The node id the RPC claims
    /// to come from must be `from` (CLUSTER_AUTHORIZATION_FAILED otherwise),
    /// and snapshot chunks must continue the snapshot being received within
    /// [`MAX_SNAPSHOT_BYTES`]. The answer's payload is the encoded result.
    pub async fn serve_raft(
        &self,
        key: eddy_protocol::ApiKey,
        payload: Bytes,
        from: u32,
    ) -> Result<RaftMessage, Refusal> {
        use eddy_protocol::ApiKey;
        let bad = |e: postcard::Error| Refusal::new(ErrorCode::MalformedRequest, format!("undecodable Raft RPC: {e}"));
        let sender = |vote: &openraft::Vote<NodeId>| -> Result<(), Refusal> {
            let claimed = vote.leader_id().voted_for();
            if claimed != Some(NodeId::from(from)) {
                warn!(from, ?claimed, "a Raft RPC claims another node than the broker that sent it");
                return Err(Refusal::new(
                    ErrorCode::ClusterAuthorizationFailed,
                    format!("the Raft RPC names node {claimed:?}, but the connection proved broker {from}"),
                ));
            }
            Ok(())
        };
        let encoded = match key {
            ApiKey::RaftAppend => {
                let rpc: openraft::raft::AppendEntriesRequest<TypeConfig> = decode(&payload).map_err(bad)?;
                sender(&rpc.vote)?;
                encode(&self.raft.append_entries(rpc).await)
            }
            ApiKey::RaftVote => {
                let rpc: openraft::raft::VoteRequest<NodeId> = decode(&payload).map_err(bad)?;
                sender(&rpc.vote)?;
                encode(&self.raft.vote(rpc).await)
            }
            ApiKey::RaftSnapshot => {
                let rpc: openraft::raft::InstallSnapshotRequest<TypeConfig> = decode(&payload).map_err(bad)?;
                sender(&rpc.vote)?;
                self.check_snapshot_chunk(from, &rpc.meta.snapshot_id, rpc.offset, rpc.data.len())?;
                encode(&self.raft.install_snapshot(rpc).await)
            }
            other => return Err(Refusal::new(ErrorCode::InvalidRequest, format!("{other:?} is not a Raft RPC"))),
        };
        let payload = encoded.map_err(|e| Refusal::new(ErrorCode::Internal, e.to_string()))?;
        Ok(RaftMessage { payload: Bytes::from(payload) })
    }

    /// Bounds snapshot transfer: a chunk starts a snapshot (offset 0) or
    /// continues the one being received from the same broker at or below
    /// what arrived so far, and no snapshot grows past
    /// [`MAX_SNAPSHOT_BYTES`]. openraft would otherwise seek to any offset
    /// and allocate up to it.
    fn check_snapshot_chunk(&self, from: u32, snapshot_id: &str, offset: u64, len: usize) -> Result<(), Refusal> {
        let mut receiving = self.receiving_snapshot.lock().expect("snapshot lock poisoned");
        admit_snapshot_chunk(&mut receiving, from, snapshot_id, offset, len)
    }

    /// Records a heartbeat from another broker (on the controller).
    pub fn serve_heartbeat(&self, req: BrokerHeartbeatRequest) -> Result<BrokerHeartbeatResponse, Refusal> {
        if !self.is_controller() {
            return Err(Refusal::new(
                ErrorCode::NotController,
                format!("broker {} is not the controller", self.config.broker_id),
            ));
        }
        if !self.config.brokers.contains_key(&req.broker_id) {
            return Err(Refusal::new(
                ErrorCode::InvalidRequest,
                format!("broker {} is not a member of this cluster", req.broker_id),
            ));
        }
        let applied = self.applied_index();
        self.liveness.lock().expect("liveness lock poisoned").heartbeat(
            req.broker_id,
            req.applied_index,
            applied,
            Instant::now(),
            &self.config,
        );
        Ok(BrokerHeartbeatResponse { controller_applied_index: applied })
    }

    /// Forwards a client's request frame (length prefix included) to the
    /// controller, to be served there as `principal`, and returns its
    /// response frame. NOT_CONTROLLER when there is none or it cannot be
    /// reached.
    pub async fn forward(&self, frame: Bytes, principal: String) -> Bytes {
        let not_controller =
            |why: String| response_frame(ErrorCode::NotController as u16, &to_bytes(&ErrorResponse::message(why)));
        let Some(controller) = self.controller() else {
            return not_controller("the cluster is electing a controller; retry shortly".into());
        };
        let Some(peer) = self.peers.get(controller) else {
            return not_controller(format!("controller {controller} is not a known broker"));
        };
        debug_assert!(frame.len() >= LENGTH_BYTES);
        let envelope = eddy_protocol::security::ForwardRequest { principal, frame };
        let frame = eddy_protocol::frame::request_frame(eddy_protocol::ApiKey::Forward, &to_bytes(&envelope));
        match peer.exchange_frame(frame, FORWARD_TIMEOUT).await {
            Ok((code, payload)) => response_frame(code, &payload),
            Err(e) => not_controller(format!("cannot reach the controller: {e}")),
        }
    }

    /// Starts the background duties: heartbeats to the controller, and the
    /// controller loop (which acts only while this broker is the controller).
    pub fn spawn(self: &Arc<Self>, shutdown: watch::Receiver<bool>) -> Vec<JoinHandle<()>> {
        vec![
            tokio::spawn(self.clone().heartbeat_loop(shutdown.clone())),
            tokio::spawn(controller::run(self.clone(), shutdown)),
        ]
    }

    async fn heartbeat_loop(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        let mut tick = tokio::time::interval(self.config.heartbeat_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = shutdown.wait_for(|s| *s) => return,
            }
            self.heartbeat_once().await;
        }
    }

    async fn heartbeat_once(&self) {
        let Some(controller) = self.controller() else { return };
        let applied = self.applied_index();
        let target = if controller == self.config.broker_id {
            // The controller is caught up once it applied what its log held
            // when it was elected (later proposals do not count).
            let metrics = self.raft.metrics().borrow().clone();
            let mut term = self.controller_term.lock().expect("term lock poisoned");
            if term.0 != metrics.current_term {
                *term = (metrics.current_term, metrics.last_log_index.unwrap_or(0));
            }
            Some(term.1)
        } else {
            let Some(peer) = self.peers.get(controller) else { return };
            let req = BrokerHeartbeatRequest { broker_id: self.config.broker_id, applied_index: applied };
            match peer.request(&req, self.config.session_timeout).await {
                Ok(resp) => Some(resp.controller_applied_index),
                Err(e) => {
                    debug!(error = %e, "heartbeat to the controller failed");
                    None
                }
            }
        };
        let Some(target) = target else { return };
        let caught_up = self.applied_index() >= target;
        let was = self.caught_up.swap(caught_up, Ordering::AcqRel);
        if caught_up {
            self.last_heartbeat_ok_ms.store(self.elapsed_ms(), Ordering::Release);
        }
        if caught_up != was {
            info!(caught_up, applied = self.applied_index(), controller_applied = target, "readiness changed");
        }
    }

    /// The committed catalog's topic configurations.
    pub(crate) fn topics(&self) -> Vec<TopicConfig> {
        self.store.catalog().values().map(|t| t.config.clone()).collect()
    }

    /// Stops the Raft node and closes the peer connections.
    pub async fn shutdown(&self) {
        if let Err(e) = self.raft.shutdown().await {
            warn!(error = %e, "metadata quorum did not stop cleanly");
        }
        self.peers.close();
    }
}

/// A single-broker cluster for tests: broker 1, ready when returned.
#[cfg(test)]
pub(crate) mod testing {
    use super::*;

    /// Starts the metadata quorum of broker 1 alone over `store`, keeping
    /// its files (and a generated CA) in `dir`; waits until it is ready.
    pub(crate) async fn single(dir: &std::path::Path, store: Arc<Store>) -> Arc<Cluster> {
        let identity = crate::tls::load_or_generate(dir, &[], 1).expect("test CA");
        let config = ClusterConfig::single(1, "127.0.0.1:1".into(), dir.to_path_buf(), &identity);
        let cluster = Cluster::start(config, store).await.expect("cluster starts");
        // The background duties run for the rest of the test process: the
        // shutdown sender is leaked so that it never signals.
        let (tx, rx) = watch::channel(false);
        std::mem::forget(tx);
        drop(cluster.spawn(rx));
        let deadline = Instant::now() + Duration::from_secs(20);
        while !cluster.is_ready() {
            assert!(Instant::now() < deadline, "single-node cluster never became ready");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        cluster
    }
}
