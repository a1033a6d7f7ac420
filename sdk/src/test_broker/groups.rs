//! A small group coordinator for the test broker: the semantics the real
//! broker documents (eager rebalance, joins held until every member rejoined or
//! the rebalance timeout passed, long-poll heartbeats, session expiry, fenced
//! commits), round-robin assignment, offsets in memory. Enough to drive
//! `GroupConsumer` through rebalances without the `eddy` binary.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;
use std::time::Duration;

use eddy_protocol::messages::*;
use eddy_protocol::ErrorCode;
use tokio::sync::Notify;
use tokio::time::Instant;

type Tp = (String, u32);

struct Member {
    topics: BTreeSet<String>,
    pending_join: bool,
    assignment: BTreeSet<Tp>,
    generation: u32,
    last_seen: Instant,
    session: Duration,
    rebalance: Duration,
}

#[derive(Default)]
struct Group {
    generation: u32,
    deadline: Option<Instant>,
    members: BTreeMap<String, Member>,
    offsets: BTreeMap<Tp, u64>,
}

impl Group {
    fn rebalancing(&self) -> bool {
        self.deadline.is_some()
    }
}

#[derive(Default)]
pub(crate) struct Groups {
    groups: Mutex<BTreeMap<String, Group>>,
    changed: Notify,
    next_member: std::sync::atomic::AtomicU32,
}

/// An error answer.
pub(crate) type Refusal = (ErrorCode, String);

fn refuse<T>(code: ErrorCode, message: impl Into<String>) -> Result<T, Refusal> {
    Err((code, message.into()))
}

fn unknown_member(member: &str) -> Refusal {
    (ErrorCode::UnknownMember, format!("member {member} is not in the group"))
}

impl Groups {
    /// Partition counts of topics, read from the broker state by the caller.
    pub(crate) async fn join(
        &self,
        req: JoinGroupRequest,
        partitions: &BTreeMap<String, u32>,
    ) -> Result<JoinGroupResponse, Refusal> {
        let now = Instant::now();
        let id = {
            let mut groups = self.groups.lock().unwrap();
            let g = groups.entry(req.group.clone()).or_default();
            let id = if req.member_id.is_empty() {
                let n = self.next_member.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                format!("{}-{n}", req.client_id)
            } else if g.members.contains_key(&req.member_id) {
                req.member_id.clone()
            } else {
                return Err(unknown_member(&req.member_id));
            };
            let rebalancing = g.rebalancing();
            let m = g.members.entry(id.clone()).or_insert_with(|| Member {
                topics: BTreeSet::new(),
                pending_join: false,
                assignment: BTreeSet::new(),
                generation: 0,
                last_seen: now,
                session: Duration::ZERO,
                rebalance: Duration::ZERO,
            });
            let topics: BTreeSet<String> = req.topics.iter().cloned().collect();
            let unchanged = m.generation > 0 && m.generation == g.generation && m.topics == topics;
            m.topics = topics;
            m.last_seen = now;
            m.session = Duration::from_millis(req.session_timeout_ms.into());
            m.rebalance = Duration::from_millis(req.rebalance_timeout_ms.into());
            if !unchanged || rebalancing {
                m.pending_join = true;
                if !g.rebalancing() {
                    start_rebalance(g, now);
                }
                maybe_complete(g, partitions);
            }
            id
        };
        self.changed.notify_waiters();
        loop {
            let notified = self.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let deadline = {
                let mut groups = self.groups.lock().unwrap();
                let g = groups.get_mut(&req.group).expect("group");
                let m = g.members.get(&id).ok_or_else(|| unknown_member(&id))?;
                if !m.pending_join {
                    return Ok(JoinGroupResponse {
                        member_id: id.clone(),
                        generation: g.generation,
                        strategy: AssignmentStrategy::RoundRobin,
                        assignment: topic_partitions(&m.assignment),
                        member_count: g.members.len() as u32,
                    });
                }
                g.deadline.expect("rebalancing")
            };
            let _ = tokio::time::timeout_at(deadline, notified).await;
        }
    }

    pub(crate) async fn heartbeat(&self, req: HeartbeatRequest) -> Result<(), Refusal> {
        let until = Instant::now() + Duration::from_millis(req.max_wait_ms.into());
        loop {
            let notified = self.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let mut groups = self.groups.lock().unwrap();
                let g = groups.get_mut(&req.group).ok_or_else(|| unknown_member(&req.member_id))?;
                let rebalancing = g.rebalancing();
                let generation = g.generation;
                let m = g.members.get_mut(&req.member_id).ok_or_else(|| unknown_member(&req.member_id))?;
                m.last_seen = Instant::now();
                if rebalancing {
                    return refuse(ErrorCode::RebalanceInProgress, "rebalancing");
                }
                if req.generation != generation {
                    return refuse(ErrorCode::IllegalGeneration, "stale generation");
                }
                if Instant::now() >= until {
                    return Ok(());
                }
            }
            let _ = tokio::time::timeout_at(until, notified).await;
        }
    }

    pub(crate) fn leave(&self, req: LeaveGroupRequest, partitions: &BTreeMap<String, u32>) -> Result<(), Refusal> {
        {
            let mut groups = self.groups.lock().unwrap();
            let g = groups.get_mut(&req.group).ok_or_else(|| unknown_member(&req.member_id))?;
            g.members.remove(&req.member_id).ok_or_else(|| unknown_member(&req.member_id))?;
            after_removal(g, Instant::now(), partitions);
        }
        self.changed.notify_waiters();
        Ok(())
    }

    pub(crate) fn commit(&self, req: OffsetCommitRequest, partitions: &BTreeMap<String, u32>) -> Result<(), Refusal> {
        let mut groups = self.groups.lock().unwrap();
        let g = groups.entry(req.group.clone()).or_default();
        for c in &req.offsets {
            if partitions.get(&c.topic).is_none_or(|&n| c.partition >= n) {
                return refuse(ErrorCode::UnknownPartition, format!("{}/{}", c.topic, c.partition));
            }
        }
        if !(g.members.is_empty() && req.member_id.is_empty() && req.generation == 0) {
            let m = g.members.get(&req.member_id).ok_or_else(|| unknown_member(&req.member_id))?;
            if req.generation != g.generation || m.generation != g.generation {
                return refuse(ErrorCode::IllegalGeneration, "stale generation");
            }
            if let Some(c) = req.offsets.iter().find(|c| !m.assignment.contains(&(c.topic.clone(), c.partition))) {
                return refuse(ErrorCode::NotPartitionOwner, format!("{}/{} not owned", c.topic, c.partition));
            }
        }
        for c in req.offsets {
            g.offsets.insert((c.topic, c.partition), c.offset);
        }
        Ok(())
    }

    pub(crate) fn fetch_offsets(&self, req: OffsetFetchRequest) -> OffsetFetchResponse {
        let groups = self.groups.lock().unwrap();
        let offsets = groups
            .get(&req.group)
            .map(|g| {
                g.offsets
                    .iter()
                    .filter(|((t, _), _)| req.topics.as_ref().is_none_or(|ts| ts.contains(t)))
                    .map(|((t, p), o)| CommittedOffset {
                        topic: t.clone(),
                        partition: *p,
                        offset: *o,
                        metadata: String::new(),
                    })
                    .collect()
            })
            .unwrap_or_default();
        OffsetFetchResponse { offsets }
    }

    /// Expires silent members and overdue rebalances.
    pub(crate) fn tick(&self, partitions: &BTreeMap<String, u32>) {
        let now = Instant::now();
        let mut changed = false;
        {
            let mut groups = self.groups.lock().unwrap();
            for g in groups.values_mut() {
                let expired: Vec<String> = g
                    .members
                    .iter()
                    .filter(|(_, m)| !m.pending_join && now.duration_since(m.last_seen) > m.session)
                    .map(|(id, _)| id.clone())
                    .collect();
                for id in &expired {
                    g.members.remove(id);
                }
                if !expired.is_empty() {
                    after_removal(g, now, partitions);
                    changed = true;
                }
                if g.deadline.is_some_and(|d| now >= d) {
                    g.members.retain(|_, m| m.pending_join);
                    complete(g, partitions);
                    changed = true;
                }
            }
        }
        if changed {
            self.changed.notify_waiters();
        }
    }

    /// Members' assignments of a group in its current generation.
    pub(crate) fn assignments(&self, group: &str) -> BTreeMap<String, BTreeSet<Tp>> {
        let groups = self.groups.lock().unwrap();
        groups
            .get(group)
            .map(|g| {
                g.members
                    .iter()
                    .filter(|(_, m)| m.generation == g.generation && !g.rebalancing())
                    .map(|(id, m)| (id.clone(), m.assignment.clone()))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The committed offset of a partition.
    pub(crate) fn committed(&self, group: &str, topic: &str, partition: u32) -> Option<u64> {
        let groups = self.groups.lock().unwrap();
        groups.get(group)?.offsets.get(&(topic.to_string(), partition)).copied()
    }
}

fn topic_partitions(set: &BTreeSet<Tp>) -> Vec<TopicPartitions> {
    let mut by_topic: BTreeMap<&str, Vec<u32>> = BTreeMap::new();
    for (t, p) in set {
        by_topic.entry(t).or_default().push(*p);
    }
    by_topic.into_iter().map(|(t, ps)| TopicPartitions { topic: t.to_string(), partitions: ps }).collect()
}

fn start_rebalance(g: &mut Group, now: Instant) {
    let longest = g.members.values().map(|m| m.rebalance).max().unwrap_or(Duration::from_secs(5));
    g.deadline = Some(now + longest);
}

fn after_removal(g: &mut Group, now: Instant, partitions: &BTreeMap<String, u32>) {
    if g.members.is_empty() {
        g.deadline = None;
        g.generation += 1;
        return;
    }
    if !g.rebalancing() {
        start_rebalance(g, now);
    }
    maybe_complete(g, partitions);
}

fn maybe_complete(g: &mut Group, partitions: &BTreeMap<String, u32>) {
    if g.rebalancing() && g.members.values().all(|m| m.pending_join) {
        complete(g, partitions);
    }
}

fn complete(g: &mut Group, partitions: &BTreeMap<String, u32>) {
    g.deadline = None;
    g.generation += 1;
    let topics: BTreeSet<&String> = g.members.values().flat_map(|m| m.topics.iter()).collect();
    let all: Vec<Tp> = topics
        .into_iter()
        .filter_map(|t| partitions.get(t).map(|&n| (t.clone(), n)))
        .flat_map(|(t, n)| (0..n).map(move |p| (t.clone(), p)))
        .collect();
    let ids: Vec<String> = g.members.keys().cloned().collect();
    for m in g.members.values_mut() {
        m.assignment.clear();
        m.generation = g.generation;
        m.pending_join = false;
        m.last_seen = Instant::now();
    }
    if ids.is_empty() {
        return;
    }
    for (i, tp) in all.into_iter().enumerate() {
        let m = g.members.get_mut(&ids[i % ids.len()]).expect("member");
        m.assignment.insert(tp);
    }
}
