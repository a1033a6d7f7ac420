//! Connections from this broker to the other brokers of the cluster: the
//! metadata quorum's RPCs, follower fetches, forwarded client requests and
//! heartbeats all travel over them.
//!
//! A [`PeerClient`] is one QUIC connection to one broker (dialled lazily and
//! again whenever it is found closed), verified against the cluster CA. Every
//! call opens its own stream, writes one request frame and reads one
//! response frame, bounded by the caller's timeout. Unlike the client SDK it
//! never fails over to another broker: a Raft vote must reach exactly the
//! broker it is meant for.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use eddy_protocol::codec::{from_bytes, to_bytes};
use eddy_protocol::frame::{self, LENGTH_BYTES, RESPONSE_HEADER_BYTES};
use eddy_protocol::messages::Request;
use eddy_protocol::{ErrorCode, ErrorResponse};

/// How long a dial may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// A peer that sends nothing (not even keep-alives) for this long is gone.
const IDLE_TIMEOUT: Duration = Duration::from_secs(4);

/// Why a call to another broker failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum PeerError {
    /// The broker could not be reached, or the connection broke.
    #[error("broker {id} at {addr} unreachable: {reason}")]
    Unreachable { id: u32, addr: String, reason: String },
    /// No answer in time.
    #[error("broker {id} did not answer within {timeout:?}")]
    Timeout { id: u32, timeout: Duration },
    /// The broker answered with an error.
    #[error("broker {id} answered {code}: {message}")]
    Remote { id: u32, code: ErrorCode, message: String },
    /// The answer could not be decoded.
    #[error("broker {id} sent a malformed answer: {reason}")]
    Decode { id: u32, reason: String },
    /// The cluster TLS configuration is unusable.
    #[error("cluster TLS setup: {0}")]
    Tls(String),
}

impl PeerError {
    /// The remote error code, if the broker answered with one.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            PeerError::Remote { code, .. } => Some(*code),
            _ => None,
        }
    }
}

/// The QUIC client side shared by every peer connection.
pub struct PeerEndpoint {
    endpoint: quinn::Endpoint,
}

impl PeerEndpoint {
    /// A client endpoint verifying peers against the PEM CA file `ca` and
    /// presenting this broker's certificate (`cert`, `key`) as its client
    /// certificate, which proves its broker identity to the others.
    pub fn new(ca: &Path, cert: &Path, key: &Path) -> Result<Self, PeerError> {
        let roots = crate::tls::root_store(ca).map_err(|e| PeerError::Tls(e.to_string()))?;
        let identity = crate::tls::load(cert, key).map_err(|e| PeerError::Tls(e.to_string()))?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|e| PeerError::Tls(e.to_string()))?
            .with_root_certificates(roots)
            .with_client_auth_cert(identity.chain, identity.key)
            .map_err(|e| PeerError::Tls(format!("unusable broker certificate {}: {e}", cert.display())))?;
        tls.alpn_protocols = vec![frame::ALPN.to_vec()];
        let crypto =
            quinn::crypto::rustls::QuicClientConfig::try_from(tls).map_err(|e| PeerError::Tls(e.to_string()))?;
        let mut transport = crate::server::transport_config();
        transport
            .keep_alive_interval(Some(Duration::from_millis(500)))
            .max_idle_timeout(Some(quinn::IdleTimeout::try_from(IDLE_TIMEOUT).expect("fits a varint")));
        let mut config = quinn::ClientConfig::new(Arc::new(crypto));
        config.transport_config(Arc::new(transport));
        let mut endpoint = quinn::Endpoint::client(SocketAddr::from(([0, 0, 0, 0], 0)))
            .map_err(|e| PeerError::Tls(format!("cannot open a UDP socket: {e}")))?;
        endpoint.set_default_client_config(config);
        Ok(Self { endpoint })
    }

    /// Closes every connection made from this endpoint.
    pub fn close(&self) {
        self.endpoint.close(0u32.into(), b"broker shutting down");
    }
}

/// One other broker: its id, address and (lazily dialled) connection.
pub struct PeerClient {
    id: u32,
    addr: String,
    endpoint: quinn::Endpoint,
    conn: Mutex<Option<quinn::Connection>>,
    dial: tokio::sync::Mutex<()>,
}

impl PeerClient {
    /// A client for broker `id` at `addr` (`host:port`).
    pub fn new(endpoint: &PeerEndpoint, id: u32, addr: String) -> Self {
        Self { id, addr, endpoint: endpoint.endpoint.clone(), conn: Mutex::new(None), dial: Default::default() }
    }

    fn unreachable(&self, reason: impl std::fmt::Display) -> PeerError {
        PeerError::Unreachable { id: self.id, addr: self.addr.clone(), reason: reason.to_string() }
    }

    fn alive(&self) -> Option<quinn::Connection> {
        let guard = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        guard.as_ref().filter(|c| c.close_reason().is_none()).cloned()
    }

    async fn connection(&self) -> Result<quinn::Connection, PeerError> {
        if let Some(conn) = self.alive() {
            return Ok(conn);
        }
        let _guard = self.dial.lock().await;
        if let Some(conn) = self.alive() {
            return Ok(conn);
        }
        let addr = tokio::net::lookup_host(&self.addr)
            .await
            .map_err(|e| self.unreachable(format!("cannot resolve: {e}")))?
            .find(SocketAddr::is_ipv4)
            .ok_or_else(|| self.unreachable("no IPv4 address"))?;
        let host = self.addr.rsplit_once(':').map(|(h, _)| h.trim_matches(['[', ']'])).unwrap_or(&self.addr);
        let connecting = self.endpoint.connect(addr, host).map_err(|e| self.unreachable(e))?;
        let conn = match tokio::time::timeout(CONNECT_TIMEOUT, connecting).await {
            Ok(Ok(conn)) => conn,
            Ok(Err(e)) => return Err(self.unreachable(e)),
            Err(_) => return Err(self.unreachable(format!("no answer within {CONNECT_TIMEOUT:?}"))),
        };
        // The address must be served by the broker it is meant to be, not by
        // another broker (or anything else the CA signed).
        let proven = crate::auth::identity::principal_of_connection(&conn);
        if proven != Some(crate::auth::Principal::Broker(self.id)) {
            conn.close(0u32.into(), b"not the expected broker");
            return Err(self.unreachable(format!("its certificate proves {proven:?}, not broker {}", self.id)));
        }
        *self.conn.lock().unwrap_or_else(|p| p.into_inner()) = Some(conn.clone());
        Ok(conn)
    }

    /// Sends a whole request frame and returns the response frame's error
    /// code and payload, within `timeout`.
    pub async fn exchange_frame(&self, request: Bytes, timeout: Duration) -> Result<(u16, Bytes), PeerError> {
        let work = async {
            let conn = self.connection().await?;
            let (mut send, mut recv) = conn.open_bi().await.map_err(|e| self.unreachable(e))?;
            send.write_chunk(request).await.map_err(|e| self.unreachable(e))?;
            let _ = send.finish();
            read_response(&mut recv).await.map_err(|e| self.unreachable(e))
        };
        match tokio::time::timeout(timeout, work).await {
            Ok(result) => result,
            Err(_) => Err(PeerError::Timeout { id: self.id, timeout }),
        }
    }

    /// Sends a typed request and decodes its typed answer, within `timeout`.
    pub async fn request<R: Request>(&self, req: &R, timeout: Duration) -> Result<R::Response, PeerError> {
        let frame = frame::request_frame(R::KEY, &to_bytes(req));
        let (code, payload) = self.exchange_frame(frame, timeout).await?;
        if code == 0 {
            return from_bytes(payload).map_err(|e| PeerError::Decode { id: self.id, reason: e.to_string() });
        }
        let message = from_bytes::<ErrorResponse>(payload).map(|e| e.message).unwrap_or_default();
        Err(PeerError::Remote { id: self.id, code: ErrorCode::from_u16(code), message })
    }
}

/// Reads one response frame: (error code, payload).
async fn read_response(recv: &mut quinn::RecvStream) -> Result<(u16, Bytes), String> {
    let mut len = [0u8; LENGTH_BYTES];
    recv.read_exact(&mut len).await.map_err(|e| format!("reading a response length: {e}"))?;
    let len = u32::from_le_bytes(len);
    frame::check_length(len, RESPONSE_HEADER_BYTES).map_err(|e| e.to_string())?;
    let mut body = BytesMut::with_capacity(len as usize);
    while body.len() < len as usize {
        match recv.read_chunk(len as usize - body.len(), true).await {
            Ok(Some(chunk)) => body.extend_from_slice(&chunk.bytes),
            Ok(None) => return Err("stream ended inside a response".into()),
            Err(e) => return Err(e.to_string()),
        }
    }
    frame::split_response(body.freeze()).map_err(|e| e.to_string())
}

/// Every other broker of the cluster, by id.
pub struct Peers {
    by_id: BTreeMap<u32, Arc<PeerClient>>,
    endpoint: PeerEndpoint,
}

impl Peers {
    /// Clients for `peers` (id -> address), excluding `self_id`.
    pub fn new(endpoint: PeerEndpoint, self_id: u32, peers: &BTreeMap<u32, String>) -> Self {
        let by_id = peers
            .iter()
            .filter(|(id, _)| **id != self_id)
            .map(|(id, addr)| (*id, Arc::new(PeerClient::new(&endpoint, *id, addr.clone()))))
            .collect();
        Self { by_id, endpoint }
    }

    /// The client of broker `id`, if it is another broker of the cluster.
    pub fn get(&self, id: u32) -> Option<Arc<PeerClient>> {
        self.by_id.get(&id).cloned()
    }

    /// Closes every peer connection.
    pub fn close(&self) {
        self.endpoint.close();
    }
}
