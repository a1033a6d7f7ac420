//! Partition replication: this broker's roles as leader or follower of each
//! partition, driven by the metadata log's assignments.
//!
//! * As a leader ([`leader`]): answers followers' fetches (after checking,
//!   by leader epoch, that their log agrees with its own), tracks their log
//!   ends, moves the high watermark to the lowest log end of the ISR, and
//!   asks the controller to shrink or grow the ISR as followers fall behind
//!   or catch up.
//! * As a follower ([`fetcher`]): fetches from the leader, truncates where
//!   its log diverged from the leader's (by epoch) before appending, and
//!   appends what it fetched durably before asking for more (asking for
//!   offset N tells the leader it holds everything below N on disk).
//!
//! Roles are reconciled whenever metadata entries are applied and every
//! [`ISR_CHECK_INTERVAL`]. A broker that is not ready (see
//! [`crate::cluster`]) takes no leader duties: produce and fetch requests
//! get LEADER_NOT_AVAILABLE until it is.

pub mod fetcher;
pub mod leader;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use eddy_protocol::messages::{ReplicaFetchRequest, ReplicaFetchResponse};
use eddy_protocol::ErrorCode;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

use crate::cluster::{Cluster, Refusal};
use crate::store::{MetaCommand, MetaOutput, PartitionChange, PartitionState, Store, TopicState};
use leader::LeaderState;

/// How often leaders check their followers' lag.
pub const ISR_CHECK_INTERVAL: Duration = Duration::from_millis(200);
/// Largest fetch a follower asks for.
pub const REPLICA_FETCH_MAX_BYTES: u32 = 8 * 1024 * 1024;
/// How long a follower's fetch waits at the leader for new records.
pub const REPLICA_FETCH_WAIT_MS: u32 = 500;

/// Settings of replication.
#[derive(Debug, Clone, Copy)]
pub struct ReplicationConfig {
    /// A follower not caught up for this long leaves the ISR (Kafka's
    /// `replica.lag.time.max.ms`).
    pub replica_lag_time: Duration,
}

impl Default for ReplicationConfig {
    fn default() -> Self {
        Self { replica_lag_time: Duration::from_secs(10) }
    }
}

type Key = (String, u32);

struct LeaderEntry {
    topic_id: u64,
    epoch: u32,
    version: u32,
    state: LeaderState,
    /// An ISR change is being proposed (none is started meanwhile).
    proposing: bool,
}

struct FollowerEntry {
    topic_id: u64,
    leader: u32,
    epoch: u32,
    task: JoinHandle<()>,
}

/// This broker's replicas of every partition it holds.
pub struct ReplicaManager {
    cluster: Arc<Cluster>,
    store: Arc<Store>,
    config: ReplicationConfig,
    leaders: Mutex<HashMap<Key, LeaderEntry>>,
    followers: Mutex<HashMap<Key, FollowerEntry>>,
}

impl ReplicaManager {
    /// A manager of `store`'s replicas for `cluster`.
    pub fn new(cluster: Arc<Cluster>, store: Arc<Store>, config: ReplicationConfig) -> Arc<Self> {
        Arc::new(Self { cluster, store, config, leaders: Default::default(), followers: Default::default() })
    }

    /// The cluster this manager replicates for.
    pub fn cluster(&self) -> &Arc<Cluster> {
        &self.cluster
    }

    /// Reconciles roles on every metadata change and checks ISRs
    /// periodically, until `shutdown`; then stops every fetcher.
    pub fn spawn(self: &Arc<Self>, mut shutdown: watch::Receiver<bool>) -> JoinHandle<()> {
        let this = self.clone();
        tokio::spawn(async move {
            let mut applied = this.cluster.subscribe_applied();
            let mut tick = tokio::time::interval(ISR_CHECK_INTERVAL);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = applied.changed() => {}
                    _ = tick.tick() => {}
                    _ = shutdown.wait_for(|s| *s) => break,
                }
                this.reconcile();
                this.check_isrs();
            }
            for (_, f) in this.followers.lock().expect("followers lock poisoned").drain() {
                f.task.abort();
            }
        })
    }

    /// Brings this broker's roles in line with the committed assignments.
    pub fn reconcile(self: &Arc<Self>) {
        let me = self.cluster.broker_id();
        let ready = self.cluster.is_ready();
        let catalog = self.store.catalog();
        let now = Instant::now();
        let mut leaders = self.leaders.lock().expect("leaders lock poisoned");
        let mut followers = self.followers.lock().expect("followers lock poisoned");
        let mut keep_leaders = HashMap::new();
        let mut keep_followers = HashMap::new();
        for (name, topic) in catalog.iter() {
            for (p, assignment) in topic.config.assignments.iter().enumerate() {
                let Some(state) = topic.partitions.get(p) else { continue };
                let key = (name.clone(), p as u32);
                if assignment.leader == me && ready {
                    let entry = match leaders.remove(&key) {
                        Some(mut e) if e.topic_id == topic.config.id && e.epoch == assignment.leader_epoch => {
                            if e.version != assignment.version {
                                e.version = assignment.version;
                                e.state.set_isr(&assignment.isr);
                                e.proposing = false;
                            }
                            e
                        }
                        _ => {
                            let offsets = state.offsets();
                            info!(topic = %name, partition = p, epoch = assignment.leader_epoch, isr = ?assignment.isr, "leading");
                            LeaderEntry {
                                topic_id: topic.config.id,
                                epoch: assignment.leader_epoch,
                                version: assignment.version,
                                state: LeaderState::new(
                                    me,
                                    &assignment.replicas,
                                    &assignment.isr,
                                    state.high_watermark(),
                                    offsets.log_end,
                                    self.config.replica_lag_time,
                                    now,
                                ),
                                proposing: false,
                            }
                        }
                    };
                    state.set_remote_min(entry.state.remote_min());
                    keep_leaders.insert(key, entry);
                } else if assignment.leader != me && assignment.leader != 0 && assignment.replicas.contains(&me) {
                    let entry = match followers.remove(&key) {
                        Some(f)
                            if f.topic_id == topic.config.id
                                && f.leader == assignment.leader
                                && f.epoch == assignment.leader_epoch
                                && !f.task.is_finished() =>
                        {
                            f
                        }
                        old => {
                            if let Some(old) = old {
                                old.task.abort();
                            }
                            // The high watermark now comes from the leader only.
                            state.set_remote_min(0);
                            debug!(topic = %name, partition = p, leader = assignment.leader, epoch = assignment.leader_epoch, "following");
                            let task = fetcher::spawn(
                                self.cluster.clone(),
                                self.store.clone(),
                                name.clone(),
                                p as u32,
                                assignment.leader,
                                assignment.leader_epoch,
                            );
                            FollowerEntry {
                                topic_id: topic.config.id,
                                leader: assignment.leader,
                                epoch: assignment.leader_epoch,
                                task,
                            }
                        }
                    };
                    keep_followers.insert(key, entry);
                } else {
                    // Not leading (or not ready to), not following: the high
                    // watermark stays where it is.
                    state.set_remote_min(0);
                }
            }
        }
        for (_, f) in followers.drain() {
            f.task.abort();
        }
        *leaders = keep_leaders;
        *followers = keep_followers;
    }

    /// Asks the controller for ISR changes where followers fell behind or caught up.
    fn check_isrs(self: &Arc<Self>) {
        let catalog = self.store.catalog();
        let now = Instant::now();
        let mut leaders = self.leaders.lock().expect("leaders lock poisoned");
        for ((topic, partition), entry) in leaders.iter_mut() {
            if entry.proposing {
                continue;
            }
            let Some(t) = catalog.get(topic) else { continue };
            let (Some(state), Some(current)) =
                (t.partitions.get(*partition as usize), t.config.assignments.get(*partition as usize))
            else {
                continue;
            };
            let Some(isr) = entry.state.wanted_isr(state.high_watermark(), now) else { continue };
            entry.proposing = true;
            let mut assignment = current.clone();
            info!(topic = %topic, partition, from = ?assignment.isr, to = ?isr, "asking for an ISR change");
            assignment.isr = isr;
            assignment.version += 1;
            let change = PartitionChange {
                topic: topic.clone(),
                partition: *partition,
                expected_leader_epoch: current.leader_epoch,
                expected_version: current.version,
                assignment,
            };
            let this = self.clone();
            let key = (topic.clone(), *partition);
            tokio::spawn(async move {
                let result = this.cluster.propose(MetaCommand::AlterPartitions { changes: vec![change] }).await;
                match result {
                    Ok(MetaOutput::Altered(done)) if done.iter().all(|d| *d) => {}
                    Ok(_) => debug!(topic = %key.0, partition = key.1, "ISR change overtaken by another change"),
                    Err(e) => warn!(topic = %key.0, partition = key.1, error = %e.message, "ISR change failed"),
                }
                if let Some(e) = this.leaders.lock().expect("leaders lock poisoned").get_mut(&key) {
                    e.proposing = false;
                }
            });
        }
    }

    /// Checks that this broker leads `topic/partition` now: the topic state
    /// and partition state, else NOT_LEADER / LEADER_NOT_AVAILABLE /
    /// UNKNOWN_TOPIC / UNKNOWN_PARTITION.
    pub fn leader_partition(
        self: &Arc<Self>,
        topic: &str,
        partition: u32,
    ) -> Result<(Arc<TopicState>, Arc<PartitionState>), Refusal> {
        let me = self.cluster.broker_id();
        if !self.cluster.is_ready() {
            // Its metadata may be behind (it may not know the topic yet):
            // nothing it says about partitions can be trusted until it caught up.
            return Err(Refusal::new(
                ErrorCode::LeaderNotAvailable,
                format!("broker {me} is catching up with the cluster's metadata; retry shortly"),
            ));
        }
        let (t, p) = self.store.partition(topic, partition).map_err(Refusal::from)?;
        let assignment = t.config.assignments.get(partition as usize).ok_or_else(|| {
            Refusal::new(ErrorCode::LeaderNotAvailable, format!("{topic}/{partition} has no assignment yet"))
        })?;
        if assignment.leader == 0 {
            return Err(Refusal::new(
                ErrorCode::LeaderNotAvailable,
                format!("{topic}/{partition} has no leader: every in-sync replica is down"),
            ));
        }
        if assignment.leader != me {
            return Err(Refusal::new(
                ErrorCode::NotLeader,
                format!("broker {me} is not the leader of {topic}/{partition}; broker {} is", assignment.leader),
            ));
        }
        let key = (topic.to_string(), partition);
        let leading = || self.leaders.lock().expect("leaders lock poisoned").get(&key).map(|e| e.epoch);
        let mut epoch = leading();
        if epoch != Some(assignment.leader_epoch) && self.cluster.is_ready() {
            // The assignment was applied moments ago: take the role now.
            self.reconcile();
            epoch = leading();
        }
        if epoch != Some(assignment.leader_epoch) || !self.cluster.is_ready() {
            return Err(Refusal::new(
                ErrorCode::LeaderNotAvailable,
                format!("broker {me} is taking over {topic}/{partition}; retry shortly"),
            ));
        }
        Ok((t, p))
    }

    /// Serves a follower's fetch (see the module docs). Long-polls up to the
    /// request's wait when the follower is at the log end.
    pub async fn serve_fetch(
        self: &Arc<Self>,
        req: ReplicaFetchRequest,
        mut shutdown: watch::Receiver<bool>,
    ) -> Result<ReplicaFetchResponse, Refusal> {
        let (topic, partition) = (req.topic.clone(), req.partition);
        let (t, state) = self.leader_partition(&topic, partition)?;
        let epoch = t.config.assignments[partition as usize].leader_epoch;
        if req.leader_epoch != epoch {
            return Err(Refusal::new(
                ErrorCode::FencedLeaderEpoch,
                format!("{topic}/{partition} is at leader epoch {epoch}, the fetch says {}", req.leader_epoch),
            ));
        }
        let key = (topic.clone(), partition);
        if !self
            .leaders
            .lock()
            .expect("leaders lock poisoned")
            .get(&key)
            .is_some_and(|e| e.state.is_follower(req.replica_id))
        {
            return Err(Refusal::new(
                ErrorCode::InvalidRequest,
                format!("broker {} is not a replica of {topic}/{partition}", req.replica_id),
            ));
        }
        let offsets = state.offsets();
        // Does the follower's log agree with ours up to its fetch offset?
        if req.fetch_offset > 0 && req.last_fetched_epoch > 0 {
            let (e, end) =
                self.store.epoch_end_offset(&topic, partition, req.last_fetched_epoch).map_err(Refusal::from)?;
            if e < req.last_fetched_epoch || end < req.fetch_offset {
                return Ok(ReplicaFetchResponse {
                    high_watermark: state.high_watermark(),
                    log_start: offsets.log_start,
                    diverging_epoch: Some(e),
                    diverging_end_offset: end,
                    records: bytes::Bytes::new(),
                });
            }
        } else if req.fetch_offset > offsets.log_end {
            return Ok(ReplicaFetchResponse {
                high_watermark: state.high_watermark(),
                log_start: offsets.log_start,
                diverging_epoch: Some(0),
                diverging_end_offset: offsets.log_end,
                records: bytes::Bytes::new(),
            });
        }
        self.record_fetch(&key, &state, req.replica_id, req.fetch_offset);
        let max_bytes = req.max_bytes.clamp(1, REPLICA_FETCH_MAX_BYTES) as usize;
        let deadline = tokio::time::Instant::now() + Duration::from_millis(u64::from(req.max_wait_ms.min(5_000)));
        let mut changes = state.subscribe();
        loop {
            let read =
                self.store.read_replica(&topic, partition, req.fetch_offset, max_bytes).map_err(Refusal::from)?;
            if !read.records.is_empty() || tokio::time::Instant::now() >= deadline || *shutdown.borrow() {
                return Ok(ReplicaFetchResponse {
                    high_watermark: state.high_watermark(),
                    log_start: read.log_start,
                    diverging_epoch: None,
                    diverging_end_offset: 0,
                    records: read.records,
                });
            }
            tokio::select! {
                changed = changes.changed() => if changed.is_err() {
                    return Err(Refusal::new(ErrorCode::UnknownTopic, format!("topic '{topic}' was deleted")));
                },
                _ = tokio::time::sleep_until(deadline) => {}
                _ = shutdown.changed() => {}
            }
        }
    }

    fn record_fetch(&self, key: &Key, state: &PartitionState, replica: u32, fetch_offset: u64) {
        let mut leaders = self.leaders.lock().expect("leaders lock poisoned");
        if let Some(entry) = leaders.get_mut(key) {
            entry.state.on_fetch(replica, fetch_offset, state.offsets().log_end, Instant::now());
            state.set_remote_min(entry.state.remote_min());
        }
    }

    /// Waits until the high watermark of a partition this broker leads
    /// reaches `next_offset` (acks=all), then checks that the ISR still has
    /// at least `min_insync` members. Fails with NOT_LEADER if leadership
    /// moves meanwhile, TIMEOUT after `timeout`.
    pub async fn wait_replicated(
        &self,
        topic: &str,
        partition: u32,
        next_offset: u64,
        timeout: Duration,
    ) -> Result<(), Refusal> {
        let (t, state) = self.store.partition(topic, partition).map_err(Refusal::from)?;
        let epoch = t.config.assignments.get(partition as usize).map(|a| a.leader_epoch);
        let mut hw = state.subscribe_hw();
        let mut applied = self.cluster.subscribe_applied();
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let (t, _) = self.store.partition(topic, partition).map_err(Refusal::from)?;
            let Some(a) = t.config.assignments.get(partition as usize) else {
                return Err(Refusal::new(
                    ErrorCode::LeaderNotAvailable,
                    format!("{topic}/{partition} has no assignment"),
                ));
            };
            if a.leader != self.cluster.broker_id() || Some(a.leader_epoch) != epoch {
                return Err(Refusal::new(
                    ErrorCode::NotLeader,
                    format!(
                        "leadership of {topic}/{partition} moved to broker {} before the batch was replicated",
                        a.leader
                    ),
                ));
            }
            if state.high_watermark() >= next_offset {
                let min = t.config.min_insync_replicas.max(1) as usize;
                if a.isr.len() < min {
                    return Err(Refusal::new(
                        ErrorCode::NotEnoughReplicas,
                        format!(
                            "{topic}/{partition} has {} in-sync replicas, fewer than min-insync-replicas {min}",
                            a.isr.len()
                        ),
                    ));
                }
                return Ok(());
            }
            tokio::select! {
                _ = hw.changed() => {}
                _ = applied.changed() => {}
                _ = tokio::time::sleep_until(deadline) => {
                    return Err(Refusal::new(
                        ErrorCode::Timeout,
                        format!("{topic}/{partition}: the in-sync replicas did not confirm the batch within {timeout:?}"),
                    ));
                }
            }
        }
    }
}
