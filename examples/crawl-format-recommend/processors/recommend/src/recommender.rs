//! The recommend processor over a key-value [`Store`] (the processor's state
//! in the module, a map in tests): profiles kept in state and mirrored in
//! memory, articles scored against them, each user sent an article once.
//!
//! State keys (one store per input partition number, shared by `users` and
//! `formatted`):
//! * `users`: the JSON list of the user ids with a profile, in arrival order.
//! * `user/<id>`: the user's normalized profile, as JSON.
//! * `sent/<byte length of user id>/<user id>/<article id>`: `1` once the
//!   article was recommended to the user. The length makes the key
//!   unambiguous when ids contain `/`.
//!
//! The in-memory [`Profiles`] always equal what the state holds: they are
//! loaded from it when an instance starts (lazily, on its first record), and a
//! profile changes in both at once, after everything that can fail. If a call
//! traps, the runtime discards its state writes and re-creates the instance,
//! whose memory is fresh, so the cache goes with them.

use eddy_processor::Params;
use serde::{Deserialize, Serialize};

use crate::profiles::{Profile, Profiles, MAX_ID_BYTES};

/// The processor's state, as the recommender needs it.
pub trait Store {
    /// The value under `key`.
    fn get(&self, key: &[u8]) -> Option<Vec<u8>>;
    /// Stores `value` under `key`.
    fn put(&mut self, key: &[u8], value: &[u8]);
}

/// The state key of the list of user ids.
pub const USERS_KEY: &[u8] = b"users";

/// The largest state value the runtime accepts by default (its
/// `max_state_value_bytes`); checked before writing so that an oversized
/// value fails one record instead of trapping.
pub const MAX_STATE_VALUE_BYTES: usize = 1 << 20;

/// The state key of a user's profile.
pub fn profile_key(user: &str) -> Vec<u8> {
    format!("user/{user}").into_bytes()
}

/// The state key saying that `article` was recommended to `user`.
pub fn sent_key(user: &str, article: &str) -> Vec<u8> {
    format!("sent/{}/{user}/{article}", user.len()).into_bytes()
}

/// The deployment's parameters.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// `--param threshold=F` (default 2.0): the lowest score recommended.
    pub threshold: f64,
    /// `--param max_per_article=N` (default 5, at least 1): the most users an
    /// article is recommended to.
    pub max_per_article: usize,
    /// `--param users_topic=NAME` (default `users`): records of this topic are
    /// profiles, records of any other input are formatted articles.
    pub users_topic: String,
}

impl Default for Config {
    fn default() -> Self {
        Config { threshold: 2.0, max_per_article: 5, users_topic: "users".to_string() }
    }
}

impl Config {
    /// The configuration the parameters give; unknown or invalid ones are errors.
    pub fn from_params(params: &Params) -> Result<Config, String> {
        let mut config = Config::default();
        if let Some((name, _)) =
            params.iter().find(|(name, _)| !["threshold", "max_per_article", "users_topic"].contains(name))
        {
            return Err(format!("unknown parameter `{name}` (known: threshold, max_per_article, users_topic)"));
        }
        if let Some(threshold) = params.parse::<f64>("threshold").map_err(|e| e.to_string())? {
            if !threshold.is_finite() {
                return Err("parameter `threshold` must be a finite number".to_string());
            }
            config.threshold = threshold;
        }
        if let Some(max) = params.parse::<usize>("max_per_article").map_err(|e| e.to_string())? {
            if max == 0 {
                return Err("parameter `max_per_article` must be at least 1".to_string());
            }
            config.max_per_article = max;
        }
        if let Some(topic) = params.get("users_topic") {
            if topic.is_empty() {
                return Err("parameter `users_topic` must not be empty".to_string());
            }
            config.users_topic = topic.to_string();
        }
        Ok(config)
    }
}

/// What recommend reads of a `formatted` record.
#[derive(Deserialize)]
struct Article {
    id: String,
    #[serde(default)]
    link: Option<String>,
    #[serde(default)]
    title: Option<String>,
    #[serde(default)]
    keywords: Vec<String>,
}

/// A record of topic `recommendations`.
#[derive(Serialize)]
struct RecommendationJson<'a> {
    user: &'a str,
    article: &'a str,
    link: &'a str,
    title: &'a str,
    score: f64,
    reasons: &'a [String],
}

/// A recommendation: the user (the output key) and the record's JSON.
#[derive(Debug, Clone, PartialEq)]
pub struct Recommendation {
    pub user: String,
    pub json: Vec<u8>,
}

/// The profiles of one instance, mirrored from its state.
#[derive(Debug)]
pub struct Recommender {
    profiles: Profiles,
}

impl Recommender {
    /// Loads the profiles from `store`: the `users` list, then each profile.
    pub fn load(store: &impl Store) -> Result<Recommender, String> {
        let corrupt = |what: String| format!("the processor's state is corrupt: {what}");
        let mut profiles = Profiles::default();
        if let Some(list) = store.get(USERS_KEY) {
            let ids: Vec<String> = serde_json::from_slice(&list).map_err(|e| corrupt(format!("key `users`: {e}")))?;
            for id in ids {
                let value = store
                    .get(&profile_key(&id))
                    .ok_or_else(|| corrupt(format!("user {id:?} is listed but has no profile")))?;
                let profile: Profile =
                    serde_json::from_slice(&value).map_err(|e| corrupt(format!("profile of {id:?}: {e}")))?;
                if profile.user != id {
                    return Err(corrupt(format!("the profile under {id:?} is {:?}'s", profile.user)));
                }
                profiles.upsert(profile);
            }
        }
        Ok(Recommender { profiles })
    }

    /// The profiles.
    pub fn profiles(&self) -> &Profiles {
        &self.profiles
    }

    /// A `users` record: stores the profile, replacing the user's previous one.
    pub fn on_profile(&mut self, store: &mut impl Store, value: &[u8]) -> Result<(), String> {
        let profile = Profile::parse(value)?;
        let too_big =
            |what: &str| format!("user {:?}: {what} would be over {MAX_STATE_VALUE_BYTES} bytes", profile.user);
        let json = serde_json::to_vec(&profile).map_err(|e| e.to_string())?;
        if json.len() > MAX_STATE_VALUE_BYTES {
            return Err(too_big("the profile"));
        }
        let list = if self.profiles.contains(&profile.user) {
            None
        } else {
            let ids: Vec<&str> = self.profiles.ids().chain([profile.user.as_str()]).collect();
            let list = serde_json::to_vec(&ids).map_err(|e| e.to_string())?;
            if list.len() > MAX_STATE_VALUE_BYTES {
                return Err(too_big("the list of users"));
            }
            Some(list)
        };
        // Nothing fails from here on: state and cache change together.
        store.put(&profile_key(&profile.user), &json);
        if let Some(list) = list {
            store.put(USERS_KEY, &list);
        }
        self.profiles.upsert(profile);
        Ok(())
    }

    /// A `formatted` record: the recommendations it makes, each to a user who
    /// was not sent this article before.
    pub fn on_article(
        &mut self,
        store: &mut impl Store,
        config: &Config,
        value: &[u8],
    ) -> Result<Vec<Recommendation>, String> {
        let article: Article =
            serde_json::from_slice(value).map_err(|e| format!("not a valid formatted article: {e}"))?;
        if article.id.is_empty() || article.id.len() > MAX_ID_BYTES {
            return Err(format!("not a valid formatted article: the id must have 1 to {MAX_ID_BYTES} bytes"));
        }
        let matches = self.profiles.matches(&article.keywords, config.threshold, config.max_per_article);
        let mut out = Vec::with_capacity(matches.len());
        for m in matches {
            let key = sent_key(&m.user, &article.id);
            if store.get(&key).is_some() {
                continue;
            }
            let json = serde_json::to_vec(&RecommendationJson {
                user: &m.user,
                article: &article.id,
                link: article.link.as_deref().unwrap_or_default(),
                title: article.title.as_deref().unwrap_or_default(),
                score: m.score,
                reasons: &m.reasons,
            })
            .map_err(|e| e.to_string())?;
            store.put(&key, b"1");
            out.push(Recommendation { user: m.user, json });
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use serde_json::{json, Value};

    use super::*;

    #[derive(Default)]
    struct MemStore(HashMap<Vec<u8>, Vec<u8>>);

    impl Store for MemStore {
        fn get(&self, key: &[u8]) -> Option<Vec<u8>> {
            self.0.get(key).cloned()
        }
        fn put(&mut self, key: &[u8], value: &[u8]) {
            self.0.insert(key.to_vec(), value.to_vec());
        }
    }

    fn profile(user: &str, interests: Value) -> Vec<u8> {
        json!({"user": user, "name": user.to_uppercase(), "interests": interests}).to_string().into_bytes()
    }

    fn article(id: &str, keywords: &[&str]) -> Vec<u8> {
        json!({"id": id, "feed": "f", "title": format!("Title {id}"), "link": format!("https://x/{id}"),
            "published": null, "summary": "", "keywords": keywords})
        .to_string()
        .into_bytes()
    }

    fn recommend(r: &mut Recommender, store: &mut MemStore, value: &[u8]) -> Vec<Value> {
        r.on_article(store, &Config::default(), value)
            .unwrap()
            .into_iter()
            .map(|rec| {
                let v: Value = serde_json::from_slice(&rec.json).unwrap();
                assert_eq!(v["user"], rec.user.as_str());
                v
            })
            .collect()
    }

    #[test]
    fn params_are_checked() {
        let params = |pairs: &[(&str, &str)]| {
            Config::from_params(&Params::new(pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()))
        };
        assert_eq!(params(&[]).unwrap(), Config::default());
        let c = params(&[("threshold", "0.5"), ("max_per_article", "2"), ("users_topic", "people")]).unwrap();
        assert_eq!(c, Config { threshold: 0.5, max_per_article: 2, users_topic: "people".into() });
        assert!(params(&[("treshold", "1")]).unwrap_err().contains("unknown parameter `treshold`"));
        assert!(params(&[("threshold", "inf")]).is_err());
        assert!(params(&[("threshold", "x")]).is_err());
        assert!(params(&[("max_per_article", "0")]).is_err());
        assert!(params(&[("users_topic", "")]).is_err());
    }

    #[test]
    fn articles_are_recommended_to_matching_users_once() {
        let mut store = MemStore::default();
        let mut r = Recommender::load(&store).unwrap();
        r.on_profile(&mut store, &profile("ada", json!({"rust": 1.5, "wasm": 1.0}))).unwrap();
        r.on_profile(&mut store, &profile("bob", json!({"rust": 1.0}))).unwrap();
        let recs = recommend(&mut r, &mut store, &article("a1", &["rust", "wasm", "compiler"]));
        assert_eq!(
            recs,
            [json!({"user": "ada", "article": "a1", "link": "https://x/a1", "title": "Title a1", "score": 2.5,
                "reasons": ["rust", "wasm"]})]
        );
        // The same article again (a re-delivery, or the same id from another
        // feed): nobody gets it twice.
        assert!(recommend(&mut r, &mut store, &article("a1", &["rust", "wasm"])).is_empty());
        // But a user whose new profile matches it now does.
        r.on_profile(&mut store, &profile("bob", json!({"rust": 2.0}))).unwrap();
        let recs = recommend(&mut r, &mut store, &article("a1", &["rust", "wasm"]));
        assert_eq!(recs.len(), 1);
        assert_eq!((recs[0]["user"].as_str(), recs[0]["score"].as_f64()), (Some("bob"), Some(2.0)));
        assert_eq!(store.get(&sent_key("ada", "a1")), Some(b"1".to_vec()));
    }

    #[test]
    fn at_most_max_per_article_best_first_and_scores_rounded() {
        let mut store = MemStore::default();
        let mut r = Recommender::load(&store).unwrap();
        for (user, w) in [("u1", 2.0), ("u2", 3.0), ("u3", 2.5), ("u4", 3.0), ("u5", 2.1), ("u6", 2.2), ("u7", 1.9)] {
            r.on_profile(&mut store, &profile(user, json!({"mars": w, "moon": 1.0 / 3.0}))).unwrap();
        }
        let recs = recommend(&mut r, &mut store, &article("a", &["mars", "moon"]));
        let got: Vec<(&str, f64)> =
            recs.iter().map(|v| (v["user"].as_str().unwrap(), v["score"].as_f64().unwrap())).collect();
        assert_eq!(got, [("u2", 3.333), ("u4", 3.333), ("u3", 2.833), ("u6", 2.533), ("u5", 2.433)]);
    }

    #[test]
    fn the_cache_reloads_to_what_the_state_holds() {
        let mut store = MemStore::default();
        let mut r = Recommender::load(&store).unwrap();
        r.on_profile(&mut store, &profile("a/b", json!({"rust": 3.0}))).unwrap();
        r.on_profile(&mut store, &profile("c", json!({"Mars": 2.0, "rust": 1.0}))).unwrap();
        r.on_profile(&mut store, &profile("a/b", json!({"mars": 3.0}))).unwrap();
        // A bad record changes nothing.
        assert!(r.on_profile(&mut store, b"{not json").is_err());
        assert!(r.on_profile(&mut store, &profile("d", json!({"x": "y"}))).is_err());
        assert_eq!(store.get(USERS_KEY), Some(br#"["a/b","c"]"#.to_vec()));
        // A new instance (after a restart or a trap) sees the same profiles.
        let reloaded = Recommender::load(&store).unwrap();
        assert!(reloaded.profiles().same_as(r.profiles()));
        assert_eq!(reloaded.profiles().len(), 2);
        // And what was sent stays sent: user ids with '/' cannot collide.
        recommend(&mut r, &mut store, &article("x", &["mars"]));
        let mut reloaded = Recommender::load(&store).unwrap();
        assert!(recommend(&mut reloaded, &mut store, &article("x", &["mars"])).is_empty());
        assert_ne!(sent_key("a/b", "c"), sent_key("a", "b/c"));
    }

    #[test]
    fn bad_articles_and_corrupt_state_are_errors() {
        let mut store = MemStore::default();
        let mut r = Recommender::load(&store).unwrap();
        for bad in [&b"[]"[..], b"{\"keywords\": []}", b"{\"id\": \"\"}", b"\xff"] {
            assert!(r.on_article(&mut store, &Config::default(), bad).is_err());
        }
        assert!(store.0.is_empty());
        store.put(USERS_KEY, br#"["ghost"]"#);
        assert!(Recommender::load(&store).unwrap_err().contains("no profile"));
        store.put(USERS_KEY, b"nope");
        assert!(Recommender::load(&store).unwrap_err().contains("corrupt"));
    }
}
