//! The one error type of the SDK, [`ClientError`], and the mapping from QUIC,
//! TLS and broker error responses to it.
//!
//! Every failure a caller can see is one of its variants: broker answers keep
//! their stable [`ErrorCode`], transport failures keep the text quinn gave, and
//! certificate problems during the handshake become [`ClientError::Tls`] so a
//! wrong CA never looks like an unreachable broker.

use std::time::Duration;

use bytes::Bytes;
use eddy_protocol::codec::{from_bytes, Wire};
use eddy_protocol::{ErrorCode, ErrorResponse};

/// Everything that can go wrong in a client call.
///
/// Cheap to clone, so that one failure can be handed to every record of a batch.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ClientError {
    /// The broker could not be reached or the QUIC handshake failed for a reason
    /// other than certificate verification.
    #[error("cannot connect to broker {addr}: {reason}")]
    Connect {
        /// The `host:port` that was dialled.
        addr: String,
        /// What went wrong.
        reason: String,
    },
    /// The broker's certificate did not verify against the configured CA.
    #[error(
        "TLS verification of broker {addr} failed: {reason}; pass the broker's CA certificate with --ca or EDDY_CA"
    )]
    Tls {
        /// The `host:port` that was dialled.
        addr: String,
        /// The verification error reported by rustls.
        reason: String,
    },
    /// The broker answered with an error code.
    #[error("broker error {code}: {message}")]
    Broker {
        /// The stable error code.
        code: ErrorCode,
        /// The broker's explanation.
        message: String,
        /// For `OffsetOutOfRange`: the partition's log start.
        log_start: Option<u64>,
        /// For `OffsetOutOfRange`: the partition's log end.
        log_end: Option<u64>,
    },
    /// The broker's answer could not be decoded.
    #[error("malformed response: {0}")]
    Decode(String),
    /// The connection or stream failed after the handshake.
    #[error("connection to broker lost: {0}")]
    Transport(String),
    /// No answer arrived within the request timeout.
    #[error("request timed out after {0:?}")]
    Timeout(Duration),
    /// A configuration value is unusable (missing CA, bad address, ...).
    #[error("invalid configuration: {0}")]
    Config(String),
    /// The producer was closed (or its task ended) before the record was handled.
    #[error("producer is closed")]
    ProducerClosed,
    /// A group member owns a partition for which its group has no committed
    /// offset and its `offset_reset` policy is `None`: seek to choose a position.
    #[error(
        "group has no committed offset for {topic}/{partition} and the offset reset policy is none; seek to a position"
    )]
    NoCommittedOffset {
        /// The topic.
        topic: String,
        /// The partition.
        partition: u32,
    },
    /// A record is larger than the producer's `max_record_bytes`.
    #[error("record too large: {size} bytes, max {max}")]
    RecordTooLarge {
        /// Encoded size of the record.
        size: usize,
        /// The configured limit.
        max: usize,
    },
}

impl ClientError {
    /// The broker's error code, for [`ClientError::Broker`] only.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            ClientError::Broker { code, .. } => Some(*code),
            _ => None,
        }
    }

    /// Whether the same call may succeed if tried again later: transport
    /// failures, timeouts, unreachable brokers and retriable broker codes.
    ///
    /// Retrying by hand (sending the records again) may duplicate them: a
    /// request that failed in transport or timed out may still have been
    /// applied. The idempotent producer's own retries do not: they resend the
    /// same batch, which the broker recognises.
    pub fn is_retriable(&self) -> bool {
        match self {
            ClientError::Broker { code, .. } => code.is_retriable(),
            ClientError::Connect { .. } | ClientError::Transport(_) | ClientError::Timeout(_) => true,
            ClientError::Tls { .. }
            | ClientError::Decode(_)
            | ClientError::Config(_)
            | ClientError::ProducerClosed
            | ClientError::NoCommittedOffset { .. }
            | ClientError::RecordTooLarge { .. } => false,
        }
    }

    /// A broker-style error produced on the client side (e.g. a partition that
    /// the cached metadata says does not exist).
    pub(crate) fn broker(code: ErrorCode, message: impl Into<String>) -> Self {
        ClientError::Broker { code, message: message.into(), log_start: None, log_end: None }
    }
}

/// TLS alerts that mean "your certificate chain is not acceptable".
const CERTIFICATE_ALERTS: &[u8] = &[
    42,  // bad_certificate
    43,  // unsupported_certificate
    44,  // certificate_revoked
    45,  // certificate_expired
    46,  // certificate_unknown
    48,  // unknown_ca
    116, // certificate_required
];

/// The TLS alert carried by a QUIC transport error code, if it is a crypto error.
fn tls_alert(code: quinn::TransportErrorCode) -> Option<u8> {
    let raw = u64::from(code);
    (0x100..0x200).contains(&raw).then_some((raw & 0xff) as u8)
}

fn is_certificate_problem(alert: Option<u8>, reason: &str) -> bool {
    let reason = reason.to_ascii_lowercase();
    reason.contains("invalid peer certificate")
        || reason.contains("certificate")
        || alert.is_some_and(|a| CERTIFICATE_ALERTS.contains(&a))
}

/// Maps a failure of the QUIC handshake (or of a connection that never got
/// going) to a client error: certificate problems become [`ClientError::Tls`],
/// everything else [`ClientError::Connect`].
pub(crate) fn connect_error(addr: &str, err: &quinn::ConnectionError) -> ClientError {
    use quinn::ConnectionError as E;
    let addr = addr.to_string();
    match err {
        E::TransportError(te) => {
            let alert = tls_alert(te.code);
            if alert.is_some() && is_certificate_problem(alert, &te.reason) {
                let reason = if te.reason.is_empty() { te.to_string() } else { te.reason.clone() };
                return ClientError::Tls { addr, reason };
            }
            ClientError::Connect { addr, reason: te.to_string() }
        }
        E::ConnectionClosed(close) => {
            let reason = String::from_utf8_lossy(&close.reason).into_owned();
            let alert = tls_alert(close.error_code);
            if alert.is_some() && is_certificate_problem(alert, &reason) {
                return ClientError::Tls { addr, reason: close.to_string() };
            }
            if alert == Some(120) {
                return ClientError::Connect {
                    addr,
                    reason: format!("the server does not speak the eddy/1 protocol (ALPN refused): {close}"),
                };
            }
            ClientError::Connect { addr, reason: format!("handshake refused by the server: {close}") }
        }
        E::TimedOut => ClientError::Connect {
            addr,
            reason: "no answer (is the broker running and reachable over UDP?)".to_string(),
        },
        other => {
            let text = other.to_string();
            if text.contains("invalid peer certificate") {
                ClientError::Tls { addr, reason: text }
            } else {
                ClientError::Connect { addr, reason: text }
            }
        }
    }
}

/// Maps the loss of an established connection.
pub(crate) fn connection_lost(err: &quinn::ConnectionError) -> ClientError {
    ClientError::Transport(err.to_string())
}

pub(crate) fn write_error(err: quinn::WriteError) -> ClientError {
    match err {
        quinn::WriteError::ConnectionLost(e) => connection_lost(&e),
        quinn::WriteError::Stopped(code) => {
            ClientError::Transport(format!("broker stopped reading the stream (code {code})"))
        }
        other => ClientError::Transport(other.to_string()),
    }
}

pub(crate) fn read_error(err: quinn::ReadError) -> ClientError {
    match err {
        quinn::ReadError::ConnectionLost(e) => connection_lost(&e),
        quinn::ReadError::Reset(code) => ClientError::Transport(format!("broker reset the stream (code {code})")),
        other => ClientError::Transport(other.to_string()),
    }
}

/// Turns a response frame's error code and payload into the response body or
/// a [`ClientError::Broker`].
pub(crate) fn decode_response<T: Wire>(code: u16, payload: Bytes) -> Result<T, ClientError> {
    if code == ErrorCode::None as u16 {
        return from_bytes::<T>(payload).map_err(|e| ClientError::Decode(e.to_string()));
    }
    let code = ErrorCode::from_u16(code);
    Err(match from_bytes::<ErrorResponse>(payload) {
        Ok(body) => {
            ClientError::Broker { code, message: body.message, log_start: body.log_start, log_end: body.log_end }
        }
        Err(e) => ClientError::broker(code, format!("(undecodable error body: {e})")),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use eddy_protocol::codec::to_bytes;
    use eddy_protocol::messages::ListOffsetsResponse;

    fn transport_error(code: quinn::TransportErrorCode, reason: &str) -> quinn::ConnectionError {
        let mut err = quinn::ConnectionError::TransportError(code.into());
        if let quinn::ConnectionError::TransportError(te) = &mut err {
            te.reason = reason.to_string();
        }
        err
    }

    #[test]
    fn unknown_ca_during_handshake_is_a_tls_error() {
        let err = transport_error(quinn::TransportErrorCode::crypto(48), "invalid peer certificate: UnknownIssuer");
        let mapped = connect_error("127.0.0.1:9092", &err);
        assert!(matches!(&mapped, ClientError::Tls { reason, .. } if reason.contains("UnknownIssuer")), "{mapped}");
        let text = mapped.to_string();
        assert!(text.contains("--ca") && text.contains("EDDY_CA") && text.contains("127.0.0.1:9092"), "{text}");
        assert!(!mapped.is_retriable());
    }

    #[test]
    fn bad_signature_alert_with_certificate_text_is_a_tls_error() {
        // rustls reports BadSignature with the decrypt_error alert; the text decides.
        let err = transport_error(quinn::TransportErrorCode::crypto(51), "invalid peer certificate: BadSignature");
        assert!(matches!(connect_error("b:1", &err), ClientError::Tls { .. }));
    }

    #[test]
    fn other_handshake_failures_are_connect_errors() {
        let err = quinn::ConnectionError::TimedOut;
        let mapped = connect_error("b:1", &err);
        assert!(matches!(&mapped, ClientError::Connect { reason, .. } if reason.contains("UDP")), "{mapped}");
        assert!(mapped.is_retriable());
        let err = transport_error(quinn::TransportErrorCode::crypto(120), "peer refused ALPN");
        assert!(matches!(connect_error("b:1", &err), ClientError::Connect { .. }));
        assert!(matches!(connect_error("b:1", &quinn::ConnectionError::Reset), ClientError::Connect { .. }));
    }

    #[test]
    fn error_frames_become_broker_errors_with_offsets() {
        let body = ErrorResponse { message: "below log start".into(), log_start: Some(10), log_end: Some(20) };
        let err =
            decode_response::<ListOffsetsResponse>(ErrorCode::OffsetOutOfRange as u16, to_bytes(&body)).unwrap_err();
        match &err {
            ClientError::Broker { code, message, log_start, log_end } => {
                assert_eq!(*code, ErrorCode::OffsetOutOfRange);
                assert_eq!(message, "below log start");
                assert_eq!((*log_start, *log_end), (Some(10), Some(20)));
            }
            other => panic!("unexpected {other:?}"),
        }
        assert_eq!(err.code(), Some(ErrorCode::OffsetOutOfRange));
        assert_eq!(err.to_string(), "broker error OFFSET_OUT_OF_RANGE: below log start");
    }

    #[test]
    fn success_frames_decode_and_garbage_is_refused() {
        let ok = decode_response::<ListOffsetsResponse>(0, to_bytes(&ListOffsetsResponse { offset: 7 })).unwrap();
        assert_eq!(ok.offset, 7);
        let err = decode_response::<ListOffsetsResponse>(0, Bytes::from_static(b"\x01")).unwrap_err();
        assert!(matches!(err, ClientError::Decode(_)));
        let err = decode_response::<ListOffsetsResponse>(7, Bytes::from_static(b"junk")).unwrap_err();
        assert_eq!(err.code(), Some(ErrorCode::UnknownTopic));
    }

    #[test]
    fn retriability() {
        assert!(ClientError::broker(ErrorCode::NotEnoughReplicas, "x").is_retriable());
        assert!(!ClientError::broker(ErrorCode::UnknownTopic, "x").is_retriable());
        assert!(ClientError::Timeout(Duration::from_secs(1)).is_retriable());
        assert!(!ClientError::Config("x".into()).is_retriable());
        assert_eq!(ClientError::ProducerClosed.code(), None);
    }
}
