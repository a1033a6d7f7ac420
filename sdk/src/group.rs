//! Consumer groups: [`GroupConsumer`] joins a group, reads the partitions the
//! group coordinator gives it, and commits how far it got.
//!
//! # Protocol
//!
//! Eager rebalancing with the assignment computed by the broker:
//!
//! * **Join.** `JoinGroup` (an empty member id for a new member) is held by the
//!   broker until the rebalance it starts or joins completes, i.e. until every
//!   member has rejoined or the rebalance timeout expired. The answer carries
//!   the member id, the new generation and this member's partitions. The
//!   request is sent with a limit of `rebalance_timeout` plus a margin, not the
//!   client's normal request timeout.
//! * **Heartbeat.** A background task long-polls `Heartbeat` (held by the broker
//!   for `heartbeat_wait`). The broker answers at once with
//!   `REBALANCE_IN_PROGRESS` when a rebalance starts, `ILLEGAL_GENERATION` when
//!   the member's generation is stale and `UNKNOWN_MEMBER` when the member was
//!   removed; the task passes that on to [`GroupConsumer::poll`] and keeps the
//!   session alive until `poll` rejoins.
//! * **Rebalance, in `poll`.** Stop fetching the owned partitions; commit their
//!   positions (auto-commit only); call
//!   [`RebalanceListener::on_partitions_revoked`]; rejoin; read the group's
//!   committed offsets; start fetching each new partition at its committed
//!   offset, else where [`GroupConfig::offset_reset`] says; call
//!   [`RebalanceListener::on_partitions_assigned`]. A rebalance noticed while
//!   `poll` waits for records is handled in that same call.
//! * **Leave.** [`GroupConsumer::close`] commits (auto-commit only) and sends
//!   `LeaveGroup`, so the partitions move at once instead of after the session
//!   timeout. Dropping an unclosed consumer sends `LeaveGroup` from a spawned
//!   task, without committing.
//!
//! # Delivery semantics
//!
//! A commit stores, per partition, the offset of the next record to read; a
//! member that takes a partition over starts there. Whatever was handed out
//! after the last commit is therefore handed out again after a rebalance or a
//! crash.
//!
//! * **At-least-once (the default): commit after processing.** With
//!   auto-commit, `poll` commits (every [`GroupConfig::auto_commit`] interval,
//!   on revocation and on close) the positions of the records handed out by
//!   *earlier* calls: calling `poll` again is what says the previous batch has
//!   been processed. With manual commit (`auto_commit: None`), call
//!   [`GroupConsumer::commit`] after processing what `poll` returned. Records
//!   processed but not yet committed when a member dies, or when a commit is
//!   refused because the group moved on (`ILLEGAL_GENERATION`,
//!   `UNKNOWN_MEMBER`), are delivered again to the next owner: that window is
//!   the source of duplicates.
//! * **At-most-once: commit before processing.** Use manual commit and call
//!   [`GroupConsumer::commit`] right after `poll` returns, before processing
//!   the records. A crash during processing then loses the rest of the batch
//!   instead of repeating it.
//!
//! Commits are sent one at a time in order (asynchronous ones through a chain
//! of tasks, synchronous ones after waiting for that chain), so a committed
//! offset never moves backwards except by an explicit [`GroupConsumer::seek`].
//!
//! # Errors
//!
//! `UNKNOWN_MEMBER` makes the member rejoin as a new member;
//! `ILLEGAL_GENERATION` and `REBALANCE_IN_PROGRESS` (from a heartbeat or a
//! commit) make it rejoin with its id. A lost connection is re-established by
//! the [`Client`] on the next request. Joins and commits are retried a bounded
//! number of times with exponential backoff; heartbeats are retried with
//! backoff for as long as the member lives, and after a session timeout
//! without an answer the member rejoins.
//!
//! # Coordinator failover
//!
//! Group requests go to any broker, which forwards them to the controller
//! (the coordinator); the [`Client`] retries `NOT_CONTROLLER`,
//! `SHUTTING_DOWN` and unreachable brokers on the next broker until each
//! request's timeout. What still fails is transient for the member: a join,
//! offset fetch or start-offset lookup that fails with `NOT_CONTROLLER`,
//! `SHUTTING_DOWN`, `NOT_LEADER`, `LEADER_NOT_AVAILABLE`, a connect or
//! transport failure or a timeout makes `poll` retry with backoff (returning
//! no records if its time runs out) instead of returning the error; a failed
//! commit leaves the positions uncommitted for the next commit; a heartbeat
//! without answer for a session timeout makes the member rejoin, as a new
//! member if the new coordinator does not know it (`UNKNOWN_MEMBER`). A member
//! that could not commit before it was fenced hands its partitions over at
//! the last committed offsets: the records since are delivered again
//! (at-least-once), never skipped.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use eddy_protocol::messages::{
    AssignmentStrategy, CommittedOffset, HeartbeatRequest, JoinGroupRequest, JoinGroupResponse, LeaveGroupRequest,
    ListOffsetsRequest, OffsetCommitRequest, OffsetFetchRequest, OffsetSpec,
};
use eddy_protocol::ErrorCode;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::client::Client;
use crate::consumer::{is_transient, Consumer, ConsumerConfig, ConsumerRecord, OffsetReset, StartOffset};
use crate::error::ClientError;

/// Added to the rebalance timeout to bound a `JoinGroup` request: the broker
/// holds a join for up to the group's rebalance timeout.
const JOIN_MARGIN: Duration = Duration::from_secs(5);
/// First pause after a failed join, commit or heartbeat; doubled per failure.
const MIN_BACKOFF: Duration = Duration::from_millis(100);
/// Longest pause between retries.
const MAX_BACKOFF: Duration = Duration::from_secs(2);
/// Join attempts per call of `poll` (or `subscribe`) before the error is returned.
const JOIN_ATTEMPTS: u32 = 6;
/// Attempts of one commit on retriable errors (a repeated commit of the same
/// offsets is harmless).
const COMMIT_ATTEMPTS: u32 = 3;
/// Shortest heartbeat long poll, so a tiny session timeout cannot make the
/// heartbeat task spin.
const MIN_HEARTBEAT_WAIT: Duration = Duration::from_millis(50);

/// A topic and partition.
type TopicPartition = (String, u32);

/// How a member joins its group and commits.
#[derive(Debug, Clone)]
pub struct GroupConfig {
    /// The group to join (1 to 249 bytes).
    pub group_id: String,
    /// Free text shown by `eddy group describe` (default `eddy-<pid>`).
    pub client_id: String,
    /// The assignment strategy this member asks for; the group uses the one
    /// most members ask for (default [`AssignmentStrategy::Sticky`]).
    pub strategy: AssignmentStrategy,
    /// The member is removed when the broker hears nothing from it for this
    /// long (default 10 s; the broker accepts 100 ms to 300 s).
    pub session_timeout: Duration,
    /// How long a rebalance waits for this member to rejoin (default 30 s):
    /// the longest time between two calls of [`GroupConsumer::poll`] during a
    /// rebalance before the member is removed.
    pub rebalance_timeout: Duration,
    /// How long the broker holds each heartbeat (default a third of the
    /// session timeout; larger values are lowered to that).
    pub heartbeat_wait: Duration,
    /// Commit positions every this long from `poll`, and on revocation and
    /// close (default 5 s). `None`: commit only through
    /// [`GroupConsumer::commit`], [`GroupConsumer::commit_async`] and
    /// [`GroupConsumer::commit_offsets`].
    pub auto_commit: Option<Duration>,
    /// Where to start a partition for which the group has no committed offset
    /// (default [`OffsetReset::Earliest`], so that a new group sees the records
    /// produced before it first joined; a group that should only see new
    /// records uses [`OffsetReset::Latest`]). [`OffsetReset::None`] leaves such
    /// a partition unread and `poll` returns
    /// [`ClientError::NoCommittedOffset`] once: seek to start it. Positions
    /// that fall out of range later follow `consumer.offset_reset`.
    pub offset_reset: OffsetReset,
    /// How partitions are fetched.
    pub consumer: ConsumerConfig,
}

impl GroupConfig {
    /// The defaults for group `group_id`.
    pub fn new(group_id: impl Into<String>) -> Self {
        let session_timeout = Duration::from_secs(10);
        Self {
            group_id: group_id.into(),
            client_id: format!("eddy-{}", std::process::id()),
            strategy: AssignmentStrategy::Sticky,
            session_timeout,
            rebalance_timeout: Duration::from_secs(30),
            heartbeat_wait: session_timeout / 3,
            auto_commit: Some(Duration::from_secs(5)),
            offset_reset: OffsetReset::Earliest,
            consumer: ConsumerConfig::default(),
        }
    }

    /// Sets the session timeout and a heartbeat wait of a third of it.
    pub fn session_timeout(mut self, timeout: Duration) -> Self {
        self.session_timeout = timeout;
        self.heartbeat_wait = timeout / 3;
        self
    }

    /// Sets the rebalance timeout.
    pub fn rebalance_timeout(mut self, timeout: Duration) -> Self {
        self.rebalance_timeout = timeout;
        self
    }

    /// Sets the auto-commit interval (`None`: manual commit).
    pub fn auto_commit(mut self, interval: Option<Duration>) -> Self {
        self.auto_commit = interval;
        self
    }

    /// Sets the reset policy for partitions without a committed offset.
    pub fn offset_reset(mut self, reset: OffsetReset) -> Self {
        self.offset_reset = reset;
        self
    }

    /// Sets the assignment strategy.
    pub fn strategy(mut self, strategy: AssignmentStrategy) -> Self {
        self.strategy = strategy;
        self
    }

    /// Sets the client id.
    pub fn client_id(mut self, client_id: impl Into<String>) -> Self {
        self.client_id = client_id.into();
        self
    }

    /// The heartbeat long-poll time actually used: `heartbeat_wait`, at most a
    /// third of the session timeout, at least [`MIN_HEARTBEAT_WAIT`].
    fn effective_heartbeat_wait(&self) -> Duration {
        self.heartbeat_wait.min(self.session_timeout / 3).max(MIN_HEARTBEAT_WAIT)
    }
}

/// Told about partitions changing hands. Called from [`GroupConsumer::poll`]
/// (and `subscribe` and `close`), on the caller's task.
pub trait RebalanceListener: Send {
    /// The member is about to give these partitions up (a rebalance, or close).
    /// Their positions have been committed already when auto-commit is on.
    fn on_partitions_revoked(&mut self, partitions: &[(String, u32)]) {
        let _ = partitions;
    }

    /// The member owns these partitions in its new generation and fetches
    /// them from their committed offsets (or the reset policy).
    fn on_partitions_assigned(&mut self, partitions: &[(String, u32)]) {
        let _ = partitions;
    }
}

/// How the member must rejoin.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Rejoin {
    /// With its member id (a rebalance started, or its generation is stale).
    Member,
    /// As a new member (the broker no longer knows its id).
    Fresh,
}

impl Rejoin {
    /// The stronger of two requests: a fresh join covers a rejoin.
    fn merge(current: Option<Rejoin>, new: Rejoin) -> Rejoin {
        if current == Some(Rejoin::Fresh) {
            Rejoin::Fresh
        } else {
            new
        }
    }
}

/// Commit bookkeeping of one owned partition.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct PartState {
    /// The next offset `poll` hands out; `None` until the start is known.
    position: Option<u64>,
    /// The group's committed offset as last read or acknowledged.
    committed: Option<u64>,
    /// Offset of a commit sent and not answered yet.
    in_flight: Option<u64>,
}

/// Positions and commits of the partitions owned in the current generation.
///
/// Positions only move when records are handed out (or on seek and reset), so
/// the positions read at the start of a `poll` are exactly those of the
/// records handed out by earlier polls: what at-least-once auto-commit may
/// commit.
#[derive(Debug, Default)]
struct OffsetBook {
    parts: BTreeMap<TopicPartition, PartState>,
}

impl OffsetBook {
    /// Replaces the owned partitions (a new generation): nothing known yet.
    fn assign(&mut self, partitions: impl IntoIterator<Item = TopicPartition>) {
        self.parts = partitions.into_iter().map(|tp| (tp, PartState::default())).collect();
    }

    fn clear(&mut self) {
        self.parts.clear();
    }

    /// Owned partitions, sorted.
    fn partitions(&self) -> Vec<TopicPartition> {
        self.parts.keys().cloned().collect()
    }

    fn get_mut(&mut self, topic: &str, partition: u32) -> Option<&mut PartState> {
        // BTreeMap<(String, u32)> cannot be queried by (&str, u32) without an allocation.
        self.parts.get_mut(&(topic.to_string(), partition))
    }

    fn owns(&self, topic: &str, partition: u32) -> bool {
        self.parts.contains_key(&(topic.to_string(), partition))
    }

    fn position(&self, topic: &str, partition: u32) -> Option<u64> {
        self.parts.get(&(topic.to_string(), partition)).and_then(|s| s.position)
    }

    fn set_position(&mut self, topic: &str, partition: u32, offset: u64) {
        if let Some(s) = self.get_mut(topic, partition) {
            s.position = Some(offset);
        }
    }

    fn set_committed(&mut self, topic: &str, partition: u32, offset: u64) {
        if let Some(s) = self.get_mut(topic, partition) {
            s.committed = Some(offset);
        }
    }

    /// Owned partitions whose start position is not known yet.
    fn without_position(&self) -> Vec<TopicPartition> {
        self.parts.iter().filter(|(_, s)| s.position.is_none()).map(|(tp, _)| tp.clone()).collect()
    }

    /// What a commit now should send: every known position that is neither
    /// committed already nor in flight.
    fn to_commit(&self) -> Vec<(TopicPartition, u64)> {
        self.parts
            .iter()
            .filter_map(|(tp, s)| {
                let pos = s.position?;
                (s.committed != Some(pos) && s.in_flight != Some(pos)).then(|| (tp.clone(), pos))
            })
            .collect()
    }

    fn commit_sent(&mut self, offsets: &[(TopicPartition, u64)]) {
        for ((t, p), offset) in offsets {
            if let Some(s) = self.get_mut(t, *p) {
                s.in_flight = Some(*offset);
            }
        }
    }

    /// Records a commit's outcome. Commits finish in the order they were sent,
    /// so an acknowledged offset is the group's committed offset.
    fn commit_finished(&mut self, offsets: &[(TopicPartition, u64)], ok: bool) {
        for ((t, p), offset) in offsets {
            if let Some(s) = self.get_mut(t, *p) {
                if s.in_flight == Some(*offset) {
                    s.in_flight = None;
                }
                if ok {
                    s.committed = Some(*offset);
                }
            }
        }
    }
}

/// The outcome of an asynchronous commit, read back by `poll`.
struct CommitOutcome {
    generation: u32,
    offsets: Vec<(TopicPartition, u64)>,
    result: Result<(), ClientError>,
}

/// A member of a consumer group: reads the partitions the group assigns it,
/// follows rebalances and commits positions. See the [module docs](self) for
/// the protocol and the delivery semantics.
///
/// Records of one partition come out of [`poll`](Self::poll) in offset order.
/// Not `Sync`: one task drives it.
pub struct GroupConsumer {
    client: Client,
    config: GroupConfig,
    /// Subscribed topics, sorted.
    topics: Vec<String>,
    member_id: String,
    generation: u32,
    /// Whether the member holds the partitions of `generation` (false from a
    /// revocation until the next successful join).
    joined: bool,
    /// Start positions of the new generation's partitions are still to be set up.
    positions_pending: bool,
    /// A rejoin to do before handing out more records.
    rejoin: Option<Rejoin>,
    consumer: Consumer,
    book: OffsetBook,
    listener: Option<Box<dyn RebalanceListener>>,
    heartbeat: Option<JoinHandle<()>>,
    /// Set by the heartbeat task of the current generation.
    signal: watch::Receiver<Option<Rejoin>>,
    next_auto_commit: Option<Instant>,
    commits_tx: mpsc::UnboundedSender<CommitOutcome>,
    commits_rx: mpsc::UnboundedReceiver<CommitOutcome>,
    /// The last asynchronous commit; each one waits for its predecessor.
    commit_chain: Option<JoinHandle<()>>,
    /// An error to return from the next `poll`.
    pending_error: Option<ClientError>,
    /// `close` ran (or is running): no leave on drop.
    closed: bool,
}

impl std::fmt::Debug for GroupConsumer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GroupConsumer")
            .field("group", &self.config.group_id)
            .field("member_id", &self.member_id)
            .field("generation", &self.generation)
            .field("assignment", &self.book.partitions())
            .finish_non_exhaustive()
    }
}

fn millis(d: Duration) -> u32 {
    u32::try_from(d.as_millis()).unwrap_or(u32::MAX)
}

fn is_fencing(code: Option<ErrorCode>) -> bool {
    matches!(
        code,
        Some(
            ErrorCode::IllegalGeneration
                | ErrorCode::RebalanceInProgress
                | ErrorCode::UnknownMember
                | ErrorCode::NotPartitionOwner
        )
    )
}

impl GroupConsumer {
    /// Joins `config.group_id` subscribed to `topics`, starts heartbeating,
    /// and starts fetching the assigned partitions from their committed
    /// offsets (else `config.offset_reset`). Returns once the first join has
    /// completed, which may take up to the group's rebalance timeout when
    /// other members must rejoin first.
    pub async fn subscribe(client: Client, config: GroupConfig, topics: &[String]) -> Result<Self, ClientError> {
        if config.group_id.is_empty() {
            return Err(ClientError::Config("the group id must not be empty".into()));
        }
        if topics.is_empty() {
            return Err(ClientError::Config("subscribe to at least one topic".into()));
        }
        let topics: Vec<String> = topics.iter().cloned().collect::<BTreeSet<_>>().into_iter().collect();
        let (commits_tx, commits_rx) = mpsc::unbounded_channel();
        // No heartbeat task yet: a receiver whose sender is gone.
        let (_, signal) = watch::channel(None);
        let consumer = Consumer::new(client.clone(), config.consumer.clone());
        let next_auto_commit = config.auto_commit.map(|i| Instant::now() + i);
        let mut this = Self {
            client,
            config,
            topics,
            member_id: String::new(),
            generation: 0,
            joined: false,
            positions_pending: false,
            rejoin: Some(Rejoin::Fresh),
            consumer,
            book: OffsetBook::default(),
            listener: None,
            heartbeat: None,
            signal,
            next_auto_commit,
            commits_tx,
            commits_rx,
            commit_chain: None,
            pending_error: None,
            closed: false,
        };
        this.ensure_active().await?;
        Ok(this)
    }

    /// Sets the listener told about revoked and assigned partitions (from the
    /// next rebalance on).
    pub fn set_listener(&mut self, listener: Box<dyn RebalanceListener>) {
        self.listener = Some(listener);
    }

    /// Handles a pending rebalance first (see the module docs), auto-commits
    /// the positions of records returned by earlier calls when the interval
    /// has passed, then waits up to `timeout` for records and returns those
    /// available (an empty Vec on timeout). A rebalance noticed during the
    /// wait is handled before records are returned. Coordinator and leader
    /// failover are not errors: a join or offset lookup that fails
    /// transiently (see the module docs) is retried with backoff within this
    /// call, and again by the next call if its time ran out.
    ///
    /// Cancel-safe: dropping the future loses no record and leaves the
    /// consumer usable (an interrupted rebalance resumes on the next call).
    pub async fn poll(&mut self, timeout: Duration) -> Result<Vec<ConsumerRecord>, ClientError> {
        let deadline = Instant::now() + timeout;
        let mut backoff = MIN_BACKOFF;
        loop {
            if let Err(err) = self.ensure_active().await {
                if !is_transient(&err) {
                    return Err(err);
                }
                // The coordinator moved or is being elected: try again, within this call's time.
                tracing::warn!(group = %self.config.group_id, error = %err, ?backoff, "group coordinator unavailable; retrying");
                let now = Instant::now();
                if now >= deadline {
                    return Ok(Vec::new());
                }
                tokio::time::sleep(backoff.min(deadline - now)).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
                continue;
            }
            if let Some(err) = self.pending_error.take() {
                return Err(err);
            }
            self.maybe_auto_commit();
            let now = Instant::now();
            let mut wait = deadline.saturating_duration_since(now);
            if let Some(due) = self.next_auto_commit {
                wait = wait.min(due.saturating_duration_since(now));
            }
            let signal = &mut self.signal;
            let rebalance = async {
                if signal.changed().await.is_err() {
                    // The heartbeat task is gone (stopped, or told us all it knows).
                    std::future::pending::<()>().await;
                }
            };
            tokio::select! {
                result = self.consumer.poll(wait) => {
                    self.sync_positions();
                    let records = result?;
                    if !records.is_empty() {
                        return Ok(records);
                    }
                }
                () = rebalance => {}
            }
            if Instant::now() >= deadline {
                return Ok(Vec::new());
            }
        }
    }

    /// Commits the current positions of the owned partitions (everything
    /// `poll` has returned) and waits for the answer. Asynchronous commits
    /// still in flight are waited for first. A refusal because the group moved
    /// on (`ILLEGAL_GENERATION`, `UNKNOWN_MEMBER`, `REBALANCE_IN_PROGRESS`) is
    /// returned and makes the next `poll` rejoin; those records will be
    /// delivered again to their next owner.
    pub async fn commit(&mut self) -> Result<(), ClientError> {
        self.sync_positions();
        self.commit_book().await
    }

    /// Commits the current positions without waiting. Commits are sent in
    /// order; a failure is logged with `tracing` and, if the group moved on,
    /// makes the next `poll` rejoin.
    pub fn commit_async(&mut self) {
        self.drain_commit_outcomes();
        self.sync_positions();
        if !self.joined {
            return;
        }
        let offsets = self.book.to_commit();
        if !offsets.is_empty() {
            self.spawn_commit(offsets);
        }
    }

    /// Commits the given `(topic, partition, offset)` triples (offset = the
    /// next record to read) and waits for the answer. The broker refuses
    /// partitions this member does not own in its generation
    /// (`NOT_PARTITION_OWNER`).
    pub async fn commit_offsets(&mut self, offsets: &[(String, u32, u64)]) -> Result<(), ClientError> {
        let offsets: Vec<(TopicPartition, u64)> = offsets.iter().map(|(t, p, o)| ((t.clone(), *p), *o)).collect();
        if offsets.is_empty() {
            return Ok(());
        }
        self.wait_async_commits().await;
        let all_owned = offsets.iter().all(|((t, p), _)| self.book.owns(t, *p));
        self.commit_now(offsets, all_owned).await
    }

    /// Moves the position of an owned partition: the next `poll` returns
    /// records from `offset` on, and the next commit stores it (even if it is
    /// before the committed offset).
    pub async fn seek(&mut self, topic: &str, partition: u32, offset: u64) -> Result<(), ClientError> {
        if !self.book.owns(topic, partition) {
            return Err(ClientError::broker(
                ErrorCode::NotPartitionOwner,
                format!(
                    "{topic}/{partition} is not assigned to member {} in generation {}",
                    self.member_id, self.generation
                ),
            ));
        }
        self.consumer.assign(topic, partition, StartOffset::At(offset)).await?;
        self.book.set_position(topic, partition, offset);
        Ok(())
    }

    /// The partitions this member owns, sorted.
    pub fn assignment(&self) -> Vec<(String, u32)> {
        self.book.partitions()
    }

    /// The next offset `poll` hands out for an owned partition.
    pub fn position(&self, topic: &str, partition: u32) -> Option<u64> {
        self.book.position(topic, partition)
    }

    /// The generation of the current assignment.
    pub fn generation(&self) -> u32 {
        self.generation
    }

    /// The id the coordinator gave this member.
    pub fn member_id(&self) -> &str {
        &self.member_id
    }

    /// Leaves the group: commits the positions (auto-commit only), tells the
    /// listener the partitions are revoked, and sends `LeaveGroup` so they move
    /// to the other members at once. Returns the first error met; the leave is
    /// sent even if the commit failed.
    pub async fn close(mut self) -> Result<(), ClientError> {
        self.closed = true;
        self.stop_heartbeat();
        self.wait_async_commits().await;
        let mut result = Ok(());
        if self.joined {
            if self.config.auto_commit.is_some() && self.rejoin != Some(Rejoin::Fresh) {
                self.sync_positions();
                if let Err(e) = self.commit_book().await {
                    result = Err(e);
                }
            }
            self.revoke_all();
        }
        if !self.member_id.is_empty() {
            let req = LeaveGroupRequest { group: self.config.group_id.clone(), member_id: self.member_id.clone() };
            if let Err(e) = leave(&self.client, &req).await {
                if result.is_ok() {
                    result = Err(e);
                }
            }
        }
        result
    }

    /// Brings the member to a state where it may hand out records: rejoins if
    /// needed (revoking first), then sets up start positions.
    async fn ensure_active(&mut self) -> Result<(), ClientError> {
        self.drain_commit_outcomes();
        let signalled = *self.signal.borrow_and_update();
        if let Some(r) = signalled {
            self.request_rejoin(r);
        }
        if let Some(kind) = self.rejoin {
            if self.joined {
                self.revoke(kind).await;
            }
            if kind == Rejoin::Fresh {
                self.member_id.clear();
            }
            let resp = self.join().await?;
            self.rejoin = None;
            self.joined(resp);
        }
        if self.positions_pending {
            self.init_positions().await?;
            self.positions_pending = false;
            let assigned = self.book.partitions();
            if let Some(l) = self.listener.as_mut() {
                l.on_partitions_assigned(&assigned);
            }
        }
        Ok(())
    }

    fn request_rejoin(&mut self, kind: Rejoin) {
        self.rejoin = Some(Rejoin::merge(self.rejoin, kind));
    }

    /// Gives up the owned partitions before a rejoin.
    async fn revoke(&mut self, kind: Rejoin) {
        self.stop_heartbeat();
        self.sync_positions();
        if self.config.auto_commit.is_some() {
            if kind == Rejoin::Fresh {
                // The broker no longer knows this member: it would refuse the commit.
                tracing::warn!(
                    group = %self.config.group_id,
                    member = %self.member_id,
                    "removed from the group; records since the last commit will be delivered again"
                );
            } else if let Err(e) = self.commit_book().await {
                tracing::warn!(
                    group = %self.config.group_id,
                    member = %self.member_id,
                    error = %e,
                    "commit before giving up partitions failed; records since the last commit will be delivered again"
                );
            }
        }
        self.revoke_all();
    }

    /// Stops fetching, tells the listener, forgets the owned partitions.
    fn revoke_all(&mut self) {
        let owned = self.book.partitions();
        for (t, p) in &owned {
            self.consumer.unassign(t, *p);
        }
        if let Some(l) = self.listener.as_mut() {
            l.on_partitions_revoked(&owned);
        }
        self.book.clear();
        self.joined = false;
        self.positions_pending = false;
    }

    /// Sends `JoinGroup` until it succeeds, with bounded retries.
    async fn join(&mut self) -> Result<JoinGroupResponse, ClientError> {
        let limit = self.config.rebalance_timeout + JOIN_MARGIN;
        let mut backoff = MIN_BACKOFF;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let req = JoinGroupRequest {
                group: self.config.group_id.clone(),
                member_id: self.member_id.clone(),
                client_id: self.config.client_id.clone(),
                topics: self.topics.clone(),
                strategy: self.config.strategy,
                session_timeout_ms: millis(self.config.session_timeout),
                rebalance_timeout_ms: millis(self.config.rebalance_timeout),
            };
            let err = match self.client.request_with_timeout(&req, limit).await {
                Ok(resp) => return Ok(resp),
                Err(e) => e,
            };
            if attempt >= JOIN_ATTEMPTS {
                return Err(err);
            }
            match err.code() {
                Some(ErrorCode::UnknownMember) if !self.member_id.is_empty() => {
                    tracing::info!(
                        group = %self.config.group_id,
                        member = %self.member_id,
                        "no longer a member; joining as a new member"
                    );
                    self.member_id.clear();
                }
                Some(ErrorCode::RebalanceInProgress) => {}
                _ if err.is_retriable() => {
                    tracing::warn!(group = %self.config.group_id, error = %err, ?backoff, "join failed; retrying");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
                _ => return Err(err),
            }
        }
    }

    /// Takes on a completed join: the new generation's partitions, heartbeats.
    fn joined(&mut self, resp: JoinGroupResponse) {
        let partitions: Vec<TopicPartition> =
            resp.assignment.iter().flat_map(|tp| tp.partitions.iter().map(|&p| (tp.topic.clone(), p))).collect();
        tracing::info!(
            group = %self.config.group_id,
            member = %resp.member_id,
            generation = resp.generation,
            members = resp.member_count,
            strategy = resp.strategy.name(),
            partitions = ?partitions,
            "joined group"
        );
        self.member_id = resp.member_id;
        self.generation = resp.generation;
        self.book.assign(partitions);
        self.joined = true;
        self.positions_pending = true;
        self.start_heartbeat();
    }

    /// Starts fetching each owned partition without a position: at the group's
    /// committed offset, else where the reset policy says.
    async fn init_positions(&mut self) -> Result<(), ClientError> {
        let missing = self.book.without_position();
        if missing.is_empty() {
            return Ok(());
        }
        let topics: Vec<String> = missing.iter().map(|(t, _)| t.clone()).collect::<BTreeSet<_>>().into_iter().collect();
        let req = OffsetFetchRequest { group: self.config.group_id.clone(), topics: Some(topics) };
        let committed = self.client.request(&req).await?.offsets;
        for c in &committed {
            self.book.set_committed(&c.topic, c.partition, c.offset);
        }
        let committed: BTreeMap<TopicPartition, u64> =
            committed.into_iter().map(|c| ((c.topic, c.partition), c.offset)).collect();
        let mut starts = Vec::with_capacity(missing.len());
        let mut to_resolve = Vec::new();
        for tp in missing {
            match (committed.get(&tp), self.config.offset_reset) {
                (Some(&offset), _) => starts.push((tp, offset)),
                (None, OffsetReset::Earliest) => to_resolve.push((tp, OffsetSpec::Earliest)),
                (None, OffsetReset::Latest) => to_resolve.push((tp, OffsetSpec::Latest)),
                (None, OffsetReset::None) => {
                    if self.pending_error.is_none() {
                        self.pending_error = Some(ClientError::NoCommittedOffset { topic: tp.0, partition: tp.1 });
                    }
                }
            }
        }
        let client = &self.client;
        let resolved = futures::future::try_join_all(to_resolve.iter().map(|((topic, partition), spec)| {
            let req = ListOffsetsRequest { topic: topic.clone(), partition: *partition, spec: *spec };
            async move { client.request_to_leader(&req.topic, req.partition, &req).await }
        }))
        .await?;
        starts.extend(to_resolve.into_iter().zip(resolved).map(|((tp, _), r)| (tp, r.offset)));
        for ((topic, partition), offset) in starts {
            tracing::debug!(group = %self.config.group_id, %topic, partition, offset, "starting partition");
            self.consumer.assign(&topic, partition, StartOffset::At(offset)).await?;
            self.book.set_position(&topic, partition, offset);
        }
        Ok(())
    }

    /// Copies the consumer's positions (moved by handed-out records and by
    /// out-of-range resets) into the book.
    fn sync_positions(&mut self) {
        for ((topic, partition), state) in self.book.parts.iter_mut() {
            if let Some(p) = self.consumer.position(topic, *partition) {
                state.position = Some(p);
            }
        }
    }

    fn maybe_auto_commit(&mut self) {
        let (Some(interval), Some(due)) = (self.config.auto_commit, self.next_auto_commit) else {
            return;
        };
        let now = Instant::now();
        if now >= due {
            self.commit_async();
            self.next_auto_commit = Some(now + interval);
        }
    }

    /// Synchronously commits the book's uncommitted positions.
    async fn commit_book(&mut self) -> Result<(), ClientError> {
        self.wait_async_commits().await;
        if !self.joined {
            return Ok(());
        }
        let offsets = self.book.to_commit();
        if offsets.is_empty() {
            return Ok(());
        }
        self.commit_now(offsets, true).await
    }

    /// Sends one commit and waits. `owned`: every partition is owned in our
    /// view, so a fencing error means our view is stale and we must rejoin.
    async fn commit_now(&mut self, offsets: Vec<(TopicPartition, u64)>, owned: bool) -> Result<(), ClientError> {
        // Not marked in flight: if this future is dropped mid-request, the
        // next commit simply sends these offsets again.
        let req = commit_request(&self.config.group_id, &self.member_id, self.generation, &offsets);
        let result = send_commit(&self.client, &req).await;
        self.book.commit_finished(&offsets, result.is_ok());
        if let Err(e) = &result {
            if owned || e.code() != Some(ErrorCode::NotPartitionOwner) {
                self.commit_refused(e);
            }
        }
        result
    }

    /// Reacts to a refused commit: the group moved on without this member.
    fn commit_refused(&mut self, err: &ClientError) {
        match err.code() {
            Some(ErrorCode::UnknownMember) => self.request_rejoin(Rejoin::Fresh),
            code if is_fencing(code) => self.request_rejoin(Rejoin::Member),
            _ => {}
        }
    }

    fn spawn_commit(&mut self, offsets: Vec<(TopicPartition, u64)>) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            tracing::warn!("commit_async called outside a tokio runtime; not committed");
            return;
        };
        self.book.commit_sent(&offsets);
        let req = commit_request(&self.config.group_id, &self.member_id, self.generation, &offsets);
        let previous = self.commit_chain.take();
        let client = self.client.clone();
        let tx = self.commits_tx.clone();
        let generation = self.generation;
        self.commit_chain = Some(runtime.spawn(async move {
            if let Some(previous) = previous {
                let _ = previous.await;
            }
            let result = send_commit(&client, &req).await;
            if let Err(e) = &result {
                tracing::warn!(group = %req.group, generation, error = %e, "asynchronous commit failed");
            }
            let _ = tx.send(CommitOutcome { generation, offsets, result });
        }));
    }

    async fn wait_async_commits(&mut self) {
        // Awaited in place, so that a cancelled wait keeps the chain (and the
        // order of later commits).
        if let Some(chain) = self.commit_chain.as_mut() {
            let _ = chain.await;
        }
        self.commit_chain = None;
        self.drain_commit_outcomes();
    }

    fn drain_commit_outcomes(&mut self) {
        while let Ok(outcome) = self.commits_rx.try_recv() {
            if !self.joined || outcome.generation != self.generation {
                continue;
            }
            self.book.commit_finished(&outcome.offsets, outcome.result.is_ok());
            if let Err(e) = &outcome.result {
                self.commit_refused(e);
            }
        }
    }

    fn start_heartbeat(&mut self) {
        self.stop_heartbeat();
        let (tx, rx) = watch::channel(None);
        self.signal = rx;
        let heartbeat = Heartbeat {
            client: self.client.clone(),
            group: self.config.group_id.clone(),
            member_id: self.member_id.clone(),
            generation: self.generation,
            wait: self.config.effective_heartbeat_wait(),
            session_timeout: self.config.session_timeout,
            signal: tx,
        };
        self.heartbeat = Some(tokio::spawn(heartbeat.run()));
    }

    fn stop_heartbeat(&mut self) {
        if let Some(h) = self.heartbeat.take() {
            h.abort();
        }
    }
}

impl Drop for GroupConsumer {
    fn drop(&mut self) {
        self.stop_heartbeat();
        if self.closed || self.member_id.is_empty() {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let client = self.client.clone();
        let req = LeaveGroupRequest { group: self.config.group_id.clone(), member_id: self.member_id.clone() };
        // After any asynchronous commit, so that the leave does not fence it.
        let previous = self.commit_chain.take();
        runtime.spawn(async move {
            if let Some(previous) = previous {
                let _ = previous.await;
            }
            if let Err(e) = client.request(&req).await {
                tracing::debug!(group = %req.group, member = %req.member_id, error = %e, "leave on drop failed");
            }
        });
    }
}

fn commit_request(
    group: &str,
    member_id: &str,
    generation: u32,
    offsets: &[(TopicPartition, u64)],
) -> OffsetCommitRequest {
    OffsetCommitRequest {
        group: group.to_string(),
        member_id: member_id.to_string(),
        generation,
        offsets: offsets
            .iter()
            .map(|((topic, partition), offset)| CommittedOffset {
                topic: topic.clone(),
                partition: *partition,
                offset: *offset,
                metadata: String::new(),
            })
            .collect(),
    }
}

/// Sends a commit, retrying retriable failures a bounded number of times.
/// Resending is safe: it carries the same offsets, and no later commit is sent
/// before this one has finished.
async fn send_commit(client: &Client, req: &OffsetCommitRequest) -> Result<(), ClientError> {
    let mut backoff = MIN_BACKOFF;
    let mut attempt = 1;
    loop {
        match client.request(req).await {
            Ok(_) => return Ok(()),
            Err(e) if e.is_retriable() && attempt < COMMIT_ATTEMPTS => {
                tracing::debug!(group = %req.group, error = %e, ?backoff, "commit failed; retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
                attempt += 1;
            }
            Err(e) => return Err(e),
        }
    }
}

/// Sends `LeaveGroup`, retrying transient failures a bounded number of times
/// (leaving twice is harmless: the second answer is `UNKNOWN_MEMBER`, which
/// counts as success).
async fn leave(client: &Client, req: &LeaveGroupRequest) -> Result<(), ClientError> {
    let mut backoff = MIN_BACKOFF;
    let mut attempt = 1;
    loop {
        match client.request(req).await {
            Ok(_) => {
                tracing::debug!(group = %req.group, member = %req.member_id, "left the group");
                return Ok(());
            }
            Err(e) if e.code() == Some(ErrorCode::UnknownMember) => return Ok(()),
            Err(e) if is_transient(&e) && attempt < COMMIT_ATTEMPTS => {
                tracing::debug!(group = %req.group, error = %e, ?backoff, "leave failed; retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
                attempt += 1;
            }
            Err(e) => return Err(e),
        }
    }
}

/// The heartbeat loop of one generation.
struct Heartbeat {
    client: Client,
    group: String,
    member_id: String,
    generation: u32,
    /// How long the broker holds each heartbeat.
    wait: Duration,
    session_timeout: Duration,
    signal: watch::Sender<Option<Rejoin>>,
}

impl Heartbeat {
    fn raise(&self, kind: Rejoin) {
        self.signal.send_if_modified(|s| {
            let merged = Rejoin::merge(*s, kind);
            let changed = *s != Some(merged);
            *s = Some(merged);
            changed
        });
    }

    async fn run(self) {
        // A long poll plus time for the answer; a stuck request is abandoned
        // well within the session timeout.
        let limit = self.wait + (self.session_timeout / 2).max(Duration::from_secs(1));
        let max_backoff = MAX_BACKOFF.min(self.wait);
        let mut backoff = MIN_BACKOFF.min(max_backoff);
        let mut last_answer = Instant::now();
        let mut rebalancing = false;
        loop {
            let started = Instant::now();
            let req = HeartbeatRequest {
                group: self.group.clone(),
                member_id: self.member_id.clone(),
                generation: self.generation,
                max_wait_ms: if rebalancing { 0 } else { millis(self.wait) },
            };
            match self.client.request_with_timeout(&req, limit).await {
                Ok(_) => {
                    last_answer = Instant::now();
                    backoff = MIN_BACKOFF.min(max_backoff);
                    // A broker that answers early is not polled in a tight loop.
                    let floor = if rebalancing { self.wait } else { self.wait / 2 };
                    if let Some(rest) = floor.checked_sub(started.elapsed()) {
                        tokio::time::sleep(rest).await;
                    }
                }
                Err(e) => match e.code() {
                    Some(ErrorCode::RebalanceInProgress | ErrorCode::IllegalGeneration) => {
                        last_answer = Instant::now();
                        if !rebalancing {
                            tracing::debug!(group = %self.group, generation = self.generation, code = ?e.code(), "rejoin needed");
                            rebalancing = true;
                        }
                        self.raise(Rejoin::Member);
                        // Keep the session alive until poll rejoins.
                        tokio::time::sleep(self.wait).await;
                    }
                    Some(ErrorCode::UnknownMember) => {
                        tracing::info!(group = %self.group, member = %self.member_id, "removed from the group");
                        self.raise(Rejoin::Fresh);
                        return;
                    }
                    _ => {
                        tracing::debug!(group = %self.group, error = %e, ?backoff, "heartbeat failed; retrying");
                        if last_answer.elapsed() >= self.session_timeout {
                            tracing::warn!(
                                group = %self.group,
                                member = %self.member_id,
                                "no heartbeat answer for the session timeout; rejoining"
                            );
                            self.raise(Rejoin::Member);
                        }
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(max_backoff);
                    }
                },
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tp(t: &str, p: u32) -> TopicPartition {
        (t.to_string(), p)
    }

    #[test]
    fn config_defaults_and_heartbeat_wait() {
        let c = GroupConfig::new("g");
        assert_eq!(c.group_id, "g");
        assert_eq!(c.client_id, format!("eddy-{}", std::process::id()));
        assert_eq!(c.strategy, AssignmentStrategy::Sticky);
        assert_eq!((c.session_timeout, c.rebalance_timeout), (Duration::from_secs(10), Duration::from_secs(30)));
        assert_eq!(c.effective_heartbeat_wait(), Duration::from_secs(10) / 3);
        assert_eq!((c.auto_commit, c.offset_reset), (Some(Duration::from_secs(5)), OffsetReset::Earliest));
        let c = GroupConfig::new("g").session_timeout(Duration::from_secs(3));
        assert_eq!(c.effective_heartbeat_wait(), Duration::from_secs(1));
        // A heartbeat wait near the session timeout is lowered; a tiny one raised.
        let mut c = GroupConfig::new("g");
        c.session_timeout = Duration::from_secs(3);
        assert_eq!(c.effective_heartbeat_wait(), Duration::from_secs(1));
        c.heartbeat_wait = Duration::ZERO;
        assert_eq!(c.effective_heartbeat_wait(), MIN_HEARTBEAT_WAIT);
    }

    #[test]
    fn a_fresh_rejoin_is_never_downgraded() {
        assert_eq!(Rejoin::merge(None, Rejoin::Member), Rejoin::Member);
        assert_eq!(Rejoin::merge(Some(Rejoin::Member), Rejoin::Fresh), Rejoin::Fresh);
        assert_eq!(Rejoin::merge(Some(Rejoin::Fresh), Rejoin::Member), Rejoin::Fresh);
    }

    #[test]
    fn only_known_uncommitted_positions_are_committed() {
        let mut book = OffsetBook::default();
        book.assign([tp("a", 0), tp("a", 1), tp("b", 0)]);
        // No position known yet: nothing to commit.
        assert!(book.to_commit().is_empty());
        assert_eq!(book.without_position(), vec![tp("a", 0), tp("a", 1), tp("b", 0)]);
        // a/0 starts at its committed offset, a/1 and b/0 at a reset position.
        book.set_committed("a", 0, 10);
        book.set_position("a", 0, 10);
        book.set_position("a", 1, 0);
        book.set_position("b", 0, 7);
        // The reset positions are committed (so a later reset to latest cannot skip records).
        assert_eq!(book.to_commit(), vec![(tp("a", 1), 0), (tp("b", 0), 7)]);
        // Records handed out move positions; those are committed next.
        book.set_position("a", 0, 15);
        assert_eq!(book.to_commit(), vec![(tp("a", 0), 15), (tp("a", 1), 0), (tp("b", 0), 7)]);
        assert_eq!(book.position("a", 0), Some(15));
        // Not owned: ignored.
        book.set_position("c", 0, 1);
        assert!(!book.owns("c", 0) && book.position("c", 0).is_none());
    }

    #[test]
    fn commits_in_flight_are_not_resent_and_failures_are() {
        let mut book = OffsetBook::default();
        book.assign([tp("a", 0), tp("a", 1)]);
        book.set_position("a", 0, 5);
        book.set_position("a", 1, 9);
        let first = book.to_commit();
        book.commit_sent(&first);
        assert!(book.to_commit().is_empty(), "in flight");
        // More records on a/0 while the first commit travels.
        book.set_position("a", 0, 8);
        assert_eq!(book.to_commit(), vec![(tp("a", 0), 8)]);
        let second = book.to_commit();
        book.commit_sent(&second);
        // The first commit is acknowledged: a/1 done, a/0 still has 8 in flight.
        book.commit_finished(&first, true);
        assert!(book.to_commit().is_empty());
        assert_eq!(book.parts[&tp("a", 0)], PartState { position: Some(8), committed: Some(5), in_flight: Some(8) });
        // The second fails: a/0 is due again, a/1 stays committed.
        book.commit_finished(&second, false);
        assert_eq!(book.to_commit(), vec![(tp("a", 0), 8)]);
        book.commit_finished(&[(tp("a", 0), 8)], true);
        assert!(book.to_commit().is_empty());
        // A seek back is committed like any other position.
        book.set_position("a", 1, 3);
        assert_eq!(book.to_commit(), vec![(tp("a", 1), 3)]);
    }

    #[test]
    fn a_new_generation_starts_from_nothing() {
        let mut book = OffsetBook::default();
        book.assign([tp("a", 0)]);
        book.set_position("a", 0, 5);
        book.set_committed("a", 0, 5);
        book.assign([tp("a", 0), tp("a", 1)]);
        assert_eq!(book.parts[&tp("a", 0)], PartState::default());
        assert_eq!(book.partitions(), vec![tp("a", 0), tp("a", 1)]);
        book.clear();
        assert!(book.partitions().is_empty());
    }

    #[test]
    fn commit_requests_carry_member_and_generation() {
        let req = commit_request("g", "m-1", 4, &[(tp("a", 2), 11)]);
        assert_eq!((req.group.as_str(), req.member_id.as_str(), req.generation), ("g", "m-1", 4));
        assert_eq!(
            req.offsets,
            vec![CommittedOffset { topic: "a".into(), partition: 2, offset: 11, metadata: String::new() }]
        );
        assert!(is_fencing(Some(ErrorCode::IllegalGeneration)));
        assert!(!is_fencing(Some(ErrorCode::Timeout)) && !is_fencing(None));
    }
}

/// The whole member life cycle against the in-process test broker's group
/// coordinator, over real QUIC.
#[cfg(test)]
mod broker_tests {
    use std::collections::BTreeMap;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Arc, Mutex};

    use super::*;
    use crate::test_broker::TestBroker;
    use crate::{Admin, NewTopic, Producer, ProducerConfig, ProducerRecord};

    type Seen = Arc<Mutex<Vec<(u32, u64)>>>;

    fn config(group: &str) -> GroupConfig {
        GroupConfig::new(group)
            .session_timeout(Duration::from_millis(1500))
            .rebalance_timeout(Duration::from_secs(3))
            .auto_commit(Some(Duration::from_millis(100)))
    }

    async fn setup(partitions: u32) -> (TestBroker, Client, Producer) {
        let b = TestBroker::start().await;
        let client = Client::connect(b.config()).await.unwrap();
        Admin::new(client.clone()).create_topic(NewTopic::new("t", partitions)).await.unwrap();
        let producer = Producer::new(client.clone(), ProducerConfig::default()).await.unwrap();
        (b, client, producer)
    }

    /// Sends `count` records with values `from..from + count` to partitions in turn.
    async fn produce(producer: &Producer, partitions: u32, from: u64, count: u64) {
        for i in from..from + count {
            let record = ProducerRecord::new("t", format!("{i}")).partition((i % u64::from(partitions)) as u32);
            producer.send(record).await.unwrap();
        }
        producer.flush().await.unwrap();
    }

    /// Polls in a task until `stop`, recording what it got; returns the consumer.
    fn run_member(mut member: GroupConsumer, seen: Seen, stop: Arc<AtomicBool>) -> JoinHandle<GroupConsumer> {
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                match member.poll(Duration::from_millis(50)).await {
                    Ok(records) => seen.lock().unwrap().extend(records.iter().map(|r| (r.partition, r.offset))),
                    Err(e) => tracing::warn!(error = %e, "poll failed"),
                }
            }
            member
        })
    }

    async fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while !done() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    #[derive(Default)]
    struct Recorder(Arc<Mutex<Vec<String>>>);

    impl RebalanceListener for Recorder {
        fn on_partitions_revoked(&mut self, partitions: &[(String, u32)]) {
            self.0.lock().unwrap().push(format!("revoked {partitions:?}"));
        }
        fn on_partitions_assigned(&mut self, partitions: &[(String, u32)]) {
            self.0.lock().unwrap().push(format!("assigned {partitions:?}"));
        }
    }

    #[tokio::test]
    async fn two_members_split_the_partitions_and_see_each_record_once() {
        let (b, client, producer) = setup(4).await;
        produce(&producer, 4, 0, 100).await;
        let stop = Arc::new(AtomicBool::new(false));
        let (seen_a, seen_b): (Seen, Seen) = Default::default();
        let a = GroupConsumer::subscribe(client.clone(), config("g"), &["t".into()]).await.unwrap();
        assert_eq!(a.assignment().len(), 4);
        assert_eq!(a.generation(), 1);
        let a = run_member(a, seen_a.clone(), stop.clone());
        wait_for("a to read", || !seen_a.lock().unwrap().is_empty()).await;
        // b's join is held until a (polling in its task) has rejoined.
        let b_member = GroupConsumer::subscribe(client.clone(), config("g"), &["t".into()]).await.unwrap();
        assert_eq!(b_member.assignment().len(), 2);
        let b_task = run_member(b_member, seen_b.clone(), stop.clone());
        produce(&producer, 4, 100, 100).await;
        wait_for("every record", || seen_a.lock().unwrap().len() + seen_b.lock().unwrap().len() >= 200).await;
        let owners = b.assignments("g");
        assert_eq!(owners.len(), 2);
        assert_eq!(owners.values().map(|s| s.len()).sum::<usize>(), 4);
        stop.store(true, Ordering::Relaxed);
        let (a, b_member) = (a.await.unwrap(), b_task.await.unwrap());
        assert!(a.assignment().iter().all(|tp| !b_member.assignment().contains(tp)));
        a.close().await.unwrap();
        b_member.close().await.unwrap();
        let mut all: Vec<(u32, u64)> = seen_a.lock().unwrap().clone();
        all.extend(seen_b.lock().unwrap().iter().copied());
        all.sort_unstable();
        let expected: Vec<(u32, u64)> = (0..4).flat_map(|p| (0..50).map(move |o| (p, o))).collect();
        assert_eq!(all, expected, "every record exactly once");
        for p in 0..4 {
            assert_eq!(b.committed("g", "t", p), Some(50), "partition {p} committed to its end");
        }
        producer.close().await.unwrap();
    }

    #[tokio::test]
    async fn auto_commit_only_commits_what_earlier_polls_returned() {
        let (b, client, producer) = setup(1).await;
        produce(&producer, 1, 0, 30).await;
        let mut m = GroupConsumer::subscribe(client, config("g"), &["t".into()]).await.unwrap();
        let mut handed_out = 0; // position at the end of the latest poll
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let before = handed_out;
            let records = m.poll(Duration::from_millis(150)).await.unwrap();
            if let Some(last) = records.last() {
                handed_out = last.offset + 1;
            }
            // Whatever is committed was returned by a poll before the latest one.
            let committed = b.committed("g", "t", 0).unwrap_or(0);
            assert!(committed <= before, "committed {committed} includes records of the latest poll (before {before})");
            if committed == 30 {
                break;
            }
            assert!(Instant::now() < deadline, "never committed everything: {committed}");
        }
        assert_eq!(m.position("t", 0), Some(30));
        m.close().await.unwrap();
        producer.close().await.unwrap();
    }

    #[tokio::test]
    async fn manual_commit_close_and_resume_from_the_committed_offset() {
        let (b, client, producer) = setup(2).await;
        produce(&producer, 2, 0, 20).await;
        let recorder = Recorder::default();
        let events = recorder.0.clone();
        let mut m =
            GroupConsumer::subscribe(client.clone(), config("g").auto_commit(None), &["t".into()]).await.unwrap();
        m.set_listener(Box::new(recorder));
        let mut got = 0;
        while got < 20 {
            got += m.poll(Duration::from_secs(5)).await.unwrap().len();
        }
        // Manual: nothing is committed until commit().
        assert_eq!(b.committed("g", "t", 0), None);
        m.commit_offsets(&[("t".into(), 0, 4)]).await.unwrap();
        assert_eq!(b.committed("g", "t", 0), Some(4));
        let err = m.commit_offsets(&[("t".into(), 5, 1)]).await.unwrap_err();
        assert_eq!(err.code(), Some(ErrorCode::UnknownPartition));
        m.commit().await.unwrap();
        assert_eq!((b.committed("g", "t", 0), b.committed("g", "t", 1)), (Some(10), Some(10)));
        // Seek back on an owned partition re-reads; an unowned one is refused.
        m.seek("t", 1, 7).await.unwrap();
        let again = m.poll(Duration::from_secs(5)).await.unwrap();
        assert_eq!(again.first().map(|r| (r.partition, r.offset)), Some((1, 7)));
        let err = m.seek("t", 9, 0).await.unwrap_err();
        assert_eq!(err.code(), Some(ErrorCode::NotPartitionOwner));
        m.commit_async();
        m.close().await.unwrap();
        assert_eq!(b.committed("g", "t", 1), Some(10));
        assert_eq!(events.lock().unwrap().as_slice(), [format!("revoked {:?}", [("t", 0), ("t", 1)])]);

        // A new member resumes from the commits: only records produced since.
        let mut n = GroupConsumer::subscribe(client, config("g"), &["t".into()]).await.unwrap();
        assert!(n.poll(Duration::from_millis(200)).await.unwrap().is_empty());
        produce(&producer, 2, 20, 2).await;
        let mut fresh = Vec::new();
        while fresh.len() < 2 {
            fresh.extend(n.poll(Duration::from_secs(5)).await.unwrap().into_iter().map(|r| (r.partition, r.offset)));
        }
        fresh.sort_unstable();
        assert_eq!(fresh, vec![(0, 10), (1, 10)]);
        n.close().await.unwrap();
        producer.close().await.unwrap();
    }

    #[tokio::test]
    async fn reset_policies_apply_only_without_a_commit() {
        let (_b, client, producer) = setup(1).await;
        produce(&producer, 1, 0, 5).await;
        let mut latest =
            GroupConsumer::subscribe(client.clone(), config("l").offset_reset(OffsetReset::Latest), &["t".into()])
                .await
                .unwrap();
        assert_eq!(latest.position("t", 0), Some(5));
        let mut strict =
            GroupConsumer::subscribe(client.clone(), config("s").offset_reset(OffsetReset::None), &["t".into()])
                .await
                .unwrap();
        match strict.poll(Duration::from_millis(100)).await {
            Err(ClientError::NoCommittedOffset { topic, partition }) => {
                assert_eq!((topic.as_str(), partition), ("t", 0))
            }
            other => panic!("expected NoCommittedOffset, got {other:?}"),
        }
        assert!(strict.poll(Duration::from_millis(100)).await.unwrap().is_empty());
        strict.seek("t", 0, 3).await.unwrap();
        let records = strict.poll(Duration::from_secs(5)).await.unwrap();
        assert_eq!(records.first().map(|r| r.offset), Some(3));
        produce(&producer, 1, 5, 1).await;
        let records = latest.poll(Duration::from_secs(5)).await.unwrap();
        assert_eq!(records.iter().map(|r| r.offset).collect::<Vec<_>>(), vec![5]);
        latest.close().await.unwrap();
        strict.close().await.unwrap();
        producer.close().await.unwrap();
    }

    #[tokio::test]
    async fn a_removed_member_rejoins_as_a_new_member() {
        let (b, client, producer) = setup(2).await;
        produce(&producer, 2, 0, 10).await;
        let mut m = GroupConsumer::subscribe(client.clone(), config("g"), &["t".into()]).await.unwrap();
        let first_id = m.member_id().to_string();
        // The coordinator forgets the member (as after a session timeout).
        let leave = LeaveGroupRequest { group: "g".into(), member_id: first_id.clone() };
        client.request(&leave).await.unwrap();
        // Its next commit is refused as from an unknown member...
        let err = m.commit_offsets(&[("t".into(), 0, 1)]).await.unwrap_err();
        assert_eq!(err.code(), Some(ErrorCode::UnknownMember));
        // ...and poll rejoins with a new id and reads on.
        let mut seen = 0;
        let deadline = Instant::now() + Duration::from_secs(20);
        while m.member_id() == first_id || seen < 10 {
            seen += m.poll(Duration::from_millis(100)).await.unwrap().len();
            assert!(Instant::now() < deadline, "did not rejoin");
        }
        assert_eq!(m.assignment().len(), 2);
        assert_eq!(b.assignments("g").keys().collect::<Vec<_>>(), vec![m.member_id()]);
        m.close().await.unwrap();
        producer.close().await.unwrap();
    }

    #[tokio::test]
    async fn a_member_that_stops_polling_is_fenced_and_recovers() {
        let (b, client, producer) = setup(2).await;
        produce(&producer, 2, 0, 10).await;
        let slow_config = config("g").auto_commit(None).rebalance_timeout(Duration::from_millis(500));
        let mut slow = GroupConsumer::subscribe(client.clone(), slow_config, &["t".into()]).await.unwrap();
        let mut got = 0;
        while got < 10 {
            got += slow.poll(Duration::from_secs(5)).await.unwrap().len();
        }
        // A second member joins while `slow` does not poll: the rebalance
        // times out and `slow` is removed (its heartbeats alone do not count as a rejoin).
        let stop = Arc::new(AtomicBool::new(false));
        let other =
            GroupConsumer::subscribe(client.clone(), config("g").auto_commit(None), &["t".into()]).await.unwrap();
        assert_eq!(other.assignment().len(), 2);
        let other = run_member(other, Seen::default(), stop.clone());
        let err = slow.commit().await.unwrap_err();
        assert!(is_fencing(err.code()), "{err}");
        assert_eq!(b.committed("g", "t", 0), None, "the fenced commit was not stored");
        // The next poll rejoins; the partitions are shared again.
        let deadline = Instant::now() + Duration::from_secs(20);
        while slow.assignment().len() != 1 || b.assignments("g").len() != 2 {
            slow.poll(Duration::from_millis(100)).await.unwrap();
            assert!(Instant::now() < deadline, "did not rejoin: {:?}", b.assignments("g"));
        }
        stop.store(true, Ordering::Relaxed);
        other.await.unwrap().close().await.unwrap();
        slow.close().await.unwrap();
        producer.close().await.unwrap();
    }

    #[tokio::test]
    async fn a_dropped_member_leaves_and_its_partitions_move() {
        let (b, client, _producer) = setup(2).await;
        let stop = Arc::new(AtomicBool::new(false));
        let a = GroupConsumer::subscribe(client.clone(), config("g"), &["t".into()]).await.unwrap();
        let a = run_member(a, Seen::default(), stop.clone());
        let c = GroupConsumer::subscribe(client.clone(), config("g"), &["t".into()]).await.unwrap();
        let c_id = c.member_id().to_string();
        drop(c);
        wait_for("the dropped member to leave", || {
            let owners = b.assignments("g");
            owners.len() == 1 && !owners.contains_key(&c_id)
        })
        .await;
        stop.store(true, Ordering::Relaxed);
        let a = a.await.unwrap();
        assert_eq!(a.assignment().len(), 2);
        a.close().await.unwrap();
        let owners: BTreeMap<_, _> = b.assignments("g");
        assert!(owners.is_empty());
    }
}
