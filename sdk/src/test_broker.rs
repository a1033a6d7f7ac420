//! Tests of the whole SDK against a small in-memory broker over real QUIC and
//! TLS. The fake broker speaks the wire protocol (frames, produce, fetch,
//! list-offsets, metadata, create/delete topic, and consumer groups through
//! [`groups`]) with none of the real broker's storage; it exists so that the
//! client's connection handling, pipelining, decoding and group protocol are
//! exercised without the `eddy` binary.
//!
//! A [`TestCluster`] runs several such brokers over one shared state (as if
//! replication were instant): every broker lists all of them in metadata, the
//! test decides which broker leads each partition, others answer
//! `NOT_LEADER`, producer ids are handed out and resends of an idempotent
//! producer's batches are recognised (the original offset is answered, nothing
//! written), brokers can be killed or told to fail in the ways the SDK must
//! survive (see the knobs on [`TestBroker`]). The cluster tests live in
//! `cluster_tests`.

mod cluster_tests;
mod groups;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use eddy_protocol::batch::{stamp_base_offset, BatchLimits, BatchView};
use eddy_protocol::codec::{from_bytes, to_bytes, Wire};
use eddy_protocol::frame::{self, ApiKey};
use eddy_protocol::messages::*;
use eddy_protocol::{ErrorCode, ErrorResponse};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::sync::Notify;

/// Self-signed certificate for `localhost` and 127.0.0.1, valid 2000-2100.
pub(crate) const CERT_PEM: &str = "-----BEGIN CERTIFICATE-----
MIIBjzCCATagAwIBAgIBATAKBggqhkjOPQQDAjAZMRcwFQYDVQQDDA5lZGR5IHRl
c3QgZ29vZDAgFw0wMDAxMDEwMDAwMDBaGA8yMTAwMDEwMTAwMDAwMFowGTEXMBUG
A1UEAwwOZWRkeSB0ZXN0IGdvb2QwWTATBgcqhkjOPQIBBggqhkjOPQMBBwNCAAQk
aSxMOAwhnpfPsXXq5Ukh+1qCkcT7M+vySMW885kIOTHfwU1IeE/PGLAFENUv92jN
ODn0JeEWRyg3ZFo/pcQZo20wazAaBgNVHREEEzARgglsb2NhbGhvc3SHBH8AAAEw
DAYDVR0TAQH/BAIwADALBgNVHQ8EBAMCB4AwEwYDVR0lBAwwCgYIKwYBBQUHAwEw
HQYDVR0OBBYEFO4aGpHxfKZANJz2QeXoT0rg7fbIMAoGCCqGSM49BAMCA0cAMEQC
IGpiBVCNUT9k6639E4+pTS3kCE6X+MvK6yuDBGSzK+MaAiBnY33/MqBBG3qS4eo8
eF9tTdjsfTf+TWPZ3BKza8bm+g==
-----END CERTIFICATE-----
";
const KEY_PEM: &str = "-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQg3AiB09MNR/W/SA4K
Gdf3HOQaM+TtLgx3RJpTFL+oaGqhRANCAAQkaSxMOAwhnpfPsXXq5Ukh+1qCkcT7
M+vySMW885kIOTHfwU1IeE/PGLAFENUv92jNODn0JeEWRyg3ZFo/pcQZ
-----END PRIVATE KEY-----
";
/// An unrelated self-signed certificate: a wrong CA for [`CERT_PEM`].
pub(crate) const OTHER_CERT_PEM: &str = "-----BEGIN CERTIFICATE-----
MIIBkTCCATigAwIBAgIBAjAKBggqhkjOPQQDAjAaMRgwFgYDVQQDDA9lZGR5IHRl
c3Qgb3RoZXIwIBcNMDAwMTAxMDAwMDAwWhgPMjEwMDAxMDEwMDAwMDBaMBoxGDAW
BgNVBAMMD2VkZHkgdGVzdCBvdGhlcjBZMBMGByqGSM49AgEGCCqGSM49AwEHA0IA
BFvlZfAXKBjuIiOADpPkFMgfrUNw4e8TUfzNsLmF+IrCdF04x7ZDAjHtnNOGPjZJ
J9D/Slnn2uddF/b0DOykBOKjbTBrMBoGA1UdEQQTMBGCCWxvY2FsaG9zdIcEfwAA
ATAMBgNVHRMBAf8EAjAAMAsGA1UdDwQEAwIHgDATBgNVHSUEDDAKBggrBgEFBQcD
ATAdBgNVHQ4EFgQUtdhyD+gK13IVY0bSaQX/EjorPdkwCgYIKoZIzj0EAwIDRwAw
RAIgEf5mT2swUj4dQVP5hIaT9N9nrit+fXR2kFDPRkPca7kCIHSEhbTlMxpkUiEk
FmD4TxvhrunWWp3QaVUe4po4t5rt
-----END CERTIFICATE-----
";

/// One partition's log: batches with their base and next offsets.
#[derive(Default)]
struct Part {
    batches: Vec<(u64, u64, Bytes)>,
    log_start: u64,
    log_end: u64,
}

/// What an idempotent producer wrote to one partition: the next sequence
/// expected and the last few batches, to recognise resends.
#[derive(Default)]
struct ProducerSeq {
    next: u32,
    /// (base sequence, record count, base offset), newest last.
    recent: std::collections::VecDeque<(u32, u32, u64)>,
}

/// Batches remembered per producer and partition for duplicate detection (Kafka keeps 5).
const RECENT_BATCHES: usize = 8;

#[derive(Default)]
struct State {
    topics: HashMap<String, Vec<Part>>,
    /// Leaders set by the test; other partitions are led by `default_leader`.
    leaders: HashMap<(String, u32), u32>,
    default_leader: u32,
    producers: HashMap<(u64, String, u32), ProducerSeq>,
}

impl State {
    fn leader(&self, topic: &str, partition: u32) -> u32 {
        self.leaders.get(&(topic.to_string(), partition)).copied().unwrap_or(self.default_leader)
    }
}

/// The cluster: one replicated log (every broker sees the same data, as if
/// replication were instant), leaders per partition, groups, producer ids.
struct Shared {
    state: Mutex<State>,
    appended: Notify,
    groups: groups::Groups,
    brokers: Mutex<Vec<BrokerInfo>>,
    next_producer_id: std::sync::atomic::AtomicU64,
    /// While set, control-plane requests (other than metadata) get NOT_CONTROLLER.
    no_controller: AtomicBool,
    /// Records written (duplicates excluded) and resends recognised.
    duplicates: AtomicU64,
}

impl Shared {
    /// Partition counts of every topic.
    fn partition_counts(&self) -> std::collections::BTreeMap<String, u32> {
        let st = self.state.lock().unwrap();
        st.topics.iter().map(|(t, ps)| (t.clone(), ps.len() as u32)).collect()
    }

    fn new() -> Arc<Self> {
        let shared = Arc::new(Shared {
            state: Mutex::new(State { default_leader: 1, ..State::default() }),
            appended: Notify::new(),
            groups: groups::Groups::default(),
            brokers: Mutex::new(Vec::new()),
            next_producer_id: std::sync::atomic::AtomicU64::new(1000),
            no_controller: AtomicBool::new(false),
            duplicates: AtomicU64::new(0),
        });
        let ticker = Arc::downgrade(&shared);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(20)).await;
                let Some(s) = ticker.upgrade() else { return };
                s.groups.tick(&s.partition_counts());
            }
        });
        shared
    }
}

/// One broker's own state and fault knobs.
#[derive(Default)]
struct Node {
    id: u32,
    conns: Mutex<Vec<quinn::Connection>>,
    /// The next this many produce requests are applied, then the connection
    /// is closed instead of answered (a failure after the write).
    drop_after_append: AtomicU32,
    /// Answers SHUTTING_DOWN to everything while set.
    shutting_down: AtomicBool,
    /// Produce requests received.
    produce_requests: AtomicU64,
    /// Produce batches this broker appended as the leader.
    appended_batches: AtomicU64,
}

/// An in-memory broker on 127.0.0.1 with an ephemeral port, alone or one of a
/// [`TestCluster`].
pub(crate) struct TestBroker {
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    node: Arc<Node>,
    endpoint: quinn::Endpoint,
    dir: PathBuf,
}

impl Drop for TestBroker {
    fn drop(&mut self) {
        self.endpoint.close(0u32.into(), b"test over");
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Brokers with ids 1..=n sharing one cluster state; broker 1 leads every
/// partition until the test moves leaders.
pub(crate) struct TestCluster {
    pub brokers: Vec<TestBroker>,
}

impl TestCluster {
    pub async fn start(n: u32) -> Self {
        let shared = Shared::new();
        let mut brokers = Vec::new();
        for id in 1..=n {
            brokers.push(TestBroker::start_in(shared.clone(), id).await);
        }
        TestCluster { brokers }
    }

    /// Broker `id` (1-based).
    pub fn broker(&self, id: u32) -> &TestBroker {
        &self.brokers[(id - 1) as usize]
    }

    /// A client configuration listing every broker as bootstrap.
    pub fn config(&self) -> crate::ClientConfig {
        let list: Vec<String> = self.brokers.iter().map(|b| b.addr.to_string()).collect();
        crate::ClientConfig::new(list.join(",")).ca_file(self.brokers[0].ca_file())
    }

    /// Makes broker `leader` (0: none) the leader of `topic`/`partition`.
    pub fn set_leader(&self, topic: &str, partition: u32, leader: u32) {
        let mut st = self.brokers[0].shared.state.lock().unwrap();
        st.leaders.insert((topic.to_string(), partition), leader);
    }

    /// Makes broker `leader` the leader of every partition not set otherwise.
    pub fn set_default_leader(&self, leader: u32) {
        let mut st = self.brokers[0].shared.state.lock().unwrap();
        st.default_leader = leader;
        st.leaders.clear();
    }

    /// Control-plane requests get NOT_CONTROLLER while `down`.
    pub fn set_controller_down(&self, down: bool) {
        self.brokers[0].shared.no_controller.store(down, Ordering::SeqCst);
    }

    /// Resends recognised as duplicates so far, over the cluster.
    pub fn duplicates(&self) -> u64 {
        self.brokers[0].shared.duplicates.load(Ordering::SeqCst)
    }

    /// Every record value of a partition in log order.
    pub fn values(&self, topic: &str, partition: u32) -> Vec<Bytes> {
        self.brokers[0].values(topic, partition)
    }
}

type Reply = Option<(u16, Bytes)>;

fn ok<T: Wire>(body: &T) -> Reply {
    Some((0, to_bytes(body)))
}

fn fail(code: ErrorCode, message: &str) -> Reply {
    Some((code as u16, to_bytes(&ErrorResponse::message(message))))
}

fn metadata_of(name: &str, parts: &[Part], st: &State) -> TopicMetadata {
    TopicMetadata {
        name: name.to_string(),
        replication_factor: 1,
        min_insync_replicas: 1,
        retention_ms: None,
        retention_bytes: None,
        partitions: parts
            .iter()
            .enumerate()
            .map(|(i, p)| {
                let leader = st.leader(name, i as u32);
                PartitionMetadata {
                    partition: i as u32,
                    leader,
                    leader_epoch: 0,
                    replicas: vec![leader],
                    isr: vec![leader],
                    log_start: p.log_start,
                    log_end: p.log_end,
                    size_bytes: p.batches.iter().map(|b| b.2.len() as u64).sum(),
                }
            })
            .collect(),
    }
}

impl TestBroker {
    /// A single broker (id 1) that leads every partition.
    pub async fn start() -> Self {
        Self::start_in(Shared::new(), 1).await
    }

    async fn start_in(shared: Arc<Shared>, id: u32) -> Self {
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("eddy-sdk-test-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("ca.pem"), CERT_PEM).unwrap();
        std::fs::write(dir.join("wrong-ca.pem"), OTHER_CERT_PEM).unwrap();

        let certs: Vec<CertificateDer<'static>> =
            CertificateDer::pem_slice_iter(CERT_PEM.as_bytes()).collect::<Result<_, _>>().unwrap();
        let key = PrivateKeyDer::from_pem_slice(KEY_PEM.as_bytes()).unwrap();
        let mut tls = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_protocol_versions(&[&rustls::version::TLS13])
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .unwrap();
        tls.alpn_protocols = vec![frame::ALPN.to_vec()];
        let crypto = quinn::crypto::rustls::QuicServerConfig::try_from(tls).unwrap();
        let mut server = quinn::ServerConfig::with_crypto(Arc::new(crypto));
        let mut transport = quinn::TransportConfig::default();
        transport.stream_receive_window((8u32 * 1024 * 1024).into());
        server.transport_config(Arc::new(transport));
        let endpoint = quinn::Endpoint::server(server, "127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = endpoint.local_addr().unwrap();
        shared.brokers.lock().unwrap().push(BrokerInfo { id, addr: addr.to_string() });
        let node = Arc::new(Node { id, ..Node::default() });
        let accept = endpoint.clone();
        let (s, nd) = (shared.clone(), node.clone());
        tokio::spawn(async move {
            while let Some(incoming) = accept.accept().await {
                let (s, nd) = (s.clone(), nd.clone());
                tokio::spawn(async move {
                    let Ok(conn) = incoming.await else { return };
                    nd.conns.lock().unwrap().push(conn.clone());
                    while let Ok((send, recv)) = conn.accept_bi().await {
                        tokio::spawn(serve_stream(send, recv, s.clone(), nd.clone(), conn.clone()));
                    }
                });
            }
        });
        TestBroker { addr, shared, node, endpoint, dir }
    }

    pub fn ca_file(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }

    pub fn wrong_ca_file(&self) -> PathBuf {
        self.dir.join("wrong-ca.pem")
    }

    pub fn config(&self) -> crate::ClientConfig {
        crate::ClientConfig::new(self.addr.to_string()).ca_file(self.ca_file())
    }

    /// Closes every connection from the broker side.
    pub fn kill_connections(&self) {
        for c in self.node.conns.lock().unwrap().drain(..) {
            c.close(7u32.into(), b"killed by test");
        }
    }

    /// Stops the broker for good: its connections close and its port answers
    /// nothing from now on.
    pub fn kill(&self) {
        self.kill_connections();
        self.endpoint.close(7u32.into(), b"killed by test");
    }

    /// The next `n` produce requests are applied and then the connection is
    /// closed without an answer.
    pub fn drop_after_append(&self, n: u32) {
        self.node.drop_after_append.store(n, Ordering::SeqCst);
    }

    /// Answers SHUTTING_DOWN to every request while `on`.
    pub fn set_shutting_down(&self, on: bool) {
        self.node.shutting_down.store(on, Ordering::SeqCst);
    }

    /// Produce requests this broker received.
    pub fn produce_requests(&self) -> u64 {
        self.node.produce_requests.load(Ordering::SeqCst)
    }

    /// Batches this broker appended as a leader.
    pub fn appended_batches(&self) -> u64 {
        self.node.appended_batches.load(Ordering::SeqCst)
    }

    /// Drops the batches of a partition that end at or before `offset` (retention).
    pub fn trim(&self, topic: &str, partition: u32, offset: u64) {
        let mut st = self.shared.state.lock().unwrap();
        let part = &mut st.topics.get_mut(topic).unwrap()[partition as usize];
        part.batches.retain(|b| b.1 > offset);
        part.log_start = part.batches.first().map_or(part.log_end, |b| b.0);
    }

    /// Each member's partitions in a group's current generation (empty while it rebalances).
    pub fn assignments(
        &self,
        group: &str,
    ) -> std::collections::BTreeMap<String, std::collections::BTreeSet<(String, u32)>> {
        self.shared.groups.assignments(group)
    }

    /// A group's committed offset for a partition.
    pub fn committed(&self, group: &str, topic: &str, partition: u32) -> Option<u64> {
        self.shared.groups.committed(group, topic, partition)
    }

    /// Log end offsets of a topic's partitions.
    pub fn log_ends(&self, topic: &str) -> Vec<u64> {
        let st = self.shared.state.lock().unwrap();
        st.topics.get(topic).map(|ps| ps.iter().map(|p| p.log_end).collect()).unwrap_or_default()
    }

    /// Every record value of a partition in log order.
    pub fn values(&self, topic: &str, partition: u32) -> Vec<Bytes> {
        let st = self.shared.state.lock().unwrap();
        let part = &st.topics[topic][partition as usize];
        part.batches
            .iter()
            .flat_map(|(_, _, b)| BatchView::trusted(b.clone()).unwrap().records().map(|r| r.unwrap().value))
            .collect()
    }
}

async fn serve_stream(
    mut send: quinn::SendStream,
    mut recv: quinn::RecvStream,
    shared: Arc<Shared>,
    node: Arc<Node>,
    conn: quinn::Connection,
) {
    loop {
        let mut len = [0u8; 4];
        if recv.read_exact(&mut len).await.is_err() {
            let _ = send.finish();
            return;
        }
        let len = u32::from_le_bytes(len);
        if frame::check_length(len, frame::REQUEST_HEADER_BYTES).is_err() {
            return;
        }
        let mut body = vec![0u8; len as usize];
        if recv.read_exact(&mut body).await.is_err() {
            return;
        }
        let Ok((header, payload)) = frame::split_request(Bytes::from(body)) else {
            return;
        };
        let reply = if node.shutting_down.load(Ordering::SeqCst) {
            fail(ErrorCode::ShuttingDown, "shutting down")
        } else {
            handle(&shared, &node, header.api_key, payload).await
        };
        if header.api_key == ApiKey::Produce as u16 {
            let drop_now =
                node.drop_after_append.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1)).is_ok();
            if drop_now {
                conn.close(9u32.into(), b"dropped after append by test");
                return;
            }
        }
        if let Some((code, body)) = reply {
            if send.write_all(&frame::response_frame(code, &body)).await.is_err() {
                return;
            }
        }
    }
}

/// The reply of a partition request to a broker that does not lead it.
fn leader_refusal(st: &State, node: &Node, topic: &str, partition: u32) -> Option<Reply> {
    match st.leader(topic, partition) {
        l if l == node.id => None,
        0 if st.topics.contains_key(topic) => Some(fail(ErrorCode::LeaderNotAvailable, "no leader")),
        _ if st.topics.contains_key(topic) => Some(fail(ErrorCode::NotLeader, "not the leader")),
        _ => None,
    }
}

async fn handle(shared: &Shared, node: &Node, api_key: u16, payload: Bytes) -> Reply {
    let malformed = |e: eddy_protocol::DecodeError| fail(ErrorCode::MalformedRequest, &e.to_string());
    let key = ApiKey::from_u16(api_key);
    let control_plane = !matches!(key, Some(ApiKey::Produce | ApiKey::Fetch | ApiKey::ListOffsets | ApiKey::Metadata));
    if control_plane && shared.no_controller.load(Ordering::SeqCst) {
        return fail(ErrorCode::NotController, "no controller");
    }
    match key {
        Some(ApiKey::Produce) => match from_bytes::<ProduceRequest>(payload) {
            Ok(req) => produce(shared, node, req),
            Err(e) => malformed(e),
        },
        Some(ApiKey::Fetch) => match from_bytes::<FetchRequest>(payload) {
            Ok(req) => fetch(shared, node, req).await,
            Err(e) => malformed(e),
        },
        Some(ApiKey::ListOffsets) => {
            let req = match from_bytes::<ListOffsetsRequest>(payload) {
                Ok(r) => r,
                Err(e) => return malformed(e),
            };
            let st = shared.state.lock().unwrap();
            if let Some(refusal) = leader_refusal(&st, node, &req.topic, req.partition) {
                return refusal;
            }
            let Some(parts) = st.topics.get(&req.topic) else {
                return fail(ErrorCode::UnknownTopic, "no topic");
            };
            let Some(p) = parts.get(req.partition as usize) else {
                return fail(ErrorCode::UnknownPartition, "no partition");
            };
            let offset = match req.spec {
                OffsetSpec::Earliest => p.log_start,
                OffsetSpec::Latest => p.log_end,
            };
            ok(&ListOffsetsResponse { offset })
        }
        Some(ApiKey::InitProducerId) => match from_bytes::<InitProducerIdRequest>(payload) {
            Ok(_) => {
                ok(&InitProducerIdResponse { producer_id: shared.next_producer_id.fetch_add(1, Ordering::SeqCst) })
            }
            Err(e) => malformed(e),
        },
        Some(ApiKey::Metadata) => {
            let req = match from_bytes::<MetadataRequest>(payload) {
                Ok(r) => r,
                Err(e) => return malformed(e),
            };
            let st = shared.state.lock().unwrap();
            let mut topics: Vec<TopicMetadata> = st
                .topics
                .iter()
                .filter(|(name, _)| req.topics.as_ref().is_none_or(|t| t.contains(name)))
                .map(|(name, parts)| metadata_of(name, parts, &st))
                .collect();
            topics.sort_by(|a, b| a.name.cmp(&b.name));
            let brokers = shared.brokers.lock().unwrap().clone();
            ok(&MetadataResponse { brokers, controller: 1, topics })
        }
        Some(ApiKey::CreateTopic) => {
            let req = match from_bytes::<CreateTopicRequest>(payload) {
                Ok(r) => r,
                Err(e) => return malformed(e),
            };
            let mut st = shared.state.lock().unwrap();
            if st.topics.contains_key(&req.name) {
                return fail(ErrorCode::TopicAlreadyExists, "exists");
            }
            if req.partitions == 0 {
                return fail(ErrorCode::InvalidPartitions, "zero partitions");
            }
            let parts: Vec<Part> = (0..req.partitions).map(|_| Part::default()).collect();
            let meta = metadata_of(&req.name, &parts, &st);
            st.topics.insert(req.name, parts);
            ok(&meta)
        }
        Some(ApiKey::DeleteTopic) => {
            let req = match from_bytes::<DeleteTopicRequest>(payload) {
                Ok(r) => r,
                Err(e) => return malformed(e),
            };
            match shared.state.lock().unwrap().topics.remove(&req.name) {
                Some(_) => ok(&Empty),
                None => fail(ErrorCode::UnknownTopic, "no topic"),
            }
        }
        Some(ApiKey::CreatePartitions) => {
            let req = match from_bytes::<CreatePartitionsRequest>(payload) {
                Ok(r) => r,
                Err(e) => return malformed(e),
            };
            let mut guard = shared.state.lock().unwrap();
            let st = &mut *guard;
            let Some(parts) = st.topics.get_mut(&req.name) else {
                return fail(ErrorCode::UnknownTopic, "no topic");
            };
            if (req.count as usize) < parts.len() {
                return fail(ErrorCode::InvalidPartitions, "shrink");
            }
            parts.resize_with(req.count as usize, Part::default);
            let st = &*guard;
            ok(&metadata_of(&req.name, &st.topics[&req.name], st))
        }
        Some(ApiKey::JoinGroup) => match from_bytes::<JoinGroupRequest>(payload) {
            Ok(req) => group_reply(shared.groups.join(req, &shared.partition_counts()).await),
            Err(e) => malformed(e),
        },
        Some(ApiKey::Heartbeat) => match from_bytes::<HeartbeatRequest>(payload) {
            Ok(req) => group_reply(shared.groups.heartbeat(req).await.map(|()| Empty)),
            Err(e) => malformed(e),
        },
        Some(ApiKey::LeaveGroup) => match from_bytes::<LeaveGroupRequest>(payload) {
            Ok(req) => group_reply(shared.groups.leave(req, &shared.partition_counts()).map(|()| Empty)),
            Err(e) => malformed(e),
        },
        Some(ApiKey::OffsetCommit) => match from_bytes::<OffsetCommitRequest>(payload) {
            Ok(req) => group_reply(shared.groups.commit(req, &shared.partition_counts()).map(|()| Empty)),
            Err(e) => malformed(e),
        },
        Some(ApiKey::OffsetFetch) => match from_bytes::<OffsetFetchRequest>(payload) {
            Ok(req) => ok(&shared.groups.fetch_offsets(req)),
            Err(e) => malformed(e),
        },
        // Not simulated: group listing and description, the processor API.
        _ => fail(ErrorCode::UnknownApiKey, "unknown key"),
    }
}

fn group_reply<T: Wire>(result: Result<T, groups::Refusal>) -> Reply {
    match result {
        Ok(body) => ok(&body),
        Err((code, message)) => fail(code, &message),
    }
}

fn produce(shared: &Shared, node: &Node, req: ProduceRequest) -> Reply {
    node.produce_requests.fetch_add(1, Ordering::SeqCst);
    let limits = BatchLimits { max_batch_bytes: 8 << 20, max_record_bytes: 1 << 20 };
    let mut guard = shared.state.lock().unwrap();
    let st = &mut *guard;
    if !st.topics.contains_key(&req.topic) {
        return if req.acks == Acks::None { None } else { fail(ErrorCode::UnknownTopic, "no such topic") };
    }
    let mut out = Vec::new();
    let mut appended = false;
    for pb in req.partitions {
        let mut outcome = PartitionProduceResponse {
            partition: pb.partition,
            error_code: 0,
            error_message: String::new(),
            base_offset: 0,
        };
        let leader = st.leader(&req.topic, pb.partition);
        let parts = st.topics.get_mut(&req.topic).expect("checked above");
        match (parts.get_mut(pb.partition as usize), BatchView::validate(pb.batch.clone(), limits)) {
            (None, _) => {
                outcome.error_code = ErrorCode::UnknownPartition as u16;
                outcome.error_message = "no such partition".into();
            }
            (_, Err(e)) => {
                outcome.error_code = ErrorCode::CorruptBatch as u16;
                outcome.error_message = e.to_string();
            }
            (Some(_), Ok(_)) if leader != node.id => {
                let code = if leader == 0 { ErrorCode::LeaderNotAvailable } else { ErrorCode::NotLeader };
                outcome.error_code = code as u16;
                outcome.error_message = "not the leader".into();
            }
            (Some(p), Ok(view)) => {
                let count = view.record_count();
                let seq = view.base_sequence();
                let producer = (view.producer_id() != 0).then(|| (view.producer_id(), req.topic.clone(), pb.partition));
                let known = producer.as_ref().map(|k| st.producers.entry(k.clone()).or_default());
                let duplicate = known.as_ref().and_then(|s| s.recent.iter().find(|r| r.0 == seq && r.1 == count));
                match (duplicate, known.as_ref().map(|s| s.next)) {
                    (Some(&(_, _, base)), _) => {
                        shared.duplicates.fetch_add(1, Ordering::SeqCst);
                        outcome.base_offset = base;
                    }
                    (None, Some(next)) if next != seq => {
                        outcome.error_code = ErrorCode::OutOfOrderSequence as u16;
                        outcome.error_message = format!("expected sequence {next}, got {seq}");
                    }
                    _ => {
                        let base = p.log_end;
                        let mut raw = BytesMut::from(&pb.batch[..]);
                        stamp_base_offset(&mut raw, base);
                        p.log_end = base + u64::from(count);
                        p.batches.push((base, p.log_end, raw.freeze()));
                        outcome.base_offset = base;
                        node.appended_batches.fetch_add(1, Ordering::SeqCst);
                        appended = true;
                        if let Some(s) = producer.and_then(|k| st.producers.get_mut(&k)) {
                            s.next = seq.wrapping_add(count);
                            s.recent.push_back((seq, count, base));
                            if s.recent.len() > RECENT_BATCHES {
                                s.recent.pop_front();
                            }
                        }
                    }
                }
            }
        }
        out.push(outcome);
    }
    drop(guard);
    if appended {
        shared.appended.notify_waiters();
    }
    if req.acks == Acks::None {
        None
    } else {
        ok(&ProduceResponse { partitions: out })
    }
}

async fn fetch(shared: &Shared, node: &Node, req: FetchRequest) -> Reply {
    let deadline = tokio::time::Instant::now() + Duration::from_millis(u64::from(req.max_wait_ms));
    loop {
        let notified = shared.appended.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        {
            let st = shared.state.lock().unwrap();
            if let Some(refusal) = leader_refusal(&st, node, &req.topic, req.partition) {
                return refusal;
            }
            let Some(parts) = st.topics.get(&req.topic) else {
                return fail(ErrorCode::UnknownTopic, "no topic");
            };
            let Some(p) = parts.get(req.partition as usize) else {
                return fail(ErrorCode::UnknownPartition, "no partition");
            };
            if req.offset < p.log_start || req.offset > p.log_end {
                let body = ErrorResponse {
                    message: "out of range".into(),
                    log_start: Some(p.log_start),
                    log_end: Some(p.log_end),
                };
                return Some((ErrorCode::OffsetOutOfRange as u16, to_bytes(&body)));
            }
            let mut records = BytesMut::new();
            for (_, next, bytes) in &p.batches {
                if *next <= req.offset {
                    continue;
                }
                if !records.is_empty() && records.len() + bytes.len() > req.max_bytes as usize {
                    break;
                }
                records.extend_from_slice(bytes);
            }
            if !records.is_empty() || tokio::time::Instant::now() >= deadline {
                let resp =
                    FetchResponse { high_watermark: p.log_end, log_start: p.log_start, records: records.freeze() };
                return ok(&resp);
            }
        }
        // A leader change also ends the wait (a poll of the state every 50 ms).
        let wake = deadline.min(tokio::time::Instant::now() + Duration::from_millis(50));
        let _ = tokio::time::timeout_at(wake, notified).await;
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use eddy_protocol::partition::partition_for_key;

    use super::*;
    use crate::*;

    async fn connect(b: &TestBroker) -> Client {
        Client::connect(b.config()).await.unwrap()
    }

    #[tokio::test]
    async fn wrong_ca_or_name_is_a_clear_tls_error() {
        let b = TestBroker::start().await;
        let err = Client::connect(ClientConfig::new(b.addr.to_string()).ca_file(b.wrong_ca_file())).await.unwrap_err();
        assert!(matches!(err, ClientError::Tls { .. }), "{err}");
        assert!(err.to_string().contains("--ca"), "{err}");
        eprintln!("wrong CA: {err}");
        let err = Client::connect(b.config().server_name("eddy.example")).await.unwrap_err();
        eprintln!("wrong name: {err}");
        assert!(matches!(err, ClientError::Tls { .. }), "{err}");
        // The right CA works, by IP and by name.
        Admin::new(connect(&b).await).list_topics().await.unwrap();
        let by_name = ClientConfig::new(format!("localhost:{}", b.addr.port())).ca_file(b.ca_file());
        Admin::new(Client::connect(by_name).await.unwrap()).list_topics().await.unwrap();
    }

    #[tokio::test]
    async fn silent_port_is_a_connect_error() {
        let b = TestBroker::start().await;
        let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let cfg = ClientConfig::new(silent.local_addr().unwrap().to_string())
            .ca_file(b.ca_file())
            .connect_timeout(Duration::from_millis(300));
        let err = Client::connect(cfg).await.unwrap_err();
        assert!(matches!(err, ClientError::Connect { .. }), "{err}");
        eprintln!("silent port: {err}");
    }

    #[tokio::test]
    async fn admin_round_trip() {
        let b = TestBroker::start().await;
        let admin = Admin::new(connect(&b).await);
        let t = admin.create_topic(NewTopic::new("a", 3)).await.unwrap();
        assert_eq!(t.partitions.len(), 3);
        let err = admin.create_topic(NewTopic::new("a", 3)).await.unwrap_err();
        assert_eq!(err.code(), Some(ErrorCode::TopicAlreadyExists));
        assert_eq!(admin.list_topics().await.unwrap().len(), 1);
        assert_eq!(admin.describe_topic("a").await.unwrap().name, "a");
        assert_eq!(admin.describe_topic("zz").await.unwrap_err().code(), Some(ErrorCode::UnknownTopic));
        assert_eq!(admin.create_partitions("a", 5).await.unwrap().partitions.len(), 5);
        assert_eq!(admin.list_offset("a", 4, OffsetSpec::Latest).await.unwrap(), 0);
        assert_eq!(admin.metadata().await.unwrap().brokers.len(), 1);
        admin.delete_topic("a").await.unwrap();
        assert_eq!(admin.delete_topic("a").await.unwrap_err().code(), Some(ErrorCode::UnknownTopic));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn produced_records_come_back_in_order() {
        let b = TestBroker::start().await;
        let client = connect(&b).await;
        Admin::new(client.clone()).create_topic(NewTopic::new("t", 4)).await.unwrap();
        let producer = Producer::new(client.clone(), ProducerConfig::default()).await.unwrap();
        let total = 20_000u64;
        let mut futures = Vec::new();
        for i in 0..total {
            let mut r = ProducerRecord::new("t", format!("value-{i}")).header("i", i.to_string());
            match i % 3 {
                0 => r = r.key(format!("key-{}", i % 50)),
                1 => r = r.partition((i % 4) as u32),
                _ => {}
            }
            futures.push((i, producer.send(r).await.unwrap()));
        }
        producer.flush().await.unwrap();
        let mut by_offset = BTreeMap::new();
        for (i, f) in futures {
            let meta = f.await.unwrap();
            if i % 3 == 0 {
                assert_eq!(meta.partition, partition_for_key(format!("key-{}", i % 50).as_bytes(), 4));
            }
            if i % 3 == 1 {
                assert_eq!(meta.partition, (i % 4) as u32);
            }
            assert!(by_offset.insert((meta.partition, meta.offset.unwrap()), i).is_none());
        }
        let ends = b.log_ends("t");
        assert_eq!(ends.iter().sum::<u64>(), total);
        for (p, end) in ends.iter().enumerate() {
            let offsets: Vec<u64> = by_offset.keys().filter(|k| k.0 == p as u32).map(|k| k.1).collect();
            assert_eq!(offsets, (0..*end).collect::<Vec<_>>(), "partition {p} offsets not dense");
        }
        producer.close().await.unwrap();

        let mut consumer = Consumer::new(client, ConsumerConfig::default());
        assert_eq!(consumer.assign_all("t", StartOffset::Earliest).await.unwrap(), vec![0, 1, 2, 3]);
        let mut got = 0u64;
        let mut next = [0u64; 4];
        while got < total {
            let records = consumer.poll(Duration::from_secs(5)).await.unwrap();
            assert!(!records.is_empty(), "timed out after {got} records");
            for r in records {
                assert_eq!(r.offset, next[r.partition as usize], "partition {} out of order", r.partition);
                next[r.partition as usize] += 1;
                let i = by_offset[&(r.partition, r.offset)];
                assert_eq!(r.value, Bytes::from(format!("value-{i}")));
                assert_eq!(r.headers[0].value, Bytes::from(i.to_string()));
                got += 1;
            }
        }
        for p in 0..4u32 {
            assert_eq!(consumer.position("t", p), Some(ends[p as usize]));
        }
        assert!(consumer.poll(Duration::from_millis(50)).await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn acks_none_completes_on_write_and_close_delivers_everything() {
        let b = TestBroker::start().await;
        let client = connect(&b).await;
        Admin::new(client.clone()).create_topic(NewTopic::new("n", 2)).await.unwrap();
        let config = ProducerConfig { acks: Acks::None, ..ProducerConfig::default() };
        let producer = Producer::new(client, config).await.unwrap();
        let mut futures = Vec::new();
        for i in 0..1000 {
            futures.push(producer.send(ProducerRecord::new("n", format!("{i}"))).await.unwrap());
        }
        producer.clone().close().await.unwrap();
        for f in futures {
            assert_eq!(f.await.unwrap().offset, None);
        }
        assert_eq!(b.log_ends("n").iter().sum::<u64>(), 1000);
        let err = producer.send(ProducerRecord::new("n", "late")).await.unwrap_err();
        assert!(matches!(err, ClientError::ProducerClosed));
    }

    #[tokio::test]
    async fn bad_destinations_fail_their_records_only() {
        let b = TestBroker::start().await;
        let client = connect(&b).await;
        Admin::new(client.clone()).create_topic(NewTopic::new("x", 2)).await.unwrap();
        let producer = Producer::new(client, ProducerConfig::default()).await.unwrap();
        let missing = producer.send(ProducerRecord::new("missing", "v")).await.unwrap();
        let bad_partition = producer.send(ProducerRecord::new("x", "v").partition(7)).await.unwrap();
        let good = producer.send(ProducerRecord::new("x", "v").partition(1)).await.unwrap();
        assert_eq!(missing.await.unwrap_err().code(), Some(ErrorCode::UnknownTopic));
        assert_eq!(bad_partition.await.unwrap_err().code(), Some(ErrorCode::UnknownPartition));
        assert_eq!(good.await.unwrap(), RecordMetadata { partition: 1, offset: Some(0) });
        let err = producer.send(ProducerRecord::new("x", vec![0u8; 2 << 20])).await.unwrap_err();
        assert!(matches!(err, ClientError::RecordTooLarge { .. }), "{err}");
        // Nothing else is left pending: flush returns.
        producer.flush().await.unwrap();
    }

    #[tokio::test]
    async fn client_and_producer_reconnect_after_the_connection_dies() {
        let b = TestBroker::start().await;
        let client = connect(&b).await;
        let admin = Admin::new(client.clone());
        admin.create_topic(NewTopic::new("r", 1)).await.unwrap();
        let producer = Producer::new(client.clone(), ProducerConfig::default()).await.unwrap();
        producer.send_and_wait(ProducerRecord::new("r", "before")).await.unwrap();
        b.kill_connections();
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(admin.list_topics().await.unwrap().len(), 1);
        let meta = producer.send_and_wait(ProducerRecord::new("r", "after")).await.unwrap();
        // A closed client reconnects on its next call.
        client.close().await;
        assert_eq!(admin.list_topics().await.unwrap().len(), 1);
        assert_eq!(meta.offset, Some(1));
        producer.close().await.unwrap();
    }

    #[tokio::test]
    async fn out_of_range_positions_follow_the_reset_policy() {
        let b = TestBroker::start().await;
        let client = connect(&b).await;
        Admin::new(client.clone()).create_topic(NewTopic::new("o", 1)).await.unwrap();
        let producer = Producer::new(client.clone(), ProducerConfig::default()).await.unwrap();
        for i in 0..10 {
            producer.send_and_wait(ProducerRecord::new("o", format!("{i}"))).await.unwrap();
        }
        b.trim("o", 0, 5);

        let mut earliest = Consumer::new(client.clone(), ConsumerConfig::default());
        earliest.assign("o", 0, StartOffset::At(1)).await.unwrap();
        let records = earliest.poll(Duration::from_secs(5)).await.unwrap();
        assert_eq!(records.first().map(|r| r.offset), Some(5));
        assert_eq!(earliest.position("o", 0), Some(10));

        let strict = ConsumerConfig { offset_reset: OffsetReset::None, ..ConsumerConfig::default() };
        let mut strict = Consumer::new(client.clone(), strict);
        strict.assign("o", 0, StartOffset::At(1)).await.unwrap();
        let err = strict.poll(Duration::from_secs(5)).await.unwrap_err();
        assert_eq!(err.code(), Some(ErrorCode::OffsetOutOfRange));
        assert!(strict.poll(Duration::from_millis(50)).await.unwrap().is_empty());

        // Latest: only new records, delivered by the long poll.
        let mut latest = Consumer::new(client.clone(), ConsumerConfig::default());
        latest.assign("o", 0, StartOffset::Latest).await.unwrap();
        assert!(latest.poll(Duration::from_millis(100)).await.unwrap().is_empty());
        producer.send_and_wait(ProducerRecord::new("o", "new")).await.unwrap();
        let records = latest.poll(Duration::from_secs(5)).await.unwrap();
        assert_eq!(records.iter().map(|r| r.offset).collect::<Vec<_>>(), vec![10]);
        latest.unassign("o", 0);
        assert!(latest.assignment().is_empty());
        assert_eq!(latest.position("o", 0), None);

        let mut unknown = Consumer::new(client, ConsumerConfig::default());
        unknown.assign("o", 0, StartOffset::At(0)).await.unwrap();
        unknown.assign("nope", 0, StartOffset::At(0)).await.unwrap();
        let mut saw_unknown = false;
        for _ in 0..5 {
            if let Err(e) = unknown.poll(Duration::from_secs(1)).await {
                assert_eq!(e.code(), Some(ErrorCode::UnknownTopic));
                saw_unknown = true;
            }
        }
        assert!(saw_unknown);
        producer.close().await.unwrap();
    }
}
