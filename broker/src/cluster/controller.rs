//! The controller's duties, done only by the broker that leads the metadata
//! quorum: tracking which brokers are alive (from their heartbeats), and
//! electing leaders / shrinking ISRs when brokers die or return (the
//! decisions are [`super::plan`]'s).
//!
//! A broker counts as alive while its heartbeats arrive within the session
//! timeout and it has caught up with the metadata log (applied at least as
//! much as the controller had applied when the broker (re)appeared). When a
//! broker becomes controller it knows nothing of the others' heartbeats: it
//! gives every broker half a session timeout to show up, so that a broker that
//! died with the old controller is noticed quickly.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tracing::{info, warn};

use super::{plan, Cluster, ClusterConfig};
use crate::store::MetaCommand;

/// How often the controller checks the brokers and partitions.
pub const CONTROLLER_TICK: Duration = Duration::from_millis(100);

#[derive(Debug, Clone, Copy)]
struct Seen {
    at: Instant,
    /// The applied index the broker must reach to count as caught up.
    target: u64,
    caught_up: bool,
    /// The index it had applied at its last heartbeat.
    applied: u64,
}

/// Heartbeats as the controller saw them.
#[derive(Debug, Default)]
pub struct Liveness {
    seen: BTreeMap<u32, Seen>,
}

impl Liveness {
    fn is_fresh(seen: &Seen, now: Instant, config: &ClusterConfig) -> bool {
        now.saturating_duration_since(seen.at) < config.session_timeout
    }

    /// Records a heartbeat of `broker`, which has applied `applied` while
    /// the controller has applied `controller_applied`.
    pub fn heartbeat(
        &mut self,
        broker: u32,
        applied: u64,
        controller_applied: u64,
        now: Instant,
        config: &ClusterConfig,
    ) {
        let entry = self.seen.get(&broker).copied().filter(|s| Self::is_fresh(s, now, config));
        let target = match entry {
            Some(s) => s.target,
            None => controller_applied,
        };
        let caught_up = entry.is_some_and(|s| s.caught_up) || applied >= target;
        self.seen.insert(broker, Seen { at: now, target, caught_up, applied });
    }

    /// Gives every configured broker a grace of half a session timeout (a
    /// new controller's starting view).
    pub fn reset(&mut self, now: Instant, config: &ClusterConfig) {
        let at = now.checked_sub(config.session_timeout / 2).unwrap_or(now);
        self.seen =
            config.brokers.keys().map(|id| (*id, Seen { at, target: 0, caught_up: true, applied: 0 })).collect();
    }

    /// Live brokers other than `me` that had not applied `index` at their last heartbeat.
    pub fn behind(&self, index: u64, now: Instant, config: &ClusterConfig, me: u32) -> Vec<u32> {
        self.seen
            .iter()
            .filter(|(id, s)| **id != me && s.caught_up && Self::is_fresh(s, now, config) && s.applied < index)
            .map(|(id, _)| *id)
            .collect()
    }

    /// Brokers alive and caught up at `now`.
    pub fn live(&self, now: Instant, config: &ClusterConfig) -> BTreeSet<u32> {
        self.seen.iter().filter(|(_, s)| s.caught_up && Self::is_fresh(s, now, config)).map(|(id, _)| *id).collect()
    }
}

/// The controller loop: runs for the broker's whole life, acting while the
/// broker is the controller.
pub async fn run(cluster: Arc<Cluster>, mut shutdown: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(CONTROLLER_TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut was_controller = false;
    let mut last_preferred = Instant::now();
    let mut last_live = BTreeSet::new();
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.wait_for(|s| *s) => return,
        }
        let now = Instant::now();
        let controller = cluster.is_controller();
        if controller && !was_controller {
            info!(broker = cluster.broker_id(), "this broker is now the controller");
            cluster.liveness.lock().expect("liveness lock poisoned").reset(now, &cluster.config);
        }
        was_controller = controller;
        if !controller || !cluster.is_ready() {
            continue;
        }
        let live = cluster.live_brokers();
        if live != last_live {
            info!(live = ?live, "live brokers changed");
            last_live = live.clone();
        }
        let interval = cluster.config.preferred_leader_interval;
        let preferred = !interval.is_zero() && now.duration_since(last_preferred) >= interval;
        if preferred {
            last_preferred = now;
        }
        let topics = cluster.topics();
        let changes = plan::plan_changes(topics.iter(), &live, preferred);
        if changes.is_empty() {
            continue;
        }
        for c in &changes {
            info!(
                topic = %c.topic,
                partition = c.partition,
                leader = c.assignment.leader,
                epoch = c.assignment.leader_epoch,
                isr = ?c.assignment.isr,
                "partition change"
            );
        }
        if let Err(e) = cluster.propose(MetaCommand::AlterPartitions { changes }).await {
            warn!(code = %e.code, error = %e.message, "partition changes not applied; will retry");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> ClusterConfig {
        let identity = crate::tls::TlsIdentity {
            chain: Vec::new(),
            key: rustls_pki_types::PrivateKeyDer::Pkcs8(Vec::<u8>::new().into()),
            ca_path: "/tmp/ca.pem".into(),
            cert_path: "/tmp/broker.pem".into(),
            key_path: "/tmp/broker.key".into(),
        };
        let mut c = ClusterConfig::single(1, "a:1".into(), "/tmp".into(), &identity);
        c.brokers.insert(2, "b:1".into());
        c.brokers.insert(3, "c:1".into());
        c
    }

    #[test]
    fn brokers_are_live_while_heartbeating_and_caught_up() {
        let c = config();
        let t0 = Instant::now();
        let mut l = Liveness::default();
        l.heartbeat(2, 10, 50, t0, &c);
        assert!(l.live(t0, &c).is_empty(), "not caught up yet");
        l.heartbeat(2, 50, 60, t0, &c);
        assert_eq!(l.live(t0, &c), BTreeSet::from([2]), "caught up with the target set when it appeared");
        let later = t0 + c.session_timeout + Duration::from_millis(1);
        assert!(l.live(later, &c).is_empty(), "silent past the session timeout");
        l.heartbeat(2, 55, 70, later, &c);
        assert!(l.live(later, &c).is_empty(), "a returning broker must catch up again");
    }

    #[test]
    fn a_new_controller_gives_every_broker_half_a_session() {
        let c = config();
        let t0 = Instant::now() + Duration::from_secs(10);
        let mut l = Liveness::default();
        l.reset(t0, &c);
        assert_eq!(l.live(t0, &c), BTreeSet::from([1, 2, 3]));
        let half = t0 + c.session_timeout / 2 + Duration::from_millis(1);
        assert!(l.live(half, &c).is_empty());
        l.heartbeat(3, 0, 0, half, &c);
        assert_eq!(l.live(half, &c), BTreeSet::from([3]));
    }
}
