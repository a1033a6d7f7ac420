//! Framing of requests and responses on a QUIC stream.
//!
//! Every request is one frame:
//!
//! ```text
//! u32 length      bytes that follow this field (4 + payload), at most MAX_FRAME_BYTES
//! u16 api_key     which request (see ApiKey)
//! u16 api_version version of that request's layout (currently 1 for all)
//! ..  payload     the request body
//! ```
//!
//! and every response is one frame:
//!
//! ```text
//! u32 length      bytes that follow this field (2 + payload)
//! u16 error_code  0 for success, else an ErrorCode
//! ..  payload     the response body on success, an ErrorResponse otherwise
//! ```
//!
//! A client opens one bidirectional stream per request. A stream may also carry
//! several requests one after the other (the producer pipelines its produce
//! requests on one stream so that per-partition order holds); the broker
//! answers them in order, each with one response frame (none for acks=0
//! produce requests). Finishing the send side ends the exchange.

use bytes::{Buf, BufMut, Bytes, BytesMut};

use crate::limits::MAX_FRAME_BYTES;

/// ALPN protocol id spoken over QUIC.
pub const ALPN: &[u8] = b"eddy/1";

/// The request layout version this crate speaks for every API key.
pub const PROTOCOL_VERSION: u16 = 1;

/// Size of the length prefix.
pub const LENGTH_BYTES: usize = 4;

/// Size of a request header after the length prefix.
pub const REQUEST_HEADER_BYTES: usize = 4;

/// Size of a response header after the length prefix.
pub const RESPONSE_HEADER_BYTES: usize = 2;

/// The requests a broker understands. Numbered by area: 1-9 data, 10-19 admin,
/// 20-29 groups, 30-39 processors, 40-49 between brokers (replication, the
/// metadata quorum and forwarding; served only on connections that proved a
/// broker identity), 50-59 security (authentication, users, ACLs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u16)]
pub enum ApiKey {
    Produce = 1,
    Fetch = 2,
    ListOffsets = 3,
    InitProducerId = 4,
    Metadata = 10,
    CreateTopic = 11,
    DeleteTopic = 12,
    CreatePartitions = 13,
    JoinGroup = 20,
    Heartbeat = 21,
    LeaveGroup = 22,
    OffsetCommit = 23,
    OffsetFetch = 24,
    ListGroups = 25,
    DescribeGroup = 26,
    DeployProcessor = 30,
    ListProcessors = 31,
    DescribeProcessor = 32,
    DeleteProcessor = 33,
    FetchProcessorModule = 34,
    CommitProcessorBatch = 35,
    StateScan = 36,
    StopProcessor = 37,
    ReplicaFetch = 40,
    RaftAppend = 41,
    RaftVote = 42,
    RaftSnapshot = 43,
    MetadataWrite = 44,
    BrokerHeartbeat = 45,
    Forward = 46,
    Authenticate = 50,
    CreateUser = 51,
    DeleteUser = 52,
    ListUsers = 53,
    CreateAcls = 54,
    DeleteAcls = 55,
    ListAcls = 56,
}

impl ApiKey {
    /// The API key for a wire value, if known.
    pub fn from_u16(v: u16) -> Option<Self> {
        Some(match v {
            1 => Self::Produce,
            2 => Self::Fetch,
            3 => Self::ListOffsets,
            4 => Self::InitProducerId,
            10 => Self::Metadata,
            11 => Self::CreateTopic,
            12 => Self::DeleteTopic,
            13 => Self::CreatePartitions,
            20 => Self::JoinGroup,
            21 => Self::Heartbeat,
            22 => Self::LeaveGroup,
            23 => Self::OffsetCommit,
            24 => Self::OffsetFetch,
            25 => Self::ListGroups,
            26 => Self::DescribeGroup,
            30 => Self::DeployProcessor,
            31 => Self::ListProcessors,
            32 => Self::DescribeProcessor,
            33 => Self::DeleteProcessor,
            34 => Self::FetchProcessorModule,
            35 => Self::CommitProcessorBatch,
            36 => Self::StateScan,
            37 => Self::StopProcessor,
            40 => Self::ReplicaFetch,
            41 => Self::RaftAppend,
            42 => Self::RaftVote,
            43 => Self::RaftSnapshot,
            44 => Self::MetadataWrite,
            45 => Self::BrokerHeartbeat,
            46 => Self::Forward,
            50 => Self::Authenticate,
            51 => Self::CreateUser,
            52 => Self::DeleteUser,
            53 => Self::ListUsers,
            54 => Self::CreateAcls,
            55 => Self::DeleteAcls,
            56 => Self::ListAcls,
            _ => return None,
        })
    }
}

impl ApiKey {
    /// Whether only brokers may send this request (keys 40-49).
    pub fn is_inter_broker(self) -> bool {
        (40..50).contains(&(self as u16))
    }
}

/// The fixed part of a request frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestHeader {
    /// Raw API key (may be unknown to the receiver).
    pub api_key: u16,
    /// Layout version of the payload.
    pub api_version: u16,
}

/// Why a frame could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// The declared length exceeds the limit.
    #[error("frame of {len} bytes exceeds the limit of {limit} bytes")]
    TooLarge { len: u32, limit: u32 },
    /// The declared length is shorter than the fixed header.
    #[error("frame of {len} bytes is shorter than its {min}-byte header")]
    TooShort { len: u32, min: u32 },
}

/// Checks a length prefix before the frame body is read (and allocated).
pub fn check_length(len: u32, header_bytes: usize) -> Result<(), FrameError> {
    if len > MAX_FRAME_BYTES {
        return Err(FrameError::TooLarge { len, limit: MAX_FRAME_BYTES });
    }
    if (len as usize) < header_bytes {
        return Err(FrameError::TooShort { len, min: header_bytes as u32 });
    }
    Ok(())
}

/// Builds a whole request frame from its header and encoded payload.
pub fn request_frame(api_key: ApiKey, payload: &[u8]) -> Bytes {
    let mut buf = BytesMut::with_capacity(LENGTH_BYTES + REQUEST_HEADER_BYTES + payload.len());
    buf.put_u32_le((REQUEST_HEADER_BYTES + payload.len()) as u32);
    buf.put_u16_le(api_key as u16);
    buf.put_u16_le(PROTOCOL_VERSION);
    buf.put_slice(payload);
    buf.freeze()
}

/// Builds a whole response frame from its error code and encoded payload.
pub fn response_frame(error_code: u16, payload: &[u8]) -> Bytes {
    let mut buf = BytesMut::with_capacity(LENGTH_BYTES + RESPONSE_HEADER_BYTES + payload.len());
    buf.put_u32_le((RESPONSE_HEADER_BYTES + payload.len()) as u32);
    buf.put_u16_le(error_code);
    buf.put_slice(payload);
    buf.freeze()
}

/// Splits a request body (the bytes after the length prefix) into header and payload.
pub fn split_request(mut body: Bytes) -> Result<(RequestHeader, Bytes), FrameError> {
    if body.len() < REQUEST_HEADER_BYTES {
        return Err(FrameError::TooShort { len: body.len() as u32, min: REQUEST_HEADER_BYTES as u32 });
    }
    let api_key = body.get_u16_le();
    let api_version = body.get_u16_le();
    Ok((RequestHeader { api_key, api_version }, body))
}

/// Splits a response body (the bytes after the length prefix) into error code and payload.
pub fn split_response(mut body: Bytes) -> Result<(u16, Bytes), FrameError> {
    if body.len() < RESPONSE_HEADER_BYTES {
        return Err(FrameError::TooShort { len: body.len() as u32, min: RESPONSE_HEADER_BYTES as u32 });
    }
    let code = body.get_u16_le();
    Ok((code, body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_frame_round_trips() {
        let frame = request_frame(ApiKey::Fetch, b"xyz");
        let len = u32::from_le_bytes(frame[..4].try_into().unwrap());
        assert_eq!(len as usize, frame.len() - 4);
        check_length(len, REQUEST_HEADER_BYTES).unwrap();
        let (header, payload) = split_request(frame.slice(4..)).unwrap();
        assert_eq!(ApiKey::from_u16(header.api_key), Some(ApiKey::Fetch));
        assert_eq!(header.api_version, PROTOCOL_VERSION);
        assert_eq!(&payload[..], b"xyz");
    }

    #[test]
    fn refuses_oversized_and_short_lengths() {
        assert!(matches!(check_length(MAX_FRAME_BYTES + 1, 4), Err(FrameError::TooLarge { .. })));
        assert!(matches!(check_length(3, 4), Err(FrameError::TooShort { .. })));
        assert!(split_request(Bytes::from_static(b"\x01")).is_err());
    }
}
