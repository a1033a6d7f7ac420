//! A running broker: opens the store, loads or makes the TLS identity, joins
//! the cluster's metadata quorum, serves QUIC, replicates partitions,
//! enforces retention in the background, and shuts down cleanly.
//!
//! Shutdown order: stop accepting connections and streams, let in-flight
//! requests finish (long polls return early), commit everything queued, close
//! the database, close the endpoint.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::{info, warn};

use crate::auth::bootstrap::BootstrapConfig;
use crate::auth::denials::DenialLog;
use crate::auth::Authorizer;
use crate::cluster::{Cluster, ClusterConfig, ClusterError};
use crate::groups::GroupService;
use crate::replication::{ReplicaManager, ReplicationConfig};
use crate::server::handlers::{AuthContext, HandlerConfig, Handlers};
use crate::store::{store_path, DurabilityPolicy, Store, StoreConfig, StoreError};
use crate::tls::{self, TlsError};
use eddy_protocol::limits::{DEFAULT_MAX_BATCH_BYTES, DEFAULT_MAX_RECORD_BYTES, MAX_FRAME_BYTES};
use eddy_runtime::{Runtime, RuntimeError};

/// Everything a broker needs to start.
#[derive(Debug, Clone)]
pub struct BrokerConfig {
    /// This broker's id.
    pub broker_id: u32,
    /// Directory for the database and TLS files.
    pub data_dir: PathBuf,
    /// UDP address to listen on (port 0 picks a free port).
    pub listen: SocketAddr,
    /// Address clients should use, if different from the bound address.
    pub advertised_addr: Option<String>,
    /// Certificate and key to use instead of the generated ones.
    pub tls_cert: Option<(PathBuf, PathBuf)>,
    /// With `tls_cert`: the CA file the other brokers' certificates verify
    /// against (default: the certificate file itself).
    pub tls_peer_ca: Option<PathBuf>,
    /// A cluster CA (certificate, key) that signs this broker's certificate
    /// on first start; every broker of a cluster is given the same one.
    pub tls_ca: Option<(PathBuf, PathBuf)>,
    /// Every broker of the cluster, this one included: id -> `host:port`
    /// (empty: a single-broker cluster of this broker alone).
    pub peers: BTreeMap<u32, String>,
    /// A broker silent for this long is dead for the controller.
    pub session_timeout: Duration,
    /// How often brokers heartbeat the controller.
    pub heartbeat_interval: Duration,
    /// Replication settings (ISR lag time).
    pub replication: ReplicationConfig,
    /// When acknowledged writes reach the disk.
    pub durability: DurabilityPolicy,
    /// Largest batch accepted.
    pub max_batch_bytes: u32,
    /// Largest record accepted.
    pub max_record_bytes: u32,
    /// How often retention runs.
    pub retention_check_interval: Duration,
    /// Users that may do anything (besides the brokers themselves).
    pub superusers: Vec<String>,
    /// Benchmarks only: skip every authorization check (authentication
    /// stays on). Hidden flag `--bench-skip-authorization`.
    pub skip_authorization: bool,
    /// The first superuser's password file (else a random password is
    /// written to `<data-dir>/admin.password` on a new cluster's first start).
    pub admin_password_file: Option<PathBuf>,
}

/// The default client port.
pub const DEFAULT_PORT: u16 = 9400;

impl BrokerConfig {
    /// Defaults for a single local broker with data in `data_dir`.
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        Self {
            broker_id: 1,
            data_dir: data_dir.into(),
            listen: SocketAddr::from(([127, 0, 0, 1], DEFAULT_PORT)),
            advertised_addr: None,
            tls_cert: None,
            tls_peer_ca: None,
            tls_ca: None,
            peers: BTreeMap::new(),
            session_timeout: Duration::from_millis(1000),
            heartbeat_interval: Duration::from_millis(100),
            replication: ReplicationConfig::default(),
            durability: DurabilityPolicy::EveryCommit,
            max_batch_bytes: DEFAULT_MAX_BATCH_BYTES,
            max_record_bytes: DEFAULT_MAX_RECORD_BYTES,
            retention_check_interval: Duration::from_secs(30),
            superusers: vec![crate::auth::bootstrap::ADMIN_USER.to_string()],
            admin_password_file: None,
            skip_authorization: false,
        }
    }
}

/// Why a broker could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    /// The data directory or database could not be opened.
    #[error("storage: {0}")]
    Store(#[from] StoreError),
    /// The TLS identity could not be loaded or generated.
    #[error("TLS: {0}")]
    Tls(#[from] TlsError),
    /// The listen address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Listen { addr: SocketAddr, source: std::io::Error },
    /// The processor runtime (Wasm engine and module cache) could not be set up.
    #[error("processor runtime: {0}")]
    Runtime(#[from] RuntimeError),
    /// A setting is out of range.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// The metadata quorum could not start.
    #[error("cluster: {0}")]
    Cluster(#[from] ClusterError),
}

/// A broker serving requests. Dropping it without [`Broker::shutdown`] leaves
/// the tasks running until the runtime ends.
pub struct Broker {
    local_addr: SocketAddr,
    ca_path: PathBuf,
    cert_path: PathBuf,
    key_path: PathBuf,
    store: Arc<Store>,
    runtime: Arc<Runtime>,
    cluster: Arc<Cluster>,
    shutdown: watch::Sender<bool>,
    server: JoinHandle<()>,
    retention: JoinHandle<()>,
    group_ticker: JoinHandle<()>,
    background: Vec<JoinHandle<()>>,
}

/// How long a single-broker cluster may take to elect itself at start.
const SINGLE_NODE_READY_TIMEOUT: Duration = Duration::from_secs(15);

impl Broker {
    /// Opens storage, binds the endpoint and starts serving.
    pub async fn start(config: BrokerConfig) -> Result<Self, BrokerError> {
        if config.max_batch_bytes == 0 || config.max_batch_bytes > MAX_FRAME_BYTES / 2 {
            return Err(BrokerError::Config(format!(
                "max batch bytes {} must be between 1 and {}",
                config.max_batch_bytes,
                MAX_FRAME_BYTES / 2
            )));
        }
        std::fs::create_dir_all(&config.data_dir)
            .map_err(|e| StoreError::Storage(format!("cannot create {}: {e}", config.data_dir.display())))?;
        if config.broker_id == 0 {
            return Err(BrokerError::Config("broker ids start at 1 (0 means \"no broker\")".into()));
        }
        tls::restrict_data_dir(&config.data_dir)?;
        if !config.peers.is_empty() && !config.peers.contains_key(&config.broker_id) {
            return Err(BrokerError::Config(format!(
                "--peers does not list this broker (id {}); list every broker, this one included",
                config.broker_id
            )));
        }
        let multi = config.peers.len() > 1;
        if multi && config.tls_ca.is_none() && config.tls_cert.is_none() {
            return Err(BrokerError::Config(
                "a cluster of several brokers needs one CA for all of them: create one with `eddy ca create --out DIR` \
                 and give every broker --tls-ca-cert DIR/ca.pem --tls-ca-key DIR/ca.key (or --tls-cert/--tls-key \
                 signed by one CA, with --tls-peer-ca)"
                    .into(),
            ));
        }
        let mut names = Vec::new();
        if !config.listen.ip().is_unspecified() {
            names.push(config.listen.ip().to_string());
        }
        let own_addr = config.advertised_addr.clone().or_else(|| config.peers.get(&config.broker_id).cloned());
        if let Some(adv) = &own_addr {
            if let Some((host, _)) = adv.rsplit_once(':') {
                names.push(host.trim_matches(['[', ']']).to_string());
            }
        }
        let identity = match (&config.tls_cert, &config.tls_ca) {
            (Some((cert, key)), _) => {
                let mut identity = tls::load(cert, key)?;
                if let Some(ca) = &config.tls_peer_ca {
                    identity.ca_path = ca.clone();
                }
                identity
            }
            (None, Some((ca_cert, ca_key))) => {
                tls::load_or_issue(&config.data_dir, ca_cert, ca_key, &names, config.broker_id)?
            }
            (None, None) => {
                let mut names = Vec::new();
                if !config.listen.ip().is_unspecified() {
                    names.push(config.listen.ip().to_string());
                }
                if let Some(adv) = &config.advertised_addr {
                    if let Some((host, _)) = adv.rsplit_once(':') {
                        names.push(host.trim_matches(['[', ']']).to_string());
                    }
                }
                tls::load_or_generate(&config.data_dir, &names, config.broker_id)?
            }
        };
        tls::restrict_data_dir(&config.data_dir)?;
        if identity.broker_id() != Some(config.broker_id) {
            return Err(BrokerError::Config(format!(
                "the certificate {} does not prove broker {} (it needs the URI eddy:broker:{} among its subject \
                 alternative names, which brokers present to each other): issue one with `eddy ca issue-broker \
                 --ca-dir DIR --id {} --name HOST --out DIR`",
                identity.cert_path.display(),
                config.broker_id,
                config.broker_id,
                config.broker_id
            )));
        }
        let server_tls = tls::server_config(&identity)?;
        // Deploys validate (and compile) modules with it; an embedded worker
        // reuses it, so a module compiled at deploy time is not compiled again.
        let runtime = Arc::new(Runtime::new(Some(config.data_dir.join("wasm-cache")))?);
        let store = Arc::new(Store::open(StoreConfig {
            path: store_path(&config.data_dir),
            durability: config.durability,
            broker_id: config.broker_id,
        })?);
        let endpoint = crate::server::endpoint(config.listen, server_tls)
            .map_err(|source| BrokerError::Listen { addr: config.listen, source })?;
        let local_addr = endpoint.local_addr().map_err(|source| BrokerError::Listen { addr: config.listen, source })?;
        let advertised = own_addr.clone().unwrap_or_else(|| local_addr.to_string());
        let mut cluster_config =
            ClusterConfig::single(config.broker_id, advertised.clone(), config.data_dir.clone(), &identity);
        if !config.peers.is_empty() {
            cluster_config.brokers = config.peers.clone();
        }
        cluster_config.session_timeout = config.session_timeout;
        cluster_config.heartbeat_interval = config.heartbeat_interval;
        let cluster = Cluster::start(cluster_config, store.clone()).await?;
        let (shutdown, shutdown_rx) = watch::channel(false);
        let replicas = ReplicaManager::new(cluster.clone(), store.clone(), config.replication);
        let groups = GroupService::new(store.clone(), cluster.clone());
        let group_ticker = groups.spawn_ticker(shutdown_rx.clone());
        let handlers = Arc::new(Handlers::new(
            store.clone(),
            groups,
            runtime.clone(),
            replicas.clone(),
            HandlerConfig {
                broker_id: config.broker_id,
                advertised_addr: advertised,
                max_batch_bytes: config.max_batch_bytes,
                max_record_bytes: config.max_record_bytes,
            },
            AuthContext {
                authorizer: Authorizer::new(config.superusers.iter().cloned()),
                denials: DenialLog::default(),
                fake_salt_key: fake_salt_key(&identity),
                skip_authorization: config.skip_authorization,
            },
            shutdown_rx.clone(),
        ));
        let server = tokio::spawn(crate::server::serve(endpoint, handlers, shutdown_rx.clone()));
        let mut background = cluster.spawn(shutdown_rx.clone());
        background.push(replicas.spawn(shutdown_rx.clone()));
        let bootstrap = crate::auth::bootstrap::run(
            BootstrapConfig { data_dir: config.data_dir.clone(), password_file: config.admin_password_file.clone() },
            store.clone(),
            cluster.clone(),
            shutdown_rx.clone(),
        );
        if multi {
            background.push(tokio::spawn(bootstrap));
        } else if tokio::time::timeout(SINGLE_NODE_READY_TIMEOUT, bootstrap).await.is_err() {
            // A broker alone creates its superuser before it announces itself,
            // so that clients reading the password file can log in at once.
            warn!("the superuser could not be created yet");
        }
        let retention = tokio::spawn(retention_loop(store.clone(), config.retention_check_interval, shutdown_rx));
        if !multi {
            // A broker alone elects itself at once: be ready before announcing.
            let deadline = tokio::time::Instant::now() + SINGLE_NODE_READY_TIMEOUT;
            while !cluster.is_ready() && tokio::time::Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            if !cluster.is_ready() {
                warn!("the single-broker metadata quorum is not ready yet; requests may be refused for a moment");
            }
            replicas.reconcile();
        }
        // Tests and scripts started with port 0 read the bound address here.
        let addr_file = config.data_dir.join("broker.addr");
        if let Err(e) = std::fs::write(&addr_file, local_addr.to_string()) {
            warn!(file = %addr_file.display(), error = %e, "cannot write the address file");
        }
        if config.skip_authorization {
            warn!("--bench-skip-authorization: every authenticated principal may do anything (benchmarks only)");
        }
        crate::server::announce(config.broker_id, local_addr, &identity.ca_path);
        Ok(Self {
            local_addr,
            ca_path: identity.ca_path,
            cert_path: identity.cert_path,
            key_path: identity.key_path,
            store,
            runtime,
            cluster,
            shutdown,
            server,
            retention,
            group_ticker,
            background,
        })
    }

    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The CA certificate clients must trust.
    pub fn ca_path(&self) -> &std::path::Path {
        &self.ca_path
    }

    /// This broker's certificate and key files: a client certificate proving
    /// `Broker:<id>`, which the embedded processor worker connects with.
    pub fn certificate(&self) -> (&std::path::Path, &std::path::Path) {
        (&self.cert_path, &self.key_path)
    }

    /// The broker's store (for embedding and tests).
    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }

    /// The broker's processor runtime: one wasmtime engine with the compiled-
    /// module cache in `<data-dir>/wasm-cache`. Every deploy validates its
    /// module with [`Runtime::load`] on this runtime, so a worker that loads
    /// modules through it finds them compiled (in memory while loaded, else
    /// on disk). Returns a new handle to the one shared runtime.
    pub fn runtime(&self) -> Arc<Runtime> {
        self.runtime.clone()
    }

    /// This broker's membership in the cluster.
    pub fn cluster(&self) -> &Arc<Cluster> {
        &self.cluster
    }

    /// Stops accepting work, finishes in-flight requests, commits and closes.
    pub async fn shutdown(self) {
        info!("shutting down");
        let _ = self.shutdown.send(true);
        let _ = self.server.await;
        let _ = self.retention.await;
        let _ = self.group_ticker.await;
        for task in self.background {
            let _ = task.await;
        }
        self.cluster.shutdown().await;
        self.store.close().await;
        info!("shutdown complete");
    }
}

/// A per-broker secret for the fake salts of unknown users: a hash of the
/// broker's private key, stable across restarts.
fn fake_salt_key(identity: &tls::TlsIdentity) -> Vec<u8> {
    use sha2::Digest;
    sha2::Sha256::new_with_prefix(b"eddy fake salt").chain_update(identity.key.secret_der()).finalize().to_vec()
}

async fn retention_loop(store: Arc<Store>, every: Duration, mut shutdown: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.wait_for(|s| *s) => return,
        }
        let now_ms = crate::now_ms();
        if let Err(e) = store.enforce_retention(now_ms).await {
            warn!(error = %e, "retention pass failed; will retry");
        }
    }
}
