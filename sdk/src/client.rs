//! The connection to one broker: TLS setup, the shared QUIC connection, and the
//! request/response exchange every other module is built on.
//!
//! A [`Client`] owns one quinn `Endpoint` and at most one `Connection`, shared
//! by all clones. Each request opens its own bidirectional stream, writes one
//! request frame, finishes its send side and reads one response frame (see
//! `eddy_protocol::frame`). When the connection is found closed, the next call
//! dials again; a request that was already written is never sent twice, since
//! the broker may have applied it (read-only requests excepted, see
//! [`Client::request`]).

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use eddy_protocol::codec::to_bytes;
use eddy_protocol::frame::{self, ApiKey, LENGTH_BYTES, RESPONSE_HEADER_BYTES};
use eddy_protocol::messages::Request;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;
use tokio::time::{timeout, timeout_at, Instant};

use crate::error::{self, ClientError};

/// How often an idle connection is kept alive, well below the idle timeout.
const KEEP_ALIVE_INTERVAL: Duration = Duration::from_secs(5);
/// A connection that hears nothing from the broker (not even keep-alives) for
/// this long is dead, and the next request dials again. This is how a client
/// notices a broker that was killed and restarted: the new process cannot
/// reset connections of the old one. Kept short so that a group member
/// rejoins well within a session timeout or two.
const IDLE_TIMEOUT: Duration = Duration::from_secs(10);
/// Per-stream receive window: a whole default fetch (4 MiB) fits twice, so a
/// broker can send a fetch response without waiting for window updates.
const STREAM_RECEIVE_WINDOW_BYTES: u32 = 8 * 1024 * 1024;
/// Connection-wide send buffer: bounds the produce bytes quinn holds unacknowledged.
const SEND_WINDOW_BYTES: u64 = 32 * 1024 * 1024;

/// Where and how to reach a broker.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// `host:port` of the broker; the host may be a name or an IP address
    /// (IPv6 in brackets, e.g. `[::1]:9092`).
    pub broker: String,
    /// PEM file with the CA certificate(s) (or the broker's self-signed
    /// certificate) that the broker's certificate must verify against. Required.
    pub ca_file: Option<PathBuf>,
    /// Name checked against the broker's certificate; defaults to the host part
    /// of `broker`.
    pub server_name: Option<String>,
    /// Longest a connection attempt (resolution + handshake) may take.
    pub connect_timeout: Duration,
    /// Longest a request may take from opening its stream to its response.
    pub request_timeout: Duration,
}

impl ClientConfig {
    /// A configuration for `broker` (`host:port`) with default timeouts
    /// (connect 10 s, request 30 s) and no CA file yet.
    pub fn new(broker: impl Into<String>) -> Self {
        Self {
            broker: broker.into(),
            ca_file: None,
            server_name: None,
            connect_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(30),
        }
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

/// A handle to one broker connection. Cheap to clone; clones share the QUIC
/// endpoint and connection, and any of them may be used concurrently.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

struct Inner {
    config: ClientConfig,
    server_name: String,
    endpoint: quinn::Endpoint,
    /// Only addresses of this family are dialled (the endpoint's socket family).
    ipv6: bool,
    conn: Mutex<Option<quinn::Connection>>,
    /// Serializes reconnection so that concurrent callers dial once.
    dial_lock: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client").field("broker", &self.inner.config.broker).finish_non_exhaustive()
    }
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

/// Builds the quinn client configuration: TLS 1.3 only, the given roots, ALPN `eddy/1`.
fn quic_config(roots: rustls::RootCertStore) -> Result<quinn::ClientConfig, ClientError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| ClientError::Config(format!("TLS setup failed: {e}")))?
        .with_root_certificates(roots)
        .with_no_client_auth();
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

/// Resolves `broker`, IPv4 addresses first.
async fn resolve(broker: &str) -> Result<Vec<SocketAddr>, ClientError> {
    let addrs = tokio::net::lookup_host(broker)
        .await
        .map_err(|e| ClientError::Connect { addr: broker.to_string(), reason: format!("cannot resolve: {e}") })?;
    let mut addrs: Vec<SocketAddr> = addrs.collect();
    addrs.sort_by_key(|a| a.is_ipv6());
    addrs.dedup();
    if addrs.is_empty() {
        return Err(ClientError::Connect { addr: broker.to_string(), reason: "name resolved to no address".into() });
    }
    Ok(addrs)
}

/// Reads one response frame. `Ok(None)` means the broker finished the stream
/// cleanly at a frame boundary.
pub(crate) async fn read_response_frame(recv: &mut quinn::RecvStream) -> Result<Option<(u16, Bytes)>, ClientError> {
    let mut len_buf = [0u8; LENGTH_BYTES];
    let mut got = 0;
    while got < LENGTH_BYTES {
        match recv.read(&mut len_buf[got..]).await.map_err(error::read_error)? {
            Some(n) => got += n,
            None if got == 0 => return Ok(None),
            None => return Err(ClientError::Transport("broker closed the stream inside a frame".into())),
        }
    }
    let len = u32::from_le_bytes(len_buf);
    frame::check_length(len, RESPONSE_HEADER_BYTES).map_err(|e| ClientError::Decode(e.to_string()))?;
    let len = len as usize;
    let mut body: Option<BytesMut> = None;
    let mut have = 0;
    while have < len {
        let chunk = recv
            .read_chunk(len - have, true)
            .await
            .map_err(error::read_error)?
            .ok_or_else(|| ClientError::Transport("broker closed the stream inside a frame".into()))?;
        if body.is_none() && chunk.bytes.len() == len {
            // The whole body arrived in one piece: keep it without copying.
            return split(chunk.bytes).map(Some);
        }
        let buf = body.get_or_insert_with(|| BytesMut::with_capacity(len));
        buf.extend_from_slice(&chunk.bytes);
        have = buf.len();
    }
    split(body.map(BytesMut::freeze).unwrap_or_default()).map(Some)
}

fn split(body: Bytes) -> Result<(u16, Bytes), ClientError> {
    frame::split_response(body).map_err(|e| ClientError::Decode(e.to_string()))
}

/// Requests that only read state, so that sending them twice is harmless.
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

impl Client {
    /// Resolves the broker address, sets up TLS (1.3 only, roots from
    /// `ca_file`, ALPN `eddy/1`) and connects within `connect_timeout`.
    ///
    /// Fails with [`ClientError::Config`] when no CA file is given or it holds
    /// no certificate, [`ClientError::Tls`] when the broker's certificate does
    /// not verify, and [`ClientError::Connect`] when the broker cannot be reached.
    pub async fn connect(config: ClientConfig) -> Result<Client, ClientError> {
        let default_name = host_of(&config.broker)?.to_string();
        let server_name = config.server_name.clone().unwrap_or(default_name);
        rustls_pki_types::ServerName::try_from(server_name.as_str())
            .map_err(|_| ClientError::Config(format!("{server_name:?} is not a valid TLS server name")))?;
        let quic = quic_config(root_store(&config)?)?;
        let addrs = match timeout(config.connect_timeout, resolve(&config.broker)).await {
            Ok(r) => r?,
            Err(_) => {
                return Err(ClientError::Connect {
                    addr: config.broker.clone(),
                    reason: format!("name resolution took longer than {:?}", config.connect_timeout),
                })
            }
        };
        let ipv6 = addrs.iter().all(SocketAddr::is_ipv6);
        let bind: SocketAddr = if ipv6 { (Ipv6Addr::UNSPECIFIED, 0).into() } else { (Ipv4Addr::UNSPECIFIED, 0).into() };
        let mut endpoint = quinn::Endpoint::client(bind).map_err(|e| ClientError::Connect {
            addr: config.broker.clone(),
            reason: format!("cannot open a UDP socket: {e}"),
        })?;
        endpoint.set_default_client_config(quic);
        let client = Client {
            inner: Arc::new(Inner {
                config,
                server_name,
                endpoint,
                ipv6,
                conn: Mutex::new(None),
                dial_lock: tokio::sync::Mutex::new(()),
            }),
        };
        let conn = client.dial(Some(addrs)).await?;
        client.store(conn);
        Ok(client)
    }

    /// The configuration this client was created with.
    pub fn config(&self) -> &ClientConfig {
        &self.inner.config
    }

    /// Sends one request on its own stream and returns the broker's answer.
    ///
    /// If the connection was found lost before the request was written, it is
    /// re-established first. A request that was written is never sent again
    /// (the broker may have applied it), except read-only requests (fetch,
    /// list-offsets, metadata, offset-fetch, list/describe groups), which are
    /// retried once on a fresh connection when the connection dies under them.
    /// The whole call is bounded by the configured `request_timeout`
    /// ([`ClientError::Timeout`]); see [`Client::request_with_timeout`] for
    /// requests the broker holds longer (group joins, long polls).
    pub async fn request<R: Request>(&self, req: &R) -> Result<R::Response, ClientError> {
        self.request_with_timeout(req, self.inner.config.request_timeout).await
    }

    /// [`Client::request`] with an explicit overall timeout instead of the
    /// configured `request_timeout`: for requests the broker may hold open on
    /// purpose (a `JoinGroup` waits for the rebalance, a heartbeat or fetch is
    /// a long poll), whose limit must cover that wait plus a margin.
    pub async fn request_with_timeout<R: Request>(&self, req: &R, limit: Duration) -> Result<R::Response, ClientError> {
        let frame = frame::request_frame(R::KEY, &to_bytes(req));
        let attempts = if is_read_only(R::KEY) { 2 } else { 1 };
        let exchange = async {
            let mut attempt = 1;
            loop {
                let (conn, send, recv) = self.open_stream_inner().await?;
                match Self::exchange::<R>(frame.clone(), send, recv).await {
                    Err(e @ ClientError::Transport(_)) if attempt < attempts && conn.close_reason().is_some() => {
                        tracing::debug!(error = %e, api_key = ?R::KEY, "connection lost under a read-only request; retrying once");
                        attempt += 1;
                    }
                    other => return other,
                }
            }
        };
        match timeout(limit, exchange).await {
            Ok(result) => result,
            Err(_) => Err(ClientError::Timeout(limit)),
        }
    }

    async fn exchange<R: Request>(
        frame: Bytes,
        mut send: quinn::SendStream,
        mut recv: quinn::RecvStream,
    ) -> Result<R::Response, ClientError> {
        send.write_chunk(frame).await.map_err(error::write_error)?;
        // Finishing only fails if the stream is already closed, which the read reports.
        let _ = send.finish();
        let (code, payload) = read_response_frame(&mut recv)
            .await?
            .ok_or_else(|| ClientError::Transport("broker closed the stream without answering".into()))?;
        error::decode_response::<R::Response>(code, payload)
    }

    /// Closes the connection (code 0) and waits briefly (at most one second)
    /// for the broker to learn of it, so that a short-lived program leaves no
    /// half-open connection behind. Later calls on any clone reconnect.
    pub async fn close(&self) {
        let conn = self.inner.conn.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(conn) = conn {
            conn.close(0u32.into(), b"client closed");
            let _ = timeout(Duration::from_secs(1), self.inner.endpoint.wait_idle()).await;
        }
    }

    /// Opens a bidirectional stream on the connection, reconnecting first if
    /// the connection was lost. Used by the producer for its pipelined stream.
    pub async fn open_stream(&self) -> Result<(quinn::SendStream, quinn::RecvStream), ClientError> {
        let (_, send, recv) = self.open_stream_inner().await?;
        Ok((send, recv))
    }

    async fn open_stream_inner(
        &self,
    ) -> Result<(quinn::Connection, quinn::SendStream, quinn::RecvStream), ClientError> {
        let mut retried = false;
        loop {
            let conn = self.connection().await?;
            match conn.open_bi().await {
                Ok((send, recv)) => return Ok((conn, send, recv)),
                // Nothing was sent yet, so dialling again and retrying is safe.
                Err(e) if !retried => {
                    tracing::debug!(error = %e, "connection lost before opening a stream; reconnecting");
                    retried = true;
                }
                Err(e) => return Err(error::connection_lost(&e)),
            }
        }
    }

    fn alive(&self) -> Option<quinn::Connection> {
        let guard = self.inner.conn.lock().unwrap_or_else(|p| p.into_inner());
        guard.as_ref().filter(|c| c.close_reason().is_none()).cloned()
    }

    fn store(&self, conn: quinn::Connection) {
        *self.inner.conn.lock().unwrap_or_else(|p| p.into_inner()) = Some(conn);
    }

    /// The live connection, dialling a new one if there is none.
    async fn connection(&self) -> Result<quinn::Connection, ClientError> {
        if let Some(conn) = self.alive() {
            return Ok(conn);
        }
        let _guard = self.inner.dial_lock.lock().await;
        if let Some(conn) = self.alive() {
            return Ok(conn);
        }
        tracing::info!(broker = %self.inner.config.broker, "reconnecting to broker");
        let conn = self.dial(None).await?;
        self.store(conn.clone());
        Ok(conn)
    }

    /// Dials the broker: tries each resolved address of the endpoint's family in
    /// turn, all within one `connect_timeout`. A TLS failure ends the attempt.
    async fn dial(&self, addrs: Option<Vec<SocketAddr>>) -> Result<quinn::Connection, ClientError> {
        let cfg = &self.inner.config;
        let broker = cfg.broker.as_str();
        let deadline = Instant::now() + cfg.connect_timeout;
        let timed_out = || ClientError::Connect {
            addr: broker.to_string(),
            reason: format!(
                "no answer within {:?} (is the broker running and reachable over UDP?)",
                cfg.connect_timeout
            ),
        };
        let addrs = match addrs {
            Some(a) => a,
            None => timeout_at(deadline, resolve(broker)).await.map_err(|_| timed_out())??,
        };
        let mut last = None;
        for addr in addrs.into_iter().filter(|a| !a.is_ipv6() || self.inner.ipv6) {
            let connecting = match self.inner.endpoint.connect(addr, &self.inner.server_name) {
                Ok(c) => c,
                Err(quinn::ConnectError::InvalidServerName(name)) => {
                    return Err(ClientError::Config(format!("{name:?} is not a valid TLS server name")))
                }
                Err(e) => {
                    last = Some(ClientError::Connect { addr: broker.to_string(), reason: e.to_string() });
                    continue;
                }
            };
            match timeout_at(deadline, connecting).await {
                Ok(Ok(conn)) => {
                    tracing::debug!(%addr, "connected to broker");
                    return Ok(conn);
                }
                Ok(Err(e)) => {
                    let err = error::connect_error(broker, &e);
                    tracing::debug!(%addr, error = %err, "connection attempt failed");
                    if matches!(err, ClientError::Tls { .. }) {
                        return Err(err);
                    }
                    last = Some(err);
                }
                Err(_) => return Err(timed_out()),
            }
        }
        Err(last.unwrap_or_else(|| ClientError::Connect {
            addr: broker.to_string(),
            reason: "no address of a usable family".into(),
        }))
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
