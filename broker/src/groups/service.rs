//! Drives the [`Coordinator`] from requests: joins and heartbeats wait on a
//! change counter bumped after every state change; a ticker expires sessions
//! and overdue rebalances. Committed offsets are commands of the metadata
//! log (replicated to every broker before a commit is acknowledged); the
//! coordinator runs on the controller (other brokers forward group requests).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use eddy_protocol::limits::MAX_FETCH_WAIT_MS;
use eddy_protocol::messages::*;
use eddy_protocol::ErrorCode;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::coordinator::{Coordinator, GroupError, GroupState, JoinArgs, JoinStatus};
use crate::cluster::{Cluster, Refusal};
use crate::store::{MetaCommand, Store, StoreError};

/// How often sessions and rebalance deadlines are checked.
pub const TICK: Duration = Duration::from_millis(50);
/// Extra time a join waits beyond the rebalance timeout before giving up.
const JOIN_GRACE: Duration = Duration::from_secs(5);

impl From<StoreError> for GroupError {
    fn from(e: StoreError) -> Self {
        GroupError { code: e.code(), message: e.to_string() }
    }
}

impl From<Refusal> for GroupError {
    fn from(r: Refusal) -> Self {
        GroupError { code: r.code, message: r.message }
    }
}

fn group_topics(tps: &BTreeSet<(String, u32)>) -> Vec<TopicPartitions> {
    let mut by_topic: BTreeMap<&str, Vec<u32>> = BTreeMap::new();
    for (t, p) in tps {
        by_topic.entry(t).or_default().push(*p);
    }
    by_topic.into_iter().map(|(topic, partitions)| TopicPartitions { topic: topic.to_string(), partitions }).collect()
}

/// The group coordinator service of one broker.
pub struct GroupService {
    coordinator: Mutex<Coordinator>,
    changes: watch::Sender<u64>,
    store: Arc<Store>,
    cluster: Arc<Cluster>,
}

impl GroupService {
    /// A service reading committed offsets from `store` and committing them
    /// through `cluster`'s metadata log.
    pub fn new(store: Arc<Store>, cluster: Arc<Cluster>) -> Arc<Self> {
        let (changes, _) = watch::channel(0);
        Arc::new(Self { coordinator: Mutex::new(Coordinator::new()), changes, store, cluster })
    }

    fn partitions(&self) -> BTreeMap<String, u32> {
        self.store.catalog().iter().map(|(name, t)| (name.clone(), t.config.partitions)).collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Coordinator> {
        self.coordinator.lock().expect("coordinator lock poisoned")
    }

    fn bump(&self) {
        self.changes.send_modify(|v| *v += 1);
    }

    /// Expires sessions and rebalances every [`TICK`] until `shutdown`.
    pub fn spawn_ticker(self: &Arc<Self>, mut shutdown: watch::Receiver<bool>) -> JoinHandle<()> {
        let this = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(TICK);
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    _ = shutdown.wait_for(|s| *s) => return,
                }
                let parts = this.partitions();
                let changed = this.lock().tick(Instant::now(), &parts);
                if changed {
                    this.bump();
                }
            }
        })
    }

    /// Joins and waits until the rebalance completes.
    pub async fn join(&self, req: JoinGroupRequest, host: String) -> Result<JoinGroupResponse, GroupError> {
        let mut changes = self.changes.subscribe();
        let rebalance_timeout = Duration::from_millis(req.rebalance_timeout_ms.into());
        let group = req.group.clone();
        let args = JoinArgs {
            group: req.group,
            member_id: req.member_id,
            client_id: req.client_id,
            host,
            topics: req.topics,
            strategy: req.strategy,
            session_timeout_ms: req.session_timeout_ms,
            rebalance_timeout_ms: req.rebalance_timeout_ms,
        };
        let parts = self.partitions();
        let member = self.lock().join(Instant::now(), args, &parts)?;
        self.bump();
        let deadline = tokio::time::Instant::now() + rebalance_timeout + JOIN_GRACE;
        loop {
            if let JoinStatus::Done(r) = self.lock().join_status(&group, &member)? {
                return Ok(JoinGroupResponse {
                    member_id: r.member_id,
                    generation: r.generation,
                    strategy: r.strategy,
                    assignment: group_topics(&r.assignment),
                    member_count: r.member_count,
                });
            }
            tokio::select! {
                _ = changes.changed() => {}
                _ = tokio::time::sleep_until(deadline) => {
                    return Err(GroupError { code: ErrorCode::Timeout, message: format!("rebalance of group {group} did not complete in time; join again") });
                }
            }
        }
    }

    /// A long-poll heartbeat: Ok after `max_wait_ms` (capped below the
    /// session timeout), or an error as soon as the member must rejoin.
    pub async fn heartbeat(&self, req: HeartbeatRequest) -> Result<(), GroupError> {
        let mut changes = self.changes.subscribe();
        let session = self.lock().heartbeat(Instant::now(), &req.group, &req.member_id, req.generation)?;
        let wait = Duration::from_millis(req.max_wait_ms.min(MAX_FETCH_WAIT_MS).into()).min(session / 2);
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            tokio::select! {
                _ = changes.changed() => {
                    self.lock().heartbeat(Instant::now(), &req.group, &req.member_id, req.generation)?;
                }
                _ = tokio::time::sleep_until(deadline) => return Ok(()),
            }
        }
    }

    /// Removes a member at once.
    pub fn leave(&self, req: LeaveGroupRequest) -> Result<(), GroupError> {
        let parts = self.partitions();
        self.lock().leave(Instant::now(), &req.group, &req.member_id, &parts)?;
        self.bump();
        Ok(())
    }

    /// Checks that `member_id` may commit positions of `partitions` in `group`
    /// at `generation`, exactly as an OffsetCommit is checked: the group id is
    /// not empty, every partition exists, the member belongs to the group's
    /// current generation and owns every partition (or, for a group without
    /// members, the member id is empty and the generation 0). Writes nothing;
    /// callers that pass write the commit through the store.
    pub fn check_commit(
        &self,
        group: &str,
        member_id: &str,
        generation: u32,
        partitions: &[(String, u32)],
    ) -> Result<(), GroupError> {
        if group.is_empty() {
            return Err(GroupError { code: ErrorCode::InvalidGroup, message: "group id is empty".into() });
        }
        // Nonexistent partitions are named as such before ownership is checked.
        for (topic, partition) in partitions {
            self.store.partition(topic, *partition)?;
        }
        self.lock().check_commit(group, member_id, generation, partitions)
    }

    /// Checks ownership ([`GroupService::check_commit`]), then commits durably.
    pub async fn commit(&self, req: OffsetCommitRequest) -> Result<(), GroupError> {
        let tps: Vec<(String, u32)> = req.offsets.iter().map(|o| (o.topic.clone(), o.partition)).collect();
        self.check_commit(&req.group, &req.member_id, req.generation, &tps)?;
        let offsets = req.offsets.into_iter().map(|o| (o.topic, o.partition, o.offset, o.metadata)).collect();
        self.cluster.propose(MetaCommand::CommitOffsets { group: req.group, offsets }).await?;
        Ok(())
    }

    /// Committed offsets of a group.
    pub fn fetch_offsets(&self, req: OffsetFetchRequest) -> OffsetFetchResponse {
        let offsets = self
            .store
            .committed_offsets(&req.group)
            .into_iter()
            .filter(|((t, _), _)| req.topics.as_ref().is_none_or(|ts| ts.contains(t)))
            .map(|((topic, partition), (offset, metadata))| CommittedOffset { topic, partition, offset, metadata })
            .collect();
        OffsetFetchResponse { offsets }
    }

    /// Groups with members or committed offsets.
    pub fn list(&self, req: ListGroupsRequest) -> ListGroupsResponse {
        let mut groups: BTreeMap<String, GroupSummary> = BTreeMap::new();
        for g in self.store.groups_with_offsets() {
            groups.insert(g.clone(), GroupSummary { group: g, state: "Empty".into(), generation: 0, member_count: 0 });
        }
        for g in self.lock().groups() {
            groups.insert(
                g.id.clone(),
                GroupSummary {
                    group: g.id.clone(),
                    state: g.state.name().into(),
                    generation: g.generation,
                    member_count: g.members.len() as u32,
                },
            );
        }
        let groups = groups
            .into_values()
            .filter(|g| req.prefix.as_ref().is_none_or(|p| g.group.starts_with(p.as_str())))
            .collect();
        ListGroupsResponse { groups }
    }

    /// State, members and per-partition positions of a group.
    pub fn describe(&self, req: DescribeGroupRequest) -> Result<GroupDescription, GroupError> {
        let committed = self.store.committed_offsets(&req.group);
        let (state, generation, strategy, members, owners, mut topics) = match self.lock().group(&req.group) {
            Some(g) => (
                g.state.name().to_string(),
                g.generation,
                g.strategy,
                g.members
                    .values()
                    .map(|m| MemberDescription {
                        member_id: m.id.clone(),
                        client_id: m.client_id.clone(),
                        host: m.host.clone(),
                        assignment: if m.generation == g.generation { group_topics(&m.assignment) } else { Vec::new() },
                    })
                    .collect::<Vec<_>>(),
                g.owners(),
                g.topics(),
            ),
            None if !committed.is_empty() => (
                GroupState::Empty.name().to_string(),
                0,
                AssignmentStrategy::Sticky,
                Vec::new(),
                BTreeMap::new(),
                BTreeSet::new(),
            ),
            None => {
                return Err(GroupError {
                    code: ErrorCode::UnknownGroup,
                    message: format!("group '{}' has no members and no committed offsets", req.group),
                })
            }
        };
        topics.extend(committed.keys().map(|(t, _)| t.clone()));
        let catalog = self.store.catalog();
        let mut partitions = Vec::new();
        for topic in topics {
            let Some(t) = catalog.get(&topic) else { continue };
            for (p, state) in t.partitions.iter().enumerate() {
                let key = (topic.clone(), p as u32);
                partitions.push(GroupPartition {
                    topic: topic.clone(),
                    partition: p as u32,
                    owner: owners.get(&key).cloned(),
                    committed: committed.get(&key).map(|(o, _)| *o),
                    log_end: state.offsets().log_end,
                });
            }
        }
        Ok(GroupDescription { group: req.group, state, generation, strategy, members, partitions })
    }
}
