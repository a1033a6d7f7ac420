//! The record formats shared by every stage of the pipeline: the JSON values
//! of topics `articles`, `users` and `recommendations`, and the default topic
//! names. The Wasm processors read and write the same JSON; this module is the
//! native side's copy of that contract.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Topic the crawler writes: one [`Article`] per feed entry, keyed by feed id.
pub const ARTICLES_TOPIC: &str = "articles";
/// Topic of user interest profiles: one [`UserProfile`] per user, copied to
/// every partition (a broadcast table), keyed by user id.
pub const USERS_TOPIC: &str = "users";
/// Topic the recommend processor writes: [`Recommendation`]s keyed by user id.
pub const RECOMMENDATIONS_TOPIC: &str = "recommendations";

/// One feed entry as the crawler publishes it (value of topic `articles`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Article {
    /// Id of the feed it came from (also the record key).
    pub feed: String,
    /// The entry's guid/id, else its link, else a content hash (see the crawler).
    pub id: String,
    /// The raw title; may contain HTML markup and entities.
    pub title: String,
    /// The entry's link, or empty.
    pub link: String,
    /// Publication (else last update) time in RFC 3339, if the feed gave one.
    pub published: Option<String>,
    /// The raw HTML or text: the entry's content, else its summary, else empty.
    pub content: String,
}

/// A user's interest profile (value of topic `users`). A later profile with
/// the same `user` replaces the earlier one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UserProfile {
    /// The user id (also the record key).
    pub user: String,
    /// Display name.
    pub name: String,
    /// Lowercase single-word keywords and their weights.
    pub interests: BTreeMap<String, f64>,
}

/// One recommendation (value of topic `recommendations`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Recommendation {
    /// The user it is for (also the record key).
    pub user: String,
    /// The recommended [`Article::id`].
    pub article: String,
    /// The article's link.
    pub link: String,
    /// The article's (cleaned) title.
    pub title: String,
    /// The match score; higher is better.
    pub score: f64,
    /// The user's keywords that matched the article.
    pub reasons: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn article_json_matches_the_contract() {
        let a = Article {
            feed: "space".into(),
            id: "urn:x:1".into(),
            title: "Mars &amp; moons".into(),
            link: "https://example.org/a".into(),
            published: None,
            content: "<p>hi</p>".into(),
        };
        let v: serde_json::Value = serde_json::to_value(&a).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"feed": "space", "id": "urn:x:1", "title": "Mars &amp; moons",
                "link": "https://example.org/a", "published": null, "content": "<p>hi</p>"})
        );
        assert_eq!(serde_json::from_value::<Article>(v).unwrap(), a);
    }

    #[test]
    fn recommendation_and_profile_round_trip() {
        let r: Recommendation = serde_json::from_str(
            r#"{"user":"u1","article":"a","link":"l","title":"t","score":2.5,"reasons":["rust","compiler"]}"#,
        )
        .unwrap();
        assert_eq!((r.user.as_str(), r.score, r.reasons.len()), ("u1", 2.5, 2));
        let p: UserProfile =
            serde_json::from_str(r#"{"user":"u1","name":"Ada","interests":{"rust":2.0,"mars":0.5}}"#).unwrap();
        assert_eq!(p.interests["rust"], 2.0);
    }
}
