//! The controller's decisions, as pure functions of the metadata and the set
//! of live brokers (no I/O, no clock): where a new topic's replicas go, and
//! which leader and ISR changes a partition needs when brokers die or return.
//!
//! Rules (Kafka's, without unclean election):
//! * a new leader is always taken from the ISR, in replica order (so the
//!   preferred replica wins when it can); every leader change bumps the
//!   leader epoch;
//! * a partition whose ISR has no live broker gets no leader (0) until an
//!   ISR member returns: an out-of-sync replica is never made leader, so an
//!   acknowledged record is never lost by an election;
//! * dead brokers leave the ISR (never the leader's own entry while it leads);
//! * every change bumps the assignment's version, and is applied only if the
//!   partition still has the epoch and version it was planned from.

use std::collections::BTreeSet;

use crate::store::{PartitionAssignment, PartitionChange, TopicConfig};

/// Replica lists for `partitions` new partitions numbered from `first`, with
/// `rf` replicas each among `brokers` (ids, any order), spreading leaders and
/// replicas evenly: partition p's replicas are `rf` consecutive brokers of
/// the sorted list starting at `(p + offset) mod n`. `offset` (e.g. from a
/// hash of the topic name) keeps different topics from all leading on the
/// same broker. Callers check `rf <= brokers.len()`.
pub fn assign_replicas(brokers: &[u32], first: u32, partitions: u32, rf: u16, offset: u32) -> Vec<PartitionAssignment> {
    let mut sorted = brokers.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    let n = sorted.len();
    debug_assert!(n > 0 && usize::from(rf) <= n);
    (first..first + partitions)
        .map(|p| {
            let start = (p as usize + offset as usize) % n;
            let replicas: Vec<u32> = (0..usize::from(rf)).map(|i| sorted[(start + i) % n]).collect();
            PartitionAssignment { leader: replicas[0], leader_epoch: 1, isr: replicas.clone(), replicas, version: 1 }
        })
        .collect()
}

/// A stable offset for [`assign_replicas`] from a topic name (FNV-1a).
pub fn name_offset(name: &str) -> u32 {
    name.bytes().fold(0x811c_9dc5u32, |h, b| (h ^ u32::from(b)).wrapping_mul(0x0100_0193))
}

/// The change one partition needs given the live brokers, if any.
/// `preferred` allows moving leadership back to the first replica when it is
/// live and in sync (done periodically, not on every pass).
pub fn plan_partition(
    current: &PartitionAssignment,
    live: &BTreeSet<u32>,
    preferred: bool,
) -> Option<PartitionAssignment> {
    let is_live = |b: &u32| live.contains(b);
    let live_isr: Vec<u32> = current.isr.iter().copied().filter(is_live).collect();
    let first_in_sync = || current.replicas.iter().copied().find(|r| live_isr.contains(r));
    let mut next = current.clone();
    if current.leader == 0 || !live.contains(&current.leader) {
        match first_in_sync() {
            Some(leader) => {
                next.leader = leader;
                next.isr = live_isr.clone();
            }
            None if current.leader == 0 => return None,
            // No live in-sync replica: no leader until one returns; the ISR
            // keeps its members so that one of them can be elected later.
            None => next.leader = 0,
        }
        next.leader_epoch += 1;
    } else if live_isr.len() != current.isr.len() {
        next.isr = live_isr;
    } else if preferred {
        let want = current.replicas.first().copied()?;
        if want == current.leader || !live.contains(&want) || !current.isr.contains(&want) {
            return None;
        }
        next.leader = want;
        next.leader_epoch += 1;
    } else {
        return None;
    }
    next.version += 1;
    debug_assert!(next.leader == 0 || next.isr.contains(&next.leader));
    Some(next)
}

/// Every change the topics need given the live brokers.
pub fn plan_changes<'a>(
    topics: impl IntoIterator<Item = &'a TopicConfig>,
    live: &BTreeSet<u32>,
    preferred: bool,
) -> Vec<PartitionChange> {
    let mut changes = Vec::new();
    for topic in topics {
        for (p, current) in topic.assignments.iter().enumerate() {
            if let Some(assignment) = plan_partition(current, live, preferred) {
                changes.push(PartitionChange {
                    topic: topic.name.clone(),
                    partition: p as u32,
                    expected_leader_epoch: current.leader_epoch,
                    expected_version: current.version,
                    assignment,
                });
            }
        }
    }
    changes
}

#[cfg(test)]
mod tests {
    use super::*;

    fn live(ids: &[u32]) -> BTreeSet<u32> {
        ids.iter().copied().collect()
    }

    fn part(replicas: &[u32], leader: u32, isr: &[u32]) -> PartitionAssignment {
        PartitionAssignment { replicas: replicas.to_vec(), leader, leader_epoch: 3, isr: isr.to_vec(), version: 7 }
    }

    #[test]
    fn replicas_and_leaders_spread_evenly() {
        let a = assign_replicas(&[3, 1, 2], 0, 6, 3, 0);
        let leaders: Vec<u32> = a.iter().map(|p| p.leader).collect();
        assert_eq!(leaders, vec![1, 2, 3, 1, 2, 3]);
        for p in &a {
            let set: BTreeSet<u32> = p.replicas.iter().copied().collect();
            assert_eq!(set.len(), 3, "three distinct replicas");
            assert_eq!(p.isr, p.replicas);
            assert_eq!(p.leader, p.replicas[0]);
        }
        let two = assign_replicas(&[1, 2, 3, 4, 5], 10, 5, 2, name_offset("orders"));
        let mut count = [0; 6];
        for p in &two {
            for r in &p.replicas {
                count[*r as usize] += 1;
            }
        }
        assert_eq!(&count[1..], &[2, 2, 2, 2, 2], "each broker holds two of ten replicas");
    }

    #[test]
    fn a_dead_leader_is_replaced_from_the_isr_with_a_new_epoch() {
        let next = plan_partition(&part(&[1, 2, 3], 1, &[1, 2, 3]), &live(&[2, 3]), false).unwrap();
        assert_eq!((next.leader, next.leader_epoch, next.version), (2, 4, 8));
        assert_eq!(next.isr, vec![2, 3]);
    }

    #[test]
    fn an_out_of_sync_replica_is_never_elected() {
        let next = plan_partition(&part(&[1, 2, 3], 1, &[1, 2]), &live(&[3]), false).unwrap();
        assert_eq!(next.leader, 0, "no unclean election");
        assert_eq!(next.isr, vec![1, 2], "the ISR is kept for a clean election later");
        assert_eq!(plan_partition(&next, &live(&[3]), false), None, "nothing to do until an ISR member returns");
        let back = plan_partition(&next, &live(&[2, 3]), false).unwrap();
        assert_eq!((back.leader, back.isr.clone()), (2, vec![2]));
        assert_eq!(back.leader_epoch, next.leader_epoch + 1);
    }

    #[test]
    fn dead_followers_leave_the_isr_without_an_epoch_bump() {
        let next = plan_partition(&part(&[1, 2, 3], 1, &[1, 2, 3]), &live(&[1, 3]), false).unwrap();
        assert_eq!((next.leader, next.leader_epoch, next.isr.clone()), (1, 3, vec![1, 3]));
        assert_eq!(plan_partition(&part(&[1, 2, 3], 1, &[1, 2, 3]), &live(&[1, 2, 3]), false), None);
    }

    #[test]
    fn leadership_returns_to_the_preferred_replica_only_when_asked_and_in_sync() {
        let p = part(&[1, 2, 3], 2, &[1, 2, 3]);
        assert_eq!(plan_partition(&p, &live(&[1, 2, 3]), false), None);
        let next = plan_partition(&p, &live(&[1, 2, 3]), true).unwrap();
        assert_eq!((next.leader, next.leader_epoch), (1, 4));
        assert_eq!(plan_partition(&part(&[1, 2, 3], 2, &[2, 3]), &live(&[1, 2, 3]), true), None);
    }
}
