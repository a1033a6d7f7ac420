//! Authenticating a new connection, right after the QUIC handshake.
//!
//! * With [`Credentials`]: SCRAM-SHA-256 (RFC 5802/7677) on one stream. The
//!   client sends client-first, reads server-first, sends client-final and
//!   returns at once: the broker holds the connection's other requests until
//!   it has checked the proof, so authentication costs one round trip. The
//!   server-final message (the broker's proof that it knows the credential)
//!   is read and verified in the background; a connection whose broker fails
//!   it is closed. The password never crosses the wire.
//! * With a client certificate only: the TLS handshake proved the identity;
//!   nothing is sent, unless the connection acts as a processor.
//! * `act_as_processor` (processor workers): the broker runs the connection
//!   as `Processor:<name>` once it checked the principal may run it.

use bytes::Bytes;
use eddy_protocol::codec::{from_bytes, to_bytes};
use eddy_protocol::frame::{self, ApiKey};
use eddy_protocol::scram::ScramClient;
use eddy_protocol::security::{AuthenticateRequest, AuthenticateResponse, SCRAM_SHA_256, TLS_MECHANISM};
use eddy_protocol::{ErrorCode, ErrorResponse};

use super::conn::read_response_frame;
use crate::error::{self, ClientError};

/// A user name and password for SCRAM-SHA-256. The password is kept in
/// memory only and never printed (Debug hides it).
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    /// The user name.
    pub user: String,
    password: String,
}

impl Credentials {
    /// Credentials of `user` with `password`.
    pub fn new(user: impl Into<String>, password: impl Into<String>) -> Self {
        Self { user: user.into(), password: password.into() }
    }

    /// The password.
    pub fn password(&self) -> &str {
        &self.password
    }
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials").field("user", &self.user).field("password", &"<hidden>").finish()
    }
}

/// How connections authenticate.
#[derive(Debug, Clone, Default)]
pub(crate) struct AuthConfig {
    pub credentials: Option<Credentials>,
    pub client_cert: bool,
    pub act_as_processor: Option<String>,
}

async fn step(
    send: &mut quinn::SendStream,
    recv: &mut quinn::RecvStream,
    req: &AuthenticateRequest,
) -> Result<AuthenticateResponse, ClientError> {
    write(send, req).await?;
    read(recv).await
}

async fn write(send: &mut quinn::SendStream, req: &AuthenticateRequest) -> Result<(), ClientError> {
    let frame = frame::request_frame(ApiKey::Authenticate, &to_bytes(req));
    send.write_all(&frame).await.map_err(error::write_error)
}

async fn read(recv: &mut quinn::RecvStream) -> Result<AuthenticateResponse, ClientError> {
    let (code, payload) = read_response_frame(recv)
        .await?
        .ok_or_else(|| ClientError::Transport("broker closed the stream during authentication".into()))?;
    if code != 0 {
        let message = from_bytes::<ErrorResponse>(payload).map(|e| e.message).unwrap_or_default();
        return Err(ClientError::Broker { code: ErrorCode::from_u16(code), message, log_start: None, log_end: None });
    }
    from_bytes(payload).map_err(|e| ClientError::Decode(e.to_string()))
}

/// Authenticates `conn` as `auth` says (see the module docs).
pub(crate) async fn authenticate(conn: &quinn::Connection, auth: &AuthConfig) -> Result<(), ClientError> {
    let Some(credentials) = &auth.credentials else {
        if auth.client_cert && auth.act_as_processor.is_some() {
            let (mut send, mut recv) = conn.open_bi().await.map_err(|e| error::connection_lost(&e))?;
            let req = AuthenticateRequest {
                mechanism: TLS_MECHANISM.into(),
                payload: Bytes::new(),
                act_as_processor: auth.act_as_processor.clone(),
            };
            step(&mut send, &mut recv, &req).await?;
            let _ = send.finish();
        }
        return Ok(());
    };
    let (mut send, mut recv) = conn.open_bi().await.map_err(|e| error::connection_lost(&e))?;
    let (client, first) = ScramClient::start(&credentials.user, credentials.password());
    let request = |payload: String| AuthenticateRequest {
        mechanism: SCRAM_SHA_256.into(),
        payload: Bytes::from(payload),
        act_as_processor: auth.act_as_processor.clone(),
    };
    let server_first = step(&mut send, &mut recv, &request(first)).await?;
    let server_first = std::str::from_utf8(&server_first.payload)
        .map_err(|_| ClientError::Decode("the SCRAM server-first message is not UTF-8".into()))?;
    let (client, last) = client
        .handle_server_first(server_first)
        .map_err(|e| ClientError::Config(format!("authentication with the broker failed: {e}")))?;
    write(&mut send, &request(last)).await?;
    let _ = send.finish();
    // The broker holds every other request of this connection until it has
    // checked the proof; the broker's own proof is checked meanwhile.
    let conn = conn.clone();
    tokio::spawn(async move {
        let verified = match read(&mut recv).await {
            Ok(answer) => std::str::from_utf8(&answer.payload)
                .map_err(|_| "server-final is not UTF-8".to_string())
                .and_then(|m| client.handle_server_final(m).map_err(|e| e.to_string())),
            Err(e) => Err(e.to_string()),
        };
        if let Err(why) = verified {
            tracing::debug!(error = %why, "broker authentication failed; closing the connection");
            conn.close(0x41u32.into(), b"authentication failed");
        }
    });
    Ok(())
}
