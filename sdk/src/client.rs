//! The handle to the cluster: TLS setup, one QUIC connection per broker
//! address, a metadata cache, and the request routing every other module is
//! built on.
//!
//! A [`Client`] owns one quinn `Endpoint` shared by the connections to every
//! broker (one per address, dialled on first use and again after a loss; see
//! `conn`). Each request opens its own bidirectional stream, writes one
//! request frame, finishes its send side and reads one response frame (see
//! `eddy_protocol::frame`).
//!
//! Two kinds of requests:
//!
//! * **Control plane** ([`Client::request`]): admin, groups, processors,
//!   metadata, producer ids. Any broker serves them (it forwards to the
//!   controller). The client sends to the broker that answered last, and moves
//!   on to the next known broker (bootstrap list first, then those named by
//!   metadata) when one cannot be dialled or answers `NOT_CONTROLLER` /
//!   `SHUTTING_DOWN`, with a backoff of 100 ms doubling to 1 s, until the
//!   call's timeout. Those answers and connect failures mean nothing was
//!   applied, so retrying is safe. A request that was written and then lost
//!   in transport is never sent again (the broker may have applied it), except
//!   read-only ones.
//! * **Partition data** ([`Client::request_to_leader`], [`Client::leader`]):
//!   fetch and list-offsets go to the partition's leader from the metadata
//!   cache; `NOT_LEADER`, `LEADER_NOT_AVAILABLE`, an unreachable leader or an
//!   unknown topic refresh the cache (concurrent refreshes are coalesced).

mod auth;
mod conn;
mod metadata;

use std::collections::HashMap;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use eddy_protocol::codec::to_bytes;
use eddy_protocol::frame::{self, ApiKey};
use eddy_protocol::messages::{MetadataRequest, MetadataResponse, Request};
use eddy_protocol::ErrorCode;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;
use tokio::time::{timeout, timeout_at, Instant};

pub use auth::Credentials;
pub(crate) use conn::read_response_frame;
use conn::{BrokerConn, Dialer, ExchangeError};
use metadata::{Lookup, MetadataCache};

use crate::error::{self, ClientError};

/// How often an idle connection is kept alive, well below the idle timeout.
const KEEP_ALIVE_INTERVAL: Duration = Duration::from_millis(250);
/// A connection that hears nothing from the broker (not even keep-alives, or
/// the answers to a handshake) for this long is dead, and the next request
/// dials again. This is how a client notices a broker that was killed: over
/// UDP nothing resets the connection of a dead process, so the producer's
/// in-flight batches, a consumer's fetch and a dial to a dead leader all fail
/// after this long and move to the new leader. Kept short because it is most
/// of a client's failover time (the cluster elects a new leader within its
/// 1 s session timeout); a live broker answers keep-alives within
/// milliseconds.
const IDLE_TIMEOUT: Duration = Duration::from_millis(1500);
/// Per-stream receive window: a whole default fetch (4 MiB) fits twice, so a
/// broker can send a fetch response without waiting for window updates.
const STREAM_RECEIVE_WINDOW_BYTES: u32 = 8 * 1024 * 1024;
/// Connection-wide send buffer: bounds the produce bytes quinn holds unacknowledged.
const SEND_WINDOW_BYTES: u64 = 32 * 1024 * 1024;
/// First pause before a control-plane or leader request is retried.
const MIN_RETRY_BACKOFF: Duration = Duration::from_millis(100);
/// Longest pause between retries.
const MAX_RETRY_BACKOFF: Duration = Duration::from_secs(1);
/// Most bootstrap addresses in `ClientConfig::broker`.
const MAX_BOOTSTRAP: usize = 64;

/// The superuser a new cluster gets.
pub const LOCAL_SUPERUSER: &str = "admin";
/// The file a broker writes its first superuser's password to.
pub const LOCAL_PASSWORD_FILE: &str = "admin.password";

/// Reads a password file: its first line, without the line end; an empty
/// one is an error.
pub fn read_password_file(path: &std::path::Path) -> std::io::Result<String> {
    let text = std::fs::read_to_string(path)?;
    match text.lines().next() {
        Some(p) if !p.is_empty() => Ok(p.to_string()),
        _ => Err(std::io::Error::new(std::io::ErrorKind::InvalidData, format!("{} is empty", path.display()))),
    }
}

/// Where and how to reach a broker.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// `host:port` of a broker, or several separated by commas
    /// (`h1:9092,h2:9092`): the bootstrap brokers, tried in turn. A host may
    /// be a name or an IP address (IPv6 in brackets, e.g. `[::1]:9092`). The
    /// other brokers of the cluster are learned from metadata.
    pub broker: String,
    /// PEM file with the CA certificate(s) (or the broker's self-signed
    /// certificate) that the broker's certificate must verify against. Required.
    pub ca_file: Option<PathBuf>,
    /// Name checked against every broker's certificate; defaults to the host
    /// part of the address actually dialled.
    pub server_name: Option<String>,
    /// Longest a connection attempt (resolution + handshake) may take.
    pub connect_timeout: Duration,
    /// Longest a request may take from opening its stream to its response.
    pub request_timeout: Duration,
    /// A user name and password: every connection authenticates with
    /// SCRAM-SHA-256 (the password never crosses the wire). Brokers serve
    /// nothing to a connection that did not authenticate.
    pub credentials: Option<Credentials>,
    /// A client certificate and key (PEM files) issued by the cluster CA
    /// (`eddy ca issue-client NAME`, or a broker's own certificate): the TLS
    /// handshake then proves the identity it carries.
    pub client_cert: Option<(PathBuf, PathBuf)>,
    /// For processor workers: every connection acts as this processor, with
    /// its rights only (its inputs, output, dead-letter and logs topics).
    pub act_as_processor: Option<String>,
}

impl ClientConfig {
    /// A configuration for `broker` (`host:port`, or a comma-separated list) with default timeouts
    /// (connect 10 s, request 30 s) and no CA file yet.
    pub fn new(broker: impl Into<String>) -> Self {
        Self {
            broker: broker.into(),
            ca_file: None,
            server_name: None,
            connect_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(30),
            credentials: None,
            client_cert: None,
            act_as_processor: None,
        }
    }

    /// Authenticates as `user` with `password` (SCRAM-SHA-256).
    pub fn credentials(mut self, user: impl Into<String>, password: impl Into<String>) -> Self {
        self.credentials = Some(Credentials::new(user, password));
        self
    }

    /// Presents the client certificate `cert` with its key `key` (PEM files).
    pub fn client_cert(mut self, cert: impl Into<PathBuf>, key: impl Into<PathBuf>) -> Self {
        self.client_cert = Some((cert.into(), key.into()));
        self
    }

    /// Local convenience: when neither credentials nor a client certificate
    /// are set, uses the superuser `admin` with the password a broker wrote
    /// next to its CA (`<data-dir>/admin.password`, found in the CA file's
    /// directory or the one above it: `<data-dir>/tls/ca.pem`), if such a
    /// file exists and can be read. This is how `eddy dev` and a single
    /// `eddy broker` work without flags: only whoever may read the broker's
    /// password file (mode 0600) gets in.
    pub fn with_local_credentials(mut self) -> Self {
        if self.credentials.is_some() || self.client_cert.is_some() {
            return self;
        }
        let Some(ca) = &self.ca_file else { return self };
        let dirs = ca.parent().into_iter().chain(ca.parent().and_then(std::path::Path::parent));
        let found = dirs.into_iter().find_map(|dir| read_password_file(&dir.join(LOCAL_PASSWORD_FILE)).ok());
        if let Some(password) = found {
            self.credentials = Some(Credentials::new(LOCAL_SUPERUSER, password));
        }
        self
    }

    /// Makes every connection act as processor `name` (processor workers).
    pub fn act_as_processor(mut self, name: impl Into<String>) -> Self {
        self.act_as_processor = Some(name.into());
        self
    }

    /// Sets the PEM file holding the CA certificate(s) to verify the broker with.
    pub fn ca_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.ca_file = Some(path.into());
        self
    }

    /// Sets the TLS name to verify instead of the host part of `broker`.
    pub fn server_name(mut self, name: impl Into<String>) -> Self {
        self.server_name = Some(name.into());
        self
    }

    /// Sets the connect timeout.
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// Sets the request timeout.
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self
    }
}

/// A handle to the cluster. Cheap to clone; clones share the QUIC endpoint,
/// the connections and the metadata cache, and any of them may be used
/// concurrently.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

struct Inner {
    config: ClientConfig,
    /// The addresses of `config.broker`, in order.
    bootstrap: Vec<String>,
    dialer: Dialer,
    /// One connection per broker address.
    conns: Mutex<HashMap<String, Arc<BrokerConn>>>,
    /// The broker that answered the last control-plane request: tried first.
    preferred: Mutex<Option<String>>,
    metadata: Mutex<MetadataCache>,
    /// `metadata.version()`, readable without the lock.
    metadata_version: AtomicU64,
    /// Serializes metadata refreshes; see [`Client::refresh_metadata`].
    refresh: tokio::sync::Mutex<RefreshState>,
}

/// The last metadata refresh, for coalescing.
#[derive(Default)]
struct RefreshState {
    started: Option<Instant>,
    result: Option<Result<(), ClientError>>,
}

/// One broker of the cluster, for requests that must go to it (the leader of
/// a partition). Cheap to clone. Obtained from [`Client::broker`] or
/// [`Client::leader`].
#[derive(Clone)]
pub struct Broker {
    client: Client,
    id: u32,
    conn: Arc<BrokerConn>,
}

impl std::fmt::Debug for Broker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Broker").field("id", &self.id).field("addr", &self.conn.addr()).finish()
    }
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client").field("broker", &self.inner.config.broker).finish_non_exhaustive()
    }
}

/// The bootstrap addresses of `ClientConfig::broker`: comma-separated,
/// each `HOST:PORT`.
pub(crate) fn bootstrap_addrs(brokers: &str) -> Result<Vec<String>, ClientError> {
    let addrs: Vec<String> = brokers.split(',').map(str::trim).filter(|a| !a.is_empty()).map(String::from).collect();
    if addrs.is_empty() {
        return Err(ClientError::Config(format!("broker address {brokers:?} is not HOST:PORT")));
    }
    if addrs.len() > MAX_BOOTSTRAP {
        return Err(ClientError::Config(format!("at most {MAX_BOOTSTRAP} bootstrap brokers, got {}", addrs.len())));
    }
    for addr in &addrs {
        host_of(addr)?;
    }
    Ok(addrs)
}

/// The host part of `host:port`, without IPv6 brackets.
pub(crate) fn host_of(broker: &str) -> Result<&str, ClientError> {
    let bad = || ClientError::Config(format!("broker address {broker:?} is not HOST:PORT"));
    let (host, port) = broker.rsplit_once(':').ok_or_else(bad)?;
    if port.parse::<u16>().is_err() || host.is_empty() {
        return Err(bad());
    }
    let host = match host.strip_prefix('[') {
        Some(rest) => rest.strip_suffix(']').ok_or_else(bad)?,
        None if host.contains(':') => return Err(bad()),
        None => host,
    };
    if host.is_empty() {
        return Err(bad());
    }
    Ok(host)
}

/// Reads the CA file into a root store.
fn root_store(config: &ClientConfig) -> Result<rustls::RootCertStore, ClientError> {
    let path = config.ca_file.as_ref().ok_or_else(|| {
        ClientError::Config(
            "a CA certificate is required to verify the broker: pass --ca FILE or set EDDY_CA".to_string(),
        )
    })?;
    let shown = path.display();
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| ClientError::Config(format!("cannot read CA file {shown}: {e}")))?;
    let mut roots = rustls::RootCertStore::empty();
    for cert in certs {
        let cert = cert.map_err(|e| ClientError::Config(format!("cannot parse CA file {shown}: {e}")))?;
        roots.add(cert).map_err(|e| ClientError::Config(format!("unusable certificate in CA file {shown}: {e}")))?;
    }
    if roots.is_empty() {
        return Err(ClientError::Config(format!("CA file {shown} contains no PEM certificate")));
    }
    Ok(roots)
}

/// Reads a client certificate chain and key.
fn client_identity(
    cert: &std::path::Path,
    key: &std::path::Path,
) -> Result<(Vec<CertificateDer<'static>>, rustls_pki_types::PrivateKeyDer<'static>), ClientError> {
    let chain = CertificateDer::pem_file_iter(cert)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| ClientError::Config(format!("cannot read client certificate {}: {e}", cert.display())))?;
    if chain.is_empty() {
        return Err(ClientError::Config(format!("{} holds no certificate", cert.display())));
    }
    let key = rustls_pki_types::PrivateKeyDer::from_pem_file(key)
        .map_err(|e| ClientError::Config(format!("cannot read client key {}: {e}", key.display())))?;
    Ok((chain, key))
}

/// Builds the quinn client configuration: TLS 1.3 only, the given roots,
/// the client certificate if configured, ALPN `eddy/1`.
fn quic_config(roots: rustls::RootCertStore, config: &ClientConfig) -> Result<quinn::ClientConfig, ClientError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| ClientError::Config(format!("TLS setup failed: {e}")))?
        .with_root_certificates(roots);
    let mut tls = match &config.client_cert {
        Some((cert, key)) => {
            let (chain, key) = client_identity(cert, key)?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| ClientError::Config(format!("unusable client certificate: {e}")))?
        }
        None => builder.with_no_client_auth(),
    };
    tls.alpn_protocols = vec![frame::ALPN.to_vec()];
    let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(tls)
        .map_err(|e| ClientError::Config(format!("TLS setup failed: {e}")))?;
    let mut transport = quinn::TransportConfig::default();
    transport
        .keep_alive_interval(Some(KEEP_ALIVE_INTERVAL))
        .max_idle_timeout(Some(quinn::IdleTimeout::try_from(IDLE_TIMEOUT).expect("idle timeout fits a QUIC varint")))
        .stream_receive_window(STREAM_RECEIVE_WINDOW_BYTES.into())
        .send_window(SEND_WINDOW_BYTES);
    let mut config = quinn::ClientConfig::new(Arc::new(crypto));
    config.transport_config(Arc::new(transport));
    Ok(config)
}

/// Requests that only read state, so that sending them twice is harmless.
/// (InitProducerId is not: each one allocates a producer id.)
fn is_read_only(key: ApiKey) -> bool {
    matches!(
        key,
        ApiKey::Fetch
            | ApiKey::ListOffsets
            | ApiKey::Metadata
            | ApiKey::OffsetFetch
            | ApiKey::ListGroups
            | ApiKey::DescribeGroup
    )
}

/// Answers of a control-plane request that mean nothing was applied and
/// another broker (or the same one a little later) may take it.
fn is_elsewhere(code: u16) -> bool {
    code == ErrorCode::NotController as u16 || code == ErrorCode::ShuttingDown as u16
}

/// Answers of a partition request that mean the cached leader is wrong (or
/// about to be): refresh and retry.
fn is_stale_leader(code: u16) -> bool {
    matches!(
        ErrorCode::from_u16(code),
        ErrorCode::NotLeader | ErrorCode::LeaderNotAvailable | ErrorCode::ShuttingDown | ErrorCode::FencedLeaderEpoch
    )
}

fn fatal_connect(err: &ClientError) -> bool {
    matches!(err, ClientError::Tls { .. } | ClientError::Config(_))
}

/// Sleeps `backoff` unless that would pass `deadline`; false then.
async fn pause(backoff: &mut Duration, deadline: Instant) -> bool {
    if Instant::now() + *backoff >= deadline {
        return false;
    }
    tokio::time::sleep(*backoff).await;
    *backoff = (*backoff * 2).min(MAX_RETRY_BACKOFF);
    true
}

impl Client {
    /// Parses the bootstrap addresses, sets up TLS (1.3 only, roots from
    /// `ca_file`, ALPN `eddy/1`) and connects to the first bootstrap broker
    /// that answers, each within `connect_timeout`.
    ///
    /// Fails with [`ClientError::Config`] when no CA file is given or it holds
    /// no certificate or an address is not `HOST:PORT`, [`ClientError::Tls`]
    /// when a broker's certificate does not verify, and
    /// [`ClientError::Connect`] (the last one met) when no bootstrap broker can
    /// be reached.
    pub async fn connect(config: ClientConfig) -> Result<Client, ClientError> {
        let bootstrap = bootstrap_addrs(&config.broker)?;
        for addr in &bootstrap {
            let name = server_name_for(&config, addr)?;
            rustls_pki_types::ServerName::try_from(name.as_str())
                .map_err(|_| ClientError::Config(format!("{name:?} is not a valid TLS server name")))?;
        }
        let quic = quic_config(root_store(&config)?, &config)?;
        let auth = auth::AuthConfig {
            credentials: config.credentials.clone(),
            client_cert: config.client_cert.is_some(),
            act_as_processor: config.act_as_processor.clone(),
        };
        let resolving = futures::future::join_all(bootstrap.iter().map(|a| conn::resolve(a)));
        let resolved = match timeout(config.connect_timeout, resolving).await {
            Ok(r) => r,
            Err(_) => {
                return Err(ClientError::Connect {
                    addr: config.broker.clone(),
                    reason: format!("name resolution took longer than {:?}", config.connect_timeout),
                })
            }
        };
        let usable: Vec<&SocketAddr> = resolved.iter().filter_map(|r| r.as_ref().ok()).flatten().collect();
        if usable.is_empty() {
            // Every resolution failed: report the first.
            return Err(resolved.into_iter().find_map(Result::err).unwrap_or_else(|| ClientError::Connect {
                addr: config.broker.clone(),
                reason: "name resolved to no address".into(),
            }));
        }
        let ipv6 = usable.iter().all(|a| a.is_ipv6());
        let bind: SocketAddr = if ipv6 { (Ipv6Addr::UNSPECIFIED, 0).into() } else { (Ipv4Addr::UNSPECIFIED, 0).into() };
        let mut endpoint = quinn::Endpoint::client(bind).map_err(|e| ClientError::Connect {
            addr: config.broker.clone(),
            reason: format!("cannot open a UDP socket: {e}"),
        })?;
        endpoint.set_default_client_config(quic);
        let connect_timeout = config.connect_timeout;
        let client = Client {
            inner: Arc::new(Inner {
                config,
                bootstrap: bootstrap.clone(),
                dialer: Dialer { endpoint, ipv6, connect_timeout, auth },
                conns: Mutex::new(HashMap::new()),
                preferred: Mutex::new(None),
                metadata: Mutex::new(MetadataCache::default()),
                metadata_version: AtomicU64::new(0),
                refresh: tokio::sync::Mutex::new(RefreshState::default()),
            }),
        };
        let mut last = None;
        for (addr, addrs) in bootstrap.iter().zip(resolved) {
            let result = match addrs {
                Ok(addrs) => {
                    let conn = client.conn(addr)?;
                    conn.dial(&client.inner.dialer, Some(addrs)).await.map(|c| conn.store(c))
                }
                Err(e) => Err(e),
            };
            match result {
                Ok(()) => {
                    client.set_preferred(addr);
                    return Ok(client);
                }
                Err(e) if fatal_connect(&e) => return Err(e),
                Err(e) => {
                    tracing::debug!(broker = %addr, error = %e, "bootstrap broker unreachable");
                    last = Some(e);
                }
            }
        }
        Err(last.unwrap_or_else(|| ClientError::Connect {
            addr: client.inner.config.broker.clone(),
            reason: "no bootstrap broker answered".into(),
        }))
    }

    /// The configuration this client was created with.
    pub fn config(&self) -> &ClientConfig {
        &self.inner.config
    }

    /// Sends one control-plane request and returns the answer, bounded by the
    /// configured `request_timeout` ([`ClientError::Timeout`]); see
    /// [`Client::request_with_timeout`] for requests the broker holds longer
    /// (group joins, long polls).
    ///
    /// Goes to the broker that answered last; see the [module docs](self) for
    /// when it moves on to another one. Guarantees: a request that was written
    /// is never sent again after a transport failure (the broker may have
    /// applied it), except read-only requests (fetch, list-offsets, metadata,
    /// offset-fetch, list/describe groups), which are retried on a fresh
    /// connection or another broker. Requests refused with `NOT_CONTROLLER` or
    /// `SHUTTING_DOWN`, or that could not be sent, are retried until the
    /// timeout, after which the last such error is returned.
    pub async fn request<R: Request>(&self, req: &R) -> Result<R::Response, ClientError> {
        self.request_with_timeout(req, self.inner.config.request_timeout).await
    }

    /// [`Client::request`] with an explicit overall timeout instead of the
    /// configured `request_timeout`: for requests the broker may hold open on
    /// purpose (a `JoinGroup` waits for the rebalance, a heartbeat or fetch is
    /// a long poll), whose limit must cover that wait plus a margin.
    pub async fn request_with_timeout<R: Request>(&self, req: &R, limit: Duration) -> Result<R::Response, ClientError> {
        let frame = frame::request_frame(R::KEY, &to_bytes(req));
        let (code, payload, _) = self.control_exchange(&frame, R::KEY, limit).await?;
        error::decode_response::<R::Response>(code, payload)
    }

    /// The control-plane exchange behind [`Client::request_with_timeout`];
    /// also returns the address of the broker that answered.
    async fn control_exchange(
        &self,
        frame: &Bytes,
        key: ApiKey,
        limit: Duration,
    ) -> Result<(u16, Bytes, String), ClientError> {
        let deadline = Instant::now() + limit;
        let read_only = is_read_only(key);
        let mut backoff = MIN_RETRY_BACKOFF;
        let mut last: Option<ClientError> = None;
        let mut candidates = self.candidates();
        let mut next = 0;
        loop {
            if next >= candidates.len() {
                // A whole round failed: pause, then go round again.
                if !pause(&mut backoff, deadline).await {
                    return Err(last.unwrap_or(ClientError::Timeout(limit)));
                }
                candidates = self.candidates();
                next = 0;
            }
            let conn = candidates[next].clone();
            next += 1;
            let attempt = timeout_at(deadline, conn.exchange(&self.inner.dialer, frame, read_only)).await;
            match attempt {
                Err(_) => return Err(ClientError::Timeout(limit)),
                Ok(Ok((code, payload))) if is_elsewhere(code) => {
                    let err = error::decode_response::<eddy_protocol::messages::Empty>(code, payload)
                        .err()
                        .unwrap_or_else(|| ClientError::broker(ErrorCode::from_u16(code), "retriable refusal"));
                    tracing::debug!(broker = %conn.addr(), api_key = ?key, error = %err, ?backoff, "request refused; retrying elsewhere");
                    last = Some(err);
                    if !pause(&mut backoff, deadline).await {
                        return Err(last.unwrap_or(ClientError::Timeout(limit)));
                    }
                }
                Ok(Ok((code, payload))) => {
                    self.set_preferred(conn.addr());
                    return Ok((code, payload, conn.addr().to_string()));
                }
                Ok(Err(ExchangeError::NotSent(e))) if fatal_connect(&e) => return Err(e),
                Ok(Err(ExchangeError::NotSent(e))) => {
                    tracing::debug!(broker = %conn.addr(), api_key = ?key, error = %e, "broker unreachable; trying the next one");
                    last = Some(e);
                }
                Ok(Err(ExchangeError::Sent(e))) if read_only => {
                    tracing::debug!(broker = %conn.addr(), api_key = ?key, error = %e, "read-only request lost; trying the next broker");
                    last = Some(e);
                }
                Ok(Err(ExchangeError::Sent(e))) => return Err(e),
            }
        }
    }

    /// Brokers to try for a control-plane request: the one that answered
    /// last, the bootstrap list, then those named by metadata; brokers whose
    /// last dial failed go last.
    fn candidates(&self) -> Vec<Arc<BrokerConn>> {
        let mut addrs: Vec<String> = Vec::new();
        if let Some(p) = self.inner.preferred.lock().unwrap_or_else(|p| p.into_inner()).clone() {
            addrs.push(p);
        }
        addrs.extend(self.inner.bootstrap.iter().cloned());
        addrs.extend(self.inner.metadata.lock().unwrap_or_else(|p| p.into_inner()).broker_addrs());
        let mut seen = std::collections::HashSet::new();
        addrs.retain(|a| seen.insert(a.clone()));
        let conns: Vec<Arc<BrokerConn>> = addrs
            .iter()
            .filter_map(|a| match self.conn(a) {
                Ok(c) => Some(c),
                Err(e) => {
                    tracing::warn!(broker = %a, error = %e, "ignoring a broker address that cannot be dialled");
                    None
                }
            })
            .collect();
        let (up, down): (Vec<_>, Vec<_>) = conns.into_iter().partition(|c| !c.seems_down());
        up.into_iter().chain(down).collect()
    }

    fn set_preferred(&self, addr: &str) {
        let mut p = self.inner.preferred.lock().unwrap_or_else(|p| p.into_inner());
        if p.as_deref() != Some(addr) {
            *p = Some(addr.to_string());
        }
    }

    /// The connection state of one broker address (created on first use).
    fn conn(&self, addr: &str) -> Result<Arc<BrokerConn>, ClientError> {
        let mut conns = self.inner.conns.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(c) = conns.get(addr) {
            return Ok(c.clone());
        }
        let name = server_name_for(&self.inner.config, addr)?;
        let conn = Arc::new(BrokerConn::new(addr.to_string(), name));
        conns.insert(addr.to_string(), conn.clone());
        Ok(conn)
    }

    /// Asks any reachable broker for the metadata of every topic and replaces
    /// the cache with it.
    ///
    /// Coalesced: a caller that finds a refresh under way waits for it and
    /// then starts another only if that one began before the call (so the
    /// cache it sees is never older than the call). Bounded by
    /// `request_timeout`.
    pub async fn refresh_metadata(&self) -> Result<(), ClientError> {
        let asked = Instant::now();
        let mut state = self.inner.refresh.lock().await;
        if let (Some(started), Some(result)) = (state.started, &state.result) {
            if started >= asked {
                return result.clone();
            }
        }
        let started = Instant::now();
        let frame = frame::request_frame(ApiKey::Metadata, &to_bytes(&MetadataRequest { topics: None }));
        let result = match self.control_exchange(&frame, ApiKey::Metadata, self.inner.config.request_timeout).await {
            Ok((code, payload, addr)) => error::decode_response::<MetadataResponse>(code, payload).map(|resp| {
                let mut cache = self.inner.metadata.lock().unwrap_or_else(|p| p.into_inner());
                cache.apply(&resp, &addr);
                self.inner.metadata_version.store(cache.version(), Ordering::Release);
            }),
            Err(e) => Err(e),
        };
        if let Err(e) = &result {
            tracing::debug!(error = %e, "metadata refresh failed");
        }
        state.started = Some(started);
        state.result = Some(result.clone());
        result
    }

    /// Changes whenever the metadata cache is refreshed: a cheap way to notice
    /// that leaders may have moved.
    pub fn metadata_version(&self) -> u64 {
        self.inner.metadata_version.load(Ordering::Acquire)
    }

    /// The cached leader id of a partition (0: none, or not cached).
    pub fn cached_leader(&self, topic: &str, partition: u32) -> u32 {
        self.inner.metadata.lock().unwrap_or_else(|p| p.into_inner()).leader_id(topic, partition)
    }

    /// The cached partition count of a topic.
    pub(crate) fn cached_partition_count(&self, topic: &str) -> Option<u32> {
        self.inner.metadata.lock().unwrap_or_else(|p| p.into_inner()).partition_count(topic)
    }

    fn lookup(&self, topic: &str, partition: u32) -> Lookup {
        self.inner.metadata.lock().unwrap_or_else(|p| p.into_inner()).lookup(topic, partition)
    }

    /// Broker `id` as the metadata cache knows it (no I/O); `None` if the
    /// cache has no address for it.
    pub fn broker(&self, id: u32) -> Option<Broker> {
        let addr = self.inner.metadata.lock().unwrap_or_else(|p| p.into_inner()).broker_addr(id)?.to_string();
        let conn = self.conn(&addr).ok()?;
        Some(Broker { client: self.clone(), id, conn })
    }

    /// The leader of `topic`/`partition`, from the cache, refreshed first if
    /// the cache does not know the partition. Fails with `UnknownTopic`,
    /// `UnknownPartition` or `LeaderNotAvailable` broker errors (the last is
    /// retriable), or the refresh's error.
    pub async fn leader(&self, topic: &str, partition: u32) -> Result<Broker, ClientError> {
        let mut lookup = self.lookup(topic, partition);
        if !matches!(lookup, Lookup::Leader { .. }) {
            self.refresh_metadata().await?;
            lookup = self.lookup(topic, partition);
        }
        match lookup {
            Lookup::Leader { id, addr, .. } => Ok(Broker { client: self.clone(), id, conn: self.conn(&addr)? }),
            other => Err(other.error(topic, partition).unwrap_or_else(|| ClientError::Decode("no leader".into()))),
        }
    }

    /// Sends a partition request (fetch, list-offsets) to the partition's
    /// leader, bounded by `request_timeout`. See
    /// [`Client::request_to_leader_with_timeout`].
    pub async fn request_to_leader<R: Request>(
        &self,
        topic: &str,
        partition: u32,
        req: &R,
    ) -> Result<R::Response, ClientError> {
        self.request_to_leader_with_timeout(topic, partition, req, self.inner.config.request_timeout).await
    }

    /// Sends `req` to the leader of `topic`/`partition` and returns its answer.
    ///
    /// While the answer is `NOT_LEADER`, `LEADER_NOT_AVAILABLE`,
    /// `SHUTTING_DOWN` or `FENCED_LEADER_EPOCH`, the partition has no leader,
    /// or the leader cannot be dialled, the metadata is refreshed and the
    /// request sent again (backoff 100 ms doubling to 1 s) until `limit` has
    /// passed; then the last of those errors is returned (or
    /// [`ClientError::Timeout`] if the limit passed mid-request). A request
    /// lost in transport after it was written is retried likewise only if it
    /// is read-only. `UNKNOWN_TOPIC`/`UNKNOWN_PARTITION` refresh the metadata
    /// once and are returned unless the refresh names another leader.
    pub async fn request_to_leader_with_timeout<R: Request>(
        &self,
        topic: &str,
        partition: u32,
        req: &R,
        limit: Duration,
    ) -> Result<R::Response, ClientError> {
        let frame = frame::request_frame(R::KEY, &to_bytes(req));
        let deadline = Instant::now() + limit;
        let read_only = is_read_only(R::KEY);
        let mut backoff = MIN_RETRY_BACKOFF;
        let mut refreshed_unknown = false;
        loop {
            let lookup = self.lookup(topic, partition);
            let last = match lookup {
                Lookup::Leader { id, addr, .. } => {
                    let conn = self.conn(&addr)?;
                    match timeout_at(deadline, conn.exchange(&self.inner.dialer, &frame, read_only)).await {
                        Err(_) => return Err(ClientError::Timeout(limit)),
                        Ok(Ok((code, payload))) if is_stale_leader(code) => {
                            error::decode_response::<R::Response>(code, payload)
                                .err()
                                .unwrap_or_else(|| ClientError::broker(ErrorCode::from_u16(code), "retriable refusal"))
                        }
                        Ok(Ok((code, payload)))
                            if !refreshed_unknown
                                && (code == ErrorCode::UnknownTopic as u16
                                    || code == ErrorCode::UnknownPartition as u16) =>
                        {
                            refreshed_unknown = true;
                            let err = error::decode_response::<R::Response>(code, payload).err();
                            let _ = timeout_at(deadline, self.refresh_metadata()).await;
                            if self.cached_leader(topic, partition) != id {
                                continue;
                            }
                            return Err(err.unwrap_or_else(|| ClientError::broker(ErrorCode::from_u16(code), "")));
                        }
                        Ok(Ok((code, payload))) => return error::decode_response::<R::Response>(code, payload),
                        Ok(Err(ExchangeError::NotSent(e))) if fatal_connect(&e) => return Err(e),
                        Ok(Err(ExchangeError::NotSent(e))) => e,
                        Ok(Err(ExchangeError::Sent(e))) if read_only => e,
                        Ok(Err(ExchangeError::Sent(e))) => return Err(e),
                    }
                }
                Lookup::NoLeader => lookup.error(topic, partition).unwrap_or(ClientError::Timeout(limit)),
                Lookup::UnknownTopic | Lookup::UnknownPartition { .. } if !refreshed_unknown => {
                    refreshed_unknown = true;
                    match timeout_at(deadline, self.refresh_metadata()).await {
                        Err(_) => return Err(ClientError::Timeout(limit)),
                        Ok(Err(e)) if !e.is_retriable() => return Err(e),
                        Ok(_) => continue,
                    }
                }
                Lookup::UnknownTopic | Lookup::UnknownPartition { .. } => {
                    return Err(lookup.error(topic, partition).unwrap_or(ClientError::Timeout(limit)))
                }
            };
            tracing::debug!(topic, partition, error = %last, ?backoff, "partition request failed; refreshing metadata");
            if !pause(&mut backoff, deadline).await {
                return Err(last);
            }
            match timeout_at(deadline, self.refresh_metadata()).await {
                Err(_) => return Err(last),
                Ok(Err(e)) => tracing::debug!(error = %e, "metadata refresh failed; retrying with the cached leader"),
                Ok(Ok(())) => {}
            }
        }
    }

    /// Closes every connection (code 0) and waits briefly (at most one second)
    /// for the brokers to learn of it, so that a short-lived program leaves no
    /// half-open connection behind. Later calls on any clone reconnect.
    pub async fn close(&self) {
        let conns: Vec<Arc<BrokerConn>> =
            self.inner.conns.lock().unwrap_or_else(|p| p.into_inner()).values().cloned().collect();
        let mut closed = false;
        for c in conns {
            closed |= c.close();
        }
        if closed {
            let _ = timeout(Duration::from_secs(1), self.inner.dialer.endpoint.wait_idle()).await;
        }
    }

    /// Opens a bidirectional stream to the broker that answered last (another
    /// reachable one if it cannot be dialled), reconnecting first if needed.
    /// For a stream to a given broker, see [`Broker::open_stream`].
    pub async fn open_stream(&self) -> Result<(quinn::SendStream, quinn::RecvStream), ClientError> {
        let mut last = None;
        for conn in self.candidates() {
            match conn.open_stream(&self.inner.dialer).await {
                Ok((_, send, recv)) => {
                    self.set_preferred(conn.addr());
                    return Ok((send, recv));
                }
                Err(e) if fatal_connect(&e) => return Err(e),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| ClientError::Connect {
            addr: self.inner.config.broker.clone(),
            reason: "no broker known".into(),
        }))
    }
}

impl Broker {
    /// The broker's id in the cluster.
    pub fn id(&self) -> u32 {
        self.id
    }

    /// The address dialled for it.
    pub fn addr(&self) -> &str {
        self.conn.addr()
    }

    /// Sends one request to this broker only, bounded by the client's
    /// `request_timeout`: no failover, no retry of broker answers; a read-only
    /// request is sent once more on a fresh connection if the connection dies
    /// under it.
    pub async fn request<R: Request>(&self, req: &R) -> Result<R::Response, ClientError> {
        self.request_with_timeout(req, self.client.inner.config.request_timeout).await
    }

    /// [`Broker::request`] with an explicit timeout.
    pub async fn request_with_timeout<R: Request>(&self, req: &R, limit: Duration) -> Result<R::Response, ClientError> {
        let frame = frame::request_frame(R::KEY, &to_bytes(req));
        let exchange = self.conn.exchange(&self.client.inner.dialer, &frame, is_read_only(R::KEY));
        match timeout(limit, exchange).await {
            Err(_) => Err(ClientError::Timeout(limit)),
            Ok(Err(e)) => Err(e.into_inner()),
            Ok(Ok((code, payload))) => error::decode_response::<R::Response>(code, payload),
        }
    }

    /// Opens a bidirectional stream to this broker, dialling first if the
    /// connection was lost (not bounded here: bound it with a timeout).
    pub async fn open_stream(&self) -> Result<(quinn::SendStream, quinn::RecvStream), ClientError> {
        let (_, send, recv) = self.conn.open_stream(&self.client.inner.dialer).await?;
        Ok((send, recv))
    }
}

/// The TLS name to check for a broker at `addr`.
fn server_name_for(config: &ClientConfig, addr: &str) -> Result<String, ClientError> {
    match &config.server_name {
        Some(name) => Ok(name.clone()),
        None => host_of(addr).map(str::to_string),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_part_of_broker_addresses() {
        assert_eq!(host_of("localhost:9092").unwrap(), "localhost");
        assert_eq!(host_of("10.0.0.1:1").unwrap(), "10.0.0.1");
        assert_eq!(host_of("[::1]:9092").unwrap(), "::1");
        for bad in ["localhost", "localhost:", ":9092", "host:port", "::1:9092", "[::1:9092", "[]:1"] {
            assert!(matches!(host_of(bad), Err(ClientError::Config(_))), "{bad} accepted");
        }
    }

    #[test]
    fn bootstrap_lists_are_comma_separated_host_ports() {
        assert_eq!(bootstrap_addrs("a:1").unwrap(), vec!["a:1"]);
        assert_eq!(bootstrap_addrs("a:1, [::1]:2,b:3,").unwrap(), vec!["a:1", "[::1]:2", "b:3"]);
        for bad in ["", ",", "a:1,b", "a:1,:2"] {
            let err = bootstrap_addrs(bad).unwrap_err();
            assert!(matches!(&err, ClientError::Config(m) if m.contains("HOST:PORT")), "{bad}: {err}");
        }
        let many = vec!["a:1"; MAX_BOOTSTRAP + 1].join(",");
        assert!(matches!(bootstrap_addrs(&many), Err(ClientError::Config(_))));
    }

    #[tokio::test]
    async fn a_ca_file_is_required() {
        let err = Client::connect(ClientConfig::new("127.0.0.1:1")).await.unwrap_err();
        let text = err.to_string();
        assert!(matches!(err, ClientError::Config(_)), "{text}");
        assert!(text.contains("--ca") && text.contains("EDDY_CA"), "{text}");
    }

    #[tokio::test]
    async fn unreadable_or_empty_ca_files_are_config_errors() {
        let missing = ClientConfig::new("127.0.0.1:1").ca_file("/nonexistent/ca.pem");
        assert!(matches!(Client::connect(missing).await, Err(ClientError::Config(_))));
        let dir = std::env::temp_dir().join(format!("eddy-sdk-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let empty = dir.join("empty.pem");
        std::fs::write(&empty, "not a certificate\n").unwrap();
        let err = Client::connect(ClientConfig::new("127.0.0.1:1").ca_file(&empty)).await.unwrap_err();
        assert!(err.to_string().contains("no PEM certificate"), "{err}");
        std::fs::remove_dir_all(&dir).ok();
    }
}
