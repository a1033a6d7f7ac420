//! The Raft state machine: committed commands applied to the broker's store.
//!
//! Each entry is applied atomically with its applied mark (the store writes
//! both in one transaction), so after a crash the broker resumes applying
//! exactly after the last entry it applied: no command is applied twice or
//! skipped. Membership entries are kept the same way.
//!
//! A snapshot is the store's replicated tables (see `Store::snapshot`), kept
//! with its openraft metadata in the Raft log's redb file (table
//! `raft_snapshot`) so that it can be sent to a lagging broker after a restart.

use std::io::Cursor;
use std::sync::Arc;

use bytes::Bytes;
use openraft::storage::{RaftStateMachine, Snapshot};
use openraft::{
    AnyError, BasicNode, Entry, EntryPayload, LogId, OptionalSend, RaftSnapshotBuilder, SnapshotMeta, StorageError,
    StorageIOError, StoredMembership,
};
use tokio::sync::{watch, Mutex};

use super::log_store::LogStore;
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
    log: LogStore,
    current: Arc<Mutex<Option<Arc<StoredSnapshot>>>>,
    applied: watch::Sender<u64>,
}

impl StateMachine {
    /// A state machine applying to `store`, keeping snapshots in `log`'s
    /// database. `applied` is set to the index of the last applied entry
    /// after each apply (and snapshot install), for whoever follows metadata
    /// changes.
    pub fn new(store: Arc<Store>, log: LogStore, applied: watch::Sender<u64>) -> Self {
        Self { store, log, current: Default::default(), applied }
    }

    fn decode_state(&self) -> StoreResult<(Option<LogId<NodeId>>, Membership)> {
        let (applied, membership) = self.store.applied_state().map_err(sm_read_err)?;
        decode_marks(applied, membership).map_err(sm_read_err)
    }

    async fn load_current(&self) -> StoreResult<Option<Arc<StoredSnapshot>>> {
        let mut current = self.current.lock().await;
        if current.is_none() {
            if let Some(bytes) = self.log.read_snapshot().await? {
                let stored: StoredSnapshot = decode(&bytes).map_err(snapshot_err)?;
                *current = Some(Arc::new(stored));
            }
        }
        Ok(current.clone())
    }

    async fn keep(&self, stored: StoredSnapshot) -> StoreResult<()> {
        let bytes = encode(&stored).map_err(snapshot_err)?;
        self.log.write_snapshot(bytes).await?;
        *self.current.lock().await = Some(Arc::new(stored));
        Ok(())
    }
}

/// The applied and membership marks as the store keeps them, decoded.
fn decode_marks(
    applied: Option<Bytes>,
    membership: Option<Bytes>,
) -> Result<(Option<LogId<NodeId>>, Membership), postcard::Error> {
    let applied = applied.map(|b| decode::<LogId<NodeId>>(&b)).transpose()?;
    let membership = membership.map(|b| decode::<Membership>(&b)).transpose()?.unwrap_or_default();
    Ok((applied, membership))
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
        let (last_log_id, last_membership) = decode_marks(applied, membership).map_err(snapshot_err)?;
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

#[cfg(test)]
mod tests {
    use openraft::{CommittedLeaderId, Entry, EntryPayload, LogId, RaftSnapshotBuilder};

    use super::*;
    use crate::cluster::plan::assign_replicas;
    use crate::store::tests::{config, topic};
    use crate::store::{MetaCommand, TopicConfig};

    fn machine(dir: &std::path::Path) -> (StateMachine, Arc<Store>) {
        let store = Arc::new(Store::open(config(dir)).unwrap());
        let log = LogStore::open(&dir.join("raft.redb")).unwrap();
        let (tx, _) = watch::channel(0);
        (StateMachine::new(store.clone(), log, tx), store)
    }

    fn create(index: u64, name: &str) -> Entry<TypeConfig> {
        let config = TopicConfig { assignments: assign_replicas(&[1], 0, 2, 1, 0), ..topic(name, 2) };
        Entry {
            log_id: LogId::new(CommittedLeaderId::new(1, 1), index),
            payload: EntryPayload::Normal(MetaCommand::CreateTopic { config }),
        }
    }

    #[tokio::test]
    async fn applied_entries_survive_reopen_and_a_snapshot_rebuilds_another_broker() {
        let (a_dir, b_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let (mut a, a_store) = machine(a_dir.path());
        let replies = a.apply(vec![create(1, "one"), create(2, "two"), create(3, "one")]).await.unwrap();
        assert!(replies[0].0.is_ok() && replies[1].0.is_ok());
        assert!(replies[2].0.is_err(), "creating an existing topic is refused, deterministically");
        let (applied, _) = a.applied_state().await.unwrap();
        assert_eq!(applied.map(|l| l.index), Some(3), "a refused command still counts as applied");

        let snapshot = a.build_snapshot().await.unwrap();
        assert_eq!(snapshot.meta.last_log_id.map(|l| l.index), Some(3));
        a_store.close().await;
        drop((a, a_store));
        // The snapshot is kept in the Raft log's database across a restart.
        let (mut reopened, _) = machine(a_dir.path());
        let kept = reopened.get_current_snapshot().await.unwrap().expect("snapshot kept");
        assert_eq!(kept.meta, snapshot.meta);

        let (mut b, b_store) = machine(b_dir.path());
        b.install_snapshot(&snapshot.meta, snapshot.snapshot).await.unwrap();
        let (applied, _) = b.applied_state().await.unwrap();
        assert_eq!(applied.map(|l| l.index), Some(3));
        let names: Vec<String> = b_store.catalog().keys().cloned().collect();
        assert_eq!(names, vec!["one".to_string(), "two".to_string()]);
        assert_eq!(b_store.topic("two").unwrap().config.assignments.len(), 2);
    }
}
