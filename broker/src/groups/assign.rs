//! Partition assignment strategies. Pure functions: members (with their
//! subscriptions and previous partitions) and partition counts in, an
//! assignment out.
//!
//! Every strategy guarantees: no partition goes to two members; every
//! partition of a subscribed topic goes to some member subscribed to it while
//! there is one; a member is given only partitions of topics it subscribes to.

use std::collections::{BTreeMap, BTreeSet};

use eddy_protocol::messages::AssignmentStrategy;

/// A topic partition.
pub type TopicPartition = (String, u32);

/// What the assignor knows of a member.
#[derive(Debug, Clone)]
pub struct MemberInput {
    /// Topics the member subscribes to.
    pub topics: BTreeSet<String>,
    /// Partitions it owned in the previous generation (sticky uses them).
    pub previous: BTreeSet<TopicPartition>,
}

/// Member id -> partitions.
pub type Assignment = BTreeMap<String, BTreeSet<TopicPartition>>;

/// Assigns the partitions of every subscribed topic (`partitions` gives the
/// counts; topics missing from it are skipped) to `members`.
pub fn assign(
    strategy: AssignmentStrategy,
    members: &BTreeMap<String, MemberInput>,
    partitions: &BTreeMap<String, u32>,
) -> Assignment {
    let mut out: Assignment = members.keys().map(|m| (m.clone(), BTreeSet::new())).collect();
    match strategy {
        AssignmentStrategy::Range => range(members, partitions, &mut out),
        AssignmentStrategy::RoundRobin => round_robin(members, partitions, &mut out),
        AssignmentStrategy::Sticky => sticky(members, partitions, &mut out),
    }
    debug_assert!(is_valid(&out, members, partitions));
    out
}

fn subscribers<'a>(members: &'a BTreeMap<String, MemberInput>, topic: &str) -> Vec<&'a String> {
    members.iter().filter(|(_, m)| m.topics.contains(topic)).map(|(id, _)| id).collect()
}

fn all_partitions(members: &BTreeMap<String, MemberInput>, partitions: &BTreeMap<String, u32>) -> Vec<TopicPartition> {
    let topics: BTreeSet<&String> = members.values().flat_map(|m| m.topics.iter()).collect();
    topics
        .into_iter()
        .filter_map(|t| partitions.get(t).map(|n| (t, *n)))
        .flat_map(|(t, n)| (0..n).map(move |p| (t.clone(), p)))
        .collect()
}

fn range(members: &BTreeMap<String, MemberInput>, partitions: &BTreeMap<String, u32>, out: &mut Assignment) {
    for (topic, &count) in partitions {
        let subs = subscribers(members, topic);
        if subs.is_empty() {
            continue;
        }
        let n = subs.len() as u32;
        let (per, extra) = (count / n, count % n);
        let mut next = 0;
        for (i, m) in subs.iter().enumerate() {
            let take = per + u32::from((i as u32) < extra);
            for p in next..next + take {
                out.get_mut(*m).expect("member").insert((topic.clone(), p));
            }
            next += take;
        }
    }
}

fn round_robin(members: &BTreeMap<String, MemberInput>, partitions: &BTreeMap<String, u32>, out: &mut Assignment) {
    let ids: Vec<&String> = members.keys().collect();
    let mut turn = 0usize;
    for tp in all_partitions(members, partitions) {
        // Next member in turn that subscribes to the topic.
        for _ in 0..ids.len() {
            let m = ids[turn % ids.len()];
            turn += 1;
            if members[m].topics.contains(&tp.0) {
                out.get_mut(m).expect("member").insert(tp);
                break;
            }
        }
    }
}

/// Keeps previous ownership up to each member's fair share, then hands the
/// remaining partitions to the least-loaded eligible members.
fn sticky(members: &BTreeMap<String, MemberInput>, partitions: &BTreeMap<String, u32>, out: &mut Assignment) {
    let all = all_partitions(members, partitions);
    if members.is_empty() || all.is_empty() {
        return;
    }
    // Fair share over members that can take anything (all of them when
    // subscriptions are equal, the common case).
    let eligible = members.values().filter(|m| !m.topics.is_empty()).count().max(1);
    let (floor, extra) = (all.len() / eligible, all.len() % eligible);
    let mut ceiling_slots = extra;
    let valid: BTreeSet<&TopicPartition> = all.iter().collect();
    let mut taken: BTreeSet<TopicPartition> = BTreeSet::new();
    // 1. Keep previous partitions, up to floor (or floor + 1 while extra slots last).
    for (id, m) in members {
        let mut keep: Vec<&TopicPartition> = m
            .previous
            .iter()
            .filter(|tp| valid.contains(tp) && m.topics.contains(&tp.0) && !taken.contains(*tp))
            .collect();
        let mut quota = floor;
        if keep.len() > floor && ceiling_slots > 0 {
            quota += 1;
            ceiling_slots -= 1;
        }
        keep.truncate(quota);
        for tp in keep {
            taken.insert(tp.clone());
            out.get_mut(id).expect("member").insert(tp.clone());
        }
    }
    // 2. Everything else to the least-loaded member that subscribes to its topic.
    for tp in all {
        if taken.contains(&tp) {
            continue;
        }
        let best = out
            .iter()
            .filter(|(id, _)| members[*id].topics.contains(&tp.0))
            .min_by_key(|(id, owned)| (owned.len(), (*id).clone()))
            .map(|(id, _)| id.clone());
        if let Some(id) = best {
            out.get_mut(&id).expect("member").insert(tp.clone());
            taken.insert(tp);
        }
    }
}

/// Whether `assignment` satisfies the guarantees in the module docs.
pub fn is_valid(
    assignment: &Assignment,
    members: &BTreeMap<String, MemberInput>,
    partitions: &BTreeMap<String, u32>,
) -> bool {
    let mut seen = BTreeSet::new();
    for (id, owned) in assignment {
        for tp in owned {
            if !seen.insert(tp.clone()) || !members[id].topics.contains(&tp.0) {
                return false;
            }
        }
    }
    all_partitions(members, partitions).iter().all(|tp| seen.contains(tp))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn members(n: usize, topics: &[&str]) -> BTreeMap<String, MemberInput> {
        (0..n)
            .map(|i| {
                (
                    format!("m{i}"),
                    MemberInput { topics: topics.iter().map(|t| t.to_string()).collect(), previous: BTreeSet::new() },
                )
            })
            .collect()
    }

    fn counts(a: &Assignment) -> Vec<usize> {
        a.values().map(BTreeSet::len).collect()
    }

    #[test]
    fn every_strategy_covers_all_partitions_once_and_balances() {
        let parts: BTreeMap<String, u32> = [("a".to_string(), 4), ("b".to_string(), 3)].into();
        for strategy in [AssignmentStrategy::Sticky, AssignmentStrategy::Range, AssignmentStrategy::RoundRobin] {
            for n in 1..=8 {
                let ms = members(n, &["a", "b"]);
                let a = assign(strategy, &ms, &parts);
                assert!(is_valid(&a, &ms, &parts), "{strategy:?} {n}");
                let c = counts(&a);
                assert_eq!(c.iter().sum::<usize>(), 7);
                if strategy != AssignmentStrategy::Range {
                    assert!(c.iter().max().unwrap() - c.iter().min().unwrap() <= 1, "{strategy:?} {n}: {c:?}");
                }
            }
        }
    }

    #[test]
    fn members_beyond_the_partition_count_stay_idle() {
        let parts: BTreeMap<String, u32> = [("t".to_string(), 4)].into();
        let a = assign(AssignmentStrategy::Sticky, &members(5, &["t"]), &parts);
        let mut c = counts(&a);
        c.sort();
        assert_eq!(c, [0, 1, 1, 1, 1]);
    }

    #[test]
    fn range_gives_contiguous_ranges() {
        let parts: BTreeMap<String, u32> = [("t".to_string(), 5)].into();
        let a = assign(AssignmentStrategy::Range, &members(2, &["t"]), &parts);
        assert_eq!(a["m0"].iter().map(|tp| tp.1).collect::<Vec<_>>(), [0, 1, 2]);
        assert_eq!(a["m1"].iter().map(|tp| tp.1).collect::<Vec<_>>(), [3, 4]);
    }

    #[test]
    fn sticky_moves_as_few_partitions_as_possible() {
        let parts: BTreeMap<String, u32> = [("t".to_string(), 12)].into();
        let mut ms = members(3, &["t"]);
        let first = assign(AssignmentStrategy::Sticky, &ms, &parts);
        for (id, owned) in &first {
            ms.get_mut(id).unwrap().previous = owned.clone();
        }
        // A fourth member joins: only 3 partitions move (one from each).
        ms.insert("m3".into(), MemberInput { topics: ["t".to_string()].into(), previous: BTreeSet::new() });
        let second = assign(AssignmentStrategy::Sticky, &ms, &parts);
        let moved: usize = first.iter().map(|(id, owned)| owned.difference(&second[id]).count()).sum();
        assert_eq!(moved, 3);
        assert_eq!(counts(&second), [3, 3, 3, 3]);
        // m1 leaves: only its partitions move.
        for (id, owned) in &second {
            ms.get_mut(id).unwrap().previous = owned.clone();
        }
        ms.remove("m1");
        let third = assign(AssignmentStrategy::Sticky, &ms, &parts);
        for id in ["m0", "m2", "m3"] {
            assert!(second[id].is_subset(&third[id]), "{id} kept its partitions");
        }
    }

    #[test]
    fn members_get_only_topics_they_subscribe_to() {
        let parts: BTreeMap<String, u32> = [("a".to_string(), 2), ("b".to_string(), 2)].into();
        let mut ms = members(1, &["a"]);
        ms.extend(members(1, &["b"]).into_values().map(|m| ("x".to_string(), m)));
        for strategy in [AssignmentStrategy::Sticky, AssignmentStrategy::Range, AssignmentStrategy::RoundRobin] {
            let a = assign(strategy, &ms, &parts);
            assert!(is_valid(&a, &ms, &parts), "{strategy:?}");
            assert!(a["m0"].iter().all(|tp| tp.0 == "a"));
            assert!(a["x"].iter().all(|tp| tp.0 == "b"));
        }
    }
}
