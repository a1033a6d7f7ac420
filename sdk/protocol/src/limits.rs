//! Named bounds on everything decoded from the network or stored on disk.
//!
//! Each limit is checked before memory is allocated for the thing it bounds, so
//! the worst-case memory of one request is known: at most [`MAX_FRAME_BYTES`]
//! per in-flight request, times the per-connection stream limit.

/// Largest request or response frame, length prefix excluded (64 MiB).
/// A produce request carries at most this many bytes of batches; a fetch
/// response at most this many bytes of records.
pub const MAX_FRAME_BYTES: u32 = 64 * 1024 * 1024;

/// Default largest record batch a broker accepts (8 MiB). Brokers may lower
/// or raise it with `--max-batch-bytes` up to [`MAX_FRAME_BYTES`].
pub const DEFAULT_MAX_BATCH_BYTES: u32 = 8 * 1024 * 1024;

/// Default largest single record (key + value + headers) a broker accepts (1 MiB).
pub const DEFAULT_MAX_RECORD_BYTES: u32 = 1024 * 1024;

/// Largest number of records in one batch.
pub const MAX_RECORDS_PER_BATCH: u32 = 1 << 20;

/// Longest topic name, in bytes. Names use `[A-Za-z0-9._-]` only.
pub const MAX_TOPIC_NAME_BYTES: usize = 249;

/// Most partitions a topic can have.
pub const MAX_PARTITIONS: u32 = 10_000;

/// Longest string field in any message (64 KiB).
pub const MAX_STRING_BYTES: usize = 64 * 1024;

/// Most elements in any list field of a message.
pub const MAX_LIST_LEN: usize = 100_000;

/// Most headers on one record.
pub const MAX_HEADERS_PER_RECORD: usize = 1024;

/// Longest a fetch may be held open waiting for data (30 s).
pub const MAX_FETCH_WAIT_MS: u32 = 30_000;
