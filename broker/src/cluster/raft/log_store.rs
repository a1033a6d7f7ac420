//! The Raft log in redb: `<data-dir>/raft.redb`, separate from the partition
//! logs so that the metadata quorum never waits behind a group commit.
//!
//! Tables:
//! * `raft_log`: log index -> postcard-encoded openraft entry;
//! * `raft_meta`: `vote`, `committed`, `purged` -> postcard-encoded values;
//! * `raft_snapshot`: `current` -> the last metadata snapshot with its
//!   openraft metadata (written by the state machine).
//!
//! Every write is its own transaction with `Durability::Immediate`, run on a
//! blocking thread: a vote or an appended entry is on disk before openraft
//! hears that it was written (what Raft's safety needs). Purged entries are
//! removed, and the last purged log id is kept so that the log state stays
//! known after the entries are gone.

use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};
use std::path::Path;
use std::sync::Arc;

use openraft::storage::{LogFlushed, LogState, RaftLogReader, RaftLogStorage};
use openraft::{AnyError, Entry, LogId, OptionalSend, StorageError, StorageIOError, Vote};
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};

use super::types::{NodeId, TypeConfig};
use super::{decode, encode};

const LOG: TableDefinition<u64, &[u8]> = TableDefinition::new("raft_log");
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("raft_meta");
const SNAPSHOT: TableDefinition<&str, &[u8]> = TableDefinition::new("raft_snapshot");

type StoreResult<T> = Result<T, StorageError<NodeId>>;

fn read_err(e: impl std::error::Error + 'static) -> StorageError<NodeId> {
    StorageIOError::read_logs(AnyError::new(&e)).into()
}

fn write_err(e: impl std::error::Error + 'static) -> StorageError<NodeId> {
    StorageIOError::write_logs(AnyError::new(&e)).into()
}

fn join_err(e: tokio::task::JoinError) -> StorageError<NodeId> {
    write_err(e)
}

/// The Raft log storage. Cheap to clone: clones share the database.
#[derive(Clone)]
pub struct LogStore {
    db: Arc<Database>,
}

impl LogStore {
    /// Opens (or creates) the log database at `path`.
    pub fn open(path: &Path) -> Result<Self, redb::Error> {
        let db = Database::builder().create(path)?;
        let txn = db.begin_write()?;
        txn.open_table(LOG)?;
        txn.open_table(META)?;
        txn.open_table(SNAPSHOT)?;
        txn.commit()?;
        Ok(Self { db: Arc::new(db) })
    }

    /// Runs `f` on a blocking thread with the database.
    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Database) -> StoreResult<T> + Send + 'static,
    ) -> StoreResult<T> {
        let db = self.db.clone();
        tokio::task::spawn_blocking(move || f(&db)).await.map_err(join_err)?
    }

    /// Stores `bytes` as the current snapshot, durably, replacing the previous one.
    pub async fn write_snapshot(&self, bytes: Vec<u8>) -> StoreResult<()> {
        self.blocking(move |db| {
            let txn = db.begin_write().map_err(write_err)?;
            txn.open_table(SNAPSHOT).map_err(write_err)?.insert("current", bytes.as_slice()).map_err(write_err)?;
            txn.commit().map_err(write_err)
        })
        .await
    }

    /// The current snapshot's bytes, if one was stored.
    pub async fn read_snapshot(&self) -> StoreResult<Option<Vec<u8>>> {
        self.blocking(|db| {
            let txn = db.begin_read().map_err(read_err)?;
            let table = txn.open_table(SNAPSHOT).map_err(read_err)?;
            Ok(table.get("current").map_err(read_err)?.map(|v| v.value().to_vec()))
        })
        .await
    }

    fn read_meta<T: serde::de::DeserializeOwned>(db: &Database, key: &str) -> StoreResult<Option<T>> {
        let txn = db.begin_read().map_err(read_err)?;
        let table = txn.open_table(META).map_err(read_err)?;
        match table.get(key).map_err(read_err)? {
            Some(v) => Ok(Some(decode(v.value()).map_err(read_err)?)),
            None => Ok(None),
        }
    }

    fn write_meta<T: serde::Serialize>(db: &Database, key: &str, value: &T) -> StoreResult<()> {
        let bytes = encode(value).map_err(write_err)?;
        let txn = db.begin_write().map_err(write_err)?;
        txn.open_table(META).map_err(write_err)?.insert(key, bytes.as_slice()).map_err(write_err)?;
        txn.commit().map_err(write_err)
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> StoreResult<Vec<Entry<TypeConfig>>> {
        let bounds: (Bound<u64>, Bound<u64>) = (range.start_bound().cloned(), range.end_bound().cloned());
        self.blocking(move |db| {
            let txn = db.begin_read().map_err(read_err)?;
            let table = txn.open_table(LOG).map_err(read_err)?;
            let mut out = Vec::new();
            for item in table.range::<u64>(bounds).map_err(read_err)? {
                let (_, value) = item.map_err(read_err)?;
                out.push(decode(value.value()).map_err(read_err)?);
            }
            Ok(out)
        })
        .await
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> StoreResult<LogState<TypeConfig>> {
        self.blocking(|db| {
            let purged: Option<LogId<NodeId>> = Self::read_meta(db, "purged")?;
            let txn = db.begin_read().map_err(read_err)?;
            let table = txn.open_table(LOG).map_err(read_err)?;
            let last = match table.last().map_err(read_err)? {
                Some((_, v)) => Some(decode::<Entry<TypeConfig>>(v.value()).map_err(read_err)?.log_id),
                None => purged,
            };
            Ok(LogState { last_purged_log_id: purged, last_log_id: last })
        })
        .await
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<NodeId>) -> StoreResult<()> {
        let vote = *vote;
        self.blocking(move |db| Self::write_meta(db, "vote", &vote)).await
    }

    async fn read_vote(&mut self) -> StoreResult<Option<Vote<NodeId>>> {
        self.blocking(|db| Self::read_meta(db, "vote")).await
    }

    async fn save_committed(&mut self, committed: Option<LogId<NodeId>>) -> StoreResult<()> {
        self.blocking(move |db| Self::write_meta(db, "committed", &committed)).await
    }

    async fn read_committed(&mut self) -> StoreResult<Option<LogId<NodeId>>> {
        Ok(self.blocking(|db| Self::read_meta::<Option<LogId<NodeId>>>(db, "committed")).await?.flatten())
    }

    async fn append<I>(&mut self, entries: I, callback: LogFlushed<TypeConfig>) -> StoreResult<()>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut encoded = Vec::new();
        for entry in entries {
            encoded.push((entry.log_id.index, encode(&entry).map_err(write_err)?));
        }
        let result = self
            .blocking(move |db| {
                let txn = db.begin_write().map_err(write_err)?;
                {
                    let mut table = txn.open_table(LOG).map_err(write_err)?;
                    for (index, bytes) in &encoded {
                        table.insert(*index, bytes.as_slice()).map_err(write_err)?;
                    }
                }
                txn.commit().map_err(write_err)
            })
            .await;
        match &result {
            Ok(()) => callback.log_io_completed(Ok(())),
            Err(e) => callback.log_io_completed(Err(std::io::Error::other(e.to_string()))),
        }
        result
    }

    async fn truncate(&mut self, log_id: LogId<NodeId>) -> StoreResult<()> {
        self.blocking(move |db| {
            let txn = db.begin_write().map_err(write_err)?;
            {
                let mut table = txn.open_table(LOG).map_err(write_err)?;
                table.retain_in(log_id.index.., |_, _| false).map_err(write_err)?;
            }
            txn.commit().map_err(write_err)
        })
        .await
    }

    async fn purge(&mut self, log_id: LogId<NodeId>) -> StoreResult<()> {
        self.blocking(move |db| {
            let bytes = encode(&log_id).map_err(write_err)?;
            let txn = db.begin_write().map_err(write_err)?;
            {
                txn.open_table(META).map_err(write_err)?.insert("purged", bytes.as_slice()).map_err(write_err)?;
                let mut table = txn.open_table(LOG).map_err(write_err)?;
                table.retain_in(..=log_id.index, |_, _| false).map_err(write_err)?;
            }
            txn.commit().map_err(write_err)
        })
        .await
    }
}
