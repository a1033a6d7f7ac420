//! The group coordinator as a state machine with no I/O: time is passed in,
//! answers are read back by the async glue in [`super::service`].
//!
//! Protocol (eager rebalancing, assignment computed here):
//! * A join adds or refreshes a member and starts a rebalance
//!   (`PreparingRebalance`) unless the member rejoins a stable group with an
//!   unchanged subscription. The rebalance completes when every member has
//!   (re)joined, or at its deadline, when members that did not rejoin are
//!   removed. Completion bumps the generation and computes the assignment.
//! * Members learn of a rebalance from their heartbeat (REBALANCE_IN_PROGRESS),
//!   commit, and rejoin. Until it completes they keep the previous
//!   generation's partitions and may still commit for them.
//! * A member silent for its session timeout is removed (rebalance).
//!
//! Invariant: within one generation no partition belongs to two members
//! (checked by `debug_assert!` on every completion).

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use eddy_protocol::messages::AssignmentStrategy;
use eddy_protocol::ErrorCode;

use super::assign::{self, MemberInput, TopicPartition};

/// Longest group id, in bytes.
pub const MAX_GROUP_ID_BYTES: usize = 249;
/// Session timeouts accepted.
pub const SESSION_TIMEOUT_RANGE_MS: std::ops::RangeInclusive<u32> = 100..=300_000;
/// Rebalance timeouts accepted.
pub const REBALANCE_TIMEOUT_RANGE_MS: std::ops::RangeInclusive<u32> = 100..=600_000;
/// Most members in one group.
pub const MAX_MEMBERS: usize = 10_000;

/// A refused group operation.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct GroupError {
    /// Wire code.
    pub code: ErrorCode,
    /// For people.
    pub message: String,
}

fn err<T>(code: ErrorCode, message: impl Into<String>) -> Result<T, GroupError> {
    Err(GroupError { code, message: message.into() })
}

/// Where a group is in its life cycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupState {
    /// No members.
    Empty,
    /// Waiting for members to rejoin.
    PreparingRebalance,
    /// Every member has its partitions for the current generation.
    Stable,
}

impl GroupState {
    /// Name as shown by the CLI.
    pub fn name(self) -> &'static str {
        match self {
            GroupState::Empty => "Empty",
            GroupState::PreparingRebalance => "PreparingRebalance",
            GroupState::Stable => "Stable",
        }
    }
}

/// One member.
#[derive(Debug, Clone)]
pub struct Member {
    /// Id given by the coordinator.
    pub id: String,
    /// Client-chosen label.
    pub client_id: String,
    /// Remote address.
    pub host: String,
    /// Subscribed topics.
    pub topics: BTreeSet<String>,
    /// Strategy the member asked for.
    pub strategy: AssignmentStrategy,
    session_timeout: Duration,
    rebalance_timeout: Duration,
    last_seen: Instant,
    /// Joined in the current rebalance and waiting for it to complete.
    pending_join: bool,
    /// Partitions for `generation`.
    pub assignment: BTreeSet<TopicPartition>,
    /// Generation `assignment` belongs to (0: none yet).
    pub generation: u32,
}

/// One group.
#[derive(Debug, Clone)]
pub struct Group {
    /// Group id.
    pub id: String,
    /// Life-cycle state.
    pub state: GroupState,
    /// Bumped by every completed rebalance.
    pub generation: u32,
    /// Strategy of the current generation.
    pub strategy: AssignmentStrategy,
    /// Members by id.
    pub members: BTreeMap<String, Member>,
    rebalance_deadline: Option<Instant>,
    /// Partition counts of the subscribed topics when the generation was
    /// assigned: a topic that grows (or appears, or goes) starts a rebalance.
    assigned_counts: BTreeMap<String, u32>,
}

impl Group {
    fn new(id: &str) -> Self {
        Self {
            id: id.to_string(),
            state: GroupState::Empty,
            generation: 0,
            strategy: AssignmentStrategy::Sticky,
            members: BTreeMap::new(),
            rebalance_deadline: None,
            assigned_counts: BTreeMap::new(),
        }
    }

    /// The owner of each partition in the current generation.
    pub fn owners(&self) -> BTreeMap<TopicPartition, String> {
        let mut out = BTreeMap::new();
        for m in self.members.values().filter(|m| m.generation == self.generation) {
            for tp in &m.assignment {
                out.insert(tp.clone(), m.id.clone());
            }
        }
        out
    }

    /// Topics any member subscribes to.
    pub fn topics(&self) -> BTreeSet<String> {
        self.members.values().flat_map(|m| m.topics.iter().cloned()).collect()
    }
}

/// What a join asks for.
#[derive(Debug, Clone)]
pub struct JoinArgs {
    pub group: String,
    pub member_id: String,
    pub client_id: String,
    pub host: String,
    pub topics: Vec<String>,
    pub strategy: AssignmentStrategy,
    pub session_timeout_ms: u32,
    pub rebalance_timeout_ms: u32,
}

/// A completed join: the member's place in the new generation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinResult {
    pub member_id: String,
    pub generation: u32,
    pub strategy: AssignmentStrategy,
    pub assignment: BTreeSet<TopicPartition>,
    pub member_count: u32,
}

/// What a join waiter should do next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JoinStatus {
    /// The rebalance is still in progress: wait for a change.
    Waiting,
    /// Done.
    Done(JoinResult),
}

/// All groups of this broker.
#[derive(Debug, Default)]
pub struct Coordinator {
    groups: BTreeMap<String, Group>,
    next_member: u64,
}

fn validate_group_id(group: &str) -> Result<(), GroupError> {
    if group.is_empty() || group.len() > MAX_GROUP_ID_BYTES {
        return err(ErrorCode::InvalidGroup, format!("group id must be 1 to {MAX_GROUP_ID_BYTES} bytes"));
    }
    Ok(())
}

impl Coordinator {
    /// An empty coordinator.
    pub fn new() -> Self {
        Self::default()
    }

    /// The group, if it has members (groups with only committed offsets live in the store).
    pub fn group(&self, id: &str) -> Option<&Group> {
        self.groups.get(id)
    }

    /// All groups with members.
    pub fn groups(&self) -> impl Iterator<Item = &Group> {
        self.groups.values()
    }

    /// Adds or refreshes a member; returns its id. `partitions` gives topic
    /// partition counts for an immediate completion.
    pub fn join(
        &mut self,
        now: Instant,
        args: JoinArgs,
        partitions: &BTreeMap<String, u32>,
    ) -> Result<String, GroupError> {
        validate_group_id(&args.group)?;
        if !SESSION_TIMEOUT_RANGE_MS.contains(&args.session_timeout_ms) {
            return err(
                ErrorCode::InvalidGroup,
                format!("session timeout {} ms is outside {SESSION_TIMEOUT_RANGE_MS:?}", args.session_timeout_ms),
            );
        }
        if !REBALANCE_TIMEOUT_RANGE_MS.contains(&args.rebalance_timeout_ms) {
            return err(
                ErrorCode::InvalidGroup,
                format!("rebalance timeout {} ms is outside {REBALANCE_TIMEOUT_RANGE_MS:?}", args.rebalance_timeout_ms),
            );
        }
        if args.topics.is_empty() {
            return err(ErrorCode::InvalidRequest, "a member must subscribe to at least one topic");
        }
        let group = self.groups.entry(args.group.clone()).or_insert_with(|| Group::new(&args.group));
        let topics: BTreeSet<String> = args.topics.iter().cloned().collect();
        let member_id = if args.member_id.is_empty() {
            if group.members.len() >= MAX_MEMBERS {
                return err(
                    ErrorCode::InvalidGroup,
                    format!("group {} has the maximum of {MAX_MEMBERS} members", args.group),
                );
            }
            self.next_member += 1;
            let salt = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.subsec_nanos())
                .unwrap_or(0)
                ^ std::process::id();
            format!("{}-{:x}{:06x}", sanitize(&args.client_id), self.next_member, salt & 0xff_ffff)
        } else if group.members.contains_key(&args.member_id) {
            args.member_id.clone()
        } else {
            return err(
                ErrorCode::UnknownMember,
                format!("member {} is not in group {}; join as a new member", args.member_id, args.group),
            );
        };
        let member = group.members.entry(member_id.clone()).or_insert_with(|| Member {
            id: member_id.clone(),
            client_id: args.client_id.clone(),
            host: args.host.clone(),
            topics: topics.clone(),
            strategy: args.strategy,
            session_timeout: Duration::ZERO,
            rebalance_timeout: Duration::ZERO,
            last_seen: now,
            pending_join: false,
            assignment: BTreeSet::new(),
            generation: 0,
        });
        let unchanged = member.generation == group.generation && member.topics == topics && member.generation > 0;
        member.topics = topics;
        member.strategy = args.strategy;
        member.client_id = args.client_id;
        member.host = args.host;
        member.session_timeout = Duration::from_millis(args.session_timeout_ms.into());
        member.rebalance_timeout = Duration::from_millis(args.rebalance_timeout_ms.into());
        member.last_seen = now;
        member.pending_join = true;
        if group.state == GroupState::Stable && unchanged {
            // A stable member asking again: nothing changes, answer at once.
            member.pending_join = false;
            return Ok(member_id);
        }
        if group.state != GroupState::PreparingRebalance {
            start_rebalance(group, now);
        }
        maybe_complete(group, now, partitions);
        Ok(member_id)
    }

    /// The outcome of `member`'s join so far.
    pub fn join_status(&self, group: &str, member: &str) -> Result<JoinStatus, GroupError> {
        let g = self.groups.get(group).ok_or_else(|| unknown_member(group, member))?;
        let m = g.members.get(member).ok_or_else(|| unknown_member(group, member))?;
        if m.pending_join {
            return Ok(JoinStatus::Waiting);
        }
        Ok(JoinStatus::Done(JoinResult {
            member_id: m.id.clone(),
            generation: g.generation,
            strategy: g.strategy,
            assignment: m.assignment.clone(),
            member_count: g.members.len() as u32,
        }))
    }

    /// Records a heartbeat. Ok (with the member's session timeout) means: keep consuming.
    pub fn heartbeat(
        &mut self,
        now: Instant,
        group: &str,
        member: &str,
        generation: u32,
    ) -> Result<Duration, GroupError> {
        let g = self.groups.get_mut(group).ok_or_else(|| unknown_member(group, member))?;
        let m = g.members.get_mut(member).ok_or_else(|| unknown_member(group, member))?;
        m.last_seen = now;
        if g.state == GroupState::PreparingRebalance {
            return err(ErrorCode::RebalanceInProgress, format!("group {group} is rebalancing; rejoin"));
        }
        if generation != g.generation {
            return err(
                ErrorCode::IllegalGeneration,
                format!("generation {generation} is stale; group {group} is at generation {}", g.generation),
            );
        }
        Ok(m.session_timeout)
    }

    /// Removes a member at once.
    pub fn leave(
        &mut self,
        now: Instant,
        group: &str,
        member: &str,
        partitions: &BTreeMap<String, u32>,
    ) -> Result<(), GroupError> {
        let g = self.groups.get_mut(group).ok_or_else(|| unknown_member(group, member))?;
        if g.members.remove(member).is_none() {
            return Err(unknown_member(group, member));
        }
        after_removal(g, now, partitions);
        Ok(())
    }

    /// Checks that `member` may commit for `partitions` in `generation`.
    pub fn check_commit(
        &self,
        group: &str,
        member: &str,
        generation: u32,
        partitions: &[TopicPartition],
    ) -> Result<(), GroupError> {
        let g = match self.groups.get(group) {
            Some(g) if !g.members.is_empty() => g,
            _ if member.is_empty() && generation == 0 => return Ok(()),
            _ => return Err(unknown_member(group, member)),
        };
        if member.is_empty() {
            return err(ErrorCode::UnknownMember, format!("group {group} has members; commit as one of them"));
        }
        let m = g.members.get(member).ok_or_else(|| unknown_member(group, member))?;
        if generation != g.generation || m.generation != g.generation {
            return err(
                ErrorCode::IllegalGeneration,
                format!("commit from generation {generation} refused: group {group} is at generation {}", g.generation),
            );
        }
        if let Some(tp) = partitions.iter().find(|tp| !m.assignment.contains(*tp)) {
            return err(
                ErrorCode::NotPartitionOwner,
                format!("member {member} does not own {}/{} in generation {generation}", tp.0, tp.1),
            );
        }
        Ok(())
    }

    /// Expires silent members and overdue rebalances. Returns whether anything changed.
    pub fn tick(&mut self, now: Instant, partitions: &BTreeMap<String, u32>) -> bool {
        let mut changed = false;
        for g in self.groups.values_mut() {
            let before = (g.state, g.generation, g.members.len());
            let expired: Vec<String> = g
                .members
                .values()
                .filter(|m| !m.pending_join && now.saturating_duration_since(m.last_seen) > m.session_timeout)
                .map(|m| m.id.clone())
                .collect();
            for id in &expired {
                tracing::info!(group = %g.id, member = %id, "session timed out; removing member");
                g.members.remove(id);
            }
            if !expired.is_empty() {
                after_removal(g, now, partitions);
            }
            if g.state == GroupState::Stable && subscribed_counts(g, partitions) != g.assigned_counts {
                tracing::info!(group = %g.id, "partitions of a subscribed topic changed");
                start_rebalance(g, now);
            }
            if g.state == GroupState::PreparingRebalance && g.rebalance_deadline.is_some_and(|d| now >= d) {
                let late: Vec<String> = g.members.values().filter(|m| !m.pending_join).map(|m| m.id.clone()).collect();
                for id in late {
                    tracing::info!(group = %g.id, member = %id, "member did not rejoin in time; removing it");
                    g.members.remove(&id);
                }
                complete(g, now, partitions);
            }
            changed |= before != (g.state, g.generation, g.members.len());
        }
        self.groups.retain(|_, g| !g.members.is_empty() || g.state != GroupState::Empty);
        changed
    }
}

fn sanitize(client_id: &str) -> String {
    let s: String =
        client_id.chars().filter(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')).take(64).collect();
    if s.is_empty() {
        "member".into()
    } else {
        s
    }
}

fn unknown_member(group: &str, member: &str) -> GroupError {
    GroupError {
        code: ErrorCode::UnknownMember,
        message: format!("member {member} is not in group {group}; join again as a new member"),
    }
}

fn start_rebalance(g: &mut Group, now: Instant) {
    let longest = g.members.values().map(|m| m.rebalance_timeout).max().unwrap_or(Duration::from_secs(30));
    g.state = GroupState::PreparingRebalance;
    g.rebalance_deadline = Some(now + longest);
    tracing::info!(group = %g.id, generation = g.generation, members = g.members.len(), "rebalance started");
}

fn after_removal(g: &mut Group, now: Instant, partitions: &BTreeMap<String, u32>) {
    if g.members.is_empty() {
        g.state = GroupState::Empty;
        g.rebalance_deadline = None;
        g.generation += 1;
        return;
    }
    if g.state != GroupState::PreparingRebalance {
        start_rebalance(g, now);
    }
    maybe_complete(g, now, partitions);
}

fn maybe_complete(g: &mut Group, now: Instant, partitions: &BTreeMap<String, u32>) {
    if g.state == GroupState::PreparingRebalance && g.members.values().all(|m| m.pending_join) {
        complete(g, now, partitions);
    }
}

/// Picks the strategy most members asked for (ties: the lowest member id's choice).
fn choose_strategy(g: &Group) -> AssignmentStrategy {
    let mut votes: BTreeMap<u8, (usize, &str)> = BTreeMap::new();
    for m in g.members.values() {
        let key = match m.strategy {
            AssignmentStrategy::Sticky => 0,
            AssignmentStrategy::Range => 1,
            AssignmentStrategy::RoundRobin => 2,
        };
        let e = votes.entry(key).or_insert((0, m.id.as_str()));
        e.0 += 1;
    }
    let (key, _) = votes
        .iter()
        .max_by(|a, b| a.1 .0.cmp(&b.1 .0).then(b.1 .1.cmp(a.1 .1)))
        .map(|(k, v)| (*k, *v))
        .unwrap_or((0, (0, "")));
    match key {
        1 => AssignmentStrategy::Range,
        2 => AssignmentStrategy::RoundRobin,
        _ => AssignmentStrategy::Sticky,
    }
}

/// Current partition counts of the topics the group subscribes to.
fn subscribed_counts(g: &Group, partitions: &BTreeMap<String, u32>) -> BTreeMap<String, u32> {
    g.topics().into_iter().filter_map(|t| partitions.get(&t).map(|n| (t, *n))).collect()
}

fn complete(g: &mut Group, now: Instant, partitions: &BTreeMap<String, u32>) {
    if g.members.is_empty() {
        g.state = GroupState::Empty;
        g.rebalance_deadline = None;
        return;
    }
    g.generation += 1;
    g.strategy = choose_strategy(g);
    let inputs: BTreeMap<String, MemberInput> = g
        .members
        .values()
        .map(|m| (m.id.clone(), MemberInput { topics: m.topics.clone(), previous: m.assignment.clone() }))
        .collect();
    let assignment = assign::assign(g.strategy, &inputs, partitions);
    g.assigned_counts = subscribed_counts(g, partitions);
    for m in g.members.values_mut() {
        m.assignment = assignment.get(&m.id).cloned().unwrap_or_default();
        m.generation = g.generation;
        m.pending_join = false;
        m.last_seen = now;
    }
    g.state = GroupState::Stable;
    g.rebalance_deadline = None;
    debug_assert_eq!(
        g.members.values().map(|m| m.assignment.len()).sum::<usize>(),
        g.owners().len(),
        "a partition was assigned twice"
    );
    tracing::info!(group = %g.id, generation = g.generation, members = g.members.len(), strategy = g.strategy.name(), "rebalance complete");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(group: &str, member: &str) -> JoinArgs {
        JoinArgs {
            group: group.into(),
            member_id: member.into(),
            client_id: "test".into(),
            host: "127.0.0.1:1".into(),
            topics: vec!["t".into()],
            strategy: AssignmentStrategy::Sticky,
            session_timeout_ms: 1_000,
            rebalance_timeout_ms: 5_000,
        }
    }

    fn parts() -> BTreeMap<String, u32> {
        [("t".to_string(), 4)].into()
    }

    fn done(c: &Coordinator, m: &str) -> JoinResult {
        match c.join_status("g", m).unwrap() {
            JoinStatus::Done(r) => r,
            JoinStatus::Waiting => panic!("{m} still waiting"),
        }
    }

    fn assert_disjoint(c: &Coordinator) {
        let g = c.group("g").unwrap();
        let total: usize =
            g.members.values().filter(|m| m.generation == g.generation).map(|m| m.assignment.len()).sum();
        assert_eq!(total, g.owners().len());
    }

    #[test]
    fn first_member_gets_everything_then_a_second_triggers_a_rebalance() {
        let t0 = Instant::now();
        let mut c = Coordinator::new();
        let a = c.join(t0, args("g", ""), &parts()).unwrap();
        let ra = done(&c, &a);
        assert_eq!((ra.generation, ra.assignment.len()), (1, 4));
        let b = c.join(t0, args("g", ""), &parts()).unwrap();
        assert_eq!(c.join_status("g", &b).unwrap(), JoinStatus::Waiting);
        // a learns of the rebalance from its heartbeat, may still commit its partitions, and rejoins.
        assert_eq!(c.heartbeat(t0, "g", &a, 1).unwrap_err().code, ErrorCode::RebalanceInProgress);
        c.check_commit("g", &a, 1, &[("t".into(), 0)]).unwrap();
        c.join(t0, args("g", &a), &parts()).unwrap();
        let (ra, rb) = (done(&c, &a), done(&c, &b));
        assert_eq!((ra.generation, rb.generation), (2, 2));
        assert_eq!(ra.assignment.len() + rb.assignment.len(), 4);
        assert!(ra.assignment.is_disjoint(&rb.assignment));
        assert_disjoint(&c);
        c.heartbeat(t0, "g", &a, 2).unwrap();
        // Stale generation commits are refused; so are partitions not owned.
        assert_eq!(c.check_commit("g", &a, 1, &[]).unwrap_err().code, ErrorCode::IllegalGeneration);
        let theirs = rb.assignment.iter().next().unwrap().clone();
        assert_eq!(c.check_commit("g", &a, 2, &[theirs]).unwrap_err().code, ErrorCode::NotPartitionOwner);
    }

    #[test]
    fn silent_members_are_removed_and_their_partitions_move() {
        let t0 = Instant::now();
        let mut c = Coordinator::new();
        let a = c.join(t0, args("g", ""), &parts()).unwrap();
        let b = c.join(t0, args("g", ""), &parts()).unwrap();
        c.join(t0, args("g", &a), &parts()).unwrap();
        assert_eq!(done(&c, &b).generation, 2);
        // b keeps heartbeating, a goes silent.
        let t1 = t0 + Duration::from_millis(800);
        c.heartbeat(t1, "g", &b, 2).unwrap();
        let t2 = t0 + Duration::from_millis(1_500);
        assert!(c.tick(t2, &parts()));
        assert_eq!(c.heartbeat(t2, "g", &a, 2).unwrap_err().code, ErrorCode::UnknownMember);
        assert_eq!(c.heartbeat(t2, "g", &b, 2).unwrap_err().code, ErrorCode::RebalanceInProgress);
        c.join(t2, args("g", &b), &parts()).unwrap();
        let rb = done(&c, &b);
        assert_eq!((rb.generation, rb.assignment.len()), (3, 4));
    }

    #[test]
    fn members_that_do_not_rejoin_are_dropped_at_the_deadline() {
        let t0 = Instant::now();
        let mut c = Coordinator::new();
        let a = c.join(t0, args("g", ""), &parts()).unwrap();
        let b = c.join(t0, args("g", ""), &parts()).unwrap();
        // a never rejoins but keeps heartbeating (a stuck poll loop).
        let t1 = t0 + Duration::from_millis(900);
        let _ = c.heartbeat(t1, "g", &a, 1);
        assert!(!c.tick(t1, &parts()));
        let t2 = t0 + Duration::from_millis(5_001);
        let _ = c.heartbeat(t2 - Duration::from_millis(10), "g", &a, 1);
        assert!(c.tick(t2, &parts()));
        assert_eq!(done(&c, &b).assignment.len(), 4);
        assert_eq!(c.join_status("g", &a).unwrap_err().code, ErrorCode::UnknownMember);
    }

    #[test]
    fn fifth_member_of_four_partitions_is_idle_and_leave_rebalances() {
        let t0 = Instant::now();
        let mut c = Coordinator::new();
        let mut ids: Vec<String> = Vec::new();
        for _ in 0..5 {
            let id = c.join(t0, args("g", ""), &parts()).unwrap();
            for other in ids.clone() {
                c.join(t0, args("g", &other), &parts()).unwrap();
            }
            ids.push(id);
        }
        let sizes: Vec<usize> = ids.iter().map(|m| done(&c, m).assignment.len()).collect();
        assert_eq!(sizes.iter().filter(|s| **s == 0).count(), 1);
        assert_eq!(sizes.iter().sum::<usize>(), 4);
        assert_disjoint(&c);
        let busy = ids.iter().find(|m| !done(&c, m).assignment.is_empty()).unwrap().clone();
        c.leave(t0, "g", &busy, &parts()).unwrap();
        for m in ids.iter().filter(|m| **m != busy) {
            c.join(t0, args("g", m), &parts()).unwrap();
        }
        let sizes: Vec<usize> = ids.iter().filter(|m| **m != busy).map(|m| done(&c, m).assignment.len()).collect();
        assert_eq!(sizes, [1, 1, 1, 1]);
    }

    #[test]
    fn added_partitions_start_a_rebalance_that_assigns_them() {
        let t0 = Instant::now();
        let mut c = Coordinator::new();
        let a = c.join(t0, args("g", ""), &parts()).unwrap();
        assert_eq!(done(&c, &a).assignment.len(), 4);
        assert!(!c.tick(t0, &parts()));
        let grown: BTreeMap<String, u32> = [("t".to_string(), 6)].into();
        assert!(c.tick(t0, &grown));
        assert_eq!(c.heartbeat(t0, "g", &a, 1).unwrap_err().code, ErrorCode::RebalanceInProgress);
        c.join(t0, args("g", &a), &grown).unwrap();
        let r = done(&c, &a);
        assert_eq!((r.generation, r.assignment.len()), (2, 6));
    }

    #[test]
    fn bad_joins_are_refused() {
        let t0 = Instant::now();
        let mut c = Coordinator::new();
        assert_eq!(c.join(t0, args("", ""), &parts()).unwrap_err().code, ErrorCode::InvalidGroup);
        let mut a = args("g", "");
        a.session_timeout_ms = 1;
        assert_eq!(c.join(t0, a, &parts()).unwrap_err().code, ErrorCode::InvalidGroup);
        assert_eq!(c.join(t0, args("g", "ghost"), &parts()).unwrap_err().code, ErrorCode::UnknownMember);
        assert_eq!(c.heartbeat(t0, "nope", "x", 1).unwrap_err().code, ErrorCode::UnknownMember);
        // With no members, a standalone commit (no member id, generation 0) is allowed.
        c.check_commit("other", "", 0, &[("t".into(), 0)]).unwrap();
    }
}
