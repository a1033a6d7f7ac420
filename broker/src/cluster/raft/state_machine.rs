//! The Raft state machine: committed commands applied to the broker's store.
//!
//! Each entry is applied atomically with its applied mark (the store writes
//! both in one transaction), so after a crash the broker resumes applying
//! exactly after the last entry it applied: no command is applied twice or
//! skipped. Membership entries are kept the same way.
//!
//! A snapshot is the store's replicated tables (see `Store::snapshot`), kept
//! in `<data-dir>/raft/snapshot.bin` next to its openraft metadata so that it
//! can be sent to a lagging broker after a restart.

use std::io::Cursor;
use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;
use openraft::storage::{RaftStateMachine, Snapshot};
use openraft::{
    AnyError, BasicNode, Entry, EntryPayload, LogId, OptionalSend, RaftSnapshotBuilder, SnapshotMeta, StorageError,
    StorageIOError, StoredMembership,
};
use tokio::sync::{watch, Mutex};

use super::types::{ApplyReply, NodeId, TypeConfig};
use super::{decode, encode};
use crate::store::{ApplyEntry, Store};

type StoreResult<T> = Result<T, StorageError<NodeId>>;
type Membership = StoredMembership<NodeId, BasicNode>;

fn sm_read_err(e: impl std::fmt::Display) -> StorageError<NodeId> {
    StorageIOError::read_state_machine(AnyError::error(e.to_string())).into()
}

fn sm_write_err(e: impl std::fmt::Display) -> StorageError<NodeId> {
    StorageIOError::write_state_machine(AnyError::error(e.to_string())).into()
}

fn snapshot_err(e: impl std::fmt::Display) -> StorageError<NodeId> {
    StorageIOError::write_snapshot(None, AnyError::error(e.to_string())).into()
}

/// A snapshot as kept on disk: its metadata and the store's encoded tables.
#[derive(serde::Serialize, serde::Deserialize)]
struct StoredSnapshot {
    meta: SnapshotMeta<NodeId, BasicNode>,
    data: Vec<u8>,
}

/// The state machine over a [`Store`].
#[derive(Clone)]
pub struct StateMachine {
    store: Arc<Store>,
    snapshot_path: PathBuf,
    current: Arc<Mutex<Option<Arc<StoredSnapshot>>>>,
    applied: watch::Sender<u64>,
}

impl StateMachine {
    /// A state machine applying to `store`, keeping snapshots under `dir`.
    /// `applied` is set to the index of the last applied entry after each
    /// apply (and snapshot install), for whoever follows metadata changes.
    pub fn new(store: Arc<Store>, dir: PathBuf, applied: watch::Sender<u64>) -> std::io::Result<Self> {
        std::fs::create_dir_all(&dir)?;
        Ok(Self { store, snapshot_path: dir.join("snapshot.bin"), current: Default::default(), applied })
    }

    fn decode_state(&self) -> StoreResult<(Option<LogId<NodeId>>, Membership)> {
        let (applied, membership) = self.store.applied_state().map_err(sm_read_err)?;
        let applied = match applied {
            Some(b) => Some(decode::<LogId<NodeId>>(&b).map_err(sm_read_err)?),
            None => None,
        };
        let membership = match membership {
            Some(b) => decode::<Membership>(&b).map_err(sm_read_err)?,
            None => Membership::default(),
        };
        Ok((applied, membership))
    }

    async fn load_current(&self) -> StoreResult<Option<Arc<StoredSnapshot>>> {
        let mut current = self.current.lock().await;
        if current.is_none() {
            if let Ok(bytes) = std::fs::read(&self.snapshot_path) {
                let stored: StoredSnapshot = decode(&bytes).map_err(snapshot_err)?;
                *current = Some(Arc::new(stored));
            }
        }
        Ok(current.clone())
    }

    async fn keep(&self, stored: StoredSnapshot) -> StoreResult<()> {
        let bytes = encode(&stored).map_err(snapshot_err)?;
        let tmp = self.snapshot_path.with_extension("tmp");
        let path = self.snapshot_path.clone();
        tokio::task::spawn_blocking(move || -> std::io::Result<()> {
            use std::io::Write;
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(&bytes)?;
            f.sync_all()?;
            std::fs::rename(&tmp, &path)
        })
        .await
        .map_err(snapshot_err)?
        .map_err(snapshot_err)?;
        *self.current.lock().await = Some(Arc::new(stored));
        Ok(())
    }
}

fn to_snapshot(stored: &StoredSnapshot) -> Snapshot<TypeConfig> {
    Snapshot { meta: stored.meta.clone(), snapshot: Box::new(Cursor::new(stored.data.clone())) }
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachine {
    async fn build_snapshot(&mut self) -> StoreResult<Snapshot<TypeConfig>> {
        let store = self.store.clone();
        let (data, applied, membership) = tokio::task::spawn_blocking(move || store.snapshot_with_marks())
            .await
            .map_err(snapshot_err)?
            .map_err(snapshot_err)?;
        let last_log_id = match applied {
            Some(b) => Some(decode::<LogId<NodeId>>(&b).map_err(snapshot_err)?),
            None => None,
        };
        let last_membership = match membership {
            Some(b) => decode::<Membership>(&b).map_err(snapshot_err)?,
            None => Membership::default(),
        };
        let snapshot_id = match last_log_id {
            Some(id) => format!("{}-{}-{}", id.leader_id.term, id.index, crate::now_ms()),
            None => format!("empty-{}", crate::now_ms()),
        };
        let stored =
            StoredSnapshot { meta: SnapshotMeta { last_log_id, last_membership, snapshot_id }, data: data.to_vec() };
        let snapshot = to_snapshot(&stored);
        self.keep(stored).await?;
        tracing::info!(last = ?snapshot.meta.last_log_id, bytes = data.len(), "metadata snapshot built");
        Ok(snapshot)
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = StateMachine;

    async fn applied_state(&mut self) -> StoreResult<(Option<LogId<NodeId>>, Membership)> {
        self.decode_state()
    }

    async fn apply<I>(&mut self, entries: I) -> StoreResult<Vec<ApplyReply>>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut batch = Vec::new();
        let mut last = None;
        for entry in entries {
            let applied = Bytes::from(encode(&entry.log_id).map_err(sm_write_err)?);
            last = Some(entry.log_id.index);
            let (membership, command) = match entry.payload {
                EntryPayload::Blank => (None, None),
                EntryPayload::Normal(command) => (None, Some(command)),
                EntryPayload::Membership(m) => {
                    let stored = Membership::new(Some(entry.log_id), m);
                    (Some(Bytes::from(encode(&stored).map_err(sm_write_err)?)), None)
                }
            };
            batch.push(ApplyEntry { applied, membership, command });
        }
        if batch.is_empty() {
            return Ok(Vec::new());
        }
        let results = self.store.apply(batch).await.map_err(sm_write_err)?;
        if let Some(index) = last {
            self.applied.send_replace(index);
        }
        Ok(results.into_iter().map(ApplyReply).collect())
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn begin_receiving_snapshot(&mut self) -> StoreResult<Box<Cursor<Vec<u8>>>> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<NodeId, BasicNode>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> StoreResult<()> {
        let data = snapshot.into_inner();
        self.store.install_snapshot(Bytes::from(data.clone())).await.map_err(sm_write_err)?;
        tracing::info!(last = ?meta.last_log_id, bytes = data.len(), "metadata snapshot installed");
        if let Some(id) = meta.last_log_id {
            self.applied.send_replace(id.index);
        }
        self.keep(StoredSnapshot { meta: meta.clone(), data }).await
    }

    async fn get_current_snapshot(&mut self) -> StoreResult<Option<Snapshot<TypeConfig>>> {
        Ok(self.load_current().await?.map(|s| to_snapshot(&s)))
    }
}
