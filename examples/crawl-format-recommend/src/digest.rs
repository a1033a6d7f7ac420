//! The per-user digest: collects topic `recommendations` (a plain consumer
//! from the beginning), drops repeats of a (user, article) pair (the
//! processors deliver at least once, so a crash can repeat an output), and
//! renders each user's recommendations by descending score.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::fmt::Write as _;
use std::time::Duration;

use eddy_sdk::Client;
use tracing::warn;

use crate::records::{Recommendation, UserProfile};
use crate::topic_reader::{read_topic, ReadError, ReadUntil};

/// Why the digest could not be collected.
#[derive(Debug, thiserror::Error)]
pub enum DigestError {
    /// The topic could not be read.
    #[error(transparent)]
    Read(#[from] ReadError),
}

/// Distinct recommendations grouped by user, best first.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Digest {
    by_user: BTreeMap<String, Vec<Recommendation>>,
    duplicates: u64,
    unreadable: u64,
}

impl Digest {
    /// Groups `recommendations` by user, keeping the first of each (user,
    /// article) pair, and sorts each user's list by descending score (then
    /// article id).
    pub fn from_recommendations(recommendations: impl IntoIterator<Item = Recommendation>) -> Digest {
        let mut digest = Digest::default();
        let mut seen = HashSet::new();
        for r in recommendations {
            if !seen.insert((r.user.clone(), r.article.clone())) {
                digest.duplicates += 1;
                continue;
            }
            digest.by_user.entry(r.user.clone()).or_default().push(r);
        }
        for list in digest.by_user.values_mut() {
            list.sort_by(|a, b| b.score.total_cmp(&a.score).then_with(|| a.article.cmp(&b.article)));
        }
        digest
    }

    /// Distinct recommendations in all.
    pub fn len(&self) -> usize {
        self.by_user.values().map(Vec::len).sum()
    }

    /// Whether there is no recommendation at all.
    pub fn is_empty(&self) -> bool {
        self.by_user.is_empty()
    }

    /// Repeated (user, article) pairs that were dropped.
    pub fn duplicates(&self) -> u64 {
        self.duplicates
    }

    /// Records that were not recommendation JSON (skipped).
    pub fn unreadable(&self) -> u64 {
        self.unreadable
    }

    /// One user's recommendations, best first (empty if none).
    pub fn for_user(&self, user: &str) -> &[Recommendation] {
        self.by_user.get(user).map_or(&[], Vec::as_slice)
    }

    /// Every user with at least one recommendation, by id, with their lists.
    pub fn users(&self) -> impl Iterator<Item = (&str, &[Recommendation])> {
        self.by_user.iter().map(|(user, list)| (user.as_str(), list.as_slice()))
    }

    /// The distinct (user, article id) pairs, for comparing with an expected set.
    pub fn pairs(&self) -> BTreeSet<(String, String)> {
        self.by_user.values().flatten().map(|r| (r.user.clone(), r.article.clone())).collect()
    }

    /// A readable digest: for each profile (in the given order, then any
    /// other user that has recommendations) the name and id, then up to
    /// `max_per_user` recommendations (all if `None`) with score, title, link
    /// and the keywords that matched.
    pub fn render(&self, profiles: &[UserProfile], max_per_user: Option<usize>) -> String {
        let mut out = String::new();
        let known: HashSet<&str> = profiles.iter().map(|p| p.user.as_str()).collect();
        let users = profiles
            .iter()
            .map(|p| (p.user.as_str(), p.name.as_str()))
            .chain(self.by_user.keys().filter(|u| !known.contains(u.as_str())).map(|u| (u.as_str(), u.as_str())));
        for (user, name) in users {
            let list = self.for_user(user);
            let shown = max_per_user.map_or(list.len(), |max| max.min(list.len()));
            let count = match list.len() {
                0 => "no recommendations".to_string(),
                1 => "1 recommendation".to_string(),
                n => format!("{n} recommendations"),
            };
            let _ = writeln!(out, "{name} ({user}): {count}");
            for (i, r) in list[..shown].iter().enumerate() {
                let _ = writeln!(out, "  {:>2}. [{:.2}] {}", i + 1, r.score, one_line(&r.title));
                if !r.link.is_empty() {
                    let _ = writeln!(out, "        {}", r.link);
                }
                let _ = writeln!(out, "        because: {}", r.reasons.join(", "));
            }
            if shown < list.len() {
                let _ = writeln!(out, "      ... and {} more", list.len() - shown);
            }
        }
        out
    }
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Reads `topic` from the beginning (until its current log ends, or until a
/// number of records has arrived; see [`ReadUntil`]) into a [`Digest`].
/// Records that are not recommendation JSON are counted and skipped.
pub async fn read_digest(
    client: &Client,
    topic: &str,
    until: ReadUntil,
    idle: Duration,
) -> Result<Digest, DigestError> {
    let mut recommendations = Vec::new();
    let mut unreadable = 0u64;
    read_topic(client, topic, until, idle, |record| match serde_json::from_slice::<Recommendation>(&record.value) {
        Ok(r) => recommendations.push(r),
        Err(_) => unreadable += 1,
    })
    .await?;
    if unreadable > 0 {
        warn!(topic, unreadable, "records are not recommendation JSON; skipped");
    }
    let mut digest = Digest::from_recommendations(recommendations);
    digest.unreadable = unreadable;
    Ok(digest)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(user: &str, article: &str, score: f64) -> Recommendation {
        Recommendation {
            user: user.into(),
            article: article.into(),
            link: format!("https://example.org/{article}"),
            title: format!("Title\n  of {article}"),
            score,
            reasons: vec!["rust".into(), "compiler".into()],
        }
    }

    #[test]
    fn repeats_are_dropped_and_lists_sorted_by_score() {
        let digest = Digest::from_recommendations([
            rec("u1", "a", 1.0),
            rec("u1", "b", 3.0),
            rec("u2", "a", 2.0),
            rec("u1", "a", 1.0),
            rec("u1", "c", 3.0),
        ]);
        assert_eq!((digest.len(), digest.duplicates()), (4, 1));
        let order: Vec<&str> = digest.for_user("u1").iter().map(|r| r.article.as_str()).collect();
        assert_eq!(order, ["b", "c", "a"]);
        assert_eq!(digest.pairs().len(), 4);
        assert!(digest.for_user("nobody").is_empty());
    }

    #[test]
    fn render_names_users_and_limits_lists() {
        let digest = Digest::from_recommendations([rec("u1", "a", 1.0), rec("u1", "b", 2.5), rec("ghost", "a", 1.0)]);
        let profiles = vec![
            UserProfile { user: "u1".into(), name: "Ada".into(), interests: Default::default() },
            UserProfile { user: "u3".into(), name: "Zed".into(), interests: Default::default() },
        ];
        let text = digest.render(&profiles, Some(1));
        let expected = "Ada (u1): 2 recommendations\n   1. [2.50] Title of b\n        https://example.org/b\n        \
                        because: rust, compiler\n      ... and 1 more\nZed (u3): no recommendations\n\
                        ghost (ghost): 1 recommendation\n   1. [1.00] Title of a\n        https://example.org/a\n        \
                        because: rust, compiler\n";
        assert_eq!(text, expected);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn reads_the_topic_and_drops_repeats() {
        use eddy_sdk::{Producer, ProducerConfig, ProducerRecord};

        let broker = crate::test_broker::TestBroker::start().await;
        broker.create_topic("recommendations", 2).await;
        let producer = Producer::new(broker.client.clone(), ProducerConfig::default()).await.unwrap();
        let records = [rec("u1", "a", 1.0), rec("u2", "a", 2.0), rec("u1", "b", 3.0), rec("u1", "a", 1.0)];
        for r in &records {
            let value = serde_json::to_vec(r).unwrap();
            producer.send_and_wait(ProducerRecord::new("recommendations", value).key(r.user.clone())).await.unwrap();
        }
        producer.send_and_wait(ProducerRecord::new("recommendations", "not json").key("u1")).await.unwrap();

        let idle = Duration::from_secs(10);
        let digest = read_digest(&broker.client, "recommendations", ReadUntil::LogEnd, idle).await.unwrap();
        assert_eq!((digest.len(), digest.duplicates(), digest.unreadable()), (3, 1, 1));
        assert_eq!(digest.for_user("u1").iter().map(|r| r.article.as_str()).collect::<Vec<_>>(), ["b", "a"]);

        let first_two = read_digest(&broker.client, "recommendations", ReadUntil::Records(2), idle).await.unwrap();
        assert_eq!(first_two.len(), 2);
        let too_many =
            read_digest(&broker.client, "recommendations", ReadUntil::Records(9), Duration::from_millis(300))
                .await
                .unwrap_err();
        assert!(matches!(too_many, DigestError::Read(ReadError::Stalled { read: 5, wanted: 9, .. })), "{too_many}");
        producer.close().await.unwrap();
        broker.stop().await;
    }
}
