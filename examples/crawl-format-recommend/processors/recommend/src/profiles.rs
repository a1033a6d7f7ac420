//! User interest profiles and the scoring of articles against them.
//!
//! Scoring (restated independently by the test's reference implementation in
//! tests/tests/e2e/pipeline_reference.rs):
//! * A profile's interests are keywords with weights; keys are trimmed and
//!   lowercased (keys that become equal have their weights added, empty keys
//!   are dropped), weights are numbers of magnitude at most [`MAX_WEIGHT`].
//! * An article's score for a user is the sum of the user's weights of the
//!   article's keywords (each distinct keyword once, added in the article's
//!   keyword order), rounded to 3 decimals ([`round3`]). Its reasons are those
//!   keywords, sorted.
//! * Only users with at least one matching keyword are candidates; those whose
//!   rounded score is at least the threshold match, best score first, ties by
//!   ascending user id, at most `max` of them.
//!
//! [`Profiles`] keeps an inverted index keyword -> users, so scoring an article
//! touches only the users with one of its keywords.

use std::collections::{BTreeMap, HashMap, HashSet};

use serde::{Deserialize, Serialize};

/// The largest weight magnitude accepted, so that no sum can overflow.
pub const MAX_WEIGHT: f64 = 1e9;

/// The longest user id accepted, in bytes (ids are part of state keys, which
/// the runtime limits to 4 KiB).
pub const MAX_ID_BYTES: usize = 1024;

/// A user's interest profile (a record of topic `users`), normalized.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Profile {
    pub user: String,
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub interests: BTreeMap<String, f64>,
}

/// A profile as it arrives: interests in any case, name possibly null.
#[derive(Deserialize)]
struct RawProfile {
    user: String,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    interests: Option<BTreeMap<String, f64>>,
}

impl Profile {
    /// Parses and normalizes a `users` record value.
    pub fn parse(value: &[u8]) -> Result<Profile, String> {
        let raw: RawProfile = serde_json::from_slice(value).map_err(|e| format!("not a valid user profile: {e}"))?;
        let user = raw.user.trim().to_string();
        if user.is_empty() || user.len() > MAX_ID_BYTES {
            return Err(format!("not a valid user profile: the user id must have 1 to {MAX_ID_BYTES} bytes"));
        }
        let mut interests = BTreeMap::new();
        for (keyword, weight) in raw.interests.unwrap_or_default() {
            if !weight.is_finite() || weight.abs() > MAX_WEIGHT {
                return Err(format!("user {user:?}: the weight of {keyword:?} is not a number within ±{MAX_WEIGHT}"));
            }
            let keyword = keyword.trim().to_lowercase();
            if !keyword.is_empty() {
                *interests.entry(keyword).or_insert(0.0) += weight;
            }
        }
        Ok(Profile { user, name: raw.name.unwrap_or_default(), interests })
    }
}

/// `x` rounded to 3 decimals (half away from zero; -0 becomes 0).
pub fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0 + 0.0
}

/// A user an article matches.
#[derive(Debug, Clone, PartialEq)]
pub struct Match {
    pub user: String,
    /// Rounded to 3 decimals.
    pub score: f64,
    /// The article's keywords the user is interested in, sorted.
    pub reasons: Vec<String>,
}

/// The profiles of one instance, with the inverted index used for scoring.
#[derive(Debug, Default)]
pub struct Profiles {
    /// In the order they were first seen (the order of the `users` index).
    users: Vec<Profile>,
    by_id: HashMap<String, u32>,
    /// keyword -> (user number, weight), one entry per user interested.
    index: HashMap<String, Vec<(u32, f64)>>,
    /// Scratch space for scoring, one slot per user: its running score and
    /// whether it is in `touched`.
    scores: Vec<(f64, bool)>,
    touched: Vec<u32>,
}

impl Profiles {
    /// How many profiles there are.
    pub fn len(&self) -> usize {
        self.users.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.users.is_empty()
    }

    /// Whether `user` has a profile.
    pub fn contains(&self, user: &str) -> bool {
        self.by_id.contains_key(user)
    }

    /// The user ids, in the order they were first seen.
    pub fn ids(&self) -> impl Iterator<Item = &str> {
        self.users.iter().map(|p| p.user.as_str())
    }

    /// Adds a profile, or replaces the user's profile.
    pub fn upsert(&mut self, profile: Profile) {
        let number = match self.by_id.get(&profile.user) {
            Some(&n) => {
                for keyword in self.users[n as usize].interests.keys() {
                    if let Some(postings) = self.index.get_mut(keyword) {
                        postings.retain(|&(u, _)| u != n);
                        if postings.is_empty() {
                            self.index.remove(keyword);
                        }
                    }
                }
                n
            }
            None => {
                let n = u32::try_from(self.users.len()).expect("fewer than 2^32 users");
                self.by_id.insert(profile.user.clone(), n);
                self.users.push(Profile {
                    user: profile.user.clone(),
                    name: String::new(),
                    interests: BTreeMap::new(),
                });
                self.scores.push((0.0, false));
                n
            }
        };
        for (keyword, &weight) in &profile.interests {
            self.index.entry(keyword.clone()).or_default().push((number, weight));
        }
        self.users[number as usize] = profile;
    }

    /// The users an article with `keywords` matches (see the module docs).
    pub fn matches(&mut self, keywords: &[String], threshold: f64, max: usize) -> Vec<Match> {
        let mut seen = HashSet::with_capacity(keywords.len());
        for keyword in keywords {
            if !seen.insert(keyword.as_str()) {
                continue;
            }
            for &(user, weight) in self.index.get(keyword).map(Vec::as_slice).unwrap_or_default() {
                let slot = &mut self.scores[user as usize];
                if !slot.1 {
                    *slot = (0.0, true);
                    self.touched.push(user);
                }
                slot.0 += weight;
            }
        }
        let mut ranked: Vec<(f64, &str, u32)> = Vec::new();
        for &user in &self.touched {
            let score = round3(self.scores[user as usize].0);
            self.scores[user as usize] = (0.0, false);
            if score >= threshold {
                ranked.push((score, &self.users[user as usize].user, user));
            }
        }
        self.touched.clear();
        let order = |a: &(f64, &str, u32), b: &(f64, &str, u32)| b.0.total_cmp(&a.0).then_with(|| a.1.cmp(b.1));
        if ranked.len() > max && max > 0 {
            // Only the best `max` need sorting.
            ranked.select_nth_unstable_by(max - 1, order);
        }
        ranked.truncate(max);
        ranked.sort_unstable_by(order);
        ranked
            .into_iter()
            .map(|(score, id, user)| {
                let interests = &self.users[user as usize].interests;
                let mut reasons: Vec<String> =
                    seen.iter().filter(|k| interests.contains_key(**k)).map(|k| k.to_string()).collect();
                reasons.sort_unstable();
                Match { user: id.to_string(), score, reasons }
            })
            .collect()
    }

    /// The inverted index with sorted postings, to compare with a rebuilt one.
    #[cfg(test)]
    fn index_sorted(&self) -> BTreeMap<String, Vec<(u32, f64)>> {
        let mut index: BTreeMap<_, _> = self.index.clone().into_iter().collect();
        for postings in index.values_mut() {
            postings.sort_by_key(|p| p.0);
        }
        index
    }

    /// Whether two caches hold the same profiles in the same order, with the
    /// same index.
    #[cfg(test)]
    pub fn same_as(&self, other: &Profiles) -> bool {
        self.users == other.users && self.by_id == other.by_id && self.index_sorted() == other.index_sorted()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn profile(user: &str, interests: &[(&str, f64)]) -> Profile {
        Profile {
            user: user.to_string(),
            name: String::new(),
            interests: interests.iter().map(|&(k, w)| (k.to_string(), w)).collect(),
        }
    }

    fn words(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn profiles_are_validated_and_normalized() {
        let p = Profile::parse(
            br#"{"user": " u1 ", "name": "Ada", "interests": {"Rust": 1.5, "rust ": 0.25, " ": 9, "Mars": -1}}"#,
        )
        .unwrap();
        assert_eq!(p, Profile { name: "Ada".into(), ..profile("u1", &[("mars", -1.0), ("rust", 1.75)]) });
        let p = Profile::parse(br#"{"user": "u2", "name": null}"#).unwrap();
        assert_eq!(p, profile("u2", &[]));
        for bad in [
            &br#"nope"#[..],
            br#"{"name": "no id"}"#,
            br#"{"user": ""}"#,
            br#"{"user": "u", "interests": {"x": "heavy"}}"#,
            br#"{"user": "u", "interests": {"x": 1e10}}"#,
            br#"{"user": "u", "interests": [1, 2]}"#,
        ] {
            assert!(Profile::parse(bad).is_err(), "{}", String::from_utf8_lossy(bad));
        }
        let long = format!(r#"{{"user": "{}"}}"#, "x".repeat(MAX_ID_BYTES + 1));
        assert!(Profile::parse(long.as_bytes()).is_err());
    }

    #[test]
    fn round3_rounds_half_away_from_zero() {
        assert_eq!(round3(2.0004), 2.0);
        assert_eq!(round3(2.0006), 2.001);
        assert_eq!(round3(0.1 + 0.2), 0.3);
        assert_eq!(round3(-1.2345678), -1.235);
        assert!(round3(-0.0001).is_sign_positive());
    }

    #[test]
    fn scores_sum_matching_weights_above_the_threshold_best_first() {
        let mut p = Profiles::default();
        p.upsert(profile("carol", &[("rust", 1.0), ("wasm", 1.0)]));
        p.upsert(profile("alice", &[("rust", 2.0), ("mars", 0.5)]));
        p.upsert(profile("bob", &[("rust", 1.0), ("wasm", 1.0), ("space", 3.0)]));
        p.upsert(profile("dave", &[("cooking", 5.0)]));
        let m = p.matches(&words(&["wasm", "rust", "compiler", "rust"]), 2.0, 5);
        // alice 2.0, bob 2.0, carol 2.0: tie broken by user id; dave untouched.
        assert_eq!(
            m.iter().map(|m| (m.user.as_str(), m.score)).collect::<Vec<_>>(),
            [("alice", 2.0), ("bob", 2.0), ("carol", 2.0)]
        );
        assert_eq!(m[1].reasons, ["rust", "wasm"]);
        assert_eq!(m[0].reasons, ["rust"]);
        // At most `max`, and the threshold applies to the rounded score.
        assert_eq!(p.matches(&words(&["wasm", "rust"]), 2.0, 2).len(), 2);
        assert!(p.matches(&words(&["mars"]), 0.6, 5).is_empty());
        assert_eq!(p.matches(&words(&["mars"]), 0.5, 5)[0].user, "alice");
        assert_eq!(
            p.matches(&words(&["space", "rust"]), 2.0, 5)[0],
            Match { user: "bob".into(), score: 4.0, reasons: words(&["rust", "space"]) }
        );
        // The scratch space is reset between articles.
        assert_eq!(p.matches(&words(&["wasm", "rust"]), 0.0, 5).len(), 3);
        assert_eq!(p.matches(&words(&["wasm", "rust"]), 0.0, 5)[0].score, 2.0);
    }

    #[test]
    fn a_new_profile_replaces_the_old_one_in_the_index() {
        let mut p = Profiles::default();
        p.upsert(profile("u1", &[("rust", 3.0), ("mars", 3.0)]));
        p.upsert(profile("u2", &[("mars", 1.0)]));
        p.upsert(profile("u1", &[("cooking", 3.0), ("mars", 2.0)]));
        assert!(p.matches(&words(&["rust"]), 0.0, 5).is_empty());
        assert_eq!(p.matches(&words(&["cooking"]), 0.0, 5)[0].user, "u1");
        let mars = p.matches(&words(&["mars"]), 0.0, 5);
        assert_eq!(mars.iter().map(|m| (m.user.as_str(), m.score)).collect::<Vec<_>>(), [("u1", 2.0), ("u2", 1.0)]);
        assert_eq!(p.ids().collect::<Vec<_>>(), ["u1", "u2"]);
        // The same as building from the final profiles.
        let mut fresh = Profiles::default();
        fresh.upsert(profile("u1", &[("cooking", 3.0), ("mars", 2.0)]));
        fresh.upsert(profile("u2", &[("mars", 1.0)]));
        assert!(p.same_as(&fresh));
    }
}
