//! One broker address: its QUIC connection (dialled lazily, dialled again
//! after a loss, one dial at a time) and the exchange of one request frame for
//! one response frame on a stream of its own.
//!
//! Every failure of an exchange says whether the request may have reached the
//! broker ([`ExchangeError::Sent`]) or certainly did not
//! ([`ExchangeError::NotSent`]): the caller's retry rules depend on it.

use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use eddy_protocol::frame::{self, LENGTH_BYTES, RESPONSE_HEADER_BYTES};
use tokio::time::{timeout_at, Instant};

use crate::error::{self, ClientError};

/// After a failed dial, an address is tried after the others for this long,
/// so that a dead broker does not cost every request a connect timeout.
pub(crate) const DOWN_FOR: Duration = Duration::from_secs(5);

/// What every connection shares: the endpoint and how to dial.
pub(crate) struct Dialer {
    pub endpoint: quinn::Endpoint,
    /// Only addresses of this family are dialled (the endpoint's socket family).
    pub ipv6: bool,
    pub connect_timeout: Duration,
    /// How each new connection authenticates.
    pub auth: super::auth::AuthConfig,
}

/// Why an exchange failed.
#[derive(Debug)]
pub(crate) enum ExchangeError {
    /// Nothing was written: the broker cannot have seen the request.
    NotSent(ClientError),
    /// The request was (maybe partly) written: the broker may have applied it.
    Sent(ClientError),
}

impl ExchangeError {
    pub fn into_inner(self) -> ClientError {
        match self {
            ExchangeError::NotSent(e) | ExchangeError::Sent(e) => e,
        }
    }
}

/// The connection to one broker address, shared by every request to it.
pub(crate) struct BrokerConn {
    addr: String,
    server_name: String,
    conn: Mutex<Option<quinn::Connection>>,
    /// Serializes dialling so that concurrent callers dial once.
    dial_lock: tokio::sync::Mutex<()>,
    /// Set when a dial failed: until then the address is tried last.
    down_until: Mutex<Option<Instant>>,
}

impl BrokerConn {
    pub fn new(addr: String, server_name: String) -> Self {
        Self {
            addr,
            server_name,
            conn: Mutex::new(None),
            dial_lock: tokio::sync::Mutex::new(()),
            down_until: Mutex::new(None),
        }
    }

    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// Whether a dial failed less than [`DOWN_FOR`] ago and no dial succeeded since.
    pub fn seems_down(&self) -> bool {
        let guard = self.down_until.lock().unwrap_or_else(|p| p.into_inner());
        guard.is_some_and(|until| Instant::now() < until)
    }

    fn set_down(&self, down: bool) {
        let until = down.then(|| Instant::now() + DOWN_FOR);
        *self.down_until.lock().unwrap_or_else(|p| p.into_inner()) = until;
    }

    fn alive(&self) -> Option<quinn::Connection> {
        let guard = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        guard.as_ref().filter(|c| c.close_reason().is_none()).cloned()
    }

    pub fn store(&self, conn: quinn::Connection) {
        *self.conn.lock().unwrap_or_else(|p| p.into_inner()) = Some(conn);
    }

    /// Closes the connection, if any (code 0). The next request dials again.
    pub fn close(&self) -> bool {
        let conn = self.conn.lock().unwrap_or_else(|p| p.into_inner()).take();
        match conn {
            Some(conn) => {
                conn.close(0u32.into(), b"client closed");
                true
            }
            None => false,
        }
    }

    /// The live connection, dialling a new one if there is none.
    pub async fn connection(&self, dialer: &Dialer) -> Result<quinn::Connection, ClientError> {
        if let Some(conn) = self.alive() {
            return Ok(conn);
        }
        let _guard = self.dial_lock.lock().await;
        if let Some(conn) = self.alive() {
            return Ok(conn);
        }
        tracing::debug!(broker = %self.addr, "dialling broker");
        match self.dial(dialer, None).await {
            Ok(conn) => {
                self.set_down(false);
                self.store(conn.clone());
                Ok(conn)
            }
            Err(e) => {
                if matches!(e, ClientError::Connect { .. }) {
                    self.set_down(true);
                }
                Err(e)
            }
        }
    }

    /// Opens a bidirectional stream, dialling first if the connection was
    /// lost; a connection found dead while opening is dialled again once.
    pub async fn open_stream(
        &self,
        dialer: &Dialer,
    ) -> Result<(quinn::Connection, quinn::SendStream, quinn::RecvStream), ClientError> {
        let mut retried = false;
        loop {
            let conn = self.connection(dialer).await?;
            match conn.open_bi().await {
                Ok((send, recv)) => return Ok((conn, send, recv)),
                // Nothing was sent yet, so dialling again and retrying is safe.
                Err(e) if !retried => {
                    tracing::debug!(broker = %self.addr, error = %e, "connection lost before opening a stream; reconnecting");
                    retried = true;
                }
                Err(e) => return Err(error::connection_lost(&e)),
            }
        }
    }

    /// Sends one request frame on a new stream and reads its response frame.
    /// A read-only request (`retry_once`) whose connection dies under it is
    /// sent once more on a fresh connection.
    pub async fn exchange(
        &self,
        dialer: &Dialer,
        frame: &Bytes,
        retry_once: bool,
    ) -> Result<(u16, Bytes), ExchangeError> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let (conn, mut send, mut recv) = self.open_stream(dialer).await.map_err(ExchangeError::NotSent)?;
            let result = async {
                send.write_chunk(frame.clone()).await.map_err(error::write_error)?;
                // Finishing only fails if the stream is already closed, which the read reports.
                let _ = send.finish();
                read_response_frame(&mut recv)
                    .await?
                    .ok_or_else(|| ClientError::Transport("broker closed the stream without answering".into()))
            }
            .await;
            match result {
                Err(e @ ClientError::Transport(_)) if retry_once && attempt == 1 && conn.close_reason().is_some() => {
                    tracing::debug!(broker = %self.addr, error = %e, "connection lost under a read-only request; retrying once");
                }
                Err(e) => return Err(ExchangeError::Sent(e)),
                Ok(frame) => return Ok(frame),
            }
        }
    }

    /// Dials the broker: tries each resolved address of the endpoint's family in
    /// turn, all within one `connect_timeout`. A TLS failure ends the attempt.
    pub async fn dial(
        &self,
        dialer: &Dialer,
        addrs: Option<Vec<SocketAddr>>,
    ) -> Result<quinn::Connection, ClientError> {
        let broker = self.addr.as_str();
        let deadline = Instant::now() + dialer.connect_timeout;
        let timed_out = || ClientError::Connect {
            addr: broker.to_string(),
            reason: format!(
                "no answer within {:?} (is the broker running and reachable over UDP?)",
                dialer.connect_timeout
            ),
        };
        let addrs = match addrs {
            Some(a) => a,
            None => timeout_at(deadline, resolve(broker)).await.map_err(|_| timed_out())??,
        };
        let mut last = None;
        for addr in addrs.into_iter().filter(|a| !a.is_ipv6() || dialer.ipv6) {
            let connecting = match dialer.endpoint.connect(addr, &self.server_name) {
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
                    match timeout_at(deadline, super::auth::authenticate(&conn, &dialer.auth)).await {
                        Ok(Ok(())) => return Ok(conn),
                        Ok(Err(e)) => {
                            conn.close(0u32.into(), b"authentication failed");
                            return Err(e);
                        }
                        Err(_) => return Err(timed_out()),
                    }
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

/// Resolves `broker`, IPv4 addresses first.
pub(crate) async fn resolve(broker: &str) -> Result<Vec<SocketAddr>, ClientError> {
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
