//! The record-batch layout: written by producers, validated and stored as-is by
//! brokers, decoded by consumers. No re-encoding happens on the broker's hot path;
//! the broker only stamps `base_offset` and `leader_epoch`, which lie outside the CRC.
//!
//! ```text
//! offset size field
//!  0     8   base_offset      u64 LE, offset of the first record (stamped by the broker)
//!  8     4   batch_length     u32 LE, bytes of the whole batch including this header
//! 12     4   leader_epoch     u32 LE (stamped by the broker; 0 on a single node)
//! 16     4   crc              u32 LE, CRC-32C (Castagnoli) of bytes [20, batch_length)
//! 20     1   magic            1
//! 21     1   attributes       0 (bits 0-2 compression: 0 = none; others reserved)
//! 22     2   reserved         0
//! 24     4   record_count     u32 LE, at least 1
//! 28     4   base_sequence    u32 LE, producer sequence of the first record (0 if unused)
//! 32     8   base_timestamp   i64 LE, ms since the Unix epoch, of the first record
//! 40     8   max_timestamp    i64 LE, largest record timestamp in the batch
//! 48     8   producer_id      u64 LE (0 if unused)
//! 56     8   reserved         0
//! 64     ..  records          record_count records, back to back
//! ```
//!
//! Each record (varint = unsigned LEB128; zigzag = signed mapped to unsigned):
//!
//! ```text
//! varint  length            bytes of the record after this field
//! varint  offset_delta      offset - base_offset; equals the record's index in the batch
//! zigzag  timestamp_delta   timestamp - base_timestamp
//! varint  key_length + 1    0 means no key
//! bytes   key
//! varint  value_length
//! bytes   value
//! varint  header_count
//! header_count times: varint key_length, UTF-8 key, varint value_length, value
//! ```

use bytes::{BufMut, Bytes, BytesMut};

use crate::limits::{MAX_HEADERS_PER_RECORD, MAX_RECORDS_PER_BATCH};

/// Size of the fixed batch header.
pub const BATCH_HEADER_BYTES: usize = 64;
/// The only batch format version so far.
pub const MAGIC: u8 = 1;
const OFF_BASE_OFFSET: usize = 0;
const OFF_LENGTH: usize = 8;
const OFF_LEADER_EPOCH: usize = 12;
const OFF_CRC: usize = 16;
const OFF_MAGIC: usize = 20;
const OFF_ATTRIBUTES: usize = 21;
const OFF_RECORD_COUNT: usize = 24;
const OFF_BASE_SEQUENCE: usize = 28;
const OFF_BASE_TIMESTAMP: usize = 32;
const OFF_MAX_TIMESTAMP: usize = 40;
const OFF_PRODUCER_ID: usize = 48;
/// Bytes covered by the CRC start here.
const CRC_START: usize = 20;
const _: () = assert!(OFF_PRODUCER_ID + 16 == BATCH_HEADER_BYTES);

/// One record header: an ordered (key, value) pair.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// Header name.
    pub key: String,
    /// Header value.
    pub value: Bytes,
}

/// One decoded record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// The record's offset in its partition.
    pub offset: u64,
    /// Milliseconds since the Unix epoch.
    pub timestamp: i64,
    /// Optional key.
    pub key: Option<Bytes>,
    /// Value.
    pub value: Bytes,
    /// Headers, in the order the producer gave them.
    pub headers: Vec<Header>,
}

/// Why a batch was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BatchError {
    /// Fewer bytes than the header or the declared length.
    #[error("batch truncated: {have} bytes, {need} needed")]
    Truncated { have: usize, need: usize },
    /// The declared length disagrees with the bytes given.
    #[error("batch length field says {declared} bytes but {actual} were given")]
    LengthMismatch { declared: usize, actual: usize },
    /// Unknown format version.
    #[error("unsupported batch magic {0} (expected {MAGIC})")]
    BadMagic(u8),
    /// Compression or other attributes this version does not support.
    #[error("unsupported batch attributes {0:#x}")]
    BadAttributes(u8),
    /// The CRC does not match the contents.
    #[error("batch CRC mismatch: stored {stored:#010x}, computed {computed:#010x}")]
    CrcMismatch { stored: u32, computed: u32 },
    /// Zero records, or more than the limit.
    #[error("batch record count {0} is outside 1..={MAX_RECORDS_PER_BATCH}")]
    BadRecordCount(u32),
    /// A record is malformed.
    #[error("record {index} is malformed: {reason}")]
    BadRecord { index: u32, reason: &'static str },
    /// A record exceeds the size limit.
    #[error("record {index} is {size} bytes, over the limit of {limit}")]
    RecordTooLarge { index: u32, size: usize, limit: usize },
    /// The batch exceeds the size limit.
    #[error("batch of {size} bytes is over the limit of {limit}")]
    BatchTooLarge { size: usize, limit: usize },
}

fn read_u32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

fn read_u64(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

fn put_varint(buf: &mut BytesMut, mut v: u64) {
    while v >= 0x80 {
        buf.put_u8((v as u8) | 0x80);
        v >>= 7;
    }
    buf.put_u8(v as u8);
}

fn varint_len(mut v: u64) -> usize {
    let mut n = 1;
    while v >= 0x80 {
        v >>= 7;
        n += 1;
    }
    n
}

fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

fn unzigzag(v: u64) -> i64 {
    ((v >> 1) as i64) ^ -((v & 1) as i64)
}

/// Builds one batch record by record. The producer side of the layout.
#[derive(Debug)]
pub struct BatchBuilder {
    buf: BytesMut,
    count: u32,
    base_timestamp: i64,
    max_timestamp: i64,
}

impl BatchBuilder {
    /// An empty batch with room for `capacity` bytes of records.
    pub fn with_capacity(capacity: usize) -> Self {
        let mut buf = BytesMut::with_capacity(BATCH_HEADER_BYTES + capacity);
        buf.put_bytes(0, BATCH_HEADER_BYTES);
        Self { buf, count: 0, base_timestamp: 0, max_timestamp: i64::MIN }
    }

    /// Bytes the batch would have if finished now.
    pub fn len(&self) -> usize {
        self.buf.len()
    }

    /// Records added so far.
    pub fn record_count(&self) -> u32 {
        self.count
    }

    /// Whether no record was added.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Upper bound of the bytes a record adds to a batch (exact but for the
    /// timestamp delta, estimated at its largest width).
    pub fn record_size(key: Option<&[u8]>, value: &[u8], headers: &[Header]) -> usize {
        let body = Self::record_body_size(key, value, headers, 10, 5);
        varint_len(body as u64) + body
    }

    fn record_body_size(
        key: Option<&[u8]>,
        value: &[u8],
        headers: &[Header],
        ts_len: usize,
        offset_len: usize,
    ) -> usize {
        let key_part = match key {
            None => 1,
            Some(k) => varint_len(k.len() as u64 + 1) + k.len(),
        };
        let headers_part: usize = headers
            .iter()
            .map(|h| varint_len(h.key.len() as u64) + h.key.len() + varint_len(h.value.len() as u64) + h.value.len())
            .sum();
        offset_len
            + ts_len
            + key_part
            + varint_len(value.len() as u64)
            + value.len()
            + varint_len(headers.len() as u64)
            + headers_part
    }

    /// Appends one record.
    pub fn push(&mut self, key: Option<&[u8]>, value: &[u8], timestamp: i64, headers: &[Header]) {
        debug_assert!(self.count < MAX_RECORDS_PER_BATCH);
        if self.count == 0 {
            self.base_timestamp = timestamp;
        }
        self.max_timestamp = self.max_timestamp.max(timestamp);
        let ts_delta = zigzag(timestamp.wrapping_sub(self.base_timestamp));
        let offset_delta = u64::from(self.count);
        let body = Self::record_body_size(key, value, headers, varint_len(ts_delta), varint_len(offset_delta));
        let buf = &mut self.buf;
        buf.reserve(varint_len(body as u64) + body);
        put_varint(buf, body as u64);
        put_varint(buf, offset_delta);
        put_varint(buf, ts_delta);
        match key {
            None => put_varint(buf, 0),
            Some(k) => {
                put_varint(buf, k.len() as u64 + 1);
                buf.put_slice(k);
            }
        }
        put_varint(buf, value.len() as u64);
        buf.put_slice(value);
        put_varint(buf, headers.len() as u64);
        for h in headers {
            put_varint(buf, h.key.len() as u64);
            buf.put_slice(h.key.as_bytes());
            put_varint(buf, h.value.len() as u64);
            buf.put_slice(&h.value);
        }
        self.count += 1;
    }

    /// Fills in the header and CRC and returns the finished batch.
    pub fn finish(mut self, producer_id: u64, base_sequence: u32) -> Bytes {
        let len = self.buf.len();
        let b = &mut self.buf[..];
        b[OFF_LENGTH..OFF_LENGTH + 4].copy_from_slice(&(len as u32).to_le_bytes());
        b[OFF_MAGIC] = MAGIC;
        b[OFF_ATTRIBUTES] = 0;
        b[OFF_RECORD_COUNT..OFF_RECORD_COUNT + 4].copy_from_slice(&self.count.to_le_bytes());
        b[OFF_BASE_SEQUENCE..OFF_BASE_SEQUENCE + 4].copy_from_slice(&base_sequence.to_le_bytes());
        b[OFF_BASE_TIMESTAMP..OFF_BASE_TIMESTAMP + 8].copy_from_slice(&self.base_timestamp.to_le_bytes());
        b[OFF_MAX_TIMESTAMP..OFF_MAX_TIMESTAMP + 8].copy_from_slice(&self.max_timestamp.to_le_bytes());
        b[OFF_PRODUCER_ID..OFF_PRODUCER_ID + 8].copy_from_slice(&producer_id.to_le_bytes());
        let crc = crc32c::crc32c(&b[CRC_START..]);
        b[OFF_CRC..OFF_CRC + 4].copy_from_slice(&crc.to_le_bytes());
        self.buf.freeze()
    }
}

/// Writes the broker-assigned base offset into a batch (outside the CRC).
pub fn stamp_base_offset(batch: &mut [u8], base_offset: u64) {
    batch[OFF_BASE_OFFSET..OFF_BASE_OFFSET + 8].copy_from_slice(&base_offset.to_le_bytes());
}

/// Writes the leader epoch into a batch (outside the CRC).
pub fn stamp_leader_epoch(batch: &mut [u8], epoch: u32) {
    batch[OFF_LEADER_EPOCH..OFF_LEADER_EPOCH + 4].copy_from_slice(&epoch.to_le_bytes());
}

/// Header fields of a batch, read without checking the CRC (for bytes the
/// broker validated before storing them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchInfo {
    /// Offset of the first record.
    pub base_offset: u64,
    /// Bytes of the whole batch.
    pub length: u32,
    /// Number of records.
    pub record_count: u32,
    /// Largest record timestamp.
    pub max_timestamp: i64,
    /// Epoch of the leader that appended the batch.
    pub leader_epoch: u32,
    /// Idempotent producer id (0: none).
    pub producer_id: u64,
    /// Producer sequence of the first record.
    pub base_sequence: u32,
}

/// Reads the header fields of the batch at the start of `bytes`.
pub fn batch_info(bytes: &[u8]) -> Result<BatchInfo, BatchError> {
    if bytes.len() < BATCH_HEADER_BYTES {
        return Err(BatchError::Truncated { have: bytes.len(), need: BATCH_HEADER_BYTES });
    }
    Ok(BatchInfo {
        base_offset: read_u64(bytes, OFF_BASE_OFFSET),
        length: read_u32(bytes, OFF_LENGTH),
        record_count: read_u32(bytes, OFF_RECORD_COUNT),
        max_timestamp: read_u64(bytes, OFF_MAX_TIMESTAMP) as i64,
        leader_epoch: read_u32(bytes, OFF_LEADER_EPOCH),
        producer_id: read_u64(bytes, OFF_PRODUCER_ID),
        base_sequence: read_u32(bytes, OFF_BASE_SEQUENCE),
    })
}

/// Limits applied when validating a batch.
#[derive(Debug, Clone, Copy)]
pub struct BatchLimits {
    /// Largest batch in bytes.
    pub max_batch_bytes: usize,
    /// Largest record (its encoded length) in bytes.
    pub max_record_bytes: usize,
}

/// A batch whose layout and CRC have been checked. Cheap to clone.
#[derive(Debug, Clone)]
pub struct BatchView {
    bytes: Bytes,
}

impl BatchView {
    /// Checks the header, the CRC and every record of one batch that fills `bytes` exactly.
    pub fn validate(bytes: Bytes, limits: BatchLimits) -> Result<Self, BatchError> {
        if bytes.len() > limits.max_batch_bytes {
            return Err(BatchError::BatchTooLarge { size: bytes.len(), limit: limits.max_batch_bytes });
        }
        let view = Self::parse_header(bytes)?;
        let stored = read_u32(&view.bytes, OFF_CRC);
        let computed = crc32c::crc32c(&view.bytes[CRC_START..]);
        if stored != computed {
            return Err(BatchError::CrcMismatch { stored, computed });
        }
        let mut walked = 0u32;
        let mut iter = view.records();
        while let Some(r) = iter.next_raw(limits.max_record_bytes) {
            r?;
            walked += 1;
        }
        if iter.pos != view.bytes.len() {
            return Err(BatchError::BadRecord { index: walked, reason: "bytes after the last record" });
        }
        Ok(view)
    }

    /// Reads a batch from a buffer the broker itself wrote (no CRC or record walk).
    pub fn trusted(bytes: Bytes) -> Result<Self, BatchError> {
        Self::parse_header(bytes)
    }

    fn parse_header(bytes: Bytes) -> Result<Self, BatchError> {
        if bytes.len() < BATCH_HEADER_BYTES {
            return Err(BatchError::Truncated { have: bytes.len(), need: BATCH_HEADER_BYTES });
        }
        let declared = read_u32(&bytes, OFF_LENGTH) as usize;
        if declared != bytes.len() {
            return Err(BatchError::LengthMismatch { declared, actual: bytes.len() });
        }
        if bytes[OFF_MAGIC] != MAGIC {
            return Err(BatchError::BadMagic(bytes[OFF_MAGIC]));
        }
        if bytes[OFF_ATTRIBUTES] != 0 {
            return Err(BatchError::BadAttributes(bytes[OFF_ATTRIBUTES]));
        }
        let count = read_u32(&bytes, OFF_RECORD_COUNT);
        if count == 0 || count > MAX_RECORDS_PER_BATCH {
            return Err(BatchError::BadRecordCount(count));
        }
        Ok(Self { bytes })
    }

    /// The raw bytes, exactly as stored.
    pub fn bytes(&self) -> &Bytes {
        &self.bytes
    }

    /// Consumes the view, returning the raw bytes.
    pub fn into_bytes(self) -> Bytes {
        self.bytes
    }

    /// Bytes in the batch.
    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    /// Always false: a valid batch has a header.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// Offset of the first record.
    pub fn base_offset(&self) -> u64 {
        read_u64(&self.bytes, OFF_BASE_OFFSET)
    }

    /// Number of records.
    pub fn record_count(&self) -> u32 {
        read_u32(&self.bytes, OFF_RECORD_COUNT)
    }

    /// Offset of the last record.
    pub fn last_offset(&self) -> u64 {
        self.base_offset() + u64::from(self.record_count()) - 1
    }

    /// Offset after the last record.
    pub fn next_offset(&self) -> u64 {
        self.base_offset() + u64::from(self.record_count())
    }

    /// Leader epoch stamped by the broker.
    pub fn leader_epoch(&self) -> u32 {
        read_u32(&self.bytes, OFF_LEADER_EPOCH)
    }

    /// Largest record timestamp.
    pub fn max_timestamp(&self) -> i64 {
        read_u64(&self.bytes, OFF_MAX_TIMESTAMP) as i64
    }

    /// Producer id (0 if unused).
    pub fn producer_id(&self) -> u64 {
        read_u64(&self.bytes, OFF_PRODUCER_ID)
    }

    /// Sequence number of the first record (0 if unused).
    pub fn base_sequence(&self) -> u32 {
        read_u32(&self.bytes, OFF_BASE_SEQUENCE)
    }

    /// Iterates the records.
    pub fn records(&self) -> RecordIter {
        RecordIter {
            bytes: self.bytes.clone(),
            pos: BATCH_HEADER_BYTES,
            index: 0,
            count: self.record_count(),
            base_offset: self.base_offset(),
            base_timestamp: read_u64(&self.bytes, OFF_BASE_TIMESTAMP) as i64,
        }
    }
}

/// Iterates the records of a batch. Yields an error and stops at the first malformed record.
#[derive(Debug)]
pub struct RecordIter {
    bytes: Bytes,
    pos: usize,
    index: u32,
    count: u32,
    base_offset: u64,
    base_timestamp: i64,
}

impl RecordIter {
    fn varint(&mut self, end: usize, reason: &'static str) -> Result<u64, BatchError> {
        let mut v: u64 = 0;
        let mut shift = 0;
        loop {
            if self.pos >= end || shift > 63 {
                return Err(BatchError::BadRecord { index: self.index, reason });
            }
            let b = self.bytes[self.pos];
            self.pos += 1;
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
            shift += 7;
        }
    }

    fn slice(&mut self, len: u64, end: usize, reason: &'static str) -> Result<Bytes, BatchError> {
        let len = usize::try_from(len).map_err(|_| BatchError::BadRecord { index: self.index, reason })?;
        if len > end - self.pos {
            return Err(BatchError::BadRecord { index: self.index, reason });
        }
        let s = self.bytes.slice(self.pos..self.pos + len);
        self.pos += len;
        Ok(s)
    }

    fn next_raw(&mut self, max_record_bytes: usize) -> Option<Result<Record, BatchError>> {
        if self.index >= self.count {
            return None;
        }
        let r = self.decode_one(max_record_bytes);
        if r.is_err() {
            self.index = self.count;
        } else {
            self.index += 1;
        }
        Some(r)
    }

    fn decode_one(&mut self, max_record_bytes: usize) -> Result<Record, BatchError> {
        let total = self.bytes.len();
        let len = self.varint(total, "truncated length")?;
        let len = usize::try_from(len).unwrap_or(usize::MAX);
        if len > max_record_bytes {
            return Err(BatchError::RecordTooLarge { index: self.index, size: len, limit: max_record_bytes });
        }
        if len > total - self.pos {
            return Err(BatchError::BadRecord { index: self.index, reason: "length beyond batch end" });
        }
        let end = self.pos + len;
        let offset_delta = self.varint(end, "truncated offset delta")?;
        if offset_delta != u64::from(self.index) {
            return Err(BatchError::BadRecord { index: self.index, reason: "offset delta out of sequence" });
        }
        let ts_delta = unzigzag(self.varint(end, "truncated timestamp")?);
        let key_len = self.varint(end, "truncated key length")?;
        let key = match key_len {
            0 => None,
            n => Some(self.slice(n - 1, end, "key beyond record end")?),
        };
        let value_len = self.varint(end, "truncated value length")?;
        let value = self.slice(value_len, end, "value beyond record end")?;
        let header_count = self.varint(end, "truncated header count")?;
        if header_count > MAX_HEADERS_PER_RECORD as u64 {
            return Err(BatchError::BadRecord { index: self.index, reason: "too many headers" });
        }
        let mut headers = Vec::with_capacity(header_count as usize);
        for _ in 0..header_count {
            let kl = self.varint(end, "truncated header key length")?;
            let k = self.slice(kl, end, "header key beyond record end")?;
            let key = String::from_utf8(k.to_vec())
                .map_err(|_| BatchError::BadRecord { index: self.index, reason: "header key is not UTF-8" })?;
            let vl = self.varint(end, "truncated header value length")?;
            let value = self.slice(vl, end, "header value beyond record end")?;
            headers.push(Header { key, value });
        }
        if self.pos != end {
            return Err(BatchError::BadRecord { index: self.index, reason: "bytes left inside record" });
        }
        Ok(Record {
            offset: self.base_offset + offset_delta,
            timestamp: self.base_timestamp.wrapping_add(ts_delta),
            key,
            value,
            headers,
        })
    }
}

impl Iterator for RecordIter {
    type Item = Result<Record, BatchError>;

    fn next(&mut self) -> Option<Self::Item> {
        self.next_raw(usize::MAX)
    }
}

/// Splits concatenated batches (a fetch response) into views, checking each
/// batch's header and CRC. Stops with an error at the first bad batch.
pub fn split_batches(mut bytes: Bytes) -> impl Iterator<Item = Result<BatchView, BatchError>> {
    let mut failed = false;
    std::iter::from_fn(move || {
        if failed || bytes.is_empty() {
            return None;
        }
        if bytes.len() < BATCH_HEADER_BYTES {
            failed = true;
            return Some(Err(BatchError::Truncated { have: bytes.len(), need: BATCH_HEADER_BYTES }));
        }
        let len = read_u32(&bytes, OFF_LENGTH) as usize;
        if len < BATCH_HEADER_BYTES || len > bytes.len() {
            failed = true;
            return Some(Err(BatchError::Truncated { have: bytes.len(), need: len.max(BATCH_HEADER_BYTES) }));
        }
        let one = bytes.split_to(len);
        let view = BatchView::parse_header(one).and_then(|v| {
            let stored = read_u32(&v.bytes, OFF_CRC);
            let computed = crc32c::crc32c(&v.bytes[CRC_START..]);
            if stored == computed {
                Ok(v)
            } else {
                Err(BatchError::CrcMismatch { stored, computed })
            }
        });
        failed = view.is_err();
        Some(view)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: BatchLimits = BatchLimits { max_batch_bytes: 1 << 20, max_record_bytes: 1 << 16 };

    fn sample() -> Bytes {
        let mut b = BatchBuilder::with_capacity(256);
        b.push(Some(b"k1"), b"v1", 1_000, &[]);
        b.push(None, b"", 900, &[Header { key: "h".into(), value: Bytes::from_static(b"x") }]);
        b.push(Some(b""), &[7u8; 300], 5_000, &[]);
        b.finish(42, 7)
    }

    #[test]
    fn builds_validates_and_decodes() {
        let mut raw = BytesMut::from(&sample()[..]);
        stamp_base_offset(&mut raw, 100);
        stamp_leader_epoch(&mut raw, 3);
        let view = BatchView::validate(raw.freeze(), LIMITS).unwrap();
        assert_eq!(view.base_offset(), 100);
        assert_eq!(view.record_count(), 3);
        assert_eq!(view.last_offset(), 102);
        assert_eq!(view.leader_epoch(), 3);
        assert_eq!(view.max_timestamp(), 5_000);
        assert_eq!(view.producer_id(), 42);
        assert_eq!(view.base_sequence(), 7);
        let records: Vec<Record> = view.records().collect::<Result<_, _>>().unwrap();
        assert_eq!(records[0].key.as_deref(), Some(&b"k1"[..]));
        assert_eq!(records[0].timestamp, 1_000);
        assert_eq!(records[1].key, None);
        assert_eq!(records[1].timestamp, 900);
        assert_eq!(records[1].headers[0].key, "h");
        assert_eq!(records[2].key.as_deref(), Some(&b""[..]));
        assert_eq!(records[2].value.len(), 300);
        assert_eq!(records[2].offset, 102);
    }

    #[test]
    fn record_size_bounds_actual_growth() {
        let mut b = BatchBuilder::with_capacity(0);
        let before = b.len();
        let h = [Header { key: "a".into(), value: Bytes::from_static(b"bc") }];
        b.push(Some(b"key"), &[1u8; 1000], 12345, &h);
        assert!(b.len() - before <= BatchBuilder::record_size(Some(b"key"), &[1u8; 1000], &h));
    }

    #[test]
    fn detects_corruption_anywhere_under_the_crc() {
        let good = sample();
        for i in CRC_START..good.len() {
            let mut bad = BytesMut::from(&good[..]);
            bad[i] ^= 0x01;
            assert!(BatchView::validate(bad.freeze(), LIMITS).is_err(), "flip at byte {i} not detected");
        }
    }

    #[test]
    fn refuses_truncation_and_limits() {
        let good = sample();
        for n in [0, 10, BATCH_HEADER_BYTES, good.len() - 1] {
            assert!(BatchView::validate(good.slice(..n), LIMITS).is_err());
        }
        let small = BatchLimits { max_batch_bytes: 1 << 20, max_record_bytes: 100 };
        assert!(matches!(BatchView::validate(good.clone(), small), Err(BatchError::RecordTooLarge { index: 2, .. })));
        let tiny = BatchLimits { max_batch_bytes: 10, max_record_bytes: 100 };
        assert!(matches!(BatchView::validate(good, tiny), Err(BatchError::BatchTooLarge { .. })));
    }

    #[test]
    fn refuses_records_that_lie_about_lengths_even_with_a_valid_crc() {
        // A hand-made batch whose single record claims a value longer than the batch.
        let mut b = BatchBuilder::with_capacity(64);
        b.push(None, b"abc", 0, &[]);
        let mut raw = BytesMut::from(&b.finish(0, 0)[..]);
        // record: [len][offset_delta=0][ts=0][key=0][value_len=3]abc[headers=0]
        let value_len_at = BATCH_HEADER_BYTES + 4;
        assert_eq!(raw[value_len_at], 3);
        raw[value_len_at] = 100;
        let crc = crc32c::crc32c(&raw[CRC_START..]);
        raw[OFF_CRC..OFF_CRC + 4].copy_from_slice(&crc.to_le_bytes());
        assert!(matches!(BatchView::validate(raw.freeze(), LIMITS), Err(BatchError::BadRecord { .. })));
    }

    #[test]
    fn splits_concatenated_batches() {
        let mut all = BytesMut::new();
        all.extend_from_slice(&sample());
        all.extend_from_slice(&sample());
        let views: Vec<_> = split_batches(all.freeze()).collect::<Result<_, _>>().unwrap();
        assert_eq!(views.len(), 2);
        let mut partial = BytesMut::from(&sample()[..]);
        partial.extend_from_slice(&sample()[..10]);
        let results: Vec<_> = split_batches(partial.freeze()).collect();
        assert!(results[0].is_ok() && results[1].is_err());
    }

    #[test]
    fn zigzag_round_trips() {
        for v in [0i64, 1, -1, i64::MAX, i64::MIN, 123_456, -987_654] {
            assert_eq!(unzigzag(zigzag(v)), v);
        }
    }
}
