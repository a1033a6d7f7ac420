//! The QUIC side of the broker: accepts connections, reads request frames from
//! each bidirectional stream, hands them to [`handlers`], and writes responses
//! back in request order.
//!
//! Bad input never takes more than its own stream down: a frame that cannot be
//! read gets a `MALFORMED_REQUEST` response and its stream is closed; other
//! streams and connections carry on. Limits: [`MAX_CONNECTIONS`] connections,
//! [`MAX_STREAMS_PER_CONNECTION`] concurrent streams each, [`PIPELINE_DEPTH`]
//! unanswered requests per stream, frames of at most
//! `eddy_protocol::limits::MAX_FRAME_BYTES`.

pub mod handlers;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use eddy_protocol::frame::{check_length, REQUEST_HEADER_BYTES};
use eddy_protocol::{ErrorCode, ErrorResponse};
use futures::future::BoxFuture;
use quinn::{Endpoint, RecvStream, SendStream, VarInt};
use tokio::sync::{mpsc, watch, Semaphore};
use tracing::{debug, info, warn};

use crate::auth::session::AuthState;
use crate::auth::{identity, Session};
use handlers::{error_frame, Handlers};

/// Most client connections served at once; more are refused.
pub const MAX_CONNECTIONS: usize = 1024;
/// Most concurrent bidirectional streams (requests) per connection.
pub const MAX_STREAMS_PER_CONNECTION: u32 = 1024;
/// Most requests read ahead of their responses on one stream.
pub const PIPELINE_DEPTH: usize = 128;
/// How long shutdown waits for in-flight requests.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// A response that is being computed; resolves to a whole response frame.
pub type PendingResponse = BoxFuture<'static, Vec<Bytes>>;

/// QUIC transport settings tuned for bulk record transfer on fast links.
pub fn transport_config() -> quinn::TransportConfig {
    let mut t = quinn::TransportConfig::default();
    t.max_concurrent_bidi_streams(VarInt::from_u32(MAX_STREAMS_PER_CONNECTION))
        .max_concurrent_uni_streams(VarInt::from_u32(0))
        .stream_receive_window(VarInt::from_u32(16 * 1024 * 1024))
        .receive_window(VarInt::from_u32(64 * 1024 * 1024))
        .send_window(64 * 1024 * 1024)
        .keep_alive_interval(Some(Duration::from_secs(5)))
        .max_idle_timeout(Some(VarInt::from_u32(30_000).into()));
    t
}

/// Builds the QUIC endpoint listening on `addr`.
pub fn endpoint(addr: SocketAddr, tls: rustls::ServerConfig) -> Result<Endpoint, std::io::Error> {
    let crypto = quinn::crypto::rustls::QuicServerConfig::try_from(tls)
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e.to_string()))?;
    let mut config = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    config.transport_config(Arc::new(transport_config()));
    Endpoint::server(config, addr)
}

/// Accepts connections until `shutdown` turns true, then waits (up to
/// [`SHUTDOWN_GRACE`]) for in-flight requests to finish.
pub async fn serve(endpoint: Endpoint, handlers: Arc<Handlers>, mut shutdown: watch::Receiver<bool>) {
    let limit = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    // Every task holds a clone; when all are dropped, `done_rx` yields None.
    let (done_tx, mut done_rx) = mpsc::channel::<()>(1);
    loop {
        let incoming = tokio::select! {
            incoming = endpoint.accept() => match incoming {
                Some(i) => i,
                None => break,
            },
            _ = shutdown.wait_for(|s| *s) => break,
        };
        let Ok(permit) = limit.clone().try_acquire_owned() else {
            warn!(remote = %incoming.remote_address(), "connection limit reached; refusing");
            incoming.refuse();
            continue;
        };
        let handlers = handlers.clone();
        let shutdown = shutdown.clone();
        let done = done_tx.clone();
        tokio::spawn(async move {
            let remote = incoming.remote_address();
            match incoming.await {
                Ok(conn) => serve_connection(conn, handlers, shutdown, done).await,
                Err(e) => debug!(%remote, error = %e, "handshake failed"),
            }
            drop(permit);
        });
    }
    // Stop accepting: new connection attempts are refused from here on.
    endpoint.set_server_config(None);
    drop(done_tx);
    if tokio::time::timeout(SHUTDOWN_GRACE, done_rx.recv()).await.is_err() {
        warn!("in-flight requests did not finish within {SHUTDOWN_GRACE:?}; closing anyway");
    }
    endpoint.close(VarInt::from_u32(0), b"broker shutting down");
    let _ = tokio::time::timeout(Duration::from_secs(2), endpoint.wait_idle()).await;
}

async fn serve_connection(
    conn: quinn::Connection,
    handlers: Arc<Handlers>,
    mut shutdown: watch::Receiver<bool>,
    done: mpsc::Sender<()>,
) {
    let remote = conn.remote_address();
    let session = Arc::new(Session::new(remote, identity::principal_of_connection(&conn)));
    debug!(%remote, principal = ?session.state(), "connection open");
    tokio::spawn(close_unauthenticated(conn.clone(), session.clone()));
    loop {
        let (send, recv) = tokio::select! {
            s = conn.accept_bi() => match s {
                Ok(s) => s,
                Err(e) => {
                    debug!(%remote, reason = %e, "connection closed");
                    break;
                }
            },
            _ = shutdown.wait_for(|s| *s) => break,
        };
        let handlers = handlers.clone();
        let done = done.clone();
        let session = session.clone();
        tokio::spawn(async move {
            serve_stream(handlers, send, recv, session).await;
            drop(done);
        });
    }
}

/// Closes a connection that did not authenticate within the auth timeout,
/// or whose authentication failed (after its answers had a moment to leave).
async fn close_unauthenticated(conn: quinn::Connection, session: Arc<Session>) {
    let mut state = session.subscribe();
    let settled = tokio::select! {
        s = tokio::time::timeout_at(session.deadline(), state.wait_for(|s| *s != AuthState::Pending)) => s,
        _ = conn.closed() => return,
    };
    let failed = match settled.map(|r| r.map(|s| matches!(*s, AuthState::Failed(_)))) {
        Ok(Ok(failed)) => failed,
        Ok(Err(_)) => return,
        Err(_) => true,
    };
    if failed {
        tokio::time::sleep(Duration::from_millis(500)).await;
        debug!(remote = %session.remote(), "closing an unauthenticated connection");
        conn.close(VarInt::from_u32(AUTH_FAILED_CLOSE_CODE), b"authentication failed or timed out");
    }
}

/// The QUIC close code of a connection closed for failed (or missing) authentication.
pub const AUTH_FAILED_CLOSE_CODE: u32 = 0x41;

/// Why a frame could not be read from a stream.
enum ReadFrame {
    /// The client finished the stream between frames.
    End,
    /// The stream broke (reset, connection lost): nobody to answer.
    Gone,
    /// The bytes are not a frame; the message says why.
    Malformed(String),
}

async fn read_frame(recv: &mut RecvStream) -> Result<Bytes, ReadFrame> {
    let mut len = [0u8; 4];
    match recv.read_exact(&mut len).await {
        Ok(()) => {}
        Err(quinn::ReadExactError::FinishedEarly(0)) => return Err(ReadFrame::End),
        Err(quinn::ReadExactError::FinishedEarly(n)) => {
            return Err(ReadFrame::Malformed(format!("stream ended inside a length prefix ({n} of 4 bytes)")))
        }
        Err(quinn::ReadExactError::ReadError(_)) => return Err(ReadFrame::Gone),
    }
    let len = u32::from_le_bytes(len);
    check_length(len, REQUEST_HEADER_BYTES).map_err(|e| ReadFrame::Malformed(e.to_string()))?;
    // Filled chunk by chunk: no zeroing of a buffer that is overwritten anyway.
    let mut body = BytesMut::with_capacity(len as usize);
    while body.len() < len as usize {
        match recv.read_chunk(len as usize - body.len(), true).await {
            Ok(Some(chunk)) => body.extend_from_slice(&chunk.bytes),
            Ok(None) => {
                let n = body.len();
                return Err(ReadFrame::Malformed(format!("truncated frame: stream ended after {n} of {len} bytes")));
            }
            Err(_) => return Err(ReadFrame::Gone),
        }
    }
    Ok(body.freeze())
}

/// Serves one stream: reads requests until the client finishes it, answering
/// each in order. Requests are read ahead while earlier ones are in flight
/// (pipelining), up to [`PIPELINE_DEPTH`].
async fn serve_stream(handlers: Arc<Handlers>, mut send: SendStream, mut recv: RecvStream, session: Arc<Session>) {
    let (tx, mut rx) = mpsc::channel::<PendingResponse>(PIPELINE_DEPTH);
    let reader = async move {
        loop {
            match read_frame(&mut recv).await {
                Ok(frame) => {
                    if let Some(response) = handlers.dispatch(frame, &session).await {
                        if tx.send(response).await.is_err() {
                            break;
                        }
                    }
                }
                Err(ReadFrame::End) | Err(ReadFrame::Gone) => break,
                Err(ReadFrame::Malformed(reason)) => {
                    debug!(%reason, "malformed frame");
                    let frame = error_frame(ErrorCode::MalformedRequest, ErrorResponse::message(reason));
                    let _ = tx.send(Box::pin(async move { vec![frame] })).await;
                    // The stream cannot be resynchronised: stop reading it.
                    let _ = recv.stop(VarInt::from_u32(1));
                    break;
                }
            }
        }
    };
    let writer = async move {
        while let Some(response) = rx.recv().await {
            let mut chunks = response.await;
            if send.write_all_chunks(&mut chunks).await.is_err() {
                return;
            }
        }
        let _ = send.finish();
        // Let the peer read everything before the stream is dropped.
        let _ = tokio::time::timeout(Duration::from_secs(5), send.stopped()).await;
    };
    tokio::join!(reader, writer);
}

/// Logs the broker's readiness line.
pub fn announce(id: u32, addr: SocketAddr, ca: &std::path::Path) {
    info!(broker = id, %addr, ca = %ca.display(), "eddy broker listening");
}
